//! Table-driven tests of `build()` with fixture objects.

use super::*;
use crate::control::configmap::ReservedPorts;
use crate::control::index::{IndexSettings, Kind, Object};
use crate::control::table::{ConfigProblem, Selection};
use crate::names::ListenPort;
use serde_json::json;

fn configmap(data: serde_json::Value) -> Object {
    Object::ConfigMap(
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"namespace": "dermaga", "name": "tcp-services"},
            "data": data,
        }))
        .unwrap(),
    )
}

fn service(name: &str, ports: serde_json::Value) -> Object {
    Object::Service(
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "default", "name": name},
            "spec": {"ports": ports},
        }))
        .unwrap(),
    )
}

fn slice(
    name: &str,
    svc: &str,
    address_type: &str,
    ports: serde_json::Value,
    endpoints: serde_json::Value,
) -> Object {
    Object::EndpointSlice(
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "default", "name": name,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": address_type,
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap(),
    )
}

fn ep(
    addr: &str,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> serde_json::Value {
    let mut conditions = serde_json::Map::new();
    if let Some(v) = ready {
        conditions.insert("ready".into(), json!(v));
    }
    if let Some(v) = serving {
        conditions.insert("serving".into(), json!(v));
    }
    if let Some(v) = terminating {
        conditions.insert("terminating".into(), json!(v));
    }
    json!({"addresses": [addr], "conditions": conditions,
           "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("pod-{addr}")}})
}

fn index(objects: Vec<Object>) -> Index {
    let mut reserved = ReservedPorts::default();
    reserved.reserve(10254, "admin");
    let mut index = Index::new(IndexSettings {
        port_maps: vec![(Protocol::Tcp, ObjectName::new("dermaga", "tcp-services"))],
        reserved,
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
            configmap(
                json!({"10000": "default/xyz-10000:10000", "20000": "default/xyz-20000:20000"}),
            ),
            service("xyz-10000", json!([{"port": 10000}])),
            service("xyz-20000", json!([{"port": 20000}])),
            slice(
                "xyz-10000-a",
                "xyz-10000",
                "IPv4",
                json!([{"port": 10000}]),
                json!([ep("10.0.0.1", Some(true), None, None)]),
            ),
            slice(
                "xyz-20000-a",
                "xyz-20000",
                "IPv4",
                json!([{"port": 20000}]),
                json!([ep("10.0.0.2", Some(true), None, None)]),
            ),
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
            configmap(json!({"5432": "default/pg:db", "5433": "default/pg:5432"})),
            service(
                "pg",
                json!([{"name": "db", "port": 5432, "targetPort": "db"}, {"name": "metrics", "port": 9187}]),
            ),
            slice(
                "pg-a",
                "pg",
                "IPv4",
                json!([{"name": "db", "port": 15432}, {"name": "metrics", "port": 9187}]),
                json!([ep("10.0.0.1", Some(true), None, None)]),
            ),
            slice(
                "pg-b",
                "pg",
                "IPv4",
                json!([{"name": "db", "port": 25432}]),
                json!([ep("10.0.0.2", Some(true), None, None)]),
            ),
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
        endpoints: serde_json::Value,
        want: Vec<&'static str>,
        selection: Selection,
    }
    let cases = vec![
        Case {
            name: "ready only",
            endpoints: json!([
                ep("10.0.0.1", Some(true), Some(true), Some(false)),
                ep("10.0.0.2", Some(false), Some(true), Some(true))
            ]),
            want: vec!["10.0.0.1:80"],
            selection: Selection::Ready,
        },
        Case {
            name: "terminating but still marked ready: not while another is ready",
            endpoints: json!([
                ep("10.0.0.1", Some(true), Some(true), Some(true)),
                ep("10.0.0.2", Some(true), Some(true), Some(false))
            ]),
            want: vec!["10.0.0.2:80"],
            selection: Selection::Ready,
        },
        Case {
            name: "nil conditions count as ready",
            endpoints: json!([ep("10.0.0.1", None, None, None)]),
            want: vec!["10.0.0.1:80"],
            selection: Selection::Ready,
        },
        Case {
            name: "no ready: serving and terminating",
            endpoints: json!([
                ep("10.0.0.1", Some(false), Some(true), Some(true)),
                ep("10.0.0.2", Some(false), Some(false), Some(true)),
                ep("10.0.0.3", Some(false), Some(false), Some(false))
            ]),
            want: vec!["10.0.0.1:80"],
            selection: Selection::ServingTerminating,
        },
        Case {
            name: "nothing usable",
            endpoints: json!([
                ep("10.0.0.2", Some(false), Some(false), Some(true)),
                ep("10.0.0.3", Some(false), None, None)
            ]),
            want: vec![],
            selection: Selection::None,
        },
        Case {
            name: "no endpoints at all",
            endpoints: json!([]),
            want: vec![],
            selection: Selection::None,
        },
    ];
    for case in cases {
        let t = build(
            &index(vec![
                configmap(json!({"80": "default/web:80"})),
                service("web", json!([{"port": 80}])),
                slice(
                    "web-a",
                    "web",
                    "IPv4",
                    json!([{"port": 80}]),
                    case.endpoints,
                ),
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
            configmap(json!({"80": "default/web:80"})),
            service("web", json!([{"port": 80}])),
            slice(
                "web-v4",
                "web",
                "IPv4",
                json!([{"port": 8080}]),
                json!([
                    ep("10.0.0.1", Some(true), None, None),
                    ep("not-an-ip", Some(true), None, None)
                ]),
            ),
            slice(
                "web-v6",
                "web",
                "IPv6",
                json!([{"port": 8080}]),
                json!([ep("fd00::1", Some(true), None, None)]),
            ),
            slice(
                "web-fqdn",
                "web",
                "FQDN",
                json!([{"port": 8080}]),
                json!([ep("example.com", Some(true), None, None)]),
            ),
            // The same address again, not ready, in a second IPv4 slice: the ready copy wins.
            slice(
                "web-v4-dup",
                "web",
                "IPv4",
                json!([{"port": 8080}]),
                json!([ep("10.0.0.1", Some(false), None, None)]),
            ),
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
            configmap(
                json!({"80": "default/nosuch:80", "81": "default/web:9999", "82": "default/web:http", "83": "default/web:80"}),
            ),
            service(
                "web",
                json!([{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
            ),
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
            configmap(json!({"53": "default/dns:53"})),
            service("dns", json!([{"port": 53, "protocol": "UDP"}])),
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
    let t = build(&index(vec![service("web", json!([{"port": 80}]))]), None);
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
            configmap(json!({"80": value, "81": "default/web:80"})),
            service("web", json!([{"port": 80}])),
            slice(
                "web-a",
                "web",
                "IPv4",
                json!([{"port": 8080}]),
                json!([ep("10.0.0.1", Some(true), None, None)]),
            ),
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
        configmap(json!({"80": "default/web:80"})),
        service("web", json!([{"port": 80}])),
        slice(
            "s1",
            "web",
            "IPv4",
            json!([{"port": 80}]),
            json!([ep("10.0.0.1", Some(true), None, None)]),
        ),
    ]);
    assert_eq!(active(&build(&idx, None), 80), vec!["10.0.0.1:80"]);
    // The slice is relabelled to another Service: it leaves web.
    idx.apply(slice(
        "s1",
        "other",
        "IPv4",
        json!([{"port": 80}]),
        json!([ep("10.0.0.1", Some(true), None, None)]),
    ));
    assert!(active(&build(&idx, None), 80).is_empty());
    idx.apply(slice(
        "s1",
        "web",
        "IPv4",
        json!([{"port": 80}]),
        json!([ep("10.0.0.9", Some(true), None, None)]),
    ));
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
            configmap(json!({"80": "default/web:80"})),
            service("web", json!([{"port": 80}])),
            slice(
                "web-a",
                "web",
                "IPv4",
                json!([{"port": 80}]),
                json!([
                    ep("10.0.0.1", Some(true), None, None),
                    ep("10.0.0.2", Some(true), None, None),
                    ep("10.0.0.3", Some(true), None, None)
                ]),
            ),
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
            configmap(json!({"80": "default/web:", "81": "default/two:"})),
            service("web", json!([{"port": 8080}])),
            service(
                "two",
                json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}]),
            ),
            slice(
                "web-a",
                "web",
                "IPv4",
                json!([{"port": 8080}]),
                json!([ep("10.0.0.1", Some(true), None, None)]),
            ),
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
    let svc = Object::Service(
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "default", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com", "ports": [{"port": 5432}]},
        }))
        .unwrap(),
    );
    let t = build(
        &index(vec![configmap(json!({"5432": "default/ext:5432"})), svc]),
        None,
    );
    let problem = t.get(&key(5432)).unwrap().problem.clone().unwrap();
    assert!(
        problem.contains("type ExternalName (db.example.com)"),
        "{problem}"
    );
}
