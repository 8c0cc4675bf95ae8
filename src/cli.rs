//! Command-line flags. Every flag also reads an environment variable `DERMAGA_<FLAG>`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::control::names::ObjectName;
use crate::ops::logging::LogFormat;

/// dermaga: one IP, many ports. A port-mapped TCP ingress gateway for Kubernetes, configured
/// by an ingress-nginx `tcp-services` ConfigMap.
#[derive(Debug, Parser)]
#[command(name = "dermaga", version, about, long_about = None)]
pub struct Cli {
    /// What to do; with none, run the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Gateway flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway on the built-in example (scenario S1: ports 10000 and 20000 to two
    /// example backends on 127.0.0.2 and 127.0.0.3), with no cluster: `nc 127.0.0.1 10000`.
    Demo(DemoArgs),
}

/// Flags of `dermaga demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the example configuration (edit it while the demo runs: it is reloaded).
    #[arg(long, env = "DERMAGA_DEMO_CONFIG")]
    pub write_config: Option<PathBuf>,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 5s, 2m)"))
}

/// Flags of the gateway.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// File provider: a YAML file of ConfigMaps, Services and EndpointSlices (multi-document or
    /// `kind: List`), reloaded when it changes. Without it, the Kubernetes provider is used.
    #[arg(long, env = "DERMAGA_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Kubeconfig for the Kubernetes provider (default: in-cluster config, then KUBECONFIG).
    #[arg(long, env = "DERMAGA_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The TCP port map, NAMESPACE/NAME (same flag as ingress-nginx).
    #[arg(
        long,
        env = "DERMAGA_TCP_SERVICES_CONFIGMAP",
        value_name = "NS/NAME",
        default_value = "dermaga/tcp-services"
    )]
    pub tcp_services_configmap: ObjectName,

    /// The UDP port map, NAMESPACE/NAME (same flag as ingress-nginx). Not served yet: UDP
    /// forwarding is not part of this version.
    #[arg(long, env = "DERMAGA_UDP_SERVICES_CONFIGMAP", value_name = "NS/NAME")]
    pub udp_services_configmap: Option<ObjectName>,

    /// Address data ports are bound to (default: all addresses, IPv4 and IPv6).
    #[arg(long, env = "DERMAGA_LISTEN_ADDRESS", value_name = "IP")]
    pub listen_address: Option<IpAddr>,

    /// Address of the admin HTTP server. Its port is reserved: no port-map entry may use it.
    #[arg(
        long,
        env = "DERMAGA_ADMIN_ADDRESS",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:10254"
    )]
    pub admin_address: SocketAddr,

    /// How long connections on a removed port (or at shutdown) may run before they are closed.
    #[arg(long, env = "DERMAGA_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// Time allowed for one connect to an endpoint.
    #[arg(long, env = "DERMAGA_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub connect_timeout: Duration,

    /// Endpoints tried per connection at most, a different one each time (refused, reset and
    /// timed-out connects move on to the next).
    #[arg(long, env = "DERMAGA_CONNECT_ATTEMPTS", value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub connect_attempts: u16,

    /// Time a client has to send its PROXY protocol header on ports that expect one.
    #[arg(long, env = "DERMAGA_PROXY_HEADER_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub proxy_header_timeout: Duration,

    /// Pipes that may exist at once for zero-copy forwarding (two per connection); connections
    /// beyond that use a buffered copy. 0 disables splice.
    #[arg(
        long,
        env = "DERMAGA_MAX_PIPES",
        value_name = "N",
        default_value_t = 1024
    )]
    pub max_pipes: usize,

    /// Capacity asked for each pipe, in bytes.
    #[arg(long, env = "DERMAGA_PIPE_SIZE", value_name = "BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(4096..=1048576))]
    pub pipe_size: u32,

    /// How often the --config file is checked for changes.
    #[arg(long, env = "DERMAGA_CONFIG_POLL_INTERVAL", value_name = "DURATION", default_value = "250ms", value_parser = duration)]
    pub config_poll_interval: Duration,

    /// Log format.
    #[arg(long, env = "DERMAGA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log level or filter (RUST_LOG, when set, wins).
    #[arg(long, env = "DERMAGA_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}
