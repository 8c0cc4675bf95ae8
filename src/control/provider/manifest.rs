//! Reads Kubernetes objects from YAML text: several documents separated by `---`, or a
//! `kind: List` as `kubectl get -o yaml` prints it (both may be mixed).
//!
//! Objects of other kinds are skipped (a whole deployment manifest can be given), numeric
//! ConfigMap keys written without quotes (`10000: "default/svc:10000"`) are read as strings, as
//! kubectl does. Any object that cannot be read makes the whole text invalid, with an error that
//! names the document and the object.
//!
//! The same object (kind, namespace and name) may appear only once: a second copy is an error
//! naming both positions, never a silent choice of one copy. [`find_duplicate`] is that rule,
//! used for one text here and for several files together by `dermaga check`.

use serde::Deserialize;

use crate::control::index::{Kind, Object};
use crate::names::ObjectName;

/// Where an object is in a text: its document, counted from 1 in file order (empty documents
/// included), and its item, counted from 1, when it is in a `kind: List`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based document number.
    pub document: usize,
    /// 1-based item number inside a `kind: List` document.
    pub item: Option<usize>,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.item {
            None => write!(f, "document {}", self.document),
            Some(item) => write!(f, "document {}, item {item}", self.document),
        }
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("document {document}: not valid YAML: {error}")]
    Yaml {
        /// 1-based document number.
        document: usize,
        /// The parser's error (with line and column).
        error: serde_yaml::Error,
    },
    /// An object of a known kind does not match its schema.
    #[error("document {document}: {kind} {name:?}: {message}")]
    Object {
        /// 1-based document number.
        document: usize,
        /// `kind` of the object.
        kind: String,
        /// `metadata.name`, if any.
        name: String,
        /// What does not fit.
        message: String,
    },
    /// The same object twice.
    #[error("{position}: {kind} {name} repeats {first}; an object may appear only once")]
    Duplicate {
        /// Where the second copy is.
        position: Position,
        /// Its kind.
        kind: &'static str,
        /// Its namespace and name.
        name: ObjectName,
        /// Where the first copy is.
        first: Position,
    },
    /// A document that is not a mapping with `kind`.
    #[error("document {document}: {message}")]
    Shape {
        /// 1-based document number.
        document: usize,
        /// What is wrong.
        message: String,
    },
}

/// The objects found in a manifest, and how many documents of other kinds were skipped.
#[derive(Debug, Default)]
pub struct Manifest {
    /// ConfigMaps, Services and EndpointSlices, in file order; each appears once.
    pub objects: Vec<Object>,
    /// Where each object of `objects` is (same length, same order).
    pub positions: Vec<Position>,
    /// Kinds that were present but are not used by dermaga.
    pub skipped: Vec<String>,
}

/// Parses YAML text into objects.
pub fn parse_manifest(text: &str) -> Result<Manifest, ManifestError> {
    let mut manifest = Manifest::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|error| ManifestError::Yaml { document, error })?;
        if value.is_null() {
            continue;
        }
        let json = to_json(value).map_err(|message| ManifestError::Shape { document, message })?;
        collect(
            json,
            Position {
                document,
                item: None,
            },
            &mut manifest,
        )?;
    }
    let copies = manifest
        .objects
        .iter()
        .zip(&manifest.positions)
        .map(|(o, p)| (o.kind(), o.name(), *p));
    if let Some(d) = find_duplicate(copies) {
        return Err(ManifestError::Duplicate {
            position: d.second,
            kind: d.kind.as_str(),
            name: d.name,
            first: d.first,
        });
    }
    Ok(manifest)
}

/// Two copies of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateObject<P> {
    /// The object's kind.
    pub kind: Kind,
    /// Its namespace and name.
    pub name: ObjectName,
    /// Where it is first.
    pub first: P,
    /// Where it is again.
    pub second: P,
}

/// The first object that appears twice in `objects` (kind, name, where), if any. This is the
/// one duplicate rule of the file provider and of `dermaga check`.
pub fn find_duplicate<P: Clone>(
    objects: impl IntoIterator<Item = (Kind, ObjectName, P)>,
) -> Option<DuplicateObject<P>> {
    let mut seen: std::collections::HashMap<(Kind, ObjectName), P> =
        std::collections::HashMap::new();
    for (kind, name, position) in objects {
        match seen.entry((kind, name.clone())) {
            std::collections::hash_map::Entry::Occupied(first) => {
                return Some(DuplicateObject {
                    kind,
                    name,
                    first: first.get().clone(),
                    second: position,
                });
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(position);
            }
        }
    }
    None
}

fn collect(
    json: serde_json::Value,
    position: Position,
    manifest: &mut Manifest,
) -> Result<(), ManifestError> {
    let document = position.document;
    let kind = json
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_owned();
    let api_version = json
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_owned();
    let name = json
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_owned();
    let bad = |message: String| ManifestError::Object {
        document,
        kind: kind.clone(),
        name: name.clone(),
        message,
    };
    // One typed object of the document, or the document's error naming it.
    fn typed<T: serde::de::DeserializeOwned>(
        json: serde_json::Value,
        bad: &impl Fn(String) -> ManifestError,
    ) -> Result<T, ManifestError> {
        serde_json::from_value(json).map_err(|e| bad(e.to_string()))
    }
    let mut add = |object: Object| {
        manifest.objects.push(object);
        manifest.positions.push(position);
    };
    match (api_version.as_str(), kind.as_str()) {
        (_, "") => {
            return Err(ManifestError::Shape {
                document,
                message: "no `kind`; expected a Kubernetes object or a List".into(),
            });
        }
        ("v1", "List") => {
            let items = json
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                let position = Position {
                    document,
                    item: Some(i + 1),
                };
                collect(item, position, manifest)?;
            }
        }
        ("v1", "ConfigMap") => add(Object::ConfigMap(typed(json, &bad)?)),
        ("v1", "Service") => add(Object::Service(typed(json, &bad)?)),
        ("v1", "Namespace") => add(Object::Namespace(typed(json, &bad)?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => add(Object::EndpointSlice(typed(json, &bad)?)),
        ("gateway.networking.k8s.io/v1", "GatewayClass") => {
            add(Object::GatewayClass(typed(json, &bad)?))
        }
        ("gateway.networking.k8s.io/v1", "Gateway") => add(Object::Gateway(typed(json, &bad)?)),
        ("gateway.networking.k8s.io/v1", "TCPRoute") => add(Object::TcpRoute(typed(json, &bad)?)),
        ("gateway.networking.k8s.io/v1", "UDPRoute") => add(Object::UdpRoute(typed(json, &bad)?)),
        ("gateway.networking.k8s.io/v1", "TLSRoute") => add(Object::TlsRoute(typed(json, &bad)?)),
        (
            "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
        ) => add(Object::ReferenceGrant(typed(json, &bad)?)),
        (_, "GatewayClass" | "Gateway" | "TCPRoute" | "UDPRoute" | "ReferenceGrant")
            if api_version.starts_with("gateway.networking.k8s.io/") =>
        {
            return Err(bad(format!(
                "apiVersion {api_version:?} is not supported; use gateway.networking.k8s.io/v1 (the standard channel of Gateway API v1.6)"
            )));
        }
        (_, "ConfigMap" | "Service" | "EndpointSlice") => {
            return Err(bad(format!(
                "apiVersion {api_version:?} is not supported; use v1 (ConfigMap, Service) or discovery.k8s.io/v1 (EndpointSlice)"
            )));
        }
        _ => manifest
            .skipped
            .push(format!("{api_version}/{kind} {name}")),
    }
    Ok(())
}

/// YAML → JSON, turning scalar mapping keys (`10000:`) into strings as kubectl does.
fn to_json(value: serde_yaml::Value) -> Result<serde_json::Value, String> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => b.into(),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| e.to_string())?,
        Y::String(s) => s.into(),
        Y::Sequence(items) => items
            .into_iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()?
            .into(),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("unsupported mapping key {other:?}")),
                };
                out.insert(key, to_json(v)?);
            }
            out.into()
        }
        Y::Tagged(t) => to_json(t.value)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fixture::{
        self, Fixture, endpoint, endpoint_slice, port, port_map, service, yaml,
    };

    #[test]
    fn multi_document_with_unquoted_numeric_keys() {
        let m = parse_manifest(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tcp-services, namespace: dermaga}\ndata:\n  10000: default/a:10000\n---\n\
             ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\nspec:\n  ports: [{port: 10000}]\n",
        )
        .unwrap();
        assert_eq!(m.objects.len(), 2);
        let Object::ConfigMap(cm) = &m.objects[0] else {
            panic!()
        };
        assert_eq!(cm.data.as_ref().unwrap()["10000"], "default/a:10000");
        assert_eq!(m.skipped, vec!["apps/v1/Deployment x"]);
    }

    #[test]
    fn kind_list_as_kubectl_prints_it() {
        let m = parse_manifest(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata: {name: a-1, namespace: default, labels: {kubernetes.io/service-name: a}}\n  addressType: IPv4\n  endpoints: [{addresses: [127.0.0.2]}]\n  ports: [{port: 80}]\nmetadata: {resourceVersion: \"\"}\n",
        )
        .unwrap();
        assert_eq!(m.objects.len(), 1);
        assert!(matches!(m.objects[0], Object::EndpointSlice(_)));
    }

    #[test]
    fn errors_name_document_and_object() {
        let e = parse_manifest("a: [unclosed").unwrap_err().to_string();
        assert!(e.starts_with("document 1: not valid YAML"), "{e}");
        let e = parse_manifest("---\nkind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: \"eighty\"}]}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("document 2: Service \"web\":"), "{e}");
        let e = parse_manifest("just a string").unwrap_err().to_string();
        assert!(e.contains("no `kind`"), "{e}");
        let e = parse_manifest("apiVersion: v1beta1\nkind: EndpointSlice\nmetadata: {name: s}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn the_same_object_twice_is_an_error_naming_both_positions() {
        let cm =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tcp-services, namespace: dermaga}\n";
        let e = parse_manifest(&format!("{cm}---\nkind: Other\n---\n{cm}"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "document 3: ConfigMap dermaga/tcp-services repeats document 1; an object may appear only once"
        );
        // Inside a List, items are named too; a missing namespace is `default`, as kubectl has it.
        let e = parse_manifest(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: web}}\n- {apiVersion: v1, kind: Service, metadata: {name: web, namespace: default}}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "document 2, item 2: Service default/web repeats document 1; an object may appear only once"
        );
    }

    #[test]
    fn a_fixture_manifest_reads_back_as_the_objects_built() {
        let objects = vec![
            port_map("dermaga", "udp-services")
                .entry("53", "kube-system/dns:53")
                .object(),
            service("kube-system", "dns")
                .port(port(53).named("dns").udp().target_name("dns"))
                .object(),
            endpoint_slice("kube-system", "dns-a", "dns")
                .address_type("IPv6")
                .port(port(5353).named("dns").udp())
                .endpoint(endpoint("fd00::1").draining().pod("kube-system", "dns-0"))
                .endpoint(endpoint("fd00::2"))
                .object(),
        ];
        let manifest = yaml(objects.clone());
        let read: Vec<_> = parse_manifest(&manifest).unwrap().objects;
        let json = |objects: &[Object]| objects.iter().map(fixture::to_json).collect::<Vec<_>>();
        assert_eq!(json(&read), json(&objects));
        let text = manifest.as_str();
        for written in [
            "kind: ConfigMap",
            "'53': kube-system/dns:53",
            "protocol: UDP",
            "targetPort: dns",
            "addressType: IPv6",
            "terminating: true",
            "kubernetes.io/service-name: dns",
        ] {
            assert!(text.contains(written), "{written:?} missing from\n{text}");
        }
        // Unset fields stay unwritten: the second endpoint has no conditions.
        assert_eq!(text.matches("conditions:").count(), 1, "{text}");
    }

    #[test]
    fn gateway_api_objects_are_read_and_an_old_version_is_named() {
        let objects = vec![
            fixture::gateway_class("dermaga", "dermaga.io/gateway-controller").object(),
            fixture::gateway("infra", "edge", "dermaga")
                .listener("shop", "TCP", 10000)
                .object(),
            fixture::tcp_route("shop", "shop")
                .parent("infra/edge", Some("shop"))
                .backend("web", 80, Some(3))
                .object(),
            fixture::reference_grant("shop", "g", "TCPRoute", "team", None).object(),
        ];
        let read = parse_manifest(&yaml(objects.clone())).unwrap().objects;
        let json = |objects: &[Object]| objects.iter().map(fixture::to_json).collect::<Vec<_>>();
        assert_eq!(json(&read), json(&objects));
        assert_eq!(
            read[0].name(),
            ObjectName::new("", "dermaga"),
            "cluster-scoped"
        );
        let e = parse_manifest(
            "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: r}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("use gateway.networking.k8s.io/v1"), "{e}");
    }
}
