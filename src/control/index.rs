//! The current Kubernetes objects that routing depends on, as providers last reported them.
//!
//! Providers only call [`Index::apply`], [`Index::delete`] and [`Index::reset`]; the Index does
//! no I/O and knows nothing of sockets. [`crate::control::build`] turns it into a table.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::configmap::ReservedPorts;
use super::gateway_api::{DEFAULT_CONTROLLER_NAME, Gateway, GatewayClass, L4Route, ReferenceGrant};
use crate::names::{ObjectName, Protocol};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One object a provider can report.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // short-lived: objects move straight into the Index
pub enum Object {
    /// A port map (or any other ConfigMap, which is ignored).
    ConfigMap(ConfigMap),
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A Gateway API GatewayClass.
    GatewayClass(GatewayClass),
    /// A Gateway API Gateway.
    Gateway(Gateway),
    /// A Gateway API TCPRoute.
    TcpRoute(L4Route),
    /// A Gateway API UDPRoute.
    UdpRoute(L4Route),
    /// A Gateway API TLSRoute (passthrough by server name).
    TlsRoute(L4Route),
    /// A Gateway API ReferenceGrant.
    ReferenceGrant(ReferenceGrant),
    /// A Namespace (its labels, for `allowedRoutes.namespaces.selector`).
    Namespace(Namespace),
}

/// The kinds of object the Index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `v1/ConfigMap`.
    ConfigMap,
    /// `v1/Service`.
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `gateway.networking.k8s.io/v1/GatewayClass`.
    GatewayClass,
    /// `gateway.networking.k8s.io/v1/Gateway`.
    Gateway,
    /// `gateway.networking.k8s.io/v1/TCPRoute`.
    TcpRoute,
    /// `gateway.networking.k8s.io/v1/UDPRoute`.
    UdpRoute,
    /// `gateway.networking.k8s.io/v1/TLSRoute`.
    TlsRoute,
    /// `gateway.networking.k8s.io/v1/ReferenceGrant`.
    ReferenceGrant,
    /// `v1/Namespace`.
    Namespace,
}

/// The Gateway API kinds (`--gateway-api` watches each in every namespace).
pub const GATEWAY_API_KINDS: [Kind; 6] = [
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::TcpRoute,
    Kind::UdpRoute,
    Kind::TlsRoute,
    Kind::ReferenceGrant,
];

/// Every kind, in the order a reload applies them.
pub const KINDS: [Kind; 10] = [
    Kind::ConfigMap,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::TcpRoute,
    Kind::UdpRoute,
    Kind::TlsRoute,
    Kind::ReferenceGrant,
    Kind::Namespace,
];

impl Kind {
    /// The kind as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::TcpRoute => "TCPRoute",
            Kind::UdpRoute => "UDPRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
        }
    }
}

impl Object {
    /// A Gateway API object of `kind` from its JSON form.
    pub fn gateway_api(kind: Kind, value: serde_json::Value) -> Result<Object, serde_json::Error> {
        Ok(match kind {
            Kind::GatewayClass => Object::GatewayClass(serde_json::from_value(value)?),
            Kind::Gateway => Object::Gateway(serde_json::from_value(value)?),
            Kind::TcpRoute => Object::TcpRoute(serde_json::from_value(value)?),
            Kind::UdpRoute => Object::UdpRoute(serde_json::from_value(value)?),
            Kind::TlsRoute => Object::TlsRoute(serde_json::from_value(value)?),
            Kind::ReferenceGrant => Object::ReferenceGrant(serde_json::from_value(value)?),
            Kind::ConfigMap | Kind::Service | Kind::EndpointSlice | Kind::Namespace => {
                unreachable!("{kind:?} is not a Gateway API kind")
            }
        })
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::UdpRoute(_) => Kind::UdpRoute,
            Object::TlsRoute(_) => Kind::TlsRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Namespace(_) => Kind::Namespace,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::ConfigMap(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::TcpRoute(o) | Object::UdpRoute(o) | Object::TlsRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
        }
    }

    /// `namespace/name`; a missing namespace counts as `default`, as kubectl does (a
    /// cluster-scoped GatewayClass has the namespace `""`).
    pub fn name(&self) -> ObjectName {
        let meta = self.metadata();
        let namespace = match self {
            Object::GatewayClass(_) | Object::Namespace(_) => String::new(),
            _ => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        };
        ObjectName::new(namespace, meta.name.clone().unwrap_or_default())
    }
}

/// What the Index is told at start: which ConfigMaps are port maps, and reserved ports.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    /// The port maps, one per protocol (`--tcp-services-configmap`, `--udp-services-configmap`).
    pub port_maps: Vec<(Protocol, ObjectName)>,
    /// Ports no entry may use.
    pub reserved: ReservedPorts,
    /// The `controllerName` of the GatewayClasses whose Gateways dermaga serves.
    pub gateway_controller: String,
    /// The LoadBalancer Service whose addresses the Gateways report (`--publish-service`).
    pub publish_service: Option<ObjectName>,
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            port_maps: Vec::new(),
            reserved: ReservedPorts::default(),
            gateway_controller: DEFAULT_CONTROLLER_NAME.to_owned(),
            publish_service: None,
        }
    }
}

/// The objects routing depends on.
#[derive(Debug, Clone)]
pub struct Index {
    /// Settings given at start.
    pub settings: IndexSettings,
    config_maps: BTreeMap<ObjectName, ConfigMap>,
    services: BTreeMap<ObjectName, Service>,
    /// Slices by the Service they belong to, then by slice name.
    slices: BTreeMap<ObjectName, BTreeMap<String, EndpointSlice>>,
    /// Slice name → the Service it was filed under, so a relabelled slice moves.
    slice_owner: BTreeMap<ObjectName, ObjectName>,
    /// The Gateway API objects, by kind and name.
    gateway_api: BTreeMap<Kind, BTreeMap<ObjectName, Object>>,
}

impl Index {
    /// An empty index.
    pub fn new(settings: IndexSettings) -> Self {
        Self {
            settings,
            config_maps: BTreeMap::new(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slice_owner: BTreeMap::new(),
            gateway_api: BTreeMap::new(),
        }
    }

    /// Adds or replaces an object.
    pub fn apply(&mut self, object: Object) {
        let name = object.name();
        match object {
            Object::ConfigMap(cm) => {
                self.config_maps.insert(name, cm);
            }
            Object::Service(svc) => {
                self.services.insert(name, svc);
            }
            Object::EndpointSlice(slice) => {
                self.delete(Kind::EndpointSlice, &name);
                let Some(service) = slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                else {
                    tracing::debug!(slice = %name, "EndpointSlice without {SERVICE_NAME_LABEL} label ignored");
                    return;
                };
                let owner = ObjectName::new(name.namespace.clone(), service.clone());
                self.slices
                    .entry(owner.clone())
                    .or_default()
                    .insert(name.name.clone(), slice);
                self.slice_owner.insert(name, owner);
            }
            other => {
                self.gateway_api
                    .entry(other.kind())
                    .or_default()
                    .insert(name, other);
            }
        }
    }

    /// Removes an object; removing one that is not there is not an error.
    pub fn delete(&mut self, kind: Kind, name: &ObjectName) {
        match kind {
            Kind::ConfigMap => {
                self.config_maps.remove(name);
            }
            Kind::Service => {
                self.services.remove(name);
            }
            Kind::EndpointSlice => {
                if let Some(owner) = self.slice_owner.remove(name)
                    && let Some(set) = self.slices.get_mut(&owner)
                {
                    set.remove(&name.name);
                    if set.is_empty() {
                        self.slices.remove(&owner);
                    }
                }
            }
            other => {
                if let Some(objects) = self.gateway_api.get_mut(&other) {
                    objects.remove(name);
                }
            }
        }
    }

    /// Replaces every object of `kind` with `objects` (a re-list).
    pub fn reset(&mut self, kind: Kind, objects: impl IntoIterator<Item = Object>) {
        match kind {
            Kind::ConfigMap => self.config_maps.clear(),
            Kind::Service => self.services.clear(),
            Kind::EndpointSlice => {
                self.slices.clear();
                self.slice_owner.clear();
            }
            other => {
                self.gateway_api.remove(&other);
            }
        }
        for object in objects {
            if object.kind() == kind {
                self.apply(object);
            }
        }
    }

    /// Replaces everything with `objects` (what the file provider does on each reload).
    pub fn reset_all(&mut self, objects: Vec<Object>) {
        for kind in KINDS {
            self.reset(kind, objects.iter().filter(|o| o.kind() == kind).cloned());
        }
    }

    /// A ConfigMap by name.
    pub fn config_map(&self, name: &ObjectName) -> Option<&ConfigMap> {
        self.config_maps.get(name)
    }

    /// The Gateway API objects of one kind, in name order.
    pub fn gateway_api(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.gateway_api
            .get(&kind)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// The labels of a Namespace (none when it is not known).
    pub fn namespace_labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        match self
            .gateway_api
            .get(&Kind::Namespace)?
            .get(&ObjectName::new("", name))?
        {
            Object::Namespace(ns) => ns.metadata.labels.as_ref(),
            _ => None,
        }
    }

    /// A Service by name.
    pub fn service(&self, name: &ObjectName) -> Option<&Service> {
        self.services.get(name)
    }

    /// The EndpointSlices of a Service, in slice-name order.
    pub fn slices_of(&self, service: &ObjectName) -> impl Iterator<Item = &EndpointSlice> {
        self.slices
            .get(service)
            .into_iter()
            .flat_map(|m| m.values())
    }
}
