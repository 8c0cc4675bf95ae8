//! What the compare runner needs from the machine and what it records about it: the programs
//! each contender needs (and the Debian packages that provide them: nothing is installed
//! here), the machine (lscpu, kernel, memory) and the versions of the contenders.

use std::path::Path;
use std::process::Command;

use super::contenders::{Contender, NGINX_STREAM_MODULE};
use super::topology::Kind;
use super::workloads::Workload;

/// A program (or file) a run needs and the Debian package that provides it.
struct Need {
    what: &'static str,
    present: bool,
    package: &'static str,
}

/// Where `program` is: on PATH, else in /usr/sbin or /sbin (Debian puts nginx, haproxy and
/// dnsmasq there, and not every user's PATH has them); the bare name if nowhere.
pub fn program(program: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| program.into())
}

fn on_path(name: &str) -> bool {
    program(name).is_absolute()
}

/// Checks every program the chosen contenders, workloads and topology need; on anything
/// missing, returns an error that names it and gives the apt-get command
/// (`loadtest/compare.sh` installs them first).
pub fn check(
    contenders: &[Contender],
    workloads: &[Workload],
    topology: Kind,
    dermaga: &Path,
) -> anyhow::Result<()> {
    let mut needs = vec![Need {
        what: "taskset",
        present: on_path("taskset"),
        package: "util-linux",
    }];
    let program = |what: &'static str, package: &'static str| Need {
        what,
        present: on_path(what),
        package,
    };
    for w in workloads {
        needs.extend(match w {
            Workload::Iperf1 | Workload::Iperf4 => vec![program("iperf3", "iperf3")],
            Workload::Redis | Workload::RedisNew => vec![
                program("redis-server", "redis-server"),
                program("redis-benchmark", "redis-tools"),
            ],
            Workload::Dnsperf => vec![
                program("dnsperf", "dnsperf"),
                program("dnsmasq", "dnsmasq-base"),
            ],
            _ => vec![],
        });
    }
    if topology == Kind::Veth {
        needs.push(program("ip", "iproute2"));
    }
    if contenders.contains(&Contender::Nginx) {
        needs.push(Need {
            what: "nginx",
            present: on_path("nginx"),
            package: "nginx-light",
        });
        needs.push(Need {
            what: NGINX_STREAM_MODULE,
            present: Path::new(NGINX_STREAM_MODULE).is_file(),
            package: "libnginx-mod-stream",
        });
    }
    if contenders.contains(&Contender::Haproxy) {
        needs.push(Need {
            what: "haproxy",
            present: on_path("haproxy"),
            package: "haproxy",
        });
    }
    let missing: Vec<&Need> = needs.iter().filter(|n| !n.present).collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        let mut what: Vec<String> = missing
            .iter()
            .map(|n| format!("{} (package {})", n.what, n.package))
            .collect();
        what.dedup();
        let mut pkgs: Vec<&str> = missing.iter().map(|n| n.package).collect();
        pkgs.sort();
        pkgs.dedup();
        problems.push(format!(
            "missing: {}\n  install with: apt-get update && apt-get install -y {}",
            what.join(", "),
            pkgs.join(" ")
        ));
    }
    let dermagas = [Contender::Dermaga, Contender::DermagaCopy];
    if contenders.iter().any(|c| dermagas.contains(c)) && !dermaga.is_file() {
        problems.push(format!(
            "missing: {} (the dermaga release build)\n  build it with: cargo build --release -p dermaga",
            dermaga.display()
        ));
    }
    anyhow::ensure!(
        problems.is_empty(),
        "{}\n(or leave contenders out with --contenders)",
        problems.join("\n")
    );
    Ok(())
}

/// Runs a command and returns its stdout and stderr together, trimmed ("" if it fails).
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_string()
        })
        .unwrap_or_default()
}

/// One line about the machine: CPU model and count, kernel, memory.
pub fn machine() -> String {
    let lscpu = output("lscpu", &[]);
    let field = |name: &str| {
        lscpu
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let model = field("Model name:").unwrap_or_else(|| "unknown CPU".into());
    let cpus = field("CPU(s):").unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!(
        "{model}, {cpus} CPUs (lscpu), Linux {}, {mem_gib:.0} GiB",
        kernel.trim()
    )
}

/// The versions of the contenders, as their own `-v` prints them, and dermaga's git revision;
/// then those of the real clients and servers the workloads use.
pub fn versions(contenders: &[Contender], workloads: &[Workload]) -> Vec<String> {
    let mut v = Vec::new();
    if contenders
        .iter()
        .any(|c| [Contender::Dermaga, Contender::DermagaCopy].contains(c))
    {
        let rev = output("git", &["rev-parse", "--short", "HEAD"]);
        let dirty =
            !output("git", &["status", "--porcelain", "--", "src", "Cargo.toml"]).is_empty();
        v.push(format!(
            "dermaga {}{}",
            if rev.is_empty() {
                "(unknown revision)"
            } else {
                &rev
            },
            if dirty {
                " with uncommitted changes"
            } else {
                ""
            }
        ));
    }
    if contenders.contains(&Contender::Nginx) {
        v.push(output("nginx", &["-v"]).replace("nginx version: ", ""));
    }
    if contenders.contains(&Contender::Haproxy) {
        let h = output("haproxy", &["-v"]);
        let first = h.lines().next().unwrap_or("haproxy");
        v.push(first.split(" - ").next().unwrap_or(first).to_string());
    }
    let first_line = |s: String| s.lines().next().unwrap_or_default().to_string();
    let uses = |ws: &[Workload]| workloads.iter().any(|w| ws.contains(w));
    if uses(&[Workload::Iperf1, Workload::Iperf4]) {
        v.push(first_line(output("iperf3", &["--version"])));
    }
    if uses(&[Workload::Redis, Workload::RedisNew]) {
        v.push(first_line(output("redis-server", &["--version"])));
    }
    if uses(&[Workload::Dnsperf]) {
        let dnsperf = output("dnsperf", &["-h"]);
        if let Some(ver) = dnsperf.lines().find(|l| l.starts_with("Version")) {
            v.push(format!(
                "dnsperf {}",
                ver.trim_start_matches("Version").trim()
            ));
        }
        v.push(first_line(output("dnsmasq", &["--version"])));
    }
    v
}
