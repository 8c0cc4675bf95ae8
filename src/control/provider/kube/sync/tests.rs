//! Tests of the sync state machine: what is watched, when tables are published, and what a
//! re-list does, driven with hand-made watcher messages.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;
use crate::control::fixture::{self, Fixture};
use crate::control::index::IndexSettings;
use crate::control::provider::kube::watch::{Change, Failure, FailureKind, Message, ScopeKey};

fn map_name() -> ObjectName {
    ObjectName::new("dermaga", "tcp-services")
}

fn port_map(entries: &[(&str, &str)]) -> Object {
    fixture::port_map("dermaga", "tcp-services")
        .entries(entries)
        .object()
}

fn service(ns: &str, name: &str) -> Object {
    fixture::service(ns, name).object()
}

fn slice(ns: &str, name: &str, service: &str) -> Object {
    fixture::endpoint_slice(ns, name, service).object()
}

/// Drives a SyncState like the I/O loop does, remembering the watchers' generations.
struct Harness {
    state: SyncState,
    generations: std::collections::BTreeMap<ScopeKey, u64>,
    names: std::collections::BTreeMap<ScopeKey, BTreeSet<String>>,
    index: Index,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with(WatchPlan {
            port_maps: vec![(Protocol::Tcp, map_name())],
            ..WatchPlan::default()
        })
    }

    fn with(plan: WatchPlan) -> Self {
        let now = Instant::now();
        let (state, commands) = SyncState::new(plan, now);
        let mut h = Self {
            state,
            generations: Default::default(),
            names: Default::default(),
            index: Index::new(IndexSettings {
                port_maps: vec![(Protocol::Tcp, map_name())],
                ..IndexSettings::default()
            }),
            now,
        };
        h.run(commands);
        h
    }

    fn run(&mut self, commands: Vec<Command>) {
        for c in commands {
            match c {
                Command::Start {
                    scope,
                    names,
                    generation,
                } => {
                    self.generations.insert(scope.clone(), generation);
                    self.names.insert(scope, names);
                }
                Command::Stop(scope) => {
                    self.generations.remove(&scope);
                    self.names.remove(&scope);
                }
            }
        }
    }

    fn send(&mut self, scope: ScopeKey, change: Change) {
        let generation = self.generations[&scope];
        let commands = self.state.handle(
            Message {
                scope,
                generation,
                change,
            },
            self.now,
        );
        self.run(commands);
    }

    fn list(&mut self, scope: ScopeKey, objects: Vec<Object>) {
        self.send(scope.clone(), Change::ListStart);
        for o in objects {
            self.send(scope.clone(), Change::Listed(o));
        }
        self.send(scope, Change::ListDone);
    }

    /// Publishes if the state says so; returns whether it did.
    fn publish(&mut self) -> bool {
        match self.state.take_batch(self.now) {
            Some(batch) => {
                for op in batch {
                    op.run(&mut self.index);
                }
                true
            }
            None => false,
        }
    }

    fn watched(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|(k, n)| format!("{k} {n:?}"))
            .collect()
    }
}

fn services(ns: &str) -> ScopeKey {
    ScopeKey::Services(ns.into())
}
fn slices(ns: &str) -> ScopeKey {
    ScopeKey::Slices(ns.into())
}
fn pm() -> ScopeKey {
    ScopeKey::PortMap(map_name())
}

#[test]
fn first_table_waits_for_every_watch_including_those_the_map_starts() {
    let mut h = Harness::new();
    assert_eq!(h.watched(), vec!["configmap dermaga/tcp-services {}"]);
    assert!(!h.publish(), "nothing listed yet");
    h.list(
        pm(),
        vec![port_map(&[
            ("10000", "default/a:80"),
            ("10001", "other/b:80"),
        ])],
    );
    assert_eq!(
        h.watched(),
        vec![
            "configmap dermaga/tcp-services {}",
            "services in namespace default {\"a\"}",
            "services in namespace other {\"b\"}",
            "endpointslices in namespace default {\"a\"}",
            "endpointslices in namespace other {\"b\"}",
        ]
    );
    assert!(
        !h.publish(),
        "the Service and slice watches have not listed"
    );
    h.list(
        services("default"),
        vec![service("default", "a"), service("default", "unrelated")],
    );
    h.list(slices("default"), vec![slice("default", "a-1", "a")]);
    h.list(services("other"), vec![service("other", "b")]);
    assert!(!h.publish(), "one watch is still listing");
    h.list(slices("other"), vec![]);
    assert!(h.publish());
    assert!(h.index.service(&ObjectName::new("default", "a")).is_some());
    assert!(
        h.index
            .service(&ObjectName::new("default", "unrelated"))
            .is_none(),
        "only referenced Services are kept"
    );
    assert_eq!(
        h.index.slices_of(&ObjectName::new("default", "a")).count(),
        1
    );
    assert!(!h.publish(), "nothing new to publish");
}

#[test]
fn a_missing_port_map_still_syncs_and_its_creation_starts_the_service_watches() {
    let mut h = Harness::new();
    h.list(pm(), vec![]);
    assert!(
        h.publish(),
        "an absent map is a complete, empty configuration"
    );
    h.send(
        pm(),
        Change::Applied(port_map(&[("10000", "default/a:80")])),
    );
    assert_eq!(h.names.len(), 3);
    assert!(!h.publish(), "waits for the new watches");
    h.now += HOLD + Duration::from_millis(1);
    assert!(h.publish(), "but not longer than HOLD");
}

#[test]
fn a_relist_replaces_only_at_its_end_and_deletes_what_it_did_not_return() {
    let mut h = Harness::new();
    h.list(pm(), vec![port_map(&[("10000", "default/a:80")])]);
    h.list(services("default"), vec![service("default", "a")]);
    h.list(
        slices("default"),
        vec![slice("default", "a-1", "a"), slice("default", "a-2", "a")],
    );
    assert!(h.publish());
    // 410 Gone: the watcher lists again; a-2 was deleted while the watch was broken.
    h.send(slices("default"), Change::ListStart);
    h.send(
        slices("default"),
        Change::Listed(slice("default", "a-1", "a")),
    );
    assert!(!h.publish(), "mid-list nothing is published");
    assert_eq!(
        h.index.slices_of(&ObjectName::new("default", "a")).count(),
        2
    );
    h.send(slices("default"), Change::ListDone);
    assert!(h.publish());
    let left: Vec<_> = h
        .index
        .slices_of(&ObjectName::new("default", "a"))
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(left, vec!["a-1"]);
}

#[test]
fn references_follow_the_map_restarting_only_what_must_list_again() {
    let mut h = Harness::new();
    h.list(pm(), vec![port_map(&[("10000", "default/a:80")])]);
    h.list(services("default"), vec![service("default", "a")]);
    h.list(slices("default"), vec![]);
    assert!(h.publish());
    let before = h.generations.clone();

    // A new Service in the same namespace: both watches of the namespace start again.
    h.send(
        pm(),
        Change::Applied(port_map(&[
            ("10000", "default/a:80"),
            ("20000", "default/b:80"),
        ])),
    );
    assert_ne!(
        before[&services("default")],
        h.generations[&services("default")]
    );
    assert_eq!(
        h.names[&slices("default")],
        BTreeSet::from(["a".into(), "b".into()])
    );
    assert!(!h.publish(), "held until the new lists are in");
    h.list(
        services("default"),
        vec![service("default", "a"), service("default", "b")],
    );
    h.list(slices("default"), vec![slice("default", "b-1", "b")]);
    assert!(h.publish());
    assert!(h.index.service(&ObjectName::new("default", "b")).is_some());

    // Messages from the replaced watcher are ignored.
    let stale = Message {
        scope: services("default"),
        generation: before[&services("default")],
        change: Change::Deleted(service("default", "a")),
    };
    h.state.handle(stale, h.now);
    assert!(!h.publish());

    // Dropping b: the Service watch only filters (same generation); the slice watch restarts.
    let gen_services = h.generations[&services("default")];
    h.send(
        pm(),
        Change::Applied(port_map(&[("10000", "default/a:80")])),
    );
    assert_eq!(gen_services, h.generations[&services("default")]);
    assert_eq!(h.names[&slices("default")], BTreeSet::from(["a".into()]));
    h.list(slices("default"), vec![]);
    assert!(h.publish());
    assert!(h.index.service(&ObjectName::new("default", "b")).is_none());
    assert_eq!(
        h.index.slices_of(&ObjectName::new("default", "b")).count(),
        0
    );

    // Deleting the map stops every Service and slice watch and forgets their objects.
    h.send(pm(), Change::Deleted(port_map(&[])));
    assert_eq!(h.watched(), vec!["configmap dermaga/tcp-services {}"]);
    assert!(h.publish());
    assert!(h.index.config_map(&map_name()).is_none());
    assert!(h.index.service(&ObjectName::new("default", "a")).is_none());
}

#[test]
fn failures_change_nothing_and_a_service_that_leaves_the_filter_is_dropped() {
    let mut h = Harness::new();
    h.list(pm(), vec![port_map(&[("10000", "default/a:80")])]);
    h.list(services("default"), vec![service("default", "a")]);
    h.list(slices("default"), vec![]);
    assert!(h.publish());
    h.send(
        services("default"),
        Change::Failed(Failure {
            kind: FailureKind::Unavailable,
            error: "503 Service Unavailable".into(),
        }),
    );
    h.send(
        services("default"),
        Change::Failed(Failure {
            kind: FailureKind::Unavailable,
            error: "503 Service Unavailable".into(),
        }),
    );
    assert!(!h.publish(), "an error is not a change");
    assert!(h.index.service(&ObjectName::new("default", "a")).is_some());
    // An unreferenced Service's events are ignored.
    h.send(
        services("default"),
        Change::Applied(service("default", "zzz")),
    );
    assert!(!h.publish());
    h.send(
        services("default"),
        Change::Deleted(service("default", "a")),
    );
    assert!(h.publish());
    assert!(h.index.service(&ObjectName::new("default", "a")).is_none());
}

#[test]
fn with_the_gateway_api_routes_name_services_and_the_publish_service_is_watched() {
    let mut h = Harness::with(WatchPlan {
        port_maps: vec![(Protocol::Tcp, map_name())],
        gateway_api: true,
        publish_service: Some(ObjectName::new("dermaga", "dermaga")),
    });
    let gateway_api = |kind| ScopeKey::GatewayApi(kind);
    assert_eq!(
        h.watched(),
        vec![
            "configmap dermaga/tcp-services {}",
            "GatewayClass in all namespaces {}",
            "Gateway in all namespaces {}",
            "TCPRoute in all namespaces {}",
            "UDPRoute in all namespaces {}",
            "TLSRoute in all namespaces {}",
            "ReferenceGrant in all namespaces {}",
            "namespaces {}",
        ]
    );
    h.list(pm(), vec![]);
    for kind in [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::UdpRoute,
        Kind::TlsRoute,
        Kind::ReferenceGrant,
    ] {
        h.list(gateway_api(kind), vec![]);
    }
    h.list(ScopeKey::Namespaces, vec![]);
    let route = fixture::tcp_route("shop", "shop")
        .parent("infra/edge", None)
        .backend("web", 80, Some(9))
        .backend("payments/pay", 80, Some(1))
        .object();
    h.list(gateway_api(Kind::TcpRoute), vec![route]);
    let watched = h.watched();
    for scope in [
        "services in namespace shop {\"web\"}",
        "services in namespace payments {\"pay\"}",
        "endpointslices in namespace shop {\"web\"}",
        "services in namespace dermaga {\"dermaga\"}",
    ] {
        assert!(
            watched.iter().any(|w| w == scope),
            "{scope} not in {watched:?}"
        );
    }
    assert!(
        !h.publish(),
        "the Services the route names are not listed yet"
    );
    for ns in ["shop", "payments", "dermaga"] {
        h.list(services(ns), vec![]);
        h.list(slices(ns), vec![]);
    }
    assert!(h.publish());
    assert_eq!(h.index.gateway_api(Kind::TcpRoute).count(), 1);
    // The route is deleted: the Services it named are no longer watched; the publish
    // Service still is.
    let route = h.index.gateway_api(Kind::TcpRoute).next().unwrap().clone();
    h.send(gateway_api(Kind::TcpRoute), Change::Deleted(route));
    let watched = h.watched();
    assert!(
        !watched.iter().any(|w| w.contains("namespace shop")),
        "{watched:?}"
    );
    assert!(
        watched
            .iter()
            .any(|w| w == "services in namespace dermaga {\"dermaga\"}")
    );
    assert!(h.publish());
    assert_eq!(h.index.gateway_api(Kind::TcpRoute).count(), 0);
}
