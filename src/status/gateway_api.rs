//! Writes the Gateway API status (`--gateway-api`): conditions, `attachedRoutes`,
//! `observedGeneration` and addresses on the GatewayClasses, Gateways and routes dermaga
//! serves, as `build()` decided them ([`GatewayApiStatus`]).
//!
//! Every replica serves traffic and computes the same status; one writes it. The writer is the
//! holder of the Lease `dermaga-gateway-status` in the port maps' namespace
//! (`kube-lease-manager`: 15 s lease, renewed 5 s before it runs out; released at shutdown so a
//! surviving replica takes over at once). The holder writes only what differs from the object
//! as read (so a restart or a new leader writes nothing when the status is right), and never
//! the same status twice for one object (so a status the API server normalises differently
//! cannot become a write loop). A write is a merge patch of the status subresource made
//! conditional on the resourceVersion it was decided on: if the object changed since, the
//! API server refuses it (409), the change arrives through the watch, and the status is
//! decided again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::control::gateway_status::{GatewayApiStatus, StatusWrite};
use crate::control::index::Kind;
use crate::control::provider::kube::watch::gateway_api_resource;
use crate::control::snapshot::Snapshot;
use crate::names::ObjectName;
use crate::telemetry::metrics::Metrics;

/// The Lease whose holder writes the status.
pub const LEASE_NAME: &str = "dermaga-gateway-status";

/// How long a holder's Lease lasts without renewal, and how long before that it renews.
const LEASE_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;

/// After a failed write (or Lease setup), when to try again without a new table.
const RETRY: Duration = Duration::from_secs(5);

/// What the writer needs.
pub struct StatusWriter {
    /// The API client.
    pub client: kube::Client,
    /// The published tables (their `gateway_status`).
    pub snapshot: Arc<Snapshot>,
    /// dermaga's `controllerName`.
    pub controller: String,
    /// Where the Lease lives (the port maps' namespace).
    pub lease_namespace: String,
    /// Where writes are counted.
    pub metrics: Arc<Metrics>,
}

impl StatusWriter {
    /// Competes for the Lease and, while holding it, writes the status after every table,
    /// until `shutdown`; then releases the Lease.
    pub async fn run(self, shutdown: CancellationToken) {
        let identity = identity();
        let manager = loop {
            let built = LeaseManagerBuilder::new(self.client.clone(), LEASE_NAME)
                .with_namespace(&self.lease_namespace)
                .with_identity(&identity)
                .with_duration(LEASE_SECONDS)
                .with_grace(LEASE_GRACE_SECONDS)
                .build()
                .await;
            match built {
                Ok(manager) => break manager,
                Err(error) => {
                    tracing::warn!(%error, lease = LEASE_NAME, namespace = %self.lease_namespace, "cannot use the status Lease (RBAC: get, create and patch leases in this namespace); Gateway API status is not written; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        };
        let (mut leader, lease_task) = manager.watch().await;
        let mut tables = self.snapshot.subscribe();
        let mut written: HashMap<(Kind, ObjectName), Value> = HashMap::new();
        tracing::info!(%identity, lease = LEASE_NAME, "competing for the Gateway API status Lease");
        loop {
            let is_leader = *leader.borrow_and_update();
            self.metrics.gateway_status_leader(is_leader);
            let mut retry_at = None;
            if is_leader {
                let table = self.snapshot.load();
                let failed = self.write_all(&table.gateway_status, &mut written).await;
                retry_at = failed.then(|| tokio::time::Instant::now() + RETRY);
            } else {
                written.clear();
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = leader.changed() => {
                    if changed.is_err() {
                        tracing::warn!("the status Lease task ended; Gateway API status is not written");
                        shutdown.cancelled().await;
                        break;
                    }
                    let now = *leader.borrow();
                    tracing::info!(%identity, leader = now, "Gateway API status Lease {}", if now { "acquired: this replica writes the status" } else { "lost or held by another replica" });
                }
                _ = tables.changed() => {}
                _ = sleep_until(retry_at), if retry_at.is_some() => {}
            }
        }
        self.metrics.gateway_status_leader(false);
        // Closing the channel makes the Lease task release the Lease.
        drop(leader);
        let _ = tokio::time::timeout(Duration::from_secs(2), lease_task).await;
    }

    /// Writes every status that differs; true if a write failed (other than a conflict).
    async fn write_all(
        &self,
        status: &GatewayApiStatus,
        written: &mut HashMap<(Kind, ObjectName), Value>,
    ) -> bool {
        let now = k8s_openapi::jiff::Timestamp::now()
            .round(k8s_openapi::jiff::Unit::Second)
            .map_or_else(|_| String::new(), |t| t.to_string());
        // Forget the objects gone (deleted, or no longer dermaga's), so the map stays bounded.
        written.retain(|(kind, name), _| match kind {
            Kind::GatewayClass => status.classes.contains_key(&name.name),
            Kind::Gateway => status.gateways.contains_key(name),
            _ => status.routes.contains_key(&(*kind, name.clone())),
        });
        let mut failed = false;
        for write in status.writes(&self.controller, &now) {
            let key = (write.kind, write.name.clone());
            let timeless = without_times(&write.status);
            if written.get(&key) == Some(&timeless) {
                continue;
            }
            match self.write(&write).await {
                Ok(()) => {
                    self.metrics
                        .gateway_status_write(write.kind.as_str(), "written");
                    tracing::debug!(kind = write.kind.as_str(), object = %write.name, "status written");
                    written.insert(key, timeless);
                }
                Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => {
                    self.metrics
                        .gateway_status_write(write.kind.as_str(), "conflict");
                    tracing::debug!(kind = write.kind.as_str(), object = %write.name, "status write conflicted; the object changed since it was read");
                }
                Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 404) => {
                    // Deleted meanwhile: nothing to report on.
                }
                Err(error) => {
                    self.metrics
                        .gateway_status_write(write.kind.as_str(), "failed");
                    tracing::warn!(kind = write.kind.as_str(), object = %write.name, %error, "Gateway API status write failed; retrying");
                    failed = true;
                }
            }
        }
        failed
    }

    async fn write(&self, write: &StatusWrite) -> Result<(), kube::Error> {
        let resource = gateway_api_resource(write.kind);
        let api: Api<DynamicObject> = if write.name.namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &write.name.namespace, &resource)
        };
        let mut patch = json!({ "status": write.status });
        if let Some(version) = &write.resource_version {
            patch["metadata"] = json!({ "resourceVersion": version });
        }
        api.patch_status(
            &write.name.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(|_| ())
    }
}

/// `$POD_NAME` (else `$HOSTNAME`, else `dermaga`) and a random suffix: unique per process even
/// when two share a host name.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "dermaga".to_owned());
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(8)
        .collect();
    format!("{host}-{suffix}")
}

/// A status without its `lastTransitionTime`s (what decides whether it was written already).
fn without_times(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

async fn sleep_until(when: Option<tokio::time::Instant>) {
    if let Some(when) = when {
        tokio::time::sleep_until(when).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_do_not_count_as_a_change() {
        let a = json!({"conditions": [{"type": "Accepted", "lastTransitionTime": "2026-12-04T00:00:00Z"}]});
        let b = json!({"conditions": [{"type": "Accepted", "lastTransitionTime": "2026-12-04T00:00:01Z"}]});
        let c = json!({"conditions": [{"type": "Programmed", "lastTransitionTime": "2026-12-04T00:00:00Z"}]});
        assert_eq!(without_times(&a), without_times(&b));
        assert_ne!(without_times(&a), without_times(&c));
    }

    #[test]
    fn identities_differ_on_one_host() {
        assert_ne!(identity(), identity());
    }
}
