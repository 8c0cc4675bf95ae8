//! Helpers shared by the load generators: the duration parser, latency histograms (recorded
//! in nanoseconds, reported in µs), the progress bar, and raising the open-files limit.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// Parses `5s`, `200ms`, `1m` (humantime).
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// A latency histogram shared by the tasks of one run: 1 ns to 60 s, 3 significant digits.
pub type Latencies = Arc<Mutex<Histogram<u64>>>;

/// A new, empty [`Latencies`].
pub fn latencies() -> Latencies {
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
    ))
}

/// Records one latency (saturating at the histogram's 60 s ceiling).
pub fn record(h: &Latencies, d: Duration) {
    let ns = (d.as_nanos() as u64).clamp(1, 60_000_000_000);
    h.lock().expect("histogram lock").saturating_record(ns);
}

/// `{"p50", "p90", "p99", "p999", "max", "mean", "count"}` in µs (count in samples).
pub fn percentiles(h: &Latencies) -> Value {
    let h = h.lock().expect("histogram lock");
    let us = |ns: u64| ns as f64 / 1000.0;
    json!({
        "p50": us(h.value_at_quantile(0.50)),
        "p90": us(h.value_at_quantile(0.90)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
        "mean": h.mean() / 1000.0,
        "count": h.len(),
    })
}

/// A progress bar on stderr for a run of `len` steps, drawn only when stderr is a terminal
/// and `visible` (runs shorter than a second are not worth a bar).
pub fn progress(len: u64, prefix: &str, visible: bool) -> ProgressBar {
    let target = if visible && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed_precise} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

/// A bar that fills over `d` (ticking every 100 ms until dropped or finished), with `msg`
/// called for its message: for the timed load generators.
pub fn timed_progress(
    d: Duration,
    prefix: &str,
    msg: impl Fn() -> String + Send + 'static,
) -> ProgressBar {
    let bar = progress(d.as_millis() as u64, prefix, d >= Duration::from_secs(1));
    if !bar.is_hidden() {
        let b = bar.clone();
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            while !b.is_finished() {
                b.set_position(started.elapsed().as_millis() as u64);
                b.set_message(msg());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    bar
}

/// Raises the soft open-files limit to the hard one (idle runs hold thousands of sockets);
/// returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// The hard open-files limit.
pub fn hard_nofile() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_microseconds() {
        let h = latencies();
        for us in 1..=1000u64 {
            record(&h, Duration::from_micros(us));
        }
        let p = percentiles(&h);
        let f = |k: &str| p[k].as_f64().unwrap();
        assert!((f("p50") - 500.0).abs() < 2.0, "{p}");
        assert!(f("p50") <= f("p99") && f("p99") <= f("p999") && f("p999") <= f("max"));
        assert_eq!(p["count"], 1000);
    }
}
