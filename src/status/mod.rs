//! What dermaga writes back to Kubernetes, apart from reading it (the providers only read):
//! Warning Events on the port maps for configuration problems and ports that cannot be bound
//! ([`events`]). It sits on top, beside `ops`: it reads the control plane's problems and the
//! data plane's listener states.

pub(crate) mod events;
