//! Property tests of the PROXY protocol decoder (issue #5): random and mutated bytes never
//! panic and never make [`read_header`] read without bound, [`encode`] → [`read_header`]
//! gives back the addresses and every byte of early data, and the way the bytes are cut into
//! reads changes nothing.
//!
//! The read bound: [`read_header`] reads in chunks of [`CHUNK`] bytes and stops as soon as a
//! header is complete or impossible, i.e. within one chunk of the largest header it accepts
//! ([`V1_MAX`] for v1, [`MAX_HEADER`] for v2; a v2 length field announcing more is rejected
//! from the first 16 bytes). [`Endless`] supplies bytes forever and counts them.
//!
//! Failures are persisted by proptest in `proptest-regressions/data/proxy_protocol/props.txt`
//! (committed when one exists), so a found case is replayed first on every later run.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::*;

/// The size of [`read_header`]'s reads.
const CHUNK: usize = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    }
}

/// Runs a future on a fresh current-thread runtime with a 5 s limit (a read without bound
/// on [`Endless`] shows as a timeout, since `Endless` yields to the runtime between reads).
fn block_on<F: Future>(f: F) -> Result<F::Output, TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), f).await })
        .map_err(|_| TestCaseError::fail("read_header still reading after 5 s"))
}

/// A stream that supplies `prefix`, then `filler` forever, in reads of at most `max_read`
/// bytes, returning `Pending` (with a wake-up) before every other read; counts what it gave.
struct Endless {
    prefix: Vec<u8>,
    filler: u8,
    max_read: usize,
    given: usize,
    yield_next: bool,
}

impl AsyncRead for Endless {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.yield_next) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yield_next = true;
        let n = buf.remaining().min(self.max_read);
        for _ in 0..n {
            let i = self.given;
            buf.put_slice(&[*self.prefix.get(i).unwrap_or(&self.filler)]);
            self.given += 1;
        }
        Poll::Ready(Ok(()))
    }
}

/// A finite stream: `data`, cut into reads by the sizes in `cuts` (cycled), then EOF.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    cuts: Vec<usize>,
    turn: usize,
}

impl Chunked {
    fn new(data: Vec<u8>, cuts: Vec<usize>) -> Self {
        Self {
            data,
            at: 0,
            cuts,
            turn: 0,
        }
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let cut = self.cuts[self.turn % self.cuts.len()].max(1);
        self.turn += 1;
        let n = buf.remaining().min(cut).min(self.data.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

/// What a stream gave up: the header (or the error, reduced to its kind and, for a closed
/// stream, the count), and every byte after the header, whether read_header returned it or
/// left it in the stream.
#[derive(Debug, PartialEq)]
enum Outcome {
    Header(Decoded, Vec<u8>),
    Failed(String),
}

fn error_kind(e: &HeaderError) -> String {
    match e {
        HeaderError::NotProxy(_) => "NotProxy".into(),
        HeaderError::Invalid { version, .. } => format!("Invalid {version}"),
        HeaderError::TooLarge(n) => format!("TooLarge {n}"),
        HeaderError::Closed(n) => format!("Closed {n}"),
        HeaderError::Io(e) => format!("Io {e}"),
    }
}

async fn read_all(mut stream: Chunked) -> Outcome {
    match read_header(&mut stream).await {
        Ok((decoded, mut rest)) => {
            stream.read_to_end(&mut rest).await.expect("in memory");
            Outcome::Header(decoded, rest)
        }
        Err(e) => Outcome::Failed(error_kind(&e)),
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        // IPv4-mapped IPv6, which prints as ::ffff:a.b.c.d.
        any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
    ];
    (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn version() -> impl Strategy<Value = ProxyVersion> {
    prop_oneof![Just(ProxyVersion::V1), Just(ProxyVersion::V2)]
}

/// A valid header of either version.
fn valid_header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (version(), socket_addr(), socket_addr()).prop_map(|(v, s, d)| encode(v, s, d)),
        1 => Just(b"PROXY UNKNOWN\r\n".to_vec()),
        1 => Just(b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
        1 => Just([V2_SIGNATURE.as_slice(), &[0x20, 0x00, 0x00, 0x00]].concat()),
    ]
}

/// A change to a valid header.
#[derive(Debug, Clone)]
enum Damage {
    FlipBit(usize, u8),
    Truncate(usize),
    SetByte(usize, u8),
    /// A new v2 length field (bytes 14-15).
    Length(u16),
    /// Bytes inserted (a v1 header grows past its limit this way).
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Damage::FlipBit(i, b)),
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::SetByte(i, b)),
        prop_oneof![any::<u16>(), 0u16..64, 4000u16..4200].prop_map(Damage::Length),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..120)
        )
            .prop_map(|(i, b)| Damage::Insert(i, b)),
    ]
}

fn apply(mut h: Vec<u8>, d: &Damage) -> Vec<u8> {
    let len = h.len();
    if len == 0 && !matches!(d, Damage::Insert(..)) {
        return h;
    }
    match d {
        Damage::FlipBit(i, b) => h[i % len] ^= 1 << b,
        Damage::Truncate(i) => h.truncate(i % len),
        Damage::SetByte(i, b) => h[i % len] = *b,
        Damage::Length(l) if len >= 16 => h[14..16].copy_from_slice(&l.to_be_bytes()),
        Damage::Length(_) => {}
        Damage::Insert(i, b) => {
            let at = i % (len + 1);
            h.splice(at..at, b.iter().copied());
        }
    }
    h
}

/// Bytes that a decoder meets: random, a damaged header, or a header-like prefix followed by
/// random bytes.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        (valid_header(), proptest::collection::vec(damage(), 1..4))
            .prop_map(|(h, ds)| ds.iter().fold(h, apply)),
        (
            prop_oneof![
                Just(b"PROXY ".to_vec()),
                Just(b"PROXY TCP4 ".to_vec()),
                Just(b"PROXY TCP6 ".to_vec()),
                Just(V2_SIGNATURE.to_vec())
            ],
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(p, r)| [p, r].concat()),
    ]
}

/// What a header that decodes says, by construction of [`encode`].
fn expected(source: SocketAddr, destination: SocketAddr) -> Decoded {
    let (source, destination) = same_family(source, destination);
    Decoded::Proxied {
        source,
        destination,
    }
}

proptest! {
    #![proptest_config(config())]

    /// (1) `decode` on any bytes: no panic; a header it finds lies within the input and
    /// within the size the protocol allows.
    #[test]
    fn prop_decode_any_bytes_is_bounded(bytes in hostile_bytes()) {
        if let Ok(Some((_, len))) = decode(&bytes) {
            prop_assert!(len <= bytes.len());
            if bytes.starts_with(b"PROXY ") {
                prop_assert!(len <= V1_MAX, "v1 header of {} bytes", len);
            } else {
                prop_assert!(bytes.starts_with(&V2_SIGNATURE));
                prop_assert!((16..=MAX_HEADER).contains(&len), "v2 header of {} bytes", len);
            }
        }
    }

    /// (1) `read_header` on a stream that never ends: it returns (header or error) after
    /// reading at most one chunk past the largest header it accepts.
    #[test]
    fn prop_read_header_stops_on_an_endless_stream(
        prefix in hostile_bytes(),
        filler in any::<u8>(),
        max_read in prop_oneof![1usize..8, Just(CHUNK), Just(usize::MAX)],
    ) {
        let mut stream = Endless { prefix: prefix.clone(), filler, max_read, given: 0, yield_next: false };
        let result = block_on(read_header(&mut stream))?;
        // The stream's first 12 bytes decide the version (anything else fails at once).
        let head: Vec<u8> = (0..12).map(|i| *prefix.get(i).unwrap_or(&filler)).collect();
        let limit = if head == V2_SIGNATURE { MAX_HEADER } else { V1_MAX };
        prop_assert!(
            stream.given < limit + CHUNK,
            "read {} bytes (limit {} + one read); result {:?}", stream.given, limit, result
        );
        if let Ok((_, rest)) = &result {
            prop_assert!(rest.len() < CHUNK);
        }
    }

    /// (2) encode → read_header: the same addresses (mixed families as IPv6), and every byte
    /// of early data, for both versions.
    #[test]
    fn prop_encode_read_header_round_trips(
        v in version(),
        source in socket_addr(),
        destination in socket_addr(),
        early in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let header = encode(v, source, destination);
        let (decoded, len) = decode(&header)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?
            .ok_or_else(|| TestCaseError::fail("complete header asks for more"))?;
        prop_assert_eq!(len, header.len());
        prop_assert_eq!(decoded, expected(source, destination));
        if v == ProxyVersion::V1 {
            prop_assert!(header.len() <= V1_MAX);
        }
        let stream = Chunked::new([header, early.clone()].concat(), vec![usize::MAX]);
        let got = block_on(read_all(stream))?;
        prop_assert_eq!(got, Outcome::Header(expected(source, destination), early));
    }

    /// (3) The same bytes in random small reads give the same outcome as in one read: valid
    /// headers with early data, and hostile bytes alike.
    #[test]
    fn prop_chunking_changes_nothing(
        bytes in prop_oneof![
            (valid_header(), proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(h, e)| [h, e].concat()),
            hostile_bytes(),
        ],
        cuts in proptest::collection::vec(1usize..17, 1..8),
    ) {
        let whole = block_on(read_all(Chunked::new(bytes.clone(), vec![usize::MAX])))?;
        let pieces = block_on(read_all(Chunked::new(bytes, cuts)))?;
        prop_assert_eq!(pieces, whole);
    }
}
