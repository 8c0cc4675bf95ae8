//! The tokio shell of one UDP port: receives client datagrams on the port's socket, keeps the
//! [`FlowTable`], gives each flow a connected upstream socket and a task that relays replies
//! back to the client from the port's socket, and ends flows (idle, endpoint gone, ICMP
//! port-unreachable, port removed) with metrics and one access-log record each.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::flows::{Flow, FlowTable, Lookup};
use crate::control::names::{ObjectName, RouteKey};
use crate::data::tcp::{ConnContext, canonical};
use crate::ops::access_log::{AccessRecord, CloseReason};
use crate::ops::metrics::{PortMetrics, UdpMetrics};

/// UDP settings.
#[derive(Debug, Clone)]
pub struct UdpSettings {
    /// A flow with no datagram either way for this long ends.
    pub idle_timeout: Duration,
    /// Flows per port at most; datagrams from new clients beyond are dropped.
    pub max_flows: usize,
}

impl Default for UdpSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            max_flows: 65536,
        }
    }
}

/// Largest UDP payload over IPv4 (65,535 − 8 − 20).
pub const MAX_DATAGRAM: usize = 65_507;

/// How long an endpoint that answered ICMP port-unreachable is skipped for new flows.
const SKIP_REFUSING: Duration = Duration::from_secs(5);

/// One flow's resources; dropping it stops the reply task.
#[derive(Debug)]
pub struct FlowHandle {
    upstream: Arc<UdpSocket>,
    pod: Option<Arc<str>>,
    started: Instant,
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    reply_task: AbortHandle,
    route: Arc<PortMetrics>,
    udp: Arc<UdpMetrics>,
}

impl Drop for FlowHandle {
    fn drop(&mut self) {
        self.reply_task.abort();
        self.udp.flows_active.dec();
    }
}

struct Shared {
    ctx: Arc<ConnContext>,
    key: RouteKey,
    socket: Arc<UdpSocket>,
    table: Mutex<FlowTable<FlowHandle>>,
    /// When the "flow limit reached" warning was last logged (rate limit: one per 10 s).
    last_full_warning: Mutex<Option<Instant>>,
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, FlowTable<FlowHandle>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end(
        &self,
        client: SocketAddr,
        flow: Flow<FlowHandle>,
        close: CloseReason,
        error: Option<String>,
    ) {
        let h = &flow.handle;
        let (received, sent) = (
            h.received.load(Ordering::Relaxed),
            h.sent.load(Ordering::Relaxed),
        );
        h.udp.flow_ended(close.as_str());
        h.route.bytes_received.inc_by(received);
        h.route.bytes_sent.inc_by(sent);
        tracing::debug!(port = %self.key, client = %client, endpoint = %flow.endpoint, close = close.as_str(), "UDP flow ended");
        if self.ctx.access_log.enabled() {
            self.ctx.access_log.record(AccessRecord {
                ended: SystemTime::now(),
                route: h.route.clone(),
                client,
                peer: client,
                endpoint: Some(flow.endpoint),
                pod: h.pod.clone(),
                attempts: 1,
                bytes_received: received,
                bytes_sent: sent,
                duration: h.started.elapsed(),
                close,
                error,
            });
        }
    }
}

/// Serves one UDP port until `stop`; then ends every flow.
pub async fn serve_udp(
    socket: UdpSocket,
    key: RouteKey,
    ctx: Arc<ConnContext>,
    settings: UdpSettings,
    stop: CancellationToken,
) {
    let shared = Arc::new(Shared {
        ctx,
        key,
        socket: Arc::new(socket),
        table: Mutex::new(FlowTable::new(
            settings.idle_timeout,
            settings.max_flows,
            SKIP_REFUSING,
        )),
        last_full_warning: Mutex::new(None),
    });
    let mut sweep = tokio::time::interval(
        (settings.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = sweep.tick() => {
                let expired = shared.table().expire(Instant::now());
                for (client, flow) in expired {
                    shared.end(client, flow, CloseReason::IdleTimeout, None);
                }
                continue;
            }
            r = shared.socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, client)) => on_datagram(&shared, &buf[..n], canonical(client)).await,
            Err(err) => tracing::debug!(port = %key, error = %err, "UDP receive failed"),
        }
    }
    let flows = shared.table().drain();
    for (client, flow) in flows {
        shared.end(client, flow, CloseReason::Drained, None);
    }
}

async fn on_datagram(shared: &Arc<Shared>, payload: &[u8], client: SocketAddr) {
    let now = Instant::now();
    let route = shared.ctx.snapshot.load().get(&shared.key).cloned();
    let active = |e: SocketAddr| {
        route
            .as_ref()
            .is_some_and(|r| r.active_endpoints().any(|a| a.addr == e))
    };
    let existing = {
        let mut table = shared.table();
        match table.lookup(client, now, active) {
            Lookup::Existing(h) => Some((h.upstream.clone(), h.received.clone(), h.udp.clone())),
            Lookup::Create => None,
            Lookup::Moved(old) => {
                drop(table);
                shared.end(client, old, CloseReason::EndpointGone, None);
                None
            }
            Lookup::Full => {
                drop(table);
                let service = route
                    .as_ref()
                    .map_or_else(|| ObjectName::new("", ""), |r| r.spec.service.clone());
                shared
                    .ctx
                    .metrics
                    .udp(shared.key, &service)
                    .dropped("max_flows");
                let mut last = shared
                    .last_full_warning
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                    *last = Some(now);
                    tracing::warn!(port = %shared.key, client = %client, "UDP flow limit (--udp-max-flows) reached: datagrams from new clients are dropped until flows expire (counted in dermaga_udp_datagrams_dropped_total{{reason=\"max_flows\"}}; logged at most every 10s)");
                }
                return;
            }
        }
    };
    if let Some((upstream, received, udp)) = existing {
        udp.datagrams_received.inc();
        send_upstream(&upstream, payload, &received, &udp);
        return;
    }

    // A new flow.
    let Some(route) = route.clone().filter(|r| r.active_count() > 0) else {
        let service = route.map_or_else(|| ObjectName::new("", ""), |r| r.spec.service.clone());
        shared
            .ctx
            .metrics
            .udp(shared.key, &service)
            .dropped("no_endpoints");
        return;
    };
    let endpoint = {
        let mut table = shared.table();
        table.choose(route.pick_order().map(|e| e.addr), now)
    };
    let Some(endpoint) = endpoint else { return };
    let pod = route
        .endpoints
        .iter()
        .find(|e| e.addr == endpoint)
        .and_then(|e| e.target.clone());
    let upstream = match connect_upstream(endpoint).await {
        Ok(s) => Arc::new(s),
        Err(err) => {
            tracing::warn!(port = %shared.key, endpoint = %endpoint, error = %err, "cannot open an upstream UDP socket; datagram dropped");
            shared.ctx.metrics.udp(shared.key, &route.spec.service).dropped("upstream_socket");
            return;
        }
    };
    let route_metrics = shared.ctx.metrics.port(shared.key, &route.spec.service);
    let udp = Arc::new(shared.ctx.metrics.udp(shared.key, &route.spec.service));
    udp.flows_created.inc();
    udp.flows_active.inc();
    udp.datagrams_received.inc();
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let reply_task = tokio::spawn(relay_replies(
        shared.clone(),
        upstream.clone(),
        client,
        endpoint,
        sent.clone(),
        udp.clone(),
    ));
    let handle = FlowHandle {
        upstream: upstream.clone(),
        pod,
        started: now,
        received: received.clone(),
        sent,
        reply_task: reply_task.abort_handle(),
        route: route_metrics,
        udp: udp.clone(),
    };
    shared.table().insert(client, endpoint, handle, now);
    // A new socket's writability is not known to the runtime yet, so `try_send` would report
    // WouldBlock and lose every flow's first datagram: wait for it once (it is immediate).
    match upstream.send(payload).await {
        Ok(n) => {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(err) => tracing::debug!(error = %err, "UDP send to endpoint failed"),
    }
}

fn send_upstream(upstream: &UdpSocket, payload: &[u8], received: &AtomicU64, udp: &UdpMetrics) {
    // A full socket buffer drops the datagram, as the network would; the receive loop never
    // waits on one slow endpoint. A refusal shows up on the reply task's receive.
    match upstream.try_send(payload) {
        Ok(n) => {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => udp.dropped("upstream_busy"),
        Err(err) => tracing::debug!(error = %err, "UDP send to endpoint failed"),
    }
}

async fn connect_upstream(endpoint: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match endpoint.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(endpoint).await?;
    Ok(socket)
}

async fn relay_replies(
    shared: Arc<Shared>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    endpoint: SocketAddr,
    sent: Arc<AtomicU64>,
    udp: Arc<UdpMetrics>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(n) => {
                match shared.socket.send_to(&buf[..n], client).await {
                    Ok(m) => {
                        sent.fetch_add(m as u64, Ordering::Relaxed);
                        udp.datagrams_sent.inc();
                    }
                    Err(err) => {
                        tracing::debug!(client = %client, error = %err, "UDP send to client failed")
                    }
                }
                shared.table().touch(client, Instant::now());
            }
            Err(err) => {
                let refused = err.raw_os_error() == Some(libc::ECONNREFUSED);
                let flow = {
                    let mut table = shared.table();
                    if refused {
                        table.refused(endpoint, Instant::now());
                    }
                    table.remove(client)
                };
                if refused {
                    tracing::warn!(port = %shared.key, endpoint = %endpoint, client = %client, "UDP endpoint answered port unreachable; its flow ends and new flows skip it for a while");
                }
                if let Some(flow) = flow {
                    let close = if refused {
                        CloseReason::UpstreamRefused
                    } else {
                        CloseReason::BackendError
                    };
                    // Dropping the flow aborts this task: record first, then return at once.
                    shared.end(client, flow, close, Some(err.to_string()));
                }
                return;
            }
        }
    }
}
