//! Open watches: each has a filter (resource, namespace, selectors) and a bounded channel.
//! Every change is converted per watcher the way the real watch cache does (an object that
//! stops matching is sent as DELETED, one that starts matching as ADDED) and offered without
//! blocking; a watcher whose channel is full is cut, as the real server cuts slow watchers.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::history::{Change, ChangeType};
use crate::catalog::Resource;
use crate::conversion::{from_storage, storage_resource};
use crate::object;
use crate::selector::{FieldSelector, LabelSelector};

/// One event as a watcher receives it.
#[derive(Debug, Clone)]
pub(crate) enum WatchEvent {
    Added(Arc<Value>),
    Modified(Arc<Value>),
    Deleted(Arc<Value>),
    /// Progress notification at `revision`; `initial_events_end` marks the end of the initial
    /// events of a `sendInitialEvents` watch.
    Bookmark {
        revision: u64,
        initial_events_end: bool,
    },
}

/// Which objects a watcher (or a list) is interested in.
#[derive(Debug, Clone)]
pub(crate) struct ObjectFilter {
    pub resource: Resource,
    /// `None` for a cluster-wide request.
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl ObjectFilter {
    /// Whether `object` (of this filter's resource, in its stored shape) passes the filter.
    pub fn matches(&self, object: &Value) -> bool {
        let in_namespace = match &self.namespace {
            Some(namespace) => object::namespace(object) == namespace,
            None => true,
        };
        in_namespace && self.labels.matches(object) && self.fields.matches(object)
    }
}

/// One registered watcher.
struct Watcher {
    id: u64,
    filter: ObjectFilter,
    bookmarks: bool,
    sender: mpsc::Sender<WatchEvent>,
    cancel: CancellationToken,
}

/// What a new watcher gets back: its id, event channel and the token that cuts it.
pub(crate) struct Registration {
    pub id: u64,
    pub events: mpsc::Receiver<WatchEvent>,
    pub cancel: CancellationToken,
}

/// Every open watcher.
pub(crate) struct Watchers {
    list: Vec<Watcher>,
    next_id: u64,
    buffer: usize,
}

/// The event `filter` should see for `change` (of its storage resource), if any (the watch
/// cache's conversion), carrying the object in the shape of the filter's resource.
pub(crate) fn convert(filter: &ObjectFilter, change: &Change) -> Option<WatchEvent> {
    let shaped = |object: &Arc<Value>| from_storage(&filter.resource, object);
    let current_passes =
        change.change_type != ChangeType::Deleted && filter.matches(&change.object);
    let previous_passes = change
        .previous
        .as_deref()
        .is_some_and(|p| filter.matches(p));
    match (current_passes, previous_passes) {
        (true, false) => Some(WatchEvent::Added(shaped(&change.object))),
        (true, true) => Some(WatchEvent::Modified(shaped(&change.object))),
        (false, true) if change.change_type == ChangeType::Deleted => {
            Some(WatchEvent::Deleted(shaped(&change.object)))
        }
        (false, true) => {
            // The previous content, carrying the revision of the change that made it leave.
            let mut left = change.previous.as_deref().cloned().unwrap_or_default();
            object::set_resource_version(&mut left, change.revision);
            Some(WatchEvent::Deleted(shaped(&Arc::new(left))))
        }
        (false, false) => None,
    }
}

impl Watchers {
    pub fn new(buffer: usize) -> Self {
        Watchers {
            list: Vec::new(),
            next_id: 1,
            buffer: buffer.max(1),
        }
    }

    /// Registers a watcher; it sees every change dispatched from now on.
    pub fn register(&mut self, filter: ObjectFilter, bookmarks: bool) -> Registration {
        let (sender, events) = mpsc::channel(self.buffer);
        let cancel = CancellationToken::new();
        let id = self.next_id;
        self.next_id += 1;
        self.list.push(Watcher {
            id,
            filter,
            bookmarks,
            sender,
            cancel: cancel.clone(),
        });
        Registration { id, events, cancel }
    }

    /// Offers `change` to every watcher of its resource (or of another representation of it);
    /// cuts those that cannot keep up.
    pub fn dispatch(&mut self, change: &Change) {
        self.list.retain(|watcher| {
            if storage_resource(&watcher.filter.resource) != change.resource {
                return !watcher.sender.is_closed();
            }
            match convert(&watcher.filter, change) {
                None => !watcher.sender.is_closed(),
                Some(event) => match watcher.sender.try_send(event) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        watcher.cancel.cancel();
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                },
            }
        });
    }

    /// Offers a bookmark at `revision` to watcher `id` (dropped if its channel is full, as the
    /// real server drops bookmarks it cannot deliver at once).
    pub fn bookmark(&mut self, id: u64, revision: u64) {
        if let Some(watcher) = self.list.iter().find(|w| w.id == id && w.bookmarks) {
            let event = WatchEvent::Bookmark {
                revision,
                initial_events_end: false,
            };
            let _ = watcher.sender.try_send(event);
        }
    }

    /// Forgets watcher `id` (its stream ended).
    pub fn remove(&mut self, id: u64) {
        self.list.retain(|w| w.id != id);
    }

    /// Cuts every watcher: their streams end at once.
    pub fn cut_all(&mut self) {
        for watcher in self.list.drain(..) {
            watcher.cancel.cancel();
        }
    }
}
