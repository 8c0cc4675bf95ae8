//! Gateway API routes into the table: the TCP and UDP listeners of the Gateways whose
//! GatewayClass names dermaga's controller, each served by the oldest TCPRoute or UDPRoute
//! attached to it, with that route's weighted backendRefs.
//!
//! Rules (the Gateway API's, where it has one):
//! - a Gateway is served when its class's `controllerName` is [`IndexSettings::gateway_controller`];
//!   Gateways are taken oldest first (creation time, then namespace/name), so that of two
//!   listeners on one port the older Gateway's wins; a port the port maps already serve stays
//!   theirs. The loser is reported `Conflicted`;
//! - listeners of protocol TCP and UDP are served; any other protocol is reported (TLS
//!   passthrough is not served yet);
//! - a parentRef names a Gateway (namespace default: the route's), and a listener by
//!   `sectionName`, by `port`, or (neither) every listener of the route's protocol;
//!   `allowedRoutes.namespaces.from` `Same` (the default) or `All` (`Selector` is reported, not
//!   served yet), and `allowedRoutes.kinds` when set;
//! - when several routes attach to one listener the oldest wins; the others are reported;
//! - a backendRef is a Service (group `""`, kind `Service`) with a port, weight default 1; one
//!   in another namespace needs a ReferenceGrant there: without one, or of another kind, its
//!   share of the connections is refused (`RefNotPermitted`, `InvalidKind`).
//!
//! [`IndexSettings::gateway_controller`]: crate::control::index::IndexSettings::gateway_controller

use std::collections::{BTreeMap, BTreeSet};

use crate::control::configmap::{
    MAX_WEIGHT, PortOptions, ProxyFlags, RouteRef, RouteSpec, WeightedBackend,
};
use crate::control::gateway_api::{GROUP, L4Route, Listener};
use crate::control::index::{Index, Kind, Object};
use crate::control::table::ConfigProblem;
use crate::names::{ListenPort, ObjectName, Protocol, RouteKey, ServicePortRef};

/// What the Gateway API objects ask for: routes, and what is not served as written.
#[derive(Default)]
pub(super) struct GatewayRoutes {
    /// One spec per listener port served (its backends in `options.backends`), with the
    /// route that won the listener (none: the port refuses).
    pub routes: Vec<(RouteKey, RouteSpec, Option<RouteName>)>,
    /// Conflicts, routes that cannot attach, references that may not be followed.
    pub problems: Vec<ConfigProblem>,
}

/// A route by kind and name.
pub(super) type RouteName = (Kind, ObjectName);

/// A served listener: its Gateway, its own name, and the route that won it.
struct Served<'a> {
    gateway: ObjectName,
    listener: &'a Listener,
    key: RouteKey,
    route: Option<(ObjectName, &'a L4Route)>,
}

fn problem(
    kind: Kind,
    object: &ObjectName,
    reason: &'static str,
    message: String,
) -> ConfigProblem {
    ConfigProblem::GatewayApi {
        kind: kind.as_str(),
        object: object.clone(),
        reason,
        message,
    }
}

/// Oldest first, then by namespace/name: the order that decides conflicts.
fn by_age<'a>(objects: impl Iterator<Item = &'a Object>) -> Vec<&'a Object> {
    let mut objects: Vec<&Object> = objects.collect();
    objects.sort_by_key(|o| {
        (
            o.metadata().creation_timestamp.clone().map(|t| t.0),
            o.name(),
        )
    });
    objects
}

/// The Gateway API routes, given the ports the port maps already serve.
pub(super) fn gateway_routes(index: &Index, taken: &BTreeSet<RouteKey>) -> GatewayRoutes {
    let mut out = GatewayRoutes::default();
    let classes: BTreeSet<String> = index
        .gateway_api(Kind::GatewayClass)
        .filter_map(|o| match o {
            Object::GatewayClass(c)
                if c.spec.controller_name == index.settings.gateway_controller =>
            {
                c.metadata.name.clone()
            }
            _ => None,
        })
        .collect();
    let mut claimed: BTreeMap<RouteKey, String> = taken
        .iter()
        .map(|k| (*k, "a port map".to_owned()))
        .collect();
    let mut served: Vec<Served> = Vec::new();
    for object in by_age(index.gateway_api(Kind::Gateway)) {
        let Object::Gateway(gateway) = object else {
            continue;
        };
        if !classes.contains(&gateway.spec.gateway_class_name) {
            continue;
        }
        let name = object.name();
        for listener in &gateway.spec.listeners {
            let protocol = match listener.protocol.as_str() {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                other => {
                    out.problems.push(problem(
                        Kind::Gateway,
                        &name,
                        "UnsupportedProtocol",
                        format!("listener {:?}: protocol {other} is not served by dermaga (TCP and UDP are)", listener.name),
                    ));
                    continue;
                }
            };
            let Some(port) = u16::try_from(listener.port).ok().and_then(ListenPort::new) else {
                out.problems.push(problem(
                    Kind::Gateway,
                    &name,
                    "PortUnavailable",
                    format!(
                        "listener {:?}: port {} is not a port",
                        listener.name, listener.port
                    ),
                ));
                continue;
            };
            let key = RouteKey { port, protocol };
            if index.settings.reserved.reason(port.get()).is_some() {
                out.problems.push(problem(
                    Kind::Gateway,
                    &name,
                    "PortUnavailable",
                    format!(
                        "listener {:?}: port {port} is reserved by dermaga itself",
                        listener.name
                    ),
                ));
                continue;
            }
            if let Some(holder) = claimed.get(&key) {
                out.problems.push(problem(
                    Kind::Gateway,
                    &name,
                    "Conflicted",
                    format!(
                        "listener {:?}: port {key} is already served by {holder}",
                        listener.name
                    ),
                ));
                continue;
            }
            claimed.insert(key, format!("Gateway {name} listener {:?}", listener.name));
            served.push(Served {
                gateway: name.clone(),
                listener,
                key,
                route: None,
            });
        }
    }

    for (kind, protocol) in [
        (Kind::TcpRoute, Protocol::Tcp),
        (Kind::UdpRoute, Protocol::Udp),
    ] {
        for object in by_age(index.gateway_api(kind)) {
            let (Object::TcpRoute(route) | Object::UdpRoute(route)) = object else {
                continue;
            };
            let name = object.name();
            let mut attached = 0;
            let mut refusals = Vec::new();
            for parent in &route.spec.parent_refs {
                if parent.group.as_deref().is_some_and(|g| g != GROUP)
                    || parent.kind.as_deref().is_some_and(|k| k != "Gateway")
                {
                    continue; // another kind of parent: not ours to judge
                }
                let gateway = ObjectName::new(
                    parent
                        .namespace
                        .clone()
                        .unwrap_or_else(|| name.namespace.clone()),
                    parent.name.clone(),
                );
                for s in served.iter_mut().filter(|s| s.gateway == gateway) {
                    let matches = s.key.protocol == protocol
                        && parent
                            .section_name
                            .as_ref()
                            .is_none_or(|n| *n == s.listener.name)
                        && parent.port.is_none_or(|p| p == s.listener.port);
                    if !matches {
                        continue;
                    }
                    if let Some(why) = not_allowed(s, &name, kind) {
                        refusals.push(why);
                        continue;
                    }
                    match &s.route {
                        Some((winner, _)) => refusals.push(format!(
                            "listener {:?} of Gateway {} already has {} {winner} (the oldest route wins)",
                            s.listener.name,
                            s.gateway,
                            kind.as_str()
                        )),
                        None => {
                            s.route = Some((name.clone(), route));
                            attached += 1;
                        }
                    }
                }
            }
            if attached == 0 {
                let message = if refusals.is_empty() {
                    "no parentRef names a listener of a Gateway dermaga serves with this route's protocol".to_owned()
                } else {
                    refusals.join("; ")
                };
                let reason = if refusals.is_empty() {
                    "NoMatchingParent"
                } else {
                    "NotAllowedByListeners"
                };
                out.problems.push(problem(kind, &name, reason, message));
            } else {
                for refusal in refusals {
                    out.problems
                        .push(problem(kind, &name, "NotAllowedByListeners", refusal));
                }
            }
        }
    }

    for s in served {
        let kind = match s.key.protocol {
            Protocol::Tcp => Kind::TcpRoute,
            Protocol::Udp => Kind::UdpRoute,
        };
        let (backends, origin) = match s.route {
            Some((route_name, route)) => (
                backends(index, kind, &route_name, route, &mut out.problems),
                Some((kind, route_name)),
            ),
            None => (Vec::new(), None),
        };
        let first = backends
            .first()
            .map(|b| (b.service.clone(), b.service_port.clone()));
        let (service, service_port) =
            first.unwrap_or_else(|| (s.gateway.clone(), ServicePortRef::Number(s.key.port.get())));
        out.routes.push((
            s.key,
            RouteSpec {
                service,
                service_port,
                proxy: ProxyFlags::default(),
                options: PortOptions {
                    backends: Some(backends),
                    ..PortOptions::default()
                },
                route: origin.as_ref().map(|(kind, name)| RouteRef {
                    kind: kind.as_str(),
                    name: name.clone(),
                }),
            },
            origin,
        ));
    }
    out
}

/// Why a listener does not take routes of `kind` from `route`'s namespace, if it does not.
fn not_allowed(s: &Served, route: &ObjectName, kind: Kind) -> Option<String> {
    let allowed = s.listener.allowed_routes.as_ref();
    let from = allowed
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_deref())
        .unwrap_or("Same");
    let namespace_ok = match from {
        "All" => true,
        "Same" => route.namespace == s.gateway.namespace,
        other => {
            return Some(format!(
                "listener {:?} of Gateway {} allows routes from namespaces {other:?}, which dermaga does not serve yet (Same and All)",
                s.listener.name, s.gateway
            ));
        }
    };
    if !namespace_ok {
        return Some(format!(
            "listener {:?} of Gateway {} allows routes from its own namespace only",
            s.listener.name, s.gateway
        ));
    }
    if let Some(kinds) = allowed.and_then(|a| a.kinds.as_ref())
        && !kinds
            .iter()
            .any(|k| k.kind == kind.as_str() && k.group.as_deref().is_none_or(|g| g == GROUP))
    {
        return Some(format!(
            "listener {:?} of Gateway {} does not allow kind {}",
            s.listener.name,
            s.gateway,
            kind.as_str()
        ));
    }
    None
}

/// The route's backendRefs as weighted backends; a reference that may not be followed stays,
/// marked invalid (its share is refused), and is reported.
fn backends(
    index: &Index,
    kind: Kind,
    route_name: &ObjectName,
    route: &L4Route,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<WeightedBackend> {
    let mut out = Vec::new();
    for backend in route.spec.rules.iter().flat_map(|r| &r.backend_refs) {
        let namespace = backend
            .namespace
            .clone()
            .unwrap_or_else(|| route_name.namespace.clone());
        let service = ObjectName::new(namespace, backend.name.clone());
        let group = backend.group.as_deref().unwrap_or("");
        let backend_kind = backend.kind.as_deref().unwrap_or("Service");
        let port = backend
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0);
        let mut invalid = None;
        if !group.is_empty() || backend_kind != "Service" {
            invalid = Some((
                "InvalidKind",
                format!("backendRef {service}: kind {group}/{backend_kind} is not a Service"),
            ));
        } else if port.is_none() {
            invalid = Some((
                "UnsupportedValue",
                format!("backendRef {service}: a Service backendRef needs a port"),
            ));
        } else if service.namespace != route_name.namespace
            && !granted(index, kind, route_name, &service)
        {
            invalid = Some((
                "RefNotPermitted",
                format!(
                    "backendRef {service}: no ReferenceGrant in namespace {} lets {} of namespace {} refer to it",
                    service.namespace,
                    kind.as_str(),
                    route_name.namespace
                ),
            ));
        }
        if let Some((reason, message)) = &invalid {
            problems.push(problem(kind, route_name, reason, message.clone()));
        }
        out.push(WeightedBackend {
            service,
            service_port: ServicePortRef::Number(port.unwrap_or(0)),
            weight: backend
                .weight
                .map_or(1, |w| w.clamp(0, MAX_WEIGHT as i32) as u32),
            invalid: invalid.map(|(_, message)| message),
        });
    }
    out
}

/// Whether a ReferenceGrant in the Service's namespace lets routes of `kind` in the route's
/// namespace refer to it.
fn granted(index: &Index, kind: Kind, route: &ObjectName, service: &ObjectName) -> bool {
    index.gateway_api(Kind::ReferenceGrant).any(|o| {
        let Object::ReferenceGrant(grant) = o else {
            return false;
        };
        o.name().namespace == service.namespace
            && grant.spec.from.iter().any(|f| {
                f.group == GROUP && f.kind == kind.as_str() && f.namespace == route.namespace
            })
            && grant.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name.as_ref().is_none_or(|n| *n == service.name)
            })
    })
}

#[cfg(test)]
mod tests;
