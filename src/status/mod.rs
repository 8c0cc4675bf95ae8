//! What dermaga writes back to Kubernetes, apart from reading it (the providers only read):
//! Warning Events on the port maps for configuration problems and ports that cannot be bound
//! ([`events`]), the status of the Gateway API objects it serves ([`gateway_api`]), and, with
//! `--manage-service-ports`, the LoadBalancer Service's ports ([`service_ports`]). It sits on top, beside `ops`: it reads the control plane's problems and the
//! data plane's listener states.

pub(crate) mod events;
pub(crate) mod gateway_api;
pub(crate) mod service_ports;
