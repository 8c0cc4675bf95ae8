//! Process signals. SIGTERM / SIGINT become a cancellation: the first one starts a drain, a
//! second one exits at once. SIGHUP reloads the `--config` file, or is logged and ignored under
//! the Kubernetes provider (it never kills the process).
//!
//! Every other signal keeps its default action (SIGQUIT, SIGUSR1, SIGUSR2... end the process
//! without a drain); SIGPIPE is ignored, as in every Rust program, so a closed socket or output
//! is an error, not a kill. docs/operations.md lists them.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What SIGHUP does.
#[derive(Debug, Clone)]
pub enum OnHangup {
    /// Reload this `--config` file: notify its provider.
    Reload(PathBuf, Arc<Notify>),
    /// Log and ignore (the Kubernetes provider follows the API; there is nothing to reload).
    Ignore,
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT and exits the process on the second; on
/// SIGHUP does `hangup`. From the moment this returns, none of the three kills the process.
pub fn install(shutdown: CancellationToken, hangup: OnHangup) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        for round in 0..2 {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if round == 0 {
                tracing::info!(signal = name, "shutting down (send again to exit at once)");
                shutdown.cancel();
            } else {
                tracing::warn!(signal = name, "second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &hangup {
                OnHangup::Reload(path, reload) => {
                    tracing::info!("SIGHUP: reloading --config {}", path.display());
                    reload.notify_one();
                }
                OnHangup::Ignore => tracing::info!(
                    "SIGHUP ignored: the Kubernetes provider follows the API, there is no file to reload"
                ),
            }
        }
    });
    Ok(())
}
