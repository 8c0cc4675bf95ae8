//! What the RBAC manifests grant the gateway's ServiceAccount, as a set of single permissions,
//! compared with what the kube provider calls (`API_ACCESS`).

use std::collections::BTreeSet;
use std::fmt;

use dermaga::ObjectName;
use dermaga::{AccessScope, ApiAccess};
use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};

use super::manifest::{Doc, Object};

/// Where a permission applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// In one namespace (a Role, or a ClusterRole bound by a RoleBinding).
    Namespace(String),
    /// In every namespace (a ClusterRole bound by a ClusterRoleBinding).
    Cluster,
}

/// One verb on one resource, possibly restricted to one object name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// Where.
    pub scope: Scope,
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource.
    pub resource: String,
    /// Verb.
    pub verb: String,
    /// `resourceNames` entry, or `None` for every object.
    pub name: Option<String>,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {} ({group})", self.verb, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, " named {name:?}")?;
        } else {
            write!(f, " (any name)")?;
        }
        match &self.scope {
            Scope::Namespace(ns) => write!(f, " in namespace {ns} (Role)"),
            Scope::Cluster => write!(f, " in every namespace (ClusterRole + ClusterRoleBinding)"),
        }
    }
}

/// What the kube provider needs, for these port maps: `accesses` (`API_ACCESS`, and
/// `GATEWAY_API_ACCESS` with `--gateway-api`) made concrete.
pub fn expected(
    accesses: &[ApiAccess],
    port_maps: &[ObjectName],
    managed_service: Option<&ObjectName>,
) -> BTreeSet<Grant> {
    let namespaces: BTreeSet<&str> = port_maps.iter().map(|m| m.namespace.as_str()).collect();
    let mut out = BTreeSet::new();
    for access in accesses {
        for verb in access.verbs {
            let grant = |scope: Scope, name: Option<&str>| Grant {
                scope,
                group: access.group.to_owned(),
                resource: access.resource.to_owned(),
                verb: (*verb).to_owned(),
                name: name.map(str::to_owned),
            };
            match access.scope {
                AccessScope::PortMapsByName => {
                    for map in port_maps {
                        out.insert(grant(
                            Scope::Namespace(map.namespace.clone()),
                            Some(&map.name),
                        ));
                    }
                }
                AccessScope::PortMapNamespace => {
                    for ns in &namespaces {
                        out.insert(grant(Scope::Namespace((*ns).to_owned()), None));
                    }
                }
                AccessScope::Cluster => {
                    out.insert(grant(Scope::Cluster, None));
                }
                AccessScope::ManagedServiceByName => {
                    let service = managed_service.expect("--manage-service-ports names a Service");
                    out.insert(grant(
                        Scope::Namespace(service.namespace.clone()),
                        Some(&service.name),
                    ));
                }
            }
        }
    }
    out
}

fn expand(
    rules: &[PolicyRule],
    scope: &Scope,
    role: &str,
    grants: &mut BTreeSet<Grant>,
    problems: &mut Vec<String>,
) {
    for rule in rules {
        if rule
            .non_resource_urls
            .as_ref()
            .is_some_and(|u| !u.is_empty())
        {
            problems.push(format!(
                "{role} grants nonResourceURLs {:?}; dermaga calls none",
                rule.non_resource_urls
            ));
        }
        let names: Vec<Option<String>> = match &rule.resource_names {
            Some(n) if !n.is_empty() => n.iter().cloned().map(Some).collect(),
            _ => vec![None],
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    for name in &names {
                        grants.insert(Grant {
                            scope: scope.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb: verb.clone(),
                            name: name.clone(),
                        });
                    }
                }
            }
        }
    }
}

fn is_account(subject: &Subject, account: &ObjectName, binding_namespace: Option<&str>) -> bool {
    subject.kind == "ServiceAccount"
        && subject.name == account.name
        && subject.namespace.as_deref().or(binding_namespace) == Some(account.namespace.as_str())
}

/// Everything the RBAC objects in `docs` grant `account`, with the problems found on the way:
/// bindings that also grant to other subjects, roles not bound to it, references to roles that
/// are not there.
pub fn granted(docs: &[Doc], account: &ObjectName) -> (BTreeSet<Grant>, Vec<String>) {
    let mut grants = BTreeSet::new();
    let mut problems = Vec::new();
    let mut used_roles = BTreeSet::new();
    let find_role = |kind: &str, name: &str, ns: Option<&str>| {
        docs.iter().find_map(|d| match (&d.object, kind) {
            (Object::Role(r), "Role")
                if r.metadata.name.as_deref() == Some(name)
                    && r.metadata.namespace.as_deref() == ns =>
            {
                Some((d.source.clone(), r.rules.clone().unwrap_or_default(), false))
            }
            (Object::ClusterRole(r), "ClusterRole") if r.metadata.name.as_deref() == Some(name) => {
                Some((
                    d.source.clone(),
                    r.rules.clone().unwrap_or_default(),
                    r.aggregation_rule.is_some(),
                ))
            }
            _ => None,
        })
    };
    for doc in docs {
        let (binding_kind, meta, role_ref, subjects) = match &doc.object {
            Object::RoleBinding(b) => ("RoleBinding", &b.metadata, &b.role_ref, &b.subjects),
            Object::ClusterRoleBinding(b) => {
                ("ClusterRoleBinding", &b.metadata, &b.role_ref, &b.subjects)
            }
            _ => continue,
        };
        let binding = format!(
            "{binding_kind} {:?} ({})",
            meta.name.as_deref().unwrap_or(""),
            doc.source
        );
        let binding_ns = meta.namespace.as_deref();
        let subjects = subjects.clone().unwrap_or_default();
        if !subjects.iter().any(|s| is_account(s, account, binding_ns)) {
            problems.push(format!(
                "{binding} does not bind the gateway's ServiceAccount {account}"
            ));
            continue;
        }
        for other in subjects
            .iter()
            .filter(|s| !is_account(s, account, binding_ns))
        {
            problems.push(format!(
                "{binding} also grants to {} {:?}: only the gateway's ServiceAccount {account} should get these permissions",
                other.kind, other.name
            ));
        }
        let scope = match (binding_kind, role_ref.kind.as_str()) {
            ("ClusterRoleBinding", "ClusterRole") => Scope::Cluster,
            ("RoleBinding", _) => Scope::Namespace(binding_ns.unwrap_or("default").to_owned()),
            _ => {
                problems.push(format!("{binding} refers to a {} (a ClusterRoleBinding can only refer to a ClusterRole)", role_ref.kind));
                continue;
            }
        };
        let role_ns = if role_ref.kind == "Role" {
            binding_ns
        } else {
            None
        };
        let Some((source, rules, aggregated)) = find_role(&role_ref.kind, &role_ref.name, role_ns)
        else {
            problems.push(format!(
                "{binding} refers to {} {:?}, which is not in the manifests",
                role_ref.kind, role_ref.name
            ));
            continue;
        };
        if aggregated {
            problems.push(format!("ClusterRole {:?} ({source}) is aggregated: its rules are not known from the manifests", role_ref.name));
        }
        used_roles.insert((
            role_ref.kind.clone(),
            role_ref.name.clone(),
            role_ns.map(str::to_owned),
        ));
        expand(
            &rules,
            &scope,
            &format!("{} {:?} ({source})", role_ref.kind, role_ref.name),
            &mut grants,
            &mut problems,
        );
    }
    for doc in docs {
        let key = match &doc.object {
            Object::Role(r) => (
                "Role".to_owned(),
                r.metadata.name.clone().unwrap_or_default(),
                r.metadata.namespace.clone(),
            ),
            Object::ClusterRole(r) => (
                "ClusterRole".to_owned(),
                r.metadata.name.clone().unwrap_or_default(),
                None,
            ),
            _ => continue,
        };
        if !used_roles.contains(&key) {
            problems.push(format!(
                "{} {:?} ({}) is not bound to the gateway's ServiceAccount {account}",
                key.0, key.1, doc.source
            ));
        }
    }
    (grants, problems)
}

/// Compares what is granted with what is needed: every difference is one problem line.
pub fn check(
    docs: &[Doc],
    accesses: &[ApiAccess],
    account: &ObjectName,
    port_maps: &[ObjectName],
    managed_service: Option<&ObjectName>,
) -> Vec<String> {
    let (granted, mut problems) = granted(docs, account);
    let expected = expected(accesses, port_maps, managed_service);
    for missing in expected.difference(&granted) {
        problems.push(format!("missing: {missing}; the kube provider calls it (API_ACCESS, GATEWAY_API_ACCESS, SERVICE_PORTS_ACCESS in src/control/provider/kube/access.rs)"));
    }
    for extra in granted.difference(&expected) {
        problems.push(format!("more than needed: {extra}; the kube provider never calls it (API_ACCESS, GATEWAY_API_ACCESS, SERVICE_PORTS_ACCESS in src/control/provider/kube/access.rs)"));
    }
    problems
}
