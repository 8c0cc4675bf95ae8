//! Moves bytes both ways between client and upstream until both directions are done.
//!
//! Each direction is a pump: wait until the source is readable, take a stage, fill it from the
//! source socket, drain it into the destination socket, repeat while the source has data; when
//! it has none, give the stage back and wait again. A burst starts in a 16 KiB buffer (small
//! messages are cheaper copied); one that fills it goes on through a pipe (`splice(2)`, no copy
//! through user space) when the pool has one to lend. An idle connection holds neither.
//!
//! The two pumps are one hand-written future ([`Forward`], about 150 bytes) polled by the
//! connection's task: it waits through the sockets' own reader and writer waker slots
//! (`poll_read_ready`, `poll_write_ready`), and every socket operation counts against tokio's
//! task budget, so a connection whose sockets stay ready yields to the others.
//! Invariants:
//! - a splice call moves at most one pipe's capacity (bounded length per call);
//! - the pipe is always empty before it is filled, so EAGAIN from socket→pipe can only mean
//!   "no data" and clearing the socket's readiness then is right (no lost wake-up, no spin);
//! - a read into the copy buffer that returns less than the buffer clears the readiness as
//!   tokio's own reads do (the socket's queue was drained; a newer event keeps it ready), which
//!   saves the read that would only have said EAGAIN;
//! - byte counts come from the syscalls' return values;
//! - EOF one way shuts the write side of the other socket; the other direction keeps flowing;
//! - an error on either side ends both directions and says whose side failed;
//! - progress (bytes, mode, which side closed first) is written where the
//!   caller can read it;
//! - with an idle timeout, every write to a peer stamps the connection's [`Activity`] (a coarse
//!   clock: two relaxed atomics, no syscall); without one, nothing is stamped.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::idle::Activity;
use super::pipes::{PipePool, PooledPipe};
use crate::sys;

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
pub fn forward<'a>(
    client: &'a mut TcpStream,
    upstream: &'a mut TcpStream,
    pool: &'a PipePool,
    progress: &'a mut Progress,
    activity: Option<&'a Activity>,
) -> Forward<'a> {
    Forward {
        client,
        upstream,
        pool,
        progress,
        activity,
        to_upstream: Pump::default(),
        to_client: Pump::default(),
        client_first: true,
    }
}

/// The future [`forward`] returns: both directions of one connection, polled by hand so that
/// a connection waiting for bytes holds a few pointers and two empty stages, and waits on the
/// sockets' own reader and writer slots instead of queued waiter nodes.
pub struct Forward<'a> {
    client: &'a mut TcpStream,
    upstream: &'a mut TcpStream,
    pool: &'a PipePool,
    progress: &'a mut Progress,
    activity: Option<&'a Activity>,
    to_upstream: Pump<'a>,
    to_client: Pump<'a>,
    /// Which direction is polled first; alternates, so that a direction that keeps its sockets
    /// ready cannot spend the task's whole budget on every wake-up and starve the other one.
    client_first: bool,
}

impl Future for Forward<'_> {
    type Output = Result<(), ForwardError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let env = Env {
            pool: this.pool,
            activity: this.activity,
        };
        let client_first = this.client_first;
        this.client_first = !client_first;
        for client_turn in [client_first, !client_first] {
            let other_done = if client_turn {
                this.to_client.done
            } else {
                this.to_upstream.done
            };
            let (pump, src, dst, src_side) = if client_turn {
                (
                    &mut this.to_upstream,
                    &mut *this.client,
                    &mut *this.upstream,
                    Side::Client,
                )
            } else {
                (
                    &mut this.to_client,
                    &mut *this.upstream,
                    &mut *this.client,
                    Side::Upstream,
                )
            };
            if pump.done {
                continue;
            }
            if let Poll::Ready(result) =
                pump.poll(cx, src, dst, src_side, env, this.progress, other_done)
            {
                result?;
                pump.done = true;
            }
        }
        if this.to_upstream.done && this.to_client.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// What both directions share.
#[derive(Clone, Copy)]
struct Env<'a> {
    pool: &'a PipePool,
    activity: Option<&'a Activity>,
}

/// One direction: its stage while a burst is moving (`None` while waiting for bytes).
#[derive(Default)]
struct Pump<'a> {
    stage: Option<Stage<'a>>,
    /// EOF passed on: this direction is over.
    done: bool,
}

impl<'a> Pump<'a> {
    /// Moves bytes from `src` to `dst` until `src` has none for now (`Pending`, with the
    /// task's waker registered on whichever socket it waits for), its EOF has been passed on
    /// (`Ready(Ok)`), or a socket fails. `last`: the other direction is over, so both sockets
    /// are closed next and their close sends the FIN (both receive queues are empty: each
    /// direction has read its EOF), and no `shutdown` is needed for it.
    #[allow(clippy::too_many_arguments)]
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut TcpStream,
        dst: &mut TcpStream,
        src_side: Side,
        env: Env<'a>,
        progress: &mut Progress,
        last: bool,
    ) -> Poll<Result<(), ForwardError>> {
        let dst_side = match src_side {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        };
        let src_error = |source| ForwardError {
            side: src_side,
            source,
        };
        let dst_error = |source| ForwardError {
            side: dst_side,
            source,
        };
        loop {
            if let Some(stage) = &mut self.stage {
                // Pass on what the stage holds; while `dst` cannot take it, the stage is kept.
                while stage.pending() > 0 {
                    let n = ready!(stage.poll_drain(cx, dst)).map_err(dst_error)?;
                    match src_side {
                        Side::Client => progress.to_upstream += n as u64,
                        Side::Upstream => progress.to_client += n as u64,
                    }
                    match stage {
                        Stage::Splice(_) => progress.mode = Some(ForwardMode::Splice),
                        Stage::Copy(_) => _ = progress.mode.get_or_insert(ForwardMode::Copy),
                    }
                    if let Some(activity) = env.activity {
                        activity.touch();
                    }
                }
                // A read that filled the copy buffer says more is coming: go on through a pipe.
                if stage.filled_buffer()
                    && let Some(pipe) = env.pool.acquire()
                {
                    *stage = Stage::Splice(pipe);
                }
            } else {
                // Storage is taken only once the source is readable.
                ready!(src.poll_read_ready(cx)).map_err(src_error)?;
                // Copy first: a burst of a few hundred bytes (requests, replies, handshakes)
                // costs less through a buffer (read + write) than through a pipe (two splices,
                // page references).
                self.stage = Some(Stage::Copy(CopyBuffer::take()));
            }
            let Some(stage) = &mut self.stage else {
                unreachable!("a stage was just taken or kept")
            };
            match stage.poll_fill(cx, src) {
                Poll::Pending => {
                    // Drained, and nothing more to read: give the (empty) stage back and wait.
                    // Out of budget instead (tokio gives a unit back when a socket is not
                    // ready, so none left means a forced yield): keep it, the burst goes on
                    // when the task runs again, through the same pipe.
                    if tokio::task::coop::has_budget_remaining() {
                        self.stage = None;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(src_error(e))),
                Poll::Ready(Ok(0)) => {
                    self.stage = None;
                    progress.first_eof.get_or_insert(src_side);
                    if last {
                        return Poll::Ready(Ok(()));
                    }
                    // EOF from src: pass the half-close on; the other direction goes on.
                    return Poll::Ready(
                        match socket2::SockRef::from(&*dst).shutdown(Shutdown::Write) {
                            Err(err) if err.kind() != io::ErrorKind::NotConnected => {
                                Err(dst_error(err))
                            }
                            _ => Ok(()),
                        },
                    );
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// Intermediate storage for one burst of one direction: taken when the source has data,
/// given back once it is drained and the source has no more, so an idle connection holds
/// neither pipes nor buffers.
enum Stage<'a> {
    Splice(PooledPipe<'a>),
    Copy(CopyBuffer),
}

impl Stage<'_> {
    /// Moves what `src` has into the stage (which is empty). `Ready(Ok(0))` = EOF; `Pending` =
    /// nothing to read (readiness cleared, the waker registered).
    fn poll_fill(&mut self, cx: &mut Context<'_>, src: &mut TcpStream) -> Poll<io::Result<usize>> {
        match self {
            Stage::Splice(pipe) => loop {
                ready!(src.poll_read_ready(cx))?;
                // The pipe is empty: EAGAIN can only mean the socket has no data, so clearing
                // its readiness then is right (no lost wake-up, no spin).
                let write_end = pipe.pipe().write.as_fd();
                let capacity = pipe.pipe().capacity;
                match src.try_io(Interest::READABLE, || {
                    sys::splice(src.as_fd(), write_end, capacity)
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(n) => {
                        pipe.pending = n;
                        if n == capacity {
                            // A burst larger than the pipe: a bulk transfer, which a larger
                            // pipe moves with fewer splices.
                            pipe.filled();
                        }
                        return Poll::Ready(Ok(n));
                    }
                }
            },
            Stage::Copy(buf) => {
                // tokio's read clears the readiness after a short read (the socket is drained),
                // which saves the read that would only have said EAGAIN.
                let mut read = ReadBuf::new(&mut buf.buf);
                ready!(Pin::new(src).poll_read(cx, &mut read))?;
                let n = read.filled().len();
                buf.start = 0;
                buf.end = n;
                Poll::Ready(Ok(n))
            }
        }
    }

    /// Moves bytes from the stage into `dst`.
    fn poll_drain(&mut self, cx: &mut Context<'_>, dst: &mut TcpStream) -> Poll<io::Result<usize>> {
        let n = match self {
            Stage::Splice(pipe) => loop {
                ready!(dst.poll_write_ready(cx))?;
                let read_end = pipe.pipe().read.as_fd();
                match dst.try_io(Interest::WRITABLE, || {
                    sys::splice(read_end, dst.as_fd(), pipe.pending)
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(n) => {
                        pipe.pending -= n;
                        break n;
                    }
                }
            },
            Stage::Copy(buf) => {
                let n = ready!(Pin::new(dst).poll_write(cx, &buf.buf[buf.start..buf.end]))?;
                buf.start += n;
                n
            }
        };
        if n == 0 {
            // Bytes were pending: a socket that takes none would make this loop forever.
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        Poll::Ready(Ok(n))
    }

    /// Bytes in the stage.
    fn pending(&self) -> usize {
        match self {
            Stage::Splice(pipe) => pipe.pending,
            Stage::Copy(buf) => buf.end - buf.start,
        }
    }

    /// The last read filled the copy buffer.
    fn filled_buffer(&self) -> bool {
        matches!(self, Stage::Copy(buf) if buf.end == buf.buf.len())
    }
}

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
        // try_with: a buffer dropped while the thread's locals are torn down is just freed.
        let _ = SPARE.try_with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < SPARE_BUFFERS {
                spare.push(buf);
            }
        });
    }
}
