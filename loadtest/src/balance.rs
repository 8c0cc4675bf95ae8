//! `loadtest balance`: dermaga's `balance` choices against each other with one slow endpoint.
//!
//! Three in-process backends on one port of 127.78.1.1–3 answer one request per connection
//! (read `--size` bytes, write them back, close); the third waits `--slow-delay` before it
//! answers (a pod under GC, a noisy neighbour). dermaga (`--dermaga`, a fresh process per
//! run, `--config` file) balances port 10000 of 127.78.1.100 over them with each `--modes`
//! choice in turn, the order rotated each round. Short connections (connect, one round trip,
//! close) for `--duration`: from `--concurrency` workers (closed loop), or at `--rate` per
//! second (open loop, each latency from the connection's scheduled start: the comparison to
//! quote, as every mode gets the same load). A balance that sends fewer new connections to the
//! slow endpoint shows from the percentile above the slow endpoint's share.
//!
//! Output: on stderr, one JSON object per run as it ends and then a markdown table with the
//! median and range over the rounds of p50/p99/p99.9 latency, connections per second and the
//! slow endpoint's share; on stdout, one JSON object with the runs and the table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{duration, latencies, percentiles, record};
use crate::compare::{DERMAGA_BENCH_FLAGS, Route, dermaga_config_with};

/// Options of `loadtest balance`.
#[derive(clap::Args)]
pub struct Args {
    /// The dermaga binary (a release build for figures worth quoting).
    #[arg(long, default_value = "target/release/dermaga")]
    dermaga: PathBuf,
    /// Balance choices, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "round-robin,least-connections,random-two"
    )]
    modes: Vec<String>,
    /// Rounds: each runs every mode once (medians and ranges are over the rounds).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How long each run offers load.
    #[arg(long, default_value = "5s", value_parser = duration)]
    duration: Duration,
    /// Closed loop: this many workers, each starting its next connection when the last ends.
    /// The faster a mode, the more load it gets, so latencies of modes are not comparable
    /// alone; see --rate.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Open loop: new connections per second at fixed times, whatever the answers (0: closed
    /// loop). Each latency counts from the connection's scheduled start, so a backlog shows.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Bytes sent and echoed per connection.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long the slow endpoint waits before answering.
    #[arg(long, default_value = "20ms", value_parser = duration)]
    slow_delay: Duration,
    /// Where the configuration and dermaga's log go.
    #[arg(long, default_value = "target/balance")]
    work_dir: PathBuf,
}

const BACKENDS: [&str; 3] = ["127.78.1.1", "127.78.1.2", "127.78.1.3"];
const LISTEN: &str = "127.78.1.100";
const PORT: u16 = 10000;

/// Runs every mode `rounds` times and prints the runs and the table.
pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.dermaga.is_file(),
        "{} is not a file: build dermaga first (cargo build --release -p dermaga) or pass --dermaga",
        args.dermaga.display()
    );
    std::fs::create_dir_all(&args.work_dir)?;
    let (port, served) = start_backends(args.size, args.slow_delay).await?;
    let mut runs: Vec<Value> = Vec::new();
    for round in 0..args.rounds {
        let n = args.modes.len();
        for k in 0..n {
            let mode = &args.modes[(round + k) % n];
            for s in served.iter() {
                s.store(0, Ordering::Relaxed);
            }
            let mut dermaga = start_dermaga(&args, mode, port)?;
            let target: SocketAddr = format!("{LISTEN}:{PORT}").parse()?;
            let ready = wait_ready(target, args.size, &mut dermaga).await;
            let result = match ready {
                Ok(()) => {
                    for s in served.iter() {
                        s.store(0, Ordering::Relaxed);
                    }
                    Ok(load(target, &args).await)
                }
                Err(e) => Err(e),
            };
            let _ = dermaga.kill();
            let _ = dermaga.wait();
            let mut result = result?;
            let counts: Vec<u64> = served.iter().map(|s| s.load(Ordering::Relaxed)).collect();
            let total: u64 = counts.iter().sum();
            result["round"] = json!(round + 1);
            result["mode"] = json!(mode);
            result["served_per_endpoint"] = json!(counts);
            result["slow_share"] = json!(counts[2] as f64 / total.max(1) as f64);
            eprintln!("{result}");
            runs.push(result);
        }
    }
    let table = table(&args, &runs);
    eprintln!("{table}");
    Ok(json!({"test": "balance", "runs": runs, "table": table}))
}

/// The three backends on one port; the last is slow. Returns the port and per-backend counts.
async fn start_backends(
    size: usize,
    slow_delay: Duration,
) -> anyhow::Result<(u16, Arc<[AtomicU64; 3]>)> {
    let served: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let mut last = None;
    for _ in 0..20 {
        let first = TcpListener::bind((BACKENDS[0], 0)).await?;
        let port = first.local_addr()?.port();
        let mut listeners = vec![first];
        for ip in &BACKENDS[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        if listeners.len() < BACKENDS.len() {
            continue;
        }
        for (i, listener) in listeners.into_iter().enumerate() {
            let served = served.clone();
            let delay = (i == 2).then_some(slow_delay);
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        continue;
                    };
                    let served = served.clone();
                    tokio::spawn(async move {
                        let _ = s.set_nodelay(true);
                        let mut buf = vec![0u8; size.max(1)];
                        if s.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        if let Some(delay) = delay {
                            tokio::time::sleep(delay).await;
                        }
                        if s.write_all(&buf).await.is_ok() {
                            served[i].fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
        }
        return Ok((port, served));
    }
    Err(last.expect("a bind failed")).context("binding the three backends on one port")
}

fn start_dermaga(args: &Args, mode: &str, port: u16) -> anyhow::Result<Child> {
    let route = Route {
        listen: SocketAddr::new(LISTEN.parse()?, PORT),
        backends: BACKENDS
            .iter()
            .map(|ip| Ok(SocketAddr::new(ip.parse()?, port)))
            .collect::<anyhow::Result<_>>()?,
        udp: false,
    };
    let config = dermaga_config_with(&route, &[("balance", mode)]);
    let path = args.work_dir.join("dermaga.yaml");
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(args.work_dir.join("dermaga.log"))?;
    Command::new(&args.dermaga)
        .arg("--config")
        .arg(&path)
        .args([
            "--listen-address",
            LISTEN,
            "--admin-address",
            &format!("{LISTEN}:0"),
        ])
        .args(DERMAGA_BENCH_FLAGS)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", args.dermaga.display()))
}

/// Waits (up to 10 s) until the port answers one round trip.
async fn wait_ready(target: SocketAddr, size: usize, dermaga: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = dermaga.try_wait()? {
            anyhow::bail!("dermaga exited ({status}) before answering; see its log");
        }
        if round_trip(target, size).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "dermaga not answering on {target} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One short connection: connect, send `size` bytes, read them back; at most 5 s.
async fn round_trip(target: SocketAddr, size: usize) -> std::io::Result<()> {
    let exchange = async {
        let msg = vec![b'x'; size.max(1)];
        let mut back = vec![0u8; msg.len()];
        let mut s = TcpStream::connect(target).await?;
        s.set_nodelay(true)?;
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Short connections for `duration`, closed or open loop; their latencies.
async fn load(target: SocketAddr, args: &Args) -> Value {
    let h = latencies();
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + args.duration;
    if args.rate > 0 {
        let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        let mut scheduled = started;
        while scheduled < deadline {
            ticks.tick().await;
            let (h, failed, size, at) = (h.clone(), failed.clone(), args.size, scheduled);
            tasks.spawn(async move {
                match round_trip(target, size).await {
                    Ok(()) => record(&h, at.elapsed()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            scheduled += period;
        }
        while tasks.join_next().await.is_some() {}
    }
    let workers: Vec<_> = (0..if args.rate > 0 { 0 } else { args.concurrency })
        .map(|_| {
            let (h, failed, size) = (h.clone(), failed.clone(), args.size);
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match round_trip(target, size).await {
                        Ok(()) => record(&h, t0.elapsed()),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let latency = percentiles(&h);
    let count = latency["count"].as_f64().unwrap_or(0.0);
    json!({"test": "balance", "latency_us": latency, "conn_per_sec": count / secs,
           "failed": failed.load(Ordering::Relaxed), "seconds": secs})
}

/// Median and range of `values`.
fn summary(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "–".into();
    }
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    format!(
        "{median:.0} ({:.0}–{:.0})",
        values[0],
        values[values.len() - 1]
    )
}

/// The markdown table of the runs, one row per mode.
fn table(args: &Args, runs: &[Value]) -> String {
    let mut out = String::from(
        "\n| balance | p50 µs | p90 µs | p99 µs | p99.9 µs | conn/s | slow endpoint's share % |\n|---|---|---|---|---|---|---|\n",
    );
    for mode in &args.modes {
        let of = |f: &dyn Fn(&Value) -> f64| {
            summary(
                runs.iter()
                    .filter(|r| r["mode"] == mode.as_str())
                    .map(f)
                    .collect(),
            )
        };
        out.push_str(&format!(
            "| {mode} | {} | {} | {} | {} | {} | {} |\n",
            of(&|r| r["latency_us"]["p50"].as_f64().unwrap_or(0.0)),
            of(&|r| r["latency_us"]["p90"].as_f64().unwrap_or(0.0)),
            of(&|r| r["latency_us"]["p99"].as_f64().unwrap_or(0.0)),
            of(&|r| r["latency_us"]["p999"].as_f64().unwrap_or(0.0)),
            of(&|r| r["conn_per_sec"].as_f64().unwrap_or(0.0)),
            of(&|r| r["slow_share"].as_f64().unwrap_or(0.0) * 100.0),
        ));
    }
    let load = if args.rate > 0 {
        format!("{} new connections/s (open loop)", args.rate)
    } else {
        format!(
            "{} workers of short connections (closed loop)",
            args.concurrency
        )
    };
    out.push_str(&format!(
        "\n{} rounds × {:?} per mode, {load}, {} B round trip, third endpoint {:?} slower; median (range) over the rounds.\n",
        args.rounds, args.duration, args.size, args.slow_delay
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_median_and_range() {
        assert_eq!(summary(vec![3.0, 1.0, 2.0]), "2 (1–3)");
        assert_eq!(summary(vec![]), "–");
    }
}
