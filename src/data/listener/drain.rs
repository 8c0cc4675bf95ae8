//! One port's drain: its connection tasks (or its one UDP task) and the two signals that end
//! them, first "stop accepting", then "close what is left". [`Drain::begin`] stops accepting;
//! [`Drain::settle`] waits for the tasks to end by themselves, at most until a deadline that
//! can be lifted (the port was added again) or cut short (the shutdown grace ended);
//! [`Drain::close`] then closes the rest and waits for it. As linkerd's drain crate, a named
//! pair of signals instead of loose tokens, so the order of the steps is the type's.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a port drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainCause {
    /// The port left the table: its connections get the drain timeout, a UDP port's flows end
    /// at once (the port may be bound again).
    PortRemoved,
    /// The process is shutting down: everything gets the shutdown grace, UDP flows too.
    Shutdown,
}

/// How [`Drain::settle`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Every task ended by itself.
    Finished,
    /// The deadline passed with this many tasks open.
    DeadlineReached(usize),
    /// The cut signal came with this many tasks open.
    Cut(usize),
}

/// One port's tasks and the signals that end them.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    stop_accepting: CancellationToken,
    close: CancellationToken,
    tasks: TaskTracker,
}

impl Drain {
    /// A port that accepts, with no task yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when the port must stop accepting (its accept loop watches it).
    pub fn stop_accepting_signal(&self) -> CancellationToken {
        self.stop_accepting.clone()
    }

    /// Cancelled when the port's open connections or flows must close now.
    pub fn close_signal(&self) -> CancellationToken {
        self.close.clone()
    }

    /// Where the port's connection tasks are spawned.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Tasks still open.
    pub fn open(&self) -> usize {
        self.tasks.len()
    }

    /// Stops accepting; no task is added after this.
    pub fn begin(&self) {
        self.stop_accepting.cancel();
        self.tasks.close();
    }

    /// Waits until every task has ended, or `timeout` has passed (unless `lifted` is cancelled
    /// first: then there is no deadline any more), or `cut` is cancelled.
    pub async fn settle(
        &self,
        timeout: Duration,
        lifted: &CancellationToken,
        cut: &CancellationToken,
    ) -> Settled {
        let deadline = async {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = lifted.cancelled() => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.tasks.wait() => Settled::Finished,
            _ = deadline => Settled::DeadlineReached(self.open()),
            _ = cut.cancelled() => Settled::Cut(self.open()),
        }
    }

    /// Tells what is left to close, and waits for it.
    pub async fn close(&self) {
        self.close.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// Settles with a deadline of `secs`, never lifted, never cut.
    async fn settle_within(drain: &Drain, secs: u64) -> Settled {
        let never = CancellationToken::new();
        drain
            .settle(Duration::from_secs(secs), &never, &never)
            .await
    }

    /// A task that ends after `after`, or when the port's close signal comes.
    fn connection(drain: &Drain, after: Duration) {
        let close = drain.close_signal();
        drain.tasks().spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = close.cancelled() => {}
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn connections_that_end_in_time_are_never_closed() {
        let drain = Drain::new();
        connection(&drain, Duration::from_secs(3));
        connection(&drain, Duration::from_secs(7));
        let (stop, close) = (drain.stop_accepting_signal(), drain.close_signal());
        let started = Instant::now();
        drain.begin();
        assert!(stop.is_cancelled());
        let settled = settle_within(&drain, 10).await;
        assert_eq!(settled, Settled::Finished);
        assert_eq!(started.elapsed(), Duration::from_secs(7));
        assert!(!close.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_closes_what_is_left_and_only_then() {
        let drain = Drain::new();
        connection(&drain, Duration::from_secs(2));
        connection(&drain, Duration::from_secs(3600));
        let started = Instant::now();
        drain.begin();
        let settled = settle_within(&drain, 10).await;
        assert_eq!(settled, Settled::DeadlineReached(1));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(!drain.close_signal().is_cancelled());
        drain.close().await;
        assert_eq!(drain.open(), 0);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lifted_deadline_waits_for_the_connections_however_long() {
        let drain = Drain::new();
        connection(&drain, Duration::from_secs(600));
        let lifted = CancellationToken::new();
        let started = Instant::now();
        drain.begin();
        let lift = lifted.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            lift.cancel();
        });
        let settled = drain
            .settle(Duration::from_secs(10), &lifted, &CancellationToken::new())
            .await;
        assert_eq!(settled, Settled::Finished);
        assert_eq!(started.elapsed(), Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cut_signal_ends_a_drain_before_its_deadline_and_a_lifted_one() {
        let drain = Drain::new();
        connection(&drain, Duration::from_secs(3600));
        let (lifted, cut) = (CancellationToken::new(), CancellationToken::new());
        lifted.cancel();
        let started = Instant::now();
        drain.begin();
        let cutter = cut.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            cutter.cancel();
        });
        let settled = drain.settle(Duration::from_secs(10), &lifted, &cut).await;
        assert_eq!(settled, Settled::Cut(1));
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        drain.close().await;
        assert_eq!(drain.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_with_no_connection_settles_at_once() {
        let drain = Drain::new();
        let started = Instant::now();
        drain.begin();
        let settled = settle_within(&drain, 10).await;
        assert_eq!(settled, Settled::Finished);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
