//! Experimental (`--kernel-forward`): a connection forwarded by the kernel through a BPF
//! sockmap ([`crate::sys::sockmap`]) instead of by [`super::forward`]. User space only waits:
//! for EOF on each side, then for the other socket to have taken every byte received before
//! it shuts that socket's write side (the kernel sends redirected bytes from a work queue, so
//! a `shutdown` right at EOF could overtake them).
//!
//! Not kept-quality: no idle timeout (no activity is seen), byte counts only at the end (from
//! `tcp_info`), and the kernel queues redirected bytes without bound when the receiver is
//! slower than the sender (measured in docs/benchmarks.md).

use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::forward::{ForwardError, ForwardMode, Progress, Side};
use crate::sys::sockmap::{self, SockmapForwarder};

/// How often a side whose EOF arrived checks whether the other socket has taken every byte.
const DRAIN_CHECK: Duration = Duration::from_micros(200);

/// What each socket had received, and been written, before the kernel took over (a PROXY
/// header written, a client's header read): the drain check compares what came after.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    client_received: u64,
    upstream_received: u64,
    to_upstream_offset: u64,
    to_client_offset: u64,
}

/// Hands the connection to the kernel. Fails when the kernel will not take it (a socket no
/// longer established, e.g. a client that sent its request and FIN at once: EOPNOTSUPP), and
/// the caller forwards in user space instead.
pub fn join(
    client: &TcpStream,
    upstream: &TcpStream,
    kernel: &SockmapForwarder,
) -> io::Result<Joined> {
    let joined = Joined {
        client_received: sockmap::received(client.as_fd())?,
        upstream_received: sockmap::received(upstream.as_fd())?,
        to_upstream_offset: sockmap::written(upstream.as_fd())?,
        to_client_offset: sockmap::written(client.as_fd())?,
    };
    kernel.join(client.as_fd(), upstream.as_fd())?;
    Ok(joined)
}

/// Waits, while the kernel forwards a [`join`]ed connection, until both sides have seen EOF
/// (or one fails).
pub async fn kernel_forward(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    joined: Joined,
    progress: &mut Progress,
) -> Result<(), ForwardError> {
    let client_error = |source| ForwardError {
        side: Side::Client,
        source,
    };
    let upstream_error = |source| ForwardError {
        side: Side::Upstream,
        source,
    };
    let Joined {
        client_received,
        upstream_received,
        to_upstream_offset,
        to_client_offset,
    } = joined;
    progress.mode = Some(ForwardMode::Kernel);
    let mut client_done = false;
    let mut upstream_done = false;
    while !(client_done && upstream_done) {
        tokio::select! {
            eof = wait_eof(client), if !client_done => {
                eof.map_err(client_error)?;
                client_done = true;
                progress.first_eof.get_or_insert(Side::Client);
                let sent = drained(client, client_received, upstream, to_upstream_offset).await.map_err(upstream_error)?;
                progress.to_upstream += sent;
                if !upstream_done {
                    socket2::SockRef::from(&*upstream).shutdown(Shutdown::Write).map_err(upstream_error)?;
                }
            }
            eof = wait_eof(upstream), if !upstream_done => {
                eof.map_err(upstream_error)?;
                upstream_done = true;
                progress.first_eof.get_or_insert(Side::Upstream);
                let sent = drained(upstream, upstream_received, client, to_client_offset).await.map_err(client_error)?;
                progress.to_client += sent;
                if !client_done {
                    socket2::SockRef::from(&*client).shutdown(Shutdown::Write).map_err(client_error)?;
                }
            }
        }
    }
    Ok(())
}

/// Waits until `socket` is at EOF.
async fn wait_eof(socket: &TcpStream) -> io::Result<()> {
    loop {
        socket.readable().await?;
        let eof = socket.try_io(Interest::READABLE, || {
            match sockmap::at_eof(socket.as_fd()) {
                Ok(true) => Ok(()),
                Ok(false) => Err(io::ErrorKind::WouldBlock.into()),
                Err(err) => Err(err),
            }
        });
        match eof {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Waits until `to` has been written every byte `from` received since the kernel took over;
/// returns that count.
async fn drained(
    from: &TcpStream,
    from_base: u64,
    to: &TcpStream,
    to_base: u64,
) -> io::Result<u64> {
    // `tcpi_bytes_received` counts the FIN's sequence number too: one more than the payload.
    let received = sockmap::received(from.as_fd())?.saturating_sub(from_base + 1);
    while sockmap::written(to.as_fd())?.saturating_sub(to_base) < received {
        tokio::time::sleep(DRAIN_CHECK).await;
    }
    Ok(received)
}
