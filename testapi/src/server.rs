//! [`ApiServer`]: starts the HTTP server on its own thread and runtime, and gives tests direct
//! store access and fault injection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::catalog::Resource;
use crate::registry::{Preconditions, Registry};
use crate::stats::{Recorder, RequestRecord, Stats};
use crate::status::Status;
use crate::store::{HISTORY_CAPACITY, ObjectFilter, ReadAt, Store, WATCH_BUFFER};
use crate::{http, kubeconfig};

/// State shared by the HTTP handlers, the watch tasks and every [`ApiServer`] clone.
pub(crate) struct Shared {
    pub registry: Registry,
    pub paused: AtomicBool,
    pub bookmark_interval_ms: AtomicU64,
    pub open_watches: AtomicUsize,
    pub bytes_sent: AtomicU64,
    pub recorder: Recorder,
    pub addr: SocketAddr,
}

/// Stops the server thread when the last [`ApiServer`] clone is dropped.
struct Lifetime {
    shutdown: CancellationToken,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running test API server; see the crate docs. Cloning gives another handle to the same
/// server; the server stops when the last handle is dropped.
#[derive(Clone)]
pub struct ApiServer {
    shared: Arc<Shared>,
    _lifetime: Arc<Lifetime>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts a server on `127.0.0.1` at a free port.
    pub async fn start() -> std::io::Result<ApiServer> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server on `addr`. It runs on a thread of its own (with its own Tokio runtime),
    /// so it keeps serving while the caller blocks, e.g. on a `kubectl` child process.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<ApiServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            registry: Registry::new(Store::new(HISTORY_CAPACITY, WATCH_BUFFER)),
            paused: AtomicBool::new(false),
            bookmark_interval_ms: AtomicU64::new(1000),
            open_watches: AtomicUsize::new(0),
            bytes_sent: AtomicU64::new(0),
            recorder: Recorder::default(),
            addr,
        });
        let shutdown = CancellationToken::new();
        let (ready, started) = tokio::sync::oneshot::channel();
        let (serving, stop) = (shared.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name(format!("testapi-{}", addr.port()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let server = axum::serve(listener, http::router(serving));
                    tokio::select! {
                        _ = server => {}
                        _ = stop.cancelled() => {}
                    }
                });
            })?;
        started
            .await
            .map_err(|_| std::io::Error::other("the server thread ended before serving"))??;
        Ok(ApiServer {
            shared,
            _lifetime: Arc::new(Lifetime { shutdown }),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig for this server: one cluster (`server` = [`Self::url`]), one user with no
    /// credentials, one context `testapi` with namespace `default`, set as current context.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig::kubeconfig_yaml(&self.url())
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Creates `object`, or replaces the existing one unconditionally (any
    /// `metadata.resourceVersion` in it is ignored), as another client writing through the API
    /// would: the resource comes from `apiVersion` and `kind`; the revision is bumped, watchers
    /// are notified, `uid`/`creationTimestamp` are filled (kept on replace) and defaults applied.
    /// Unlike an API request, `status` is stored as given (as if also written via `/status`).
    /// Namespaced objects need `metadata.namespace`. Returns the stored object.
    pub fn apply(&self, object: Value) -> Result<Value, Status> {
        self.shared
            .registry
            .apply(object)
            .map(|stored| (*stored).clone())
    }

    /// The stored object, with `kind` and `apiVersion`. Use `""` as namespace for
    /// cluster-scoped kinds.
    pub fn get(&self, resource: &Resource, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .registry
            .store
            .get(resource, namespace, name)
            .map(|object| (*object).clone())
    }

    /// Deletes the object as an API DELETE would (watchers see DELETED; a Namespace takes its
    /// contents with it). Returns its last state, or `None` when it did not exist.
    pub fn delete(&self, resource: &Resource, namespace: &str, name: &str) -> Option<Value> {
        let registry = &self.shared.registry;
        let deleted = registry.delete(resource, namespace, name, &Preconditions::default(), false);
        deleted.ok().map(|object| (*object).clone())
    }

    /// Every stored object of `resource` in `namespace` (all when `None`), in storage-key
    /// order, with `kind` and `apiVersion`.
    pub fn list(&self, resource: &Resource, namespace: Option<&str>) -> Vec<Value> {
        let filter = ObjectFilter {
            resource: *resource,
            namespace: namespace.map(str::to_string),
            labels: Default::default(),
            fields: Default::default(),
        };
        match self.shared.registry.store.list(&filter, ReadAt::Latest) {
            Ok(listing) => listing
                .items
                .into_iter()
                .map(|(_, object)| (*object).clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// From now on every request gets 503 (a Status with reason ServiceUnavailable), and every
    /// open watch is cut, until [`Self::resume`].
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
        self.shared.registry.store.cut_watches();
    }

    /// Serves requests again after [`Self::pause`].
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Forgets the event history: a watch, exact list or continue token from any
    /// resourceVersion older than the current one now gets 410 Expired.
    pub fn drop_history(&self) {
        self.shared.registry.store.drop_history();
    }

    /// Ends every open watch response now (the stream just ends, as on an apiserver restart).
    pub fn cut_watches(&self) {
        self.shared.registry.store.cut_watches();
    }

    /// How often watches opened from now on with `allowWatchBookmarks=true` get a BOOKMARK
    /// (default 1 s; a real apiserver sends one about every minute).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        let millis = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.shared
            .bookmark_interval_ms
            .store(millis, Ordering::Relaxed);
    }

    /// Counters: requests by (verb, resource), open watches, response bytes sent.
    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.shared.recorder.counts(),
            open_watches: self.shared.open_watches.load(Ordering::SeqCst),
            bytes_sent: self.shared.bytes_sent.load(Ordering::Relaxed),
        }
    }

    /// Every request so far (up to the first 100,000), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.recorder.records()
    }
}
