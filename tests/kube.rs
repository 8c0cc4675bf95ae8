//! The Kubernetes provider end to end: the `dermaga` binary watching the project's test API
//! server (`dermaga-testapi`, the real list/watch HTTP protocol), configured with the real
//! `kubectl`, forwarding to tagged backends on 127.0.0.x.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dermaga_testapi::{ApiServer, resources};
use serde_json::{Value, json};
use support::process::Dermaga;
use support::*;
use tokio::net::TcpStream;

/// Runs kubectl against the test API server; panics with its output on failure.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kubectl is installed (it is on every CI machine)");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl apply -f` of a YAML text.
fn kubectl_apply(kubeconfig: &Path, dir: &Path, name: &str, yaml: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    kubectl(kubeconfig, &["apply", "-f", file.to_str().unwrap()])
}

struct Cluster {
    api: ApiServer,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let api = ApiServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        Self {
            api,
            kubeconfig,
            dir,
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.kubeconfig, args)
    }

    fn apply(&self, name: &str, yaml: &str) -> String {
        kubectl_apply(&self.kubeconfig, self.dir.path(), name, yaml)
    }

    /// Starts dermaga on `listen` watching `default/tcp-services`.
    fn dermaga(&self, listen: &str, extra: &[&str]) -> Dermaga {
        let admin = format!("{listen}:0");
        let mut args = vec![
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--tcp-services-configmap",
            "default/tcp-services",
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

    /// Events recorded through events.k8s.io/v1 in `namespace`.
    fn events(&self, namespace: &str) -> Vec<Value> {
        self.api.list(&resources::EVENTS_V1, Some(namespace))
    }
}

/// A Service with one port named `main`.
fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: main, port: {port}, protocol: TCP}}]\n"
    )
}

/// One EndpointSlice named `name` for `service` with the given endpoints.
fn slice(name: &str, service: &str, endpoints: &[(SocketAddr, bool)]) -> Value {
    let port = endpoints.first().map_or(1, |(a, _)| a.port());
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "main", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints.iter().enumerate().map(|(i, (addr, ready))| json!({
            "addresses": [addr.ip().to_string()],
            "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("{name}-pod-{i}")},
        })).collect::<Vec<_>>(),
    })
}

fn yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap()
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
    let deadline = Instant::now() + Duration::from_secs(20);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_edits_drive_the_gateway() {
    let c = Cluster::start().await;
    let a = Backend::start("127.0.0.2", "a").await;
    let a2 = Backend::start("127.0.0.4", "a2").await;
    let b = Backend::start("127.0.0.3", "b").await;
    let listen = "127.1.2.1";
    c.apply("a.yaml", &service("a", 10000));
    c.apply("b.yaml", &service("b", 10000));
    c.apply("a-1.yaml", &yaml(&slice("a-1", "a", &[(a.addr, true)])));
    c.apply("a-2.yaml", &yaml(&slice("a-2", "a", &[(a2.addr, true)])));
    c.apply("b-1.yaml", &yaml(&slice("b-1", "b", &[(b.addr, true)])));
    c.kubectl(&[
        "create",
        "configmap",
        "tcp-services",
        "--from-literal=10000=default/a:10000",
    ]);

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
    c.kubectl(&[
        "patch",
        "configmap",
        "tcp-services",
        "-p",
        r#"{"data":{"20000":"default/b:10000"}}"#,
    ]);
    d.wait_log(&["listening", "20000/TCP"]);
    assert_eq!(greeting(at(listen, 20000)).await.unwrap(), "b");
    println!(
        "kubectl patch -> port 20000 served: {:.1} ms",
        patched.elapsed().as_secs_f64() * 1000.0
    );

    // The EndpointSlice holding a2's ready endpoint is deleted: no new connection goes there.
    c.kubectl(&["delete", "endpointslice", "a-2"]);
    wait_routes(admin, "a2 gone", |r| {
        endpoint_addrs(r, 10000) == vec![a.addr.to_string()]
    })
    .await;
    for _ in 0..6 {
        assert_eq!(greeting(at(listen, 10000)).await.unwrap(), "a");
    }

    // An endpoint turning unready through `kubectl apply` of the changed slice.
    c.apply("b-1.yaml", &yaml(&slice("b-1", "b", &[(b.addr, false)])));
    wait_routes(admin, "b unready", |r| endpoint_addrs(r, 20000).is_empty()).await;
    assert!(
        greeting(at(listen, 20000)).await.is_err(),
        "no ready endpoint: refused at once"
    );

    // Deleting the ConfigMap closes its ports.
    c.kubectl(&["delete", "configmap", "tcp-services"]);
    d.wait_log(&["route removed", "10000/TCP"]);
    wait_until("port 10000 closed", || {
        std::net::TcpStream::connect_timeout(&at(listen, 10000), Duration::from_secs(1)).is_err()
    })
    .await;
    // ...and recreating it opens them again.
    c.kubectl(&[
        "create",
        "configmap",
        "tcp-services",
        "--from-literal=10000=default/a:10000",
    ]);
    wait_until("port 10000 open again", || {
        std::net::TcpStream::connect_timeout(&at(listen, 10000), Duration::from_secs(1)).is_ok()
    })
    .await;
    assert_eq!(greeting(at(listen, 10000)).await.unwrap(), "a");
    assert!(d.terminate().success());
}

/// Clients that each open a connection, read the greeting, close; counting failures.
struct Traffic {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(to: SocketAddr, clients: usize, expect: &'static str) -> Self {
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
                            Ok(tag) if tag == expect => ok.fetch_add(1, Ordering::Relaxed),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_outage_under_traffic_fails_no_connection_and_catches_up_after() {
    let c = Cluster::start().await;
    let a = Backend::start("127.0.0.2", "a").await;
    let b = Backend::start("127.0.0.3", "b").await;
    let listen = "127.1.2.2";
    c.apply("a.yaml", &service("a", 10000));
    c.apply("b.yaml", &service("b", 10000));
    c.apply("a-1.yaml", &yaml(&slice("a-1", "a", &[(a.addr, true)])));
    c.apply("b-1.yaml", &yaml(&slice("b-1", "b", &[(b.addr, true)])));
    c.kubectl(&[
        "create",
        "configmap",
        "tcp-services",
        "--from-literal=10000=default/a:10000",
    ]);
    let mut d = c.dermaga(listen, &[]);
    let admin = d.admin_address();
    d.wait_log(&["listening", "10000/TCP"]);

    let traffic = Traffic::start(at(listen, 10000), 4, "a");
    c.api.pause();
    d.wait_log(&["Kubernetes API watch failed"]);
    // A change made while the API is unreachable (as if written to etcd by another apiserver).
    let mut cm = c
        .api
        .get(&resources::CONFIGMAPS, "default", "tcp-services")
        .unwrap();
    cm["data"]["20000"] = json!("default/b:10000");
    c.api.apply(cm).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await; // the outage itself
    assert_eq!(
        http_get(admin, "/readyz").await.0,
        200,
        "still ready during the outage"
    );
    c.api.resume();
    let resumed = Instant::now();
    d.wait_log(&["listening", "20000/TCP"]);
    d.wait_log(&["Kubernetes API watch recovered"]);
    println!(
        "after the 10 s outage: change applied {:.0} ms after resume",
        resumed.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(greeting(at(listen, 20000)).await.unwrap(), "b");
    let (ok, failed) = traffic.finish().await;
    println!("outage traffic: {ok} connections, {failed} failed");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_dropped_and_watches_cut_end_in_the_right_table() {
    let c = Cluster::start().await;
    let a = Backend::start("127.0.0.2", "a").await;
    let a2 = Backend::start("127.0.0.4", "a2").await;
    let b = Backend::start("127.0.0.3", "b").await;
    let listen = "127.1.2.3";
    c.apply("a.yaml", &service("a", 10000));
    c.apply("b.yaml", &service("b", 10000));
    c.apply("a-1.yaml", &yaml(&slice("a-1", "a", &[(a.addr, true)])));
    c.apply("a-2.yaml", &yaml(&slice("a-2", "a", &[(a2.addr, true)])));
    c.apply("b-1.yaml", &yaml(&slice("b-1", "b", &[(b.addr, true)])));
    c.kubectl(&[
        "create",
        "configmap",
        "tcp-services",
        "--from-literal=10000=default/a:10000",
    ]);
    let mut d = c.dermaga(listen, &[]);
    let admin = d.admin_address();
    d.wait_log(&["listening", "10000/TCP"]);

    // While no watch is open, the world changes and the history of it is lost.
    c.api.pause();
    d.wait_log(&["Kubernetes API watch failed"]);
    c.api
        .delete(&resources::ENDPOINTSLICES, "default", "a-2")
        .unwrap();
    let mut cm = c
        .api
        .get(&resources::CONFIGMAPS, "default", "tcp-services")
        .unwrap();
    cm["data"]["20000"] = json!("default/b:10000");
    c.api.apply(cm).unwrap();
    c.api.drop_history();
    let before = c.api.stats();
    c.api.resume();
    let r = wait_routes(admin, "the re-listed table", |r| {
        endpoint_addrs(r, 10000) == vec![a.addr.to_string()]
            && endpoint_addrs(r, 20000) == vec![b.addr.to_string()]
    })
    .await;
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r:#}");
    let after = c.api.stats();
    for resource in [&resources::CONFIGMAPS, &resources::ENDPOINTSLICES] {
        assert!(
            after.count("list", resource) > before.count("list", resource),
            "the {} watcher met 410 Expired and listed again",
            resource.plural
        );
    }

    // Open watches cut (an apiserver restart): nothing is lost, and a later change still arrives.
    c.api.cut_watches();
    c.api
        .delete(&resources::ENDPOINTSLICES, "default", "b-1")
        .unwrap();
    wait_routes(admin, "b-1 gone after the cut", |r| {
        endpoint_addrs(r, 20000).is_empty()
    })
    .await;
    assert_eq!(greeting(at(listen, 10000)).await.unwrap(), "a");
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_entry_is_recorded_as_exactly_one_event_naming_key_and_value() {
    let c = Cluster::start().await;
    let a = Backend::start("127.0.0.2", "a").await;
    let listen = "127.1.2.4";
    c.apply("a.yaml", &service("a", 10000));
    c.apply("a-1.yaml", &yaml(&slice("a-1", "a", &[(a.addr, true)])));
    // Another process holds port 10005 on the listen address.
    let _squatter = std::net::TcpListener::bind(at(listen, 10005)).unwrap();
    c.kubectl(&[
        "create",
        "configmap",
        "tcp-services",
        "--from-literal=10000=default/a:10000",
        "--from-literal=10001=default/a",
        "--from-literal=10002=default/nosuch:80",
        "--from-literal=10005=default/a:10000",
        "--from-literal=10006=default/a:http:PROXY:EXTRA",
    ]);
    let mut d = c.dermaga(listen, &[]);
    d.wait_log(&["listening", "10000/TCP"]);
    wait_until("four events", || c.events("default").len() >= 4).await;

    // Changes that do not touch the problems, and a re-list, record nothing more.
    c.apply(
        "a-1.yaml",
        &yaml(&slice("a-1", "a", &[(a.addr, true), (a.addr, true)])),
    );
    c.kubectl(&[
        "patch",
        "configmap",
        "tcp-services",
        "-p",
        r#"{"data":{"10003":"default/a:10000"}}"#,
    ]);
    d.wait_log(&["listening", "10003/TCP"]);
    c.api.cut_watches();
    c.api.drop_history();
    c.kubectl(&[
        "patch",
        "configmap",
        "tcp-services",
        "-p",
        r#"{"data":{"10004":"default/a:10000"}}"#,
    ]);
    d.wait_log(&["listening", "10004/TCP"]);

    let events = c.events("default");
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
    let described = c.kubectl(&["describe", "configmap", "tcp-services"]);
    for reason in ["InvalidEntry", "ServiceNotFound", "PortBindFailed"] {
        assert!(
            described.contains(reason),
            "{reason} missing in:\n{described}"
        );
    }
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_every_initial_list_is_in() {
    let c = Cluster::start().await;
    let listen = "127.1.2.5";
    c.api.pause();
    let mut d = c.dermaga(listen, &[]);
    let admin = d.admin_address();
    d.wait_log(&["Kubernetes API watch failed"]);
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not synced: no configuration loaded yet\n")
    );
    c.api.resume();
    d.wait_log(&["initial lists complete"]);
    wait_until("ready", || std::net::TcpStream::connect(admin).is_ok()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(admin, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The map does not exist: ready, nothing mapped, and the problem is visible.
    let r = routes(admin).await;
    assert_eq!(r["routes"].as_array().unwrap().len(), 0);
    assert!(
        r["problems"][0]
            .as_str()
            .unwrap()
            .contains("default/tcp-services does not exist")
    );
    let _ = TcpStream::connect(admin).await.unwrap();
    assert!(d.terminate().success());
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

/// Control-plane scale (bounded: a few seconds each): 500 mapped ports over 500 Services with
/// 20 endpoints each, once alone and once next to 5,000 Services (with slices) that nothing
/// references. Prints the figures the closing note quotes; asserts what is watched and built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_500_ports_20_endpoints_each_beside_5000_unreferenced_services() {
    let alone = scale_run(0, "127.1.2.11").await;
    let crowded = scale_run(5000, "127.1.2.10").await;
    println!(
        "scale: RSS with 5,000 unreferenced Services {} KiB vs without {} KiB",
        crowded, alone
    );
}

/// One scale run; returns dermaga's RSS in KiB once synced.
async fn scale_run(unreferenced: usize, listen: &str) -> u64 {
    const MAPPED: usize = 500;
    const ENDPOINTS: usize = 20;
    let unreferenced_count = unreferenced;
    let c = Cluster::start().await;
    let endpoint = |i: usize, j: usize| -> SocketAddr {
        let n = i * ENDPOINTS + j;
        format!("127.3.{}.{}:10000", n / 250, n % 250 + 1)
            .parse()
            .unwrap()
    };
    let service_json = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "main", "port": 10000, "protocol": "TCP"}]}})
    };
    for i in 0..MAPPED {
        let name = format!("svc-{i}");
        c.api.apply(service_json(&name)).unwrap();
        let eps: Vec<(SocketAddr, bool)> = (0..ENDPOINTS).map(|j| (endpoint(i, j), true)).collect();
        c.api
            .apply(slice(&format!("{name}-1"), &name, &eps))
            .unwrap();
    }
    for i in 0..unreferenced_count {
        let name = format!("other-{i}");
        c.api.apply(service_json(&name)).unwrap();
        c.api
            .apply(slice(
                &format!("{name}-1"),
                &name,
                &[(endpoint(i % MAPPED, 0), true)],
            ))
            .unwrap();
    }
    let data: serde_json::Map<String, Value> = (0..MAPPED)
        .map(|i| {
            (
                (30000 + i).to_string(),
                json!(format!("default/svc-{i}:10000")),
            )
        })
        .collect();
    c.api
        .apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "tcp-services", "namespace": "default"}, "data": data}))
        .unwrap();
    let before = c.api.stats();

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
    let after = c.api.stats();

    // One EndpointSlice change -> the new table.
    let mut eps: Vec<(SocketAddr, bool)> = (0..ENDPOINTS).map(|j| (endpoint(7, j), true)).collect();
    eps[0].1 = false;
    let changed = Instant::now();
    c.api.apply(slice("svc-7-1", "svc-7", &eps)).unwrap();
    d.wait_log(&["route changed", "30007/TCP"]);
    let change_after = changed.elapsed();

    // The same build in process, timed (median of 5), from the objects the API holds.
    let objects: Vec<dermaga::control::index::Object> = c
        .api
        .list(&resources::CONFIGMAPS, Some("default"))
        .into_iter()
        .map(|v| dermaga::control::index::Object::ConfigMap(serde_json::from_value(v).unwrap()))
        .chain(
            c.api
                .list(&resources::SERVICES, Some("default"))
                .into_iter()
                .filter(|v| v["metadata"]["name"].as_str().unwrap().starts_with("svc-"))
                .map(|v| {
                    dermaga::control::index::Object::Service(serde_json::from_value(v).unwrap())
                }),
        )
        .chain(
            c.api
                .list(&resources::ENDPOINTSLICES, Some("default"))
                .into_iter()
                .filter(|v| v["metadata"]["name"].as_str().unwrap().starts_with("svc-"))
                .map(|v| {
                    dermaga::control::index::Object::EndpointSlice(
                        serde_json::from_value(v).unwrap(),
                    )
                }),
        )
        .collect();
    let mut settings = settings();
    settings.port_maps = vec![(
        dermaga::control::names::Protocol::Tcp,
        dermaga::control::names::ObjectName::new("default", "tcp-services"),
    )];
    let mut index = dermaga::control::index::Index::new(settings);
    index.reset_all(objects);
    let mut builds: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let table = dermaga::control::build::build(&index, None);
            let took = t.elapsed();
            assert_eq!(table.len(), MAPPED);
            took
        })
        .collect();
    builds.sort();

    println!(
        "scale: {MAPPED} ports x {ENDPOINTS} endpoints, {unreferenced_count} unreferenced Services (+ slices)"
    );
    println!(
        "scale: ready (/readyz 200) {:.0} ms after start, all {MAPPED} ports bound after {:.0} ms",
        ready_after.as_secs_f64() * 1e3,
        bound_after.as_secs_f64() * 1e3
    );
    println!(
        "scale: table build (in process, median of 5) {:.2} ms",
        builds[2].as_secs_f64() * 1e3
    );
    println!(
        "scale: EndpointSlice change -> new table (log line) {:.1} ms",
        change_after.as_secs_f64() * 1e3
    );
    println!("scale: dermaga RSS {rss} KiB (peak {hwm} KiB)");
    let requests: Vec<String> = after
        .requests
        .iter()
        .filter_map(|(k, n)| {
            let d = n - before.requests.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{} {}: {d}", k.0, k.1))
        })
        .collect();
    println!(
        "scale: API requests during sync: {requests:?}; {} KiB sent",
        (after.bytes_sent - before.bytes_sent) / 1024
    );
    // What is watched follows the references: the map, and the Services and slices of the one
    // namespace they are in.
    wait_until("three watches", || c.api.stats().open_watches == 3).await;
    assert_eq!(
        after.count("list", &resources::ENDPOINTSLICES)
            - before.count("list", &resources::ENDPOINTSLICES),
        1,
        "one list of the referenced slices: {requests:?}"
    );
    assert!(d.terminate().success());
    rss
}
