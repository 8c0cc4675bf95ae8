//! Resources that are two representations of one stored collection, as in a real API server
//! (one etcd prefix, converted to the version a request asks for): `events.k8s.io/v1` Events
//! are core `v1` Events. They are stored in the core shape under [`resources::EVENTS`] and
//! converted on the way in and out with the field mapping of Kubernetes'
//! `pkg/apis/events/v1/conversion.go`; metadata (name, uid, resourceVersion, ...) is shared.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::catalog::{Resource, resources};
use crate::object;

/// `(events.k8s.io/v1 field, core v1 field)` pairs that differ in name; every other field
/// (`metadata`, `eventTime`, `series`, `action`, `reason`, `type`, `related`,
/// `reportingInstance`) has the same name in both.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// The resource whose store holds the objects of `resource`.
pub(crate) fn storage_resource(resource: &Resource) -> Resource {
    if *resource == resources::EVENTS_V1 {
        resources::EVENTS
    } else {
        *resource
    }
}

/// Renames the top-level fields of `object` from one side of `pairs` to the other. A field
/// that already has a target name is an unknown field of the source representation (e.g.
/// `message` in an events.k8s.io body): the real decoder drops it, and so does this.
fn rename(object: Value, pairs: impl Fn(&str) -> Option<(&'static str, &'static str)>) -> Value {
    let Value::Object(fields) = object else {
        return object;
    };
    let mut renamed = Map::new();
    let mut later = Vec::new();
    for (key, value) in fields {
        match pairs(&key) {
            Some((from, to)) if key == from => later.push((to, value)),
            Some(_) => {}
            None => {
                renamed.insert(key, value);
            }
        }
    }
    for (key, value) in later {
        renamed.insert(key.to_string(), value);
    }
    Value::Object(renamed)
}

fn event_pair(key: &str, v1_to_core: bool) -> Option<(&'static str, &'static str)> {
    EVENT_FIELDS
        .iter()
        .find(|(v1, core)| key == *v1 || key == *core)
        .map(|(v1, core)| {
            if v1_to_core {
                (*v1, *core)
            } else {
                (*core, *v1)
            }
        })
}

/// `object`, given in the shape of `resource`, in the shape it is stored in.
pub(crate) fn to_storage(resource: &Resource, object: Value) -> Value {
    if *resource != resources::EVENTS_V1 {
        return object;
    }
    let mut core = rename(object, |key| event_pair(key, true));
    let root = object::ensure_object(&mut core);
    // `involvedObject` is a struct in core v1 (always serialized, required by typed clients),
    // `regarding` an optional field in events.k8s.io.
    if root.get("involvedObject").is_none_or(Value::is_null) {
        root.insert("involvedObject".into(), json!({}));
    }
    let storage = storage_resource(resource);
    object::set_type_meta(&mut core, &storage.api_version(), storage.kind);
    core
}

/// The stored `object` in the shape of `resource`.
pub(crate) fn from_storage(resource: &Resource, object: &Arc<Value>) -> Arc<Value> {
    if *resource != resources::EVENTS_V1 {
        return object.clone();
    }
    let mut event = rename((**object).clone(), |key| event_pair(key, false));
    object::set_type_meta(&mut event, &resource.api_version(), resource.kind);
    Arc::new(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_the_mapped_fields() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "ns", "resourceVersion": "7"},
            "regarding": {"kind": "ConfigMap", "name": "cm", "namespace": "ns"},
            "note": "n", "reason": "R", "type": "Warning", "action": "A",
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"},
            "reportingController": "c", "reportingInstance": "i",
            "deprecatedSource": {"component": "s"}, "deprecatedCount": 3,
            "deprecatedFirstTimestamp": "2024-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2024-01-01T00:00:02Z",
            "message": "an unknown field in events.k8s.io: dropped"
        });
        let core = to_storage(&resources::EVENTS_V1, v1.clone());
        assert_eq!(
            core,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "e", "namespace": "ns", "resourceVersion": "7"},
                "involvedObject": {"kind": "ConfigMap", "name": "cm", "namespace": "ns"},
                "message": "n", "reason": "R", "type": "Warning", "action": "A",
                "eventTime": "2024-01-01T00:00:00.000000Z",
                "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"},
                "reportingComponent": "c", "reportingInstance": "i",
                "source": {"component": "s"}, "count": 3,
                "firstTimestamp": "2024-01-01T00:00:00Z",
                "lastTimestamp": "2024-01-01T00:00:02Z"
            })
        );
        let mut expected = v1;
        expected.as_object_mut().unwrap().remove("message");
        assert_eq!(
            *from_storage(&resources::EVENTS_V1, &Arc::new(core)),
            expected
        );
    }

    #[test]
    fn a_missing_regarding_is_an_empty_involved_object() {
        let core = to_storage(&resources::EVENTS_V1, json!({"metadata": {"name": "e"}}));
        assert_eq!(core["involvedObject"], json!({}));
        let v1 = from_storage(&resources::EVENTS_V1, &Arc::new(core));
        assert_eq!(v1["regarding"], json!({}));
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
    }

    #[test]
    fn other_resources_are_stored_as_given() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "note": 1});
        assert_eq!(to_storage(&resources::CONFIGMAPS, object.clone()), object);
        assert_eq!(storage_resource(&resources::EVENTS), resources::EVENTS);
        assert_eq!(storage_resource(&resources::EVENTS_V1), resources::EVENTS);
    }
}
