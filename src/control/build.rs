//! `build()`: from the [`Index`] to an immutable [`RouteTable`]. Pure: no I/O, no clock.
//!
//! Rules (see `docs/configuration.md`):
//! - the Service port is found by number (`spec.ports[].port`) or by name, with the map's protocol;
//! - the endpoint port is found per EndpointSlice by that Service port's name, so pods behind one
//!   Service may listen on different numbers;
//! - `IPv4` and `IPv6` slices are used, `FQDN` slices are skipped; only an endpoint's first
//!   address counts (as in kube-proxy);
//! - ready endpoints take new connections; when none is ready, serving-and-terminating ones do;
//!   when there are none, the route exists but refuses;
//! - a port with the `backends` option resolves each of its Service ports the same way, and
//!   a route's problem names every backend that does not resolve;
//! - an entry that is invalid now keeps the previous table's route for its port until fixed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::configmap::{RangeTarget, RouteSpec, parse_port_map};
use super::index::Index;
use super::table::{
    ConfigProblem, Endpoint, ResolvedBackend, Route, RouteTable, SniRoute, UnresolvedReason,
};
use crate::names::{ObjectName, Protocol, RouteKey, ServicePortRef};

/// Builds the table. `previous` is the table in force, used to keep the last good route of a
/// port whose entry has become invalid.
pub fn build(index: &Index, previous: Option<&RouteTable>) -> RouteTable {
    let mut routes = Vec::new();
    let mut problems = Vec::new();
    for (protocol, map_name) in &index.settings.port_maps {
        let Some(cm) = index.config_map(map_name) else {
            problems.push(ConfigProblem::MissingPortMap {
                configmap: map_name.clone(),
            });
            continue;
        };
        let empty = BTreeMap::new();
        let data = cm.data.as_ref().unwrap_or(&empty);
        let parsed = parse_port_map(map_name, data, *protocol, &index.settings.reserved);
        let mut push = |route: Route, reason: Option<UnresolvedReason>| {
            if let (Some(problem), Some(reason)) = (&route.problem, reason) {
                problems.push(ConfigProblem::Unresolved {
                    configmap: map_name.clone(),
                    reason,
                    key: route.key,
                    spec: route.spec.to_string(),
                    problem: problem.clone(),
                });
            }
            routes.push(route);
        };
        for (port, spec) in parsed.entries {
            let (route, reason) = resolve_route(
                index,
                RouteKey {
                    port,
                    protocol: *protocol,
                },
                spec,
            );
            push(route, reason);
        }
        let mut entry_problems = Vec::new();
        for error in parsed.errors {
            let kept = error.port.and_then(|port| {
                let key = RouteKey {
                    port,
                    protocol: *protocol,
                };
                previous
                    .and_then(|t| t.get(&key))
                    .map(|old| (key, old.spec.clone()))
            });
            // A range entry's previous routes are kept for every port of its range.
            let kept = kept.into_iter().flat_map(|(key, spec)| {
                let ports: Vec<RouteKey> = match spec.range {
                    Some(span) => span.ports().map(|port| RouteKey { port, ..key }).collect(),
                    None => vec![key],
                };
                ports.into_iter().filter_map(move |key| {
                    previous
                        .and_then(|t| t.get(&key))
                        .filter(|old| old.spec.range == spec.range)
                        .map(|old| (key, old.spec.clone()))
                })
            });
            for (key, spec) in kept.collect::<Vec<_>>() {
                let (mut route, reason) = resolve_route(index, key, spec);
                route.kept_from_previous = true;
                push(route, reason);
            }
            entry_problems.push(ConfigProblem::Entry(error));
        }
        problems.extend(entry_problems);
    }
    let taken: BTreeSet<RouteKey> = routes.iter().map(|r: &Route| r.key).collect();
    let gateway = gateway::gateway_routes(index, &taken);
    problems.extend(gateway.problems);
    for gateway_route in gateway.routes {
        let key = gateway_route.key;
        let (mut route, _) = resolve_route(index, key, gateway_route.spec);
        route.sni = gateway_route
            .sni
            .into_iter()
            .map(|(hostnames, spec)| SniRoute {
                hostnames,
                route: Arc::new(resolve_route(index, key, spec).0),
            })
            .collect();
        routes.push(route);
    }
    let mut table = RouteTable::new(routes, problems);
    table.gateway_status = Arc::new(gateway.status);
    table
}

fn resolve_route(
    index: &Index,
    key: RouteKey,
    spec: RouteSpec,
) -> (Route, Option<UnresolvedReason>) {
    let mut first_reason = None;
    let resolved = spec
        .backends()
        .into_iter()
        .map(|backend| {
            let endpoints = match &backend.invalid {
                Some(why) => Err((UnresolvedReason::RefNotPermitted, why.clone())),
                None => {
                    resolve_endpoints(index, &backend.service, &backend.service_port, key.protocol)
                        .and_then(|endpoints| shift_for_range(&spec, key, endpoints))
                }
            }
            .map_err(|(reason, problem)| {
                first_reason.get_or_insert(reason);
                problem
            });
            ResolvedBackend {
                spec: backend,
                endpoints,
            }
        })
        .collect();
    (Route::split(key, spec, resolved), first_reason)
}

/// On a range entry with `range-target: each`, the endpoints of port `first + i` at their port
/// `+ i`; an endpoint port pushed past 65535 is a problem of the route.
fn shift_for_range(
    spec: &RouteSpec,
    key: RouteKey,
    mut endpoints: Vec<Endpoint>,
) -> Result<Vec<Endpoint>, (UnresolvedReason, String)> {
    let Some(span) = spec.range else {
        return Ok(endpoints);
    };
    if spec.options.range_target == RangeTarget::One {
        return Ok(endpoints);
    }
    let offset = key.port.get() - span.first;
    for endpoint in &mut endpoints {
        let Some(port) = endpoint.addr.port().checked_add(offset) else {
            return Err((
                UnresolvedReason::ServicePortNotFound,
                format!(
                    "port {} of range {span} goes to endpoint port {} + {offset}, past 65535",
                    key.port,
                    endpoint.addr.port()
                ),
            ));
        };
        endpoint.addr.set_port(port);
    }
    Ok(endpoints)
}

/// The endpoints of one Service port, or why there are none to look for.
fn resolve_endpoints(
    index: &Index,
    name: &ObjectName,
    wanted: &ServicePortRef,
    protocol: Protocol,
) -> Result<Vec<Endpoint>, (UnresolvedReason, String)> {
    let service = index.service(name).ok_or_else(|| {
        (
            UnresolvedReason::ServiceNotFound,
            format!("Service {name} not found"),
        )
    })?;
    let spec_of_service = service.spec.as_ref();
    if spec_of_service.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        let target = spec_of_service
            .and_then(|s| s.external_name.as_deref())
            .unwrap_or("?");
        return Err((
            UnresolvedReason::ExternalNameService,
            format!(
                "Service {name} is of type ExternalName ({target}); dermaga forwards to EndpointSlice endpoints and cannot use it"
            ),
        ));
    }
    let service_port = find_service_port(service, wanted, protocol).ok_or_else(|| {
        (
            UnresolvedReason::ServicePortNotFound,
            format!(
                "Service {name} has no {protocol} port {} (it has: {})",
                match wanted {
                    ServicePortRef::Name(n) if n.is_empty() => "without a name".to_owned(),
                    other => other.to_string(),
                },
                describe_ports(service)
            ),
        )
    })?;
    let port_name = service_port.name.as_deref().unwrap_or("");
    let mut by_addr: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
    for slice in index.slices_of(name) {
        for endpoint in slice_endpoints(slice, port_name, protocol, name) {
            by_addr
                .entry(endpoint.addr)
                .and_modify(|seen| {
                    // The same address in two slices (during a slice migration): keep the better state.
                    if rank(&endpoint) > rank(seen) {
                        *seen = endpoint.clone();
                    }
                })
                .or_insert(endpoint);
        }
    }
    Ok(by_addr.into_values().collect())
}

fn rank(e: &Endpoint) -> u8 {
    match (e.ready, e.serving) {
        (true, _) => 2,
        (false, true) => 1,
        _ => 0,
    }
}

fn find_service_port<'a>(
    service: &'a Service,
    wanted: &ServicePortRef,
    protocol: Protocol,
) -> Option<&'a ServicePort> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    ports.iter().find(|p| {
        let proto_ok = p.protocol.as_deref().unwrap_or("TCP") == protocol.as_k8s();
        let id_ok = match wanted {
            ServicePortRef::Number(n) => p.port == i32::from(*n),
            ServicePortRef::Name(name) => p.name.as_deref().unwrap_or("") == name,
        };
        proto_ok && id_ok
    })
}

fn describe_ports(service: &Service) -> String {
    let ports: Vec<String> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let proto = p.protocol.as_deref().unwrap_or("TCP");
                    match &p.name {
                        Some(name) if !name.is_empty() => format!("{name} {}/{proto}", p.port),
                        _ => format!("{}/{proto}", p.port),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if ports.is_empty() {
        "no ports".into()
    } else {
        ports.join(", ")
    }
}

/// The endpoints of one slice for the Service port named `port_name`.
fn slice_endpoints<'a>(
    slice: &'a EndpointSlice,
    port_name: &'a str,
    protocol: Protocol,
    service: &'a ObjectName,
) -> impl Iterator<Item = Endpoint> + 'a {
    let slice_name = slice.metadata.name.as_deref().unwrap_or("");
    let usable_type = matches!(slice.address_type.as_str(), "IPv4" | "IPv6");
    if !usable_type {
        tracing::debug!(service = %service, slice = slice_name, address_type = %slice.address_type, "EndpointSlice address type not supported; skipped");
    }
    let port = slice.ports.as_ref().and_then(|ports| {
        ports.iter().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol.as_k8s()
        })
    });
    let port = port
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    let endpoints = if usable_type {
        port.map(|_| slice.endpoints.as_deref().unwrap_or(&[]).iter())
    } else {
        None
    };
    endpoints.into_iter().flatten().filter_map(move |ep| {
        let first = ep.addresses.first()?;
        let ip: IpAddr = match first.parse() {
            Ok(ip) => ip,
            Err(_) => {
                tracing::debug!(service = %service, slice = slice_name, address = %first, "endpoint address is not an IP; skipped");
                return None;
            }
        };
        let conditions = ep.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        let target = ep.target_ref.as_ref().map(|t| {
            let kind = t.kind.as_deref().unwrap_or("Pod").to_ascii_lowercase();
            let ns = t.namespace.as_deref().unwrap_or(&service.namespace);
            Arc::<str>::from(format!("{kind} {ns}/{}", t.name.as_deref().unwrap_or("?")))
        });
        Some(Endpoint {
            addr: SocketAddr::new(ip, port.expect("checked above")),
            ready,
            serving,
            terminating,
            target,
        })
    })
}

mod gateway;

#[cfg(test)]
mod tests;
