//! S2: a Service with three endpoints, one of which refuses. Every client connection succeeds
//! (the refused connect is retried on another endpoint), the refusing endpoint is ejected after
//! three refusals so retries stay bounded, and the log names the refusing endpoint and its pod. This file installs a global log capture, so it holds this one test only.

use crate::support::*;

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
    let yaml = route_yaml(
        "10000",
        "api",
        &[(a.addr, true), (refusing, true), (b.addr, true)],
    );
    let mut opts = options("127.1.12.20");
    // Longer than any run of this test, however loaded the machine: exactly one ejection.
    opts.health.base_ejection = std::time::Duration::from_secs(600);
    opts.health.max_ejection = std::time::Duration::from_secs(600);
    let gw = gateway(&yaml, opts);
    let addr = gw.wait_bound(tcp(10000)).await;

    // The field report's load: 5,000 connections from 50 concurrent clients.
    let clients: Vec<_> = (0..50)
        .map(|c| {
            tokio::spawn(async move {
                let mut tags = Vec::new();
                for i in 0..100 {
                    let tag = greeting(addr)
                        .await
                        .unwrap_or_else(|e| panic!("client {c} connection {i} failed: {e}"));
                    tags.push(tag);
                }
                tags
            })
        })
        .collect();
    let mut seen = std::collections::BTreeMap::new();
    for client in clients {
        for tag in tokio::time::timeout(std::time::Duration::from_secs(120), client)
            .await
            .expect("5,000 connections within 2 minutes")
            .unwrap()
        {
            *seen.entry(tag).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.values().sum::<i32>(), 5000, "{seen:?}");
    // The ejected endpoint's turns are spread over the others, not given to its neighbour.
    assert!(seen["a"] > 2000 && seen["b"] > 2000, "{seen:?}");
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
    let ejections = metric(
        &gw,
        "dermaga_endpoint_ejections_total",
        &[("endpoint", "127.0.250.250:9")],
    );
    assert_eq!(unavailable, 0.0);
    // Ejected after 3 refusals in a row (--eject-after-failures); connects already under way
    // at that instant (at most one per other client) may still meet it. The ejection (600 s
    // here) outlasts the load, so it is not tried again.
    assert_eq!(ejections, 1.0, "ejected once");
    assert!(
        (3..=3 + 49).contains(&failures),
        "refused connects bounded by the ejection: {failures}"
    );
    assert_eq!(
        failures, retried,
        "every refused connect was retried once and succeeded"
    );
    assert_eq!(
        gw.health.view(refusing, std::time::Instant::now()).state,
        "ejected"
    );

    let log = capture.text();
    let line = log
        .lines()
        .find(|l| l.contains("upstream connect failed"))
        .expect("attempt logged");
    assert!(line.contains("endpoint=127.0.250.250:9"), "{line}");
    assert!(line.contains("pod=\"pod default/api-pod-1\""), "{line}");
    assert!(line.contains("attempt=1"), "{line}");
    let ejected = log
        .lines()
        .find(|l| l.contains("endpoint ejected"))
        .expect("ejection logged");
    assert!(ejected.contains("endpoint=127.0.250.250:9"), "{ejected}");
    assert!(
        ejected.contains("pod=\"pod default/api-pod-1\""),
        "{ejected}"
    );
    println!(
        "S2: 5000 connections from 50 clients, 0 failed; {failures} refused connects (each retried) before the ejection; served {seen:?}; e.g. {line}\n{ejected}"
    );
    gw.shutdown().await;

    // One line per port, endpoint and reason per 10 s: the first refusal, then (at the latest
    // at shutdown) a summary; together they account for every refused connect.
    let log = capture.text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("endpoint=127.0.250.250:9"))
        .filter(|l| l.contains("upstream connect failed") || l.contains("like warnings not logged"))
        .collect();
    let suppressed: u64 = lines
        .iter()
        .filter_map(|l| {
            l.split("suppressed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let logged = lines
        .iter()
        .filter(|l| l.contains("upstream connect failed"))
        .count() as u64;
    assert_eq!(logged + suppressed, failures, "{lines:#?}");
    assert!(lines.len() <= 3, "rate-limited: {lines:#?}");
    println!(
        "refused connects: {failures}, logged in {} lines: {lines:#?}",
        lines.len()
    );
}
