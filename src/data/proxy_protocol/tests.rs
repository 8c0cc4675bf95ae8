//! PROXY protocol decoding, encoding and garbage.

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn v1_tcp4_tcp6_unknown() {
    let (d, len) = decode(b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\nHELLO")
        .unwrap()
        .unwrap();
    assert_eq!(
        d,
        Decoded::Proxied {
            source: sa("192.0.2.1:51000"),
            destination: sa("198.51.100.2:443")
        }
    );
    assert_eq!(len, 45);
    let (d, _) = decode(b"PROXY TCP6 2001:db8::1 2001:db8::2 51000 443\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(
        d,
        Decoded::Proxied {
            source: sa("[2001:db8::1]:51000"),
            destination: sa("[2001:db8::2]:443")
        }
    );
    let (d, len) = decode(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
    assert_eq!((d, len), (Decoded::Local, 15));
}

#[test]
fn v2_proxy_and_local() {
    let bytes = encode(
        ProxyVersion::V2,
        sa("192.0.2.1:51000"),
        sa("198.51.100.2:443"),
    );
    let (d, len) = decode(&bytes).unwrap().unwrap();
    assert_eq!(len, bytes.len());
    assert_eq!(
        d,
        Decoded::Proxied {
            source: sa("192.0.2.1:51000"),
            destination: sa("198.51.100.2:443")
        }
    );
    let mut local = V2_SIGNATURE.to_vec();
    local.extend([0x20, 0x00, 0x00, 0x00]);
    assert_eq!(decode(&local).unwrap().unwrap(), (Decoded::Local, 16));
}

#[test]
fn every_strict_prefix_asks_for_more() {
    for header in [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\n".to_vec(),
        encode(
            ProxyVersion::V2,
            sa("[2001:db8::1]:1"),
            sa("[2001:db8::2]:2"),
        ),
    ] {
        for cut in 1..header.len() {
            assert!(
                decode(&header[..cut]).unwrap().is_none(),
                "prefix of {cut} bytes"
            );
        }
        assert!(decode(&header).unwrap().is_some());
    }
}

#[test]
fn garbage_is_rejected_with_a_reason() {
    let cases: &[(&[u8], &str)] = &[
        (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00", "no PROXY protocol header"),
        (
            b"PROXY TCP4 999.0.0.1 198.51.100.2 1 2\r\n",
            "invalid PROXY protocol v1",
        ),
        (
            b"PROXY TCP9 1.1.1.1 1.1.1.1 1 2\r\n",
            "invalid PROXY protocol v1",
        ),
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 99999 2\r\n",
            "invalid PROXY protocol v1",
        ),
        (
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            "invalid PROXY protocol v1",
        ),
    ];
    for (input, want) in cases {
        let err = decode(input).unwrap_err().to_string();
        assert!(err.contains(want), "{input:?}: {err}");
    }
    let long = [b"PROXY ".as_slice(), &[b'A'; 200]].concat();
    assert!(
        decode(&long)
            .unwrap_err()
            .to_string()
            .contains("no CRLF within the first 107 bytes")
    );

    let mut big = V2_SIGNATURE.to_vec();
    big.extend([0x21, 0x11, 0xff, 0xff]);
    assert!(matches!(decode(&big), Err(HeaderError::TooLarge(65551))));

    let mut bad_version = V2_SIGNATURE.to_vec();
    bad_version.extend([0x31, 0x11, 0x00, 0x0c]);
    bad_version.extend([0u8; 12]);
    assert!(
        decode(&bad_version)
            .unwrap_err()
            .to_string()
            .contains("invalid PROXY protocol v2")
    );

    let mut short_addresses = V2_SIGNATURE.to_vec();
    short_addresses.extend([0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
    assert!(
        decode(&short_addresses)
            .unwrap_err()
            .to_string()
            .contains("invalid PROXY protocol v2")
    );
}

#[test]
fn encode_decode_round_trips() {
    let pairs = [
        (sa("192.0.2.1:51000"), sa("198.51.100.2:443")),
        (sa("[2001:db8::1]:51000"), sa("[2001:db8::2]:443")),
        (sa("192.0.2.1:1"), sa("[2001:db8::2]:65535")),
    ];
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        for (source, destination) in pairs {
            let bytes = encode(version, source, destination);
            let (decoded, len) = decode(&bytes).unwrap().unwrap();
            assert_eq!(len, bytes.len());
            let (want_s, want_d) = same_family(source, destination);
            assert_eq!(
                decoded,
                Decoded::Proxied {
                    source: want_s,
                    destination: want_d
                },
                "{version}"
            );
        }
    }
    assert_eq!(
        encode(
            ProxyVersion::V1,
            sa("192.0.2.1:51000"),
            sa("198.51.100.2:443")
        ),
        b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\n"
    );
}

#[tokio::test]
async fn read_header_keeps_the_bytes_after_it() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // Sent in two pieces, the second carrying payload right after the CRLF.
        client
            .write_all(b"PROXY TCP4 192.0.2.1 198.51.")
            .await
            .unwrap();
        client
            .write_all(b"100.2 51000 443\r\npayload")
            .await
            .unwrap();
        client
    });
    let (decoded, rest) = read_header(&mut server).await.unwrap();
    assert_eq!(
        decoded,
        Decoded::Proxied {
            source: sa("192.0.2.1:51000"),
            destination: sa("198.51.100.2:443")
        }
    );
    assert_eq!(rest, b"payload");
    drop(writer.await.unwrap());
    let (mut half, mut server) = tokio::io::duplex(64);
    tokio::io::AsyncWriteExt::write_all(&mut half, b"PROXY TCP4 1.2")
        .await
        .unwrap();
    drop(half);
    assert!(matches!(
        read_header(&mut server).await,
        Err(HeaderError::Closed(14))
    ));
}
