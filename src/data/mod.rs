//! Data plane: listening sockets per route ([`listener`]), one task per TCP connection
//! (`tcp`) that picks an endpoint with retries and forwards with `splice(2)` (`forward`,
//! `pipes`, [`crate::sys`]) or a buffered copy, PROXY protocol framing ([`proxy_protocol`]), and
//! UDP flows with one connected upstream socket each (`udp`). Endpoint health (passive
//! ejection, active checks) is shared by every connection ([`health`]). Connection limits and
//! the out-of-descriptors refusal are applied at accept (`limits`), with each port's source
//! policy (allow/deny CIDRs, per-client caps and rates: `source_policy`); idle connections are cut
//! by a coarse per-connection timer (`idle`). TLS passthrough ports read the ClientHello's
//! server name first (`tls_hello`) to choose the route. What every connection or flow task is handed
//! is in [`context`]; the safe socket helpers they share (keepalive, reset, canonical
//! addresses) in `net`.

pub mod context;
pub(crate) mod endpoint_load;
pub(crate) mod forward;
pub mod health;
pub(crate) mod idle;
pub(crate) mod limits;
pub mod listener;
pub(crate) mod net;
pub(crate) mod pipes;
pub mod proxy_protocol;
pub(crate) mod source_policy;
pub(crate) mod tcp;
pub(crate) mod tls_hello;
pub(crate) mod udp;
