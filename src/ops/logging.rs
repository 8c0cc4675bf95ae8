//! Log output: human-readable text or one JSON object per line, filtered by `--log-level` or
//! `RUST_LOG`.

/// Output format of logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` wins over `level` when set.
///
/// With `level`, the kube-rs client's and runtime's own lines are off: they repeat, at `error`
/// and once per retry, the API failures the provider already logs once per failure streak
/// (`RUST_LOG=info,kube_client=debug` shows them).
pub fn init(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},kube_client=off,kube_runtime=off"))
    });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr must not turn into a panic inside a log call (a signal handler task
        // would die with it): drop the line instead.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
