//! Reading the manifests under `deploy/`: every YAML document into its k8s-openapi type
//! (dispatched on `apiVersion` + `kind`), strictly (a field the type does not know is an error,
//! so a typo such as `readinesProbe` cannot pass unnoticed), and `kustomization.yaml` into a
//! kustomize file whose resources must exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// The Gateway API's GatewayClass, as deploy/components/gateway-api writes it (dermaga's own
/// spec type; k8s-openapi has no Gateway API kinds).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct GatewayClass {
    /// `gateway.networking.k8s.io/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `GatewayClass`.
    pub kind: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// The controller.
    pub spec: dermaga::gateway_api::GatewayClassSpec,
}

impl Resource for GatewayClass {
    const API_VERSION: &'static str = "gateway.networking.k8s.io/v1";
    const GROUP: &'static str = "gateway.networking.k8s.io";
    const KIND: &'static str = "GatewayClass";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "gatewayclasses";
    type Scope = k8s_openapi::ClusterResourceScope;
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

macro_rules! objects {
    ($($kind:ident),* $(,)?) => {
        /// One object of a kind the deploy manifests may contain. (A few dozen of them exist at
        /// once, so the size of the largest variant does not matter.)
        #[derive(Debug, Clone)]
        #[allow(clippy::large_enum_variant)]
        pub enum Object {
            $(
                #[allow(missing_docs)]
                $kind($kind),
            )*
        }

        impl Object {
            /// `apiVersion` and `kind` of every accepted type.
            pub fn known() -> Vec<(&'static str, &'static str)> {
                vec![$(($kind::API_VERSION, $kind::KIND)),*]
            }

            fn parse(api_version: &str, kind: &str, json: serde_json::Value) -> Result<Self, String> {
                $(
                    if api_version == $kind::API_VERSION && kind == $kind::KIND {
                        return strict::<$kind>(json).map(Object::$kind);
                    }
                )*
                Err(format!(
                    "unknown kind {kind:?} of apiVersion {api_version:?}; expected one of: {}",
                    Self::known().iter().map(|(a, k)| format!("{a} {k}")).collect::<Vec<_>>().join(", ")
                ))
            }

            /// The object's metadata.
            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(Object::$kind(o) => &o.metadata,)*
                }
            }

            /// The object's metadata, to change it.
            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Object::$kind(o) => &mut o.metadata,)*
                }
            }

            /// The object's `kind`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Object::$kind(_) => $kind::KIND,)*
                }
            }
        }
    };
}

objects!(
    Namespace,
    ServiceAccount,
    ConfigMap,
    Service,
    EndpointSlice,
    Deployment,
    PodDisruptionBudget,
    NetworkPolicy,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
    GatewayClass,
);

/// Deserializes `json` into `T`, then checks that serializing it back gives the same JSON: a
/// field that `T` does not know (k8s-openapi skips those silently) or a value it reads
/// differently is an error naming the field.
fn strict<T>(json: serde_json::Value) -> Result<T, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let object: T = serde_json::from_value(json.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&object).map_err(|e| e.to_string())?;
    match first_difference("", &json, &back) {
        None => Ok(object),
        Some(d) => Err(d),
    }
}

fn first_difference(
    path: &str,
    written: &serde_json::Value,
    read: &serde_json::Value,
) -> Option<String> {
    use serde_json::Value;
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match r.get(k) {
                    None if wv.is_null() => {}
                    None => {
                        return Some(format!(
                            "field {p} is not a field of this kind (misspelt or misplaced?)"
                        ));
                    }
                    Some(rv) => {
                        if let Some(d) = first_difference(&p, wv, rv) {
                            return Some(d);
                        }
                    }
                }
            }
            r.keys()
                .find(|k| !w.contains_key(*k))
                .map(|k| format!("field {path}.{k} appears when the object is read back"))
        }
        (Value::Array(w), Value::Array(r)) if w.len() == r.len() => w
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (wv, rv))| first_difference(&format!("{path}[{i}]"), wv, rv)),
        _ if written == read => None,
        _ => Some(format!("field {path}: {written} is read as {read}")),
    }
}

/// A parsed object and where it came from.
#[derive(Debug, Clone)]
pub struct Doc {
    /// `<file>#<document number from 1>`.
    pub source: String,
    /// The object.
    pub object: Object,
}

/// Parses every YAML document of `text`. Empty documents are skipped. Objects without a
/// namespace get `default_namespace` when they are of a namespaced kind.
pub fn parse_documents(
    name: &str,
    text: &str,
    default_namespace: &str,
) -> Result<Vec<Doc>, Vec<String>> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = format!("{name}#{}", i + 1);
        let yaml = match serde_yaml::Value::deserialize(de) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{source}: not valid YAML: {e}"));
                continue;
            }
        };
        let json = match serde_json::to_value(&yaml) {
            Ok(j) => j,
            Err(e) => {
                errors.push(format!("{source}: cannot be read as JSON: {e}"));
                continue;
            }
        };
        let api_version = json
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind = json.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        let label = json
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .map(|n| format!("{kind} {n:?}"))
            .unwrap_or_else(|| kind.to_owned());
        match Object::parse(api_version, kind, json.clone()) {
            Ok(mut object) => {
                let cluster_scoped = matches!(
                    object,
                    Object::Namespace(_)
                        | Object::ClusterRole(_)
                        | Object::ClusterRoleBinding(_)
                        | Object::GatewayClass(_)
                );
                if !cluster_scoped && object.meta().namespace.is_none() {
                    object.meta_mut().namespace = Some(default_namespace.to_owned());
                }
                docs.push(Doc { source, object });
            }
            Err(e) => errors.push(format!("{source}: {label}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

/// A `kustomization.yaml`, with the fields the base uses. An unknown field is an error: add it
/// here when the base starts using another kustomize feature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kustomization {
    /// `kustomize.config.k8s.io/v1beta1`.
    pub api_version: String,
    /// `Kustomization`.
    pub kind: String,
    /// The namespace set on every namespaced object.
    pub namespace: Option<String>,
    /// Files (or directories with a kustomization) to include.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Image overrides.
    #[serde(default)]
    pub images: Vec<KustomizeImage>,
}

/// One entry of `images`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizeImage {
    /// The image name as written in the manifests (without tag).
    pub name: String,
    /// Replacement name.
    pub new_name: Option<String>,
    /// Replacement tag.
    pub new_tag: Option<String>,
    /// Replacement digest.
    pub digest: Option<String>,
}

/// A kustomize directory: its kustomization and the objects of the files it lists.
#[derive(Debug)]
pub struct Base {
    /// The parsed `kustomization.yaml`.
    pub kustomization: Kustomization,
    /// The objects of its resources, in order.
    pub docs: Vec<Doc>,
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot read {}: {e}", d.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Reads the kustomize base in `dir`: `kustomization.yaml` must parse, every resource it lists
/// must exist, every other YAML file of the directory must be listed, and every document of
/// every file must parse into its type.
pub fn read_base(dir: &Path) -> Result<Base, Vec<String>> {
    let kpath = dir.join("kustomization.yaml");
    let text =
        std::fs::read_to_string(&kpath).map_err(|e| vec![format!("{}: {e}", relative(&kpath))])?;
    let kustomization: Kustomization =
        serde_yaml::from_str(&text).map_err(|e| vec![format!("{}: {e}", relative(&kpath))])?;
    let mut errors = Vec::new();
    if kustomization.api_version != "kustomize.config.k8s.io/v1beta1"
        || kustomization.kind != "Kustomization"
    {
        errors.push(format!(
            "{}: apiVersion {:?} kind {:?}; expected kustomize.config.k8s.io/v1beta1 Kustomization",
            relative(&kpath),
            kustomization.api_version,
            kustomization.kind
        ));
    }
    let namespace = kustomization
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let mut listed = BTreeSet::new();
    let mut docs = Vec::new();
    for resource in &kustomization.resources {
        let path = dir.join(resource);
        if !path.exists() {
            errors.push(format!(
                "{}: resource {resource:?} does not exist",
                relative(&kpath)
            ));
            continue;
        }
        if path.is_dir() {
            match read_base(&path) {
                Ok(b) => docs.extend(b.docs),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        listed.insert(path.canonicalize().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        match parse_documents(&relative(&path), &text, &namespace) {
            Ok(d) => docs.extend(d),
            Err(e) => errors.extend(e),
        }
    }
    for file in yaml_files(dir) {
        let top_level = file.parent() == Some(dir);
        if top_level && file.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        if top_level && !listed.contains(&file.canonicalize().unwrap()) {
            errors.push(format!(
                "{} is not listed in the resources of {}: kubectl apply -k would not install it",
                relative(&file),
                relative(&kpath)
            ));
        }
    }
    if errors.is_empty() {
        Ok(Base {
            kustomization,
            docs,
        })
    } else {
        Err(errors)
    }
}

/// Parses every YAML file under `dir` (no kustomization).
pub fn read_plain_dir(dir: &Path) -> Result<Vec<Doc>, Vec<String>> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for file in yaml_files(dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        match parse_documents(&relative(&file), &text, "default") {
            Ok(d) => docs.extend(d),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

/// `kubectl kustomize <dir>`, parsed, with the kubectl built by `testenv/build.sh`.
pub fn kustomize_build(dir: &Path) -> Result<Vec<Doc>, Vec<String>> {
    let output = Command::new(crate::support::testenv::kubectl_binary())
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `kubectl kustomize`: {e}"));
    if !output.status.success() {
        return Err(vec![format!(
            "kubectl kustomize {} failed: {}",
            relative(dir),
            String::from_utf8_lossy(&output.stderr)
        )]);
    }
    let text = String::from_utf8(output.stdout).expect("kubectl output is UTF-8");
    parse_documents(
        &format!("kubectl kustomize {}", relative(dir)),
        &text,
        "default",
    )
}

/// `<kind> <namespace>/<name>` (or `<kind> <name>` when cluster-scoped) of every object.
pub fn identities(docs: &[Doc]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            let m = d.object.meta();
            let name = m.name.clone().unwrap_or_default();
            match &m.namespace {
                Some(ns) => format!("{} {ns}/{name}", d.object.kind()),
                None => format!("{} {name}", d.object.kind()),
            }
        })
        .collect()
}
