//! The workloads of a comparison, the load-generator command line of each, and the metrics
//! read from their results, with the targets of issue 7 (ratios of medians against the better
//! of nginx and HAProxy, or against nginx alone for UDP, or an absolute bound).

use std::net::SocketAddr;
use std::time::Duration;

use super::contenders::Contender;

/// One kind of load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Bulk TCP throughput, one stream.
    Bulk1,
    /// Bulk TCP throughput, four streams.
    Bulk4,
    /// Request/response, 64 B, 50 keep-alive connections, closed loop.
    Rr,
    /// Latency at a fixed offered rate (50 % of nginx's closed-loop rate).
    Latency,
    /// New connections per second: connect, 64 B round trip, close; 50 at a time.
    Conn,
    /// Idle connections held; the proxy's RSS per connection.
    Idle,
    /// DNS-sized UDP request/response, 50 client sockets.
    Udp,
    /// iperf3, one stream, against `iperf3 -s`.
    Iperf1,
    /// iperf3, four streams (`-P 4`).
    Iperf4,
    /// redis-benchmark PING (`-t ping_mbulk`), 50 keep-alive clients, against redis-server.
    Redis,
    /// redis-benchmark PING with a new connection for every request (`-k 0`).
    RedisNew,
    /// dnsperf (4 sockets, 200 queries outstanding) against dnsmasq, over UDP.
    Dnsperf,
}

/// How long a workload runs and at what sizes.
pub struct Params {
    /// Length of each timed workload.
    pub duration: Duration,
    /// Offered rate of the latency workload.
    pub latency_rate: f64,
    /// Connections opened by the idle workload.
    pub idle_connections: usize,
    /// How long the idle workload holds them.
    pub idle_hold: Duration,
}

impl Workload {
    /// Short name, as in results.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Bulk1 => "bulk1",
            Workload::Bulk4 => "bulk4",
            Workload::Rr => "rr",
            Workload::Latency => "latency",
            Workload::Conn => "conn",
            Workload::Idle => "idle",
            Workload::Udp => "udp",
            Workload::Iperf1 => "iperf1",
            Workload::Iperf4 => "iperf4",
            Workload::Redis => "redis",
            Workload::RedisNew => "redis-new",
            Workload::Dnsperf => "dnsperf",
        }
    }

    /// Whether a real client (iperf3, redis-benchmark, dnsperf) drives it, not this binary.
    pub fn external(self) -> bool {
        matches!(
            self,
            Workload::Iperf1
                | Workload::Iperf4
                | Workload::Redis
                | Workload::RedisNew
                | Workload::Dnsperf
        )
    }

    /// Whether this workload says anything on path `c` (no UDP through HAProxy, and no
    /// second dermaga for it: datagrams are never spliced; idle memory is the proxy's, so the
    /// direct path has none).
    pub fn applies(self, c: Contender) -> bool {
        match self {
            Workload::Udp | Workload::Dnsperf => c.has_udp() && c != Contender::DermagaCopy,
            Workload::Idle => c != Contender::Direct,
            _ => true,
        }
    }

    /// The `loadtest` arguments for this workload against `target`.
    pub fn args(self, target: SocketAddr, p: &Params, proxy_pid: Option<u32>) -> Vec<String> {
        let d = format!("{}ms", p.duration.as_millis());
        let rate = format!("{:.0}", p.latency_rate);
        let (n, hold) = (
            p.idle_connections.to_string(),
            format!("{}ms", p.idle_hold.as_millis()),
        );
        let rest: &[&str] = match self {
            Workload::Bulk1 => &["bulk", "--streams", "1", "--duration", &d],
            Workload::Bulk4 => &["bulk", "--streams", "4", "--duration", &d],
            Workload::Rr => &[
                "rr",
                "--connections",
                "50",
                "--size",
                "64",
                "--duration",
                &d,
            ],
            Workload::Latency => &[
                "latency",
                "--connections",
                "50",
                "--size",
                "64",
                "--rate",
                &rate,
                "--duration",
                &d,
            ],
            Workload::Conn => &[
                "conn",
                "--concurrency",
                "50",
                "--size",
                "64",
                "--duration",
                &d,
            ],
            Workload::Idle => &["idle", "--connections", &n, "--size", "64", "--hold", &hold],
            Workload::Udp => &["dns", "--clients", "50", "--duration", &d],
            _ => unreachable!("{} is run by real::measure", self.name()),
        };
        let mut a: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        a.splice(1..1, ["--target".to_string(), target.to_string()]);
        if let Some(pid) = proxy_pid {
            a.extend(["--proxy-pid".to_string(), pid.to_string()]);
        }
        a
    }
}

/// What a metric is compared with to say whether dermaga meets its target.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// No target: shown for information.
    None,
    /// dermaga ÷ the better of nginx and HAProxy (≥ for higher-is-better, ≤ otherwise).
    Peer(f64),
    /// As `Peer`, and also dermaga ÷ direct ≥ the second figure.
    PeerAndDirect(f64, f64),
    /// dermaga ÷ nginx.
    Nginx(f64),
    /// dermaga's own value at most this.
    AtMost(f64),
}

/// One figure read from every result of one workload.
pub struct Metric {
    /// The workload whose results hold it.
    pub workload: Workload,
    /// Row label in the table.
    pub label: &'static str,
    /// Unit, after scaling.
    pub unit: &'static str,
    /// JSON path in the result.
    pub path: &'static [&'static str],
    /// Multiplier from the JSON value to the unit.
    pub scale: f64,
    /// Whether more is better.
    pub higher_better: bool,
    /// The target for dermaga.
    pub target: Target,
}

/// Every metric of the report, in table order.
pub const METRICS: &[Metric] = &[
    Metric {
        workload: Workload::Bulk1,
        label: "bulk TCP, 1 stream",
        unit: "Gbit/s",
        path: &["gbit_per_sec"],
        scale: 1.0,
        higher_better: true,
        target: Target::PeerAndDirect(1.4, 0.8),
    },
    Metric {
        workload: Workload::Bulk4,
        label: "bulk TCP, 4 streams",
        unit: "Gbit/s",
        path: &["gbit_per_sec"],
        scale: 1.0,
        higher_better: true,
        target: Target::PeerAndDirect(1.4, 0.8),
    },
    Metric {
        workload: Workload::Rr,
        label: "request/response 64 B, 50 conns",
        unit: "req/s",
        path: &["req_per_sec"],
        scale: 1.0,
        higher_better: true,
        target: Target::Peer(1.0),
    },
    Metric {
        workload: Workload::Rr,
        label: "proxy CPU per request",
        unit: "µs",
        path: &["proxy_cpu_us_per_request"],
        scale: 1.0,
        higher_better: false,
        target: Target::Peer(0.7),
    },
    Metric {
        workload: Workload::Latency,
        label: "latency p50 at fixed rate",
        unit: "µs",
        path: &["latency_us", "p50"],
        scale: 1.0,
        higher_better: false,
        target: Target::None,
    },
    Metric {
        workload: Workload::Latency,
        label: "latency p99 at fixed rate",
        unit: "µs",
        path: &["latency_us", "p99"],
        scale: 1.0,
        higher_better: false,
        target: Target::Peer(1.0),
    },
    Metric {
        workload: Workload::Latency,
        label: "latency p99.9 at fixed rate",
        unit: "µs",
        path: &["latency_us", "p999"],
        scale: 1.0,
        higher_better: false,
        target: Target::None,
    },
    Metric {
        workload: Workload::Conn,
        label: "new connections",
        unit: "conn/s",
        path: &["conn_per_sec"],
        scale: 1.0,
        higher_better: true,
        target: Target::Peer(1.0),
    },
    Metric {
        workload: Workload::Conn,
        label: "proxy CPU per connection",
        unit: "µs",
        path: &["proxy_cpu_us_per_conn"],
        scale: 1.0,
        higher_better: false,
        target: Target::Peer(0.7),
    },
    Metric {
        workload: Workload::Idle,
        label: "proxy RSS per idle connection",
        unit: "KiB",
        path: &["proxy_rss_bytes_per_conn"],
        scale: 1.0 / 1024.0,
        higher_better: false,
        target: Target::AtMost(2.0),
    },
    Metric {
        workload: Workload::Idle,
        label: "proxy descriptors per idle connection",
        unit: "fds",
        path: &["proxy_fds_per_conn"],
        scale: 1.0,
        higher_better: false,
        target: Target::None,
    },
    Metric {
        workload: Workload::Udp,
        label: "UDP request/response (DNS-sized)",
        unit: "q/s",
        path: &["qps"],
        scale: 1.0,
        higher_better: true,
        target: Target::Nginx(2.0),
    },
    Metric {
        workload: Workload::Udp,
        label: "proxy CPU per UDP query",
        unit: "µs",
        path: &["proxy_cpu_us_per_query"],
        scale: 1.0,
        higher_better: false,
        target: Target::Nginx(0.5),
    },
    Metric {
        workload: Workload::Udp,
        label: "UDP latency p99",
        unit: "µs",
        path: &["latency_us", "p99"],
        scale: 1.0,
        higher_better: false,
        target: Target::None,
    },
    Metric {
        workload: Workload::Iperf1,
        label: "iperf3, 1 stream",
        unit: "Gbit/s",
        path: &["gbit_per_sec"],
        scale: 1.0,
        higher_better: true,
        target: Target::Peer(1.3),
    },
    Metric {
        workload: Workload::Iperf1,
        label: "proxy CPU per MB, iperf3 1 stream",
        unit: "µs",
        path: &["proxy_cpu_us_per_mb"],
        scale: 1.0,
        higher_better: false,
        target: Target::None,
    },
    Metric {
        workload: Workload::Iperf4,
        label: "iperf3, 4 streams",
        unit: "Gbit/s",
        path: &["gbit_per_sec"],
        scale: 1.0,
        higher_better: true,
        target: Target::Peer(1.3),
    },
    Metric {
        workload: Workload::Iperf4,
        label: "proxy CPU per MB, iperf3 4 streams",
        unit: "µs",
        path: &["proxy_cpu_us_per_mb"],
        scale: 1.0,
        higher_better: false,
        target: Target::None,
    },
    Metric {
        workload: Workload::Redis,
        label: "redis-benchmark PING, 50 keep-alive clients",
        unit: "req/s",
        path: &["req_per_sec"],
        scale: 1.0,
        higher_better: true,
        target: Target::Peer(1.1),
    },
    Metric {
        workload: Workload::Redis,
        label: "proxy CPU per redis request",
        unit: "µs",
        path: &["proxy_cpu_us_per_request"],
        scale: 1.0,
        higher_better: false,
        target: Target::Peer(0.8),
    },
    Metric {
        workload: Workload::RedisNew,
        label: "redis-benchmark PING, new connection each",
        unit: "req/s",
        path: &["req_per_sec"],
        scale: 1.0,
        higher_better: true,
        target: Target::Peer(1.1),
    },
    Metric {
        workload: Workload::RedisNew,
        label: "proxy CPU per redis connection",
        unit: "µs",
        path: &["proxy_cpu_us_per_conn"],
        scale: 1.0,
        higher_better: false,
        target: Target::Peer(1.0),
    },
    Metric {
        workload: Workload::Dnsperf,
        label: "dnsperf over UDP",
        unit: "q/s",
        path: &["qps"],
        scale: 1.0,
        higher_better: true,
        target: Target::Nginx(2.0),
    },
    Metric {
        workload: Workload::Dnsperf,
        label: "proxy CPU per dnsperf query",
        unit: "µs",
        path: &["proxy_cpu_us_per_query"],
        scale: 1.0,
        higher_better: false,
        target: Target::Nginx(0.5),
    },
];

impl Metric {
    /// This metric's value in one result, scaled (`None` if absent or null).
    pub fn value(&self, result: &serde_json::Value) -> Option<f64> {
        let mut v = result;
        for k in self.path {
            v = v.get(k)?;
        }
        v.as_f64().map(|x| x * self.scale)
    }
}
