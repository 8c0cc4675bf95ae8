//! The listener manager: keeps one listening socket per route of the published table.
//! Binding is in [`bind`], the accept loop with admission and the descriptor-exhaustion path
//! in `accept`, one port's drain in [`drain`]; this module reconciles sockets with tables.
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

mod accept;
pub mod bind;
pub mod drain;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::bind::{ListenAddress, bind_tcp, bind_udp};
use self::drain::{Drain, DrainCause, Settled};
use super::context::ConnContext;
use super::limits::PortCounts;
use super::net::canonical;
use super::udp::port::serve_udp;
use crate::names::{Protocol, RouteKey};

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

/// A port's bound sockets (at least one).
enum Socket {
    Tcp(Vec<TcpListener>),
    Udp(Vec<UdpSocket>),
}

impl Socket {
    /// The address the port is bound on (every socket of it has the same).
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Socket::Tcp(listeners) => listeners[0].local_addr(),
            Socket::Udp(sockets) => sockets[0].local_addr(),
        }
    }
}

struct RunningListener {
    drain: Drain,
    /// A TCP port's accept loops (one per listening socket): each serves what is still queued
    /// when it stops.
    accept: Vec<JoinHandle<()>>,
}

/// Reconciles listening sockets with the published table.
pub struct ListenerManager {
    ctx: Arc<ConnContext>,
    address: ListenAddress,
    drain_timeout: Duration,
    shutdown_grace: Duration,
    reuse_port: bool,
    /// Sockets bound per UDP port with `reuse_port`, each read by its own task.
    udp_sockets: usize,
    /// Listening sockets bound per TCP port with `reuse_port`, each with its own accept loop.
    tcp_listeners: usize,
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
            udp_sockets: 1,
            tcp_listeners: 1,
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

    /// With `reuse_port`, binds `count` sockets per UDP port (default 1), each read by its own
    /// task, so that several worker threads can receive a port's datagrams.
    pub fn udp_sockets(mut self, count: usize) -> Self {
        self.udp_sockets = count.max(1);
        self
    }

    /// With `reuse_port`, binds `count` listening sockets per TCP port (default 1), each with
    /// its own accept loop.
    pub fn tcp_listeners(mut self, count: usize) -> Self {
        self.tcp_listeners = count.max(1);
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
            self.drain(key, DrainCause::Shutdown);
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
            self.drain(key, DrainCause::PortRemoved);
        }
        let mut states = self.states.borrow().ports.clone();
        states.retain(|k, _| table.get(k).is_some());
        for key in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let bound = match key.protocol {
                Protocol::Tcp => bind_tcp(
                    self.address,
                    key.port.get(),
                    self.reuse_port,
                    self.tcp_listeners,
                )
                .map(Socket::Tcp),
                Protocol::Udp => bind_udp(
                    self.address,
                    key.port.get(),
                    self.reuse_port,
                    self.udp_sockets,
                )
                .map(Socket::Udp),
            }
            .and_then(|sockets| {
                let local = sockets.local_addr()?;
                self.start(key, sockets);
                Ok(local)
            });
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
            drain: Drain::new(),
            accept: Vec::new(),
        };
        let listeners = match socket {
            Socket::Tcp(listeners) => listeners,
            Socket::Udp(socket) => {
                // UDP flows live inside the port's task (replies leave from the port's first
                // socket; each socket is read by a task of its own).
                running.drain.tasks().spawn(serve_udp(
                    socket,
                    key,
                    self.ctx.clone(),
                    self.ctx.udp.clone(),
                    running.drain.stop_accepting_signal(),
                    running.drain.close_signal(),
                ));
                self.running.insert(key, running);
                return;
            }
        };
        // One count of the port's open connections and sources for all its listeners.
        let counts = PortCounts::new(self.ctx.open.clone());
        running.accept = listeners
            .into_iter()
            .map(|listener| {
                tokio::spawn(accept::accept_loop(
                    listener,
                    key,
                    self.ctx.clone(),
                    running.drain.clone(),
                    counts.clone(),
                ))
            })
            .collect();
        self.running.insert(key, running);
    }

    /// Stops accepting on `key` and drains it: for up to the drain timeout when the port was
    /// removed, the shutdown grace at shutdown. A removed UDP port ends its flows at once
    /// (its socket must close: the port may be bound again); at shutdown they may go on
    /// relaying until idle.
    fn drain(&mut self, key: RouteKey, cause: DrainCause) {
        let Some(running) = self.running.remove(&key) else {
            return;
        };
        let RunningListener { drain, accept } = running;
        drain.begin();
        if key.protocol == Protocol::Udp && cause == DrainCause::PortRemoved {
            drain.close_signal().cancel();
        }
        let (timeout, why) = match cause {
            DrainCause::Shutdown => (self.shutdown_grace, "shutting down"),
            DrainCause::PortRemoved => (self.drain_timeout, "port removed"),
        };
        let cut_all = self.cut_all.clone();
        let (revived, finished) = (CancellationToken::new(), CancellationToken::new());
        // An older drain of the same port, if any, keeps its own deadline.
        self.draining.retain(|_, (_, done)| !done.is_cancelled());
        self.draining
            .insert(key, (revived.clone(), finished.clone()));
        self.drains.spawn(async move {
            let _finished = finished.drop_guard();
            for accept in accept {
                // Each serves the connections still queued, then closes its listener.
                let _ = accept.await;
            }
            // A UDP port's one task holds its flows and logs them itself.
            let open = drain.open();
            if open > 0 && key.protocol == Protocol::Tcp {
                tracing::info!(port = %key, open, timeout = ?timeout, "{why}; draining open connections");
            }
            let (open, which) = match drain.settle(timeout, &revived, &cut_all).await {
                Settled::Finished => (None, ""),
                Settled::DeadlineReached(open) if cause == DrainCause::PortRemoved => {
                    (Some(open), "drain timeout")
                }
                Settled::DeadlineReached(open) | Settled::Cut(open) => {
                    (Some(open), "shutdown grace")
                }
            };
            if let Some(open) = open {
                tracing::warn!(port = %key, open, "{which} reached; closing the remaining connections");
                drain.close().await;
            }
            tracing::info!(port = %key, "port closed");
        });
    }
}
