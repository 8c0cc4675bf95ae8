//! Idle timeout of TCP connections, at no per-byte cost.
//!
//! The two pumps of a connection stamp its [`Activity`] each time they hand bytes to a socket,
//! with a coarse clock that one background thread advances every [`TICK`]: a stamp is a relaxed
//! load and a relaxed store, no clock read and no timer call. One timer per connection
//! ([`expired`]) sleeps until the last stamp plus the timeout; when it fires it either re-arms to
//! the newer deadline (bytes moved meanwhile) or reports the connection idle. The timer is thus
//! re-armed at most once per timeout period, never per read.
//!
//! Invariants:
//! - a stamp is the coarse time rounded up by one tick, so while the clock thread keeps time a
//!   connection is never taken for idle before `timeout` has passed since its last byte moved,
//!   and is closed at most about one [`TICK`] after that; if the clock thread is held up (an
//!   overloaded machine), stamps lag by the delay and a connection may be cut that much early;
//! - only bytes written to a peer count: a peer that stops reading stalls the connection, which
//!   then counts as idle too;
//! - the clock thread starts on the first connection that has an idle timeout, never otherwise.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Resolution of the coarse clock, and so of the idle timeout.
pub const TICK: Duration = Duration::from_millis(100);

/// Milliseconds since `origin`, advanced every [`TICK`] by the `dermaga-clock` thread.
struct CoarseClock {
    origin: Instant,
    millis: AtomicU64,
}

fn clock() -> &'static CoarseClock {
    static CLOCK: OnceLock<CoarseClock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("dermaga-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TICK);
                    let clock = clock();
                    let now = clock.origin.elapsed().as_millis() as u64;
                    clock.millis.store(now, Ordering::Relaxed);
                }
            });
        if let Err(err) = spawned {
            // Without the thread stamps never advance: connections would be cut one timeout
            // after they start, so say it loudly.
            tracing::error!(error = %err, "cannot start the idle-timeout clock thread; idle timeouts will cut busy connections");
        }
        CoarseClock {
            origin: Instant::now(),
            millis: AtomicU64::new(0),
        }
    })
}

/// When a connection last moved bytes, on the coarse clock, and its idle timeout.
#[derive(Debug)]
pub struct Activity {
    /// Coarse milliseconds since the clock's origin, rounded up one tick.
    last: AtomicU64,
    timeout: Duration,
}

impl Activity {
    /// Activity stamped now (a connection that starts forwarding counts as active), for a
    /// connection cut after `timeout` idle; `None` for a zero timeout (never cut). Boxed: the
    /// connection future holds one pointer.
    pub fn watch(timeout: Duration) -> Option<Box<Self>> {
        if timeout.is_zero() {
            return None;
        }
        let activity = Box::new(Self {
            last: AtomicU64::new(0),
            timeout,
        });
        activity.touch();
        Some(activity)
    }

    /// The idle timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bytes moved: stamp the coarse time (no clock read, no timer call).
    #[inline]
    pub fn touch(&self) {
        let now = clock().millis.load(Ordering::Relaxed) + TICK.as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// The instant the timeout after the last stamp.
    fn deadline(&self) -> Instant {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        clock().origin + last + self.timeout
    }
}

/// Completes once no byte has moved for the timeout; never completes without an `activity`.
pub async fn expired(activity: Option<&Activity>) {
    let Some(activity) = activity else {
        return std::future::pending().await;
    };
    // Boxed: the connection future stays small, and connections without a timeout pay nothing.
    let mut sleep = Box::pin(tokio::time::sleep_until(activity.deadline().into()));
    loop {
        sleep.as_mut().await;
        let deadline = activity.deadline();
        if deadline <= Instant::now() {
            return;
        }
        sleep.as_mut().reset(deadline.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_untouched_activity_expires_after_the_timeout_and_not_before() {
        let started = Instant::now();
        let timeout = Duration::from_millis(300);
        let activity = Activity::watch(timeout).unwrap();
        tokio::time::timeout(Duration::from_secs(5), expired(Some(&activity)))
            .await
            .expect("expires");
        let waited = started.elapsed();
        // The lower bound allows one late tick of the clock thread on a loaded machine; the
        // upper bound only catches a timer that never fires on time at all.
        assert!(waited + TICK >= timeout, "expired early, after {waited:?}");
        assert!(
            waited < timeout + Duration::from_secs(3),
            "expired late, after {waited:?}"
        );
    }

    #[tokio::test]
    async fn touching_keeps_it_alive() {
        let timeout = Duration::from_millis(300);
        let activity = Activity::watch(timeout).unwrap();
        let watch = expired(Some(&activity));
        tokio::pin!(watch);
        // Touched every 50 ms for 3 timeouts: never expires meanwhile.
        for _ in 0..18 {
            tokio::select! {
                _ = &mut watch => panic!("expired while active"),
                _ = tokio::time::sleep(Duration::from_millis(50)) => activity.touch(),
            }
        }
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("expires once left alone");
    }

    #[tokio::test]
    async fn without_activity_it_never_expires() {
        assert!(Activity::watch(Duration::ZERO).is_none(), "0: no timeout");
        let never = expired(None);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), never)
                .await
                .is_err()
        );
    }
}
