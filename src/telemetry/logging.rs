//! Log output on stderr: human-readable text or one JSON object per line, filtered by
//! `--log-level` or `RUST_LOG`, written by `log_writer` so that a stuck
//! reader of stderr drops lines (counted) instead of stopping the gateway.
//!
//! The text format is logfmt-like: a field value with a space, `"` or `=` in it (or empty) is
//! quoted, so `problem="port 80: ..."` stays one field. Colour only when stderr is a terminal
//! and `NO_COLOR` is not set (<https://no-color.org>).

use std::fmt;

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

use super::log_writer::{LogGuard, LogWriter, QUEUE_LINES};

/// Output format of logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// The least severe level logged (`--log-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and warnings (a rejected map entry, a refused connect, ...).
    Warn,
    /// Also what changes: ports opened and closed, reloads, endpoints ejected (the default).
    Info,
    /// Also per-connection details.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` wins over `level` when set. Keep the returned
/// guard until the end of `main`: dropping it writes out the lines still queued.
///
/// With `level`, the kube-rs client's and runtime's own lines are off: they repeat, at `error`
/// and once per retry, the API failures the provider already logs once per failure streak
/// (`RUST_LOG=info,kube_client=debug` shows them).
pub fn init(format: LogFormat, level: LogLevel) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{},kube_client=off,kube_runtime=off",
            level.directive()
        ))
    });
    let (writer, guard) = LogWriter::start(Box::new(std::io::stderr()), QUEUE_LINES);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        // A failed write must not turn into a panic inside a log call (a signal handler task
        // would die with it): the writer drops the line instead.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder
            .with_target(false)
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(text_field).delimited(" "))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

/// ANSI colour: only on a terminal, and not when `NO_COLOR` is set to anything non-empty.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// One field of a text line: the message as it is, other fields `name=value`, the value quoted
/// when it would not read back as one token.
fn text_field(w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let name = field.name();
    if name == "message" {
        return write!(w, "{value:?}");
    }
    let name = name.strip_prefix("r#").unwrap_or(name);
    let text = format!("{value:?}");
    if needs_quotes(&text) {
        write!(w, "{name}={text:?}")
    } else {
        write!(w, "{name}={text}")
    }
}

/// True for a value that is empty or has a space, `"` or `=` in it, and is not already a quoted
/// string (a `?`-recorded `String` is).
fn needs_quotes(text: &str) -> bool {
    let quoted = text.len() >= 2 && text.starts_with('"') && text.ends_with('"');
    text.is_empty()
        || (!quoted
            && text
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn values_with_spaces_are_quoted_and_plain_ones_are_not() {
        assert!(needs_quotes(
            "port 80: service default/x has no port named main"
        ));
        assert!(needs_quotes(""));
        assert!(needs_quotes("a=b"));
        assert!(needs_quotes("tab\there"));
        assert!(!needs_quotes("127.0.0.1:80"));
        assert!(!needs_quotes("10000/TCP"));
        assert!(!needs_quotes("\"already quoted, with spaces\""));
        assert_eq!(
            format!("{:?}", "say \"hi\" now"),
            r#""say \"hi\" now""#,
            "quoting escapes inner quotes"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "NO_COLOR= (empty) is unset"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }

    /// The text layer as `init` builds it, writing into a buffer.
    #[test]
    fn a_text_line_keeps_a_problem_with_spaces_as_one_quoted_field() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .with_target(false)
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(text_field).delimited(" "))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let text = "port 80: no such port";
            tracing::warn!(problem = %text, reason = "InvalidPort", port = 80, "configuration problem");
        });
        let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.contains(
                r#"configuration problem problem="port 80: no such port" reason="InvalidPort" port=80"#
            ),
            "{line}"
        );
    }
}
