//! The `dermaga` binary end to end: the quick-start demo, hot reload of the --config file under
//! traffic (add a port, change a port's endpoints, remove a port and drain it), a bad file
//! keeping the last good configuration, and start-up errors.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::Dermaga;
use crate::support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Replaces the file atomically, as `kubectl`-mounted ConfigMaps and editors do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_demo_answers_on_both_ports_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quickstart.yaml");
    let mut d = Dermaga::start(&[
        "--admin-address",
        "127.1.15.51:0",
        "demo",
        "--write-config",
        config.to_str().unwrap(),
    ]);
    d.wait_log(&["listening", "10000/TCP"]);
    d.wait_log(&["listening", "20000/TCP"]);
    for _ in 0..3 {
        assert_eq!(
            greeting("127.0.0.1:10000".parse().unwrap()).await.unwrap(),
            "respon dari port 10000"
        );
        assert_eq!(
            greeting("127.0.0.1:20000".parse().unwrap()).await.unwrap(),
            "respon dari port 20000"
        );
    }
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_traffic_adds_changes_and_drains_ports() {
    let listen = "127.1.15.50";
    let at = |port: u16| -> SocketAddr { format!("{listen}:{port}").parse().unwrap() };
    let a1 = Backend::start("127.0.0.2", "a1").await;
    let a2 = Backend::start("127.0.0.3", "a2").await;
    let b = Backend::start("127.0.0.4", "b").await;
    let c = Backend::start("127.0.0.5", "c").await;
    let v1 = configmap_yaml(&[("10000", "default/svc-a:80"), ("30000", "default/svc-c:80")])
        + &service_yaml("svc-a", 80)
        + &service_yaml("svc-c", 80)
        + &slices_yaml("svc-a", &[(a1.addr, true)])
        + &slices_yaml("svc-c", &[(c.addr, true)]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dermaga.yaml");
    write_config(&config, &v1);
    let mut d = Dermaga::start(&[
        "--config",
        config.to_str().unwrap(),
        "--listen-address",
        listen,
        "--admin-address",
        "127.1.15.50:0",
        "--shutdown-delay",
        "0s",
        "--drain-timeout",
        "3s",
        "--config-poll-interval",
        "100ms",
    ]);
    d.wait_log(&["listening", "10000/TCP"]);
    d.wait_log(&["listening", "30000/TCP"]);

    // A long-lived connection on A that keeps exchanging data through the reload.
    let mut long_a = tokio::io::BufReader::new(TcpStream::connect(at(10000)).await.unwrap());
    let mut line = String::new();
    long_a.read_line(&mut line).await.unwrap();
    assert_eq!(line, "a1\n");
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pinger = tokio::spawn(async move {
        let mut rounds = 0u32;
        loop {
            let msg = format!("ping {rounds}\n");
            long_a
                .get_mut()
                .write_all(msg.as_bytes())
                .await
                .expect("A connection undisturbed");
            let mut echo = String::new();
            long_a
                .read_line(&mut echo)
                .await
                .expect("A connection undisturbed");
            assert_eq!(echo, msg);
            rounds += 1;
            tokio::select! {
                _ = &mut stop_rx => return rounds,
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    });
    // An open connection on C, which is about to be removed.
    let mut open_c = TcpStream::connect(at(30000)).await.unwrap();
    let mut greet = [0u8; 2];
    open_c.read_exact(&mut greet).await.unwrap();
    assert_eq!(&greet, b"c\n");

    // v2: B added, A moved to another endpoint, C removed.
    let v2 = configmap_yaml(&[("10000", "default/svc-a:80"), ("20000", "default/svc-b:80")])
        + &service_yaml("svc-a", 80)
        + &service_yaml("svc-b", 80)
        + &slices_yaml("svc-a", &[(a2.addr, true)])
        + &slices_yaml("svc-b", &[(b.addr, true)]);
    let changed = Instant::now();
    write_config(&config, &v2);
    let b_answered = loop {
        if let Ok(tag) = greeting(at(20000)).await {
            assert_eq!(tag, "b");
            break changed.elapsed();
        }
        assert!(
            changed.elapsed() < Duration::from_secs(20),
            "port B never opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("port B answered {b_answered:?} after the config file changed");
    d.wait_log(&["config reloaded"]);
    assert_eq!(
        greeting(at(10000)).await.unwrap(),
        "a2",
        "new connections on A go to the new endpoint"
    );
    let refused = TcpStream::connect(at(30000)).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "C no longer accepts"
    );

    // C's open connection still works during the drain, and is closed at the drain timeout.
    open_c.write_all(b"x").await.unwrap();
    let mut x = [0u8; 1];
    open_c.read_exact(&mut x).await.unwrap();
    assert_eq!(&x, b"x");
    let closed = tokio::time::timeout(Duration::from_secs(20), open_c.read(&mut x))
        .await
        .expect("closed by the drain timeout");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let drained_after = changed.elapsed();
    assert!(
        drained_after >= Duration::from_millis(2500),
        "not before the 3s drain timeout: {drained_after:?}"
    );
    d.wait_log(&["drain timeout reached", "30000/TCP"]);
    println!("C's open connection closed {drained_after:?} after the change (drain timeout 3s)");

    // A bad file keeps the last good configuration.
    write_config(
        &config,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tcp-services, namespace: dermaga}\ndata: [not, a, map]\n",
    );
    let line = d.wait_log(&[
        "config reload failed",
        "keeping the last good configuration",
    ]);
    assert!(
        line.contains("ConfigMap \\\"tcp-services\\\"") || line.contains("tcp-services"),
        "{line}"
    );
    assert_eq!(greeting(at(10000)).await.unwrap(), "a2");
    assert_eq!(greeting(at(20000)).await.unwrap(), "b");

    let _ = stop_tx.send(());
    let rounds = pinger.await.unwrap();
    assert!(
        rounds > 10,
        "the A connection kept talking through the reload: {rounds} round trips"
    );
    println!("A connection: {rounds} round trips, none failed");
    assert!(d.terminate().success());
}

#[test]
fn start_up_errors_are_clear_and_exit_non_zero() {
    let bin = env!("CARGO_BIN_EXE_dermaga");
    let out = Command::new(bin)
        .args(["--config", "/nonexistent/dermaga.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/dermaga.yaml") && err.contains("No such file"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: eighty}]}\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("document 1: Service \\\"web\\\"")
            || err.contains("document 1: Service \"web\""),
        "{err}"
    );

    let out = Command::new(bin)
        .env_remove("DERMAGA_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));

    let out = Command::new(bin)
        .args(["--drain-timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--drain-timeout"));

    let out = Command::new(bin)
        .args(["--worker-threads", "5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--worker-threads") && stderr.contains("0..=1024"),
        "{stderr}"
    );

    // Several sockets per port need SO_REUSEPORT: said at start, not silently one socket.
    let out = Command::new(bin)
        .args([
            "--config",
            bad.to_str().unwrap(),
            "--reuse-port=false",
            "--udp-sockets-per-port",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--udp-sockets-per-port 2") && stderr.contains("--reuse-port is false"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_unready_first_and_keeps_accepting_for_the_shutdown_delay() {
    let listen = "127.1.15.52";
    let web = Backend::start("127.0.0.2", "web").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dermaga.yaml");
    write_config(&config, &(route_yaml("10000", "web", &[(web.addr, true)])));
    let mut d = Dermaga::start(&[
        "--config",
        config.to_str().unwrap(),
        "--listen-address",
        listen,
        "--admin-address",
        "127.1.15.52:0",
        "--shutdown-delay",
        "1s",
    ]);
    d.wait_log(&["listening", "10000/TCP"]);
    let line = d.wait_log(&["admin server listening"]);
    let admin: SocketAddr = line
        .split("address=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let port: SocketAddr = format!("{listen}:10000").parse().unwrap();

    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    d.wait_log(&["unready"]);
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "draining: shutting down\n"));
    assert_eq!(
        greeting(port).await.unwrap(),
        "web",
        "still accepting during the delay"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
    assert!(TcpStream::connect(port).await.is_err(), "closed after exit");
}

/// Threads of process `pid` named `name` (tokio's multi-threaded runtime: `tokio-rt-worker`).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_choose_the_runtime_and_both_forward() {
    let backend = Backend::start("127.0.0.2", "w").await;
    let yaml = route_yaml("10000", "svc-w", &[(backend.addr, true)]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dermaga.yaml");
    write_config(&config, &yaml);
    // One thread: the single-threaded runtime (no worker threads); three: three workers.
    for (threads, listen, workers) in [("1", "127.1.15.53", 0), ("3", "127.1.15.54", 3)] {
        let mut d = Dermaga::start(&[
            "--config",
            config.to_str().unwrap(),
            "--listen-address",
            listen,
            "--admin-address",
            &format!("{listen}:0"),
            "--shutdown-delay",
            "0s",
            "--worker-threads",
            threads,
        ]);
        d.wait_log(&["listening", "10000/TCP"]);
        let gateway: SocketAddr = format!("{listen}:10000").parse().unwrap();
        for _ in 0..5 {
            assert_eq!(greeting(gateway).await.unwrap(), "w");
        }
        assert_eq!(
            threads_named(d.pid(), "tokio-rt-worker"),
            workers,
            "--worker-threads {threads}"
        );
        // The admin server runs on a thread of its own, beside the data plane's.
        assert_eq!(threads_named(d.pid(), "dermaga-admin"), 1);
        assert!(d.terminate().success());
    }
}

/// The write system call's number, to read `/proc/<pid>/task/<tid>/syscall`.
#[cfg(target_arch = "x86_64")]
const SYS_WRITE: Option<&str> = Some("1");
#[cfg(target_arch = "aarch64")]
const SYS_WRITE: Option<&str> = Some("64");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYS_WRITE: Option<&str> = None;

/// True when the thread of process `pid` named `thread` is blocked in write(2) on `fd`.
fn blocked_writing(pid: u32, thread: &str, fd: u32) -> bool {
    let Some(write) = SYS_WRITE else { return true };
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == thread)
        })
        .any(|t| {
            let call = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
            let mut words = call.split_whitespace();
            words.next() == Some(write) && words.next() == Some(&format!("{fd:#x}"))
        })
}

/// Waits (bounded, 20 s) until the admin server at `admin` says ready.
async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(admin).await.is_ok() && http_get(admin, "/readyz").await.0 == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{admin} never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` connections to `to`, 50 at a time, each sending `hello` and reading until dermaga closes
/// it. Returns how many were closed by dermaga within 10 s (reset or FIN).
async fn flood(to: SocketAddr, n: usize, hello: &'static [u8]) -> usize {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(50));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = limit.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let _permit = permit;
            let closed = async {
                let mut s = TcpStream::connect(to).await?;
                s.write_all(hello).await?;
                s.read_to_end(&mut Vec::new()).await
            };
            tokio::time::timeout(Duration::from_secs(10), closed)
                .await
                .is_ok()
        });
    }
    tasks.join_all().await.into_iter().filter(|&c| c).count()
}

/// Issue 14: with stdout and stderr pipes that nobody reads (both full, their writer threads
/// blocked in write(2)), 1,000 connections with a garbage PROXY header and 1,000 whose endpoint
/// refuses do not stop a healthy port, `/healthz`, or SIGTERM. Debug logging, so that stderr
/// fills even though the per-connection warnings are rate-limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_stdout_and_stderr_never_stop_forwarding_health_or_shutdown() {
    let listen = "127.1.17.1";
    let at = move |port: u16| -> SocketAddr { format!("{listen}:{port}").parse().unwrap() };
    let admin = at(10254);
    let web = Backend::start("127.1.17.2", "web").await;
    let refusing: SocketAddr = REFUSING.parse().unwrap();
    let yaml = configmap_yaml(&[
        ("10000", "default/web:80"),
        ("10001", "default/web:80:PROXY"),
        ("10002", "default/dead:80"),
    ]) + &service_yaml("web", 80)
        + &service_yaml("dead", 80)
        + &slices_yaml("web", &[(web.addr, true)])
        + &slices_yaml("dead", &[(refusing, true)]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dermaga.yaml");
    write_config(&config, &yaml);
    let (delay, grace) = (Duration::from_secs(1), Duration::from_secs(4));
    let mut d = Dermaga::start_unread(
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen-address",
            listen,
            "--admin-address",
            &admin.to_string(),
            "--shutdown-delay",
            "1s",
            "--shutdown-grace",
            "4s",
            "--access-log-buffer",
            "256",
        ],
        "debug,kube_client=off,kube_runtime=off",
    );
    wait_ready(admin).await;
    assert_eq!(greeting(at(10000)).await.unwrap(), "web");

    // 1,000 + 1,000 bad connections while a healthy client keeps connecting.
    let bad = tokio::spawn(async move {
        tokio::join!(
            flood(at(10001), 1000, b"GARBAGE / HTTP/1.1\r\n\r\n"),
            flood(at(10002), 1000, b"hello\n"),
        )
    });
    let mut forwarded = 0;
    while !bad.is_finished() {
        assert_eq!(
            greeting(at(10000)).await.unwrap(),
            "web",
            "after {forwarded}"
        );
        forwarded += 1;
    }
    let (garbage_closed, refused_closed) = bad.await.unwrap();
    assert_eq!((garbage_closed, refused_closed), (1000, 1000));

    // Both pipes are full now: their writer threads are stuck in write(2).
    let pid = d.pid();
    let stuck = |thread, fd| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !blocked_writing(pid, thread, fd) {
            assert!(
                Instant::now() < deadline,
                "{thread} never blocked on fd {fd}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    stuck("log-writer", 2).await;
    stuck("access-log", 1).await;

    // Still: more bad connections, and every healthy one is forwarded, /healthz answers.
    let (g, r) = tokio::join!(
        flood(at(10001), 100, b"GARBAGE\r\n"),
        flood(at(10002), 100, b"hello\n"),
    );
    assert_eq!((g, r), (100, 100));
    for _ in 0..100 {
        assert_eq!(greeting(at(10000)).await.unwrap(), "web");
        forwarded += 1;
    }
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let (_, metrics) = http_get(admin, "/metrics").await;
    let refused = |reason| {
        metric_in(
            &metrics,
            "dermaga_connections_refused_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(refused("proxy_header"), 1100.0);
    assert_eq!(refused("upstream_unavailable"), 1100.0);
    let log_dropped = metric_in(&metrics, "dermaga_log_lines_dropped_total", &[]);
    let access_dropped = metric_in(&metrics, "dermaga_access_log_dropped_total", &[]);
    assert!(access_dropped > 0.0, "the access-log buffer overflowed");

    // SIGTERM ends it within --shutdown-delay + --shutdown-grace, stuck pipes and all.
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let signalled = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < delay + grace,
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    println!(
        "stdout and stderr stuck: {forwarded} healthy connections forwarded, none failed; \
         log lines dropped {log_dropped}, access-log records dropped {access_dropped}; \
         exit {took:?} after SIGTERM (delay {delay:?} + grace {grace:?})"
    );
}

/// CPU time (user + system, in clock ticks) of the threads of `pid` that run connections: all
/// but the admin server's and the two log writers'.
fn data_plane_ticks(pid: u32) -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... : the fields after the closing parenthesis, utime and stime
        // being the 12th and 13th of them.
        let (comm, rest) = stat.split_once(") ").unwrap();
        let comm = comm.split_once(" (").unwrap().1;
        if ["dermaga-admin", "log-writer", "access-log"].contains(&comm) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    ticks
}

/// A backend that sends zeros as fast as its peer reads, until the peer goes away.
async fn firehose(ip: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let block = vec![0u8; 256 * 1024];
                while s.write_all(&block).await.is_ok() {}
            });
        }
    });
    (addr, task)
}

/// Issue 14: `--health-address` serves the probes alone (every other path 404, the admin
/// address keeps all of its paths), and both answer at once while the data plane's only thread
/// is saturated by bulk transfers: the admin thread is not theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_on_their_own_address_answer_while_the_data_plane_is_saturated() {
    let listen = "127.1.15.1";
    let (source, _source) = firehose("127.1.15.2").await;
    let yaml = route_yaml("10000", "bulk", &[(source, true)]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dermaga.yaml");
    write_config(&config, &yaml);
    let mut d = Dermaga::start(&[
        "--config",
        config.to_str().unwrap(),
        "--listen-address",
        listen,
        "--admin-address",
        &format!("{listen}:0"),
        "--health-address",
        "127.1.15.3:0",
        "--worker-threads",
        "1",
        "--shutdown-delay",
        "0s",
        "--shutdown-grace",
        "1s",
    ]);
    let admin = d.admin_address();
    let probes = d.logged_address("probes listening");
    wait_ready(probes).await;
    for path in ["/metrics", "/routes"] {
        assert_eq!(
            http_get(probes, path).await.0,
            404,
            "{path} on the probes' address"
        );
        assert_eq!(
            http_get(admin, path).await.0,
            200,
            "{path} on the admin address"
        );
    }
    assert_eq!(http_get(admin, "/healthz").await.0, 200);

    // Eight bulk downloads through the gateway, read and thrown away as fast as possible.
    let stop = tokio_util::sync::CancellationToken::new();
    let gateway: SocketAddr = format!("{listen}:10000").parse().unwrap();
    let mut downloads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let stop = stop.clone();
        let mut s = TcpStream::connect(gateway).await.unwrap();
        downloads.spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut moved = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return moved,
                    n = s.read(&mut buf) => match n {
                        Ok(n) if n > 0 => moved += n as u64,
                        _ => return moved,
                    },
                }
            }
        });
    }
    // Wait until the bytes flow, then probe as the kubelet does (deploy/base: timeoutSeconds 2).
    let flowing = Instant::now();
    let ticks_before = loop {
        let (_, metrics) = http_get(admin, "/metrics").await;
        if metric_in(&metrics, "dermaga_connections_active", &[]) >= 8.0 {
            break data_plane_ticks(d.pid());
        }
        assert!(
            flowing.elapsed() < Duration::from_secs(20),
            "downloads never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let window = Instant::now();
    let mut took = Vec::new();
    for round in 0..60 {
        for path in ["/healthz", "/readyz"] {
            let asked = Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(2), http_get(probes, path)).await;
            took.push(asked.elapsed());
            assert_eq!(
                answer.map(|(status, _)| status).ok(),
                Some(200),
                "{path} (round {round}) within the probe's 2s"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let seconds = window.elapsed().as_secs_f64();
    let ticks = data_plane_ticks(d.pid()) - ticks_before;
    stop.cancel();
    let moved: u64 = downloads.join_all().await.into_iter().sum();
    // /proc counts in USER_HZ, 100 per second on Linux.
    let busy = ticks as f64 / 100.0 / seconds;
    took.sort();
    println!(
        "data plane (1 thread) busy {:.0}% of a core over {seconds:.1}s moving {} MiB; \
         {} probes answered, median {:?}, max {:?}",
        busy * 100.0,
        moved >> 20,
        took.len(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    // The overload was real: the data plane's thread did little else than forward.
    assert!(busy > 0.3, "data plane only {:.0}% busy", busy * 100.0);
    assert!(d.terminate().success());
}

#[test]
fn a_bad_enumerated_flag_value_exits_2_naming_the_flag_and_the_allowed_values() {
    let bin = env!("CARGO_BIN_EXE_dermaga");
    let allowed_levels = "[possible values: error, warn, info, debug, trace]";
    // (arguments, environment, the flag, its allowed values)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &["--log-level", "verbose"],
            &[],
            "--log-level",
            allowed_levels,
        ),
        (
            &["--log-level", "warning"],
            &[],
            "--log-level",
            allowed_levels,
        ),
        (&["--log-level", ""], &[], "--log-level", allowed_levels),
        (
            &[],
            &[("DERMAGA_LOG_LEVEL", "verbose")],
            "--log-level",
            allowed_levels,
        ),
        (
            &["--log-format", "logfmt"],
            &[],
            "--log-format",
            "[possible values: text, json]",
        ),
        (
            &["--access-log", "yes"],
            &[],
            "--access-log",
            "[possible values: json, text, off]",
        ),
        (
            &["--reuse-port=maybe"],
            &[],
            "--reuse-port",
            "[possible values: true, false]",
        ),
    ];
    for (args, env, flag, allowed) in cases {
        let out = Command::new(bin)
            .args(*args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(allowed),
            "{args:?} {env:?}: {stderr}"
        );
    }
}

/// SIGHUP reads and applies the --config file at once (the poll interval here is an hour, so
/// nothing else could), and the process goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_and_the_process_goes_on() {
    let listen = "127.1.17.5";
    let port: SocketAddr = format!("{listen}:10000").parse().unwrap();
    let a = Backend::start("127.1.17.3", "a").await;
    let b = Backend::start("127.1.17.4", "b").await;
    let config_for = |backend: &Backend| route_yaml("10000", "web", &[(backend.addr, true)]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dermaga.yaml");
    write_config(&config, &config_for(&a));
    let mut d = Dermaga::start(&[
        "--config",
        config.to_str().unwrap(),
        "--listen-address",
        listen,
        "--admin-address",
        &format!("{listen}:0"),
        "--shutdown-delay",
        "0s",
        "--config-poll-interval",
        "1h",
    ]);
    d.wait_log(&["listening", "10000/TCP"]);
    assert_eq!(greeting(port).await.unwrap(), "a");

    write_config(&config, &config_for(&b));
    let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    d.wait_log(&[&format!("SIGHUP: reloading --config {}", config.display())]);
    d.wait_log(&["config reloaded", "requested=true"]);
    assert_eq!(greeting(port).await.unwrap(), "b");
    assert!(d.child.try_wait().unwrap().is_none(), "still running");
    assert!(d.terminate().success());
}
