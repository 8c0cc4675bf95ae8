//! The real Kubernetes binaries the tests use (kube-apiserver, etcd, kubectl of the same
//! version) and the Gateway API CRDs, built from their Go modules by `testenv/build.sh` into a cache on first use. Shared
//! by `support::kube_api` and `tests/it/deploy.rs` (which renders `deploy/base` with this kubectl).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Paths of the built binaries.
pub struct Binaries {
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
    /// kubectl.
    pub kubectl: PathBuf,
    /// The standard-channel Gateway API CRDs, one manifest, from the `sigs.k8s.io/gateway-api`
    /// module that `testenv/gateway-api/go.mod` requires.
    pub gateway_api_crds: PathBuf,
    /// helm v4, built from the module `testenv/helm/go.mod` requires (the chart tests).
    pub helm: PathBuf,
}

/// Builds (or finds in the cache) kube-apiserver, etcd and kubectl; panics with the build's own
/// words when it cannot (no Go, no module proxy).
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testenv/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .expect("run testenv/build.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "testenv/build.sh could not provide kube-apiserver and etcd:\n{}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let path = |key: &str| -> PathBuf {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("testenv/build.sh printed no {key}=: {stdout}"))
                .into()
        };
        Binaries {
            apiserver: path("kube-apiserver"),
            etcd: path("etcd"),
            kubectl: path("kubectl"),
            gateway_api_crds: path("gateway-api-crds"),
            helm: path("helm"),
        }
    })
}

/// The kubectl built beside the API server (same version).
pub fn kubectl_binary() -> &'static Path {
    &binaries().kubectl
}
