//! The listener manager: keeps one listening socket per TCP route of the published table.
//!
//! On every new table it binds ports that appeared, leaves every other listener untouched (a
//! route whose endpoints changed keeps its socket: connections read the table themselves), and
//! drains ports that disappeared: the socket is closed at once (new connections are refused),
//! open connections may finish for up to `drain_timeout`, then are closed. A port that cannot
//! be bound (in use, no permission) is reported on its own and retried; the others work.
//!
//! At shutdown every port stops accepting at once; open TCP connections and UDP flows may
//! finish for up to the shutdown grace. Before a TCP listener closes, the connections already
//! in its accept queue are accepted and served (closing would reset them). With `reuse_port`,
//! data ports are bound with `SO_REUSEPORT` and steered so that a second process binding the
//! same port (a successor) takes every new connection and datagram while both run
//! ([`crate::sys::steer_reuseport_group`]): the old one can then close with nothing queued.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::context::ConnContext;
use super::limits::{self, PortCounts, ReserveOutcome, Throttle};
use super::net::canonical;
use super::tcp::serve_connection;
use super::udp::port::serve_udp;
use crate::control::table::Route;
use crate::names::{ObjectName, Protocol, RouteKey};
use crate::telemetry::metrics::PortMetrics;
use crate::telemetry::outcome::RefuseReason;

/// The state of one port, as the manager last left it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum PortState {
    /// Accepting on this address.
    Bound(SocketAddr),
    /// Could not bind; retried periodically.
    Failed(String),
}

/// Every port's state.
pub type PortStates = BTreeMap<RouteKey, PortState>;

/// What the manager publishes after each reconcile.
#[derive(Debug, Clone, Default)]
pub struct ListenerStatus {
    /// The table generation the ports reflect (0: no table reconciled yet).
    pub generation: u64,
    /// Every port's state.
    pub ports: PortStates,
}

/// Where data ports are bound.
#[derive(Debug, Clone, Copy)]
pub enum ListenAddress {
    /// All addresses: `[::]` accepting IPv4 too, or `0.0.0.0` where IPv6 is unavailable.
    All,
    /// One address.
    Ip(IpAddr),
}

/// Binds a data-port socket of `kind` (stream or datagram) on `address`: `[::]` accepting
/// IPv4 too when all addresses are wanted, falling back to `0.0.0.0` without IPv6. With
/// `reuse_port`, other processes may bind the same port (`SO_REUSEPORT`), and the newest
/// of two takes the new connections and datagrams.
fn bind_socket(
    address: ListenAddress,
    port: u16,
    kind: socket2::Type,
    reuse_port: bool,
) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let attempt = |ip: IpAddr| -> io::Result<Socket> {
        let addr = SocketAddr::new(ip, port);
        let socket = Socket::new(Domain::for_address(addr), kind, None)?;
        if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            socket.set_only_v6(false)?;
        }
        if kind == Type::STREAM {
            // Lets a port be bound again while old connections linger in TIME_WAIT. Not for
            // UDP: there it would let a second process bind the same port and take a share of
            // the datagrams.
            socket.set_reuse_address(true)?;
            // Accepted sockets inherit these from the listener on Linux: set once here rather
            // than with five setsockopt calls per connection.
            socket.set_tcp_nodelay(true)?;
            socket.set_tcp_keepalive(&super::net::keepalive_settings())?;
        }
        let reuse_port = reuse_port && warn_once_on_error(socket.set_reuse_port(true));
        socket.bind(&addr.into())?;
        if kind == Type::STREAM {
            socket.listen(4096)?;
        }
        // After listen: a TCP socket joins its reuseport group when it starts listening.
        // Attached for UDP too, so a client's flow moves to a successor once, when it starts
        // (with hashing it would move when either process joins or leaves the group).
        if reuse_port {
            warn_once_on_error(crate::sys::steer_reuseport_group(socket.as_fd(), 1));
        }
        socket.set_nonblocking(true)?;
        Ok(socket)
    };
    match address {
        ListenAddress::Ip(ip) => attempt(ip),
        ListenAddress::All => match attempt(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) {
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                attempt(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            }
            other => other,
        },
    }
}

/// True if `result` is Ok; otherwise warns (once per process: the cause is the kernel, the
/// same for every port) that the restart handover is not available, and binding goes on.
fn warn_once_on_error(result: io::Result<()>) -> bool {
    static WARNED: Once = Once::new();
    if let Err(err) = &result {
        WARNED.call_once(|| tracing::warn!(error = %err, "SO_REUSEPORT or its steering program is not available (old kernel?): a second dermaga on the same ports will not take over new connections cleanly; ports work as usual"));
    }
    result.is_ok()
}

/// Binds a listening TCP socket for a data port.
pub fn bind_tcp(address: ListenAddress, port: u16, reuse_port: bool) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_socket(address, port, socket2::Type::STREAM, reuse_port)?.into())
}

/// Binds a UDP socket for a data port, the way TCP ports are bound.
pub fn bind_udp(address: ListenAddress, port: u16, reuse_port: bool) -> io::Result<UdpSocket> {
    UdpSocket::from_std(bind_socket(address, port, socket2::Type::DGRAM, reuse_port)?.into())
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct RunningListener {
    stop_accepting: CancellationToken,
    close_connections: CancellationToken,
    connections: TaskTracker,
    /// A TCP port's accept loop: it serves what is still queued when it stops.
    accept: Option<JoinHandle<()>>,
}

/// Reconciles listening sockets with the published table.
pub struct ListenerManager {
    ctx: Arc<ConnContext>,
    address: ListenAddress,
    drain_timeout: Duration,
    shutdown_grace: Duration,
    reuse_port: bool,
    running: HashMap<RouteKey, RunningListener>,
    states: watch::Sender<ListenerStatus>,
    drains: TaskTracker,
    /// Ports draining now, each with a token that lifts its drain deadline: a port re-added
    /// while its old connections drain keeps them (a config change must not cut them).
    /// The second token is cancelled when that drain has finished.
    draining: HashMap<RouteKey, (CancellationToken, CancellationToken)>,
    /// Cancelled when the shutdown grace ends: every drain closes what is left.
    cut_all: CancellationToken,
}

impl ListenerManager {
    /// A manager that binds on `address` and drains removed ports for up to `drain_timeout`.
    pub fn new(ctx: Arc<ConnContext>, address: ListenAddress, drain_timeout: Duration) -> Self {
        Self {
            ctx,
            address,
            drain_timeout,
            shutdown_grace: Duration::from_secs(60),
            reuse_port: false,
            running: HashMap::new(),
            states: watch::channel(ListenerStatus::default()).0,
            drains: TaskTracker::new(),
            draining: HashMap::new(),
            cut_all: CancellationToken::new(),
        }
    }

    /// At shutdown, open connections and UDP flows may finish for up to `grace` (default 60s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Binds data ports with `SO_REUSEPORT` and the successor steering (default off).
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Port states, updated after every reconcile.
    pub fn states(&self) -> watch::Receiver<ListenerStatus> {
        self.states.subscribe()
    }

    /// Follows the table until `shutdown`, then stops accepting on every port and returns when
    /// all open connections and UDP flows have finished or been closed at the shutdown grace
    /// (ports already draining are cut then too).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut changed = self.ctx.snapshot.subscribe();
        let mut retry = tokio::time::interval(Duration::from_secs(2));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.reconcile();
        loop {
            let has_failures = self
                .states
                .borrow()
                .ports
                .values()
                .any(|s| matches!(s, PortState::Failed(_)));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = changed.changed() => {
                    if r.is_err() { break; }
                    self.reconcile();
                }
                _ = retry.tick(), if has_failures => self.reconcile(),
            }
        }
        let keys: Vec<RouteKey> = self.running.keys().copied().collect();
        for key in keys {
            self.drain(key, true);
        }
        self.states.send_modify(|s| s.ports.clear());
        self.drains.close();
        let grace = tokio::time::sleep(self.shutdown_grace);
        tokio::select! {
            _ = self.drains.wait() => return,
            _ = grace => {}
        }
        // Cuts the shutdown's drains and those of ports removed before it (which may have
        // later deadlines).
        self.cut_all.cancel();
        self.drains.wait().await;
    }

    fn reconcile(&mut self) {
        let table = self.ctx.snapshot.load();
        let wanted: Vec<RouteKey> = table.keys().copied().collect();
        let gone: Vec<RouteKey> = self
            .running
            .keys()
            .filter(|k| table.get(k).is_none())
            .copied()
            .collect();
        for key in gone {
            self.drain(key, false);
        }
        let mut states = self.states.borrow().ports.clone();
        states.retain(|k, _| table.get(k).is_some());
        for key in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let bound =
                match key.protocol {
                    Protocol::Tcp => bind_tcp(self.address, key.port.get(), self.reuse_port)
                        .and_then(|l| {
                            let local = l.local_addr()?;
                            self.start(key, Socket::Tcp(l));
                            Ok(local)
                        }),
                    Protocol::Udp => bind_udp(self.address, key.port.get(), self.reuse_port)
                        .and_then(|s| {
                            let local = s.local_addr()?;
                            self.start(key, Socket::Udp(s));
                            Ok(local)
                        }),
                };
            match bound {
                Ok(local) => {
                    let local = canonical(local);
                    if let Some((revive, done)) = self.draining.remove(&key)
                        && !done.is_cancelled()
                    {
                        revive.cancel();
                        tracing::info!(port = %key, "port re-added while draining: its open connections are no longer cut at the drain timeout");
                    }
                    tracing::info!(port = %key, address = %local, "listening");
                    states.insert(key, PortState::Bound(local));
                }
                Err(err) => {
                    let text = format!("cannot listen on port {}: {err}", key.port);
                    if states.get(&key) != Some(&PortState::Failed(text.clone())) {
                        tracing::error!(port = %key, error = %err, "cannot listen on this port; other ports are not affected; retrying every 2s");
                    }
                    states.insert(key, PortState::Failed(text));
                }
            }
        }
        self.states.send_replace(ListenerStatus {
            generation: table.generation,
            ports: states,
        });
    }

    fn start(&mut self, key: RouteKey, socket: Socket) {
        let mut running = RunningListener {
            stop_accepting: CancellationToken::new(),
            close_connections: CancellationToken::new(),
            connections: TaskTracker::new(),
            accept: None,
        };
        let listener = match socket {
            Socket::Tcp(listener) => listener,
            Socket::Udp(socket) => {
                // UDP flows live inside the port's task (replies leave from the port's socket).
                running.connections.spawn(serve_udp(
                    socket,
                    key,
                    self.ctx.clone(),
                    self.ctx.udp.clone(),
                    running.stop_accepting.clone(),
                    running.close_connections.clone(),
                ));
                self.running.insert(key, running);
                return;
            }
        };
        running.accept = Some(tokio::spawn(accept_loop(
            listener,
            key,
            self.ctx.clone(),
            running.stop_accepting.clone(),
            running.close_connections.clone(),
            running.connections.clone(),
        )));
        self.running.insert(key, running);
    }

    /// Stops accepting on `key` and drains it: for up to the drain timeout when the port was
    /// removed, the shutdown grace at `shutdown`. A removed UDP port ends its flows at once
    /// (its socket must close: the port may be bound again); at shutdown they may go on
    /// relaying until idle.
    fn drain(&mut self, key: RouteKey, shutdown: bool) {
        let Some(running) = self.running.remove(&key) else {
            return;
        };
        running.stop_accepting.cancel();
        if key.protocol == Protocol::Udp && !shutdown {
            running.close_connections.cancel();
        }
        running.connections.close();
        let (timeout, why) = if shutdown {
            (self.shutdown_grace, "shutting down")
        } else {
            (self.drain_timeout, "port removed")
        };
        let cut_all = self.cut_all.clone();
        let (revived, finished) = (CancellationToken::new(), CancellationToken::new());
        // An older drain of the same port, if any, keeps its own deadline.
        self.draining.retain(|_, (_, done)| !done.is_cancelled());
        self.draining
            .insert(key, (revived.clone(), finished.clone()));
        self.drains.spawn(async move {
            let _finished = finished.drop_guard();
            if let Some(accept) = running.accept {
                // It serves the connections still queued, then closes the listener.
                let _ = accept.await;
            }
            // A UDP port's one task holds its flows and logs them itself.
            let open = running.connections.len();
            if open > 0 && key.protocol == Protocol::Tcp {
                tracing::info!(port = %key, open, timeout = ?timeout, "{why}; draining open connections");
            }
            let deadline = async {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => true,
                    // Re-added: no deadline any more; wait for the old connections to end.
                    _ = revived.cancelled() => std::future::pending().await,
                }
            };
            let cut = tokio::select! {
                _ = running.connections.wait() => false,
                cut = deadline => cut,
                _ = cut_all.cancelled() => true,
            };
            if cut {
                let which = if shutdown || cut_all.is_cancelled() {
                    "shutdown grace"
                } else {
                    "drain timeout"
                };
                tracing::warn!(port = %key, open = running.connections.len(), "{which} reached; closing the remaining connections");
                running.close_connections.cancel();
                running.connections.wait().await;
            }
            tracing::info!(port = %key, "port closed");
        });
    }
}

/// What one port's accept loop needs to admit a connection: its counts, its refusal
/// warnings, and where its connection tasks go.
struct Admission {
    key: RouteKey,
    ctx: Arc<ConnContext>,
    counts: Arc<PortCounts>,
    warnings: RefusalWarnings,
    close: CancellationToken,
    connections: TaskTracker,
}

impl Admission {
    /// Admits one accepted connection within the connection limits and spawns its task, or
    /// refuses it at once with a reset (counted, warned about at most once a second).
    fn admit(&mut self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let (key, ctx) = (self.key, &self.ctx);
        // The one table read of this connection.
        let route = ctx.snapshot.load().get(&key).cloned();
        if !limits::below_descriptor_ceiling(std::os::fd::AsRawFd::as_raw_fd(&stream)) {
            let pm = port_metrics(ctx, key, route.as_deref());
            pm.accepted.inc();
            pm.refused(RefuseReason::out_of_descriptors);
            super::net::reset(stream);
            if let Some(refused) = self.warnings.out_of_descriptors.note(Instant::now()) {
                tracing::warn!(port = %key, refused, open = ctx.open.get(), ceiling = limits::descriptor_ceiling(), "near the open-files limit: the descriptors kept for the admin server are reached (raise the limit: ulimit -n / LimitNOFILE, or set --max-connections); refusing new connections with a reset (count: refused since the last such line)");
            }
            return;
        }
        let port_max = route
            .as_ref()
            .and_then(|r| r.spec.options.max_connections)
            .unwrap_or(ctx.settings.max_connections_per_port);
        let slot = match self.counts.admit(ctx.settings.max_connections, port_max) {
            Ok(slot) => slot,
            Err(exceeded) => {
                let pm = port_metrics(ctx, key, route.as_deref());
                pm.accepted.inc();
                pm.refused(RefuseReason::max_connections);
                super::net::reset(stream);
                if let Some(refused) = self.warnings.over_limit.note(Instant::now()) {
                    tracing::warn!(port = %key, limit = %exceeded, refused, "connection limit reached; refusing new connections with a reset (count: refused since the last such line)");
                }
                return;
            }
        };
        self.connections.spawn(serve_connection(
            ctx.clone(),
            key,
            route,
            slot,
            stream,
            canonical(peer),
            self.close.clone(),
        ));
    }
}

async fn accept_loop(
    listener: TcpListener,
    key: RouteKey,
    ctx: Arc<ConnContext>,
    stop: CancellationToken,
    close: CancellationToken,
    connections: TaskTracker,
) {
    let mut admission = Admission {
        key,
        ctx: ctx.clone(),
        counts: PortCounts::new(ctx.open.clone()),
        warnings: RefusalWarnings::default(),
        close,
        connections,
    };
    if !limits::ensure_reserve() {
        tracing::warn!(port = %key, "cannot open the spare descriptor (/dev/null); connections beyond the descriptor limit will wait in the backlog instead of being refused");
    }
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                admission.admit(stream, peer);
            }
            Err(err) => {
                ctx.metrics.global.accept_errors.inc();
                let pause = match err.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE) => refuse_for_want_of_descriptors(
                        &listener,
                        key,
                        &ctx,
                        &mut admission.warnings,
                    ),
                    Some(libc::ENOBUFS | libc::ENOMEM) => {
                        tracing::error!(port = %key, error = %err, "accept failed: out of memory; pausing this port's accepts for 100ms");
                        Some(Duration::from_millis(100))
                    }
                    // Transient (ECONNABORTED...); a short pause keeps a persistent one from spinning.
                    _ => {
                        tracing::debug!(port = %key, error = %err, "accept failed");
                        Some(Duration::from_millis(10))
                    }
                };
                if let Some(pause) = pause {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    // Closing a listener resets the connections in its accept queue (unless the kernel migrates
    // them to another socket of its reuseport group, net.ipv4.tcp_migrate_req): serve them.
    let mut queued = 0usize;
    // Bounded: the queue holds at most the backlog, unless connections keep arriving.
    for _ in 0..65_536 {
        match accept_now(&listener) {
            Ok(Some((stream, peer))) => {
                queued += 1;
                admission.admit(stream, peer);
            }
            Ok(None) => break,
            Err(err) => {
                // ECONNABORTED (a client gave up while queued) or EINTR: go on with the next.
                tracing::debug!(port = %key, error = %err, "accept of a queued connection failed");
                let transient = err.kind() == io::ErrorKind::Interrupted
                    || err.raw_os_error() == Some(libc::ECONNABORTED);
                if !transient {
                    break;
                }
            }
        }
    }
    if queued > 0 {
        tracing::debug!(port = %key, queued, "served the connections queued when the port closed");
    }
    // Dropping the listener closes the socket: new connections to this port are refused (or go
    // to the other processes of its reuseport group).
    drop(listener);
}

/// Accepts one queued connection without waiting: `None` when the queue is empty. A plain
/// `accept(2)`: tokio's readiness may not know yet of connections the kernel has queued.
fn accept_now(listener: &TcpListener) -> io::Result<Option<(tokio::net::TcpStream, SocketAddr)>> {
    match socket2::SockRef::from(listener).accept() {
        Ok((socket, peer)) => {
            socket.set_nonblocking(true)?;
            let peer = peer
                .as_socket()
                .ok_or_else(|| io::Error::other("accepted a connection without an IP peer"))?;
            let stream = tokio::net::TcpStream::from_std(socket.into())?;
            Ok(Some((stream, peer)))
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(err) => Err(err),
    }
}

/// One accept loop's rate-limited refusal warnings, one per reason.
#[derive(Default)]
struct RefusalWarnings {
    over_limit: Throttle,
    out_of_descriptors: Throttle,
}

/// The port's metrics handles (the rare path of refusals made before a connection task).
fn port_metrics(ctx: &ConnContext, key: RouteKey, route: Option<&Route>) -> Arc<PortMetrics> {
    let unknown = ObjectName::new("", "");
    ctx.metrics
        .port(key, route.map_or(&unknown, |r| &r.spec.service))
}

/// Accept failed with EMFILE/ENFILE: refuses one pending connection with the spare descriptor
/// (the loop then accepts again at once: the backlog is refused one by one, never spun on).
/// Returns the pause to make when that was not possible.
fn refuse_for_want_of_descriptors(
    listener: &TcpListener,
    key: RouteKey,
    ctx: &ConnContext,
    warnings: &mut RefusalWarnings,
) -> Option<Duration> {
    match limits::refuse_with_reserve(listener) {
        ReserveOutcome::Refused => {
            let route = ctx.snapshot.load().get(&key).cloned();
            let pm = port_metrics(ctx, key, route.as_deref());
            pm.accepted.inc();
            pm.refused(RefuseReason::out_of_descriptors);
            if let Some(refused) = warnings.out_of_descriptors.note(Instant::now()) {
                tracing::warn!(port = %key, refused, open = ctx.open.get(), "out of file descriptors (raise the limit: ulimit -n / LimitNOFILE, or set --max-connections); refusing new connections with a reset (count: refused since the last such line)");
            }
            None
        }
        ReserveOutcome::NothingPending => None,
        ReserveOutcome::Failed(err) => {
            if warnings.out_of_descriptors.note(Instant::now()).is_some() {
                tracing::error!(port = %key, error = ?err.map(|e| e.to_string()), "out of file descriptors and no spare one to refuse with; pausing this port's accepts for 100ms");
            }
            Some(Duration::from_millis(100))
        }
    }
}
