//! A small load tool for dermaga's benchmarks: fake backends and load generators, results as
//! one JSON object on stdout. Bounded in time by every subcommand's `--duration`.
//!
//! - `backend`: echo server (replies to what it reads) and bulk source/sink on one port.
//! - `conn`: new connections per second: connect, send N bytes, read N back, close.
//! - `bulk`: throughput of S streams, each sending as fast as it can for the duration.
//! - `dns`: UDP request/response: C client sockets each sending a DNS query for `example.test`
//!   and waiting for the answer (1 s timeout counts as lost), for the duration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Load generator and fake backends for dermaga benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo backend: each connection gets back what it sends; a first byte of b'S' makes it a
    /// sink instead (reads and discards until EOF).
    Backend {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// New connections per second: connect, one round trip of --size bytes, close.
    Conn {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        #[arg(long, default_value = "5s", value_parser = duration)]
        duration: Duration,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// DNS over UDP: --clients sockets, each one query in flight at a time.
    Dns {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 50)]
        clients: usize,
        #[arg(long, default_value = "5s", value_parser = duration)]
        duration: Duration,
    },
    /// Throughput: --streams connections each sending to a sink for --duration.
    Bulk {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value = "5s", value_parser = duration)]
        duration: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Backend { listen } => backend(listen).await,
        Cmd::Conn {
            target,
            concurrency,
            duration,
            size,
        } => conn(target, concurrency, duration, size).await,
        Cmd::Bulk {
            target,
            streams,
            duration,
        } => bulk(target, streams, duration).await,
        Cmd::Dns {
            target,
            clients,
            duration,
        } => dns(target, clients, duration).await,
    }
}

async fn backend(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let Ok(n) = s.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            if buf[0] == b'S' {
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
            if s.write_all(&buf[..n]).await.is_err() {
                return;
            }
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn conn(
    target: SocketAddr,
    concurrency: usize,
    duration: Duration,
    size: usize,
) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            tokio::spawn(async move {
                let msg = vec![b'x'; size];
                let mut back = vec![0u8; size];
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
    for w in workers {
        w.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = done.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({"test": "conn", "connections": ok, "failed": failed.load(Ordering::Relaxed),
                           "seconds": secs, "conn_per_sec": ok as f64 / secs})
    );
    Ok(())
}

async fn bulk(target: SocketAddr, streams: usize, duration: Duration) -> anyhow::Result<()> {
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (bytes, stop) = (bytes.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(target).await?;
            s.write_all(b"S").await?;
            let buf = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                s.write_all(&buf).await?;
                bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let total = bytes.load(Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    println!(
        "{}",
        serde_json::json!({"test": "bulk", "streams": streams, "bytes": total, "seconds": secs,
                           "gbit_per_sec": total as f64 * 8.0 / secs / 1e9})
    );
    Ok(())
}

/// A DNS query (RD set) for `example.test` type A, with transaction id `id`.
fn dns_query(id: u16) -> Vec<u8> {
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

async fn dns(target: SocketAddr, clients: usize, duration: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(target).await?;
            let (mut answered, mut lost, mut latency_ns) = (0u64, 0u64, 0u128);
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
                            answered += 1;
                            latency_ns += sent.elapsed().as_nanos();
                            break;
                        }
                        Ok(Ok(_)) => continue, // a late answer to an earlier (lost) query
                        Ok(Err(_)) | Err(_) => {
                            lost += 1;
                            break;
                        }
                    }
                }
            }
            Ok::<_, std::io::Error>((answered, lost, latency_ns))
        }));
    }
    let (mut answered, mut lost, mut latency_ns) = (0u64, 0u64, 0u128);
    for t in tasks {
        let (a, l, ns) = t.await??;
        answered += a;
        lost += l;
        latency_ns += ns;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"test": "dns", "clients": clients, "answered": answered, "lost": lost, "seconds": secs,
                           "qps": answered as f64 / secs,
                           "avg_latency_us": if answered > 0 { latency_ns as f64 / answered as f64 / 1000.0 } else { 0.0 }})
    );
    Ok(())
}
