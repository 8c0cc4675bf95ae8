//! A small load tool for dermaga's benchmarks: a fake backend, load generators that print one
//! JSON object on stdout, and `compare`, the side-by-side runner against nginx and HAProxy.
//! Every generator is bounded in time (`--duration`, or `--hold` for `idle`); given
//! `--proxy-pid`, it also reports the proxy's CPU time (and RSS) read from /proc. A progress
//! bar is drawn on stderr for runs of a second or more when stderr is a terminal.
//!
//! Modules: [`backend`] (echo/sink/tag server, TCP and UDP), [`bulk`] (throughput), [`rr`]
//! (closed-loop request/response), [`latency`] (fixed offered rate, from intended send time),
//! [`conn`] (new connections per second), [`idle`] (held connections, RSS per connection),
//! [`udp`] (DNS-sized UDP request/response), [`procstat`] (/proc readings), [`compare`],
//! [`failover`] (the S2/S3 failure scenarios, counting failed connections) and
//! `failover-compare` (those scenarios through dermaga, nginx and HAProxy; in [`compare`]),
//! and [`balance`] (dermaga's balance choices against each other with one slow endpoint).

mod backend;
mod balance;
mod bulk;
mod common;
mod compare;
mod conn;
mod failover;
mod idle;
mod latency;
mod procstat;
mod rr;
mod udp;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

use common::duration;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Load generator, fake backend and nginx/HAProxy comparison runner for dermaga benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo backend on TCP and UDP (same address): a first byte `S` makes a TCP connection a
    /// sink, `T` gets the tag back; prints its bound addresses as JSON, then serves forever.
    Backend {
        #[arg(long)]
        listen: SocketAddr,
        /// Answer to a `T` probe, so a runner can check which backend a proxy reaches.
        #[arg(long, default_value = "backend")]
        tag: String,
    },
    /// Bulk throughput: --streams connections each writing into a sink for --duration.
    Bulk {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value = "5s", value_parser = duration)]
        duration: Duration,
        /// Proxy process (and its children) whose CPU time and RSS to report.
        #[arg(long)]
        proxy_pid: Option<u32>,
    },
    /// Request/response at the highest rate (closed loop) on keep-alive connections.
    Rr {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value = "5s", value_parser = duration)]
        duration: Duration,
        #[arg(long)]
        proxy_pid: Option<u32>,
    },
    /// Request/response latency at a fixed offered --rate (requests/s over all connections),
    /// measured from each request's intended send time (coordinated-omission-free).
    Latency {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value = "5s", value_parser = duration)]
        duration: Duration,
        #[arg(long)]
        proxy_pid: Option<u32>,
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
        #[arg(long)]
        proxy_pid: Option<u32>,
    },
    /// Idle connections: open --connections, one round trip each, hold them for --hold; with
    /// --proxy-pid, the proxy's RSS per connection.
    Idle {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Connects in flight at once while opening.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value = "1s", value_parser = duration)]
        hold: Duration,
        /// Give up opening after this long (what is not open by then counts as failed).
        #[arg(long, default_value = "60s", value_parser = duration)]
        open_timeout: Duration,
        #[arg(long)]
        proxy_pid: Option<u32>,
    },
    /// DNS-sized UDP request/response: --clients sockets, one query in flight each.
    #[command(alias = "udp")]
    Dns {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 50)]
        clients: usize,
        #[arg(long, default_value = "5s", value_parser = duration)]
        duration: Duration,
        #[arg(long)]
        proxy_pid: Option<u32>,
    },
    /// Side by side: direct path, dermaga, nginx (stream) and HAProxy (mode tcp), every
    /// workload, rounds alternating; a markdown report and SVG charts.
    Compare(compare::Args),
    /// The S2/S3 failure scenarios: in-process tagged backends (one refusing, or one killed
    /// halfway), short connections through --target, every failure counted by kind.
    Failover(failover::Args),
    /// dermaga's `balance` choices with one slow endpoint of three: short connections' latency
    /// and the slow endpoint's share, per choice, several rounds.
    Balance(balance::Args),
    /// S2 and S3 through dermaga, nginx (stream) and HAProxy (mode tcp) with their default
    /// failover settings, fresh proxies, several rounds; a markdown table of failures.
    FailoverCompare(compare::failover::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    common::raise_nofile();
    if let Cmd::Compare(args) = cli.command {
        // Synchronous: it runs the generators as child processes, pinned with taskset.
        return compare::run(args);
    }
    if let Cmd::FailoverCompare(args) = cli.command {
        return compare::failover::run(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let result = match cli.command {
            Cmd::Backend { listen, tag } => return backend::run(listen, tag).await,
            Cmd::Bulk {
                target,
                streams,
                duration,
                proxy_pid,
            } => bulk::run(target, streams, duration, proxy_pid).await?,
            Cmd::Rr {
                target,
                connections,
                size,
                duration,
                proxy_pid,
            } => rr::run(target, connections, duration, size, proxy_pid).await?,
            Cmd::Latency {
                target,
                rate,
                connections,
                size,
                duration,
                proxy_pid,
            } => latency::run(target, connections, rate, duration, size, proxy_pid).await?,
            Cmd::Conn {
                target,
                concurrency,
                duration,
                size,
                proxy_pid,
            } => conn::run(target, concurrency, duration, size, proxy_pid).await?,
            Cmd::Idle {
                target,
                connections,
                parallel,
                size,
                hold,
                open_timeout,
                proxy_pid,
            } => {
                idle::run(
                    target,
                    connections,
                    parallel,
                    size,
                    hold,
                    open_timeout,
                    proxy_pid,
                )
                .await?
            }
            Cmd::Dns {
                target,
                clients,
                duration,
                proxy_pid,
            } => udp::run(target, clients, duration, proxy_pid).await?,
            Cmd::Failover(args) => failover::run(args).await?,
            Cmd::Balance(args) => balance::run(args).await?,
            Cmd::Compare(_) | Cmd::FailoverCompare(_) => unreachable!("handled above"),
        };
        println!("{result}");
        Ok(())
    })
}
