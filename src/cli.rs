//! Command-line flags. Every gateway flag also reads an environment variable `DERMAGA_<FLAG>`,
//! and may be given before or after a subcommand.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::names::ObjectName;
use crate::telemetry::access_log::AccessLogFormat;
use crate::telemetry::logging::{LogFormat, LogLevel};

/// dermaga: one IP, many ports. A port-mapped TCP/UDP ingress gateway for Kubernetes, configured
/// by ingress-nginx `tcp-services` and `udp-services` ConfigMaps.
#[derive(Debug, Parser)]
#[command(name = "dermaga", version, long_about = None)]
pub struct Cli {
    /// What to do; with none, run the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Gateway flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands; without one, `dermaga` serves.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway on the built-in example (scenario S1: ports 10000 and 20000 to two
    /// example backends on 127.0.0.2 and 127.0.0.3), with no cluster: `nc 127.0.0.1 10000`.
    Demo(DemoArgs),
    /// Check port maps offline (files of ConfigMaps, or whole manifests) before applying them:
    /// prints every problem with its key and value; exit code 1 when an entry is rejected.
    Check(CheckArgs),
    /// Name the mistakes behind failing connections, with the fix: reads Services, Pods, their
    /// workloads and the port maps with your kubeconfig (read-only); exit code 1 when a
    /// finding is a warning or worse.
    Doctor(DoctorArgs),
}

/// Flags of `dermaga doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The namespace to examine (default: the kubeconfig context's).
    #[arg(
        long,
        short = 'n',
        value_name = "NS",
        conflicts_with = "all_namespaces"
    )]
    pub namespace: Option<String>,
    /// Examine every namespace.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// `text` (for people; coloured on a terminal unless NO_COLOR is set) or `json`.
    #[arg(long, value_enum, default_value_t = DoctorOutput::Text)]
    pub output: DoctorOutput,
    /// The gateway's metrics (`http://<pod IP>:10254/metrics`): its failed connects per
    /// endpoint are joined to the pods and workloads behind them.
    #[arg(long, value_name = "URL")]
    pub gateway_metrics: Option<String>,
}

/// The output of `dermaga doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DoctorOutput {
    /// For people.
    Text,
    /// For tools: one JSON object.
    Json,
}

/// Flags of `dermaga demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the example configuration (edit it while the demo runs: it is reloaded).
    #[arg(long, env = "DERMAGA_WRITE_CONFIG", value_name = "PATH")]
    pub write_config: Option<PathBuf>,
}

/// Flags of `dermaga check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// YAML files (multi-document or `kind: List`), read together as one configuration.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 5s, 2m)"))
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d < Duration::from_millis(10) => Err(format!("{s} is too short: at least 10ms")),
        d => Ok(d),
    }
}

fn interval_or_off(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Ok(d),
        d if d < Duration::from_millis(100) => Err(format!(
            "{s} is too short: at least 100ms between probes, or 0s for off"
        )),
        d => Ok(d),
    }
}

/// A size in bytes, with an optional binary unit (`KiB`, `MiB`, `GiB`): 1 KiB to 1 GiB.
fn byte_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit {unit:?}: write bytes, or a number with KiB, MiB or GiB (16MiB)"
            ));
        }
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("{s:?} is not a size: write bytes, or a number with KiB, MiB or GiB (16MiB)")
    })?;
    match n.checked_mul(scale) {
        Some(b) if (1 << 10..=1 << 30).contains(&b) => Ok(b),
        _ => Err(format!("{s} is out of range: 1KiB to 1GiB")),
    }
}

/// `true` or `false` (also `yes`/`no`, `on`/`off`, `1`/`0`, `y`/`n`, `t`/`f`, any case); a bad
/// value's error lists `true, false`.
fn boolean() -> impl clap::builder::TypedValueParser<Value = bool> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    const TRUE: [&str; 5] = ["yes", "on", "1", "y", "t"];
    const FALSE: [&str; 5] = ["no", "off", "0", "n", "f"];
    PossibleValuesParser::new([
        PossibleValue::new("true").aliases(TRUE),
        PossibleValue::new("false").aliases(FALSE),
    ])
    .map(|s| {
        let s = s.to_ascii_lowercase();
        s == "true" || TRUE.contains(&s.as_str())
    })
}

/// A duration that may be 0 (off), else at least 10ms.
fn duration_or_off(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Ok(d),
        _ => positive_duration(s),
    }
}

/// Flags of the gateway.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// File provider: a YAML file of ConfigMaps, Services and EndpointSlices (multi-document or
    /// `kind: List`), reloaded when it changes. Without it, dermaga watches the Kubernetes API.
    #[arg(
        help_heading = "Configuration source",
        long,
        global = true,
        env = "DERMAGA_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    /// Kubeconfig for the Kubernetes API provider (without it: $KUBECONFIG, then
    /// ~/.kube/config, then the in-cluster service account).
    #[arg(
        help_heading = "Configuration source",
        long,
        global = true,
        env = "DERMAGA_KUBECONFIG",
        value_name = "PATH"
    )]
    pub kubeconfig: Option<PathBuf>,

    /// The TCP port map, NAMESPACE/NAME (same flag as ingress-nginx).
    #[arg(
        help_heading = "Configuration source",
        long,
        global = true,
        env = "DERMAGA_TCP_SERVICES_CONFIGMAP",
        value_name = "NS/NAME",
        default_value = "dermaga/tcp-services"
    )]
    pub tcp_services_configmap: ObjectName,

    /// The UDP port map, NAMESPACE/NAME (same flag as ingress-nginx). Without it, no UDP port
    /// is opened.
    #[arg(
        help_heading = "Configuration source",
        long,
        global = true,
        env = "DERMAGA_UDP_SERVICES_CONFIGMAP",
        value_name = "NS/NAME"
    )]
    pub udp_services_configmap: Option<ObjectName>,

    /// Kubernetes API provider: also watch the Gateway API (GatewayClass, Gateway, TCPRoute,
    /// UDPRoute, ReferenceGrant v1) in every namespace. Needs the standard-channel CRDs of
    /// Gateway API v1.6 and the RBAC of deploy/components/gateway-api (docs/gateway-api.md).
    #[arg(
        help_heading = "Configuration source",
        long,
        global = true,
        env = "DERMAGA_GATEWAY_API"
    )]
    pub gateway_api: bool,

    /// The LoadBalancer Service in front of dermaga, NAMESPACE/NAME (same flag as
    /// ingress-nginx): its addresses are reported in the Gateways' `status.addresses`.
    #[arg(
        help_heading = "Configuration source",
        long,
        global = true,
        env = "DERMAGA_PUBLISH_SERVICE",
        value_name = "NS/NAME"
    )]
    pub publish_service: Option<ObjectName>,

    /// Keep this Service's ports (the LoadBalancer in front of dermaga), NAMESPACE/NAME, equal
    /// to the mapped ports, by server-side apply (field manager `dermaga`, never forced):
    /// ports are added and removed with the maps; ports other managers added stay. Needs
    /// `patch` on that Service (deploy/components/manage-service-ports).
    #[arg(
        help_heading = "Configuration source",
        long,
        global = true,
        env = "DERMAGA_MANAGE_SERVICE_PORTS",
        value_name = "NS/NAME"
    )]
    pub manage_service_ports: Option<ObjectName>,

    /// The `controllerName` of the GatewayClasses whose Gateways dermaga serves.
    #[arg(
        help_heading = "Configuration source",
        long,
        global = true,
        env = "DERMAGA_GATEWAY_CONTROLLER_NAME",
        value_name = "NAME",
        default_value = crate::control::gateway_api::DEFAULT_CONTROLLER_NAME
    )]
    pub gateway_controller_name: String,

    /// Address data ports are bound to (default: all addresses, IPv4 and IPv6).
    #[arg(
        help_heading = "Listening",
        long,
        global = true,
        env = "DERMAGA_LISTEN_ADDRESS",
        value_name = "IP"
    )]
    pub listen_address: Option<IpAddr>,

    /// Address of the admin HTTP server (/healthz, /readyz, /metrics, /routes). Its port is
    /// reserved: no port-map entry may use it. Keep it out of the LoadBalancer Service's ports.
    #[arg(
        help_heading = "Listening",
        long,
        global = true,
        env = "DERMAGA_ADMIN_ADDRESS",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:10254"
    )]
    pub admin_address: SocketAddr,

    /// A second address that serves only /healthz and /readyz, for the kubelet's probes, so that
    /// the admin address (which shows every Service, pod name and IP on /routes) can be closed
    /// to all but the metrics scrapers. Its port is reserved like the admin port. Default: none
    /// (the probes use the admin address, which always serves them too).
    #[arg(
        help_heading = "Listening",
        long,
        global = true,
        env = "DERMAGA_HEALTH_ADDRESS",
        value_name = "ADDR:PORT"
    )]
    pub health_address: Option<SocketAddr>,

    /// Access log on stdout: one line per connection when it ends.
    #[arg(
        help_heading = "Logs",
        long,
        global = true,
        env = "DERMAGA_ACCESS_LOG",
        value_enum,
        default_value = "json"
    )]
    pub access_log: AccessLogFormat,

    /// Access-log records that may wait to be written; beyond, records are dropped (and counted
    /// in dermaga_access_log_dropped_total) rather than slowing connections down.
    #[arg(
        help_heading = "Logs",
        long,
        global = true,
        env = "DERMAGA_ACCESS_LOG_BUFFER",
        value_name = "N",
        default_value_t = 16384
    )]
    pub access_log_buffer: usize,

    /// How long the open connections of a port removed from the port map may run before they
    /// are closed (at shutdown, --shutdown-grace applies instead).
    #[arg(help_heading = "Shutdown and drain", long, global = true, env = "DERMAGA_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// On SIGTERM, how long to keep accepting after /readyz turns 503, so load balancers and
    /// endpoint lists stop sending here before the listeners close (the built-in preStop sleep).
    #[arg(help_heading = "Shutdown and drain", long, global = true, env = "DERMAGA_SHUTDOWN_DELAY", value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub shutdown_delay: Duration,

    /// On SIGTERM, after --shutdown-delay: every port stops accepting, and open TCP connections
    /// and UDP flows may finish for this long; the rest are then closed and dermaga exits 0.
    /// terminationGracePeriodSeconds must exceed --shutdown-delay + this + 5s (access-log flush).
    #[arg(help_heading = "Shutdown and drain", long, global = true, env = "DERMAGA_SHUTDOWN_GRACE", value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Bind data ports with SO_REUSEPORT so that a second dermaga can bind them while this one
    /// runs and take every new connection from it (restart handover on one host); false: a
    /// second process cannot bind them.
    #[arg(help_heading = "Listening", long, global = true, env = "DERMAGA_REUSE_PORT", value_name = "BOOL", default_value = "true", num_args = 0..=1, require_equals = true, default_missing_value = "true", ignore_case = true, value_parser = boolean())]
    pub reuse_port: bool,

    /// Time allowed for one connect to an endpoint.
    #[arg(help_heading = "Endpoints: connects, retries and health", long, global = true, env = "DERMAGA_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = positive_duration)]
    pub connect_timeout: Duration,

    /// Endpoints tried per connection at most, a different one each time (refused, reset and
    /// timed-out connects move on to the next).
    #[arg(help_heading = "Endpoints: connects, retries and health", long, global = true, env = "DERMAGA_CONNECT_ATTEMPTS", value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub connect_attempts: u16,

    /// Passive health: an endpoint whose connects fail (refused, reset, timed out,
    /// unreachable) this many times in a row is ejected: no new connections for
    /// --ejection-time, doubling with each ejection in a row up to --max-ejection-time. 0: never.
    /// When every endpoint of a port is ejected, all are tried (health never empties a port).
    #[arg(
        help_heading = "Endpoints: connects, retries and health",
        long,
        global = true,
        env = "DERMAGA_EJECT_AFTER_FAILURES",
        value_name = "N",
        default_value_t = 3
    )]
    pub eject_after_failures: u32,

    /// Length of an endpoint's first ejection.
    #[arg(help_heading = "Endpoints: connects, retries and health", long, global = true, env = "DERMAGA_EJECTION_TIME", value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    pub ejection_time: Duration,

    /// Longest ejection.
    #[arg(help_heading = "Endpoints: connects, retries and health", long, global = true, env = "DERMAGA_MAX_EJECTION_TIME", value_name = "DURATION", default_value = "5m", value_parser = positive_duration)]
    pub max_ejection_time: Duration,

    /// Active health checks for every TCP port: a TCP connect to each endpoint this often
    /// (0s: off, except on ports whose "<port>.health-check-interval" option sets one).
    #[arg(help_heading = "Endpoints: connects, retries and health", long, global = true, env = "DERMAGA_HEALTH_CHECK_INTERVAL", value_name = "DURATION", default_value = "0s", value_parser = interval_or_off)]
    pub health_check_interval: Duration,

    /// Time allowed for one health-check connect.
    #[arg(help_heading = "Endpoints: connects, retries and health", long, global = true, env = "DERMAGA_HEALTH_CHECK_TIMEOUT", value_name = "DURATION", default_value = "2s", value_parser = positive_duration)]
    pub health_check_timeout: Duration,

    /// Passing checks in a row that make an unhealthy endpoint healthy again.
    #[arg(help_heading = "Endpoints: connects, retries and health", long, global = true, env = "DERMAGA_HEALTH_CHECK_HEALTHY_THRESHOLD", value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub health_check_healthy_threshold: u32,

    /// Failing checks in a row that make an endpoint unhealthy (no new connections).
    #[arg(help_heading = "Endpoints: connects, retries and health", long, global = true, env = "DERMAGA_HEALTH_CHECK_UNHEALTHY_THRESHOLD", value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub health_check_unhealthy_threshold: u32,

    /// Time a client has to send its PROXY protocol header on ports that expect one.
    #[arg(help_heading = "Endpoints: connects, retries and health", long, global = true, env = "DERMAGA_PROXY_HEADER_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = positive_duration)]
    pub proxy_header_timeout: Duration,

    // Connection limits (issue #5).
    /// A TCP connection with no byte moving either way for this long is cut (both peers get a
    /// reset). 0s: never (the default). A port's "<port>.idle-timeout" option overrides it.
    #[arg(help_heading = "Limits and timeouts", long, global = true, env = "DERMAGA_IDLE_TIMEOUT", value_name = "DURATION", default_value = "0s", value_parser = duration_or_off)]
    pub idle_timeout: Duration,

    /// TCP connections open at once in the whole process; beyond, new ones are reset at once
    /// (dermaga_connections_refused_total{reason="max_connections"}). 0: no limit (the default;
    /// the descriptor limit, ulimit -n, is then the ceiling: about two descriptors per connection).
    #[arg(
        help_heading = "Limits and timeouts",
        long,
        global = true,
        env = "DERMAGA_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_connections: usize,

    /// TCP connections open at once on one port; beyond, new ones are reset at once. 0: no limit
    /// (the default). A port's "<port>.max-connections" option overrides it.
    #[arg(
        help_heading = "Limits and timeouts",
        long,
        global = true,
        env = "DERMAGA_MAX_CONNECTIONS_PER_PORT",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_connections_per_port: usize,

    /// Threads that run connections (0: one per CPU this process may use). With one, dermaga
    /// runs a single-threaded runtime: no work stealing, no wake-ups across threads.
    #[arg(help_heading = "Listening", 
        long,
        global = true,
        env = "DERMAGA_WORKER_THREADS",
        value_name = "N",
        default_value_t = 0,
        value_parser = clap::value_parser!(u16).range(0..=1024)
    )]
    pub worker_threads: u16,

    /// Pipes that may exist at once for zero-copy forwarding (two per connection); connections
    /// beyond that use a buffered copy. 0 disables splice.
    #[arg(
        help_heading = "Limits and timeouts",
        long,
        global = true,
        env = "DERMAGA_MAX_PIPES",
        value_name = "N",
        default_value_t = 1024
    )]
    pub max_pipes: usize,

    /// Capacity asked for each pipe, in bytes.
    #[arg(help_heading = "Limits and timeouts", long, global = true, env = "DERMAGA_PIPE_SIZE", value_name = "BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(4096..=1048576))]
    pub pipe_size: u32,

    /// How often the --config file is checked for changes.
    #[arg(help_heading = "Configuration source", long, global = true, env = "DERMAGA_CONFIG_POLL_INTERVAL", value_name = "DURATION", default_value = "250ms", value_parser = positive_duration)]
    pub config_poll_interval: Duration,

    /// Largest --config file read (bytes; or with a unit: 512KiB, 16MiB, 1GiB); a larger one
    /// is refused before it is read (at start: exit 1; on reload: the last good configuration
    /// stays). Also the limit for each file of `dermaga check`.
    #[arg(help_heading = "Configuration source", long, global = true, env = "DERMAGA_CONFIG_MAX_BYTES", value_name = "BYTES", default_value = "16MiB", value_parser = byte_size)]
    pub config_max_bytes: u64,

    /// Most ports one range key of a port map (`"30000-30099"`) may open; a longer range is
    /// rejected as a configuration error. Each port is a listener (a descriptor) and, with
    /// --manage-service-ports, a port of the LoadBalancer Service: mind the cloud's limits.
    #[arg(help_heading = "Limits and timeouts", long, global = true, env = "DERMAGA_MAX_PORT_RANGE", value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=10000))]
    pub max_port_range: u16,

    /// A UDP flow with no datagram either way for this long ends (its upstream socket closes).
    #[arg(help_heading = "Limits and timeouts", long, global = true, env = "DERMAGA_UDP_IDLE_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    pub udp_idle_timeout: Duration,

    /// UDP flows per port at most; datagrams from new clients beyond that are dropped (and
    /// counted in dermaga_udp_datagrams_dropped_total{reason="max_flows"}).
    #[arg(
        help_heading = "Limits and timeouts",
        long,
        global = true,
        env = "DERMAGA_UDP_MAX_FLOWS",
        value_name = "N",
        default_value_t = 65536
    )]
    pub udp_max_flows: usize,

    /// Sockets bound on each UDP port (SO_REUSEPORT; above 1 needs --reuse-port), each read by its own
    /// task so that several worker threads can receive one port's datagrams; the kernel hashes
    /// each client to one of them. A successor taking over the ports must use the same number.
    #[arg(
        help_heading = "Limits and timeouts",
        long,
        global = true,
        env = "DERMAGA_UDP_SOCKETS_PER_PORT",
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub udp_sockets_per_port: u16,

    /// Listening sockets bound on each TCP port (SO_REUSEPORT; above 1 needs --reuse-port), each with
    /// its own accept loop, against one listener whose connections tokio's work stealing
    /// spreads; the kernel hashes each new connection to one. A successor taking over the
    /// ports must use the same number.
    #[arg(
        help_heading = "Limits and timeouts",
        long,
        global = true,
        env = "DERMAGA_TCP_LISTENERS_PER_PORT",
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub tcp_listeners_per_port: u16,

    /// Log format (logs go to stderr; the access log goes to stdout).
    #[arg(
        help_heading = "Logs",
        long,
        global = true,
        env = "DERMAGA_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Least severe level logged (RUST_LOG, when set, wins, and takes filters such as
    /// `info,dermaga::data=debug`).
    #[arg(
        help_heading = "Logs",
        long,
        global = true,
        env = "DERMAGA_LOG_LEVEL",
        value_enum,
        default_value = "info"
    )]
    pub log_level: LogLevel,
}

#[cfg(test)]
mod limit_flag_tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("dermaga").chain(args.iter().copied())).map(|c| c.run)
    }

    #[test]
    fn limits_are_off_by_default_and_idle_timeout_takes_zero_or_at_least_10ms() {
        let run = parse(&[]).unwrap();
        assert_eq!(run.idle_timeout, Duration::ZERO);
        assert_eq!((run.max_connections, run.max_connections_per_port), (0, 0));
        let run = parse(&[
            "--idle-timeout",
            "90s",
            "--max-connections",
            "1000",
            "--max-connections-per-port",
            "200",
        ])
        .unwrap();
        assert_eq!(run.idle_timeout, Duration::from_secs(90));
        assert_eq!(
            (run.max_connections, run.max_connections_per_port),
            (1000, 200)
        );
        assert_eq!(
            parse(&["--idle-timeout", "0s"]).unwrap().idle_timeout,
            Duration::ZERO
        );
        let err = parse(&["--idle-timeout", "5ms"]).unwrap_err().to_string();
        assert!(err.contains("at least 10ms"), "{err}");
        let err = parse(&["--max-connections", "lots"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'lots' for '--max-connections"), "{err}");
    }
}

#[cfg(test)]
mod enum_flag_tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("dermaga").chain(args.iter().copied())).map(|c| c.run)
    }

    #[test]
    fn reuse_port_takes_the_usual_spellings_of_a_boolean() {
        assert!(parse(&[]).unwrap().reuse_port);
        assert!(parse(&["--reuse-port"]).unwrap().reuse_port);
        for yes in ["true", "TRUE", "yes", "on", "1", "y", "t"] {
            assert!(
                parse(&[&format!("--reuse-port={yes}")]).unwrap().reuse_port,
                "{yes}"
            );
        }
        for no in ["false", "False", "no", "off", "0", "n", "f"] {
            assert!(
                !parse(&[&format!("--reuse-port={no}")]).unwrap().reuse_port,
                "{no}"
            );
        }
        let err = parse(&["--reuse-port=maybe"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("[possible values: true, false]"),
            "{err}"
        );
    }

    #[test]
    fn log_level_takes_only_the_five_levels() {
        assert_eq!(parse(&[]).unwrap().log_level, LogLevel::Info);
        assert_eq!(
            parse(&["--log-level", "warn"]).unwrap().log_level,
            LogLevel::Warn
        );
        for bad in ["warning", "verbose", "", "info,dermaga=debug"] {
            let err = parse(&["--log-level", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert!(
                err.to_string()
                    .contains("[possible values: error, warn, info, debug, trace]"),
                "{bad:?}: {err}"
            );
        }
    }
}
