//! Request accounting: a record per request and counters by (verb, resource), open watches
//! and response bytes, so tests can assert how a client used the API.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::catalog::Resource;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (without `?`).
    pub query: String,
    /// Kubernetes audit verb: get, list, watch, create, update, patch, delete, deletecollection
    /// (`get` for discovery, `unknown` for other methods).
    pub verb: String,
    /// Group-qualified resource (`configmaps`, `endpointslices.discovery.k8s.io`); `None` for
    /// discovery and unknown paths.
    pub resource: Option<String>,
    /// Namespace in the path, if any.
    pub namespace: Option<String>,
    /// HTTP status code of the answer (200 for a watch that started streaming).
    pub status: u16,
    /// `User-Agent` header.
    pub user_agent: String,
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests by (verb, group-qualified resource); discovery and unknown paths count under
    /// resource `""`.
    pub requests: BTreeMap<(String, String), u64>,
    /// Watch streams open now.
    pub open_watches: usize,
    /// Response body bytes sent in total (watch lines included).
    pub bytes_sent: u64,
}

impl Stats {
    /// Requests with `verb` on `resource`.
    pub fn count(&self, verb: &str, resource: &Resource) -> u64 {
        let key = (verb.to_string(), resource.group_resource());
        self.requests.get(&key).copied().unwrap_or(0)
    }

    /// Requests with `verb` on any resource.
    pub fn total(&self, verb: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Most request records kept (counters keep counting past it).
const MAX_RECORDS: usize = 100_000;

/// Collects [`RequestRecord`]s and per-(verb, resource) counts.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    inner: Mutex<RecorderState>,
}

#[derive(Debug, Default)]
struct RecorderState {
    records: Vec<RequestRecord>,
    counts: BTreeMap<(String, String), u64>,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record(&self, record: RequestRecord) {
        let mut state = self.lock();
        let key = (
            record.verb.clone(),
            record.resource.clone().unwrap_or_default(),
        );
        *state.counts.entry(key).or_default() += 1;
        if state.records.len() < MAX_RECORDS {
            state.records.push(record);
        }
    }

    pub fn records(&self) -> Vec<RequestRecord> {
        self.lock().records.clone()
    }

    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        self.lock().counts.clone()
    }
}
