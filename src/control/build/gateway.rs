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
//!   `allowedRoutes.namespaces.from` `Same` (the default), `All`, or `Selector` (the labels of
//!   the route's Namespace), and `allowedRoutes.kinds` when set;
//! - when several routes attach to one listener, all are accepted and counted in its
//!   `attachedRoutes` (as upstream's `TCPRouteMultipleRoutesAttachment` requires) and the oldest
//!   carries the traffic; the others are reported (`RouteConflict`);
//! - a parentRef naming a listener this route's kind cannot use (another protocol, or one not
//!   served) is `NotAllowedByListeners`; one naming no listener is `NoMatchingParent`; a route
//!   gets a status entry for each parentRef to a Gateway of dermaga's classes;
//! - a backendRef is a Service (group `""`, kind `Service`) with a port, weight default 1; one
//!   in another namespace needs a ReferenceGrant there: without one, or of another kind, its
//!   share of the connections is refused (`RefNotPermitted`, `InvalidKind`).
//!
//! [`IndexSettings::gateway_controller`]: crate::control::index::IndexSettings::gateway_controller

use std::collections::{BTreeMap, BTreeSet};

use crate::control::configmap::{
    MAX_WEIGHT, PortOptions, ProxyFlags, RouteRef, RouteSpec, WeightedBackend,
};
use crate::control::gateway_api::{GROUP, L4Route, Listener, ParentReference};
use crate::control::gateway_status::{
    ClassStatus, Condition, GatewayApiStatus, GatewayStatus, ListenerStatus, Observed,
    ParentStatus, RouteStatus,
};
use crate::control::index::{Index, Kind, Object};
use crate::control::table::ConfigProblem;
use crate::names::{ListenPort, ObjectName, Protocol, ProxyVersion, RouteKey, ServicePortRef};

/// What the Gateway API objects ask for: routes, what is not served as written, and the
/// status to report.
#[derive(Default)]
pub(super) struct GatewayRoutes {
    /// One per listener port served.
    pub routes: Vec<GatewayRoute>,
    /// Conflicts, routes that cannot attach, references that may not be followed.
    pub problems: Vec<ConfigProblem>,
    /// The conditions of every object of dermaga's.
    pub status: GatewayApiStatus,
}

/// A route by kind and name.
pub(super) type RouteName = (Kind, ObjectName);

/// What one served listener port does.
pub(super) struct GatewayRoute {
    /// The port.
    pub key: RouteKey,
    /// Its backends in `options.backends`, from the route that won the listener (none: the
    /// port refuses); a TLS passthrough port's own spec has none.
    pub spec: RouteSpec,
    /// A TLS passthrough port: each attached TLSRoute's hostnames (lower case; empty: any)
    /// and spec, oldest route first.
    pub sni: Vec<(Vec<String>, RouteSpec)>,
}

/// Whether a route attached to a parent, or why not (reason, message).
type Verdict = Result<(), (&'static str, String)>;

/// A served listener: its Gateway, its own name, where its status is, the route kind it
/// takes, and the routes attached, oldest first (with their hostnames on a TLS listener).
struct Served<'a> {
    gateway: ObjectName,
    listener: &'a Listener,
    key: RouteKey,
    kind: Kind,
    /// Index of the listener in its Gateway's status.
    status: usize,
    routes: Vec<(ObjectName, Vec<String>)>,
    /// The load balancer sends a PROXY header first ([`DECODE_PROXY_ANNOTATION`]).
    decode_proxy: bool,
}

/// On a Gateway: the names of its TCP listeners (comma-separated, or `*` for all) whose clients
/// send a PROXY protocol header first (the load balancer in front), as a port map's first
/// `PROXY` flag. The Gateway API has no field for it.
pub const DECODE_PROXY_ANNOTATION: &str = "dermaga.io/proxy-protocol-listeners";

/// On a TCPRoute or TLSRoute: `v1` or `v2`, the PROXY protocol header sent to its backends
/// first, as a port map's second `PROXY` flag with `send-proxy-version`.
pub const BACKEND_PROXY_ANNOTATION: &str = "dermaga.io/backend-proxy-protocol";

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
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

fn observed(object: &Object, status: Option<&serde_json::Value>) -> Observed {
    let meta = object.metadata();
    Observed {
        generation: meta.generation,
        resource_version: meta.resource_version.clone(),
        status: status.cloned(),
    }
}

/// The listener protocol a route kind attaches to.
fn listener_protocol(kind: Kind) -> &'static str {
    match kind {
        Kind::UdpRoute => "UDP",
        Kind::TlsRoute => "TLS",
        _ => "TCP",
    }
}

/// The hostnames a TLSRoute takes on a listener of hostname `listener` (absent: any), lower
/// case; empty: every name. `None` when the two have no name in common.
fn tls_hostnames(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let route: Vec<String> = route.iter().map(|h| h.to_ascii_lowercase()).collect();
    let Some(listener) = listener.map(str::to_ascii_lowercase) else {
        return Some(route);
    };
    if route.is_empty() {
        return Some(vec![listener]);
    }
    // The narrower of the two names, when one includes the other.
    let names: Vec<String> = route
        .iter()
        .filter_map(|h| intersection(&listener, h))
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The names both hostnames take, as one hostname, if one includes the other.
fn intersection(a: &str, b: &str) -> Option<String> {
    use crate::control::gateway_api::hostname_matches;
    match (a.starts_with('*'), b.starts_with('*')) {
        (false, false) => (a == b).then(|| a.to_owned()),
        (true, false) => hostname_matches(a, b).then(|| b.to_owned()),
        (false, true) => hostname_matches(b, a).then(|| a.to_owned()),
        (true, true) if b.ends_with(&a[1..]) => Some(b.to_owned()),
        (true, true) if a.ends_with(&b[1..]) => Some(a.to_owned()),
        (true, true) => None,
    }
}

/// A listener's status with `Accepted`/`Programmed` false for `reason`.
/// `conflicted`: the port is another's (`Conflicted=True`, reason `PortConflict`).
fn refused_listener(
    listener: &Listener,
    reason: &'static str,
    conflicted: bool,
    message: &str,
) -> ListenerStatus {
    ListenerStatus {
        name: listener.name.clone(),
        supported_kinds: Vec::new(),
        attached_routes: 0,
        conditions: vec![
            Condition::no("Accepted", reason, message),
            Condition::no("Programmed", "Invalid", message),
            Condition::yes("ResolvedRefs", "ResolvedRefs", "no references to resolve"),
            if conflicted {
                Condition::yes("Conflicted", "PortConflict", message)
            } else {
                Condition::no("Conflicted", "NoConflicts", "no conflict")
            },
        ],
    }
}

/// The Gateway API routes, given the ports the port maps already serve.
pub(super) fn gateway_routes(index: &Index, taken: &BTreeSet<RouteKey>) -> GatewayRoutes {
    let mut out = GatewayRoutes::default();
    let mut classes: BTreeSet<String> = BTreeSet::new();
    for object in index.gateway_api(Kind::GatewayClass) {
        let Object::GatewayClass(c) = object else {
            continue;
        };
        if c.spec.controller_name != index.settings.gateway_controller {
            continue;
        }
        let name = object.name().name;
        out.status.classes.insert(
            name.clone(),
            ClassStatus {
                observed: observed(object, c.status.as_ref()),
                conditions: vec![Condition::yes(
                    "Accepted",
                    "Accepted",
                    "served by dermaga: listeners of protocol TCP, UDP and TLS (passthrough)",
                )],
            },
        );
        classes.insert(name);
    }
    let mut claimed: BTreeMap<RouteKey, String> = taken
        .iter()
        .map(|k| (*k, "a port map".to_owned()))
        .collect();
    let mut served: Vec<Served> = Vec::new();
    let mut gateway_listeners: BTreeMap<ObjectName, &[Listener]> = BTreeMap::new();
    for object in by_age(index.gateway_api(Kind::Gateway)) {
        let Object::Gateway(gateway) = object else {
            continue;
        };
        if !classes.contains(&gateway.spec.gateway_class_name) {
            continue;
        }
        let name = object.name();
        gateway_listeners.insert(name.clone(), &gateway.spec.listeners);
        let decode_names: Vec<&str> = annotation(&gateway.metadata, DECODE_PROXY_ANNOTATION)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let decodes = |l: &Listener| decode_names.iter().any(|n| *n == "*" || *n == l.name);
        for n in decode_names.iter().filter(|n| **n != "*") {
            let Some(l) = gateway.spec.listeners.iter().find(|l| l.name == *n) else {
                out.problems.push(problem(
                    Kind::Gateway,
                    &name,
                    "UnsupportedValue",
                    format!("annotation {DECODE_PROXY_ANNOTATION}: no listener is named {n:?}"),
                ));
                continue;
            };
            if l.protocol != "TCP" {
                out.problems.push(problem(
                    Kind::Gateway,
                    &name,
                    "UnsupportedValue",
                    format!(
                        "annotation {DECODE_PROXY_ANNOTATION}: listener {n:?} is {}; PROXY headers are decoded on TCP listeners only",
                        l.protocol
                    ),
                ));
            }
        }
        let mut listeners = Vec::new();
        for listener in &gateway.spec.listeners {
            // `Conflicted`: the port is already served; the listener is `PortUnavailable`.
            let mut refuse = |reason: &'static str, message: String| {
                let conflicted = reason == "Conflicted";
                let accepted_reason = if conflicted {
                    "PortUnavailable"
                } else {
                    reason
                };
                listeners.push(refused_listener(
                    listener,
                    accepted_reason,
                    conflicted,
                    &message,
                ));
                out.problems
                    .push(problem(Kind::Gateway, &name, reason, message));
            };
            let (protocol, kind) = match listener.protocol.as_str() {
                "TCP" => (Protocol::Tcp, Kind::TcpRoute),
                "UDP" => (Protocol::Udp, Kind::UdpRoute),
                "TLS" => {
                    let mode = listener.tls.as_ref().and_then(|t| t.mode.as_deref());
                    if mode != Some("Passthrough") {
                        refuse(
                            "UnsupportedValue",
                            format!(
                                "listener {:?}: TLS mode {} is not served by dermaga (Passthrough is: dermaga holds no certificate)",
                                listener.name,
                                mode.unwrap_or("Terminate (the default)")
                            ),
                        );
                        continue;
                    }
                    (Protocol::Tcp, Kind::TlsRoute)
                }
                other => {
                    refuse(
                        "UnsupportedProtocol",
                        format!(
                            "listener {:?}: protocol {other} is not served by dermaga (TCP, UDP and TLS passthrough are)",
                            listener.name
                        ),
                    );
                    continue;
                }
            };
            let Some(port) = u16::try_from(listener.port).ok().and_then(ListenPort::new) else {
                refuse(
                    "PortUnavailable",
                    format!(
                        "listener {:?}: port {} is not a port",
                        listener.name, listener.port
                    ),
                );
                continue;
            };
            let key = RouteKey { port, protocol };
            if index.settings.reserved.reason(port.get()).is_some() {
                refuse(
                    "PortUnavailable",
                    format!(
                        "listener {:?}: port {port} is reserved by dermaga itself",
                        listener.name
                    ),
                );
                continue;
            }
            if let Some(holder) = claimed.get(&key) {
                let message = format!(
                    "listener {:?}: port {key} is already served by {holder}",
                    listener.name
                );
                refuse("Conflicted", message);
                continue;
            }
            claimed.insert(key, format!("Gateway {name} listener {:?}", listener.name));
            let (supported_kinds, resolved) = match listener
                .allowed_routes
                .as_ref()
                .and_then(|a| a.kinds.as_ref())
            {
                None => (vec![kind.as_str()], None),
                Some(kinds) => {
                    let ours = |k: &&crate::control::gateway_api::GroupKind| {
                        k.kind == kind.as_str() && k.group.as_deref().is_none_or(|g| g == GROUP)
                    };
                    let supported = if kinds.iter().any(|k| ours(&k)) {
                        vec![kind.as_str()]
                    } else {
                        Vec::new()
                    };
                    let other: Vec<&str> = kinds
                        .iter()
                        .filter(|k| !ours(k))
                        .map(|k| k.kind.as_str())
                        .collect();
                    let resolved = (!other.is_empty()).then(|| {
                        format!(
                            "route kinds {other:?} are not served on a {} listener (only {})",
                            listener.protocol,
                            kind.as_str()
                        )
                    });
                    (supported, resolved)
                }
            };
            listeners.push(ListenerStatus {
                name: listener.name.clone(),
                supported_kinds,
                attached_routes: 0,
                conditions: vec![
                    Condition::yes("Accepted", "Accepted", format!("served on port {key}")),
                    Condition::yes("Programmed", "Programmed", format!("served on port {key}")),
                    match resolved {
                        None => Condition::yes(
                            "ResolvedRefs",
                            "ResolvedRefs",
                            "all references resolved",
                        ),
                        Some(m) => Condition::no("ResolvedRefs", "InvalidRouteKinds", m),
                    },
                    Condition::no("Conflicted", "NoConflicts", "no conflict"),
                ],
            });
            served.push(Served {
                gateway: name.clone(),
                listener,
                key,
                kind,
                status: listeners.len() - 1,
                routes: Vec::new(),
                decode_proxy: kind == Kind::TcpRoute && decodes(listener),
            });
        }
        let programmed = listeners.iter().filter(|l| l.conditions[1].status).count();
        let invalid = listeners.len() - programmed;
        // Accepted while at least one listener is (GatewayListenerUnsupportedProtocol).
        let accepted = if invalid == 0 {
            Condition::yes("Accepted", "Accepted", "accepted by dermaga")
        } else {
            let message = format!(
                "{invalid} of {} listeners are not served (see their conditions)",
                listeners.len()
            );
            if programmed > 0 {
                Condition::yes("Accepted", "ListenersNotValid", message)
            } else {
                Condition::no("Accepted", "ListenersNotValid", message)
            }
        };
        let programmed = if programmed > 0 {
            Condition::yes(
                "Programmed",
                "Programmed",
                format!("{programmed} listeners served"),
            )
        } else {
            Condition::no("Programmed", "Invalid", "no listener is served")
        };
        let addresses = index
            .settings
            .publish_service
            .as_ref()
            .and_then(|s| index.service(s))
            .map(load_balancer_addresses)
            .unwrap_or_default();
        out.status.gateways.insert(
            name.clone(),
            GatewayStatus {
                observed: observed(object, gateway.status.as_ref()),
                conditions: vec![accepted, programmed],
                listeners,
                addresses,
            },
        );
    }

    let mut route_backends: BTreeMap<RouteName, Vec<WeightedBackend>> = BTreeMap::new();
    let mut route_proxy: BTreeMap<RouteName, ProxyVersion> = BTreeMap::new();
    let mut route_annotated: BTreeMap<RouteName, PortOptions> = BTreeMap::new();
    for (kind, protocol) in [
        (Kind::TcpRoute, Protocol::Tcp),
        (Kind::UdpRoute, Protocol::Udp),
        (Kind::TlsRoute, Protocol::Tcp),
    ] {
        for object in by_age(index.gateway_api(kind)) {
            let (Object::TcpRoute(route) | Object::UdpRoute(route) | Object::TlsRoute(route)) =
                object
            else {
                continue;
            };
            let name = object.name();
            let mut attached_anywhere = 0;
            let mut refusals = Vec::new();
            let mut parents: Vec<(ParentReference, Verdict)> = Vec::new();
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
                let Some(gateway_status) = out.status.gateways.get_mut(&gateway) else {
                    continue; // not a Gateway of ours: its controller reports
                };
                let mut attached = 0;
                let mut refused = Vec::new();
                let mut no_hostname = Vec::new();
                for s in served.iter_mut().filter(|s| s.gateway == gateway) {
                    let matches = s.kind == kind
                        && parent
                            .section_name
                            .as_ref()
                            .is_none_or(|n| *n == s.listener.name)
                        && parent.port.is_none_or(|p| p == s.listener.port);
                    if !matches {
                        continue;
                    }
                    if let Some(why) = not_allowed(index, s, &name, kind) {
                        refused.push(why);
                        continue;
                    }
                    // A TLS listener: the route's names that the listener's hostname admits.
                    let hostnames = match kind {
                        Kind::TlsRoute => {
                            match tls_hostnames(
                                s.listener.hostname.as_deref(),
                                &route.spec.hostnames,
                            ) {
                                Some(names) => names,
                                None => {
                                    no_hostname.push(format!(
                                        "listener {:?} of Gateway {} takes hostname {}, which none of the route's hostnames {:?} is or includes",
                                        s.listener.name,
                                        s.gateway,
                                        s.listener.hostname.as_deref().unwrap_or(""),
                                        route.spec.hostnames
                                    ));
                                    continue;
                                }
                            }
                        }
                        _ => Vec::new(),
                    };
                    // Attached and counted either way (the API's conflict rule, as its
                    // conformance tests check it); on a TCP or UDP listener only the oldest
                    // route carries traffic, on a TLS listener each takes its hostnames.
                    gateway_status.listeners[s.status].attached_routes += 1;
                    attached += 1;
                    match s.routes.first() {
                        Some((winner, _)) if kind != Kind::TlsRoute => out.problems.push(problem(
                            kind,
                            &name,
                            "RouteConflict",
                            format!(
                                "listener {:?} of Gateway {} is served by the older {} {winner}: this route is accepted but carries no traffic while that one is attached (the oldest route wins)",
                                s.listener.name,
                                s.gateway,
                                kind.as_str()
                            ),
                        )),
                        _ => s.routes.push((name.clone(), hostnames)),
                    }
                }
                if attached == 0 && refused.is_empty() && no_hostname.is_empty() {
                    // A listener the parentRef names, but not one this route can use.
                    let listeners = gateway_listeners.get(&gateway).copied().unwrap_or_default();
                    for l in listeners.iter().filter(|l| {
                        parent.section_name.as_ref().is_none_or(|n| *n == l.name)
                            && parent.port.is_none_or(|p| p == l.port)
                    }) {
                        refused.push(if l.protocol == listener_protocol(kind) {
                            format!(
                                "listener {:?} of Gateway {gateway} is not served (see the Gateway's status)",
                                l.name
                            )
                        } else {
                            format!(
                                "listener {:?} of Gateway {gateway} has protocol {}; a {} attaches to {} listeners",
                                l.name,
                                l.protocol,
                                kind.as_str(),
                                listener_protocol(kind)
                            )
                        });
                    }
                }
                let verdict = if attached > 0 {
                    Ok(())
                } else if !no_hostname.is_empty() && refused.is_empty() {
                    Err(("NoMatchingListenerHostname", no_hostname.join("; ")))
                } else if refused.is_empty() {
                    Err((
                        "NoMatchingParent",
                        format!(
                            "Gateway {gateway} has no served {} listener matching this parentRef",
                            listener_protocol(kind)
                        ),
                    ))
                } else {
                    Err(("NotAllowedByListeners", refused.join("; ")))
                };
                attached_anywhere += attached;
                refusals.extend(refused);
                parents.push((parent.clone(), verdict));
            }
            if attached_anywhere == 0 {
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
            let (mut backends, mut unresolved) = backends(index, kind, &name, route, protocol);
            let (annotated, bad) = route_options::route_options(&route.metadata, kind);
            if !bad.is_empty() {
                // Refused until fixed, as a port map's entry with a bad option is not served.
                let why = format!(
                    "refused until its annotations are fixed: {}",
                    bad.join("; ")
                );
                for backend in &mut backends {
                    backend.invalid.get_or_insert_with(|| why.clone());
                }
            }
            // Reported with the backends' problems: ResolvedRefs False, UnsupportedValue.
            unresolved.extend(bad.into_iter().map(|m| ("UnsupportedValue", m)));
            route_annotated.insert((kind, name.clone()), annotated);
            match annotation(&route.metadata, BACKEND_PROXY_ANNOTATION) {
                None => {}
                Some(v) if kind != Kind::UdpRoute && v.eq_ignore_ascii_case("v1") => {
                    route_proxy.insert((kind, name.clone()), ProxyVersion::V1);
                }
                Some(v) if kind != Kind::UdpRoute && v.eq_ignore_ascii_case("v2") => {
                    route_proxy.insert((kind, name.clone()), ProxyVersion::V2);
                }
                Some(v) => out.problems.push(problem(
                    kind,
                    &name,
                    "UnsupportedValue",
                    if kind == Kind::UdpRoute {
                        format!("annotation {BACKEND_PROXY_ANNOTATION}: PROXY headers are sent on TCP connections only, not on a UDPRoute")
                    } else {
                        format!("annotation {BACKEND_PROXY_ANNOTATION}: {v:?} is not v1 or v2; no header is sent")
                    },
                )),
            }
            for (reason, message) in &unresolved {
                out.problems
                    .push(problem(kind, &name, reason, message.clone()));
            }
            if !parents.is_empty() {
                let resolved = match unresolved.first() {
                    None => {
                        Condition::yes("ResolvedRefs", "ResolvedRefs", "all backendRefs resolved")
                    }
                    Some((reason, _)) => Condition::no(
                        "ResolvedRefs",
                        reason,
                        unresolved
                            .iter()
                            .map(|(_, m)| m.as_str())
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                };
                let parents = parents
                    .into_iter()
                    .map(|(parent_ref, verdict)| ParentStatus {
                        parent_ref,
                        conditions: vec![
                            match verdict {
                                Ok(()) => Condition::yes("Accepted", "Accepted", "attached"),
                                Err((reason, message)) => {
                                    Condition::no("Accepted", reason, message)
                                }
                            },
                            resolved.clone(),
                        ],
                    })
                    .collect();
                out.status.routes.insert(
                    (kind, name.clone()),
                    RouteStatus {
                        observed: observed(object, route.status.as_ref()),
                        parents,
                    },
                );
            }
            route_backends.insert((kind, name), backends);
        }
    }

    for s in served {
        let spec = |origin: Option<&ObjectName>| {
            let backends = origin
                .and_then(|n| route_backends.get(&(s.kind, n.clone())))
                .cloned()
                .unwrap_or_default();
            let first = backends
                .first()
                .map(|b| (b.service.clone(), b.service_port.clone()));
            let (service, service_port) = first
                .unwrap_or_else(|| (s.gateway.clone(), ServicePortRef::Number(s.key.port.get())));
            let send = origin.and_then(|n| route_proxy.get(&(s.kind, n.clone())));
            let annotated = origin
                .and_then(|n| route_annotated.get(&(s.kind, n.clone())))
                .cloned()
                .unwrap_or_default();
            RouteSpec {
                service,
                service_port,
                proxy: ProxyFlags {
                    // A TLS port's routes are chosen after the ClientHello: no header there.
                    decode: s.decode_proxy,
                    encode: send.is_some(),
                },
                options: PortOptions {
                    backends: Some(backends),
                    send_proxy_version: send.copied().unwrap_or_default(),
                    ..annotated
                },
                route: origin.map(|name| RouteRef {
                    kind: s.kind.as_str(),
                    name: name.clone(),
                }),
                range: None,
            }
        };
        let route = if s.kind == Kind::TlsRoute {
            GatewayRoute {
                key: s.key,
                spec: spec(None),
                sni: s
                    .routes
                    .iter()
                    .map(|(name, hostnames)| (hostnames.clone(), spec(Some(name))))
                    .collect(),
            }
        } else {
            GatewayRoute {
                key: s.key,
                spec: spec(s.routes.first().map(|(name, _)| name)),
                sni: Vec::new(),
            }
        };
        out.routes.push(route);
    }
    out
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// The IPs and hostnames of a LoadBalancer Service's `status.loadBalancer.ingress`.
fn load_balancer_addresses(service: &k8s_openapi::api::core::v1::Service) -> Vec<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect()
}

/// Why a listener does not take routes of `kind` from `route`'s namespace, if it does not.
fn not_allowed(index: &Index, s: &Served, route: &ObjectName, kind: Kind) -> Option<String> {
    let allowed = s.listener.allowed_routes.as_ref();
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    let from = namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same");
    match from {
        "All" => {}
        "Same" if route.namespace == s.gateway.namespace => {}
        "Same" => {
            return Some(format!(
                "listener {:?} of Gateway {} allows routes from its own namespace only",
                s.listener.name, s.gateway
            ));
        }
        "Selector" => {
            let empty = BTreeMap::new();
            let labels = index.namespace_labels(&route.namespace).unwrap_or(&empty);
            let selector = namespaces.and_then(|n| n.selector.as_ref());
            match selector.map(|sel| selects(sel, labels)) {
                Some(Ok(true)) => {}
                Some(Ok(false)) => {
                    return Some(format!(
                        "listener {:?} of Gateway {} allows routes from the namespaces its selector picks, and the labels of namespace {} do not match it",
                        s.listener.name, s.gateway, route.namespace
                    ));
                }
                Some(Err(e)) => {
                    return Some(format!(
                        "listener {:?} of Gateway {}: {e}",
                        s.listener.name, s.gateway
                    ));
                }
                None => {
                    return Some(format!(
                        "listener {:?} of Gateway {} allows routes from namespaces \"Selector\" but has no selector",
                        s.listener.name, s.gateway
                    ));
                }
            }
        }
        other => {
            return Some(format!(
                "listener {:?} of Gateway {} allows routes from namespaces {other:?}, which is not Same, All or Selector",
                s.listener.name, s.gateway
            ));
        }
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

/// Whether a label selector picks an object with `labels` (Kubernetes' rules: every
/// `matchLabels` pair, and every `matchExpressions` term: `In`, `NotIn`, `Exists`,
/// `DoesNotExist`); an operator it does not know is an error.
fn selects(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let mut terms = true;
    for term in selector.match_expressions.iter().flatten() {
        let value = labels.get(&term.key);
        let values = term.values.as_deref().unwrap_or_default();
        terms &= match term.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(format!(
                    "label selector operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                ));
            }
        };
    }
    Ok(pairs && terms)
}

/// The route's backendRefs as weighted backends, and why each one that does not resolve does
/// not (reason, message). One that may not be followed stays, marked invalid (its share is
/// refused); one whose Service or port does not exist stays too (build() finds it unresolved).
fn backends(
    index: &Index,
    kind: Kind,
    route_name: &ObjectName,
    route: &L4Route,
    protocol: Protocol,
) -> (Vec<WeightedBackend>, Vec<(&'static str, String)>) {
    let mut out = Vec::new();
    let mut unresolved = Vec::new();
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
        let port = port.unwrap_or(0);
        match &invalid {
            Some((reason, message)) => unresolved.push((*reason, message.clone())),
            None => {
                if let Some(message) = not_found(index, &service, port, protocol) {
                    unresolved.push(("BackendNotFound", message));
                }
            }
        }
        out.push(WeightedBackend {
            service,
            service_port: ServicePortRef::Number(port),
            weight: backend
                .weight
                .map_or(1, |w| w.clamp(0, MAX_WEIGHT as i32) as u32),
            invalid: invalid.map(|(_, message)| message),
        });
    }
    (out, unresolved)
}

/// Why a Service backendRef does not name an existing Service port, if it does not.
fn not_found(index: &Index, service: &ObjectName, port: u16, protocol: Protocol) -> Option<String> {
    let Some(svc) = index.service(service) else {
        return Some(format!("backendRef {service}: Service not found"));
    };
    let has_port = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .any(|p| {
            p.port == i32::from(port)
                && p.protocol.as_deref().unwrap_or("TCP") == protocol_name(protocol)
        });
    (!has_port).then(|| {
        format!(
            "backendRef {service}: Service has no {} port {port}",
            protocol_name(protocol)
        )
    })
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

mod route_options;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod conformance;
