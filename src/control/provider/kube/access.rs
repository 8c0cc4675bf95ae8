//! Every Kubernetes API call the kube provider makes, as data: the RBAC manifests in
//! `deploy/base` must grant exactly [`API_ACCESS`], those of the kustomize component
//! `deploy/components/gateway-api` exactly [`GATEWAY_API_ACCESS`], those of
//! `deploy/components/manage-service-ports` exactly [`SERVICE_PORTS_ACCESS`] (tests check all
//! three), and the docs list them.

/// Where an access applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessScope {
    /// Only the port-map ConfigMaps, by name (`resourceNames`), in their own namespace
    /// (list and watch carry a `metadata.name` field selector, which RBAC matches).
    PortMapsByName,
    /// In the namespace of the port-map ConfigMaps (Events are recorded on them).
    PortMapNamespace,
    /// Any namespace: entries may name Services in any namespace, as in ingress-nginx.
    Cluster,
    /// Only the Service of `--manage-service-ports`, by name (`resourceNames`), in its own
    /// namespace.
    ManagedServiceByName,
}

/// One (API group, resource) the provider uses and the verbs it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiAccess {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource (plural, lower case).
    pub resource: &'static str,
    /// The verbs called, sorted.
    pub verbs: &'static [&'static str],
    /// Cluster-wide, or in the namespaces of the port maps.
    pub scope: AccessScope,
}

/// Everything the kube provider calls.
pub const API_ACCESS: &[ApiAccess] = &[
    ApiAccess {
        group: "",
        resource: "configmaps",
        verbs: &["list", "watch"],
        scope: AccessScope::PortMapsByName,
    },
    ApiAccess {
        group: "",
        resource: "services",
        verbs: &["list", "watch"],
        scope: AccessScope::Cluster,
    },
    ApiAccess {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
        scope: AccessScope::Cluster,
    },
    ApiAccess {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: AccessScope::PortMapNamespace,
    },
];

/// What `--gateway-api` adds: reading the Gateway API kinds everywhere, writing the status of
/// those it reports on (nothing else of them), and the Lease that picks the one replica that
/// writes.
pub const GATEWAY_API_ACCESS: &[ApiAccess] = &[
    gateway_api_read("gatewayclasses"),
    gateway_api_read("gateways"),
    gateway_api_read("tcproutes"),
    gateway_api_read("udproutes"),
    gateway_api_read("tlsroutes"),
    gateway_api_read("referencegrants"),
    gateway_api_status("gatewayclasses/status"),
    gateway_api_status("gateways/status"),
    gateway_api_status("tcproutes/status"),
    gateway_api_status("udproutes/status"),
    gateway_api_status("tlsroutes/status"),
    // Their labels, for listeners' `allowedRoutes.namespaces.selector`.
    ApiAccess {
        group: "",
        resource: "namespaces",
        verbs: &["list", "watch"],
        scope: AccessScope::Cluster,
    },
    ApiAccess {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create", "get", "patch"],
        scope: AccessScope::PortMapNamespace,
    },
];

/// What `--manage-service-ports` adds: server-side apply (a patch) of that one Service. Its
/// Warning Events go through the base's `events` access (the Service is in the port maps'
/// namespace in `deploy/`).
pub const SERVICE_PORTS_ACCESS: &[ApiAccess] = &[ApiAccess {
    group: "",
    resource: "services",
    verbs: &["patch"],
    scope: AccessScope::ManagedServiceByName,
}];

/// What `dermaga doctor` calls, read-only, with the user's credentials or the ServiceAccount
/// of `deploy/components/doctor`: the Services, EndpointSlices, Pods, ReplicaSets and Jobs it
/// examines, the LoadBalancer Service in front of the gateway, the port maps by name.
pub const DOCTOR_ACCESS: &[ApiAccess] = &[
    ApiAccess {
        group: "",
        resource: "services",
        verbs: &["get", "list"],
        scope: AccessScope::Cluster,
    },
    ApiAccess {
        group: "",
        resource: "pods",
        verbs: &["list"],
        scope: AccessScope::Cluster,
    },
    ApiAccess {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list"],
        scope: AccessScope::Cluster,
    },
    ApiAccess {
        group: "apps",
        resource: "replicasets",
        verbs: &["list"],
        scope: AccessScope::Cluster,
    },
    ApiAccess {
        group: "batch",
        resource: "jobs",
        verbs: &["list"],
        scope: AccessScope::Cluster,
    },
    ApiAccess {
        group: "",
        resource: "configmaps",
        verbs: &["get"],
        scope: AccessScope::PortMapsByName,
    },
];

const fn gateway_api_read(resource: &'static str) -> ApiAccess {
    ApiAccess {
        group: crate::control::gateway_api::GROUP,
        resource,
        verbs: &["list", "watch"],
        scope: AccessScope::Cluster,
    }
}

const fn gateway_api_status(resource: &'static str) -> ApiAccess {
    ApiAccess {
        group: crate::control::gateway_api::GROUP,
        resource,
        verbs: &["patch"],
        scope: AccessScope::Cluster,
    }
}
