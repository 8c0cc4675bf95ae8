//! The admin HTTP server: `/healthz`, `/readyz`, `/metrics`, `/routes`.
//!
//! It reads the other layers (snapshot, listener status, metrics) and owns none of their logic.
//! `router(state)` is the injectable entry point; `serve` runs it on an already-bound listener;
//! [`spawn_thread`] runs it on a thread and runtime of its own, as the binary does, so that
//! neither a slow client nor a large `/routes` answer takes a turn from the data plane's
//! threads. Every request has [`REQUEST_TIMEOUT`]; `/metrics` and `/routes`, the two answers
//! that grow with the configuration, are served [`HEAVY_AT_ONCE`] at a time (others wait their
//! turn within the timeout), while `/healthz` and `/readyz` are never queued behind them.
//! It must never listen on a data port: its port is reserved in the port map.
//!
//! With `--health-address`, [`probes_router`] serves `/healthz` and `/readyz` alone on a second
//! address, on the same thread: the probes then need no access to the port that shows every
//! Service, pod name and IP (`/routes`), which a NetworkPolicy can close to all but the scrapers.

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
use crate::data::health::{HealthRegistry, HealthView};
use crate::data::listener::{ListenerStatus, PortState};
use crate::data::pipes::PipePool;
use crate::names::HealthKey;
use crate::telemetry::metrics::Metrics;

/// What the admin server reads.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The routing table.
    pub snapshot: Arc<Snapshot>,
    /// Listener states.
    pub status: watch::Receiver<ListenerStatus>,
    /// The registry `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// The splice pipe pool (for its gauge).
    pub pipes: Arc<PipePool>,
    /// Endpoint health, shown per endpoint in `/routes`.
    pub health: Arc<HealthRegistry>,
    /// Cancelled when the process starts shutting down: `/readyz` then answers 503.
    pub draining: CancellationToken,
}

/// How long one admin request may take before it is answered 503.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many `/metrics` and `/routes` requests are served at once.
pub const HEAVY_AT_ONCE: usize = 2;

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/routes", get(routes))
        // Only the routes above share this limit.
        .route_layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            HEAVY_AT_ONCE,
        ))
        .merge(probe_routes())
        .layer(request_timeout())
        .with_state(state)
}

/// `/healthz` and `/readyz` only (everything else 404): what `--health-address` serves.
pub fn probes_router(state: AdminState) -> Router {
    probe_routes().layer(request_timeout()).with_state(state)
}

fn probe_routes() -> Router<AdminState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
}

fn request_timeout() -> tower_http::timeout::TimeoutLayer {
    tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        REQUEST_TIMEOUT,
    )
}

/// Runs [`serve`] on a thread named `dermaga-admin` with a single-threaded runtime of its own,
/// and, when `probes` is given, [`serve_probes`] on it beside. The thread ends when `shutdown`
/// is cancelled and the connections of both are done.
pub fn spawn_thread(
    listener: std::net::TcpListener,
    probes: Option<std::net::TcpListener>,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<()>>> {
    std::thread::Builder::new()
        .name("dermaga-admin".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let probes = match probes {
                    Some(probes) => Some(tokio::net::TcpListener::from_std(probes)?),
                    None => None,
                };
                let admin = serve(listener, state.clone(), shutdown.clone());
                let probes = async move {
                    match probes {
                        Some(probes) => serve_probes(probes, state, shutdown).await,
                        None => Ok(()),
                    }
                };
                tokio::try_join!(admin, probes).map(|_| ())
            })
        })
}

/// Serves [`router`] on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Serves [`probes_router`] on `listener` until `shutdown`.
pub async fn serve_probes(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router(listener, probes_router(state), shutdown).await
}

async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
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
    /// Where the next page starts (`?offset=`), when more routes match than this answer holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_offset: Option<usize>,
    problems: Vec<String>,
}

#[derive(serde::Serialize)]
struct RouteView {
    port: u16,
    /// A range entry (`"30000-30099"`): shown once, at its first port; `endpoints` are those of
    /// that first port (each port `i` of the range adds `i` to them unless `range-target: one`).
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<crate::names::PortSpan>,
    /// For a range: how many of its ports are bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    ports_bound: Option<usize>,
    protocol: &'static str,
    /// For a range: `bound` when every port is, else the first port that is not.
    listener: ListenerView,
    service: String,
    service_port: String,
    /// The Gateway API route serving the port (`null`: a port-map entry).
    route: Option<crate::control::configmap::RouteRef>,
    proxy_protocol: ProxyView,
    options: crate::control::configmap::PortOptions,
    selection: Selection,
    kept_from_previous: bool,
    problem: Option<String>,
    /// Where connections go, with each Service port's weight (one, weight 1, without the
    /// `backends` option).
    backends: Vec<BackendView>,
    endpoints: Vec<EndpointView>,
    /// A TLS passthrough port: its TLSRoutes by server name, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sni: Vec<SniView>,
}

/// One TLSRoute of a TLS passthrough port.
#[derive(serde::Serialize)]
struct SniView {
    /// Server names and `*.suffix` patterns; empty: every name.
    hostnames: Vec<String>,
    route: Option<crate::control::configmap::RouteRef>,
    problem: Option<String>,
    backends: Vec<BackendView>,
    endpoints: Vec<EndpointView>,
}

#[derive(serde::Serialize)]
struct BackendView {
    service: String,
    service_port: String,
    weight: u32,
    active_endpoints: usize,
    selection: Selection,
    problem: Option<String>,
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

/// `/routes` query: which routes, and how many.
#[derive(Debug, serde::Deserialize)]
struct RoutesQuery {
    /// Only this external port (TCP and UDP).
    port: Option<u16>,
    /// Only routes to Services of this namespace.
    namespace: Option<String>,
    /// Skip this many of the routes that match (in port order).
    #[serde(default)]
    offset: usize,
    /// At most this many routes ([`ROUTES_PAGE`] when absent).
    limit: Option<usize>,
}

/// The most routes one `/routes` answer holds; `next_offset` says where the next page starts.
pub const ROUTES_PAGE: usize = 1000;

fn backend_views(route: &crate::control::table::Route) -> Vec<BackendView> {
    route
        .backends
        .iter()
        .map(|b| BackendView {
            service: b.spec.service.to_string(),
            service_port: b.spec.service_port.to_string(),
            weight: b.spec.weight,
            active_endpoints: b.active_count(),
            selection: b.selection,
            problem: b.problem.clone(),
        })
        .collect()
}

fn endpoint_views(
    state: &AdminState,
    route: &crate::control::table::Route,
    now: std::time::Instant,
) -> Vec<EndpointView> {
    let active: Vec<SocketAddr> = route.active_endpoints().map(|e| e.addr).collect();
    route
        .endpoints
        .iter()
        .map(|e| EndpointView {
            endpoint: e.clone(),
            active: active.contains(&e.addr),
            health: state.health.view(
                HealthKey {
                    addr: e.addr,
                    protocol: route.key.protocol,
                },
                now,
            ),
        })
        .collect()
}

async fn routes(
    State(state): State<AdminState>,
    axum::extract::Query(query): axum::extract::Query<RoutesQuery>,
) -> Json<RoutesView> {
    let table = state.snapshot.load();
    let now = std::time::Instant::now();
    let status = state.status.borrow().clone();
    let limit = query.limit.unwrap_or(ROUTES_PAGE).min(ROUTES_PAGE);
    let mut matching = table
        .routes()
        // A range entry once, at its first port (or at any of its ports asked for).
        .filter(|route| {
            query.port.map_or_else(
                || {
                    route
                        .spec
                        .range
                        .is_none_or(|s| s.first == route.key.port.get())
                },
                |p| {
                    route.span().contains(p)
                        && route
                            .spec
                            .range
                            .is_none_or(|s| s.first == route.key.port.get())
                },
            )
        })
        .filter(|route| {
            query
                .namespace
                .as_deref()
                .is_none_or(|ns| route.spec.service.namespace == ns)
        })
        .skip(query.offset)
        .peekable();
    let mut page = Vec::new();
    while page.len() < limit
        && let Some(route) = matching.next()
    {
        page.push(route);
    }
    let next_offset = matching
        .peek()
        .is_some()
        .then_some(query.offset + page.len());
    let routes = page
        .into_iter()
        .map(|route| {
            let span = route.span();
            let keys: Vec<crate::names::RouteKey> = span
                .ports()
                .map(|port| crate::names::RouteKey { port, ..route.key })
                .collect();
            let bound = keys
                .iter()
                .filter(|k| matches!(status.ports.get(k), Some(PortState::Bound(_))))
                .count();
            // The first port of a range that is not bound speaks for it.
            let shown = keys
                .iter()
                .find(|k| !matches!(status.ports.get(k), Some(PortState::Bound(_))))
                .unwrap_or(&route.key);
            let listener = match status.ports.get(shown) {
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
                range: route.spec.range,
                ports_bound: route.spec.range.map(|_| bound),
                protocol: route.key.protocol.as_k8s(),
                listener,
                service: route.spec.service.to_string(),
                service_port: route.spec.service_port.to_string(),
                route: route.spec.route.clone(),
                proxy_protocol: ProxyView {
                    decode: route.spec.proxy.decode,
                    encode: route.spec.proxy.encode,
                },
                options: route.spec.options.clone(),
                selection: route.selection,
                kept_from_previous: route.kept_from_previous,
                problem: route.problem.clone(),
                backends: backend_views(route),
                endpoints: endpoint_views(&state, route, now),
                sni: route
                    .sni
                    .iter()
                    .map(|sni| SniView {
                        hostnames: sni.hostnames.clone(),
                        route: sni.route.spec.route.clone(),
                        problem: sni.route.problem.clone(),
                        backends: backend_views(&sni.route),
                        endpoints: endpoint_views(&state, &sni.route, now),
                    })
                    .collect(),
            }
        })
        .collect();
    Json(RoutesView {
        generation: table.generation,
        routes,
        next_offset,
        problems: table.problems.iter().map(|p| p.to_string()).collect(),
    })
}
