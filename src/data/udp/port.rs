//! The tokio shell of one UDP port: receives client datagrams on the port's socket, keeps the
//! [`FlowTable`], gives each flow a connected upstream socket and a task that relays replies
//! back to the client from the port's socket, and ends flows (idle, endpoint gone, ICMP
//! port-unreachable, port removed) with metrics and one access-log record each.
//!
//! When the port stops accepting (`stop`) it ends every flow at once if `close` is cancelled
//! too (a removed port). Otherwise (shutdown) it keeps its socket open and lingers: datagrams of
//! open flows still go upstream and replies still come back, new clients' datagrams are dropped
//! (`shutting_down`), and the task ends when the last flow has gone idle or at `close`.

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

/// Receive buffers hold any UDP payload (IPv6 allows up to 65,527 bytes).
const RECEIVE_BUFFER: usize = 65_536;

static NEXT_FLOW_ID: AtomicU64 = AtomicU64::new(1);

/// How long an endpoint that answered ICMP port-unreachable is skipped for new flows.
const SKIP_REFUSING: Duration = Duration::from_secs(5);

/// One flow's resources; dropping it stops the reply task.
#[derive(Debug)]
pub struct FlowHandle {
    id: u64,
    endpoint: SocketAddr,
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
    /// When a datagram-path warning was last logged (rate limit: one per 10 s per port).
    last_warning: Mutex<Option<Instant>>,
}

impl Shared {
    /// True at most once per 10 s: whether a warning on the datagram path may be logged now.
    fn may_warn(&self, now: Instant) -> bool {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        let ok = last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
        if ok {
            *last = Some(now);
        }
        ok
    }

    /// A flow's socket failed: ICMP port-unreachable (reported on receive or on send) skips the
    /// endpoint for new flows for a while; either way the flow ends, if it is still the one
    /// with `flow_id` (the client may already have a newer flow).
    fn flow_failed(
        &self,
        client: SocketAddr,
        endpoint: SocketAddr,
        flow_id: u64,
        err: std::io::Error,
    ) {
        let refused = err.raw_os_error() == Some(libc::ECONNREFUSED);
        let flow = {
            let mut table = self.table();
            if refused {
                table.refused(endpoint, Instant::now());
            }
            if table.get(client).is_some_and(|f| f.handle.id == flow_id) {
                table.remove(client)
            } else {
                None
            }
        };
        let Some(flow) = flow else { return };
        if refused && self.may_warn(Instant::now()) {
            tracing::warn!(port = %self.key, endpoint = %endpoint, client = %client, "UDP endpoint answered port unreachable: its flows end and new flows skip it for a while (logged at most every 10s)");
        }
        let close = if refused {
            CloseReason::UpstreamRefused
        } else {
            CloseReason::BackendError
        };
        self.end(client, flow, close, Some(err.to_string()));
    }

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

/// Serves one UDP port until `stop`; then lingers while flows are open, until `close`, and
/// ends every flow left.
pub async fn serve_udp(
    socket: UdpSocket,
    key: RouteKey,
    ctx: Arc<ConnContext>,
    settings: UdpSettings,
    stop: CancellationToken,
    close: CancellationToken,
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
        last_warning: Mutex::new(None),
    });
    let mut sweep = tokio::time::interval(
        (settings.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    let mut lingering = false;
    loop {
        if !lingering && stop.is_cancelled() {
            lingering = true;
            let open = shared.table().len();
            if open > 0 && !close.is_cancelled() {
                tracing::info!(port = %key, open, "no new UDP flows; open flows go on until idle");
            }
        }
        if lingering && (close.is_cancelled() || shared.table().is_empty()) {
            break;
        }
        let received = tokio::select! {
            biased;
            _ = close.cancelled() => break,
            _ = stop.cancelled(), if !lingering => continue,
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
            Ok((n, client)) => {
                on_datagram(&shared, &buf[..n], canonical(client), lingering).await;
            }
            Err(err) => tracing::debug!(port = %key, error = %err, "UDP receive failed"),
        }
    }
    let flows = shared.table().drain();
    for (client, flow) in flows {
        shared.end(client, flow, CloseReason::Drained, None);
    }
}

/// Forwards a client datagram, on its flow or a new one (none when `lingering`).
async fn on_datagram(shared: &Arc<Shared>, payload: &[u8], client: SocketAddr, lingering: bool) {
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
            Lookup::Existing(h) => Some((
                h.upstream.clone(),
                h.received.clone(),
                h.udp.clone(),
                h.id,
                h.endpoint,
            )),
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
                if shared.may_warn(now) {
                    tracing::warn!(port = %shared.key, client = %client, "UDP flow limit (--udp-max-flows) reached: datagrams from new clients are dropped until flows expire (counted in dermaga_udp_datagrams_dropped_total{{reason=\"max_flows\"}}; logged at most every 10s)");
                }
                return;
            }
        }
    };
    if let Some((upstream, received, udp, id, endpoint)) = existing {
        udp.datagrams_received.inc();
        if let Err(err) = send_upstream(&upstream, payload, &received, &udp) {
            shared.flow_failed(client, endpoint, id, err);
        }
        return;
    }
    if lingering {
        let service = route.map_or_else(|| ObjectName::new("", ""), |r| r.spec.service.clone());
        let udp = shared.ctx.metrics.udp(shared.key, &service);
        udp.dropped("shutting_down");
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
            if shared.may_warn(now) {
                tracing::warn!(port = %shared.key, endpoint = %endpoint, error = %err, "cannot open an upstream UDP socket; datagrams dropped (counted in dermaga_udp_datagrams_dropped_total{{reason=\"upstream_socket\"}}; logged at most every 10s)");
            }
            shared
                .ctx
                .metrics
                .udp(shared.key, &route.spec.service)
                .dropped("upstream_socket");
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
    let id = NEXT_FLOW_ID.fetch_add(1, Ordering::Relaxed);
    let reply_task = tokio::spawn(relay_replies(
        shared.clone(),
        upstream.clone(),
        client,
        endpoint,
        sent.clone(),
        udp.clone(),
        id,
    ));
    let handle = FlowHandle {
        id,
        endpoint,
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
    if let Err(err) = send_upstream(&upstream, payload, &received, &udp) {
        shared.flow_failed(client, endpoint, id, err);
    }
}

/// Sends a client datagram on the flow's socket. `Err` only for an error that ends the flow
/// (a pending ICMP port-unreachable reported on send).
fn send_upstream(
    upstream: &UdpSocket,
    payload: &[u8],
    received: &AtomicU64,
    udp: &UdpMetrics,
) -> std::io::Result<()> {
    // A plain send on the non-blocking socket (tokio's `try_send` would report WouldBlock for
    // a socket whose writability it has not polled yet, e.g. a new flow's). A full socket
    // buffer drops the datagram, as the network would; the receive loop never waits on one
    // slow endpoint. A refusal shows up on the reply task's receive.
    match socket2::SockRef::from(upstream).send(payload) {
        Ok(n) => {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => udp.dropped("upstream_busy"),
        Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED) => return Err(err),
        Err(err) => tracing::debug!(error = %err, "UDP send to endpoint failed"),
    }
    Ok(())
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

thread_local! {
    /// One receive buffer per runtime thread for every flow's replies: a flow holds no buffer
    /// of its own (a datagram is received and sent on without an await in between).
    static REPLY_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; RECEIVE_BUFFER]);
}

async fn relay_replies(
    shared: Arc<Shared>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    endpoint: SocketAddr,
    sent: Arc<AtomicU64>,
    udp: Arc<UdpMetrics>,
    flow_id: u64,
) {
    loop {
        // `async_io` waits for readability (which an ICMP error also signals, as for `recv`)
        // and clears it only when the closure reports WouldBlock.
        let relayed = upstream
            .async_io(tokio::io::Interest::READABLE, || {
                REPLY_BUFFER.with_borrow_mut(|buf| {
                    // Plain syscalls on the non-blocking sockets: tokio's own `try_*` would
                    // consult readiness bits that an ICMP error (ERROR only) or a socket whose
                    // writability was never polled do not carry, and report WouldBlock.
                    let n = std::io::Read::read(&mut &*socket2::SockRef::from(&*upstream), buf)?;
                    // Sent at once from the same buffer; a full socket buffer drops the reply,
                    // as the network would.
                    match socket2::SockRef::from(&*shared.socket).send_to(&buf[..n], &client.into()) {
                        Ok(m) => {
                            sent.fetch_add(m as u64, Ordering::Relaxed);
                            udp.datagrams_sent.inc();
                        }
                        Err(err) => tracing::debug!(client = %client, error = %err, "UDP send to client failed"),
                    }
                    Ok(())
                })
            })
            .await;
        match relayed {
            Ok(()) => shared.table().touch(client, Instant::now()),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                // Ends this task's own flow (dropping it aborts this task: return at once).
                shared.flow_failed(client, endpoint, flow_id, err);
                return;
            }
        }
    }
}
