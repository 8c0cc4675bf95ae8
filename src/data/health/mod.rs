//! Endpoint health, shared by every TCP connection and UDP flow and kept across table rebuilds.
//!
//! - **Passive** (always on unless `--eject-after 0`): an endpoint whose connects fail
//!   (refused, reset, timed out, unreachable) `eject_after` times in a row is ejected: it takes
//!   no new connections for a backoff that doubles with each ejection in a row (base, 2×base,
//!   4×base, … up to the maximum). After the backoff it is on probation: the next connection may
//!   try it; one more failure ejects it again for longer, a success (or a passing active check)
//!   makes it healthy and resets the backoff. On UDP, an ICMP port-unreachable answered to a
//!   flow's datagram is such a failure, and a reply a success.
//! - **Active** ([`checker`], opt-in): TCP connect probes on an interval; an endpoint failing
//!   `unhealthy_threshold` probes in a row takes no new connections until it passes
//!   `healthy_threshold` in a row. A passing probe also ends a passive ejection.
//! - **Panic rule** (as Envoy's panic threshold): when no endpoint of a route is usable, health
//!   is ignored for that connection and every endpoint is tried: health never makes a port
//!   refuse what its endpoints might still serve.
//!
//! State is keyed by endpoint address and protocol ([`HealthKey`]: a pod's 53/TCP and 53/UDP are
//! two listeners that fail apart), so it survives table rebuilds for endpoints that stay;
//! [`HealthRegistry::retain`] forgets endpoints that left every route. The hot path costs one
//! relaxed atomic load per connection while every endpoint is healthy.
//!
//! The registry never reads the clock: every call that depends on time takes `now`, so its
//! tests step time instead of sleeping. The decisions themselves are pure functions
//! ([`ejection_backoff`], [`check_step`]); the registry applies them to its atomics.

pub mod checker;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::names::HealthKey;
use crate::telemetry::metrics::Metrics;

/// Health settings (flags).
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// Consecutive failed connects that eject an endpoint; 0 never ejects.
    pub eject_after: u32,
    /// First ejection's length; each ejection in a row doubles it.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Active checks.
    pub checks: checker::CheckSettings,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            eject_after: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            checks: checker::CheckSettings::default(),
        }
    }
}

/// What active checks last said about an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum CheckState {
    /// Not checked (checks off for its routes), or not enough probes yet.
    Unknown,
    /// Passed `healthy_threshold` probes in a row (or never failed enough).
    Healthy,
    /// Failed `unhealthy_threshold` probes in a row.
    Unhealthy,
}

impl CheckState {
    /// The state stored in `cell` (as its discriminant, see [`CheckState::store`]).
    fn load(cell: &AtomicU8) -> Self {
        match cell.load(Ordering::Relaxed) {
            v if v == Self::Healthy as u8 => Self::Healthy,
            v if v == Self::Unhealthy as u8 => Self::Unhealthy,
            _ => Self::Unknown,
        }
    }

    /// Stores this state in `cell`; returns the one it replaces.
    fn swap(self, cell: &AtomicU8) -> Self {
        let before = Self::load(cell);
        cell.store(self as u8, Ordering::Relaxed);
        before
    }
}

/// The ejection that `failures` connects failed in a row make, after `ejections` ejections in
/// a row: its backoff (base, doubled per ejection in a row, up to the maximum), or none while
/// fewer than `eject_after` (or never, when that is 0).
pub fn ejection_backoff(
    settings: &HealthSettings,
    failures: u32,
    ejections: u32,
) -> Option<Duration> {
    let k = settings.eject_after;
    if k == 0 || failures < k {
        return None;
    }
    Some(
        settings
            .base_ejection
            .saturating_mul(1u32 << ejections.min(16))
            .min(settings.max_ejection),
    )
}

/// The active-check verdict after one more probe, `passes` or `failures` being the count in a
/// row including it: unhealthy after `unhealthy_threshold` failures, healthy again after
/// `healthy_threshold` passes; an endpoint not yet judged is healthy at its first pass.
pub fn check_step(
    before: CheckState,
    passed: bool,
    in_a_row: u32,
    checks: &checker::CheckSettings,
) -> CheckState {
    match (before, passed) {
        (CheckState::Unknown, true) => CheckState::Healthy,
        (CheckState::Unhealthy, true) if in_a_row >= checks.healthy_threshold => {
            CheckState::Healthy
        }
        (CheckState::Unknown | CheckState::Healthy, false)
            if in_a_row >= checks.unhealthy_threshold =>
        {
            CheckState::Unhealthy
        }
        (before, _) => before,
    }
}

/// One endpoint's health; all fields atomics, so connections update it without a lock.
#[derive(Debug, Default)]
struct EndpointHealth {
    consecutive_failures: AtomicU32,
    /// Ejections in a row (the backoff's exponent).
    ejections: AtomicU32,
    /// Milliseconds since the registry's epoch until which it is ejected; 0: not ejected.
    ejected_until_ms: AtomicU64,
    check: AtomicU8,
    check_passes: AtomicU32,
    check_failures: AtomicU32,
    last_check_error: Mutex<Option<String>>,
    pod: Mutex<Option<Arc<str>>>,
    /// Serialises this endpoint's transitions (the rare path); readers use the atomics alone.
    transition: Mutex<()>,
    /// Whether this endpoint is counted in the registry's `troubled` hint (changed only under
    /// `transition`).
    counted: std::sync::atomic::AtomicBool,
}

impl EndpointHealth {
    /// Failures in a row, an ejection (or probation after one), or a failing check verdict.
    fn in_trouble(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) > 0
            || self.ejected_until_ms.load(Ordering::Relaxed) != 0
            || CheckState::load(&self.check) == CheckState::Unhealthy
    }
}

/// What `/routes` shows for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthView {
    /// `healthy`, `ejected`, `probation` (backoff over, next connect decides) or `unhealthy`
    /// (active checks).
    pub state: &'static str,
    /// Failed connects in a row.
    pub consecutive_failures: u32,
    /// Ejections in a row.
    pub ejections: u32,
    /// Milliseconds of ejection left.
    pub ejected_for_ms: Option<u64>,
    /// The active checks' verdict.
    pub check: CheckState,
    /// The last failed probe's error, while the check state is not healthy.
    pub check_error: Option<String>,
}

/// Health of every endpoint in the table.
#[derive(Debug)]
pub struct HealthRegistry {
    settings: HealthSettings,
    epoch: Instant,
    endpoints: RwLock<HashMap<HealthKey, Arc<EndpointHealth>>>,
    /// Endpoints in trouble (failures in a row, ejected or on probation, failing checks): 0 lets
    /// connections skip every lookup. Each endpoint's transitions run under its own lock and
    /// count it in or out here, so it is never 0 while a known endpoint is in trouble.
    troubled: AtomicUsize,
    /// Endpoints that active checks probe now.
    checked_addrs: RwLock<HashSet<SocketAddr>>,
    metrics: Arc<Metrics>,
}

impl HealthRegistry {
    /// An empty registry.
    pub fn new(settings: HealthSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            settings,
            epoch: Instant::now(),
            endpoints: RwLock::new(HashMap::new()),
            troubled: AtomicUsize::new(0),
            checked_addrs: RwLock::new(HashSet::new()),
            metrics,
        }
    }

    /// The ejection and check settings in force.
    pub fn settings(&self) -> &HealthSettings {
        &self.settings
    }

    fn now_ms(&self, now: Instant) -> u64 {
        // +1: 0 means "not ejected".
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn get(&self, addr: &HealthKey) -> Option<Arc<EndpointHealth>> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned()
    }

    fn entry(&self, addr: HealthKey) -> Arc<EndpointHealth> {
        if let Some(h) = self.get(&addr) {
            return h;
        }
        self.endpoints
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr)
            .or_default()
            .clone()
    }

    /// True while every known endpoint is healthy: connections need no lookup.
    pub fn all_healthy(&self) -> bool {
        self.troubled.load(Ordering::Relaxed) == 0
    }

    /// May `addr` take a new connection at `now` (not ejected, not failing active checks)?
    pub fn usable(&self, addr: impl Into<HealthKey>, now: Instant) -> bool {
        if self.all_healthy() {
            return true;
        }
        let addr = addr.into();
        let Some(h) = self.get(&addr) else {
            return true;
        };
        if CheckState::load(&h.check) == CheckState::Unhealthy {
            return false;
        }
        let until = h.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || until <= self.now_ms(now)
    }

    /// Records a successful connect: the endpoint is healthy again.
    pub fn connect_succeeded(&self, addr: impl Into<HealthKey>) {
        if self.all_healthy() {
            return;
        }
        let addr = addr.into();
        if let Some(h) = self.get(&addr)
            && h.in_trouble()
        {
            let _transition = Self::lock(&h);
            self.clear_failures(addr, &h, "connect succeeded");
            self.recount(&h);
        }
    }

    /// Counts `h` in or out of the `troubled` hint after a transition (under `h.transition`).
    fn recount(&self, h: &EndpointHealth) {
        let trouble = h.in_trouble();
        if h.counted.swap(trouble, Ordering::Relaxed) != trouble {
            if trouble {
                self.troubled.fetch_add(1, Ordering::Relaxed);
            } else {
                self.troubled.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn lock(h: &EndpointHealth) -> std::sync::MutexGuard<'_, ()> {
        h.transition.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends failures in a row and any ejection (under `h.transition`).
    fn clear_failures(&self, addr: HealthKey, h: &EndpointHealth, why: &str) {
        h.consecutive_failures.store(0, Ordering::Relaxed);
        h.ejections.store(0, Ordering::Relaxed);
        if h.ejected_until_ms.swap(0, Ordering::Relaxed) != 0 {
            let pod = h.pod.lock().unwrap_or_else(|p| p.into_inner()).clone();
            tracing::info!(endpoint = %addr.addr, protocol = %addr.protocol, pod = pod.as_deref().unwrap_or("-"), "endpoint healthy again ({why}); it takes new connections");
            self.metrics.endpoint_ejected(addr, false);
        }
    }

    /// Records a failed connect (refused, reset, timed out, unreachable) at `now`; may eject
    /// the endpoint. Returns true when this failure ejected it.
    pub fn connect_failed(
        &self,
        addr: impl Into<HealthKey>,
        pod: Option<&Arc<str>>,
        now: Instant,
    ) -> bool {
        let addr = addr.into();
        let h = self.entry(addr);
        if pod.is_some() {
            *h.pod.lock().unwrap_or_else(|p| p.into_inner()) = pod.cloned();
        }
        let _transition = Self::lock(&h);
        let failures = h.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let ejected = self.maybe_eject(addr, &h, failures, pod, now);
        self.recount(&h);
        ejected
    }

    fn maybe_eject(
        &self,
        addr: HealthKey,
        h: &EndpointHealth,
        failures: u32,
        pod: Option<&Arc<str>>,
        now: Instant,
    ) -> bool {
        let ejections = h.ejections.load(Ordering::Relaxed);
        let Some(backoff) = ejection_backoff(&self.settings, failures, ejections) else {
            return false;
        };
        let now = self.now_ms(now);
        if h.ejected_until_ms.load(Ordering::Relaxed) > now {
            // Already ejected (a connect that started before the ejection).
            return false;
        }
        h.ejections.store(ejections + 1, Ordering::Relaxed);
        h.ejected_until_ms
            .store(now + backoff.as_millis() as u64, Ordering::Relaxed);
        tracing::warn!(
            endpoint = %addr.addr,
            protocol = %addr.protocol,
            pod = pod.map(|p| &**p).unwrap_or("-"),
            consecutive_failures = failures,
            ejection = ejections + 1,
            backoff = ?backoff,
            "endpoint ejected: it takes no new connections until the backoff ends or an active check passes"
        );
        self.metrics
            .endpoint_ejection(addr, pod.map(|p| &**p).unwrap_or(""));
        self.metrics.endpoint_ejected(addr, true);
        true
    }

    /// Records one active probe's result (ignored for an endpoint no longer known).
    pub fn check_result(&self, addr: SocketAddr, result: Result<(), String>) {
        let addr = HealthKey::tcp(addr);
        let Some(h) = self.get(&addr).or_else(|| self.checked(addr)) else {
            return;
        };
        let _transition = Self::lock(&h);
        let checks = &self.settings.checks;
        let before = CheckState::load(&h.check);
        let (passed, in_a_row) = match &result {
            Ok(()) => {
                h.check_failures.store(0, Ordering::Relaxed);
                (true, h.check_passes.fetch_add(1, Ordering::Relaxed) + 1)
            }
            Err(_) => {
                h.check_passes.store(0, Ordering::Relaxed);
                (false, h.check_failures.fetch_add(1, Ordering::Relaxed) + 1)
            }
        };
        let after = check_step(before, passed, in_a_row, checks);
        after.swap(&h.check);
        match (before, after) {
            (CheckState::Unhealthy, CheckState::Healthy) => {
                tracing::info!(endpoint = %addr.addr, passes = in_a_row, "active health check: endpoint healthy again");
                self.metrics.endpoint_check_unhealthy(addr.addr, false);
            }
            (_, CheckState::Unhealthy) if before != CheckState::Unhealthy => {
                let error = result.as_ref().err().map(String::as_str).unwrap_or("");
                tracing::warn!(endpoint = %addr.addr, failures = in_a_row, error = %error, "active health check: endpoint unhealthy; it takes no new connections");
                self.metrics.endpoint_check_unhealthy(addr.addr, true);
            }
            _ => {}
        }
        match result {
            // A pass ends a passive ejection, unless the endpoint is still unhealthy by checks.
            Ok(()) => {
                if after != CheckState::Unhealthy {
                    *h.last_check_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.clear_failures(addr, &h, "an active check passed");
                }
            }
            Err(error) => {
                *h.last_check_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
            }
        }
        self.recount(&h);
    }

    /// The entry of an endpoint that active checks probe (created on its first probe).
    fn checked(&self, addr: HealthKey) -> Option<Arc<EndpointHealth>> {
        self.checked_addrs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&addr.addr)
            .then(|| self.entry(addr))
    }

    /// Active checks of `addr` stopped (its ports no longer ask for them): their verdict no
    /// longer holds it out.
    pub fn checks_stopped(&self, addr: SocketAddr) {
        let Some(h) = self.get(&HealthKey::tcp(addr)) else {
            return;
        };
        let _transition = Self::lock(&h);
        if CheckState::Unknown.swap(&h.check) == CheckState::Unhealthy {
            self.metrics.endpoint_check_unhealthy(addr, false);
        }
        h.check_passes.store(0, Ordering::Relaxed);
        h.check_failures.store(0, Ordering::Relaxed);
        *h.last_check_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.recount(&h);
    }

    /// Sets which endpoints active checks probe now.
    pub fn set_checked(&self, addrs: HashSet<SocketAddr>) {
        *self
            .checked_addrs
            .write()
            .unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    /// The health of `addr` at `now`, for `/routes`.
    pub fn view(&self, addr: impl Into<HealthKey>, now: Instant) -> HealthView {
        let Some(h) = self.get(&addr.into()) else {
            return HealthView {
                state: "healthy",
                consecutive_failures: 0,
                ejections: 0,
                ejected_for_ms: None,
                check: CheckState::Unknown,
                check_error: None,
            };
        };
        let now = self.now_ms(now);
        let until = h.ejected_until_ms.load(Ordering::Relaxed);
        let check = CheckState::load(&h.check);
        let state = if check == CheckState::Unhealthy {
            "unhealthy"
        } else if until > now {
            "ejected"
        } else if until != 0 {
            "probation"
        } else {
            "healthy"
        };
        HealthView {
            state,
            consecutive_failures: h.consecutive_failures.load(Ordering::Relaxed),
            ejections: h.ejections.load(Ordering::Relaxed),
            ejected_for_ms: (until > now).then(|| until - now),
            check,
            check_error: if check == CheckState::Healthy {
                None
            } else {
                h.last_check_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            },
        }
    }

    /// Forgets endpoints not in `keep` (they left every route), their metric series with them.
    pub fn retain(&self, keep: &HashSet<HealthKey>) {
        let mut map = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|addr, h| {
            if keep.contains(addr) {
                return true;
            }
            let _transition = Self::lock(h);
            if h.counted.swap(false, Ordering::Relaxed) {
                self.troubled.fetch_sub(1, Ordering::Relaxed);
            }
            let pod = h.pod.lock().unwrap_or_else(|p| p.into_inner()).clone();
            self.metrics
                .forget_endpoint(*addr, pod.as_deref().unwrap_or(""));
            false
        });
    }

    /// Endpoints with health state (tests and debugging).
    pub fn known(&self) -> usize {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests;
