//! The one module that makes raw syscalls: pipes, `splice(2)`, and the reuseport steering
//! program. Every `unsafe` block of the crate is here, each with its `// SAFETY:` note;
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
}
