//! The access log: one line per TCP connection when it ends, on stdout, JSON (default) or text.
//!
//! The data path never waits for it: records go into a bounded channel with `try_send`; when
//! the channel is full the record is dropped and `dermaga_access_log_dropped_total` counts it.
//! A dedicated thread formats and writes, flushing whenever the channel runs empty.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::metrics::Metrics;

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
}

/// One access-log record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccessRecord {
    /// When the connection ended (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// `TCP`.
    pub protocol: &'static str,
    /// External port.
    pub port: u16,
    /// The client: the PROXY-decoded source when the port decodes PROXY, else the peer.
    pub client: SocketAddr,
    /// The TCP peer (the load balancer, when PROXY protocol is used).
    pub peer: SocketAddr,
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub service: String,
    /// The endpoint that served the connection, if any.
    pub endpoint: Option<SocketAddr>,
    /// The pod behind that endpoint (EndpointSlice `targetRef`), if known.
    pub pod: Option<String>,
    /// Connect attempts made.
    pub attempts: u32,
    /// Bytes received from the client.
    pub bytes_received: u64,
    /// Bytes sent to the client.
    pub bytes_sent: u64,
    /// Lifetime in milliseconds.
    pub duration_ms: f64,
    /// How it ended.
    pub close: CloseReason,
    /// The error behind `close`, when there was one.
    pub error: Option<String>,
}

impl AccessRecord {
    /// Formats the record as one line (without the newline).
    pub fn format(&self, format: AccessLogFormat) -> String {
        match format {
            AccessLogFormat::Json | AccessLogFormat::Off => {
                serde_json::to_string(self).expect("plain data serializes")
            }
            AccessLogFormat::Text => {
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                format!(
                    "{} {} port={} client={} peer={} service={}/{} endpoint={} pod={:?} attempts={} received={} sent={} duration_ms={:.3} close={} error={:?}",
                    self.time,
                    self.protocol,
                    self.port,
                    self.client,
                    self.peer,
                    self.namespace,
                    self.service,
                    opt(self.endpoint.map(|e| e.to_string())),
                    opt(self.pod.clone()),
                    self.attempts,
                    self.bytes_received,
                    self.bytes_sent,
                    self.duration_ms,
                    serde_json::to_value(self.close)
                        .expect("enum")
                        .as_str()
                        .unwrap_or("?"),
                    self.error.as_deref().unwrap_or(""),
                )
            }
        }
    }
}

/// RFC 3339 timestamp with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Milliseconds of a duration, as a float.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The sending side, shared by every connection.
#[derive(Debug)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<AccessRecord>>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// No access log.
    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self { tx: None, metrics }
    }

    /// Starts the writer thread on `out`, with room for `capacity` records in flight.
    pub fn start(
        format: AccessLogFormat,
        capacity: usize,
        out: Box<dyn Write + Send>,
        metrics: Arc<Metrics>,
    ) -> Self {
        if format == AccessLogFormat::Off {
            return Self::off(metrics);
        }
        let (tx, mut rx) = mpsc::channel::<AccessRecord>(capacity.max(1));
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(out);
                while let Some(record) = rx.blocking_recv() {
                    let mut line = record.format(format);
                    line.push('\n');
                    if out.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    if rx.is_empty() && out.flush().is_err() {
                        break;
                    }
                }
                let _ = out.flush();
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
            && tx.try_send(record).is_err()
        {
            self.metrics.global.access_log_dropped.inc();
        }
    }
}
