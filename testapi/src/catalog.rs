//! The catalog of resource types this server serves, and how URL paths and `apiVersion`/`kind` pairs map
//! onto them.

/// One REST resource (a collection of one kind in one API group version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    /// API group; `""` for the core (legacy) group served under `/api`.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Plural, lower-case resource name used in URL paths, e.g. `configmaps`.
    pub plural: &'static str,
    /// Kind of one object, e.g. `ConfigMap`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

impl Resource {
    /// `apiVersion` of objects of this resource: `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-qualified resource name as Kubernetes prints it (`configmaps`,
    /// `endpointslices.discovery.k8s.io`); the resource key of [`crate::Stats`].
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Kind of the list type, e.g. `ConfigMapList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Serving details (short names, singular, naming rule) of this resource.
    pub(crate) fn details(&self) -> &'static ResourceDetails {
        ALL.iter()
            .find(|d| d.resource == *self)
            .expect("every Resource constant has details")
    }
}

/// How names of a resource are validated (the real API uses different rules per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// RFC 1123 subdomain: ConfigMaps, EndpointSlices, Events.
    Dns1123Subdomain,
    /// RFC 1123 label: Namespaces.
    Dns1123Label,
    /// RFC 1035 label: Services.
    Dns1035Label,
}

/// Serving details of one resource beyond its identity.
#[derive(Debug)]
pub(crate) struct ResourceDetails {
    pub resource: Resource,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub name_rule: NameRule,
    /// PUT on a missing object creates it (true for Services and Events in the real API).
    pub create_on_update: bool,
    /// DELETE answers with the deleted object instead of a `Success` Status.
    pub delete_returns_object: bool,
}

/// The resources served, as constants for use with [`crate::ApiServer`]'s store methods.
pub mod resources {
    use super::Resource;

    /// Core v1 `configmaps`.
    pub const CONFIGMAPS: Resource = Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
    };
    /// Core v1 `services`.
    pub const SERVICES: Resource = Resource {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
    };
    /// `discovery.k8s.io/v1` `endpointslices`.
    pub const ENDPOINTSLICES: Resource = Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
    };
    /// Core v1 `events`.
    pub const EVENTS: Resource = Resource {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    };
    /// `events.k8s.io/v1` `events`.
    pub const EVENTS_V1: Resource = Resource {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    };
    /// Core v1 `namespaces` (cluster-scoped).
    pub const NAMESPACES: Resource = Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    };
}

/// Every served resource with its details.
pub(crate) static ALL: &[ResourceDetails] = &[
    ResourceDetails {
        resource: resources::CONFIGMAPS,
        singular: "configmap",
        short_names: &["cm"],
        categories: &[],
        name_rule: NameRule::Dns1123Subdomain,
        create_on_update: false,
        delete_returns_object: false,
    },
    ResourceDetails {
        resource: resources::EVENTS,
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        name_rule: NameRule::Dns1123Subdomain,
        create_on_update: true,
        delete_returns_object: false,
    },
    ResourceDetails {
        resource: resources::NAMESPACES,
        singular: "namespace",
        short_names: &["ns"],
        categories: &[],
        name_rule: NameRule::Dns1123Label,
        create_on_update: false,
        delete_returns_object: true,
    },
    ResourceDetails {
        resource: resources::SERVICES,
        singular: "service",
        short_names: &["svc"],
        categories: &["all"],
        name_rule: NameRule::Dns1035Label,
        create_on_update: true,
        delete_returns_object: true,
    },
    ResourceDetails {
        resource: resources::ENDPOINTSLICES,
        singular: "endpointslice",
        short_names: &[],
        categories: &[],
        name_rule: NameRule::Dns1123Subdomain,
        create_on_update: false,
        delete_returns_object: false,
    },
    ResourceDetails {
        resource: resources::EVENTS_V1,
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        name_rule: NameRule::Dns1123Subdomain,
        create_on_update: true,
        delete_returns_object: false,
    },
];

/// The resource served at `group`/`version`/`plural`, if any.
pub(crate) fn by_path(group: &str, version: &str, plural: &str) -> Option<Resource> {
    ALL.iter()
        .map(|d| d.resource)
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource whose objects have this `apiVersion` and `kind`, if any.
pub(crate) fn by_api_version_kind(api_version: &str, kind: &str) -> Option<Resource> {
    ALL.iter()
        .map(|d| d.resource)
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// Every resource of one group version, in discovery order.
pub(crate) fn in_group_version(
    group: &str,
    version: &str,
) -> impl Iterator<Item = &'static ResourceDetails> {
    let (group, version) = (group.to_string(), version.to_string());
    ALL.iter()
        .filter(move |d| d.resource.group == group && d.resource.version == version)
}
