//! S2: a Service with three endpoints, one of which refuses. Every client connection succeeds
//! (the refused connect is retried on another endpoint) and the log names the refusing endpoint
//! and its pod. This file installs a global log capture, so it holds this one test only.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_one_refusing_endpoint_costs_no_client_a_failure() {
    let capture = SharedBuf::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("dermaga=warn")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let a = Backend::start("127.0.0.2", "a").await;
    let b = Backend::start("127.0.0.3", "b").await;
    let refusing: std::net::SocketAddr = REFUSING.parse().unwrap();
    let yaml = configmap_yaml(&[("10000", "default/api:80")])
        + &service_yaml("api", 80)
        + &slices_yaml("api", &[(a.addr, true), (refusing, true), (b.addr, true)]);
    let gw = gateway(&yaml, options("127.1.0.20"));
    let addr = gw.wait_bound(tcp(10000)).await;

    let mut seen = std::collections::BTreeMap::new();
    for i in 0..1000 {
        let tag = greeting(addr)
            .await
            .unwrap_or_else(|e| panic!("client connection {i} failed: {e}"));
        *seen.entry(tag).or_insert(0) += 1;
    }
    // The refusing endpoint is first in line for a third of the connections; each of those
    // moved on to the next endpoint.
    assert_eq!(seen.values().sum::<i32>(), 1000);
    assert!(seen["a"] > 300 && seen["b"] > 300, "{seen:?}");
    let failures = metric(
        &gw,
        "dermaga_upstream_connect_failures_total",
        &[
            ("endpoint", "127.0.250.250:9"),
            ("reason", "refused"),
            ("pod", "pod default/api-pod-1"),
        ],
    ) as u64;
    let retried = metric(
        &gw,
        "dermaga_upstream_retries_total",
        &[("port", "10000"), ("service", "api")],
    ) as u64;
    let unavailable = metric(
        &gw,
        "dermaga_connections_refused_total",
        &[("reason", "upstream_unavailable")],
    );
    assert_eq!(unavailable, 0.0);
    assert!(
        (300..=340).contains(&failures),
        "refused connects: {failures}"
    );
    assert_eq!(
        failures, retried,
        "every refused connect was retried once and succeeded"
    );

    let log = capture.text();
    let line = log
        .lines()
        .find(|l| l.contains("upstream connect failed"))
        .expect("attempt logged");
    assert!(line.contains("endpoint=127.0.250.250:9"), "{line}");
    assert!(line.contains("pod=\"pod default/api-pod-1\""), "{line}");
    assert!(line.contains("attempt=1"), "{line}");
    println!("{failures} refused connects, each retried; e.g. {line}");
    gw.shutdown().await;
}
