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

/// Milliseconds since `origin`, advanced every [`TICK`] by the `dermaga-clock` thread (or, in
/// tests, by hand).
#[derive(Debug)]
struct CoarseClock {
    origin: Instant,
    millis: AtomicU64,
}

impl CoarseClock {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            millis: AtomicU64::new(0),
        }
    }

    /// Moves the coarse time to `now`.
    fn advance_to(&self, now: Instant) {
        let millis = now.saturating_duration_since(self.origin).as_millis() as u64;
        self.millis.store(millis, Ordering::Relaxed);
    }
}

/// The process's coarse clock; its thread starts on first use.
fn clock() -> &'static CoarseClock {
    static CLOCK: OnceLock<CoarseClock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("dermaga-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TICK);
                    clock().advance_to(Instant::now());
                }
            });
        if let Err(err) = spawned {
            // Without the thread stamps never advance: connections would be cut one timeout
            // after they start, so say it loudly.
            tracing::error!(error = %err, "cannot start the idle-timeout clock thread; idle timeouts will cut busy connections");
        }
        CoarseClock::new(Instant::now())
    })
}

/// When a connection last moved bytes, on the coarse clock, and its idle timeout.
#[derive(Debug)]
pub struct Activity {
    clock: &'static CoarseClock,
    /// Coarse milliseconds since the clock's origin, rounded up one tick.
    last: AtomicU64,
    timeout: Duration,
}

impl Activity {
    /// Activity stamped now (a connection that starts forwarding counts as active), for a
    /// connection cut after `timeout` idle; `None` for a zero timeout (never cut). Boxed: the
    /// connection future holds one pointer.
    pub fn watch(timeout: Duration) -> Option<Box<Self>> {
        Self::on(clock(), timeout)
    }

    fn on(clock: &'static CoarseClock, timeout: Duration) -> Option<Box<Self>> {
        if timeout.is_zero() {
            return None;
        }
        let activity = Box::new(Self {
            clock,
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
        let now = self.clock.millis.load(Ordering::Relaxed) + TICK.as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// The instant the timeout after the last stamp.
    fn deadline(&self) -> Instant {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.clock.origin + last + self.timeout
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
        // Tokio's clock (the real one, or the paused one of a test), like the timer's.
        if deadline <= tokio::time::Instant::now().into_std() {
            return;
        }
        sleep.as_mut().reset(deadline.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant as TokioInstant;

    /// A coarse clock of the test's own, starting at the (paused) present, that only the test
    /// moves.
    fn test_clock() -> &'static CoarseClock {
        Box::leak(Box::new(CoarseClock::new(TokioInstant::now().into_std())))
    }

    /// A fresh test clock, the (paused) start time, and an activity on that clock.
    fn watched(timeout: Duration) -> (&'static CoarseClock, TokioInstant, Box<Activity>) {
        let clock = test_clock();
        (
            clock,
            TokioInstant::now(),
            Activity::on(clock, timeout).unwrap(),
        )
    }

    /// Sleeps half a tick at a time for `total`, moving `clock` on each tick as its thread would.
    async fn tick_for(clock: &CoarseClock, total: Duration, mut each: impl FnMut()) {
        let end = TokioInstant::now() + total;
        while TokioInstant::now() < end {
            tokio::time::sleep(TICK / 2).await;
            clock.advance_to(TokioInstant::now().into_std());
            each();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_untouched_activity_expires_one_tick_after_the_timeout_at_most() {
        let (clock, started, activity) = watched(Duration::from_millis(300));
        let watch = expired(Some(&activity));
        tokio::pin!(watch);
        tokio::select! {
            _ = &mut watch => {}
            _ = tick_for(clock, Duration::from_secs(5), || {}) => panic!("never expired"),
        }
        // Stamped at 0 rounded up one tick: cut at 300 ms + one tick, never before 300 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn touching_keeps_it_alive_and_the_last_touch_counts() {
        let (clock, started, activity) = watched(Duration::from_millis(300));
        let watch = expired(Some(&activity));
        tokio::pin!(watch);
        // Touched every 50 ms for 3 timeouts: never expires meanwhile.
        tokio::select! {
            _ = &mut watch => panic!("expired while active, after {:?}", started.elapsed()),
            _ = tick_for(clock, Duration::from_millis(900), || activity.touch()) => {}
        }
        // Last touched at 900 ms (coarse time 900 ms, stamped 1,000 ms): cut at 1,300 ms.
        tokio::select! {
            _ = &mut watch => {}
            _ = tick_for(clock, Duration::from_secs(5), || {}) => panic!("never expired"),
        }
        assert_eq!(started.elapsed(), Duration::from_millis(1300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_up_clock_cuts_a_busy_connection_one_timeout_after_its_last_tick() {
        // The documented cost of a held-up clock thread: stamps lag by the delay.
        let (_, started, activity) = watched(Duration::from_millis(300));
        let watch = expired(Some(&activity));
        tokio::pin!(watch);
        // Bytes move every 50 ms, but the clock never ticks after 0: cut at 400 ms all the same.
        tokio::select! {
            _ = &mut watch => {}
            _ = async {
                loop {
                    tokio::time::sleep(TICK / 2).await;
                    activity.touch();
                }
            } => {}
        }
        assert_eq!(started.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test]
    async fn the_process_clock_thread_keeps_time() {
        // The real clock thread, end to end: an untouched activity expires about one timeout
        // later. Bounds allow one late tick and a slow machine; the exact times are above.
        let started = Instant::now();
        let timeout = Duration::from_millis(300);
        let activity = Activity::watch(timeout).unwrap();
        tokio::time::timeout(Duration::from_secs(5), expired(Some(&activity)))
            .await
            .expect("expires");
        let waited = started.elapsed();
        assert!(waited + TICK >= timeout, "expired early, after {waited:?}");
        assert!(
            waited < timeout + Duration::from_secs(3),
            "expired late, after {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_activity_it_never_expires() {
        assert!(Activity::watch(Duration::ZERO).is_none(), "0: no timeout");
        let never = expired(None);
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), never)
                .await
                .is_err()
        );
    }
}
