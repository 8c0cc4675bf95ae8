//! Events: `events.k8s.io/v1` and core `v1` are two representations of the same objects, as
//! in a real cluster. Whatever is written through one group is read, listed, selected and
//! watched through the other in that group's shape, with shared resourceVersions.

mod common;

use common::{Raw, summary};
use dermaga_testapi::{ApiServer, resources};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, ObjectReference};
use kube::Api;
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};
use std::time::Duration;

const V1_EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const CORE_EVENTS: &str = "/api/v1/namespaces/default/events";

/// A ConfigMap `web` in `default`; returns its uid.
fn config_map(server: &ApiServer) -> String {
    let stored = server
        .apply(common::config_map("default", "web", json!({}), json!({})))
        .unwrap();
    stored["metadata"]["uid"].as_str().unwrap().to_string()
}

fn v1_event(uid: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "eventTime": "2025-01-01T10:00:00.000000Z",
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "name": "web",
                      "namespace": "default", "uid": uid},
        "reason": "InvalidEntry", "note": "entry 10006 is not valid", "type": "Warning",
        "action": "Reconcile", "reportingController": "dermaga.io/controller",
        "reportingInstance": "dermaga-0"
    })
}

fn rv(object: &Value) -> &str {
    object["metadata"]["resourceVersion"].as_str().unwrap()
}

#[tokio::test]
async fn both_groups_read_and_write_the_same_events() {
    let server = ApiServer::start().await.unwrap();
    let raw = Raw::new(&server);
    let uid = config_map(&server);
    let start = server
        .get(&resources::CONFIGMAPS, "default", "web")
        .unwrap();
    let start = rv(&start);
    let (_, mut core_watch) = raw
        .watch(&format!("{CORE_EVENTS}?watch=true&resourceVersion={start}"))
        .await;
    let (_, mut v1_watch) = raw
        .watch(&format!("{V1_EVENTS}?watch=true&resourceVersion={start}"))
        .await;

    // create through events.k8s.io: the core view has the mapped fields
    let (code, created) = raw.post(V1_EVENTS, v1_event(&uid)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["apiVersion"], "events.k8s.io/v1");
    assert_eq!(created["note"], "entry 10006 is not valid");
    let (code, core) = raw.get(&format!("{CORE_EVENTS}/web.1")).await;
    assert_eq!(code, 200, "{core}");
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["kind"], "Event");
    assert_eq!(core["involvedObject"]["kind"], "ConfigMap");
    assert_eq!(core["involvedObject"]["name"], "web");
    assert_eq!(core["involvedObject"]["uid"], uid.as_str());
    assert_eq!(core["message"], "entry 10006 is not valid");
    assert_eq!(core["reportingComponent"], "dermaga.io/controller");
    assert_eq!(core["reportingInstance"], "dermaga-0");
    for (field, value) in [
        ("reason", "InvalidEntry"),
        ("type", "Warning"),
        ("action", "Reconcile"),
        ("eventTime", "2025-01-01T10:00:00.000000Z"),
    ] {
        assert_eq!(core[field], value, "{field}");
    }
    for v1_only in ["regarding", "note", "reportingController"] {
        assert!(core.get(v1_only).is_none(), "{v1_only} in {core}");
    }
    assert_eq!(core["metadata"], created["metadata"], "one object");

    // both watches see it, each in its own shape
    let event = core_watch.next_change().await.unwrap();
    assert_eq!(summary(&event), ("ADDED".into(), "web.1".into()));
    assert_eq!(event["object"]["message"], "entry 10006 is not valid");
    let event = v1_watch.next_change().await.unwrap();
    assert_eq!(summary(&event), ("ADDED".into(), "web.1".into()));
    assert_eq!(event["object"]["note"], "entry 10006 is not valid");
    assert_eq!(rv(&event["object"]), rv(&created));

    // kubectl describe's field selector finds it through core v1; events.k8s.io has its own
    let selector = format!(
        "involvedObject.name=web,involvedObject.namespace=default,involvedObject.kind=ConfigMap,involvedObject.uid={uid}"
    );
    let (code, list) = raw
        .get(&format!("{CORE_EVENTS}?fieldSelector={selector}"))
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "EventList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["message"], "entry 10006 is not valid");
    let (_, list) = raw
        .get(&format!(
            "{CORE_EVENTS}?fieldSelector=involvedObject.name=web,involvedObject.uid=other"
        ))
        .await;
    assert!(list["items"].as_array().unwrap().is_empty(), "{list}");
    let (_, list) = raw
        .get(&format!(
            "{V1_EVENTS}?fieldSelector=regarding.name=web,reportingController=dermaga.io/controller"
        ))
        .await;
    assert_eq!(list["items"][0]["note"], "entry 10006 is not valid");
    let (code, _) = raw
        .get(&format!(
            "{V1_EVENTS}?fieldSelector=involvedObject.name=web"
        ))
        .await;
    assert_eq!(code, 400);

    // merge patch through events.k8s.io (as kube-rs's Recorder repeats an Event)
    let patch = json!({"series": {"count": 2, "lastObservedTime": "2025-01-01T10:00:05.000000Z"},
                       "note": "entry 10006 is still not valid"});
    let (code, patched) = raw
        .patch(
            &format!("{V1_EVENTS}/web.1"),
            "application/merge-patch+json",
            patch,
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["series"]["count"], 2);
    let core = server.get(&resources::EVENTS, "default", "web.1").unwrap();
    assert_eq!(core["series"]["count"], 2);
    assert_eq!(core["message"], "entry 10006 is still not valid");
    assert_eq!(rv(&core), rv(&patched));
    let event = core_watch.next_change().await.unwrap();
    assert_eq!(summary(&event), ("MODIFIED".into(), "web.1".into()));
    assert_eq!(event["object"]["message"], "entry 10006 is still not valid");
    let event = v1_watch.next_change().await.unwrap();
    assert_eq!(summary(&event), ("MODIFIED".into(), "web.1".into()));
    assert_eq!(event["object"]["note"], "entry 10006 is still not valid");

    // update through core v1, with the resourceVersion read through events.k8s.io
    let mut update = core.clone();
    update["message"] = json!("fixed");
    update["metadata"]["resourceVersion"] = json!(rv(&patched));
    let (code, updated) = raw.put(&format!("{CORE_EVENTS}/web.1"), update).await;
    assert_eq!(code, 200, "{updated}");
    let (_, v1) = raw.get(&format!("{V1_EVENTS}/web.1")).await;
    assert_eq!(v1["note"], "fixed");
    assert_eq!(v1["regarding"]["uid"], uid.as_str());
    assert_eq!(v1["series"]["count"], 2);
    let mut stale = v1.clone();
    stale["metadata"]["resourceVersion"] = json!(rv(&patched));
    let (code, _) = raw.put(&format!("{V1_EVENTS}/web.1"), stale).await;
    assert_eq!(code, 409, "the resourceVersion is shared");

    // create through core v1: visible through events.k8s.io
    let (code, _) = raw
        .post(
            CORE_EVENTS,
            json!({"metadata": {"name": "web.2"}, "involvedObject": {"kind": "ConfigMap", "name": "web"},
                   "message": "m", "reason": "R", "source": {"component": "c"}, "count": 3,
                   "firstTimestamp": "2025-01-01T10:00:00Z", "lastTimestamp": "2025-01-01T10:00:09Z"}),
        )
        .await;
    assert_eq!(code, 201);
    let (_, v1) = raw.get(&format!("{V1_EVENTS}/web.2")).await;
    assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
    assert_eq!(v1["regarding"]["name"], "web");
    assert_eq!(v1["note"], "m");
    assert_eq!(v1["deprecatedSource"]["component"], "c");
    assert_eq!(v1["deprecatedCount"], 3);
    assert_eq!(v1["deprecatedFirstTimestamp"], "2025-01-01T10:00:00Z");
    assert_eq!(v1["deprecatedLastTimestamp"], "2025-01-01T10:00:09Z");

    // the store's view: the same objects in each group's shape
    let core_list = server.list(&resources::EVENTS, Some("default"));
    let v1_list = server.list(&resources::EVENTS_V1, Some("default"));
    let names = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|e| e["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&core_list), ["web.1", "web.2"]);
    assert_eq!(names(&v1_list), names(&core_list));
    assert!(core_list.iter().all(|e| e["apiVersion"] == "v1"));
    assert!(
        v1_list
            .iter()
            .all(|e| e["apiVersion"] == "events.k8s.io/v1")
    );
    assert_eq!(v1_list[1]["note"], "m");

    // delete through core v1: gone from both, both watches see it
    let (code, _) = raw.delete(&format!("{CORE_EVENTS}/web.1")).await;
    assert_eq!(code, 200);
    let (code, missing) = raw.get(&format!("{V1_EVENTS}/web.1")).await;
    assert_eq!(code, 404);
    assert_eq!(
        missing["message"],
        "events.events.k8s.io \"web.1\" not found"
    );
    for (watch, field) in [(&mut core_watch, "message"), (&mut v1_watch, "note")] {
        let event = watch.next_change().await.unwrap();
        assert_eq!(summary(&event), ("MODIFIED".into(), "web.1".into()));
        assert_eq!(event["object"][field], "fixed");
        let event = watch.next_change().await.unwrap();
        assert_eq!(summary(&event), ("ADDED".into(), "web.2".into()));
        let event = watch.next_change().await.unwrap();
        assert_eq!(summary(&event), ("DELETED".into(), "web.1".into()));
        assert!(event["object"].get(field).is_some(), "{event}");
    }
    let (code, _) = raw.delete(&format!("{V1_EVENTS}/web.2")).await;
    assert_eq!(code, 200);
    assert!(server.list(&resources::EVENTS, None).is_empty());

    // deleting the namespace takes them along, once
    let (code, _) = raw.post(V1_EVENTS, v1_event(&uid)).await;
    assert_eq!(code, 201);
    server.delete(&resources::NAMESPACES, "", "default");
    assert!(server.list(&resources::EVENTS_V1, None).is_empty());
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(summary(&core_watch.next_change().await.unwrap()));
    }
    let expected = [
        ("DELETED", "web.2"),
        ("ADDED", "web.1"),
        ("DELETED", "web.1"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
    assert_eq!(seen, expected);
    let quiet = core_watch.next_within(Duration::from_millis(300)).await;
    assert!(
        matches!(quiet, Err(()) | Ok(None)),
        "one DELETED per Event: {quiet:?}"
    );
}

#[tokio::test]
async fn kube_rs_recorder_events_are_core_v1_events() {
    let server = ApiServer::start().await.unwrap();
    let client = common::kube_client(&server).await;
    config_map(&server);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let web = config_maps.get("web").await.unwrap();
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: web.metadata.name.clone(),
        namespace: web.metadata.namespace.clone(),
        uid: web.metadata.uid.clone(),
        ..Default::default()
    };
    let recorder = Recorder::new(client.clone(), Reporter::from("dermaga-test"));
    let event = Event {
        type_: EventType::Warning,
        reason: "PortBindFailed".into(),
        note: Some("cannot bind 10005/TCP".into()),
        action: "Bind".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    // the same Event again: the Recorder merge-patches its series
    recorder.publish(&event, &reference).await.unwrap();

    let events: Api<CoreEvent> = Api::namespaced(client, "default");
    let selector = format!(
        "involvedObject.name=web,involvedObject.namespace=default,involvedObject.kind=ConfigMap,involvedObject.uid={}",
        web.metadata.uid.as_deref().unwrap()
    );
    let listed = events
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "{:?}", listed.items);
    let core = &listed.items[0];
    assert_eq!(core.reason.as_deref(), Some("PortBindFailed"));
    assert_eq!(core.message.as_deref(), Some("cannot bind 10005/TCP"));
    assert_eq!(core.reporting_component.as_deref(), Some("dermaga-test"));
    assert_eq!(core.involved_object.uid, web.metadata.uid);
    assert_eq!(core.series.as_ref().map(|s| s.count), Some(Some(2)));
    assert_eq!(server.list(&resources::EVENTS_V1, None).len(), 1);
}
