//! Shutdown and restart handover with the real binary over real sockets: a successor process
//! binding the same port (SO_REUSEPORT) takes every new connection while the old one drains
//! (scenario S4: no client connection fails, an open transfer finishes), the shutdown grace
//! closes what is still open and the process exits 0, a second signal exits at once, UDP flows
//! keep relaying after the listeners close, and `--reuse-port=false` keeps the port exclusive.
//!
//! Addresses: gateways on 127.1.6.1–127.1.6.40, backends on 127.0.6.x.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::process::Dermaga;
use crate::support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Replaces the file atomically.
/// Port 10000 → Service `web` with `endpoints`.
fn web_config(dir: &Path, endpoints: &[SocketAddr]) -> String {
    let ready: Vec<(SocketAddr, bool)> = endpoints.iter().map(|e| (*e, true)).collect();
    let path = dir.join("dermaga.yaml");
    write_config(
        &path,
        &(configmap_yaml(&[("10000", "default/web:80")])
            + &service_yaml("web", 80)
            + &slices_yaml("web", &ready)),
    );
    path.to_str().unwrap().to_owned()
}

/// Starts dermaga with `args` and waits until port 10000 listens; returns it and its admin address.
fn start(args: &[&str]) -> (Dermaga, SocketAddr) {
    let mut d = Dermaga::start(args);
    d.wait_log(&["listening", "10000/TCP"]);
    let admin = d.admin_address();
    (d, admin)
}

/// Waits (bounded, 10 s) until /readyz answers 200.
async fn ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(admin, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "{admin} never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(d: &Dermaga, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// Waits (bounded) for the process to exit.
async fn exited(d: &mut Dermaga, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "dermaga did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One short connection: connect, read the tag, send a line, read it back, close.
async fn short_exchange(addr: SocketAddr, n: u64) -> Result<String, String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut stream = BufReader::new(stream);
        let mut tag = String::new();
        match stream.read_line(&mut tag).await {
            Ok(0) => return Err("closed before the tag".to_owned()),
            Err(e) => return Err(format!("tag: {e}")),
            Ok(_) => {}
        }
        let msg = format!("ping {n}\n");
        stream
            .get_mut()
            .write_all(msg.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut echo = String::new();
        stream
            .read_line(&mut echo)
            .await
            .map_err(|e| format!("echo: {e}"))?;
        if echo != msg {
            return Err(format!("echo {echo:?}, expected {msg:?}"));
        }
        Ok(tag.trim_end().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in 5s".to_owned()))
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Streams `total` bytes in `chunk`-sized pieces with `pause` between them and checks that the
/// echo is the same bytes; returns when the whole echo came back.
async fn slow_transfer(stream: TcpStream, total: usize, chunk: usize, pause: Duration) {
    let data = random_block(total, 7);
    let mut stream = BufReader::new(stream);
    let mut tag = String::new();
    stream.read_line(&mut tag).await.unwrap();
    assert!(tag.starts_with("web-"), "{tag}");
    let (mut rd, mut wr) = stream.into_inner().into_split();
    let expected = data.clone();
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; expected.len()];
        rd.read_exact(&mut got).await.expect("the whole echo");
        assert!(got == expected, "the echo is the bytes sent");
    });
    for piece in data.chunks(chunk) {
        wr.write_all(piece).await.expect("the transfer is not cut");
        tokio::time::sleep(pause).await;
    }
    tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("echo in time")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_a_successor_takes_over_the_port_and_no_connection_fails() {
    const CLIENTS: u64 = 12;
    let listen = "127.1.6.1";
    let port: SocketAddr = format!("{listen}:10000").parse().unwrap();
    let a = Backend::start("127.0.6.1", "web-a").await;
    let b = Backend::start("127.0.6.2", "web-b").await;
    let dir = tempfile::tempdir().unwrap();
    let config = web_config(dir.path(), &[a.addr, b.addr]);
    let common = [
        "--config",
        config.as_str(),
        "--listen-address",
        listen,
        "--shutdown-delay",
        "1s",
        "--shutdown-grace",
        "20s",
        "--access-log",
        "off",
    ];
    let (mut old, old_admin) = start(&[&common[..], &["--admin-address", "127.1.6.2:0"]].concat());
    ready(old_admin).await;

    // The load: short connections, continuously, until told to stop.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (tally, stop) = (tally.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut n = 0u64;
            // Bounded: at most 100,000 exchanges per client.
            while !stop.load(Ordering::Relaxed) && n < 100_000 {
                match short_exchange(port, c * 1_000_000 + n).await {
                    Ok(tag) => {
                        assert!(tag == "web-a" || tag == "web-b", "{tag}");
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(e);
                    }
                }
                n += 1;
            }
            errors
        }));
    }
    wait_until("the load runs", || tally.ok.load(Ordering::Relaxed) >= 200).await;

    // A long transfer through the old process, started before its SIGTERM: 4 MiB over ~3 s,
    // past the moment its listener closes (1 s after the signal).
    let long = TcpStream::connect(port).await.unwrap();
    let transfer = tokio::spawn(async move {
        slow_transfer(long, 4 << 20, 64 << 10, Duration::from_millis(45)).await;
        Instant::now()
    });

    // The successor binds the same port; from then on it takes every new connection.
    let (mut new, new_admin) = start(&[&common[..], &["--admin-address", "127.1.6.3:0"]].concat());
    ready(new_admin).await;
    let accepted = |text: &str| metric_in(text, "dermaga_connections_accepted_total", &[]);
    let old_before = accepted(&http_get(old_admin, "/metrics").await.1);
    let new_before = accepted(&http_get(new_admin, "/metrics").await.1);
    let ok_before = tally.ok.load(Ordering::Relaxed);
    wait_until("more connections", || {
        tally.ok.load(Ordering::Relaxed) >= ok_before + 200
    })
    .await;
    let old_after = accepted(&http_get(old_admin, "/metrics").await.1);
    let new_after = accepted(&http_get(new_admin, "/metrics").await.1);
    println!(
        "while both run: old accepted {} more, new accepted {} more",
        old_after - old_before,
        new_after - new_before
    );
    assert!(
        old_after - old_before <= CLIENTS as f64,
        "the successor takes the new connections ({} went to the old process)",
        old_after - old_before
    );
    assert!(new_after - new_before >= 200.0);

    // SIGTERM the old process; the load goes on until it has exited.
    let signalled = Instant::now();
    signal(&old, nix::sys::signal::Signal::SIGTERM);
    old.wait_log(&["unready"]);
    assert_eq!(http_get(old_admin, "/readyz").await.0, 503);
    let status = exited(&mut old, Duration::from_secs(30)).await;
    let old_exit = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    let ok_at_exit = tally.ok.load(Ordering::Relaxed);
    wait_until("connections after the old process exited", || {
        tally.ok.load(Ordering::Relaxed) >= ok_at_exit + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for c in clients {
        errors.extend(c.await.unwrap());
    }
    let transfer_done = transfer.await.unwrap();
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    println!(
        "S4 handover: {ok} connections succeeded, {failed} failed ({CLIENTS} clients); old process exited {old_exit:?} after SIGTERM; the 4 MiB transfer ended {:?} after SIGTERM",
        transfer_done.duration_since(signalled)
    );
    assert_eq!(failed, 0, "failed connections: {errors:?}");
    assert!(
        transfer_done.duration_since(signalled) > Duration::from_secs(1),
        "the transfer outlived the old listener"
    );
    assert!(
        transfer_done.duration_since(signalled) <= old_exit,
        "the old process waited for the transfer"
    );
    assert!(new.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_closes_what_is_still_open_and_the_process_exits_zero() {
    let listen = "127.1.6.10";
    let port: SocketAddr = format!("{listen}:10000").parse().unwrap();
    let web = Backend::start("127.0.6.10", "web").await;
    let dir = tempfile::tempdir().unwrap();
    let config = web_config(dir.path(), &[web.addr]);
    let (mut d, admin) = start(&[
        "--config",
        &config,
        "--listen-address",
        listen,
        "--admin-address",
        "127.1.6.11:0",
        "--shutdown-delay",
        "300ms",
        "--shutdown-grace",
        "1s",
    ]);
    let mut open = TcpStream::connect(port).await.unwrap();
    let mut greet = [0u8; 4];
    open.read_exact(&mut greet).await.unwrap();
    assert_eq!(&greet, b"web\n");

    let signalled = Instant::now();
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    d.wait_log(&["unready"]);
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "draining: shutting down\n"));
    // Loose bound: /readyz is 503 from the first signal on; the bound only catches a process
    // that waits for something before turning unready (a loaded machine may be slow to answer).
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "unready at once"
    );

    // Listeners closed after the delay; the open connection still works in the grace.
    d.wait_log(&["shutting down; draining open connections", "10000/TCP"]);
    assert!(
        TcpStream::connect(port).await.is_err(),
        "no longer accepting"
    );
    open.write_all(b"x").await.unwrap();
    let mut x = [0u8; 1];
    open.read_exact(&mut x).await.unwrap();
    assert_eq!(&x, b"x");

    // At the grace it is closed, and the process exits 0.
    let closed = tokio::time::timeout(Duration::from_secs(10), open.read(&mut x))
        .await
        .expect("closed at the grace");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let closed_after = signalled.elapsed();
    d.wait_log(&["shutdown grace reached", "10000/TCP"]);
    let status = exited(&mut d, Duration::from_secs(10)).await;
    let exit_after = signalled.elapsed();
    println!(
        "open connection closed {closed_after:?} after SIGTERM, exit after {exit_after:?} (delay 300ms + grace 1s)"
    );
    assert!(status.success(), "{status:?}");
    assert!(
        closed_after >= Duration::from_millis(1200),
        "not before the grace: {closed_after:?}"
    );
    assert!(exit_after < Duration::from_secs(5), "{exit_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let listen = "127.1.6.12";
    let web = Backend::start("127.0.6.12", "web").await;
    let dir = tempfile::tempdir().unwrap();
    let config = web_config(dir.path(), &[web.addr]);
    let (mut d, _) = start(&[
        "--config",
        &config,
        "--listen-address",
        listen,
        "--admin-address",
        "127.1.6.13:0",
        "--shutdown-delay",
        "60s",
        "--shutdown-grace",
        "60s",
    ]);
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    d.wait_log(&["unready"]);
    let second = Instant::now();
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    let status = exited(&mut d, Duration::from_secs(5)).await;
    println!(
        "exited {:?} after the second SIGTERM: {status:?}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    assert!(second.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reuse_port_off_a_second_process_cannot_bind_the_port() {
    let listen = "127.1.6.20";
    let port: SocketAddr = format!("{listen}:10000").parse().unwrap();
    let web = Backend::start("127.0.6.20", "web").await;
    let dir = tempfile::tempdir().unwrap();
    let config = web_config(dir.path(), &[web.addr]);
    let args = |admin: &'static str| {
        vec![
            "--config".to_owned(),
            config.clone(),
            "--listen-address".to_owned(),
            listen.to_owned(),
            "--admin-address".to_owned(),
            admin.to_owned(),
            "--reuse-port=false".to_owned(),
        ]
    };
    let first_args = args("127.1.6.21:0");
    let (mut first, _) = start(&first_args.iter().map(String::as_str).collect::<Vec<_>>());
    let second_args = args("127.1.6.22:0");
    let mut second = Dermaga::start(&second_args.iter().map(String::as_str).collect::<Vec<_>>());
    let line = second.wait_log(&["cannot listen on this port", "10000/TCP"]);
    assert!(line.contains("in use"), "{line}");
    let admin = second.admin_address();
    let (_, routes) = http_get(admin, "/routes").await;
    assert!(routes.contains("cannot listen on port 10000"), "{routes}");
    assert!(second.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(
        greeting(port).await.unwrap(),
        "web",
        "the first still serves"
    );
    let status = second.terminate();
    assert!(
        status.success(),
        "{status:?}: {}",
        second.wait_log(&["exiting"])
    );
    assert!(first.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flows_keep_relaying_after_the_port_stops_taking_new_ones() {
    let listen = "127.1.6.30";
    let port: SocketAddr = format!("{listen}:5353").parse().unwrap();
    let dns = udp_backend("127.0.6.30", "dns").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dermaga.yaml");
    write_config(
        &path,
        &(configmap_yaml(&[])
            + &named_configmap_yaml("udp-services", &[("5353", "default/dns:53")])
            + &udp_service_yaml("dns", 53)
            + &udp_slices_yaml("dns", &[(dns, true)])),
    );
    let mut d = Dermaga::start(&[
        "--config",
        path.to_str().unwrap(),
        "--udp-services-configmap",
        "dermaga/udp-services",
        "--listen-address",
        listen,
        "--admin-address",
        "127.1.6.31:0",
        "--shutdown-delay",
        "0s",
        "--shutdown-grace",
        "20s",
        "--udp-idle-timeout",
        "1500ms",
    ]);
    d.wait_log(&["listening", "5353/UDP"]);
    let flow = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(udp_ask(&flow, port, b"q1").await, b"dns:q1");

    let signalled = Instant::now();
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    d.wait_log(&["no new UDP flows", "5353/UDP"]);
    // The open flow goes on, both ways.
    assert_eq!(udp_ask_once(&flow, port, b"q2").await, b"dns:q2");
    // A new client gets nothing.
    let newcomer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    newcomer.send_to(b"new", port).await.unwrap();
    let mut buf = [0u8; 64];
    let nothing =
        tokio::time::timeout(Duration::from_millis(300), newcomer.recv_from(&mut buf)).await;
    assert!(
        nothing.is_err(),
        "no new flow while shutting down: {nothing:?}"
    );
    assert_eq!(udp_ask_once(&flow, port, b"q3").await, b"dns:q3");
    // Once the flow is idle the process exits, long before the 20 s grace.
    let status = exited(&mut d, Duration::from_secs(10)).await;
    println!(
        "exited {:?} after SIGTERM (UDP idle timeout 1.5s)",
        signalled.elapsed()
    );
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(8));
}
