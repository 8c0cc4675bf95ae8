//! Helpers to read and write the `metadata` of objects kept as JSON, plus the generators the
//! server uses for system fields (UIDs, timestamps, `generateName` suffixes).

use serde_json::{Map, Value};

/// `metadata.<field>` as a string, or `""`.
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`.
pub(crate) fn name(object: &Value) -> &str {
    meta_str(object, "name")
}

/// `metadata.namespace`.
pub(crate) fn namespace(object: &Value) -> &str {
    meta_str(object, "namespace")
}

/// `metadata.resourceVersion`.
pub(crate) fn resource_version(object: &Value) -> &str {
    meta_str(object, "resourceVersion")
}

/// `metadata.uid`.
pub(crate) fn uid(object: &Value) -> &str {
    meta_str(object, "uid")
}

/// `metadata.labels` as (key, value) pairs; a non-string value counts as missing.
pub(crate) fn labels(object: &Value) -> impl Iterator<Item = (&str, &str)> {
    object
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        })
}

/// The label `key` of `object`.
pub(crate) fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    labels(object).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `object.metadata`, created as `{}` when missing or not an object.
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let root = ensure_object(object);
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    ensure_object(metadata)
}

/// `value` as a map, replaced by `{}` first when it is not one.
pub(crate) fn ensure_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// Sets `metadata.<field>` to a string.
pub(crate) fn set_meta(object: &mut Value, field: &str, value: impl Into<String>) {
    metadata_mut(object).insert(field.to_string(), Value::String(value.into()));
}

/// Sets `metadata.resourceVersion`.
pub(crate) fn set_resource_version(object: &mut Value, revision: u64) {
    set_meta(object, "resourceVersion", revision.to_string());
}

/// Sets `kind` and `apiVersion` at the top of the object.
pub(crate) fn set_type_meta(object: &mut Value, api_version: &str, kind: &str) {
    let root = ensure_object(object);
    root.insert("kind".into(), Value::String(kind.into()));
    root.insert("apiVersion".into(), Value::String(api_version.into()));
}

/// The object without `kind` and `apiVersion`, as list items of built-in types are served.
pub(crate) fn without_type_meta(object: &Value) -> Value {
    let mut item = object.clone();
    if let Some(map) = item.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    item
}

/// The current time as RFC 3339 with second precision, as `metav1.Time` is serialized.
pub(crate) fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    let seconds = jiff::Timestamp::from_second(now.as_second()).expect("now is a valid timestamp");
    seconds.to_string()
}

/// A random RFC 4122 version-4 UUID, as the real server uses for `metadata.uid`.
pub(crate) fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The five random characters the real server appends to `generateName` (from the same
/// alphabet, which has no vowels and no easily confused characters).
pub(crate) fn generated_name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_is_a_version_4_uuid() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
    }

    #[test]
    fn timestamps_have_second_precision() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && !now.contains('.'), "{now}");
    }
}
