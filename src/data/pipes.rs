//! A bounded pool of pipes for `splice(2)`.
//!
//! At most `max` pipes exist at once (in use or idle); idle ones are reused. A pipe starts at
//! `size` bytes; one that a burst fills (a bulk transfer) grows to [`GROWN_PIPE`], as long as
//! the capacity of all pipes together stays within `max × size`: the memory bound is the same
//! as with every pipe at `size`, and bulk streams get the larger pipe, which moves more per
//! `splice` (measured in docs/benchmarks.md, "Splice against copy"). When the pool is at
//! its bound, when `pipe2` fails (EMFILE/ENFILE), or when the kernel grants less than the asked
//! capacity (the per-user `pipe-user-pages-soft` limit, reached at about 500 connections for a
//! non-root process with default settings), `acquire` returns `None` and the connection falls
//! back to a buffered copy.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::sys::{self, Pipe};

/// What a pipe that a burst fills grows to: the kernel's default `pipe-max-size`, the most an
/// unprivileged process may ask.
pub const GROWN_PIPE: usize = 1024 * 1024;

/// Counters the pool keeps (read by `/metrics` as the pipe gauges).
#[derive(Debug, Default)]
pub struct PipeStats {
    /// Pipes created.
    pub created: AtomicU64,
    /// Acquisitions that found no pipe (pool at its bound, or the kernel refused).
    pub exhausted: AtomicU64,
    /// Pipes closed because they still held data after an error.
    pub discarded: AtomicU64,
    /// Pipes grown to [`GROWN_PIPE`] after a burst filled them.
    pub grown: AtomicU64,
}

/// The process's pipes for splice: reused, at most `max` alive at once.
#[derive(Debug)]
pub struct PipePool {
    idle: Mutex<Vec<Pipe>>,
    live: AtomicUsize,
    max: usize,
    size: usize,
    /// Capacity of all live pipes together, kept within `max × size`.
    capacity: AtomicUsize,
    /// What the pipe gauge and counters read.
    pub stats: PipeStats,
}

impl PipePool {
    /// A pool of at most `max` pipes of `size` bytes each. `max == 0` disables splicing.
    pub fn new(max: usize, size: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            max,
            size,
            capacity: AtomicUsize::new(0),
            stats: PipeStats::default(),
        }
    }

    /// Bytes per pipe.
    pub fn pipe_size(&self) -> usize {
        self.size
    }

    /// Pipes that exist now (in use and idle).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Pipes lent out now (connections moving data through them).
    pub fn in_use(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.live().saturating_sub(idle)
    }

    /// Takes a pipe, or `None` when none can be had.
    pub fn acquire(&self) -> Option<PooledPipe<'_>> {
        if let Some(pipe) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Some(PooledPipe {
                pool: self,
                pipe: Some(pipe),
                pending: 0,
            });
        }
        // Reserve a slot before creating, so concurrent acquires cannot overshoot `max`.
        let reserved = self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        if reserved.is_err() {
            self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match sys::pipe(self.size) {
            Ok(pipe) if pipe.capacity >= self.size => {
                self.stats.created.fetch_add(1, Ordering::Relaxed);
                self.capacity.fetch_add(pipe.capacity, Ordering::AcqRel);
                Some(PooledPipe {
                    pool: self,
                    pipe: Some(pipe),
                    pending: 0,
                })
            }
            Ok(small) => {
                tracing::debug!(
                    granted = small.capacity,
                    wanted = self.size,
                    "kernel granted a smaller pipe (pipe-user-pages-soft reached); copying instead"
                );
                self.live.fetch_sub(1, Ordering::AcqRel);
                self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(err) => {
                tracing::debug!(error = %err, "cannot create a pipe; copying instead");
                self.live.fetch_sub(1, Ordering::AcqRel);
                self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// A pipe on loan from the pool. It goes back when dropped if it is empty, and is closed if it
/// still holds bytes (they belong to a connection that failed).
#[derive(Debug)]
pub struct PooledPipe<'a> {
    pool: &'a PipePool,
    pipe: Option<Pipe>,
    /// Bytes spliced in and not yet spliced out.
    pub pending: usize,
}

impl PooledPipe<'_> {
    /// The pipe lent.
    pub fn pipe(&self) -> &Pipe {
        self.pipe.as_ref().expect("present until drop")
    }

    /// Called when a splice filled the pipe: grows it to [`GROWN_PIPE`] if it is smaller and
    /// the pool's capacity allows (once per pipe: a refusal by the kernel is not asked again).
    pub fn filled(&mut self) {
        let pool = self.pool;
        let pipe = self.pipe.as_mut().expect("present until drop");
        if pipe.capacity >= GROWN_PIPE || pipe.resize_refused {
            return;
        }
        let (old, budget) = (pipe.capacity, pool.max.saturating_mul(pool.size));
        let reserved = pool
            .capacity
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
                let total = total - old + GROWN_PIPE;
                (total <= budget).then_some(total)
            });
        if reserved.is_err() {
            return;
        }
        let result = sys::resize_pipe(pipe, GROWN_PIPE);
        // What the kernel granted (the old capacity when it refused) replaces the reservation.
        pool.capacity
            .fetch_sub(GROWN_PIPE - pipe.capacity.min(GROWN_PIPE), Ordering::AcqRel);
        match result {
            Ok(()) => _ = pool.stats.grown.fetch_add(1, Ordering::Relaxed),
            Err(err) => {
                pipe.resize_refused = true;
                tracing::debug!(error = %err, "kernel refused to grow a pipe; it stays at {old} bytes");
            }
        }
    }
}

impl Drop for PooledPipe<'_> {
    fn drop(&mut self) {
        let Some(pipe) = self.pipe.take() else { return };
        if self.pending == 0 {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(pipe);
        } else {
            self.pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
            self.pool
                .capacity
                .fetch_sub(pipe.capacity, Ordering::AcqRel);
            drop(pipe);
            self.pool.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reused_and_dirty_pipes_closed() {
        let pool = PipePool::new(2, 64 * 1024);
        let a = pool.acquire().unwrap();
        let mut b = pool.acquire().unwrap();
        assert!(pool.acquire().is_none(), "bound reached");
        assert_eq!(pool.stats.exhausted.load(Ordering::Relaxed), 1);
        drop(a);
        assert_eq!(pool.live(), 2);
        let a = pool.acquire().expect("idle pipe reused");
        assert_eq!(pool.stats.created.load(Ordering::Relaxed), 2);
        b.pending = 10;
        drop(b);
        assert_eq!(pool.live(), 1, "a pipe holding data is closed");
        drop(a);
        assert!(
            PipePool::new(0, 65536).acquire().is_none(),
            "max 0 disables splicing"
        );
    }

    #[test]
    fn filled_pipes_grow_within_the_pools_capacity() {
        // Budget 32 × 64 KiB = 2 MiB: two pipes can grow to 1 MiB, not a third.
        let pool = PipePool::new(32, 64 * 1024);
        let (mut a, mut b, mut c) = (
            pool.acquire().unwrap(),
            pool.acquire().unwrap(),
            pool.acquire().unwrap(),
        );
        a.filled();
        assert_eq!(a.pipe().capacity, GROWN_PIPE);
        a.filled();
        assert_eq!(pool.stats.grown.load(Ordering::Relaxed), 1, "once");
        c.filled();
        assert_eq!(c.pipe().capacity, 64 * 1024, "2 MiB would be exceeded");
        drop(a);
        // The grown pipe is reused as it is.
        let a = pool.acquire().unwrap();
        assert_eq!(a.pipe().capacity, GROWN_PIPE);
        b.filled();
        assert_eq!(
            b.pipe().capacity,
            64 * 1024,
            "still within budget only for one"
        );
        drop((a, b, c));
        // A small pool never grows its pipes.
        let small = PipePool::new(2, 64 * 1024);
        let mut p = small.acquire().unwrap();
        p.filled();
        assert_eq!(p.pipe().capacity, 64 * 1024);
    }
}
