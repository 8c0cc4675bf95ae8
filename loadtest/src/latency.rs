//! Request/response latency at a fixed offered rate, free of coordinated omission.
//!
//! A sender thread (not a tokio task: tokio's timer has 1 ms granularity, far coarser than a
//! loopback round trip) follows a fixed schedule, request `i` intended at `start + i / rate`,
//! spread round-robin over `connections` keep-alive connections, with its timer slack set to
//! 1 ns. It sends each request when it is due, whether or not earlier answers came back
//! (open loop), so a stall in the path delays the answers but not the schedule. Reader tasks
//! match each `size`-byte echo to its request in order and record latency **from the intended
//! send time**: a stall shows in the percentiles instead of being hidden. `service_us` (from
//! the actual send) and `send_lag_us` (actual minus intended send) show how much of it is the
//! load generator's own lateness.

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::common::{latencies, percentiles, record, timed_progress};
use crate::procstat::Watch;
use crate::rr::connect_all;

/// How long answers may still arrive after the last request was sent.
const DRAIN: Duration = Duration::from_secs(2);

/// Runs the fixed-rate latency test and returns its JSON result.
pub async fn run(
    target: SocketAddr,
    connections: usize,
    rate: f64,
    duration: Duration,
    size: usize,
    proxy_pid: Option<u32>,
) -> anyhow::Result<Value> {
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let size = size.max(1);
    let connections = connections.max(1);
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for s in connect_all(target, connections).await? {
        let s = s.into_std()?;
        writers.push(s.try_clone()?); // non-blocking, like `s` (the flag is shared)
        readers.push(tokio::net::TcpStream::from_std(s)?);
    }
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..connections).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let (hist, service) = (latencies(), latencies());
    let watch = Watch::start(proxy_pid)?;
    let start = Instant::now() + Duration::from_millis(5);
    let end = start + duration;

    let mut txs = Vec::new();
    let mut tasks = Vec::new();
    for mut r in readers {
        let (tx, rx) = mpsc::channel::<(Instant, Instant)>();
        txs.push(tx);
        let c = tasks.len();
        let (sent, done, hist, service) =
            (sent.clone(), done.clone(), hist.clone(), service.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let (mut partial, mut received) = (0usize, 0u64);
            loop {
                if done.load(Ordering::Acquire) && received == sent[c].load(Ordering::Acquire) {
                    break;
                }
                if Instant::now() > end + DRAIN {
                    break;
                }
                let n =
                    match tokio::time::timeout(Duration::from_millis(20), r.read(&mut buf)).await {
                        Err(_) => continue,
                        Ok(Ok(0)) => anyhow::bail!("connection closed by the peer"),
                        Ok(Ok(n)) => n,
                        Ok(Err(e)) => return Err(e.into()),
                    };
                let now = Instant::now();
                partial += n;
                while partial >= size {
                    partial -= size;
                    let (intended, actual) = rx.try_recv().context("an answer to no request")?;
                    record(&hist, now - intended);
                    record(&service, now - actual);
                    received += 1;
                }
            }
            Ok(received)
        }));
    }

    let (s, d) = (sent.clone(), done.clone());
    let sender = std::thread::spawn(move || sender(writers, txs, s, d, start, end, rate, size));
    let s = sent.clone();
    let bar = timed_progress(duration, "latency", move || {
        let n: u64 = s.iter().map(|x| x.load(Ordering::Relaxed)).sum();
        format!("{n} sent")
    });
    let mut received = 0u64;
    let mut errors = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(n) => received += n,
            Err(e) => errors.push(e.to_string()),
        }
    }
    let lag = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    let total_sent: u64 = sent.iter().map(|x| x.load(Ordering::Relaxed)).sum();
    let (proxy, per_req) = watch.finish(received)?;
    bar.finish_and_clear();
    let secs = duration.as_secs_f64();
    Ok(
        json!({"test": "latency", "target": target.to_string(), "connections": connections,
              "size": size, "rate": rate, "seconds": secs, "sent": total_sent, "received": received,
              "unanswered": total_sent - received, "errors": errors,
              "achieved_per_sec": received as f64 / secs,
              "latency_us": percentiles(&hist), "service_us": percentiles(&service),
              "send_lag_us": percentiles(&lag), "proxy": proxy, "proxy_cpu_us_per_request": per_req}),
    )
}

/// The sending side: follows the schedule until `end`, then sets `done` (the readers stop
/// once they have an answer for every request counted in `sent`).
#[allow(clippy::too_many_arguments)]
fn sender(
    mut writers: Vec<std::net::TcpStream>,
    txs: Vec<mpsc::Sender<(Instant, Instant)>>,
    sent: Arc<Vec<AtomicU64>>,
    done: Arc<AtomicBool>,
    start: Instant,
    end: Instant,
    rate: f64,
    size: usize,
) -> anyhow::Result<crate::common::Latencies> {
    let _ = nix::sys::prctl::set_timerslack(1);
    let lag = latencies();
    let msg = vec![b'l'; size];
    let result = (|| {
        for i in 0u64.. {
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            if intended >= end {
                break;
            }
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            let c = (i % writers.len() as u64) as usize;
            let actual = Instant::now();
            record(&lag, actual - intended);
            // Queued before the bytes leave, so the reader always finds it.
            txs[c].send((intended, actual))?;
            write_all(&mut writers[c], &msg)?;
            sent[c].fetch_add(1, Ordering::Release);
        }
        Ok(())
    })();
    done.store(true, Ordering::Release);
    result.map(|()| lag)
}

/// `write_all` on a non-blocking socket: waits briefly whenever its buffer is full.
fn write_all(w: &mut std::net::TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
