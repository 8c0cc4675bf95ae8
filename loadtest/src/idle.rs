//! Idle connections: open `connections` connections (at most `parallel` connects in flight),
//! one round trip of `size` bytes on each, then hold them all for `hold`. With a proxy pid,
//! the proxy's RSS is read before the first connect and again once all are open (after a
//! short settle), and the difference divided by the connections held is reported as
//! `proxy_rss_bytes_per_conn`: the proxy's memory per idle proxied connection (and its open
//! descriptors per connection, `proxy_fds_per_conn`: 2 for a proxy holding only the two
//! sockets). Opening stops at `open_timeout` (each connect and round trip may take 5 s), so a
//! proxy that stops accepting shows as `failed` rather than a run that never ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::common::progress;
use crate::procstat::{Watch, sample};

/// Time given to the proxy to finish its side of the last connections before RSS is read.
const SETTLE: Duration = Duration::from_millis(300);

async fn open(target: SocketAddr, size: usize) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    let msg = vec![b'i'; size];
    let mut back = vec![0u8; size];
    s.write_all(&msg).await?;
    s.read_exact(&mut back).await?;
    Ok(s)
}

/// Runs the idle-connections test and returns its JSON result.
pub async fn run(
    target: SocketAddr,
    connections: usize,
    parallel: usize,
    size: usize,
    hold: Duration,
    open_timeout: Duration,
    proxy_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let size = size.max(1);
    let watch = Watch::start(proxy_pid)?;
    let started = Instant::now();
    let bar = progress(connections as u64, "idle", connections >= 1000);
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + open_timeout;
    let mut tasks = Vec::with_capacity(connections);
    let mut not_tried = 0u64;
    for i in 0..connections {
        let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, gate.clone().acquire_owned()).await
        else {
            not_tried = (connections - i) as u64;
            break;
        };
        let (failed, bar) = (failed.clone(), bar.clone());
        let limit = (tokio::time::Instant::now() + Duration::from_secs(5)).min(deadline);
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout_at(limit, open(target, size)).await;
            drop(permit);
            bar.inc(1);
            match r {
                Ok(Ok(s)) => Some(s),
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    let mut held = Vec::with_capacity(connections);
    for t in tasks {
        if let Some(s) = t.await? {
            held.push(s);
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    tokio::time::sleep(SETTLE).await;
    let at_peak = proxy_pid.map(sample).transpose()?;
    tokio::time::sleep(hold).await;
    // Still open after the hold? A proxy that dropped them would show a closed socket here.
    let mut alive = 0u64;
    for s in &held {
        let mut b = [0u8; 1];
        if matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            alive += 1;
        }
    }
    let (proxy, _) = watch.finish(0)?;
    let per_conn = |f: fn(&crate::procstat::Sample) -> f64| match (watch.before(), at_peak) {
        (Some(b), Some(p)) if !held.is_empty() => json!((f(&p) - f(&b)) / held.len() as f64),
        _ => Value::Null,
    };
    let (rss_per_conn, fds_per_conn) =
        (per_conn(|s| s.rss_bytes as f64), per_conn(|s| s.fds as f64));
    Ok(
        json!({"test": "idle", "target": target.to_string(), "connections": connections,
              "held": held.len(), "failed": failed.load(Ordering::Relaxed) + not_tried,
              "alive_after_hold": alive,
              "open_seconds": open_secs, "hold_seconds": hold.as_secs_f64(),
              "proxy_rss_at_peak_bytes": at_peak.map(|p| p.rss_bytes), "proxy": proxy,
              "proxy_rss_bytes_per_conn": rss_per_conn, "proxy_fds_per_conn": fds_per_conn}),
    )
}
