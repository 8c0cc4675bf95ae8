//! Typed builders of the objects dermaga reads — port maps, Services, EndpointSlices — so that
//! the unit tests, the integration tests and `check`'s tests write their fixtures in one
//! vocabulary, as values rather than YAML text or `json!` trees:
//!
//! ```
//! use dermaga::fixture::{Fixture, endpoint, endpoint_slice, port, port_map, service};
//!
//! let objects = [
//!     port_map("dermaga", "tcp-services").entry("10000", "default/web:80").object(),
//!     service("default", "web").port(port(80).named("main")).object(),
//!     endpoint_slice("default", "web-a", "web")
//!         .port(port(8080).named("main"))
//!         .endpoint(endpoint("10.0.0.1").ready(true).pod("default", "web-0"))
//!         .object(),
//! ];
//! let manifest = dermaga::fixture::yaml(objects.clone());
//! assert_eq!(dermaga::parse_manifest(&manifest).unwrap().objects.len(), 3);
//! ```
//!
//! Rendered as YAML ([`yaml`]) a fixture is what `--config` and `kubectl apply` read; rendered
//! as JSON ([`Fixture::json`]) it is what the API server stores. Fields a builder does not set
//! are absent, as in a hand-written manifest, so the defaults of the reader are what is tested.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::control::gateway_api::{
    AllowedRoutes, BackendRef, GROUP, Gateway, GatewayClass, GatewayClassSpec, GatewaySpec,
    GrantFrom, GrantTo, GroupKind, L4Route, L4RouteRule, L4RouteSpec, Listener, ListenerTls,
    ParentReference, ReferenceGrant, ReferenceGrantSpec, RouteNamespaces,
};
use crate::control::index::{Object, SERVICE_NAME_LABEL};
use crate::names::Protocol;

/// Something that becomes one object of a manifest.
pub trait Fixture: Sized {
    /// The object as the Index holds it.
    fn object(self) -> Object;

    /// The object as JSON, with its `apiVersion` and `kind`.
    fn json(self) -> serde_json::Value {
        to_json(&self.object())
    }

    /// The object as one YAML document, ending with `---`.
    fn yaml(self) -> String {
        yaml([self.object()])
    }
}

impl Fixture for Object {
    fn object(self) -> Object {
        self
    }
}

/// The objects as a multi-document YAML manifest.
pub fn yaml(objects: impl IntoIterator<Item = Object>) -> String {
    let mut out = String::new();
    for object in objects {
        out.push_str(&serde_yaml::to_string(&to_json(&object)).expect("an object renders"));
        out.push_str("---\n");
    }
    out
}

pub(crate) fn to_json(object: &Object) -> serde_json::Value {
    let gateway_api = |kind: &str, value: serde_json::Result<serde_json::Value>| {
        let mut value = value.expect("an object serializes");
        let map = value.as_object_mut().expect("an object");
        map.insert("apiVersion".into(), format!("{GROUP}/v1").into());
        map.insert("kind".into(), kind.into());
        value
    };
    let kind = object.kind().as_str();
    match object {
        Object::ConfigMap(o) => serde_json::to_value(o).expect("an object serializes"),
        Object::Service(o) => serde_json::to_value(o).expect("an object serializes"),
        Object::EndpointSlice(o) => serde_json::to_value(o).expect("an object serializes"),
        Object::GatewayClass(o) => gateway_api(kind, serde_json::to_value(o)),
        Object::Gateway(o) => gateway_api(kind, serde_json::to_value(o)),
        Object::TcpRoute(o) | Object::UdpRoute(o) | Object::TlsRoute(o) => {
            gateway_api(kind, serde_json::to_value(o))
        }
        Object::ReferenceGrant(o) => gateway_api(kind, serde_json::to_value(o)),
        Object::Namespace(o) => serde_json::to_value(o).expect("an object serializes"),
    }
}

/// A Namespace `name` with `labels`.
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Object {
    Object::Namespace(k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Default::default()
    })
}

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// A ConfigMap whose entries map ports (see [`port_map`]).
#[derive(Debug, Clone)]
pub struct PortMap(ConfigMap);

/// A port map (any ConfigMap) named `namespace/name`, with no entries yet.
pub fn port_map(namespace: &str, name: &str) -> PortMap {
    PortMap(ConfigMap {
        metadata: meta(namespace, name),
        data: Some(BTreeMap::new()),
        ..ConfigMap::default()
    })
}

impl PortMap {
    /// Adds the entry `key: value` (e.g. `"10000": "default/web:80"`).
    pub fn entry(mut self, key: &str, value: &str) -> Self {
        self.0
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds each entry in turn.
    pub fn entries(self, entries: &[(&str, &str)]) -> Self {
        entries.iter().fold(self, |map, (k, v)| map.entry(k, v))
    }
}

impl Fixture for PortMap {
    fn object(self) -> Object {
        Object::ConfigMap(self.0)
    }
}

/// One port of a Service or of an EndpointSlice (see [`port`]).
#[derive(Debug, Clone)]
pub struct Port {
    number: u16,
    name: Option<String>,
    protocol: Option<Protocol>,
    target: Option<IntOrString>,
}

/// Port `number` with no name and no protocol written (which readers take as TCP).
pub fn port(number: u16) -> Port {
    Port {
        number,
        name: None,
        protocol: None,
        target: None,
    }
}

impl Port {
    /// Gives the port a name.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Writes the protocol explicitly.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Writes `protocol: UDP`.
    pub fn udp(self) -> Self {
        self.protocol(Protocol::Udp)
    }

    /// A Service port's `targetPort` by name.
    pub fn target_name(mut self, name: &str) -> Self {
        self.target = Some(IntOrString::String(name.to_owned()));
        self
    }

    /// A Service port's `targetPort` by number.
    pub fn target_number(mut self, number: u16) -> Self {
        self.target = Some(IntOrString::Int(i32::from(number)));
        self
    }

    fn protocol_name(&self) -> Option<String> {
        self.protocol.map(|p| p.as_k8s().to_owned())
    }

    fn service_port(self) -> ServicePort {
        ServicePort {
            name: self.name.clone(),
            protocol: self.protocol_name(),
            port: i32::from(self.number),
            target_port: self.target,
            ..ServicePort::default()
        }
    }

    fn endpoint_port(self) -> EndpointPort {
        EndpointPort {
            name: self.name.clone(),
            protocol: self.protocol_name(),
            port: Some(i32::from(self.number)),
            ..EndpointPort::default()
        }
    }
}

/// A Service (see [`service`]).
#[derive(Debug, Clone)]
pub struct ServiceFixture(Service);

/// A Service `namespace/name` with a spec and no ports yet.
pub fn service(namespace: &str, name: &str) -> ServiceFixture {
    ServiceFixture(Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec::default()),
        ..Service::default()
    })
}

impl ServiceFixture {
    fn spec(&mut self) -> &mut ServiceSpec {
        self.0.spec.get_or_insert_with(ServiceSpec::default)
    }

    /// Adds a port.
    pub fn port(mut self, port: Port) -> Self {
        self.spec()
            .ports
            .get_or_insert_with(Vec::new)
            .push(port.service_port());
        self
    }

    /// Sets `spec.type` (e.g. `LoadBalancer`).
    pub fn service_type(mut self, service_type: &str) -> Self {
        self.spec().type_ = Some(service_type.to_owned());
        self
    }

    /// Makes it an ExternalName Service for `host`.
    pub fn external_name(mut self, host: &str) -> Self {
        let spec = self.spec();
        spec.type_ = Some("ExternalName".to_owned());
        spec.external_name = Some(host.to_owned());
        self
    }
}

impl Fixture for ServiceFixture {
    fn object(self) -> Object {
        Object::Service(self.0)
    }
}

/// One endpoint of an EndpointSlice (see [`endpoint`]).
#[derive(Debug, Clone)]
pub struct EndpointFixture(Endpoint);

/// An endpoint at `address` (an IP, or anything for the FQDN type) with no conditions written
/// (which readers take as ready) and no `targetRef`.
pub fn endpoint(address: impl ToString) -> EndpointFixture {
    EndpointFixture(Endpoint {
        addresses: vec![address.to_string()],
        ..Endpoint::default()
    })
}

impl EndpointFixture {
    fn conditions(&mut self) -> &mut EndpointConditions {
        self.0
            .conditions
            .get_or_insert_with(EndpointConditions::default)
    }

    /// Writes `conditions.ready`.
    pub fn ready(mut self, ready: bool) -> Self {
        self.conditions().ready = Some(ready);
        self
    }

    /// Writes `conditions.serving`.
    pub fn serving(mut self, serving: bool) -> Self {
        self.conditions().serving = Some(serving);
        self
    }

    /// Writes `conditions.terminating`.
    pub fn terminating(mut self, terminating: bool) -> Self {
        self.conditions().terminating = Some(terminating);
        self
    }

    /// A pod draining on shutdown: not ready, still serving, terminating.
    pub fn draining(self) -> Self {
        self.ready(false).serving(true).terminating(true)
    }

    /// Points `targetRef` at the pod `namespace/name`.
    pub fn pod(mut self, namespace: &str, name: &str) -> Self {
        self.0.target_ref = Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            ..ObjectReference::default()
        });
        self
    }
}

/// An EndpointSlice (see [`endpoint_slice`]).
#[derive(Debug, Clone)]
pub struct SliceFixture(EndpointSlice);

/// An IPv4 EndpointSlice `namespace/name` labelled as `service`'s, with no ports or endpoints yet.
pub fn endpoint_slice(namespace: &str, name: &str, service: &str) -> SliceFixture {
    let mut metadata = meta(namespace, name);
    metadata.labels = Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into());
    SliceFixture(EndpointSlice {
        metadata,
        address_type: "IPv4".to_owned(),
        endpoints: None,
        ports: None,
    })
}

impl SliceFixture {
    /// Sets `addressType` (`IPv4`, `IPv6` or `FQDN`).
    pub fn address_type(mut self, address_type: &str) -> Self {
        address_type.clone_into(&mut self.0.address_type);
        self
    }

    /// Adds a port.
    pub fn port(mut self, port: Port) -> Self {
        self.0
            .ports
            .get_or_insert_with(Vec::new)
            .push(port.endpoint_port());
        self
    }

    /// Adds endpoints.
    pub fn endpoints(self, endpoints: impl IntoIterator<Item = EndpointFixture>) -> Self {
        endpoints.into_iter().fold(self, Self::endpoint)
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, endpoint: EndpointFixture) -> Self {
        self.0
            .endpoints
            .get_or_insert_with(Vec::new)
            .push(endpoint.0);
        self
    }
}

impl Fixture for SliceFixture {
    fn object(self) -> Object {
        Object::EndpointSlice(self.0)
    }
}

/// A GatewayClass served by `controller` (see [`gateway_class`]).
pub fn gateway_class(name: &str, controller: &str) -> GatewayClass {
    GatewayClass {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: GatewayClassSpec {
            controller_name: controller.to_owned(),
        },
        status: None,
    }
}

impl Fixture for GatewayClass {
    fn object(self) -> Object {
        Object::GatewayClass(self)
    }
}

/// A Gateway (see [`gateway`]).
#[derive(Debug, Clone)]
pub struct GatewayFixture(Gateway);

/// A Gateway `namespace/name` of class `class`, with no listeners yet.
pub fn gateway(namespace: &str, name: &str, class: &str) -> GatewayFixture {
    GatewayFixture(Gateway {
        metadata: meta(namespace, name),
        spec: GatewaySpec {
            gateway_class_name: class.to_owned(),
            listeners: Vec::new(),
        },
        status: None,
    })
}

impl GatewayFixture {
    /// Adds a listener (`protocol` as written: `TCP`, `UDP`, `TLS`, ...).
    pub fn listener(mut self, name: &str, protocol: &str, port: i32) -> Self {
        self.0.spec.listeners.push(Listener {
            name: name.to_owned(),
            port,
            protocol: protocol.to_owned(),
            allowed_routes: None,
            hostname: None,
            tls: None,
        });
        self
    }

    /// The last listener's `allowedRoutes.namespaces.from` (`Same`, `All`, `Selector`).
    pub fn allow_from(mut self, from: &str) -> Self {
        let listener = self.0.spec.listeners.last_mut().expect("a listener first");
        listener
            .allowed_routes
            .get_or_insert_with(AllowedRoutes::default)
            .namespaces = Some(RouteNamespaces {
            from: Some(from.to_owned()),
            selector: None,
        });
        self
    }

    /// The last listener's `allowedRoutes.namespaces`: `from: Selector` with `matchLabels`.
    pub fn allow_selector(mut self, labels: &[(&str, &str)]) -> Self {
        let listener = self.0.spec.listeners.last_mut().expect("a listener first");
        listener
            .allowed_routes
            .get_or_insert_with(AllowedRoutes::default)
            .namespaces = Some(RouteNamespaces {
            from: Some("Selector".to_owned()),
            selector: Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some(
                        labels
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                    ),
                    match_expressions: None,
                },
            ),
        });
        self
    }

    /// The last listener's `allowedRoutes.kinds`.
    pub fn allow_kinds(mut self, kinds: &[&str]) -> Self {
        let listener = self.0.spec.listeners.last_mut().expect("a listener first");
        listener
            .allowed_routes
            .get_or_insert_with(AllowedRoutes::default)
            .kinds = Some(
            kinds
                .iter()
                .map(|k| GroupKind {
                    group: None,
                    kind: (*k).to_owned(),
                })
                .collect(),
        );
        self
    }

    /// Sets an annotation of the Gateway.
    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// The last listener's TLS mode `Passthrough`.
    pub fn passthrough(mut self) -> Self {
        let listener = self.0.spec.listeners.last_mut().expect("a listener first");
        listener.tls = Some(ListenerTls {
            mode: Some("Passthrough".to_owned()),
        });
        self
    }

    /// The last listener's `hostname`.
    pub fn listener_hostname(mut self, hostname: &str) -> Self {
        let listener = self.0.spec.listeners.last_mut().expect("a listener first");
        listener.hostname = Some(hostname.to_owned());
        self
    }

    /// Sets the creation time (what decides between conflicting Gateways), `seconds` after
    /// the epoch.
    pub fn created(mut self, seconds: i64) -> Self {
        self.0.metadata.creation_timestamp = Some(timestamp(seconds));
        self
    }
}

impl Fixture for GatewayFixture {
    fn object(self) -> Object {
        Object::Gateway(self.0)
    }
}

fn timestamp(seconds: i64) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(seconds).expect("a valid time"),
    )
}

/// A TCPRoute or UDPRoute (see [`tcp_route`], [`udp_route`]).
#[derive(Debug, Clone)]
pub struct RouteFixture {
    route: L4Route,
    kind: RouteKind,
}

/// Which kind of route a [`RouteFixture`] is.
#[derive(Debug, Clone, Copy)]
enum RouteKind {
    Tcp,
    Udp,
    Tls,
}

/// A TCPRoute `namespace/name` with no parents or backends yet.
pub fn tcp_route(namespace: &str, name: &str) -> RouteFixture {
    RouteFixture {
        route: L4Route {
            metadata: meta(namespace, name),
            spec: L4RouteSpec::default(),
            status: None,
        },
        kind: RouteKind::Tcp,
    }
}

/// A UDPRoute `namespace/name` with no parents or backends yet.
pub fn udp_route(namespace: &str, name: &str) -> RouteFixture {
    RouteFixture {
        kind: RouteKind::Udp,
        ..tcp_route(namespace, name)
    }
}

/// A TLSRoute `namespace/name` with no hostnames, parents or backends yet.
pub fn tls_route(namespace: &str, name: &str) -> RouteFixture {
    RouteFixture {
        kind: RouteKind::Tls,
        ..tcp_route(namespace, name)
    }
}

impl RouteFixture {
    /// Attaches to Gateway `gateway` (`namespace/name`, or a name in the route's namespace),
    /// to the listener `section` when given.
    pub fn parent(mut self, gateway: &str, section: Option<&str>) -> Self {
        let (namespace, name) = match gateway.split_once('/') {
            Some((ns, name)) => (Some(ns.to_owned()), name),
            None => (None, gateway),
        };
        self.route.spec.parent_refs.push(ParentReference {
            namespace,
            name: name.to_owned(),
            section_name: section.map(str::to_owned),
            ..ParentReference::default()
        });
        self
    }

    /// Attaches to Gateway `gateway` by listener port, and `section` when given.
    pub fn parent_port(mut self, gateway: &str, port: i32, section: Option<&str>) -> Self {
        self = self.parent(gateway, section);
        self.route
            .spec
            .parent_refs
            .last_mut()
            .expect("just added")
            .port = Some(port);
        self
    }

    /// Adds a backendRef to Service `service` (`namespace/name`, or a name in the route's
    /// namespace) port `port`, with `weight` (absent: the API's default 1).
    pub fn backend(mut self, service: &str, port: i32, weight: Option<i32>) -> Self {
        let (namespace, name) = match service.split_once('/') {
            Some((ns, name)) => (Some(ns.to_owned()), name),
            None => (None, service),
        };
        if self.route.spec.rules.is_empty() {
            self.route.spec.rules.push(L4RouteRule::default());
        }
        self.route.spec.rules[0].backend_refs.push(BackendRef {
            name: name.to_owned(),
            namespace,
            port: Some(port),
            weight,
            ..BackendRef::default()
        });
        self
    }

    /// Sets the creation time (the oldest route wins a listener), `seconds` after the epoch.
    pub fn created(mut self, seconds: i64) -> Self {
        self.route.metadata.creation_timestamp = Some(timestamp(seconds));
        self
    }

    /// Sets an annotation of the route.
    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.route
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a hostname (TLSRoute: a server name, or `*.example.com`).
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.route.spec.hostnames.push(hostname.to_owned());
        self
    }
}

impl Fixture for RouteFixture {
    fn object(self) -> Object {
        match self.kind {
            RouteKind::Tcp => Object::TcpRoute(self.route),
            RouteKind::Udp => Object::UdpRoute(self.route),
            RouteKind::Tls => Object::TlsRoute(self.route),
        }
    }
}

/// A ReferenceGrant in `namespace` letting routes of `kind` (`TCPRoute`, `UDPRoute`) in
/// `from_namespace` refer to the Services of `namespace` (one by name, or all).
pub fn reference_grant(
    namespace: &str,
    name: &str,
    kind: &str,
    from_namespace: &str,
    service: Option<&str>,
) -> ReferenceGrant {
    ReferenceGrant {
        metadata: meta(namespace, name),
        spec: ReferenceGrantSpec {
            from: vec![GrantFrom {
                group: GROUP.to_owned(),
                kind: kind.to_owned(),
                namespace: from_namespace.to_owned(),
            }],
            to: vec![GrantTo {
                group: String::new(),
                kind: "Service".to_owned(),
                name: service.map(str::to_owned),
            }],
        },
    }
}

impl Fixture for ReferenceGrant {
    fn object(self) -> Object {
        Object::ReferenceGrant(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_api_version_and_kind() {
        let json = service("default", "web").port(port(80)).json();
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "Service");
        assert_eq!(json["spec"]["ports"][0]["port"], 80);
        assert!(json["spec"]["ports"][0].get("protocol").is_none());
    }
}
