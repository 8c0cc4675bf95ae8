//! The access log: one line per TCP connection when it ends, on stdout, JSON (default) or text.
//!
//! The data path never waits for it and allocates little for it: a record holds shared handles
//! (the port's labels, the pod name) and plain numbers, and goes into a bounded channel with
//! `try_send`; when the channel is full the record is dropped and
//! `dermaga_access_log_dropped_total` counts it. A dedicated thread formats (time, JSON) and
//! writes, flushing when the channel has been empty for a moment or its buffer is full.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use super::metrics::{Metrics, PortMetrics};

/// How access-log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// `key=value` text.
    Text,
    /// No access log.
    Off,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The client closed its side first; the backend then finished.
    ClientClosed,
    /// The backend closed its side first; the client then finished.
    BackendClosed,
    /// The port was removed (or the process stopped) and the drain timeout cut the connection.
    Drained,
    /// Refused at once: no usable endpoint.
    NoEndpoints,
    /// Closed: bad, missing or late PROXY protocol header.
    ProxyHeader,
    /// Closed: every connect attempt failed.
    UpstreamUnavailable,
    /// An I/O error on the client side.
    ClientError,
    /// An I/O error on the backend side.
    BackendError,
    /// UDP: no datagram either way for the idle timeout.
    IdleTimeout,
    /// UDP: the flow's endpoint left the route; the next datagram starts a new flow.
    EndpointGone,
    /// UDP: the endpoint answered ICMP port-unreachable.
    UpstreamRefused,
}

impl CloseReason {
    /// The name used in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::BackendClosed => "backend_closed",
            CloseReason::Drained => "drained",
            CloseReason::NoEndpoints => "no_endpoints",
            CloseReason::ProxyHeader => "proxy_header",
            CloseReason::UpstreamUnavailable => "upstream_unavailable",
            CloseReason::ClientError => "client_error",
            CloseReason::BackendError => "backend_error",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::EndpointGone => "endpoint_gone",
            CloseReason::UpstreamRefused => "upstream_refused",
        }
    }
}

/// One access-log record, as the data path hands it over.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When the connection ended.
    pub ended: SystemTime,
    /// The port's labels (port, protocol, namespace, service).
    pub route: Arc<PortMetrics>,
    /// The client: the PROXY-decoded source when the port decodes PROXY, else the peer.
    pub client: SocketAddr,
    /// The TCP peer (the load balancer, when PROXY protocol is used).
    pub peer: SocketAddr,
    /// The endpoint that served the connection (or was tried last), if any.
    pub endpoint: Option<SocketAddr>,
    /// The pod behind that endpoint (EndpointSlice `targetRef`), if known.
    pub pod: Option<Arc<str>>,
    /// Connect attempts made.
    pub attempts: u32,
    /// Bytes received from the client.
    pub bytes_received: u64,
    /// Bytes sent to the client.
    pub bytes_sent: u64,
    /// Lifetime.
    pub duration: Duration,
    /// How it ended.
    pub close: CloseReason,
    /// The error behind `close`, when there was one.
    pub error: Option<String>,
}

/// The serialized shape of a record (field order is the line's order).
#[derive(serde::Serialize)]
struct Line<'a> {
    time: String,
    protocol: &'static str,
    port: u16,
    client: SocketAddr,
    peer: SocketAddr,
    namespace: &'a str,
    service: &'a str,
    endpoint: Option<SocketAddr>,
    pod: Option<&'a str>,
    attempts: u32,
    bytes_received: u64,
    bytes_sent: u64,
    duration_ms: f64,
    close: &'static str,
    error: Option<&'a str>,
}

impl AccessRecord {
    fn line(&self) -> Line<'_> {
        let labels = self.route.labels();
        Line {
            time: humantime::format_rfc3339_millis(self.ended).to_string(),
            protocol: labels.protocol,
            port: labels.port,
            client: self.client,
            peer: self.peer,
            namespace: &labels.namespace,
            service: &labels.service,
            endpoint: self.endpoint,
            pod: self.pod.as_deref(),
            attempts: self.attempts,
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            duration_ms: self.duration.as_secs_f64() * 1000.0,
            close: self.close.as_str(),
            error: self.error.as_deref(),
        }
    }

    /// Appends the record as one line, newline included.
    pub fn write_line(&self, format: AccessLogFormat, out: &mut Vec<u8>) {
        let l = self.line();
        match format {
            AccessLogFormat::Json | AccessLogFormat::Off => {
                serde_json::to_writer(&mut *out, &l).expect("plain data serializes");
            }
            AccessLogFormat::Text => {
                let endpoint = l.endpoint.map_or_else(|| "-".to_owned(), |e| e.to_string());
                let _ = write!(
                    out,
                    "{} {} port={} client={} peer={} service={}/{} endpoint={} pod={:?} attempts={} received={} sent={} duration_ms={:.3} close={} error={:?}",
                    l.time,
                    l.protocol,
                    l.port,
                    l.client,
                    l.peer,
                    l.namespace,
                    l.service,
                    endpoint,
                    l.pod.unwrap_or("-"),
                    l.attempts,
                    l.bytes_received,
                    l.bytes_sent,
                    l.duration_ms,
                    l.close,
                    l.error.unwrap_or(""),
                );
            }
        }
        out.push(b'\n');
    }
}

/// The sending side, shared by every connection.
#[derive(Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<AccessRecord>>,
    metrics: Arc<Metrics>,
}

/// Bytes buffered before a write; also written when the channel stays empty for [`IDLE_FLUSH`].
const WRITE_BATCH: usize = 64 * 1024;
/// How long the writer waits for more records before writing what it has.
const IDLE_FLUSH: Duration = Duration::from_millis(50);

impl AccessLog {
    /// No access log.
    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self { tx: None, metrics }
    }

    /// Starts the writer thread on `out`, with room for `capacity` records in flight.
    pub fn start(
        format: AccessLogFormat,
        capacity: usize,
        mut out: Box<dyn Write + Send>,
        metrics: Arc<Metrics>,
    ) -> Self {
        if format == AccessLogFormat::Off {
            return Self::off(metrics);
        }
        let (tx, rx) = mpsc::sync_channel::<AccessRecord>(capacity.max(1));
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(WRITE_BATCH + 1024);
                loop {
                    match rx.recv_timeout(IDLE_FLUSH) {
                        Ok(record) => {
                            record.write_line(format, &mut buf);
                            if buf.len() < WRITE_BATCH {
                                continue;
                            }
                        }
                        Err(RecvTimeoutError::Timeout) if buf.is_empty() => continue,
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            let _ = out.write_all(&buf).and_then(|_| out.flush());
                            return;
                        }
                    }
                    if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                        return;
                    }
                    buf.clear();
                }
            })
            .expect("spawn the access-log thread");
        Self {
            tx: Some(tx),
            metrics,
        }
    }

    /// True when records are written (callers skip building them otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a record; never waits. A full buffer drops it and counts the drop.
    pub fn record(&self, record: AccessRecord) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(record)
        {
            self.metrics.global.access_log_dropped.inc();
        }
    }
}
