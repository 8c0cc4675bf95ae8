//! Connecting to the API server: `--kubeconfig`, else `KUBECONFIG` / `~/.kube/config`, else the
//! in-cluster service account.

use std::path::Path;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client for the API server the flags point at.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes API to watch: not in a cluster, no $KUBECONFIG or ~/.kube/config, \
             and no --kubeconfig (or run without a cluster with --config FILE)",
        )?,
    };
    // The watchers back off and retry themselves and say so; the client's own retry layer
    // would hide an outage for ~15 s of silent retries before the first error surfaced.
    let mut config = config;
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .with_context(|| format!("cannot make a client for the API server {server}"))?;
    Ok(client)
}
