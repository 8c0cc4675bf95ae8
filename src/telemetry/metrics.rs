//! Prometheus metrics, prefix `dermaga_`, served at `/metrics`, and the process metrics of
//! the Prometheus client libraries (`process_*`, read from `/proc/self` when scraped).
//!
//! Per-port families carry `port`, `protocol`, `namespace`, `service`; upstream connect failures
//! add `endpoint` and `pod`, whose cardinality is bounded by the endpoint count. The data path
//! gets one [`PortMetrics`] per connection from a small cache (one read lock, one hash of the
//! route key), then only touches atomics.
//!
//! Series stay bounded under churn: [`Metrics::retain`], run on every published table, removes
//! the series of ports that left the table (or whose Service changed) and the connect-failure
//! series of endpoints that left every route; the health registry removes its own endpoint
//! series. A connection still draining on a removed port updates handles no longer exported.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::names::{HealthKey, ListenPort, ObjectName, PortSpan, Protocol, RouteKey};
use crate::telemetry::outcome::{ConnectFailure, RefuseReason};

/// Labels of every per-port family.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    /// External port, or the range a range entry opened (`30000-30099`): one series per entry.
    pub port: PortSpan,
    /// `TCP` or `UDP`.
    pub protocol: &'static str,
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub service: String,
}

impl PortLabels {
    /// The labels of a route of the entry that opened `span`.
    pub fn of(key: RouteKey, span: PortSpan, service: &ObjectName) -> Self {
        Self {
            port: span,
            protocol: key.protocol.as_k8s(),
            namespace: service.namespace.clone(),
            service: service.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    #[prometheus(flatten)]
    port: PortLabels,
    reason: RefuseReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    #[prometheus(flatten)]
    port: PortLabels,
    endpoint: String,
    pod: String,
    reason: ConnectFailure,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    #[prometheus(flatten)]
    port: PortLabels,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EjectionLabels {
    endpoint: String,
    protocol: &'static str,
    pod: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointProtocolLabels {
    endpoint: String,
    protocol: &'static str,
}

impl EndpointProtocolLabels {
    fn of(key: HealthKey) -> Self {
        Self {
            endpoint: key.addr.to_string(),
            protocol: key.protocol.as_k8s(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    endpoint: String,
    result: &'static str,
}

/// Endpoint health series (passive ejection, active checks).
#[derive(Debug, Default)]
struct HealthFamilies {
    ejections: Family<EjectionLabels, Counter>,
    ejected: Family<EndpointProtocolLabels, Gauge>,
    check_unhealthy: Family<EndpointLabels, Gauge>,
    checks: Family<CheckLabels, Counter>,
    all_unhealthy: Family<PortLabels, Counter>,
}

impl HealthFamilies {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "endpoint_ejections",
            "Times an endpoint was ejected after failing connects in a row (passive health)",
            self.ejections.clone(),
        );
        registry.register(
            "endpoint_ejected",
            "1 while an endpoint is ejected or on probation after its ejection, until a connect or active check to it succeeds",
            self.ejected.clone(),
        );
        registry.register(
            "endpoint_check_unhealthy",
            "1 while active health checks hold an endpoint unhealthy",
            self.check_unhealthy.clone(),
        );
        registry.register(
            "health_checks",
            "Active health-check probes, by endpoint and result (success, failure)",
            self.checks.clone(),
        );
        registry.register(
            "connections_all_endpoints_unhealthy",
            "Connections that found every endpoint of their port unhealthy and so tried them all (the panic rule), per port",
            self.all_unhealthy.clone(),
        );
    }
}

/// The per-port UDP handles.
#[derive(Debug)]
pub struct UdpMetrics {
    /// Flows started.
    pub flows_created: Counter,
    /// Flows open now.
    pub flows_active: Gauge,
    /// Datagrams from clients.
    pub datagrams_received: Counter,
    /// Datagrams to clients.
    pub datagrams_sent: Counter,
    ended: Family<ReasonLabels, Counter>,
    dropped: Family<ReasonLabels, Counter>,
    labels: PortLabels,
}

impl UdpMetrics {
    /// A flow ended, for `reason` (idle_timeout, endpoint_gone, upstream_refused, backend_error,
    /// drained).
    pub fn flow_ended(&self, reason: &'static str) {
        self.ended
            .get_or_create(&ReasonLabels {
                port: self.labels.clone(),
                reason,
            })
            .inc();
    }

    /// A client datagram was dropped, for `reason` (max_flows, no_endpoints, upstream_busy,
    /// upstream_socket).
    pub fn dropped(&self, reason: &'static str) {
        self.dropped
            .get_or_create(&ReasonLabels {
                port: self.labels.clone(),
                reason,
            })
            .inc();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WatchErrorLabels {
    resource: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerNameLabels {
    port: u16,
    hostname: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteInfoLabels {
    port: u16,
    protocol: &'static str,
    kind: &'static str,
    route_namespace: String,
    route_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusWriteLabels {
    kind: &'static str,
    result: &'static str,
}

/// The per-port handles one connection updates.
#[derive(Debug)]
pub struct PortMetrics {
    labels: PortLabels,
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections open now.
    pub active: Gauge,
    /// Bytes received from clients.
    pub bytes_received: Counter,
    /// Bytes sent to clients.
    pub bytes_sent: Counter,
    /// Upstream connect attempts.
    pub connect_attempts: Counter,
    /// Attempts after the first one of a connection.
    pub retries: Counter,
    /// Connection lifetime, accept to close.
    pub duration: Histogram,
    /// Connections cut by the idle timeout.
    pub idle_timeouts: Counter,
    refused: [Counter; REFUSE_REASONS.len()],
    failures: Family<FailureLabels, Counter>,
    /// Every failure series created, so that those of departed endpoints can be removed.
    failure_series: Arc<Mutex<HashSet<FailureLabels>>>,
    /// Connections that found every endpoint unhealthy and tried them all.
    pub all_endpoints_unhealthy: Counter,
}

impl PortMetrics {
    /// The labels these handles carry (port, protocol, namespace, service).
    pub fn labels(&self) -> &PortLabels {
        &self.labels
    }

    /// Counts a refused connection.
    pub fn refused(&self, reason: RefuseReason) {
        // REFUSE_REASONS lists the reasons in their declaration order.
        self.refused[reason as usize].inc();
    }

    /// Counts a failed connect to `endpoint` (rare path: one family lookup).
    pub fn connect_failed(
        &self,
        endpoint: std::net::SocketAddr,
        pod: Option<&str>,
        reason: ConnectFailure,
    ) {
        let labels = FailureLabels {
            port: self.labels.clone(),
            endpoint: endpoint.to_string(),
            pod: pod.unwrap_or("").to_owned(),
            reason,
        };
        self.failures.get_or_create(&labels).inc();
        self.failure_series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels);
    }
}

/// Process-wide counters without port labels.
#[derive(Debug, Default)]
pub struct GlobalMetrics {
    /// Connections forwarded with splice.
    pub spliced: Counter,
    /// Connections forwarded with the buffered copy.
    pub copied: Counter,
    /// Access-log lines dropped because the buffer was full.
    pub access_log_dropped: Counter,
    /// Accept errors (EMFILE and the like).
    pub accept_errors: Counter,
    /// Config errors in force after the last build.
    pub config_errors: Gauge,
}

/// Values read at scrape time from the other layers.
#[derive(Debug, Default)]
struct Live {
    last_success_unix_ms: AtomicU64,
    pipes_live: Gauge,
    listeners_bound: Gauge,
    listeners_failed: Gauge,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let last = self.last_success_unix_ms.load(Ordering::Relaxed);
        if last > 0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(last);
            let age = ConstGauge::new(now.saturating_sub(last) as f64 / 1000.0);
            let m = encoder.encode_descriptor(
                "config_last_success_age_seconds",
                "Seconds since the configuration was last loaded or synced successfully",
                None,
                age.metric_type(),
            )?;
            age.encode(m)?;
        }
        Ok(())
    }
}

/// What the routing table in force has, as far as series go: each route's span (its port, or
/// its entry's range), Service and endpoint addresses. [`Metrics::retain`] removes the series of
/// everything else.
#[derive(Debug, Clone, Default)]
pub struct RoutesInForce(HashMap<RouteKey, RouteInForce>);

/// One route of [`RoutesInForce`].
#[derive(Debug, Clone)]
pub struct RouteInForce {
    /// The port, or the range its entry opened.
    pub span: PortSpan,
    /// Its Service.
    pub service: ObjectName,
    /// Its endpoints.
    pub endpoints: Vec<std::net::SocketAddr>,
}

impl FromIterator<(RouteKey, RouteInForce)> for RoutesInForce {
    fn from_iter<I: IntoIterator<Item = (RouteKey, RouteInForce)>>(routes: I) -> Self {
        Self(routes.into_iter().collect())
    }
}

impl RoutesInForce {
    /// The span of each route.
    pub fn spans(&self) -> HashMap<RouteKey, PortSpan> {
        self.0.iter().map(|(k, r)| (*k, r.span)).collect()
    }
}

impl prometheus_client::encoding::EncodeLabelValue for PortSpan {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{self}")
    }
}

/// All metrics of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Unlabelled counters.
    pub global: GlobalMetrics,
    live: Arc<Live>,
    accepted: Family<PortLabels, Counter>,
    active: Family<PortLabels, Gauge>,
    bytes_received: Family<PortLabels, Counter>,
    bytes_sent: Family<PortLabels, Counter>,
    attempts: Family<PortLabels, Counter>,
    retries: Family<PortLabels, Counter>,
    duration: Family<PortLabels, Histogram, fn() -> Histogram>,
    idle_timeouts: Family<PortLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    kube_watch_errors: Family<WatchErrorLabels, Counter>,
    kube_events: Family<ResultLabels, Counter>,
    status_writes: Family<StatusWriteLabels, Counter>,
    service_port_applies: Family<ResultLabels, Counter>,
    service_ports_held_back: Gauge,
    route_info: Family<RouteInfoLabels, Gauge>,
    server_names: Family<ServerNameLabels, Counter>,
    /// The hostnames the last table served, to remove the series of those gone.
    server_names_served: Mutex<HashSet<(u16, String)>>,
    status_leader: Gauge,
    health: HealthFamilies,
    cache: RwLock<HashMap<RouteKey, (ObjectName, Arc<PortMetrics>)>>,
    /// The ports of range entries, by route: their series carry the range.
    spans: RwLock<HashMap<RouteKey, PortSpan>>,
    udp_created: Family<PortLabels, Counter>,
    udp_active: Family<PortLabels, Gauge>,
    udp_received: Family<PortLabels, Counter>,
    udp_sent: Family<PortLabels, Counter>,
    udp_ended: Family<ReasonLabels, Counter>,
    udp_dropped: Family<ReasonLabels, Counter>,
    udp_kernel_drops: Family<KernelDropLabels, Counter>,
    /// UDP ports with a kernel-drops series.
    kernel_drop_ports: Mutex<HashSet<u16>>,
    failure_series: Arc<Mutex<HashSet<FailureLabels>>>,
    /// Every set of port labels a series was created with.
    port_series: Mutex<HashSet<PortLabels>>,
    /// `process_*`, without the `dermaga_` prefix.
    process: Registry,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KernelDropLabels {
    port: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The `udp_flows_ended` reasons, for removing a port's series.
const FLOW_END_REASONS: [&str; 5] = [
    "idle_timeout",
    "endpoint_gone",
    "upstream_refused",
    "backend_error",
    "drained",
];

/// The `udp_datagrams_dropped` reasons, for removing a port's series.
const DROP_REASONS: [&str; 6] = [
    "source_denied",
    "max_flows",
    "no_endpoints",
    "upstream_busy",
    "upstream_socket",
    "shutting_down",
];

/// Every refusal reason, in declaration order (the index of each is its discriminant).
const REFUSE_REASONS: [RefuseReason; 11] = [
    RefuseReason::no_endpoints,
    RefuseReason::proxy_header,
    RefuseReason::upstream_unavailable,
    RefuseReason::max_connections,
    RefuseReason::out_of_descriptors,
    RefuseReason::invalid_backend,
    RefuseReason::tls_server_name,
    RefuseReason::source_denied,
    RefuseReason::source_connections,
    RefuseReason::source_rate,
    RefuseReason::proxy_untrusted,
];

/// The process metrics of the Prometheus client libraries, from `/proc/self` at scrape time.
#[derive(Debug)]
struct ProcessCollector;

/// CPU seconds, resident bytes and start time (seconds since the epoch) from `/proc/self/stat`.
fn process_stat() -> Option<(f64, f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = crate::sys::clock_ticks_per_second() as f64;
    let cpu = (field(14)? + field(15)?) as f64 / ticks;
    let rss = (field(24)? * crate::sys::page_size()) as f64;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
    let start = boot as f64 + field(22)? as f64 / ticks;
    Some((cpu, rss, start))
}

/// The soft limit on open descriptors, from `/proc/self/limits`.
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    Some(soft.parse::<u64>().map_or(f64::INFINITY, |n| n as f64))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some((cpu, rss, start)) = process_stat() {
            encoder_gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            )?;
            encoder_gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                start,
            )?;
            let c = prometheus_client::metrics::counter::ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory's own descriptor is listed too.
            let open = dir.count().saturating_sub(1);
            encoder_gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                open as f64,
            )?;
        }
        if let Some(max) = max_fds() {
            encoder_gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                max,
            )?;
        }
        Ok(())
    }
}

fn encoder_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~4.6 h in 4x steps.
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dermaga");
        let live = Arc::new(Live::default());
        let accepted = Family::<PortLabels, Counter>::default();
        let active = Family::<PortLabels, Gauge>::default();
        let bytes_received = Family::<PortLabels, Counter>::default();
        let bytes_sent = Family::<PortLabels, Counter>::default();
        let attempts = Family::<PortLabels, Counter>::default();
        let retries = Family::<PortLabels, Counter>::default();
        let duration = Family::<PortLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let modes = Family::<ModeLabels, Counter>::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        // One statement per family lookup: a lookup returns a read guard that lives to the end
        // of its statement, and a second lookup that creates a series needs the write lock.
        let spliced = modes.get_or_create(&ModeLabels { mode: "splice" }).clone();
        let copied = modes.get_or_create(&ModeLabels { mode: "copy" }).clone();
        let global = GlobalMetrics {
            spliced,
            copied,
            ..GlobalMetrics::default()
        };
        registry.register(
            "connections_accepted",
            "Connections accepted, per port",
            accepted.clone(),
        );
        registry.register(
            "connections_active",
            "Connections open now, per port",
            active.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed before forwarding, by reason (no_endpoints, proxy_header, upstream_unavailable, max_connections, out_of_descriptors, invalid_backend, tls_server_name)",
            refused.clone(),
        );
        let idle_timeouts = Family::<PortLabels, Counter>::default();
        registry.register(
            "idle_timeouts",
            "TCP connections cut by the idle timeout (no byte either way for that long), per port",
            idle_timeouts.clone(),
        );
        registry.register(
            "bytes_received",
            "Bytes received from clients, per port",
            bytes_received.clone(),
        );
        registry.register(
            "bytes_sent",
            "Bytes sent to clients, per port",
            bytes_sent.clone(),
        );
        registry.register(
            "upstream_connect_attempts",
            "Connects to endpoints, per port",
            attempts.clone(),
        );
        registry.register(
            "upstream_connect_failures",
            "Failed connects to endpoints, by endpoint, pod and reason",
            failures.clone(),
        );
        registry.register(
            "upstream_retries",
            "Connect attempts after the first of a connection (each on another endpoint)",
            retries.clone(),
        );
        registry.register(
            "connection_duration_seconds",
            "Connection lifetime from accept to close, per port",
            duration.clone(),
        );
        registry.register(
            "forwarded_connections",
            "Connections by forwarding mode (splice or copy)",
            modes.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration loads by result (success, failure)",
            reloads.clone(),
        );
        let kube_watch_errors = Family::<WatchErrorLabels, Counter>::default();
        registry.register(
            "kube_watch_errors",
            "Failed Kubernetes API list/watch calls by resource and reason (forbidden: refused by RBAC; unauthorized: credentials refused; unavailable: anything else); each is retried with backoff",
            kube_watch_errors.clone(),
        );
        let status_writes = Family::<StatusWriteLabels, Counter>::default();
        registry.register(
            "gateway_status_writes",
            "Gateway API status writes by kind and result (written; conflict: the object changed since it was read, retried on the next change; failed)",
            status_writes.clone(),
        );
        let service_port_applies = Family::<ResultLabels, Counter>::default();
        registry.register(
            "service_port_applies",
            "Server-side applies of the managed Service's ports (--manage-service-ports) by result: applied (the Service changed, or the first apply of the process), unchanged (identical to what this process applied last: the resourceVersion did not move), conflict (a port another field manager holds; held back and reported), failed",
            service_port_applies.clone(),
        );
        let service_ports_held_back = Gauge::default();
        registry.register(
            "service_ports_held_back",
            "Mapped ports not on the managed Service because another field manager holds a conflicting port (--manage-service-ports)",
            service_ports_held_back.clone(),
        );
        let server_names = Family::<ServerNameLabels, Counter>::default();
        registry.register(
            "tls_connections",
            "TLS passthrough connections by the TLSRoute hostname their ClientHello's server name matched (`*`: a route without hostnames); those no route takes are in connections_refused{reason=\"tls_server_name\"}",
            server_names.clone(),
        );
        let route_info = Family::<RouteInfoLabels, Gauge>::default();
        registry.register(
            "route_info",
            "1 for each Gateway API route serving a port (on a TLS passthrough port, each TLSRoute): join on port and protocol to see the per-port series by route",
            route_info.clone(),
        );
        let status_leader = Gauge::default();
        registry.register(
            "gateway_status_leader",
            "1 while this replica holds the status Lease and writes the Gateway API status, else 0",
            status_leader.clone(),
        );
        let kube_events = Family::<ResultLabels, Counter>::default();
        registry.register(
            "kube_events",
            "Kubernetes Events recorded for configuration problems, by result (success, failure)",
            kube_events.clone(),
        );
        registry.register(
            "config_errors",
            "Configuration problems in force",
            global.config_errors.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the buffer was full",
            global.access_log_dropped.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines (stderr) dropped because the log queue was full (stderr read too slowly or not at all) or stderr was closed",
            super::log_writer::lines_dropped(),
        );
        registry.register(
            "accept_errors",
            "Errors accepting connections (EMFILE, ENFILE, ...)",
            global.accept_errors.clone(),
        );
        registry.register(
            "pipes",
            "Pipes that exist for splice (in use and idle)",
            live.pipes_live.clone(),
        );
        registry.register(
            "listeners_bound",
            "Ports accepting connections",
            live.listeners_bound.clone(),
        );
        registry.register(
            "listeners_failed",
            "Ports that could not be bound",
            live.listeners_failed.clone(),
        );
        let udp_created = Family::<PortLabels, Counter>::default();
        let udp_active = Family::<PortLabels, Gauge>::default();
        let udp_received = Family::<PortLabels, Counter>::default();
        let udp_sent = Family::<PortLabels, Counter>::default();
        let udp_ended = Family::<ReasonLabels, Counter>::default();
        let udp_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "udp_flows_created",
            "UDP flows started, per port",
            udp_created.clone(),
        );
        registry.register(
            "udp_flows_active",
            "UDP flows open now, per port",
            udp_active.clone(),
        );
        registry.register(
            "udp_flows_ended",
            "UDP flows ended, by reason (idle_timeout, endpoint_gone, upstream_refused, backend_error, drained)",
            udp_ended.clone(),
        );
        registry.register(
            "udp_datagrams_received",
            "Datagrams received from clients, per port",
            udp_received.clone(),
        );
        registry.register(
            "udp_datagrams_sent",
            "Datagrams sent to clients, per port",
            udp_sent.clone(),
        );
        registry.register(
            "udp_datagrams_dropped",
            "Client datagrams dropped, by reason (max_flows, no_endpoints, upstream_busy, upstream_socket, shutting_down)",
            udp_dropped.clone(),
        );
        let udp_kernel_drops = Family::<KernelDropLabels, Counter>::default();
        registry.register(
            "udp_kernel_drops",
            "Datagrams the kernel dropped at a UDP port's socket because its receive buffer was full (SO_RXQ_OVFL), per port; learnt with the next datagram received after the drops",
            udp_kernel_drops.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels say which build of dermaga runs",
            build_info,
        );
        let health = HealthFamilies::default();
        health.register(&mut registry);
        registry.register_collector(Box::new(live.clone()));
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Self {
            registry,
            global,
            live,
            accepted,
            active,
            bytes_received,
            bytes_sent,
            attempts,
            retries,
            duration,
            idle_timeouts,
            refused,
            failures,
            reloads,
            kube_watch_errors,
            status_writes,
            service_port_applies,
            service_ports_held_back,
            route_info,
            server_names,
            server_names_served: Mutex::new(HashSet::new()),
            status_leader,
            kube_events,
            health,
            cache: RwLock::new(HashMap::new()),
            spans: RwLock::new(HashMap::new()),
            udp_created,
            udp_active,
            udp_received,
            udp_sent,
            udp_ended,
            udp_dropped,
            udp_kernel_drops,
            kernel_drop_ports: Mutex::default(),
            failure_series: Arc::default(),
            port_series: Mutex::default(),
            process,
        }
    }

    /// The counter of kernel receive drops at UDP port `port`.
    pub fn udp_kernel_drops(&self, port: ListenPort) -> Counter {
        self.kernel_drop_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port.get());
        self.udp_kernel_drops
            .get_or_create(&KernelDropLabels { port: port.get() })
            .clone()
    }

    fn note_port_series(&self, labels: &PortLabels) {
        let mut known = self.port_series.lock().unwrap_or_else(|p| p.into_inner());
        if !known.contains(labels) {
            known.insert(labels.clone());
        }
    }

    /// Removes the series of what the table in force no longer has: ports (and a port's
    /// series under a Service it no longer maps to; those with empty Service labels stay while
    /// the port does), and connect failures of endpoints that are in no route of their port.
    pub fn retain(&self, table: &RoutesInForce) {
        let routes: HashMap<(PortSpan, &'static str), (&str, &str)> = table
            .0
            .iter()
            .map(|(key, r)| {
                (
                    (r.span, key.protocol.as_k8s()),
                    (r.service.namespace.as_str(), r.service.name.as_str()),
                )
            })
            .collect();
        let keep = |l: &PortLabels| match routes.get(&(l.port, l.protocol)) {
            None => false,
            Some(&(ns, name)) => {
                (l.namespace == ns && l.service == name)
                    || (l.namespace.is_empty() && l.service.is_empty())
            }
        };
        let gone: Vec<PortLabels> = {
            let mut known = self.port_series.lock().unwrap_or_else(|p| p.into_inner());
            let gone = known.iter().filter(|l| !keep(l)).cloned().collect();
            known.retain(|l| keep(l));
            gone
        };
        for labels in &gone {
            self.forget_port(labels);
        }
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, (service, pm)| {
                table
                    .0
                    .get(key)
                    .is_some_and(|r| &r.service == service && r.span == pm.labels.port)
            });
        let endpoints: HashSet<(PortSpan, &'static str, String)> = table
            .0
            .iter()
            .flat_map(|(key, r)| {
                r.endpoints
                    .iter()
                    .map(move |e| (r.span, key.protocol.as_k8s(), e.to_string()))
            })
            .collect();
        let mut failures = self
            .failure_series
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failures.retain(|l| {
            let keep = keep(&l.port)
                && endpoints.contains(&(l.port.port, l.port.protocol, l.endpoint.clone()));
            if !keep {
                self.failures.remove(l);
            }
            keep
        });
        let udp_ports: HashSet<u16> = table
            .0
            .keys()
            .filter(|key| key.protocol == Protocol::Udp)
            .map(|key| key.port.get())
            .collect();
        self.kernel_drop_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|port| {
                let keep = udp_ports.contains(port);
                if !keep {
                    self.udp_kernel_drops
                        .remove(&KernelDropLabels { port: *port });
                }
                keep
            });
    }

    /// Removes every series with the port labels `labels`.
    fn forget_port(&self, labels: &PortLabels) {
        self.accepted.remove(labels);
        self.active.remove(labels);
        self.bytes_received.remove(labels);
        self.bytes_sent.remove(labels);
        self.attempts.remove(labels);
        self.retries.remove(labels);
        self.duration.remove(labels);
        self.idle_timeouts.remove(labels);
        self.health.all_unhealthy.remove(labels);
        for reason in REFUSE_REASONS {
            self.refused.remove(&RefusedLabels {
                port: labels.clone(),
                reason,
            });
        }
        self.udp_created.remove(labels);
        self.udp_active.remove(labels);
        self.udp_received.remove(labels);
        self.udp_sent.remove(labels);
        for reason in FLOW_END_REASONS {
            self.udp_ended.remove(&ReasonLabels {
                port: labels.clone(),
                reason,
            });
        }
        for reason in DROP_REASONS {
            self.udp_dropped.remove(&ReasonLabels {
                port: labels.clone(),
                reason,
            });
        }
    }

    /// Says which ports belong to range entries (set before a table is published, so that
    /// the first connection of a new range port already counts under the range).
    pub fn set_port_spans(&self, spans: HashMap<RouteKey, PortSpan>) {
        let spans: HashMap<RouteKey, PortSpan> =
            spans.into_iter().filter(|(_, s)| s.is_range()).collect();
        *self.spans.write().unwrap_or_else(|p| p.into_inner()) = spans;
    }

    /// The `port` label of `key`'s series: its range, or the port.
    fn span_of(&self, key: RouteKey) -> PortSpan {
        self.spans
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied()
            .unwrap_or(PortSpan::single(key.port))
    }

    /// The handles of one route (cached per port and Service).
    pub fn port(&self, key: RouteKey, service: &ObjectName) -> Arc<PortMetrics> {
        let span = self.span_of(key);
        if let Some((svc, pm)) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && svc == service
            && pm.labels.port == span
        {
            return pm.clone();
        }
        let labels = PortLabels::of(key, span, service);
        self.note_port_series(&labels);
        let refused = |reason| {
            self.refused
                .get_or_create(&RefusedLabels {
                    port: labels.clone(),
                    reason,
                })
                .clone()
        };
        let pm = Arc::new(PortMetrics {
            accepted: self.accepted.get_or_create(&labels).clone(),
            active: self.active.get_or_create(&labels).clone(),
            bytes_received: self.bytes_received.get_or_create(&labels).clone(),
            bytes_sent: self.bytes_sent.get_or_create(&labels).clone(),
            connect_attempts: self.attempts.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            idle_timeouts: self.idle_timeouts.get_or_create(&labels).clone(),
            refused: REFUSE_REASONS.map(refused),
            failures: self.failures.clone(),
            failure_series: self.failure_series.clone(),
            all_endpoints_unhealthy: self.health.all_unhealthy.get_or_create(&labels).clone(),
            labels,
        });
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (service.clone(), pm.clone()));
        pm
    }

    /// The UDP handles of one route (looked up once per flow, not per datagram).
    pub fn udp(&self, key: RouteKey, service: &ObjectName) -> UdpMetrics {
        let labels = PortLabels::of(key, self.span_of(key), service);
        self.note_port_series(&labels);
        UdpMetrics {
            flows_created: self.udp_created.get_or_create(&labels).clone(),
            flows_active: self.udp_active.get_or_create(&labels).clone(),
            datagrams_received: self.udp_received.get_or_create(&labels).clone(),
            datagrams_sent: self.udp_sent.get_or_create(&labels).clone(),
            ended: self.udp_ended.clone(),
            dropped: self.udp_dropped.clone(),
            labels,
        }
    }

    /// Records a configuration load.
    pub fn config_loaded(&self, success: bool, errors_in_force: usize) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        if success {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(1);
            self.live
                .last_success_unix_ms
                .store(now.max(1), Ordering::Relaxed);
            self.global.config_errors.set(errors_in_force as i64);
        }
    }

    /// Records a failed Kubernetes API list or watch call.
    pub fn kube_watch_error(&self, resource: &'static str, reason: &'static str) {
        self.kube_watch_errors
            .get_or_create(&WatchErrorLabels { resource, reason })
            .inc();
    }

    /// Counts a TLS passthrough connection whose server name matched `hostname` on `port`.
    pub fn tls_connection(&self, port: u16, hostname: &str) {
        self.server_names
            .get_or_create(&ServerNameLabels {
                port,
                hostname: hostname.to_owned(),
            })
            .inc();
    }

    /// Removes the `dermaga_tls_connections_total` series of hostnames served by the last
    /// table but not by this one (`served`). Connections only count hostnames of a table, so
    /// the tables' sets are the series there are; the connection path takes no lock for it.
    pub fn retain_server_names(&self, served: &HashSet<(u16, String)>) {
        let mut last = self
            .server_names_served
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (port, hostname) in last.difference(served) {
            self.server_names.remove(&ServerNameLabels {
                port: *port,
                hostname: hostname.clone(),
            });
        }
        *last = served.clone();
    }

    /// Sets `dermaga_route_info` to the Gateway API routes `(port, protocol, kind, route)` in
    /// force, and nothing else.
    pub fn set_route_info(&self, routes: &[(RouteKey, &'static str, ObjectName)]) {
        self.route_info.clear();
        for (key, kind, name) in routes {
            self.route_info
                .get_or_create(&RouteInfoLabels {
                    port: key.port.get(),
                    protocol: key.protocol.as_k8s(),
                    kind,
                    route_namespace: name.namespace.clone(),
                    route_name: name.name.clone(),
                })
                .set(1);
        }
    }

    /// Records a Gateway API status write (`written`, `conflict`, `failed`).
    pub fn gateway_status_write(&self, kind: &'static str, result: &'static str) {
        self.status_writes
            .get_or_create(&StatusWriteLabels { kind, result })
            .inc();
    }

    /// Records a server-side apply of the managed Service's ports.
    pub fn service_port_apply(&self, result: &'static str) {
        self.service_port_applies
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// How many mapped ports are held back from the managed Service by conflicts.
    pub fn service_ports_held_back(&self, ports: usize) {
        self.service_ports_held_back.set(ports as i64);
    }

    /// Whether this replica writes the Gateway API status now.
    pub fn gateway_status_leader(&self, leader: bool) {
        self.status_leader.set(i64::from(leader));
    }

    /// Records an attempt to record a Kubernetes Event.
    pub fn kube_event(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.kube_events
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts an ejection of `endpoint`.
    pub fn endpoint_ejection(&self, endpoint: impl Into<HealthKey>, pod: &str) {
        let endpoint = endpoint.into();
        self.health
            .ejections
            .get_or_create(&EjectionLabels {
                endpoint: endpoint.addr.to_string(),
                protocol: endpoint.protocol.as_k8s(),
                pod: pod.to_owned(),
            })
            .inc();
    }

    /// Removes the health series of an endpoint that left every route.
    pub fn forget_endpoint(&self, endpoint: impl Into<HealthKey>, pod: &str) {
        let endpoint = endpoint.into();
        let name = endpoint.addr.to_string();
        self.health.ejections.remove(&EjectionLabels {
            endpoint: name.clone(),
            protocol: endpoint.protocol.as_k8s(),
            pod: pod.to_owned(),
        });
        self.health
            .ejected
            .remove(&EndpointProtocolLabels::of(endpoint));
        if endpoint.protocol == crate::names::Protocol::Tcp {
            for result in ["success", "failure"] {
                self.health.checks.remove(&CheckLabels {
                    endpoint: name.clone(),
                    result,
                });
            }
            set_flag(&self.health.check_unhealthy, endpoint.addr, false);
        }
    }

    /// Sets whether `endpoint` is ejected (the series is removed when it is not).
    pub fn endpoint_ejected(&self, endpoint: impl Into<HealthKey>, ejected: bool) {
        let labels = EndpointProtocolLabels::of(endpoint.into());
        if ejected {
            self.health.ejected.get_or_create(&labels).set(1);
        } else {
            self.health.ejected.remove(&labels);
        }
    }

    /// Sets whether active checks hold `endpoint` unhealthy (removed when not).
    pub fn endpoint_check_unhealthy(&self, endpoint: std::net::SocketAddr, unhealthy: bool) {
        set_flag(&self.health.check_unhealthy, endpoint, unhealthy);
    }

    /// Counts one active probe.
    pub fn health_check(&self, endpoint: std::net::SocketAddr, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.health
            .checks
            .get_or_create(&CheckLabels {
                endpoint: endpoint.to_string(),
                result,
            })
            .inc();
    }

    /// Records how many pipes exist and how many ports are bound / failed.
    pub fn set_gauges(&self, pipes: usize, bound: usize, failed: usize) {
        self.live.pipes_live.set(pipes as i64);
        self.live.listeners_bound.set(bound as i64);
        self.live.listeners_failed.set(failed as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        encode_registry(&mut out, &self.registry).expect("writing to a String");
        encode_registry(&mut out, &self.process).expect("writing to a String");
        encode_eof(&mut out).expect("writing to a String");
        out
    }
}

fn set_flag(family: &Family<EndpointLabels, Gauge>, endpoint: std::net::SocketAddr, on: bool) {
    let labels = EndpointLabels {
        endpoint: endpoint.to_string(),
    };
    if on {
        family.get_or_create(&labels).set(1);
    } else {
        family.remove(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ListenPort;

    #[test]
    fn server_name_series_go_with_their_hostnames() {
        let m = Metrics::new();
        let both: HashSet<(u16, String)> = [
            (443, "shop.example.com".to_owned()),
            (443, "*.example.org".to_owned()),
        ]
        .into();
        m.retain_server_names(&both);
        m.tls_connection(443, "shop.example.com");
        m.tls_connection(443, "shop.example.com");
        m.tls_connection(443, "*.example.org");
        let line = "dermaga_tls_connections_total{port=\"443\",hostname=\"shop.example.com\"} 2";
        assert!(m.encode().contains(line), "{}", m.encode());
        m.retain_server_names(&[(443, "shop.example.com".to_owned())].into());
        let text = m.encode();
        assert!(text.contains(line), "{text}");
        assert!(!text.contains("*.example.org"), "{text}");
    }

    #[test]
    fn families_register_and_encode_without_deadlock() {
        let m = Metrics::new();
        let key = RouteKey::tcp(ListenPort::new(10000).unwrap());
        let svc = ObjectName::new("default", "web");
        let pm = m.port(key, &svc);
        pm.accepted.inc();
        pm.refused(RefuseReason::no_endpoints);
        pm.connect_failed(
            "10.0.0.1:80".parse().unwrap(),
            Some("pod default/web-0"),
            ConnectFailure::refused,
        );
        assert!(Arc::ptr_eq(&pm, &m.port(key, &svc)), "cached");
        m.config_loaded(true, 2);
        m.global.spliced.inc();
        let text = m.encode();
        for line in [
            "dermaga_connections_accepted_total{port=\"10000\",protocol=\"TCP\",namespace=\"default\",service=\"web\"} 1",
            "dermaga_connections_refused_total{port=\"10000\",protocol=\"TCP\",namespace=\"default\",service=\"web\",reason=\"no_endpoints\"} 1",
            "dermaga_upstream_connect_failures_total{port=\"10000\",protocol=\"TCP\",namespace=\"default\",service=\"web\",endpoint=\"10.0.0.1:80\",pod=\"pod default/web-0\",reason=\"refused\"} 1",
            "dermaga_forwarded_connections_total{mode=\"splice\"} 1",
            "dermaga_config_reloads_total{result=\"success\"} 1",
            "dermaga_config_errors 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(
            text.contains("dermaga_config_last_success_age_seconds"),
            "{text}"
        );
    }
}
