//! The workloads driven by clients nobody here wrote, against servers nobody here wrote:
//! iperf3 (1 and 4 streams) against `iperf3 -s`, redis-benchmark PING (50 keep-alive clients,
//! and a new connection for every request) against redis-server, and dnsperf against
//! dnsmasq answering from its own configuration.
//!
//! Each server runs once for the whole comparison on the backend address (port 19101–19103),
//! pinned to the load CPU like every backend. Each measurement starts a fresh proxy routed to
//! the workload's server, waits until it has bound its port (read from /proc, no probe), warms
//! it with a short untimed run of the same client, then times the real run with the proxy's
//! CPU time read from /proc before and after.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::contenders::{Contender, Proc, Route, Setup, start_proxy_for, wait_listening};
use super::run_text;
use super::topology::Role;
use super::workloads::Workload;
use crate::procstat::Watch;

/// The server behind a real-client workload, on the backend address.
pub fn server(setup: &Setup, w: Workload) -> SocketAddr {
    let port = match w {
        Workload::Iperf1 | Workload::Iperf4 => 19101,
        Workload::Redis | Workload::RedisNew => 19102,
        _ => 19103,
    };
    SocketAddr::new(setup.topology.backend_ip(), port)
}

/// Starts the servers the chosen workloads need (each once) and waits until they listen.
pub fn start_servers(setup: &Setup, workloads: &[Workload]) -> anyhow::Result<Vec<Proc>> {
    let mut procs = Vec::new();
    let wants = |ws: &[Workload]| workloads.iter().any(|w| ws.contains(w));
    if wants(&[Workload::Iperf1, Workload::Iperf4]) {
        let a = server(setup, Workload::Iperf1);
        let mut cmd = setup.command(Role::Backend, Path::new("iperf3"));
        cmd.args(["-s", "-B", &a.ip().to_string(), "-p", &a.port().to_string()]);
        procs.push(started(setup, cmd, "iperf3-server", a, false)?);
    }
    if wants(&[Workload::Redis, Workload::RedisNew]) {
        let a = server(setup, Workload::Redis);
        let mut cmd = setup.command(Role::Backend, Path::new("redis-server"));
        cmd.args([
            "--bind",
            &a.ip().to_string(),
            "--port",
            &a.port().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--maxclients",
            "10000",
        ]);
        procs.push(started(setup, cmd, "redis-server", a, false)?);
    }
    if wants(&[Workload::Dnsperf]) {
        let a = server(setup, Workload::Dnsperf);
        let mut cmd = setup.command(Role::Backend, &super::env::program("dnsmasq"));
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
            "--log-facility=-",
            "--address=/bench.test/192.0.2.1",
        ]);
        cmd.arg(format!("--listen-address={}", a.ip()))
            .arg(format!("--port={}", a.port()));
        procs.push(started(setup, cmd, "dnsmasq", a, true)?);
        std::fs::write(setup.work.join("dnsperf-queries.txt"), "bench.test A\n")?;
    }
    Ok(procs)
}

fn started(
    setup: &Setup,
    cmd: Command,
    name: &str,
    addr: SocketAddr,
    udp: bool,
) -> anyhow::Result<Proc> {
    let mut p = Proc::spawn(cmd, name, setup.work.join(format!("{name}.log")))?;
    wait_listening(addr, &mut p, udp)?;
    Ok(p)
}

/// One measurement of real-client workload `w` through `c`.
pub fn measure(
    setup: &Setup,
    w: Workload,
    c: Contender,
    duration: Duration,
) -> anyhow::Result<Value> {
    let server = server(setup, w);
    let mut proxy = None;
    let target = if c == Contender::Direct {
        server
    } else {
        let route = Route {
            listen: setup.target(c),
            backends: vec![server],
            udp: w == Workload::Dnsperf,
        };
        let mut p = start_proxy_for(setup, c, &route)?.context("a proxy")?;
        wait_listening(route.listen, &mut p, route.udp)?;
        proxy = Some(p);
        route.listen
    };
    let queries = setup.work.join("dnsperf-queries.txt");
    run(w, target, Duration::from_secs(1), &queries).context("warm-up run")?;
    let watch = Watch::start(proxy.as_ref().map(|p| p.pid()))?;
    let (mut result, ops) = run(w, target, duration, &queries)?;
    let (proxy_json, per_op) = watch.finish(ops)?;
    if let Some(p) = proxy.as_mut() {
        p.check_alive()?;
    }
    result["proxy"] = proxy_json;
    let key = match w {
        Workload::Redis => "proxy_cpu_us_per_request",
        Workload::RedisNew => "proxy_cpu_us_per_conn",
        Workload::Dnsperf => "proxy_cpu_us_per_query",
        _ => "proxy_cpu_us_per_mb",
    };
    result[key] = per_op;
    Ok(result)
}

/// Runs the client of `w` for about `duration`; its figures and the operations it made.
fn run(
    w: Workload,
    target: SocketAddr,
    duration: Duration,
    queries: &Path,
) -> anyhow::Result<(Value, u64)> {
    let secs = duration.as_secs().max(1);
    let (host, port) = (target.ip().to_string(), target.port().to_string());
    let mut cmd;
    let mut requests = 0;
    match w {
        Workload::Iperf1 | Workload::Iperf4 => {
            cmd = Command::new("iperf3");
            let streams = if w == Workload::Iperf1 { "1" } else { "4" };
            cmd.args(["-c", &host, "-p", &port, "-P", streams, "--json"])
                .args(["-t", &secs.to_string()]);
        }
        Workload::Redis | Workload::RedisNew => {
            cmd = Command::new("redis-benchmark");
            // Sized for about `duration` at the rates seen here (80k/s keep-alive and 25k/s
            // new connections, direct); the rate is what counts, not the length.
            let (per_sec, keepalive) = if w == Workload::Redis {
                (60_000, "1")
            } else {
                (12_000, "0")
            };
            requests = per_sec * secs;
            cmd.args(["-h", &host, "-p", &port, "-c", "50", "-t", "ping_mbulk"])
                .args(["--csv", "-k", keepalive])
                .args(["-n", &requests.to_string()]);
        }
        Workload::Dnsperf => {
            cmd = Command::new("dnsperf");
            cmd.args(["-s", &host, "-p", &port, "-c", "4", "-q", "200"])
                .arg("-d")
                .arg(queries)
                .args(["-l", &secs.to_string()]);
        }
        _ => anyhow::bail!("{} is not a real-client workload", w.name()),
    }
    let out = run_text(cmd, duration + Duration::from_secs(60))?;
    match w {
        Workload::Iperf1 | Workload::Iperf4 => parse_iperf3(&out),
        Workload::Redis | Workload::RedisNew => {
            parse_redis_benchmark(&out).map(|(v, _)| (v, requests))
        }
        _ => parse_dnsperf(&out),
    }
}

/// iperf3 `--json`: the receiver's bits per second over the whole run.
fn parse_iperf3(out: &str) -> anyhow::Result<(Value, u64)> {
    let v: Value = serde_json::from_str(out).context("iperf3 printed no JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        anyhow::bail!("iperf3: {e}");
    }
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received.bits_per_second")?;
    let bytes = end["sum_received"]["bytes"].as_u64().unwrap_or(0);
    let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    // The operations of a bulk run are its megabytes (10^6 bytes), for the proxy's CPU per
    // MB: what the proxy spends, whether or not it is the bottleneck.
    Ok((
        json!({
            "gbit_per_sec": bps / 1e9,
            "bytes": bytes,
            "retransmits": retransmits,
        }),
        bytes / 1_000_000,
    ))
}

/// redis-benchmark `--csv`: the PING_MBULK line's requests per second (the count of requests
/// is the caller's `-n`).
fn parse_redis_benchmark(out: &str) -> anyhow::Result<(Value, u64)> {
    let line = out
        .lines()
        .find(|l| l.starts_with("\"PING_MBULK\""))
        .with_context(|| format!("redis-benchmark printed no PING_MBULK line: {out:?}"))?;
    let fields: Vec<f64> = line
        .split(',')
        .skip(1)
        .map(|f| f.trim_matches('"').parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("unreadable redis-benchmark line {line:?}"))?;
    anyhow::ensure!(fields.len() >= 6, "short redis-benchmark line {line:?}");
    let (rps, p50, p99) = (fields[0], fields[3], fields[5]);
    Ok((
        json!({
            "req_per_sec": rps,
            "latency_us": {"p50": p50 * 1000.0, "p99": p99 * 1000.0},
        }),
        0,
    ))
}

/// dnsperf's statistics: queries per second, completed and lost.
fn parse_dnsperf(out: &str) -> anyhow::Result<(Value, u64)> {
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    let qps = field("Queries per second:")
        .with_context(|| format!("dnsperf printed no queries per second: {out:?}"))?;
    let completed = field("Queries completed:").unwrap_or(0.0) as u64;
    let lost = field("Queries lost:").unwrap_or(0.0) as u64;
    let avg = field("Average Latency (s):").unwrap_or(0.0);
    Ok((
        json!({
            "qps": qps,
            "completed": completed,
            "lost": lost,
            "latency_us": {"avg": avg * 1e6},
        }),
        completed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_benchmark_csv() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\
                   \"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"PING_MBULK\",\"80000.00\",\"0.344\",\"0.088\",\"0.319\",\"0.519\",\"0.759\",\"1.943\"\n";
        let (v, _) = parse_redis_benchmark(out).unwrap();
        assert_eq!(v["req_per_sec"], 80000.0);
        assert_eq!(v["latency_us"]["p99"], 759.0);
        assert!(parse_redis_benchmark("ERROR\n").is_err());
    }

    #[test]
    fn reads_dnsperf_statistics() {
        let out = "Statistics:\n\n  Queries sent:         200568\n  \
                   Queries completed:    200560 (99.99%)\n  Queries lost:         8 (0.00%)\n\n  \
                   Queries per second:   100112.757129\n\n  \
                   Average Latency (s):  0.000805 (min 0.000023, max 0.004010)\n";
        let (v, ops) = parse_dnsperf(out).unwrap();
        assert_eq!(ops, 200_560);
        assert_eq!(v["lost"], 8);
        assert!((v["qps"].as_f64().unwrap() - 100_112.757_129).abs() < 1e-6);
        assert!(parse_dnsperf("Statistics:\n").is_err());
    }

    #[test]
    fn reads_iperf3_json() {
        let out = r#"{"end": {"sum_received": {"bits_per_second": 1.5e10, "bytes": 9000},
                      "sum_sent": {"retransmits": 3}}}"#;
        let (v, _) = parse_iperf3(out).unwrap();
        assert_eq!(v["gbit_per_sec"], 15.0);
        assert_eq!(v["retransmits"], 3);
        assert!(parse_iperf3(r#"{"error": "unable to connect"}"#).is_err());
    }
}
