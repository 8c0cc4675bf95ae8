//! The tokio shell of one UDP port: receives client datagrams on the port's socket, keeps the
//! [`FlowTable`], gives each flow a connected upstream socket and a task that relays replies
//! back to the client from the port's socket, and ends flows (idle, endpoint gone, ICMP
//! port-unreachable, port removed) with metrics and one access-log record each.
//!
//! A dead endpoint (nothing listens on its port) answers a flow's datagram with ICMP
//! port-unreachable, which Linux reports on the flow's connected socket as `ECONNREFUSED`.
//! The reply task waits for errors as well as replies, so it learns of it as soon as the ICMP
//! arrives, not at the flow's next datagram (a one-query client such as a DNS resolver sends
//! none). The refusal counts as a failed connect of that endpoint in the health registry shared
//! with TCP (ejected after `--eject-after-failures`), and the flow moves: its unanswered
//! datagram is sent again on a new flow to another endpoint, up to `--connect-attempts`
//! endpoints in all. New flows skip ejected endpoints as TCP connections do (the panic rule
//! included); a reply counts as a successful connect.
//!
//! When the port stops accepting (`stop`) it ends every flow at once if `close` is cancelled
//! too (a removed port). Otherwise (shutdown) it keeps its socket open and lingers: datagrams of
//! open flows still go upstream and replies still come back, new clients' datagrams are dropped
//! (`shutting_down`), and the task ends when the last flow has gone idle or at `close`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::flows::{Flow, FlowTable, Lookup};
use crate::control::configmap::Balance;
use crate::control::table::{Endpoint, Route};
use crate::data::context::{ConnContext, UdpSettings};
use crate::data::endpoint_load::LoadHold;
use crate::data::net::canonical;
use crate::names::HealthKey;
use crate::names::{ObjectName, RouteKey};
use crate::sys;
use crate::telemetry::access_log::AccessRecord;
use crate::telemetry::log_throttle::{WarnKey, WarnReason};
use crate::telemetry::metrics::{PortMetrics, UdpMetrics};
use crate::telemetry::outcome::{CloseReason, ConnectFailure, RefuseReason};

/// Receive buffers hold any UDP payload (IPv6 allows up to 65,527 bytes).
const RECEIVE_BUFFER: usize = 65_536;

static NEXT_FLOW_ID: AtomicU64 = AtomicU64::new(1);

/// One flow's resources; dropping it stops the reply task.
#[derive(Debug)]
pub struct FlowHandle {
    id: u64,
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
    pod: Option<Arc<str>>,
    /// Endpoints that refused this flow's datagram before it moved here.
    tried: Vec<SocketAddr>,
    started: Instant,
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    reply_task: AbortHandle,
    route: Arc<PortMetrics>,
    /// The Gateway API route it came from, for the access log.
    gateway_route: Option<Arc<str>>,
    udp: Arc<UdpMetrics>,
    /// The flow counted on its endpoint (ports balanced by load only).
    _load: Option<LoadHold>,
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
    /// Cancelled when the port stops taking new flows.
    stop: CancellationToken,
}

impl Shared {
    /// A datagram-path warning, through the process's one warning throttle (per port,
    /// endpoint and reason): `Some(suppressed)` when it is to be logged now.
    fn warn_due(&self, endpoint: Option<SocketAddr>, reason: WarnReason) -> Option<Option<u64>> {
        self.ctx.warnings.note(WarnKey {
            port: self.key,
            endpoint,
            reason,
        })
    }

    /// A flow's socket failed, if it is still the client's flow with `flow_id` (the client may
    /// already have a newer one): the flow ends. ICMP port-unreachable (`ECONNREFUSED`, on
    /// receive or on send) is a failed connect of the endpoint in the health registry, and the
    /// flow's unanswered datagram, if it kept one, goes on a new flow to another endpoint.
    fn flow_failed(
        self: &Arc<Self>,
        client: SocketAddr,
        endpoint: SocketAddr,
        flow_id: u64,
        err: std::io::Error,
    ) {
        let flow = {
            let mut table = self.table();
            if table.get(client).is_some_and(|f| f.handle.id == flow_id) {
                table.remove(client)
            } else {
                None
            }
        };
        let Some(mut flow) = flow else { return };
        if err.raw_os_error() != Some(libc::ECONNREFUSED) {
            self.end(
                client,
                flow,
                CloseReason::BackendError,
                Some(err.to_string()),
            );
            return;
        }
        let pod = flow.handle.pod.clone();
        flow.handle
            .route
            .connect_failed(endpoint, pod.as_deref(), ConnectFailure::refused);
        self.ctx
            .health
            .connect_failed(HealthKey::udp(endpoint), pod.as_ref(), Instant::now());
        let unanswered = std::mem::take(&mut flow.unanswered).take();
        let mut tried = std::mem::take(&mut flow.handle.tried);
        tried.push(endpoint);
        // The port's `connect-attempts`, or the flag's (the table in force now: the port's
        // entry may have changed since the flow began).
        let attempts = self
            .ctx
            .snapshot
            .load()
            .get(&self.key)
            .and_then(|r| r.spec.options.connect_attempts)
            .unwrap_or(self.ctx.settings.connect_attempts)
            .max(1);
        let retry = unanswered.filter(|_| tried.len() < attempts && !self.stop.is_cancelled());
        if let Some(suppressed) = self.warn_due(Some(endpoint), WarnReason::UdpPortUnreachable) {
            tracing::warn!(port = %self.key, endpoint = %endpoint, pod = pod.as_deref().unwrap_or("-"), client = %client, moved = retry.is_some(), suppressed, "UDP endpoint answered port unreachable: the flow ends, its unanswered datagram goes to another endpoint (moved=true), and the endpoint counts a failed connect");
        }
        self.end(
            client,
            flow,
            CloseReason::UpstreamRefused,
            Some(err.to_string()),
        );
        let Some(datagram) = retry else { return };
        let route = self.ctx.snapshot.load().get(&self.key).cloned();
        if let Some(route) = route.filter(|r| r.active_count() > 0) {
            start_flow(self, &route, client, &datagram, tried);
        }
    }

    /// The endpoint for a new flow of `client`, by the port's balance choice: not one of
    /// `tried`, and not ejected unless every candidate is (the panic rule, as for TCP).
    fn choose<'r>(
        &self,
        route: &'r Route,
        client: SocketAddr,
        tried: &[SocketAddr],
    ) -> Option<&'r Endpoint> {
        let health = &self.ctx.health;
        let fresh = |e: &Endpoint| !tried.contains(&e.addr);
        let by_load = balanced_by_load(route);
        let load = |e: &Endpoint| {
            if by_load {
                self.ctx.loads.load(HealthKey::udp(e.addr))
            } else {
                0
            }
        };
        let client = Some(client.ip());
        if health.all_healthy() {
            return route.pick_order_for(client, fresh, load).find(|e| fresh(e));
        }
        let now = Instant::now();
        let usable = |e: &Endpoint| fresh(e) && health.usable(HealthKey::udp(e.addr), now);
        if route.active_endpoints().any(usable) {
            return route
                .pick_order_for(client, usable, load)
                .find(|e| usable(e));
        }
        if tried.is_empty() {
            self.ctx
                .metrics
                .port(self.key, &route.spec.service)
                .all_endpoints_unhealthy
                .inc();
        }
        route.pick_order_for(client, fresh, load).find(|e| fresh(e))
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
                port: self.key.port.get(),
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
                gateway_route: h.gateway_route.clone(),
                server_name: None,
            });
        }
    }
}

/// Serves one UDP port until `stop`; then lingers while flows are open, until `close`, and
/// ends every flow left. With several `sockets` (bound with `SO_REUSEPORT`, the kernel hashing
/// each client to one of them), each is read by a task of its own, so that every worker thread
/// can receive; the flows are one table, and replies leave from the first socket (the same
/// address and port).
pub async fn serve_udp(
    sockets: Vec<UdpSocket>,
    key: RouteKey,
    ctx: Arc<ConnContext>,
    settings: UdpSettings,
    stop: CancellationToken,
    close: CancellationToken,
) {
    let mut sockets = sockets.into_iter().map(Arc::new);
    let Some(first) = sockets.next() else {
        return;
    };
    let shared = Arc::new(Shared {
        ctx,
        key,
        socket: first.clone(),
        table: Mutex::new(FlowTable::new(settings.idle_timeout, settings.max_flows)),
        stop: stop.clone(),
    });
    let sweep_every =
        (settings.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    // Dropped (aborting them) if this task is cut; otherwise waited for below.
    let mut others = tokio::task::JoinSet::new();
    for socket in sockets {
        others.spawn(receive(
            shared.clone(),
            socket,
            sweep_every,
            false,
            close.clone(),
        ));
    }
    receive(shared.clone(), first, sweep_every, true, close).await;
    while others.join_next().await.is_some() {}
    let flows = shared.table().drain();
    for (client, flow) in flows {
        shared.end(client, flow, CloseReason::Drained, None);
    }
}

/// Receives on one of the port's sockets until `close`, or until the port has stopped and
/// no flow is left. The `sweeper` also expires idle flows (the others only look at the table
/// as often, to notice when it is empty).
async fn receive(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    sweep_every: Duration,
    sweeper: bool,
    close: CancellationToken,
) {
    let key = shared.key;
    let stop = shared.stop.clone();
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lingering = false;
    // The kernel's count of datagrams dropped at this socket (receive buffer full), attached
    // to the next datagram received after drops; exported as its increase.
    let kernel_drops = shared.ctx.metrics.udp_kernel_drops(key.port);
    let mut drops_seen = 0u32;
    if let Err(err) = sys::count_receive_drops(socket.as_fd()) {
        tracing::debug!(port = %key, error = %err, "SO_RXQ_OVFL refused; kernel drops not counted");
    }
    loop {
        if !lingering && stop.is_cancelled() {
            lingering = true;
            let open = shared.table().len();
            if sweeper && open > 0 && !close.is_cancelled() {
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
                if sweeper {
                    let expired = shared.table().expire(Instant::now());
                    for (client, flow) in expired {
                        shared.end(client, flow, CloseReason::IdleTimeout, None);
                    }
                }
                continue;
            }
            // Up to `sys::BATCH` datagrams per system call, each forwarded before the next
            // receive; the slots are the runtime thread's, used without an await in between.
            r = socket.async_io(tokio::io::Interest::READABLE, || {
                SLOTS.with_borrow_mut(|slots| {
                    sys::recv_batch(socket.as_fd(), &mut slots.bufs, &mut slots.received)?;
                    for (i, received) in slots.received.iter().enumerate() {
                        if let Some(drops) = received.drops
                            && drops != drops_seen
                        {
                            kernel_drops.inc_by(u64::from(drops.wrapping_sub(drops_seen)));
                            drops_seen = drops;
                        }
                        let client = canonical(received.from);
                        on_datagram(&shared, &slots.bufs[i][..received.len], client, lingering);
                    }
                    Ok(())
                })
            }) => r,
        };
        if let Err(err) = received {
            tracing::debug!(port = %key, error = %err, "UDP receive failed");
        }
    }
}

/// Forwards a client datagram, on its flow or a new one (none when `lingering`).
fn on_datagram(shared: &Arc<Shared>, payload: &[u8], client: SocketAddr, lingering: bool) {
    let now = Instant::now();
    let route = shared.ctx.snapshot.load().get(&shared.key).cloned();
    let active = |e: SocketAddr| {
        route
            .as_ref()
            .is_some_and(|r| r.active_endpoints().any(|a| a.addr == e))
    };
    let existing = {
        let mut table = shared.table();
        match table.lookup(client, payload, now, active) {
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
                if let Some(suppressed) = shared.warn_due(None, WarnReason::UdpFlowLimit) {
                    tracing::warn!(port = %shared.key, client = %client, suppressed, "UDP flow limit (--udp-max-flows) reached: datagrams from new clients are dropped until flows expire (counted in dermaga_udp_datagrams_dropped_total{{reason=\"max_flows\"}})");
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
    start_flow(shared, &route, client, payload, Vec::new());
}

/// True when the port chooses endpoints by their open flows.
fn balanced_by_load(route: &Route) -> bool {
    matches!(
        route.spec.options.balance,
        Balance::LeastConnections | Balance::RandomTwo
    )
}

/// Starts a flow of `client` on an endpoint of `route` other than `tried` (endpoints that
/// refused this datagram already) and sends `payload` on it.
fn start_flow(
    shared: &Arc<Shared>,
    route: &Route,
    client: SocketAddr,
    payload: &[u8],
    tried: Vec<SocketAddr>,
) {
    let now = Instant::now();
    let policy = &route.spec.options.sources;
    if tried.is_empty() && !policy.admits(client.ip()) {
        // A source not allowed on the port: no flow, the datagram is dropped and counted.
        let reason = RefuseReason::source_denied;
        if let Some(suppressed) = shared.warn_due(None, WarnReason::SourcePolicy(reason)) {
            tracing::warn!(port = %shared.key, client = %client, suppressed, "client address not allowed on the port: datagrams dropped (counted in dermaga_udp_datagrams_dropped_total{{reason=\"source_denied\"}})");
        }
        shared
            .ctx
            .metrics
            .udp(shared.key, &route.spec.service)
            .dropped("source_denied");
        return;
    }
    let Some(chosen) = shared.choose(route, client, &tried) else {
        // No endpoint to try (every one refused already, or the weighted draw chose a backend
        // that does not resolve): the datagram is dropped, and counted.
        shared
            .ctx
            .metrics
            .udp(shared.key, &route.spec.service)
            .dropped("no_endpoints");
        return;
    };
    let (endpoint, pod) = (chosen.addr, chosen.target.clone());
    let upstream = match connect_upstream(endpoint) {
        Ok(s) => Arc::new(s),
        Err(err) => {
            if let Some(suppressed) = shared.warn_due(Some(endpoint), WarnReason::UdpUpstreamSocket)
            {
                tracing::warn!(port = %shared.key, endpoint = %endpoint, error = %err, suppressed, "cannot open an upstream UDP socket; datagrams dropped (counted in dermaga_udp_datagrams_dropped_total{{reason=\"upstream_socket\"}})");
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
    if !tried.is_empty() {
        route_metrics.retries.inc();
    }
    let udp = Arc::new(shared.ctx.metrics.udp(shared.key, &route.spec.service));
    udp.flows_created.inc();
    udp.flows_active.inc();
    if tried.is_empty() {
        udp.datagrams_received.inc();
    }
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
        tried,
        started: now,
        received: received.clone(),
        sent,
        reply_task: reply_task.abort_handle(),
        route: route_metrics,
        gateway_route: route.route_label.clone(),
        udp: udp.clone(),
        _load: balanced_by_load(route).then(|| shared.ctx.loads.hold(HealthKey::udp(endpoint))),
    };
    shared
        .table()
        .insert(client, endpoint, handle, payload, now);
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

/// A non-blocking UDP socket connected to `endpoint` (plain syscalls, no await: a refused
/// flow moves from within its own reply task).
fn connect_upstream(endpoint: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match endpoint.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(endpoint)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Receive slots for one batch of datagrams (`recvmmsg`) and what was received into them.
struct Slots {
    bufs: Vec<Vec<u8>>,
    received: Vec<sys::Received>,
}

thread_local! {
    /// One set of slots per runtime thread for every port's datagrams and every flow's replies:
    /// neither a port nor a flow holds a buffer of its own (a batch is received and passed on
    /// without an await in between, and neither use runs inside the other). Zeroed memory is
    /// mapped on first touch, so a slot costs resident memory only for the pages datagrams
    /// have written.
    static SLOTS: std::cell::RefCell<Slots> = std::cell::RefCell::new(Slots {
        bufs: (0..sys::BATCH).map(|_| vec![0u8; RECEIVE_BUFFER]).collect(),
        received: Vec::with_capacity(sys::BATCH),
    });
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
    let mut answered = false;
    loop {
        // Waits for a reply or an error: an ICMP port-unreachable makes the socket report
        // EPOLLERR (not EPOLLIN), which tokio passes on as ERROR readiness only, so READABLE
        // alone would sleep through it until the flow's next datagram. The read then returns
        // the pending error (ECONNREFUSED). `async_io` clears the readiness it woke on only
        // when the closure reports WouldBlock.
        let relayed = upstream
            .async_io(tokio::io::Interest::READABLE | tokio::io::Interest::ERROR, || {
                SLOTS.with_borrow_mut(|slots| {
                    // Plain syscalls on the non-blocking sockets: tokio's own `try_*` would
                    // consult readiness bits that an ICMP error (ERROR only) or a socket whose
                    // writability was never polled do not carry, and report WouldBlock.
                    sys::recv_batch(upstream.as_fd(), &mut slots.bufs, &mut slots.received)?;
                    let mut replies: [&[u8]; sys::BATCH] = [&[]; sys::BATCH];
                    for (i, r) in slots.received.iter().enumerate() {
                        replies[i] = &slots.bufs[i][..r.len];
                    }
                    let replies = &replies[..slots.received.len()];
                    // Sent at once from the same slots, in one system call; what a full socket
                    // buffer does not take is dropped, as the network would.
                    match sys::send_batch(shared.socket.as_fd(), replies, client) {
                        Ok(m) => {
                            let bytes: usize = replies[..m].iter().map(|r| r.len()).sum();
                            sent.fetch_add(bytes as u64, Ordering::Relaxed);
                            udp.datagrams_sent.inc_by(m as u64);
                        }
                        Err(err) => tracing::debug!(client = %client, error = %err, "UDP send to client failed"),
                    }
                    Ok(())
                })
            })
            .await;
        match relayed {
            Ok(()) => {
                shared.table().touch(client, Instant::now());
                // The flow's first reply is its successful connect (once: the health lookup
                // is not on every reply while some endpoint is in trouble).
                if !answered {
                    answered = true;
                    shared
                        .ctx
                        .health
                        .connect_succeeded(HealthKey::udp(endpoint));
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                // Ends this task's own flow (dropping it aborts this task: return at once).
                shared.flow_failed(client, endpoint, flow_id, err);
                return;
            }
        }
    }
}
