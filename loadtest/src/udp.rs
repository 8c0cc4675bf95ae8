//! UDP request/response (the `dns` subcommand): `clients` sockets, each with one DNS query for
//! `example.test` (type A, 30 bytes) in flight at a time, for the duration. An answer is a
//! datagram starting with the query's transaction id (a DNS server's answer or the echo
//! backend's copy of the query); none within 1 s counts the query as lost. Reports queries
//! per second, latency percentiles and, with a proxy pid, the proxy's CPU time per query.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{latencies, percentiles, record, timed_progress};
use crate::procstat::Watch;

/// A DNS query (RD set) for `example.test` type A, with transaction id `id`.
pub fn dns_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["example", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Runs the UDP request/response test and returns its JSON result.
pub async fn run(
    target: SocketAddr,
    clients: usize,
    duration: Duration,
    proxy_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let answered = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let hist = latencies();
    // Any local address: the route to the target picks the source (loopback, or the veth
    // of `compare --topology veth`).
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let mut sockets = Vec::new();
    for _ in 0..clients {
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        socket.connect(target).await?;
        sockets.push(socket);
    }
    let watch = Watch::start(proxy_pid)?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for (c, socket) in sockets.into_iter().enumerate() {
        let (answered, lost, hist) = (answered.clone(), lost.clone(), hist.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut id = (c as u16).wrapping_mul(7919);
            while Instant::now() < deadline {
                id = id.wrapping_add(1);
                let sent = Instant::now();
                socket.send(&dns_query(id)).await?;
                loop {
                    match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
                    {
                        Ok(Ok(n)) if n >= 2 && buf[..2] == id.to_be_bytes() => {
                            record(&hist, sent.elapsed());
                            answered.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(Ok(_)) => continue, // a late answer to an earlier (lost) query
                        Ok(Err(_)) | Err(_) => {
                            lost.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    let a = answered.clone();
    let bar = timed_progress(duration, "dns", move || {
        let qps = a.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        format!("{qps:.0} q/s")
    });
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = answered.load(Ordering::Relaxed);
    let (proxy, per_query) = watch.finish(n)?;
    bar.finish_and_clear();
    let lat = percentiles(&hist);
    Ok(
        json!({"test": "dns", "target": target.to_string(), "clients": clients, "answered": n,
              "lost": lost.load(Ordering::Relaxed), "seconds": secs, "qps": n as f64 / secs,
              "avg_latency_us": lat["mean"], "latency_us": lat, "proxy": proxy,
              "proxy_cpu_us_per_query": per_query}),
    )
}
