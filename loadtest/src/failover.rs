//! `loadtest failover`: the S2 and S3 scenarios of `docs/scenarios.md` as a load, counting
//! every connection that fails.
//!
//! The tool runs its own tagged backends in-process (each answers with its address), so it
//! can kill one halfway through the load: its listener is closed (new connections are
//! refused) and every connection open on it is reset (`SO_LINGER` 0). `--concurrency`
//! workers then make `--connections` short connections in all, to `--target` (a proxy in
//! front of the backends) or, without it, straight to the backends and `--refusing`
//! addresses in turn. One connection: connect, send `T`, read the reply to EOF, close.
//!
//! `killed.open_connections_reset` counts the connections the backend had accepted when it
//! was killed; those still in its accept queue are reset by the kernel as the listener closes
//! and show only on the client side, as failures.
//!
//! A connection succeeds when the whole reply (a known tag and a newline) arrives within
//! `--timeout`; otherwise it fails, by kind: `refused` (connect refused), `reset` (reset at
//! any point, or a broken pipe), `eof` (closed before the full reply), `bad_reply` (not a
//! known tag), `timeout`, `other`. Nothing is retried and nothing is hidden.
//!
//! Bounded: `--connections` in all, each within `--timeout`, and no connection is started
//! after `--max-time` (what was never started is `not_attempted`, and `cut_by_max_time` says
//! so). `succeeded_us` and `failed_us` give how long connections took (µs percentiles), e.g.
//! how long a client waited for a failure. Scenario presets: `s2` = 5,000 connections; `s3` = 20,000 with the last backend
//! killed after half of them have started.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::common::{latencies, percentiles, progress, record};

/// A field report of `docs/scenarios.md`, as a preset of counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// A Service endpoint that refuses (nothing listens): 5,000 connections.
    S2,
    /// An endpoint killed halfway: 20,000 connections, the last backend killed after 10,000.
    S3,
}

impl Scenario {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::S2 => "s2",
            Scenario::S3 => "s3",
        }
    }

    /// Connections in all, by default.
    pub fn connections(self) -> u64 {
        match self {
            Scenario::S2 => 5_000,
            Scenario::S3 => 20_000,
        }
    }
}

/// Options of `loadtest failover`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Preset counts: s2 (5,000 connections) or s3 (20,000, a backend killed halfway).
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
    /// Where the connections go (a proxy in front of --backends); without it, straight to
    /// --backends and --refusing in turn.
    #[arg(long)]
    pub target: Option<SocketAddr>,
    /// Backends to run in this process, comma-separated; each answers with its address.
    #[arg(long, value_delimiter = ',', required = true)]
    pub backends: Vec<SocketAddr>,
    /// Endpoints where nothing listens (used as targets only without --target).
    #[arg(long, value_delimiter = ',')]
    pub refusing: Vec<SocketAddr>,
    /// Connections in all (default: the scenario's, else 5,000).
    #[arg(long)]
    pub connections: Option<u64>,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Kill a backend once this many connections have started (default: half of them for
    /// s3, never otherwise).
    #[arg(long)]
    pub kill_after: Option<u64>,
    /// The backend to kill (default: the last of --backends).
    #[arg(long)]
    pub kill: Option<SocketAddr>,
    /// Time allowed for one connection, from connect to the end of the reply.
    #[arg(long, default_value = "5s", value_parser = crate::common::duration)]
    pub timeout: Duration,
    /// How long a backend takes to answer (so that connections are open when one is killed).
    #[arg(long, default_value = "1ms", value_parser = crate::common::duration)]
    pub delay: Duration,
    /// Start no connection after this long.
    #[arg(long, default_value = "60s", value_parser = crate::common::duration)]
    pub max_time: Duration,
}

/// One in-process backend: its accept loop and the switch that kills it.
struct Backend {
    addr: SocketAddr,
    kill: watch::Sender<bool>,
    accept: Mutex<Option<JoinHandle<()>>>,
    /// Connections reset when it was killed.
    reset: Arc<AtomicU64>,
}

impl Backend {
    async fn start(addr: SocketAddr, delay: Duration) -> anyhow::Result<Backend> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding backend {addr}"))?;
        let addr = listener.local_addr()?;
        let (kill, killed) = watch::channel(false);
        let reset = Arc::new(AtomicU64::new(0));
        let tag: Arc<[u8]> = format!("{addr}\n").into_bytes().into();
        let r = reset.clone();
        let accept = tokio::spawn(async move {
            let mut stop = killed.clone();
            loop {
                tokio::select! {
                    _ = stop.changed() => return, // drops the listener: new connects are refused
                    a = listener.accept() => {
                        let Ok((s, _)) = a else { continue };
                        tokio::spawn(serve(s, tag.clone(), delay, killed.clone(), r.clone()));
                    }
                }
            }
        });
        Ok(Backend {
            addr,
            kill,
            accept: Mutex::new(Some(accept)),
            reset,
        })
    }

    /// Closes the listener and resets every open connection; returns once the listener is
    /// closed.
    async fn kill(&self) {
        let _ = self.kill.send(true);
        let accept = self.accept.lock().expect("backend lock").take();
        if let Some(a) = accept {
            let _ = a.await;
        }
    }
}

async fn serve(
    mut s: TcpStream,
    tag: Arc<[u8]>,
    delay: Duration,
    mut killed: watch::Receiver<bool>,
    reset: Arc<AtomicU64>,
) {
    let _ = s.set_nodelay(true);
    let answer = async {
        let mut b = [0u8; 64];
        match s.read(&mut b).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        tokio::time::sleep(delay).await;
        let _ = s.write_all(&tag).await;
    };
    tokio::select! {
        _ = answer => {}
        _ = killed.wait_for(|k| *k) => {
            if s.set_zero_linger().is_ok() {
                reset.fetch_add(1, Ordering::Relaxed);
            }
            // Dropped with linger 0: the peer gets a reset.
        }
    }
}

/// How one connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    Refused,
    Reset,
    Eof,
    BadReply,
    Timeout,
    Other,
}

impl Outcome {
    const FAILURES: [Outcome; 6] = [
        Outcome::Refused,
        Outcome::Reset,
        Outcome::Eof,
        Outcome::BadReply,
        Outcome::Timeout,
        Outcome::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Eof => "eof",
            Outcome::BadReply => "bad_reply",
            Outcome::Timeout => "timeout",
            Outcome::Other => "other",
        }
    }

    fn of(e: &std::io::Error, connecting: bool) -> Outcome {
        match e.kind() {
            ErrorKind::ConnectionRefused if connecting => Outcome::Refused,
            ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => Outcome::Reset,
            ErrorKind::UnexpectedEof => Outcome::Eof,
            _ => Outcome::Other,
        }
    }
}

/// One connection: connect, `T`, the reply to EOF. The tag that answered, on success.
async fn one(target: SocketAddr, timeout: Duration, tags: &[String]) -> (Outcome, Option<usize>) {
    let attempt = async {
        let mut s = match TcpStream::connect(target).await {
            Ok(s) => s,
            Err(e) => return (Outcome::of(&e, true), None),
        };
        let _ = s.set_nodelay(true);
        if let Err(e) = s.write_all(b"T").await {
            return (Outcome::of(&e, false), None);
        }
        let mut reply = Vec::with_capacity(32);
        if let Err(e) = s.read_to_end(&mut reply).await {
            return (Outcome::of(&e, false), None);
        }
        if !reply.ends_with(b"\n") {
            return (Outcome::Eof, None);
        }
        let got = String::from_utf8_lossy(&reply[..reply.len() - 1]);
        match tags.iter().position(|t| *t == got) {
            Some(i) => (Outcome::Ok, Some(i)),
            None => (Outcome::BadReply, None),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or((Outcome::Timeout, None))
}

/// Runs the scenario and returns its JSON result.
pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    let connections = args
        .connections
        .unwrap_or_else(|| args.scenario.map_or(5_000, Scenario::connections));
    let kill_after = args
        .kill_after
        .or_else(|| (args.scenario == Some(Scenario::S3)).then_some(connections / 2));
    let mut backends = Vec::new();
    for addr in &args.backends {
        backends.push(Backend::start(*addr, args.delay).await?);
    }
    let victim = match (kill_after, args.kill) {
        (None, _) => None,
        (Some(_), None) => Some(backends.len() - 1),
        (Some(_), Some(k)) => Some(
            backends
                .iter()
                .position(|b| b.addr == k)
                .with_context(|| format!("--kill {k} is not one of --backends"))?,
        ),
    };
    let tags: Arc<[String]> = backends.iter().map(|b| b.addr.to_string()).collect();
    let targets: Arc<[SocketAddr]> = match args.target {
        Some(t) => [t].into(),
        None => backends
            .iter()
            .map(|b| b.addr)
            .chain(args.refusing.iter().copied())
            .collect(),
    };
    let backends = Arc::new(backends);

    let next = Arc::new(AtomicU64::new(0));
    let outcomes: Arc<Mutex<BTreeMap<Outcome, u64>>> = Arc::default();
    let per_backend: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; tags.len()]));
    let cut = Arc::new(AtomicBool::new(false));
    let (ok_time, failed_time) = (latencies(), latencies());
    let started = Instant::now();
    let deadline = started + args.max_time;
    let bar = progress(connections, "failover", connections >= 1000);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (next, outcomes, per_backend, cut) = (
                next.clone(),
                outcomes.clone(),
                per_backend.clone(),
                cut.clone(),
            );
            let (tags, targets, backends, bar) =
                (tags.clone(), targets.clone(), backends.clone(), bar.clone());
            let (ok_time, failed_time) = (ok_time.clone(), failed_time.clone());
            let timeout = args.timeout;
            tokio::spawn(async move {
                loop {
                    if Instant::now() >= deadline {
                        cut.store(true, Ordering::Relaxed);
                        return;
                    }
                    let ticket = next.fetch_add(1, Ordering::Relaxed);
                    if ticket >= connections {
                        return;
                    }
                    if Some(ticket) == kill_after
                        && let Some(v) = victim
                    {
                        backends[v].kill().await;
                    }
                    let target = targets[(ticket % targets.len() as u64) as usize];
                    let t0 = Instant::now();
                    let (outcome, tag) = one(target, timeout, &tags).await;
                    let took = t0.elapsed();
                    record(
                        if outcome == Outcome::Ok {
                            &ok_time
                        } else {
                            &failed_time
                        },
                        took,
                    );
                    *outcomes
                        .lock()
                        .expect("outcomes lock")
                        .entry(outcome)
                        .or_default() += 1;
                    if let Some(i) = tag {
                        per_backend.lock().expect("per-backend lock")[i] += 1;
                    }
                    bar.inc(1);
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let outcomes = outcomes.lock().expect("outcomes lock").clone();
    let count = |o: Outcome| outcomes.get(&o).copied().unwrap_or(0);
    let attempted: u64 = outcomes.values().sum();
    let succeeded = count(Outcome::Ok);
    let by_kind: serde_json::Map<String, Value> = Outcome::FAILURES
        .iter()
        .map(|o| (o.name().to_string(), json!(count(*o))))
        .collect();
    let per_backend: serde_json::Map<String, Value> = tags
        .iter()
        .zip(per_backend.lock().expect("per-backend lock").iter())
        .map(|(t, n)| (t.clone(), json!(n)))
        .collect();
    let killed = victim.map(|v| {
        let b = &backends[v];
        json!({"backend": b.addr.to_string(), "after": kill_after,
               "open_connections_reset": b.reset.load(Ordering::Relaxed)})
    });
    Ok(json!({
        "test": "failover",
        "scenario": args.scenario.map(Scenario::name),
        "target": args.target.map(|t| t.to_string()),
        "backends": tags.to_vec(),
        "refusing": args.refusing.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "connections": connections,
        "concurrency": args.concurrency,
        "attempted": attempted,
        "succeeded": succeeded,
        "failed": attempted - succeeded,
        "failed_by_kind": by_kind,
        "per_backend": per_backend,
        "killed": killed,
        "not_attempted": connections - attempted,
        "cut_by_max_time": cut.load(Ordering::Relaxed) && attempted < connections,
        "succeeded_us": percentiles(&ok_time),
        "failed_us": percentiles(&failed_time),
        "seconds": seconds,
    }))
}
