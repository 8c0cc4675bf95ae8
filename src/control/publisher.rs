//! The control loop's single writer: owns the [`Index`], rebuilds the table after each batch of
//! provider updates, publishes it, and logs configuration problems once per change.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use super::build::build;
use super::diff::diff;
use super::index::Index;
use super::snapshot::Snapshot;
use super::table::{ConfigProblem, RouteTable};
use crate::names::RouteKey;
use crate::telemetry::metrics::Metrics;

/// Applies provider updates to the Index and publishes the resulting tables.
#[derive(Debug)]
pub struct TablePublisher {
    index: Mutex<Index>,
    snapshot: Arc<Snapshot>,
    metrics: Arc<Metrics>,
    /// Told of each problem when it first appears ([`crate::status::events`] records them as Events).
    problem_subscribers: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<ConfigProblem>>>,
}

impl TablePublisher {
    /// A publisher into `snapshot`.
    pub fn new(index: Index, snapshot: Arc<Snapshot>, metrics: Arc<Metrics>) -> Self {
        Self {
            index: Mutex::new(index),
            snapshot,
            metrics,
            problem_subscribers: Mutex::new(Vec::new()),
        }
    }

    /// A stream of configuration problems, each sent once when it appears in a published
    /// table (not again while it stays, nor on rebuilds that do not change it).
    pub fn subscribe_problems(&self) -> tokio::sync::mpsc::UnboundedReceiver<ConfigProblem> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.problem_subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }

    /// Records the outcome of a provider's load or sync in the metrics (a failed one leaves the
    /// table in force as it is).
    pub fn record_load(&self, success: bool) {
        self.metrics
            .config_loaded(success, self.snapshot.load().problems.len());
    }

    /// The metrics it records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The snapshot this publisher publishes to.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Changes the Index with `update`, rebuilds, and publishes if anything changed.
    /// Returns the published generation, or `None` when the table stayed the same.
    pub fn update(&self, update: impl FnOnce(&mut Index)) -> Option<u64> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        update(&mut index);
        let previous = self.snapshot.load();
        let table = build(&index, Some(&previous));
        drop(index);

        let old_problems: BTreeSet<String> =
            previous.problems.iter().map(|p| p.to_string()).collect();
        let mut appeared = Vec::new();
        for problem in &table.problems {
            let text = problem.to_string();
            if !old_problems.contains(&text) {
                tracing::warn!(problem = %text, reason = problem.reason(), "configuration problem");
                appeared.push(problem.clone());
            }
        }
        let new_problems: BTreeSet<String> = table.problems.iter().map(|p| p.to_string()).collect();
        for fixed in old_problems.difference(&new_problems) {
            tracing::info!(problem = %fixed, "configuration problem resolved");
        }

        let d = diff(&previous, &table);
        if d.is_empty()
            && previous.generation > 0
            && old_problems == new_problems
            && previous.gateway_status == table.gateway_status
        {
            return None;
        }
        // A range entry's ports are logged once, as the range, at its first port.
        let first_of_range = |table: &RouteTable, key: &RouteKey| {
            table
                .get(key)
                .and_then(|r| r.spec.range)
                .is_none_or(|span| span.first == key.port.get())
        };
        // `10000/TCP`, or `30000-30099/TCP` for a range.
        let ports = |route: Option<&Arc<crate::control::table::Route>>, key: &RouteKey| match route
            .and_then(|r| r.spec.range)
        {
            Some(span) => format!("{span}/{}", key.protocol),
            None => key.to_string(),
        };
        for key in d.added.iter().filter(|k| first_of_range(&table, k)) {
            let route = table.get(key).expect("added key is in the new table");
            tracing::info!(port = %ports(Some(route), key), route = %route.spec, endpoints = route.active_count(), "route added");
        }
        for key in d.changed.iter().filter(|k| first_of_range(&table, k)) {
            let route = table.get(key).expect("changed key is in the new table");
            tracing::info!(port = %ports(Some(route), key), route = %route.spec, endpoints = route.active_count(), "route changed");
        }
        for key in d.removed.iter().filter(|k| first_of_range(&previous, k)) {
            tracing::info!(port = %ports(previous.get(key), key), "route removed");
        }
        // Before the table is out: a new range port's first connection counts under its range.
        self.metrics.set_port_spans(table.in_force().spans());
        let generation = self.snapshot.publish(table);
        if !appeared.is_empty() {
            let mut subscribers = self
                .problem_subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            subscribers.retain(|tx| appeared.iter().all(|p| tx.send(p.clone()).is_ok()));
        }
        Some(generation)
    }
}
