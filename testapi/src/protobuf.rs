//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into
//! JSON, for the kinds kubectl's typed clients create: ConfigMap (`kubectl create configmap`)
//! and Namespace (`kubectl create namespace`). The envelope is the `k8s\0` magic followed by a
//! `runtime.Unknown` (type meta + raw object); the objects use the field numbers of the
//! Kubernetes `generated.proto` files. Fields this decoder does not know are skipped.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::catalog::{Resource, resources};

/// The protobuf media type.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\x00";

/// Whether request bodies of `resource` can be protobuf.
pub(crate) fn supports(resource: &Resource) -> bool {
    *resource == resources::CONFIGMAPS || *resource == resources::NAMESPACES
}

/// One field of a protobuf message.
enum FieldValue<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Iterates the fields of a protobuf message.
struct Fields<'a> {
    buffer: &'a [u8],
}

fn varint(buffer: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buffer.split_first().ok_or("truncated varint")?;
        *buffer = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, FieldValue<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() {
            return None;
        }
        let mut read = || -> Result<(u64, FieldValue<'a>), String> {
            let key = varint(&mut self.buffer)?;
            let (number, wire_type) = (key >> 3, key & 7);
            let value = match wire_type {
                0 => FieldValue::Varint(varint(&mut self.buffer)?),
                1 | 5 => {
                    let size = if wire_type == 1 { 8 } else { 4 };
                    if self.buffer.len() < size {
                        return Err("truncated fixed-size field".into());
                    }
                    self.buffer = &self.buffer[size..];
                    FieldValue::Varint(0)
                }
                2 => {
                    let length = usize::try_from(varint(&mut self.buffer)?)
                        .map_err(|_| "length overflow")?;
                    if self.buffer.len() < length {
                        return Err("truncated length-delimited field".into());
                    }
                    let (bytes, rest) = self.buffer.split_at(length);
                    self.buffer = rest;
                    FieldValue::Bytes(bytes)
                }
                other => return Err(format!("unsupported wire type {other}")),
            };
            Ok((number, value))
        };
        let item = read();
        if item.is_err() {
            self.buffer = &[];
        }
        Some(item)
    }
}

fn fields(buffer: &[u8]) -> Fields<'_> {
    Fields { buffer }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "invalid UTF-8 in a string field".to_string())
}

/// A `map<string, string>` (or `map<string, bytes>` as base64) entry: key = 1, value = 2.
fn map_entry(bytes: &[u8], binary: bool) -> Result<(String, Value), String> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for field in fields(bytes) {
        match field? {
            (1, FieldValue::Bytes(b)) => key = text(b)?,
            (2, FieldValue::Bytes(b)) if binary => value = Value::String(STANDARD.encode(b)),
            (2, FieldValue::Bytes(b)) => value = Value::String(text(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

/// `metav1.Time`: seconds = 1, nanos = 2; serialized as RFC 3339 seconds.
fn time(bytes: &[u8]) -> Result<Value, String> {
    let mut seconds = 0i64;
    for field in fields(bytes) {
        if let (1, FieldValue::Varint(v)) = field? {
            seconds = v as i64;
        }
    }
    let timestamp = jiff::Timestamp::from_second(seconds).map_err(|e| e.to_string())?;
    Ok(json!(timestamp.to_string()))
}

fn owner_reference(bytes: &[u8]) -> Result<Value, String> {
    let mut reference = Map::new();
    for field in fields(bytes) {
        let (name, value) = match field? {
            (1, FieldValue::Bytes(b)) => ("kind", json!(text(b)?)),
            (3, FieldValue::Bytes(b)) => ("name", json!(text(b)?)),
            (4, FieldValue::Bytes(b)) => ("uid", json!(text(b)?)),
            (5, FieldValue::Bytes(b)) => ("apiVersion", json!(text(b)?)),
            (6, FieldValue::Varint(v)) => ("controller", json!(v != 0)),
            (7, FieldValue::Varint(v)) => ("blockOwnerDeletion", json!(v != 0)),
            _ => continue,
        };
        reference.insert(name.into(), value);
    }
    Ok(Value::Object(reference))
}

fn push(map: &mut Map<String, Value>, field: &str, value: Value) {
    let list = map.entry(field).or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.push(value);
    }
}

fn insert_entry(map: &mut Map<String, Value>, field: &str, (key, value): (String, Value)) {
    let entries = map.entry(field).or_insert_with(|| json!({}));
    if let Some(entries) = entries.as_object_mut() {
        entries.insert(key, value);
    }
}

/// `metav1.ObjectMeta` (Go writes empty strings and zero numbers; JSON omits them).
fn object_meta(bytes: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    for field in fields(bytes) {
        match field? {
            (1..=6, FieldValue::Bytes([])) | (7, FieldValue::Varint(0)) => {}
            (number @ 1..=6, FieldValue::Bytes(b)) => {
                let name = [
                    "name",
                    "generateName",
                    "namespace",
                    "selfLink",
                    "uid",
                    "resourceVersion",
                ][number as usize - 1];
                meta.insert(name.into(), json!(text(b)?));
            }
            (7, FieldValue::Varint(v)) => {
                meta.insert("generation".into(), json!(v as i64));
            }
            (8, FieldValue::Bytes(b)) => {
                meta.insert("creationTimestamp".into(), time(b)?);
            }
            (9, FieldValue::Bytes(b)) => {
                meta.insert("deletionTimestamp".into(), time(b)?);
            }
            (10, FieldValue::Varint(v)) => {
                meta.insert("deletionGracePeriodSeconds".into(), json!(v as i64));
            }
            (11, FieldValue::Bytes(b)) => insert_entry(&mut meta, "labels", map_entry(b, false)?),
            (12, FieldValue::Bytes(b)) => {
                insert_entry(&mut meta, "annotations", map_entry(b, false)?)
            }
            (13, FieldValue::Bytes(b)) => push(&mut meta, "ownerReferences", owner_reference(b)?),
            (14, FieldValue::Bytes(b)) => push(&mut meta, "finalizers", json!(text(b)?)),
            _ => {}
        }
    }
    // An unset creationTimestamp is encoded as the zero time; JSON clients send null.
    if meta.get("creationTimestamp") == Some(&json!("1970-01-01T00:00:00Z")) {
        meta.remove("creationTimestamp");
    }
    Ok(Value::Object(meta))
}

fn config_map(bytes: &[u8], object: &mut Map<String, Value>) -> Result<(), String> {
    for field in fields(bytes) {
        match field? {
            (1, FieldValue::Bytes(b)) => {
                object.insert("metadata".into(), object_meta(b)?);
            }
            (2, FieldValue::Bytes(b)) => insert_entry(object, "data", map_entry(b, false)?),
            (3, FieldValue::Bytes(b)) => insert_entry(object, "binaryData", map_entry(b, true)?),
            (4, FieldValue::Varint(v)) => {
                object.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Ok(())
}

fn namespace(bytes: &[u8], object: &mut Map<String, Value>) -> Result<(), String> {
    for field in fields(bytes) {
        match field? {
            (1, FieldValue::Bytes(b)) => {
                object.insert("metadata".into(), object_meta(b)?);
            }
            (2, FieldValue::Bytes(b)) => {
                let mut spec = Map::new();
                for field in fields(b) {
                    if let (1, FieldValue::Bytes(f)) = field? {
                        push(&mut spec, "finalizers", json!(text(f)?));
                    }
                }
                object.insert("spec".into(), Value::Object(spec));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes a protobuf body for `resource` into the JSON object it stands for.
pub(crate) fn decode(resource: &Resource, body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body lacks the k8s magic prefix")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for field in fields(envelope) {
        match field? {
            (1, FieldValue::Bytes(type_meta)) => {
                for field in fields(type_meta) {
                    match field? {
                        (1, FieldValue::Bytes(b)) => api_version = text(b)?,
                        (2, FieldValue::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, FieldValue::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    if *resource == resources::CONFIGMAPS {
        config_map(raw, &mut object)?;
    } else if *resource == resources::NAMESPACES {
        namespace(raw, &mut object)?;
    } else {
        return Err(format!(
            "protobuf is not supported for {}",
            resource.group_resource()
        ));
    }
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_config_map() {
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let metadata = [
            field(1, b"cm"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let data = [field(1, b"k"), field(2, b"v")].concat();
        let raw = [field(1, &metadata), field(2, &data)].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let object = decode(&resources::CONFIGMAPS, &body).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
    }
}
