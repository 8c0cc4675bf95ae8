//! The immutable routing table that the data plane reads, one `Arc` load per connection.
//!
//! A [`RouteTable`] is built by [`crate::control::build`] and never mutated afterwards, except
//! for the round-robin cursor of each route, an atomic counter that only spreads load.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::configmap::{EntryError, RouteSpec};
use crate::names::{ObjectName, RouteKey};
use crate::telemetry::metrics::RoutesInForce;

/// One backend address with the EndpointSlice conditions it came with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `conditions.ready` (nil counts as true).
    pub ready: bool,
    /// `conditions.serving` (nil counts as the value of ready).
    pub serving: bool,
    /// `conditions.terminating` (nil counts as false).
    pub terminating: bool,
    /// The pod (or other object) behind the endpoint, from `targetRef`, for logs.
    pub target: Option<Arc<str>>,
}

/// Which rule chose the endpoints that take new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Selection {
    /// Ready endpoints exist; only they get new connections.
    Ready,
    /// None is ready; serving-and-terminating endpoints get new connections (kube-proxy's rule).
    ServingTerminating,
    /// No usable endpoint: new connections are refused at once.
    None,
}

/// The resolved destination of one `(port, protocol)`.
#[derive(Debug)]
pub struct Route {
    /// The route's key.
    pub key: RouteKey,
    /// The entry that produced it.
    pub spec: RouteSpec,
    /// Every endpoint of the Service port, in a stable order.
    pub endpoints: Vec<Endpoint>,
    /// Indices into `endpoints` that take new connections.
    active: Vec<usize>,
    /// The rule that chose `active`.
    pub selection: Selection,
    /// Why the route has no endpoints, when it has none and there is a reason to tell
    /// (missing Service, missing port, ...).
    pub problem: Option<String>,
    /// True when the entry in the ConfigMap is currently invalid and this route is the
    /// previous good one, kept until the entry is fixed.
    pub kept_from_previous: bool,
    cursor: AtomicUsize,
}

impl Route {
    /// Builds a route, choosing the active endpoints by the design's rule.
    pub fn new(
        key: RouteKey,
        spec: RouteSpec,
        endpoints: Vec<Endpoint>,
        problem: Option<String>,
    ) -> Self {
        // A terminating endpoint takes no new connection while another is ready, even if its
        // slice still says ready (a controller may lag behind the pod's deletion).
        let ready: Vec<usize> = (0..endpoints.len())
            .filter(|&i| endpoints[i].ready && !endpoints[i].terminating)
            .collect();
        let (active, selection) = if !ready.is_empty() {
            (ready, Selection::Ready)
        } else {
            let fallback: Vec<usize> = (0..endpoints.len())
                .filter(|&i| endpoints[i].serving && endpoints[i].terminating)
                .collect();
            if fallback.is_empty() {
                (fallback, Selection::None)
            } else {
                (fallback, Selection::ServingTerminating)
            }
        };
        Self {
            key,
            spec,
            endpoints,
            active,
            selection,
            problem,
            kept_from_previous: false,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Endpoints that take new connections.
    pub fn active_endpoints(&self) -> impl ExactSizeIterator<Item = &Endpoint> + '_ {
        self.active.iter().map(|&i| &self.endpoints[i])
    }

    /// Number of endpoints that take new connections.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// The order in which to try endpoints for one new connection: every active endpoint once,
    /// starting at the round-robin cursor (the first is the pick, the rest are for retries).
    pub fn pick_order(&self) -> PickOrder<'_> {
        let n = self.active.len();
        let start = if n == 0 {
            0
        } else {
            self.cursor.fetch_add(1, Ordering::Relaxed) % n
        };
        PickOrder {
            route: self,
            start,
            taken: 0,
        }
    }

    /// Like [`Route::pick_order`], but the first endpoint is one for which `usable` holds
    /// (when any does): an unusable endpoint's turn passes to the next turn of the cursor, not
    /// to its neighbour, so the load of a skipped endpoint spreads evenly over the others.
    pub fn pick_order_usable(&self, usable: impl Fn(&Endpoint) -> bool) -> PickOrder<'_> {
        let n = self.active.len();
        let mut start = 0;
        for _ in 0..n {
            start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            if usable(&self.endpoints[self.active[start]]) {
                break;
            }
        }
        PickOrder {
            route: self,
            start,
            taken: 0,
        }
    }

    /// True when both routes would send traffic the same way.
    pub fn same_as(&self, other: &Route) -> bool {
        self.spec == other.spec
            && self.endpoints == other.endpoints
            && self.problem == other.problem
    }
}

/// Iterator over a route's active endpoints, starting at the round-robin cursor.
pub struct PickOrder<'a> {
    route: &'a Route,
    start: usize,
    taken: usize,
}

impl<'a> Iterator for PickOrder<'a> {
    type Item = &'a Endpoint;
    fn next(&mut self) -> Option<Self::Item> {
        let n = self.route.active.len();
        if self.taken >= n {
            return None;
        }
        let i = self.route.active[(self.start + self.taken) % n];
        self.taken += 1;
        Some(&self.route.endpoints[i])
    }
}

/// A configuration problem in force: a rejected entry, or a reference that does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum ConfigProblem {
    /// A port-map entry was rejected.
    Entry(EntryError),
    /// A port map named by a flag does not exist (yet).
    MissingPortMap {
        /// The map the flag names.
        configmap: ObjectName,
    },
    /// An entry is valid but what it names does not resolve (no such Service or port).
    Unresolved {
        /// The port map the entry is in.
        configmap: ObjectName,
        /// What kind of reference failed.
        reason: UnresolvedReason,
        /// The route.
        key: RouteKey,
        /// The entry's value.
        spec: String,
        /// What is missing.
        problem: String,
    },
}

/// Why a valid entry does not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum UnresolvedReason {
    /// No such Service.
    ServiceNotFound,
    /// The Service has no such port (for the protocol).
    ServicePortNotFound,
    /// The Service is of type ExternalName (no endpoints to forward to).
    ExternalNameService,
}

impl ConfigProblem {
    /// The port map the problem is in, when there is one to attach an Event to.
    pub fn configmap(&self) -> Option<&ObjectName> {
        match self {
            ConfigProblem::Entry(e) => Some(&e.configmap),
            ConfigProblem::MissingPortMap { .. } => None,
            ConfigProblem::Unresolved { configmap, .. } => Some(configmap),
        }
    }

    /// A short PascalCase reason, as Kubernetes Events carry.
    pub fn reason(&self) -> &'static str {
        match self {
            ConfigProblem::Entry(e) => e.reason.as_str(),
            ConfigProblem::MissingPortMap { .. } => "PortMapNotFound",
            ConfigProblem::Unresolved { reason, .. } => match reason {
                UnresolvedReason::ServiceNotFound => "ServiceNotFound",
                UnresolvedReason::ServicePortNotFound => "ServicePortNotFound",
                UnresolvedReason::ExternalNameService => "ExternalNameService",
            },
        }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigProblem::Entry(e) => e.fmt(f),
            ConfigProblem::MissingPortMap { configmap } => write!(
                f,
                "ConfigMap {configmap} does not exist; no ports are mapped from it until it is created"
            ),
            ConfigProblem::Unresolved {
                key, spec, problem, ..
            } => write!(
                f,
                "port {key} -> {spec}: {problem}; the port stays open and refuses connections until it resolves"
            ),
        }
    }
}

/// Every route of the gateway at one instant, plus the problems found while building it.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: BTreeMap<RouteKey, Arc<Route>>,
    /// Problems in force, for logs, `/routes` and Events.
    pub problems: Vec<ConfigProblem>,
    /// Increases by one with every published table.
    pub generation: u64,
}

impl RouteTable {
    /// A table from its routes.
    pub fn new(routes: impl IntoIterator<Item = Route>, problems: Vec<ConfigProblem>) -> Self {
        Self {
            routes: routes.into_iter().map(|r| (r.key, Arc::new(r))).collect(),
            problems,
            generation: 0,
        }
    }

    /// The route of one `(port, protocol)`.
    pub fn get(&self, key: &RouteKey) -> Option<&Arc<Route>> {
        self.routes.get(key)
    }

    /// Each route's key, Service and endpoint addresses: what [`Metrics::retain`] keeps the
    /// series of.
    ///
    /// [`Metrics::retain`]: crate::telemetry::metrics::Metrics::retain
    pub fn in_force(&self) -> RoutesInForce {
        self.routes()
            .map(|r| {
                (
                    r.key,
                    r.spec.service.clone(),
                    r.endpoints.iter().map(|e| e.addr).collect(),
                )
            })
            .collect()
    }

    /// All routes in key order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    /// All keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &RouteKey> {
        self.routes.keys()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no port is mapped.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
