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

/// The compare runner end to end on the direct path only (no proxy packages needed): every
/// workload, one round, a report and charts. Needs taskset and two CPUs; skipped otherwise.
#[test]
fn compare_runs_the_direct_path_and_writes_a_report() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Command::new("taskset").arg("--version").output().is_ok();
    if cpus < 2 || !taskset {
        eprintln!("skipped: needs taskset and 2 CPUs (have {cpus}, taskset: {taskset})");
        return;
    }
    let out = std::env::temp_dir().join(format!("loadtest-smoke-{}", std::process::id()));
    let out_s = out.to_str().unwrap();
    let o = Command::new(BIN)
        .args([
            "compare",
            "--contenders",
            "direct",
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
