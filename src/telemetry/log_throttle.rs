//! Rate limit for warnings that can come once per connection or datagram (a bad PROXY header,
//! a refused connect, a connection refused at a limit or for want of descriptors, a UDP flow
//! limit or port unreachable): the first of a kind is logged at once, then at most one line per
//! interval carries the count of those held back, so a flood cannot flood the log. The TCP
//! path, the accept loops and the UDP ports all go through the one [`ConnWarnings`].
//!
//! [`LogThrottle`] is the pure rule (it takes `now`, does no I/O); [`ConnWarnings`] is the
//! shell the data path shares: a lock around it, and a task that writes the summary lines of
//! kinds that went quiet (so the last count of a burst is not lost) and forgets them.
//!
//! Invariants: per key, at most one line per interval after the first; every event is either
//! logged or counted in exactly one later line (the summary at exit included); a key is
//! forgotten one quiet interval after its last line, so the table holds only the kinds seen in
//! the last interval or two (bounded by ports × endpoints × reasons).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::names::RouteKey;
use crate::telemetry::outcome::{ConnectFailure, RefuseReason};

/// The pure rule: per key, the first event logs, then one line per `interval` at most.
#[derive(Debug)]
pub struct LogThrottle<K> {
    interval: Duration,
    entries: HashMap<K, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the last line for this key was written.
    since: Instant,
    /// Events held back since then.
    held: u64,
}

impl<K: Hash + Eq + Clone> LogThrottle<K> {
    /// A throttle letting one line per key through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            entries: HashMap::new(),
        }
    }

    /// One event of `key`. `Some(held)` when it is to be logged now, `held` counting the events
    /// of `key` held back since the last line (0 for the first); `None` when it is held back.
    pub fn note(&mut self, key: K, now: Instant) -> Option<u64> {
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key,
                    Entry {
                        since: now,
                        held: 0,
                    },
                );
                Some(0)
            }
            Some(e) if now.saturating_duration_since(e.since) < self.interval => {
                e.held += 1;
                None
            }
            Some(e) => {
                let held = std::mem::take(&mut e.held);
                e.since = now;
                Some(held)
            }
        }
    }

    /// The summary lines due at `now`: `(key, held)` for every key whose interval has passed
    /// with events held back (its interval starts again), and forgets keys whose interval passed
    /// with none (their next event is logged at once).
    pub fn due(&mut self, now: Instant) -> Vec<(K, u64)> {
        let mut lines = Vec::new();
        let interval = self.interval;
        self.entries.retain(|key, e| {
            if now.saturating_duration_since(e.since) < interval {
                return true;
            }
            if e.held == 0 {
                return false;
            }
            lines.push((key.clone(), std::mem::take(&mut e.held)));
            e.since = now;
            true
        });
        lines
    }

    /// Every count still held back (at exit), forgetting everything.
    pub fn drain(&mut self) -> Vec<(K, u64)> {
        self.entries
            .drain()
            .filter(|(_, e)| e.held > 0)
            .map(|(k, e)| (k, e.held))
            .collect()
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is remembered.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What a per-connection warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarnReason {
    /// The client's PROXY protocol header was bad, missing or late.
    ProxyHeader,
    /// A connect to an endpoint failed.
    Connect(ConnectFailure),
    /// No endpoint accepted the connection (every attempt failed).
    NoEndpointAccepted,
    /// A connection refused at accept: over a connection limit.
    ConnectionLimit,
    /// A connection refused at accept: the descriptors kept for the rest of the process are
    /// reached, or accept failed for want of descriptors.
    OutOfDescriptors,
    /// UDP: datagrams of a new client dropped at the flow limit.
    UdpFlowLimit,
    /// UDP: no upstream socket could be opened for a new flow.
    UdpUpstreamSocket,
    /// UDP: an endpoint answered ICMP port-unreachable.
    UdpPortUnreachable,
    /// A TLS passthrough port got no ClientHello it could route.
    TlsServerName,
    /// A connection or UDP flow refused by the port's source policy, for this reason.
    SourcePolicy(RefuseReason),
}

impl fmt::Display for WarnReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WarnReason::ProxyHeader => "bad PROXY protocol header",
            WarnReason::Connect(ConnectFailure::refused) => "upstream connect refused",
            WarnReason::Connect(ConnectFailure::reset) => "upstream connect reset",
            WarnReason::Connect(ConnectFailure::timeout) => "upstream connect timed out",
            WarnReason::Connect(ConnectFailure::unreachable) => "upstream unreachable",
            WarnReason::Connect(ConnectFailure::closed_before_data) => {
                "upstream closed the connection before any byte moved"
            }
            WarnReason::Connect(ConnectFailure::other) => "upstream connect failed",
            WarnReason::NoEndpointAccepted => "no endpoint accepted the connection",
            WarnReason::ConnectionLimit => "connection limit reached",
            WarnReason::OutOfDescriptors => "out of file descriptors",
            WarnReason::UdpFlowLimit => "UDP flow limit reached",
            WarnReason::UdpUpstreamSocket => "cannot open an upstream UDP socket",
            WarnReason::UdpPortUnreachable => "UDP endpoint answered port unreachable",
            WarnReason::TlsServerName => "no route for a TLS ClientHello",
            WarnReason::SourcePolicy(RefuseReason::source_denied) => {
                "client address not allowed on the port"
            }
            WarnReason::SourcePolicy(RefuseReason::source_connections) => {
                "client at max-connections-per-source"
            }
            WarnReason::SourcePolicy(RefuseReason::source_rate) => {
                "client over new-connections-per-second"
            }
            WarnReason::SourcePolicy(RefuseReason::proxy_untrusted) => {
                "connection to a PROXY port from a peer not in proxy-trusted-sources"
            }
            WarnReason::SourcePolicy(_) => "refused by the source policy",
        })
    }
}

/// The key warnings are limited by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WarnKey {
    /// The external port.
    pub port: RouteKey,
    /// The endpoint, when the warning is about one.
    pub endpoint: Option<SocketAddr>,
    /// What happened.
    pub reason: WarnReason,
}

/// The per-connection warnings of every port, shared by the data path.
#[derive(Debug)]
pub struct ConnWarnings {
    throttle: Mutex<LogThrottle<WarnKey>>,
    interval: Duration,
}

impl Default for ConnWarnings {
    fn default() -> Self {
        Self::new(Self::INTERVAL)
    }
}

impl ConnWarnings {
    /// One line per port, endpoint and reason per this interval at most.
    pub const INTERVAL: Duration = Duration::from_secs(10);
    /// How often summaries of kinds that went quiet are written.
    const SWEEP: Duration = Duration::from_secs(1);

    /// Warnings limited to one line per key per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            throttle: Mutex::new(LogThrottle::new(interval)),
            interval,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogThrottle<WarnKey>> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One warning of `key`: `Some(suppressed)` when the caller logs it now, with
    /// `suppressed` as the line's field (the like warnings not logged since the last line;
    /// `None` when there were none), and `None` when it is held back.
    pub fn note(&self, key: WarnKey) -> Option<Option<u64>> {
        let held = self.lock().note(key, Instant::now())?;
        Some((held > 0).then_some(held))
    }

    /// Writes the summary lines due now.
    pub fn sweep(&self) {
        let due = self.lock().due(Instant::now());
        self.log(due);
    }

    /// Writes every count still held back (at exit).
    pub fn flush(&self) {
        let held = self.lock().drain();
        self.log(held);
    }

    fn log(&self, lines: Vec<(WarnKey, u64)>) {
        for (key, suppressed) in lines {
            let endpoint = key
                .endpoint
                .map_or_else(|| "-".to_owned(), |e| e.to_string());
            tracing::warn!(port = %key.port, endpoint = %endpoint, reason = %key.reason, suppressed, interval = ?self.interval, "like warnings not logged (at most one line per port, endpoint and reason per interval)");
        }
    }

    /// Writes summaries every second until `stop`, then the rest.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Self::SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.sweep(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_event_logs_then_one_line_per_interval_carries_the_count() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(10 * S);
        assert_eq!(t.note("a", t0), Some(0), "first: logged");
        for i in 1..=99 {
            assert_eq!(
                t.note("a", t0 + i * S / 10),
                None,
                "within the interval: held"
            );
        }
        assert_eq!(t.due(t0 + 9 * S), vec![], "interval not over");
        assert_eq!(
            t.due(t0 + 10 * S),
            vec![("a", 99)],
            "summary with the count"
        );
        assert_eq!(
            t.note("a", t0 + 11 * S),
            None,
            "a new interval began at the summary"
        );
        assert_eq!(
            t.note("a", t0 + 20 * S),
            Some(1),
            "an event past the interval logs itself"
        );
        assert_eq!(t.due(t0 + 30 * S), vec![], "quiet interval: nothing to say");
        assert!(t.is_empty(), "and the key is forgotten");
        assert_eq!(
            t.note("a", t0 + 31 * S),
            Some(0),
            "so the next one is a first again"
        );
    }

    #[test]
    fn keys_are_limited_apart() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(10 * S);
        assert_eq!(t.note(("p1", "refused"), t0), Some(0));
        assert_eq!(t.note(("p1", "timeout"), t0), Some(0));
        assert_eq!(t.note(("p2", "refused"), t0), Some(0));
        assert_eq!(t.note(("p1", "refused"), t0 + S), None);
        assert_eq!(t.note(("p1", "refused"), t0 + S), None);
        assert_eq!(t.note(("p2", "refused"), t0 + S), None);
        let mut due = t.due(t0 + 10 * S);
        due.sort();
        assert_eq!(due, vec![(("p1", "refused"), 2), (("p2", "refused"), 1)]);
        assert_eq!(t.len(), 2, "the quiet key is forgotten");
    }

    #[test]
    fn drain_returns_only_what_is_held_and_forgets_all() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(10 * S);
        t.note("a", t0);
        t.note("b", t0);
        t.note("b", t0);
        assert_eq!(t.drain(), vec![("b", 1)]);
        assert!(t.is_empty());
    }

    #[test]
    fn every_event_is_logged_or_counted_exactly_once() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(10 * S);
        let (mut lines, mut logged, mut counted) = (0u64, 0u64, 0u64);
        for ms in (0..60_000u64).step_by(7) {
            let now = t0 + Duration::from_millis(ms);
            if let Some(held) = t.note("k", now) {
                logged += 1;
                counted += held;
            }
            if ms % 1000 < 7 {
                let due = t.due(now);
                lines += due.len() as u64;
                counted += due.iter().map(|(_, n)| n).sum::<u64>();
            }
        }
        let rest = t.drain();
        lines += logged + rest.len() as u64;
        counted += rest.iter().map(|(_, n)| n).sum::<u64>();
        let events = (0..60_000u64).step_by(7).count() as u64;
        assert_eq!(logged + counted, events);
        assert!(
            lines <= 7,
            "the first, then one per 10 s over 60 s: {lines} lines"
        );
    }
}
