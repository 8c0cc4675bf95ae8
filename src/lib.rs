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
//! The modules are the crate's own; its public surface is the short list of re-exports at the
//! end (what the binary, the integration tests, loadtest and the fuzz targets use), so that a
//! change inside a layer is nobody else's business.
//!
//! Each layer uses only those below it (`tests/it/layers.rs` reads the `use` lines and checks):
//! - `names`, `sys`: the vocabulary and the one module with `unsafe`.
//! - `telemetry`: metrics, access log, logging, the data plane's outcome words.
//! - `control`: Index, pure `build()`, table diff, `control::publisher::TablePublisher`,
//!   snapshot; its `control::provider`s (the sources) sit above the data plane.
//! - `data`: listeners, TCP connections, UDP flows, forwarding, PROXY protocol, health.
//! - `gateway`: the gateway in-process, the entry point the tests use.
//! - `status`, `ops`, `process`, `cli`, `demo`: on top.

pub(crate) mod cli;
pub(crate) mod control;
pub(crate) mod data;
pub(crate) mod demo;
pub(crate) mod gateway;
pub(crate) mod names;
pub(crate) mod ops;
pub(crate) mod process;
pub(crate) mod status;
pub(crate) mod sys;
pub(crate) mod telemetry;

// The public surface.
pub use cli::{Cli, Command, RunArgs};
pub use control::build::build;
pub use control::configmap::{ReservedPorts, parse_port_map};
pub use control::fixture;
pub use control::gateway_api;
pub use control::index::{Index, IndexSettings, Object};
pub use control::provider::kube::access::{
    API_ACCESS, AccessScope, ApiAccess, DOCTOR_ACCESS, GATEWAY_API_ACCESS, SERVICE_PORTS_ACCESS,
};
pub use control::provider::manifest::parse_manifest;
pub use data::context::{TcpSettings, UdpSettings};
pub use data::health::CheckState;
pub use data::listener::{ListenAddress, PortState};
pub use data::proxy_protocol::{Decoded, decode, encode};
pub use demo::run as run_demo;
pub use gateway::{Gateway, GatewayOptions};
pub use names::{HealthKey, ListenPort, ObjectName, Protocol, ProxyVersion, RouteKey};
pub use ops::admin::AdminState;
pub use ops::admin::serve as serve_admin;
pub use ops::check::run as run_check;
pub use ops::doctor::run as run_doctor;
pub use process::{ACCESS_LOG_FLUSH_TIMEOUT, run};
pub use telemetry::access_log::{AccessLog, AccessLogFormat};
pub use telemetry::logging::init as init_logging;
pub use telemetry::metrics::Metrics;
pub use telemetry::outcome::{ConnectFailure, RefuseReason};
