//! Shared test support: tagged fake backends on loopback, the fixtures most tests share (built
//! with `dermaga::fixture`), an in-process gateway.
#![allow(dead_code)]

pub mod kube_api;
pub mod netns;
pub mod process;
pub mod testenv;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dermaga::ListenAddress;
use dermaga::ReservedPorts;
use dermaga::fixture::{self, Fixture, endpoint};
use dermaga::parse_manifest;
use dermaga::{Gateway, GatewayOptions};
use dermaga::{Index, IndexSettings, Object};
use dermaga::{ListenPort, ObjectName, Protocol, RouteKey};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An address where nothing listens: connecting is refused at once.
pub const REFUSING: &str = "127.0.250.250:9";

/// A fake backend that greets each connection with `<tag>\n` and then echoes.
pub struct Backend {
    pub addr: SocketAddr,
    pub tag: String,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(ip: &str, tag: &str) -> Self {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let greeting = format!("{tag}\n");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    if s.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            tag: tag.to_owned(),
            task,
        }
    }

    /// Closes the listener (new connects are refused) and its accept loop.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects and reads the greeting line.
pub async fn greeting(addr: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect(addr).await?;
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    let n = tokio::time::timeout(Duration::from_secs(10), lines.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no greeting in 10s"))??;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without greeting",
        ));
    }
    Ok(line.trim_end().to_owned())
}

/// The port map `dermaga/tcp-services` with `entries`, as YAML.
pub fn configmap_yaml(entries: &[(&str, &str)]) -> String {
    named_configmap_yaml("tcp-services", entries)
}

/// A Service `default/<name>` with one TCP port named `main`, as YAML.
pub fn service_yaml(name: &str, port: u16) -> String {
    service_fixture(name, fixture::port(port).named("main")).yaml()
}

/// One slice per endpoint, so each may have its own port (as pods may), as YAML.
pub fn slices_yaml(service: &str, endpoints: &[(SocketAddr, bool)]) -> String {
    fixture::yaml(slices(service, endpoints, Protocol::Tcp))
}

/// Port `port` mapped to `default/<service>:80`, the Service, and one slice per endpoint: the
/// whole of one route, as YAML.
pub fn route_yaml(port: &str, service: &str, endpoints: &[(SocketAddr, bool)]) -> String {
    configmap_yaml(&[(port, &format!("default/{service}:80"))])
        + &service_yaml(service, 80)
        + &slices_yaml(service, endpoints)
}

/// Every `.rs` file below `dir` (for the tests that read the sources).
pub fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Writes `yaml` to `path` in one step (a rename), as a ConfigMap volume's update appears.
pub fn write_config(path: &std::path::Path, yaml: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn service_fixture(name: &str, port: fixture::Port) -> fixture::ServiceFixture {
    fixture::service("default", name).port(port)
}

/// One slice `<service>-<i>` per endpoint, its port named `main`; the endpoint's pod is
/// `<service>-pod-<i>`.
pub fn slices(
    service: &str,
    endpoints: &[(SocketAddr, bool)],
    protocol: Protocol,
) -> impl Iterator<Item = Object> {
    endpoints.iter().enumerate().map(move |(i, (addr, ready))| {
        let pod = endpoint(addr.ip())
            .ready(*ready)
            .pod("default", &format!("{service}-pod-{i}"));
        slice(
            service,
            &format!("{service}-{i}"),
            addr.port(),
            protocol,
            pod,
        )
    })
}

/// The EndpointSlice `default/<name>` of `service` with one endpoint, whose port (named
/// `main`) is `port`.
pub fn slice(
    service: &str,
    name: &str,
    port: u16,
    protocol: Protocol,
    endpoint: fixture::EndpointFixture,
) -> Object {
    fixture::endpoint_slice("default", name, service)
        .port(fixture::port(port).named("main").protocol(protocol))
        .endpoint(endpoint)
        .object()
}

pub fn settings() -> IndexSettings {
    let mut reserved = ReservedPorts::default();
    reserved.reserve(10254, "the admin server listens there");
    IndexSettings {
        port_maps: vec![(Protocol::Tcp, ObjectName::new("dermaga", "tcp-services"))],
        reserved,
        ..IndexSettings::default()
    }
}

pub fn options(listen: &str) -> GatewayOptions {
    GatewayOptions {
        address: ListenAddress::Ip(listen.parse().unwrap()),
        drain_timeout: Duration::from_secs(5),
        // Two in-process gateways on one address must fail to bind, not share the port.
        reuse_port: false,
        ..GatewayOptions::default()
    }
}

/// Starts an in-process gateway and applies `yaml`.
pub fn gateway(yaml: &str, options: GatewayOptions) -> Gateway {
    let gw = Gateway::start(Index::new(settings()), options);
    apply(&gw, yaml);
    gw
}

/// Starts an in-process gateway whose JSON access log goes to the returned buffer (64 records
/// may wait).
pub fn gateway_with_access_log(options: GatewayOptions) -> (Gateway, SharedBuf) {
    let lines = SharedBuf::default();
    let metrics = std::sync::Arc::new(dermaga::Metrics::new());
    let log = std::sync::Arc::new(dermaga::AccessLog::start(
        dermaga::AccessLogFormat::Json,
        64,
        Box::new(lines.clone()),
        metrics.clone(),
    ));
    let gw = Gateway::start_with(Index::new(settings()), options, metrics, log);
    (gw, lines)
}

pub fn apply(gw: &Gateway, yaml: &str) {
    let objects = parse_manifest(yaml).expect("fixture parses").objects;
    gw.publisher.update(|i| i.reset_all(objects));
}

pub fn tcp(port: u16) -> RouteKey {
    RouteKey::tcp(ListenPort::new(port).unwrap())
}

/// Deterministic pseudo-random bytes (xorshift), so both ends can produce the same stream.
pub fn random_block(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sums the samples of metric `name` (exact sample name, e.g. `dermaga_bytes_sent_total`)
/// whose labels include every `(key, value)` of `labels`, in the Prometheus text of `text`.
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// [`metric_in`] on a gateway's current metrics.
pub fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_in(&gw.metrics.encode(), name, labels)
}

/// A plain HTTP/1.1 GET over a real socket; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("admin answers")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Serves the admin HTTP server of `gw` on `ip` (port 0) until the returned token is cancelled.
pub async fn start_admin(
    gw: &Gateway,
    ip: &str,
) -> (SocketAddr, tokio_util::sync::CancellationToken) {
    use dermaga::AdminState;
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let state = AdminState {
        snapshot: gw.publisher.snapshot().clone(),
        status: gw.status(),
        metrics: gw.metrics.clone(),
        pipes: gw.pipes.clone(),
        health: gw.health.clone(),
        draining: gw.shutdown_token(),
    };
    tokio::spawn(dermaga::serve_admin(listener, state, stop.clone()));
    (addr, stop)
}

/// Waits (bounded, 10 s) until `cond` holds, checking every few milliseconds. For conditions
/// with no event to wait on, such as a counter reaching a value after a connection task ends.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The port map `dermaga/<name>` (e.g. `udp-services`) with `entries`, as YAML.
pub fn named_configmap_yaml(name: &str, entries: &[(&str, &str)]) -> String {
    fixture::port_map("dermaga", name).entries(entries).yaml()
}

/// A Service `default/<name>` with one UDP port named `main`, as YAML.
pub fn udp_service_yaml(name: &str, port: u16) -> String {
    service_fixture(name, fixture::port(port).named("main").udp()).yaml()
}

/// Slices with a UDP port named `main`, as YAML.
pub fn udp_slices_yaml(service: &str, endpoints: &[(SocketAddr, bool)]) -> String {
    fixture::yaml(slices(service, endpoints, Protocol::Udp))
}

/// Index settings with both port maps.
pub fn settings_with_udp() -> IndexSettings {
    let mut s = settings();
    s.port_maps
        .push((Protocol::Udp, ObjectName::new("dermaga", "udp-services")));
    s
}

/// A UDP backend that answers each datagram with `<tag>:<payload>`.
pub async fn udp_backend(ip: &str, tag: &str) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let tag = tag.as_bytes().to_vec();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 70_000];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let mut reply = tag.clone();
            reply.push(b':');
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

/// Sends `payload` once and waits (bounded, 10 s) for the answer: nothing may be lost.
pub async fn udp_ask_once(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    socket.send_to(payload, to).await.unwrap();
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .expect("the first datagram of a flow is answered")
        .unwrap();
    assert_eq!(from, to, "the reply comes from the port the client used");
    buf[..n].to_vec()
}

/// Sends `payload` from `socket` to `to` until an answer comes (every 100 ms, 50 tries at most).
pub async fn udp_ask(socket: &tokio::net::UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    for _ in 0..50 {
        socket.send_to(payload, to).await.unwrap();
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await
        {
            assert_eq!(from, to, "the reply comes from the port the client used");
            return buf[..n].to_vec();
        }
    }
    panic!("no UDP answer from {to}");
}

/// An in-memory writer that clones share (log and access-log capture).
#[derive(Clone, Default)]
pub struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Every line parsed as one JSON object.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }
}
