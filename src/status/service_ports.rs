//! `--manage-service-ports NS/NAME`: keeps that Service's ports (the LoadBalancer in front of
//! dermaga) equal to the ports of the table in force, so that a port is added in one place,
//! the map, instead of twice.
//!
//! The ports are written by server-side apply with dermaga's own field manager
//! ([`FIELD_MANAGER`]), never forced: the Service's `ports` list is keyed by port and protocol,
//! so the apply owns exactly the ports it names, and ports another manager added by hand stay.
//! A port dropped from the table is dropped from the apply and removed from the Service, unless
//! another manager also holds it. A mapped port that another manager holds with other values
//! (another `targetPort` or name) is a conflict: the API server refuses the apply naming the
//! field; that port is left out, reported once as a Warning Event on the Service and counted
//! (`dermaga_service_ports_held_back`), and the apply is made again without it. It is tried
//! again at every change and every [`RETRY_HELD_BACK`] while held back.
//!
//! Every replica applies the same ports under the same manager, so the second apply of one
//! change is a no-op on the API server (the Service's resourceVersion does not move). Each
//! replica applies only when its table's ports change, after a failure (every [`RETRY`]) and
//! every [`RESYNC`] (which repairs a hand edit that removed a port).
//!
//! Port names are derived from protocol and number (`tcp-10000`, `udp-10053`); `targetPort` is
//! the same number, where dermaga listens in its pod.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::core::Status;
use kube::runtime::events::{Event, EventType, Recorder};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::events::Reporting;
use crate::control::snapshot::Snapshot;
use crate::control::table::RouteTable;
use crate::names::{ObjectName, Protocol};
use crate::telemetry::metrics::Metrics;

/// The field manager of dermaga's applies.
pub const FIELD_MANAGER: &str = "dermaga";

/// After a failed apply, when to try again without a new table.
pub const RETRY: Duration = Duration::from_secs(5);

/// While some port is held back by a conflict, how often to try it again.
pub const RETRY_HELD_BACK: Duration = Duration::from_secs(30);

/// How often to apply the same ports again (a no-op unless the Service was edited).
pub const RESYNC: Duration = Duration::from_secs(300);

/// Rounds of "apply, leave out the conflicting ports" per change.
const CONFLICT_ROUNDS: usize = 4;

/// One port the Service should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// The number (port and targetPort).
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl ServicePort {
    /// The derived, stable port name: `tcp-10000`.
    pub fn name(&self) -> String {
        format!(
            "{}-{}",
            self.protocol.as_k8s().to_ascii_lowercase(),
            self.port
        )
    }
}

impl std::fmt::Display for ServicePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_k8s())
    }
}

/// The ports of the table in force.
pub fn wanted_ports(table: &RouteTable) -> BTreeSet<ServicePort> {
    table
        .keys()
        .map(|key| ServicePort {
            port: key.port.get(),
            protocol: key.protocol,
        })
        .collect()
}

/// The server-side apply configuration that owns exactly `ports` of `service`.
pub fn apply_body(service: &ObjectName, ports: &BTreeSet<ServicePort>) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({
                "name": p.name(),
                "port": p.port,
                "protocol": p.protocol.as_k8s(),
                "targetPort": p.port,
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": service.name, "namespace": service.namespace },
        "spec": { "ports": ports },
    })
}

/// The ports a refused apply's conflict causes name (`.spec.ports[port=10000,protocol="TCP"]
/// .targetPort`), each with the API server's message (which names the other manager).
pub fn conflicting_ports(status: &Status) -> BTreeMap<ServicePort, String> {
    let mut ports = BTreeMap::new();
    let Some(details) = &status.details else {
        return ports;
    };
    for cause in &details.causes {
        if let Some(port) = port_of_field(&cause.field) {
            let text = format!("{}: {}", cause.field, cause.message);
            ports
                .entry(port)
                .and_modify(|m: &mut String| {
                    m.push_str("; ");
                    m.push_str(&text);
                })
                .or_insert(text);
        }
    }
    ports
}

/// The port a managed-fields path names: `.spec.ports[port=10000,protocol="TCP"].name`.
fn port_of_field(field: &str) -> Option<ServicePort> {
    let key = field.strip_prefix(".spec.ports[")?;
    let key = &key[..key.find(']')?];
    let mut port = None;
    let mut protocol = None;
    for part in key.split(',') {
        let (name, value) = part.split_once('=')?;
        match name.trim() {
            "port" => port = value.trim().parse::<u16>().ok(),
            "protocol" => {
                protocol = match value.trim().trim_matches('"') {
                    "TCP" => Some(Protocol::Tcp),
                    "UDP" => Some(Protocol::Udp),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Some(ServicePort {
        port: port?,
        protocol: protocol?,
    })
}

/// What the sync task needs.
pub struct ServicePortSync {
    /// The API client.
    pub client: kube::Client,
    /// The published tables.
    pub snapshot: Arc<Snapshot>,
    /// The Service to keep in step.
    pub service: ObjectName,
    /// Who signs the Events.
    pub reporting: Reporting,
    /// Where applies are counted.
    pub metrics: Arc<Metrics>,
}

/// What one round of applies achieved.
enum Applied {
    /// The Service has every port but `held_back`.
    Done,
    /// Failed; try again after [`RETRY`].
    Failed,
}

impl ServicePortSync {
    /// Applies the table's ports after every table (the first real one on), until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.service.namespace);
        let mut tables = self.snapshot.subscribe();
        let mut applied: Option<BTreeSet<ServicePort>> = None;
        let mut held_back: BTreeMap<ServicePort, String> = BTreeMap::new();
        let mut last_version: Option<String> = None;
        let mut next_try: Option<tokio::time::Instant> = None;
        loop {
            let table = self.snapshot.load();
            // Generation 0 is the empty table before the first sync: applying it would remove
            // every port.
            let due = next_try.is_some_and(|t| t <= tokio::time::Instant::now());
            if table.generation > 0 {
                let wanted = wanted_ports(&table);
                if applied.as_ref() != Some(&wanted) || due {
                    let outcome = self
                        .apply(&api, &wanted, &mut held_back, &mut last_version)
                        .await;
                    self.metrics.service_ports_held_back(held_back.len());
                    let now = tokio::time::Instant::now();
                    next_try = Some(match outcome {
                        Applied::Done => {
                            applied = Some(wanted);
                            now + if held_back.is_empty() {
                                RESYNC
                            } else {
                                RETRY_HELD_BACK
                            }
                        }
                        Applied::Failed => {
                            applied = None;
                            now + RETRY
                        }
                    });
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = tables.changed() => if changed.is_err() { return },
                _ = sleep_until(next_try) => {}
            }
        }
    }

    /// Applies `wanted`, leaving out the ports that conflict (reported when newly so).
    async fn apply(
        &self,
        api: &Api<Service>,
        wanted: &BTreeSet<ServicePort>,
        held_back: &mut BTreeMap<ServicePort, String>,
        last_version: &mut Option<String>,
    ) -> Applied {
        let mut ports = wanted.clone();
        let mut conflicts: BTreeMap<ServicePort, String> = BTreeMap::new();
        for _ in 0..CONFLICT_ROUNDS {
            let body = apply_body(&self.service, &ports);
            let params = PatchParams::apply(FIELD_MANAGER);
            match api
                .patch(&self.service.name, &params, &Patch::Apply(&body))
                .await
            {
                Ok(service) => {
                    let version = service.metadata.resource_version;
                    // "applied": the Service changed, or this is the process's first apply (whose
                    // effect it cannot tell); "unchanged": it left the resourceVersion as this
                    // process's previous apply did.
                    let result = if version.is_some() && version == *last_version {
                        "unchanged"
                    } else {
                        "applied"
                    };
                    self.metrics.service_port_apply(result);
                    tracing::debug!(service = %self.service, ports = ports.len(), result, "Service ports applied");
                    *last_version = version;
                    for (port, why) in &conflicts {
                        if !held_back.contains_key(port) {
                            self.report_conflict(*port, why).await;
                        }
                    }
                    *held_back = conflicts;
                    return Applied::Done;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    self.metrics.service_port_apply("conflict");
                    let found = conflicting_ports(&status);
                    if found.is_empty() || found.keys().any(|p| !ports.contains(p)) {
                        tracing::warn!(service = %self.service, error = %status.message, "applying the Service's ports conflicts with another field manager on fields dermaga cannot leave out; not forced; retrying");
                        return Applied::Failed;
                    }
                    for (port, why) in found {
                        ports.remove(&port);
                        conflicts.insert(port, why);
                    }
                }
                Err(error) => {
                    self.metrics.service_port_apply("failed");
                    tracing::warn!(service = %self.service, %error, "applying the Service's ports failed (RBAC: patch on this Service by name); retrying");
                    return Applied::Failed;
                }
            }
        }
        tracing::warn!(service = %self.service, "the Service's ports still conflict after {CONFLICT_ROUNDS} rounds; retrying");
        Applied::Failed
    }

    /// A Warning Event on the Service, and a log line, for a mapped port left out.
    async fn report_conflict(&self, port: ServicePort, why: &str) {
        let note = format!(
            "port {port} is mapped but another field manager holds it on this Service with other values ({why}); dermaga does not force it: remove or correct that port and dermaga adds it"
        );
        tracing::warn!(service = %self.service, %port, "{note}");
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(self.service.name.clone()),
            namespace: Some(self.service.namespace.clone()),
            ..ObjectReference::default()
        };
        let recorder = Recorder::new(
            self.reporting.client.clone(),
            self.reporting.reporter.clone(),
        );
        let event = Event {
            type_: EventType::Warning,
            reason: "ServicePortConflict".into(),
            note: Some(super::events::truncate(note)),
            action: "ManageServicePorts".into(),
            secondary: None,
        };
        match recorder.publish(&event, &reference).await {
            Ok(()) => self.metrics.kube_event(true),
            Err(error) => {
                self.metrics.kube_event(false);
                tracing::warn!(service = %self.service, %error, "could not record a Kubernetes Event (the conflict is in the log)");
            }
        }
    }
}

async fn sleep_until(when: Option<tokio::time::Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};

    #[test]
    fn the_apply_names_ports_by_protocol_and_number() {
        let ports: BTreeSet<ServicePort> = [
            ServicePort {
                port: 10053,
                protocol: Protocol::Udp,
            },
            ServicePort {
                port: 10053,
                protocol: Protocol::Tcp,
            },
        ]
        .into();
        let body = apply_body(&ObjectName::new("dermaga", "dermaga"), &ports);
        assert_eq!(
            body["spec"]["ports"],
            json!([
                {"name": "tcp-10053", "port": 10053, "protocol": "TCP", "targetPort": 10053},
                {"name": "udp-10053", "port": 10053, "protocol": "UDP", "targetPort": 10053},
            ])
        );
        assert_eq!(body["metadata"]["namespace"], "dermaga");
    }

    #[test]
    fn conflicts_are_read_from_the_causes() {
        let cause = |field: &str| StatusCause {
            reason: "FieldManagerConflict".into(),
            message: "conflict with \"kubectl-client-side-apply\" using v1".into(),
            field: field.into(),
        };
        let status = Status {
            code: 409,
            details: Some(StatusDetails {
                causes: vec![
                    cause(".spec.ports[port=10000,protocol=\"TCP\"].targetPort"),
                    cause(".spec.ports[port=10000,protocol=\"TCP\"].name"),
                    cause(".spec.ports[port=53,protocol=\"UDP\"].name"),
                    cause(".spec.type"),
                ],
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                retry_after_seconds: 0,
            }),
            ..Status::default()
        };
        let found = conflicting_ports(&status);
        let keys: Vec<String> = found.keys().map(ToString::to_string).collect();
        assert_eq!(keys, ["53/UDP", "10000/TCP"]);
        assert!(
            found
                .values()
                .next()
                .unwrap()
                .contains("kubectl-client-side-apply")
        );
        assert!(port_of_field(".spec.ports[port=x,protocol=\"TCP\"]").is_none());
    }
}
