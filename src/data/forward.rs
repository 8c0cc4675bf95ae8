//! Moves bytes both ways between client and upstream until both directions are done.
//!
//! Each direction is a pump: fill a stage from the source socket, drain the stage into the
//! destination socket, repeat. The stage is a pipe (`splice(2)`, no copy through user space)
//! when the pool has two to lend, else a 16 KiB buffer. Invariants:
//! - a splice call moves at most one pipe's capacity (bounded length per call);
//! - the pipe is always empty before it is filled, so EAGAIN from socket→pipe can only mean
//!   "no data" and clearing the socket's readiness then is right (no lost wake-up, no spin);
//! - byte counts come from the syscalls' return values;
//! - EOF one way shuts the write side of the other socket; the other direction keeps flowing;
//! - an error on either side ends both directions and says whose side failed;
//! - progress (bytes, mode, which side closed first) is written where the caller can read it.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;

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
    /// Splice or copy (set before any byte moves).
    pub mode: Option<ForwardMode>,
    /// The side whose EOF came first, once one has.
    pub first_eof: Option<Side>,
}

/// Forwards until both directions have seen EOF (`Ok`), or one fails. Byte counts are added
/// to what `progress` already holds.
pub async fn forward(
    client: &TcpStream,
    upstream: &TcpStream,
    pool: &PipePool,
    progress: &mut Progress,
) -> Result<(), ForwardError> {
    let first_eof = AtomicU8::new(0);
    let pipes = pool.acquire().and_then(|a| pool.acquire().map(|b| (a, b)));
    let Progress {
        to_upstream,
        to_client,
        mode,
        first_eof: first,
    } = progress;
    let result = match pipes {
        Some((mut up, mut down)) => {
            *mode = Some(ForwardMode::Splice);
            let stages = (SpliceStage(&mut up), SpliceStage(&mut down));
            both_ways(client, upstream, stages, to_upstream, to_client, &first_eof).await
        }
        None => {
            *mode = Some(ForwardMode::Copy);
            let stages = (CopyStage::new(), CopyStage::new());
            both_ways(client, upstream, stages, to_upstream, to_client, &first_eof).await
        }
    };
    *first = match first_eof.load(Ordering::Relaxed) {
        1 => Some(Side::Client),
        2 => Some(Side::Upstream),
        _ => None,
    };
    result.map(|_| ())
}

/// Runs both pumps until both are done or one fails (then the other is dropped).
async fn both_ways<S: Stage>(
    client: &TcpStream,
    upstream: &TcpStream,
    (mut up, mut down): (S, S),
    to_upstream: &mut u64,
    to_client: &mut u64,
    first_eof: &AtomicU8,
) -> Result<((), ()), ForwardError> {
    tokio::try_join!(
        pump(
            client,
            upstream,
            Side::Client,
            Side::Upstream,
            &mut up,
            to_upstream,
            first_eof
        ),
        pump(
            upstream,
            client,
            Side::Upstream,
            Side::Client,
            &mut down,
            to_client,
            first_eof
        ),
    )
}

/// One direction's intermediate storage.
trait Stage {
    /// Moves what `src` has into the stage (which is empty). 0 = EOF.
    fn fill(&mut self, src: &TcpStream) -> io::Result<usize>;
    /// Moves bytes from the stage into `dst`.
    fn drain(&mut self, dst: &TcpStream) -> io::Result<usize>;
    /// Bytes in the stage.
    fn pending(&self) -> usize;
}

struct SpliceStage<'p, 'a>(&'p mut PooledPipe<'a>);

impl Stage for SpliceStage<'_, '_> {
    fn fill(&mut self, src: &TcpStream) -> io::Result<usize> {
        let n = sys::splice(
            src.as_fd(),
            self.0.pipe().write.as_fd(),
            self.0.pipe().capacity,
        )?;
        self.0.pending = n;
        Ok(n)
    }
    fn drain(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let n = sys::splice(self.0.pipe().read.as_fd(), dst.as_fd(), self.0.pending)?;
        self.0.pending -= n;
        Ok(n)
    }
    fn pending(&self) -> usize {
        self.0.pending
    }
}

const COPY_BUFFER: usize = 16 * 1024;

struct CopyStage {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl CopyStage {
    fn new() -> Self {
        Self {
            buf: vec![0; COPY_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl Stage for CopyStage {
    fn fill(&mut self, src: &TcpStream) -> io::Result<usize> {
        let n = src.try_read(&mut self.buf)?;
        self.start = 0;
        self.end = n;
        Ok(n)
    }
    fn drain(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let n = dst.try_write(&self.buf[self.start..self.end])?;
        self.start += n;
        Ok(n)
    }
    fn pending(&self) -> usize {
        self.end - self.start
    }
}

async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    src_side: Side,
    dst_side: Side,
    stage: &mut impl Stage,
    moved: &mut u64,
    first_eof: &AtomicU8,
) -> Result<(), ForwardError> {
    loop {
        // Socket readiness does not count against tokio's task budget: without this, a pump
        // whose two sockets stay ready would never yield, starving the other direction and
        // every other task on this worker.
        tokio::task::consume_budget().await;
        let n = when_ready(src, Interest::READABLE, || stage.fill(src))
            .await
            .map_err(|source| ForwardError {
                side: src_side,
                source,
            })?;
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
