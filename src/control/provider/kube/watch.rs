//! One kube-rs watcher per scope (a port map, the Services or EndpointSlices of one
//! namespace, or one Gateway API kind in every namespace), forwarding its events, tagged with
//! the scope and the watcher's generation, to the provider's single loop.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::references::slice_selector;
use crate::control::gateway_api::{GROUP, VERSION};
use crate::control::index::{Kind, Object};
use crate::names::ObjectName;
use std::collections::BTreeSet;
use std::time::Duration;

/// What one watcher covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScopeKey {
    /// One port-map ConfigMap, by name.
    PortMap(ObjectName),
    /// The referenced Services of one namespace.
    Services(String),
    /// The EndpointSlices of the referenced Services of one namespace.
    Slices(String),
    /// Every object of one Gateway API kind, in every namespace (`--gateway-api`).
    GatewayApi(Kind),
    /// Every Namespace, for their labels (`--gateway-api`: `allowedRoutes` selectors).
    Namespaces,
}

impl ScopeKey {
    /// The API resource, for logs and metrics.
    pub fn resource(&self) -> &'static str {
        match self {
            ScopeKey::PortMap(_) => "configmaps",
            ScopeKey::Services(_) => "services",
            ScopeKey::Slices(_) => "endpointslices",
            ScopeKey::GatewayApi(kind) => gateway_api_plural(*kind),
            ScopeKey::Namespaces => "namespaces",
        }
    }
}

impl ScopeKey {
    /// What RBAC must allow (with the verbs list and watch) for this watcher.
    pub fn grant(&self) -> String {
        match self {
            ScopeKey::PortMap(name) => format!(
                "configmaps (resourceNames: {}) in namespace {}",
                name.name, name.namespace
            ),
            ScopeKey::Services(ns) => format!("services in namespace {ns}"),
            ScopeKey::Slices(ns) => {
                format!("endpointslices (API group discovery.k8s.io) in namespace {ns}")
            }
            ScopeKey::GatewayApi(kind) => format!(
                "{} (API group {GROUP}) in all namespaces",
                gateway_api_plural(*kind)
            ),
            ScopeKey::Namespaces => "namespaces (cluster-scoped)".to_owned(),
        }
    }
}

impl std::fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScopeKey::PortMap(name) => write!(f, "configmap {name}"),
            ScopeKey::Services(ns) => write!(f, "services in namespace {ns}"),
            ScopeKey::Slices(ns) => write!(f, "endpointslices in namespace {ns}"),
            ScopeKey::GatewayApi(kind) => write!(f, "{} in all namespaces", kind.as_str()),
            ScopeKey::Namespaces => write!(f, "namespaces"),
        }
    }
}

/// A watcher's event, as the provider sees it.
#[derive(Debug)]
pub enum Change {
    /// A (re-)list starts: objects follow as `Listed` until `ListDone`.
    ListStart,
    /// One object of the list.
    Listed(Object),
    /// The list is complete: objects not listed are gone.
    ListDone,
    /// An object was added or changed.
    Applied(Object),
    /// An object was deleted.
    Deleted(Object),
    /// The API call failed; the watcher retries with backoff.
    Failed(Failure),
    /// The resourceVersion was too old (410 Gone): the watcher lists again.
    Expired,
    /// A retry after a failure has held for a while without failing again.
    Recovered,
}

/// Why a list or watch call failed, as far as the provider acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 403: the authorizer (RBAC) refused the call; an operator must grant it.
    Forbidden,
    /// 401: the credentials were not accepted (an expired or revoked token).
    Unauthorized,
    /// 404: the API server does not serve the resource (a CRD that is not installed).
    NotFound,
    /// Anything else: unreachable, timed out, a 5xx answer.
    Unavailable,
}

impl FailureKind {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Forbidden => "forbidden",
            FailureKind::Unauthorized => "unauthorized",
            FailureKind::NotFound => "not_found",
            FailureKind::Unavailable => "unavailable",
        }
    }
}

/// A failed list or watch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The error with its causes, on one line (for a 401/403: the API server's own message,
    /// which names the user, the verb, the resource and the namespace).
    pub error: String,
}

impl Failure {
    fn of(e: &watcher::Error) -> Self {
        let status = match e {
            watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
            watcher::Error::WatchError(s) => Some(s.as_ref()),
            _ => None,
        };
        match status {
            Some(s) if s.code == 403 => Self {
                kind: FailureKind::Forbidden,
                error: s.message.clone(),
            },
            Some(s) if s.code == 401 => Self {
                kind: FailureKind::Unauthorized,
                error: s.message.clone(),
            },
            Some(s) if s.code == 404 => Self {
                kind: FailureKind::NotFound,
                error: s.message.clone(),
            },
            _ => Self {
                kind: FailureKind::Unavailable,
                error: describe(e),
            },
        }
    }
}

/// A change from one watcher.
#[derive(Debug)]
pub struct Message {
    /// Which scope.
    pub scope: ScopeKey,
    /// Which watcher of that scope (a restarted scope gets a new one; late messages from the
    /// old one are ignored).
    pub generation: u64,
    /// What happened.
    pub change: Change,
}

/// Starts the watcher for `scope`. For `Services` and `Slices`, `names` are the referenced
/// Services of the namespace (Services are filtered by the provider; slices by the API server).
pub fn spawn(
    client: kube::Client,
    scope: ScopeKey,
    names: &BTreeSet<String>,
    generation: u64,
    tx: mpsc::Sender<Message>,
) -> JoinHandle<()> {
    match scope.clone() {
        ScopeKey::PortMap(name) => {
            let api: Api<ConfigMap> = Api::namespaced(client, &name.namespace);
            let config = watcher::Config::default().fields(&format!("metadata.name={}", name.name));
            tokio::spawn(forward(api, config, scope, generation, tx, |o| {
                Some(Object::ConfigMap(o))
            }))
        }
        ScopeKey::Services(ns) => {
            let api: Api<Service> = Api::namespaced(client, &ns);
            let config = watcher::Config::default();
            tokio::spawn(forward(api, config, scope, generation, tx, |o| {
                Some(Object::Service(o))
            }))
        }
        ScopeKey::Slices(ns) => {
            let api: Api<EndpointSlice> = Api::namespaced(client, &ns);
            let config = watcher::Config::default().labels(&slice_selector(names));
            tokio::spawn(forward(api, config, scope, generation, tx, |o| {
                Some(Object::EndpointSlice(o))
            }))
        }
        ScopeKey::Namespaces => {
            let api: Api<Namespace> = Api::all(client);
            let config = watcher::Config::default();
            tokio::spawn(forward(
                api,
                config,
                scope,
                generation,
                tx,
                |mut o: Namespace| {
                    // Only the labels are read: no spec or status kept.
                    o.spec = None;
                    o.status = None;
                    Some(Object::Namespace(o))
                },
            ))
        }
        ScopeKey::GatewayApi(kind) => {
            let resource = gateway_api_resource(kind);
            let api: Api<DynamicObject> = Api::all_with(client, &resource);
            let config = watcher::Config::default();
            tokio::spawn(forward(api, config, scope, generation, tx, move |o| {
                gateway_api_object(kind, o)
            }))
        }
    }
}

/// The plural resource name of a Gateway API kind.
pub fn gateway_api_plural(kind: Kind) -> &'static str {
    match kind {
        Kind::GatewayClass => "gatewayclasses",
        Kind::Gateway => "gateways",
        Kind::TcpRoute => "tcproutes",
        Kind::UdpRoute => "udproutes",
        Kind::TlsRoute => "tlsroutes",
        Kind::ReferenceGrant => "referencegrants",
        Kind::ConfigMap | Kind::Service | Kind::EndpointSlice | Kind::Namespace => {
            unreachable!("{kind:?} is not a Gateway API kind")
        }
    }
}

/// The `gateway.networking.k8s.io/v1` resource of a kind, for a dynamic API.
pub fn gateway_api_resource(kind: Kind) -> ApiResource {
    ApiResource {
        group: GROUP.to_owned(),
        version: VERSION.to_owned(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind.as_str().to_owned(),
        plural: gateway_api_plural(kind).to_owned(),
    }
}

/// A watched Gateway API object in dermaga's own types; one that does not read (which the
/// CRD's schema should make impossible) is logged and skipped.
fn gateway_api_object(kind: Kind, object: DynamicObject) -> Option<Object> {
    let name = format!(
        "{}/{}",
        object.metadata.namespace.as_deref().unwrap_or(""),
        object.metadata.name.as_deref().unwrap_or("")
    );
    let read = serde_json::to_value(object).and_then(|value| Object::gateway_api(kind, value));
    match read {
        Ok(o) => Some(o),
        Err(error) => {
            tracing::warn!(kind = kind.as_str(), object = %name, %error, "Gateway API object does not read; ignored");
            None
        }
    }
}

async fn forward<K>(
    api: Api<K>,
    config: watcher::Config,
    scope: ScopeKey,
    generation: u64,
    tx: mpsc::Sender<Message>,
    wrap: impl Fn(K) -> Option<Object>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    // Our own backoff, not kube-rs's `default_backoff()`: that one resets on every `Ok`, and a
    // watcher whose list keeps failing yields `Ok(Init)` before each failure, so it would retry
    // every 0.8 s forever. Here the delay resets on real progress (an object, a list's end), or
    // when a retry has gone [`PROBATION`] without failing (a re-opened watch on a quiet
    // resource brings no event, but it is up).
    let mut events = std::pin::pin!(watcher(api, config));
    let mut delay: Option<Duration> = None;
    let mut probation_until: Option<tokio::time::Instant> = None;
    loop {
        let next = match probation_until {
            Some(until) => match tokio::time::timeout_at(until, events.next()).await {
                Ok(next) => next,
                Err(_) => {
                    probation_until = None;
                    delay = None;
                    if send(&tx, &scope, generation, Change::Recovered)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
            },
            None => events.next().await,
        };
        let Some(event) = next else { return };
        let change = match event {
            Ok(watcher::Event::Init) => Change::ListStart,
            Ok(watcher::Event::InitApply(o)) => match wrap(slim(o)) {
                Some(o) => Change::Listed(o),
                None => continue,
            },
            Ok(watcher::Event::InitDone) => Change::ListDone,
            Ok(watcher::Event::Apply(o)) => match wrap(slim(o)) {
                Some(o) => Change::Applied(o),
                None => continue,
            },
            Ok(watcher::Event::Delete(o)) => match wrap(slim(o)) {
                Some(o) => Change::Deleted(o),
                None => continue,
            },
            // 410 Gone is the protocol's way to say "list again", which the watcher does at
            // once; not a failure.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => Change::Expired,
            Err(e) => Change::Failed(Failure::of(&e)),
        };
        let failed = matches!(change, Change::Failed(_));
        match &change {
            Change::Failed(_) => {
                delay = Some(delay.map_or(FIRST_RETRY, |d| (d * 2).min(MAX_RETRY)));
                probation_until = None;
            }
            Change::ListStart | Change::Expired | Change::Recovered => {}
            _ => {
                delay = None;
                probation_until = None;
            }
        }
        if send(&tx, &scope, generation, change).await.is_err() {
            return;
        }
        if failed && let Some(d) = delay {
            tokio::time::sleep(jitter(d)).await;
            probation_until = Some(tokio::time::Instant::now() + PROBATION);
        }
    }
}

/// Drops what a real API server adds to every object and dermaga never reads, before the object
/// is kept: `metadata.managedFields` (server-side apply's field ownership, often larger than the
/// object itself) and kubectl's `last-applied-configuration` annotation (a second copy of the
/// object). client-go's informers do the same with a transform function.
fn slim<K: kube::Resource>(mut o: K) -> K {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    o
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

async fn send(
    tx: &mpsc::Sender<Message>,
    scope: &ScopeKey,
    generation: u64,
    change: Change,
) -> Result<(), mpsc::error::SendError<Message>> {
    tx.send(Message {
        scope: scope.clone(),
        generation,
        change,
    })
    .await
}

/// How long a retry must go without failing to count as recovered.
const PROBATION: Duration = Duration::from_secs(5);

/// The first retry after a failure; doubled on each further failure up to [`MAX_RETRY`]
/// (client-go's reflector uses the same 800 ms and 30 s).
const FIRST_RETRY: Duration = Duration::from_millis(800);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// `d` plus up to a quarter of it, so replicas do not retry in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// The error with its causes, on one line.
fn describe(e: &watcher::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
