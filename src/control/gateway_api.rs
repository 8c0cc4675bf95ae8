//! The Gateway API objects dermaga reads (`gateway.networking.k8s.io/v1`, standard channel of
//! v1.6): GatewayClass, Gateway, TCPRoute, UDPRoute and ReferenceGrant — only the fields the
//! routing uses; unknown fields are ignored, absent ones take the API's defaults where it has
//! them. Hand-written because the `gateway-api` crate (0.22, Gateway API v1.5.1) has TCPRoute and
//! UDPRoute only as the experimental `v1alpha2`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The API group of every kind here.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// The version read (and written, for status).
pub const VERSION: &str = "v1";

/// The `controllerName` a GatewayClass names to be served by dermaga, unless a flag says other.
pub const DEFAULT_CONTROLLER_NAME: &str = "dermaga.io/gateway-controller";

/// `GatewayClass`: which controller serves the Gateways of this class.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GatewayClass {
    /// Name (cluster-scoped).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The class.
    #[serde(default)]
    pub spec: GatewayClassSpec,
    /// The status as last read (what the status writer compares with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `GatewayClass.spec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// The controller that serves the class, e.g. [`DEFAULT_CONTROLLER_NAME`].
    #[serde(default)]
    pub controller_name: String,
}

/// `Gateway`: listeners on ports, for a class.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Gateway {
    /// Namespace, name, creation time.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The listeners.
    #[serde(default)]
    pub spec: GatewaySpec,
    /// The status as last read (what the status writer compares with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The GatewayClass.
    #[serde(default)]
    pub gateway_class_name: String,
    /// The listeners.
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

/// One listener of a Gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Unique within the Gateway; what a parentRef's `sectionName` names.
    #[serde(default)]
    pub name: String,
    /// The port.
    #[serde(default)]
    pub port: i32,
    /// `TCP`, `UDP`, `TLS`, `HTTP`, `HTTPS`, or an implementation's own.
    #[serde(default)]
    pub protocol: String,
    /// Which routes may attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
    /// The server names a TLS listener takes (`*.example.com` for a suffix); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// TLS settings of a `TLS` listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

/// `listeners[].tls`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListenerTls {
    /// `Terminate` (the API's default) or `Passthrough` (what dermaga serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `listeners[].allowedRoutes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AllowedRoutes {
    /// From which namespaces (default: the Gateway's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Which kinds (default: those of the listener's protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<GroupKind>>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// With `Selector`: the labels of the namespaces whose routes may attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// A group and kind (an empty or absent group is this API's group for route kinds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupKind {
    /// The API group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kind.
    #[serde(default)]
    pub kind: String,
}

/// `TCPRoute`, `UDPRoute` or `TLSRoute` (the same shape; a TLSRoute has hostnames too):
/// parents and weighted backends.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct L4Route {
    /// Namespace, name, creation time (the oldest route wins a listener).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Parents and rules.
    #[serde(default)]
    pub spec: L4RouteSpec,
    /// The status as last read (what the status writer compares with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `TCPRoute.spec` / `UDPRoute.spec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4RouteSpec {
    /// The Gateways (and listeners) to attach to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// One rule (the API allows one for these kinds).
    #[serde(default)]
    pub rules: Vec<L4RouteRule>,
    /// TLSRoute: the server names it takes (`*.example.com` for a suffix); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

/// `spec.parentRefs[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Default `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Default `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Gateway.
    #[serde(default)]
    pub name: String,
    /// A listener by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Listeners by port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// `spec.rules[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4RouteRule {
    /// Where connections go, by weight.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

/// `rules[].backendRefs[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackendRef {
    /// Default `""` (core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Default `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The Service.
    #[serde(default)]
    pub name: String,
    /// Default: the route's namespace (another needs a ReferenceGrant there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port (required for a Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// `ReferenceGrant`: lets objects of other namespaces refer to objects of this one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReferenceGrant {
    /// Namespace (where the referred objects are) and name.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// From whom, to what.
    #[serde(default)]
    pub spec: ReferenceGrantSpec,
}

/// `ReferenceGrant.spec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReferenceGrantSpec {
    /// Who may refer.
    #[serde(default)]
    pub from: Vec<GrantFrom>,
    /// To what.
    #[serde(default)]
    pub to: Vec<GrantTo>,
}

/// `spec.from[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GrantFrom {
    /// The referring kind's group.
    #[serde(default)]
    pub group: String,
    /// The referring kind.
    #[serde(default)]
    pub kind: String,
    /// The referring objects' namespace.
    #[serde(default)]
    pub namespace: String,
}

/// `spec.to[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GrantTo {
    /// The referred kind's group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// The referred kind.
    #[serde(default)]
    pub kind: String,
    /// One object by name; absent: every object of the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Whether `pattern` (a Gateway API hostname: `shop.example.com`, or `*.example.com` for any
/// name ending in `.example.com`) matches the server name `name` (lower case).
pub fn hostname_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_suffixes_only() {
        assert!(hostname_matches("*.example.com", "a.example.com"));
        assert!(hostname_matches("*.example.com", "a.b.example.com"));
        assert!(!hostname_matches("*.example.com", "example.com"));
        assert!(hostname_matches("Shop.example.com", "shop.example.com"));
        assert!(!hostname_matches("shop.example.com", "x.shop.example.com"));
    }
}
