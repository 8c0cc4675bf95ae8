//! The admin HTTP server: `/healthz`, `/readyz`, `/metrics`, `/routes`.
//!
//! It reads the other layers (snapshot, listener status, metrics) and owns none of their logic.
//! `router(state)` is the injectable entry point; `serve` runs it on an already-bound listener.
//! It must never listen on a data port: its port is reserved in the port map.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::control::snapshot::Snapshot;
use crate::control::table::{Endpoint, Selection};
use crate::data::health::{HealthKey, HealthRegistry, HealthView};
use crate::data::listener::{ListenerStatus, PortState};
use crate::data::pipes::PipePool;
use crate::ops::metrics::Metrics;

/// What the admin server reads.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The routing table.
    pub snapshot: Arc<Snapshot>,
    /// Listener states.
    pub status: watch::Receiver<ListenerStatus>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The splice pipe pool (for its gauge).
    pub pipes: Arc<PipePool>,
    /// Endpoint health, shown per endpoint in `/routes`.
    pub health: Arc<HealthRegistry>,
    /// Cancelled when the process starts shutting down: `/readyz` then answers 503.
    pub draining: CancellationToken,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/routes", get(routes))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Ready means: a configuration has been loaded and published (synced), the listener manager
/// has acted on it (every port bound, or its failure reported: one port that cannot bind does
/// not take the others out of the load balancer), and the process is not draining.
async fn readyz(State(state): State<AdminState>) -> Response {
    let why_not = if state.draining.is_cancelled() {
        Some("draining: shutting down")
    } else if state.snapshot.load().generation == 0 {
        Some("not synced: no configuration loaded yet")
    } else if state.status.borrow().generation == 0 {
        Some("listeners not set up yet")
    } else {
        None
    };
    match why_not {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let (bound, failed) = {
        let status = state.status.borrow();
        let bound = status
            .ports
            .values()
            .filter(|s| matches!(s, PortState::Bound(_)))
            .count();
        (bound, status.ports.len() - bound)
    };
    state.metrics.set_gauges(state.pipes.live(), bound, failed);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

#[derive(serde::Serialize)]
struct RoutesView {
    generation: u64,
    routes: Vec<RouteView>,
    problems: Vec<String>,
}

#[derive(serde::Serialize)]
struct RouteView {
    port: u16,
    protocol: &'static str,
    listener: ListenerView,
    service: String,
    service_port: String,
    proxy_protocol: ProxyView,
    options: crate::control::configmap::PortOptions,
    selection: Selection,
    kept_from_previous: bool,
    problem: Option<String>,
    endpoints: Vec<EndpointView>,
}

#[derive(serde::Serialize)]
struct ProxyView {
    decode: bool,
    encode: bool,
}

#[derive(serde::Serialize)]
struct ListenerView {
    state: &'static str,
    address: Option<SocketAddr>,
    error: Option<String>,
}

#[derive(serde::Serialize)]
struct EndpointView {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// Takes new connections (by its EndpointSlice conditions).
    active: bool,
    /// Passive health (TCP and UDP) and active checks (TCP routes).
    health: HealthView,
}

async fn routes(State(state): State<AdminState>) -> Json<RoutesView> {
    let table = state.snapshot.load();
    let status = state.status.borrow().clone();
    let routes = table
        .routes()
        .map(|route| {
            let active: Vec<SocketAddr> = route.active_endpoints().map(|e| e.addr).collect();
            let listener = match status.ports.get(&route.key) {
                Some(PortState::Bound(addr)) => ListenerView {
                    state: "bound",
                    address: Some(*addr),
                    error: None,
                },
                Some(PortState::Failed(err)) => ListenerView {
                    state: "failed",
                    address: None,
                    error: Some(err.clone()),
                },
                None => ListenerView {
                    state: "pending",
                    address: None,
                    error: None,
                },
            };
            RouteView {
                port: route.key.port.get(),
                protocol: route.key.protocol.as_k8s(),
                listener,
                service: route.spec.service.to_string(),
                service_port: route.spec.service_port.to_string(),
                proxy_protocol: ProxyView {
                    decode: route.spec.proxy.decode,
                    encode: route.spec.proxy.encode,
                },
                options: route.spec.options.clone(),
                selection: route.selection,
                kept_from_previous: route.kept_from_previous,
                problem: route.problem.clone(),
                endpoints: route
                    .endpoints
                    .iter()
                    .map(|e| EndpointView {
                        endpoint: e.clone(),
                        active: active.contains(&e.addr),
                        health: state.health.view(HealthKey {
                            addr: e.addr,
                            protocol: route.key.protocol,
                        }),
                    })
                    .collect(),
            }
        })
        .collect();
    Json(RoutesView {
        generation: table.generation,
        routes,
        problems: table.problems.iter().map(|p| p.to_string()).collect(),
    })
}
