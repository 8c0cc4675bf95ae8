//! The `dermaga` binary end to end: the quick-start demo, hot reload of the --config file under
//! traffic (add a port, change a port's endpoints, remove a port and drain it), a bad file
//! keeping the last good configuration, and start-up errors.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::process::Dermaga;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Replaces the file atomically, as `kubectl`-mounted ConfigMaps and editors do.
fn write_config(path: &Path, yaml: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_demo_answers_on_both_ports_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quickstart.yaml");
    let mut d = Dermaga::start(&[
        "--admin-address",
        "127.1.0.51:0",
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
    let listen = "127.1.0.50";
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
        "127.1.0.50:0",
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_unready_first_and_keeps_accepting_for_the_shutdown_delay() {
    let listen = "127.1.0.52";
    let web = Backend::start("127.0.0.2", "web").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dermaga.yaml");
    write_config(
        &config,
        &(configmap_yaml(&[("10000", "default/web:80")])
            + &service_yaml("web", 80)
            + &slices_yaml("web", &[(web.addr, true)])),
    );
    let mut d = Dermaga::start(&[
        "--config",
        config.to_str().unwrap(),
        "--listen-address",
        listen,
        "--admin-address",
        "127.1.0.52:0",
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
    let yaml = configmap_yaml(&[("10000", "default/svc-w:80")])
        + &service_yaml("svc-w", 80)
        + &slices_yaml("svc-w", &[(backend.addr, true)]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dermaga.yaml");
    write_config(&config, &yaml);
    // One thread: the single-threaded runtime (no worker threads); three: three workers.
    for (threads, listen, workers) in [("1", "127.1.0.53", 0), ("3", "127.1.0.54", 3)] {
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
