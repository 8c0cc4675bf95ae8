//! `loadtest compare`: dermaga side by side with nginx (stream module) and HAProxy (mode
//! tcp) and the direct path, on this machine, in one run.
//!
//! A subcommand rather than a shell script so that process lifetimes (every proxy and
//! backend is stopped on every exit path, nginx's worker included), the /proc readings, the
//! statistics and the SVG output are ordinary Rust with unit tests, and no python is needed;
//! `loadtest/compare.sh` only builds the release binaries and calls it.
//!
//! How it runs: it checks for the programs it needs (installing nothing; it prints the
//! apt-get command), pins itself to the load CPU, starts one tagged backend per contender on
//! the load CPU, and then, round by round, for every workload and every contender (order
//! rotated each round), starts a fresh proxy pinned to the proxy CPU, checks with the tag
//! probe that it reaches its own backend, runs the load generator (this binary, pinned to the
//! load CPU, with `--proxy-pid`) and stops the proxy. The latency workload's rate is fixed
//! before the first round at 50 % of nginx's closed-loop request rate (a calibration run).
//! Results go to `--out` (results.jsonl, report.md, images/); `--write-docs` also puts the
//! report between the markers in docs/benchmarks.md and the charts in docs/images/.

mod contenders;
mod env;
pub mod failover;
mod real;
mod report;
mod svg;
mod topology;
mod workloads;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::common::{duration, hard_nofile, progress};
use contenders::{Contender, Proc, Setup, start_backend, start_proxy, wait_ready};
/// The dermaga configuration the comparisons write, for `loadtest balance` too.
pub use contenders::{DERMAGA_BENCH_FLAGS, Route, dermaga_config_with};
use report::{Meta, Run};
use workloads::{Params, Workload};

/// Options of `loadtest compare`.
#[derive(clap::Args)]
pub struct Args {
    /// Rounds (contenders alternate within each); 3 or more for a result.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of each timed workload on each contender.
    #[arg(long, default_value = "5s", value_parser = duration)]
    duration: Duration,
    /// Which paths to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,dermaga,nginx,haproxy,dermaga-copy"
    )]
    contenders: Vec<Contender>,
    /// Where the processes run: all on loopback, or client, gateway and backend in network
    /// namespaces of their own joined by veth pairs (made and removed by the run; root).
    #[arg(long, value_enum, default_value = "loopback")]
    topology: topology::Kind,
    /// Which workloads to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bulk1,bulk4,rr,latency,conn,idle,udp,iperf1,iperf4,redis,redis-new,dnsperf"
    )]
    workloads: Vec<Workload>,
    /// Connections of the idle workload (fewer if the open-files limit cannot hold them).
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// How long the idle workload holds its connections.
    #[arg(long, default_value = "1s", value_parser = duration)]
    idle_hold: Duration,
    /// Offered rate of the latency workload (default: 50 % of nginx's closed-loop rate).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// CPU for every proxy (the first of them with --proxy-threads above 1).
    #[arg(long, default_value_t = 0)]
    proxy_cpu: usize,
    /// Worker processes (nginx) or threads (HAProxy, dermaga) of every proxy, each on a CPU
    /// of its own from --proxy-cpu on (wrapping: on a 2-CPU machine, 2 share the load's CPU).
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// CPU for the load generators and the backends.
    #[arg(long, default_value_t = 1)]
    load_cpu: usize,
    /// The dermaga binary (a release build).
    #[arg(long, default_value = "target/release/dermaga")]
    dermaga: PathBuf,
    /// An extra argument for dermaga (repeatable), e.g. `--dermaga-arg=--max-pipes=0`.
    #[arg(long = "dermaga-arg", allow_hyphen_values = true)]
    dermaga_args: Vec<String>,
    /// Directory for results.jsonl, report.md and images/.
    #[arg(long, default_value = "target/compare")]
    out: PathBuf,
    /// Also write the report into --docs and its charts into the images/ folder next to it.
    #[arg(long)]
    write_docs: bool,
    /// Second octet of the loopback addresses used: backends on 127.NET.0.10, proxies on
    /// 127.NET.0.1–3 (change it to run two comparisons at once).
    #[arg(long, default_value_t = 77)]
    net: u8,
    /// The benchmarks document for --write-docs.
    #[arg(long, default_value = "docs/benchmarks.md")]
    docs: PathBuf,
}

/// Runs the comparison.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let mut contenders = args.contenders.clone();
    contenders.sort();
    contenders.dedup();
    anyhow::ensure!(!contenders.is_empty(), "no contenders");
    env::check(&contenders, &args.workloads, args.topology, &args.dermaga)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        (1..=cpus).contains(&args.proxy_threads),
        "--proxy-threads {} must be between 1 and the {cpus} CPUs available",
        args.proxy_threads
    );
    let proxy_cpus: Vec<String> = (0..args.proxy_threads)
        .map(|i| ((args.proxy_cpu + i) % cpus).to_string())
        .collect();
    anyhow::ensure!(
        args.proxy_cpu != args.load_cpu && args.proxy_cpu.max(args.load_cpu) < cpus,
        "--proxy-cpu {} and --load-cpu {} must be two different CPUs of the {cpus} available",
        args.proxy_cpu,
        args.load_cpu
    );
    let mut set = nix::sched::CpuSet::new();
    set.set(args.load_cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    let topology = topology::Topology {
        kind: args.topology,
        net: args.net,
    };
    let _namespaces = topology.build()?;

    let nofile = hard_nofile();
    // Two descriptors per proxied connection, and 4096 to spare for a proxy's pipes,
    // listeners and the like: a proxy that runs out shows in `proxy_fds_per_conn`, not as a
    // stalled run.
    let fit = (nofile.saturating_sub(4096) / 2) as usize;
    let idle_n = args.idle_connections.min(fit);
    let idle_note = args.workloads.contains(&Workload::Idle).then(|| {
        let mut s = format!("{idle_n} connections held {:?}", args.idle_hold);
        if idle_n < args.idle_connections {
            s.push_str(&format!(
                " ({} asked; the hard open-files limit here is {nofile}, and a proxy needs two \
                 descriptors per connection plus some to spare)",
                args.idle_connections
            ));
        }
        s
    });

    let out = &args.out;
    let work = out.join("work");
    fs::create_dir_all(&work)?;
    fs::create_dir_all(out.join("images"))?;
    let dermaga = if args.dermaga.is_relative() {
        std::env::current_dir()?.join(&args.dermaga)
    } else {
        args.dermaga.clone()
    };
    let setup = Setup {
        proxy_cpus: proxy_cpus.join(","),
        proxy_threads: args.proxy_threads,
        load_cpu: args.load_cpu,
        work: fs::canonicalize(&work)?,
        dermaga,
        dermaga_args: args.dermaga_args.clone(),
        max_conns: idle_n,
        nofile,
        topology,
    };
    let exe = std::env::current_exe()?;
    let _backends: Vec<Proc> = contenders
        .iter()
        .map(|c| start_backend(&setup, &exe, *c))
        .collect::<anyhow::Result<_>>()?;
    let _servers = real::start_servers(&setup, &args.workloads)?;

    let mut params = Params {
        duration: args.duration,
        latency_rate: 0.0,
        idle_connections: idle_n,
        idle_hold: args.idle_hold,
    };
    let mut latency_note = None;
    if args.workloads.contains(&Workload::Latency) {
        let (rate, note) = match args.latency_rate {
            Some(r) => (r, format!("{r:.0} requests/s offered (--latency-rate)")),
            None => calibrate(&setup, &exe, &contenders, &params)?,
        };
        params.latency_rate = rate;
        latency_note = Some(format!(
            "{note}, 50 connections, 64 B, measured from each request's intended send time"
        ));
    }

    let plan: Vec<(usize, Workload, Contender)> = (1..=args.rounds)
        .flat_map(|round| {
            let mut order = contenders.clone();
            order.rotate_left((round - 1) % contenders.len());
            let workloads = args.workloads.clone();
            workloads.into_iter().flat_map(move |w| {
                let order = order.clone();
                order
                    .into_iter()
                    .filter(move |c| w.applies(*c))
                    .map(move |c| (round, w, c))
            })
        })
        .collect();
    let results_path = out.join("results.jsonl");
    let mut results = fs::File::create(&results_path)?;
    let bar = progress(plan.len() as u64, "compare", true);
    let started = Instant::now();
    let mut runs = Vec::new();
    for (round, w, c) in plan {
        bar.set_message(format!(
            "round {round}/{}: {} via {}",
            args.rounds,
            w.name(),
            c.name()
        ));
        let result = measure(&setup, &exe, w, c, &params)
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        let line =
            json!({"round": round, "workload": w.name(), "contender": c.name(), "result": result});
        writeln!(results, "{line}")?;
        let summary = summary(w, &result);
        bar.suspend(|| eprintln!("round {round}, {} via {}: {summary}", w.name(), c.name()));
        bar.inc(1);
        runs.push(Run {
            round,
            workload: w,
            contender: c,
            result,
        });
    }
    bar.finish_and_clear();

    let meta = Meta {
        command: std::env::var("LOADTEST_COMMAND").unwrap_or_else(|_| {
            let argv: Vec<String> = std::env::args().skip(1).collect();
            format!("loadtest {}", argv.join(" "))
        }),
        machine: env::machine(),
        versions: env::versions(&contenders, &args.workloads),
        topology: topology.name(),
        date: Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        rounds: args.rounds,
        duration: humantime::format_duration(args.duration).to_string(),
        proxy_cpus: setup.proxy_cpus.clone(),
        proxy_threads: args.proxy_threads,
        load_cpu: args.load_cpu,
        latency: latency_note,
        idle: idle_note,
    };
    let charts = report::charts(&runs, &contenders, &meta.file_prefix());
    let names: Vec<String> = charts.iter().map(|(f, _)| f.clone()).collect();
    let section = report::markdown(&meta, &runs, &contenders, &names, "images");
    for (file, svg) in &charts {
        fs::write(out.join("images").join(file), svg)?;
    }
    fs::write(out.join("report.md"), &section)?;
    if args.write_docs {
        let images = args.docs.parent().unwrap_or(Path::new(".")).join("images");
        fs::create_dir_all(&images)?;
        for (file, svg) in &charts {
            fs::write(images.join(file), svg)?;
        }
        let doc = fs::read_to_string(&args.docs).unwrap_or_default();
        fs::write(&args.docs, report::splice(&doc, &section, &meta.variant()))?;
        eprintln!("wrote {} and {}", args.docs.display(), images.display());
    }
    println!("{section}");
    eprintln!(
        "{} measurements in {:.0} s; raw results in {}, report in {}",
        runs.len(),
        started.elapsed().as_secs_f64(),
        results_path.display(),
        out.join("report.md").display()
    );
    Ok(())
}

/// One line about a measurement for the terminal: its metrics, or its error.
fn summary(w: Workload, result: &Value) -> String {
    if let Some(e) = result.get("error").and_then(Value::as_str) {
        return format!("error: {e}");
    }
    workloads::METRICS
        .iter()
        .filter(|m| m.workload == w)
        .filter_map(|m| {
            Some(format!(
                "{} {} {}",
                svg::short(m.value(result)?),
                m.unit,
                m.label
            ))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The latency workload's rate: 50 % of the closed-loop request rate of nginx (or of the
/// first contender when nginx is not in the run), measured once before the rounds.
fn calibrate(
    setup: &Setup,
    exe: &Path,
    contenders: &[Contender],
    p: &Params,
) -> anyhow::Result<(f64, String)> {
    let reference = if contenders.contains(&Contender::Nginx) {
        Contender::Nginx
    } else {
        contenders[0]
    };
    let r =
        measure(setup, exe, Workload::Rr, reference, p).context("calibrating the latency rate")?;
    let max = r["req_per_sec"]
        .as_f64()
        .context("calibration gave no req_per_sec")?;
    let rate = (max / 2.0).max(1.0);
    Ok((
        rate,
        format!(
            "{rate:.0} requests/s offered (50 % of the {max:.0} req/s {} reached closed-loop in a \
             calibration run)",
            reference.name()
        ),
    ))
}

/// One measurement: a fresh proxy, the tag probe, the load generator, the proxy stopped.
fn measure(
    setup: &Setup,
    exe: &Path,
    w: Workload,
    c: Contender,
    p: &Params,
) -> anyhow::Result<Value> {
    if w.external() {
        return real::measure(setup, w, c, p.duration);
    }
    let mut proxy = start_proxy(setup, c)?;
    wait_ready(setup, c, proxy.as_mut(), w == Workload::Udp)?;
    let pid = proxy.as_ref().map(|p| p.pid());
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(setup.load_cpu.to_string())
        .arg(exe)
        .args(w.args(setup.target(c), p, pid));
    let limit = p.duration + p.idle_hold + Duration::from_secs(90);
    let result = run_child(cmd, limit);
    drop(proxy);
    result
}

/// Runs a load generator to completion (killed after `limit`) and parses its JSON line.
fn run_child(cmd: Command, limit: Duration) -> anyhow::Result<Value> {
    let out = run_text(cmd, limit)?;
    let line = out
        .lines()
        .last()
        .context("load generator printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// Runs a client to completion (killed after `limit`) and returns its standard output; an
/// error with its standard error if it fails.
fn run_text(mut cmd: Command, limit: Duration) -> anyhow::Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    // Read both pipes while it runs: a client that prints more than a pipe holds (iperf3's
    // JSON) would otherwise block until killed.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{program} still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    anyhow::ensure!(
        status.success(),
        "{program} failed ({status}): {} {}",
        err.trim(),
        out.trim()
    );
    Ok(out)
}
