//! Safe socket helpers shared by the TCP and UDP paths and the listener: keepalive settings,
//! closing with a reset, and canonical (IPv4-mapped → IPv4) addresses.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// TCP keepalive on both sides, so a peer that vanished (NAT timeout, dead node) does not
/// hold a connection, its pipes and descriptors forever: probes after 60 s idle, every 10 s,
/// 6 unanswered probes end it.
/// Client sockets inherit them (and TCP_NODELAY) from the listening socket.
pub fn keepalive_settings() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6)
}

/// Sets [`keepalive_settings`] on `stream` (best effort).
pub fn keepalive(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive_settings());
}

/// Closes `stream` with a reset (SO_LINGER 0), so the peer learns at once.
pub fn reset(stream: TcpStream) {
    reset_on_close(&stream);
    drop(stream);
}

/// Makes the close of `stream`, whenever it is dropped, a reset (SO_LINGER 0).
pub fn reset_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// `::ffff:a.b.c.d` → `a.b.c.d`, so a dual-stack listener reports IPv4 clients as IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
