//! One TCP connection through the gateway: read the table once, refuse at once when there is
//! nowhere to go, on a TLS passthrough port read the ClientHello's server name to choose the
//! route (its bytes then go first to the endpoint), decode a PROXY header if the port asks
//! for one, connect to an endpoint with
//! retries on others, send a PROXY header if asked, then forward until both sides are done or
//! the port's drain timeout cuts it. Every connection ends with metrics and one access-log record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::context::ConnContext;
use super::endpoint_load::LoadHold;
use super::forward::{ForwardMode, Progress, Side, forward};
use super::idle::{self, Activity};
use super::limits::Slot;
use super::net::{canonical, keepalive, reset, reset_on_close};
use super::proxy_protocol::{self, Decoded};
use super::tls_hello;
use crate::control::configmap::{Balance, UntrustedProxy};
use crate::control::table::{Endpoint, Route};
use crate::names::{HealthKey, ObjectName, RouteKey};
use crate::telemetry::access_log::AccessRecord;
use crate::telemetry::log_throttle::{WarnKey, WarnReason};
use crate::telemetry::metrics::PortMetrics;
use crate::telemetry::outcome::{CloseReason, ConnectFailure, RefuseReason};

/// What is known about a connection when it ends.
struct Outcome {
    client: SocketAddr,
    endpoint: Option<SocketAddr>,
    pod: Option<Arc<str>>,
    attempts: u32,
    progress: Progress,
    close: CloseReason,
    error: Option<String>,
    /// The route the connection took (a TLS port's: the one its server name chose).
    gateway_route: Option<Arc<str>>,
    server_name: Option<Box<str>>,
    /// The connection counted on its endpoint (ports balanced by load only).
    load: Option<LoadHold>,
}

/// Decrements the active-connections gauge and gives the connection's slot back however the
/// connection ends.
struct Active(Arc<PortMetrics>, Option<Slot>);

impl Drop for Active {
    fn drop(&mut self) {
        // The slot first: once the gauge says a connection is gone, its slot is free too.
        drop(self.1.take());
        self.0.active.dec();
    }
}

/// Handles one accepted connection to the end; `route` is the port's route in the table read at
/// accept (`None`: the port has just left the table), `slot` its place in the connection counts;
/// `close` cuts it (drain timeout). The returned future is the connection's task; it owns what
/// it needs, so that nothing is held twice by a wrapper.
pub async fn serve_connection(
    ctx: Arc<ConnContext>,
    key: RouteKey,
    route: Option<Arc<Route>>,
    slot: Slot,
    client: TcpStream,
    peer: SocketAddr,
    close: CancellationToken,
) {
    let (ctx, close) = (&*ctx, &close);
    let started = Instant::now();
    let pm = {
        let unknown = ObjectName::new("", "");
        let service = route.as_ref().map_or(&unknown, |r| &r.spec.service);
        ctx.metrics.port(key, service)
    };
    pm.accepted.inc();
    pm.active.inc();
    let mut active = Active(pm, Some(slot));
    let mut outcome = Outcome {
        client: peer,
        endpoint: None,
        pod: None,
        attempts: 0,
        progress: Progress::default(),
        close: CloseReason::NoEndpoints,
        error: None,
        gateway_route: None,
        server_name: None,
        load: None,
    };
    // A TLS passthrough port has no endpoints of its own: its ClientHello chooses the route
    // (in `establish`).
    match route.filter(|r| r.active_count() > 0 || !r.sni.is_empty()) {
        None => {
            active.0.refused(RefuseReason::no_endpoints);
            tracing::debug!(port = %key, client = %peer, "no usable endpoint; connection refused");
            reset(client);
        }
        Some(route) => {
            // Boxed: the set-up's state (PROXY header, connects, timers) is several times the
            // forwarding state and would otherwise stay allocated for the connection's life.
            let mut established = Box::pin(establish(
                ctx,
                key,
                route,
                client,
                peer,
                close,
                (&active.0, &mut active.1),
                &mut outcome,
            ))
            .await;
            if let Some(established) = &mut established {
                relay(ctx, key, established, close, &active.0, &mut outcome).await;
            }
            drop(established);
        }
    }
    finish(ctx, key, started, active, peer, outcome);
}

/// Records the connection's end: metrics and the access log.
fn finish(
    ctx: &ConnContext,
    key: RouteKey,
    started: Instant,
    active: Active,
    peer: SocketAddr,
    outcome: Outcome,
) {
    let pm = &active.0;
    let elapsed = started.elapsed();
    pm.duration.observe(elapsed.as_secs_f64());
    pm.bytes_received.inc_by(outcome.progress.to_upstream);
    pm.bytes_sent.inc_by(outcome.progress.to_client);
    match outcome.progress.mode {
        Some(ForwardMode::Splice) => ctx.metrics.global.spliced.inc(),
        Some(ForwardMode::Copy) => ctx.metrics.global.copied.inc(),
        None => 0,
    };
    if ctx.access_log.enabled() {
        ctx.access_log.record(AccessRecord {
            ended: std::time::SystemTime::now(),
            port: key.port.get(),
            route: active.0.clone(),
            client: outcome.client,
            peer,
            endpoint: outcome.endpoint,
            pod: outcome.pod,
            attempts: outcome.attempts,
            bytes_received: outcome.progress.to_upstream,
            bytes_sent: outcome.progress.to_client,
            duration: elapsed,
            close: outcome.close,
            error: outcome.error,
            gateway_route: outcome.gateway_route,
            server_name: outcome.server_name.map(String::from),
        });
    }
}

/// Reads the ClientHello (bounded in size by [`tls_hello::MAX_HELLO`], in time by
/// `--proxy-header-timeout`, and cut by the drain) and returns the route its server name
/// chooses, with the bytes read (to send to the endpoint first). `Err`: nothing routable;
/// `outcome` says why, and a warning is logged (throttled).
async fn choose_by_server_name(
    ctx: &ConnContext,
    key: RouteKey,
    port: &Route,
    client: &mut TcpStream,
    peer: SocketAddr,
    close: &CancellationToken,
    outcome: &mut Outcome,
) -> Result<(Arc<Route>, Vec<u8>), ()> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut bytes = Vec::with_capacity(1024);
        loop {
            match tls_hello::server_name(&bytes) {
                Ok(Some(name)) => return Ok((name, bytes)),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let n = client
                .read_buf(&mut bytes)
                .await
                .map_err(|e| format!("reading the ClientHello: {e}"))?;
            if n == 0 {
                return Err("the client closed before a complete ClientHello".to_owned());
            }
        }
    };
    let read = tokio::select! {
        r = tokio::time::timeout(ctx.settings.proxy_header_timeout, read) => r,
        _ = close.cancelled() => {
            outcome.error = Some("drained while reading the ClientHello".to_owned());
            return Err(());
        }
    };
    let error = match read {
        Err(_) => format!(
            "no complete ClientHello within {:?}",
            ctx.settings.proxy_header_timeout
        ),
        Ok(Err(e)) => e,
        Ok(Ok((name, bytes))) => match port.by_server_name(name.as_deref()) {
            Some((route, hostname)) => {
                ctx.metrics.tls_connection(key.port.get(), hostname);
                outcome.server_name = name.map(String::into_boxed_str);
                return Ok((route.clone(), bytes));
            }
            None => {
                let error = match &name {
                    Some(n) => format!("no TLSRoute takes server name {n:?}"),
                    None => "the ClientHello names no server, and no TLSRoute takes every name"
                        .to_owned(),
                };
                outcome.server_name = name.map(String::into_boxed_str);
                error
            }
        },
    };
    let warn = WarnKey {
        port: key,
        endpoint: None,
        reason: WarnReason::TlsServerName,
    };
    if let Some(suppressed) = ctx.warnings.note(warn) {
        tracing::warn!(port = %key, client = %peer, %error, suppressed, "closing connection: no route for its TLS ClientHello");
    }
    outcome.error = Some(error);
    Err(())
}

/// A connection ready to forward: the client, the upstream it is connected to (the PROXY
/// header, if any, sent), and what forwarding needs from the route.
struct Established {
    client: TcpStream,
    upstream: TcpStream,
    /// The client's address (from its PROXY header when it sent one).
    source: SocketAddr,
    activity: Option<Box<Activity>>,
}

/// Reads the client's PROXY header if the port asks for one, connects to an endpoint (with
/// retries), sends a PROXY header if asked. `None`: the connection was refused or cut, both
/// sockets are closed and `outcome` says why.
#[allow(clippy::too_many_arguments)]
async fn establish(
    ctx: &ConnContext,
    key: RouteKey,
    route: Arc<Route>,
    mut client: TcpStream,
    peer: SocketAddr,
    close: &CancellationToken,
    (pm, slot): (&PortMetrics, &mut Option<Slot>),
    outcome: &mut Outcome,
) -> Option<Established> {
    // A TLS passthrough port: the ClientHello's server name chooses the route; its bytes go
    // to the endpoint first.
    let (route, hello) = if route.sni.is_empty() {
        (route, Vec::new())
    } else {
        match choose_by_server_name(ctx, key, &route, &mut client, peer, close, outcome).await {
            Ok(chosen) => chosen,
            Err(()) => {
                pm.refused(RefuseReason::tls_server_name);
                outcome.close = CloseReason::TlsServerName;
                reset(client);
                return None;
            }
        }
    };
    outcome.gateway_route = route.route_label.clone();
    if route.active_count() == 0 {
        pm.refused(RefuseReason::no_endpoints);
        reset(client);
        return None;
    }
    // TCP_NODELAY and keepalive come from the listening socket. The local address (one
    // syscall) is needed only to read or write a PROXY header.
    let local = if route.spec.proxy.decode || route.spec.proxy.encode {
        client.local_addr().map(canonical).unwrap_or(peer)
    } else {
        peer
    };
    let policy = &route.spec.options.sources;
    let mut decode = route.spec.proxy.decode;
    if decode && !policy.trusts_proxy_from(peer.ip()) {
        match policy.proxy_untrusted {
            UntrustedProxy::Direct => decode = false,
            UntrustedProxy::Reject => {
                refuse_by_policy(ctx, key, pm, peer, RefuseReason::proxy_untrusted);
                outcome.close = CloseReason::SourceRefused;
                reset(client);
                return None;
            }
        }
    }
    let (source, destination, early_data) = if decode {
        // The drain deadline cuts the wait too: a client that never sends its header must not
        // hold a shutdown or a port's drain past the grace.
        let read = tokio::select! {
            r = tokio::time::timeout(
                ctx.settings.proxy_header_timeout,
                proxy_protocol::read_header(&mut client),
            ) => Some(r),
            _ = close.cancelled() => None,
        };
        let Some(read) = read else {
            outcome.close = CloseReason::Drained;
            reset(client);
            return None;
        };
        let error = match read {
            Ok(Ok((
                Decoded::Proxied {
                    source,
                    destination,
                },
                rest,
            ))) => Ok((source, destination, rest)),
            Ok(Ok((Decoded::Local, rest))) => Ok((peer, local, rest)),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "no complete PROXY protocol header within {:?}",
                ctx.settings.proxy_header_timeout
            )),
        };
        match error {
            Ok(decoded) => decoded,
            Err(error) => {
                pm.refused(RefuseReason::proxy_header);
                let warn = WarnKey {
                    port: key,
                    endpoint: None,
                    reason: WarnReason::ProxyHeader,
                };
                if let Some(suppressed) = ctx.warnings.note(warn) {
                    tracing::warn!(port = %key, client = %peer, error = %error, suppressed, "closing connection: bad PROXY protocol header");
                }
                outcome.close = CloseReason::ProxyHeader;
                outcome.error = Some(error);
                reset(client);
                return None;
            }
        }
    } else {
        // A TLS passthrough port's ClientHello, read to choose the route.
        (peer, local, hello)
    };
    outcome.client = source;
    // A PROXY-decoding port applies its source policy to the client the header (or the
    // untrusted peer itself) names; the others did at accept.
    if route.spec.proxy.decode
        && policy.is_active()
        && let Some(slot) = slot
        && let Err(reason) = slot.admit_source(policy, source.ip(), Instant::now())
    {
        refuse_by_policy(ctx, key, pm, source, reason);
        outcome.close = CloseReason::SourceRefused;
        reset(client);
        return None;
    }

    // Only these are needed once connected.
    let (encode, version) = (
        route.spec.proxy.encode,
        route.spec.options.send_proxy_version,
    );
    let mut preamble = Vec::new();
    if encode {
        preamble = proxy_protocol::encode(version, source, destination);
    }
    preamble.extend_from_slice(&early_data);
    // Client bytes read along with the PROXY header count as received; our own header does not.
    outcome.progress.to_upstream = early_data.len() as u64;
    // Safe to try elsewhere: no client byte has gone to the endpoint (our own PROXY header
    // carries none of the client's data).
    let retry_before_data =
        early_data.is_empty() && route.spec.options.retry_before_data.unwrap_or(true);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let upstream = loop {
        let connected = tokio::select! {
            c = connect(ctx, &route, source, pm, outcome, &tried) => Some(c),
            _ = close.cancelled() => None,
        };
        let Some(connected) = connected else {
            outcome.close = CloseReason::Drained;
            reset(client);
            return None;
        };
        let Ok(mut upstream) = connected else {
            let reason = connected
                .err()
                .unwrap_or(RefuseReason::upstream_unavailable);
            pm.refused(reason);
            outcome.close = CloseReason::UpstreamUnavailable;
            reset(client);
            return None;
        };
        if !preamble.is_empty()
            && let Err(err) = upstream.write_all(&preamble).await
        {
            tracing::debug!(port = %key, client = %source, error = %err, "writing to upstream failed");
            outcome.close = CloseReason::BackendError;
            outcome.error = Some(err.to_string());
            reset(client);
            reset(upstream);
            return None;
        }
        // Only worth a wait (and two peeks) when there is another endpoint to try.
        let another = (outcome.attempts as usize)
            < connect_attempts(ctx, &route).min(route.active_count())
            && tried.len() + 1 < route.active_count();
        if !retry_before_data || !another {
            break upstream;
        }
        let moved = tokio::select! {
            m = first_move(&client, &upstream, connect_timeout(ctx, &route)) => m,
            _ = close.cancelled() => Ok(()),
        };
        let Err(error) = moved else { break upstream };
        // Nothing reached the backend and nothing reached the client: as good as a failed
        // connect. Count it so, and try another endpoint.
        let endpoint = outcome.endpoint.expect("connected to an endpoint");
        let pod = outcome.pod.clone();
        pm.connect_failed(endpoint, pod.as_deref(), ConnectFailure::closed_before_data);
        ctx.health
            .connect_failed(endpoint, pod.as_ref(), Instant::now());
        let warn = WarnKey {
            port: key,
            endpoint: Some(endpoint),
            reason: WarnReason::Connect(ConnectFailure::closed_before_data),
        };
        if let Some(suppressed) = ctx.warnings.note(warn) {
            tracing::warn!(
                port = %key,
                endpoint = %endpoint,
                pod = pod.as_deref().unwrap_or("-"),
                attempt = outcome.attempts,
                client = %source,
                error = %error,
                suppressed,
                "upstream closed the connection before any byte moved; trying another endpoint"
            );
        }
        outcome.error = Some(format!("{endpoint}: {error}"));
        tried.push(endpoint);
        drop(upstream);
    };
    let activity = Activity::watch(
        route
            .spec
            .options
            .idle_timeout
            .unwrap_or(ctx.settings.idle_timeout),
    );
    drop(route);
    Some(Established {
        client,
        upstream,
        source,
        activity,
    })
}

/// The port's `connect-attempts`, or the flag's.
fn connect_attempts(ctx: &ConnContext, route: &Route) -> usize {
    route
        .spec
        .options
        .connect_attempts
        .unwrap_or(ctx.settings.connect_attempts)
}

/// The port's `connect-timeout`, or the flag's.
fn connect_timeout(ctx: &ConnContext, route: &Route) -> Duration {
    route
        .spec
        .options
        .connect_timeout
        .unwrap_or(ctx.settings.connect_timeout)
}

/// Counts and logs (through the warning throttle) a connection the port's source policy
/// refused after accept (PROXY-decoding ports).
fn refuse_by_policy(
    ctx: &ConnContext,
    key: RouteKey,
    pm: &PortMetrics,
    client: SocketAddr,
    reason: RefuseReason,
) {
    pm.refused(reason);
    let warn = WarnKey {
        port: key,
        endpoint: None,
        reason: WarnReason::SourcePolicy(reason),
    };
    if let Some(suppressed) = ctx.warnings.note(warn) {
        let why = WarnReason::SourcePolicy(reason);
        tracing::warn!(port = %key, client = %client, suppressed, "{why}: connection refused");
    }
}

/// Forwards until both sides are done, the drain deadline or the idle timeout cuts it, or a
/// socket fails, and says how in `outcome`; a cut or a failure makes the sockets' close (when
/// the caller drops them) a reset.
/// The connection is borrowed, not moved in: a moved-in value would be held twice in the
/// connection's future (as the argument and as its destructured parts).
async fn relay(
    ctx: &ConnContext,
    key: RouteKey,
    established: &mut Established,
    close: &CancellationToken,
    pm: &PortMetrics,
    outcome: &mut Outcome,
) {
    let Established {
        client,
        upstream,
        source,
        activity,
    } = established;
    let source = *source;
    let activity = activity.as_deref();
    let result = tokio::select! {
        r = forward(client, upstream, &ctx.pipes, &mut outcome.progress, activity) => Ok(r),
        _ = close.cancelled() => Err(CloseReason::Drained),
        _ = idle::expired(activity) => Err(CloseReason::IdleTimeout),
    };
    match result {
        Err(cut) => {
            if cut == CloseReason::IdleTimeout {
                pm.idle_timeouts.inc();
                let timeout = activity.map(Activity::timeout);
                tracing::debug!(port = %key, client = %source, timeout = ?timeout, "closing idle connection");
            }
            outcome.close = cut;
            // A cut, not a close: neither peer may take it for the other's clean end (a write
            // stuck for the whole idle timeout would otherwise look delivered).
            reset_on_close(client);
            reset_on_close(upstream);
        }
        Ok(Ok(())) => {
            outcome.close = match outcome.progress.first_eof {
                Some(Side::Upstream) => CloseReason::BackendClosed,
                _ => CloseReason::ClientClosed,
            };
        }
        Ok(Err(err)) => {
            tracing::debug!(port = %key, client = %source, endpoint = ?outcome.endpoint, error = %err, "connection ended on error");
            outcome.close = match err.side {
                Side::Client => CloseReason::ClientError,
                Side::Upstream => CloseReason::BackendError,
            };
            outcome.error = Some(err.source.to_string());
            // Tell both peers the stream broke, instead of a clean FIN that would read as success.
            reset_on_close(client);
            reset_on_close(upstream);
        }
    }
}

/// Waits until a byte moves first: `Ok` when the client has sent something (data or its EOF)
/// or the upstream has data, or when nothing happened within `within`; `Err` when the upstream
/// closed or reset the connection first, before any byte moved either way. Peeks, so nothing
/// is consumed (a socket's readiness alone says nothing until a read has found it empty).
async fn first_move(
    client: &TcpStream,
    upstream: &TcpStream,
    within: Duration,
) -> Result<(), String> {
    let (mut from_client, mut from_upstream) = ([0u8; 1], [0u8; 1]);
    tokio::select! {
        biased;
        _ = client.peek(&mut from_client) => Ok(()),
        peeked = upstream.peek(&mut from_upstream) => match peeked {
            Ok(0) => Err("closed (FIN) before sending anything".to_owned()),
            Ok(_) => Ok(()),
            Err(err) => Err(err.to_string()),
        },
        _ = tokio::time::sleep(within) => Ok(()),
    }
}

/// Tries the route's endpoints in round-robin order, a different one per attempt, skipping
/// unhealthy ones (ejected, or failing active checks) unless all are (then all are tried), and
/// those in `tried`; at most `--connect-attempts` in all, counting the attempts already made.
async fn connect(
    ctx: &ConnContext,
    route: &Route,
    client: SocketAddr,
    pm: &PortMetrics,
    outcome: &mut Outcome,
    tried: &[SocketAddr],
) -> Result<TcpStream, RefuseReason> {
    let health = &ctx.health;
    // The clock is read once per connection, and only while some endpoint is in trouble.
    let now = (!health.all_healthy()).then(Instant::now);
    let usable = |addr| now.is_none_or(|now| health.usable(addr, now));
    let skip_unhealthy = now.is_some()
        && if route.active_endpoints().any(|e| usable(e.addr)) {
            true
        } else {
            pm.all_endpoints_unhealthy.inc();
            tracing::debug!(port = %route.key, "every endpoint is unhealthy: trying them all");
            false
        };
    let attempts = connect_attempts(ctx, route)
        .max(1)
        .min(route.active_count());
    let timeout = connect_timeout(ctx, route);
    let balance = route.spec.options.balance;
    let by_load = matches!(balance, Balance::LeastConnections | Balance::RandomTwo);
    let load = |e: &Endpoint| {
        if by_load {
            ctx.loads.load(HealthKey::tcp(e.addr))
        } else {
            0
        }
    };
    let order = route.pick_order_for(
        Some(client.ip()),
        |e| !skip_unhealthy || usable(e.addr),
        load,
    );
    if order.refused() {
        // The weighted draw chose a backend that does not resolve: its share is refused.
        tracing::debug!(port = %route.key, client = %client, "the chosen backend does not resolve; connection refused");
        return Err(RefuseReason::invalid_backend);
    }
    let candidates = order
        .filter(|e| !skip_unhealthy || usable(e.addr))
        .filter(|e| !tried.contains(&e.addr))
        .take(attempts.saturating_sub(outcome.attempts as usize));
    for endpoint in candidates {
        outcome.attempts += 1;
        pm.connect_attempts.inc();
        if outcome.attempts > 1 {
            pm.retries.inc();
        }
        outcome.endpoint = Some(endpoint.addr);
        outcome.pod = endpoint.target.clone();
        let result = tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await;
        let (reason, error) = match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                keepalive(&stream);
                health.connect_succeeded(endpoint.addr);
                outcome.error = None;
                if by_load {
                    outcome.load = Some(ctx.loads.hold(HealthKey::tcp(endpoint.addr)));
                }
                return Ok(stream);
            }
            Ok(Err(err)) => (ConnectFailure::of(&err), err.to_string()),
            Err(_) => (
                ConnectFailure::timeout,
                format!("timed out after {timeout:?}"),
            ),
        };
        pm.connect_failed(endpoint.addr, endpoint.target.as_deref(), reason);
        // A local shortage (out of descriptors...) says nothing about the endpoint.
        if reason != ConnectFailure::other {
            health.connect_failed(endpoint.addr, endpoint.target.as_ref(), Instant::now());
        }
        let warn = WarnKey {
            port: route.key,
            endpoint: Some(endpoint.addr),
            reason: WarnReason::Connect(reason),
        };
        if let Some(suppressed) = ctx.warnings.note(warn) {
            tracing::warn!(
                port = %route.key,
                service = %route.spec.service,
                endpoint = %endpoint.addr,
                pod = endpoint.target.as_deref().unwrap_or("-"),
                attempt = outcome.attempts,
                max_attempts = attempts,
                client = %client,
                error = %error,
                suppressed,
                "upstream connect failed"
            );
        }
        outcome.error = Some(format!("{}: {error}", endpoint.addr));
    }
    let warn = WarnKey {
        port: route.key,
        endpoint: None,
        reason: WarnReason::NoEndpointAccepted,
    };
    if let Some(suppressed) = ctx.warnings.note(warn) {
        tracing::warn!(port = %route.key, service = %route.spec.service, client = %client, attempts = outcome.attempts, suppressed, "no endpoint accepted the connection; closing client");
    }
    Err(RefuseReason::upstream_unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::Snapshot;
    use crate::data::context::TcpSettings;
    use crate::data::forward::Forward;
    use crate::data::health::HealthRegistry;
    use crate::data::health::HealthSettings;
    use crate::data::limits::{OpenConnections, PortCounts};
    use crate::data::pipes::PipePool;
    use crate::names::ListenPort;
    use crate::telemetry::access_log::AccessLog;
    use crate::telemetry::metrics::Metrics;

    /// An idle connection holds its task: the future of `serve_connection` plus tokio's task
    /// header and trailer, in 128-byte steps. RSS per idle connection (the ≤ 2 KiB target of
    /// `loadtest compare`) follows these sizes; this catches a change that quietly grows them
    /// (a large local kept across an await, a value moved in and held twice).
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let peer = client.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(ConnContext {
            snapshot: Arc::new(Snapshot::new()),
            settings: TcpSettings::default(),
            pipes: Arc::new(PipePool::new(0, 65536)),
            metrics: metrics.clone(),
            access_log: Arc::new(AccessLog::off(metrics.clone())),
            udp: Default::default(),
            health: Arc::new(HealthRegistry::new(HealthSettings::default(), metrics)),
            loads: Default::default(),
            open: Arc::new(OpenConnections::default()),
            warnings: Default::default(),
        });
        let slot = PortCounts::new(ctx.open.clone()).admit(0, 0).unwrap();
        let key = RouteKey::tcp(ListenPort::new(10000).unwrap());
        let future = serve_connection(ctx, key, None, slot, client, peer, CancellationToken::new());
        let size = std::mem::size_of_val(&future);
        // 896 bytes in a test build and 872 in a release build when this was written (1,888
        // before the set-up was boxed and forwarding became `Forward`).
        assert!(size <= 960, "serve_connection's future is {size} bytes");
        assert!(
            std::mem::size_of::<Forward<'static>>() <= 160,
            "Forward is {} bytes",
            std::mem::size_of::<Forward<'static>>()
        );
    }
}
