//! PROXY protocol v1 (text) and v2 (binary) headers: decoding what a load balancer sends in
//! front of a connection, and encoding one for the backend. The byte-level parsing of each
//! version is done by the `ppp` crate; this module frames the header on a stream (how many
//! bytes it spans, when more are needed, a bound on its size) and maps it to addresses.
//!
//! Invariants: [`decode`] never asks for more than [`MAX_HEADER`] bytes and rejects input as
//! soon as it cannot be a header; bytes read past the header are returned, not lost.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::names::ProxyVersion;

/// The 12-byte signature that starts a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (from the specification).
pub const V1_MAX: usize = 107;
/// The largest v2 header accepted (16-byte preamble + addresses + TLVs).
pub const MAX_HEADER: usize = 4096;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The original client (`source`) and the address it connected to (`destination`).
    Proxied {
        /// The real client.
        source: SocketAddr,
        /// Where the client connected (the load balancer's front address).
        destination: SocketAddr,
    },
    /// v2 `LOCAL` (a health check from the load balancer), v1 `UNKNOWN`, or an address family
    /// that is not IP: the connection's own addresses stand.
    Local,
}

/// Why a header was rejected.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The first bytes cannot start a PROXY header.
    #[error("no PROXY protocol header: the connection starts with {0:?}")]
    NotProxy(String),
    /// The header is malformed.
    #[error("invalid PROXY protocol {version} header: {message}")]
    Invalid {
        /// `v1` or `v2`.
        version: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A v2 header announces more than [`MAX_HEADER`] bytes.
    #[error("PROXY protocol v2 header of {0} bytes is larger than the {MAX_HEADER} accepted")]
    TooLarge(usize),
    /// The client closed before the header was complete.
    #[error("connection closed after {0} bytes, before the PROXY protocol header was complete")]
    Closed(usize),
    /// Reading failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Decodes a header at the start of `buf`. `Ok(None)`: more bytes are needed.
/// `Ok(Some((decoded, len)))`: the header spans `buf[..len]`.
pub fn decode(buf: &[u8]) -> Result<Option<(Decoded, usize)>, HeaderError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if V2_SIGNATURE.starts_with(&buf[..buf.len().min(V2_SIGNATURE.len())]) {
        return decode_v2(buf);
    }
    if b"PROXY ".starts_with(&buf[..buf.len().min(6)]) {
        return decode_v1(buf);
    }
    let shown = String::from_utf8_lossy(&buf[..buf.len().min(16)]).into_owned();
    Err(HeaderError::NotProxy(shown))
}

fn decode_v1(buf: &[u8]) -> Result<Option<(Decoded, usize)>, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(HeaderError::Invalid {
                version: "v1",
                message: format!("no CRLF within the first {V1_MAX} bytes"),
            });
        }
        return Ok(None);
    };
    let len = cr + 2;
    let header = ppp::v1::Header::try_from(&buf[..len]).map_err(|e| HeaderError::Invalid {
        version: "v1",
        message: e.to_string(),
    })?;
    let decoded = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Decoded::Proxied {
            source: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        },
        ppp::v1::Addresses::Tcp6(a) => Decoded::Proxied {
            source: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        },
        ppp::v1::Addresses::Unknown => Decoded::Local,
    };
    Ok(Some((decoded, len)))
}

fn decode_v2(buf: &[u8]) -> Result<Option<(Decoded, usize)>, HeaderError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_HEADER {
        return Err(HeaderError::TooLarge(len));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let header = ppp::v2::Header::try_from(&buf[..len]).map_err(|e| HeaderError::Invalid {
        version: "v2",
        message: e.to_string(),
    })?;
    let decoded = match (header.command, header.addresses) {
        (ppp::v2::Command::Local, _) => Decoded::Local,
        (_, ppp::v2::Addresses::IPv4(a)) => Decoded::Proxied {
            source: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        },
        (_, ppp::v2::Addresses::IPv6(a)) => Decoded::Proxied {
            source: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        },
        (_, _) => Decoded::Local,
    };
    Ok(Some((decoded, len)))
}

/// Reads a header from `stream`. Returns it and the bytes that followed it in the same reads
/// (client payload, to be sent upstream first). The caller bounds the time this may take.
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<(Decoded, Vec<u8>), HeaderError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some((decoded, len)) = decode(&buf)? {
            let rest = buf.split_off(len);
            return Ok((decoded, rest));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeaderError::Closed(buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Encodes a header telling the backend that `source` connected to `destination`.
/// Mixed families are sent as IPv6 (an IPv4 address becomes IPv4-mapped).
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        ProxyVersion::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        ProxyVersion::V2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        .expect("writing into a Vec cannot fail"),
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
