//! A port's source policy at admission: whether a client address may connect (allow/deny
//! CIDRs, [`SourcePolicy::admits`]), and the per-source counts behind
//! `max-connections-per-source` and `new-connections-per-second`/`new-connections-burst`.
//!
//! The counts live in a [`SourceTable`] per listening port (kept across table rebuilds, like
//! the port's connection count): one entry per client address with open connections or a
//! rate bucket not yet full again. Memory is bounded whatever arrives: when a new source finds
//! the table at its pruning size (at first [`MAX_IDLE_SOURCES`]), entries that carry no
//! information (no open connection, bucket full again) are dropped, then, if it is still that
//! large, the rate state of sources without open connections (those clients get a full bucket
//! again: the limit errs on the side of serving). The next pruning size is the larger of
//! [`MAX_IDLE_SOURCES`] and what was kept plus half of it, so a table full of open connections
//! is not scanned at every new source. The table thus holds at most 1.5 × [`MAX_IDLE_SOURCES`]
//! (98,304) entries plus one per open connection, and the open connections are bounded by the
//! port's and the process's connection limits and the descriptor ceiling. An entry is about 64
//! bytes.
//!
//! The clock is passed in (`now`), so the tests step time instead of sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::control::configmap::SourcePolicy;
use crate::telemetry::outcome::RefuseReason;

/// Entries kept without open connections before the table is pruned.
pub const MAX_IDLE_SOURCES: usize = 65_536;

/// What is counted of one client address.
#[derive(Debug, Clone, Copy)]
struct SourceState {
    /// Connections open now (counted only when the port caps them).
    open: u32,
    /// Tokens left in the rate bucket (at `refilled`).
    tokens: f32,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
}

/// The per-source counts of one port.
#[derive(Debug)]
pub struct SourceTable {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    sources: HashMap<IpAddr, SourceState>,
    /// The table size at which to prune next (grows when a prune frees little, so that a
    /// table full of open connections is not scanned at every new source).
    prune_at: usize,
}

impl Default for SourceTable {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                sources: HashMap::new(),
                prune_at: MAX_IDLE_SOURCES,
            }),
        }
    }
}

/// Whether the source gets a slot counted in the table (to give back when its connection
/// ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Admitted; nothing to give back.
    Uncounted,
    /// Admitted and counted as one open connection of this source.
    Counted,
}

impl SourceTable {
    /// Entries held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().sources.len()
    }

    /// Decides one new connection (or UDP flow) from `source` under `policy` at `now`:
    /// refused when not allowed, at the source's open-connection cap, or out of its rate
    /// bucket; otherwise admitted, counted when the port caps open connections per source.
    pub fn admit(
        &self,
        policy: &SourcePolicy,
        source: IpAddr,
        now: Instant,
    ) -> Result<Admitted, RefuseReason> {
        if !policy.admits(source) {
            return Err(RefuseReason::source_denied);
        }
        if !policy.limits_sources() {
            return Ok(Admitted::Uncounted);
        }
        let source = source.to_canonical();
        let cap = policy.max_connections_per_source;
        let rate = policy.new_connections_per_second;
        let burst = policy.burst() as f32;
        let mut inner = self.lock();
        if inner.sources.len() >= inner.prune_at && !inner.sources.contains_key(&source) {
            inner.prune(policy, now);
        }
        let state = inner.sources.entry(source).or_insert(SourceState {
            open: 0,
            tokens: burst,
            refilled: now,
        });
        if cap > 0 && state.open >= cap {
            return Err(RefuseReason::source_connections);
        }
        if rate > 0 {
            let elapsed = now.saturating_duration_since(state.refilled).as_secs_f32();
            state.tokens = (state.tokens + elapsed * rate as f32).min(burst);
            state.refilled = now;
            if state.tokens < 1.0 {
                return Err(RefuseReason::source_rate);
            }
            state.tokens -= 1.0;
        }
        if cap > 0 {
            state.open += 1;
            Ok(Admitted::Counted)
        } else {
            Ok(Admitted::Uncounted)
        }
    }

    /// Gives back one counted connection of `source`.
    pub fn release(&self, source: IpAddr) {
        let mut inner = self.lock();
        if let Some(state) = inner.sources.get_mut(&source.to_canonical()) {
            state.open = state.open.saturating_sub(1);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Drops what carries no information, then (if still full) the rate state of sources
    /// without open connections.
    fn prune(&mut self, policy: &SourcePolicy, now: Instant) {
        let rate = policy.new_connections_per_second as f32;
        let burst = policy.burst() as f32;
        let full_again = |s: &SourceState| {
            rate == 0.0
                || s.tokens + now.saturating_duration_since(s.refilled).as_secs_f32() * rate
                    >= burst
        };
        self.sources.retain(|_, s| s.open > 0 || !full_again(s));
        if self.sources.len() >= MAX_IDLE_SOURCES {
            self.sources.retain(|_, s| s.open > 0);
        }
        self.prune_at = MAX_IDLE_SOURCES.max(self.sources.len() + MAX_IDLE_SOURCES / 2);
        self.sources.shrink_to(self.prune_at);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::control::configmap::policy::parse_cidrs;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn the_open_connection_cap_counts_per_source() {
        let table = SourceTable::default();
        let policy = SourcePolicy {
            max_connections_per_source: 2,
            ..SourcePolicy::default()
        };
        let now = Instant::now();
        assert_eq!(table.admit(&policy, ip(1), now), Ok(Admitted::Counted));
        assert_eq!(table.admit(&policy, ip(1), now), Ok(Admitted::Counted));
        assert_eq!(
            table.admit(&policy, ip(1), now),
            Err(RefuseReason::source_connections)
        );
        // Another client is not affected.
        assert_eq!(table.admit(&policy, ip(2), now), Ok(Admitted::Counted));
        table.release(ip(1));
        assert_eq!(table.admit(&policy, ip(1), now), Ok(Admitted::Counted));
    }

    #[test]
    fn the_rate_refills_over_time_up_to_the_burst() {
        let table = SourceTable::default();
        let policy = SourcePolicy {
            new_connections_per_second: 10,
            new_connections_burst: 3,
            ..SourcePolicy::default()
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(table.admit(&policy, ip(1), t0), Ok(Admitted::Uncounted));
        }
        assert_eq!(
            table.admit(&policy, ip(1), t0),
            Err(RefuseReason::source_rate)
        );
        // 100 ms later one token is back; a second passed fills the bucket to 3, not 10.
        let t1 = t0 + Duration::from_millis(100);
        assert!(table.admit(&policy, ip(1), t1).is_ok());
        assert!(table.admit(&policy, ip(1), t1).is_err());
        let t2 = t1 + Duration::from_secs(5);
        let admitted = (0..10)
            .filter(|_| table.admit(&policy, ip(1), t2).is_ok())
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn denied_sources_are_refused_before_any_count() {
        let table = SourceTable::default();
        let policy = SourcePolicy {
            deny: parse_cidrs("deny-source", "10.0.0.0/24").unwrap(),
            max_connections_per_source: 1,
            ..SourcePolicy::default()
        };
        let now = Instant::now();
        assert_eq!(
            table.admit(&policy, ip(5), now),
            Err(RefuseReason::source_denied)
        );
        assert_eq!(table.len(), 0);
        assert_eq!(table.admit(&policy, ip(300), now), Ok(Admitted::Counted));
    }

    /// 100,000 distinct sources, each opening a connection, some of them still open: the table
    /// never holds more than the bound plus the open connections.
    #[test]
    fn memory_stays_bounded_with_100000_sources() {
        let table = SourceTable::default();
        let policy = SourcePolicy {
            max_connections_per_source: 4,
            new_connections_per_second: 1,
            ..SourcePolicy::default()
        };
        let now = Instant::now();
        let mut open = 0usize;
        let mut largest = 0usize;
        for i in 0..100_000u32 {
            assert!(table.admit(&policy, ip(i), now).is_ok());
            // One client in a hundred keeps its connection open.
            if i % 100 == 0 {
                open += 1;
            } else {
                table.release(ip(i));
            }
            largest = largest.max(table.len());
        }
        assert!(
            largest <= MAX_IDLE_SOURCES + MAX_IDLE_SOURCES / 2 + open,
            "largest {largest}"
        );
        // The open ones are still counted: their cap holds (one new connection a second,
        // the rate's).
        for s in 1..=3 {
            let later = now + Duration::from_secs(10 * s);
            assert!(table.admit(&policy, ip(0), later).is_ok());
        }
        assert_eq!(
            table.admit(&policy, ip(0), now + Duration::from_secs(40)),
            Err(RefuseReason::source_connections)
        );
        println!(
            "100000 sources, {open} with an open connection: at most {largest} entries held, {} at the end",
            table.len()
        );
    }
}
