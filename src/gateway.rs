//! Wires the planes together: a [`Controller`] publishing tables, a listener manager following
//! them, shared counters and pipe pool. This is the injectable entry point that `main` and the
//! integration tests both use.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::control::controller::Controller;
use crate::control::index::Index;
use crate::control::names::RouteKey;
use crate::control::snapshot::Snapshot;
use crate::data::listener::{ListenAddress, ListenerManager, PortState, PortStates};
use crate::data::pipes::PipePool;
use crate::data::stats::TcpStats;
use crate::data::tcp::{ConnContext, TcpSettings};

/// How the data plane runs.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where data ports are bound.
    pub address: ListenAddress,
    /// TCP data-path settings.
    pub tcp: TcpSettings,
    /// How long a removed port's open connections may run on.
    pub drain_timeout: Duration,
    /// Pipes that may exist at once for splice (two per spliced connection); 0 disables splice.
    pub max_pipes: usize,
    /// Capacity asked for each pipe.
    pub pipe_size: usize,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            address: ListenAddress::All,
            tcp: TcpSettings::default(),
            drain_timeout: Duration::from_secs(60),
            max_pipes: 1024,
            pipe_size: 64 * 1024,
        }
    }
}

/// A running gateway.
pub struct Gateway {
    /// Feed objects here.
    pub controller: Arc<Controller>,
    /// Data-plane counters.
    pub stats: Arc<TcpStats>,
    /// The splice pipe pool.
    pub pipes: Arc<PipePool>,
    states: watch::Receiver<PortStates>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Starts the listener manager; ports open as soon as the controller publishes a table.
    pub fn start(index: Index, options: GatewayOptions) -> Self {
        let snapshot = Arc::new(Snapshot::new());
        let controller = Arc::new(Controller::new(index, snapshot.clone()));
        let stats = Arc::new(TcpStats::default());
        let pipes = Arc::new(PipePool::new(options.max_pipes, options.pipe_size));
        let ctx = Arc::new(ConnContext {
            snapshot,
            settings: options.tcp.clone(),
            pipes: pipes.clone(),
            stats: stats.clone(),
        });
        let manager = ListenerManager::new(ctx, options.address, options.drain_timeout);
        let states = manager.states();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(manager.run(shutdown.clone()));
        Self {
            controller,
            stats,
            pipes,
            states,
            shutdown,
            task,
        }
    }

    /// The state of every port now.
    pub fn port_states(&self) -> PortStates {
        self.states.borrow().clone()
    }

    /// Waits until the port states satisfy `ready` (an event, not a sleep).
    pub async fn wait_for_ports(&self, mut ready: impl FnMut(&PortStates) -> bool) -> PortStates {
        let mut rx = self.states.clone();
        rx.wait_for(|s| ready(s))
            .await
            .expect("listener manager alive")
            .clone()
    }

    /// Waits until `key` is bound and returns its address.
    pub async fn wait_bound(&self, key: RouteKey) -> std::net::SocketAddr {
        let states = self
            .wait_for_ports(|s| matches!(s.get(&key), Some(PortState::Bound(_))))
            .await;
        match states[&key] {
            PortState::Bound(addr) => addr,
            PortState::Failed(_) => unreachable!("waited for Bound"),
        }
    }

    /// Stops accepting everywhere, drains open connections (each port's drain timeout), returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
