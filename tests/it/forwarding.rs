//! Forwarding correctness through real sockets: 256 MiB each way with checksums, half-close,
//! the splice path and the copy fallback, and the fallback when the pipe pool runs out, and idle connections holding no pipes.

use std::net::SocketAddr;

use crate::support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1024 * 1024;

/// Writes `total` bytes of the repeating block; returns their CRC.
async fn send(w: &mut (impl AsyncWriteExt + Unpin), block: &[u8], total: u64) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n]).await.unwrap();
        crc.update(&block[..n]);
        left -= n as u64;
    }
    crc.finalize()
}

/// Reads exactly `total` bytes; returns their CRC.
async fn receive(r: &mut (impl AsyncReadExt + Unpin), total: u64) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "EOF with {left} bytes still expected");
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    crc.finalize()
}

/// A backend that, per connection, reads until EOF while sending `total` bytes, then sends the
/// CRC of what it received (after the client's half-close) and closes.
async fn checksum_backend(ip: &str, total: u64) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let block = random_block(1_000_003, 7);
                let reader = tokio::spawn(async move {
                    let mut crc = crc32fast::Hasher::new();
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut n_total = 0u64;
                    loop {
                        let n = r.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        n_total += n as u64;
                        crc.update(&buf[..n]);
                    }
                    (crc.finalize(), n_total)
                });
                send(&mut w, &block, total).await;
                let (crc, n) = reader.await.unwrap();
                w.write_all(&crc.to_be_bytes()).await.unwrap();
                w.write_all(&n.to_be_bytes()).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// One client: sends `total` bytes and half-closes, reads `total` bytes plus the trailer.
async fn transfer(gateway: SocketAddr, total: u64) {
    let stream = TcpStream::connect(gateway).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let block = random_block(999_983, 11);
        let crc = send(&mut w, &block, total).await;
        w.shutdown().await.unwrap(); // half-close: we still read the whole reply
        crc
    });
    let got = receive(&mut r, total).await;
    let mut trailer = [0u8; 12];
    r.read_exact(&mut trailer).await.unwrap();
    assert_eq!(
        r.read(&mut [0u8; 1]).await.unwrap(),
        0,
        "clean EOF after the trailer"
    );
    let sent_crc = writer.await.unwrap();

    let mut expected = crc32fast::Hasher::new();
    let block = random_block(1_000_003, 7);
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        expected.update(&block[..n]);
        left -= n as u64;
    }
    assert_eq!(got, expected.finalize(), "backend → client bytes intact");
    assert_eq!(
        u32::from_be_bytes(trailer[..4].try_into().unwrap()),
        sent_crc,
        "client → backend bytes intact"
    );
    assert_eq!(
        u64::from_be_bytes(trailer[4..].try_into().unwrap()),
        total,
        "client → backend byte count"
    );
}

fn yaml(backend: SocketAddr) -> String {
    route_yaml("10000", "bulk", &[(backend, true)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_256_mib_each_way_with_half_close() {
    let backend = checksum_backend("127.0.0.2", 256 * MIB).await;
    let gw = gateway(&yaml(backend), options("127.1.10.30"));
    let addr = gw.wait_bound(tcp(10000)).await;
    transfer(addr, 256 * MIB).await;
    let (metrics, pipes) = (gw.metrics.clone(), gw.pipes.clone());
    gw.shutdown().await;
    assert_eq!(
        count(
            &metrics,
            "dermaga_forwarded_connections_total",
            &[("mode", "splice")]
        ),
        1
    );
    assert_eq!(
        count(
            &metrics,
            "dermaga_forwarded_connections_total",
            &[("mode", "copy")]
        ),
        0
    );
    assert_eq!(
        count(
            &metrics,
            "dermaga_bytes_received_total",
            &[("port", "10000")]
        ),
        256 * MIB
    );
    assert_eq!(
        count(&metrics, "dermaga_bytes_sent_total", &[("port", "10000")]),
        256 * MIB + 12
    );
    assert!(
        (1..=2).contains(&pipes.live()),
        "at most one pipe per direction, back in the pool: {}",
        pipes.live()
    );
    assert_eq!(pipes.in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_fallback_256_mib_each_way_with_half_close() {
    let backend = checksum_backend("127.0.0.2", 256 * MIB).await;
    let mut opts = options("127.1.10.31");
    opts.max_pipes = 0;
    let gw = gateway(&yaml(backend), opts);
    let addr = gw.wait_bound(tcp(10000)).await;
    transfer(addr, 256 * MIB).await;
    let metrics = gw.metrics.clone();
    gw.shutdown().await;
    assert_eq!(
        count(
            &metrics,
            "dermaga_forwarded_connections_total",
            &[("mode", "copy")]
        ),
        1
    );
    assert_eq!(
        count(
            &metrics,
            "dermaga_forwarded_connections_total",
            &[("mode", "splice")]
        ),
        0
    );
    assert_eq!(
        count(
            &metrics,
            "dermaga_bytes_received_total",
            &[("port", "10000")]
        ),
        256 * MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_falls_back_to_copy_per_connection() {
    let backend = checksum_backend("127.0.0.3", 8 * MIB).await;
    let mut opts = options("127.1.10.32");
    opts.max_pipes = 4; // room for two spliced connections
    let gw = gateway(&yaml(backend), opts);
    let addr = gw.wait_bound(tcp(10000)).await;
    let clients: Vec<_> = (0..10)
        .map(|_| tokio::spawn(transfer(addr, 8 * MIB)))
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let (metrics, pipes) = (gw.metrics.clone(), gw.pipes.clone());
    gw.shutdown().await;
    let (spliced, copied) = (
        count(
            &metrics,
            "dermaga_forwarded_connections_total",
            &[("mode", "splice")],
        ),
        count(
            &metrics,
            "dermaga_forwarded_connections_total",
            &[("mode", "copy")],
        ),
    );
    // Pipes are lent per burst: with 10 transfers and pipes for 4 directions the pool runs
    // out, and those bursts are copied instead.
    assert_eq!(spliced + copied, 10);
    assert!(spliced >= 1, "{spliced}");
    assert!(
        pipes
            .stats
            .exhausted
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the pool ran out at times"
    );
    assert!(pipes.live() <= 4, "never more pipes than the bound");
    println!("spliced {spliced}, copied {copied}");
}

fn count(metrics: &dermaga::Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    metric_in(&metrics.encode(), name, labels) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_hold_no_pipes() {
    let echo = Backend::start("127.0.0.3", "idle").await;
    let gw = gateway(
        &(route_yaml("10000", "echo", &[(echo.addr, true)])),
        options("127.1.10.33"),
    );
    let addr = gw.wait_bound(tcp(10000)).await;
    // 20 connections, each with one round trip through the gateway, then left open.
    let mut held = Vec::new();
    for i in 0..20u32 {
        let mut s = tokio::io::BufReader::new(TcpStream::connect(addr).await.unwrap());
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        assert_eq!(line, "idle\n");
        let msg = format!("ping {i}\n");
        s.get_mut().write_all(msg.as_bytes()).await.unwrap();
        line.clear();
        s.read_line(&mut line).await.unwrap();
        assert_eq!(line, msg, "echoed through the gateway");
        held.push(s);
    }
    wait_until("every pipe back in the pool", || gw.pipes.in_use() == 0).await;
    println!(
        "20 idle connections: {} pipes in use, {} in the pool",
        gw.pipes.in_use(),
        gw.pipes.live()
    );
    // They still work after idling without storage.
    for (i, s) in held.iter_mut().enumerate() {
        let msg = format!("again {i}\n");
        s.get_mut().write_all(msg.as_bytes()).await.unwrap();
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        assert_eq!(line, msg);
    }
}
