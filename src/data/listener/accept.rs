//! A TCP port's accept loop: admits each connection within the connection limits and the
//! descriptor ceiling (or refuses it at once with a reset, counted, and warned about through
//! the process's one warning throttle), keeps the listener alive under EMFILE by refusing with a spare descriptor,
//! and serves what is still queued when the port stops accepting.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::drain::Drain;
use crate::control::table::Route;
use crate::data::context::ConnContext;
use crate::data::limits::{self, PortCounts, ReserveOutcome};
use crate::data::net::canonical;
use crate::data::tcp::serve_connection;
use crate::names::{ObjectName, RouteKey};
use crate::telemetry::log_throttle::{WarnKey, WarnReason};
use crate::telemetry::metrics::PortMetrics;
use crate::telemetry::outcome::RefuseReason;

/// What one port's accept loop needs to admit a connection: its counts and where its
/// connection tasks go.
struct Admission {
    key: RouteKey,
    ctx: Arc<ConnContext>,
    counts: Arc<PortCounts>,
    close: CancellationToken,
    connections: TaskTracker,
}

/// A refusal warning of `key`'s port, through the process's one warning throttle:
/// `Some(suppressed)` when it is to be logged now.
fn note(ctx: &ConnContext, key: RouteKey, reason: WarnReason) -> Option<Option<u64>> {
    ctx.warnings.note(WarnKey {
        port: key,
        endpoint: None,
        reason,
    })
}

/// Counts a connection refused at accept on `key`'s port for `reason`; `Some(suppressed)` when
/// the warning is to be logged now (`suppressed`: like warnings held back since the last line).
fn count_refusal(
    ctx: &ConnContext,
    key: RouteKey,
    route: Option<&Route>,
    reason: RefuseReason,
    warning: WarnReason,
) -> Option<Option<u64>> {
    let pm = port_metrics(ctx, key, route);
    pm.accepted.inc();
    pm.refused(reason);
    note(ctx, key, warning)
}

impl Admission {
    /// Admits one accepted connection within the connection limits and spawns its task, or
    /// refuses it at once with a reset (counted, and warned about through the throttle).
    fn admit(&mut self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let (key, ctx) = (self.key, &self.ctx);
        // The one table read of this connection.
        let route = ctx.snapshot.load().get(&key).cloned();
        if !limits::below_descriptor_ceiling(std::os::fd::AsRawFd::as_raw_fd(&stream)) {
            let (reason, warning) = (
                RefuseReason::out_of_descriptors,
                WarnReason::OutOfDescriptors,
            );
            // Counted before the reset: whoever sees the refusal sees it counted.
            let suppressed = count_refusal(ctx, key, route.as_deref(), reason, warning);
            crate::data::net::reset(stream);
            if let Some(suppressed) = suppressed {
                tracing::warn!(port = %key, suppressed, open = ctx.open.get(), ceiling = limits::descriptor_ceiling(), "near the open-files limit: the descriptors kept for the admin server are reached (raise the limit: ulimit -n / LimitNOFILE, or set --max-connections); refusing new connections with a reset");
            }
            return;
        }
        let port_max = route
            .as_ref()
            .and_then(|r| r.spec.options.max_connections)
            .unwrap_or(ctx.settings.max_connections_per_port);
        let mut slot = match self.counts.admit(ctx.settings.max_connections, port_max) {
            Ok(slot) => slot,
            Err(exceeded) => {
                let (reason, warning) =
                    (RefuseReason::max_connections, WarnReason::ConnectionLimit);
                let suppressed = count_refusal(ctx, key, route.as_deref(), reason, warning);
                crate::data::net::reset(stream);
                if let Some(suppressed) = suppressed {
                    tracing::warn!(port = %key, limit = %exceeded, suppressed, "connection limit reached; refusing new connections with a reset");
                }
                return;
            }
        };
        // The source policy of a port that decodes PROXY headers applies to the client the
        // header names: decided in the connection's task.
        if let Some(route) = route.as_deref().filter(|r| !r.spec.proxy.decode)
            && route.spec.options.sources.is_active()
        {
            let client = canonical(peer);
            let policy = &route.spec.options.sources;
            if let Err(reason) = slot.admit_source(policy, client.ip(), Instant::now()) {
                drop(slot);
                let warning = WarnReason::SourcePolicy(reason);
                let suppressed = count_refusal(ctx, key, Some(route), reason, warning);
                crate::data::net::reset(stream);
                if let Some(suppressed) = suppressed {
                    tracing::warn!(port = %key, client = %client, suppressed, "{warning}: connection refused");
                }
                return;
            }
        }
        self.connections.spawn(serve_connection(
            ctx.clone(),
            key,
            route,
            slot,
            stream,
            canonical(peer),
            self.close.clone(),
        ));
    }
}

/// Accepts on `listener` until the drain's stop signal, spawning connection tasks into it;
/// `counts` are the port's, shared by all its listeners.
pub(super) async fn accept_loop(
    listener: TcpListener,
    key: RouteKey,
    ctx: Arc<ConnContext>,
    drain: Drain,
    counts: Arc<PortCounts>,
) {
    let stop = drain.stop_accepting_signal();
    let mut admission = Admission {
        key,
        ctx: ctx.clone(),
        counts,
        close: drain.close_signal(),
        connections: drain.tasks().clone(),
    };
    if !limits::ensure_reserve() {
        tracing::warn!(port = %key, "cannot open the spare descriptor (/dev/null); connections beyond the descriptor limit will wait in the backlog instead of being refused");
    }
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                admission.admit(stream, peer);
            }
            Err(err) => {
                ctx.metrics.global.accept_errors.inc();
                let pause = match err.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE) => {
                        refuse_for_want_of_descriptors(&listener, key, &ctx)
                    }
                    Some(libc::ENOBUFS | libc::ENOMEM) => {
                        tracing::error!(port = %key, error = %err, "accept failed: out of memory; pausing this port's accepts for 100ms");
                        Some(Duration::from_millis(100))
                    }
                    // Transient (ECONNABORTED...); a short pause keeps a persistent one from spinning.
                    _ => {
                        tracing::debug!(port = %key, error = %err, "accept failed");
                        Some(Duration::from_millis(10))
                    }
                };
                if let Some(pause) = pause {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    // Closing a listener resets the connections in its accept queue (unless the kernel migrates
    // them to another socket of its reuseport group, net.ipv4.tcp_migrate_req): serve them.
    let mut queued = 0usize;
    // Bounded: the queue holds at most the backlog, unless connections keep arriving.
    for _ in 0..65_536 {
        match accept_now(&listener) {
            Ok(Some((stream, peer))) => {
                queued += 1;
                admission.admit(stream, peer);
            }
            Ok(None) => break,
            Err(err) => {
                // ECONNABORTED (a client gave up while queued) or EINTR: go on with the next.
                tracing::debug!(port = %key, error = %err, "accept of a queued connection failed");
                let transient = err.kind() == io::ErrorKind::Interrupted
                    || err.raw_os_error() == Some(libc::ECONNABORTED);
                if !transient {
                    break;
                }
            }
        }
    }
    if queued > 0 {
        tracing::debug!(port = %key, queued, "served the connections queued when the port closed");
    }
    // Dropping the listener closes the socket: new connections to this port are refused (or go
    // to the other processes of its reuseport group).
    drop(listener);
}

/// Accepts one queued connection without waiting: `None` when the queue is empty. A plain
/// `accept(2)`: tokio's readiness may not know yet of connections the kernel has queued.
fn accept_now(listener: &TcpListener) -> io::Result<Option<(tokio::net::TcpStream, SocketAddr)>> {
    match socket2::SockRef::from(listener).accept() {
        Ok((socket, peer)) => {
            socket.set_nonblocking(true)?;
            let peer = peer
                .as_socket()
                .ok_or_else(|| io::Error::other("accepted a connection without an IP peer"))?;
            let stream = tokio::net::TcpStream::from_std(socket.into())?;
            Ok(Some((stream, peer)))
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(err) => Err(err),
    }
}

/// The port's metrics handles (the rare path of refusals made before a connection task).
fn port_metrics(ctx: &ConnContext, key: RouteKey, route: Option<&Route>) -> Arc<PortMetrics> {
    let unknown = ObjectName::new("", "");
    ctx.metrics
        .port(key, route.map_or(&unknown, |r| &r.spec.service))
}

/// Accept failed with EMFILE/ENFILE: refuses one pending connection with the spare descriptor
/// (the loop then accepts again at once: the backlog is refused one by one, never spun on).
/// Returns the pause to make when that was not possible.
fn refuse_for_want_of_descriptors(
    listener: &TcpListener,
    key: RouteKey,
    ctx: &ConnContext,
) -> Option<Duration> {
    match limits::refuse_with_reserve(listener) {
        ReserveOutcome::Refused => {
            let route = ctx.snapshot.load().get(&key).cloned();
            let (reason, warning) = (
                RefuseReason::out_of_descriptors,
                WarnReason::OutOfDescriptors,
            );
            if let Some(suppressed) = count_refusal(ctx, key, route.as_deref(), reason, warning) {
                tracing::warn!(port = %key, suppressed, open = ctx.open.get(), "out of file descriptors (raise the limit: ulimit -n / LimitNOFILE, or set --max-connections); refusing new connections with a reset");
            }
            None
        }
        ReserveOutcome::NothingPending => None,
        ReserveOutcome::Failed(err) => {
            if let Some(suppressed) = note(ctx, key, WarnReason::OutOfDescriptors) {
                tracing::error!(port = %key, suppressed, error = ?err.map(|e| e.to_string()), "out of file descriptors and no spare one to refuse with; pausing this port's accepts for 100ms");
            }
            Some(Duration::from_millis(100))
        }
    }
}
