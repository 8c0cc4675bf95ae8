//! The Grafana dashboard in deploy/ only queries metrics that dermaga exposes.

use std::collections::BTreeSet;

use dermaga::Metrics;
use dermaga::{ConnectFailure, RefuseReason};
use dermaga::{ListenPort, ObjectName, Protocol, RouteKey};

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if (k == "expr" || k == "query")
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_owned());
                }
                exprs(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

/// Every sample name the process exposes once each kind of series exists.
fn exposed() -> BTreeSet<String> {
    let m = Metrics::new();
    let svc = ObjectName::new("default", "web");
    let tcp = m.port(RouteKey::tcp(ListenPort::new(1).unwrap()), &svc);
    tcp.accepted.inc();
    tcp.duration.observe(0.1);
    tcp.refused(RefuseReason::no_endpoints);
    tcp.connect_failed(
        "10.0.0.1:80".parse().unwrap(),
        Some("pod default/web-0"),
        ConnectFailure::refused,
    );
    let udp = m.udp(
        RouteKey {
            port: ListenPort::new(1).unwrap(),
            protocol: Protocol::Udp,
        },
        &svc,
    );
    udp.flow_ended("idle_timeout");
    udp.dropped("max_flows");
    m.udp_kernel_drops(ListenPort::new(1).unwrap()).inc();
    m.config_loaded(true, 0);
    let endpoint = "10.0.0.1:80".parse().unwrap();
    m.endpoint_ejection(endpoint, "pod default/web-0");
    m.endpoint_ejected(endpoint, true);
    m.endpoint_check_unhealthy(endpoint, true);
    m.health_check(endpoint, false);
    tcp.all_endpoints_unhealthy.inc();
    m.encode()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_dashboard_query_uses_an_exposed_metric() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dermaga.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(
        queries.len() >= 10,
        "the dashboard has panels: {} queries",
        queries.len()
    );
    let exposed = exposed();
    let mut used = BTreeSet::new();
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(i) = rest.find("dermaga_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            assert!(
                exposed.contains(&name),
                "{name} (in `{q}`) is not exposed; exposed: {exposed:#?}"
            );
            used.insert(name);
        }
    }
    for must in [
        "dermaga_connections_accepted_total",
        "dermaga_upstream_connect_failures_total",
        "dermaga_udp_flows_active",
        "dermaga_endpoint_ejections_total",
        "dermaga_endpoint_ejected",
    ] {
        assert!(used.contains(must), "the dashboard shows {must}");
    }
}
