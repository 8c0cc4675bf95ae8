//! The Kubernetes provider end to end against the real thing: kube-apiserver v1.37 and etcd
//! (built from their Go modules by `testenv/build.sh`), `deploy/base` applied with `kubectl apply
//! -k`, and the `dermaga` binary authenticated as the `dermaga` ServiceAccount, so the real RBAC
//! authorizer judges every call it makes. Each test runs in a network namespace of its own
//! (`crate::support::netns`): the API server, etcd, the gateway and the tagged backends, which live on
//! 10.233.x.y because EndpointSlice validation rejects loopback addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::kube_api::{GATEWAY_USER, KubeApi};
use crate::support::netns::NetNs;
use crate::support::process::Dermaga;
use crate::support::*;
use dermaga::Protocol;
use dermaga::fixture::{self, Fixture};
use serde_json::{Value, json};

/// Runs a test's body in a fresh network namespace.
fn in_netns<F: std::future::Future>(test: F) -> F::Output {
    NetNs::create().block_on(test)
}

/// A real API server with `deploy/base` installed (its example port map deleted).
struct Cluster {
    api: KubeApi,
    /// A kubeconfig with a token of ServiceAccount dermaga/dermaga.
    gateway_kubeconfig: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        let api = KubeApi::start();
        println!(
            "kube-apiserver ready {:.2} s after start",
            api.ready_after.as_secs_f64()
        );
        api.install_deploy_base();
        let gateway_kubeconfig = api.service_account_kubeconfig("dermaga", "dermaga");
        Self {
            api,
            gateway_kubeconfig,
        }
    }

    /// Starts dermaga on `listen` as the ServiceAccount, watching `dermaga/tcp-services`.
    fn dermaga(&self, listen: &str, extra: &[&str]) -> Dermaga {
        let admin = format!("{listen}:0");
        let mut args = vec![
            "--kubeconfig",
            self.gateway_kubeconfig.to_str().unwrap(),
            "--tcp-services-configmap",
            "dermaga/tcp-services",
            "--listen-address",
            listen,
            "--admin-address",
            &admin,
            "--shutdown-delay",
            "0s",
            "--drain-timeout",
            "2s",
        ];
        args.extend_from_slice(extra);
        Dermaga::start(&args)
    }

    /// `kubectl create configmap tcp-services -n dermaga --from-literal=K=V ...`.
    fn create_map(&self, entries: &[(&str, &str)]) {
        let literals: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("--from-literal={k}={v}"))
            .collect();
        let mut args = vec!["create", "configmap", "tcp-services", "-n", "dermaga"];
        args.extend(literals.iter().map(String::as_str));
        self.api.kubectl(&args);
    }

    /// `kubectl patch` of the port map adding (or changing) one entry.
    fn patch_map(&self, port: u16, value: &str) {
        let patch = json!({"data": {port.to_string(): value}}).to_string();
        self.api.kubectl(&[
            "patch",
            "configmap",
            "tcp-services",
            "-n",
            "dermaga",
            "-p",
            &patch,
        ]);
    }

    /// Service `name` (namespace default) with one port named `main`, and one EndpointSlice per
    /// `(slice name, endpoints)`.
    fn service_with_slices(&self, name: &str, port: u16, slices: &[(&str, &[(SocketAddr, bool)])]) {
        let mut items = vec![service(name, port)];
        items.extend(slices.iter().map(|(s, eps)| slice(s, name, eps)));
        self.api
            .apply(&json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string());
    }
}

/// A Service with one TCP port named `main`.
fn service(name: &str, port: u16) -> Value {
    fixture::service("default", name)
        .port(fixture::port(port).named("main").protocol(Protocol::Tcp))
        .json()
}

/// One EndpointSlice named `name` for `service` with the given endpoints (pods `<name>-pod-<i>`),
/// its port `main` the first endpoint's.
fn slice(name: &str, service: &str, endpoints: &[(SocketAddr, bool)]) -> Value {
    let port = endpoints.first().map_or(1, |(a, _)| a.port());
    let pods = endpoints.iter().enumerate().map(|(i, (addr, ready))| {
        fixture::endpoint(addr.ip())
            .ready(*ready)
            .pod("default", &format!("{name}-pod-{i}"))
    });
    fixture::endpoint_slice("default", name, service)
        .port(fixture::port(port).named("main").protocol(Protocol::Tcp))
        .endpoints(pods)
        .json()
}

/// Waits (bounded) for /readyz 200.
async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(admin, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn routes(admin: SocketAddr) -> Value {
    let (status, body) = http_get(admin, "/routes").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Waits (bounded) until /routes satisfies `cond`.
async fn wait_routes(admin: SocketAddr, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = routes(admin).await;
        if cond(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; /routes: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn route(routes: &Value, port: u16) -> Option<&Value> {
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["port"] == port)
}

fn endpoint_addrs(routes: &Value, port: u16) -> Vec<String> {
    route(routes, port).map_or(Vec::new(), |r| {
        r["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["active"] == true)
            .map(|e| e["addr"].as_str().unwrap().to_owned())
            .collect()
    })
}

fn at(listen: &str, port: u16) -> SocketAddr {
    format!("{listen}:{port}").parse().unwrap()
}

/// Every request the gateway's ServiceAccount made so far is one
/// `dermaga::API_ACCESS` declares, and the first `allowed` of
/// them (all when `None`) were allowed by the real authorizer. (A restarted API server serves
/// requests before its RBAC caches are filled and refuses them meanwhile: tests that restart it
/// pass the count of requests made before.) Returns the number of requests.
fn assert_gateway_calls_allowed_and_declared(api: &KubeApi, allowed: Option<usize>) -> usize {
    use dermaga::API_ACCESS;
    let requests = api.requests_of(GATEWAY_USER);
    assert!(
        !requests.is_empty(),
        "the audit log shows the gateway's calls"
    );
    let allowed = allowed.unwrap_or(requests.len());
    for (i, r) in requests.iter().enumerate() {
        assert!(
            i >= allowed || r.code < 400,
            "the API server refused a call of the gateway: {r:?}"
        );
        assert!(
            API_ACCESS.iter().any(|a| a.group == r.group
                && a.resource == r.resource
                && a.verbs.contains(&r.verb.as_str())),
            "an undeclared call: {r:?}"
        );
    }
    requests.len()
}

#[test]
fn kubectl_edits_drive_the_gateway() {
    in_netns(async {
        let c = Cluster::start();
        let a = Backend::start("10.233.1.2", "a").await;
        let a2 = Backend::start("10.233.1.4", "a2").await;
        let b = Backend::start("10.233.1.3", "b").await;
        let listen = "127.1.2.1";
        c.service_with_slices(
            "a",
            10000,
            &[("a-1", &[(a.addr, true)]), ("a-2", &[(a2.addr, true)])],
        );
        c.service_with_slices("b", 10000, &[("b-1", &[(b.addr, true)])]);
        c.create_map(&[("10000", "default/a:10000")]);

        let mut d = c.dermaga(listen, &[]);
        let admin = d.admin_address();
        d.wait_log(&["listening", "10000/TCP"]);
        wait_ready(admin).await;
        let mut tags = std::collections::BTreeSet::new();
        for _ in 0..4 {
            tags.insert(greeting(at(listen, 10000)).await.unwrap());
        }
        assert_eq!(tags, ["a".to_string(), "a2".to_string()].into());

        // A new port by `kubectl patch`.
        let patched = Instant::now();
        c.patch_map(20000, "default/b:10000");
        d.wait_log(&["listening", "20000/TCP"]);
        println!(
            "kubectl patch returned -> port 20000 listening: {:.1} ms",
            patched.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(greeting(at(listen, 20000)).await.unwrap(), "b");

        // The EndpointSlice holding a2's ready endpoint is deleted: no new connection goes there.
        c.api.kubectl(&["delete", "endpointslice", "a-2"]);
        wait_routes(admin, "a2 gone", |r| {
            endpoint_addrs(r, 10000) == vec![a.addr.to_string()]
        })
        .await;
        for _ in 0..6 {
            assert_eq!(greeting(at(listen, 10000)).await.unwrap(), "a");
        }

        // An endpoint turning unready through `kubectl apply` of the changed slice.
        c.api
            .apply(&slice("b-1", "b", &[(b.addr, false)]).to_string());
        wait_routes(admin, "b unready", |r| endpoint_addrs(r, 20000).is_empty()).await;
        assert!(
            greeting(at(listen, 20000)).await.is_err(),
            "no ready endpoint: refused at once"
        );

        // Deleting the ConfigMap closes its ports.
        c.api
            .kubectl(&["delete", "configmap", "tcp-services", "-n", "dermaga"]);
        d.wait_log(&["route removed", "10000/TCP"]);
        wait_until("port 10000 closed", || {
            std::net::TcpStream::connect_timeout(&at(listen, 10000), Duration::from_secs(1))
                .is_err()
        })
        .await;
        // ...and recreating it opens them again.
        c.create_map(&[("10000", "default/a:10000")]);
        wait_until("port 10000 open again", || {
            std::net::TcpStream::connect_timeout(&at(listen, 10000), Duration::from_secs(1)).is_ok()
        })
        .await;
        assert_eq!(greeting(at(listen, 10000)).await.unwrap(), "a");
        assert!(d.terminate().success());
        let calls = assert_gateway_calls_allowed_and_declared(&c.api, None);
        println!("the gateway made {calls} API calls, every one allowed by RBAC");
    })
}

/// Clients that each open a connection, read the greeting, close; counting failures.
struct Traffic {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(to: SocketAddr, clients: usize, expect: &'static [&'static str]) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
                tokio::spawn(async move {
                    // Bounded: at most 20,000 connections per client.
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match greeting(to).await {
                            Ok(tag) if expect.contains(&tag.as_str()) => {
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            ok,
            failed,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A cluster with Services a (10.233.1.2) and b (10.233.1.3), port 10000 mapped to a, and
/// dermaga running on `listen` with traffic flowing.
async fn serving(listen: &str) -> (Cluster, Backend, Backend, Dermaga, SocketAddr) {
    let c = Cluster::start();
    let a = Backend::start("10.233.1.2", "a").await;
    let b = Backend::start("10.233.1.3", "b").await;
    c.service_with_slices("a", 10000, &[("a-1", &[(a.addr, true)])]);
    c.service_with_slices("b", 10000, &[("b-1", &[(b.addr, true)])]);
    c.create_map(&[("10000", "default/a:10000")]);
    let mut d = c.dermaga(listen, &[]);
    let admin = d.admin_address();
    d.wait_log(&["listening", "10000/TCP"]);
    wait_ready(admin).await;
    (c, a, b, d, admin)
}

#[test]
fn api_server_stopped_under_traffic_fails_no_connection_and_catches_up_after() {
    in_netns(async {
        let listen = "127.1.2.2";
        let (c, _a, _b, mut d, admin) = serving(listen).await;
        // The change is written through a second API server on the same etcd while the first,
        // the one dermaga watches, is stopped (SIGSTOP: its connections stay open, silent).
        let second = c.api.second_server();
        let traffic = Traffic::start(at(listen, 10000), 4, &["a"]);
        c.api.pause();
        second.kubectl(&[
            "patch",
            "configmap",
            "tcp-services",
            "-n",
            "dermaga",
            "-p",
            r#"{"data":{"20000":"default/b:10000"}}"#,
        ]);
        tokio::time::sleep(Duration::from_secs(10)).await; // the outage itself
        assert_eq!(
            http_get(admin, "/readyz").await.0,
            200,
            "still ready while the API server is stopped"
        );
        c.api.resume();
        let resumed = Instant::now();
        d.wait_log(&["listening", "20000/TCP"]);
        println!(
            "API server stopped 10 s: the change made meanwhile applied {:.0} ms after SIGCONT",
            resumed.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(greeting(at(listen, 20000)).await.unwrap(), "b");
        let (ok, failed) = traffic.finish().await;
        println!("API server stopped: {ok} connections, {failed} failed");
        assert!(ok > 100, "traffic ran during the outage ({ok})");
        assert_eq!(failed, 0);
        assert!(d.terminate().success());
    })
}

#[test]
fn api_server_killed_history_compacted_and_restarted_relists_into_the_right_table() {
    in_netns(async {
        let listen = "127.1.2.3";
        let (c, a, b, mut d, admin) = serving(listen).await;
        let mut c = c;
        let a2 = Backend::start("10.233.1.4", "a2").await;
        c.api
            .apply(&slice("a-2", "a", &[(a2.addr, true)]).to_string());
        wait_routes(admin, "a2 in", |r| endpoint_addrs(r, 10000).len() == 2).await;
        let second = c.api.second_server();
        let traffic = Traffic::start(at(listen, 10000), 4, &["a", "a2"]);

        // The API server dermaga watches is killed: watches cut, connects refused.
        let before_kill = c.api.requests_of(GATEWAY_USER).len();
        let killed = Instant::now();
        c.api.kill();
        d.wait_log(&["Kubernetes API watch failed"]);
        // Meanwhile the world changes through the other server, and etcd forgets the history.
        second.kubectl(&["delete", "endpointslice", "a-2"]);
        second.kubectl(&[
            "patch",
            "configmap",
            "tcp-services",
            "-n",
            "dermaga",
            "-p",
            r#"{"data":{"20000":"default/b:10000"}}"#,
        ]);
        let revision = c.api.compact();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let restarted = Instant::now();
        c.api.restart();
        println!(
            "API server down {:.1} s (etcd compacted at revision {revision}); ready again {:.2} s after its restart",
            killed.elapsed().as_secs_f64(),
            c.api.ready_after.as_secs_f64()
        );
        let r = wait_routes(admin, "the re-listed table", |r| {
            endpoint_addrs(r, 10000) == vec![a.addr.to_string()]
                && endpoint_addrs(r, 20000) == vec![b.addr.to_string()]
        })
        .await;
        println!(
            "restart began -> the re-listed table in force: {:.0} ms",
            restarted.elapsed().as_secs_f64() * 1000.0
        );
        report_refusals_after(&c.api, before_kill);
        assert!(r["problems"].as_array().unwrap().is_empty(), "{r:#}");
        d.wait_log(&["resource version expired (410 Gone)"]);
        d.wait_log(&["Kubernetes API watch recovered"]);

        // A later change still arrives on the new watches.
        c.api.kubectl(&["delete", "endpointslice", "b-1"]);
        wait_routes(admin, "b-1 gone after the restart", |r| {
            endpoint_addrs(r, 20000).is_empty()
        })
        .await;
        let (ok, failed) = traffic.finish().await;
        println!("API server killed and restarted: {ok} connections, {failed} failed");
        assert!(ok > 100, "traffic ran during the outage ({ok})");
        assert_eq!(failed, 0);
        let metrics = http_get(admin, "/metrics").await.1;
        assert!(
            metric_in(
                &metrics,
                "dermaga_kube_watch_errors_total",
                &[("resource", "configmaps")]
            ) >= 1.0
        );
        assert!(d.terminate().success());
        assert_gateway_calls_allowed_and_declared(&c.api, Some(before_kill));
    })
}

/// Prints the gateway's calls the API server refused after request number `from`.
fn report_refusals_after(api: &KubeApi, from: usize) {
    let refused: Vec<String> = api.requests_of(GATEWAY_USER)[from..]
        .iter()
        .filter(|r| r.code >= 400)
        .map(|r| format!("{} {} {}", r.code, r.verb, r.resource))
        .collect();
    println!(
        "calls refused by the restarted API server before it was ready: {}",
        refused.len()
    );
}

#[test]
fn etcd_stopped_under_the_api_server_fails_no_connection() {
    in_netns(async {
        let listen = "127.1.2.6";
        let (c, _a, _b, mut d, admin) = serving(listen).await;
        let traffic = Traffic::start(at(listen, 10000), 4, &["a"]);
        c.api.pause_etcd();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            http_get(admin, "/readyz").await.0,
            200,
            "still ready while etcd is stopped"
        );
        c.api.resume_etcd();
        let resumed = Instant::now();
        // The API server works again (bounded by kubectl's own retries) and so does the watch.
        c.patch_map(20000, "default/b:10000");
        d.wait_log(&["listening", "20000/TCP"]);
        println!(
            "etcd stopped 10 s: a change after SIGCONT applied {:.0} ms after it",
            resumed.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(greeting(at(listen, 20000)).await.unwrap(), "b");
        let (ok, failed) = traffic.finish().await;
        println!("etcd stopped: {ok} connections, {failed} failed");
        assert!(ok > 100, "traffic ran during the outage ({ok})");
        assert_eq!(failed, 0);
        assert!(d.terminate().success());
    })
}

#[test]
fn a_bad_entry_is_recorded_as_exactly_one_event_naming_key_and_value() {
    in_netns(async {
        let mut c = Cluster::start();
        let a = Backend::start("10.233.1.2", "a").await;
        let listen = "127.1.2.4";
        c.service_with_slices("a", 10000, &[("a-1", &[(a.addr, true)])]);
        // Another process holds port 10005 on the listen address.
        let _squatter = std::net::TcpListener::bind(at(listen, 10005)).unwrap();
        c.create_map(&[
            ("10000", "default/a:10000"),
            ("10001", "default/a"),
            ("10002", "default/nosuch:80"),
            ("10005", "default/a:10000"),
            ("10006", "default/a:http:PROXY:EXTRA"),
        ]);
        let mut d = c.dermaga(listen, &[]);
        d.wait_log(&["listening", "10000/TCP"]);
        wait_until("four events", || c.api.events("dermaga").len() >= 4).await;

        // Changes that do not touch the problems, and a re-list, record nothing more.
        c.api
            .apply(&slice("a-1", "a", &[(a.addr, true), (a.addr, true)]).to_string());
        c.patch_map(10003, "default/a:10000");
        d.wait_log(&["listening", "10003/TCP"]);
        let before_kill = c.api.requests_of(GATEWAY_USER).len();
        c.api.kill();
        c.api.compact();
        c.api.restart();
        c.patch_map(10004, "default/a:10000");
        d.wait_log(&["listening", "10004/TCP"]);

        let events = c.api.events("dermaga");
        let bad: Vec<&Value> = events
            .iter()
            .filter(|e| e["note"].as_str().unwrap_or("").contains("\"10001\""))
            .collect();
        assert_eq!(bad.len(), 1, "{events:#?}");
        let e = bad[0];
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["reason"], "InvalidEntry");
        assert_eq!(e["regarding"]["kind"], "ConfigMap");
        assert_eq!(e["regarding"]["name"], "tcp-services");
        assert!(
            e["note"].as_str().unwrap().contains("\"default/a\""),
            "{e:#}"
        );
        let missing: Vec<&Value> = events
            .iter()
            .filter(|e| e["reason"] == "ServiceNotFound")
            .collect();
        assert_eq!(missing.len(), 1, "{events:#?}");
        assert!(
            missing[0]["note"]
                .as_str()
                .unwrap()
                .contains("default/nosuch")
        );
        let bind: Vec<&Value> = events
            .iter()
            .filter(|e| e["reason"] == "PortBindFailed")
            .collect();
        assert_eq!(bind.len(), 1, "{events:#?}");
        assert!(bind[0]["note"].as_str().unwrap().contains("10005/TCP"));
        // A second problem of the same kind is an Event of its own, with its own message.
        let other: Vec<&Value> = events
            .iter()
            .filter(|e| e["reason"] == "InvalidEntry")
            .collect();
        assert_eq!(other.len(), 2, "{events:#?}");
        assert!(
            other
                .iter()
                .any(|e| e["note"].as_str().unwrap().contains("\"10006\""))
        );
        assert_eq!(events.len(), 4, "{events:#?}");
        // Where a user looks: `kubectl describe` (core/v1 Events, the same objects).
        let described = c
            .api
            .kubectl(&["describe", "configmap", "tcp-services", "-n", "dermaga"]);
        for reason in ["InvalidEntry", "ServiceNotFound", "PortBindFailed"] {
            assert!(
                described.contains(reason),
                "{reason} missing in:\n{described}"
            );
        }
        assert!(d.terminate().success());
        report_refusals_after(&c.api, before_kill);
        assert_gateway_calls_allowed_and_declared(&c.api, Some(before_kill));
    })
}

#[test]
fn readyz_is_503_until_every_initial_list_is_in() {
    in_netns(async {
        let mut c = Cluster::start();
        let listen = "127.1.2.5";
        c.api.kill();
        let mut d = c.dermaga(listen, &[]);
        let admin = d.admin_address();
        d.wait_log(&["Kubernetes API watch failed"]);
        let (status, body) = http_get(admin, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (503, "not synced: no configuration loaded yet\n")
        );
        c.api.restart();
        d.wait_log(&["initial lists complete"]);
        wait_ready(admin).await;
        // The map does not exist: ready, nothing mapped, and the problem is visible.
        let r = routes(admin).await;
        assert_eq!(r["routes"].as_array().unwrap().len(), 0);
        assert!(
            r["problems"][0]
                .as_str()
                .unwrap()
                .contains("dermaga/tcp-services does not exist"),
            "{r:#}"
        );
        assert!(d.terminate().success());
    })
}

#[test]
fn rbac_allows_exactly_what_the_gateway_needs() {
    use dermaga::{API_ACCESS, AccessScope};
    in_netns(async {
        let c = Cluster::start();
        let sa = format!("--as={GATEWAY_USER}");
        let can = |args: &[&str]| -> bool {
            let mut all = vec!["auth", "can-i", sa.as_str()];
            all.extend_from_slice(args);
            // `kubectl auth can-i` exits 1 for "no".
            match c.api.try_kubectl(&all) {
                Ok(out) => out.trim() == "yes",
                Err(out) => {
                    assert!(out.trim().starts_with("no"), "{out}");
                    false
                }
            }
        };
        // Every declared call, asked of the real authorizer.
        let mut allowed = 0;
        for access in API_ACCESS {
            let resource = if access.group.is_empty() {
                access.resource.to_owned()
            } else {
                format!("{}.{}", access.resource, access.group)
            };
            for verb in access.verbs {
                let targets: Vec<String> = match access.scope {
                    AccessScope::PortMapsByName => vec![
                        format!("{resource}/tcp-services"),
                        format!("{resource}/udp-services"),
                    ],
                    _ => vec![resource.clone()],
                };
                let namespaces: &[&str] = match access.scope {
                    AccessScope::Cluster => &["default", "kube-system", "some-team"],
                    _ => &["dermaga"],
                };
                for target in &targets {
                    for ns in namespaces {
                        assert!(
                            can(&[verb, target, "-n", ns]),
                            "the ServiceAccount may not {verb} {target} in {ns}"
                        );
                        allowed += 1;
                    }
                }
            }
        }
        // And nothing more: no Secret anywhere, no other ConfigMap, no write of what it reads.
        for (verb, target, ns) in [
            ("get", "secrets", "dermaga"),
            ("list", "secrets", "dermaga"),
            ("list", "secrets", "default"),
            ("watch", "secrets", "kube-system"),
            ("get", "configmaps/tcp-services", "dermaga"),
            ("list", "configmaps", "dermaga"),
            ("list", "configmaps/other", "dermaga"),
            ("list", "configmaps/tcp-services", "default"),
            ("update", "configmaps/tcp-services", "dermaga"),
            ("patch", "services", "default"),
            ("create", "endpointslices.discovery.k8s.io", "default"),
            ("create", "events.events.k8s.io", "default"),
            ("list", "pods", "default"),
        ] {
            assert!(
                !can(&[verb, target, "-n", ns]),
                "the ServiceAccount may {verb} {target} in {ns}"
            );
        }
        // With its own token, as the gateway holds it: Secrets are refused by the authorizer.
        let err = crate::support::kube_api::kubectl_as(
            &c.gateway_kubeconfig,
            &["get", "secrets", "-n", "dermaga"],
        )
        .unwrap_err();
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "{err}"
        );
        println!(
            "RBAC: {allowed} declared (verb, resource, namespace) checks allowed; 13 others denied"
        );
    })
}

#[test]
fn a_missing_rbac_rule_is_named_in_the_log_and_counted() {
    in_netns(async {
        let c = Cluster::start();
        let a = Backend::start("10.233.1.2", "a").await;
        let listen = "127.1.2.7";
        c.service_with_slices("a", 10000, &[("a-1", &[(a.addr, true)])]);
        c.create_map(&[("10000", "default/a:10000")]);
        // The ClusterRole loses its EndpointSlice rule.
        let role = c.api.get("clusterrole", "", "dermaga");
        let rules: Vec<Value> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resources"] != json!(["endpointslices"]))
            .cloned()
            .collect();
        assert_eq!(rules.len(), 1, "{role:#}");
        c.api.kubectl(&[
            "patch",
            "clusterrole",
            "dermaga",
            "--type=merge",
            "-p",
            &json!({"rules": rules}).to_string(),
        ]);
        let mut d = c.dermaga(listen, &[]);
        let admin = d.admin_address();
        let line = d.wait_log(&["forbidden"]);
        println!("{line}");
        for part in ["endpointslices", "list", "default", "RBAC"] {
            assert!(line.contains(part), "{part:?} missing in: {line}");
        }
        let metrics = http_get(admin, "/metrics").await.1;
        assert!(
            metric_in(
                &metrics,
                "dermaga_kube_watch_errors_total",
                &[("resource", "endpointslices"), ("reason", "forbidden")]
            ) >= 1.0,
            "{metrics}"
        );
        assert_eq!(
            http_get(admin, "/readyz").await.0,
            503,
            "not ready without the slices"
        );
        // The rule restored (as in deploy/base): the gateway gets there by itself.
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/rbac.yaml");
        c.api
            .kubectl(&["apply", "-n", "dermaga", "-f", base.to_str().unwrap()]);
        d.wait_log(&["initial lists complete"]);
        wait_ready(admin).await;
        assert_eq!(greeting(at(listen, 10000)).await.unwrap(), "a");
        assert!(d.terminate().success());
    })
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Control-plane scale (bounded): 500 mapped ports over 500 Services with 20 endpoints each,
/// once alone and once next to 5,000 Services (with slices) that nothing references. Prints the
/// figures the closing note quotes; asserts what is watched and built.
#[test]
fn scale_500_ports_20_endpoints_each_beside_5000_unreferenced_services() {
    in_netns(async {
        let c = Cluster::start();
        let client = admin_client(&c.api).await;
        const MAPPED: usize = 500;
        const ENDPOINTS: usize = 20;
        let endpoint = |i: usize, j: usize| -> SocketAddr {
            let n = i * ENDPOINTS + j;
            format!("10.233.{}.{}:10000", n / 250, n % 250 + 1)
                .parse()
                .unwrap()
        };
        let created = Instant::now();
        create_all(
            &client,
            (0..MAPPED).flat_map(|i| {
                let name = format!("svc-{i}");
                let eps: Vec<(SocketAddr, bool)> =
                    (0..ENDPOINTS).map(|j| (endpoint(i, j), true)).collect();
                [
                    service(&name, 10000),
                    slice(&format!("{name}-1"), &name, &eps),
                ]
            }),
        )
        .await;
        println!(
            "scale: {} objects created in {:.1} s",
            2 * MAPPED,
            created.elapsed().as_secs_f64()
        );
        let map = (0..MAPPED).fold(fixture::port_map("dermaga", "tcp-services"), |map, i| {
            map.entry(&(30000 + i).to_string(), &format!("default/svc-{i}:10000"))
        });
        c.api.apply(&map.json().to_string());
        let alone = scale_run(&c, 0, "127.1.2.11", endpoint).await;

        let created = Instant::now();
        create_all(
            &client,
            (0..5000).flat_map(|i| {
                let name = format!("other-{i}");
                [
                    service(&name, 10000),
                    slice(
                        &format!("{name}-1"),
                        &name,
                        &[(endpoint(i % MAPPED, 0), true)],
                    ),
                ]
            }),
        )
        .await;
        println!(
            "scale: 10,000 unreferenced objects created in {:.1} s",
            created.elapsed().as_secs_f64()
        );
        let crowded = scale_run(&c, 5000, "127.1.2.10", endpoint).await;
        println!(
            "scale: RSS with 5,000 unreferenced Services {crowded} KiB vs without {alone} KiB"
        );
    })
}

/// A kube client as the administrator.
async fn admin_client(api: &KubeApi) -> kube::Client {
    let file = kube::config::Kubeconfig::read_from(api.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Creates Services and EndpointSlices (JSON) in namespace default, 16 requests at a time.
async fn create_all(client: &kube::Client, objects: impl Iterator<Item = Value>) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, PostParams};
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(objects)
        .for_each_concurrent(16, |o| {
            let (services, slices) = (services.clone(), slices.clone());
            async move {
                let pp = PostParams::default();
                if o["kind"] == "Service" {
                    services
                        .create(&pp, &serde_json::from_value(o).unwrap())
                        .await
                        .unwrap();
                } else {
                    slices
                        .create(&pp, &serde_json::from_value(o).unwrap())
                        .await
                        .unwrap();
                }
            }
        })
        .await;
}

/// One scale run against the objects in the API server; returns dermaga's RSS in KiB once synced.
async fn scale_run(
    c: &Cluster,
    unreferenced: usize,
    listen: &str,
    endpoint: impl Fn(usize, usize) -> SocketAddr,
) -> u64 {
    const MAPPED: usize = 500;
    const ENDPOINTS: usize = 20;
    let before = c.api.requests_of(GATEWAY_USER).len();
    let started = Instant::now();
    let mut d = c.dermaga(listen, &[]);
    let admin = d.admin_address();
    wait_ready(admin).await;
    let ready_after = started.elapsed();
    let r = wait_routes(admin, "every port bound", |r| {
        r["routes"].as_array().unwrap().len() == MAPPED
            && r["routes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["listener"]["state"] == "bound")
    })
    .await;
    let bound_after = started.elapsed();
    for (i, x) in r["routes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            x["endpoints"].as_array().unwrap().len(),
            ENDPOINTS,
            "route {i}"
        );
    }
    assert!(r["problems"].as_array().unwrap().is_empty());
    let rss = rss_kib(d.pid(), "VmRSS:");
    let hwm = rss_kib(d.pid(), "VmHWM:");
    let sync_requests: Vec<_> = c.api.requests_of(GATEWAY_USER)[before..].to_vec();

    // One EndpointSlice change -> the new table.
    let mut eps: Vec<(SocketAddr, bool)> = (0..ENDPOINTS).map(|j| (endpoint(7, j), true)).collect();
    eps[0].1 = false;
    let changed = Instant::now();
    c.api.apply(&slice("svc-7-1", "svc-7", &eps).to_string());
    d.wait_log(&["route changed", "30007/TCP"]);
    let change_after = changed.elapsed();
    // Back as it was, for the next run.
    eps[0].1 = true;
    c.api.apply(&slice("svc-7-1", "svc-7", &eps).to_string());
    d.wait_log(&["route changed", "30007/TCP"]);

    // The same build in process, timed (median of 5), from the objects the API server holds.
    use dermaga::{Index, Object};
    let referenced = |v: &Value| v["metadata"]["name"].as_str().unwrap().starts_with("svc-");
    let objects: Vec<Object> = c
        .api
        .list("configmaps", "dermaga")
        .into_iter()
        .map(|v| Object::ConfigMap(serde_json::from_value(v).unwrap()))
        .chain(
            c.api
                .list("services", "default")
                .into_iter()
                .filter(referenced)
                .map(|v| Object::Service(serde_json::from_value(v).unwrap())),
        )
        .chain(
            c.api
                .list("endpointslices", "default")
                .into_iter()
                .filter(referenced)
                .map(|v| Object::EndpointSlice(serde_json::from_value(v).unwrap())),
        )
        .collect();
    let mut settings = settings();
    settings.port_maps = vec![(
        dermaga::Protocol::Tcp,
        dermaga::ObjectName::new("dermaga", "tcp-services"),
    )];
    let mut index = Index::new(settings);
    index.reset_all(objects);
    let mut builds: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let table = dermaga::build(&index, None);
            let took = t.elapsed();
            assert_eq!(table.len(), MAPPED);
            took
        })
        .collect();
    builds.sort();

    println!(
        "scale: {MAPPED} ports x {ENDPOINTS} endpoints, {unreferenced} unreferenced Services (+ slices)"
    );
    println!(
        "scale: table build (in process, median of 5) {:.2} ms",
        builds[2].as_secs_f64() * 1e3
    );
    println!(
        "scale: ready (/readyz 200) {:.0} ms after start, all {MAPPED} ports bound after {:.0} ms",
        ready_after.as_secs_f64() * 1e3,
        bound_after.as_secs_f64() * 1e3
    );
    println!(
        "scale: kubectl apply of one EndpointSlice -> new table (log line) {:.1} ms",
        change_after.as_secs_f64() * 1e3
    );
    println!("scale: dermaga RSS {rss} KiB (peak {hwm} KiB)");
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for r in &sync_requests {
        *counts
            .entry(format!("{} {} ({})", r.verb, r.resource, r.namespace))
            .or_default() += 1;
        assert!(r.code < 400, "{r:?}");
    }
    println!("scale: API requests during sync: {counts:?}");
    // What is watched follows the references: the map, and the Services and slices of the one
    // namespace they are in; one list of the referenced slices.
    // A list of more than 500 objects comes in pages (`continue=`): count the lists started.
    let lists = |resource: &str| {
        sync_requests
            .iter()
            .filter(|r| r.verb == "list" && r.resource == resource && !r.uri.contains("continue="))
            .count()
    };
    assert_eq!(lists("endpointslices"), 1, "{counts:?}");
    assert_eq!(lists("services"), 1, "{counts:?}");
    assert!(
        sync_requests
            .iter()
            .all(|r| r.resource == "configmaps" && r.namespace == "dermaga"
                || r.namespace == "default"),
        "{counts:?}"
    );
    assert!(d.terminate().success());
    rss
}
