//! `dermaga doctor` against the real API server: the field reports' manifests (S1: two
//! StatefulSets behind one selector, one listening elsewhere; S2: a CronJob's pods behind a
//! Deployment's Service; S4: no readiness probe, no shutdown delay, a grace period shorter than
//! the delay) with their owners, pods (owner references, statuses through the status
//! subresource) and EndpointSlices written here, produce exactly the expected findings; a
//! healthy namespace none; the gateway's own failed connects are joined to the CronJob's pod;
//! run as the ServiceAccount of `deploy/components/doctor`, every call is declared and allowed.
//!
//! Addresses: gateway 127.1.24.1, pods 10.233.24.x (local in the test's network namespace).

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::kube_api::KubeApi;
use crate::support::netns::NetNs;
use crate::support::process::Dermaga;
use crate::support::{Backend, greeting};
use dermaga::fixture::Fixture;

/// Runs `dermaga doctor` with `args`: exit code, stdout.
fn doctor(kubeconfig: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dermaga"))
        .arg("doctor")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("DERMAGA_TCP_SERVICES_CONFIGMAP")
        .env_remove("DERMAGA_PUBLISH_SERVICE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap();
    assert!(code != 2, "doctor could not run: {stderr}");
    (code, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `(level, check, objects)` of each finding of a JSON report, in order.
fn findings(json_text: &str) -> Vec<(String, String, Vec<String>)> {
    let v: Value = serde_json::from_str(json_text).unwrap();
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["level"].as_str().unwrap().to_owned(),
                f["check"].as_str().unwrap().to_owned(),
                f["objects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn finding(level: &str, check: &str, objects: &[&str]) -> (String, String, Vec<String>) {
    (
        level.to_owned(),
        check.to_owned(),
        objects.iter().map(|o| o.to_string()).collect(),
    )
}

/// A pod's template: one container, its ports, a readiness probe or not, a preStop sleep or
/// not, a grace period or the default.
fn pod_spec(ports: &[u16], probe: bool, pre_stop: Option<i64>, grace: Option<i64>) -> Value {
    let mut container = json!({
        "name": "app",
        "image": "example.com/app:1",
        "ports": ports.iter().map(|p| json!({"containerPort": p})).collect::<Vec<_>>(),
    });
    if probe {
        container["readinessProbe"] = json!({"tcpSocket": {"port": ports[0]}});
    }
    if let Some(seconds) = pre_stop {
        container["lifecycle"] =
            json!({"preStop": {"exec": {"command": ["sh", "-c", format!("sleep {seconds}")]}}});
    }
    let mut spec = json!({"containers": [container], "automountServiceAccountToken": false});
    if let Some(grace) = grace {
        spec["terminationGracePeriodSeconds"] = json!(grace);
    }
    spec
}

/// A serving pod: declares `port`, ready probe, 5 s preStop sleep.
fn good(port: u16) -> Value {
    pod_spec(&[port], true, Some(5), None)
}

struct Cluster<'a> {
    api: &'a KubeApi,
}

impl Cluster<'_> {
    /// Applies `object` and returns its uid.
    fn create(&self, object: Value) -> String {
        self.api.apply(&object.to_string());
        let kind = object["kind"].as_str().unwrap().to_lowercase();
        let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
        let name = object["metadata"]["name"].as_str().unwrap();
        self.api.get(&kind, ns, name)["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A workload object (`apps/v1` or `batch/v1`) of `kind` with `labels` on its pods.
    fn workload(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        labels: &Value,
        owner: Option<(&str, &str, &str, &str)>,
    ) -> String {
        let template =
            json!({"metadata": {"labels": labels}, "spec": pod_spec(&[80], true, Some(5), None)});
        let (api_version, spec) = match kind {
            "StatefulSet" => (
                "apps/v1",
                json!({"serviceName": name, "selector": {"matchLabels": labels}, "template": template}),
            ),
            "Deployment" | "ReplicaSet" => (
                "apps/v1",
                json!({"selector": {"matchLabels": labels}, "template": template}),
            ),
            "CronJob" => (
                "batch/v1",
                json!({"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "backup", "image": "example.com/backup:1"}], "restartPolicy": "Never"}}}}}),
            ),
            "Job" => (
                "batch/v1",
                json!({"template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "backup", "image": "example.com/backup:1"}], "restartPolicy": "Never"}}}),
            ),
            other => panic!("{other}"),
        };
        let mut object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"namespace": ns, "name": name, "labels": labels}, "spec": spec});
        if let Some((kind, api_version, name, uid)) = owner {
            object["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true}]);
        }
        self.create(object)
    }

    /// A pod owned by `(kind, apiVersion, name, uid)`, running at `ip`.
    fn pod(
        &self,
        ns: &str,
        name: &str,
        labels: &Value,
        owner: (&str, &str, &str, &str),
        spec: Value,
        ip: &str,
    ) {
        let (kind, api_version, owner_name, uid) = owner;
        self.create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "labels": labels,
                "ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": owner_name, "uid": uid, "controller": true}]},
            "spec": spec,
        }));
        let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]}});
        self.api.kubectl(&[
            "patch",
            "pod",
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }

    /// Service `ns/name` selecting `labels`, port `port` to `target`.
    fn service(&self, ns: &str, name: &str, labels: &Value, port: u16, target: u16) {
        self.create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name},
            "spec": {"selector": labels, "ports": [{"name": "main", "port": port, "targetPort": target}]}}));
    }

    fn namespace(&self, ns: &str) {
        self.api.kubectl(&["create", "namespace", ns]);
        // No controller manager here: the ServiceAccount admission wants `default` to exist.
        self.api
            .kubectl(&["create", "serviceaccount", "default", "-n", ns]);
    }
}

#[test]
fn the_field_reports_mistakes_are_named_with_their_fix_and_a_healthy_namespace_has_none() {
    NetNs::create().block_on(async {
        let api = KubeApi::start();
        let c = Cluster { api: &api };
        for ns in ["s1", "s2", "s4", "ok", "dermaga"] {
            c.namespace(ns);
        }
        let admin = api.kubeconfig().to_path_buf();

        // S1: two StatefulSets share `app: layanan-xyz`; the second's pods listen on 20000.
        let app = json!({"app": "layanan-xyz"});
        let a = c.workload("s1", "StatefulSet", "xyz-a", &app, None);
        let b = c.workload("s1", "StatefulSet", "xyz-b", &app, None);
        c.pod("s1", "xyz-a-0", &app, ("StatefulSet", "apps/v1", "xyz-a", &a), good(10000), "10.233.24.11");
        c.pod("s1", "xyz-b-0", &app, ("StatefulSet", "apps/v1", "xyz-b", &b), good(20000), "10.233.24.12");
        c.service("s1", "layanan-xyz", &app, 10000, 10000);
        let (code, out) = doctor(&admin, &["-n", "s1", "--output", "json"]);
        assert_eq!(
            findings(&out),
            [finding("warning", "port-not-declared", &["Service s1/layanan-xyz", "StatefulSet s1/xyz-b"])],
            "{out}"
        );
        assert_eq!(code, 1);
        let (_, text) = doctor(&admin, &["-n", "s1"]);
        println!("{text}");
        assert!(text.contains("selects pods of 2 workloads: StatefulSet s1/xyz-a (1 pod), StatefulSet s1/xyz-b (1 pod)"), "{text}");
        assert!(text.contains("The pods of StatefulSet s1/xyz-b declare port 20000 and not 10000 TCP"), "{text}");

        // S2: a CronJob's Job copied the Deployment's labels; its pod declares no port and
        // refuses the connects the gateway sends it.
        let backend = Backend::start("10.233.24.21", "bunga").await;
        let port = backend.addr.port();
        let bunga = json!({"app": "bunga"});
        let deployment = c.workload("s2", "Deployment", "bunga", &bunga, None);
        let rs = c.workload("s2", "ReplicaSet", "bunga-5d8f", &bunga, Some(("Deployment", "apps/v1", "bunga", &deployment)));
        c.pod("s2", "bunga-5d8f-x1", &bunga, ("ReplicaSet", "apps/v1", "bunga-5d8f", &rs), good(port), "10.233.24.21");
        let cron = c.workload("s2", "CronJob", "backup", &bunga, None);
        let job = c.workload("s2", "Job", "backup-2891", &bunga, Some(("CronJob", "batch/v1", "backup", &cron)));
        c.pod("s2", "backup-2891-q", &bunga, ("Job", "batch/v1", "backup-2891", &job), pod_spec(&[], false, None, None), "10.233.24.22");
        c.service("s2", "bunga", &bunga, 10000, port);
        api.apply(
            &dermaga::fixture::endpoint_slice("s2", "bunga-1", "bunga")
                .port(dermaga::fixture::port(port).named("main"))
                .endpoint(dermaga::fixture::endpoint("10.233.24.21").ready(true).pod("s2", "bunga-5d8f-x1"))
                .endpoint(dermaga::fixture::endpoint("10.233.24.22").ready(true).pod("s2", "backup-2891-q"))
                .yaml(),
        );
        let (code, out) = doctor(&admin, &["-n", "s2", "--output", "json"]);
        assert_eq!(
            findings(&out),
            [finding("warning", "job-pods-selected", &["Service s2/bunga", "CronJob s2/backup"])],
            "{out}"
        );
        assert_eq!(code, 1);

        // S4: no readiness probe and no shutdown delay; a delay longer than the grace period.
        let plain = json!({"app": "plain"});
        let slow = json!({"app": "slowstop"});
        let d1 = c.workload("s4", "Deployment", "plain", &plain, None);
        let r1 = c.workload("s4", "ReplicaSet", "plain-1", &plain, Some(("Deployment", "apps/v1", "plain", &d1)));
        c.pod("s4", "plain-1-a", &plain, ("ReplicaSet", "apps/v1", "plain-1", &r1), pod_spec(&[8080], false, None, None), "10.233.24.41");
        let d2 = c.workload("s4", "Deployment", "slowstop", &slow, None);
        let r2 = c.workload("s4", "ReplicaSet", "slowstop-1", &slow, Some(("Deployment", "apps/v1", "slowstop", &d2)));
        c.pod("s4", "slowstop-1-a", &slow, ("ReplicaSet", "apps/v1", "slowstop-1", &r2), pod_spec(&[8080], true, Some(40), Some(30)), "10.233.24.42");
        c.service("s4", "plain", &plain, 80, 8080);
        c.service("s4", "slowstop", &slow, 80, 8080);
        c.service("s4", "empty", &json!({"app": "empty"}), 80, 8080);
        let (code, out) = doctor(&admin, &["-n", "s4", "--output", "json"]);
        assert_eq!(
            findings(&out),
            [
                finding("warning", "grace-shorter-than-delay", &["Deployment s4/slowstop", "Service s4/slowstop"]),
                finding("warning", "no-readiness-probe", &["Deployment s4/plain", "Service s4/plain"]),
                finding("warning", "no-shutdown-delay", &["Deployment s4/plain", "Service s4/plain"]),
            ],
            "{out}"
        );
        assert_eq!(code, 1);

        // A healthy namespace: nothing, exit code 0.
        let web = json!({"app": "web"});
        let d = c.workload("ok", "Deployment", "web", &web, None);
        let r = c.workload("ok", "ReplicaSet", "web-1", &web, Some(("Deployment", "apps/v1", "web", &d)));
        c.pod("ok", "web-1-a", &web, ("ReplicaSet", "apps/v1", "web-1", &r), good(8080), "10.233.24.51");
        c.service("ok", "web", &web, 80, 8080);
        let (code, out) = doctor(&admin, &["-n", "ok"]);
        assert_eq!((code, out.trim()), (0, "no findings in namespace ok"));

        // The gateway's maps: one entry served, one to a Service that does not exist, one to a
        // Service without endpoints; the LoadBalancer Service lists only the first port.
        api.apply(
            &dermaga::fixture::port_map("dermaga", "tcp-services")
                .entry("10000", "s2/bunga:10000")
                .entry("10001", "s1/gone:80")
                .entry("10002", "s4/empty:80")
                .yaml(),
        );
        c.create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "dermaga", "name": "dermaga"},
            "spec": {"type": "LoadBalancer", "selector": {"app.kubernetes.io/name": "dermaga"},
                     "ports": [{"name": "tcp-10000", "port": 10000, "targetPort": 10000}]}}));
        // The gateway itself behind it: dermaga declares no data port and drains on SIGTERM
        // without a preStop hook; it is not judged as a backend.
        let own = json!({"app.kubernetes.io/name": "dermaga"});
        let d = c.workload("dermaga", "Deployment", "dermaga", &own, None);
        let r = c.workload("dermaga", "ReplicaSet", "dermaga-1", &own, Some(("Deployment", "apps/v1", "dermaga", &d)));
        c.pod("dermaga", "dermaga-1-a", &own, ("ReplicaSet", "apps/v1", "dermaga-1", &r), {
                let mut spec = pod_spec(&[10254, 10255], true, None, Some(75));
                spec["containers"][0]["args"] = json!(["--tcp-services-configmap=dermaga/tcp-services"]);
                spec
            }, "10.233.24.61");
        // A Helm release names it `<release>-dermaga`: known by the pods it selects.
        c.service("dermaga", "gw-dermaga", &own, 10000, 10000);
        let (code, out) = doctor(&admin, &["-n", "dermaga", "--output", "json"]);
        assert_eq!(
            findings(&out),
            [
                finding("warning", "no-ready-endpoints", &["Service s4/empty"]),
                finding("warning", "port-map-warning", &[]),
                finding("warning", "port-not-on-load-balancer", &["Service dermaga/dermaga"]),
                finding("warning", "port-not-on-load-balancer", &["Service dermaga/dermaga"]),
            ],
            "{out}"
        );
        assert!(out.contains("s1/gone"), "{out}");
        assert_eq!(code, 1);

        // The gateway itself, serving port 10000: round robin sends every other connect to the
        // CronJob's pod, which refuses; the clients are served by the retry.
        let mut gw = Dermaga::start(&[
            "--kubeconfig",
            admin.to_str().unwrap(),
            "--listen-address",
            "127.1.24.1",
            "--admin-address",
            "127.1.24.1:0",
            "--shutdown-delay",
            "0s",
        ]);
        gw.wait_log(&["listening", "10000/TCP"]);
        let metrics = format!("http://{}/metrics", gw.admin_address());
        let to: std::net::SocketAddr = "127.1.24.1:10000".parse().unwrap();
        for _ in 0..20 {
            assert_eq!(greeting(to).await.unwrap(), "bunga");
        }
        let (code, out) = doctor(&admin, &["-n", "s2", "--gateway-metrics", &metrics]);
        println!("{out}");
        assert_eq!(code, 1);
        let line = out
            .lines()
            .find(|l| l.contains("[endpoint-connect-failures]"))
            .unwrap_or_else(|| panic!("no connect failures joined:\n{out}"));
        assert!(
            line.contains(&format!(
                "endpoint 10.233.24.22:{port} (pod backup-2891-q, CronJob s2/backup) refused "
            )) && line.ends_with(&format!(
                "connects; it is selected by Service s2/bunga but declares no port {port}"
            )),
            "{line}"
        );
        assert!(gw.terminate().success());

        // As the ServiceAccount of deploy/components/doctor: every namespace, every call
        // declared in DOCTOR_ACCESS and allowed.
        let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/components/doctor/rbac.yaml");
        api.kubectl(&["apply", "-f", rbac.to_str().unwrap()]);
        let sa = api.service_account_kubeconfig("dermaga", "dermaga-doctor");
        let (code, out) = doctor(&sa, &["--all-namespaces", "--output", "json"]);
        assert_eq!(code, 1);
        let all = findings(&out);
        assert_eq!(all.len(), 1 + 1 + 3 + 4, "{out}");
        let requests = api.requests_of("system:serviceaccount:dermaga:dermaga-doctor");
        assert!(!requests.is_empty());
        for r in &requests {
            assert!(r.code != 401 && r.code != 403, "refused: {r:?}");
            assert!(
                dermaga::DOCTOR_ACCESS.iter().any(|a| a.group == r.group
                    && a.resource == r.resource
                    && a.verbs.contains(&r.verb.as_str())),
                "an undeclared call: {r:?}"
            );
        }
        println!("{} calls by doctor as dermaga-doctor, each declared and allowed", requests.len());
    });
}
