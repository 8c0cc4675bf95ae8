//! PROXY protocol through real sockets: decoding from the client, encoding to the backend (v1
//! and v2), garbage headers and a slow partial header closed at the header timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;
use dermaga::ProxyVersion;
use dermaga::{Decoded, decode, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads until it has seen "hello\n", then sends back every byte it received.
async fn recorder(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.ends_with(b"hello\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&seen).await;
            });
        }
    });
    addr
}

/// Sends `bytes`, returns what the backend saw.
async fn roundtrip(gateway: SocketAddr, bytes: &[u8]) -> std::io::Result<(Vec<u8>, SocketAddr)> {
    let mut s = TcpStream::connect(gateway).await?;
    let local = s.local_addr()?;
    s.write_all(bytes).await?;
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut seen))
        .await
        .expect("answer or close in time")?;
    Ok((seen, local))
}

/// A gateway on its own listen address (tests run in parallel: each needs its own), and a
/// function giving the address of one of its ports.
async fn setup(listen: &'static str) -> (dermaga::Gateway, impl Fn(u16) -> SocketAddr) {
    let backend = recorder("127.0.0.2").await;
    let yaml = configmap_yaml(&[
        ("10000", "default/rec:80:PROXY:PROXY"),
        ("10001", "default/rec:80::PROXY"),
        ("10001.send-proxy-version", "v2"),
        ("10002", "default/rec:80:PROXY"),
    ]) + &service_yaml("rec", 80)
        + &slices_yaml("rec", &[(backend, true)]);
    let mut opts = options(listen);
    opts.tcp.proxy_header_timeout = Duration::from_millis(300);
    let gw = gateway(&yaml, opts);
    for port in [10000, 10001, 10002] {
        gw.wait_bound(tcp(port)).await;
    }
    (gw, move |port: u16| {
        SocketAddr::new(listen.parse().unwrap(), port)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_v1_and_reencode_v1_to_the_backend() {
    let (gw, at) = setup("127.1.11.41").await;
    let header = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 10000\r\n";
    let (seen, _) = roundtrip(at(10000), &[header.as_slice(), b"hello\n"].concat())
        .await
        .unwrap();
    assert_eq!(
        seen,
        [header.as_slice(), b"hello\n"].concat(),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_v2_and_reencode_v1() {
    let (gw, at) = setup("127.1.11.42").await;
    let source: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let destination: SocketAddr = "[2001:db8::1]:10000".parse().unwrap();
    let header = encode(ProxyVersion::V2, source, destination);
    let (seen, _) = roundtrip(at(10000), &[header.as_slice(), b"hello\n"].concat())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "PROXY TCP6 2001:db8::7 2001:db8::1 40000 10000\r\nhello\n"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_only_v2_carries_the_real_client_address() {
    let (gw, at) = setup("127.1.11.43").await;
    let (seen, client) = roundtrip(at(10001), b"hello\n").await.unwrap();
    let (decoded, len) = decode(&seen).unwrap().expect("a complete v2 header");
    assert_eq!(
        decoded,
        Decoded::Proxied {
            source: client,
            destination: at(10001)
        }
    );
    assert_eq!(&seen[..12], b"\r\n\r\n\0\r\nQUIT\n", "binary v2 signature");
    assert_eq!(&seen[len..], b"hello\n");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_only_strips_the_header() {
    let (gw, at) = setup("127.1.11.44").await;
    let (seen, _) = roundtrip(
        at(10002),
        b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 10000\r\nhello\n",
    )
    .await
    .unwrap();
    assert_eq!(seen, b"hello\n");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_headers_are_closed_and_counted() {
    let (gw, at) = setup("127.1.11.45").await;
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.0\r\n\r\nhello\n",
        b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\nhello\n",
        b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c0123456789abhello\n",
        b"PROXY TCP4 1.1.1.1 1.1.1.1 1 2 AND THEN SOME MORE TEXT THAT NEVER ENDS WITH A NEWLINE FOR MORE THAN 107 BYTES ................hello\n",
    ];
    for bytes in garbage {
        match roundtrip(at(10002), bytes).await {
            Ok((seen, _)) => assert!(seen.is_empty(), "backend must see nothing: {seen:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    let errors = metric(
        &gw,
        "dermaga_connections_refused_total",
        &[("port", "10002"), ("reason", "proxy_header")],
    );
    assert_eq!(errors, 4.0);
    // The port still serves good clients.
    let (seen, _) = roundtrip(at(10002), b"PROXY UNKNOWN\r\nhello\n")
        .await
        .unwrap();
    assert_eq!(seen, b"hello\n");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_partial_header_is_closed_at_the_header_timeout() {
    let (gw, at) = setup("127.1.11.46").await;
    let mut s = TcpStream::connect(at(10002)).await.unwrap();
    s.write_all(b"PROXY TCP4 1.2").await.unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut [0u8; 8]))
        .await
        .expect("closed, not left open");
    assert!(matches!(r, Err(_) | Ok(0)), "{r:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "not before the timeout: {elapsed:?}"
    );
    println!("partial header closed after {elapsed:?} (timeout 300ms)");
    gw.shutdown().await;
}

/// The same through the Gateway API: a Gateway annotation makes a TCP listener decode the load
/// balancer's header, a TCPRoute annotation sends one to its backends, with the client's
/// address from the decoded header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_routes_decode_and_send_proxy_headers_by_annotation() {
    use dermaga::fixture::{Fixture, gateway as gateway_object, gateway_class, tcp_route, yaml};
    let backend = recorder("127.0.0.2").await;
    let objects = [
        gateway_class("dermaga", "dermaga.io/gateway-controller").object(),
        gateway_object("default", "edge", "dermaga")
            .annotate("dermaga.io/proxy-protocol-listeners", "from-lb")
            .listener("from-lb", "TCP", 10010)
            .listener("direct", "TCP", 10011)
            .object(),
        tcp_route("default", "rec")
            .annotate("dermaga.io/backend-proxy-protocol", "v1")
            .parent("edge", None)
            .backend("rec", 80, None)
            .object(),
    ];
    let manifest =
        yaml(objects) + &service_yaml("rec", 80) + &slices_yaml("rec", &[(backend, true)]);
    let gw = gateway(&manifest, options("127.1.11.47"));
    let decoding = gw.wait_bound(tcp(10010)).await;
    let direct = gw.wait_bound(tcp(10011)).await;
    let header = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 10010\r\n";
    let (seen, _) = roundtrip(decoding, &[header.as_slice(), b"hello\n"].concat())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen),
        String::from_utf8_lossy(&[header.as_slice(), b"hello\n"].concat()),
        "decoded from the client, sent again to the backend"
    );
    // The other listener decodes nothing: the backend gets the client's own address.
    let (seen, client) = roundtrip(direct, b"hello\n").await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen),
        format!(
            "PROXY TCP4 {} {} {} 10011\r\nhello\n",
            client.ip(),
            direct.ip(),
            client.port()
        )
    );
    gw.shutdown().await;
}
