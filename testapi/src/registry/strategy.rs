//! Per-kind behaviour on create and update, as the real REST strategies and defaulters do it:
//! Service defaults, ClusterIP and NodePort allocation and immutability; EndpointSlice port
//! defaults and `generation`; Namespace finalizer, phase and name label; and validation.

use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

use crate::catalog::{Resource, resources};
use crate::object::{self, ensure_object};
use crate::status::FieldError;

/// Allocates Service ClusterIPs (from 10.96.0.0/12) and NodePorts (30000-32767).
#[derive(Debug)]
pub(crate) struct Allocator {
    next_cluster_ip: u32,
    next_node_port: u16,
}

impl Default for Allocator {
    fn default() -> Self {
        // 10.96.0.1 is the `kubernetes` Service and 10.96.0.10 usually DNS in a real cluster.
        Allocator {
            next_cluster_ip: u32::from(Ipv4Addr::new(10, 96, 0, 11)),
            next_node_port: 30000,
        }
    }
}

impl Allocator {
    fn cluster_ip(&mut self) -> String {
        let ip = Ipv4Addr::from(self.next_cluster_ip);
        self.next_cluster_ip += 1;
        ip.to_string()
    }

    fn node_port(&mut self) -> u16 {
        let port = self.next_node_port;
        self.next_node_port = if port >= 32767 { 30000 } else { port + 1 };
        port
    }
}

fn str_at<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

fn spec_mut(object: &mut Value) -> &mut Map<String, Value> {
    let root = ensure_object(object);
    ensure_object(root.entry("spec").or_insert_with(|| json!({})))
}

/// Sets `field` to `default` when it is missing, null or `""`.
fn default_field(map: &mut Map<String, Value>, field: &str, default: Value) {
    let missing = match map.get(field) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    if missing {
        map.insert(field.to_string(), default);
    }
}

/// Kind-specific preparation of a new object (defaults, allocations, reset fields).
pub(crate) fn prepare_for_create(
    resource: &Resource,
    object: &mut Value,
    allocator: &mut Allocator,
) {
    if *resource == resources::SERVICES {
        ensure_object(object).insert("status".into(), json!({"loadBalancer": {}}));
        default_service(object, None, allocator);
    } else if *resource == resources::ENDPOINTSLICES {
        object::metadata_mut(object).insert("generation".into(), json!(1));
        default_endpoint_slice(object);
    } else if *resource == resources::NAMESPACES {
        let name = object::name(object).to_string();
        let spec = spec_mut(object);
        let finalizers = spec.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = finalizers.as_array_mut()
            && !list.iter().any(|f| f == "kubernetes")
        {
            list.push(json!("kubernetes"));
        }
        ensure_object(object).insert("status".into(), json!({"phase": "Active"}));
        set_namespace_name_label(object, &name);
    }
}

/// Kind-specific preparation of an update of `old` to `object`.
pub(crate) fn prepare_for_update(
    resource: &Resource,
    object: &mut Value,
    old: &Value,
    allocator: &mut Allocator,
) {
    if *resource == resources::SERVICES {
        let status = old
            .get("status")
            .cloned()
            .unwrap_or(json!({"loadBalancer": {}}));
        ensure_object(object).insert("status".into(), status);
        default_service(object, Some(old), allocator);
    } else if *resource == resources::ENDPOINTSLICES {
        default_endpoint_slice(object);
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(map) = v.as_object_mut() {
                map.remove("metadata");
            }
            v
        };
        let labels = |v: &Value| v.pointer("/metadata/labels").cloned();
        let changed = strip(object) != strip(old) || labels(object) != labels(old);
        let generation = if changed { generation + 1 } else { generation };
        object::metadata_mut(object).insert("generation".into(), json!(generation));
    } else if *resource == resources::NAMESPACES {
        let name = object::name(object).to_string();
        let finalizers = old
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        spec_mut(object).insert("finalizers".into(), finalizers);
        let status = old
            .get("status")
            .cloned()
            .unwrap_or(json!({"phase": "Active"}));
        ensure_object(object).insert("status".into(), status);
        set_namespace_name_label(object, &name);
    }
}

fn set_namespace_name_label(object: &mut Value, name: &str) {
    let metadata = object::metadata_mut(object);
    let labels = ensure_object(metadata.entry("labels").or_insert_with(|| json!({})));
    labels.insert("kubernetes.io/metadata.name".into(), json!(name));
}

fn service_type(object: &Value) -> &str {
    object
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

/// Service defaulting (as `SetDefaults_Service`) plus the allocation the Service REST storage
/// does; on update, allocated values missing from the new object are carried over from `old`.
fn default_service(object: &mut Value, old: Option<&Value>, allocator: &mut Allocator) {
    let old_spec = old
        .and_then(|o| o.get("spec"))
        .cloned()
        .unwrap_or(json!({}));
    let spec = spec_mut(object);
    default_field(spec, "type", json!("ClusterIP"));
    default_field(spec, "sessionAffinity", json!("None"));
    let service_type = str_at(&Value::Object(spec.clone()), "type").to_string();
    let node_ports = service_type == "NodePort" || service_type == "LoadBalancer";
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(port, "protocol", json!("TCP"));
            let number = port.get("port").cloned().unwrap_or(json!(0));
            let target_missing = matches!(port.get("targetPort"), None | Some(Value::Null))
                || port.get("targetPort") == Some(&json!(0))
                || port.get("targetPort") == Some(&json!(""));
            if target_missing {
                port.insert("targetPort".into(), number.clone());
            }
            let node_port_missing = port.get("nodePort").and_then(Value::as_u64).unwrap_or(0) == 0;
            if node_ports && node_port_missing {
                let protocol = port.get("protocol").cloned();
                let previous = old_spec
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|p| {
                        p.get("port") == Some(&number) && p.get("protocol") == protocol.as_ref()
                    })
                    .and_then(|p| p.get("nodePort"))
                    .and_then(Value::as_u64)
                    .filter(|n| *n != 0);
                let node_port = previous.unwrap_or_else(|| u64::from(allocator.node_port()));
                port.insert("nodePort".into(), json!(node_port));
            }
        }
    }
    if service_type == "ExternalName" {
        return;
    }
    if str_at(&Value::Object(spec.clone()), "clusterIP").is_empty() {
        let carried = str_at(&old_spec, "clusterIP");
        if !carried.is_empty() {
            spec.insert("clusterIP".into(), json!(carried));
            if let Some(ips) = old_spec.get("clusterIPs") {
                spec.insert("clusterIPs".into(), ips.clone());
            }
        } else {
            spec.insert("clusterIP".into(), json!(allocator.cluster_ip()));
        }
    }
    let cluster_ip = spec.get("clusterIP").cloned().unwrap_or(json!("None"));
    if !matches!(spec.get("clusterIPs"), Some(Value::Array(ips)) if !ips.is_empty()) {
        spec.insert("clusterIPs".into(), json!([cluster_ip]));
    }
    let families = old_spec
        .get("ipFamilies")
        .cloned()
        .unwrap_or(json!(["IPv4"]));
    if !matches!(spec.get("ipFamilies"), Some(Value::Array(f)) if !f.is_empty()) {
        spec.insert("ipFamilies".into(), families);
    }
    let policy = old_spec
        .get("ipFamilyPolicy")
        .cloned()
        .unwrap_or(json!("SingleStack"));
    default_field(spec, "ipFamilyPolicy", policy);
    default_field(spec, "internalTrafficPolicy", json!("Cluster"));
    if node_ports {
        default_field(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

/// EndpointSlice defaulting (`SetDefaults_EndpointPort`): port name `""`, protocol TCP.
fn default_endpoint_slice(object: &mut Value) {
    if let Some(ports) = object.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            if matches!(port.get("name"), None | Some(Value::Null)) {
                port.insert("name".into(), json!(""));
            }
            default_field(port, "protocol", json!("TCP"));
        }
    }
}

/// Kind-specific validation of an object about to be stored.
pub(crate) fn validate(resource: &Resource, object: &Value) -> Vec<FieldError> {
    if *resource == resources::SERVICES {
        validate_service(object)
    } else if *resource == resources::ENDPOINTSLICES {
        validate_endpoint_slice(object)
    } else {
        Vec::new()
    }
}

/// Kind-specific validation of an update from `old`.
pub(crate) fn validate_update(resource: &Resource, object: &Value, old: &Value) -> Vec<FieldError> {
    let mut errors = validate(resource, object);
    if *resource == resources::SERVICES
        && service_type(old) != "ExternalName"
        && service_type(object) != "ExternalName"
    {
        let old_ip = old
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        let new_ip = object
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !old_ip.is_empty() && old_ip != new_ip {
            errors.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                new_ip,
                "may not change once set",
            ));
        }
    }
    if *resource == resources::ENDPOINTSLICES && old.get("addressType") != object.get("addressType")
    {
        let value = str_at(object, "addressType");
        errors.push(FieldError::invalid(
            "addressType",
            value,
            "field is immutable",
        ));
    }
    errors
}

fn validate_service(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let service_type = service_type(object);
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&service_type) {
        errors.push(FieldError::not_supported("spec.type", service_type, TYPES));
    }
    let headless = object.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = object
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && service_type != "ExternalName" && !headless {
        errors.push(FieldError::required("spec.ports", ""));
    }
    if service_type == "ExternalName"
        && object
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        errors.push(FieldError::required("spec.externalName", ""));
    }
    let mut names = Vec::new();
    let mut port_protocols = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let name = str_at(port, "name");
        if ports.len() > 1 && name.is_empty() {
            errors.push(FieldError::required(&format!("spec.ports[{i}].name"), ""));
        } else if !name.is_empty() && names.contains(&name) {
            errors.push(FieldError::invalid(
                &format!("spec.ports[{i}].name"),
                name,
                "Duplicate value",
            ));
        }
        names.push(name);
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            let detail = "must be between 1 and 65535, inclusive";
            errors.push(FieldError::invalid(
                &format!("spec.ports[{i}].port"),
                &number.to_string(),
                detail,
            ));
        }
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP");
        const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
        if !PROTOCOLS.contains(&protocol) {
            errors.push(FieldError::not_supported(
                &format!("spec.ports[{i}].protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
        if port_protocols.contains(&(number, protocol)) {
            let value = format!("{number}/{protocol}");
            errors.push(FieldError::invalid(
                &format!("spec.ports[{i}]"),
                &value,
                "Duplicate value",
            ));
        }
        port_protocols.push((number, protocol));
    }
    errors
}

fn validate_endpoint_slice(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    match object.get("addressType").and_then(Value::as_str) {
        None | Some("") => errors.push(FieldError::required("addressType", "")),
        Some(t) if !ADDRESS_TYPES.contains(&t) => {
            errors.push(FieldError::not_supported("addressType", t, ADDRESS_TYPES));
        }
        Some(_) => {}
    }
    let endpoints = object
        .get("endpoints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let count = endpoint
            .get("addresses")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if count == 0 {
            errors.push(FieldError::required(
                &format!("endpoints[{i}].addresses"),
                "must contain at least 1 address",
            ));
        } else if count > 100 {
            let detail = "must have at most 100 items";
            errors.push(FieldError::invalid(
                &format!("endpoints[{i}].addresses"),
                &count.to_string(),
                detail,
            ));
        }
    }
    errors
}
