//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/<group>` and the resource lists of
//! each group version, in the legacy (unaggregated) form. A client asking for aggregated
//! discovery (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`) gets these
//! with `Content-Type: application/json` and falls back to legacy discovery, as with an old server.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::catalog::{self, ResourceDetails};

/// The Kubernetes version this server claims to be.
pub(crate) const MAJOR: &str = "1";
/// Minor version claimed (kubectl v1.32 is installed next to it).
pub(crate) const MINOR: &str = "32";

/// `/version`
pub(crate) fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-dermaga-testapi"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`
pub(crate) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]
    })
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = catalog::ALL
        .iter()
        .map(|d| d.resource.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups
}

fn group(name: &str) -> Value {
    let version = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"name": name, "versions": [version], "preferredVersion": version})
}

/// `/apis`
pub(crate) fn group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`
pub(crate) fn api_group(name: &str) -> Value {
    let mut document = group(name);
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    document
}

fn api_resource(details: &ResourceDetails) -> Value {
    let resource = &details.resource;
    let mut verbs = vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    if resource.plural == "namespaces" {
        verbs.retain(|v| *v != "deletecollection");
    }
    let mut document = json!({
        "name": resource.plural,
        "singularName": details.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": verbs,
    });
    if !details.short_names.is_empty() {
        document["shortNames"] = json!(details.short_names);
    }
    if !details.categories.is_empty() {
        document["categories"] = json!(details.categories);
    }
    document
}

/// `/api/v1` or `/apis/<group>/<version>`
pub(crate) fn resource_list(group: &str, version: &str) -> Value {
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let list: Vec<Value> = catalog::in_group_version(group, version)
        .map(api_resource)
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list})
}
