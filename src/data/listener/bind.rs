//! Binding data-port sockets: `[::]` accepting IPv4 too (or `0.0.0.0` without IPv6), TCP
//! options the accepted sockets inherit, and `SO_REUSEPORT` with the successor steering.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Once;

use tokio::net::{TcpListener, UdpSocket};

/// Where data ports are bound.
#[derive(Debug, Clone, Copy)]
pub enum ListenAddress {
    /// All addresses: `[::]` accepting IPv4 too, or `0.0.0.0` where IPv6 is unavailable.
    All,
    /// One address.
    Ip(IpAddr),
}

/// Binds a data-port socket of `kind` (stream or datagram) on `address`: `[::]` accepting
/// IPv4 too when all addresses are wanted, falling back to `0.0.0.0` without IPv6. With
/// `reuse_port`, other processes may bind the same port (`SO_REUSEPORT`), and the newest
/// of two takes the new connections and datagrams; `per_process` is how many sockets each
/// process binds on the port (the steering program needs it).
fn bind_socket(
    address: ListenAddress,
    port: u16,
    kind: socket2::Type,
    reuse_port: bool,
    per_process: u32,
) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let attempt = |ip: IpAddr| -> io::Result<Socket> {
        let addr = SocketAddr::new(ip, port);
        let socket = Socket::new(Domain::for_address(addr), kind, None)?;
        if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            socket.set_only_v6(false)?;
        }
        if kind == Type::STREAM {
            // Lets a port be bound again while old connections linger in TIME_WAIT. Not for
            // UDP: there it would let a second process bind the same port and take a share of
            // the datagrams.
            socket.set_reuse_address(true)?;
            // Accepted sockets inherit these from the listener on Linux: set once here rather
            // than with five setsockopt calls per connection.
            socket.set_tcp_nodelay(true)?;
            socket.set_tcp_keepalive(&crate::data::net::keepalive_settings())?;
        }
        let reuse_port = reuse_port && warn_once_on_error(socket.set_reuse_port(true));
        socket.bind(&addr.into())?;
        if kind == Type::STREAM {
            socket.listen(4096)?;
        }
        // After listen: a TCP socket joins its reuseport group when it starts listening.
        // Attached for UDP too, so a client's flow moves to a successor once, when it starts
        // (with hashing it would move when either process joins or leaves the group).
        if reuse_port {
            warn_once_on_error(crate::sys::steer_reuseport_group(
                socket.as_fd(),
                per_process,
            ));
        }
        socket.set_nonblocking(true)?;
        Ok(socket)
    };
    match address {
        ListenAddress::Ip(ip) => attempt(ip),
        ListenAddress::All => match attempt(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) {
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                attempt(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            }
            other => other,
        },
    }
}

/// True if `result` is Ok; otherwise warns (once per process: the cause is the kernel, the
/// same for every port) that the restart handover is not available, and binding goes on.
fn warn_once_on_error(result: io::Result<()>) -> bool {
    static WARNED: Once = Once::new();
    if let Err(err) = &result {
        WARNED.call_once(|| tracing::warn!(error = %err, "SO_REUSEPORT or its steering program is not available (old kernel?): a second dermaga on the same ports will not take over new connections cleanly; ports work as usual"));
    }
    result.is_ok()
}

/// Binds `count` sockets of `kind` on the port with `reuse_port`, one without: each process
/// binds its sockets alike, and the steering program is attached with that count.
fn bind_group(
    address: ListenAddress,
    port: u16,
    kind: socket2::Type,
    reuse_port: bool,
    count: usize,
) -> io::Result<Vec<socket2::Socket>> {
    let count = if reuse_port { count.clamp(1, 64) } else { 1 };
    (0..count)
        .map(|_| bind_socket(address, port, kind, reuse_port, count as u32))
        .collect()
}

/// Binds the listening sockets of a TCP data port: `count` of them with `reuse_port` (the kernel
/// hashes each new connection to one; each has its own accept loop), one without.
pub fn bind_tcp(
    address: ListenAddress,
    port: u16,
    reuse_port: bool,
    count: usize,
) -> io::Result<Vec<TcpListener>> {
    bind_group(address, port, socket2::Type::STREAM, reuse_port, count)?
        .into_iter()
        .map(|socket| TcpListener::from_std(socket.into()))
        .collect()
}

/// Binds the UDP sockets of a data port, as [`bind_tcp`] binds TCP ports: `count` of them with
/// `reuse_port` (each receives its share of the clients, by the kernel's hash of their
/// addresses, and can be read by another worker thread), one without.
pub fn bind_udp(
    address: ListenAddress,
    port: u16,
    reuse_port: bool,
    count: usize,
) -> io::Result<Vec<UdpSocket>> {
    bind_group(address, port, socket2::Type::DGRAM, reuse_port, count)?
        .into_iter()
        .map(|socket| UdpSocket::from_std(socket.into()))
        .collect()
}
