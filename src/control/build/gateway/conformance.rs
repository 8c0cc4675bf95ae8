//! Upstream's conformance cases for TCPRoute, UDPRoute and the Gateway, as `build()` tests.
//!
//! The suite (`sigs.k8s.io/gateway-api/conformance` v1.6.3, `conformance/tests/*.go`) needs
//! real pods, so each case here sets up what its YAML does (Gateways, routes, Services) with
//! fixtures and checks what its Go test asserts of the status, and which backend its traffic
//! reaches at the table. One test per upstream `ShortName`, named after it; traffic through
//! real sockets and the real API server is in `tests/it/gateway_api.rs` and
//! `tests/it/weights.rs`. docs/gateway-api.md has the table.

use crate::control::build::build;
use crate::control::build::tests::index;
use crate::control::fixture::{
    Fixture, endpoint, endpoint_slice, gateway, gateway_class, port, reference_grant, service,
    tcp_route, tls_route, udp_route,
};
use crate::control::gateway_api::DEFAULT_CONTROLLER_NAME;
use crate::control::gateway_status::{Condition, ListenerStatus, Observed};
use crate::control::index::{Kind, Object};
use crate::control::table::RouteTable;
use crate::names::{ListenPort, ObjectName, Protocol, RouteKey};

const INFRA: &str = "gateway-conformance-infra";

/// Service `ns/name` with TCP and UDP port 3000, one ready endpoint at `ip`.
fn echo(ns: &str, name: &str, ip: &str) -> [Object; 2] {
    [
        service(ns, name)
            .port(port(3000).named("tcp"))
            .port(port(3000).named("udp").udp())
            .object(),
        endpoint_slice(ns, &format!("{name}-1"), name)
            .port(port(3000).named("tcp"))
            .port(port(3000).named("udp").udp())
            .endpoint(endpoint(ip).ready(true))
            .object(),
    ]
}

/// The TCP and UDP route kinds with their listener protocol: the cases upstream has for both.
const L4_KINDS: [(Kind, &str, Protocol); 2] = [
    (Kind::TcpRoute, "TCP", Protocol::Tcp),
    (Kind::UdpRoute, "UDP", Protocol::Udp),
];

/// A TCPRoute or UDPRoute `name` in the conformance namespace.
fn route_of(kind: Kind, name: &str) -> crate::control::fixture::RouteFixture {
    match kind {
        Kind::TcpRoute => tcp_route(INFRA, name),
        _ => udp_route(INFRA, name),
    }
}

fn class() -> Object {
    gateway_class("conformance", DEFAULT_CONTROLLER_NAME).object()
}

fn key(port: u16, protocol: Protocol) -> RouteKey {
    RouteKey {
        port: ListenPort::new(port).unwrap(),
        protocol,
    }
}

/// The Service that serves `port` (its first backend), or `None` when nothing does.
fn served_by(t: &RouteTable, port: u16, protocol: Protocol) -> Option<String> {
    let route = t.get(&key(port, protocol))?;
    (route.active_count() > 0).then(|| route.backends[0].spec.service.to_string())
}

fn cond(conditions: &[Condition], type_: &str) -> (bool, &'static str) {
    let c = conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {conditions:?}"));
    (c.status, c.reason)
}

fn parent_conditions<'a>(t: &'a RouteTable, kind: Kind, route: &str) -> &'a [Condition] {
    let name = ObjectName::new(INFRA, route);
    &t.gateway_status.routes[&(kind, name)].parents[0].conditions
}

fn listener<'a>(t: &'a RouteTable, gateway: &str, name: &str) -> &'a ListenerStatus {
    t.gateway_status.gateways[&ObjectName::new(INFRA, gateway)]
        .listeners
        .iter()
        .find(|l| l.name == name)
        .unwrap()
}

fn accepted(t: &RouteTable, kind: Kind, route: &str) -> (bool, &'static str) {
    cond(parent_conditions(t, kind, route), "Accepted")
}

fn resolved(t: &RouteTable, kind: Kind, route: &str) -> (bool, &'static str) {
    cond(parent_conditions(t, kind, route), "ResolvedRefs")
}

/// The Gateway `name` with listeners `(name, protocol, port)`, routes from all namespaces.
fn gw(name: &str, listeners: &[(&str, &str, i32)]) -> Object {
    let mut g = gateway(INFRA, name, "conformance");
    for (l, protocol, port) in listeners {
        g = g.listener(l, protocol, *port).allow_from("All");
    }
    g.object()
}

#[test]
fn tcp_route_invalid_backend_ref_nonexistent() {
    for (kind, protocol, _) in L4_KINDS {
        let route = route_of(kind, "r");
        let t = build(
            &index(vec![
                class(),
                gw("g", &[("l", protocol, 8080)]),
                route
                    .parent("g", Some("l"))
                    .backend("nonexistent", 3000, None)
                    .object(),
            ]),
            None,
        );
        assert_eq!(accepted(&t, kind, "r"), (true, "Accepted"), "{kind:?}");
        assert_eq!(
            resolved(&t, kind, "r"),
            (false, "BackendNotFound"),
            "{kind:?}"
        );
    }
}

#[test]
fn tcp_route_invalid_cross_namespace_backend_ref_then_reference_grant() {
    // TCPRouteInvalidCrossNamespaceBackendRef / TCPRouteReferenceGrant (and the UDP pair):
    // no grant → RefNotPermitted and refused; a grant → served (deleting it is the first
    // state again: build() has no memory of grants).
    for (kind, protocol, p) in L4_KINDS {
        let route = route_of(kind, "r");
        let mut objects = vec![
            class(),
            gw("g", &[("l", protocol, 8080)]),
            route
                .parent("g", Some("l"))
                .backend("gateway-conformance-web-backend/web", 3000, None)
                .object(),
        ];
        objects.extend(echo("gateway-conformance-web-backend", "web", "10.0.0.9"));
        let without = build(&index(objects.clone()), None);
        assert_eq!(resolved(&without, kind, "r"), (false, "RefNotPermitted"));
        assert_eq!(served_by(&without, 8080, p), None);
        objects.push(
            reference_grant(
                "gateway-conformance-web-backend",
                "grant",
                kind.as_str(),
                INFRA,
                None,
            )
            .object(),
        );
        let with = build(&index(objects), None);
        assert_eq!(resolved(&with, kind, "r"), (true, "ResolvedRefs"));
        assert_eq!(
            served_by(&with, 8080, p).as_deref(),
            Some("gateway-conformance-web-backend/web")
        );
    }
}

#[test]
fn tcp_route_invalid_non_tcp_listener_and_udp_route_not_allowed_by_listeners() {
    let t = build(
        &index(vec![
            class(),
            gw("g", &[("tls", "TLS", 443), ("udp", "UDP", 5300)]),
            tcp_route(INFRA, "tcp").parent("g", Some("tls")).object(),
            udp_route(INFRA, "udp").parent("g", Some("tls")).object(),
        ]),
        None,
    );
    for kind in [Kind::TcpRoute, Kind::UdpRoute] {
        let route = if kind == Kind::TcpRoute { "tcp" } else { "udp" };
        assert_eq!(accepted(&t, kind, route), (false, "NotAllowedByListeners"));
    }
    assert_eq!(listener(&t, "g", "tls").attached_routes, 0);
    assert_eq!(listener(&t, "g", "udp").attached_routes, 0);
}

#[test]
fn tcp_route_multiple_routes_attachment() {
    for (kind, protocol, p) in L4_KINDS {
        let route = |name: &str| route_of(kind, name);
        let mut objects = vec![
            class(),
            gw("g", &[("l", protocol, 8080)]),
            route("older")
                .parent("g", Some("l"))
                .backend("backend-1", 3000, None)
                .created(1_000)
                .object(),
            route("newer")
                .parent("g", Some("l"))
                .backend("backend-2", 3000, None)
                .created(1_001)
                .object(),
        ];
        objects.extend(echo(INFRA, "backend-1", "10.0.0.1"));
        objects.extend(echo(INFRA, "backend-2", "10.0.0.2"));
        let t = build(&index(objects), None);
        assert_eq!(accepted(&t, kind, "older"), (true, "Accepted"));
        assert_eq!(accepted(&t, kind, "newer"), (true, "Accepted"));
        let l = listener(&t, "g", "l");
        assert_eq!(l.attached_routes, 2);
        assert_eq!(cond(&l.conditions, "Accepted"), (true, "Accepted"));
        assert_eq!(
            served_by(&t, 8080, p).as_deref(),
            Some("gateway-conformance-infra/backend-1"),
            "only the oldest carries traffic"
        );
    }
}

#[test]
fn tcp_route_parent_ref_attach_all() {
    for (kind, protocol, p) in L4_KINDS {
        let route = route_of(kind, "all");
        let mut objects = vec![
            class(),
            gw(
                "g",
                &[
                    ("one", protocol, 8081),
                    ("two", protocol, 8082),
                    ("tls", "TLS", 443),
                ],
            ),
            route.parent("g", None).backend("echo", 3000, None).object(),
        ];
        objects.extend(echo(INFRA, "echo", "10.0.0.3"));
        let t = build(&index(objects), None);
        assert_eq!(accepted(&t, kind, "all"), (true, "Accepted"));
        for (l, port) in [("one", 8081), ("two", 8082)] {
            assert_eq!(listener(&t, "g", l).attached_routes, 1);
            assert_eq!(
                served_by(&t, port, p).as_deref(),
                Some("gateway-conformance-infra/echo")
            );
        }
        assert_eq!(listener(&t, "g", "tls").attached_routes, 0);
    }
}

#[test]
fn tcp_route_parent_ref_port_and_section_name() {
    for (kind, protocol, p) in L4_KINDS {
        let route = |name: &str| route_of(kind, name);
        let mut objects = vec![
            class(),
            gw(
                "g",
                &[
                    ("one", protocol, 8081),
                    ("two", protocol, 8082),
                    ("three", protocol, 8083),
                ],
            ),
            route("by-port")
                .parent_port("g", 8081, None)
                .backend("echo-one", 3000, None)
                .object(),
            route("by-section")
                .parent("g", Some("two"))
                .backend("echo-two", 3000, None)
                .object(),
            route("by-section-and-port")
                .parent_port("g", 8083, Some("three"))
                .backend("echo-three", 3000, None)
                .object(),
        ];
        for (name, ip) in [
            ("echo-one", "10.0.0.1"),
            ("echo-two", "10.0.0.2"),
            ("echo-three", "10.0.0.3"),
        ] {
            objects.extend(echo(INFRA, name, ip));
        }
        let t = build(&index(objects), None);
        for (route, port, backend) in [
            ("by-port", 8081, "echo-one"),
            ("by-section", 8082, "echo-two"),
            ("by-section-and-port", 8083, "echo-three"),
        ] {
            assert_eq!(accepted(&t, kind, route), (true, "Accepted"), "{route}");
            assert_eq!(
                served_by(&t, port, p),
                Some(format!("{INFRA}/{backend}")),
                "{route}"
            );
        }
    }
}

#[test]
fn tcp_route_weighted_routing_at_the_table() {
    // The draw itself is measured through real sockets (tests/it/weights.rs); here: the
    // weights reach the table and weight 0 is never picked.
    let mut objects = vec![
        class(),
        gw("g", &[("l", "TCP", 8080)]),
        tcp_route(INFRA, "w")
            .parent("g", Some("l"))
            .backend("a", 3000, Some(70))
            .backend("b", 3000, Some(30))
            .backend("c", 3000, Some(0))
            .object(),
    ];
    for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
        objects.extend(echo(INFRA, name, ip));
    }
    let t = build(&index(objects), None);
    let route = t.get(&key(8080, Protocol::Tcp)).unwrap();
    let weights: Vec<u32> = route.backends.iter().map(|b| b.spec.weight).collect();
    assert_eq!(weights, [70, 30, 0]);
    let c = "10.0.0.3:3000".parse().unwrap();
    for _ in 0..1000 {
        let first = route.pick_order().next().unwrap();
        assert_ne!(first.addr, c, "weight 0 picked");
    }
}

#[test]
fn gateway_listener_unsupported_protocol() {
    let t = build(
        &index(vec![
            class(),
            gw("only-unsupported", &[("invalid", "INVALID", 1111)]),
            gw(
                "supported-and-unsupported",
                &[("tcp", "TCP", 8080), ("invalid", "INVALID", 1111)],
            ),
        ]),
        None,
    );
    let only = &t.gateway_status.gateways[&ObjectName::new(INFRA, "only-unsupported")];
    assert_eq!(
        cond(&only.conditions, "Accepted"),
        (false, "ListenersNotValid")
    );
    let both = &t.gateway_status.gateways[&ObjectName::new(INFRA, "supported-and-unsupported")];
    assert_eq!(
        cond(&both.conditions, "Accepted"),
        (true, "ListenersNotValid")
    );
    for gateway in ["only-unsupported", "supported-and-unsupported"] {
        let l = listener(&t, gateway, "invalid");
        assert_eq!(
            cond(&l.conditions, "Accepted"),
            (false, "UnsupportedProtocol")
        );
        assert!(l.supported_kinds.is_empty());
        assert_eq!(l.attached_routes, 0);
    }
    let tcp = listener(&t, "supported-and-unsupported", "tcp");
    assert_eq!(cond(&tcp.conditions, "Accepted"), (true, "Accepted"));
    assert_eq!(tcp.supported_kinds, ["TCPRoute"]);
}

#[test]
fn gateway_invalid_route_kind() {
    let t = build(
        &index(vec![
            class(),
            gateway(INFRA, "only-invalid", "conformance")
                .listener("tcp", "TCP", 8080)
                .allow_kinds(&["InvalidRoute"])
                .object(),
            gateway(INFRA, "supported-and-invalid", "conformance")
                .listener("tcp", "TCP", 8081)
                .allow_kinds(&["InvalidRoute", "TCPRoute"])
                .object(),
        ]),
        None,
    );
    let only = listener(&t, "only-invalid", "tcp");
    assert_eq!(
        cond(&only.conditions, "ResolvedRefs"),
        (false, "InvalidRouteKinds")
    );
    assert!(only.supported_kinds.is_empty());
    let both = listener(&t, "supported-and-invalid", "tcp");
    assert_eq!(
        cond(&both.conditions, "ResolvedRefs"),
        (false, "InvalidRouteKinds")
    );
    assert_eq!(both.supported_kinds, ["TCPRoute"]);
}

#[test]
fn gateway_and_gateway_class_observed_generation_bump() {
    let with_generation = |generation: i64| {
        let mut g = gw("g", &[("l", "TCP", 8080)]);
        let mut c = class();
        for o in [&mut g, &mut c] {
            match o {
                Object::Gateway(g) => g.metadata.generation = Some(generation),
                Object::GatewayClass(c) => c.metadata.generation = Some(generation),
                _ => unreachable!(),
            }
        }
        build(&index(vec![c, g]), None)
    };
    let first = with_generation(1);
    let writes = first
        .gateway_status
        .writes(DEFAULT_CONTROLLER_NAME, "2026-12-04T00:00:00Z");
    // Read back as written, at generation 2: every condition is written again with it.
    let mut second = (*with_generation(2).gateway_status).clone();
    for w in &writes {
        let observed = Observed {
            generation: Some(2),
            resource_version: None,
            status: Some(w.status.clone()),
        };
        match w.kind {
            Kind::Gateway => second.gateways.get_mut(&w.name).unwrap().observed = observed,
            Kind::GatewayClass => second.classes.get_mut(&w.name.name).unwrap().observed = observed,
            other => panic!("unexpected {other:?}"),
        }
    }
    let again = second.writes(DEFAULT_CONTROLLER_NAME, "2026-12-04T00:01:00Z");
    assert_eq!(again.len(), 2, "the Gateway and the class");
    for w in again {
        let mut generations = Vec::new();
        collect_generations(&w.status, &mut generations);
        assert!(!generations.is_empty());
        assert!(generations.iter().all(|g| *g == 2), "{:#}", w.status);
    }
}

fn collect_generations(value: &serde_json::Value, out: &mut Vec<i64>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(g) = map.get("observedGeneration").and_then(|g| g.as_i64()) {
                out.push(g);
            }
            map.values().for_each(|v| collect_generations(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_generations(v, out)),
        _ => {}
    }
}

#[test]
fn gateway_modify_listeners() {
    let mut objects = vec![
        class(),
        gw("g", &[("one", "TCP", 8081)]),
        tcp_route(INFRA, "r")
            .parent("g", None)
            .backend("echo", 3000, None)
            .object(),
    ];
    objects.extend(echo(INFRA, "echo", "10.0.0.1"));
    let before = build(&index(objects.clone()), None);
    assert_eq!(listener(&before, "g", "one").attached_routes, 1);
    objects[1] = gw("g", &[("one", "TCP", 8081), ("two", "TCP", 8082)]);
    let added = build(&index(objects.clone()), None);
    assert_eq!(listener(&added, "g", "two").attached_routes, 1);
    assert!(served_by(&added, 8082, Protocol::Tcp).is_some());
    objects[1] = gw("g", &[("two", "TCP", 8082)]);
    let removed = build(&index(objects), None);
    let names: Vec<&str> = removed.gateway_status.gateways[&ObjectName::new(INFRA, "g")]
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["two"]);
    assert!(removed.get(&key(8081, Protocol::Tcp)).is_none());
}

/// A Gateway `name` with one TLS passthrough listener `tls` on 443 (hostname when given).
fn tls_gw(name: &str, hostname: Option<&str>) -> Object {
    let mut g = gateway(INFRA, name, "conformance")
        .listener("tls", "TLS", 443)
        .allow_from("All")
        .passthrough();
    if let Some(h) = hostname {
        g = g.listener_hostname(h);
    }
    g.object()
}

/// The backend a TLS port sends `server_name` to.
fn tls_served_by(t: &RouteTable, server_name: &str) -> Option<String> {
    let port = t.get(&key(443, Protocol::Tcp))?;
    let (route, _) = port.by_server_name(Some(server_name))?;
    Some(route.backends[0].spec.service.to_string())
}

#[test]
fn tls_route_simple_same_namespace() {
    let mut objects = vec![
        class(),
        tls_gw("g", None),
        tls_route(INFRA, "r")
            .parent("g", Some("tls"))
            .hostname("abc.example.com")
            .backend("tls-backend", 3000, None)
            .object(),
    ];
    objects.extend(echo(INFRA, "tls-backend", "10.0.0.1"));
    let t = build(&index(objects), None);
    assert_eq!(accepted(&t, Kind::TlsRoute, "r"), (true, "Accepted"));
    assert_eq!(resolved(&t, Kind::TlsRoute, "r"), (true, "ResolvedRefs"));
    let l = listener(&t, "g", "tls");
    assert_eq!(l.attached_routes, 1);
    assert_eq!(l.supported_kinds, ["TLSRoute"]);
    assert_eq!(
        tls_served_by(&t, "abc.example.com").as_deref(),
        Some("gateway-conformance-infra/tls-backend")
    );
    assert_eq!(tls_served_by(&t, "other.example.com"), None);
}

#[test]
fn tls_route_invalid_backend_refs_and_reference_grant() {
    // TLSRouteInvalidBackendRefNonexistent, TLSRouteInvalidBackendRefUnknownKind,
    // TLSRouteInvalidReferenceGrant.
    let mut unknown_kind = tls_route(INFRA, "unknown-kind")
        .parent("g", Some("tls"))
        .backend("tls-backend", 3000, None)
        .object();
    if let Object::TlsRoute(r) = &mut unknown_kind {
        r.spec.rules[0].backend_refs[0].kind = Some("UnknownKind".into());
    }
    let mut objects = vec![
        class(),
        tls_gw("g", None),
        tls_route(INFRA, "nonexistent")
            .parent("g", Some("tls"))
            .backend("nonexistent", 3000, None)
            .object(),
        unknown_kind,
        tls_route(INFRA, "no-grant")
            .parent("g", Some("tls"))
            .backend("gateway-conformance-web-backend/web", 3000, None)
            .object(),
    ];
    objects.extend(echo(INFRA, "tls-backend", "10.0.0.1"));
    objects.extend(echo("gateway-conformance-web-backend", "web", "10.0.0.2"));
    let t = build(&index(objects), None);
    for (route, reason) in [
        ("nonexistent", "BackendNotFound"),
        ("unknown-kind", "InvalidKind"),
        ("no-grant", "RefNotPermitted"),
    ] {
        assert_eq!(
            resolved(&t, Kind::TlsRoute, route),
            (false, reason),
            "{route}"
        );
    }
}

#[test]
fn tls_route_invalid_no_matching_listener() {
    let t = build(
        &index(vec![
            class(),
            tls_gw("tls-only", None),
            gw("http-only", &[("http", "HTTP", 80)]),
            tls_route(INFRA, "not-allowed-protocol-http")
                .parent("http-only", None)
                .object(),
            tls_route(INFRA, "no-matching-section-name")
                .parent("tls-only", Some("nope"))
                .object(),
        ]),
        None,
    );
    assert_eq!(
        accepted(&t, Kind::TlsRoute, "not-allowed-protocol-http"),
        (false, "NotAllowedByListeners")
    );
    assert_eq!(
        accepted(&t, Kind::TlsRoute, "no-matching-section-name"),
        (false, "NoMatchingParent")
    );
}

#[test]
fn tls_route_invalid_no_matching_listener_hostname() {
    let t = build(
        &index(vec![
            class(),
            tls_gw("g", Some("foo.example.com")),
            tls_route(INFRA, "r")
                .parent("g", Some("tls"))
                .hostname("bar.example.com")
                .object(),
        ]),
        None,
    );
    assert_eq!(
        accepted(&t, Kind::TlsRoute, "r"),
        (false, "NoMatchingListenerHostname")
    );
    assert_eq!(listener(&t, "g", "tls").attached_routes, 0);
}

#[test]
fn tls_route_hostname_intersection() {
    // A listener for *.example.com: a route for one name of it serves that name; a route for
    // a wider wildcard serves only the listener's names; another domain does not attach.
    let mut objects = vec![
        class(),
        tls_gw("g", Some("*.example.com")),
        tls_route(INFRA, "exact")
            .parent("g", Some("tls"))
            .hostname("abc.example.com")
            .backend("exact", 3000, None)
            .object(),
        tls_route(INFRA, "wider")
            .parent("g", Some("tls"))
            .hostname("*.com")
            .backend("wider", 3000, None)
            .object(),
        tls_route(INFRA, "elsewhere")
            .parent("g", Some("tls"))
            .hostname("abc.example.net")
            .backend("exact", 3000, None)
            .object(),
    ];
    objects.extend(echo(INFRA, "exact", "10.0.0.1"));
    objects.extend(echo(INFRA, "wider", "10.0.0.2"));
    let t = build(&index(objects), None);
    assert_eq!(accepted(&t, Kind::TlsRoute, "exact"), (true, "Accepted"));
    assert_eq!(accepted(&t, Kind::TlsRoute, "wider"), (true, "Accepted"));
    assert_eq!(
        accepted(&t, Kind::TlsRoute, "elsewhere"),
        (false, "NoMatchingListenerHostname")
    );
    assert_eq!(listener(&t, "g", "tls").attached_routes, 2);
    assert_eq!(
        tls_served_by(&t, "abc.example.com").as_deref(),
        Some("gateway-conformance-infra/exact")
    );
    assert_eq!(
        tls_served_by(&t, "xyz.example.com").as_deref(),
        Some("gateway-conformance-infra/wider")
    );
    assert_eq!(
        tls_served_by(&t, "abc.other.com"),
        None,
        "narrowed to *.example.com"
    );
}

#[test]
fn tls_route_listener_passthrough_supported_kinds_and_terminate_not_supported() {
    let t = build(
        &index(vec![
            class(),
            gateway(INFRA, "kinds", "conformance")
                .listener("tls-passthrough", "TLS", 443)
                .passthrough()
                .allow_kinds(&["TCPRoute", "TLSRoute"])
                .object(),
            gateway(INFRA, "terminate", "conformance")
                .listener("tls-terminate", "TLS", 8443)
                .object(),
        ]),
        None,
    );
    let l = listener(&t, "kinds", "tls-passthrough");
    assert_eq!(l.supported_kinds, ["TLSRoute"]);
    assert_eq!(
        cond(&l.conditions, "ResolvedRefs"),
        (false, "InvalidRouteKinds")
    );
    let terminate = listener(&t, "terminate", "tls-terminate");
    assert_eq!(
        cond(&terminate.conditions, "Accepted"),
        (false, "UnsupportedValue")
    );
    assert_eq!(terminate.attached_routes, 0);
}
