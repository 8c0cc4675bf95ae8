//! The kubeconfig that points clients (kubectl, kube-rs) at a test server.

/// A kubeconfig with one cluster at `server`, one user without credentials and one context
/// `testapi` (namespace `default`) that is the current context.
pub(crate) fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testapi
  cluster:
    server: {server}
users:
- name: testapi
  user: {{}}
contexts:
- name: testapi
  context:
    cluster: testapi
    user: testapi
    namespace: default
current-context: testapi
preferences: {{}}
"
    )
}
