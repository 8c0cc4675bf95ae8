//! Table-driven tests of `build()` with fixture objects.

use super::*;
use crate::control::configmap::ReservedPorts;
use crate::control::fixture::{
    self, EndpointFixture, Fixture, Port, SliceFixture, endpoint, endpoint_slice, port,
};
use crate::control::index::{IndexSettings, Kind, Object};
use crate::control::table::{ConfigProblem, Selection};
use crate::names::ListenPort;

fn port_map(entries: &[(&str, &str)]) -> Object {
    fixture::port_map("dermaga", "tcp-services")
        .entries(entries)
        .object()
}

fn service<const N: usize>(name: &str, ports: [Port; N]) -> Object {
    ports
        .into_iter()
        .fold(fixture::service("default", name), |s, p| s.port(p))
        .object()
}

fn slice(name: &str, service: &str) -> SliceFixture {
    endpoint_slice("default", name, service)
}

/// An endpoint with a pod behind it, named after its address.
fn ep(addr: &str) -> EndpointFixture {
    endpoint(addr).pod("default", &format!("pod-{addr}"))
}

/// An Index of `objects`, with the port map `dermaga/tcp-services` and port 10254 reserved (also
/// used by the Gateway API rules' tests).
pub(super) fn index(objects: Vec<Object>) -> Index {
    let mut reserved = ReservedPorts::default();
    reserved.reserve(10254, "admin");
    let mut index = Index::new(IndexSettings {
        port_maps: vec![(Protocol::Tcp, ObjectName::new("dermaga", "tcp-services"))],
        reserved,
        ..IndexSettings::default()
    });
    index.reset_all(objects);
    index
}

fn key(port: u16) -> RouteKey {
    RouteKey::tcp(ListenPort::new(port).unwrap())
}

fn active(table: &RouteTable, port: u16) -> Vec<String> {
    table
        .get(&key(port))
        .unwrap()
        .active_endpoints()
        .map(|e| e.addr.to_string())
        .collect()
}

#[test]
fn s1_each_port_reaches_its_own_service() {
    let t = build(
        &index(vec![
            port_map(&[
                ("10000", "default/xyz-10000:10000"),
                ("20000", "default/xyz-20000:20000"),
            ]),
            service("xyz-10000", [port(10000)]),
            service("xyz-20000", [port(20000)]),
            slice("xyz-10000-a", "xyz-10000")
                .port(port(10000))
                .endpoint(ep("10.0.0.1").ready(true))
                .object(),
            slice("xyz-20000-a", "xyz-20000")
                .port(port(20000))
                .endpoint(ep("10.0.0.2").ready(true))
                .object(),
        ]),
        None,
    );
    assert_eq!(active(&t, 10000), vec!["10.0.0.1:10000"]);
    assert_eq!(active(&t, 20000), vec!["10.0.0.2:20000"]);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
}

#[test]
fn service_port_by_name_and_endpoint_port_per_slice() {
    // Two slices of one Service whose pods listen on different numbers for the port named "db".
    let t = build(
        &index(vec![
            port_map(&[("5432", "default/pg:db"), ("5433", "default/pg:5432")]),
            service(
                "pg",
                [
                    port(5432).named("db").target_name("db"),
                    port(9187).named("metrics"),
                ],
            ),
            slice("pg-a", "pg")
                .port(port(15432).named("db"))
                .port(port(9187).named("metrics"))
                .endpoint(ep("10.0.0.1").ready(true))
                .object(),
            slice("pg-b", "pg")
                .port(port(25432).named("db"))
                .endpoint(ep("10.0.0.2").ready(true))
                .object(),
        ]),
        None,
    );
    assert_eq!(active(&t, 5432), vec!["10.0.0.1:15432", "10.0.0.2:25432"]);
    assert_eq!(active(&t, 5433), vec!["10.0.0.1:15432", "10.0.0.2:25432"]);
}

#[test]
fn endpoint_conditions_follow_the_kube_proxy_rule() {
    struct Case {
        name: &'static str,
        endpoints: Vec<EndpointFixture>,
        want: Vec<&'static str>,
        selection: Selection,
    }
    let cases = vec![
        Case {
            name: "ready only",
            endpoints: vec![
                ep("10.0.0.1").ready(true).serving(true).terminating(false),
                ep("10.0.0.2").ready(false).serving(true).terminating(true),
            ],
            want: vec!["10.0.0.1:80"],
            selection: Selection::Ready,
        },
        Case {
            name: "terminating but still marked ready: not while another is ready",
            endpoints: vec![
                ep("10.0.0.1").ready(true).serving(true).terminating(true),
                ep("10.0.0.2").ready(true).serving(true).terminating(false),
            ],
            want: vec!["10.0.0.2:80"],
            selection: Selection::Ready,
        },
        Case {
            name: "nil conditions count as ready",
            endpoints: vec![ep("10.0.0.1")],
            want: vec!["10.0.0.1:80"],
            selection: Selection::Ready,
        },
        Case {
            name: "no ready: serving and terminating",
            endpoints: vec![
                ep("10.0.0.1").ready(false).serving(true).terminating(true),
                ep("10.0.0.2").ready(false).serving(false).terminating(true),
                ep("10.0.0.3")
                    .ready(false)
                    .serving(false)
                    .terminating(false),
            ],
            want: vec!["10.0.0.1:80"],
            selection: Selection::ServingTerminating,
        },
        Case {
            name: "nothing usable",
            endpoints: vec![
                ep("10.0.0.2").ready(false).serving(false).terminating(true),
                ep("10.0.0.3").ready(false),
            ],
            want: vec![],
            selection: Selection::None,
        },
        Case {
            name: "no endpoints at all",
            endpoints: vec![],
            want: vec![],
            selection: Selection::None,
        },
    ];
    for case in cases {
        let t = build(
            &index(vec![
                port_map(&[("80", "default/web:80")]),
                service("web", [port(80)]),
                slice("web-a", "web")
                    .port(port(80))
                    .endpoints(case.endpoints)
                    .object(),
            ]),
            None,
        );
        assert_eq!(active(&t, 80), case.want, "{}", case.name);
        assert_eq!(
            t.get(&key(80)).unwrap().selection,
            case.selection,
            "{}",
            case.name
        );
    }
}

#[test]
fn address_types_and_duplicates() {
    let t = build(
        &index(vec![
            port_map(&[("80", "default/web:80")]),
            service("web", [port(80)]),
            slice("web-v4", "web")
                .port(port(8080))
                .endpoint(ep("10.0.0.1").ready(true))
                .endpoint(ep("not-an-ip").ready(true))
                .object(),
            slice("web-v6", "web")
                .address_type("IPv6")
                .port(port(8080))
                .endpoint(ep("fd00::1").ready(true))
                .object(),
            slice("web-fqdn", "web")
                .address_type("FQDN")
                .port(port(8080))
                .endpoint(ep("example.com").ready(true))
                .object(),
            // The same address again, not ready, in a second IPv4 slice: the ready copy wins.
            slice("web-v4-dup", "web")
                .port(port(8080))
                .endpoint(ep("10.0.0.1").ready(false))
                .object(),
        ]),
        None,
    );
    assert_eq!(active(&t, 80), vec!["10.0.0.1:8080", "[fd00::1]:8080"]);
    let route = t.get(&key(80)).unwrap();
    assert_eq!(
        route.endpoints[0].target.as_deref(),
        Some("pod default/pod-10.0.0.1")
    );
}

#[test]
fn missing_service_or_port_keeps_the_route_and_says_why() {
    let t = build(
        &index(vec![
            port_map(&[
                ("80", "default/nosuch:80"),
                ("81", "default/web:9999"),
                ("82", "default/web:http"),
                ("83", "default/web:80"),
            ]),
            service("web", [port(80).named("http"), port(53).named("dns").udp()]),
        ]),
        None,
    );
    assert_eq!(t.len(), 4, "every entry has a route, even unresolved ones");
    for port in [80, 81, 82, 83] {
        assert!(active(&t, port).is_empty());
    }
    let problem = |p| t.get(&key(p)).unwrap().problem.clone().unwrap_or_default();
    assert!(
        problem(80).contains("Service default/nosuch not found"),
        "{}",
        problem(80)
    );
    assert!(
        problem(81).contains("has no TCP port 9999 (it has: http 80/TCP, dns 53/UDP)"),
        "{}",
        problem(81)
    );
    assert_eq!(problem(82), "", "port found by name, just no slices yet");
    assert!(
        t.problems
            .iter()
            .any(|p| matches!(p, ConfigProblem::Unresolved { .. }))
    );
}

#[test]
fn udp_service_port_does_not_match_a_tcp_entry() {
    let t = build(
        &index(vec![
            port_map(&[("53", "default/dns:53")]),
            service("dns", [port(53).udp()]),
        ]),
        None,
    );
    assert!(
        t.get(&key(53))
            .unwrap()
            .problem
            .as_deref()
            .unwrap()
            .contains("no TCP port 53")
    );
}

#[test]
fn missing_port_map_is_reported() {
    let t = build(&index(vec![service("web", [port(80)])]), None);
    assert!(t.is_empty());
    assert!(matches!(
        t.problems[0],
        ConfigProblem::MissingPortMap { .. }
    ));
}

#[test]
fn an_entry_that_turns_bad_keeps_its_previous_good_route() {
    let objects = |value: &str| {
        vec![
            port_map(&[("80", value), ("81", "default/web:80")]),
            service("web", [port(80)]),
            slice("web-a", "web")
                .port(port(8080))
                .endpoint(ep("10.0.0.1").ready(true))
                .object(),
        ]
    };
    let good = build(&index(objects("default/web:80")), None);
    let bad = build(&index(objects("default/web:80:BROKEN")), Some(&good));
    let kept = bad.get(&key(80)).expect("kept");
    assert!(kept.kept_from_previous);
    assert_eq!(active(&bad, 80), vec!["10.0.0.1:8080"]);
    assert!(
        bad.problems
            .iter()
            .any(|p| matches!(p, ConfigProblem::Entry(e) if e.key == "80"))
    );
    // Without a previous table there is nothing to keep.
    let fresh = build(&index(objects("default/web:80:BROKEN")), None);
    assert!(fresh.get(&key(80)).is_none());
    assert!(fresh.get(&key(81)).is_some());
}

#[test]
fn index_follows_deletes_and_relabels() {
    let mut idx = index(vec![
        port_map(&[("80", "default/web:80")]),
        service("web", [port(80)]),
        slice("s1", "web")
            .port(port(80))
            .endpoint(ep("10.0.0.1").ready(true))
            .object(),
    ]);
    assert_eq!(active(&build(&idx, None), 80), vec!["10.0.0.1:80"]);
    // The slice is relabelled to another Service: it leaves web.
    idx.apply(
        slice("s1", "other")
            .port(port(80))
            .endpoint(ep("10.0.0.1").ready(true))
            .object(),
    );
    assert!(active(&build(&idx, None), 80).is_empty());
    idx.apply(
        slice("s1", "web")
            .port(port(80))
            .endpoint(ep("10.0.0.9").ready(true))
            .object(),
    );
    assert_eq!(active(&build(&idx, None), 80), vec!["10.0.0.9:80"]);
    idx.delete(Kind::EndpointSlice, &ObjectName::new("default", "s1"));
    assert!(active(&build(&idx, None), 80).is_empty());
    idx.delete(Kind::ConfigMap, &ObjectName::new("dermaga", "tcp-services"));
    assert!(build(&idx, None).is_empty());
}

#[test]
fn round_robin_then_the_others_for_retries() {
    let t = build(
        &index(vec![
            port_map(&[("80", "default/web:80")]),
            service("web", [port(80)]),
            slice("web-a", "web")
                .port(port(80))
                .endpoint(ep("10.0.0.1").ready(true))
                .endpoint(ep("10.0.0.2").ready(true))
                .endpoint(ep("10.0.0.3").ready(true))
                .object(),
        ]),
        None,
    );
    let route = t.get(&key(80)).unwrap();
    let firsts: Vec<String> = (0..6)
        .map(|_| route.pick_order().next().unwrap().addr.ip().to_string())
        .collect();
    assert_eq!(
        firsts,
        [
            "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.3"
        ]
    );
    let order: Vec<String> = route
        .pick_order()
        .map(|e| e.addr.ip().to_string())
        .collect();
    assert_eq!(order, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);

    // With 10.0.0.2 unusable its turns pass to the next turn of the cursor: the others share
    // the load evenly instead of 10.0.0.3 taking 10.0.0.2's share.
    let usable = |e: &crate::control::table::Endpoint| e.addr.ip().to_string() != "10.0.0.2";
    let firsts: Vec<String> = (0..4)
        .map(|_| {
            route
                .pick_order_usable(usable)
                .next()
                .unwrap()
                .addr
                .ip()
                .to_string()
        })
        .collect();
    assert_eq!(firsts, ["10.0.0.3", "10.0.0.1", "10.0.0.3", "10.0.0.1"]);
}

#[test]
fn an_empty_service_port_names_the_unnamed_port() {
    let t = build(
        &index(vec![
            port_map(&[("80", "default/web:"), ("81", "default/two:")]),
            service("web", [port(8080)]),
            service("two", [port(1).named("a"), port(2).named("b")]),
            slice("web-a", "web")
                .port(port(8080))
                .endpoint(ep("10.0.0.1").ready(true))
                .object(),
        ]),
        None,
    );
    assert_eq!(active(&t, 80), vec!["10.0.0.1:8080"]);
    let problem = t.get(&key(81)).unwrap().problem.clone().unwrap();
    assert!(
        problem.contains("has no TCP port without a name (it has: a 1/TCP, b 2/TCP)"),
        "{problem}"
    );
}

#[test]
fn external_name_services_are_reported() {
    let svc = fixture::service("default", "ext")
        .external_name("db.example.com")
        .port(port(5432))
        .object();
    let t = build(
        &index(vec![port_map(&[("5432", "default/ext:5432")]), svc]),
        None,
    );
    let problem = t.get(&key(5432)).unwrap().problem.clone().unwrap();
    assert!(
        problem.contains("type ExternalName (db.example.com)"),
        "{problem}"
    );
}

/// Port 80 split over `web` (90), `canary` (10), `off` (0) and `gone` (`weight_gone`, no
/// such Service); each existing Service with two ready endpoints.
fn split(weight_gone: u32) -> RouteTable {
    let backends = format!(
        "default/web:80=90, default/canary:80=10, default/off:80=0, default/gone:80={weight_gone}"
    );
    let mut objects = vec![port_map(&[
        ("80", "default/web:80"),
        ("80.backends", &backends),
    ])];
    for (i, name) in ["web", "canary", "off"].into_iter().enumerate() {
        objects.push(service(name, [port(80)]));
        objects.push(
            slice(name, name)
                .port(port(8080))
                .endpoint(ep(&format!("10.0.{i}.1")).ready(true))
                .endpoint(ep(&format!("10.0.{i}.2")).ready(true))
                .object(),
        );
    }
    build(&index(objects), None)
}

#[test]
fn a_split_port_sends_each_backend_its_weight_and_a_weightless_one_nothing() {
    let t = split(0);
    let route = t.get(&key(80)).unwrap();
    assert_eq!(route.backends.len(), 4);
    assert_eq!(
        active(&t, 80),
        [
            "10.0.0.1:8080",
            "10.0.0.2:8080",
            "10.0.1.1:8080",
            "10.0.1.2:8080"
        ],
        "the weightless backend's endpoints take no connection"
    );
    let n = 10_000;
    let mut by_subnet = BTreeMap::<u8, u32>::new();
    for _ in 0..n {
        let first = route.pick_order().next().expect("a pick");
        let std::net::IpAddr::V4(ip) = first.addr.ip() else {
            unreachable!()
        };
        *by_subnet.entry(ip.octets()[2]).or_default() += 1;
    }
    // Binomial(10,000, 0.1): mean 1,000, sd 30; within 4 sd (3 would fail one run in 370).
    let canary = f64::from(by_subnet.get(&1).copied().unwrap_or(0));
    assert!((canary - 1000.0).abs() < 120.0, "{by_subnet:?}");
    assert_eq!(
        by_subnet.get(&2),
        None,
        "weight 0 got connections: {by_subnet:?}"
    );
    assert!(
        route
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains("backend default/gone:80=0: Service default/gone not found"),
        "{:?}",
        route.problem
    );
}

#[test]
fn retries_go_to_the_other_weighted_backends_after_the_chosen_ones_endpoints() {
    let t = split(0);
    let route = t.get(&key(80)).unwrap();
    for _ in 0..50 {
        let order: Vec<String> = route
            .pick_order()
            .map(|e| e.addr.ip().to_string())
            .collect();
        assert_eq!(order.len(), 4, "{order:?}");
        let chosen = &order[0][..7];
        assert!(
            order[..2].iter().all(|a| a.starts_with(chosen)),
            "{order:?}"
        );
        assert!(
            order[2..].iter().all(|a| !a.starts_with(chosen)),
            "{order:?}"
        );
        assert!(order.iter().all(|a| !a.starts_with("10.0.2.")), "{order:?}");
    }
}

#[test]
fn an_unresolved_backend_refuses_its_share_and_only_its_share() {
    // web 90, canary 10, gone 100: half the connections are refused (empty pick order).
    let t = split(100);
    let route = t.get(&key(80)).unwrap();
    let refused = (0..10_000)
        .filter(|_| route.pick_order().next().is_none())
        .count() as f64;
    // Binomial(10,000, 0.5): sd 50; within 4 sd.
    assert!((refused - 5000.0).abs() < 200.0, "{refused}");
    assert!(
        t.problems
            .iter()
            .any(|p| matches!(p, ConfigProblem::Unresolved { .. }))
    );
}

#[test]
fn every_weight_zero_refuses_everything() {
    let t = build(
        &index(vec![
            port_map(&[
                ("80", "default/web:80"),
                ("80.backends", "default/web:80=0"),
            ]),
            service("web", [port(80)]),
            slice("web-a", "web")
                .port(port(80))
                .endpoint(ep("10.0.0.1").ready(true))
                .object(),
        ]),
        None,
    );
    let route = t.get(&key(80)).unwrap();
    assert_eq!(route.active_count(), 0);
    assert!(route.pick_order().next().is_none());
    assert_eq!(route.selection, Selection::None);
}

#[test]
fn a_range_goes_to_each_endpoint_port_at_its_offset_or_to_one_port() {
    let objects = |target: Option<&str>| {
        let mut entries = vec![("30000-30004", "default/rtp:media")];
        if let Some(t) = target {
            entries.push(("30000-30004.range-target", t));
        }
        vec![
            port_map(&entries),
            service("rtp", [port(30000).named("media").target_number(40000)]),
            slice("rtp-a", "rtp")
                .port(port(40000).named("media"))
                .endpoint(ep("10.0.0.1").ready(true))
                .object(),
        ]
    };
    let t = build(&index(objects(None)), None);
    assert_eq!(active(&t, 30000), ["10.0.0.1:40000"]);
    assert_eq!(active(&t, 30003), ["10.0.0.1:40003"]);
    assert_eq!(
        t.get(&key(30004)).unwrap().span().to_string(),
        "30000-30004"
    );
    let t = build(&index(objects(Some("one"))), None);
    assert_eq!(active(&t, 30003), ["10.0.0.1:40000"]);
}
