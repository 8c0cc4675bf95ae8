//! The contenders and their processes: the tagged backends, dermaga, nginx (stream module)
//! and HAProxy (mode tcp) with equivalent configurations (one worker each, connect timeout
//! 5 s, idle timeout 60 s where the proxy has one, no access log, errors only), started pinned
//! to the proxy CPU and stopped with SIGTERM (SIGKILL after 5 s).
//!
//! Every contender gets a backend of its own, tagged with its name; before a measurement the
//! runner sends the `T` probe through the proxy and checks that the right tag comes back.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::topology::{Role, Topology};

/// nginx's stream module as Debian's `libnginx-mod-stream` installs it.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
/// The port every proxy listens on (TCP and UDP), each on its own address.
const PROXY_PORT: u16 = 10000;

/// One path through which the load reaches a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Contender {
    /// No proxy: the load generator talks to the backend (the ceiling).
    Direct,
    /// dermaga, the release build.
    Dermaga,
    /// nginx's stream module.
    Nginx,
    /// HAProxy in mode tcp (no UDP).
    Haproxy,
    /// dermaga copying through user space only (`--max-pipes 0`: never splice), to compare
    /// its two ways of forwarding in one run.
    DermagaCopy,
}

impl Contender {
    /// Lower-case name, as in tables and the backend tags.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Direct => "direct",
            Contender::Dermaga => "dermaga",
            Contender::DermagaCopy => "dermaga-copy",
            Contender::Nginx => "nginx",
            Contender::Haproxy => "haproxy",
        }
    }

    /// Whether this path carries UDP (HAProxy does not proxy UDP).
    pub fn has_udp(self) -> bool {
        self != Contender::Haproxy
    }
}

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub struct Proc {
    child: Child,
    name: String,
    log: Option<PathBuf>,
}

impl Proc {
    /// Starts `cmd` with its output into `log`.
    pub fn spawn(mut cmd: Command, name: &str, log: PathBuf) -> anyhow::Result<Proc> {
        let out = fs::File::create(&log)?;
        let child = cmd
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            child,
            name: name.to_string(),
            log: Some(log),
        })
    }

    /// The process id (for nginx, the master: its worker is found as a child).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error with the log's contents when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = self
                .log
                .as_ref()
                .and_then(|l| fs::read_to_string(l).ok())
                .unwrap_or_default();
            anyhow::bail!("{} exited ({status}): {}", self.name, log.trim());
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Settings shared by every proxy configuration.
pub struct Setup {
    /// CPUs every proxy is pinned to (a taskset list, e.g. `0` or `0,1`).
    pub proxy_cpus: String,
    /// Worker processes or threads of every proxy.
    pub proxy_threads: usize,
    /// CPU the backends (and the load) are pinned to.
    pub load_cpu: usize,
    /// Where configurations and logs go.
    pub work: PathBuf,
    /// The dermaga binary and extra arguments for it.
    pub dermaga: PathBuf,
    /// Extra dermaga arguments (`--dermaga-arg`).
    pub dermaga_args: Vec<String>,
    /// Most connections a proxy must hold at once (client and upstream count separately).
    pub max_conns: usize,
    /// The hard open-files limit, which no proxy can raise.
    pub nofile: u64,
    /// Where processes run and their addresses.
    pub topology: Topology,
}

impl Setup {
    /// The address of the tagged backend of `c`: one port each on the backend address.
    pub fn backend(&self, c: Contender) -> SocketAddr {
        SocketAddr::new(self.topology.backend_ip(), 19001 + c as u16)
    }

    /// Where the load of `c` goes: its proxy's address, port 10000 (TCP and UDP), or its
    /// backend for `Direct`.
    pub fn target(&self, c: Contender) -> SocketAddr {
        match c {
            Contender::Direct => self.backend(c),
            _ => SocketAddr::new(self.topology.proxy_ip(c), PROXY_PORT),
        }
    }

    /// `program` as proxy or backend: in its namespace, pinned to its CPU.
    pub fn command(&self, role: Role, program: &Path) -> Command {
        let cpus = match role {
            Role::Gateway => self.proxy_cpus.clone(),
            Role::Backend => self.load_cpu.to_string(),
        };
        self.topology.command(role, &cpus, program)
    }
}

/// Starts the tagged backend of `c` on the load CPU and waits until it has bound its port.
pub fn start_backend(setup: &Setup, exe: &Path, c: Contender) -> anyhow::Result<Proc> {
    let mut child = setup
        .command(Role::Backend, exe)
        .args([
            "backend",
            "--listen",
            &setup.backend(c).to_string(),
            "--tag",
            c.name(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting a backend (is taskset installed?)")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .context("reading the backend's address")?;
    if line.trim().is_empty() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.kill();
        anyhow::bail!("backend for {} did not start: {}", c.name(), err.trim());
    }
    Ok(Proc {
        child,
        name: format!("backend {}", c.name()),
        log: None,
    })
}

/// What a proxy is configured to do: listen on one address (port 10000 in the benchmark),
/// and forward TCP (and UDP, when `udp`) to its backends, balanced with the proxy's default
/// method. Every backend has the same port (one EndpointSlice port for dermaga).
pub struct Route {
    /// The proxy's listener.
    pub listen: SocketAddr,
    /// Where it forwards.
    pub backends: Vec<SocketAddr>,
    /// Also UDP on the same port (the benchmark's DNS workload).
    pub udp: bool,
}

impl Route {
    /// The benchmark's route of `c`: its own target address to its own backend, TCP and UDP.
    pub fn bench(setup: &Setup, c: Contender) -> Route {
        Route {
            listen: setup.target(c),
            backends: vec![setup.backend(c)],
            udp: c.has_udp(),
        }
    }
}

/// Writes the configuration of `c` and starts it pinned to the proxy CPU; `None` for the
/// direct path. Does not wait for it: see [`wait_ready`].
pub fn start_proxy(setup: &Setup, c: Contender) -> anyhow::Result<Option<Proc>> {
    start_proxy_for(setup, c, &Route::bench(setup, c))
}

/// dermaga's flags in every benchmark: no access log, warnings only, no shutdown delay, a
/// short drain (a stopped proxy gives its ports back at once).
pub const DERMAGA_BENCH_FLAGS: [&str; 8] = [
    "--access-log",
    "off",
    "--log-level",
    "warn",
    "--shutdown-delay",
    "0s",
    "--drain-timeout",
    "1s",
];

/// [`start_proxy`] with any route.
pub fn start_proxy_for(setup: &Setup, c: Contender, route: &Route) -> anyhow::Result<Option<Proc>> {
    let work = &setup.work;
    let log = work.join(format!("{}.log", c.name()));
    let cmd = match c {
        Contender::Direct => return Ok(None),
        Contender::Dermaga | Contender::DermagaCopy => {
            let config = work.join("dermaga.yaml");
            fs::write(&config, dermaga_config(route))?;
            let mut cmd = setup.command(Role::Gateway, &setup.dermaga);
            cmd.arg("--config").arg(&config);
            cmd.args(dermaga_args(setup, route, c));
            cmd
        }
        Contender::Nginx => {
            let config = work.join("nginx.conf");
            fs::write(&config, nginx_config(setup, route))?;
            let mut cmd = setup.command(Role::Gateway, &super::env::program("nginx"));
            cmd.arg("-c").arg(&config).arg("-e").arg(&log);
            cmd
        }
        Contender::Haproxy => {
            let config = work.join("haproxy.cfg");
            fs::write(&config, haproxy_config(setup, route))?;
            let mut cmd = setup.command(Role::Gateway, &super::env::program("haproxy"));
            cmd.arg("-db").arg("-f").arg(&config);
            cmd
        }
    };
    Proc::spawn(cmd, c.name(), log).map(Some)
}

/// Whether the network namespace of `pid` has a socket bound to `addr` (IPv4): listening,
/// for TCP, from `/proc/<pid>/net/tcp` (or `udp`), so that no probe reaches the backend.
pub fn listening(pid: u32, addr: SocketAddr, udp: bool) -> bool {
    let IpAddr::V4(ip) = addr.ip() else {
        return false;
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let (file, state) = if udp { ("udp", "07") } else { ("tcp", "0A") };
    fs::read_to_string(format!("/proc/{pid}/net/{file}")).is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == state
        })
    })
}

/// dermaga's arguments after `--config FILE` for `route` (what the reports print, too):
/// listen on the route's address, admin on a free port, no access log, one worker per proxy
/// thread, and `--max-pipes 0` for dermaga-copy.
pub fn dermaga_args(setup: &Setup, route: &Route, c: Contender) -> Vec<String> {
    let ip = route.listen.ip();
    let mut a: Vec<String> = Vec::new();
    if route.udp {
        a.extend([
            "--udp-services-configmap".into(),
            "dermaga/udp-services".into(),
        ]);
    }
    a.extend([
        "--listen-address".into(),
        ip.to_string(),
        "--admin-address".into(),
        format!("{ip}:0"),
    ]);
    a.extend(DERMAGA_BENCH_FLAGS.map(String::from));
    a.push("--worker-threads".into());
    a.push(setup.proxy_threads.to_string());
    a.extend(setup.dermaga_args.iter().cloned());
    if c == Contender::DermagaCopy {
        a.extend(["--max-pipes".into(), "0".into()]);
    }
    a
}

/// Waits (up to 10 s) until `proxy` has bound `addr` (TCP, and UDP too when `udp`).
pub fn wait_listening(addr: SocketAddr, proxy: &mut Proc, udp: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = proxy.pid();
    while !(listening(pid, addr, false) && (!udp || listening(pid, addr, true))) {
        proxy.check_alive()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} does not listen on {addr} after 10 s",
            proxy.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits (up to 10 s) until the path of `c` answers the tag probe with `c`'s own tag over
/// TCP, and over UDP too when `udp`.
pub fn wait_ready(
    setup: &Setup,
    c: Contender,
    proxy: Option<&mut Proc>,
    udp: bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = format!("{}\n", c.name());
    let mut proxy = proxy;
    loop {
        if let Some(p) = proxy.as_deref_mut() {
            p.check_alive()?;
        }
        match probe(setup.target(c), c.name(), udp) {
            Ok(got) if got == want => return Ok(()),
            Ok(got) => anyhow::bail!(
                "{} reached the wrong backend: tag {:?} instead of {:?}",
                c.name(),
                got.trim(),
                c.name()
            ),
            Err(e) if Instant::now() > deadline => {
                anyhow::bail!(
                    "{} not answering on {} after 10 s: {e}",
                    c.name(),
                    setup.target(c)
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn probe(target: SocketAddr, tag: &str, udp: bool) -> std::io::Result<String> {
    let t = Duration::from_millis(500);
    let mut s = TcpStream::connect_timeout(&target, t)?;
    s.set_read_timeout(Some(t))?;
    s.write_all(b"T")?;
    let mut got = String::new();
    s.read_to_string(&mut got)?;
    if udp && got == format!("{tag}\n") {
        let u = UdpSocket::bind("0.0.0.0:0")?;
        u.set_read_timeout(Some(Duration::from_millis(200)))?;
        u.connect(target)?;
        u.send(b"T")?;
        let mut buf = [0u8; 64];
        let n = u.recv(&mut buf)?;
        return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    Ok(got)
}

/// dermaga's file-provider configuration: TCP (and UDP) port `route.listen` to a Service
/// whose one EndpointSlice lists the backends.
pub fn dermaga_config(route: &Route) -> String {
    dermaga_config_with(route, &[])
}

/// [`dermaga_config`] with per-port options of the listen port (`("balance", "random-two")`
/// becomes `"<port>.balance": "random-two"` in the TCP map).
pub fn dermaga_config_with(route: &Route, options: &[(&str, &str)]) -> String {
    let port = route.backends[0].port();
    let listen = route.listen.port();
    assert!(
        route.backends.iter().all(|b| b.port() == port),
        "one EndpointSlice port for every backend"
    );
    // One endpoint (pod) per backend.
    let endpoints = route
        .backends
        .iter()
        .map(|b| format!("{{addresses: [\"{}\"]}}", b.ip()))
        .collect::<Vec<_>>()
        .join(", ");
    let options: String = options
        .iter()
        .map(|(option, value)| format!(", \"{listen}.{option}\": \"{value}\""))
        .collect();
    let mut s = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: tcp-services, namespace: dermaga}}
data: {{"{listen}": "default/bench:80"{options}}}
---
"#
    );
    if route.udp {
        s.push_str(&format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: udp-services, namespace: dermaga}}
data: {{"{listen}": "default/bench:53"}}
---
apiVersion: v1
kind: Service
metadata: {{name: bench, namespace: default}}
spec: {{ports: [{{name: tcp, port: 80, protocol: TCP}}, {{name: dns, port: 53, protocol: UDP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: bench-1, namespace: default, labels: {{kubernetes.io/service-name: bench}}}}
addressType: IPv4
ports: [{{name: tcp, port: {port}, protocol: TCP}}, {{name: dns, port: {port}, protocol: UDP}}]
endpoints: [{endpoints}]
"#
        ));
    } else {
        s.push_str(&format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: bench, namespace: default}}
spec: {{ports: [{{name: tcp, port: 80, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: bench-1, namespace: default, labels: {{kubernetes.io/service-name: bench}}}}
addressType: IPv4
ports: [{{name: tcp, port: {port}, protocol: TCP}}]
endpoints: [{endpoints}]
"#
        ));
    }
    s
}

/// nginx: one worker, stream module, no access log; TCP (and UDP, one response per
/// datagram). Several backends make an `upstream` block with nginx's defaults (round robin,
/// `max_fails=1 fail_timeout=10s`, `proxy_next_upstream on`).
pub fn nginx_config(setup: &Setup, route: &Route) -> String {
    let work = setup.work.display();
    let listen = route.listen;
    let conns = (2 * setup.max_conns + 256).min(setup.nofile as usize);
    let (upstream, backend) = if route.backends.len() == 1 {
        (String::new(), route.backends[0].to_string())
    } else {
        let servers: String = route
            .backends
            .iter()
            .map(|b| format!("    server {b};\n"))
            .collect();
        (
            format!("  upstream be {{\n{servers}  }}\n"),
            "be".to_string(),
        )
    };
    let udp = if route.udp {
        format!(
            r#"  server {{
    listen {listen} udp;
    proxy_pass {backend};
    proxy_responses 1;
    proxy_timeout 30s;
  }}
"#
        )
    } else {
        String::new()
    };
    format!(
        r#"load_module {NGINX_STREAM_MODULE};
worker_processes {workers};
worker_rlimit_nofile {nofile};
daemon off;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx.log error;
events {{ worker_connections {conns}; }}
stream {{
  access_log off;
  proxy_connect_timeout 5s;
{upstream}  server {{
    listen {listen} backlog=4096;
    proxy_pass {backend};
    proxy_timeout 60s;
  }}
{udp}}}
"#,
        nofile = setup.nofile,
        workers = setup.proxy_threads
    )
}

/// HAProxy: one thread, mode tcp, same timeouts, no log section at all; one `server` line
/// per backend with HAProxy's defaults (round robin, no checks, `retries 3` on the same
/// server, no `option redispatch`).
pub fn haproxy_config(setup: &Setup, route: &Route) -> String {
    let listen = route.listen;
    let maxconn = setup.max_conns + 64;
    let servers: String = route
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server s{} {b}\n", i + 1))
        .collect();
    format!(
        r#"global
  nbthread {threads}
  maxconn {maxconn}
defaults
  mode tcp
  maxconn {maxconn}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind {listen} backlog 4096
  default_backend be
backend be
{servers}"#,
        threads = setup.proxy_threads
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_are_little_endian_words() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(listening(
            std::process::id(),
            l.local_addr().unwrap(),
            false
        ));
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(!listening(
            std::process::id(),
            SocketAddr::from(([127, 0, 0, 1], port)),
            false
        ));
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(listening(std::process::id(), u.local_addr().unwrap(), true));
        assert!(!listening(
            std::process::id(),
            u.local_addr().unwrap(),
            false
        ));
    }
}
