//! The UDP flow table, sans-io: it takes `now` as an argument and makes no syscalls, so its
//! expiry, limit and endpoint-choice rules are unit-tested with injected time. The tokio shell
//! in [`super::port`] owns the sockets and timers and stores its per-flow handle as `H`.
//!
//! Rules:
//! - a flow is keyed by the client's address and sticks to one endpoint while that endpoint
//!   stays in the route's active set;
//! - a flow whose endpoint left the set is ended and the datagram starts a new flow on another
//!   endpoint (no black hole after a pod churn);
//! - the last datagram a flow sent upstream is kept until a reply comes (up to
//!   [`KEEP_UNANSWERED`] bytes, in a buffer the flow reuses), so that a flow whose endpoint
//!   answers ICMP port-unreachable can move to another endpoint with it; which endpoint a new
//!   flow takes, and whether an endpoint is ejected, is the shared health registry's business
//!   (`crate::data::health`), not this table's;
//! - a flow idle for the idle timeout expires; at most `max_flows` flows exist per port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Largest datagram a flow keeps until it is answered (an Ethernet MTU's worth; DNS queries
/// are far smaller). A larger one is not kept: if its endpoint refuses, it is lost and the
/// client's retry goes elsewhere.
pub const KEEP_UNANSWERED: usize = 1500;

/// The last datagram a flow sent upstream, while no reply has come since.
#[derive(Debug, Default)]
pub struct Unanswered(Vec<u8>);

impl Unanswered {
    /// `payload` was sent: keep it (if small enough), replacing the previous one.
    pub fn keep(&mut self, payload: &[u8]) {
        self.0.clear();
        if payload.len() <= KEEP_UNANSWERED {
            self.0.extend_from_slice(payload);
        }
    }

    /// A reply came: nothing is unanswered (the buffer is kept for the next datagram).
    pub fn answered(&mut self) {
        self.0.clear();
    }

    /// The unanswered datagram, if one is kept.
    pub fn take(self) -> Option<Vec<u8>> {
        (!self.0.is_empty()).then_some(self.0)
    }
}

/// One flow.
#[derive(Debug)]
pub struct Flow<H> {
    /// The endpoint it goes to.
    pub endpoint: SocketAddr,
    /// Last datagram either way.
    pub last_seen: Instant,
    /// The last datagram sent upstream, while unanswered.
    pub unanswered: Unanswered,
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
    idle_timeout: Duration,
    max_flows: usize,
}

impl<H> FlowTable<H> {
    /// A table whose flows expire after `idle_timeout` and that holds at most `max_flows`.
    pub fn new(idle_timeout: Duration, max_flows: usize) -> Self {
        Self {
            flows: HashMap::new(),
            idle_timeout,
            max_flows,
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

    /// Classifies a datagram (`payload`) from `client`; `active` says whether an endpoint is
    /// still in the route's active set. An existing flow is touched and keeps the datagram as
    /// its unanswered one.
    pub fn lookup(
        &mut self,
        client: SocketAddr,
        payload: &[u8],
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
        flow.unanswered.keep(payload);
        Lookup::Existing(&flow.handle)
    }

    /// Records a new flow that sends `payload` first.
    pub fn insert(
        &mut self,
        client: SocketAddr,
        endpoint: SocketAddr,
        handle: H,
        payload: &[u8],
        now: Instant,
    ) {
        let mut unanswered = Unanswered::default();
        unanswered.keep(payload);
        self.flows.insert(
            client,
            Flow {
                endpoint,
                last_seen: now,
                unanswered,
                handle,
            },
        );
    }

    /// A reply went back to `client`: the flow is alive and its last datagram answered.
    pub fn touch(&mut self, client: SocketAddr, now: Instant) {
        if let Some(flow) = self.flows.get_mut(&client) {
            flow.last_seen = now;
            flow.unanswered.answered();
        }
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
        let mut t: FlowTable<u32> = FlowTable::new(Duration::from_secs(30), 10);
        assert!(matches!(
            t.lookup(a("1.1.1.1:1"), b"q", t0, |_| true),
            Lookup::Create
        ));
        t.insert(a("1.1.1.1:1"), a("10.0.0.1:53"), 7, b"q", t0);
        t.insert(a("1.1.1.1:2"), a("10.0.0.2:53"), 8, b"q", t0);
        assert!(matches!(
            t.lookup(a("1.1.1.1:1"), b"q", t0 + Duration::from_secs(10), |_| true),
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
        let mut t: FlowTable<()> = FlowTable::new(Duration::from_secs(30), 2);
        t.insert(a("1.1.1.1:1"), a("10.0.0.1:53"), (), b"q", t0);
        t.insert(a("1.1.1.1:2"), a("10.0.0.1:53"), (), b"q", t0);
        assert!(matches!(
            t.lookup(a("1.1.1.1:3"), b"q", t0, |_| true),
            Lookup::Full
        ));
        assert!(matches!(
            t.lookup(a("1.1.1.1:1"), b"q", t0, |_| true),
            Lookup::Existing(())
        ));
        t.expire(t0 + Duration::from_secs(31));
        assert!(matches!(
            t.lookup(a("1.1.1.1:3"), b"q", t0, |_| true),
            Lookup::Create
        ));
    }

    #[test]
    fn a_flow_whose_endpoint_left_moves() {
        let t0 = Instant::now();
        let mut t: FlowTable<u8> = FlowTable::new(Duration::from_secs(30), 10);
        t.insert(a("1.1.1.1:1"), a("10.0.0.1:53"), 1, b"q", t0);
        let gone_endpoint = a("10.0.0.1:53");
        match t.lookup(a("1.1.1.1:1"), b"q", t0, |e| e != gone_endpoint) {
            Lookup::Moved(old) => assert_eq!(old.endpoint, gone_endpoint),
            other => panic!("{other:?}"),
        }
        assert!(t.is_empty());
    }

    #[test]
    fn the_last_datagram_is_kept_until_answered() {
        let t0 = Instant::now();
        let mut t: FlowTable<()> = FlowTable::new(Duration::from_secs(30), 10);
        let c = a("1.1.1.1:1");
        t.insert(c, a("10.0.0.1:53"), (), b"first", t0);
        assert!(matches!(
            t.lookup(c, b"second", t0, |_| true),
            Lookup::Existing(())
        ));
        let flow = t.remove(c).unwrap();
        assert_eq!(flow.unanswered.take().as_deref(), Some(&b"second"[..]));

        t.insert(c, a("10.0.0.1:53"), (), b"query", t0);
        t.touch(c, t0);
        assert_eq!(t.remove(c).unwrap().unanswered.take(), None, "answered");

        let big = vec![7u8; KEEP_UNANSWERED + 1];
        t.insert(c, a("10.0.0.1:53"), (), &big, t0);
        assert_eq!(
            t.remove(c).unwrap().unanswered.take(),
            None,
            "too big to keep"
        );
    }
}
