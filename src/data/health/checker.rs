//! Active health checks: one small task per checked endpoint connects on an interval (TCP
//! connect, then close) and reports to the [`HealthRegistry`]. Which endpoints are checked
//! follows every published table: the TCP routes whose check interval (the port's
//! `health-check-interval` option, else `--health-check-interval`) is set, and of those the
//! endpoints that are ready or serving. The same task forgets the health of endpoints (TCP and
//! UDP) that left every route. UDP routes are not checked (a TCP probe says nothing about a UDP port).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::HealthRegistry;
use crate::control::snapshot::Snapshot;
use crate::control::table::RouteTable;
use crate::names::HealthKey;
use crate::names::Protocol;

/// Active check settings (flags).
#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// Interval for every TCP port; `None`: only ports whose option sets one are checked.
    pub interval: Option<Duration>,
    /// Time allowed for one probe's connect.
    pub timeout: Duration,
    /// Passing probes in a row that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Failing probes in a row that make an endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for CheckSettings {
    fn default() -> Self {
        Self {
            interval: None,
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// The check interval of each endpoint the table wants checked (the shortest when several
/// routes share an endpoint).
fn wanted(table: &RouteTable, global: Option<Duration>) -> HashMap<SocketAddr, Duration> {
    let mut wanted: HashMap<SocketAddr, Duration> = HashMap::new();
    for route in table
        .routes_with_endpoints()
        .filter(|r| r.key.protocol == Protocol::Tcp)
    {
        let interval = route.spec.options.health_check_interval.or(global);
        let Some(interval) = interval.filter(|d| !d.is_zero()) else {
            continue;
        };
        for endpoint in route.endpoints.iter().filter(|e| e.ready || e.serving) {
            wanted
                .entry(endpoint.addr)
                .and_modify(|d| *d = (*d).min(interval))
                .or_insert(interval);
        }
    }
    wanted
}

/// Every endpoint of every route, with its route's protocol: the health worth keeping.
fn endpoints(table: &RouteTable) -> HashSet<HealthKey> {
    table
        .routes_with_endpoints()
        .flat_map(|r| {
            r.endpoints.iter().map(|e| HealthKey {
                addr: e.addr,
                protocol: r.key.protocol,
            })
        })
        .collect()
}

/// Follows the table until `shutdown`, running one probe task per checked endpoint.
pub async fn run(
    registry: Arc<HealthRegistry>,
    snapshot: Arc<Snapshot>,
    shutdown: CancellationToken,
) {
    let mut changed = snapshot.subscribe();
    let mut running: HashMap<SocketAddr, (Duration, CancellationToken)> = HashMap::new();
    loop {
        let table = snapshot.load();
        let wanted = wanted(&table, registry.settings().checks.interval);
        // Stale probes first, so none of them reports after its endpoint is forgotten.
        running.retain(|addr, (interval, stop)| {
            let keep = wanted.get(addr) == Some(interval);
            if !keep {
                stop.cancel();
                if !wanted.contains_key(addr) {
                    registry.checks_stopped(*addr);
                }
            }
            keep
        });
        registry.set_checked(wanted.keys().copied().collect());
        registry.retain(&endpoints(&table));
        for (addr, interval) in wanted {
            running.entry(addr).or_insert_with(|| {
                let stop = shutdown.child_token();
                tokio::spawn(probe_loop(registry.clone(), addr, interval, stop.clone()));
                (interval, stop)
            });
        }
        drop(table);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = changed.changed() => if r.is_err() { break },
        }
    }
    for (_, (_, stop)) in running {
        stop.cancel();
    }
}

/// Probes `addr` every `interval`, starting at a random point of the first interval so that
/// probes of many endpoints (and replicas) spread out.
async fn probe_loop(
    registry: Arc<HealthRegistry>,
    addr: SocketAddr,
    interval: Duration,
    stop: CancellationToken,
) {
    let jitter =
        std::hash::RandomState::new().hash_one(addr) % (interval.as_millis() as u64).max(1);
    let mut next = tokio::time::Instant::now() + Duration::from_millis(jitter);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        // A probe may take longer than the interval (a blackholed endpoint): the next one
        // starts an interval later, never in a burst to catch up.
        next = (next + interval).max(tokio::time::Instant::now());
        let result = probe(addr, registry.settings().checks.timeout).await;
        if stop.is_cancelled() {
            return;
        }
        registry.metrics.health_check(addr, result.is_ok());
        registry.check_result(addr, result);
    }
}

/// One probe: a TCP connect within `timeout`, then a normal close.
async fn probe(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            drop(stream);
            Ok(())
        }
        Ok(Err(err)) => Err(format!("connect {addr}: {err}")),
        Err(_) => Err(format!("connect {addr}: no answer within {timeout:?}")),
    }
}
