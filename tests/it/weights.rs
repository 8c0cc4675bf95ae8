//! Weighted backends on a ConfigMap port (`"<port>.backends"`), through real sockets: the split
//! holds over many connections, a weight change applies live without touching open
//! connections, and a backend of weight 0 gets nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Port 10000 split by `backends`, over Services `stable`, `canary` and `off`.
fn split_yaml(weights: &str, backends: &[&Backend; 3]) -> String {
    let mut yaml = configmap_yaml(&[("10000", "default/stable:80"), ("10000.backends", weights)]);
    for (name, backend) in ["stable", "canary", "off"].iter().zip(backends) {
        yaml += &service_yaml(name, 80);
        yaml += &slices_yaml(name, &[(backend.addr, true)]);
    }
    yaml
}

/// Opens `n` connections (50 at a time) and counts the backends' greetings.
async fn tally(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let limit = Arc::new(Semaphore::new(50));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let limit = limit.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                greeting(addr).await.expect("every connection is served")
            })
        })
        .collect();
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_default() += 1;
    }
    counts
}

/// True when `got` of `n` is within 4 standard deviations of a share `p` (the binomial's);
/// prints how many it is. Four, not three: at three, one run in a few hundred of the suite
/// would fail by chance alone.
fn within_4_sd(got: usize, n: usize, p: f64) -> bool {
    let (n, got) = (n as f64, got as f64);
    let sd = (n * p * (1.0 - p)).sqrt();
    println!("  {got} of {n} at p = {p}: {:+.2} sd", (got - n * p) / sd);
    (got - n * p).abs() <= 4.0 * sd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_holds_changes_live_and_weight_0_gets_nothing() {
    let stable = Backend::start("127.0.18.1", "stable").await;
    let canary = Backend::start("127.0.18.2", "canary").await;
    let off = Backend::start("127.0.18.3", "off").await;
    let backends = [&stable, &canary, &off];
    let gw = gateway(
        &split_yaml(
            "default/stable:80=90, default/canary:80=10, default/off:80=0",
            &backends,
        ),
        options("127.1.18.1"),
    );
    let addr = gw.wait_bound(tcp(10000)).await;

    let n = 10_000;
    let counts = tally(addr, n).await;
    println!("90/10/0 over {n} connections: {counts:?}");
    let canary_got = counts.get("canary").copied().unwrap_or(0);
    assert!(within_4_sd(canary_got, n, 0.1), "{counts:?}");
    assert_eq!(
        counts.get("off"),
        None,
        "weight 0 got connections: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), n);

    // Twenty connections held open across the change keep working, whichever backend.
    let mut held = Vec::new();
    for _ in 0..20 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut tag = String::new();
        reader.read_line(&mut tag).await.unwrap();
        held.push((reader, tag.trim_end().to_owned()));
    }
    apply(
        &gw,
        &split_yaml(
            "default/stable:80=50, default/canary:80=0, default/off:80=50",
            &backends,
        ),
    );
    // The new table is in force once a connection reaches `off`.
    wait_for_tag(addr, "off").await;
    let n = 2_000;
    let counts = tally(addr, n).await;
    println!("50/0/50 over {n} connections: {counts:?}");
    assert!(
        within_4_sd(counts.get("off").copied().unwrap_or(0), n, 0.5),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("canary"),
        None,
        "weight 0 got connections: {counts:?}"
    );
    for (i, (reader, tag)) in held.iter_mut().enumerate() {
        let message = format!("still here {i}\n");
        reader
            .get_mut()
            .write_all(message.as_bytes())
            .await
            .unwrap();
        let mut echo = vec![0u8; message.len()];
        reader.read_exact(&mut echo).await.unwrap_or_else(|e| {
            panic!("held connection {i} (to {tag}) broke across the change: {e}")
        });
        assert_eq!(echo, message.as_bytes());
    }
    drop(held); // or shutdown would wait out the grace period for them
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_backend_refuses_its_share_and_routes_show_the_split() {
    let stable = Backend::start("127.0.18.4", "stable").await;
    let yaml = configmap_yaml(&[
        ("10000", "default/stable:80"),
        ("10000.backends", "default/stable:80=1, default/nosuch:80=1"),
    ]) + &service_yaml("stable", 80)
        + &slices_yaml("stable", &[(stable.addr, true)]);
    let gw = gateway(&yaml, options("127.1.18.2"));
    let addr = gw.wait_bound(tcp(10000)).await;
    let n = 400;
    let mut served = 0;
    for _ in 0..n {
        if greeting(addr).await.is_ok_and(|tag| tag == "stable") {
            served += 1;
        }
    }
    println!("1:1 with a missing Service: {served} of {n} served");
    assert!(within_4_sd(served, n, 0.5), "{served} of {n}");
    let refused = metric(
        &gw,
        "dermaga_connections_refused_total",
        &[("port", "10000"), ("reason", "invalid_backend")],
    );
    assert_eq!(
        refused as usize,
        n - served,
        "every refusal counted as invalid_backend"
    );

    let (admin, _task) = start_admin(&gw, "127.1.18.2").await;
    let (status, body) = http_get(admin, "/routes").await;
    assert_eq!(status, 200);
    let routes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let backends = &routes["routes"][0]["backends"];
    assert_eq!(backends[0]["service"], "default/stable");
    assert_eq!(backends[0]["weight"], 1);
    assert_eq!(backends[0]["active_endpoints"], 1);
    assert_eq!(backends[1]["service"], "default/nosuch");
    assert_eq!(
        backends[1]["problem"], "Service default/nosuch not found",
        "{backends}"
    );
    gw.shutdown().await;
}

/// Connects until a connection reaches `tag` (bounded).
async fn wait_for_tag(addr: SocketAddr, tag: &str) {
    for _ in 0..10_000 {
        if greeting(addr).await.is_ok_and(|t| t == tag) {
            return;
        }
    }
    panic!("no connection reached {tag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_route_on_a_gateway_splits_90_10_by_its_backend_weights_and_0_gets_nothing() {
    use dermaga::fixture::{Fixture, gateway, gateway_class, tcp_route, yaml};
    let stable = Backend::start("127.0.18.5", "stable").await;
    let canary = Backend::start("127.0.18.6", "canary").await;
    let idle = Backend::start("127.0.18.7", "idle").await;
    let objects = [
        gateway_class("dermaga", "dermaga.io/gateway-controller").object(),
        gateway("default", "edge", "dermaga")
            .listener("shop", "TCP", 10000)
            .object(),
        tcp_route("default", "shop")
            .parent("edge", Some("shop"))
            .backend("stable", 80, Some(90))
            .backend("canary", 80, Some(10))
            .backend("idle", 80, Some(0))
            .object(),
    ];
    let yaml = yaml(objects)
        + &service_yaml("stable", 80)
        + &slices_yaml("stable", &[(stable.addr, true)])
        + &service_yaml("canary", 80)
        + &slices_yaml("canary", &[(canary.addr, true)])
        + &service_yaml("idle", 80)
        + &slices_yaml("idle", &[(idle.addr, true)]);
    let gw = crate::support::gateway(&yaml, options("127.1.18.3"));
    let addr = gw.wait_bound(tcp(10000)).await;
    // The figure: 90/10 over 10,000 connections (upstream's TCPRouteWeightedRouting
    // uses a 70/30/0 split over fewer).
    let n = 10_000;
    let counts = tally(addr, n).await;
    let got = counts.get("canary").copied().unwrap_or(0);
    let sd = (n as f64 * 0.1 * 0.9).sqrt();
    println!(
        "TCPRoute 90/10/0 over {n} connections: {counts:?} (canary {:+.1} sd)",
        (got as f64 - n as f64 * 0.1) / sd
    );
    assert!(within_4_sd(got, n, 0.1), "{counts:?}");
    assert!(
        !counts.contains_key("idle"),
        "weight 0 got connections: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), n);
    // The route serving the port, as an info series to join the per-port series with.
    assert_eq!(
        metric(
            &gw,
            "dermaga_route_info",
            &[
                ("port", "10000"),
                ("protocol", "TCP"),
                ("kind", "TCPRoute"),
                ("route_namespace", "default"),
                ("route_name", "shop"),
            ],
        ),
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_udp_port_sends_each_new_flow_by_weight_and_keeps_flows_where_they_are() {
    use dermaga::{Gateway, Index, Protocol, RouteKey};
    let a = udp_backend("127.0.18.7", "a").await;
    let b = udp_backend("127.0.18.8", "b").await;
    let yaml = named_configmap_yaml(
        "udp-services",
        &[
            ("5353", "default/dns-a:53"),
            ("5353.backends", "default/dns-a:53=80, default/dns-b:53=20"),
        ],
    ) + &udp_service_yaml("dns-a", 53)
        + &udp_slices_yaml("dns-a", &[(a, true)])
        + &udp_service_yaml("dns-b", 53)
        + &udp_slices_yaml("dns-b", &[(b, true)]);
    // Flows idle out 2 s after the last answer, so that shutdown (which lets UDP flows run
    // until idle) does not wait the default 30 s.
    let mut opts = options("127.1.18.4");
    opts.udp = dermaga::UdpSettings {
        idle_timeout: std::time::Duration::from_secs(2),
        ..opts.udp
    };
    let gw = Gateway::start(Index::new(settings_with_udp()), opts);
    apply(&gw, &yaml);
    let key = RouteKey {
        port: dermaga::ListenPort::new(5353).unwrap(),
        protocol: Protocol::Udp,
    };
    let port = gw.wait_bound(key).await;
    // 1,000 clients, each its own flow; each asks twice: its flow stays on its backend.
    let asked = std::time::Instant::now();
    let n = 1_000;
    let mut counts = BTreeMap::<String, usize>::new();
    let mut sockets = Vec::new();
    for i in 0..n {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let first = udp_ask_once(&socket, port, format!("q{i}").as_bytes()).await;
        let second = udp_ask_once(&socket, port, format!("again{i}").as_bytes()).await;
        let tag = |reply: &[u8]| {
            String::from_utf8_lossy(reply)
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            tag(&first),
            tag(&second),
            "client {i} moved between backends"
        );
        *counts.entry(tag(&first)).or_default() += 1;
        sockets.push(socket); // kept open: distinct client addresses
    }
    println!(
        "UDP 80/20 over {n} flows: {counts:?} (asked in {:?})",
        asked.elapsed()
    );
    assert!(
        within_4_sd(counts.get("b").copied().unwrap_or(0), n, 0.2),
        "{counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), n);
    gw.shutdown().await;
}
