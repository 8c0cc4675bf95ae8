//! dermaga: a port-mapped TCP/UDP ingress gateway for Kubernetes. One IP, many ports; an
//! ingress-nginx `tcp-services` ConfigMap maps each port to a Service port, and connections go
//! straight to the Service's endpoints.
//!
//! ```text
//!  process (flags, signals, admin thread) · ops (admin, check) · status (Events)
//!  ──────────────────────────────────────────────────────────────────────────────
//!  sources: provider (file | kube) ──objects──▶ Index
//!                                                │ build()
//!  control:                 TablePublisher ──▶ RouteTable (ArcSwap snapshot)
//!                                                │ load once per connection
//!  data:    listener manager (one socket per port) → tcp: pick endpoint → connect (retry
//!           others) → splice / copy;  udp: flows with one upstream socket each
//!  ──────────────────────────────────────────────────────────────────────────────
//!  telemetry (metrics, access log, logging) · names (vocabulary) · sys (syscalls)
//! ```
//!
//! Each layer uses only those below it (`tests/it/layers.rs` reads the `use` lines and checks):
//! - [`names`], [`sys`]: the vocabulary and the one module with `unsafe`.
//! - [`telemetry`]: metrics, access log, logging, the data plane's outcome words.
//! - [`control`]: Index, pure `build()`, table diff, [`control::publisher::TablePublisher`],
//!   snapshot; its [`control::provider`]s (the sources) sit above the data plane.
//! - [`data`]: listeners, TCP connections, UDP flows, forwarding, PROXY protocol, health.
//! - [`gateway`]: the gateway in-process, the entry point the tests use.
//! - `status`, [`ops`], [`process`], [`cli`], [`demo`]: on top.

pub mod cli;
pub mod control;
pub mod data;
pub mod demo;
pub mod gateway;
pub mod names;
pub mod ops;
pub mod process;
pub(crate) mod status;
pub mod sys;
pub mod telemetry;
