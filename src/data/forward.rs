//! Moves bytes both ways between client and upstream until both directions are done.
//!
//! Each direction is a pump: wait until the source is readable, take a stage, fill it from the
//! source socket, drain it into the destination socket, repeat while the source has data; when
//! it has none, give the stage back and wait again. A burst starts in a 16 KiB buffer (small
//! messages are cheaper copied); one that fills it goes on through a pipe (`splice(2)`, no copy
//! through user space) when the pool has one to lend. An idle connection holds neither.
//! Invariants:
//! - a splice call moves at most one pipe's capacity (bounded length per call);
//! - the pipe is always empty before it is filled, so EAGAIN from socket→pipe can only mean
//!   "no data" and clearing the socket's readiness then is right (no lost wake-up, no spin);
//! - byte counts come from the syscalls' return values;
//! - EOF one way shuts the write side of the other socket; the other direction keeps flowing;
//! - an error on either side ends both directions and says whose side failed;
//! - progress (bytes, mode, which side closed first) is written where the
//!   caller can read it;
//! - with an idle timeout, every write to a peer stamps the connection's [`Activity`] (a coarse
//!   clock: two relaxed atomics, no syscall); without one, nothing is stamped.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::idle::Activity;
use super::pipes::{PipePool, PooledPipe};
use super::sys;

/// How the bytes were moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ForwardMode {
    /// `splice(2)` through a pipe pair.
    Splice,
    /// Buffered copy (no pipes available).
    Copy,
}

/// Which peer an I/O error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The downstream client.
    Client,
    /// The backend.
    Upstream,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        })
    }
}

/// An I/O error while forwarding, with the side it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{side} side: {source}")]
pub struct ForwardError {
    /// Whose socket failed.
    pub side: Side,
    /// The error.
    pub source: io::Error,
}

/// What forwarding has done so far; readable even if the forwarding future is dropped (a
/// connection cut at the drain timeout still reports its byte counts).
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes from the client to the upstream.
    pub to_upstream: u64,
    /// Bytes from the upstream to the client.
    pub to_client: u64,
    /// Splice when some burst went through a pipe; copy when all went through the buffer
    /// (small bursts, or no pipe to lend). `None` before any byte moved.
    pub mode: Option<ForwardMode>,
    /// The side whose EOF came first, once one has.
    pub first_eof: Option<Side>,
}

/// Forwards until both directions have seen EOF (`Ok`), or one fails. Byte counts are added
/// to what `progress` already holds; `activity`, when given, is stamped as bytes move.
pub async fn forward(
    client: &TcpStream,
    upstream: &TcpStream,
    pool: &PipePool,
    progress: &mut Progress,
    activity: Option<&Activity>,
) -> Result<(), ForwardError> {
    let first_eof = AtomicU8::new(0);
    let modes_seen = AtomicU8::new(0);
    let Progress {
        to_upstream,
        to_client,
        mode,
        first_eof: first,
    } = progress;
    let result = tokio::try_join!(
        pump(
            Ends {
                src: client,
                dst: upstream,
                src_side: Side::Client,
                dst_side: Side::Upstream,
            },
            pool,
            to_upstream,
            &first_eof,
            &modes_seen,
            activity,
        ),
        pump(
            Ends {
                src: upstream,
                dst: client,
                src_side: Side::Upstream,
                dst_side: Side::Client,
            },
            pool,
            to_client,
            &first_eof,
            &modes_seen,
            activity,
        ),
    );
    let seen = modes_seen.load(Ordering::Relaxed);
    *mode = if seen & SPLICED != 0 {
        Some(ForwardMode::Splice)
    } else if seen & COPIED != 0 {
        Some(ForwardMode::Copy)
    } else {
        None
    };
    *first = match first_eof.load(Ordering::Relaxed) {
        1 => Some(Side::Client),
        2 => Some(Side::Upstream),
        _ => None,
    };
    result.map(|_| ())
}

/// One direction's two sockets.
struct Ends<'a> {
    src: &'a TcpStream,
    dst: &'a TcpStream,
    src_side: Side,
    dst_side: Side,
}

/// Intermediate storage for one burst of one direction: taken when the source has data,
/// given back once it is drained and the source has no more, so an idle connection holds
/// neither pipes nor buffers.
enum Stage<'a> {
    Splice(PooledPipe<'a>),
    Copy(CopyBuffer),
}

impl Stage<'_> {
    /// Moves what `src` has into the stage (which is empty). 0 = EOF.
    fn fill(&mut self, src: &TcpStream) -> io::Result<usize> {
        match self {
            Stage::Splice(pipe) => {
                let n = sys::splice(src.as_fd(), pipe.pipe().write.as_fd(), pipe.pipe().capacity)?;
                pipe.pending = n;
                Ok(n)
            }
            Stage::Copy(buf) => {
                let n = src.try_read(&mut buf.buf)?;
                buf.start = 0;
                buf.end = n;
                Ok(n)
            }
        }
    }

    /// Moves bytes from the stage into `dst`.
    fn drain(&mut self, dst: &TcpStream) -> io::Result<usize> {
        match self {
            Stage::Splice(pipe) => {
                let n = sys::splice(pipe.pipe().read.as_fd(), dst.as_fd(), pipe.pending)?;
                pipe.pending -= n;
                Ok(n)
            }
            Stage::Copy(buf) => {
                let n = dst.try_write(&buf.buf[buf.start..buf.end])?;
                buf.start += n;
                Ok(n)
            }
        }
    }

    /// Bytes in the stage.
    fn pending(&self) -> usize {
        match self {
            Stage::Splice(pipe) => pipe.pending,
            Stage::Copy(buf) => buf.end - buf.start,
        }
    }

    fn mode_bit(&self) -> u8 {
        match self {
            Stage::Splice(_) => SPLICED,
            Stage::Copy(_) => COPIED,
        }
    }
}

/// Bits of the modes a connection's bursts used: splice when any burst went through a pipe.
const SPLICED: u8 = 1;
const COPIED: u8 = 2;

const COPY_BUFFER: usize = 16 * 1024;
/// Copy buffers kept per thread for reuse.
const SPARE_BUFFERS: usize = 64;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A 16 KiB buffer for the copy path, from a small per-thread cache.
struct CopyBuffer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl CopyBuffer {
    fn take() -> Self {
        let buf = SPARE
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| vec![0; COPY_BUFFER].into_boxed_slice());
        Self {
            buf,
            start: 0,
            end: 0,
        }
    }
}

impl Drop for CopyBuffer {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < SPARE_BUFFERS {
                spare.push(buf);
            }
        });
    }
}

async fn pump(
    ends: Ends<'_>,
    pool: &PipePool,
    moved: &mut u64,
    first_eof: &AtomicU8,
    modes_seen: &AtomicU8,
    activity: Option<&Activity>,
) -> Result<(), ForwardError> {
    let Ends {
        src,
        dst,
        src_side,
        dst_side,
    } = ends;
    let src_error = |source| ForwardError {
        side: src_side,
        source,
    };
    loop {
        // Wait for data holding no storage.
        src.ready(Interest::READABLE).await.map_err(src_error)?;
        // Copy first: a burst of a few hundred bytes (requests, replies, handshakes) costs less
        // through a buffer (read + write) than through a pipe (two splices, page references).
        // A read that fills the buffer says more is coming: the burst goes on through a pipe.
        let mut stage = Stage::Copy(CopyBuffer::take());
        modes_seen.fetch_or(COPIED, Ordering::Relaxed);
        loop {
            // Socket readiness does not count against tokio's task budget: without this, a
            // pump whose two sockets stay ready would never yield, starving the other
            // direction and every other task on this worker.
            tokio::task::consume_budget().await;
            let n = match src.try_io(Interest::READABLE, || stage.fill(src)) {
                // Drained and nothing more to read: give the stage back and wait.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(src_error(e)),
                Ok(n) => n,
            };
            if n == 0 {
                let code = if src_side == Side::Client { 1 } else { 2 };
                let _ = first_eof.compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
                // EOF from src: pass the half-close on; the other direction is not affected.
                if let Err(err) = socket2::SockRef::from(dst).shutdown(Shutdown::Write)
                    && err.kind() != io::ErrorKind::NotConnected
                {
                    return Err(ForwardError {
                        side: dst_side,
                        source: err,
                    });
                }
                return Ok(());
            }
            while stage.pending() > 0 {
                let m = when_ready(dst, Interest::WRITABLE, || stage.drain(dst))
                    .await
                    .map_err(|source| ForwardError {
                        side: dst_side,
                        source,
                    })?;
                *moved += m as u64;
                if let Some(activity) = activity {
                    activity.touch();
                }
            }
            if n == COPY_BUFFER
                && matches!(stage, Stage::Copy(_))
                && let Some(pipe) = pool.acquire()
            {
                stage = Stage::Splice(pipe);
                modes_seen.fetch_or(stage.mode_bit(), Ordering::Relaxed);
            }
        }
    }
}

/// Runs the non-blocking `op` when `socket` is ready; readiness is cleared only when `op`
/// reports WouldBlock, and then we wait again.
async fn when_ready<R>(
    socket: &TcpStream,
    interest: Interest,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    loop {
        socket.ready(interest).await?;
        match socket.try_io(interest, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}
