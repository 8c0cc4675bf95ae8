//! What `dermaga doctor` reports, and the checks of Services against the pods they select:
//! several workloads behind one selector, pods that do not declare the port the Service sends
//! to (S1), pods of Jobs and CronJobs behind a long-running Service (S2), backends without a
//! readiness probe or a shutdown delay, and a grace period shorter than the delay (S4).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::workloads::{Owners, Workload};

/// How much a finding matters. Warnings and errors make `doctor` exit with 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Worth knowing; nothing to fix.
    Info,
    /// A mistake that costs connections now or at the next deploy.
    Warning,
    /// The gateway does not serve something as written.
    Error,
}

/// One finding: what is wrong, with which objects, why it matters and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub level: Level,
    /// A stable name of the check (`port-not-declared`, `job-pods-selected`, …).
    pub check: &'static str,
    /// What was found, naming the objects.
    pub summary: String,
    /// The objects involved (`Service shop/web`, `StatefulSet shop/db`, …).
    pub objects: Vec<String>,
    /// Why it matters.
    pub why: String,
    /// What to change.
    pub fix: String,
}

/// The grace period Kubernetes gives a pod when its spec sets none.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The pods `service` selects (none when it has no selector).
pub fn selected<'a>(service: &Service, pods: &'a [Pod]) -> Vec<&'a Pod> {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Vec::new();
    };
    if selector.is_empty() {
        return Vec::new();
    }
    let namespace = service.metadata.namespace.as_deref();
    pods.iter()
        .filter(|p| p.metadata.namespace.as_deref() == namespace)
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .collect()
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice())
}

/// The ports the pod's containers declare: (number, name, protocol).
fn declared(pod: &Pod) -> Vec<(i32, Option<String>, String)> {
    containers(pod)
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| {
            (
                p.container_port,
                p.name.clone(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
        .collect()
}

/// The Service port's target, as written: a number (the port itself when unset) or a name.
fn target(port: &ServicePort) -> IntOrString {
    port.target_port
        .clone()
        .unwrap_or(IntOrString::Int(port.port))
}

fn target_text(port: &ServicePort) -> String {
    match target(port) {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => format!("\"{s}\""),
    }
}

/// Whether the pod declares the Service port's target (same protocol).
fn declares(pod: &Pod, port: &ServicePort) -> bool {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    declared(pod).iter().any(|(n, name, p)| {
        p == protocol
            && match target(port) {
                IntOrString::Int(t) => *n == t,
                IntOrString::String(t) => name.as_deref() == Some(t.as_str()),
            }
    })
}

fn ports_text(pod: &Pod) -> String {
    let ports: BTreeSet<String> = declared(pod)
        .into_iter()
        .map(|(n, _, p)| {
            if p == "TCP" {
                n.to_string()
            } else {
                format!("{n}/{p}")
            }
        })
        .collect();
    if ports.is_empty() {
        "no port".into()
    } else {
        format!("port {}", ports.into_iter().collect::<Vec<_>>().join(", "))
    }
}

fn service_name(service: &Service) -> String {
    format!(
        "Service {}/{}",
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

fn selector_text(service: &Service) -> String {
    let selector = service.spec.as_ref().and_then(|s| s.selector.as_ref());
    let pairs: Vec<String> = selector
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.join(",")
}

/// The checks of each Service against the pods it selects.
pub fn service_findings(services: &[Service], pods: &[Pod], owners: &Owners) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Long-running workloads behind some Service, for the probe and shutdown checks (once
    // each, naming every Service that sends to them).
    let mut backends: BTreeMap<Workload, (BTreeSet<String>, &Pod)> = BTreeMap::new();
    for service in services {
        let chosen = selected(service, pods);
        if chosen.is_empty() {
            continue;
        }
        let name = service_name(service);
        let mut by_workload: BTreeMap<Workload, Vec<&Pod>> = BTreeMap::new();
        for pod in chosen {
            by_workload
                .entry(owners.workload_of(pod))
                .or_default()
                .push(pod);
        }
        let ports: Vec<&ServicePort> = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .collect();
        let serving: Vec<&Workload> = by_workload
            .keys()
            .filter(|w| !w.runs_to_completion())
            .collect();
        let several = serving.len() > 1;
        // The serving workloads (a Job's pods have a finding of their own).
        let listed = || {
            by_workload
                .iter()
                .filter(|(w, _)| !w.runs_to_completion())
                .map(|(w, p)| {
                    format!(
                        "{w} ({} pod{})",
                        p.len(),
                        if p.len() == 1 { "" } else { "s" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut mismatched = false;
        for (workload, its_pods) in &by_workload {
            let pod = its_pods[0];
            if workload.runs_to_completion() {
                let missing: Vec<String> = ports
                    .iter()
                    .filter(|p| !declares(pod, p))
                    .map(|p| target_text(p))
                    .collect();
                let ports_note = if missing.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; they declare {} (the Service sends to {})",
                        ports_text(pod),
                        missing.join(", ")
                    )
                };
                findings.push(Finding {
                    level: Level::Warning,
                    check: "job-pods-selected",
                    summary: format!(
                        "{name} (selector {}) selects the pods of {workload}{ports_note}",
                        selector_text(service)
                    ),
                    objects: vec![name.clone(), workload.to_string()],
                    why: "each run's pod becomes an endpoint of the Service while it lives and is sent connections it does not serve (S2)".into(),
                    fix: format!(
                        "give {workload}'s pod template labels that {name}'s selector does not match (or add a label to the selector that only the serving pods carry)"
                    ),
                });
                continue;
            }
            backends
                .entry(workload.clone())
                .or_insert_with(|| (BTreeSet::new(), pod))
                .0
                .insert(name.clone());
            // A named target that a pod lacks makes it no endpoint of that port: harmless.
            // A number it does not declare, while it declares others (or another workload
            // behind the Service declares it), is where connections are refused.
            for port in &ports {
                if declares(pod, port) || matches!(target(port), IntOrString::String(_)) {
                    continue;
                }
                let others_declare = by_workload
                    .iter()
                    .any(|(w, p)| w != workload && declares(p[0], port));
                if declared(pod).is_empty() && !others_declare {
                    continue;
                }
                mismatched = true;
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let shared = if several {
                    format!(
                        "{name} (selector {}) selects pods of {} workloads: {}. ",
                        selector_text(service),
                        serving.len(),
                        listed()
                    )
                } else {
                    String::new()
                };
                let fix = if several {
                    format!(
                        "give each workload a label of its own (e.g. app.kubernetes.io/instance) and add it to {name}'s selector, so that it selects only the pods that listen on {}",
                        target_text(port)
                    )
                } else {
                    format!(
                        "set {name}'s targetPort to the port the pods listen on, or declare and listen on {} in {workload}",
                        target_text(port)
                    )
                };
                findings.push(Finding {
                    level: Level::Warning,
                    check: "port-not-declared",
                    summary: format!(
                        "{shared}The pods of {workload} declare {} and not {} {protocol}, where {name} port {} sends",
                        ports_text(pod),
                        target_text(port),
                        port.port
                    ),
                    objects: vec![name.clone(), workload.to_string()],
                    why: format!(
                        "connections the Service (or the gateway) sends to these pods on {} are refused or hang (S1)",
                        target_text(port)
                    ),
                    fix,
                });
            }
        }
        if several && !mismatched {
            findings.push(Finding {
                level: Level::Info,
                check: "several-workloads",
                summary: format!(
                    "{name} (selector {}) selects pods of {} workloads: {}; they declare the Service's ports",
                    selector_text(service),
                    serving.len(),
                    listed()
                ),
                objects: std::iter::once(name.clone())
                    .chain(serving.iter().map(|w| w.to_string()))
                    .collect(),
                why: "fine for a canary or a blue/green pair; a mistake when the workloads serve different things".into(),
                fix: "nothing, if it is meant; otherwise give each workload a label of its own in the selector".into(),
            });
        }
    }
    for (workload, (services, pod)) in backends {
        findings.extend(lifecycle_findings(&workload, &services, pod));
    }
    findings
}

/// The seconds a preStop hook waits: a `sleep` action, or an exec of `sleep N` (directly or
/// in `sh -c`); `None` when there is no preStop hook, `Some(None)` when it is something else.
fn pre_stop_seconds(container: &Container) -> Option<Option<i64>> {
    let hook = container.lifecycle.as_ref()?.pre_stop.as_ref()?;
    if let Some(sleep) = &hook.sleep {
        return Some(Some(sleep.seconds));
    }
    let command = hook.exec.as_ref().and_then(|e| e.command.as_ref());
    let words: Vec<&str> = command
        .into_iter()
        .flatten()
        .flat_map(|w| w.split_whitespace())
        .collect();
    let seconds = words
        .windows(2)
        .find(|w| w[0] == "sleep" || w[0].ends_with("/sleep"))
        .and_then(|w| {
            w[1].trim_end_matches(['s', ';', '"', '\''])
                .parse::<f64>()
                .ok()
        })
        // `sleep infinity` waits past any grace period: a day stands for it.
        .map(|s| {
            if s.is_finite() {
                s.max(0.0).ceil().min(86_400.0)
            } else {
                86_400.0
            }
        })
        .map(|s| s as i64);
    Some(seconds)
}

/// Readiness probe, shutdown delay and grace period of a workload behind `services`.
fn lifecycle_findings(workload: &Workload, services: &BTreeSet<String>, pod: &Pod) -> Vec<Finding> {
    let mut findings = Vec::new();
    let behind: Vec<String> = services.iter().cloned().collect();
    let objects: Vec<String> = std::iter::once(workload.to_string())
        .chain(behind.iter().cloned())
        .collect();
    let behind = behind.join(", ");
    let containers = containers(pod);
    if !containers.is_empty() && containers.iter().all(|c| c.readiness_probe.is_none()) {
        findings.push(Finding {
            level: Level::Warning,
            check: "no-readiness-probe",
            summary: format!("{workload}, behind {behind}, has no readiness probe"),
            objects: objects.clone(),
            why: "a pod is an endpoint as soon as its containers start, before it listens: new pods of every rollout refuse their first connections (S4)".into(),
            fix: format!(
                "add a readinessProbe (tcpSocket on the serving port is enough) to the serving container of {workload}"
            ),
        });
    }
    let delays: Vec<Option<Option<i64>>> = containers.iter().map(pre_stop_seconds).collect();
    if !containers.is_empty() && delays.iter().all(Option::is_none) {
        findings.push(Finding {
            level: Level::Warning,
            check: "no-shutdown-delay",
            summary: format!("{workload}, behind {behind}, stops at once when deleted (no preStop delay)"),
            objects: objects.clone(),
            why: "endpoint removal reaches gateways and kube-proxy a moment after the pod gets SIGTERM; until then it is still sent connections, which fail (S4)".into(),
            fix: format!(
                "add `lifecycle: {{preStop: {{sleep: {{seconds: 10}}}}}}` to the serving container of {workload} (and a terminationGracePeriodSeconds above it)"
            ),
        });
    }
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    if let Some(delay) = delays.iter().flatten().flatten().max()
        && *delay >= grace
    {
        findings.push(Finding {
            level: Level::Warning,
            check: "grace-shorter-than-delay",
            summary: format!(
                "{workload} waits {delay}s in preStop but its terminationGracePeriodSeconds is {grace}"
            ),
            objects,
            why: "the kubelet kills the pod at the end of the grace period, during or right after the delay: open connections are cut instead of finishing".into(),
            fix: format!(
                "set terminationGracePeriodSeconds of {workload} above the delay plus the time its connections need to finish (e.g. {})",
                delay + 30
            ),
        });
    }
    findings
}
