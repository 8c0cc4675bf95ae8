//! A port range entry (`"30000-30099"`) through real sockets: 100 listeners opened from one
//! entry, each port reaching its own endpoint port, one metric series and one `/routes` entry
//! for the range, and the range removed with its open connections drained like any port's.
//!
//! Addresses: backends 127.0.23.1 (ports 20000-20099), gateway 127.1.23.1.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use dermaga::PortState;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const FIRST: u16 = 30000;
const PORTS: u16 = 100;
const BACKEND_BASE: u16 = 20000;

/// 100 backends on consecutive ports, each greeting with its own port number, then echoing.
async fn backends() -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..PORTS {
        let port = BACKEND_BASE + i;
        let listener = TcpListener::bind(("127.0.23.1", port))
            .await
            .unwrap_or_else(|e| panic!("cannot bind 127.0.23.1:{port}: {e}"));
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = s.write_all(format!("{port}\n").as_bytes()).await;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    tasks
}

fn range_yaml(with_range: bool) -> String {
    let mut entries = vec![("10000", "default/rtp:20000")];
    if with_range {
        entries.push(("30000-30099", "default/rtp:20000"));
    }
    configmap_yaml(&entries)
        + &service_yaml("rtp", BACKEND_BASE)
        + &slices_yaml(
            "rtp",
            &[(format!("127.0.23.1:{BACKEND_BASE}").parse().unwrap(), true)],
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_port_range_is_opened_served_counted_once_removed_and_drained() {
    let _backends = backends().await;
    let mut opts = options("127.1.23.1");
    opts.drain_timeout = Duration::from_millis(500);
    let gw = gateway(&range_yaml(true), opts);
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for i in 0..PORTS {
        addrs.push(gw.wait_bound(tcp(FIRST + i)).await);
    }

    // Each port of the range reaches the endpoint port at its offset.
    for (i, addr) in addrs.iter().enumerate() {
        let got = greeting(*addr).await.unwrap();
        assert_eq!(got, (BACKEND_BASE + i as u16).to_string(), "port {addr}");
    }

    // One series for the range, not 100.
    let text = gw.metrics.encode();
    let accepted = metric_in(
        &text,
        "dermaga_connections_accepted_total",
        &[("port", "30000-30099")],
    );
    assert_eq!(accepted, f64::from(PORTS));
    let range_series = text
        .lines()
        .filter(|l| l.starts_with("dermaga_connections_accepted_total{"))
        .filter(|l| l.contains("port=\"300"))
        .count();
    assert_eq!(range_series, 1, "{text}");

    // /routes shows it once, as a range.
    let (admin, stop) = start_admin(&gw, "127.1.23.2").await;
    let (status, body) = http_get(admin, "/routes").await;
    assert_eq!(status, 200);
    let view: Value = serde_json::from_str(&body).unwrap();
    let routes = view["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2, "10000 and the range: {body}");
    let range = routes.iter().find(|r| r["range"] == "30000-30099").unwrap();
    assert_eq!(range["port"], 30000);
    assert_eq!(range["ports_bound"], 100);
    assert_eq!(range["listener"]["state"], "bound");
    stop.cancel();

    // Connections held on three of its ports, then the range removed: new connections are
    // refused at once, the held ones keep working until the drain timeout cuts them.
    let mut held = Vec::new();
    for i in [0usize, 50, 99] {
        let stream = TcpStream::connect(addrs[i]).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        held.push(reader);
    }
    apply(&gw, &range_yaml(false));
    gw.wait_for_ports(|ports| {
        (0..PORTS).all(|i| !matches!(ports.get(&tcp(FIRST + i)), Some(PortState::Bound(_))))
    })
    .await;
    // Each port's accept loop serves what is already queued, then closes its socket: a few
    // connects may still land in that instant (bounded polling; no event says "closed").
    for addr in [addrs[0], addrs[50], addrs[99]] {
        let mut attempts = 0;
        while TcpStream::connect(addr).await.is_ok() {
            attempts += 1;
            assert!(attempts < 500, "{addr} still accepts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for reader in &mut held {
        reader.get_mut().write_all(b"still here\n").await.unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        assert_eq!(line, "still here\n");
    }
    // The drain timeout (500 ms) cuts them: each read ends (bounded wait).
    for reader in &mut held {
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest))
            .await
            .expect("the drain timeout cut the held connection");
        assert!(end.is_err() || rest.is_empty());
    }
    // The series of the range are gone with it.
    wait_until("the range's series are removed", || {
        !gw.metrics.encode().contains("port=\"30000-30099\"")
    })
    .await;
    // The single port stays.
    assert_eq!(
        greeting(gw.wait_bound(tcp(10000)).await).await.unwrap(),
        "20000"
    );
}
