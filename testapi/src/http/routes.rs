//! URL paths of the Kubernetes API, parsed into what a request addresses, and the audit verb
//! (get, list, watch, create, update, patch, delete, deletecollection) of each request.

use axum::http::Method;

use crate::catalog::{self, Resource};

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/version`
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`
    ResourceList { group: String, version: String },
    /// `/openapi/v3`
    OpenApiIndex,
    /// `/openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`
    OpenApiDocument { group: String, version: String },
    /// A collection: every object of a kind, in one namespace or in all.
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    /// One object.
    Object {
        resource: Resource,
        namespace: Option<String>,
        name: String,
    },
    /// Anything else.
    Unknown,
}

impl Route {
    /// Parses an URL path.
    pub fn parse(path: &str) -> Route {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            ["version"] => Route::Version,
            ["api"] => Route::CoreVersions,
            ["apis"] => Route::Groups,
            ["openapi", "v3"] => Route::OpenApiIndex,
            ["openapi", "v3", "api", version] => Route::OpenApiDocument {
                group: String::new(),
                version: version.to_string(),
            },
            ["openapi", "v3", "apis", group, version] => Route::OpenApiDocument {
                group: group.to_string(),
                version: version.to_string(),
            },
            ["api", "v1"] => Route::ResourceList {
                group: String::new(),
                version: "v1".into(),
            },
            ["api", "v1", rest @ ..] => Self::parse_resource("", "v1", rest),
            ["apis", group] if catalog::ALL.iter().any(|d| d.resource.group == *group) => {
                Route::Group(group.to_string())
            }
            ["apis", group, version]
                if catalog::in_group_version(group, version).next().is_some() =>
            {
                Route::ResourceList {
                    group: group.to_string(),
                    version: version.to_string(),
                }
            }
            ["apis", group, version, rest @ ..] => Self::parse_resource(group, version, rest),
            _ => Route::Unknown,
        }
    }

    fn parse_resource(group: &str, version: &str, rest: &[&str]) -> Route {
        let lookup = |plural: &str| catalog::by_path(group, version, plural);
        match rest {
            ["namespaces", namespace, plural] => match lookup(plural) {
                Some(resource) if resource.namespaced => Route::Collection {
                    resource,
                    namespace: Some(namespace.to_string()),
                },
                _ => Route::Unknown,
            },
            ["namespaces", namespace, plural, name] => match lookup(plural) {
                Some(resource) if resource.namespaced => Route::Object {
                    resource,
                    namespace: Some(namespace.to_string()),
                    name: name.to_string(),
                },
                _ => Route::Unknown,
            },
            [plural] => match lookup(plural) {
                Some(resource) => Route::Collection {
                    resource,
                    namespace: None,
                },
                None => Route::Unknown,
            },
            [plural, name] => match lookup(plural) {
                Some(resource) if !resource.namespaced => Route::Object {
                    resource,
                    namespace: None,
                    name: name.to_string(),
                },
                _ => Route::Unknown,
            },
            _ => Route::Unknown,
        }
    }

    /// The resource and namespace addressed, for the request log.
    pub fn resource_and_namespace(&self) -> (Option<Resource>, Option<String>) {
        match self {
            Route::Collection {
                resource,
                namespace,
            }
            | Route::Object {
                resource,
                namespace,
                ..
            } => (Some(*resource), namespace.clone()),
            _ => (None, None),
        }
    }

    /// The Kubernetes audit verb of `method` on this route.
    pub fn verb(&self, method: &Method, watch: bool) -> &'static str {
        let collection = matches!(self, Route::Collection { .. });
        match (method.as_str(), collection) {
            ("GET" | "HEAD", true) if watch => "watch",
            ("GET" | "HEAD", true) => "list",
            ("GET" | "HEAD", false) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "deletecollection",
            ("DELETE", false) => "delete",
            _ => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::resources as served;

    #[test]
    fn paths() {
        assert_eq!(
            Route::parse("/api/v1/namespaces/ns/configmaps/cm"),
            Route::Object {
                resource: served::CONFIGMAPS,
                namespace: Some("ns".into()),
                name: "cm".into()
            }
        );
        assert_eq!(
            Route::parse("/api/v1/configmaps"),
            Route::Collection {
                resource: served::CONFIGMAPS,
                namespace: None
            }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/ns"),
            Route::Object {
                resource: served::NAMESPACES,
                namespace: None,
                name: "ns".into()
            }
        );
        assert_eq!(Route::parse("/api/v1/configmaps/cm"), Route::Unknown);
        assert_eq!(
            Route::parse("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"),
            Route::Collection {
                resource: served::ENDPOINTSLICES,
                namespace: Some("a".into())
            }
        );
        assert_eq!(Route::parse("/apis/apps/v1"), Route::Unknown);
        assert_eq!(
            Route::parse("/apis/events.k8s.io"),
            Route::Group("events.k8s.io".into())
        );
    }
}
