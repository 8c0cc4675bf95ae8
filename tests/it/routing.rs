//! Routing through real sockets: S1 (each port to its own Service), ports without endpoints
//! refusing at once, bad entries costing nothing else, endpoint changes without a new socket.

use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const LISTEN: &str = "127.1.13.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_each_port_reaches_its_own_service_1000_times() {
    // Two "StatefulSets" sharing a label; each port of the map goes to its own Service.
    let a = Backend::start("127.0.0.2", "respon dari port 10000").await;
    let b = Backend::start("127.0.0.3", "respon dari port 20000").await;
    let yaml = configmap_yaml(&[
        ("10000", "default/xyz-10000:10000"),
        ("20000", "default/xyz-20000:20000"),
    ]) + &service_yaml("xyz-10000", 10000)
        + &service_yaml("xyz-20000", 20000)
        + &slices_yaml("xyz-10000", &[(a.addr, true)])
        + &slices_yaml("xyz-20000", &[(b.addr, true)]);
    let gw = gateway(&yaml, options(LISTEN));
    let p1 = gw.wait_bound(tcp(10000)).await;
    let p2 = gw.wait_bound(tcp(20000)).await;
    for i in 0..1000 {
        let (addr, want) = if i % 2 == 0 {
            (p1, &a.tag)
        } else {
            (p2, &b.tag)
        };
        assert_eq!(&greeting(addr).await.unwrap(), want, "connection {i}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_without_endpoints_refuses_at_once_and_opens_when_they_appear() {
    let listen = "127.1.13.2";
    let yaml = configmap_yaml(&[("10000", "default/empty:80")]) + &service_yaml("empty", 80);
    let gw = gateway(&yaml, options(listen));
    let addr = gw.wait_bound(tcp(10000)).await;

    // The kernel completes the handshake (the port is bound), then dermaga resets; depending
    // on timing the client sees the reset on connect or on its first read.
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(addr).await?;
        let mut buf = [0u8; 16];
        s.read(&mut buf).await
    })
    .await
    .expect("not left hanging");
    let elapsed = started.elapsed();
    assert_eq!(
        outcome.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    println!("no-endpoints port: reset after {elapsed:?}");
    assert_eq!(
        metric(
            &gw,
            "dermaga_connections_refused_total",
            &[("port", "10000"), ("reason", "no_endpoints")]
        ),
        1.0
    );

    // Endpoints appear: the same socket starts serving.
    let backend = Backend::start("127.0.0.2", "now-here").await;
    let yaml = yaml + &slices_yaml("empty", &[(backend.addr, true)]);
    apply(&gw, &yaml);
    assert_eq!(greeting(addr).await.unwrap(), "now-here");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_service_keeps_the_port_bound_and_refusing() {
    let gw = gateway(
        &configmap_yaml(&[("10000", "default/not-yet:80")]),
        options("127.1.13.3"),
    );
    let addr = gw.wait_bound(tcp(10000)).await;
    let outcome = async {
        let mut s = TcpStream::connect(addr).await?;
        s.read(&mut [0u8; 1]).await
    };
    assert_eq!(
        outcome.await.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    let table = gw.publisher.snapshot().load();
    let problems: Vec<String> = table.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Service default/not-yet not found")),
        "{problems:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_reported_and_the_good_ones_still_serve() {
    let good = Backend::start("127.0.0.2", "good").await;
    let bad_entries = [
        ("0", "default/good:80"),
        ("70000", "default/good:80"),
        ("http", "default/good:80"),
        ("10001", "good:80"),
        ("10002", "default/:80"),
        ("10003", "default/good:80:FOO"),
        ("10004", "default/good :80"),
        ("10254", "default/good:80"),
    ];
    let mut entries = vec![("10000", "default/good:80")];
    entries.extend(bad_entries);
    let yaml = configmap_yaml(&entries)
        + &service_yaml("good", 80)
        + &slices_yaml("good", &[(good.addr, true)]);
    let gw = gateway(&yaml, options("127.1.13.4"));
    let addr = gw.wait_bound(tcp(10000)).await;
    assert_eq!(greeting(addr).await.unwrap(), "good");

    let table = gw.publisher.snapshot().load();
    let problems: Vec<String> = table.problems.iter().map(|p| p.to_string()).collect();
    let expect = [
        ("\"0\"", "port 0"),
        ("\"70000\"", "out of range"),
        ("\"http\"", "not a port number"),
        ("\"10001\"", "no namespace"),
        ("\"10002\"", "empty service name"),
        ("\"10003\"", "unknown flag \"FOO\""),
        ("\"10004\"", "whitespace"),
        ("\"10254\"", "reserved"),
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    for (key, what) in expect {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&format!("entry {key}")) && p.contains(what)),
            "no problem for {key} mentioning {what}: {problems:#?}"
        );
    }
    // None of the bad ports is listening; only the good one is.
    assert_eq!(gw.port_states().len(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_keep_the_listening_socket_and_open_connections() {
    let one = Backend::start("127.0.0.2", "one").await;
    let two = Backend::start("127.0.0.3", "two").await;
    let base = configmap_yaml(&[("10000", "default/web:80")]) + &service_yaml("web", 80);
    let gw = gateway(
        &(base.clone() + &slices_yaml("web", &[(one.addr, true)])),
        options("127.1.13.5"),
    );
    let addr = gw.wait_bound(tcp(10000)).await;

    let mut open = TcpStream::connect(addr).await.unwrap();
    let mut greeting_buf = [0u8; 4];
    open.read_exact(&mut greeting_buf).await.unwrap();
    assert_eq!(&greeting_buf, b"one\n");

    // Move the Service to the other pod; then mark it not ready while "one" is ready again.
    apply(
        &gw,
        &(base.clone() + &slices_yaml("web", &[(two.addr, true)])),
    );
    assert_eq!(greeting(addr).await.unwrap(), "two");
    apply(
        &gw,
        &(base.clone() + &slices_yaml("web", &[(two.addr, false), (one.addr, true)])),
    );
    assert_eq!(greeting(addr).await.unwrap(), "one");

    // The first connection was never disturbed.
    use tokio::io::AsyncWriteExt;
    open.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    open.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still here");
    drop(open);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_fails_alone_and_is_retried() {
    use dermaga::PortState;
    let listen = "127.1.13.6";
    let squatter = std::net::TcpListener::bind((listen, 10001)).unwrap();
    let backend = Backend::start("127.0.0.2", "web").await;
    let yaml = configmap_yaml(&[("10000", "default/web:80"), ("10001", "default/web:80")])
        + &service_yaml("web", 80)
        + &slices_yaml("web", &[(backend.addr, true)]);
    let gw = gateway(&yaml, options(listen));
    let states = gw
        .wait_for_ports(|s| s.contains_key(&tcp(10000)) && s.contains_key(&tcp(10001)))
        .await;
    match &states[&tcp(10001)] {
        PortState::Failed(why) => assert!(
            why.contains("port 10001") && why.contains("in use"),
            "{why}"
        ),
        other => panic!("expected a bind failure, got {other:?}"),
    }
    assert_eq!(
        greeting(gw.wait_bound(tcp(10000)).await).await.unwrap(),
        "web",
        "the other port works"
    );
    drop(squatter);
    let addr = gw.wait_bound(tcp(10001)).await; // retried until the port is free
    assert_eq!(greeting(addr).await.unwrap(), "web");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_removed_and_re_added_keeps_its_open_connections() {
    use tokio::io::AsyncWriteExt;
    let web = Backend::start("127.0.0.2", "web").await;
    let with = configmap_yaml(&[("10000", "default/web:80"), ("10001", "default/web:80")])
        + &service_yaml("web", 80)
        + &slices_yaml("web", &[(web.addr, true)]);
    let without = route_yaml("10001", "web", &[(web.addr, true)]);
    let mut opts = options("127.1.13.7");
    opts.drain_timeout = Duration::from_millis(300);
    let gw = gateway(&with, opts);
    let addr = gw.wait_bound(tcp(10000)).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    let mut greet = [0u8; 4];
    open.read_exact(&mut greet).await.unwrap();

    // A half-written config drops the port for a moment; it comes back before the deadline.
    apply(&gw, &without);
    gw.wait_for_ports(|p| !p.contains_key(&tcp(10000))).await;
    apply(&gw, &with);
    gw.wait_bound(tcp(10000)).await;
    // Well past the 300 ms drain deadline (a bounded wait to show nothing happens)...
    tokio::time::sleep(Duration::from_millis(800)).await;
    // ...the old connection still works.
    open.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    open.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    drop(open);
    gw.shutdown().await;
}
