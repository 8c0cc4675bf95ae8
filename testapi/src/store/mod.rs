//! The in-memory object store: every object as JSON under one global, etcd-like revision
//! counter, with a bounded change history and the open watchers it notifies. All state sits
//! behind one mutex that is never held across an `.await`.
//!
//! Objects are kept per storage resource; a resource that is another representation of a
//! stored one (events.k8s.io Events, see [`crate::conversion`]) reads and writes the same
//! objects, converted at this boundary: every method takes and returns objects in the shape of
//! the resource it is given, while selectors are matched against the stored shape.

mod history;
mod watchers;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::watch;

pub(crate) use history::ChangeType;
use history::{Change, History};
pub(crate) use watchers::{ObjectFilter, Registration, WatchEvent};
use watchers::{Watchers, convert};

use crate::catalog::Resource;
use crate::conversion::{from_storage, storage_resource, to_storage};
use crate::object;
use crate::status::Status;

/// The storage key of an object: `namespace/name`, or `name` for cluster-scoped kinds.
pub(crate) fn storage_key(resource: &Resource, namespace: &str, name: &str) -> String {
    if resource.namespaced {
        format!("{namespace}/{name}")
    } else {
        name.to_string()
    }
}

/// Which state a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadAt {
    /// The newest state.
    Latest,
    /// The state right after `revision` (reconstructed from the history).
    Exact(u64),
}

/// Why a read at a revision is impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevisionError {
    /// Older than the history window; `compacted` is the newest forgotten revision.
    TooOld { compacted: u64 },
    /// Newer than anything stored yet.
    TooNew { current: u64 },
}

/// Where a new watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// Synthetic ADDED events for the current state, then changes.
    CurrentState,
    /// Changes after this revision, replayed from the history.
    After(u64),
}

/// A started watch: its registration and the events to send before any from the channel.
pub(crate) struct StartedWatch {
    pub registration: Registration,
    pub initial: Vec<WatchEvent>,
    /// Revision the initial events bring the watcher to.
    pub revision: u64,
}

/// A list result: `(key relative to the listed prefix, object)` in key order, and the revision read.
pub(crate) struct Listing {
    pub items: Vec<(String, Arc<Value>)>,
    pub revision: u64,
}

struct State {
    objects: BTreeMap<Resource, BTreeMap<String, Arc<Value>>>,
    revision: u64,
    history: History,
    watchers: Watchers,
}

/// The store; see the module docs.
pub(crate) struct Store {
    state: Mutex<State>,
    revision_sender: watch::Sender<u64>,
}

/// Default number of changes kept for watches and exact reads.
pub(crate) const HISTORY_CAPACITY: usize = 10_000;
/// Default number of undelivered events a watcher may have before it is cut.
pub(crate) const WATCH_BUFFER: usize = 1_000;

impl Store {
    pub fn new(history_capacity: usize, watch_buffer: usize) -> Self {
        let state = State {
            objects: BTreeMap::new(),
            revision: 0,
            history: History::new(history_capacity),
            watchers: Watchers::new(watch_buffer),
        };
        Store {
            state: Mutex::new(state),
            revision_sender: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest revision.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// A receiver that sees every new revision (to wait for a "too large" resourceVersion).
    pub fn subscribe_revision(&self) -> watch::Receiver<u64> {
        self.revision_sender.subscribe()
    }

    /// The object at `namespace`/`name`.
    pub fn get(&self, resource: &Resource, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let key = storage_key(resource, namespace, name);
        let stored = self
            .lock()
            .objects
            .get(&storage_resource(resource))?
            .get(&key)
            .cloned()?;
        Some(from_storage(resource, &stored))
    }

    /// Creates `object` (its metadata already complete but for resourceVersion).
    pub fn create(
        &self,
        resource: &Resource,
        object: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, Status> {
        let (namespace, name) = (
            object::namespace(&object).to_string(),
            object::name(&object).to_string(),
        );
        self.update_with(
            resource,
            &namespace,
            &name,
            dry_run,
            |current| match current {
                Some(_) => Err(Status::already_exists(resource, &name)),
                None => Ok(object),
            },
        )
        .map(|(object, _)| object)
    }

    /// Guaranteed update: `compute` gets the current object (or `None`) and returns the new one,
    /// which is created when there was none. Writing an identical object is a no-op (no new
    /// revision, no event), as in etcd-backed storage. Returns the stored object and whether it
    /// was created.
    pub fn update_with(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        dry_run: bool,
        compute: impl FnOnce(Option<&Value>) -> Result<Value, Status>,
    ) -> Result<(Arc<Value>, bool), Status> {
        let key = storage_key(resource, namespace, name);
        let storage = storage_resource(resource);
        let mut state = self.lock();
        let stored = state
            .objects
            .get(&storage)
            .and_then(|m| m.get(&key))
            .cloned();
        let current = stored.as_ref().map(|o| from_storage(resource, o));
        let mut next = to_storage(resource, compute(current.as_deref())?);
        if let (Some(stored), Some(current)) = (&stored, &current)
            && **stored == next
        {
            return Ok((current.clone(), false));
        }
        if dry_run {
            return Ok((from_storage(resource, &Arc::new(next)), current.is_none()));
        }
        let revision = state.revision + 1;
        object::set_resource_version(&mut next, revision);
        let next = Arc::new(next);
        let change_type = if current.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        state
            .objects
            .entry(storage)
            .or_default()
            .insert(key.clone(), next.clone());
        let change = Change {
            revision,
            resource: storage,
            key,
            change_type,
            object: next.clone(),
            previous: stored,
        };
        self.commit(&mut state, change);
        Ok((
            from_storage(resource, &next),
            change_type == ChangeType::Added,
        ))
    }

    /// Deletes the object after `check` accepted it; returns its last state carrying the
    /// delete's revision (as the real server returns and sends it).
    pub fn delete(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        dry_run: bool,
        check: impl FnOnce(&Value) -> Result<(), Status>,
    ) -> Result<Arc<Value>, Status> {
        let key = storage_key(resource, namespace, name);
        let storage = storage_resource(resource);
        let mut state = self.lock();
        let Some(current) = state
            .objects
            .get(&storage)
            .and_then(|m| m.get(&key))
            .cloned()
        else {
            return Err(Status::not_found(resource, name));
        };
        check(&from_storage(resource, &current))?;
        if dry_run {
            return Ok(from_storage(resource, &current));
        }
        let revision = state.revision + 1;
        if let Some(objects) = state.objects.get_mut(&storage) {
            objects.remove(&key);
        }
        let mut last = (*current).clone();
        object::set_resource_version(&mut last, revision);
        let last = Arc::new(last);
        let change = Change {
            revision,
            resource: storage,
            key,
            change_type: ChangeType::Deleted,
            object: last.clone(),
            previous: Some(current),
        };
        self.commit(&mut state, change);
        Ok(from_storage(resource, &last))
    }

    fn commit(&self, state: &mut State, change: Change) {
        state.revision = change.revision;
        let change = Arc::new(change);
        state.watchers.dispatch(&change);
        state.history.push(change);
        self.revision_sender.send_replace(state.revision);
    }

    /// The objects passing `filter` at `at`, in storage-key order.
    pub fn list(&self, filter: &ObjectFilter, at: ReadAt) -> Result<Listing, RevisionError> {
        let storage = storage_resource(&filter.resource);
        let state = self.lock();
        let revision = match at {
            ReadAt::Latest => state.revision,
            ReadAt::Exact(revision) if revision > state.revision => {
                return Err(RevisionError::TooNew {
                    current: state.revision,
                });
            }
            ReadAt::Exact(revision) if !state.history.covers(revision) => {
                return Err(RevisionError::TooOld {
                    compacted: state.history.compacted(),
                });
            }
            ReadAt::Exact(revision) => revision,
        };
        let mut objects = state.objects.get(&storage).cloned().unwrap_or_default();
        for change in state.history.since(revision).rev() {
            if change.resource != storage {
                continue;
            }
            match (&change.change_type, &change.previous) {
                (ChangeType::Added, _) => {
                    objects.remove(&change.key);
                }
                (_, Some(previous)) => {
                    objects.insert(change.key.clone(), previous.clone());
                }
                (_, None) => {}
            }
        }
        let prefix = match &filter.namespace {
            Some(namespace) if filter.resource.namespaced => format!("{namespace}/"),
            _ => String::new(),
        };
        let items = objects
            .into_iter()
            .filter(|(key, object)| key.starts_with(&prefix) && filter.matches(object))
            .map(|(key, object)| {
                let object = from_storage(&filter.resource, &object);
                (key[prefix.len()..].to_string(), object)
            })
            .collect();
        Ok(Listing { items, revision })
    }

    /// Registers a watcher and computes its initial events atomically with the registration,
    /// so it misses no change and sees none twice.
    pub fn watch(
        &self,
        filter: ObjectFilter,
        start: WatchStart,
        bookmarks: bool,
    ) -> Result<StartedWatch, RevisionError> {
        let storage = storage_resource(&filter.resource);
        let mut state = self.lock();
        let initial = match start {
            WatchStart::CurrentState => state
                .objects
                .get(&storage)
                .into_iter()
                .flat_map(|objects| objects.values())
                .filter(|object| filter.matches(object))
                .map(|object| WatchEvent::Added(from_storage(&filter.resource, object)))
                .collect(),
            WatchStart::After(revision) if !state.history.covers(revision) => {
                return Err(RevisionError::TooOld {
                    compacted: state.history.compacted(),
                });
            }
            WatchStart::After(revision) => state
                .history
                .since(revision)
                .filter(|change| change.resource == storage)
                .filter_map(|change| convert(&filter, change))
                .collect(),
        };
        let revision = state.revision;
        let registration = state.watchers.register(filter, bookmarks);
        Ok(StartedWatch {
            registration,
            initial,
            revision,
        })
    }

    /// Queues a bookmark at the newest revision for watcher `id`.
    pub fn bookmark(&self, id: u64) {
        let mut state = self.lock();
        let revision = state.revision;
        state.watchers.bookmark(id, revision);
    }

    /// Forgets watcher `id`.
    pub fn unregister(&self, id: u64) {
        self.lock().watchers.remove(id);
    }

    /// Ends every open watch.
    pub fn cut_watches(&self) {
        self.lock().watchers.cut_all();
    }

    /// Forgets the whole history: any older revision is now `Expired`.
    pub fn drop_history(&self) {
        let mut state = self.lock();
        let revision = state.revision;
        state.history.compact_to(revision);
    }
}
