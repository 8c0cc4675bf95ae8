//! The integration tests, one binary (one link of the crate and its dependencies instead of one
//! per file): each module is what was a file of its own under `tests/`, `support` what they
//! share, `addresses` the registry of the loopback addresses they listen on. Real sockets on
//! 127.0.0.0/8, the real `dermaga` binary, the real kube-apiserver.

mod support;

mod addresses;
mod binary;
mod check;
mod config_file;
mod dashboard;
mod deploy;
mod doctor;
mod forwarding;
mod fuzz_corpus;
mod gateway_api;
mod image;
mod kube_provider;
mod layers;
mod limits;
mod ops;
mod policy;
mod port_range;
mod proxy_protocol;
mod resilience;
mod retry;
mod routing;
mod service_ports;
mod shutdown;
mod tls_passthrough;
mod udp;
mod weights;
