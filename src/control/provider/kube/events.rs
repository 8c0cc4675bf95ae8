//! Records each configuration problem, once when it appears, as a Kubernetes Event on the
//! port-map ConfigMap it is in (`kubectl describe configmap tcp-services` shows it).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::{mpsc, watch};

use crate::control::names::ObjectName;
use crate::control::table::ConfigProblem;
use crate::ops::metrics::Metrics;

/// Events carry at most 1 kB of message.
const MAX_NOTE: usize = 1024;

/// Publishes problems from `problems` as Warning Events until the channel closes.
pub async fn record(
    recorder: Recorder,
    mut problems: mpsc::UnboundedReceiver<ConfigProblem>,
    port_maps: watch::Receiver<BTreeMap<ObjectName, ObjectReference>>,
    metrics: Arc<Metrics>,
) {
    while let Some(problem) = problems.recv().await {
        let Some(map) = problem.configmap() else {
            continue;
        };
        let Some(reference) = port_maps.borrow().get(map).cloned() else {
            continue;
        };
        let event = Event {
            type_: EventType::Warning,
            reason: problem.reason().to_owned(),
            note: Some(truncate(problem.to_string())),
            action: "Route".into(),
            secondary: None,
        };
        match recorder.publish(&event, &reference).await {
            Ok(()) => metrics.kube_event(true),
            Err(error) => {
                metrics.kube_event(false);
                tracing::warn!(configmap = %map, reason = problem.reason(), %error, "could not record the problem as a Kubernetes Event (it is in the log above)");
            }
        }
    }
}

fn truncate(mut text: String) -> String {
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
