//! The published routing table: one `ArcSwap` that the data plane reads lock-free, and a watch
//! channel that wakes the listener manager when a new table is published.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::table::RouteTable;

/// Holder of the current table.
#[derive(Debug)]
pub struct Snapshot {
    table: ArcSwap<RouteTable>,
    changed: watch::Sender<u64>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl Snapshot {
    /// Starts with an empty table (generation 0): no ports.
    pub fn new() -> Self {
        Self {
            table: ArcSwap::from_pointee(RouteTable::default()),
            changed: watch::channel(0).0,
        }
    }

    /// The current table: one atomic load, no lock.
    pub fn load(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Publishes a new table, numbering it after the current one, and wakes subscribers.
    pub fn publish(&self, mut table: RouteTable) -> u64 {
        let generation = self.table.load().generation + 1;
        table.generation = generation;
        self.table.store(Arc::new(table));
        self.changed.send_replace(generation);
        generation
    }

    /// A receiver that is marked changed at every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
