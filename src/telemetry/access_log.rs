//! The access log: one line per TCP connection when it ends, on stdout, JSON (default) or text.
//!
//! The data path never waits for it and allocates little for it: a record holds shared handles
//! (the port's labels, the pod name) and plain numbers, and goes into a bounded channel with
//! `try_send`; when the channel is full the record is dropped and
//! `dermaga_access_log_dropped_total` counts it. A dedicated thread formats (time, JSON) and
//! writes in batches: a line waits at most 50 ms. At exit, [`AccessLog::flush`] writes the rest,
//! and gives up early when the writer has not written a byte for [`STALLED`] (nobody reads
//! stdout): a stuck reader costs the exit about a second, not the whole flush timeout.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use super::metrics::{Metrics, PortMetrics};
use super::outcome::CloseReason;

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

/// One access-log record, as the data path hands it over.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When the connection ended.
    pub ended: SystemTime,
    /// The port's labels (protocol, namespace, service).
    pub route: Arc<PortMetrics>,
    /// The port the connection or flow came in on (one of a range entry's ports).
    pub port: u16,
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
    /// From accept to close.
    pub duration: Duration,
    /// How it ended.
    pub close: CloseReason,
    /// The error behind `close`, when there was one.
    pub error: Option<String>,
    /// The Gateway API route that served it (`TCPRoute/namespace/name`), if one did.
    pub gateway_route: Option<Arc<str>>,
    /// A TLS passthrough port: the server name the client asked for.
    pub server_name: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sni: Option<&'a str>,
}

impl AccessRecord {
    fn line(&self) -> Line<'_> {
        let labels = self.route.labels();
        Line {
            time: humantime::format_rfc3339_millis(self.ended).to_string(),
            protocol: labels.protocol,
            port: self.port,
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
            route: self.gateway_route.as_deref(),
            sni: self.server_name.as_deref(),
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
                if let Some(route) = l.route {
                    let _ = write!(out, " route={route}");
                }
                if let Some(sni) = l.sni {
                    let _ = write!(out, " sni={sni}");
                }
            }
        }
        out.push(b'\n');
    }
}

/// What the writer thread receives.
#[derive(Debug)]
enum Msg {
    Record(Box<AccessRecord>),
    /// Write everything received so far, then answer.
    Flush(mpsc::SyncSender<()>),
}

/// The sending side, shared by every connection.
#[derive(Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<Msg>>,
    metrics: Arc<Metrics>,
    /// Bytes written so far (progress of the writer, for [`AccessLog::flush`]).
    written: Arc<AtomicU64>,
}

/// Bytes buffered before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// A line waits at most this long before it is written.
const MAX_DELAY: Duration = Duration::from_millis(50);
/// Bytes per write call, so that progress shows while a slow reader takes a batch.
const WRITE_CHUNK: usize = 4096;
/// At exit, a writer that wrote nothing for this long is taken as stuck.
pub const STALLED: Duration = Duration::from_secs(1);

impl AccessLog {
    /// No access log.
    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self {
            tx: None,
            metrics,
            written: Default::default(),
        }
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
        let (tx, rx) = mpsc::sync_channel::<Msg>(capacity.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let progress = written.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(WRITE_BATCH + 1024);
                let mut oldest: Option<Instant> = None;
                let mut write = |buf: &mut Vec<u8>| {
                    let ok = buf
                        .chunks(WRITE_CHUNK)
                        .try_for_each(|chunk| {
                            out.write_all(chunk)?;
                            progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            Ok::<_, std::io::Error>(())
                        })
                        .and_then(|_| out.flush())
                        .is_ok();
                    buf.clear();
                    ok
                };
                loop {
                    let wait = oldest.map_or(MAX_DELAY, |t| MAX_DELAY.saturating_sub(t.elapsed()));
                    match rx.recv_timeout(wait) {
                        Ok(Msg::Record(record)) => {
                            record.write_line(format, &mut buf);
                            let since = *oldest.get_or_insert_with(Instant::now);
                            if buf.len() < WRITE_BATCH && since.elapsed() < MAX_DELAY {
                                continue;
                            }
                        }
                        Ok(Msg::Flush(ack)) => {
                            let ok = write(&mut buf);
                            oldest = None;
                            let _ = ack.send(());
                            if ok {
                                continue;
                            }
                            return;
                        }
                        Err(RecvTimeoutError::Timeout) if buf.is_empty() => continue,
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            write(&mut buf);
                            return;
                        }
                    }
                    oldest = None;
                    if !write(&mut buf) {
                        return;
                    }
                }
            })
            .expect("spawn the access-log thread");
        Self {
            tx: Some(tx),
            metrics,
            written,
        }
    }

    /// True when records are written (callers skip building them otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a record; never waits. A full buffer drops it and counts the drop.
    pub fn record(&self, record: AccessRecord) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                tx.try_send(Msg::Record(Box::new(record)))
        {
            self.metrics.global.access_log_dropped.inc();
        }
    }

    /// Writes out every record queued so far, waiting up to `timeout` (at exit, so the last
    /// connections' lines are not lost). Returns false if the writer did not finish in time, or
    /// wrote nothing for [`STALLED`] (nobody reads its output).
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let deadline = Instant::now() + timeout;
        let mut progress = (self.written.load(Ordering::Relaxed), Instant::now());
        let mut stalled = || {
            let now = Instant::now();
            let written = self.written.load(Ordering::Relaxed);
            if written != progress.0 {
                progress = (written, now);
            }
            now >= deadline || now.duration_since(progress.1) >= STALLED
        };
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) if !stalled() => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
        loop {
            match ack_rx.recv_timeout(Duration::from_millis(10)) {
                Ok(()) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) if stalled() => return false,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output whose first write never returns (stdout that nobody reads).
    struct Stuck;
    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            loop {
                std::thread::park();
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flush_gives_up_on_a_stuck_output_after_the_stall_time_not_the_timeout() {
        use crate::names::{ListenPort, ObjectName, RouteKey};
        let metrics = Arc::new(Metrics::new());
        let log = AccessLog::start(AccessLogFormat::Json, 16, Box::new(Stuck), metrics.clone());
        let route = metrics.port(
            RouteKey::tcp(ListenPort::new(10000).unwrap()),
            &ObjectName::new("default", "web"),
        );
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        log.record(AccessRecord {
            ended: SystemTime::now(),
            port: 10000,
            route,
            client: addr,
            peer: addr,
            endpoint: None,
            pod: None,
            attempts: 0,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            close: CloseReason::NoEndpoints,
            error: None,
            gateway_route: None,
            server_name: None,
        });
        let started = Instant::now();
        assert!(!log.flush(Duration::from_secs(30)));
        let took = started.elapsed();
        assert!(
            took >= STALLED && took < STALLED + Duration::from_secs(1),
            "{took:?}"
        );
    }
}
