//! The data plane's words for how a connection or flow went: how it ended ([`CloseReason`],
//! in the access log), why it was refused before forwarding ([`RefuseReason`]) and why an
//! upstream connect failed ([`ConnectFailure`]), both metric label values. Telemetry records
//! them; the data plane decides them.

use prometheus_client::encoding::EncodeLabelValue;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The client closed its side first; the backend then finished.
    ClientClosed,
    /// The backend closed its side first; the client then finished.
    BackendClosed,
    /// The port was removed (or the process stopped) and the drain timeout cut the connection.
    Drained,
    /// Refused at once: no usable endpoint.
    NoEndpoints,
    /// Closed: bad, missing or late PROXY protocol header.
    ProxyHeader,
    /// Closed: every connect attempt failed.
    UpstreamUnavailable,
    /// An I/O error on the client side.
    ClientError,
    /// An I/O error on the backend side.
    BackendError,
    /// No byte (TCP) or datagram (UDP) either way for the idle timeout.
    IdleTimeout,
    /// UDP: the flow's endpoint left the route; the next datagram starts a new flow.
    EndpointGone,
    /// Closed: a TLS passthrough port got no ClientHello it could route (not TLS, too large,
    /// too late, or a server name no TLSRoute takes).
    TlsServerName,
    /// UDP: the endpoint answered ICMP port-unreachable.
    UpstreamRefused,
    /// Refused: the source policy of the port (denied, over its per-source limits, or an
    /// untrusted PROXY peer).
    SourceRefused,
}

impl CloseReason {
    /// The name used in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::BackendClosed => "backend_closed",
            CloseReason::Drained => "drained",
            CloseReason::NoEndpoints => "no_endpoints",
            CloseReason::ProxyHeader => "proxy_header",
            CloseReason::UpstreamUnavailable => "upstream_unavailable",
            CloseReason::ClientError => "client_error",
            CloseReason::BackendError => "backend_error",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::EndpointGone => "endpoint_gone",
            CloseReason::UpstreamRefused => "upstream_refused",
            CloseReason::TlsServerName => "tls_server_name",
            CloseReason::SourceRefused => "source_refused",
        }
    }
}

/// Why a connection was refused or closed before forwarding.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefuseReason {
    /// The port had no usable endpoint.
    no_endpoints,
    /// The PROXY header was bad, missing or late.
    proxy_header,
    /// Every connect attempt failed.
    upstream_unavailable,
    /// Over `--max-connections`, `--max-connections-per-port` or the port's `max-connections`.
    max_connections,
    /// Accept failed for want of descriptors (EMFILE, ENFILE); reset with the spare one.
    out_of_descriptors,
    /// The weighted draw chose a backend that does not resolve (a missing Service or port, a
    /// Gateway API reference not permitted): its share of the connections is refused.
    invalid_backend,
    /// A TLS passthrough port got no ClientHello it could route: not TLS, over the size or
    /// time limit, or a server name no TLSRoute takes.
    tls_server_name,
    /// The client's address is not allowed on the port (`allow-source` / `deny-source`).
    source_denied,
    /// The client has `max-connections-per-source` connections open on the port.
    source_connections,
    /// The client opened connections faster than `new-connections-per-second` allows.
    source_rate,
    /// A PROXY-decoding port's peer is not in `proxy-trusted-sources` (`proxy-untrusted: reject`).
    proxy_untrusted,
}

/// Why an upstream connect failed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ConnectFailure {
    /// ECONNREFUSED: nothing listens there.
    refused,
    /// ECONNRESET during connect.
    reset,
    /// No answer within `--connect-timeout`.
    timeout,
    /// EHOSTUNREACH / ENETUNREACH.
    unreachable,
    /// Connected, then reset or closed by the endpoint before any byte moved either way (a
    /// listener closed with the connection still in its accept queue): the connection is tried
    /// on another endpoint.
    closed_before_data,
    /// Anything else.
    other,
}

impl ConnectFailure {
    /// Classifies a connect error.
    pub fn of(err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => Self::refused,
            Some(libc::ECONNRESET) => Self::reset,
            Some(libc::ETIMEDOUT) => Self::timeout,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => Self::unreachable,
            _ => Self::other,
        }
    }
}
