//! Providers turn the outside world into Kubernetes objects for the Index.
//!
//! - [`file`]: `--config PATH`, a YAML file of ConfigMaps, Services and EndpointSlices
//!   (multi-document or `kind: List`), reloaded when it changes. Runs without a cluster.
//! - The Kubernetes provider (watchers on the API server) feeds the same Index.

pub mod file;
pub mod manifest;
