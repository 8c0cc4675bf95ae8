//! The one module that makes raw syscalls: pipes, `splice(2)`, the reuseport steering
//! program, `recvmmsg(2)` with the kernel's receive-drop counter (`SO_RXQ_OVFL`) and
//! `sendmmsg(2)` for UDP batches, and
//! `sysconf(3)` for the process metrics. Every `unsafe` block of the crate is here, each with its `// SAFETY:` note;
//! everything it returns is safe to use.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec pipe.
#[derive(Debug)]
pub struct Pipe {
    /// Read end.
    pub read: OwnedFd,
    /// Write end.
    pub write: OwnedFd,
    /// Capacity in bytes as the kernel reports it.
    pub capacity: usize,
    /// The kernel refused to make it larger ([`resize_pipe`]): not asked again.
    pub resize_refused: bool,
}

/// Creates a pipe and asks for `size` bytes of capacity (best effort: the kernel may grant less,
/// e.g. past the per-user `pipe-user-pages-soft` limit, where new pipes get one page).
pub fn pipe(size: usize) -> io::Result<Pipe> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two c_ints, as pipe2 requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wanted = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_SETPIPE_SZ takes an int argument and only acts on the open descriptor `write`.
    // Failure (EPERM above pipe-max-size, EBUSY) leaves the pipe usable at its old size.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, wanted) };
    // SAFETY: F_GETPIPE_SZ takes no argument and only reads the open descriptor's state.
    let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if capacity < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Pipe {
        read,
        write,
        capacity: capacity as usize,
        resize_refused: false,
    })
}

/// Asks the kernel to give `pipe` a capacity of `size` bytes (`F_SETPIPE_SZ`; it may hold data:
/// a pipe only grows here). On success `capacity` is what the kernel granted; on failure (EPERM
/// past the per-user `pipe-user-pages-soft` limit or above `pipe-max-size`) the pipe is
/// unchanged and usable.
pub fn resize_pipe(pipe: &mut Pipe, size: usize) -> io::Result<()> {
    let wanted = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_SETPIPE_SZ takes an int argument and only acts on the open descriptor `write`.
    let granted = unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, wanted) };
    if granted < 0 {
        return Err(io::Error::last_os_error());
    }
    pipe.capacity = granted as usize;
    Ok(())
}

/// Moves up to `len` bytes from `from` to `to` without copying through user space; at least one
/// of the two must be a pipe. Non-blocking on the pipe; the socket must be non-blocking itself.
/// Returns the number of bytes moved; 0 means end of file on `from`.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are borrowed, hence open for the duration of the call; null
        // offsets are allowed (required for pipes and sockets) and make splice use the file
        // position.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `SO_ATTACH_REUSEPORT_CBPF` (Linux 4.5+; `asm-generic/socket.h`).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Attaches to the `SO_REUSEPORT` group of `socket` a classic BPF program that steers every new
/// connection (TCP listener) or datagram (UDP) to the group's socket at index `per_process`
/// or above: the kernel hands it to that socket, and falls back to its usual hash when the
/// group has no socket there. The program belongs to the group, not to the socket: attaching
/// it again (from any member, from any process) replaces it.
///
/// dermaga binds `per_process` sockets per port (one for TCP; one per worker thread for UDP)
/// and attaches this with that count. Alone, a process has indices `0..per_process`, the
/// program's choice does not exist, and the kernel's hash spreads the traffic over its sockets.
/// Once a successor with the same count joins (appended at `per_process..2 × per_process`),
/// everything new goes to the successor: with one socket, to index 1; with several, to
/// `per_process + (source address ^ source port) % per_process`, read from the packet's
/// IPv4 or IPv6 and transport headers, so that a client keeps reaching the same socket.
pub fn steer_reuseport_group(socket: BorrowedFd<'_>, per_process: u32) -> io::Result<()> {
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // Loads relative to the network header (`SKF_NET_OFF`): the kernel runs the program with
    // the data pointer past the transport header.
    let net = |offset: u32| (libc::SKF_NET_OFF as u32).wrapping_add(offset);
    let (ld, ldh, ldb) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
    );
    let program: Vec<libc::sock_filter> = if per_process <= 1 {
        // One instruction: `BPF_RET | BPF_K` with k = 1.
        vec![op(libc::BPF_RET | libc::BPF_K, 1)]
    } else {
        vec![
            op(ldb, net(0)),                                    // 0: A = version << 4 | ihl
            op(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 4), // 1: A = IP version
            jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 6, 4, 0), // 2: IPv6? to 7
            op(ldh, net(20)),                                   // 3: IPv4 source port
            op(libc::BPF_MISC | libc::BPF_TAX, 0),              // 4: X = port
            op(ld, net(12)),                                    // 5: A = source address
            op(libc::BPF_JMP | libc::BPF_JA, 3),                // 6: to 10
            op(ldh, net(40)),                                   // 7: IPv6 source port
            op(libc::BPF_MISC | libc::BPF_TAX, 0),              // 8: X = port
            op(ld, net(20)),                                    // 9: A = address, low word
            op(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0), // 10: A ^= X
            op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, per_process), // 11
            op(libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K, per_process), // 12
            op(libc::BPF_RET | libc::BPF_A, 0),                 // 13: return A
        ]
    };
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: the descriptor is borrowed, hence open; `fprog` points to `program`, which lives
    // until the call returns (the kernel copies the program), and the length passed is the size
    // of `fprog`, the type this option expects.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the kernel attach its count of datagrams dropped at `socket` (receive buffer full,
/// since the socket was created) to each datagram received after a drop (`SO_RXQ_OVFL`).
pub fn count_receive_drops(socket: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is borrowed, hence open; the option takes an int, and the pointer
    // and length passed are those of `on`, which lives until the call returns.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Most datagrams one [`recv_batch`] or [`send_batch`] moves: enough to spread a system call
/// over a burst (a resolver's queries, a game tick), small enough that the slots (one
/// receive buffer each) stay cheap.
pub const BATCH: usize = 16;

/// One datagram received by [`recv_batch`].
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Payload bytes written to its slot.
    pub len: usize,
    /// Who sent it.
    pub from: std::net::SocketAddr,
    /// The socket's drop count when the datagram was queued, if the kernel attached one (it
    /// does once a drop has happened, with [`count_receive_drops`] on).
    pub drops: Option<u32>,
}

/// `recvmmsg(2)`: up to `slots.len()` (at most [`BATCH`]) datagrams waiting at `socket`, each
/// into its own slot, with its sender and the `SO_RXQ_OVFL` drop count; `received` is
/// cleared and gets one entry per datagram, in slot order. Non-blocking when the socket is:
/// `WouldBlock` when nothing waits, otherwise at least one datagram (a pending error, such as
/// an ICMP refusal, comes with the next call). A datagram longer than its slot is truncated,
/// as with `recvfrom`.
pub fn recv_batch(
    socket: BorrowedFd<'_>,
    slots: &mut [Vec<u8>],
    received: &mut Vec<Received>,
) -> io::Result<()> {
    received.clear();
    let n = slots.len().min(BATCH);
    // SAFETY: all-zero bytes are valid for these plain C structs (integers, arrays, null
    // pointers, zero lengths).
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    // Room for one cmsghdr with a u32 per datagram, aligned as cmsghdr requires (u64 words).
    let mut controls = [[0u64; 8]; BATCH];
    // SAFETY: as above.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: slots[i].as_mut_ptr().cast(),
            iov_len: slots[i].len(),
        };
        let h = &mut msgs[i].msg_hdr;
        h.msg_name = (&raw mut addrs[i]).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &raw mut iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = controls[i].as_mut_ptr().cast();
        h.msg_controllen = std::mem::size_of_val(&controls[i]);
    }
    let count = loop {
        // SAFETY: the descriptor is borrowed, hence open; the first `n` headers point to live
        // locals (`addrs`, `iovs`, `controls`) and into the slots, with their lengths, all of
        // which outlive the call; no timeout is passed.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if rc >= 0 {
            break rc as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    for i in 0..count {
        let msg = &msgs[i].msg_hdr;
        let mut drops = None;
        // SAFETY: `msg` was filled by a successful recvmmsg: its control pointer and length
        // describe the control messages the kernel wrote into `controls[i]`, which the CMSG
        // macros walk within those bounds; a SO_RXQ_OVFL message carries one u32, read
        // unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL
                {
                    drops = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<u32>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        received.push(Received {
            len: (msgs[i].msg_len as usize).min(slots[i].len()),
            from: socket_addr(&addrs[i])?,
            drops,
        });
    }
    Ok(())
}

/// The address the kernel wrote into `addr`.
fn socket_addr(addr: &libc::sockaddr_storage) -> io::Result<std::net::SocketAddr> {
    Ok(match libc::c_int::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a `sockaddr_in`, which fits in the
            // storage and needs no more alignment than it.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            std::net::SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        family => {
            return Err(io::Error::other(format!(
                "recvmmsg returned address family {family}"
            )));
        }
    })
}

/// `sendmmsg(2)`: the datagrams `payloads` (at most [`BATCH`]) from `socket` to `to`. Returns
/// how many the kernel took, in order; `WouldBlock` (socket buffer full) when none.
pub fn send_batch(
    socket: BorrowedFd<'_>,
    payloads: &[&[u8]],
    to: std::net::SocketAddr,
) -> io::Result<usize> {
    let n = payloads.len().min(BATCH);
    let to = socket2::SockAddr::from(to);
    // SAFETY: all-zero bytes are valid for these plain C structs.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: payloads[i].as_ptr().cast_mut().cast(),
            iov_len: payloads[i].len(),
        };
        let h = &mut msgs[i].msg_hdr;
        h.msg_name = to.as_ptr().cast_mut().cast();
        h.msg_namelen = to.len();
        h.msg_iov = &raw mut iovs[i];
        h.msg_iovlen = 1;
    }
    loop {
        // SAFETY: the descriptor is borrowed, hence open; the first `n` headers point to
        // `to` and to the payloads (read only by the kernel: sendmmsg does not write through
        // iov_base), all of which outlive the call.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_NOSIGNAL,
            )
        };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of CPU times in `/proc`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// The page size in bytes (`sysconf(_SC_PAGESIZE)`), the unit of memory sizes in `/proc`.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn pipe_has_the_asked_capacity_and_splices_between_pipes() {
        let a = pipe(128 * 1024).unwrap();
        assert!(a.capacity >= 4096);
        let b = pipe(64 * 1024).unwrap();
        std::fs::File::from(a.write.try_clone().unwrap())
            .write_all(b"hello")
            .unwrap();
        assert_eq!(splice(a.read.as_fd(), b.write.as_fd(), 1024).unwrap(), 5);
        let mut buf = [0u8; 5];
        std::fs::File::from(b.read.try_clone().unwrap())
            .read_exact(&mut buf)
            .unwrap();
        assert_eq!(&buf, b"hello");
        // Empty non-blocking pipe: EAGAIN, not a hang.
        let err = splice(a.read.as_fd(), b.write.as_fd(), 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn steering_sends_new_connections_to_the_second_socket_of_the_group() {
        use socket2::{Domain, Socket, Type};
        let listen = |addr: std::net::SocketAddr| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            s.listen(64).unwrap();
            steer_reuseport_group(s.as_fd(), 1).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        };
        let queued = |s: &Socket| std::iter::from_fn(|| s.accept().ok()).count();
        let old = listen("127.1.6.40:0".parse().unwrap());
        let addr = old.local_addr().unwrap().as_socket().unwrap();
        let connect = |n| -> Vec<_> {
            (0..n)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect()
        };
        // Alone in the group, index 1 does not exist: the usual hash picks the one socket.
        let _a = connect(5);
        assert_eq!(queued(&old), 5);
        // A second socket joins: it gets every new connection.
        let new = listen(addr);
        let _b = connect(20);
        assert_eq!((queued(&old), queued(&new)), (0, 20));
    }

    #[test]
    fn steering_spreads_a_process_sockets_and_sends_new_datagrams_to_the_successor_ones() {
        // The program reads the source address and port from the IPv4 and the IPv6 headers.
        for (port_ip, client_ip) in [("127.1.6.41", "127.0.0.1"), ("::1", "::1")] {
            let port_ip: std::net::IpAddr = port_ip.parse().unwrap();
            let client_ip: std::net::IpAddr = client_ip.parse().unwrap();
            steering_spreads_and_hands_over(port_ip, client_ip);
        }
    }

    fn steering_spreads_and_hands_over(port_ip: std::net::IpAddr, client_ip: std::net::IpAddr) {
        use socket2::{Domain, Socket, Type};
        let bind = |addr: std::net::SocketAddr| {
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            steer_reuseport_group(s.as_fd(), 2).unwrap();
            s.set_nonblocking(true).unwrap();
            std::net::UdpSocket::from(s)
        };
        let queued = |s: &std::net::UdpSocket| {
            let mut buf = [0u8; 16];
            std::iter::from_fn(|| s.recv(&mut buf).ok()).count()
        };
        let first = bind(std::net::SocketAddr::new(port_ip, 0));
        let addr = first.local_addr().unwrap();
        let old = [first, bind(addr)];
        let clients: Vec<_> = (0..40)
            .map(|_| std::net::UdpSocket::bind((client_ip, 0)).unwrap())
            .collect();
        let send_all = || {
            for c in &clients {
                c.send_to(b"x", addr).unwrap();
            }
        };
        // Alone, indices 2 and 3 do not exist: the kernel's hash spreads the clients.
        send_all();
        let counts = (queued(&old[0]), queued(&old[1]));
        assert_eq!(counts.0 + counts.1, 40, "{port_ip}");
        assert!(
            counts.0 > 0 && counts.1 > 0,
            "both sockets receive: {counts:?}"
        );
        // A successor's two sockets join: they get every datagram, spread by address and port.
        let new = [bind(addr), bind(addr)];
        send_all();
        send_all();
        let counts = [
            queued(&old[0]),
            queued(&old[1]),
            queued(&new[0]),
            queued(&new[1]),
        ];
        assert_eq!(counts[..2], [0, 0], "{port_ip}: {counts:?}");
        assert_eq!(counts[2] + counts[3], 80, "{port_ip}");
        assert!(
            counts[2] > 0 && counts[3] > 0,
            "both new sockets receive: {counts:?}"
        );
        assert_eq!(
            counts[2] % 2,
            0,
            "a client's two datagrams reach the same socket"
        );
    }

    #[test]
    fn receive_drops_are_counted_on_the_next_datagram() {
        let rx = std::net::UdpSocket::bind("127.1.7.20:0").unwrap();
        socket2::SockRef::from(&rx)
            .set_recv_buffer_size(4096)
            .unwrap();
        count_receive_drops(rx.as_fd()).unwrap();
        let tx = std::net::UdpSocket::bind("127.1.7.21:0").unwrap();
        let to = rx.local_addr().unwrap();
        for _ in 0..200 {
            tx.send_to(&[1u8; 512], to).unwrap();
        }
        rx.set_nonblocking(true).unwrap();
        let mut slots = vec![vec![0u8; 2048]; BATCH];
        let mut got = Vec::new();
        let mut taken = 0u32;
        while recv_batch(rx.as_fd(), &mut slots, &mut got).is_ok() {
            assert!(!got.is_empty() && got.len() <= BATCH);
            for r in &got {
                assert_eq!((r.len, r.from), (512, tx.local_addr().unwrap()));
                assert_eq!(r.drops, None, "queued before any drop");
            }
            taken += got.len() as u32;
        }
        tx.send_to(b"after", to).unwrap();
        recv_batch(rx.as_fd(), &mut slots, &mut got).unwrap();
        let r = got[0];
        assert_eq!(&slots[0][..r.len], b"after");
        assert_eq!(r.drops, Some(200 - taken), "{taken} of 200 taken");
    }

    #[test]
    fn batches_go_out_and_come_in_in_order_with_their_senders() {
        let rx = std::net::UdpSocket::bind("127.1.7.22:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.1.7.23:0").unwrap();
        let other = std::net::UdpSocket::bind("127.1.7.24:0").unwrap();
        let to = rx.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1 + i as usize]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        // At most BATCH per call.
        assert_eq!(send_batch(tx.as_fd(), &refs, to).unwrap(), BATCH);
        assert_eq!(send_batch(tx.as_fd(), &refs[BATCH..], to).unwrap(), 4);
        other.send_to(&[9u8; 3000], to).unwrap();
        rx.set_nonblocking(true).unwrap();
        // Small slots truncate (as recvfrom does); the rest are whole, in order.
        let mut slots = vec![vec![0u8; 2048]; BATCH];
        let mut got = Vec::new();
        let mut seen = Vec::new();
        while recv_batch(rx.as_fd(), &mut slots, &mut got).is_ok() {
            for (i, r) in got.iter().enumerate() {
                seen.push((slots[i][..r.len].to_vec(), r.from));
            }
        }
        assert_eq!(seen.len(), 21);
        for (i, (p, from)) in seen.iter().take(20).enumerate() {
            assert_eq!((p, *from), (&payloads[i], tx.local_addr().unwrap()));
        }
        assert_eq!(seen[20].0.len(), 2048);
        assert_eq!(seen[20].1, other.local_addr().unwrap());
        let err = recv_batch(rx.as_fd(), &mut slots, &mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(got.is_empty());
    }
}
