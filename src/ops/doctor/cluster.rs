//! What `dermaga doctor` reads from the API server (list and get only), and the findings it
//! makes of it: the Service checks, the port maps judged as the gateway judges them, and the
//! gateway's metrics when given.

use std::collections::BTreeSet;

use anyhow::Context;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::findings::{Finding, Level, selected, service_findings};
use super::workloads::Owners;
use super::{Report, gateway_metrics};
use crate::cli::{DoctorArgs, RunArgs};
use crate::control::configmap::parse_port_map;
use crate::control::index::Object;
use crate::control::provider::kube::client as kube_client;
use crate::names::ObjectName;
use crate::ops::check;

/// Lists `K` in `namespace` (all namespaces with `None`), naming the call when it fails.
async fn list<K>(client: &Client, namespace: Option<&str>) -> anyhow::Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let where_ = namespace.map_or("in all namespaces".to_owned(), |ns| {
        format!("in namespace {ns}")
    });
    let list = api.list(&ListParams::default()).await.with_context(|| {
        format!(
            "cannot list {} {where_} (doctor reads Services, EndpointSlices, Pods, ReplicaSets, Jobs and the port-map ConfigMaps; deploy/components/doctor grants them read-only)",
            K::plural(&())
        )
    })?;
    Ok(list.items)
}

/// Everything of `K` in the namespaces (all with `None`).
async fn list_in<K>(client: &Client, namespaces: &Option<Vec<String>>) -> anyhow::Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespaces {
        None => list(client, None).await,
        Some(namespaces) => {
            let mut all = Vec::new();
            for ns in namespaces {
                all.extend(list(client, Some(ns)).await?);
            }
            Ok(all)
        }
    }
}

/// Reads and judges; the report, most severe findings first.
pub async fn examine(run: &RunArgs, args: &DoctorArgs) -> anyhow::Result<Report> {
    let client = kube_client::connect(run.kubeconfig.as_deref()).await?;
    let namespaces = if args.all_namespaces {
        None
    } else {
        Some(vec![
            args.namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned()),
        ])
    };
    let services: Vec<Service> = list_in(&client, &namespaces).await?;
    let pods: Vec<Pod> = list_in(&client, &namespaces).await?;
    let replica_sets: Vec<ReplicaSet> = list_in(&client, &namespaces).await?;
    let jobs: Vec<Job> = list_in(&client, &namespaces).await?;
    let owners = Owners::new(&replica_sets, &jobs);

    // The gateway's own Service sends to dermaga, which declares no data port and drains on
    // SIGTERM itself: not judged as a backend.
    let gateway = gateway_service(run, &run.tcp_services_configmap);
    // (By name, and by what it selects: a pod running the gateway, whatever the Service's name,
    // e.g. a Helm release's `<release>-dermaga`.)
    let runs_gateway = |pod: &Pod| {
        pod.spec.iter().flat_map(|s| &s.containers).any(|c| {
            c.args
                .iter()
                .flatten()
                .any(|a| a.starts_with("--tcp-services-configmap"))
        })
    };
    let backends: Vec<Service> = services
        .iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() != Some(gateway.namespace.as_str())
                || s.metadata.name.as_deref() != Some(gateway.name.as_str())
        })
        .filter(|s| !selected(s, &pods).into_iter().any(runs_gateway))
        .cloned()
        .collect();
    let mut findings = service_findings(&backends, &pods, &owners);
    findings.extend(port_map_findings(&client, run, &namespaces, &services).await?);
    if let Some(url) = &args.gateway_metrics {
        let page = gateway_metrics::fetch(url).await?;
        let failures: Vec<_> = gateway_metrics::parse(&page)
            .into_iter()
            .filter(|f| namespaces.as_ref().is_none_or(|n| n.contains(&f.service.0)))
            .collect();
        findings.extend(gateway_metrics::findings(
            &failures, &services, &pods, &owners,
        ));
    }
    findings.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then(a.check.cmp(b.check))
            .then(a.summary.cmp(&b.summary))
    });
    findings.dedup();
    Ok(Report {
        namespaces,
        findings,
    })
}

/// The port maps judged as the gateway judges them (what `dermaga check` reports, with the
/// cluster's Services and endpoints), entries with no ready endpoint, mapped ports missing on
/// the LoadBalancer Service, Services without a selector. Only maps whose namespace or whose
/// Services' namespaces are read are reported on (all with `--all-namespaces`).
async fn port_map_findings(
    client: &Client,
    run: &RunArgs,
    namespaces: &Option<Vec<String>>,
    scoped_services: &[Service],
) -> anyhow::Result<Vec<Finding>> {
    let mut settings = run.index_settings();
    let mut findings = Vec::new();
    let mut maps = Vec::new();
    // The maps are examined with their own namespace (or all).
    let in_scope = |ns: &str| {
        namespaces
            .as_ref()
            .is_none_or(|n| n.iter().any(|m| m == ns))
    };
    let tcp_map = settings.port_maps[0].1.clone();
    settings.port_maps.retain(|(_, n)| in_scope(&n.namespace));
    for (protocol, name) in settings
        .port_maps
        .iter()
        .filter(|(_, n)| in_scope(&n.namespace))
    {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &name.namespace);
        match api.get_opt(&name.name).await {
            Ok(Some(map)) => maps.push((*protocol, name.clone(), map)),
            Ok(None) => {}
            // Not allowed to read the gateway's maps: the Service checks still stand.
            Err(kube::Error::Api(e)) if e.code == 403 => findings.push(Finding {
                level: Level::Info,
                check: "port-map-not-read",
                summary: format!(
                    "ConfigMap {name} (the gateway's port map) could not be read: {}",
                    e.message
                ),
                objects: vec![format!("ConfigMap {name}")],
                why: "its entries are not checked".into(),
                fix: "run doctor with a kubeconfig that may get that ConfigMap".into(),
            }),
            Err(e) => return Err(e).with_context(|| format!("cannot get ConfigMap {name}")),
        }
    }
    if maps.is_empty() {
        return Ok(findings);
    }
    // The namespaces the entries send to.
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for (protocol, name, map) in &maps {
        let data = map.data.clone().unwrap_or_default();
        let parsed = parse_port_map(name, &data, *protocol, &settings.reserved);
        for spec in parsed.entries.values() {
            referenced.insert(spec.service.namespace.clone());
            for b in spec.options.backends.iter().flatten() {
                referenced.insert(b.service.namespace.clone());
            }
        }
    }
    let mut services: Vec<Service> = Vec::new();
    let mut slices: Vec<EndpointSlice> = Vec::new();
    for ns in &referenced {
        services.extend(list::<Service>(client, Some(ns)).await?);
        slices.extend(list::<EndpointSlice>(client, Some(ns)).await?);
    }
    // The gateway's own LoadBalancer Service: --manage-service-ports keeps it right itself;
    // else --publish-service, else deploy/base's `dermaga` beside the TCP map.
    let load_balancer = match run.manage_service_ports {
        Some(_) => None,
        None => Some(gateway_service(run, &tcp_map)),
    };
    let load_balancer = match load_balancer {
        None => None,
        Some(name) => {
            let api: Api<Service> = Api::namespaced(client.clone(), &name.namespace);
            match api.get_opt(&name.name).await {
                Ok(Some(s))
                    if s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") =>
                {
                    Some((name, s))
                }
                Ok(_) => None,
                Err(kube::Error::Api(e)) if e.code == 403 => None,
                Err(e) => return Err(e).with_context(|| format!("cannot get Service {name}")),
            }
        }
    };
    let objects: Vec<Object> = maps
        .iter()
        .map(|(_, _, m)| Object::ConfigMap(m.clone()))
        .chain(
            services
                .iter()
                .filter(|s| {
                    // The LoadBalancer is judged below, as the gateway's.
                    load_balancer
                        .as_ref()
                        .is_none_or(|(_, lb)| lb.metadata.uid != s.metadata.uid)
                })
                .cloned()
                .map(Object::Service),
        )
        .chain(slices.into_iter().map(Object::EndpointSlice))
        .collect();
    let mut report = check::CheckReport::default();
    let table = check::judge(objects, &settings, true, &mut report);
    for e in report.errors {
        findings.push(map_finding(Level::Error, e));
    }
    for w in report.warnings {
        findings.push(map_finding(Level::Warning, w));
    }
    let Some(table) = table else {
        return Ok(findings);
    };
    if let Some((name, lb)) = &load_balancer {
        for missing in check::unexposed_ports(&table, &[(name.clone(), lb.clone())]) {
            findings.push(Finding {
                level: Level::Warning,
                check: "port-not-on-load-balancer",
                summary: missing,
                objects: vec![format!("Service {name}")],
                why: "the gateway listens, but the load balancer does not forward the port".into(),
                fix: format!(
                    "add the port to Service {name}, or run the gateway with --manage-service-ports {name}"
                ),
            });
        }
    }
    let mut seen = BTreeSet::new();
    for route in table.routes() {
        let service = &route.spec.service;
        // A Service that is missing, of type ExternalName or without the port is already
        // reported above (the route's problem).
        let exists = services.iter().any(|s| {
            s.metadata.namespace.as_deref() == Some(service.namespace.as_str())
                && s.metadata.name.as_deref() == Some(service.name.as_str())
                && s.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("ExternalName")
        });
        if exists
            && route.problem.is_none()
            && route.active_count() == 0
            && route.spec.options.backends.is_none()
        {
            let span = route.span();
            if seen.insert((span.to_string(), route.key.protocol)) {
                findings.push(Finding {
                    level: Level::Warning,
                    check: "no-ready-endpoints",
                    summary: format!(
                        "port {span}/{} goes to Service {service} port {}, which has no ready endpoint",
                        route.key.protocol, route.spec.service_port
                    ),
                    objects: vec![format!("Service {service}")],
                    why: "every connection to the port is refused".into(),
                    fix: format!(
                        "check the pods behind Service {service} (kubectl get endpointslices -n {} -l kubernetes.io/service-name={}): none is ready, or none declares the port",
                        service.namespace, service.name
                    ),
                });
            }
        }
        let selectorless = services.iter().chain(scoped_services).find(|s| {
            s.metadata.namespace.as_deref() == Some(service.namespace.as_str())
                && s.metadata.name.as_deref() == Some(service.name.as_str())
                && s.spec.as_ref().is_some_and(|spec| {
                    spec.type_.as_deref() != Some("ExternalName")
                        && spec.selector.as_ref().is_none_or(|s| s.is_empty())
                })
        });
        if selectorless.is_some()
            && seen.insert((format!("selectorless {service}"), route.key.protocol))
        {
            findings.push(Finding {
                level: Level::Info,
                check: "service-without-selector",
                summary: format!(
                    "Service {service} (mapped from port {}/{}) has no selector",
                    route.span(),
                    route.key.protocol
                ),
                objects: vec![format!("Service {service}")],
                why: "its EndpointSlices are written by hand or by another controller: nothing keeps them in step with pods, and doctor cannot check the pods behind it".into(),
                fix: "nothing, if that is meant (an external database, say); keep its EndpointSlices' ready conditions true only while the endpoints serve".into(),
            });
        }
    }
    Ok(findings)
}

/// The LoadBalancer Service in front of the gateway: `--manage-service-ports`, else
/// `--publish-service`, else deploy/base's `dermaga` beside the TCP map.
fn gateway_service(run: &RunArgs, tcp_map: &ObjectName) -> ObjectName {
    run.manage_service_ports
        .clone()
        .or_else(|| run.publish_service.clone())
        .unwrap_or_else(|| ObjectName::new(tcp_map.namespace.clone(), "dermaga"))
}

fn map_finding(level: Level, message: String) -> Finding {
    Finding {
        level,
        check: if level == Level::Error {
            "port-map-error"
        } else {
            "port-map-warning"
        },
        objects: Vec::new(),
        why: if level == Level::Error {
            "the gateway does not serve the entry as written".into()
        } else {
            "the gateway serves the entry, but something is not as it may seem".into()
        },
        fix: "see the message; docs/configuration.md lists every message and its fix".into(),
        summary: message,
    }
}
