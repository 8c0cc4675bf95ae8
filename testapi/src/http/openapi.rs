//! OpenAPI v3, just enough for kubectl: the `/openapi/v3` index and one document per group
//! version listing each resource path with its operations, `x-kubernetes-group-version-kind`
//! and `x-kubernetes-action`, and the `fieldValidation` query parameter on PATCH. Finding that
//! parameter, kubectl leaves validation to the server (sending `fieldValidation=Strict`)
//! instead of downloading schemas. There are no schemas, and no PATCH request bodies, so
//! `kubectl apply` computes strategic merge patches from its built-in types. `/openapi/v2` is
//! not served (404).

use serde_json::{Map, Value, json};

use super::discovery::{MAJOR, MINOR};
use crate::catalog::{self, Resource};

/// Version tag of the documents (they never change while the server runs).
const HASH: &str = "0123456789abcdef0123456789abcdef";

fn path_prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where the document of each group version is.
pub(crate) fn index() -> Value {
    let mut paths = Map::new();
    let mut seen = Vec::new();
    for details in catalog::ALL {
        let resource = &details.resource;
        let prefix = path_prefix(resource.group, resource.version);
        if !seen.contains(&prefix) {
            let url = format!("/openapi/v3/{prefix}?hash={HASH}");
            paths.insert(prefix.clone(), json!({"serverRelativeURL": url}));
            seen.push(prefix);
        }
    }
    json!({"paths": paths})
}

fn query_parameter(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(resource: &Resource, action: &str, verb: &str, parameters: &[Value]) -> Value {
    let gvk = json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
    let group = resource
        .group
        .split('.')
        .next()
        .map(|g| {
            let mut chars = g.chars();
            chars.next().map_or(String::new(), |c| {
                c.to_uppercase().collect::<String>() + chars.as_str()
            })
        })
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| "Core".into());
    let scope = if resource.namespaced {
        "Namespaced"
    } else {
        ""
    };
    let version = resource.version[..1].to_uppercase() + &resource.version[1..];
    json!({
        "operationId": format!("{verb}{group}{version}{scope}{}", resource.kind),
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    })
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`; `None` for other paths.
pub(crate) fn document(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for details in catalog::in_group_version(group, version) {
        let resource = &details.resource;
        let prefix = path_prefix(group, version);
        let (collection, scope_parameters) = if resource.namespaced {
            (
                format!("/{prefix}/namespaces/{{namespace}}/{}", resource.plural),
                vec![path_parameter("namespace")],
            )
        } else {
            (format!("/{prefix}/{}", resource.plural), vec![])
        };
        let with = |extra: &[&str], name: bool| -> Vec<Value> {
            let mut parameters = scope_parameters.clone();
            if name {
                parameters.push(path_parameter("name"));
            }
            parameters.extend(extra.iter().map(|p| query_parameter(p)));
            parameters
        };
        let list_parameters = [
            "allowWatchBookmarks",
            "continue",
            "fieldSelector",
            "labelSelector",
            "limit",
            "resourceVersion",
            "resourceVersionMatch",
            "sendInitialEvents",
            "timeoutSeconds",
            "watch",
        ];
        let write_parameters = ["dryRun", "fieldManager", "fieldValidation"];
        paths.insert(
            collection.clone(),
            json!({
                "get": operation(resource, "list", "list", &with(&list_parameters, false)),
                "post": operation(resource, "post", "create", &with(&write_parameters, false)),
                "delete": operation(resource, "deletecollection", "deleteCollection", &with(&["dryRun"], false)),
            }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation(resource, "get", "read", &with(&[], true)),
                "put": operation(resource, "put", "replace", &with(&write_parameters, true)),
                "patch": operation(resource, "patch", "patch", &with(&["dryRun", "fieldManager", "fieldValidation", "force"], true)),
                "delete": operation(resource, "delete", "delete", &with(&["dryRun"], true)),
            }),
        );
        if resource.namespaced {
            let all = format!("/{prefix}/{}", resource.plural);
            let parameters: Vec<Value> =
                list_parameters.iter().map(|p| query_parameter(p)).collect();
            paths.insert(
                all,
                json!({"get": operation(resource, "list", "listForAllNamespaces", &parameters)}),
            );
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{MAJOR}.{MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
