//! The real Kubernetes API server for the tests: kube-apiserver v1.37 and etcd, built from their Go
//! modules by `testenv/build.sh` (cached; see testenv/README.md), started per test inside the
//! test's own network namespace ([`super::netns`]), and driven with the kubectl of the same
//! version.
//!
//! Authentication: the test itself is `admin` (a static token in group `system:masters`); the
//! gateway authenticates with a ServiceAccount token from the TokenRequest API
//! ([`KubeApi::service_account_kubeconfig`]), so the real RBAC authorizer judges every call it
//! makes. Every request is written to an audit log ([`KubeApi::audit`]), which is how tests count
//! what the gateway asked for and what it was answered.
//!
//! Faults are produced on the real processes: [`KubeApi::pause`] (SIGSTOP) and
//! [`KubeApi::resume`], [`KubeApi::kill`] and [`KubeApi::restart`], the same for etcd, and
//! [`KubeApi::compact`] (etcd compaction, so that an old resourceVersion gets 410 Gone). A second
//! API server on the same etcd ([`KubeApi::second_server`]) writes while the first is down, as in
//! a highly available control plane.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::testenv::{binaries, kubectl_binary};

/// The static token of the test's own administrator (group `system:masters`).
const ADMIN_TOKEN: &str = "dermaga-test-admin";
const ETCD_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;

/// A kube-apiserver (and the etcd under it) of one test.
pub struct KubeApi {
    dir: tempfile::TempDir,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    port: u16,
    kubeconfig: PathBuf,
    /// How long the last (re)start took until `/readyz` answered 200.
    pub ready_after: Duration,
}

impl KubeApi {
    /// Starts etcd and kube-apiserver on 127.0.0.1 of the calling thread's network namespace
    /// (port 6443) and waits until the API server is ready.
    pub fn start() -> Self {
        Self::start_on(6443)
    }

    fn start_on(port: u16) -> Self {
        let bins = binaries();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_owned();
        let p = p.as_path();
        std::fs::create_dir(p.join("certs")).unwrap();
        openssl(&["genrsa", "-out", p.join("sa.key").to_str().unwrap(), "2048"]);
        std::fs::write(
            p.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,\"system:masters\"\n"),
        )
        .unwrap();
        std::fs::write(
            p.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        )
        .unwrap();
        let mut api = Self {
            kubeconfig: p.join("kubeconfig"),
            dir,
            etcd: None,
            apiserver: None,
            port,
            ready_after: Duration::ZERO,
        };
        api.write_kubeconfig(&api.kubeconfig, ADMIN_TOKEN);
        api.etcd = Some(spawn_logged(
            &bins.etcd,
            &[
                "--name=default",
                &format!("--data-dir={}", p.join("etcd").display()),
                &format!("--listen-client-urls=http://127.0.0.1:{ETCD_PORT}"),
                &format!("--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}"),
                &format!("--initial-cluster=default=http://127.0.0.1:{ETCD_PEER_PORT}"),
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            &p.join("etcd.log"),
        ));
        api.start_apiserver();
        api
    }

    /// A second API server on the same etcd (port 6444), as in a highly available control plane:
    /// it writes while this one is stopped. It shares this one's keys, tokens and audit policy.
    pub fn second_server(&self) -> SecondServer {
        let port = 6444;
        let kubeconfig = self.dir.path().join("kubeconfig-second");
        let mut second = Self {
            dir: tempfile::tempdir().unwrap(),
            etcd: None,
            apiserver: None,
            port,
            kubeconfig: kubeconfig.clone(),
            ready_after: Duration::ZERO,
        };
        for f in ["sa.key", "tokens.csv", "audit-policy.yaml"] {
            std::fs::copy(self.dir.path().join(f), second.dir.path().join(f)).unwrap();
        }
        std::fs::create_dir(second.dir.path().join("certs")).unwrap();
        second.write_kubeconfig(&kubeconfig, ADMIN_TOKEN);
        second.start_apiserver();
        SecondServer(second)
    }

    fn start_apiserver(&mut self) {
        let p = self.dir.path();
        let started = Instant::now();
        let arg = |k: &str, v: &Path| format!("--{k}={}", v.display());
        let args = [
            format!("--etcd-servers=http://127.0.0.1:{ETCD_PORT}"),
            "--advertise-address=127.0.0.1".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", self.port),
            arg("cert-dir", &p.join("certs")),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--endpoint-reconciler-type=none".into(),
            "--authorization-mode=RBAC".into(),
            arg("token-auth-file", &p.join("tokens.csv")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            arg("service-account-key-file", &p.join("sa.key")),
            arg("service-account-signing-key-file", &p.join("sa.key")),
            arg("audit-policy-file", &p.join("audit-policy.yaml")),
            arg("audit-log-path", &p.join("audit.log")),
            "--audit-log-mode=blocking".into(),
            "--allow-privileged=true".into(),
            "--v=0".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.apiserver = Some(spawn_logged(
            &binaries().apiserver,
            &args,
            &p.join("apiserver.log"),
        ));
        self.wait_ready(started);
    }

    fn wait_ready(&mut self, started: Instant) {
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Ok(out) = self.try_kubectl(&["get", "--raw", "/readyz"])
                && out.trim() == "ok"
            {
                break;
            }
            if let Some(child) = self.apiserver.as_mut()
                && let Some(status) = child.try_wait().unwrap()
            {
                panic!(
                    "kube-apiserver exited ({status}) before it was ready:\n{}",
                    self.log_tail("apiserver.log")
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 120 s:\n{}",
                self.log_tail("apiserver.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.ready_after = started.elapsed();
    }

    /// The last lines of one of the processes' logs.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn write_kubeconfig(&self, path: &Path, token: &str) {
        let ca = self.dir.path().join("certs/apiserver.crt");
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: user, namespace: default}}\ncurrent-context: test\n",
                self.port,
                ca.display()
            ),
        )
        .unwrap();
    }

    /// The administrator's kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name`, with a token from the
    /// TokenRequest API (`kubectl create token`).
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.kubectl(&["create", "token", name, "-n", namespace, "--duration=2h"]);
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-sa-{namespace}-{name}"));
        self.write_kubeconfig(&path, token.trim());
        path
    }

    /// Runs kubectl as the administrator; panics with its output on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.try_kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"))
    }

    /// Runs kubectl as the administrator.
    pub fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        kubectl_with(&self.kubeconfig, args, None)
    }

    /// `kubectl apply -f -` of a YAML (or JSON) text.
    pub fn apply(&self, yaml: &str) -> String {
        kubectl_with(&self.kubeconfig, &["apply", "-f", "-"], Some(yaml))
            .unwrap_or_else(|e| panic!("kubectl apply failed: {e}\n{yaml}"))
    }

    /// `kubectl apply -f -` of a YAML (or JSON) text, with kubectl's error instead of a panic.
    pub fn try_apply(&self, yaml: &str) -> Result<String, String> {
        kubectl_with(&self.kubeconfig, &["apply", "-f", "-"], Some(yaml))
    }

    /// `kubectl create -f -` of a YAML (or JSON) text: one request per object, no read first.
    pub fn create(&self, yaml: &str) -> String {
        kubectl_with(&self.kubeconfig, &["create", "-f", "-"], Some(yaml))
            .unwrap_or_else(|e| panic!("kubectl create failed: {e}"))
    }

    /// One object as JSON (`namespace` empty for a cluster-scoped one).
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Value {
        let mut args = vec!["get", resource, name, "-o", "json"];
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        serde_json::from_str(&self.kubectl(&args)).unwrap()
    }

    /// The items of a list as JSON.
    pub fn list(&self, resource: &str, namespace: &str) -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&self.kubectl(&["get", resource, "-n", namespace, "-o", "json"]))
                .unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// events.k8s.io/v1 Events in `namespace` (where dermaga records them).
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        self.list("events.v1.events.k8s.io", namespace)
    }

    /// Installs `deploy/base` with `kubectl apply -k` (namespace, ServiceAccount, RBAC, port map,
    /// Deployment, Service, PDB) and then deletes its example port map, so that a test writes its
    /// own. Returns kubectl's output.
    pub fn install_deploy_base(&self) -> String {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base");
        let out = self.kubectl(&["apply", "-k", base.to_str().unwrap()]);
        self.kubectl(&["delete", "configmap", "tcp-services", "-n", "dermaga"]);
        out
    }

    /// SIGSTOP: the API server answers nothing (connections open, no byte).
    pub fn pause(&self) {
        signal(self.apiserver.as_ref().expect("running"), Signal::SIGSTOP);
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        signal(self.apiserver.as_ref().expect("running"), Signal::SIGCONT);
    }

    /// SIGKILL: every watch is cut, every connect refused until [`Self::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the API server again (after [`Self::kill`], or kills it first); waits for ready.
    pub fn restart(&mut self) {
        self.kill();
        self.start_apiserver();
    }

    /// SIGSTOP to etcd: the API server stays up but can neither read nor write.
    pub fn pause_etcd(&self) {
        signal(self.etcd.as_ref().expect("etcd"), Signal::SIGSTOP);
    }

    /// SIGCONT to etcd.
    pub fn resume_etcd(&self) {
        signal(self.etcd.as_ref().expect("etcd"), Signal::SIGCONT);
    }

    /// Compacts etcd's history up to its current revision: a watch or list from any older
    /// resourceVersion that reaches etcd is answered 410 Gone. Returns the revision.
    pub fn compact(&self) -> u64 {
        let range = etcd_post("/v3/kv/range", r#"{"key":"AA=="}"#);
        let revision: u64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("etcd revision in {range}"));
        etcd_post(
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        );
        revision
    }

    /// Every audit record so far (one per request and stage), as JSON.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The requests of `user` that completed (or, for watches, started), as
    /// `(verb, resource, namespace, code)`.
    pub fn requests_of(&self, user: &str) -> Vec<AuditedRequest> {
        self.audit()
            .into_iter()
            .filter(|r| r["user"]["username"] == user)
            .filter(|r| match (r["verb"] == "watch", r["stage"].as_str()) {
                (true, Some("ResponseStarted")) | (false, Some("ResponseComplete")) => true,
                // A watch refused by the authorizer never starts.
                (true, Some("ResponseComplete")) => {
                    r["responseStatus"]["code"].as_u64() != Some(200)
                }
                _ => false,
            })
            .map(|r| AuditedRequest {
                verb: r["verb"].as_str().unwrap_or("").to_owned(),
                group: r["objectRef"]["apiGroup"].as_str().unwrap_or("").to_owned(),
                // `gateways/status` for a subresource, as RBAC names it.
                resource: match r["objectRef"]["subresource"].as_str() {
                    Some(sub) => format!(
                        "{}/{sub}",
                        r["objectRef"]["resource"].as_str().unwrap_or("")
                    ),
                    None => r["objectRef"]["resource"].as_str().unwrap_or("").to_owned(),
                },
                namespace: r["objectRef"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                name: r["objectRef"]["name"].as_str().unwrap_or("").to_owned(),
                code: r["responseStatus"]["code"].as_u64().unwrap_or(0),
                uri: r["requestURI"].as_str().unwrap_or("").to_owned(),
            })
            .collect()
    }
}

/// One request from the audit log.
#[derive(Debug, Clone)]
pub struct AuditedRequest {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub code: u64,
    pub uri: String,
}

/// The audit user name of ServiceAccount `dermaga/dermaga`.
pub const GATEWAY_USER: &str = "system:serviceaccount:dermaga:dermaga";

impl Drop for KubeApi {
    fn drop(&mut self) {
        for child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            // A stopped process must be continued to die of anything but SIGKILL; SIGKILL it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A second API server on the first one's etcd (see [`KubeApi::second_server`]).
pub struct SecondServer(KubeApi);

impl SecondServer {
    /// Runs kubectl as the administrator against this server.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.0.kubectl(args)
    }

    /// `kubectl apply -f -` against this server.
    pub fn apply(&self, yaml: &str) -> String {
        self.0.apply(yaml)
    }
}

/// Runs kubectl with `kubeconfig` (another identity than the administrator's).
pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    kubectl_with(kubeconfig, args, None)
}

fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(kubectl_binary())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    if let Some(text) = stdin {
        let mut input = child.stdin.take().unwrap();
        input.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn spawn_logged(binary: &Path, args: &[&str], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()))
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): apt-get install openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A POST to etcd's JSON gateway on the client port.
fn etcd_post(path: &str, body: &str) -> Value {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", ETCD_PORT)).expect("etcd");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "etcd {path}: {answer}");
    // The gateway may answer chunked: take the JSON object in the body.
    let start = body.find('{').expect("JSON body");
    let end = body.rfind('}').expect("JSON body");
    serde_json::from_str(&body[start..=end]).unwrap()
}
