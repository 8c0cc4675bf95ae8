//! Operating it: the admin server over real HTTP (/healthz, /readyz, /metrics with exact counter
//! values after known traffic, /routes following a reload) and the access log's every field.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use dermaga::Gateway;
use dermaga::Index;
use dermaga::Metrics;
use dermaga::parse_manifest;
use dermaga::{AccessLog, AccessLogFormat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Greeting, 10 bytes each way, client half-close, EOF.
async fn exchange(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 4];
    s.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"web\n");
    s.write_all(b"0123456789").await.unwrap();
    let mut echo = [0u8; 10];
    s.read_exact(&mut echo).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(s.read(&mut [0u8; 1]).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_readiness_exact_metrics_and_routes() {
    let listen = "127.1.8.70";
    let web = Backend::start("127.0.0.2", "web").await;
    let mut opts = options(listen);
    // The refusing endpoint stays ejected for the whole test.
    opts.health.base_ejection = Duration::from_secs(600);
    opts.health.max_ejection = Duration::from_secs(600);
    let gw = Gateway::start(Index::new(settings()), opts);
    let (admin, _stop) = start_admin(&gw, listen).await;

    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".into()));
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not synced: no configuration loaded yet\n")
    );

    let refusing: SocketAddr = REFUSING.parse().unwrap();
    let yaml = configmap_yaml(&[("10000", "default/web:80"), ("10001", "default/empty:80")])
        + &service_yaml("web", 80)
        + &service_yaml("empty", 80)
        + &slices_yaml("web", &[(web.addr, true), (refusing, true)]);
    apply(&gw, &yaml);
    let port = gw.wait_bound(tcp(10000)).await;
    let empty = gw.wait_bound(tcp(10001)).await;
    gw.wait_for_ports(|p| p.len() == 2).await;
    assert_eq!(http_get(admin, "/readyz").await.0, 200);

    // Known traffic: 10 exchanges on 10000 (every second one first tries the refusing
    // endpoint, until its third refusal ejects it), 3 connections on the port without endpoints.
    for _ in 0..10 {
        exchange(port).await;
    }
    for _ in 0..3 {
        let r = async { TcpStream::connect(empty).await?.read(&mut [0u8; 1]).await }.await;
        assert!(r.is_err());
    }
    let web_labels = [
        ("port", "10000"),
        ("protocol", "TCP"),
        ("namespace", "default"),
        ("service", "web"),
    ];
    wait_until("all connections finished", || {
        metric(
            &gw,
            "dermaga_connection_duration_seconds_count",
            &web_labels,
        ) == 10.0
            && metric(
                &gw,
                "dermaga_connections_refused_total",
                &[("port", "10001")],
            ) == 3.0
    })
    .await;

    let (status, text) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let m = |name: &str, labels: &[(&str, &str)]| metric_in(&text, name, labels);
    assert_eq!(m("dermaga_connections_accepted_total", &web_labels), 10.0);
    assert_eq!(m("dermaga_connections_active", &web_labels), 0.0);
    assert_eq!(m("dermaga_bytes_received_total", &web_labels), 100.0);
    assert_eq!(
        m("dermaga_bytes_sent_total", &web_labels),
        140.0,
        "10 × (greeting 4 + echo 10)"
    );
    assert_eq!(
        m("dermaga_upstream_connect_attempts_total", &web_labels),
        13.0
    );
    assert_eq!(m("dermaga_upstream_retries_total", &web_labels), 3.0);
    assert_eq!(
        m(
            "dermaga_upstream_connect_failures_total",
            &[
                ("endpoint", REFUSING),
                ("pod", "pod default/web-pod-1"),
                ("reason", "refused")
            ]
        ),
        3.0
    );
    assert_eq!(
        m(
            "dermaga_endpoint_ejections_total",
            &[("endpoint", REFUSING), ("pod", "pod default/web-pod-1")]
        ),
        1.0
    );
    assert_eq!(
        m("dermaga_endpoint_ejected", &[("endpoint", REFUSING)]),
        1.0
    );
    assert_eq!(
        m("dermaga_connections_refused_total", &[("port", "10000")]),
        0.0
    );
    assert_eq!(
        m("dermaga_connections_accepted_total", &[("port", "10001")]),
        3.0
    );
    assert_eq!(
        m(
            "dermaga_connections_refused_total",
            &[
                ("port", "10001"),
                ("service", "empty"),
                ("reason", "no_endpoints")
            ]
        ),
        3.0
    );
    // Small messages go through the copy buffer (bursts that fill it go on through a pipe).
    assert_eq!(
        m("dermaga_forwarded_connections_total", &[("mode", "splice")]),
        0.0
    );
    assert_eq!(
        m("dermaga_forwarded_connections_total", &[("mode", "copy")]),
        10.0
    );
    assert_eq!(m("dermaga_listeners_bound", &[]), 2.0);
    assert_eq!(m("dermaga_listeners_failed", &[]), 0.0);
    assert_eq!(m("dermaga_pipes", &[]), 0.0, "no burst was large enough");
    assert!(text.ends_with("# EOF\n"));

    // /routes shows the table, and follows a reload.
    let (status, body) = http_get(admin, "/routes").await;
    assert_eq!(status, 200);
    let routes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = &routes["routes"][0];
    assert_eq!(first["port"], 10000);
    assert_eq!(first["service"], "default/web");
    assert_eq!(first["listener"]["state"], "bound");
    assert_eq!(first["selection"], "Ready");
    assert_eq!(first["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(first["endpoints"][1]["addr"], REFUSING);
    assert_eq!(first["endpoints"][1]["target"], "pod default/web-pod-1");
    assert_eq!(first["endpoints"][1]["active"], true);
    let health = &first["endpoints"][1]["health"];
    assert_eq!(health["state"], "ejected", "{health}");
    assert_eq!(health["consecutive_failures"], 3);
    assert_eq!(health["ejections"], 1);
    assert!(health["ejected_for_ms"].as_u64().unwrap() <= 600_000);
    assert_eq!(first["endpoints"][0]["health"]["state"], "healthy");
    let generation = routes["generation"].as_u64().unwrap();

    apply(
        &gw,
        // The map replaced, the other objects kept (an object may appear only once).
        &(configmap_yaml(&[
            ("10000", "default/web:80"),
            ("10001", "default/empty:80"),
            ("10002", "default/missing:80"),
        ]) + yaml.split_once("---\n").expect("the map's document").1),
    );
    let (_, body) = http_get(admin, "/routes").await;
    let routes: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(routes["generation"].as_u64().unwrap() > generation);
    let ports: Vec<u64> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [10000, 10001, 10002]);
    assert_eq!(
        routes["routes"][2]["problem"],
        "Service default/missing not found"
    );
    assert!(
        routes["problems"][0]
            .as_str()
            .unwrap()
            .contains("Service default/missing not found")
    );

    // Draining: /readyz answers 503 at once.
    gw.shutdown_token().cancel();
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "draining: shutting down\n"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_connection_with_every_field() {
    let listen = "127.1.8.71";
    let web = Backend::start("127.0.0.2", "web").await;
    let held = Backend::start("127.0.0.3", "held").await;
    let mut opts = options(listen);
    opts.drain_timeout = Duration::from_millis(300);
    let (gw, lines) = gateway_with_access_log(opts);
    let yaml = |with_held: bool| {
        let mut entries = vec![
            ("10000", "default/web:80:PROXY"),
            ("10001", "default/nothing:80"),
        ];
        if with_held {
            entries.push(("10003", "default/held:80"));
        }
        configmap_yaml(&entries)
            + &service_yaml("web", 80)
            + &service_yaml("nothing", 80)
            + &service_yaml("held", 80)
            + &slices_yaml("web", &[(web.addr, true)])
            + &slices_yaml("held", &[(held.addr, true)])
    };
    let objects = parse_manifest(&yaml(true)).unwrap().objects;
    gw.publisher.update(|i| i.reset_all(objects));
    let web_port = gw.wait_bound(tcp(10000)).await;
    let nothing_port = gw.wait_bound(tcp(10001)).await;
    let held_port = gw.wait_bound(tcp(10003)).await;

    // 1. A PROXY-decoded client that half-closes first.
    let mut s = TcpStream::connect(web_port).await.unwrap();
    let peer = s.local_addr().unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.9 198.51.100.1 4242 10000\r\nhi")
        .await
        .unwrap();
    let mut got = [0u8; 6];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"web\nhi");
    s.shutdown().await.unwrap();
    assert_eq!(s.read(&mut [0u8; 1]).await.unwrap(), 0);
    wait_until("record 1", || lines.records().len() == 1).await;
    let r = &lines.records()[0];
    assert_eq!(r["protocol"], "TCP");
    assert_eq!(r["port"], 10000);
    assert_eq!(r["client"], "203.0.113.9:4242", "the PROXY-decoded client");
    assert_eq!(r["peer"], peer.to_string());
    assert_eq!(r["namespace"], "default");
    assert_eq!(r["service"], "web");
    assert_eq!(r["endpoint"], web.addr.to_string());
    assert_eq!(r["pod"], "pod default/web-pod-0");
    assert_eq!(r["attempts"], 1);
    assert_eq!(r["bytes_received"], 2);
    assert_eq!(r["bytes_sent"], 6);
    assert_eq!(r["close"], "client_closed");
    assert_eq!(r["error"], serde_json::Value::Null);
    assert!(r["duration_ms"].as_f64().unwrap() > 0.0);
    let time = humantime::parse_rfc3339(r["time"].as_str().unwrap()).expect("RFC 3339 time");
    assert!(time.elapsed().unwrap() < Duration::from_secs(60));

    // 2. A bad PROXY header.
    let mut s = TcpStream::connect(web_port).await.unwrap();
    s.write_all(b"HELLO?\r\n").await.unwrap();
    let _ = s.read(&mut [0u8; 1]).await;
    // 3. A port without endpoints.
    let _ = async {
        TcpStream::connect(nothing_port)
            .await?
            .read(&mut [0u8; 1])
            .await
    }
    .await;
    wait_until("records 2 and 3", || lines.records().len() == 3).await;
    let records = lines.records();
    let bad = records
        .iter()
        .find(|r| r["close"] == "proxy_header")
        .expect("proxy_header record");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("no PROXY protocol header"),
        "{bad}"
    );
    assert_eq!(bad["attempts"], 0);
    assert_eq!(bad["endpoint"], serde_json::Value::Null);
    let none = records
        .iter()
        .find(|r| r["close"] == "no_endpoints")
        .expect("no_endpoints record");
    assert_eq!(
        (none["port"].as_u64(), none["service"].as_str()),
        (Some(10001), Some("nothing"))
    );

    // 4. An open connection on a port that is removed: cut at the drain timeout.
    let mut h = TcpStream::connect(held_port).await.unwrap();
    let mut greet = [0u8; 5];
    h.read_exact(&mut greet).await.unwrap();
    let objects = parse_manifest(&yaml(false)).unwrap().objects;
    gw.publisher.update(|i| i.reset_all(objects));
    wait_until("record 4", || lines.records().len() == 4).await;
    let drained = lines
        .records()
        .into_iter()
        .find(|r| r["port"] == 10003)
        .unwrap();
    assert_eq!(drained["close"], "drained");
    assert_eq!(drained["bytes_sent"], 5);
    assert!(
        drained["duration_ms"].as_f64().unwrap() >= 250.0,
        "{drained}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_backend_closed_and_drops_counted_when_full() {
    use tokio::net::TcpListener;
    let listen = "127.1.8.72";
    // A backend that says bye and closes at once.
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.write_all(b"bye\n").await;
        }
    });
    // A writer that blocks forever: the buffer of 2 fills, further records are dropped.
    struct Stuck(Arc<std::sync::atomic::AtomicBool>);
    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            loop {
                std::thread::park();
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (gw, lines) = gateway_with_access_log(options(listen));
    apply(&gw, &(route_yaml("10000", "bye", &[(backend, true)])));
    let port = gw.wait_bound(tcp(10000)).await;
    let mut s = TcpStream::connect(port).await.unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"bye\n");
    drop(s);
    wait_until("record", || lines.records().len() == 1).await;
    assert_eq!(lines.records()[0]["close"], "backend_closed");
    gw.shutdown().await;

    let stuck = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics = Arc::new(Metrics::new());
    let log = Arc::new(AccessLog::start(
        AccessLogFormat::Json,
        2,
        Box::new(Stuck(stuck.clone())),
        metrics.clone(),
    ));
    let gw = Gateway::start_with(
        Index::new(settings()),
        options(listen),
        metrics.clone(),
        log,
    );
    apply(&gw, &configmap_yaml(&[("10000", "default/none:80")]));
    let port = gw.wait_bound(tcp(10000)).await;
    let refused = || async { TcpStream::connect(port).await?.read(&mut [0u8; 1]).await };
    // The first record reaches the writer, which then hangs in write().
    let _ = refused().await;
    wait_until("the writer is stuck", || {
        stuck.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    for _ in 0..10 {
        let _ = refused().await;
    }
    // Two records wait in the buffer, the other eight are dropped, and no connection waited
    // for the log (all were served).
    wait_until("drops counted", || {
        metric(&gw, "dermaga_access_log_dropped_total", &[]) >= 8.0
    })
    .await;
    assert_eq!(metric(&gw, "dermaga_connections_accepted_total", &[]), 11.0);
    assert_eq!(metric(&gw, "dermaga_access_log_dropped_total", &[]), 8.0);
    gw.shutdown().await;
}

/// The sample lines of the metrics now (every series; `process_*` included).
fn series(gw: &Gateway) -> usize {
    gw.metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count()
}

/// Issue 14: series of endpoints that left every route and of removed ports are removed, so
/// their number returns to its baseline after 100 endpoints (each failing connects, ejected)
/// and 10 ports came and went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_return_to_their_baseline_after_endpoints_and_ports_come_and_go() {
    let web = Backend::start("127.0.8.1", "web").await;
    let mut opts = options("127.1.8.1");
    opts.health.base_ejection = Duration::from_secs(600);
    opts.health.max_ejection = Duration::from_secs(600);
    let gw = Gateway::start(Index::new(settings()), opts);
    let base = route_yaml("10000", "web", &[(web.addr, true)]);
    apply(&gw, &base);
    let addr = gw.wait_bound(tcp(10000)).await;
    exchange_with(addr, b"web\n").await;
    let baseline = series(&gw);

    let mut peak = 0;
    for round in 0..10u16 {
        let port = 20000 + round;
        // Ten endpoints where nothing listens (port 9 on addresses no test binds).
        let dead: Vec<(SocketAddr, bool)> = (0..10)
            .map(|i| {
                (
                    format!("127.0.9.{}:9", round * 10 + i + 1).parse().unwrap(),
                    true,
                )
            })
            .collect();
        let yaml = configmap_yaml(&[
            ("10000", "default/web:80"),
            (&port.to_string(), "default/churn:80"),
        ]) + &service_yaml("web", 80)
            + &slices_yaml("web", &[(web.addr, true)])
            + &service_yaml("churn", 80)
            + &slices_yaml("churn", &dead);
        apply(&gw, &yaml);
        let churn = gw.wait_bound(tcp(port)).await;
        // Four connections of three attempts each reach every one of the ten.
        // (The gateway resets each one, possibly before connect() has returned.)
        for _ in 0..4 {
            if let Ok(mut s) = TcpStream::connect(churn).await {
                let _ = s.read(&mut [0u8; 1]).await;
            }
        }
        let failures = |gw: &Gateway| {
            metric(
                gw,
                "dermaga_upstream_connect_failures_total",
                &[("port", &port.to_string())],
            )
        };
        wait_until("12 failed connects", || failures(&gw) >= 12.0).await;
        peak = peak.max(series(&gw));
        apply(&gw, &base);
        gw.wait_for_ports(|p| !p.contains_key(&tcp(port))).await;
    }
    wait_until("series back to the baseline", || series(&gw) == baseline).await;
    eprintln!(
        "series: baseline {baseline}, peak {peak}, after 100 endpoints and 10 ports came and went {}",
        series(&gw)
    );
    assert!(
        peak > baseline + 30,
        "the churn made series: {peak} vs {baseline}"
    );
    assert_eq!(gw.health.known(), 0, "the health of the 100 is forgotten");
    gw.shutdown().await;
}

async fn exchange_with(addr: SocketAddr, greeting: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut got = vec![0u8; greeting.len()];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, greeting);
}

/// `/routes` answers a page at a time: filtered by port or by the Services' namespace, at most
/// `limit` routes (1,000 at most in any case) from `offset`, with `next_offset` while more match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_filtered_and_paged() {
    let listen = "127.1.8.79";
    let gw = Gateway::start(Index::new(settings()), options(listen));
    let (admin, _stop) = start_admin(&gw, listen).await;
    let mut yaml = configmap_yaml(&[
        ("10000", "default/web:80"),
        ("10001", "default/web:80"),
        ("10002", "default/web:80"),
        ("10003", "other/db:80"),
    ]);
    yaml += &service_yaml("web", 80);
    yaml += &service_yaml("db", 80).replace("namespace: default", "namespace: other");
    apply(&gw, &yaml);
    gw.wait_for_ports(|p| p.len() == 4).await;
    let get = |q: &'static str| async move {
        let (status, body) = http_get(admin, &format!("/routes{q}")).await;
        assert_eq!(status, 200, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ports: Vec<u64> = v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["port"].as_u64().unwrap())
            .collect();
        (ports, v["next_offset"].as_u64())
    };
    assert_eq!(get("").await, (vec![10000, 10001, 10002, 10003], None));
    assert_eq!(get("?port=10001").await, (vec![10001], None));
    assert_eq!(get("?namespace=other").await, (vec![10003], None));
    assert_eq!(get("?limit=2").await, (vec![10000, 10001], Some(2)));
    assert_eq!(get("?limit=2&offset=2").await, (vec![10002, 10003], None));
    assert_eq!(
        get("?namespace=default&limit=1&offset=1").await,
        (vec![10001], Some(2))
    );
    let (status, _) = http_get(admin, "/routes?port=notaport").await;
    assert_eq!(status, 400);
}
