//! Records problems as Kubernetes Events on the port-map ConfigMap they concern, once when
//! each appears (`kubectl describe configmap tcp-services` shows them): configuration problems
//! from the table publisher, and ports that cannot be bound (in use by another process).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::{mpsc, watch};

use crate::control::table::ConfigProblem;
use crate::data::listener::{ListenerStatus, PortState};
use crate::names::{ObjectName, Protocol, RouteKey};
use crate::telemetry::metrics::Metrics;

/// Events carry at most 1 kB of message.
const MAX_NOTE: usize = 1024;

/// Where Events go and what they are about.
pub struct EventSources {
    /// Problems as they appear ([`crate::control::publisher::TablePublisher::subscribe_problems`]).
    pub problems: mpsc::UnboundedReceiver<ConfigProblem>,
    /// The listener manager's port states.
    pub listeners: watch::Receiver<ListenerStatus>,
    /// The port maps (as object references) by name, and which map each protocol uses.
    pub port_maps: watch::Receiver<BTreeMap<ObjectName, ObjectReference>>,
    /// The port map of each protocol.
    pub map_of: BTreeMap<Protocol, ObjectName>,
}

/// Who records: the API client and the reporting controller/instance.
pub struct Reporting {
    /// The API client Events are created with.
    pub client: kube::Client,
    /// `dermaga` and the pod name.
    pub reporter: Reporter,
}

impl Reporting {
    /// Reports as controller `dermaga`, instance `$POD_NAME` (else `$HOSTNAME`), so that each
    /// replica signs its Events with its own name.
    pub fn new(client: kube::Client) -> Self {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok();
        Self {
            client,
            reporter: Reporter {
                controller: "dermaga".into(),
                instance,
            },
        }
    }
}

/// Publishes Warning Events until the sources close.
pub async fn record(recorder: Reporting, mut sources: EventSources, metrics: Arc<Metrics>) {
    let mut failed_ports: BTreeSet<RouteKey> = BTreeSet::new();
    loop {
        let (map, reason, note) = tokio::select! {
            problem = sources.problems.recv() => {
                let Some(problem) = problem else { return };
                let Some(map) = problem.configmap().cloned() else { continue };
                (map, problem.reason(), problem.to_string())
            }
            changed = sources.listeners.changed() => {
                if changed.is_err() {
                    return;
                }
                let newly = newly_failed(&sources.listeners.borrow_and_update(), &mut failed_ports);
                for (key, error) in newly {
                    let Some(map) = sources.map_of.get(&key.protocol).cloned() else { continue };
                    let note = format!("port {key} cannot be bound: {error}; retrying (is another process using it?)");
                    publish(&recorder, &sources, &metrics, map, "PortBindFailed", note).await;
                }
                continue;
            }
        };
        publish(&recorder, &sources, &metrics, map, reason, note).await;
    }
}

/// Ports failed now that were not before; `seen` is updated to the failed set.
fn newly_failed(status: &ListenerStatus, seen: &mut BTreeSet<RouteKey>) -> Vec<(RouteKey, String)> {
    let now: BTreeMap<RouteKey, String> = status
        .ports
        .iter()
        .filter_map(|(k, s)| match s {
            PortState::Failed(e) => Some((*k, e.clone())),
            PortState::Bound(_) => None,
        })
        .collect();
    let newly = now
        .iter()
        .filter(|(k, _)| !seen.contains(k))
        .map(|(k, e)| (*k, e.clone()))
        .collect();
    *seen = now.into_keys().collect();
    newly
}

async fn publish(
    recorder: &Reporting,
    sources: &EventSources,
    metrics: &Metrics,
    map: ObjectName,
    reason: &str,
    note: String,
) {
    let Some(reference) = sources.port_maps.borrow().get(&map).cloned() else {
        return;
    };
    // A Recorder of its own for each Event: the shared one would fold a second problem with
    // the same reason on the same map into the first Event's `series` (its key has no message),
    // and each problem here is already sent only once, when it appears.
    let recorder = Recorder::new(recorder.client.clone(), recorder.reporter.clone());
    let event = Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(truncate(note)),
        action: "Route".into(),
        secondary: None,
    };
    match recorder.publish(&event, &reference).await {
        Ok(()) => metrics.kube_event(true),
        Err(error) => {
            metrics.kube_event(false);
            tracing::warn!(configmap = %map, reason, %error, "could not record a Kubernetes Event (the problem is in the log)");
        }
    }
}

pub(crate) fn truncate(mut text: String) -> String {
    if text.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}
