//! What a TCP connection task or a UDP port task is handed: the routing table, the settings
//! of both data paths, and the shared pieces they report to or draw from (metrics, access log,
//! health, pipes, open-connection counts, warning throttle). Built once by the gateway.

use std::sync::Arc;
use std::time::Duration;

use super::endpoint_load::EndpointLoads;
use super::health::HealthRegistry;
use super::limits::OpenConnections;
use super::pipes::PipePool;
use crate::control::snapshot::Snapshot;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::log_throttle::ConnWarnings;
use crate::telemetry::metrics::Metrics;

/// Settings of the TCP data path.
#[derive(Debug, Clone)]
pub struct TcpSettings {
    /// Time allowed for one upstream connect.
    pub connect_timeout: Duration,
    /// Endpoints tried per connection at most (each a different endpoint).
    pub connect_attempts: usize,
    /// Time allowed for a client to send its PROXY header.
    pub proxy_header_timeout: Duration,
    /// Connections with no byte moving for this long are cut (zero: never), unless their port's
    /// `idle-timeout` option says otherwise.
    pub idle_timeout: Duration,
    /// Connections open at once in the process (0: no limit).
    pub max_connections: usize,
    /// Connections open at once per port (0: no limit), unless the port's `max-connections`
    /// option says otherwise.
    pub max_connections_per_port: usize,
}

impl Default for TcpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            connect_attempts: 3,
            proxy_header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::ZERO,
            max_connections: 0,
            max_connections_per_port: 0,
        }
    }
}

/// What every UDP port's flows are run with.
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

/// What every TCP connection task and UDP port task is handed.
#[derive(Debug)]
pub struct ConnContext {
    /// The routing table.
    pub snapshot: Arc<Snapshot>,
    /// Timeouts, retries and limits.
    pub settings: TcpSettings,
    /// Pipes for splice.
    pub pipes: Arc<PipePool>,
    /// Where outcomes are counted.
    pub metrics: Arc<Metrics>,
    /// Where each connection's line is written when it closes.
    pub access_log: Arc<AccessLog>,
    /// What every UDP port's flows are run with.
    pub udp: UdpSettings,
    /// Endpoint health (passive ejection, active checks).
    pub health: Arc<HealthRegistry>,
    /// TCP connections open in the process, for `max_connections`.
    pub open: Arc<OpenConnections>,
    /// Open connections and flows per endpoint (`least-connections`, `random-two`).
    pub loads: EndpointLoads,
    /// Rate limit of the warnings a connection can cause (one line per port, endpoint and
    /// reason per interval).
    pub warnings: Arc<ConnWarnings>,
}
