//! Providers turn the outside world into Kubernetes objects for the Index.
//!
//! - [`file`]: `--config PATH`, a YAML file of ConfigMaps, Services and EndpointSlices
//!   (multi-document or `kind: List`), reloaded when it changes. Runs without a cluster.
//!   `config_file` reads it (regular files only, bounded size), for `dermaga check` too.
//! - [`kube`]: watchers on the Kubernetes API server (no `--config`).

pub(crate) mod config_file;
pub(crate) mod file;
pub mod kube;
pub mod manifest;
