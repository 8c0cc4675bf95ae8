//! `--manage-service-ports` against the real kube-apiserver: two replicas keep the
//! LoadBalancer Service of `deploy/overlays/manage-service-ports` equal to the mapped ports
//! (TCP and UDP), a port added by hand by another manager stays, a port another manager holds
//! with other values is reported (Event, metric) and never forced, and the API server's audit
//! log counts the writes of one map change.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::kube_api::{GATEWAY_USER, KubeApi};
use crate::support::netns::NetNs;
use crate::support::process::Dermaga;
use crate::support::*;
use serde_json::Value;

/// The Service's ports as `name port/PROTOCOL->targetPort`.
fn ports(api: &KubeApi) -> BTreeSet<String> {
    let service = api.get("service", "dermaga", "dermaga");
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} {}/{}->{}",
                p["name"].as_str().unwrap_or(""),
                p["port"],
                p["protocol"].as_str().unwrap_or(""),
                p["targetPort"]
            )
        })
        .collect()
}

/// Polls (bounded, 30 s) until the Service's ports satisfy `check`; returns how long it took.
async fn wait_ports(
    api: &KubeApi,
    what: &str,
    check: impl Fn(&BTreeSet<String>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = ports(api);
        if check(&now) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} never held: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Service patches (applies) of the gateway's ServiceAccount seen so far.
fn service_patches(api: &KubeApi) -> usize {
    api.requests_of(GATEWAY_USER)
        .iter()
        .filter(|r| r.resource == "services" && r.verb == "patch")
        .count()
}

/// Counts the modifications of Service `dermaga/dermaga` from now on (`kubectl get --watch`).
struct ServiceWrites {
    child: std::process::Child,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ServiceWrites {
    fn watch(api: &KubeApi) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(crate::support::testenv::kubectl_binary())
            .arg("--kubeconfig")
            .arg(api.kubeconfig())
            .args([
                "get",
                "service",
                "dermaga",
                "-n",
                "dermaga",
                "--watch",
                "-o",
                "jsonpath={.metadata.resourceVersion}{\"\\n\"}",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stdout = child.stdout.take().unwrap();
        let counter = seen.clone();
        std::thread::spawn(move || {
            for _ in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        // kubectl prints the object as it is first, then one line per modification: the watch
        // is established at the first line (bounded wait).
        let started = Instant::now();
        while seen.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "kubectl --watch printed nothing"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, seen }
    }

    /// Modifications since the watch began.
    fn count(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::Relaxed) - 1
    }
}

impl Drop for ServiceWrites {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric_sum(texts: &[String], name: &str, labels: &[(&str, &str)]) -> f64 {
    texts.iter().map(|t| metric_in(t, name, labels)).sum()
}

#[test]
fn two_replicas_keep_the_load_balancer_ports_equal_to_the_maps() {
    NetNs::create().block_on(async {
        let api = KubeApi::start();
        let overlay = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/overlays/manage-service-ports");
        api.kubectl(&["apply", "-k", overlay.to_str().unwrap()]);
        // A port another manager added by hand (not mapped): it must stay.
        api.kubectl(&[
            "patch", "service", "dermaga", "-n", "dermaga", "--type=json", "-p",
            r#"[{"op":"add","path":"/spec/ports/-","value":{"name":"extra","port":9999,"protocol":"TCP","targetPort":9999}}]"#,
        ]);
        let kubeconfig = api.service_account_kubeconfig("dermaga", "dermaga");
        let start = |listen: &str| {
            let admin = format!("{listen}:0");
            Dermaga::start(&[
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--tcp-services-configmap",
                "dermaga/tcp-services",
                "--udp-services-configmap",
                "dermaga/udp-services",
                "--manage-service-ports",
                "dermaga/dermaga",
                "--listen-address",
                listen,
                "--admin-address",
                &admin,
                "--shutdown-delay",
                "0s",
                "--drain-timeout",
                "1s",
            ])
        };
        let mut one = start("127.1.22.1");
        let mut two = start("127.1.22.2");
        let admins = [one.admin_address(), two.admin_address()];
        one.wait_log(&["listening", "10000/TCP"]);
        two.wait_log(&["listening", "10000/TCP"]);
        let scrape = || async {
            let mut texts = Vec::new();
            for admin in admins {
                texts.push(http_get(admin, "/metrics").await.1);
            }
            texts
        };
        // Both replicas have applied their first table (the base's ports, already there).
        let mut texts = Vec::new();
        for _ in 0..500 {
            texts = scrape().await;
            if metric_sum(&texts, "dermaga_service_port_applies_total", &[("result", "applied")]) == 2.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            metric_sum(&texts, "dermaga_service_port_applies_total", &[("result", "applied")]),
            2.0,
            "each replica applied once at start"
        );
        let base: BTreeSet<String> = [
            "extra 9999/TCP->9999",
            "tcp-10000 10000/TCP->10000",
            "tcp-20000 20000/TCP->20000",
        ]
        .map(String::from)
        .into();
        assert_eq!(ports(&api), base);

        // One map change (one ConfigMap write), seen by both replicas: how many applies, and
        // how many writes of the Service (a watch counts its modifications).
        let writes = ServiceWrites::watch(&api);
        let patches = service_patches(&api);
        api.apply(&named_configmap_yaml(
            "tcp-services",
            &[
                ("10000", "default/layanan-xyz-port-10000:10000"),
                ("20000", "default/layanan-xyz-port-20000:20000"),
                ("30000", "default/game:30000"),
            ],
        ));
        let took = wait_ports(&api, "30000/TCP on the Service", |p| {
            p.contains("tcp-30000 30000/TCP->30000")
        })
        .await;
        // Both replicas apply once for the change (bounded wait on the audit log).
        for _ in 0..500 {
            if service_patches(&api) - patches >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let applies = service_patches(&api) - patches;
        let modified = writes.count();
        println!(
            "one map change, two replicas: the port was on the LoadBalancer Service {took:?} after the ConfigMap write; {applies} applies sent, {modified} write(s) of the Service"
        );
        assert_eq!(applies, 2, "one apply per replica");
        assert_eq!(modified, 1, "the second replica's identical apply is a no-op");
        assert!(ports(&api).contains("extra 9999/TCP->9999"), "the hand-added port stays");

        // UDP ports too, beside the TCP ones.
        api.apply(&named_configmap_yaml("udp-services", &[("10053", "kube-system/dns:53")]));
        wait_ports(&api, "10053/UDP on the Service", |p| {
            p.contains("udp-10053 10053/UDP->10053") && p.contains("tcp-30000 30000/TCP->30000")
        })
        .await;

        // Removing a mapped port removes it from the Service, the hand-added one stays.
        api.apply(&named_configmap_yaml("udp-services", &[]));
        wait_ports(&api, "10053/UDP removed", |p| !p.iter().any(|p| p.contains("10053"))).await;
        assert!(ports(&api).contains("extra 9999/TCP->9999"));

        // A port another manager holds with another targetPort: reported, not forced.
        api.kubectl(&[
            "patch", "service", "dermaga", "-n", "dermaga", "--type=json", "-p",
            r#"[{"op":"add","path":"/spec/ports/-","value":{"name":"legacy","port":40000,"protocol":"TCP","targetPort":4444}}]"#,
        ]);
        api.apply(&named_configmap_yaml(
            "tcp-services",
            &[
                ("10000", "default/layanan-xyz-port-10000:10000"),
                ("20000", "default/layanan-xyz-port-20000:20000"),
                ("40000", "default/legacy:4444"),
                ("40001", "default/legacy:4445"),
            ],
        ));
        wait_ports(&api, "40001 added while 40000 is held back", |p| {
            p.contains("tcp-40001 40001/TCP->40001") && !p.contains("tcp-30000 30000/TCP->30000")
        })
        .await;
        assert!(ports(&api).contains("legacy 40000/TCP->4444"), "never forced");
        let event = {
            let started = Instant::now();
            loop {
                let found = api
                    .events("dermaga")
                    .into_iter()
                    .find(|e| e["reason"] == "ServicePortConflict");
                if let Some(e) = found {
                    break e;
                }
                assert!(started.elapsed() < Duration::from_secs(30), "no ServicePortConflict Event");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let note = event["note"].as_str().or(event["message"].as_str()).unwrap_or("");
        println!("Event: {note}");
        assert!(note.contains("port 40000/TCP"), "{event:#}");
        assert_eq!(event["regarding"]["kind"], Value::from("Service"), "{event:#}");
        // Each replica holds 40000 back (bounded wait: the second may apply a moment later).
        let mut texts = scrape().await;
        for _ in 0..500 {
            if metric_sum(&texts, "dermaga_service_ports_held_back", &[]) == 2.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            texts = scrape().await;
        }
        assert_eq!(
            metric_sum(&texts, "dermaga_service_ports_held_back", &[]),
            2.0,
            "40000 held back by both replicas"
        );
        let conflicts = metric_sum(&texts, "dermaga_service_port_applies_total", &[("result", "conflict")]);
        assert!(conflicts >= 2.0, "{conflicts}");

        assert!(one.terminate().success());
        assert!(two.terminate().success());
        for r in api.requests_of(GATEWAY_USER) {
            assert!(r.code != 401 && r.code != 403, "refused: {r:?}");
            assert!(
                dermaga::API_ACCESS
                    .iter()
                    .chain(dermaga::SERVICE_PORTS_ACCESS)
                    .any(|a| a.group == r.group
                        && a.resource == r.resource
                        && a.verbs.contains(&r.verb.as_str())),
                "an undeclared call: {r:?}"
            );
        }
    });
}
