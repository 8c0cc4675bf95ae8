//! One TCP connection through the gateway: read the table once, refuse at once when there is
//! nowhere to go, decode a PROXY header if the port asks for one, connect to an endpoint with
//! retries on others, send a PROXY header if asked, then forward until both sides are done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::forward::{ForwardMode, forward};
use super::pipes::PipePool;
use super::proxy_protocol::{self, Decoded};
use super::stats::TcpStats;
use crate::control::names::RouteKey;
use crate::control::snapshot::Snapshot;
use crate::control::table::Route;

/// Settings of the TCP data path.
#[derive(Debug, Clone)]
pub struct TcpSettings {
    /// Time allowed for one upstream connect.
    pub connect_timeout: Duration,
    /// Endpoints tried per connection at most (each a different endpoint).
    pub connect_attempts: usize,
    /// Time allowed for a client to send its PROXY header.
    pub proxy_header_timeout: Duration,
}

impl Default for TcpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            connect_attempts: 3,
            proxy_header_timeout: Duration::from_secs(5),
        }
    }
}

/// What every connection task shares.
#[derive(Debug)]
pub struct ConnContext {
    /// The routing table.
    pub snapshot: Arc<Snapshot>,
    /// Settings.
    pub settings: TcpSettings,
    /// Pipes for splice.
    pub pipes: Arc<PipePool>,
    /// Counters.
    pub stats: Arc<TcpStats>,
}

/// Closes `stream` with a reset (SO_LINGER 0), so the peer learns at once.
pub fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Handles one accepted connection to the end.
pub async fn serve_connection(
    ctx: &ConnContext,
    key: RouteKey,
    mut client: TcpStream,
    peer: SocketAddr,
) {
    let started = Instant::now();
    let route = ctx.snapshot.load().get(&key).cloned();
    let Some(route) = route.filter(|r| r.active_count() > 0) else {
        TcpStats::inc(&ctx.stats.refused_no_endpoints);
        tracing::debug!(port = %key, client = %peer, "no usable endpoint; connection refused");
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let local = client.local_addr().map(canonical).unwrap_or(peer);
    let (source, destination, early_data) = if route.spec.proxy.decode {
        let read = tokio::time::timeout(
            ctx.settings.proxy_header_timeout,
            proxy_protocol::read_header(&mut client),
        )
        .await;
        match read {
            Ok(Ok((
                Decoded::Proxied {
                    source,
                    destination,
                },
                rest,
            ))) => (source, destination, rest),
            Ok(Ok((Decoded::Local, rest))) => (peer, local, rest),
            Ok(Err(err)) => {
                TcpStats::inc(&ctx.stats.proxy_header_errors);
                tracing::warn!(port = %key, client = %peer, error = %err, "closing connection: bad PROXY protocol header");
                reset(client);
                return;
            }
            Err(_) => {
                TcpStats::inc(&ctx.stats.proxy_header_errors);
                tracing::warn!(port = %key, client = %peer, timeout = ?ctx.settings.proxy_header_timeout, "closing connection: no complete PROXY protocol header in time");
                reset(client);
                return;
            }
        }
    } else {
        (peer, local, Vec::new())
    };

    let Some((mut upstream, endpoint, attempts)) = connect(ctx, &route, source).await else {
        TcpStats::inc(&ctx.stats.upstream_unavailable);
        reset(client);
        return;
    };
    let spec = route.spec.clone();
    drop(route);

    let mut preamble = Vec::new();
    if spec.proxy.encode {
        preamble = proxy_protocol::encode(spec.options.send_proxy_version, source, destination);
    }
    preamble.extend_from_slice(&early_data);
    if !preamble.is_empty()
        && let Err(err) = upstream.write_all(&preamble).await
    {
        tracing::warn!(port = %key, client = %source, endpoint = %endpoint, error = %err, "writing to upstream failed");
        reset(client);
        reset(upstream);
        return;
    }

    let done = forward(&client, &upstream, &ctx.pipes).await;
    let stats = &ctx.stats;
    stats
        .bytes_to_upstream
        .fetch_add(done.to_upstream, Ordering::Relaxed);
    stats
        .bytes_to_client
        .fetch_add(done.to_client, Ordering::Relaxed);
    TcpStats::inc(match done.mode {
        ForwardMode::Splice => &stats.spliced,
        ForwardMode::Copy => &stats.copied,
    });
    match &done.error {
        None => {
            tracing::debug!(port = %key, client = %source, endpoint = %endpoint, attempts, to_upstream = done.to_upstream, to_client = done.to_client, mode = ?done.mode, duration = ?started.elapsed(), "connection closed")
        }
        Some(err) => {
            tracing::debug!(port = %key, client = %source, endpoint = %endpoint, attempts, to_upstream = done.to_upstream, to_client = done.to_client, mode = ?done.mode, duration = ?started.elapsed(), error = %err, "connection ended on error");
            // Tell both peers the stream broke, instead of a clean FIN that would read as success.
            reset(client);
            reset(upstream);
        }
    }
}

/// Tries the route's endpoints in round-robin order, a different one per attempt.
async fn connect(
    ctx: &ConnContext,
    route: &Route,
    client: SocketAddr,
) -> Option<(TcpStream, SocketAddr, usize)> {
    let attempts = ctx.settings.connect_attempts.max(1);
    let mut tried = 0;
    for endpoint in route.pick_order().take(attempts) {
        tried += 1;
        let result = tokio::time::timeout(
            ctx.settings.connect_timeout,
            TcpStream::connect(endpoint.addr),
        )
        .await;
        let error = match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                if tried > 1 {
                    TcpStats::inc(&ctx.stats.retried);
                }
                return Some((stream, endpoint.addr, tried));
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("timed out after {:?}", ctx.settings.connect_timeout),
        };
        TcpStats::inc(&ctx.stats.connect_failures);
        tracing::warn!(
            port = %route.key,
            service = %route.spec.service,
            endpoint = %endpoint.addr,
            target = endpoint.target.as_deref().unwrap_or("-"),
            attempt = tried,
            max_attempts = attempts,
            client = %client,
            error = %error,
            "upstream connect failed"
        );
    }
    tracing::warn!(port = %route.key, service = %route.spec.service, client = %client, attempts = tried, "no endpoint accepted the connection; closing client");
    None
}

/// `::ffff:a.b.c.d` → `a.b.c.d`, so a dual-stack listener reports IPv4 clients as IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
