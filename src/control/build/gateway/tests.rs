//! The Gateway API rules of `build()`, with fixture objects.

use crate::control::build::build;
use crate::control::build::tests::index;
use crate::control::fixture::{
    Fixture, endpoint, endpoint_slice, gateway, gateway_class, port, port_map, reference_grant,
    service, tcp_route, udp_route,
};
use crate::control::gateway_api::DEFAULT_CONTROLLER_NAME;
use crate::control::gateway_status::{Condition, ListenerStatus};
use crate::control::index::{Kind, Object};
use crate::control::table::{ConfigProblem, RouteTable};
use crate::names::{ListenPort, ObjectName, Protocol, RouteKey};

/// A Service `ns/name` port 80 (UDP too) with one ready endpoint at `ip:8080`.
fn backend(ns: &str, name: &str, ip: &str) -> [Object; 2] {
    [
        service(ns, name)
            .port(port(80).named("tcp"))
            .port(port(80).named("udp").udp())
            .object(),
        endpoint_slice(ns, &format!("{name}-a"), name)
            .port(port(8080).named("tcp"))
            .port(port(8080).named("udp").udp())
            .endpoint(endpoint(ip).ready(true))
            .object(),
    ]
}

fn table(objects: Vec<Object>) -> RouteTable {
    build(&index(objects), None)
}

fn tcp(port: u16) -> RouteKey {
    RouteKey::tcp(ListenPort::new(port).unwrap())
}

/// `kind object reason` of every Gateway API problem, and its message.
fn problems(t: &RouteTable) -> Vec<(String, String)> {
    t.problems
        .iter()
        .filter_map(|p| match p {
            ConfigProblem::GatewayApi {
                kind,
                object,
                reason,
                message,
            } => Some((format!("{kind} {object} {reason}"), message.clone())),
            _ => None,
        })
        .collect()
}

/// `(status, reason)` of the condition `type_`.
fn condition(conditions: &[Condition], type_: &str) -> (bool, &'static str) {
    let c = conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {conditions:?}"));
    (c.status, c.reason)
}

/// The conditions of listener `listener` of Gateway `gateway`.
fn listener<'a>(t: &'a RouteTable, gateway: &str, listener: &str) -> &'a ListenerStatus {
    let (ns, name) = gateway.split_once('/').unwrap();
    t.gateway_status.gateways[&ObjectName::new(ns, name)]
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .unwrap()
}

/// The conditions of route `route`'s first parent entry.
fn parent<'a>(t: &'a RouteTable, kind: Kind, route: &str) -> &'a [Condition] {
    let (ns, name) = route.split_once('/').unwrap();
    &t.gateway_status.routes[&(kind, ObjectName::new(ns, name))].parents[0].conditions
}

fn has(t: &RouteTable, what: &str, words: &str) -> bool {
    problems(t)
        .iter()
        .any(|(w, m)| w == what && m.contains(words))
}

/// dermaga's class, another controller's class, and the Gateway `infra/edge` of ours.
fn base() -> Vec<Object> {
    let mut objects = vec![
        gateway_class("dermaga", DEFAULT_CONTROLLER_NAME).object(),
        gateway_class("other", "example.com/other").object(),
        gateway("infra", "edge", "dermaga")
            .listener("shop", "TCP", 10000)
            .allow_from("All")
            .listener("dns", "UDP", 53)
            .allow_from("All")
            .listener("tls", "TLS", 443)
            .object(),
        gateway("infra", "theirs", "other")
            .listener("x", "TCP", 10001)
            .object(),
    ];
    objects.extend(backend("shop", "web", "10.0.0.1"));
    objects.extend(backend("shop", "canary", "10.0.0.2"));
    objects
}

#[test]
fn a_tcp_route_on_a_gateway_of_ours_is_served_with_its_weights() {
    let mut objects = base();
    objects.push(
        tcp_route("shop", "shop")
            .parent("infra/edge", Some("shop"))
            .backend("web", 80, Some(90))
            .backend("canary", 80, Some(10))
            .object(),
    );
    objects.push(
        udp_route("shop", "dns")
            .parent("infra/edge", None)
            .backend("web", 80, None)
            .object(),
    );
    let t = table(objects);
    let route = t.get(&tcp(10000)).expect("port 10000 served");
    let weights: Vec<String> = route.backends.iter().map(|b| b.spec.to_string()).collect();
    assert_eq!(weights, ["shop/web:80=90", "shop/canary:80=10"]);
    assert_eq!(route.active_count(), 2);
    let udp = t
        .get(&RouteKey {
            port: ListenPort::new(53).unwrap(),
            protocol: Protocol::Udp,
        })
        .expect("port 53/UDP served");
    assert_eq!(
        udp.backends[0].spec.to_string(),
        "shop/web:80=1",
        "weight default 1"
    );
    assert_eq!(udp.active_count(), 1);
    assert!(t.get(&tcp(10001)).is_none(), "another controller's Gateway");
    assert!(
        has(
            &t,
            "Gateway infra/edge UnsupportedValue",
            "TLS mode Terminate"
        ),
        "{:?}",
        problems(&t)
    );
    assert_eq!(problems(&t).len(), 1, "{:?}", problems(&t));
}

#[test]
fn a_port_of_the_port_map_or_of_an_older_gateway_stays_theirs() {
    let mut objects = base();
    objects.push(
        port_map("dermaga", "tcp-services")
            .entry("10000", "shop/web:80")
            .object(),
    );
    objects.push(
        gateway("infra", "young", "dermaga")
            .listener("a", "TCP", 20000)
            .created(2_000)
            .object(),
    );
    objects.push(
        gateway("infra", "old", "dermaga")
            .listener("b", "TCP", 20000)
            .created(1_000)
            .object(),
    );
    let t = table(objects);
    assert!(
        has(
            &t,
            "Gateway infra/edge Conflicted",
            "port 10000/TCP is already served by a port map"
        ),
        "{:?}",
        problems(&t)
    );
    assert!(
        has(
            &t,
            "Gateway infra/young Conflicted",
            "already served by Gateway infra/old listener \"b\""
        ),
        "{:?}",
        problems(&t)
    );
    // The port map's route is the one in force.
    assert_eq!(t.get(&tcp(10000)).unwrap().spec.to_string(), "shop/web:80");
    // Status: the losing listeners are not accepted and say why; the older Gateway's is.
    for (gw, l) in [("infra/edge", "shop"), ("infra/young", "a")] {
        let c = &listener(&t, gw, l).conditions;
        assert_eq!(condition(c, "Accepted"), (false, "PortUnavailable"));
        assert_eq!(condition(c, "Programmed"), (false, "Invalid"));
        assert_eq!(condition(c, "Conflicted"), (true, "PortConflict"));
    }
    let old = &listener(&t, "infra/old", "b").conditions;
    assert_eq!(condition(old, "Programmed"), (true, "Programmed"));
    assert_eq!(condition(old, "Conflicted"), (false, "NoConflicts"));
    // A TLS listener that terminates (the default mode) is not served: the Gateway is
    // accepted with listeners not valid.
    let tls = &listener(&t, "infra/edge", "tls").conditions;
    assert_eq!(condition(tls, "Accepted"), (false, "UnsupportedValue"));
    let edge = &t.gateway_status.gateways[&ObjectName::new("infra", "edge")];
    assert_eq!(
        condition(&edge.conditions, "Accepted"),
        (true, "ListenersNotValid")
    );
    assert_eq!(
        condition(&edge.conditions, "Programmed"),
        (true, "Programmed")
    );
    // Another controller's class and Gateway get no status from dermaga.
    assert!(t.gateway_status.classes.contains_key("dermaga"));
    assert!(!t.gateway_status.classes.contains_key("other"));
    assert!(
        !t.gateway_status
            .gateways
            .contains_key(&ObjectName::new("infra", "theirs"))
    );
}

#[test]
fn the_oldest_route_wins_a_listener_and_the_other_is_told() {
    let mut objects = base();
    for (name, created, service) in [("b-new", 2_000, "canary"), ("a-old", 1_000, "web")] {
        objects.push(
            tcp_route("shop", name)
                .parent("infra/edge", Some("shop"))
                .backend(service, 80, None)
                .created(created)
                .object(),
        );
    }
    let t = table(objects);
    let route = t.get(&tcp(10000)).unwrap();
    assert_eq!(route.backends[0].spec.service.name, "web");
    assert!(
        has(
            &t,
            "TCPRoute shop/b-new RouteConflict",
            "served by the older TCPRoute shop/a-old"
        ),
        "{:?}",
        problems(&t)
    );
    // As upstream's TCPRouteMultipleRoutesAttachment has it: both accepted, both counted,
    // the oldest carries the traffic.
    for route in ["shop/b-new", "shop/a-old"] {
        assert_eq!(
            condition(parent(&t, Kind::TcpRoute, route), "Accepted"),
            (true, "Accepted")
        );
    }
    assert_eq!(listener(&t, "infra/edge", "shop").attached_routes, 2);
}

#[test]
fn a_missing_service_or_port_is_backend_not_found_in_the_route_status() {
    let mut objects = base();
    objects.push(
        tcp_route("shop", "shop")
            .parent("infra/edge", Some("shop"))
            .backend("web", 80, Some(1))
            .backend("gone", 80, Some(1))
            .backend("canary", 81, Some(1))
            .object(),
    );
    let t = table(objects);
    let c = parent(&t, Kind::TcpRoute, "shop/shop");
    assert_eq!(condition(c, "Accepted"), (true, "Accepted"));
    assert_eq!(condition(c, "ResolvedRefs"), (false, "BackendNotFound"));
    let message = &c
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .unwrap()
        .message;
    assert!(
        message.contains("shop/gone: Service not found")
            && message.contains("shop/canary: Service has no TCP port 81"),
        "{message}"
    );
    // The listener has its route; the web share is served.
    assert_eq!(listener(&t, "infra/edge", "shop").attached_routes, 1);
    assert_eq!(t.get(&tcp(10000)).unwrap().active_count(), 1);
}

#[test]
fn a_backend_in_another_namespace_needs_a_reference_grant() {
    let route = || {
        tcp_route("team", "shop")
            .parent("infra/edge", Some("shop"))
            .backend("shop/web", 80, Some(1))
            .backend("shop/canary", 80, Some(1))
            .object()
    };
    let mut objects = base();
    objects.push(route());
    let t = table(objects);
    let r = t.get(&tcp(10000)).unwrap();
    assert_eq!(r.active_count(), 0, "no grant: no endpoint");
    assert_eq!(
        condition(parent(&t, Kind::TcpRoute, "team/shop"), "ResolvedRefs"),
        (false, "RefNotPermitted")
    );
    assert!(
        has(
            &t,
            "TCPRoute team/shop RefNotPermitted",
            "no ReferenceGrant in namespace shop"
        ),
        "{:?}",
        problems(&t)
    );
    // A grant for `web` alone: web serves, canary's share is still refused.
    let mut objects = base();
    objects.push(route());
    objects.push(reference_grant("shop", "team", "TCPRoute", "team", Some("web")).object());
    let t = table(objects);
    let r = t.get(&tcp(10000)).unwrap();
    assert_eq!(r.active_count(), 1);
    assert!(r.backends[0].problem.is_none());
    assert!(r.backends[1].problem.is_some());
    let refused = (0..2000)
        .filter(|_| r.pick_order().next().is_none())
        .count();
    assert!(
        (refused as i64 - 1000).abs() < 150,
        "{refused} of 2000 refused"
    );
}

#[test]
fn listeners_admit_routes_by_namespace_and_kind() {
    let mut objects = vec![
        gateway_class("dermaga", DEFAULT_CONTROLLER_NAME).object(),
        gateway("infra", "edge", "dermaga")
            .listener("same", "TCP", 10000)
            .listener("udp-only", "TCP", 10002)
            .allow_from("All")
            .allow_kinds(&["UDPRoute"])
            .object(),
    ];
    objects.extend(backend("shop", "web", "10.0.0.1"));
    objects.push(
        tcp_route("shop", "shop")
            .parent("infra/edge", None)
            .backend("web", 80, None)
            .object(),
    );
    objects.push(
        tcp_route("shop", "lost")
            .parent("infra/nowhere", None)
            .object(),
    );
    objects.push(
        gateway("infra", "mixed", "dermaga")
            .listener("tls", "TLS", 443)
            .allow_from("All")
            .object(),
    );
    objects.push(
        tcp_route("shop", "to-tls")
            .parent("infra/mixed", Some("tls"))
            .object(),
    );
    let t = table(objects);
    assert!(
        has(
            &t,
            "TCPRoute shop/shop NotAllowedByListeners",
            "allows routes from its own namespace only"
        ),
        "{:?}",
        problems(&t)
    );
    assert!(
        has(
            &t,
            "TCPRoute shop/shop NotAllowedByListeners",
            "does not allow kind TCPRoute"
        ),
        "{:?}",
        problems(&t)
    );
    assert!(
        has(&t, "TCPRoute shop/lost NoMatchingParent", ""),
        "{:?}",
        problems(&t)
    );
    // As upstream's TCPRouteInvalidNonTCPListener: a listener of another protocol named by
    // sectionName is NotAllowedByListeners, and counts no route.
    let c = parent(&t, Kind::TcpRoute, "shop/to-tls");
    assert_eq!(condition(c, "Accepted"), (false, "NotAllowedByListeners"));
    assert!(c[0].message.contains("has protocol TLS"), "{:?}", c[0]);
    assert_eq!(listener(&t, "infra/mixed", "tls").attached_routes, 0);
    // A Gateway that is not there is no parent of ours: no status entry.
    assert!(
        !t.gateway_status
            .routes
            .contains_key(&(Kind::TcpRoute, ObjectName::new("shop", "lost")))
    );
    // Both listeners are bound but have no route: they refuse.
    assert_eq!(t.get(&tcp(10000)).unwrap().active_count(), 0);
    assert_eq!(t.get(&tcp(10002)).unwrap().active_count(), 0);
}

#[test]
fn a_selector_admits_routes_from_the_namespaces_whose_labels_match() {
    use crate::control::fixture::namespace;
    let mut objects = vec![
        gateway_class("dermaga", DEFAULT_CONTROLLER_NAME).object(),
        gateway("infra", "edge", "dermaga")
            .listener("shop", "TCP", 10000)
            .allow_selector(&[("gateway-access", "edge")])
            .object(),
        namespace("shop", &[("gateway-access", "edge")]),
        namespace("other", &[("gateway-access", "none")]),
        tcp_route("other", "early")
            .parent("infra/edge", None)
            .backend("web", 80, None)
            .created(1_000)
            .object(),
        tcp_route("shop", "shop")
            .parent("infra/edge", None)
            .backend("web", 80, None)
            .created(2_000)
            .object(),
        tcp_route("unlabelled", "x")
            .parent("infra/edge", None)
            .object(),
    ];
    objects.extend(backend("shop", "web", "10.0.0.1"));
    let t = table(objects);
    // The older route's namespace does not match: the younger, matching one serves.
    assert_eq!(
        condition(parent(&t, Kind::TcpRoute, "shop/shop"), "Accepted"),
        (true, "Accepted")
    );
    for route in ["other/early", "unlabelled/x"] {
        assert_eq!(
            condition(parent(&t, Kind::TcpRoute, route), "Accepted"),
            (false, "NotAllowedByListeners"),
            "{route}"
        );
    }
    assert!(
        has(
            &t,
            "TCPRoute other/early NotAllowedByListeners",
            "labels of namespace other"
        ),
        "{:?}",
        problems(&t)
    );
    assert_eq!(t.get(&tcp(10000)).unwrap().active_count(), 1);
}

#[test]
fn label_selectors_follow_the_kubernetes_rules() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    let labels: std::collections::BTreeMap<String, String> =
        [("env".to_owned(), "prod".to_owned())].into();
    let term = |op: &str, values: &[&str]| LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "env".into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }]),
    };
    assert_eq!(
        super::selects(&term("In", &["prod", "dev"]), &labels),
        Ok(true)
    );
    assert_eq!(
        super::selects(&term("NotIn", &["prod"]), &labels),
        Ok(false)
    );
    assert_eq!(super::selects(&term("Exists", &[]), &labels), Ok(true));
    assert_eq!(
        super::selects(&term("DoesNotExist", &[]), &labels),
        Ok(false)
    );
    assert_eq!(
        super::selects(&term("NotIn", &["x"]), &Default::default()),
        Ok(true),
        "NotIn holds when the label is absent"
    );
    assert!(super::selects(&term("Like", &[]), &labels).is_err());
    assert_eq!(
        super::selects(&LabelSelector::default(), &labels),
        Ok(true),
        "an empty selector picks every namespace"
    );
}

#[test]
fn gateways_report_the_addresses_of_the_publish_service() {
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    let mut lb = service("dermaga", "dermaga")
        .port(port(10000).named("shop"))
        .object();
    if let Object::Service(s) = &mut lb {
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![
                    LoadBalancerIngress {
                        ip: Some("192.0.2.10".into()),
                        ..Default::default()
                    },
                    LoadBalancerIngress {
                        hostname: Some("lb.example.com".into()),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        });
    }
    let mut objects = base();
    objects.push(lb);
    let mut idx = index(objects);
    let edge = ObjectName::new("infra", "edge");
    assert!(
        build(&idx, None).gateway_status.gateways[&edge]
            .addresses
            .is_empty(),
        "no --publish-service: no addresses"
    );
    idx.settings.publish_service = Some(ObjectName::new("dermaga", "dermaga"));
    let t = build(&idx, None);
    assert_eq!(
        t.gateway_status.gateways[&edge].addresses,
        ["192.0.2.10", "lb.example.com"]
    );
}

#[test]
fn proxy_headers_by_annotation_and_bad_values_reported() {
    let objects = vec![
        gateway_class("dermaga", DEFAULT_CONTROLLER_NAME).object(),
        gateway("infra", "edge", "dermaga")
            .annotate(
                super::DECODE_PROXY_ANNOTATION,
                "from-lb, dns, sites, nowhere",
            )
            .listener("from-lb", "TCP", 10000)
            .allow_from("All")
            .listener("direct", "TCP", 10001)
            .allow_from("All")
            .listener("dns", "UDP", 53)
            .allow_from("All")
            .listener("sites", "TLS", 443)
            .passthrough()
            .allow_from("All")
            .object(),
        tcp_route("shop", "v2")
            .annotate(super::BACKEND_PROXY_ANNOTATION, "V2")
            .parent("infra/edge", Some("from-lb"))
            .backend("web", 80, None)
            .object(),
        tcp_route("shop", "bad")
            .annotate(super::BACKEND_PROXY_ANNOTATION, "v3")
            .parent("infra/edge", Some("direct"))
            .backend("web", 80, None)
            .object(),
        udp_route("shop", "dns")
            .annotate(super::BACKEND_PROXY_ANNOTATION, "v1")
            .parent("infra/edge", Some("dns"))
            .backend("web", 80, None)
            .object(),
    ];
    let t = table(objects);
    let from_lb = &t.get(&tcp(10000)).unwrap().spec;
    assert!(from_lb.proxy.decode && from_lb.proxy.encode);
    assert_eq!(
        from_lb.options.send_proxy_version,
        crate::names::ProxyVersion::V2
    );
    let direct = &t.get(&tcp(10001)).unwrap().spec;
    assert!(
        !direct.proxy.decode && !direct.proxy.encode,
        "a bad value sends nothing"
    );
    for (what, words) in [
        (
            "TCPRoute shop/bad UnsupportedValue",
            "\"v3\" is not v1 or v2",
        ),
        ("UDPRoute shop/dns UnsupportedValue", "not on a UDPRoute"),
        (
            "Gateway infra/edge UnsupportedValue",
            "no listener is named \"nowhere\"",
        ),
        (
            "Gateway infra/edge UnsupportedValue",
            "listener \"dns\" is UDP",
        ),
        (
            "Gateway infra/edge UnsupportedValue",
            "listener \"sites\" is TLS",
        ),
    ] {
        assert!(
            has(&t, what, words),
            "{what}: {words} not in {:?}",
            problems(&t)
        );
    }
}

#[test]
fn route_annotations_set_port_options_and_a_bad_one_refuses_the_route() {
    let mut objects = base();
    objects.push(
        tcp_route("shop", "shop")
            .annotate("dermaga.io/balance", "source-hash")
            .annotate("dermaga.io/allow-source", "192.0.2.0/24")
            .annotate("dermaga.io/connect-attempts", "2")
            .parent("infra/edge", Some("shop"))
            .backend("web", 80, None)
            .object(),
    );
    objects.push(
        udp_route("shop", "dns")
            .annotate("dermaga.io/balance", "fastest")
            .parent("infra/edge", Some("dns"))
            .backend("web", 80, None)
            .object(),
    );
    let t = table(objects);
    let shop = &t.get(&tcp(10000)).unwrap().spec.options;
    assert_eq!(shop.balance, crate::control::configmap::Balance::SourceHash);
    assert_eq!(shop.sources.allow.len(), 1);
    assert_eq!(shop.connect_attempts, Some(2));
    assert_eq!(
        condition(parent(&t, Kind::TcpRoute, "shop/shop"), "ResolvedRefs"),
        (true, "ResolvedRefs")
    );
    // The bad one: reported on the route, its backends refuse until it is fixed.
    assert_eq!(
        condition(parent(&t, Kind::UdpRoute, "shop/dns"), "ResolvedRefs"),
        (false, "UnsupportedValue")
    );
    assert!(
        has(
            &t,
            "UDPRoute shop/dns UnsupportedValue",
            "annotation dermaga.io/balance"
        ),
        "{:?}",
        problems(&t)
    );
    let dns = t
        .get(&RouteKey {
            port: ListenPort::new(53).unwrap(),
            protocol: Protocol::Udp,
        })
        .unwrap();
    assert_eq!(dns.active_count(), 0, "served without its options");
}
