//! Request/response at the highest rate the path allows (closed loop): `connections`
//! keep-alive connections, each sending `size` bytes and waiting for the `size`-byte echo
//! before the next request. Reports requests per second, the round-trip latency of each
//! request (from its actual send, so this is *not* coordinated-omission-free: use `latency`
//! for that) and, with a proxy pid, the proxy's CPU time per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{latencies, percentiles, record, timed_progress};
use crate::procstat::Watch;

/// Opens `n` connections with TCP_NODELAY.
pub async fn connect_all(target: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let s = TcpStream::connect(target).await?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    Ok(conns)
}

/// Runs the closed-loop request/response test and returns its JSON result.
pub async fn run(
    target: SocketAddr,
    connections: usize,
    duration: Duration,
    size: usize,
    proxy_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let size = size.max(1);
    let conns = connect_all(target, connections).await?;
    let done = Arc::new(AtomicU64::new(0));
    let hist = latencies();
    let watch = Watch::start(proxy_pid)?;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            let (done, hist) = (done.clone(), hist.clone());
            tokio::spawn(async move {
                let msg = vec![b'r'; size];
                let mut back = vec![0u8; size];
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    s.write_all(&msg).await?;
                    s.read_exact(&mut back).await?;
                    record(&hist, sent.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, std::io::Error>(())
            })
        })
        .collect();
    let d = done.clone();
    let bar = timed_progress(duration, "rr", move || {
        let rate = d.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        format!("{rate:.0} req/s")
    });
    let mut errors = 0u64;
    for t in tasks {
        if t.await?.is_err() {
            errors += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let (proxy, per_req) = watch.finish(n)?;
    bar.finish_and_clear();
    Ok(
        json!({"test": "rr", "target": target.to_string(), "connections": connections, "size": size,
              "requests": n, "errors": errors, "seconds": secs, "req_per_sec": n as f64 / secs,
              "latency_us": percentiles(&hist), "proxy": proxy, "proxy_cpu_us_per_request": per_req}),
    )
}
