//! Bulk throughput: `streams` connections, each announcing itself as a sink (`S`) and then
//! writing 256 KiB chunks as fast as it can for the duration. Reports bytes written per
//! second (Gbit/s) and, with a proxy pid, the proxy's CPU use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::timed_progress;
use crate::procstat::Watch;

/// Runs the bulk test and returns its JSON result.
pub async fn run(
    target: SocketAddr,
    streams: usize,
    duration: Duration,
    proxy_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::new();
    for _ in 0..streams {
        let mut s = TcpStream::connect(target).await?;
        s.write_all(b"S").await?;
        conns.push(s);
    }
    let watch = Watch::start(proxy_pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut s in conns {
        let (bytes, stop) = (bytes.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let buf = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                s.write_all(&buf).await?;
                bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    let b = bytes.clone();
    let bar = timed_progress(duration, "bulk", move || {
        let gbit = b.load(Ordering::Relaxed) as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9;
        format!("{gbit:.2} Gbit/s")
    });
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let total = bytes.load(Ordering::Relaxed);
    let (proxy, _) = watch.finish(0)?;
    bar.finish_and_clear();
    for t in tasks {
        t.await??;
    }
    Ok(
        json!({"test": "bulk", "target": target.to_string(), "streams": streams, "bytes": total,
              "seconds": secs, "gbit_per_sec": total as f64 * 8.0 / secs / 1e9, "proxy": proxy}),
    )
}
