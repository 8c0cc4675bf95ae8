//! Per-port policy options through real sockets: allow/deny on TCP and UDP, PROXY headers from
//! trusted and untrusted peers, per-source connection caps and rates under a flood while a
//! polite client is served, and the balance choices (`source-hash` moving only the clients of
//! a removed endpoint, `least-connections` filling the emptiest endpoint).
//!
//! Addresses: backends 127.0.21.x, gateways 127.1.21.x, clients 127.2.21.x and 127.3.x.y.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::support::*;
use dermaga::{Gateway, Index, ListenPort, RouteKey};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// Connects from `source` (port 0) to `to`.
async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))?;
    socket.connect(to).await
}

/// Reads the backend's greeting line from `stream`; `Err` when the gateway closed or reset it.
async fn read_greeting(stream: TcpStream) -> std::io::Result<(String, BufReader<TcpStream>)> {
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    let n = tokio::time::timeout(Duration::from_secs(10), lines.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no greeting in 10s"))??;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((line.trim_end().to_owned(), lines))
}

/// The greeting a client from `source` gets, or `None` when it is refused.
async fn greeting_from(source: &str, to: SocketAddr) -> Option<String> {
    let stream = connect_from(source, to).await.ok()?;
    read_greeting(stream).await.ok().map(|(tag, _)| tag)
}

/// `greeting_from`, after sending `header` first (a PROXY protocol header).
async fn greeting_with_header(source: &str, to: SocketAddr, header: &str) -> Option<String> {
    let mut stream = connect_from(source, to).await.ok()?;
    stream.write_all(header.as_bytes()).await.ok()?;
    read_greeting(stream).await.ok().map(|(tag, _)| tag)
}

fn refused(gw: &Gateway, port: &str, reason: &str) -> f64 {
    metric(
        gw,
        "dermaga_connections_refused_total",
        &[("port", port), ("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_sources_on_tcp_and_udp() {
    let backend = Backend::start("127.0.21.1", "inside").await;
    let dns = udp_backend("127.0.21.1", "dns").await;
    let mut opts = options("127.1.21.1");
    opts.tcp.connect_attempts = 1;
    let gw = Gateway::start(Index::new(settings_with_udp()), opts);
    let office = "127.2.21.0/24";
    let yaml = configmap_yaml(&[
        ("10000", "default/app:80"),
        ("10000.allow-source", office),
        ("10000.deny-source", "127.2.21.66"),
    ]) + &service_yaml("app", 80)
        + &slices_yaml("app", &[(backend.addr, true)])
        + &named_configmap_yaml(
            "udp-services",
            &[
                ("10053", "default/dns:53"),
                ("10053.allow-source", office),
                ("10053.deny-source", "127.2.21.66"),
            ],
        )
        + &udp_service_yaml("dns", 53)
        + &udp_slices_yaml("dns", &[(dns, true)]);
    apply(&gw, &yaml);
    let addr = gw.wait_bound(tcp(10000)).await;
    let udp_key = RouteKey {
        port: ListenPort::new(10053).unwrap(),
        protocol: dermaga::Protocol::Udp,
    };
    let udp_addr = gw.wait_bound(udp_key).await;

    // TCP: the office is served, its one denied address and the world are not.
    assert_eq!(
        greeting_from("127.2.21.5", addr).await.as_deref(),
        Some("inside")
    );
    assert_eq!(greeting_from("127.2.21.66", addr).await, None);
    assert_eq!(greeting_from("127.4.21.1", addr).await, None);
    assert_eq!(refused(&gw, "10000", "source_denied"), 2.0);

    // UDP: an allowed client's query is answered; a denied client's datagrams are dropped and
    // counted, and no flow is made for them.
    let allowed = UdpSocket::bind("127.2.21.5:0").await.unwrap();
    assert_eq!(udp_ask(&allowed, udp_addr, b"q").await, b"dns:q");
    let denied = UdpSocket::bind("127.4.21.1:0").await.unwrap();
    for _ in 0..3 {
        denied.send_to(b"q", udp_addr).await.unwrap();
    }
    let dropped = |gw: &Gateway| {
        metric(
            gw,
            "dermaga_udp_datagrams_dropped_total",
            &[("port", "10053"), ("reason", "source_denied")],
        )
    };
    wait_until("the denied datagrams are counted", || dropped(&gw) >= 3.0).await;
    let mut buf = [0u8; 64];
    assert!(
        denied.try_recv_from(&mut buf).is_err(),
        "a denied client got an answer"
    );
    assert_eq!(
        metric(&gw, "dermaga_udp_flows_created_total", &[("port", "10053")]),
        1.0
    );
}

/// The same options on Gateway API routes, by `dermaga.io/<option>` annotations: a TCPRoute's
/// allow-source, a UDPRoute's deny-source; a route with a bad value is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_routes_take_policy_options_by_annotation() {
    use dermaga::fixture::{
        Fixture, gateway as gateway_object, gateway_class, tcp_route, udp_route,
    };
    let backend = Backend::start("127.0.21.30", "inside").await;
    let dns = udp_backend("127.0.21.30", "dns").await;
    let objects = [
        gateway_class("dermaga", "dermaga.io/gateway-controller").object(),
        gateway_object("default", "edge", "dermaga")
            .listener("app", "TCP", 10000)
            .listener("bad", "TCP", 10001)
            .listener("dns", "UDP", 10053)
            .object(),
        tcp_route("default", "app")
            .annotate("dermaga.io/allow-source", "127.2.21.0/24")
            .parent("edge", Some("app"))
            .backend("app", 80, None)
            .object(),
        tcp_route("default", "bad")
            .annotate("dermaga.io/allow-source", "127.2.21.0/33")
            .parent("edge", Some("bad"))
            .backend("app", 80, None)
            .object(),
        udp_route("default", "dns")
            .annotate("dermaga.io/deny-source", "127.4.21.0/24")
            .parent("edge", Some("dns"))
            .backend("dns", 53, None)
            .object(),
    ];
    let manifest = dermaga::fixture::yaml(objects)
        + &service_yaml("app", 80)
        + &slices_yaml("app", &[(backend.addr, true)])
        + &udp_service_yaml("dns", 53)
        + &udp_slices_yaml("dns", &[(dns, true)]);
    let mut opts = options("127.1.21.6");
    opts.tcp.connect_attempts = 1;
    let gw = gateway(&manifest, opts);
    let app = gw.wait_bound(tcp(10000)).await;
    let bad = gw.wait_bound(tcp(10001)).await;
    let udp_addr = gw
        .wait_bound(RouteKey {
            port: ListenPort::new(10053).unwrap(),
            protocol: dermaga::Protocol::Udp,
        })
        .await;

    assert_eq!(
        greeting_from("127.2.21.5", app).await.as_deref(),
        Some("inside")
    );
    assert_eq!(greeting_from("127.4.21.1", app).await, None);
    assert_eq!(refused(&gw, "10000", "source_denied"), 1.0);
    assert_eq!(
        greeting_from("127.2.21.5", bad).await,
        None,
        "a route whose annotation is bad is not served without it"
    );

    let allowed = UdpSocket::bind("127.2.21.5:0").await.unwrap();
    assert_eq!(udp_ask(&allowed, udp_addr, b"q").await, b"dns:q");
    let denied = UdpSocket::bind("127.4.21.1:0").await.unwrap();
    for _ in 0..3 {
        denied.send_to(b"q", udp_addr).await.unwrap();
    }
    wait_until("the denied datagrams are counted", || {
        metric(
            &gw,
            "dermaga_udp_datagrams_dropped_total",
            &[("port", "10053"), ("reason", "source_denied")],
        ) >= 3.0
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_count_only_from_trusted_peers() {
    let backend = Backend::start("127.0.21.2", "app").await;
    let gw = gateway(
        &(configmap_yaml(&[
            // Behind a load balancer at 127.2.21.10 that sends PROXY headers; only clients of
            // 192.0.2.0/24 may use the port.
            ("10000", "default/app:80:PROXY"),
            ("10000.proxy-trusted-sources", "127.2.21.10"),
            ("10000.allow-source", "192.0.2.0/24"),
            // The same, but peers other than the load balancer connect directly.
            ("10001", "default/app:80:PROXY"),
            ("10001.proxy-trusted-sources", "127.2.21.10"),
            ("10001.proxy-untrusted", "direct"),
            ("10001.allow-source", "192.0.2.0/24, 127.2.21.11"),
        ]) + &service_yaml("app", 80)
            + &slices_yaml("app", &[(backend.addr, true)])),
        options("127.1.21.2"),
    );
    let strict = gw.wait_bound(tcp(10000)).await;
    let mixed = gw.wait_bound(tcp(10001)).await;
    let header =
        |client: &str, port: u16| format!("PROXY TCP4 {client} 127.1.21.2 40000 {port}\r\n");

    // The trusted balancer: the header's client decides.
    let served = greeting_with_header("127.2.21.10", strict, &header("192.0.2.7", 10000)).await;
    assert_eq!(served.as_deref(), Some("app"));
    let outside = greeting_with_header("127.2.21.10", strict, &header("198.51.100.1", 10000)).await;
    assert_eq!(outside, None, "the decoded client is outside allow-source");
    assert_eq!(refused(&gw, "10000", "source_denied"), 1.0);
    // Anyone else claiming an allowed client is not believed.
    let forged = greeting_with_header("127.2.21.11", strict, &header("192.0.2.7", 10000)).await;
    assert_eq!(forged, None);
    assert_eq!(refused(&gw, "10000", "proxy_untrusted"), 1.0);

    // `direct`: an untrusted peer is the client itself, and its own address decides.
    assert_eq!(
        greeting_from("127.2.21.11", mixed).await.as_deref(),
        Some("app")
    );
    assert_eq!(greeting_from("127.2.21.12", mixed).await, None);
    assert_eq!(refused(&gw, "10001", "source_denied"), 1.0);
    let served = greeting_with_header("127.2.21.10", mixed, &header("192.0.2.9", 10001)).await;
    assert_eq!(served.as_deref(), Some("app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_caps_hold_under_a_flood_while_a_polite_client_is_served() {
    let backend = Backend::start("127.0.21.3", "app").await;
    let gw = gateway(
        &(configmap_yaml(&[
            ("10000", "default/app:80"),
            ("10000.max-connections-per-source", "4"),
            ("10000.new-connections-per-second", "20"),
            ("10000.new-connections-burst", "10"),
            ("10001", "default/app:80"),
            ("10001.new-connections-per-second", "5"),
            ("10001.new-connections-burst", "10"),
        ]) + &service_yaml("app", 80)
            + &slices_yaml("app", &[(backend.addr, true)])),
        options("127.1.21.3"),
    );
    let capped = gw.wait_bound(tcp(10000)).await;
    let rated = gw.wait_bound(tcp(10001)).await;

    // 50 flooding clients, 10 on each of 5 addresses, each trying 3 connections and holding
    // whatever it gets; meanwhile a polite client on a sixth address opens one connection at
    // a time, 20 times, 100 ms apart.
    let flood: Vec<_> = (0..50)
        .map(|i| {
            let source = format!("127.2.21.{}", 101 + i % 5);
            tokio::spawn(async move {
                let mut held = Vec::new();
                for _ in 0..3 {
                    if let Ok(stream) = connect_from(&source, capped).await
                        && let Ok(conn) = read_greeting(stream).await
                    {
                        held.push(conn);
                    }
                }
                (source, held)
            })
        })
        .collect();
    let polite = tokio::spawn(async move {
        let mut served = 0;
        for _ in 0..20 {
            if greeting_from("127.2.21.120", capped).await.as_deref() == Some("app") {
                served += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        served
    });
    let mut held_by_source: BTreeMap<String, usize> = BTreeMap::new();
    let mut conns = Vec::new();
    for task in flood {
        let (source, held) = task.await.unwrap();
        *held_by_source.entry(source).or_default() += held.len();
        conns.extend(held);
    }
    let polite_served = polite.await.unwrap();
    let by_cap = refused(&gw, "10000", "source_connections");
    let by_rate = refused(&gw, "10000", "source_rate");
    println!(
        "flood of 150 attempts from 5 addresses: held {held_by_source:?}; refused {by_cap} at the cap, {by_rate} by the rate; polite client served {polite_served}/20"
    );
    assert!(
        held_by_source.values().all(|&n| n == 4),
        "each flooding address holds exactly its cap: {held_by_source:?}"
    );
    assert_eq!(by_cap + by_rate, 150.0 - 20.0);
    assert_eq!(polite_served, 20, "the polite client was refused");
    drop(conns);

    // The rate alone: 40 connections one right after the other from one address; at most the
    // burst plus what the rate refilled while they were made get through.
    let started = Instant::now();
    let mut served = 0usize;
    for _ in 0..40 {
        if greeting_from("127.2.21.130", rated).await.is_some() {
            served += 1;
        }
    }
    let allowance = 10.0 + 5.0 * started.elapsed().as_secs_f64() + 1.0;
    println!(
        "40 connections at once, rate 5/s burst 10: {served} served (allowance {allowance:.1})"
    );
    assert!(served >= 10 && (served as f64) <= allowance, "{served}");
    assert_eq!(refused(&gw, "10001", "source_rate"), (40 - served) as f64);
}

/// 1,000 client addresses over 5 endpoints, one endpoint removed: only its clients move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hash_moves_only_the_clients_of_a_removed_endpoint() {
    let mut backends = Vec::new();
    for i in 1..=5 {
        backends.push(Backend::start(&format!("127.0.21.{}", 10 + i), &format!("b{i}")).await);
    }
    let yaml = |n: usize| {
        let endpoints: Vec<_> = backends[..n].iter().map(|b| (b.addr, true)).collect();
        configmap_yaml(&[
            ("10000", "default/app:80"),
            ("10000.balance", "source-hash"),
        ]) + &service_yaml("app", 80)
            + &slices_yaml("app", &endpoints)
    };
    let gw = gateway(&yaml(5), options("127.1.21.4"));
    let addr = gw.wait_bound(tcp(10000)).await;
    let clients: Vec<String> = (0..1000)
        .map(|i| format!("127.3.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let assign = |clients: Vec<String>| async move {
        let mut out = Vec::new();
        for chunk in clients.chunks(50) {
            let tasks: Vec<_> = chunk
                .iter()
                .cloned()
                .map(|c| tokio::spawn(async move { greeting_from(&c, addr).await.unwrap() }))
                .collect();
            for t in tasks {
                out.push(t.await.unwrap());
            }
        }
        out
    };
    let before = assign(clients.clone()).await;
    // The same clients again, nothing changed: nobody moves.
    assert_eq!(assign(clients.clone()).await, before);
    let mut shares: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &before {
        *shares.entry(b.as_str()).or_default() += 1;
    }

    apply(&gw, &yaml(4));
    let after = assign(clients.clone()).await;
    let moved: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    let fraction = moved.len() as f64 / before.len() as f64;
    println!(
        "1000 clients over 5 endpoints {shares:?}; b5 removed: {} moved ({:.1}%, goal ~20%)",
        moved.len(),
        fraction * 100.0
    );
    assert!(
        moved.iter().all(|&i| before[i] == "b5"),
        "a client of a surviving endpoint moved"
    );
    assert_eq!(moved.len(), shares["b5"], "every client of b5 moved");
    // A share of 1/5 of 1000 is 200 ± 13 (one sd).
    assert!((0.12..=0.28).contains(&fraction), "{fraction}");
}

/// `least-connections`: with connections held open, a new one goes to the endpoint with the
/// fewest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_fills_the_emptiest_endpoint() {
    let a = Backend::start("127.0.21.21", "a").await;
    let b = Backend::start("127.0.21.22", "b").await;
    let c = Backend::start("127.0.21.23", "c").await;
    let gw = gateway(
        &(configmap_yaml(&[
            ("10000", "default/app:80"),
            ("10000.balance", "least-connections"),
        ]) + &service_yaml("app", 80)
            + &slices_yaml("app", &[(a.addr, true), (b.addr, true), (c.addr, true)])),
        options("127.1.21.5"),
    );
    let addr = gw.wait_bound(tcp(10000)).await;
    let open = |n: usize| async move {
        let mut held = Vec::new();
        for _ in 0..n {
            let stream = TcpStream::connect(addr).await.unwrap();
            held.push(read_greeting(stream).await.unwrap());
        }
        held
    };
    let mut held = open(6).await;
    let tally = |held: &[(String, BufReader<TcpStream>)]| {
        let mut t: BTreeMap<String, usize> = BTreeMap::new();
        for (tag, _) in held {
            *t.entry(tag.clone()).or_default() += 1;
        }
        t
    };
    assert!(tally(&held).values().all(|&n| n == 2), "{:?}", tally(&held));
    // Close a's two; the next two new connections both go to a.
    let mut closed = 0;
    let mut kept = Vec::new();
    for (tag, mut conn) in held.drain(..) {
        if tag == "a" {
            conn.get_mut().shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest).await;
            closed += 1;
        } else {
            kept.push((tag, conn));
        }
    }
    assert_eq!(closed, 2);
    wait_until("the gateway has seen a's connections end", || {
        metric(&gw, "dermaga_connections_active", &[("port", "10000")]) == 4.0
    })
    .await;
    let next = open(2).await;
    assert_eq!(
        next.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["a", "a"]
    );
}
