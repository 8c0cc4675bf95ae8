//! Smoke run of every `loadtest` subcommand, so the benchmark tool cannot rot: a fraction of
//! a second each, tiny sizes, against the tool's own backend on 127.0.0.1 port 0 (given as
//! the "proxy" pid too, so the /proc readings are exercised), checking that the JSON has the
//! expected fields with sane values. Not a benchmark: no figure is compared with anything.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loadtest");

/// The loadtest backend, killed when dropped.
struct Backend {
    child: Child,
    addr: String,
}

impl Backend {
    fn start(tag: &str) -> Backend {
        let mut child = Command::new(BIN)
            .args(["backend", "--listen", "127.0.0.1:0", "--tag", tag])
            .stdout(Stdio::piped())
            .spawn()
            .expect("backend starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line).expect("backend announces its address");
        assert_eq!(v["tcp"], v["udp"], "TCP and UDP on the same port");
        Backend {
            addr: v["tcp"].as_str().unwrap().to_string(),
            child,
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `loadtest ARGS...` (bounded by the subcommand's own duration) and parses its JSON.
fn run(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("loadtest runs");
    assert!(
        out.status.success(),
        "loadtest {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).expect("valid JSON")
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[k];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// p50 ≤ p90 ≤ p99 ≤ p99.9 ≤ max, all positive.
fn ordered(v: &Value, key: &str) {
    let p: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|q| num(v, &[key, q]))
        .collect();
    assert!(p[0] > 0.0, "{key}: {v}");
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "{key} not ordered: {v}");
}

/// The `proxy` object read from /proc for the backend's pid.
fn proxy_sane(v: &Value) {
    assert_eq!(v["proxy"]["processes"], 1, "{v}");
    assert!(num(v, &["proxy", "cpu_seconds"]) >= 0.0);
    assert!(num(v, &["proxy", "rss_after_bytes"]) > 0.0);
}

#[test]
fn backend_answers_the_tag_probe_on_tcp_and_udp_and_echoes() {
    let b = Backend::start("smoke");
    let mut s = TcpStream::connect(&b.addr).unwrap();
    s.write_all(b"T").unwrap();
    let mut tag = String::new();
    s.read_to_string(&mut tag).unwrap();
    assert_eq!(tag, "smoke\n");
    let mut s = TcpStream::connect(&b.addr).unwrap();
    s.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    u.connect(&b.addr).unwrap();
    u.send(b"T").unwrap();
    let mut buf = [0u8; 16];
    let n = u.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"smoke\n");
}

#[test]
fn bulk_reports_bytes_and_proxy_cpu() {
    let b = Backend::start("b");
    let v = run(&[
        "bulk",
        "--target",
        &b.addr,
        "--streams",
        "2",
        "--duration",
        "200ms",
        "--proxy-pid",
        &b.pid(),
    ]);
    assert_eq!(v["test"], "bulk");
    assert_eq!(v["streams"], 2);
    assert!(
        num(&v, &["bytes"]) > 0.0 && num(&v, &["gbit_per_sec"]) > 0.0,
        "{v}"
    );
    proxy_sane(&v);
}

#[test]
fn rr_reports_rate_percentiles_and_cpu_per_request() {
    let b = Backend::start("b");
    let v = run(&[
        "rr",
        "--target",
        &b.addr,
        "--connections",
        "4",
        "--duration",
        "200ms",
        "--proxy-pid",
        &b.pid(),
    ]);
    assert!(
        num(&v, &["requests"]) > 0.0 && num(&v, &["req_per_sec"]) > 0.0,
        "{v}"
    );
    assert_eq!(v["errors"], 0);
    ordered(&v, "latency_us");
    assert!(num(&v, &["proxy_cpu_us_per_request"]) >= 0.0);
    proxy_sane(&v);
    // Without --proxy-pid (the direct path) the proxy fields are null.
    let v = run(&[
        "rr",
        "--target",
        &b.addr,
        "--connections",
        "2",
        "--duration",
        "100ms",
    ]);
    assert!(
        v["proxy"].is_null() && v["proxy_cpu_us_per_request"].is_null(),
        "{v}"
    );
}

#[test]
fn latency_follows_the_offered_rate_and_answers_everything() {
    let b = Backend::start("b");
    let v = run(&[
        "latency",
        "--target",
        &b.addr,
        "--rate",
        "2000",
        "--connections",
        "4",
        "--duration",
        "300ms",
        "--proxy-pid",
        &b.pid(),
    ]);
    let sent = num(&v, &["sent"]);
    assert!((500.0..=700.0).contains(&sent), "2000/s for 0.3 s: {v}");
    assert_eq!(v["received"], v["sent"]);
    assert_eq!(v["unanswered"], 0);
    ordered(&v, "latency_us");
    ordered(&v, "service_us");
    // Measured from the intended send time, so never below the time from the actual send.
    assert!(num(&v, &["latency_us", "max"]) >= num(&v, &["service_us", "p50"]));
    proxy_sane(&v);
}

#[test]
fn conn_reports_connections_and_cpu_per_connection() {
    let b = Backend::start("b");
    let v = run(&[
        "conn",
        "--target",
        &b.addr,
        "--concurrency",
        "4",
        "--duration",
        "200ms",
        "--proxy-pid",
        &b.pid(),
    ]);
    assert!(
        num(&v, &["connections"]) > 0.0 && num(&v, &["conn_per_sec"]) > 0.0,
        "{v}"
    );
    assert_eq!(v["failed"], 0);
    assert!(num(&v, &["proxy_cpu_us_per_conn"]) >= 0.0);
    proxy_sane(&v);
}

#[test]
fn idle_holds_every_connection_and_reports_rss_per_connection() {
    let b = Backend::start("b");
    let v = run(&[
        "idle",
        "--target",
        &b.addr,
        "--connections",
        "50",
        "--hold",
        "100ms",
        "--proxy-pid",
        &b.pid(),
    ]);
    assert_eq!(v["held"], 50, "{v}");
    assert_eq!(v["alive_after_hold"], 50);
    assert_eq!(v["failed"], 0);
    num(&v, &["proxy_rss_bytes_per_conn"]);
    // The backend holds one socket per connection.
    assert!(
        (0.5..=1.5).contains(&num(&v, &["proxy_fds_per_conn"])),
        "{v}"
    );
    assert!(num(&v, &["proxy_rss_at_peak_bytes"]) > 0.0);
    proxy_sane(&v);
}

#[test]
fn dns_over_udp_reports_qps_latency_and_cpu_per_query() {
    let b = Backend::start("b");
    let v = run(&[
        "dns",
        "--target",
        &b.addr,
        "--clients",
        "4",
        "--duration",
        "200ms",
        "--proxy-pid",
        &b.pid(),
    ]);
    assert!(
        num(&v, &["answered"]) > 0.0 && num(&v, &["qps"]) > 0.0,
        "{v}"
    );
    assert_eq!(v["lost"], 0);
    ordered(&v, "latency_us");
    assert!(num(&v, &["proxy_cpu_us_per_query"]) >= 0.0);
    proxy_sane(&v);
}

/// The runners pin the proxy to CPU 0 and the load to CPU 1 with taskset: without either, the
/// tests below fail saying what is missing (never a silent pass).
fn needs_taskset_and_two_cpus() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        Command::new("taskset").arg("--version").output().is_ok(),
        "taskset is missing: apt-get install util-linux"
    );
    assert!(
        cpus >= 2,
        "the runners pin the proxy and the load to two CPUs; this machine lets the test use {cpus}"
    );
}

/// The compare runner end to end on the direct path only (no proxy packages needed): every
/// workload, one round, a report and charts. Needs taskset and two CPUs.
#[test]
fn compare_runs_the_direct_path_and_writes_a_report() {
    needs_taskset_and_two_cpus();
    let out = std::env::temp_dir().join(format!("loadtest-smoke-{}", std::process::id()));
    let out_s = out.to_str().unwrap();
    let o = Command::new(BIN)
        .args([
            "compare",
            "--contenders",
            "direct",
            "--workloads",
            "bulk1,bulk4,rr,latency,conn,idle,udp",
            "--rounds",
            "1",
            "--duration",
            "150ms",
        ])
        .args(["--idle-connections", "10", "--net", "78", "--out", out_s])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "compare failed: {stderr}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for row in [
        "bulk TCP, 1 stream",
        "request/response 64 B",
        "latency p99",
        "new connections",
        "UDP request/response",
    ] {
        assert!(report.contains(row), "{row} missing: {report}");
    }
    assert!(
        report.contains("validation run"),
        "1 round is marked as such"
    );
    assert!(!report.contains("error:"), "{report}");
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(
        results.lines().count(),
        6,
        "6 workloads apply to the direct path: {results}"
    );
    assert!(out.join("images/compare-throughput.svg").is_file());
    let _ = std::fs::remove_dir_all(&out);
}

/// The real clients (iperf3, redis-benchmark, dnsperf against iperf3 -s, redis-server,
/// dnsmasq) through the direct path and through dermaga (the debug build `cargo test
/// --workspace` has made), on loopback and across the veth topology's namespaces: every
/// figure read from the clients' own output, the proxy's CPU per operation from /proc, and
/// the namespaces gone afterwards. Needs the Debian packages `.ci/run` installs, root (for
/// the namespaces), taskset and two CPUs.
#[test]
fn compare_drives_real_clients_on_loopback_and_veth() {
    needs_taskset_and_two_cpus();
    let dermaga = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/dermaga");
    assert!(
        dermaga.is_file(),
        "{} missing: `cargo test --workspace` builds it",
        dermaga.display()
    );
    for (topology, workloads, net) in [
        ("loopback", "iperf1,redis,redis-new,dnsperf", "79"),
        ("veth", "iperf4,redis-new,dnsperf", "80"),
    ] {
        let out =
            std::env::temp_dir().join(format!("loadtest-real-{topology}-{}", std::process::id()));
        let o = Command::new(BIN)
            .args([
                "compare",
                "--contenders",
                "direct,dermaga",
                "--workloads",
                workloads,
            ])
            .args(["--topology", topology, "--rounds", "1", "--duration", "1s"])
            .arg("--dermaga")
            .arg(&dermaga)
            .args(["--net", net, "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "compare on {topology} failed: {stderr}");
        let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
        let runs: Vec<serde_json::Value> = results
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(runs.len(), 2 * workloads.split(',').count(), "{results}");
        for r in &runs {
            let (w, c, v) = (&r["workload"], &r["contender"], &r["result"]);
            assert!(v.get("error").is_none(), "{w} via {c} on {topology}: {v}");
            let rate = ["gbit_per_sec", "req_per_sec", "qps"]
                .iter()
                .find_map(|k| v[k].as_f64())
                .unwrap_or_else(|| panic!("{w} via {c}: no rate in {v}"));
            assert!(rate > 0.0, "{w} via {c}: {v}");
            if c == "dermaga" {
                let cpu = [
                    "proxy_cpu_us_per_request",
                    "proxy_cpu_us_per_conn",
                    "proxy_cpu_us_per_query",
                    "proxy_cpu_us_per_mb",
                ]
                .iter()
                .find_map(|k| v[k].as_f64());
                assert!(cpu.is_some_and(|c| c > 0.0), "{w} via dermaga: {v}");
            }
        }
        let report = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(
            report.contains(&format!("Latest run on {topology}")),
            "{report}"
        );
        let _ = std::fs::remove_dir_all(&out);
    }
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains("lt80-"),
        "the veth run's namespaces are removed"
    );
}

/// `failover` straight to its own two backends, the second killed after half the
/// connections: what went to the killed one after that is counted as failed (refused), not
/// hidden, and the survivor answers all of its share.
#[test]
fn failover_counts_connections_to_a_killed_backend_as_failures() {
    let v = run(&[
        "failover",
        "--backends",
        "127.0.7.11:0,127.0.7.12:0",
        "--connections",
        "200",
        "--concurrency",
        "4",
        "--kill-after",
        "100",
        "--max-time",
        "20s",
    ]);
    assert_eq!(v["attempted"], 200, "{v}");
    assert_eq!(v["not_attempted"], 0);
    let (ok, failed) = (num(&v, &["succeeded"]), num(&v, &["failed"]));
    assert_eq!(ok + failed, 200.0, "{v}");
    let backends: Vec<String> = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert_eq!(v["killed"]["backend"], backends[1].as_str());
    // Connections alternate between the two: the survivor answers its 100.
    assert_eq!(num(&v, &["per_backend", &backends[0]]), 100.0, "{v}");
    assert_eq!(
        num(&v, &["per_backend", &backends[1]]) + failed,
        100.0,
        "every connection to the killed backend either succeeded before or failed: {v}"
    );
    // The 50 started after the kill fail: refused, or reset when one raced the listener's
    // close (accepted by the kernel, then reset with the backlog).
    assert!(failed >= 50.0, "{v}");
    assert!(
        num(&v, &["failed_by_kind", "refused"]) >= 40.0,
        "most are refused: {v}"
    );
}

/// `failover` through nothing but a refusing address (the S2 shape, no proxy): one in three
/// connections refused.
#[test]
fn failover_counts_a_refusing_endpoint() {
    let v = run(&[
        "failover",
        "--backends",
        "127.0.7.13:0,127.0.7.14:0",
        "--refusing",
        "127.0.7.15:9",
        "--connections",
        "90",
        "--concurrency",
        "3",
    ]);
    assert_eq!(v["failed"], 30, "{v}");
    assert_eq!(v["failed_by_kind"]["refused"], 30);
    assert_eq!(v["succeeded"], 60);
    assert!(v["killed"].is_null());
}

/// The failover runner end to end on the direct path (no proxy packages needed): both
/// scenarios, one round, a report. Needs taskset and two CPUs.
#[test]
fn failover_compare_runs_the_direct_path_and_writes_a_report() {
    needs_taskset_and_two_cpus();
    let out = std::env::temp_dir().join(format!("loadtest-failover-{}", std::process::id()));
    let docs = out.join("doc.md");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(&docs, "# Resilience\n\nhand-written text\n").unwrap();
    let o = Command::new(BIN)
        .args([
            "failover-compare",
            "--contenders",
            "direct",
            "--rounds",
            "1",
        ])
        .args(["--connections", "120", "--write-docs"])
        .arg("--out")
        .arg(&out)
        .arg("--docs")
        .arg(&docs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "failover-compare failed: {stderr}");
    let doc = std::fs::read_to_string(&docs).unwrap();
    assert!(
        doc.starts_with("# Resilience\n\nhand-written text\n"),
        "{doc}"
    );
    for want in [
        "S2: 3 endpoints, one refusing | direct | 40 | 120 | 33.3 % | refused 40 |",
        "S3: 2 endpoints, one killed halfway | direct |",
        "<!-- failover compare: end -->",
    ] {
        assert!(doc.contains(want), "{want:?} missing: {doc}");
    }
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 2, "{results}");
    assert!(!results.contains("\"error\""), "{results}");
    let _ = std::fs::remove_dir_all(&out);
}
