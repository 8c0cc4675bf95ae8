//! The one module that makes raw syscalls: pipes, `splice(2)`, the reuseport steering
//! program, `recvmsg(2)` with the kernel's receive-drop counter (`SO_RXQ_OVFL`), and
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
    })
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

/// Attaches to the `SO_REUSEPORT` group of `socket` a classic BPF program that returns
/// `index` for every new connection (TCP listener) or datagram (UDP): the kernel hands it to
/// the group's socket at that index, and falls back to its usual hash when the group has no
/// socket there. The program belongs to the group, not to the socket: attaching it again (from
/// any member, from any process) replaces it with the same one.
///
/// dermaga attaches `index` 1: alone, a process gets everything by hashing over its one
/// socket; once a second process joins the group (a successor, appended at index 1), every new
/// connection goes to the successor, and the old process's accept queue stays empty.
pub fn steer_reuseport_group(socket: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    // One instruction: `BPF_RET | BPF_K` with k = index.
    let program = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: index,
    }];
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

/// One datagram received by [`recv_from_counting_drops`].
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Payload bytes written to the buffer.
    pub len: usize,
    /// Who sent it.
    pub from: std::net::SocketAddr,
    /// The socket's drop count when the datagram was queued, if the kernel attached one (it
    /// does once a drop has happened, with [`count_receive_drops`] on).
    pub drops: Option<u32>,
}

/// `recvfrom` that also reads the `SO_RXQ_OVFL` drop count (a control message). Non-blocking
/// when the socket is; a datagram longer than `buf` is truncated, as with `recvfrom`.
pub fn recv_from_counting_drops(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: all-zero bytes are a valid `sockaddr_storage` (plain integers and arrays).
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one cmsghdr with a u32, aligned as cmsghdr requires (u64 words).
    let mut control = [0u64; 8];
    // SAFETY: all-zero bytes are a valid `msghdr` (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: the descriptor is borrowed, hence open; every pointer in `msg` points to a
        // live local (`addr`, `iov`, `control`) or into `buf`, with the lengths of those, and
        // they outlive the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, 0) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut drops = None;
    // SAFETY: `msg` was filled by a successful recvmsg: its control pointer and length describe
    // the control messages the kernel wrote into `control`, which the CMSG macros walk within
    // those bounds; a SO_RXQ_OVFL message carries one u32, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                drops = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<u32>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    let from = match libc::c_int::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a `sockaddr_in`, which fits in the
            // storage and needs no more alignment than it.
            let a = unsafe { &*(&raw const addr).cast::<libc::sockaddr_in>() };
            std::net::SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a = unsafe { &*(&raw const addr).cast::<libc::sockaddr_in6>() };
            std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        family => {
            return Err(io::Error::other(format!(
                "recvmsg returned address family {family}"
            )));
        }
    };
    Ok(Received {
        len: n.min(buf.len()),
        from,
        drops,
    })
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
        let mut buf = [0u8; 2048];
        let mut taken = 0u32;
        while let Ok(r) = recv_from_counting_drops(rx.as_fd(), &mut buf) {
            assert_eq!((r.len, r.from), (512, tx.local_addr().unwrap()));
            assert_eq!(r.drops, None, "queued before any drop");
            taken += 1;
        }
        tx.send_to(b"after", to).unwrap();
        let r = recv_from_counting_drops(rx.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..r.len], b"after");
        assert_eq!(r.drops, Some(200 - taken), "{taken} of 200 taken");
    }
}
