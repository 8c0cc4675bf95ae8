//! Experimental (`--kernel-forward`, issue 19's moonshot): forwarding an established
//! connection inside the kernel with a BPF sockmap, measured before kept.
//!
//! Two `SOCKHASH` maps and one `sk_skb` verdict program of eleven instructions, assembled here
//! (no compiler, no ELF):
//! - `targets` holds each socket under its *peer's* socket cookie;
//! - `attached` holds each socket under its own cookie and carries the verdict program, so
//!   a socket's bytes run the program only once both sockets are redirect targets;
//! - the program looks up `targets[cookie(receiving socket)]` and redirects the bytes to that
//!   socket's send side (`bpf_sk_redirect_hash`, flags 0).
//!
//! Bytes that arrived before the sockets joined are still in the receive queue; setting
//! `SO_RCVLOWAT` calls the socket's data-ready hook, which now runs the program on them in
//! order. After [`SockmapForwarder::join`] user space reads nothing: it waits for EOF, and for
//! the peer to have taken every byte received ([`written`] against [`received`]) before it
//! shuts the peer's write side.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `bpf(2)` commands, map and program types, attach type and helper numbers (linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_MAP_TYPE_SOCKHASH: u64 = 18;
const BPF_PROG_TYPE_SK_SKB: u64 = 14;
const BPF_SK_SKB_VERDICT: u64 = 38;
const BPF_FUNC_GET_SOCKET_COOKIE: i32 = 46;
const BPF_FUNC_SK_REDIRECT_HASH: i32 = 72;
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `SO_COOKIE` (socket option 57): the socket's 64-bit cookie.
const SO_COOKIE: libc::c_int = 57;
/// Offsets in `struct tcp_info` (linux/tcp.h) and its size as this kernel's headers give it.
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;
const TCP_INFO_LEN: usize = 232;
/// `union bpf_attr` is 144 bytes here; the kernel accepts a shorter, zero-padded one.
const ATTR_WORDS: usize = 18;

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The verdict program: `key = bpf_get_socket_cookie(skb); return bpf_sk_redirect_hash(skb,
/// targets, &key, 0)`.
fn verdict_program(targets: i32) -> [Insn; 11] {
    [
        insn(0xbf, 6, 1, 0, 0),                          // r6 = r1 (skb)
        insn(0x85, 0, 0, 0, BPF_FUNC_GET_SOCKET_COOKIE), // r0 = cookie
        insn(0x7b, 10, 0, -8, 0),                        // *(u64 *)(r10 - 8) = r0
        insn(0xbf, 1, 6, 0, 0),                          // r1 = skb
        insn(0x18, 2, BPF_PSEUDO_MAP_FD, 0, targets),    // r2 = targets (two slots)
        insn(0, 0, 0, 0, 0),                             //
        insn(0xbf, 3, 10, 0, 0),                         // r3 = r10
        insn(0x07, 3, 0, 0, -8),                         // r3 += -8 (&key)
        insn(0xb7, 4, 0, 0, 0),                          // r4 = 0 (egress)
        insn(0x85, 0, 0, 0, BPF_FUNC_SK_REDIRECT_HASH),  // r0 = redirect
        insn(0x95, 0, 0, 0, 0),                          // return r0
    ]
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; ATTR_WORDS]) -> io::Result<i32> {
    // SAFETY: `attr` is a valid, writable, zero-padded `union bpf_attr` of the given size; the
    // pointers stored in it point at live buffers of the caller for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as i32)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful bpf(2) call and belongs to nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn sockhash(max_entries: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u64; ATTR_WORDS];
    attr[0] = BPF_MAP_TYPE_SOCKHASH | (8 << 32); // map_type, key_size
    attr[1] = 8 | (u64::from(max_entries) << 32); // value_size, max_entries
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

fn update(map: &OwnedFd, key: u64, socket: BorrowedFd<'_>) -> io::Result<()> {
    let value = socket.as_raw_fd() as u64;
    let mut attr = [0u64; ATTR_WORDS];
    attr[0] = map.as_raw_fd() as u64;
    attr[1] = &key as *const u64 as u64;
    attr[2] = &value as *const u64 as u64;
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

fn cookie(socket: BorrowedFd<'_>) -> io::Result<u64> {
    let mut value = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given; SO_COOKIE writes a u64.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn tcp_info_u64(socket: BorrowedFd<'_>, offset: usize) -> io::Result<u64> {
    let mut info = [0u8; TCP_INFO_LEN];
    let mut len = TCP_INFO_LEN as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of the sizes given; the kernel writes at
    // most `len` bytes of `struct tcp_info`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < offset + 8 {
        return Err(io::Error::other("tcp_info shorter than this build expects"));
    }
    let bytes = info[offset..offset + 8].try_into().expect("eight bytes");
    Ok(u64::from_ne_bytes(bytes))
}

/// Payload bytes the socket has received from its peer since it was opened (`tcpi_bytes_received`).
pub fn received(socket: BorrowedFd<'_>) -> io::Result<u64> {
    tcp_info_u64(socket, TCPI_BYTES_RECEIVED)
}

/// Payload bytes written into the socket since it was opened: acknowledged by the peer
/// (`tcpi_bytes_acked`) plus still in the send queue (`SIOCOUTQ`).
pub fn written(socket: BorrowedFd<'_>) -> io::Result<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int to the valid pointer given.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tcp_info_u64(socket, TCPI_BYTES_ACKED)? + queued.max(0) as u64)
}

/// Reads nothing, to learn whether the socket is at EOF: `Ok(true)` at EOF, `Ok(false)` when it
/// is not (EAGAIN, or bytes that were not redirected, which this prototype does not expect
/// and reports as an error).
pub fn at_eof(socket: BorrowedFd<'_>) -> io::Result<bool> {
    let mut byte = 0u8;
    // SAFETY: `byte` is valid for a one-byte write; MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    };
    match n {
        0 => Ok(true),
        n if n > 0 => Err(io::Error::other(
            "bytes reached user space on a socket forwarded in the kernel",
        )),
        _ => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

/// The maps and the attached verdict program; sockets leave the maps when they are closed.
#[derive(Debug)]
pub struct SockmapForwarder {
    targets: OwnedFd,
    attached: OwnedFd,
    _program: OwnedFd,
}

impl SockmapForwarder {
    /// Creates the maps (room for `max_connections` connections), loads and attaches the
    /// program. Fails with the kernel's reason (EPERM without CAP_BPF, EINVAL on a kernel
    /// without sockmap verdict programs).
    pub fn new(max_connections: u32) -> io::Result<Self> {
        let entries = max_connections.saturating_mul(2).max(2);
        let targets = sockhash(entries)?;
        let attached = sockhash(entries)?;
        let program = verdict_program(targets.as_raw_fd());
        let license = c"Apache-2.0";
        let mut log = vec![0u8; 4096];
        let mut attr = [0u64; ATTR_WORDS];
        attr[0] = BPF_PROG_TYPE_SK_SKB | ((program.len() as u64) << 32);
        attr[1] = program.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        attr[3] = 1 | ((log.len() as u64) << 32); // log_level, log_size
        attr[4] = log.as_mut_ptr() as u64;
        let loaded = bpf(BPF_PROG_LOAD, &mut attr).map(owned).map_err(|err| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            io::Error::new(
                err.kind(),
                format!(
                    "loading the verdict program: {err}: {}",
                    String::from_utf8_lossy(&log[..end]).trim()
                ),
            )
        })?;
        let mut attr = [0u64; ATTR_WORDS];
        attr[0] = attached.as_raw_fd() as u64 | ((loaded.as_raw_fd() as u64) << 32);
        attr[1] = BPF_SK_SKB_VERDICT;
        bpf(BPF_PROG_ATTACH, &mut attr)?;
        Ok(Self {
            targets,
            attached,
            _program: loaded,
        })
    }

    /// Hands both sockets to the kernel: from now on what either receives is sent by the
    /// kernel on the other. Bytes already queued are sent first, in order.
    pub fn join(&self, client: BorrowedFd<'_>, upstream: BorrowedFd<'_>) -> io::Result<()> {
        let (client_cookie, upstream_cookie) = (cookie(client)?, cookie(upstream)?);
        update(&self.targets, upstream_cookie, client)?;
        update(&self.targets, client_cookie, upstream)?;
        update(&self.attached, client_cookie, client)?;
        update(&self.attached, upstream_cookie, upstream)?;
        for socket in [client, upstream] {
            let one: libc::c_int = 1;
            // SAFETY: SO_RCVLOWAT reads one int from the valid pointer given.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
