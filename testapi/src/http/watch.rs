//! Watch streams: a chunked `application/json` body with one `{"type":…,"object":…}` line per
//! event. Where the watch starts (current state, a replay from a resourceVersion, or an ERROR
//! 410 when that is older than the history), bookmarks, `sendInitialEvents`, `timeoutSeconds`,
//! and the cut when the client, `pause()`/`cut_watches()` or a full channel ends it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::list::wait_for_revision;
use super::options::{ListOptions, parse_resource_version};
use crate::Shared;
use crate::catalog::Resource;
use crate::status::Status;
use crate::store::{ObjectFilter, RevisionError, StartedWatch, WatchEvent, WatchStart};

/// Watch length when the client gives no `timeoutSeconds` (the real server picks 30-60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Encoded lines buffered between the watch task and the HTTP connection.
const BODY_BUFFER: usize = 16;

/// One encoded watch event line.
fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text = serde_json::to_vec(&json!({"type": event_type, "object": object}))
        .expect("JSON values serialize");
    text.push(b'\n');
    Bytes::from(text)
}

fn encode(resource: &Resource, event: &WatchEvent) -> Bytes {
    match event {
        WatchEvent::Added(object) => line("ADDED", object),
        WatchEvent::Modified(object) => line("MODIFIED", object),
        WatchEvent::Deleted(object) => line("DELETED", object),
        WatchEvent::Bookmark {
            revision,
            initial_events_end,
        } => {
            let mut metadata = json!({"resourceVersion": revision.to_string()});
            if *initial_events_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let object = json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata});
            line("BOOKMARK", &object)
        }
    }
}

/// Counts an open watch stream for as long as it lives.
struct OpenWatch(Arc<Shared>);

impl OpenWatch {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open_watches.fetch_add(1, Ordering::SeqCst);
        OpenWatch(shared)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Writes lines to the response body until the watch is cut, times out or the client leaves.
struct LineWriter {
    shared: Arc<Shared>,
    body: mpsc::Sender<Result<Bytes, Infallible>>,
    cancel: CancellationToken,
    deadline: Instant,
}

impl LineWriter {
    /// Sends one line; false when the stream must end.
    async fn send(&self, line: Bytes) -> bool {
        let size = line.len() as u64;
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep_until(self.deadline) => false,
            sent = self.body.send(Ok(line)) => {
                if sent.is_ok() {
                    self.shared.bytes_sent.fetch_add(size, Ordering::Relaxed);
                }
                sent.is_ok()
            }
        }
    }
}

fn streaming_response(receiver: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

/// A 200 watch response holding a single ERROR event, as the real server answers a watch it
/// cannot start after accepting the request (e.g. a too old resourceVersion).
fn error_stream(shared: &Arc<Shared>, status: Status) -> Response {
    let (sender, receiver) = mpsc::channel(1);
    let line = line("ERROR", &status.to_value());
    shared
        .bytes_sent
        .fetch_add(line.len() as u64, Ordering::Relaxed);
    sender.try_send(Ok(line)).expect("room for one line");
    streaming_response(receiver)
}

/// Starts a watch of `resource` in `namespace` (all when `None`).
pub(crate) async fn watch(
    shared: &Arc<Shared>,
    resource: &Resource,
    namespace: Option<String>,
    options: ListOptions,
) -> Result<Response, Status> {
    let requested = match options.resource_version.as_deref() {
        None => None,
        Some(text) => Some(parse_resource_version(text)?),
    };
    let start = match (options.send_initial_events, requested) {
        (Some(true), _) => WatchStart::CurrentState,
        (Some(false), None | Some(0)) => WatchStart::After(shared.registry.store.revision()),
        (None, None | Some(0)) => WatchStart::CurrentState,
        (_, Some(revision)) => WatchStart::After(revision),
    };
    if let Some(revision) = requested.filter(|r| *r > shared.registry.store.revision())
        && let Err(too_large) = wait_for_revision(shared, revision).await
    {
        return Ok(error_stream(shared, too_large));
    }
    let filter = ObjectFilter {
        resource: *resource,
        namespace,
        labels: options.labels,
        fields: options.fields,
    };
    let bookmarks = options.allow_watch_bookmarks;
    let started = match shared.registry.store.watch(filter, start, bookmarks) {
        Ok(started) => started,
        Err(RevisionError::TooOld { compacted }) => {
            let revision = requested.unwrap_or_default();
            let status = Status::expired(format!(
                "too old resource version: {revision} ({compacted})"
            ));
            return Ok(error_stream(shared, status));
        }
        Err(RevisionError::TooNew { current }) => {
            let status = Status::too_large_resource_version(requested.unwrap_or_default(), current);
            return Ok(error_stream(shared, status));
        }
    };
    let timeout = options
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let initial_events_end = options.send_initial_events == Some(true) && bookmarks;
    let (body, receiver) = mpsc::channel(BODY_BUFFER);
    let writer = LineWriter {
        shared: shared.clone(),
        body,
        cancel: started.registration.cancel.clone(),
        deadline: Instant::now() + timeout,
    };
    let interval =
        Duration::from_millis(shared.bookmark_interval_ms.load(Ordering::Relaxed).max(1));
    let task = WatchTask {
        resource: *resource,
        bookmarks,
        initial_events_end,
        interval,
    };
    tokio::spawn(task.run(writer, started, OpenWatch::new(shared.clone())));
    Ok(streaming_response(receiver))
}

/// What a running watch needs besides its writer and registration.
struct WatchTask {
    resource: Resource,
    bookmarks: bool,
    initial_events_end: bool,
    interval: Duration,
}

impl WatchTask {
    async fn run(self, writer: LineWriter, started: StartedWatch, _open: OpenWatch) {
        let StartedWatch {
            registration,
            initial,
            revision,
        } = started;
        let (id, mut events) = (registration.id, registration.events);
        let store = &writer.shared.registry.store;
        'stream: {
            for event in &initial {
                if !writer.send(encode(&self.resource, event)).await {
                    break 'stream;
                }
            }
            if self.initial_events_end {
                let end = WatchEvent::Bookmark {
                    revision,
                    initial_events_end: true,
                };
                if !writer.send(encode(&self.resource, &end)).await {
                    break 'stream;
                }
            }
            let mut ticker =
                tokio::time::interval_at(Instant::now() + self.interval, self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = writer.cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(writer.deadline) => break,
                    event = events.recv() => match event {
                        Some(event) => {
                            if !writer.send(encode(&self.resource, &event)).await {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = ticker.tick(), if self.bookmarks => store.bookmark(id),
                }
            }
        }
        store.unregister(id);
    }
}
