//! The fake backend: on one address, a TCP server and a UDP server.
//!
//! TCP: the first byte decides what a connection is. `S`: a sink (reads and discards until
//! EOF, for bulk throughput). `T`: the tag (the backend writes its `--tag` and a newline, then
//! closes: the compare runner checks with it that a proxy reaches the backend meant for it).
//! Anything else: echo (every byte read is written back, the first one included).
//!
//! UDP: every datagram is echoed to its sender, except `T`, which is answered with the tag.
//!
//! Once both sockets are bound it prints `{"tcp": ADDR, "udp": ADDR, "tag": TAG}` on stdout
//! (so port 0 can be used), then serves until killed.

use std::net::SocketAddr;

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Binds TCP on `listen` and UDP on the same address and port, announces them, serves forever.
pub async fn run(listen: SocketAddr, tag: String) -> anyhow::Result<()> {
    let (listener, udp) = bind(listen).await?;
    println!(
        "{}",
        json!({"tcp": listener.local_addr()?.to_string(), "udp": udp.local_addr()?.to_string(), "tag": tag})
    );
    let tag: &'static [u8] = Box::leak(format!("{tag}\n").into_boxed_str()).as_bytes();
    tokio::spawn(udp_echo(udp, tag));
    loop {
        let (s, _) = listener.accept().await?;
        tokio::spawn(serve(s, tag));
    }
}

/// TCP and UDP on the same port; with port 0, retried a few times in case the UDP port of
/// the TCP port chosen by the kernel is taken.
async fn bind(listen: SocketAddr) -> anyhow::Result<(TcpListener, UdpSocket)> {
    let mut last = None;
    for _ in 0..20 {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding TCP {listen}"))?;
        match UdpSocket::bind(listener.local_addr()?).await {
            Ok(udp) => return Ok((listener, udp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("binding UDP {listen}")),
        }
    }
    Err(last.expect("at least one attempt")).context("binding UDP next to TCP")
}

async fn serve(mut s: TcpStream, tag: &'static [u8]) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let Ok(n) = s.read(&mut buf).await else {
        return;
    };
    match buf.first() {
        _ if n == 0 => {}
        Some(b'S') => {
            buf.resize(256 * 1024, 0);
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
        Some(b'T') => {
            let _ = s.write_all(tag).await;
        }
        _ => {
            let mut n = n;
            while s.write_all(&buf[..n]).await.is_ok() {
                n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
            }
        }
    }
}

async fn udp_echo(udp: UdpSocket, tag: &'static [u8]) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        let reply = if &buf[..n] == b"T" { tag } else { &buf[..n] };
        let _ = udp.send_to(reply, from).await;
    }
}
