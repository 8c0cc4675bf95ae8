//! The server driven by the real `kubectl` (skipped when no `kubectl` is on PATH): create,
//! apply (create, then a changed version), patch of all three kinds, get, get -w and delete,
//! each checked against the stored objects; and `kubectl describe` showing Events recorded
//! through events.k8s.io.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use dermaga_testapi::{ApiServer, resources};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        command.stdin(Stdio::null());
        command
    }

    /// Runs kubectl and returns its stdout; panics with its stderr on failure.
    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {stderr}{stdout}"
        );
        stdout
    }

    fn apply(&self, dir: &Path, manifest: &str) -> String {
        let file = dir.join("manifest.yaml");
        std::fs::File::create(&file)
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        self.run(&["apply", "-f", file.to_str().unwrap()])
    }
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const SERVICE_AND_SLICE: &str = "
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: https, port: 443}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
";

const SERVICE_AND_SLICE_CHANGED: &str = "
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
endpoints:
- addresses: [10.0.0.2]
  conditions: {ready: true}
- addresses: [10.0.0.3]
  conditions: {ready: false}
";

fn port_numbers(service: &Value) -> Vec<i64> {
    service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect()
}

/// Waits until the server has registered a watch (a watch counts as open from then on).
async fn wait_for_open_watch(server: &ApiServer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.stats().open_watches == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl opened no watch"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn kubectl_create_apply_patch_get_watch_delete() {
    if !kubectl_available() {
        eprintln!("kubectl is not installed: skipping");
        return;
    }
    let server = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let kubectl = Kubectl {
        kubeconfig,
        cache: dir.path().join("cache"),
    };

    // create (kubectl's typed client sends protobuf)
    kubectl.run(&[
        "create",
        "configmap",
        "tcp-services",
        "--from-literal=10000=default/web:80",
    ]);
    let stored = server
        .get(&resources::CONFIGMAPS, "default", "tcp-services")
        .expect("created");
    assert_eq!(stored["data"], json!({"10000": "default/web:80"}));

    // apply: create, then a changed version (strategic merge patch computed by kubectl)
    let output = kubectl.apply(dir.path(), SERVICE_AND_SLICE);
    assert!(
        output.contains("service/web created")
            && output.contains("endpointslice.discovery.k8s.io/web-1 created"),
        "{output}"
    );
    let service = server.get(&resources::SERVICES, "default", "web").unwrap();
    assert_eq!(port_numbers(&service), [80, 443]);
    let cluster_ip = service["spec"]["clusterIP"].clone();
    assert!(
        service["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let output = kubectl.apply(dir.path(), SERVICE_AND_SLICE_CHANGED);
    assert!(output.contains("service/web configured"), "{output}");
    let service = server.get(&resources::SERVICES, "default", "web").unwrap();
    assert_eq!(port_numbers(&service), [80, 53]);
    assert_eq!(service["spec"]["ports"][1]["protocol"], "UDP");
    assert_eq!(
        service["spec"]["clusterIP"], cluster_ip,
        "allocated values survive apply"
    );
    let slice = server
        .get(&resources::ENDPOINTSLICES, "default", "web-1")
        .unwrap();
    let addresses: Vec<&Value> = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["addresses"][0])
        .collect();
    assert_eq!(addresses, [&json!("10.0.0.2"), &json!("10.0.0.3")]);
    assert_eq!(slice["metadata"]["generation"], 2);
    let output = kubectl.apply(dir.path(), SERVICE_AND_SLICE_CHANGED);
    assert!(output.contains("service/web unchanged"), "{output}");

    // patch: strategic (default), merge and json
    kubectl.run(&[
        "patch",
        "configmap",
        "tcp-services",
        "-p",
        r#"{"data":{"20000":"default/web:443"}}"#,
    ]);
    kubectl.run(&[
        "patch",
        "configmap",
        "tcp-services",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"10000":null}}"#,
    ]);
    kubectl.run(&[
        "patch",
        "configmap",
        "tcp-services",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/2222","value":"git/ssh:22"}]"#,
    ]);
    let stored = server
        .get(&resources::CONFIGMAPS, "default", "tcp-services")
        .unwrap();
    assert_eq!(
        stored["data"],
        json!({"20000": "default/web:443", "2222": "git/ssh:22"})
    );
    kubectl.run(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"ports":[{"port":53,"name":"dns-udp"}]}}"#,
    ]);
    let service = server.get(&resources::SERVICES, "default", "web").unwrap();
    assert_eq!(
        service["spec"]["ports"][1]["name"], "dns-udp",
        "merged by port"
    );

    // get
    let fetched: Value =
        serde_json::from_str(&kubectl.run(&["get", "configmap", "tcp-services", "-o", "json"]))
            .unwrap();
    assert_eq!(fetched, stored);
    let table = kubectl.run(&["get", "configmaps"]);
    assert!(table.contains("tcp-services"), "{table}");
    let list: Value =
        serde_json::from_str(&kubectl.run(&["get", "svc,endpointslices", "-o", "json"])).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // get -w: the initial object, then a change made through the store
    let mut watch = kubectl
        .command(&["get", "configmap", "tcp-services", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (sender, objects) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for object in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
            if sender
                .send(object.expect("kubectl prints JSON objects"))
                .is_err()
            {
                break;
            }
        }
    });
    let first = objects
        .recv_timeout(Duration::from_secs(10))
        .expect("the current object");
    assert_eq!(first["data"], stored["data"]);
    // kubectl prints the object it got, then watches it from resourceVersion 0 and skips that
    // watch's first event (the synthetic ADDED of the current state). A change made before the
    // watch is registered would arrive only inside that skipped event, so wait for the watch.
    wait_for_open_watch(&server).await;
    let mut changed = stored.clone();
    changed["data"]["3000"] = json!("ns/svc:3000");
    server.apply(changed).unwrap();
    let next = objects
        .recv_timeout(Duration::from_secs(10))
        .expect("the change");
    assert_eq!(next["data"]["3000"], "ns/svc:3000");
    watch.kill().unwrap();
    watch.wait().unwrap();
    reader.join().unwrap();

    // delete
    let output = kubectl.run(&["delete", "configmap", "tcp-services"]);
    assert!(
        output.contains("configmap \"tcp-services\" deleted"),
        "{output}"
    );
    assert!(
        server
            .get(&resources::CONFIGMAPS, "default", "tcp-services")
            .is_none()
    );
    let file = dir.path().join("manifest.yaml");
    kubectl.run(&["delete", "-f", file.to_str().unwrap()]);
    assert!(server.get(&resources::SERVICES, "default", "web").is_none());
    assert!(
        server
            .get(&resources::ENDPOINTSLICES, "default", "web-1")
            .is_none()
    );

    kubectl.run(&["create", "namespace", "team"]);
    kubectl.run(&["create", "configmap", "x", "-n", "team"]);
    kubectl.run(&["delete", "namespace", "team"]);
    assert!(server.get(&resources::NAMESPACES, "", "team").is_none());
    assert!(server.list(&resources::CONFIGMAPS, Some("team")).is_empty());
    let missing = kubectl
        .command(&["get", "configmap", "tcp-services"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("configmaps \"tcp-services\" not found")
    );
}

#[tokio::test]
async fn kubectl_describe_shows_events_recorded_through_events_k8s_io() {
    if !kubectl_available() {
        eprintln!("kubectl is not installed: skipping");
        return;
    }
    let server = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let kubectl = Kubectl {
        kubeconfig,
        cache: dir.path().join("cache"),
    };
    kubectl.run(&["create", "configmap", "tcp-services", "-n", "dermaga"]);
    kubectl.run(&["create", "configmap", "other", "-n", "dermaga"]);
    let target = server
        .get(&resources::CONFIGMAPS, "dermaga", "tcp-services")
        .unwrap();
    let reference = |name: &str, uid: &str| ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some(name.into()),
        namespace: Some("dermaga".into()),
        uid: Some(uid.into()),
        ..Default::default()
    };
    // kube-rs's Recorder writes through events.k8s.io/v1 (create, then a merge patch)
    let recorder = Recorder::new(
        common::kube_client(&server).await,
        Reporter::from("dermaga-controller"),
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "PortBindFailed".into(),
        note: Some("cannot bind 10005/TCP: address in use".into()),
        action: "Bind".into(),
        secondary: None,
    };
    let uid = target["metadata"]["uid"].as_str().unwrap();
    recorder
        .publish(&event, &reference("tcp-services", uid))
        .await
        .unwrap();
    recorder
        .publish(&event, &reference("tcp-services", uid))
        .await
        .unwrap();
    let elsewhere = Event {
        reason: "Elsewhere".into(),
        note: Some("about another ConfigMap".into()),
        ..event
    };
    recorder
        .publish(&elsewhere, &reference("other", "other-uid"))
        .await
        .unwrap();

    let described = kubectl.run(&["describe", "configmap", "tcp-services", "-n", "dermaga"]);
    let events = described
        .split_once("Events:")
        .map(|(_, events)| events)
        .unwrap_or_else(|| panic!("no Events section: {described}"));
    assert!(events.contains("Warning"), "{described}");
    assert!(events.contains("PortBindFailed"), "{described}");
    assert!(
        events.contains("cannot bind 10005/TCP: address in use"),
        "{described}"
    );
    assert!(events.contains("dermaga-controller"), "{described}");
    assert!(events.contains("(x2 over"), "the series: {described}");
    assert!(!events.contains("Elsewhere"), "{described}");
}
