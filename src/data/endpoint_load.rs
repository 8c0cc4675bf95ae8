//! Open connections (TCP) and flows (UDP) per endpoint through this gateway, for the
//! `least-connections` and `random-two` balance choices. Kept across table rebuilds (keyed by
//! endpoint address and protocol), so a connection opened before an endpoint change still
//! counts after it. Only ports with one of those choices take a [`LoadHold`]; every other
//! port costs nothing here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::names::HealthKey;

/// Entries kept before those with nothing open are forgotten.
const PRUNE_AT: usize = 4096;

/// The per-endpoint counts.
#[derive(Debug, Default)]
pub struct EndpointLoads {
    counts: RwLock<HashMap<HealthKey, Arc<AtomicUsize>>>,
}

/// One open connection or flow counted on its endpoint; given back on drop.
#[derive(Debug)]
pub struct LoadHold(Arc<AtomicUsize>);

impl Drop for LoadHold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EndpointLoads {
    /// Connections or flows open now to `key` through this gateway.
    pub fn load(&self, key: HealthKey) -> usize {
        let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
        counts
            .get(&key)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// Counts one more on `key` until the hold is dropped.
    pub fn hold(&self, key: HealthKey) -> LoadHold {
        if let Some(count) = self
            .counts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            count.fetch_add(1, Ordering::Relaxed);
            return LoadHold(count.clone());
        }
        let mut counts = self.counts.write().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= PRUNE_AT {
            // Endpoints with nothing open (most of them gone from every route) are forgotten;
            // a hold still alive keeps its own count.
            counts.retain(|_, count| count.load(Ordering::Relaxed) > 0);
        }
        let count = counts.entry(key).or_default();
        count.fetch_add(1, Ordering::Relaxed);
        LoadHold(count.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_count_until_dropped_and_protocols_apart() {
        let loads = EndpointLoads::default();
        let addr = "10.0.0.1:53".parse().unwrap();
        let (tcp, udp) = (HealthKey::tcp(addr), HealthKey::udp(addr));
        let a = loads.hold(tcp);
        let b = loads.hold(tcp);
        let c = loads.hold(udp);
        assert_eq!((loads.load(tcp), loads.load(udp)), (2, 1));
        drop((a, c));
        assert_eq!((loads.load(tcp), loads.load(udp)), (1, 0));
        drop(b);
        assert_eq!(loads.load(tcp), 0);
    }
}
