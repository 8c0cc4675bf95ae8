//! dermaga: a port-mapped TCP/UDP ingress gateway for Kubernetes. One IP, many ports; an
//! ingress-nginx `tcp-services` ConfigMap maps each port to a Service port, and connections go
//! straight to the Service's endpoints.
//!
//! ```text
//!  control plane                                  data plane
//!  provider (file | kube) ──objects──▶ Index       listener manager (one socket per port)
//!                                       │ build()     │ accept
//!                                       ▼             ▼
//!                     Controller ──▶ RouteTable ──▶ tcp: load table once → pick endpoint
//!                                   (ArcSwap)         → connect (retry others) → splice / copy
//!  ops: logging, signals (SIGTERM → stop accepting → drain → exit)
//! ```
//!
//! - [`control`]: providers, Index, pure `build()`, table diff, snapshot.
//! - [`data`]: listeners, TCP connections, forwarding, PROXY protocol, the syscall module.
//! - [`ops`]: logs and signals.
//! - [`gateway`]: the injectable entry point both `main` and tests use.

pub mod app;
pub mod cli;
pub mod control;
pub mod data;
pub mod demo;
pub mod gateway;
pub mod names;
pub mod ops;
pub mod status;
pub mod sys;
pub mod telemetry;
