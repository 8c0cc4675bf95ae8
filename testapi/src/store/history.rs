//! The bounded history of changes (like etcd's revisions before compaction): what a watch from
//! a given resourceVersion replays, and what an Exact list or a continue token reads back to.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use crate::catalog::Resource;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One stored change at one revision.
#[derive(Debug)]
pub(crate) struct Change {
    pub revision: u64,
    /// The storage resource (see [`crate::conversion::storage_resource`]).
    pub resource: Resource,
    /// Storage key of the object (`namespace/name`, or `name` when cluster-scoped).
    pub key: String,
    pub change_type: ChangeType,
    /// The object after the change, in its stored shape; for a delete, its last state carrying
    /// the delete's revision.
    pub object: Arc<Value>,
    /// The object before the change (none for an add).
    pub previous: Option<Arc<Value>>,
}

/// The last `capacity` changes; everything at or below `compacted` is forgotten.
#[derive(Debug)]
pub(crate) struct History {
    changes: VecDeque<Arc<Change>>,
    capacity: usize,
    compacted: u64,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        History {
            changes: VecDeque::new(),
            capacity: capacity.max(1),
            compacted: 0,
        }
    }

    /// Records a change, forgetting the oldest one when full.
    pub fn push(&mut self, change: Arc<Change>) {
        if self.changes.len() == self.capacity
            && let Some(oldest) = self.changes.pop_front()
        {
            self.compacted = oldest.revision;
        }
        self.changes.push_back(change);
    }

    /// Forgets everything up to and including `revision`.
    pub fn compact_to(&mut self, revision: u64) {
        self.changes.retain(|c| c.revision > revision);
        self.compacted = self.compacted.max(revision);
    }

    /// The newest revision no longer available: reading at or from an older one is `Expired`.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Whether every change after `revision` is still known.
    pub fn covers(&self, revision: u64) -> bool {
        revision >= self.compacted
    }

    /// The changes after `revision`, oldest first.
    pub fn since(&self, revision: u64) -> impl DoubleEndedIterator<Item = &Arc<Change>> {
        let start = self.changes.partition_point(|c| c.revision <= revision);
        self.changes.range(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::resources;

    fn change(revision: u64) -> Arc<Change> {
        Arc::new(Change {
            revision,
            resource: resources::CONFIGMAPS,
            key: format!("ns/{revision}"),
            change_type: ChangeType::Added,
            object: Arc::new(Value::Null),
            previous: None,
        })
    }

    #[test]
    fn bounded_and_compacted() {
        let mut history = History::new(2);
        for revision in 1..=3 {
            history.push(change(revision));
        }
        assert_eq!(history.compacted(), 1);
        assert!(!history.covers(0));
        assert!(history.covers(1));
        assert_eq!(
            history.since(1).map(|c| c.revision).collect::<Vec<_>>(),
            [2, 3]
        );
        history.compact_to(3);
        assert!(history.since(0).next().is_none());
        assert!(!history.covers(2));
    }
}
