//! The provider's state machine, without I/O: it takes watcher [`Message`]s, keeps track of
//! which scopes must be watched (from the port maps' references) and whether each has
//! completed its list, and hands out the batch of Index operations to publish and when.
//!
//! Rules:
//! - the first table is published only once every scope has completed its first list;
//! - a (re-)list is buffered and applied at its end as one replacement: objects the list did
//!   not return are deleted then, so a `410 Gone` re-list loses no route in between;
//! - later, while some scope is (re-)listing, publishing waits for it, at most [`HOLD`]: a new
//!   port-map entry then appears with its Service already known, not as "not found" first;
//! - errors change nothing: the last table stays in force while the watchers retry.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;

use super::references::{References, references, route_references};
use super::watch::{Change, Failure, FailureKind, Message, ScopeKey};
use crate::control::gateway_api::L4Route;
use crate::control::index::{GATEWAY_API_KINDS, Index, Kind, Object};
use crate::names::{ObjectName, Protocol};

/// How long a later (re-)list may hold back publishing other changes.
pub const HOLD: Duration = Duration::from_secs(2);

/// One change to make to the Index.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, like `Object` itself
pub enum Op {
    /// Add or replace.
    Apply(Object),
    /// Remove what the Index holds under this kind and name.
    Delete(Kind, ObjectName),
}

impl Op {
    /// Makes the change.
    pub fn run(self, index: &mut Index) {
        match self {
            Op::Apply(o) => index.apply(o),
            Op::Delete(kind, name) => index.delete(kind, &name),
        }
    }
}

/// What the I/O loop must do to the watchers.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Start (or restart: the old one is dropped) the watcher of a scope.
    Start {
        /// Which watcher.
        scope: ScopeKey,
        /// The referenced Service names (empty for a port map).
        names: BTreeSet<String>,
        /// The new watcher's generation.
        generation: u64,
    },
    /// Stop the watcher of a scope.
    Stop(ScopeKey),
}

#[derive(Debug)]
struct Scope {
    generation: u64,
    names: BTreeSet<String>,
    /// Objects of this scope now in the Index (or in the pending batch).
    held: BTreeSet<ObjectName>,
    /// `Some` while a list is being received.
    listing: Option<Vec<Object>>,
    /// Since when the scope has not had a complete list (`None`: it has one).
    unsynced_since: Option<Instant>,
    /// The error of the current failure streak, if any.
    failing: Option<Failure>,
}

/// What the provider watches, from the flags.
#[derive(Debug, Clone, Default)]
pub struct WatchPlan {
    /// The port maps (`--tcp-services-configmap`, `--udp-services-configmap`).
    pub port_maps: Vec<(Protocol, ObjectName)>,
    /// Whether the Gateway API kinds are watched (`--gateway-api`).
    pub gateway_api: bool,
    /// The LoadBalancer Service whose addresses Gateways report (`--publish-service`).
    pub publish_service: Option<ObjectName>,
}

/// The provider's state.
#[derive(Debug)]
pub struct SyncState {
    port_maps: Vec<(Protocol, ObjectName)>,
    maps: BTreeMap<ObjectName, ConfigMap>,
    /// The LoadBalancer Service whose addresses Gateways report (always referenced).
    publish_service: Option<ObjectName>,
    /// The TCPRoutes and UDPRoutes as last seen: their backendRefs are references too.
    routes: BTreeMap<(Kind, ObjectName), L4Route>,
    scopes: BTreeMap<ScopeKey, Scope>,
    next_generation: u64,
    pending: Vec<Op>,
    published_once: bool,
}

impl SyncState {
    /// A state for what `plan` names; returns the commands that start the first watchers.
    pub fn new(plan: WatchPlan, now: Instant) -> (Self, Vec<Command>) {
        let WatchPlan {
            port_maps,
            gateway_api,
            publish_service,
        } = plan;
        let mut state = Self {
            port_maps,
            publish_service,
            maps: BTreeMap::new(),
            routes: BTreeMap::new(),
            scopes: BTreeMap::new(),
            next_generation: 1,
            pending: Vec::new(),
            published_once: false,
        };
        let names: BTreeSet<ObjectName> = state.port_maps.iter().map(|(_, n)| n.clone()).collect();
        let mut scopes: Vec<ScopeKey> = names.into_iter().map(ScopeKey::PortMap).collect();
        if gateway_api {
            scopes.extend(GATEWAY_API_KINDS.map(ScopeKey::GatewayApi));
            scopes.push(ScopeKey::Namespaces);
        }
        let commands = scopes
            .into_iter()
            .map(|key| state.start(key, BTreeSet::new(), now))
            .collect();
        (state, commands)
    }

    fn start(&mut self, key: ScopeKey, names: BTreeSet<String>, now: Instant) -> Command {
        let generation = self.next_generation;
        self.next_generation += 1;
        let scope = self.scopes.entry(key.clone()).or_insert_with(|| Scope {
            generation,
            names: BTreeSet::new(),
            held: BTreeSet::new(),
            listing: None,
            unsynced_since: None,
            failing: None,
        });
        scope.generation = generation;
        scope.names = names.clone();
        scope.listing = None;
        scope.unsynced_since = Some(now);
        Command::Start {
            scope: key,
            names,
            generation,
        }
    }

    /// Takes one watcher message. Returns the commands it leads to (a port map changed the
    /// set of referenced Services).
    pub fn handle(&mut self, message: Message, now: Instant) -> Vec<Command> {
        let Some(scope) = self.scopes.get_mut(&message.scope) else {
            return Vec::new();
        };
        if scope.generation != message.generation {
            return Vec::new();
        }
        let key = message.scope;
        if matches!(
            message.change,
            Change::ListDone | Change::Applied(_) | Change::Deleted(_) | Change::Recovered
        ) && let Some(error) = scope.failing.take()
        {
            tracing::info!(watch = %key, after = %error.error, "Kubernetes API watch recovered");
        }
        let wanted = |o: &Object, names: &BTreeSet<String>| match &key {
            ScopeKey::PortMap(name) => o.name() == *name,
            ScopeKey::Services(_) => names.contains(&o.name().name),
            ScopeKey::Slices(_) => slice_service(o).is_some_and(|s| names.contains(s)),
            ScopeKey::GatewayApi(_) | ScopeKey::Namespaces => true,
        };
        let mut refs_changed = false;
        match message.change {
            Change::ListStart => {
                scope.listing = Some(Vec::new());
                scope.unsynced_since.get_or_insert(now);
            }
            Change::Listed(o) => {
                if wanted(&o, &scope.names)
                    && let Some(list) = scope.listing.as_mut()
                {
                    list.push(o);
                }
            }
            Change::ListDone => {
                let listed = scope.listing.take().unwrap_or_default();
                let kind = kind_of(&key);
                let now_held: BTreeSet<ObjectName> = listed.iter().map(Object::name).collect();
                for gone in scope.held.difference(&now_held) {
                    self.pending.push(Op::Delete(kind, gone.clone()));
                    refs_changed |= forget(&mut self.maps, &mut self.routes, kind, gone);
                }
                for o in listed {
                    refs_changed |= remember(&mut self.maps, &mut self.routes, &o);
                    self.pending.push(Op::Apply(o));
                }
                scope.held = now_held;
                scope.unsynced_since = None;
            }
            Change::Applied(o) => {
                let name = o.name();
                if wanted(&o, &scope.names) {
                    scope.held.insert(name);
                    refs_changed |= remember(&mut self.maps, &mut self.routes, &o);
                    self.pending.push(Op::Apply(o));
                } else if scope.held.remove(&name) {
                    self.pending.push(Op::Delete(o.kind(), name));
                }
            }
            Change::Deleted(o) => {
                let name = o.name();
                if scope.held.remove(&name) {
                    refs_changed |= forget(&mut self.maps, &mut self.routes, o.kind(), &name);
                    self.pending.push(Op::Delete(o.kind(), name));
                }
            }
            Change::Expired => {
                tracing::info!(watch = %key, "resource version expired (410 Gone); listing again");
            }
            Change::Recovered => {}
            Change::Failed(failure) => {
                let new = scope
                    .failing
                    .as_ref()
                    .is_none_or(|f| f.kind != failure.kind);
                let error = &failure.error;
                match failure.kind {
                    _ if !new => {
                        tracing::debug!(watch = %key, %error, "Kubernetes API watch still failing")
                    }
                    FailureKind::Forbidden => tracing::error!(
                        watch = %key,
                        %error,
                        "Kubernetes API watch forbidden by RBAC: grant dermaga's ServiceAccount list and watch on {} (deploy/base/rbac.yaml, docs/install.md#rbac); retrying with backoff, the last table stays in force",
                        key.grant()
                    ),
                    FailureKind::NotFound => tracing::error!(
                        watch = %key,
                        %error,
                        "the Kubernetes API does not serve {}: install the standard-channel CRDs of Gateway API v1.6 (docs/gateway-api.md#install), or run without --gateway-api; retrying with backoff, the last table stays in force",
                        key.resource()
                    ),
                    FailureKind::Unauthorized => tracing::error!(
                        watch = %key,
                        %error,
                        "Kubernetes API refused dermaga's credentials (401; an expired or revoked token?); retrying with backoff, the last table stays in force"
                    ),
                    FailureKind::Unavailable => tracing::warn!(
                        watch = %key,
                        %error,
                        "Kubernetes API watch failed; retrying with backoff, the last table stays in force"
                    ),
                }
                scope.failing = Some(failure);
            }
        }
        if refs_changed {
            self.reconcile(now)
        } else {
            Vec::new()
        }
    }

    /// The Services the port maps and the routes name now.
    pub fn references(&self) -> References {
        let mut refs = references(
            self.port_maps
                .iter()
                .filter_map(|(p, n)| self.maps.get(n).map(|cm| (*p, n, cm))),
        );
        if let Some(service) = &self.publish_service {
            refs.entry(service.namespace.clone())
                .or_default()
                .insert(service.name.clone());
        }
        for ((_, name), route) in &self.routes {
            for (namespace, service) in route_references(name, route) {
                refs.entry(namespace).or_default().insert(service);
            }
        }
        refs
    }

    /// Starts, restarts and stops Service and EndpointSlice watchers to follow the references.
    fn reconcile(&mut self, now: Instant) -> Vec<Command> {
        let refs = self.references();
        let mut commands = Vec::new();
        for (ns, names) in &refs {
            let services = ScopeKey::Services(ns.clone());
            match self.scopes.get_mut(&services) {
                Some(scope) if names.is_subset(&scope.names) => {
                    // Fewer references: filter here, no need to list again.
                    let dropped: Vec<ObjectName> = scope
                        .held
                        .iter()
                        .filter(|n| !names.contains(&n.name))
                        .cloned()
                        .collect();
                    for name in dropped {
                        scope.held.remove(&name);
                        self.pending.push(Op::Delete(Kind::Service, name));
                    }
                    scope.names = names.clone();
                }
                // A new Service to know: the list must be read again, as only referenced
                // Services are kept.
                _ => commands.push(self.start(services, names.clone(), now)),
            }
            let slices = ScopeKey::Slices(ns.clone());
            if self.scopes.get(&slices).is_none_or(|s| s.names != *names) {
                commands.push(self.start(slices, names.clone(), now));
            }
        }
        let stale: Vec<ScopeKey> = self
            .scopes
            .keys()
            .filter(|k| match k {
                ScopeKey::PortMap(_) | ScopeKey::GatewayApi(_) | ScopeKey::Namespaces => false,
                ScopeKey::Services(ns) | ScopeKey::Slices(ns) => !refs.contains_key(ns),
            })
            .cloned()
            .collect();
        for key in stale {
            let scope = self.scopes.remove(&key).expect("listed above");
            let kind = kind_of(&key);
            self.pending
                .extend(scope.held.into_iter().map(|n| Op::Delete(kind, n)));
            commands.push(Command::Stop(key));
        }
        commands
    }

    /// When publishing is held back by a (re-)listing scope, the instant it may go ahead anyway.
    pub fn hold_until(&self) -> Option<Instant> {
        if !self.published_once || self.pending.is_empty() {
            return None;
        }
        self.scopes
            .values()
            .filter_map(|s| s.unsynced_since)
            .min()
            .map(|since| since + HOLD)
    }

    /// The batch to publish now, if it is time: everything pending, once no scope is listing
    /// (or the hold has passed; never before the first complete sync).
    pub fn take_batch(&mut self, now: Instant) -> Option<Vec<Op>> {
        let oldest_unsynced = self.scopes.values().filter_map(|s| s.unsynced_since).min();
        let go = match oldest_unsynced {
            None => true,
            Some(since) => self.published_once && now >= since + HOLD,
        };
        if !go || (self.published_once && self.pending.is_empty()) {
            return None;
        }
        if !self.published_once {
            tracing::info!(
                watches = self.scopes.len(),
                "initial lists complete; publishing the first table"
            );
        } else if oldest_unsynced.is_some() {
            let waiting: Vec<String> = self
                .scopes
                .iter()
                .filter(|(_, s)| s.unsynced_since.is_some())
                .map(|(k, _)| k.to_string())
                .collect();
            tracing::warn!(?waiting, hold = ?HOLD, "publishing without waiting longer for these lists");
        }
        self.published_once = true;
        Some(std::mem::take(&mut self.pending))
    }

    /// The port-map ConfigMaps as last seen.
    pub fn port_map(&self, name: &ObjectName) -> Option<&ConfigMap> {
        self.maps.get(name)
    }
}

fn kind_of(key: &ScopeKey) -> Kind {
    match key {
        ScopeKey::PortMap(_) => Kind::ConfigMap,
        ScopeKey::Services(_) => Kind::Service,
        ScopeKey::Slices(_) => Kind::EndpointSlice,
        ScopeKey::GatewayApi(kind) => *kind,
        ScopeKey::Namespaces => Kind::Namespace,
    }
}

/// Keeps what decides the references (a port map, a route); true if it was one.
fn remember(
    maps: &mut BTreeMap<ObjectName, ConfigMap>,
    routes: &mut BTreeMap<(Kind, ObjectName), L4Route>,
    object: &Object,
) -> bool {
    match object {
        Object::ConfigMap(cm) => {
            maps.insert(object.name(), cm.clone());
            true
        }
        Object::TcpRoute(r) | Object::UdpRoute(r) | Object::TlsRoute(r) => {
            routes.insert((object.kind(), object.name()), r.clone());
            true
        }
        _ => false,
    }
}

/// Forgets a port map or route; true if it was one.
fn forget(
    maps: &mut BTreeMap<ObjectName, ConfigMap>,
    routes: &mut BTreeMap<(Kind, ObjectName), L4Route>,
    kind: Kind,
    name: &ObjectName,
) -> bool {
    match kind {
        Kind::ConfigMap => {
            maps.remove(name);
            true
        }
        Kind::TcpRoute | Kind::UdpRoute | Kind::TlsRoute => {
            routes.remove(&(kind, name.clone()));
            true
        }
        _ => false,
    }
}

fn slice_service(o: &Object) -> Option<&String> {
    match o {
        Object::EndpointSlice(s) => s
            .metadata
            .labels
            .as_ref()?
            .get(crate::control::index::SERVICE_NAME_LABEL),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
