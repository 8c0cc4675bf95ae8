//! Kubernetes provider: watches the port-map ConfigMaps (and, with `--gateway-api`, the Gateway
//! API kinds) and the Services and EndpointSlices they reference, and feeds them to the same
//! Index the file provider feeds.
//!
//! What is watched follows what is referenced, not the cluster's size:
//! - each port map by name (`metadata.name` field selector);
//! - per namespace that has referenced Services: its Services, of which only the referenced
//!   ones are kept (a Service has no label to select it by; a new reference in the namespace
//!   re-lists it), and the EndpointSlices of exactly the referenced Services
//!   (`kubernetes.io/service-name in (...)`), the objects that change with every pod;
//! - with `--gateway-api`: GatewayClasses, Gateways, TCPRoutes, UDPRoutes and ReferenceGrants
//!   in every namespace (routes are how app teams claim ports without a shared map); their
//!   backendRefs are references like the port maps' entries.
//!
//! `sync` decides what to publish and when; `watch` runs the kube-rs watchers. Reading
//! objects is all it does: writing back (Events on the port maps) is `crate::status`'s.

pub mod access;
pub(crate) mod client;
pub(crate) mod references;
pub(crate) mod sync;
pub(crate) mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::sync::WatchPlan;
use self::sync::{Command, SyncState};
use self::watch::ScopeKey;
use crate::control::publisher::TablePublisher;
use crate::names::ObjectName;

/// Watches the API server and feeds a [`TablePublisher`].
pub struct KubeProvider {
    client: kube::Client,
    plan: WatchPlan,
    /// The port maps as last seen, as object references (what Events are recorded on).
    port_map_refs: tokio::sync::watch::Sender<BTreeMap<ObjectName, ObjectReference>>,
}

/// Aborts the watcher task when its scope is dropped or restarted.
struct WatcherTask(tokio::task::JoinHandle<()>);

impl Drop for WatcherTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl KubeProvider {
    /// A provider for what `plan` names.
    pub fn new(client: kube::Client, plan: WatchPlan) -> Self {
        Self {
            client,
            plan,
            port_map_refs: tokio::sync::watch::channel(BTreeMap::new()).0,
        }
    }

    /// The API client it watches with.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The port maps as last seen, as object references, for recording Events on them
    /// (`crate::status::events`).
    pub fn port_map_refs(
        &self,
    ) -> tokio::sync::watch::Receiver<BTreeMap<ObjectName, ObjectReference>> {
        self.port_map_refs.subscribe()
    }

    /// Watches until `shutdown`, publishing a table after each batch of changes (the first
    /// only once every watcher has listed).
    pub async fn run(self, publisher: Arc<TablePublisher>, shutdown: CancellationToken) {
        let (tx, mut rx) = mpsc::channel(1024);
        let (mut state, commands) = SyncState::new(self.plan.clone(), std::time::Instant::now());
        let mut tasks: HashMap<ScopeKey, WatcherTask> = HashMap::new();
        let execute = |commands: Vec<Command>, tasks: &mut HashMap<ScopeKey, WatcherTask>| {
            for command in commands {
                match command {
                    Command::Start {
                        scope,
                        names,
                        generation,
                    } => {
                        tracing::debug!(watch = %scope, ?names, "starting watch");
                        let task = watch::spawn(
                            self.client.clone(),
                            scope.clone(),
                            &names,
                            generation,
                            tx.clone(),
                        );
                        tasks.insert(scope, WatcherTask(task));
                    }
                    Command::Stop(scope) => {
                        tracing::debug!(watch = %scope, "stopping watch");
                        tasks.remove(&scope);
                    }
                }
            }
        };
        execute(commands, &mut tasks);

        let metrics = publisher.metrics().clone();
        let handle = |state: &mut SyncState, message: watch::Message, now| {
            if let watch::Change::Failed(failure) = &message.change {
                metrics.kube_watch_error(message.scope.resource(), failure.kind.label());
            }
            state.handle(message, now)
        };
        loop {
            let hold = state.hold_until();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = rx.recv() => {
                    let Some(message) = message else { break };
                    let now = std::time::Instant::now();
                    let commands = handle(&mut state, message, now);
                    execute(commands, &mut tasks);
                    // Take what else is already there, so a burst becomes one table.
                    while let Ok(message) = rx.try_recv() {
                        let commands = handle(&mut state, message, now);
                        execute(commands, &mut tasks);
                    }
                }
                _ = sleep_until(hold), if hold.is_some() => {}
            }
            if let Some(batch) = state.take_batch(std::time::Instant::now()) {
                self.port_map_refs.send_replace(
                    self.plan
                        .port_maps
                        .iter()
                        .filter_map(|(_, name)| {
                            let cm = state.port_map(name)?;
                            Some((name.clone(), kube::Resource::object_ref(cm, &())))
                        })
                        .collect(),
                );
                publisher.update(|index| batch.into_iter().for_each(|op| op.run(index)));
                publisher.record_load(true);
            }
        }
        drop(tasks);
    }
}

async fn sleep_until(when: Option<std::time::Instant>) {
    if let Some(when) = when {
        tokio::time::sleep_until(tokio::time::Instant::from_std(when)).await;
    }
}
