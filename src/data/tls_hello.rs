//! The server name (SNI) of a TLS ClientHello, for TLS passthrough: the first bytes a client
//! sends, read before any backend is chosen, then forwarded unchanged.
//!
//! Bounded: the ClientHello may span several TLS records and TCP segments, but it is read only
//! up to [`MAX_HELLO`] bytes; anything else than a handshake record carrying a ClientHello is
//! an error at once. Hand-written (no TLS library is on the data path): it reads record
//! headers, the handshake header, and skips the ClientHello's fixed fields to its extensions.

/// The most bytes of a ClientHello read (records and handshake headers included). Real ones
/// are a few hundred bytes, about 1.8 kB with post-quantum key shares.
pub const MAX_HELLO: usize = 16 * 1024;

/// Why the first bytes are not a ClientHello dermaga can route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The first byte is not a TLS handshake record.
    #[error("not TLS: the first record is not a handshake (content type {0})")]
    NotTls(u8),
    /// The handshake message is not a ClientHello.
    #[error("not a ClientHello (handshake type {0})")]
    NotClientHello(u8),
    /// Over [`MAX_HELLO`].
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
    /// A length runs past its container, or a field is missing.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// Reads `buf`, the client's first bytes: `Ok(None)` when more are needed, `Ok(Some(name))`
/// when the ClientHello is complete (`name` its server name, lower case, if it sends one).
pub fn server_name(buf: &[u8]) -> Result<Option<Option<String>>, HelloError> {
    let mut handshake = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + 5) else {
            return Ok(None);
        };
        if header[0] != 22 {
            return Err(HelloError::NotTls(header[0]));
        }
        if header[1] != 3 {
            return Err(HelloError::Malformed("record version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(HelloError::Malformed("empty record"));
        }
        if pos + 5 + len > MAX_HELLO {
            return Err(HelloError::TooLarge);
        }
        let Some(fragment) = buf.get(pos + 5..pos + 5 + len) else {
            return Ok(None);
        };
        handshake.extend_from_slice(fragment);
        pos += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Err(HelloError::NotClientHello(handshake[0]));
            }
            let body = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            if body + 4 > MAX_HELLO {
                return Err(HelloError::TooLarge);
            }
            if handshake.len() >= body + 4 {
                return client_hello_name(&handshake[4..4 + body]).map(Some);
            }
        }
    }
}

/// A cursor over a byte slice whose every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<usize, HelloError> {
        Ok(usize::from(self.take(1, what)?[0]))
    }

    fn u16(&mut self, what: &'static str) -> Result<usize, HelloError> {
        let b = self.take(2, what)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A vector with a `width`-byte length prefix.
    fn vector(&mut self, width: usize, what: &'static str) -> Result<Reader<'a>, HelloError> {
        let len = if width == 1 {
            self.u8(what)?
        } else {
            self.u16(what)?
        };
        Ok(Reader(self.take(len, what)?))
    }
}

/// The server name of a ClientHello's body (after the handshake header).
fn client_hello_name(body: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader(body);
    r.take(2, "client version")?;
    r.take(32, "random")?;
    r.vector(1, "session id")?;
    r.vector(2, "cipher suites")?;
    r.vector(1, "compression methods")?;
    if r.0.is_empty() {
        return Ok(None); // no extensions at all
    }
    let mut extensions = r.vector(2, "extensions")?;
    while !extensions.0.is_empty() {
        let kind = extensions.u16("extension type")?;
        let mut data = extensions.vector(2, "extension")?;
        if kind != 0 {
            continue;
        }
        let mut names = data.vector(2, "server name list")?;
        while !names.0.is_empty() {
            let name_type = names.u8("server name type")?;
            let name = names.vector(2, "server name")?.0;
            if name_type != 0 {
                continue;
            }
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                })
                .ok_or(HelloError::Malformed("server name is not a host name"))?;
            return Ok(Some(name.trim_end_matches('.').to_ascii_lowercase()));
        }
        return Ok(None);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record for `name` (none: no SNI extension), with `padding` bytes of an
    /// unknown extension before the SNI one.
    pub(crate) fn hello(name: Option<&str>, padding: usize) -> Vec<u8> {
        let mut extensions = Vec::new();
        extensions.extend_from_slice(&0xffa5u16.to_be_bytes());
        extensions.extend_from_slice(&(padding as u16).to_be_bytes());
        extensions.extend(std::iter::repeat_n(0u8, padding));
        if let Some(name) = name {
            let mut list = vec![0u8];
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name.as_bytes());
            extensions.extend_from_slice(&0u16.to_be_bytes());
            extensions.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
            extensions.extend_from_slice(&(list.len() as u16).to_be_bytes());
            extensions.extend_from_slice(&list);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut handshake = vec![1, 0];
        handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
        handshake.extend_from_slice(&body);
        records(&handshake, 16 * 1024)
    }

    /// `handshake` split into records of at most `size` bytes.
    fn records(handshake: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in handshake.chunks(size) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn reads_the_name_and_waits_for_every_byte() {
        let bytes = hello(Some("Shop.Example.com."), 0);
        assert_eq!(
            server_name(&bytes),
            Ok(Some(Some("shop.example.com".into())))
        );
        // Every prefix asks for more: a ClientHello split across segments.
        for cut in 0..bytes.len() {
            assert_eq!(server_name(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn a_hello_across_records_is_read_and_no_sni_is_none() {
        let single = hello(Some("a.example.org"), 300);
        let handshake: Vec<u8> = single[5..].to_vec();
        let split = records(&handshake, 100);
        assert_eq!(server_name(&split), Ok(Some(Some("a.example.org".into()))));
        assert_eq!(server_name(&hello(None, 10)), Ok(Some(None)));
    }

    #[test]
    fn other_bytes_are_refused_at_once() {
        assert_eq!(
            server_name(b"GET / HTTP/1.1\r\n"),
            Err(HelloError::NotTls(b'G'))
        );
        let mut server_hello = hello(Some("x"), 0);
        server_hello[5] = 2;
        assert_eq!(
            server_name(&server_hello),
            Err(HelloError::NotClientHello(2))
        );
        let mut truncated_list = hello(Some("x.example"), 0);
        let n = truncated_list.len();
        truncated_list[n - 13] = 0xff; // the name list's length runs past the extension
        assert!(matches!(
            server_name(&truncated_list),
            Err(HelloError::Malformed(_))
        ));
        let mut bad_name = hello(Some("a b"), 0);
        let n = bad_name.len();
        bad_name[n - 2] = b' ';
        assert!(matches!(
            server_name(&bad_name),
            Err(HelloError::Malformed(_))
        ));
    }

    #[test]
    fn a_hello_over_the_limit_is_refused() {
        let big = hello(Some("x.example"), MAX_HELLO);
        assert_eq!(server_name(&big), Err(HelloError::TooLarge));
        // The limit is known from the first record's header, before its bytes arrive.
        assert_eq!(server_name(&big[..5]), Err(HelloError::TooLarge));
        let declared = [22, 3, 1, 0x40, 0x01];
        assert_eq!(server_name(&declared), Err(HelloError::TooLarge));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 7u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let len = (seed >> 33) as usize % 64;
            let mut bytes = hello(Some("fuzz.example"), 0);
            for i in 0..len {
                let at = (seed as usize).wrapping_add(i * 7919) % bytes.len();
                bytes[at] = (seed >> (i % 56)) as u8;
            }
            let _ = server_name(&bytes);
        }
    }
}
