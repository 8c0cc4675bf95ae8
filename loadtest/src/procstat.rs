//! The proxy's own cost, read from /proc: CPU time (utime + stime from `/proc/<pid>/stat`) and
//! resident memory (`VmRSS` from `/proc/<pid>/status`) and open descriptors, summed over the process and all its
//! descendants, so nginx's master + worker count as one proxy.
//!
//! [`Watch`] samples before and after a measurement and turns the difference into the `proxy`
//! object of a result (and the CPU time per operation). Times in `/proc/<pid>/stat` are in
//! clock ticks of `USER_HZ`, which is 100 on every Linux architecture: 10 ms granularity, so a
//! measurement should last at least a second for a precise per-operation figure.

use std::fs;
use std::io;
use std::time::Instant;

use serde_json::{Value, json};

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, fixed at 100 in the kernel ABI).
const USER_HZ: f64 = 100.0;

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// utime + stime of every process in the tree, in seconds.
    pub cpu_seconds: f64,
    /// Sum of `VmRSS` over the tree, in bytes.
    pub rss_bytes: u64,
    /// How many processes the tree had.
    pub processes: usize,
    /// Open file descriptors of the tree (0 where /proc/<pid>/fd is not readable).
    pub fds: usize,
}

/// The fields after the `(comm)` of a `/proc/<pid>/stat` line (state is index 0).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// `pid` and every descendant, found through the parent pid of every process in /proc.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            if let Some(ppid) = stat_fields(&stat).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// Reads CPU time and RSS of `pid` and its descendants. Fails only if `pid` itself is gone.
pub fn sample(pid: u32) -> io::Result<Sample> {
    let mut s = Sample {
        cpu_seconds: 0.0,
        rss_bytes: 0,
        processes: 0,
        fds: 0,
    };
    for (i, p) in tree(pid).into_iter().enumerate() {
        let read = fs::read_to_string(format!("/proc/{p}/stat"))
            .and_then(|stat| Ok((stat, fs::read_to_string(format!("/proc/{p}/status"))?)));
        let (stat, status) = match read {
            Ok(x) => x,
            Err(e) if i == 0 => return Err(e),
            Err(_) => continue, // a descendant that just exited
        };
        let f = stat_fields(&stat).unwrap_or_default();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
            .sum();
        s.cpu_seconds += ticks as f64 / USER_HZ;
        s.rss_bytes += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024;
        s.processes += 1;
        s.fds += fs::read_dir(format!("/proc/{p}/fd")).map_or(0, |d| d.count());
    }
    Ok(s)
}

/// A before/after measurement of an optional proxy process (`--proxy-pid`).
pub struct Watch {
    pid: Option<u32>,
    before: Option<Sample>,
    started: Instant,
}

impl Watch {
    /// Takes the "before" sample (nothing when `pid` is `None`).
    pub fn start(pid: Option<u32>) -> anyhow::Result<Self> {
        let before = pid.map(sample).transpose()?;
        Ok(Watch {
            pid,
            before,
            started: Instant::now(),
        })
    }

    /// The "before" sample, if a proxy is watched.
    pub fn before(&self) -> Option<Sample> {
        self.before
    }

    /// Takes the "after" sample and returns the `proxy` JSON object (or `null`) and the proxy
    /// CPU time per operation in µs for `ops` operations (`null` without a proxy or with 0 ops).
    pub fn finish(&self, ops: u64) -> anyhow::Result<(Value, Value)> {
        let (Some(pid), Some(before)) = (self.pid, self.before) else {
            return Ok((Value::Null, Value::Null));
        };
        let after = sample(pid)?;
        let wall = self.started.elapsed().as_secs_f64();
        let cpu = (after.cpu_seconds - before.cpu_seconds).max(0.0);
        let proxy = json!({
            "pid": pid,
            "processes": after.processes,
            "cpu_seconds": cpu,
            "cpu_util": if wall > 0.0 { cpu / wall } else { 0.0 },
            "rss_before_bytes": before.rss_bytes,
            "rss_after_bytes": after.rss_bytes,
            "fds_before": before.fds,
            "fds_after": after.fds,
        });
        let per_op = if ops > 0 {
            json!(cpu * 1e6 / ops as f64)
        } else {
            Value::Null
        };
        Ok((proxy, per_op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_fields_after_comm_with_spaces_and_parens() {
        let line = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0";
        let f = stat_fields(line).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "7");
        assert_eq!((f[11], f[12]), ("250", "31"));
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.processes >= 1);
        assert!(s.fds >= 3, "stdin, stdout, stderr at least");
        assert!(tree(std::process::id()).contains(&std::process::id()));
    }
}
