//! UDP forwarding (`udp-services`): per port, one socket that receives client datagrams; per
//! client address, a flow with its own connected upstream socket to the chosen endpoint, so
//! replies come back on the right flow and leave from the port the client used.
//!
//! [`flows`] is the sans-io flow table; [`port`] is the tokio shell around it.

pub mod flows;
pub mod port;
