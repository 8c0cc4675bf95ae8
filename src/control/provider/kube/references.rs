//! Which Services the port maps and the Gateway API routes name, grouped by namespace: what
//! the provider must watch.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;

use crate::control::configmap::{ReservedPorts, parse_port_map};
use crate::control::gateway_api::L4Route;
use crate::names::{ObjectName, Protocol};

/// Referenced Service names by namespace.
pub type References = BTreeMap<String, BTreeSet<String>>;

/// The Services named by the valid entries of the given port maps.
pub fn references<'a>(
    port_maps: impl IntoIterator<Item = (Protocol, &'a ObjectName, &'a ConfigMap)>,
) -> References {
    let mut refs = References::new();
    let reserved = ReservedPorts::default();
    for (protocol, name, cm) in port_maps {
        let Some(data) = cm.data.as_ref() else {
            continue;
        };
        for spec in parse_port_map(name, data, protocol, &reserved)
            .entries
            .values()
        {
            for backend in spec.backends() {
                refs.entry(backend.service.namespace)
                    .or_default()
                    .insert(backend.service.name);
            }
        }
    }
    refs
}

/// The Services (namespace, name) a TCPRoute or UDPRoute's backendRefs name, whether or not
/// the reference is permitted: watching one more Service costs little, and a ReferenceGrant
/// that arrives later then takes effect without a re-list.
pub fn route_references(route_name: &ObjectName, route: &L4Route) -> Vec<(String, String)> {
    route
        .spec
        .rules
        .iter()
        .flat_map(|rule| &rule.backend_refs)
        .filter(|b| {
            b.group.as_deref().unwrap_or("").is_empty()
                && b.kind.as_deref().unwrap_or("Service") == "Service"
                && !b.name.is_empty()
        })
        .map(|b| {
            let namespace = b
                .namespace
                .clone()
                .unwrap_or_else(|| route_name.namespace.clone());
            (namespace, b.name.clone())
        })
        .collect()
}

/// The label selector that picks the EndpointSlices of `services`.
pub fn slice_selector(services: &BTreeSet<String>) -> String {
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    format!(
        "{} in ({})",
        crate::control::index::SERVICE_NAME_LABEL,
        names.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn groups_valid_entries_by_namespace_and_skips_bad_ones() {
        let tcp = cm(&[
            ("10000", "default/a:10000"),
            ("10001", "default/b:http"),
            ("10002", "other/a:1:PROXY"),
            ("10003", "not a reference"),
            ("10000.send-proxy-version", "v2"),
            ("10004", "default/c:80"),
            ("10004.backends", "default/c:80=9, canary/c:80=1"),
        ]);
        let udp = cm(&[("53", "kube-system/dns:53")]);
        let tcp_name = ObjectName::new("dermaga", "tcp-services");
        let udp_name = ObjectName::new("dermaga", "udp-services");
        let refs = references([
            (Protocol::Tcp, &tcp_name, &tcp),
            (Protocol::Udp, &udp_name, &udp),
        ]);
        let flat: Vec<(String, Vec<String>)> = refs
            .into_iter()
            .map(|(ns, names)| (ns, names.into_iter().collect()))
            .collect();
        assert_eq!(
            flat,
            vec![
                // Every backend of a split port is watched.
                ("canary".into(), vec!["c".into()]),
                ("default".into(), vec!["a".into(), "b".into(), "c".into()]),
                ("kube-system".into(), vec!["dns".into()]),
                ("other".into(), vec!["a".into()]),
            ]
        );
    }

    #[test]
    fn slice_selector_is_a_set_based_label_selector() {
        let names: BTreeSet<String> = ["b".to_string(), "a".to_string()].into();
        assert_eq!(
            slice_selector(&names),
            "kubernetes.io/service-name in (a,b)"
        );
    }
}
