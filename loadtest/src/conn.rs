//! New connections per second: `concurrency` workers, each in a loop of connect, one round
//! trip of `size` bytes, close. Reports connections per second, failures and, with a proxy
//! pid, the proxy's CPU time per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::timed_progress;
use crate::procstat::Watch;

/// Runs the connection-rate test and returns its JSON result.
pub async fn run(
    target: SocketAddr,
    concurrency: usize,
    duration: Duration,
    size: usize,
    proxy_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let watch = Watch::start(proxy_pid)?;
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            tokio::spawn(async move {
                let msg = vec![b'x'; size.max(1)];
                let mut back = vec![0u8; msg.len()];
                while Instant::now() < deadline {
                    let r: std::io::Result<()> = async {
                        let mut s = TcpStream::connect(target).await?;
                        s.set_nodelay(true)?;
                        s.write_all(&msg).await?;
                        s.read_exact(&mut back).await?;
                        Ok(())
                    }
                    .await;
                    match r {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let d = done.clone();
    let bar = timed_progress(duration, "conn", move || {
        let rate = d.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        format!("{rate:.0} conn/s")
    });
    for w in workers {
        w.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = done.load(Ordering::Relaxed);
    let (proxy, per_conn) = watch.finish(ok)?;
    bar.finish_and_clear();
    Ok(
        json!({"test": "conn", "target": target.to_string(), "concurrency": concurrency, "size": size,
              "connections": ok, "failed": failed.load(Ordering::Relaxed), "seconds": secs,
              "conn_per_sec": ok as f64 / secs, "proxy": proxy, "proxy_cpu_us_per_conn": per_conn}),
    )
}
