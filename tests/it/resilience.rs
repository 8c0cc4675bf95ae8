//! Failure injection (scenarios S3 and S4, and the health rules behind them), through real
//! sockets on loopback: an endpoint killed under load, a rolling update of the endpoints under
//! load, every endpoint ejected (the panic rule), active checks, and health state across table
//! rebuilds. Each test counts what succeeded and what failed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::{self, *};
use dermaga::fixture::{Fixture, endpoint};
use dermaga::{CheckState, Protocol};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A tagged echo backend that can be killed: its listener closes and every connection open on
/// it at that instant is reset. It counts the connections it reset.
struct Pod {
    addr: SocketAddr,
    killed: tokio_util::sync::CancellationToken,
    open: Arc<AtomicU64>,
    reset_at_kill: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Pod {
    async fn start(addr: SocketAddr, tag: &str) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let killed = tokio_util::sync::CancellationToken::new();
        let (open, reset_at_kill, served) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let greeting = format!("{tag}\n");
        let task = {
            let (killed, open, reset, served) = (
                killed.clone(),
                open.clone(),
                reset_at_kill.clone(),
                served.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = killed.cancelled() => {
                            // Connections already in the accept queue were open too: a raw
                            // accept until WouldBlock sees every one the kernel has queued.
                            while let Ok((s, _)) = socket2::SockRef::from(&listener).accept() {
                                reset.fetch_add(1, Ordering::SeqCst);
                                let _ = s.set_linger(Some(Duration::ZERO));
                            }
                            return;
                        }
                        a = listener.accept() => a,
                    };
                    let Ok((s, _)) = accepted else { continue };
                    open.fetch_add(1, Ordering::SeqCst);
                    let (greeting, open, reset, served) = (
                        greeting.clone(),
                        open.clone(),
                        reset.clone(),
                        served.clone(),
                    );
                    let kill = killed.clone();
                    tokio::spawn(async move {
                        let mut s = s;
                        let echo = async {
                            s.write_all(greeting.as_bytes()).await?;
                            let mut buf = [0u8; 4096];
                            loop {
                                let n = s.read(&mut buf).await?;
                                if n == 0 {
                                    return Ok::<_, std::io::Error>(());
                                }
                                s.write_all(&buf[..n]).await?;
                            }
                        };
                        let killed = tokio::select! {
                            _ = echo => false,
                            _ = kill.cancelled() => true,
                        };
                        if killed {
                            reset.fetch_add(1, Ordering::SeqCst);
                            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        } else {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Self {
            addr,
            killed,
            open,
            reset_at_kill,
            served,
            task,
        }
    }

    /// Closes the listener and resets every open connection; returns how many it reset.
    async fn kill(&self) -> u64 {
        self.killed.cancel();
        wait_until("the killed pod's connections reset", || {
            self.open.load(Ordering::SeqCst) == 0 && self.task.is_finished()
        })
        .await;
        self.reset_at_kill.load(Ordering::SeqCst)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.killed.cancel();
        self.task.abort();
    }
}

/// Gateway options whose ejections outlast any run of these tests (600 s).
fn long_ejections(listen: &str) -> dermaga::GatewayOptions {
    let mut opts = options(listen);
    opts.health.base_ejection = Duration::from_secs(600);
    opts.health.max_ejection = Duration::from_secs(600);
    opts
}

fn at(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 0)
}

/// One short connection: read the greeting, send a line, read its echo, close.
async fn short_connection(addr: SocketAddr) -> Result<String, String> {
    let run = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut stream = BufReader::new(stream);
        let mut tag = String::new();
        if stream
            .read_line(&mut tag)
            .await
            .map_err(|e| format!("greeting: {e}"))?
            == 0
        {
            return Err("closed before the greeting".into());
        }
        stream
            .write_all(b"ping\n")
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut echo = String::new();
        stream
            .read_line(&mut echo)
            .await
            .map_err(|e| format!("echo: {e}"))?;
        if echo != "ping\n" {
            return Err(format!("echo was {echo:?}"));
        }
        Ok(tag.trim_end().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap_or_else(|_| Err("no answer within 10s".into()))
}

#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// `clients` concurrent clients making `per_client` short connections each, or (with
/// `per_client == 0`) until `stop` turns true (bounded: at most 60 s).
async fn load(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    tally: Arc<Tally>,
    stop: watch::Receiver<bool>,
) {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (tally, stop) = (tally.clone(), stop.clone());
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let mut done = 0;
                while (per_client == 0 || done < per_client)
                    && !*stop.borrow()
                    && tokio::time::Instant::now() < deadline
                {
                    match short_connection(addr).await {
                        Ok(_) => tally.ok.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            eprintln!("client connection failed: {e}");
                            tally.failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    done += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The slice `name` of `service` with one endpoint at `addr` (its pod also named `name`).
fn slice(service: &str, name: &str, addr: SocketAddr, state: PodState) -> String {
    let pod = endpoint(addr.ip()).pod("default", name);
    let pod = match state {
        PodState::Ready => pod.ready(true),
        PodState::Terminating => pod.draining(),
    };
    support::slice(service, name, addr.port(), Protocol::Tcp, pod).yaml()
}

#[derive(Clone, Copy)]
enum PodState {
    Ready,
    /// Not ready, still serving, terminating: a pod in its shutdown delay.
    Terminating,
}
const READY: PodState = PodState::Ready;
const TERMINATING: PodState = PodState::Terminating;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_an_endpoint_killed_under_load_costs_only_its_open_connections() {
    let a = Pod::start(at("127.0.4.2"), "a").await;
    let b = Pod::start(at("127.0.4.3"), "b").await;
    let base = configmap_yaml(&[("10000", "default/api:80")]) + &service_yaml("api", 80);
    let gw = gateway(
        &(base + &slice("api", "a", a.addr, READY) + &slice("api", "b", b.addr, READY)),
        long_ejections("127.1.4.1"),
    );
    let addr = gw.wait_bound(tcp(10000)).await;

    // The field report's `ab -c 50 -n 20000`; b is killed after half of them.
    let tally = Arc::new(Tally::default());
    let (_stop, never) = watch::channel(false);
    let load = tokio::spawn(load(addr, 50, 400, tally.clone(), never));
    wait_until("half of the connections done", || {
        tally.ok.load(Ordering::SeqCst) + tally.failed.load(Ordering::SeqCst) >= 10_000
    })
    .await;
    let open_at_kill = b.kill().await;
    tokio::time::timeout(Duration::from_secs(120), load)
        .await
        .expect("load finishes")
        .unwrap();

    let (ok, failed) = (
        tally.ok.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
    );
    let refused_after = metric(
        &gw,
        "dermaga_connections_refused_total",
        &[("reason", "upstream_unavailable")],
    );
    let failed_connects = metric(
        &gw,
        "dermaga_upstream_connect_failures_total",
        &[("endpoint", &b.addr.to_string())],
    );
    println!(
        "S3: {ok} ok, {failed} failed of 20000; connections open on b when it was killed: {open_at_kill}; connects refused by b afterwards (each retried on a): {failed_connects}; a served {}, b served {}",
        a.served.load(Ordering::SeqCst),
        b.served.load(Ordering::SeqCst)
    );
    assert_eq!(ok + failed, 20_000);
    assert!(
        failed <= open_at_kill,
        "only connections open on the killed endpoint may fail: {failed} failed, {open_at_kill} were open"
    );
    assert_eq!(
        refused_after, 0.0,
        "no client was refused for want of an endpoint"
    );
    assert!(
        failed_connects <= 3.0 + 49.0,
        "b is ejected after 3 refusals: {failed_connects} refused connects"
    );
    assert_ne!(
        gw.health.view(b.addr, std::time::Instant::now()).state,
        "healthy"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_rolling_update_of_the_endpoints_under_load_fails_nothing() {
    let old = Pod::start(at("127.0.4.4"), "old").await;
    let new = Pod::start(at("127.0.4.5"), "new").await;
    let base = configmap_yaml(&[("10000", "default/api:80")]) + &service_yaml("api", 80);
    let gw = gateway(
        &(base.clone() + &slice("api", "old", old.addr, READY)),
        options("127.1.4.2"),
    );
    let addr = gw.wait_bound(tcp(10000)).await;

    // A long connection to the old pod, open across the whole update.
    let mut long = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut tag = String::new();
    long.read_line(&mut tag).await.unwrap();
    assert_eq!(tag, "old\n");

    let tally = Arc::new(Tally::default());
    let (stop, stopped) = watch::channel(false);
    let load = tokio::spawn(load(addr, 8, 0, tally.clone(), stopped));
    let progress = |n: u64| {
        let tally = tally.clone();
        async move {
            let target = tally.ok.load(Ordering::SeqCst) + n;
            wait_until("load makes progress", || {
                tally.ok.load(Ordering::SeqCst) >= target
            })
            .await;
        }
    };
    progress(200).await;
    // 1. The new pod becomes ready.
    apply(
        &gw,
        &(base.clone()
            + &slice("api", "old", old.addr, READY)
            + &slice("api", "new", new.addr, READY)),
    );
    progress(500).await;
    // 2. The old pod is terminating (still serving): no new connections go to it.
    apply(
        &gw,
        &(base.clone()
            + &slice("api", "old", old.addr, TERMINATING)
            + &slice("api", "new", new.addr, READY)),
    );
    wait_until("short connections to the old pod have ended", || {
        old.open.load(Ordering::SeqCst) == 1
    })
    .await;
    progress(200).await;
    let old_served = old.served.load(Ordering::SeqCst);
    progress(500).await;
    assert_eq!(
        old.served.load(Ordering::SeqCst),
        old_served,
        "no new connection went to the terminating pod"
    );
    // 3. The old endpoint is removed; 4. its pod stops listening.
    apply(&gw, &(base.clone() + &slice("api", "new", new.addr, READY)));
    progress(500).await;
    // The long connection still works after its endpoint was marked terminating and removed.
    long.write_all(b"still there\n").await.unwrap();
    let mut echo = String::new();
    long.read_line(&mut echo).await.unwrap();
    assert_eq!(echo, "still there\n");
    drop(long);
    wait_until("the long connection ended", || {
        old.open.load(Ordering::SeqCst) == 0
    })
    .await;
    let reset = old.kill().await;
    progress(500).await;
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(30), load)
        .await
        .expect("load stops")
        .unwrap();

    let (ok, failed) = (
        tally.ok.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
    );
    println!(
        "S4 rolling update: {ok} ok, {failed} failed; old served {}, new served {}; reset at the old pod's exit: {reset}",
        old.served.load(Ordering::SeqCst),
        new.served.load(Ordering::SeqCst)
    );
    assert_eq!(failed, 0, "no connection failed during the rolling update");
    assert_eq!(reset, 0, "nothing was open on the old pod when it stopped");
    assert!(ok >= 2_200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_is_ejected_all_are_tried() {
    // Two endpoints where nothing listens yet (ports reserved by binding, then released).
    let x = TcpListener::bind(at("127.0.4.6"))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let y = TcpListener::bind(at("127.0.4.7"))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = configmap_yaml(&[("10000", "default/api:80")])
        + &service_yaml("api", 80)
        + &slice("api", "x", x, READY)
        + &slice("api", "y", y, READY);
    let gw = gateway(&yaml, long_ejections("127.1.4.3"));
    let addr = gw.wait_bound(tcp(10000)).await;
    for _ in 0..3 {
        // Each connection tries both, and both refuse.
        assert!(short_connection(addr).await.is_err());
    }
    assert_eq!(
        gw.health.view(x, std::time::Instant::now()).state,
        "ejected"
    );
    assert_eq!(
        gw.health.view(y, std::time::Instant::now()).state,
        "ejected"
    );

    let _x = Pod::start(x, "x").await;
    // Without the panic rule the port would refuse for the ejection's 10 s.
    assert_eq!(short_connection(addr).await.as_deref(), Ok("x"));
    assert!(
        metric(
            &gw,
            "dermaga_connections_all_endpoints_unhealthy_total",
            &[("port", "10000")]
        ) >= 1.0
    );
    assert_eq!(
        gw.health.view(x, std::time::Instant::now()).state,
        "healthy",
        "the success ended x's ejection"
    );
    for _ in 0..5 {
        assert_eq!(short_connection(addr).await.as_deref(), Ok("x"));
    }
    gw.shutdown().await;
}

async fn routes_json(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(admin, "/routes").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

fn endpoint_health(routes: &serde_json::Value, addr: SocketAddr) -> serde_json::Value {
    routes["routes"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["addr"] == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} in {routes}"))["health"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_dead_endpoint_out_before_any_client_meets_it() {
    let a = Pod::start(at("127.0.4.8"), "a").await;
    let b = Pod::start(at("127.0.4.9"), "b").await;
    let b_addr = b.addr;
    let yaml = configmap_yaml(&[
        ("10000", "default/api:80"),
        ("10000.health-check-interval", "100ms"),
    ]) + &service_yaml("api", 80)
        + &slice("api", "a", a.addr, READY)
        + &slice("api", "b", b.addr, READY);
    let gw = gateway(&yaml, options("127.1.4.4"));
    let addr = gw.wait_bound(tcp(10000)).await;
    let (admin, stop_admin) = start_admin(&gw, "127.1.4.4").await;
    let health = gw.health.clone();
    wait_until("b checked healthy", || {
        health.view(b_addr, std::time::Instant::now()).check == CheckState::Healthy
    })
    .await;
    assert_eq!(
        endpoint_health(&routes_json(admin).await, b_addr)["check"],
        "healthy"
    );

    b.kill().await;
    wait_until("b checked unhealthy (3 failed probes)", || {
        health.view(b_addr, std::time::Instant::now()).check == CheckState::Unhealthy
    })
    .await;
    let view = endpoint_health(&routes_json(admin).await, b_addr);
    assert_eq!(view["state"], "unhealthy", "{view}");
    assert!(
        view["check_error"].as_str().unwrap().contains("refused"),
        "{view}"
    );

    for _ in 0..20 {
        assert_eq!(short_connection(addr).await.as_deref(), Ok("a"));
    }
    let client_met_b = metric(
        &gw,
        "dermaga_upstream_connect_failures_total",
        &[("endpoint", &b_addr.to_string())],
    );
    assert_eq!(
        client_met_b, 0.0,
        "no client connection tried the dead endpoint"
    );
    let failed_probes = metric(
        &gw,
        "dermaga_health_checks_total",
        &[("endpoint", &b_addr.to_string()), ("result", "failure")],
    );
    assert!(failed_probes >= 3.0, "{failed_probes}");
    let text = gw.metrics.encode();
    assert!(
        text.contains(&format!(
            "dermaga_endpoint_check_unhealthy{{endpoint=\"{b_addr}\"}} 1"
        )),
        "{text}"
    );

    // Back on the same address: healthy after two passing probes.
    let _b = Pod::start(b_addr, "b2").await;
    wait_until("b healthy again", || {
        health.view(b_addr, std::time::Instant::now()).check == CheckState::Healthy
    })
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        seen.insert(short_connection(addr).await.unwrap());
    }
    assert!(seen.contains("b2"), "{seen:?}");
    stop_admin.cancel();
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_survives_table_rebuilds_and_is_forgotten_with_the_endpoint() {
    let a = Pod::start(at("127.0.4.10"), "a").await;
    let dead = TcpListener::bind(at("127.0.4.11"))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let base = configmap_yaml(&[("10000", "default/api:80")]) + &service_yaml("api", 80);
    let gw = gateway(
        &(base.clone() + &slice("api", "a", a.addr, READY) + &slice("api", "dead", dead, READY)),
        long_ejections("127.1.4.5"),
    );
    let addr = gw.wait_bound(tcp(10000)).await;
    for _ in 0..6 {
        assert_eq!(short_connection(addr).await.as_deref(), Ok("a"));
    }
    assert_eq!(
        gw.health.view(dead, std::time::Instant::now()).state,
        "ejected"
    );

    // A rebuild that keeps the endpoint (another endpoint joins): still ejected.
    let c = Pod::start(at("127.0.4.12"), "c").await;
    let generation = gw.publisher.snapshot().load().generation;
    apply(
        &gw,
        &(base.clone()
            + &slice("api", "a", a.addr, READY)
            + &slice("api", "dead", dead, READY)
            + &slice("api", "c", c.addr, READY)),
    );
    let snapshot = gw.publisher.snapshot().clone();
    wait_until("new table", || snapshot.load().generation > generation).await;
    assert_eq!(
        gw.health.view(dead, std::time::Instant::now()).state,
        "ejected"
    );
    let before = metric(
        &gw,
        "dermaga_upstream_connect_failures_total",
        &[("endpoint", &dead.to_string())],
    );
    for _ in 0..9 {
        assert!(short_connection(addr).await.is_ok());
    }
    let after = metric(
        &gw,
        "dermaga_upstream_connect_failures_total",
        &[("endpoint", &dead.to_string())],
    );
    assert_eq!(
        before, after,
        "the ejected endpoint was not tried after the rebuild"
    );

    // Removed from the Service: its health is forgotten.
    apply(
        &gw,
        &(base + &slice("api", "a", a.addr, READY) + &slice("api", "c", c.addr, READY)),
    );
    let health = gw.health.clone();
    wait_until("forgotten", || health.known() == 0).await;
    gw.shutdown().await;
}

#[test]
fn health_flags_parse_with_their_defaults_and_reject_a_too_short_interval() {
    use clap::Parser;
    let cli = dermaga::Cli::try_parse_from(["dermaga"]).unwrap();
    assert_eq!(cli.run.eject_after_failures, 3);
    assert_eq!(cli.run.ejection_time, Duration::from_secs(10));
    assert!(cli.run.health_check_interval.is_zero());
    let err = dermaga::Cli::try_parse_from(["dermaga", "--health-check-interval", "5ms"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 100ms"), "{err}");
}

/// S3's hard case: an endpoint's listener closes while connections wait in its accept queue.
/// Connected from dermaga's side, they are reset by the kernel before any byte moved either way:
/// nothing reached the backend, nothing reached the client, so each is tried on the other
/// endpoint (`retry-before-data`, on by default) and no client fails. With the option off they
/// fail, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_connections_queued_on_a_closing_listener_are_tried_elsewhere() {
    for (retry, listen, dead_ip) in [
        (true, "127.1.4.6", "127.0.4.20"),
        (false, "127.1.4.7", "127.0.4.21"),
    ] {
        let good = Pod::start(at("127.0.4.22"), "good").await;
        // A listener that never accepts: the kernel completes handshakes into its queue.
        let dead = std::net::TcpListener::bind(at(dead_ip)).unwrap();
        let dead_addr = dead.local_addr().unwrap();
        let mut yaml = configmap_yaml(&[("10000", "default/api:80")]) + &service_yaml("api", 80);
        if !retry {
            yaml = yaml.replace("data:\n", "data:\n  \"10000.retry-before-data\": \"off\"\n");
        }
        yaml += &slice("api", "good", good.addr, READY);
        yaml += &slice("api", "dead", dead_addr, READY);
        let gw = gateway(&yaml, long_ejections(listen));
        let addr = gw.wait_bound(tcp(10000)).await;
        const CLIENTS: usize = 20;
        let tally = Arc::new(Tally::default());
        let (_stop, never) = watch::channel(false);
        let load = tokio::spawn(load(addr, CLIENTS, 1, tally.clone(), never));
        // Round robin: half the connections went to `good` and are done; the other half wait
        // in `dead`'s accept queue.
        wait_until("the queued half waiting", || {
            tally.ok.load(Ordering::SeqCst) == (CLIENTS / 2) as u64
                && metric(&gw, "dermaga_connections_active", &[("port", "10000")])
                    == (CLIENTS / 2) as f64
        })
        .await;
        drop(dead);
        tokio::time::timeout(Duration::from_secs(30), load)
            .await
            .expect("load finishes")
            .unwrap();
        let (ok, failed) = (
            tally.ok.load(Ordering::SeqCst),
            tally.failed.load(Ordering::SeqCst),
        );
        let closed = metric(
            &gw,
            "dermaga_upstream_connect_failures_total",
            &[
                ("endpoint", &dead_addr.to_string()),
                ("reason", "closed_before_data"),
            ],
        );
        println!(
            "retry-before-data {}: {ok} ok, {failed} failed of {CLIENTS}; {closed} closed before data",
            if retry { "on" } else { "off" }
        );
        if retry {
            assert_eq!((ok, failed), (CLIENTS as u64, 0));
            assert_eq!(closed, (CLIENTS / 2) as f64);
        } else {
            assert_eq!((ok, failed), ((CLIENTS / 2) as u64, (CLIENTS / 2) as u64));
            assert_eq!(closed, 0.0);
        }
        gw.shutdown().await;
    }
}
