//! Kubernetes provider: watches the port-map ConfigMaps and the Services and EndpointSlices
//! they reference, and feeds them to the same Index the file provider feeds.
//!
//! What is watched follows what is referenced, not the cluster's size:
//! - each port map by name (`metadata.name` field selector);
//! - per namespace that has referenced Services: its Services, of which only the referenced
//!   ones are kept (a Service has no label to select it by; a new reference in the namespace
//!   re-lists it), and the EndpointSlices of exactly the referenced Services
//!   (`kubernetes.io/service-name in (...)`), the objects that change with every pod.
//!
//! [`sync`] decides what to publish and when; [`watch`] runs the kube-rs watchers;
//! [`events`] records configuration problems as Events on the port maps.

pub mod access;
pub mod client;
pub mod events;
pub mod references;
pub mod sync;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::sync::{Command, SyncState};
use self::watch::ScopeKey;
use crate::control::controller::Controller;
use crate::data::listener::ListenerStatus;
use crate::names::{ObjectName, Protocol};

/// Watches the API server and feeds a [`Controller`].
pub struct KubeProvider {
    client: kube::Client,
    port_maps: Vec<(Protocol, ObjectName)>,
    reporter: kube::runtime::events::Reporter,
}

/// Aborts the watcher task when its scope is dropped or restarted.
struct WatcherTask(tokio::task::JoinHandle<()>);

impl Drop for WatcherTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl KubeProvider {
    /// A provider for the port maps named by the flags.
    pub fn new(client: kube::Client, port_maps: Vec<(Protocol, ObjectName)>) -> Self {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok();
        Self {
            client,
            port_maps,
            reporter: kube::runtime::events::Reporter {
                controller: "dermaga".into(),
                instance,
            },
        }
    }

    /// Watches until `shutdown`, publishing a table after each batch of changes (the first
    /// only once every watcher has listed).
    /// `listeners` is the listener manager's status, for Events on ports that cannot be bound.
    pub async fn run(
        self,
        controller: Arc<Controller>,
        listeners: tokio::sync::watch::Receiver<ListenerStatus>,
        shutdown: CancellationToken,
    ) {
        let (tx, mut rx) = mpsc::channel(1024);
        let (mut state, commands) =
            SyncState::new(self.port_maps.clone(), std::time::Instant::now());
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

        let (maps_tx, maps_rx) = tokio::sync::watch::channel(BTreeMap::new());
        let recorder = tokio::spawn(events::record(
            events::Reporting {
                client: self.client.clone(),
                reporter: self.reporter.clone(),
            },
            events::EventSources {
                problems: controller.subscribe_problems(),
                listeners,
                port_maps: maps_rx,
                map_of: self.port_maps.iter().cloned().collect(),
            },
            controller.metrics().clone(),
        ));

        let metrics = controller.metrics().clone();
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
                maps_tx.send_replace(
                    self.port_maps
                        .iter()
                        .filter_map(|(_, name)| {
                            let cm = state.port_map(name)?;
                            Some((name.clone(), kube::Resource::object_ref(cm, &())))
                        })
                        .collect(),
                );
                controller.update(|index| batch.into_iter().for_each(|op| op.run(index)));
                controller.record_load(true);
            }
        }
        drop(tasks);
        recorder.abort();
    }
}

async fn sleep_until(when: Option<std::time::Instant>) {
    if let Some(when) = when {
        tokio::time::sleep_until(tokio::time::Instant::from_std(when)).await;
    }
}
