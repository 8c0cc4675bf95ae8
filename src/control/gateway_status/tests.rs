//! Rendering of the Gateway API status: what is written, and when nothing is.

use serde_json::json;

use super::*;

const CONTROLLER: &str = "dermaga.io/gateway-controller";

fn route_status(status: Option<Value>, accepted: bool) -> GatewayApiStatus {
    let mut out = GatewayApiStatus::default();
    out.routes.insert(
        (Kind::TcpRoute, ObjectName::new("shop", "shop")),
        RouteStatus {
            observed: Observed {
                generation: Some(3),
                resource_version: Some("41".into()),
                status,
            },
            parents: vec![ParentStatus {
                parent_ref: ParentReference {
                    name: "edge".into(),
                    namespace: Some("infra".into()),
                    ..ParentReference::default()
                },
                conditions: vec![if accepted {
                    Condition::yes("Accepted", "Accepted", "attached")
                } else {
                    Condition::no("Accepted", "NotAllowedByListeners", "not allowed")
                }],
            }],
        },
    );
    out
}

#[test]
fn a_new_status_is_written_with_generation_time_and_the_resource_version() {
    let writes = route_status(None, true).writes(CONTROLLER, "2026-12-04T01:00:00Z");
    assert_eq!(writes.len(), 1);
    let w = &writes[0];
    assert_eq!(w.kind, Kind::TcpRoute);
    assert_eq!(w.resource_version.as_deref(), Some("41"));
    assert_eq!(
        w.status,
        json!({"parents": [{
            "parentRef": {"name": "edge", "namespace": "infra"},
            "controllerName": CONTROLLER,
            "conditions": [{
                "type": "Accepted", "status": "True", "reason": "Accepted",
                "message": "attached", "lastTransitionTime": "2026-12-04T01:00:00Z",
                "observedGeneration": 3,
            }],
        }]})
    );
}

#[test]
fn nothing_is_written_when_the_object_already_says_it_and_times_stay_while_status_does() {
    let first = route_status(None, true).writes(CONTROLLER, "2026-12-04T01:00:00Z");
    let written = first[0].status.clone();
    // Read back as written, an hour later: nothing to write.
    let again =
        route_status(Some(written.clone()), true).writes(CONTROLLER, "2026-12-04T02:00:00Z");
    assert!(again.is_empty(), "{again:?}");
    // The condition flips: written, with the new time.
    let flipped = route_status(Some(written), false).writes(CONTROLLER, "2026-12-04T02:00:00Z");
    let condition = &flipped[0].status["parents"][0]["conditions"][0];
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["lastTransitionTime"], "2026-12-04T02:00:00Z");
}

#[test]
fn other_controllers_parent_entries_are_kept() {
    let theirs = json!({
        "parentRef": {"name": "mesh"},
        "controllerName": "example.com/other",
        "conditions": [],
    });
    let ours_before = json!({
        "parentRef": {"name": "edge", "namespace": "infra"},
        "controllerName": CONTROLLER,
        "conditions": [],
    });
    let observed = json!({"parents": [ours_before, theirs.clone()]});
    let writes = route_status(Some(observed), true).writes(CONTROLLER, "2026-12-04T01:00:00Z");
    let parents = writes[0].status["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2);
    assert_eq!(parents[0], theirs, "theirs first, unchanged");
    assert_eq!(parents[1]["controllerName"], CONTROLLER);
}

#[test]
fn gateways_report_listeners_and_addresses_by_type() {
    let mut status = GatewayApiStatus::default();
    status.gateways.insert(
        ObjectName::new("infra", "edge"),
        GatewayStatus {
            observed: Observed::default(),
            conditions: vec![Condition::yes("Accepted", "Accepted", "ok")],
            listeners: vec![ListenerStatus {
                name: "shop".into(),
                supported_kinds: vec!["TCPRoute"],
                attached_routes: 1,
                conditions: vec![Condition::yes("Programmed", "Programmed", "ok")],
            }],
            addresses: vec!["192.0.2.10".into(), "lb.example.com".into()],
        },
    );
    let writes = status.writes(CONTROLLER, "2026-12-04T01:00:00Z");
    let s = &writes[0].status;
    assert_eq!(
        s["listeners"][0]["supportedKinds"],
        json!([{"group": GROUP, "kind": "TCPRoute"}])
    );
    assert_eq!(s["listeners"][0]["attachedRoutes"], 1);
    assert_eq!(
        s["addresses"],
        json!([
            {"type": "IPAddress", "value": "192.0.2.10"},
            {"type": "Hostname", "value": "lb.example.com"},
        ])
    );
    assert!(
        s["conditions"][0].get("observedGeneration").is_none(),
        "no generation read, none claimed"
    );
}
