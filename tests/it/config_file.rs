//! The `--config` file is not taken at face value, through the binary with real files and
//! sockets: a FIFO or a device behind the path is refused without being read (bounded time and
//! memory), an over-limit file is refused, a file written in place in two halves is applied
//! only whole, and a file that was deleted and comes back says it is valid again. Through it
//! all, the last good configuration keeps forwarding.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::process::Dermaga;
use crate::support::*;

/// Replaces `path` atomically with `yaml`.
/// Points the symlink `link` at `target`, atomically (as a ConfigMap volume's `..data` swap).
fn swap_link(link: &Path, target: &Path) {
    let tmp = link.with_extension("new-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo (coreutils) is installed");
    assert!(made.success());
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn one_port(backend: SocketAddr) -> String {
    route_yaml("10000", "web", &[(backend, true)])
}

async fn reloads(admin: SocketAddr, result: &str) -> f64 {
    let (_, body) = http_get(admin, "/metrics").await;
    metric_in(&body, "dermaga_config_reloads_total", &[("result", result)])
}

fn start(config: &Path, ip: &str, extra: &[&str]) -> Dermaga {
    let admin = format!("{ip}:0");
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--listen-address",
        ip,
        "--admin-address",
        &admin,
        "--shutdown-delay",
        "0s",
    ];
    args.extend_from_slice(extra);
    Dermaga::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_a_fifo_or_an_oversized_file_is_refused_and_the_last_good_one_serves() {
    let ip = "127.1.16.2";
    let port: SocketAddr = format!("{ip}:10000").parse().unwrap();
    let web = Backend::start("127.0.14.2", "web").await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, one_port(web.addr)).unwrap();
    let link = dir.path().join("routes.yaml");
    swap_link(&link, &good);
    let mut d = start(
        &link,
        ip,
        &[
            "--config-poll-interval",
            "100ms",
            "--config-max-bytes",
            "4KiB",
        ],
    );
    d.wait_log(&["listening", "10000/TCP"]);
    let admin = d.admin_address();
    assert_eq!(greeting(port).await.unwrap(), "web");
    let before = rss_kib(d.pid());

    // /dev/zero behind the link: refused from its metadata, never read.
    let swapped = Instant::now();
    swap_link(&link, Path::new("/dev/zero"));
    d.wait_log(&[
        "config reload failed",
        "routes.yaml is a character device, not a regular file",
    ]);
    let refused_in = swapped.elapsed();
    let after = rss_kib(d.pid());
    println!(
        "/dev/zero: refused {refused_in:?} after the swap; RSS {before} KiB before, {after} KiB after"
    );
    assert!(refused_in < Duration::from_secs(5), "{refused_in:?}");
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    assert_eq!(greeting(port).await.unwrap(), "web");

    // A FIFO with no writer: an open would block for ever; it is refused without one.
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    swap_link(&link, &fifo);
    d.wait_log(&["config reload failed", "routes.yaml is a FIFO"]);
    assert_eq!(greeting(port).await.unwrap(), "web");

    // Over --config-max-bytes: refused before it is read.
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, one_port(web.addr) + &"# padding\n".repeat(500)).unwrap();
    swap_link(&link, &big);
    d.wait_log(&[
        "config reload failed",
        "bytes, more than --config-max-bytes 4096; it was not read",
    ]);
    assert_eq!(greeting(port).await.unwrap(), "web");

    // Good again: said so, and counted.
    swap_link(&link, &good);
    d.wait_log(&["is valid again; applied"]);
    assert_eq!(reloads(admin, "failure").await, 3.0);
    assert_eq!(reloads(admin, "success").await, 2.0);
    assert!(d.terminate().success());
}

#[test]
fn at_start_a_fifo_or_an_oversized_file_stops_dermaga_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    mkfifo(&fifo);
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#\n".repeat(1024)).unwrap();
    for (path, message) in [
        (&fifo, "fifo.yaml is a FIFO, not a regular file"),
        (
            &big,
            "big.yaml is 2048 bytes, more than --config-max-bytes 1024",
        ),
    ] {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dermaga"))
            .args(["--config", path.to_str().unwrap()])
            .args([
                "--config-max-bytes",
                "1KiB",
                "--admin-address",
                "127.1.16.3:0",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("dermaga still running 10 s after start with {path:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(
            err.contains("cannot start with --config") && err.contains(message),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_place_in_two_halves_is_applied_only_whole() {
    let ip = "127.1.16.4";
    let at = move |p: u16| -> SocketAddr { format!("{ip}:{p}").parse().unwrap() };
    let web = Backend::start("127.0.14.4", "web").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    write_config(&config, &one_port(web.addr));
    let mut d = start(&config, ip, &["--config-poll-interval", "1s"]);
    d.wait_log(&["listening", "10000/TCP"]);
    let admin = d.admin_address();

    // Traffic on port 10000 for the whole write.
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = tokio_util::sync::CancellationToken::new();
    let client = tokio::spawn({
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        async move {
            while !stop.is_cancelled() {
                match greeting(at(10000)).await {
                    Ok(tag) if tag == "web" => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    // The new version adds port 10001. Its first half is a valid file on its own (the map and
    // the Service, no EndpointSlice): applied, it would leave port 10000 without endpoints.
    let first = configmap_yaml(&[("10000", "default/web:80"), ("10001", "default/web:80")])
        + &service_yaml("web", 80);
    let second = slices_yaml("web", &[(web.addr, true)]);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&config).unwrap();
        f.write_all(first.as_bytes()).unwrap();
        f.flush().unwrap();
        // The writer pauses mid-file, as a slow editor or `cat > file` would.
        std::thread::sleep(Duration::from_millis(200));
        f.write_all(second.as_bytes()).unwrap();
    }
    d.wait_log(&["config reloaded"]);
    d.wait_log(&["route added", "10001/TCP", "endpoints=1"]);
    d.wait_log(&["listening", "10001/TCP"]);
    assert_eq!(greeting(at(10001)).await.unwrap(), "web");
    stop.cancel();
    client.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("during the two-part write: {ok} connections served, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0);
    // One load at start and one reload: the half file was never read.
    assert_eq!(reloads(admin, "success").await, 2.0);
    assert_eq!(reloads(admin, "failure").await, 0.0);
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_that_comes_back_unchanged_is_valid_again() {
    let ip = "127.1.16.5";
    let port: SocketAddr = format!("{ip}:10000").parse().unwrap();
    let web = Backend::start("127.0.14.5", "web").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    let text = one_port(web.addr);
    write_config(&config, &text);
    let mut d = start(&config, ip, &["--config-poll-interval", "100ms"]);
    d.wait_log(&["listening", "10000/TCP"]);
    let admin = d.admin_address();

    std::fs::remove_file(&config).unwrap();
    d.wait_log(&[
        "config reload failed; keeping the last good configuration",
        "routes.yaml: No such file or directory",
    ]);
    assert_eq!(greeting(port).await.unwrap(), "web");

    write_config(&config, &text);
    let line = d.wait_log(&["is valid again; applied"]);
    assert!(
        line.contains(&format!("--config {} is valid again", config.display())),
        "{line}"
    );
    assert_eq!(greeting(port).await.unwrap(), "web");
    assert_eq!(reloads(admin, "failure").await, 1.0);
    assert_eq!(reloads(admin, "success").await, 2.0);
    assert!(d.terminate().success());
}
