//! The gateway in-process, without the process around it ([`crate::process`]): a
//! [`TablePublisher`] publishing tables, a listener manager following them, shared metrics,
//! access log, health and pipe pool. The injectable entry point that the process and the
//! integration tests both use.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::control::index::Index;
use crate::control::publisher::TablePublisher;
use crate::control::snapshot::Snapshot;
use crate::data::context::UdpSettings;
use crate::data::context::{ConnContext, TcpSettings};
use crate::data::health::{self, HealthRegistry, HealthSettings};
use crate::data::listener::{
    ListenAddress, ListenerManager, ListenerStatus, PortState, PortStates,
};
use crate::data::pipes::PipePool;
use crate::names::RouteKey;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::log_throttle::ConnWarnings;
use crate::telemetry::metrics::Metrics;

/// How the data plane runs.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where data ports are bound.
    pub address: ListenAddress,
    /// TCP data-path settings.
    pub tcp: TcpSettings,
    /// How long a removed port's open connections may run on.
    pub drain_timeout: Duration,
    /// At shutdown, how long open connections and UDP flows may run on.
    pub shutdown_grace: Duration,
    /// Bind data ports with `SO_REUSEPORT`, new connections going to a successor process.
    pub reuse_port: bool,
    /// Pipes that may exist at once for splice (two per spliced connection); 0 disables splice.
    pub max_pipes: usize,
    /// Capacity asked for each pipe.
    pub pipe_size: usize,
    /// With `reuse_port`: sockets bound per UDP port, each read by its own task (so that
    /// several worker threads can receive).
    pub udp_sockets_per_port: usize,
    /// With `reuse_port`: listening sockets bound per TCP port, each with its own accept loop.
    pub tcp_listeners_per_port: usize,
    /// UDP flow settings.
    pub udp: UdpSettings,
    /// Endpoint health: passive ejection and active checks.
    pub health: HealthSettings,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            address: ListenAddress::All,
            tcp: TcpSettings::default(),
            drain_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(60),
            reuse_port: true,
            max_pipes: 1024,
            pipe_size: 64 * 1024,
            udp_sockets_per_port: 1,
            tcp_listeners_per_port: 1,
            udp: UdpSettings::default(),
            health: HealthSettings::default(),
        }
    }
}

/// Removes the metric series of ports and endpoints that left the table, on every table
/// published until `shutdown`.
async fn prune_metrics(
    metrics: Arc<Metrics>,
    snapshot: Arc<Snapshot>,
    shutdown: CancellationToken,
) {
    let mut changed = snapshot.subscribe();
    loop {
        let table = snapshot.load();
        metrics.retain(&table.in_force());
        metrics.set_route_info(&table.gateway_routes());
        metrics.retain_server_names(&table.server_names());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
        }
    }
}

/// A running gateway.
pub struct Gateway {
    /// Feed objects here.
    pub publisher: Arc<TablePublisher>,
    /// Metrics of the whole process.
    pub metrics: Arc<Metrics>,
    /// The splice pipe pool.
    pub pipes: Arc<PipePool>,
    /// Endpoint health.
    pub health: Arc<HealthRegistry>,
    status: watch::Receiver<ListenerStatus>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    warnings: Arc<ConnWarnings>,
    warnings_stop: CancellationToken,
}

impl Gateway {
    /// Starts with fresh metrics and no access log.
    pub fn start(index: Index, options: GatewayOptions) -> Self {
        let metrics = Arc::new(Metrics::new());
        let access_log = Arc::new(AccessLog::off(metrics.clone()));
        Self::start_with(index, options, metrics, access_log)
    }

    /// Starts the listener manager; ports open as soon as the publisher publishes a table.
    pub fn start_with(
        index: Index,
        options: GatewayOptions,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
    ) -> Self {
        let snapshot = Arc::new(Snapshot::new());
        let publisher = Arc::new(TablePublisher::new(
            index,
            snapshot.clone(),
            metrics.clone(),
        ));
        let pipes = Arc::new(PipePool::new(options.max_pipes, options.pipe_size));
        let health = Arc::new(HealthRegistry::new(options.health.clone(), metrics.clone()));
        let warnings = Arc::new(ConnWarnings::default());
        let ctx = Arc::new(ConnContext {
            snapshot,
            settings: options.tcp.clone(),
            pipes: pipes.clone(),
            metrics: metrics.clone(),
            access_log,
            udp: options.udp.clone(),
            health: health.clone(),
            loads: Default::default(),
            open: Default::default(),
            warnings: warnings.clone(),
        });
        let manager = ListenerManager::new(ctx, options.address, options.drain_timeout)
            .shutdown_grace(options.shutdown_grace)
            .reuse_port(options.reuse_port)
            .udp_sockets(options.udp_sockets_per_port)
            .tcp_listeners(options.tcp_listeners_per_port);
        let status = manager.states();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(manager.run(shutdown.clone()));
        let warnings_stop = CancellationToken::new();
        tokio::spawn(warnings.clone().run(warnings_stop.clone()));
        tokio::spawn(health::checker::run(
            health.clone(),
            publisher.snapshot().clone(),
            shutdown.clone(),
        ));
        tokio::spawn(prune_metrics(
            metrics.clone(),
            publisher.snapshot().clone(),
            shutdown.clone(),
        ));
        Self {
            publisher,
            metrics,
            pipes,
            health,
            status,
            shutdown,
            task,
            warnings,
            warnings_stop,
        }
    }

    /// The listener manager's status channel.
    pub fn status(&self) -> watch::Receiver<ListenerStatus> {
        self.status.clone()
    }

    /// The state of every port now.
    pub fn port_states(&self) -> PortStates {
        self.status.borrow().ports.clone()
    }

    /// Waits until the port states satisfy `ready` (an event, not a sleep).
    pub async fn wait_for_ports(&self, mut ready: impl FnMut(&PortStates) -> bool) -> PortStates {
        let mut rx = self.status.clone();
        rx.wait_for(|s| ready(&s.ports))
            .await
            .expect("listener manager alive")
            .ports
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

    /// Stops accepting everywhere (ports close at once, after serving what is queued), then
    /// lets open connections and UDP flows finish for up to the shutdown grace; returns when
    /// all are done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        // The counts of warnings held back since their last line.
        self.warnings_stop.cancel();
        self.warnings.flush();
    }

    /// A token that, when cancelled, starts the same shutdown as [`Gateway::shutdown`].
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
