//! Strategic merge patch (`application/strategic-merge-patch+json`): a JSON merge patch whose
//! lists merge per the kind's patch metadata ([`super::schema`]), with the directives
//! `$patch` (`replace`, `delete`, `merge`), `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>` that kubectl sends.

use serde_json::{Map, Value};

use super::schema::{ListStrategy, list_strategy};
use crate::catalog::Resource;

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies `patch` to `original` (both whole objects of `resource`).
pub(crate) fn apply(resource: &Resource, original: &Value, patch: &Value) -> Result<Value, String> {
    let (Some(original), Some(patch)) = (original.as_object(), patch.as_object()) else {
        return Err("invalid JSON document: a strategic merge patch must be a JSON object".into());
    };
    let merger = Merger { resource };
    match merger.merge_map(original.clone(), patch, &mut Vec::new())? {
        Merged::Value(map) => Ok(Value::Object(map)),
        Merged::Deleted => Ok(Value::Object(Map::new())),
    }
}

enum Merged {
    Value(Map<String, Value>),
    Deleted,
}

struct Merger<'a> {
    resource: &'a Resource,
}

impl Merger<'_> {
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        patch: &Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<Merged, String> {
        match patch.get(PATCH_DIRECTIVE) {
            None => {}
            Some(Value::String(d)) if d == "replace" => {
                let mut replaced = patch.clone();
                replaced.remove(PATCH_DIRECTIVE);
                return Ok(Merged::Value(replaced));
            }
            Some(Value::String(d)) if d == "delete" => return Ok(Merged::Deleted),
            Some(Value::String(d)) if d == "merge" => {}
            Some(other) => return Err(format!("Unknown patch type: {other}")),
        }
        if let Some(retain) = patch.get(RETAIN_KEYS) {
            let Some(keys) = retain.as_array() else {
                return Err("invalid patch: $retainKeys must be a list of strings".into());
            };
            let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
            if let Some(extra) = patch
                .keys()
                .find(|k| !k.starts_with('$') && !keys.contains(&k.as_str()))
            {
                return Err(format!(
                    "The patch contains a field not in $retainKeys: {extra}"
                ));
            }
            original.retain(|k, _| keys.contains(&k.as_str()));
        }
        for (key, values) in patch
            .iter()
            .filter(|(k, _)| k.starts_with(DELETE_FROM_PRIMITIVE_LIST))
        {
            let field = &key[DELETE_FROM_PRIMITIVE_LIST.len()..];
            let Some(remove) = values.as_array() else {
                return Err(format!("invalid patch: {key} must be a list"));
            };
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
        }
        for (key, value) in patch {
            if key.starts_with('$') {
                continue;
            }
            path.push(key.clone());
            self.merge_field(&mut original, key, value, path)?;
            path.pop();
        }
        for (key, order) in patch
            .iter()
            .filter(|(k, _)| k.starts_with(SET_ELEMENT_ORDER))
        {
            let field = &key[SET_ELEMENT_ORDER.len()..];
            let Some(order) = order.as_array() else {
                return Err(format!("invalid patch: {key} must be a list"));
            };
            path.push(field.to_string());
            let strategy = self.strategy(path);
            path.pop();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                reorder(list, order, strategy);
            }
        }
        Ok(Merged::Value(original))
    }

    fn strategy(&self, path: &[String]) -> ListStrategy {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        list_strategy(self.resource, &path)
    }

    fn merge_field(
        &self,
        original: &mut Map<String, Value>,
        key: &str,
        value: &Value,
        path: &mut Vec<String>,
    ) -> Result<(), String> {
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(patch) => {
                let base = match original.remove(key) {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                if let Merged::Value(map) = self.merge_map(base, patch, path)? {
                    original.insert(key.to_string(), Value::Object(map));
                }
            }
            Value::Array(patch) => {
                let base = match original.remove(key) {
                    Some(Value::Array(list)) => list,
                    _ => Vec::new(),
                };
                let merged = self.merge_list(base, patch, path)?;
                original.insert(key.to_string(), Value::Array(merged));
            }
            scalar => {
                original.insert(key.to_string(), scalar.clone());
            }
        }
        Ok(())
    }

    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, String> {
        match self.strategy(path) {
            ListStrategy::Replace => Ok(patch.iter().map(strip_directives).collect()),
            ListStrategy::MergeScalars => {
                let mut merged = original;
                for value in patch {
                    if !merged.contains(value) {
                        merged.push(value.clone());
                    }
                }
                Ok(merged)
            }
            ListStrategy::MergeByKey(merge_key) => {
                let directive = |v: &Value| {
                    v.get(PATCH_DIRECTIVE)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                if patch
                    .iter()
                    .any(|v| directive(v).as_deref() == Some("replace"))
                {
                    return Ok(patch
                        .iter()
                        .filter(|v| directive(v).as_deref() != Some("replace"))
                        .map(strip_directives)
                        .collect());
                }
                let mut merged = original;
                for element in patch {
                    let Some(element_map) = element.as_object() else {
                        return Err(format!(
                            "invalid patch: {} must be a list of maps",
                            path.join(".")
                        ));
                    };
                    let Some(key_value) = element_map.get(merge_key) else {
                        return Err(format!(
                            "map: {element} does not contain declared merge key: {merge_key}"
                        ));
                    };
                    let position = merged
                        .iter()
                        .position(|o| o.get(merge_key) == Some(key_value));
                    if directive(element).as_deref() == Some("delete") {
                        merged.retain(|o| o.get(merge_key) != Some(key_value));
                        continue;
                    }
                    match position {
                        Some(i) => {
                            let base = merged[i].as_object().cloned().unwrap_or_default();
                            match self.merge_map(base, element_map, path)? {
                                Merged::Value(map) => merged[i] = Value::Object(map),
                                Merged::Deleted => {
                                    merged.remove(i);
                                }
                            }
                        }
                        None => {
                            if let Merged::Value(map) =
                                self.merge_map(Map::new(), element_map, path)?
                            {
                                merged.push(Value::Object(map));
                            }
                        }
                    }
                }
                Ok(merged)
            }
        }
    }
}

/// A patch value with every directive removed (for values that replace rather than merge).
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Orders `list` as `order` (`$setElementOrder`) says: listed elements first in that order,
/// then the others in their current order.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let rank = |element: &Value| -> Option<usize> {
        order.iter().position(|o| match strategy {
            ListStrategy::MergeByKey(key) => o.get(key).is_some() && o.get(key) == element.get(key),
            _ => o == element,
        })
    };
    let mut ranked: Vec<(usize, usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, v)| (rank(&v).unwrap_or(usize::MAX), i, v))
        .collect();
    ranked.sort_by_key(|(rank, index, _)| (*rank, *index));
    list.extend(ranked.into_iter().map(|(_, _, v)| v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::resources;
    use serde_json::json;

    fn service_patch(original: Value, patch: Value) -> Value {
        apply(&resources::SERVICES, &original, &patch).unwrap()
    }

    #[test]
    fn service_ports_merge_by_port() {
        let original = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let patched = service_patch(
            original,
            json!({"spec": {"ports": [{"port": 443, "name": "tls"}, {"port": 8080}]}}),
        );
        assert_eq!(
            patched["spec"]["ports"],
            json!([{"port": 80, "name": "http"}, {"port": 443, "name": "tls"}, {"port": 8080}])
        );
    }

    #[test]
    fn directives_as_kubectl_apply_sends_them() {
        let original = json!({
            "metadata": {"finalizers": ["a", "b"], "labels": {"x": "1"}},
            "spec": {"ports": [{"port": 80}, {"port": 443}], "ipFamilies": ["IPv4"]}
        });
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"], "labels": {"x": null}},
            "spec": {
                "$setElementOrder/ports": [{"port": 9000}, {"port": 80}],
                "ports": [{"port": 9000}, {"$patch": "delete", "port": 443}],
                "ipFamilies": ["IPv6"]
            }
        });
        let patched = service_patch(original, patch);
        assert_eq!(
            patched["metadata"],
            json!({"finalizers": ["b", "c"], "labels": {}})
        );
        assert_eq!(
            patched["spec"]["ports"],
            json!([{"port": 9000}, {"port": 80}])
        );
        assert_eq!(patched["spec"]["ipFamilies"], json!(["IPv6"]));
    }

    #[test]
    fn replace_delete_and_retain_keys() {
        let original =
            json!({"spec": {"selector": {"a": "1", "b": "2"}, "type": "ClusterIP", "x": 1}});
        let patched = service_patch(
            original.clone(),
            json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}}),
        );
        assert_eq!(patched["spec"]["selector"], json!({"c": "3"}));
        let patched = service_patch(
            original.clone(),
            json!({"spec": {"selector": {"$patch": "delete"}}}),
        );
        assert!(patched["spec"].get("selector").is_none());
        let patched = service_patch(
            original,
            json!({"spec": {"$retainKeys": ["type", "x"], "type": "NodePort"}}),
        );
        assert_eq!(patched["spec"], json!({"type": "NodePort", "x": 1}));
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let original = json!({"endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 1}]});
        let patch = json!({"endpoints": [{"addresses": ["10.0.0.2"]}]});
        let patched = apply(&resources::ENDPOINTSLICES, &original, &patch).unwrap();
        assert_eq!(patched["endpoints"], json!([{"addresses": ["10.0.0.2"]}]));
        assert_eq!(patched["ports"], json!([{"port": 1}]));
    }

    #[test]
    fn merge_list_replace_directive() {
        let original = json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}});
        let patched = service_patch(
            original,
            json!({"spec": {"ports": [{"$patch": "replace"}, {"port": 53}]}}),
        );
        assert_eq!(patched["spec"]["ports"], json!([{"port": 53}]));
    }
}
