//! Connection limits, applied where connections are accepted.
//!
//! - **Counts.** At most `--max-connections` TCP connections are open in the process and at most
//!   `--max-connections-per-port` (or the port's `max-connections` option) on one port; 0 means
//!   no limit. A connection takes a [`Slot`] in both counts before its task is spawned and gives
//!   it back when the task ends, however it ends. Taking is a compare-and-swap, so concurrent
//!   accepts on several ports never exceed a limit, not even for an instant.
//! - **Descriptors.** A spare descriptor ([`refuse_with_reserve`]), shared by every port, is
//!   given up for an instant when accept fails for want of descriptors (EMFILE, ENFILE), so the
//!   pending connection can be accepted and reset at once instead of waiting in the backlog.
//! - **Warnings.** Refusals are logged by the accept loop through the process's one warning
//!   throttle ([`crate::telemetry::log_throttle`]), per port and reason.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::net::{TcpListener, TcpStream};

use super::source_policy::{Admitted, SourceTable};
use crate::control::configmap::SourcePolicy;
use crate::telemetry::outcome::RefuseReason;

/// A count of open connections.
#[derive(Debug, Default)]
pub struct OpenConnections(AtomicUsize);

impl OpenConnections {
    /// Connections open now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more if fewer than `max` are open (0: no limit).
    fn try_take(&self, max: usize) -> bool {
        if max == 0 {
            self.0.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        // A compare-and-swap loop, not increment-then-check: the count never goes over `max`,
        // not even for an instant, so a concurrent accept is never refused by a count that
        // another one is about to take back.
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which limit refused a connection, with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// `--max-connections`.
    Global(usize),
    /// The port's limit (`max-connections` option or `--max-connections-per-port`).
    Port(usize),
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exceeded::Global(max) => write!(f, "{max} connections open in all (--max-connections)"),
            Exceeded::Port(max) => write!(f, "{max} connections open on this port"),
        }
    }
}

/// The counts one listening port takes slots from: its own and the process's, and its
/// clients' (the port's source policy).
#[derive(Debug)]
pub struct PortCounts {
    port: OpenConnections,
    global: Arc<OpenConnections>,
    /// Per-client counts of `max-connections-per-source` and `new-connections-per-second`.
    pub sources: SourceTable,
}

impl PortCounts {
    /// A port's count, sharing the process-wide `global` count.
    pub fn new(global: Arc<OpenConnections>) -> Arc<Self> {
        Arc::new(Self {
            port: OpenConnections::default(),
            global,
            sources: SourceTable::default(),
        })
    }

    /// Connections open on this port now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.port.get()
    }

    /// A slot for one more connection, unless that would exceed `global_max` or `port_max`
    /// (0: no limit).
    pub fn admit(self: &Arc<Self>, global_max: usize, port_max: usize) -> Result<Slot, Exceeded> {
        if !self.global.try_take(global_max) {
            return Err(Exceeded::Global(global_max));
        }
        if !self.port.try_take(port_max) {
            self.global.release();
            return Err(Exceeded::Port(port_max));
        }
        Ok(Slot {
            counts: self.clone(),
            source: None,
        })
    }
}

/// One open connection's place in its port's and the process's counts (and its client's, once
/// counted there); given back on drop.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<PortCounts>,
    /// The client address counted in the port's source table (boxed: every connection's task
    /// holds a slot, few ports count sources).
    source: Option<Box<IpAddr>>,
}

impl Slot {
    /// Applies the port's source `policy` to this connection's client `source` at `now`:
    /// refused, or admitted (and counted for the source until the slot is dropped).
    pub fn admit_source(
        &mut self,
        policy: &SourcePolicy,
        source: IpAddr,
        now: std::time::Instant,
    ) -> Result<(), RefuseReason> {
        if self.counts.sources.admit(policy, source, now)? == Admitted::Counted {
            self.source = Some(Box::new(source));
        }
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            self.counts.sources.release(*source);
        }
        self.counts.port.release();
        self.counts.global.release();
    }
}

/// The descriptors the data plane leaves to the rest of the process (the admin server: health
/// probes and scrapes, the Kubernetes watches, the log) at the top of the open-files limit.
/// A connection accepted into a descriptor number at or above the ceiling is refused at once:
/// since the kernel hands out the lowest free number, such a number means every one below it is
/// in use, so the process really is that close to its limit. Under a flood the data plane's
/// accepts thus stop short of the limit, and `/healthz` keeps a descriptor to be accepted into.
pub fn below_descriptor_ceiling(fd: std::os::fd::RawFd) -> bool {
    usize::try_from(fd).is_ok_and(|fd| fd < descriptor_ceiling())
}

/// The open-files limit less [`descriptor_reserve`] of it; read once, from `/proc/self/limits`
/// (a limit raised from outside later is not seen). No limit, or none readable: no ceiling.
pub fn descriptor_ceiling() -> usize {
    static CEILING: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CEILING.get_or_init(|| {
        let limit = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| soft_open_files_limit(&text));
        limit.map_or(usize::MAX, |l| l - descriptor_reserve(l))
    })
}

/// How many descriptors of a `limit` the data plane leaves free: a sixteenth, 4 to 64.
pub fn descriptor_reserve(limit: usize) -> usize {
    (limit / 16).clamp(4, 64).min(limit / 2)
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text; `None` when unlimited or absent.
fn soft_open_files_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The spare descriptor (`/dev/null`), shared by every port. `None` while given up, or when it
/// could not be opened (descriptors exhausted): it is reopened at the next chance.
static RESERVE: Mutex<Option<File>> = Mutex::new(None);

/// Opens the spare descriptor if it is not open; false if that failed.
pub fn ensure_reserve() -> bool {
    let mut reserve = RESERVE.lock().unwrap_or_else(|p| p.into_inner());
    reopen(&mut reserve)
}

fn reopen(reserve: &mut Option<File>) -> bool {
    if reserve.is_none() {
        *reserve = File::open("/dev/null").ok();
    }
    reserve.is_some()
}

/// What giving up the spare descriptor achieved.
#[derive(Debug)]
pub enum ReserveOutcome {
    /// A pending connection was accepted and reset.
    Refused,
    /// Nothing was pending (the listener's readiness is cleared: the next accept waits).
    NothingPending,
    /// No spare descriptor, or accept failed again (another thread took the descriptor):
    /// the caller should pause.
    Failed(Option<io::Error>),
}

/// After accept failed with EMFILE/ENFILE: closes the spare descriptor, accepts one pending
/// connection into its place, resets it, and reopens the spare. Synchronous, so no other task
/// on this thread can take the freed descriptor in between.
pub fn refuse_with_reserve(listener: &TcpListener) -> ReserveOutcome {
    let mut reserve = RESERVE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(spare) = reserve.take() else {
        reopen(&mut reserve);
        return ReserveOutcome::Failed(None);
    };
    drop(spare);
    let outcome = match accept_now(listener) {
        Poll::Ready(Ok(stream)) => {
            super::net::reset(stream);
            ReserveOutcome::Refused
        }
        Poll::Ready(Err(err)) => ReserveOutcome::Failed(Some(err)),
        Poll::Pending => ReserveOutcome::NothingPending,
    };
    reopen(&mut reserve);
    outcome
}

/// One accept attempt that does not wait. `Pending` clears the listener's readiness, so the
/// accept loop's next `accept().await` waits for a new connection instead of spinning.
fn accept_now(listener: &TcpListener) -> Poll<io::Result<TcpStream>> {
    let mut cx = Context::from_waker(Waker::noop());
    listener
        .poll_accept(&mut cx)
        .map(|accepted| accepted.map(|(stream, _)| stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_reserve_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(soft_open_files_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(soft_open_files_limit(unlimited), None);
        assert_eq!(descriptor_reserve(64), 4);
        assert_eq!(descriptor_reserve(1024), 64);
        assert_eq!(descriptor_reserve(1_048_576), 64);
        assert_eq!(descriptor_reserve(6), 3);
        // This process's own limit is read.
        assert!(descriptor_ceiling() > 0);
    }

    #[test]
    fn slots_are_exact_and_given_back_on_drop() {
        let global = Arc::new(OpenConnections::default());
        let a = PortCounts::new(global.clone());
        let b = PortCounts::new(global.clone());
        let a1 = a.admit(3, 2).unwrap();
        let a2 = a.admit(3, 2).unwrap();
        assert_eq!(a.admit(3, 2).unwrap_err(), Exceeded::Port(2));
        let b1 = b.admit(3, 0).unwrap();
        assert_eq!(b.admit(3, 0).unwrap_err(), Exceeded::Global(3));
        assert_eq!((global.get(), a.open(), b.open()), (3, 2, 1));
        drop(a1);
        let b2 = b.admit(3, 0).unwrap();
        assert_eq!((global.get(), a.open(), b.open()), (3, 1, 2));
        drop((a2, b1, b2));
        assert_eq!((global.get(), a.open(), b.open()), (0, 0, 0));
    }

    #[test]
    fn concurrent_admits_never_exceed_the_limit() {
        let global = Arc::new(OpenConnections::default());
        let ports: Vec<_> = (0..4).map(|_| PortCounts::new(global.clone())).collect();
        let admitted = AtomicUsize::new(0);
        let highest = AtomicUsize::new(0);
        let all_tried = std::sync::Barrier::new(ports.len());
        std::thread::scope(|s| {
            for port in &ports {
                let (admitted, all_tried, global, highest) =
                    (&admitted, &all_tried, &global, &highest);
                s.spawn(move || {
                    let mut held = Vec::new();
                    for _ in 0..1000 {
                        if let Ok(slot) = port.admit(100, 0) {
                            held.push(slot);
                        }
                        // Checked after the threads: a panic here would leave the others
                        // waiting at the barrier forever.
                        highest.fetch_max(global.get(), Ordering::Relaxed);
                    }
                    admitted.fetch_add(held.len(), Ordering::Relaxed);
                    // Held until every thread has tried.
                    all_tried.wait();
                });
            }
        });
        assert!(highest.load(Ordering::Relaxed) <= 100);
        assert_eq!(admitted.load(Ordering::Relaxed), 100);
        assert_eq!(global.get(), 0);
    }
}
