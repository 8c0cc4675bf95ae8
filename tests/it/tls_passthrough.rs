//! TLS passthrough (TLSRoute on a `TLS` listener with `tls.mode: Passthrough`) with a real TLS
//! client and real TLS servers: `openssl s_client` reaches, by server name, the right one of
//! three `openssl s_server` backends, each with its own self-signed certificate, and sees that
//! backend's certificate (dermaga holds none); an exact name wins over a wildcard; a name no
//! route takes, a client that is not TLS and one that sends nothing are closed and counted;
//! the access log names the route and the server name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dermaga::fixture::{Fixture, gateway, gateway_class, tls_route, yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A self-signed certificate and key for `name` in `dir`.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let file = name.replace('*', "wildcard");
    let (cert, key) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (the tests need it: .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `openssl s_server` on `addr` with the certificate of `name`; killed when dropped.
struct TlsServer(Child);

impl TlsServer {
    fn start(dir: &Path, name: &str, addr: SocketAddr) -> Self {
        let (cert, key) = certificate(dir, name);
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-accept", &addr.to_string()])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        Self(child)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until something accepts on `addr`.
async fn wait_listening(addr: SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on {addr}");
}

/// The subject of the certificate `openssl s_client` is shown when it connects to `to` asking
/// for `server_name`; `None` when the handshake fails.
async fn subject_seen(to: SocketAddr, server_name: &str) -> Option<String> {
    let to = to.to_string();
    let name = server_name.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &to,
                "-servername",
                &name,
                "-verify_quiet",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let subject = text
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| {
            s.trim()
                .trim_start_matches("CN")
                .trim_start_matches([' ', '='])
                .to_owned()
        });
    if out.status.success() { subject } else { None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_tls_client_reaches_the_backend_its_server_name_chooses() {
    let dir = tempfile::tempdir().unwrap();
    let shop_addr: SocketAddr = "127.0.20.1:18443".parse().unwrap();
    let org_addr: SocketAddr = "127.0.20.2:18443".parse().unwrap();
    let api_addr: SocketAddr = "127.0.20.3:18443".parse().unwrap();
    let _shop = TlsServer::start(dir.path(), "shop.example.com", shop_addr);
    let _org = TlsServer::start(dir.path(), "*.example.org", org_addr);
    let _api = TlsServer::start(dir.path(), "api.example.org", api_addr);
    for addr in [shop_addr, org_addr, api_addr] {
        wait_listening(addr).await;
    }

    let (gw, lines) = gateway_with_access_log(options("127.1.20.1"));
    let objects = [
        gateway_class("dermaga", "dermaga.io/gateway-controller").object(),
        gateway("default", "edge", "dermaga")
            .listener("tls", "TLS", 10443)
            .passthrough()
            .object(),
        tls_route("default", "shop")
            .parent("edge", Some("tls"))
            .hostname("shop.example.com")
            .backend("shop", 443, None)
            .created(1_000)
            .object(),
        tls_route("default", "org")
            .parent("edge", Some("tls"))
            .hostname("*.example.org")
            .backend("org", 443, None)
            .created(1_001)
            .object(),
        tls_route("default", "api")
            .parent("edge", Some("tls"))
            .hostname("api.example.org")
            .backend("api", 443, None)
            .created(1_002)
            .object(),
    ];
    let mut manifest = yaml(objects);
    for (name, addr) in [("shop", shop_addr), ("org", org_addr), ("api", api_addr)] {
        manifest += &service_yaml(name, 443);
        manifest += &slices_yaml(name, &[(addr, true)]);
    }
    apply(&gw, &manifest);
    let port = gw.wait_bound(tcp(10443)).await;

    // Two names and a wildcard: each client sees its backend's own certificate; the exact
    // api.example.org wins over *.example.org (though that route is older).
    for (server_name, subject) in [
        ("shop.example.com", "shop.example.com"),
        ("www.example.org", "*.example.org"),
        ("a.b.example.org", "*.example.org"),
        ("api.example.org", "api.example.org"),
    ] {
        assert_eq!(
            subject_seen(port, server_name).await.as_deref(),
            Some(subject),
            "server name {server_name}"
        );
    }

    // A name no route takes, a client that is not TLS, one that never completes its hello:
    // each closed, counted, and the ports go on.
    assert_eq!(subject_seen(port, "nope.example.net").await, None);
    let mut plain = tokio::net::TcpStream::connect(port).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    assert!(
        !matches!(plain.read(&mut buf).await, Ok(n) if n > 0),
        "plain text got an answer"
    );
    let refused = || {
        metric(
            &gw,
            "dermaga_connections_refused_total",
            &[("reason", "tls_server_name")],
        )
    };
    wait_until("two refusals counted", || refused() == 2.0).await;
    assert_eq!(
        subject_seen(port, "shop.example.com").await.as_deref(),
        Some("shop.example.com"),
        "still served"
    );

    // Connections by the hostname their server name matched.
    for (hostname, n) in [
        ("shop.example.com", 2.0),
        ("*.example.org", 2.0),
        ("api.example.org", 1.0),
    ] {
        assert_eq!(
            metric(
                &gw,
                "dermaga_tls_connections_total",
                &[("port", "10443"), ("hostname", hostname)],
            ),
            n,
            "{hostname}"
        );
    }
    // Each TLSRoute of the port is an info series.
    for route in ["shop", "org", "api"] {
        assert_eq!(
            metric(
                &gw,
                "dermaga_route_info",
                &[
                    ("port", "10443"),
                    ("kind", "TLSRoute"),
                    ("route_name", route)
                ],
            ),
            1.0,
            "{route}"
        );
    }

    // The access log names the route and the server name.
    gw.shutdown().await;
    let records = lines.records();
    let served = records
        .iter()
        .find(|r| r["sni"] == "api.example.org")
        .expect("a record with the server name");
    assert_eq!(served["route"], "TLSRoute/default/api", "{served}");
    assert_eq!(served["endpoint"], api_addr.to_string());
    let unknown = records
        .iter()
        .find(|r| r["sni"] == "nope.example.net")
        .expect("the refused name is logged");
    assert_eq!(unknown["close"], "tls_server_name");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("no TLSRoute takes server name"),
        "{unknown}"
    );
}
