//! Control plane: providers report Kubernetes objects, the [`index::Index`] holds them, the pure
//! [`build::build`] turns them into an immutable [`table::RouteTable`], and the
//! [`publisher::TablePublisher`] publishes it through the [`snapshot::Snapshot`].

pub mod build;
pub mod configmap;
pub(crate) mod diff;
pub mod fixture;
pub mod gateway_api;
pub mod gateway_status;
pub mod index;
pub mod provider;
pub mod publisher;
pub mod snapshot;
pub mod table;
