//! The immutable routing table that the data plane reads, one `Arc` load per connection.
//!
//! A [`RouteTable`] is built by [`crate::control::build`] and never mutated afterwards, except
//! for the round-robin cursor of each backend, an atomic counter that only spreads load.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::configmap::{Balance, EntryError, RouteSpec, WeightedBackend};
use super::gateway_status::GatewayApiStatus;
use crate::names::{ObjectName, PortSpan, RouteKey};
use crate::telemetry::metrics::{RouteInForce, RoutesInForce};

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

/// One weighted backend of a route as the build resolved it: its endpoints, or why it has none
/// to look for (a missing Service or port).
#[derive(Debug)]
pub struct ResolvedBackend {
    /// The Service port and its weight.
    pub spec: WeightedBackend,
    /// Its endpoints, or the problem that kept it from resolving.
    pub endpoints: Result<Vec<Endpoint>, String>,
}

/// One weighted Service port of a route.
#[derive(Debug)]
pub struct Backend {
    /// The Service port and its weight.
    pub spec: WeightedBackend,
    /// Indices into the route's endpoints that take its new connections.
    active: Vec<usize>,
    /// The rule that chose `active`.
    pub selection: Selection,
    /// Why it does not resolve; connections it is picked for are refused (Gateway API's rule:
    /// an invalid backend's share is rejected, not moved to the others).
    pub problem: Option<String>,
    cursor: AtomicUsize,
}

impl Backend {
    /// Number of its endpoints that take new connections.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }
}

/// The resolved destination of one `(port, protocol)`.
#[derive(Debug)]
pub struct Route {
    /// The route's key.
    pub key: RouteKey,
    /// The entry that produced it.
    pub spec: RouteSpec,
    /// Every endpoint of every backend, in a stable order (backend by backend).
    pub endpoints: Vec<Endpoint>,
    /// Where connections go: the entry's Service alone, or the `backends` option's split.
    pub backends: Vec<Backend>,
    /// Indices into `endpoints` that take new connections (of every backend with a weight).
    active: Vec<usize>,
    /// The best rule any weighted backend's endpoints were chosen by.
    pub selection: Selection,
    /// Why the route has no endpoints, or some backend none, when there is a reason to tell
    /// (missing Service, missing port, ...).
    pub problem: Option<String>,
    /// True when the entry in the ConfigMap is currently invalid and this route is the
    /// previous good one, kept until the entry is fixed.
    pub kept_from_previous: bool,
    /// Sum of the backends' weights.
    total_weight: u64,
    /// A TLS passthrough port: the routes by server name, oldest first (empty otherwise).
    pub sni: Vec<SniRoute>,
    /// The Gateway API route it comes from as `Kind/namespace/name`, for the access log.
    pub route_label: Option<Arc<str>>,
}

/// One TLSRoute on a TLS passthrough port: the server names it takes, and where they go.
#[derive(Debug)]
pub struct SniRoute {
    /// Exact names and `*.suffix` patterns, lower case; empty: every name (and none).
    pub hostnames: Vec<String>,
    /// The route those connections take (its backends, retries, health).
    pub route: Arc<Route>,
}

/// The endpoints that take new connections, by the design's rule, and the rule used.
fn choose_active(endpoints: &[Endpoint], range: std::ops::Range<usize>) -> (Vec<usize>, Selection) {
    // A terminating endpoint takes no new connection while another is ready, even if its
    // slice still says ready (a controller may lag behind the pod's deletion).
    let ready: Vec<usize> = range
        .clone()
        .filter(|&i| endpoints[i].ready && !endpoints[i].terminating)
        .collect();
    if !ready.is_empty() {
        return (ready, Selection::Ready);
    }
    let fallback: Vec<usize> = range
        .filter(|&i| endpoints[i].serving && endpoints[i].terminating)
        .collect();
    if fallback.is_empty() {
        (fallback, Selection::None)
    } else {
        (fallback, Selection::ServingTerminating)
    }
}

impl Route {
    /// A route to the entry's own Service, with its endpoints (or the problem that left it
    /// without any).
    pub fn new(
        key: RouteKey,
        spec: RouteSpec,
        endpoints: Vec<Endpoint>,
        problem: Option<String>,
    ) -> Self {
        let backend = ResolvedBackend {
            spec: WeightedBackend {
                service: spec.service.clone(),
                service_port: spec.service_port.clone(),
                weight: 1,
                invalid: None,
            },
            endpoints: match problem {
                Some(problem) => Err(problem),
                None => Ok(endpoints),
            },
        };
        Self::split(key, spec, vec![backend])
    }

    /// A route over weighted backends, choosing each one's active endpoints by the design's
    /// rule.
    pub fn split(key: RouteKey, spec: RouteSpec, resolved: Vec<ResolvedBackend>) -> Self {
        let single = resolved.len() == 1;
        let mut endpoints = Vec::new();
        let mut backends = Vec::with_capacity(resolved.len());
        let mut problems = Vec::new();
        for backend in resolved {
            let (members, problem) = match backend.endpoints {
                Ok(members) => (members, None),
                Err(problem) => (Vec::new(), Some(problem)),
            };
            let range = endpoints.len()..endpoints.len() + members.len();
            endpoints.extend(members);
            let (active, selection) = choose_active(&endpoints, range);
            if let Some(problem) = &problem {
                problems.push(if single {
                    problem.clone()
                } else {
                    format!("backend {}: {problem}", backend.spec)
                });
            }
            backends.push(Backend {
                spec: backend.spec,
                active,
                selection,
                problem,
                cursor: AtomicUsize::new(0),
            });
        }
        let weighted = || backends.iter().filter(|b| b.spec.weight > 0);
        let active: Vec<usize> = weighted().flat_map(|b| b.active.iter().copied()).collect();
        let selection = [Selection::Ready, Selection::ServingTerminating]
            .into_iter()
            .find(|s| weighted().any(|b| b.selection == *s))
            .unwrap_or(Selection::None);
        let total_weight = backends.iter().map(|b| u64::from(b.spec.weight)).sum();
        let route_label = spec
            .route
            .as_ref()
            .map(|r| Arc::from(format!("{}/{}", r.kind, r.name)));
        Self {
            key,
            spec,
            endpoints,
            active,
            selection,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
            kept_from_previous: false,
            total_weight,
            backends,
            sni: Vec::new(),
            route_label,
        }
    }

    /// On a TLS passthrough port, the route for server name `name` (`None`: the client sent
    /// none) and the hostname that matched it (`*` for a route that takes every name): an exact
    /// name first, then the longest matching `*.suffix`, then a route without hostnames; among
    /// equals the oldest route.
    pub fn by_server_name(&self, name: Option<&str>) -> Option<(&Arc<Route>, &str)> {
        let mut best: Option<(&Arc<Route>, &str, usize)> = None;
        for sni in &self.sni {
            if sni.hostnames.is_empty() {
                if best.is_none() {
                    best = Some((&sni.route, "*", 0));
                }
                continue;
            }
            let Some(name) = name else { continue };
            for pattern in &sni.hostnames {
                if !super::gateway_api::hostname_matches(pattern, name) {
                    continue;
                }
                // Exact beats any wildcard; a longer wildcard beats a shorter one.
                let rank = if pattern.starts_with('*') {
                    pattern.len()
                } else {
                    usize::MAX
                };
                if best.is_none_or(|(_, _, r)| rank > r) {
                    best = Some((&sni.route, pattern.as_str(), rank));
                }
            }
        }
        best.map(|(route, pattern, _)| (route, pattern))
    }

    /// The port, or the range its entry opened (the `port` label of its series).
    pub fn span(&self) -> PortSpan {
        self.spec.range.unwrap_or(PortSpan::single(self.key.port))
    }

    /// Endpoints that take new connections.
    pub fn active_endpoints(&self) -> impl ExactSizeIterator<Item = &Endpoint> + '_ {
        self.active.iter().map(|&i| &self.endpoints[i])
    }

    /// Number of endpoints that take new connections.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// The backend a new connection goes to: by weight, at random, or by the client's hash
    /// (`source-hash`: a client keeps its backend while the weights stay); the only one, without
    /// a draw, when there is one; `None` when every weight is 0.
    fn choose_backend(&self, client: Option<IpAddr>) -> Option<usize> {
        if self.backends.len() == 1 {
            return (self.total_weight > 0).then_some(0);
        }
        if self.total_weight == 0 {
            return None;
        }
        let mut draw = match client {
            Some(client) if self.spec.options.balance == Balance::SourceHash => {
                mix(hash_ip(client)) % self.total_weight
            }
            _ => fastrand::u64(0..self.total_weight),
        };
        self.backends.iter().position(|b| {
            let weight = u64::from(b.spec.weight);
            if draw < weight {
                true
            } else {
                draw -= weight;
                false
            }
        })
    }

    /// The order in which to try endpoints for one new connection: the chosen backend's active
    /// endpoints from its round-robin cursor (the first is the pick), then the other weighted
    /// backends' for retries. Empty when the chosen backend does not resolve: its share of the
    /// connections is refused.
    pub fn pick_order(&self) -> PickOrder<'_> {
        self.pick_order_usable(|_| true)
    }

    /// Like [`Route::pick_order`], but the first endpoint is one for which `usable` holds
    /// (when any of the chosen backend's does): an unusable endpoint's turn passes to the next
    /// turn of the cursor, not to its neighbour, so the load of a skipped endpoint spreads
    /// evenly over the others.
    pub fn pick_order_usable(&self, usable: impl Fn(&Endpoint) -> bool) -> PickOrder<'_> {
        self.pick_order_for(None, usable, |_| 0)
    }

    /// The order in which to try endpoints for one new connection or flow from `client`, by
    /// the port's `balance` option: the first is the pick among the chosen backend's usable
    /// endpoints (round robin, fewest `load`, the less loaded of two at random, or the client
    /// address's rendezvous hash), then the rest of that backend's endpoints in turn from the
    /// pick, then the other weighted backends' for retries. Without a `client` (tests),
    /// `source-hash` falls back to round robin.
    pub fn pick_order_for(
        &self,
        client: Option<IpAddr>,
        usable: impl Fn(&Endpoint) -> bool,
        load: impl Fn(&Endpoint) -> usize,
    ) -> PickOrder<'_> {
        let first = self
            .choose_backend(client)
            .filter(|&b| self.backends[b].problem.is_none());
        let mut start = 0;
        if let Some(backend) = first.map(|b| &self.backends[b]) {
            let member = |i: usize| &self.endpoints[backend.active[i]];
            start = match (self.spec.options.balance, client) {
                (Balance::SourceHash, Some(client)) => {
                    source_hash_pick(client, backend.active.len(), &member, &usable)
                }
                (Balance::LeastConnections, _) => {
                    least_loaded_pick(backend, &member, &usable, &load)
                }
                (Balance::RandomTwo, _) => random_two_pick(backend, &member, &usable, &load),
                _ => round_robin_pick(backend, &member, &usable),
            };
        }
        PickOrder {
            route: self,
            first,
            start,
            segment: 0,
            taken: 0,
        }
    }

    /// True when both routes would send traffic the same way.
    pub fn same_as(&self, other: &Route) -> bool {
        self.spec == other.spec
            && self.endpoints == other.endpoints
            && self.problem == other.problem
            && self.sni.len() == other.sni.len()
            && self
                .sni
                .iter()
                .zip(&other.sni)
                .all(|(a, b)| a.hostnames == b.hostnames && a.route.same_as(&b.route))
    }
}

/// The next endpoint in turn that is usable (the turn after the last when none is).
fn round_robin_pick<'a>(
    backend: &Backend,
    member: &impl Fn(usize) -> &'a Endpoint,
    usable: &impl Fn(&Endpoint) -> bool,
) -> usize {
    let n = backend.active.len();
    let mut start = 0;
    for _ in 0..n {
        start = backend.cursor.fetch_add(1, Ordering::Relaxed) % n;
        if usable(member(start)) {
            break;
        }
    }
    start
}

/// The usable endpoint with the least load; ties go to the first in turn, so that equal
/// endpoints share new connections in round robin.
fn least_loaded_pick<'a>(
    backend: &Backend,
    member: &impl Fn(usize) -> &'a Endpoint,
    usable: &impl Fn(&Endpoint) -> bool,
    load: &impl Fn(&Endpoint) -> usize,
) -> usize {
    let n = backend.active.len();
    let from = backend.cursor.fetch_add(1, Ordering::Relaxed);
    let mut best: Option<(usize, usize)> = None;
    for k in 0..n {
        let i = (from + k) % n;
        let e = member(i);
        if !usable(e) {
            continue;
        }
        let l = load(e);
        if best.is_none_or(|(_, b)| l < b) {
            best = Some((i, l));
        }
    }
    best.map_or(from % n.max(1), |(i, _)| i)
}

/// Two usable endpoints drawn at random, the less loaded of them (the first on a tie).
fn random_two_pick<'a>(
    backend: &Backend,
    member: &impl Fn(usize) -> &'a Endpoint,
    usable: &impl Fn(&Endpoint) -> bool,
    load: &impl Fn(&Endpoint) -> usize,
) -> usize {
    let n = backend.active.len();
    let candidates: Vec<usize> = (0..n).filter(|&i| usable(member(i))).collect();
    match candidates.len() {
        0 => round_robin_pick(backend, member, &|_| true),
        1 => candidates[0],
        m => {
            let a = fastrand::usize(0..m);
            let b = (a + 1 + fastrand::usize(0..m - 1)) % m;
            let (a, b) = (candidates[a], candidates[b]);
            if load(member(b)) < load(member(a)) {
                b
            } else {
                a
            }
        }
    }
}

/// The usable endpoint with the highest rendezvous weight for `client` (every endpoint when
/// none is usable): removing an endpoint moves only the clients it had.
fn source_hash_pick<'a>(
    client: IpAddr,
    n: usize,
    member: &impl Fn(usize) -> &'a Endpoint,
    usable: &impl Fn(&Endpoint) -> bool,
) -> usize {
    let client = hash_ip(client);
    let weight = |i: usize| mix(client ^ mix(hash_addr(member(i).addr)));
    let best =
        |filter: &dyn Fn(usize) -> bool| (0..n).filter(|&i| filter(i)).max_by_key(|&i| weight(i));
    best(&|i| usable(member(i)))
        .or_else(|| best(&|_| true))
        .unwrap_or(0)
}

/// A stable 64-bit value of an address (the same in every replica and release).
fn hash_ip(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            mix(bits as u64) ^ (bits >> 64) as u64
        }
    }
}

fn hash_addr(addr: SocketAddr) -> u64 {
    mix(hash_ip(addr.ip())) ^ u64::from(addr.port())
}

/// SplitMix64's finalizer: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PickOrder<'_> {
    /// True when the draw chose a backend that does not resolve: nothing is to be tried.
    pub fn refused(&self) -> bool {
        self.first.is_none()
    }
}

/// Iterator over the endpoints to try for one connection (see [`Route::pick_order`]).
pub struct PickOrder<'a> {
    route: &'a Route,
    /// The chosen backend (`None`: refuse).
    first: Option<usize>,
    /// Where in the chosen backend's active endpoints to begin.
    start: usize,
    /// 0: the chosen backend; `s > 0`: backend `s - 1` (skipped if chosen or weightless).
    segment: usize,
    /// Endpoints of the current segment handed out.
    taken: usize,
}

impl<'a> Iterator for PickOrder<'a> {
    type Item = &'a Endpoint;
    fn next(&mut self) -> Option<Self::Item> {
        let first = self.first?;
        let backends = &self.route.backends;
        while self.segment <= backends.len() {
            let (b, rotation) = if self.segment == 0 {
                (first, self.start)
            } else {
                let b = self.segment - 1;
                (b, backends[b].cursor.load(Ordering::Relaxed))
            };
            let backend = &backends[b];
            let skip = self.segment > 0 && (b == first || backend.spec.weight == 0);
            let n = backend.active.len();
            if !skip && self.taken < n {
                let i = backend.active[(rotation + self.taken) % n];
                self.taken += 1;
                return Some(&self.route.endpoints[i]);
            }
            self.segment += 1;
            self.taken = 0;
        }
        None
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
    /// A Gateway API object not served as written: a listener whose port is taken, a route
    /// that cannot attach, a backend reference that may not be followed.
    GatewayApi {
        /// `Gateway`, `TCPRoute`, ...
        kind: &'static str,
        /// The object.
        object: ObjectName,
        /// The Gateway API condition reason (`Conflicted`, `NotAllowedByListeners`, ...).
        reason: &'static str,
        /// What is wrong, in words.
        message: String,
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
    /// A Gateway API backend reference that may not be followed (another namespace without a
    /// ReferenceGrant, or not a Service).
    RefNotPermitted,
}

impl ConfigProblem {
    /// The port map the problem is in, when there is one to attach an Event to.
    pub fn configmap(&self) -> Option<&ObjectName> {
        match self {
            ConfigProblem::Entry(e) => Some(&e.configmap),
            ConfigProblem::MissingPortMap { .. } => None,
            ConfigProblem::Unresolved { configmap, .. } => Some(configmap),
            ConfigProblem::GatewayApi { .. } => None,
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
                UnresolvedReason::RefNotPermitted => "RefNotPermitted",
            },
            ConfigProblem::GatewayApi { reason, .. } => reason,
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
            ConfigProblem::GatewayApi {
                kind,
                object,
                message,
                ..
            } => write!(f, "{kind} {object}: {message}"),
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
    /// The conditions of the Gateway API objects dermaga serves (what the status writer
    /// reports).
    pub gateway_status: Arc<GatewayApiStatus>,
}

impl RouteTable {
    /// A table from its routes.
    pub fn new(routes: impl IntoIterator<Item = Route>, problems: Vec<ConfigProblem>) -> Self {
        Self {
            routes: routes.into_iter().map(|r| (r.key, Arc::new(r))).collect(),
            problems,
            generation: 0,
            gateway_status: Arc::default(),
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
                    RouteInForce {
                        span: r.span(),
                        service: r.spec.service.clone(),
                        // A TLS passthrough port's endpoints are its server names' routes'.
                        endpoints: std::iter::once(r)
                            .chain(r.sni.iter().map(|s| &s.route))
                            .flat_map(|r| r.endpoints.iter().map(|e| e.addr))
                            .collect(),
                    },
                )
            })
            .collect()
    }

    /// The hostnames TLS passthrough ports serve, by port (`*` for a route without any).
    pub fn server_names(&self) -> std::collections::HashSet<(u16, String)> {
        self.routes()
            .flat_map(|r| {
                r.sni.iter().flat_map(move |s| {
                    let port = r.key.port.get();
                    let names: Vec<(u16, String)> = if s.hostnames.is_empty() {
                        vec![(port, "*".to_owned())]
                    } else {
                        s.hostnames.iter().map(|h| (port, h.clone())).collect()
                    };
                    names
                })
            })
            .collect()
    }

    /// The Gateway API routes serving ports: port, route kind, route name.
    pub fn gateway_routes(&self) -> Vec<(RouteKey, &'static str, ObjectName)> {
        self.routes_with_endpoints()
            .filter_map(|r| {
                let route = r.spec.route.as_ref()?;
                Some((r.key, route.kind, route.name.clone()))
            })
            .collect()
    }

    /// All routes in key order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    /// Every route that has endpoints of its own: each port's, and on a TLS passthrough port
    /// each server name's (with the port's key).
    pub fn routes_with_endpoints(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes
            .values()
            .flat_map(|r| std::iter::once(r).chain(r.sni.iter().map(|s| &s.route)))
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
