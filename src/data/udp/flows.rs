//! The UDP flow table, sans-io: it takes `now` as an argument and makes no syscalls, so its
//! expiry, limit and endpoint-choice rules are unit-tested with injected time. The tokio shell
//! in [`super::port`] owns the sockets and timers and stores its per-flow handle as `H`.
//!
//! Rules:
//! - a flow is keyed by the client's address and sticks to one endpoint while that endpoint
//!   stays in the route's active set;
//! - a flow whose endpoint left the set is ended and the datagram starts a new flow on another
//!   endpoint (no black hole after a pod churn);
//! - an endpoint that answered with ICMP port-unreachable is skipped for new flows for a while,
//!   unless every candidate is skipped;
//! - a flow idle for the idle timeout expires; at most `max_flows` flows exist per port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One flow.
#[derive(Debug)]
pub struct Flow<H> {
    /// The endpoint it goes to.
    pub endpoint: SocketAddr,
    /// Last datagram either way.
    pub last_seen: Instant,
    /// The shell's resources for it.
    pub handle: H,
}

/// What to do with a datagram from a client.
#[derive(Debug)]
pub enum Lookup<'a, H> {
    /// Send it on this existing flow.
    Existing(&'a H),
    /// Start a new flow (no flow yet).
    Create,
    /// The flow's endpoint left the route: this flow is ended; start a new one.
    Moved(Flow<H>),
    /// The port is at its flow limit: drop the datagram.
    Full,
}

/// The flows of one port.
#[derive(Debug)]
pub struct FlowTable<H> {
    flows: HashMap<SocketAddr, Flow<H>>,
    skipped_until: HashMap<SocketAddr, Instant>,
    idle_timeout: Duration,
    max_flows: usize,
    skip_for: Duration,
}

impl<H> FlowTable<H> {
    /// A table whose flows expire after `idle_timeout` and that holds at most `max_flows`.
    /// Endpoints that refuse are skipped for `skip_for`.
    pub fn new(idle_timeout: Duration, max_flows: usize, skip_for: Duration) -> Self {
        Self {
            flows: HashMap::new(),
            skipped_until: HashMap::new(),
            idle_timeout,
            max_flows,
            skip_for,
        }
    }

    /// Flows now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when there are no flows.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Classifies a datagram from `client`; `active` says whether an endpoint is still in the
    /// route's active set. An existing flow is touched.
    pub fn lookup(
        &mut self,
        client: SocketAddr,
        now: Instant,
        active: impl Fn(SocketAddr) -> bool,
    ) -> Lookup<'_, H> {
        let moved = match self.flows.get(&client) {
            Some(flow) => !active(flow.endpoint),
            None => {
                if self.flows.len() >= self.max_flows {
                    return Lookup::Full;
                }
                return Lookup::Create;
            }
        };
        if moved {
            return Lookup::Moved(self.flows.remove(&client).expect("present"));
        }
        let flow = self.flows.get_mut(&client).expect("present");
        flow.last_seen = now;
        Lookup::Existing(&flow.handle)
    }

    /// Picks the endpoint for a new flow: the first candidate (in round-robin order) that is
    /// not being skipped; if all are skipped, the first one.
    pub fn choose(
        &mut self,
        candidates: impl IntoIterator<Item = SocketAddr>,
        now: Instant,
    ) -> Option<SocketAddr> {
        self.skipped_until.retain(|_, until| *until > now);
        let mut first = None;
        for candidate in candidates {
            if !self.skipped_until.contains_key(&candidate) {
                return Some(candidate);
            }
            first.get_or_insert(candidate);
        }
        first
    }

    /// Records a new flow.
    pub fn insert(&mut self, client: SocketAddr, endpoint: SocketAddr, handle: H, now: Instant) {
        self.flows.insert(
            client,
            Flow {
                endpoint,
                last_seen: now,
                handle,
            },
        );
    }

    /// A reply went back to `client`: the flow is alive.
    pub fn touch(&mut self, client: SocketAddr, now: Instant) {
        if let Some(flow) = self.flows.get_mut(&client) {
            flow.last_seen = now;
        }
    }

    /// `endpoint` answered ICMP port-unreachable: skip it for new flows for a while.
    pub fn refused(&mut self, endpoint: SocketAddr, now: Instant) {
        self.skipped_until.insert(endpoint, now + self.skip_for);
    }

    /// The flow of `client`, if any.
    pub fn get(&self, client: SocketAddr) -> Option<&Flow<H>> {
        self.flows.get(&client)
    }

    /// Ends a flow.
    pub fn remove(&mut self, client: SocketAddr) -> Option<Flow<H>> {
        self.flows.remove(&client)
    }

    /// Removes and returns the flows idle for the idle timeout or longer.
    pub fn expire(&mut self, now: Instant) -> Vec<(SocketAddr, Flow<H>)> {
        let idle = self.idle_timeout;
        let expired: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.last_seen) >= idle)
            .map(|(c, _)| *c)
            .collect();
        expired
            .into_iter()
            .map(|c| {
                let flow = self.flows.remove(&c).expect("present");
                (c, flow)
            })
            .collect()
    }

    /// Removes and returns every flow.
    pub fn drain(&mut self) -> Vec<(SocketAddr, Flow<H>)> {
        self.flows.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn flows_stick_expire_when_idle_and_replies_keep_them_alive() {
        let t0 = Instant::now();
        let mut t: FlowTable<u32> =
            FlowTable::new(Duration::from_secs(30), 10, Duration::from_secs(5));
        assert!(matches!(
            t.lookup(a("1.1.1.1:1"), t0, |_| true),
            Lookup::Create
        ));
        t.insert(a("1.1.1.1:1"), a("10.0.0.1:53"), 7, t0);
        t.insert(a("1.1.1.1:2"), a("10.0.0.2:53"), 8, t0);
        assert!(matches!(
            t.lookup(a("1.1.1.1:1"), t0 + Duration::from_secs(10), |_| true),
            Lookup::Existing(7)
        ));
        t.touch(a("1.1.1.1:2"), t0 + Duration::from_secs(20));
        assert!(t.expire(t0 + Duration::from_secs(29)).is_empty());
        let gone = t.expire(t0 + Duration::from_secs(40));
        assert_eq!(gone.len(), 1, "flow 1 last seen at 10s expired at 40s");
        assert_eq!(gone[0].0, a("1.1.1.1:1"));
        let gone = t.expire(t0 + Duration::from_secs(50));
        assert_eq!(
            gone[0].0,
            a("1.1.1.1:2"),
            "flow 2 touched by a reply at 20s, expired at 50s"
        );
        assert!(t.is_empty());
    }

    #[test]
    fn max_flows_refuses_new_clients_but_not_existing_ones() {
        let t0 = Instant::now();
        let mut t: FlowTable<()> =
            FlowTable::new(Duration::from_secs(30), 2, Duration::from_secs(5));
        t.insert(a("1.1.1.1:1"), a("10.0.0.1:53"), (), t0);
        t.insert(a("1.1.1.1:2"), a("10.0.0.1:53"), (), t0);
        assert!(matches!(
            t.lookup(a("1.1.1.1:3"), t0, |_| true),
            Lookup::Full
        ));
        assert!(matches!(
            t.lookup(a("1.1.1.1:1"), t0, |_| true),
            Lookup::Existing(())
        ));
        t.expire(t0 + Duration::from_secs(31));
        assert!(matches!(
            t.lookup(a("1.1.1.1:3"), t0, |_| true),
            Lookup::Create
        ));
    }

    #[test]
    fn a_flow_whose_endpoint_left_moves() {
        let t0 = Instant::now();
        let mut t: FlowTable<u8> =
            FlowTable::new(Duration::from_secs(30), 10, Duration::from_secs(5));
        t.insert(a("1.1.1.1:1"), a("10.0.0.1:53"), 1, t0);
        let gone_endpoint = a("10.0.0.1:53");
        match t.lookup(a("1.1.1.1:1"), t0, |e| e != gone_endpoint) {
            Lookup::Moved(old) => assert_eq!(old.endpoint, gone_endpoint),
            other => panic!("{other:?}"),
        }
        assert!(t.is_empty());
    }

    #[test]
    fn refused_endpoints_are_skipped_for_a_while_unless_all_are() {
        let t0 = Instant::now();
        let mut t: FlowTable<()> =
            FlowTable::new(Duration::from_secs(30), 10, Duration::from_secs(5));
        let (e1, e2) = (a("10.0.0.1:53"), a("10.0.0.2:53"));
        t.refused(e1, t0);
        assert_eq!(t.choose([e1, e2], t0 + Duration::from_secs(1)), Some(e2));
        assert_eq!(
            t.choose([e1], t0 + Duration::from_secs(1)),
            Some(e1),
            "all skipped: try anyway"
        );
        assert_eq!(
            t.choose([e1, e2], t0 + Duration::from_secs(6)),
            Some(e1),
            "skip over"
        );
        assert_eq!(t.choose(std::iter::empty(), t0), None);
    }
}
