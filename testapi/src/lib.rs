//! A test-only Kubernetes API server for dermaga's end-to-end tests.
//!
//! [`ApiServer::start`] serves, over plain HTTP on `127.0.0.1`, the part of the Kubernetes API
//! that dermaga and `kubectl` use, with the real server's semantics: core v1 `configmaps`,
//! `services`, `events` and `namespaces`, `discovery.k8s.io/v1` `endpointslices` and
//! `events.k8s.io/v1` `events`; discovery; get, list (label and field selectors, pagination
//! with continue tokens, resourceVersion semantics), watch (chunked JSON lines, replay from a
//! resourceVersion, 410 Expired, bookmarks, `sendInitialEvents`, per-watcher selector
//! transitions), create, update (optimistic concurrency), patch (JSON, merge and strategic
//! merge), delete and deletecollection; every error a `metav1.Status`. Objects are kept as JSON
//! under one global revision counter, like etcd. Tests can also write the store directly,
//! pause the server, cut watches, forget the history, and read request counters.
//!
//! As in a real cluster, `events.k8s.io/v1` and core `v1` Events are one collection in two
//! shapes: an Event written through either group is read, listed, watched, patched and deleted
//! through the other too (so `kubectl describe` shows Events recorded through events.k8s.io),
//! each answer in the shape of the group asked, with the field mapping of Kubernetes' events
//! conversion (`regarding` ↔ `involvedObject`, `note` ↔ `message`, `reportingController` ↔
//! `reportingComponent`, `deprecatedSource`/`deprecatedFirstTimestamp`/
//! `deprecatedLastTimestamp`/`deprecatedCount` ↔ `source`/`firstTimestamp`/`lastTimestamp`/
//! `count`) and shared metadata and resourceVersions. [`ApiServer::list`] and
//! [`ApiServer::get`] with [`resources::EVENTS`] or [`resources::EVENTS_V1`] likewise.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use dermaga_testapi::{ApiServer, resources};
//! let server = ApiServer::start().await?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! server.apply(serde_json::json!({
//!     "apiVersion": "v1", "kind": "ConfigMap",
//!     "metadata": {"name": "tcp-services", "namespace": "dermaga"},
//!     "data": {"10000": "default/web:80"}
//! })).expect("valid");
//! assert!(server.get(&resources::CONFIGMAPS, "dermaga", "tcp-services").is_some());
//! # Ok(()) }
//! ```
//!
//! # Differences from a real API server
//!
//! - **Namespaces are implicit**: objects may be created in a namespace that has no Namespace
//!   object (a real server answers 404). `default`, `kube-system`, `kube-public` and
//!   `kube-node-lease` exist from the start. Deleting a Namespace marks it Terminating
//!   (MODIFIED), deletes everything in it at once and then removes it (no namespace controller,
//!   no finalizer wait).
//! - **JSON answers**: request bodies are JSON, except that protobuf
//!   (`application/vnd.kubernetes.protobuf`, which kubectl's typed clients send for
//!   `kubectl create configmap` / `create namespace`) is decoded for ConfigMaps and Namespaces;
//!   other protobuf or YAML bodies get 415. Answers are JSON whatever `Accept` asks for: Table
//!   (`as=Table`) and aggregated discovery requests get the plain object, list or legacy
//!   discovery document, which kubectl accepts by falling back.
//! - **OpenAPI**: `/openapi/v3` lists each group version's paths and operations (with the
//!   `fieldValidation` parameter) but no schemas, so kubectl leaves validation to the server and
//!   computes strategic merge patches from its built-in types; `/openapi/v2` is 404.
//!   `fieldValidation=Strict` is accepted but unknown fields are stored, not rejected.
//! - **No server-side apply** (`application/apply-patch+yaml` gets 415) and no
//!   `metadata.managedFields`.
//! - **Schema**: objects are stored as given (unknown fields are kept, not rejected or
//!   pruned); only the defaults and validation dermaga's kinds need are implemented: names
//!   (RFC 1123 subdomain, RFC 1035 label for Services, RFC 1123 label for Namespaces),
//!   `generateName`, labels and annotation keys, Service defaults (type, session affinity, port
//!   protocol and targetPort, ClusterIP/NodePort allocation, IP families) and port checks,
//!   EndpointSlice port defaults, `addressType`, addresses and `generation`, Namespace
//!   finalizer, phase and `kubernetes.io/metadata.name` label.
//! - **Strategic merge patch** knows the patch strategies of these kinds only (Service
//!   `spec.ports` by `port`, `ownerReferences` by `uid`, `finalizers` as a set, status
//!   `conditions` by `type`; every other list is replaced); `$setElementOrder` puts the listed
//!   elements first and keeps the others after them in their order.
//! - **No subresources** (`/status`, `/scale`, ...), no authentication or authorization, no
//!   admission, no `kubernetes` Service, no `kube-root-ca.crt` ConfigMaps.
//! - **Field selectors** support `metadata.name` and `metadata.namespace` for every kind, plus
//!   the core Event fields (`involvedObject.*`, `reason`, `reportingComponent`, `source`,
//!   `type`), the events.k8s.io ones (`regarding.*`, `reason`, `reportingController`, `source`,
//!   `type`) and Namespace `status.phase`; other fields get 400.
//! - **Events** are not validated (a real server requires e.g. `eventTime`,
//!   `reportingController` and `reportingInstance` through events.k8s.io) and carry only the
//!   fields written: the zero values a Go server serializes (`firstTimestamp: null`, ...) are
//!   absent, except an empty `involvedObject` (`regarding`) when none was given.
//! - **Watch**: the watch channel holds 1,000 events per watcher and the history the last
//!   10,000 changes; bookmarks come every second by default (real: about a minute) and there is
//!   no bookmark just before `timeoutSeconds` ends a watch. A watch without `timeoutSeconds` ends
//!   after 30 minutes.
//! - Deleted objects are removed at once: there is no graceful deletion and no finalizer wait.
//! - A 503 while paused carries no `Retry-After`. Note that kube-rs clients retry 429/503/504
//!   with backoff by default (`Config::default_retry`), so a pause shows to them as slowness.

mod catalog;
mod conversion;
mod http;
mod kubeconfig;
mod object;
mod patch;
mod protobuf;
mod registry;
mod selector;
mod server;
mod stats;
mod status;
mod store;
mod validation;

pub use catalog::{Resource, resources};
pub use server::ApiServer;
pub(crate) use server::Shared;
pub use stats::{RequestRecord, Stats};
pub use status::{Status, StatusCause, StatusDetails};
