//! Data-plane counters, shared by every listener. Plain atomics on the hot path; the ops layer
//! reads them (metrics, tests).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the TCP data plane.
#[derive(Debug, Default)]
pub struct TcpStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused at once because the port had no usable endpoint.
    pub refused_no_endpoints: AtomicU64,
    /// Connections closed because the PROXY header was bad, late or missing.
    pub proxy_header_errors: AtomicU64,
    /// Upstream connect attempts that failed (each one, retried or not).
    pub connect_failures: AtomicU64,
    /// Connections that needed more than one attempt and then succeeded.
    pub retried: AtomicU64,
    /// Connections that failed because every attempt failed.
    pub upstream_unavailable: AtomicU64,
    /// Connections forwarded with splice.
    pub spliced: AtomicU64,
    /// Connections forwarded with the buffered copy.
    pub copied: AtomicU64,
    /// Bytes client → upstream.
    pub bytes_to_upstream: AtomicU64,
    /// Bytes upstream → client.
    pub bytes_to_client: AtomicU64,
    /// Accept errors (EMFILE and the like).
    pub accept_errors: AtomicU64,
}

impl TcpStats {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
