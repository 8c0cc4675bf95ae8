//! Connection limits through real sockets: the idle timeout cuts idle connections and leaves
//! busy ones; max connections per port and in all refuse the excess at once (counted) and let
//! new ones in once others close; per-port options override the flags; and the real binary under
//! a low descriptor limit refuses a flood instead of leaving it in the backlog, then serves again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::process::Dermaga;
use crate::support::*;
use dermaga::{Gateway, GatewayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects and reads the backend's greeting: the connection is then open end to end.
async fn open(addr: SocketAddr, tag: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut greeting = vec![0u8; tag.len() + 1];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut greeting))
        .await
        .expect("greeting within 10s")
        .expect("greeting");
    assert_eq!(greeting, format!("{tag}\n").as_bytes());
    s
}

/// How a connection ended, waited for with a bound.
#[derive(Debug, PartialEq)]
enum End {
    /// Read returned 0 or an error (reset): closed.
    Closed,
    /// Still open after the bound.
    Open,
}

async fn end_within(s: &mut TcpStream, bound: Duration) -> End {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(bound, s.read(&mut buf)).await {
        Err(_) => End::Open,
        Ok(Ok(0)) | Ok(Err(_)) => End::Closed,
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", &buf[..n]),
    }
}

/// Connects; a reset that comes before connect returns (the gateway was that quick) is `None`.
async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    match TcpStream::connect(addr).await {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connect to {addr}: {e}"),
    }
}

/// A connection the gateway accepts and resets at once: the kernel completes the handshake,
/// then connect or the first read sees the reset, well within 2 s.
async fn assert_refused(addr: SocketAddr) {
    if let Some(mut s) = connect(addr).await {
        assert_eq!(
            end_within(&mut s, Duration::from_secs(2)).await,
            End::Closed
        );
    }
}

/// One round trip on an open connection (the backend echoes).
async fn ping(s: &mut TcpStream, round: u32) {
    let msg = format!("ping {round}\n");
    s.write_all(msg.as_bytes()).await.expect("still open");
    let mut echo = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .expect("echo within 5s")
        .expect("still open");
    assert_eq!(echo, msg.as_bytes());
}

fn one_port_yaml(ports: &[(&str, &str)], backends: &[(&str, &Backend)]) -> String {
    let mut yaml = configmap_yaml(ports);
    for (service, backend) in backends {
        yaml += &service_yaml(service, 80);
        yaml += &slices_yaml(service, &[(backend.addr, true)]);
    }
    yaml
}

fn refused_max(gw: &Gateway, port: &str) -> f64 {
    metric(
        gw,
        "dermaga_connections_refused_total",
        &[("port", port), ("reason", "max_connections")],
    )
}

async fn wait_active(gw: &Gateway, port: &str, count: f64) {
    wait_until(&format!("{count} active on port {port}"), || {
        metric(gw, "dermaga_connections_active", &[("port", port)]) == count
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_cuts_an_idle_connection_and_leaves_a_busy_one() {
    let listen = "127.1.5.1";
    let backend = Backend::start("127.0.5.1", "echo").await;
    let timeout = Duration::from_millis(500);
    let mut opts = options(listen);
    opts.tcp.idle_timeout = timeout;
    let (gw, lines) = gateway_with_access_log(opts);
    apply(
        &gw,
        &one_port_yaml(&[("10000", "default/echo:80")], &[("echo", &backend)]),
    );
    let addr = gw.wait_bound(tcp(10000)).await;

    let mut idle = open(addr, "echo").await;
    let idle_since = Instant::now();
    let mut busy = open(addr, "echo").await;
    // The busy one sends every 100 ms for 3 timeouts, while the idle one is waited on.
    let busy_task = tokio::spawn(async move {
        let started = Instant::now();
        let mut round = 0;
        while started.elapsed() < timeout * 3 {
            ping(&mut busy, round).await;
            round += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        busy
    });
    assert_eq!(
        end_within(&mut idle, Duration::from_secs(5)).await,
        End::Closed
    );
    let idle_for = idle_since.elapsed();
    // One tick (100 ms) of slack: the coarse clock may run a tick late on a loaded machine.
    assert!(
        idle_for + std::time::Duration::from_millis(100) >= timeout,
        "cut early, after {idle_for:?}"
    );
    println!("idle connection cut after {idle_for:?} (timeout {timeout:?})");
    let mut busy = busy_task.await.expect("the busy connection survived");
    ping(&mut busy, 999).await;

    wait_until("the idle cut counted", || {
        metric(&gw, "dermaga_idle_timeouts_total", &[("port", "10000")]) == 1.0
    })
    .await;
    wait_until("the access-log line", || {
        lines.records().iter().any(|r| r["close"] == "idle_timeout")
    })
    .await;
    // Left alone, the busy one is cut too.
    assert_eq!(
        end_within(&mut busy, Duration::from_secs(5)).await,
        End::Closed
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_port_max_connections_refuses_the_excess_at_once_and_recovers() {
    let listen = "127.1.5.2";
    let a = Backend::start("127.0.5.2", "a").await;
    let b = Backend::start("127.0.5.3", "b").await;
    let mut opts = options(listen);
    opts.tcp.max_connections_per_port = 3;
    let gw = gateway(
        &one_port_yaml(
            &[("10000", "default/a:80"), ("10001", "default/b:80")],
            &[("a", &a), ("b", &b)],
        ),
        opts,
    );
    let port_a = gw.wait_bound(tcp(10000)).await;
    let port_b = gw.wait_bound(tcp(10001)).await;

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open(port_a, "a").await);
    }
    assert_refused(port_a).await;
    assert_eq!(refused_max(&gw, "10000"), 1.0);
    // The limit is per port: the other port still serves.
    let other = open(port_b, "b").await;

    drop(held.pop());
    wait_active(&gw, "10000", 2.0).await;
    held.push(open(port_a, "a").await);
    assert_refused(port_a).await;
    assert_eq!(refused_max(&gw, "10000"), 2.0);
    assert_eq!(refused_max(&gw, "10001"), 0.0);
    drop((held, other));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_with_two_listeners_serves_both_and_keeps_one_limit_and_a_successor_takes_over() {
    // Two listening sockets per port (`--tcp-listeners-per-port 2`): the kernel hashes new
    // connections over both, each with its own accept loop; the port's limit is one count.
    let listen = "127.1.5.5";
    let a = Backend::start("127.0.5.6", "a").await;
    let b = Backend::start("127.0.5.7", "b").await;
    let two_listeners = || {
        let mut opts = options(listen);
        opts.reuse_port = true;
        opts.tcp_listeners_per_port = 2;
        opts.tcp.max_connections_per_port = 24;
        opts
    };
    let old = gateway(
        &one_port_yaml(&[("10000", "default/a:80")], &[("a", &a)]),
        two_listeners(),
    );
    let port = old.wait_bound(tcp(10000)).await;
    let mut held = Vec::new();
    for _ in 0..24 {
        held.push(open(port, "a").await);
    }
    for _ in 0..4 {
        assert_refused(port).await;
    }
    assert_eq!(refused_max(&old, "10000"), 4.0);
    // The kernel hashed the 28 connections over both listeners (all to one would happen once
    // in 2^27 runs): had either accept loop not served, its share would have hung in `open`.
    drop(held);
    wait_active(&old, "10000", 0.0).await;
    // A successor binding the port the same way takes every new connection.
    let new = gateway(
        &one_port_yaml(&[("10000", "default/b:80")], &[("b", &b)]),
        two_listeners(),
    );
    new.wait_bound(tcp(10000)).await;
    for _ in 0..20 {
        drop(open(port, "b").await);
    }
    new.shutdown().await;
    old.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_max_connections_spans_ports() {
    let listen = "127.1.5.3";
    let a = Backend::start("127.0.5.4", "a").await;
    let b = Backend::start("127.0.5.5", "b").await;
    let mut opts = options(listen);
    opts.tcp.max_connections = 2;
    let gw = gateway(
        &one_port_yaml(
            &[("10000", "default/a:80"), ("10001", "default/b:80")],
            &[("a", &a), ("b", &b)],
        ),
        opts,
    );
    let port_a = gw.wait_bound(tcp(10000)).await;
    let port_b = gw.wait_bound(tcp(10001)).await;

    let on_a = open(port_a, "a").await;
    let on_b = open(port_b, "b").await;
    assert_refused(port_a).await;
    assert_refused(port_b).await;
    assert_eq!(refused_max(&gw, "10000"), 1.0);
    assert_eq!(refused_max(&gw, "10001"), 1.0);

    drop(on_a);
    wait_active(&gw, "10000", 0.0).await;
    let again = open(port_b, "b").await;
    assert_refused(port_a).await;
    drop((on_b, again));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_port_options_override_the_flags() {
    let listen = "127.1.5.4";
    let a = Backend::start("127.0.5.6", "a").await;
    let b = Backend::start("127.0.5.7", "b").await;
    let timeout = Duration::from_millis(300);
    let mut opts: GatewayOptions = options(listen);
    opts.tcp.idle_timeout = timeout;
    opts.tcp.max_connections_per_port = 1;
    let gw = gateway(
        &one_port_yaml(
            &[
                ("10000", "default/a:80"),
                ("10001", "default/b:80"),
                ("10001.idle-timeout", "off"),
                ("10001.max-connections", "2"),
            ],
            &[("a", &a), ("b", &b)],
        ),
        opts,
    );
    let port_a = gw.wait_bound(tcp(10000)).await;
    let port_b = gw.wait_bound(tcp(10001)).await;

    // Port A follows the flags: one connection, cut when idle.
    let mut on_a = open(port_a, "a").await;
    assert_refused(port_a).await;
    // Port B's options: two connections, never cut for idleness.
    let mut on_b1 = open(port_b, "b").await;
    let mut on_b2 = open(port_b, "b").await;
    assert_refused(port_b).await;
    assert_eq!(
        end_within(&mut on_a, Duration::from_secs(5)).await,
        End::Closed
    );
    // Idle for over 3 timeouts, and still open.
    assert_eq!(end_within(&mut on_b1, timeout * 3).await, End::Open);
    ping(&mut on_b1, 1).await;
    ping(&mut on_b2, 2).await;
    assert_eq!(
        metric(&gw, "dermaga_idle_timeouts_total", &[("port", "10001")]),
        0.0
    );
    // Closed first: open ones would hold the shutdown for its whole grace (60 s).
    drop((on_b1, on_b2));
    wait_active(&gw, "10001", 0.0).await;
    gw.shutdown().await;
}

/// The real binary under `ulimit -n 64`: a flood of 150 held connections. The gateway accepts
/// what its descriptors allow, short of the few it keeps for the admin server, and refuses the
/// rest with a reset (none left waiting in the backlog), keeps running, answers `/healthz` and
/// `/readyz` at the limit, counts the refusals, and serves normally once the flood is gone.
/// The flood goes to a port that expects a PROXY header, so each held connection takes exactly
/// one descriptor (no upstream connect before the header) and the limit is reached at accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_refuses_the_excess_and_recovers() {
    const DESCRIPTORS: usize = 64;
    const FLOOD: usize = 150;
    let listen = "127.1.5.30";
    let at = |port: u16| -> SocketAddr { format!("{listen}:{port}").parse().unwrap() };
    let web = Backend::start("127.0.5.30", "web").await;
    let yaml = one_port_yaml(
        &[
            ("10000", "default/web:80:PROXY"),
            ("10001", "default/web:80"),
        ],
        &[("web", &web)],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dermaga.yaml");
    std::fs::write(&config, yaml).unwrap();
    let nofile = format!("--nofile={DESCRIPTORS}:{DESCRIPTORS}");
    let mut d = Dermaga::start_under(
        &["prlimit", &nofile, "--"],
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen-address",
            listen,
            "--admin-address",
            "127.1.5.30:0",
            "--shutdown-delay",
            "0s",
            "--drain-timeout",
            "1s",
            "--proxy-header-timeout",
            "60s",
        ],
    );
    let admin = d.admin_address();
    d.wait_log(&["listening", "10000/TCP"]);
    d.wait_log(&["listening", "10001/TCP"]);
    // Served before the flood.
    drop(open(at(10001), "web").await);

    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..FLOOD {
        // The kernel completes each handshake (backlog 4096) whether or not dermaga accepts.
        match connect(at(10000)).await {
            Some(s) => flood.push(s),
            None => refused += 1,
        }
    }
    // Each flood connection is either held by dermaga (waiting for its PROXY header) or reset;
    // none may be left waiting in the backlog, so at most DESCRIPTORS stay open.
    let waits: Vec<_> = flood
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let end = end_within(&mut s, Duration::from_secs(3)).await;
                (s, end)
            })
        })
        .collect();
    let mut held = Vec::new();
    for wait in waits {
        match wait.await.unwrap() {
            (s, End::Open) => held.push(s),
            (_, End::Closed) => refused += 1,
        }
    }
    println!(
        "flood of {FLOOD} under --nofile={DESCRIPTORS}: {} held, {refused} refused",
        held.len()
    );
    assert!(held.len() < DESCRIPTORS, "{} held", held.len());
    assert!(!held.is_empty(), "some connections are accepted");
    assert_eq!(held.len() + refused, FLOOD);
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "dermaga keeps running"
    );
    // At the limit, the admin server still has descriptors: the liveness and readiness probes
    // answer while the flood's connections are held (and more keep coming).
    let mut more = Vec::new();
    for _ in 0..20 {
        more.extend(connect(at(10000)).await);
    }
    for path in ["/healthz", "/readyz", "/healthz"] {
        let (status, _) = tokio::time::timeout(Duration::from_secs(5), http_get(admin, path))
            .await
            .unwrap_or_else(|_| panic!("{path} answered within 5 s at the descriptor limit"));
        assert_eq!(status, 200, "{path} at the descriptor limit");
    }
    drop(more);

    // The flood ends: its held connections close (no PROXY header came), descriptors free up.
    drop(held);
    let metrics = wait_for_metrics(admin, |text| {
        metric_in(text, "dermaga_connections_active", &[("port", "10000")]) == 0.0
    })
    .await;
    let counted = metric_in(
        &metrics,
        "dermaga_connections_refused_total",
        &[("port", "10000"), ("reason", "out_of_descriptors")],
    );
    assert!(
        counted >= refused as f64,
        "{counted} counted, {refused} seen"
    );
    d.wait_log(&["refusing new connections with a reset", "port=10000/TCP"]);

    // Normal service again, end to end.
    drop(open(at(10001), "web").await);
    let mut proxied = TcpStream::connect(at(10000)).await.unwrap();
    proxied
        .write_all(b"PROXY TCP4 203.0.113.9 198.51.100.1 4242 10000\r\n")
        .await
        .unwrap();
    let mut greeting = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), proxied.read_exact(&mut greeting))
        .await
        .expect("greeting within 10s")
        .unwrap();
    assert_eq!(&greeting, b"web\n");
    drop(proxied);
    assert!(d.terminate().success());
}

/// Scrapes /metrics until `ready` holds (bounded: 50 tries, 100 ms apart); returns the text.
async fn wait_for_metrics(admin: SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    for _ in 0..50 {
        let (status, text) = http_get(admin, "/metrics").await;
        if status == 200 && ready(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("metrics never reached the expected state");
}
