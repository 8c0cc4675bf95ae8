//! What dermaga reports back on the Gateway API objects it serves: the conditions `build()`
//! decides for each GatewayClass, Gateway (and listener) and route parent, and their rendering
//! into the `status` the API server keeps — pure, so that what is written, and when nothing
//! needs writing, is tested without an API server. `crate::status::gateway_api` does the writes.
//!
//! Rendering follows the API's conventions: a condition's `lastTransitionTime` moves only when
//! its `status` changes (otherwise the observed one is kept), every condition carries the
//! object's `metadata.generation` as `observedGeneration`, and a route's `status.parents`
//! entries of other controllers are kept as they are.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::gateway_api::{GROUP, ParentReference};
use super::index::Kind;
use crate::names::ObjectName;

/// One condition as decided (without its times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `Accepted`, `Programmed`, `ResolvedRefs`, `Conflicted`.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// The API's reason (`Accepted`, `PortUnavailable`, `RefNotPermitted`, ...).
    pub reason: &'static str,
    /// What it means here, in words.
    pub message: String,
}

impl Condition {
    /// A condition with status `True`.
    pub fn yes(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// A condition with status `False`.
    pub fn no(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// What the object looked like when the status was decided: the status writer compares with
/// it and makes its write conditional on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// `metadata.generation` (what `observedGeneration` reports).
    pub generation: Option<i64>,
    /// `metadata.resourceVersion` (the write fails if the object changed since).
    pub resource_version: Option<String>,
    /// `status` as read.
    pub status: Option<Value>,
}

/// A GatewayClass of dermaga's controller.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassStatus {
    /// The object as read.
    pub observed: Observed,
    /// Its conditions.
    pub conditions: Vec<Condition>,
}

/// A Gateway of one of dermaga's classes.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayStatus {
    /// The object as read.
    pub observed: Observed,
    /// The Gateway's own conditions.
    pub conditions: Vec<Condition>,
    /// One per listener, in the spec's order.
    pub listeners: Vec<ListenerStatus>,
    /// `status.addresses` (IPs or hostnames of the `--publish-service` LoadBalancer).
    pub addresses: Vec<String>,
}

/// One listener of a Gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerStatus {
    /// The listener's name.
    pub name: String,
    /// The route kinds it takes.
    pub supported_kinds: Vec<&'static str>,
    /// How many routes are attached (dermaga serves one per TCP/UDP listener: 0 or 1).
    pub attached_routes: u32,
    /// Its conditions.
    pub conditions: Vec<Condition>,
}

/// A route with at least one parentRef to a Gateway dermaga serves.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStatus {
    /// The object as read.
    pub observed: Observed,
    /// One per such parentRef, in the spec's order.
    pub parents: Vec<ParentStatus>,
}

/// A route's status for one parentRef.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentStatus {
    /// The parentRef, as the spec has it.
    pub parent_ref: ParentReference,
    /// Its conditions.
    pub conditions: Vec<Condition>,
}

/// Everything dermaga reports on the Gateway API objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayApiStatus {
    /// By class name.
    pub classes: BTreeMap<String, ClassStatus>,
    /// By Gateway.
    pub gateways: BTreeMap<ObjectName, GatewayStatus>,
    /// By route kind and name.
    pub routes: BTreeMap<(Kind, ObjectName), RouteStatus>,
}

/// One status to write: the object, the resourceVersion it was read at, and the new `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusWrite {
    /// GatewayClass, Gateway, TCPRoute or UDPRoute.
    pub kind: Kind,
    /// The object (a GatewayClass: namespace `""`).
    pub name: ObjectName,
    /// The resourceVersion the status was decided on.
    pub resource_version: Option<String>,
    /// The whole new `status`.
    pub status: Value,
}

impl GatewayApiStatus {
    /// The statuses that differ from what the objects have; `controller` is dermaga's
    /// `controllerName` (a route's parents entries carry it), `now` an RFC 3339 time for
    /// conditions that change.
    pub fn writes(&self, controller: &str, now: &str) -> Vec<StatusWrite> {
        let mut out = Vec::new();
        let mut push = |kind: Kind, name: ObjectName, observed: &Observed, status: Value| {
            if observed.status.as_ref() != Some(&status) {
                out.push(StatusWrite {
                    kind,
                    name,
                    resource_version: observed.resource_version.clone(),
                    status,
                });
            }
        };
        for (name, class) in &self.classes {
            let old = old_conditions(class.observed.status.as_ref());
            let status = json!({
                "conditions": render(&class.conditions, &class.observed, &old, now),
            });
            push(
                Kind::GatewayClass,
                ObjectName::new("", name.clone()),
                &class.observed,
                status,
            );
        }
        for (name, gateway) in &self.gateways {
            let observed = gateway.observed.status.as_ref();
            let old = old_conditions(observed);
            let old_listeners: BTreeMap<String, Vec<Value>> = observed
                .and_then(|s| s.get("listeners"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| {
                    let name = l.get("name")?.as_str()?.to_owned();
                    Some((name, old_conditions(Some(l))))
                })
                .collect();
            let listeners: Vec<Value> = gateway
                .listeners
                .iter()
                .map(|l| {
                    let old = old_listeners.get(&l.name).cloned().unwrap_or_default();
                    json!({
                        "name": l.name,
                        "supportedKinds": l.supported_kinds.iter()
                            .map(|k| json!({"group": GROUP, "kind": k}))
                            .collect::<Vec<_>>(),
                        "attachedRoutes": l.attached_routes,
                        "conditions": render(&l.conditions, &gateway.observed, &old, now),
                    })
                })
                .collect();
            let mut status = json!({
                "conditions": render(&gateway.conditions, &gateway.observed, &old, now),
                "listeners": listeners,
            });
            if !gateway.addresses.is_empty() {
                status["addresses"] = gateway
                    .addresses
                    .iter()
                    .map(|a| {
                        let type_ = if a.parse::<std::net::IpAddr>().is_ok() {
                            "IPAddress"
                        } else {
                            "Hostname"
                        };
                        json!({"type": type_, "value": a})
                    })
                    .collect();
            }
            push(Kind::Gateway, name.clone(), &gateway.observed, status);
        }
        for ((kind, name), route) in &self.routes {
            let observed_parents: Vec<Value> = route
                .observed
                .status
                .as_ref()
                .and_then(|s| s.get("parents"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            // Other controllers' entries stay as they are, first.
            let mut parents: Vec<Value> = observed_parents
                .iter()
                .filter(|p| p.get("controllerName").and_then(Value::as_str) != Some(controller))
                .cloned()
                .collect();
            for parent in &route.parents {
                let parent_ref =
                    serde_json::to_value(&parent.parent_ref).expect("a parentRef serializes");
                let old = observed_parents
                    .iter()
                    .find(|p| {
                        p.get("controllerName").and_then(Value::as_str) == Some(controller)
                            && p.get("parentRef") == Some(&parent_ref)
                    })
                    .map(|p| old_conditions(Some(p)))
                    .unwrap_or_default();
                parents.push(json!({
                    "parentRef": parent_ref,
                    "controllerName": controller,
                    "conditions": render(&parent.conditions, &route.observed, &old, now),
                }));
            }
            push(
                *kind,
                name.clone(),
                &route.observed,
                json!({ "parents": parents }),
            );
        }
        out
    }
}

/// The `conditions` of a status object (or listener, or parent entry), as read.
fn old_conditions(status: Option<&Value>) -> Vec<Value> {
    status
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Conditions as the API keeps them; `lastTransitionTime` is the observed one while the
/// condition's status stays the same.
fn render(conditions: &[Condition], observed: &Observed, old: &[Value], now: &str) -> Vec<Value> {
    conditions
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = old
                .iter()
                .find(|o| {
                    o.get("type").and_then(Value::as_str) == Some(c.type_)
                        && o.get("status").and_then(Value::as_str) == Some(status)
                })
                .and_then(|o| o.get("lastTransitionTime"))
                .and_then(Value::as_str)
                .unwrap_or(now);
            let mut value = json!({
                "type": c.type_,
                "status": status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": since,
            });
            if let Some(generation) = observed.generation {
                value["observedGeneration"] = json!(generation);
            }
            value
        })
        .collect()
}

#[cfg(test)]
mod tests;
