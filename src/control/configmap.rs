//! Parser for the ingress-nginx `tcp-services` / `udp-services` port map.
//!
//! Grammar of one entry (ingress-nginx compatible; every value that works there means the same here):
//!
//! ```text
//! "<external port>": "<namespace>/<service>:<service port or name>[:PROXY[:PROXY]]"
//! ```
//!
//! The first `PROXY` (case-insensitive, as ingress-nginx compares it) makes the listener decode a
//! PROXY protocol header; the second makes dermaga send one to the backend. An empty field means
//! "off", so `ns/svc:22::PROXY` sends without decoding.
//!
//! A key may also be a port range, `"30000-30099"` (at most `--max-port-range` ports): one
//! listener per port, all with the entry's spec, port `first + i` going to the Service port's
//! target port `+ i` (or, with the range's `range-target: one`, to the target port itself).
//! ingress-nginx skips such keys (not a number), so no entry it serves changes meaning.
//!
//! Per-port options live in keys of their own, `"<port>.<option>"`, which ingress-nginx skips as
//! non-numeric keys: no ingress-nginx value changes meaning. Known options: [`KNOWN_OPTIONS`];
//! an unknown option key is reported and changes nothing. An empty service port (`ns/svc:`)
//! names the Service's unnamed port, as in ingress-nginx.
//!
//! Invariant: every bad entry yields exactly one [`EntryError`] naming the key, the value and the
//! problem; the other entries are unaffected.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::names::{ListenPort, ObjectName, PortSpan, Protocol, ProxyVersion, ServicePortRef};

pub mod policy;

pub use policy::{Balance, SourcePolicy, UntrustedProxy};

/// Per-port option: PROXY protocol version sent to the backend (`v1`, the default, or `v2`).
pub const OPTION_SEND_PROXY_VERSION: &str = "send-proxy-version";

/// Per-port option: active health-check interval for the port's endpoints (`5s`; `off`
/// turns checks off on this port when `--health-check-interval` turns them on everywhere).
pub const OPTION_HEALTH_CHECK_INTERVAL: &str = "health-check-interval";

/// Per-port option: close TCP connections idle this long (`30s`; `0s` or `off`: never); overrides
/// `--idle-timeout`.
pub const OPTION_IDLE_TIMEOUT: &str = "idle-timeout";

/// Per-port option: TCP connections open at once on the port (`0`: unlimited); overrides
/// `--max-connections-per-port`.
pub const OPTION_MAX_CONNECTIONS: &str = "max-connections";

/// Per-port option: `on` (the default) or `off`. On, a connection whose endpoint resets or closes
/// it right after the connect, before any byte moved either way, is tried on another endpoint
/// (within `--connect-attempts`); turn it off for protocols where even an empty connection
/// reaching the backend matters.
pub const OPTION_RETRY_BEFORE_DATA: &str = "retry-before-data";

/// Per-port option: split the port's connections (or UDP flows) over several Service ports by
/// weight, `"<ns>/<svc>:<port>=<weight>, ..."` (weights 0 to 1,000,000; 0 takes nothing). The
/// list replaces the entry's own Service for dermaga; ingress-nginx, which skips option keys,
/// keeps sending everything to the entry's Service.
pub const OPTION_BACKENDS: &str = "backends";

/// The largest weight of one backend, as in Gateway API.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// Every per-port option dermaga knows.
pub const KNOWN_OPTIONS: [&str; 17] = [
    OPTION_SEND_PROXY_VERSION,
    OPTION_IDLE_TIMEOUT,
    OPTION_MAX_CONNECTIONS,
    OPTION_HEALTH_CHECK_INTERVAL,
    OPTION_RETRY_BEFORE_DATA,
    OPTION_BACKENDS,
    policy::OPTION_ALLOW_SOURCE,
    policy::OPTION_DENY_SOURCE,
    policy::OPTION_PROXY_TRUSTED_SOURCES,
    policy::OPTION_PROXY_UNTRUSTED,
    policy::OPTION_MAX_CONNECTIONS_PER_SOURCE,
    policy::OPTION_NEW_CONNECTIONS_PER_SECOND,
    policy::OPTION_NEW_CONNECTIONS_BURST,
    policy::OPTION_CONNECT_TIMEOUT,
    policy::OPTION_CONNECT_ATTEMPTS,
    policy::OPTION_BALANCE,
    OPTION_RANGE_TARGET,
];

/// Whether the listener decodes and/or the upstream side encodes PROXY protocol headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ProxyFlags {
    /// First `PROXY`: expect a header from the client (the load balancer in front).
    pub decode: bool,
    /// Second `PROXY`: write a header to the backend.
    pub encode: bool,
}

/// Options set per port through `"<port>.<option>"` keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct PortOptions {
    /// Version of the PROXY header sent to backends (with the second `PROXY` flag).
    pub send_proxy_version: ProxyVersion,
    /// Idle timeout of this port's connections (zero: none); `None`: `--idle-timeout`.
    #[serde(serialize_with = "serialize_duration")]
    pub idle_timeout: Option<Duration>,
    /// Connections open at once on this port (0: unlimited); `None`: `--max-connections-per-port`.
    pub max_connections: Option<usize>,
    /// Active health-check interval for this port (`Some(0)`: off here; `None`: the flag's).
    #[serde(serialize_with = "serialize_duration")]
    pub health_check_interval: Option<Duration>,
    /// Whether a connection closed by its endpoint before any byte moved is tried on another
    /// (`None`: yes, the default).
    pub retry_before_data: Option<bool>,
    /// The weighted split of the `backends` option (`None`: the entry's Service alone).
    pub backends: Option<Vec<WeightedBackend>>,
    /// Time allowed for one upstream connect (`None`: `--connect-timeout`).
    #[serde(serialize_with = "serialize_duration")]
    pub connect_timeout: Option<Duration>,
    /// Endpoints tried per connection (`None`: `--connect-attempts`).
    pub connect_attempts: Option<usize>,
    /// How an endpoint is chosen.
    pub balance: Balance,
    /// Who may connect, and how much one client may take.
    pub sources: SourcePolicy,
    /// On a range entry: where each port's connections go on the endpoints.
    pub range_target: RangeTarget,
}

/// Where the ports of a range entry go on the endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RangeTarget {
    /// Port `first + i` goes to the Service port's target port `+ i` (the default): a range
    /// onto a range, as RTP media, FTP passive or game server ports need.
    #[default]
    Each,
    /// Every port of the range goes to the Service port's target port itself.
    One,
}

/// Per-port option of a range key: `each` (the default) or `one` ([`RangeTarget`]).
pub const OPTION_RANGE_TARGET: &str = "range-target";

/// One Service port of a weighted split, and its share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct WeightedBackend {
    /// The Service.
    pub service: ObjectName,
    /// Which of its ports.
    pub service_port: ServicePortRef,
    /// Its share: this over the sum of the weights (0: none).
    pub weight: u32,
    /// Why it may not be used whatever the Service (a Gateway API reference to another
    /// namespace without a ReferenceGrant, a kind that is not a Service): its share is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

impl fmt::Display for WeightedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.service, self.service_port, self.weight)
    }
}

fn serialize_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(|d| humantime::format_duration(d).to_string())
        .serialize(s)
}

/// What one valid entry asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RouteSpec {
    /// The Service traffic goes to.
    pub service: ObjectName,
    /// Which of its ports.
    pub service_port: ServicePortRef,
    /// PROXY protocol handling.
    pub proxy: ProxyFlags,
    /// Per-port options.
    pub options: PortOptions,
    /// The Gateway API route the spec comes from (`None`: a port-map entry).
    pub route: Option<RouteRef>,
    /// The range a range key (`"30000-30099"`) opened this port as part of (`None`: one port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<PortSpan>,
}

/// A Gateway API route by kind and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RouteRef {
    /// `TCPRoute` or `UDPRoute`.
    pub kind: &'static str,
    /// Its namespace and name.
    pub name: ObjectName,
}

impl RouteSpec {
    /// Where the port's traffic goes: the `backends` option's split, or the entry's Service
    /// alone (weight 1).
    pub fn backends(&self) -> Vec<WeightedBackend> {
        self.options.backends.clone().unwrap_or_else(|| {
            vec![WeightedBackend {
                service: self.service.clone(),
                service_port: self.service_port.clone(),
                weight: 1,
                invalid: None,
            }]
        })
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.service_port)?;
        match (self.proxy.decode, self.proxy.encode) {
            (false, false) => Ok(()),
            (true, false) => f.write_str(":PROXY"),
            (false, true) => f.write_str("::PROXY"),
            (true, true) => f.write_str(":PROXY:PROXY"),
        }
    }
}

/// One rejected entry of a port map.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryError {
    /// The ConfigMap the entry is in.
    pub configmap: ObjectName,
    /// The data key as written.
    pub key: String,
    /// The data value as written.
    pub value: String,
    /// The port the key names, when the key itself is valid (then a previous good route for
    /// this port may be kept).
    pub port: Option<ListenPort>,
    /// What is wrong, in words.
    pub problem: String,
    /// False for problems that change no route (an unknown per-port option key, which
    /// ingress-nginx would ignore too): `dermaga check` reports them as warnings.
    pub affects_routing: bool,
    /// The kind of problem, as the reason of the Kubernetes Event recorded for it.
    pub reason: EntryReason,
}

/// What kind of problem an entry has (the `reason` of the Event recorded on the ConfigMap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EntryReason {
    /// The key is not a port number.
    InvalidKey,
    /// The value is not `<namespace>/<service>:<port>[:PROXY[:PROXY]]`.
    InvalidValue,
    /// The port is reserved (the admin server's) or mapped twice.
    PortConflict,
    /// A per-port option key that dermaga does not know.
    UnknownOption,
    /// A per-port option with a bad value, or for a port without an entry.
    InvalidOption,
}

impl EntryReason {
    /// The reason as written in Events.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryReason::InvalidKey => "InvalidKey",
            EntryReason::InvalidValue => "InvalidEntry",
            EntryReason::PortConflict => "PortConflict",
            EntryReason::UnknownOption => "UnknownOption",
            EntryReason::InvalidOption => "InvalidOption",
        }
    }
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConfigMap {}: entry {:?}: {:?}: {}",
            self.configmap, self.key, self.value, self.problem
        )
    }
}

/// The ports entries may use: not the reserved ones (e.g. the admin server's port, with the
/// reason), and ranges of at most [`ReservedPorts::max_range_ports`] ports.
#[derive(Debug, Clone)]
pub struct ReservedPorts {
    reserved: BTreeMap<u16, String>,
    /// The most ports one range key (`"30000-30099"`) may open (`--max-port-range`).
    pub max_range_ports: usize,
}

/// The default of `--max-port-range`.
pub const DEFAULT_MAX_RANGE_PORTS: usize = 1000;

impl Default for ReservedPorts {
    fn default() -> Self {
        Self {
            reserved: BTreeMap::new(),
            max_range_ports: DEFAULT_MAX_RANGE_PORTS,
        }
    }
}

impl ReservedPorts {
    /// Reserves `port`, saying who uses it.
    pub fn reserve(&mut self, port: u16, why: impl Into<String>) {
        self.reserved.insert(port, why.into());
    }

    /// Why `port` is reserved, if it is.
    pub fn reason(&self, port: u16) -> Option<&str> {
        self.reserved.get(&port).map(String::as_str)
    }
}

/// The result of parsing one port map: the good entries and one error per bad entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortMap {
    /// Valid entries by external port.
    pub entries: BTreeMap<ListenPort, RouteSpec>,
    /// Rejected entries, in key order.
    pub errors: Vec<EntryError>,
}

/// Parses a port map's `data`. A range key (`"30000-30099"`) yields one entry per port, each
/// with the same spec and `range` set; its options (`"30000-30099.<option>"`) apply to all.
pub fn parse_port_map(
    configmap: &ObjectName,
    data: &BTreeMap<String, String>,
    protocol: Protocol,
    reserved: &ReservedPorts,
) -> PortMap {
    let mut map = PortMap::default();
    // Every port an entry key took: the key, and the span it opened.
    let mut seen: BTreeMap<ListenPort, (&str, PortSpan)> = BTreeMap::new();
    let mut options: Vec<(PortSpan, &str, &str, &str)> = Vec::new();
    let error =
        |reason: EntryReason, key: &str, value: &str, port: Option<ListenPort>, problem: String| {
            EntryError {
                configmap: configmap.clone(),
                key: key.to_owned(),
                value: value.to_owned(),
                port,
                affects_routing: true,
                problem,
                reason,
            }
        };

    for (key, value) in data {
        let (port_part, option) = match key.split_once('.') {
            Some((p, o)) => (p, Some(o)),
            None => (key.as_str(), None),
        };
        let span = match parse_listen_span(port_part, reserved.max_range_ports) {
            Ok(span) => span,
            Err(problem) => {
                map.errors
                    .push(error(EntryReason::InvalidKey, key, value, None, problem));
                continue;
            }
        };
        if let Some(option) = option {
            options.push((span, option, key, value));
            continue;
        }
        // Reserved ports are TCP ports (the admin server); a UDP entry may use the number.
        let reserved_port = span
            .ports()
            .find_map(|p| reserved.reason(p.get()).map(|why| (p, why)))
            .filter(|_| protocol == Protocol::Tcp);
        if let Some((port, why)) = reserved_port {
            map.errors.push(error(
                EntryReason::PortConflict,
                key,
                value,
                None,
                format!("port {port} is reserved: {why}"),
            ));
            continue;
        }
        if let Some((port, (first, _))) = span.ports().find_map(|p| seen.get(&p).map(|s| (p, *s))) {
            map.errors.push(error(
                EntryReason::PortConflict,
                key,
                value,
                None,
                format!("port {port} is already mapped by key {first:?}"),
            ));
            continue;
        }
        for port in span.ports() {
            seen.insert(port, (key, span));
        }
        let first = span.ports().next().expect("a span has a port");
        match parse_value(value, protocol) {
            Ok(mut spec) => {
                spec.range = span.is_range().then_some(span);
                for port in span.ports() {
                    map.entries.insert(port, spec.clone());
                }
            }
            Err(problem) => map.errors.push(error(
                EntryReason::InvalidValue,
                key,
                value,
                Some(first),
                problem,
            )),
        }
    }

    for (span, option, key, value) in options {
        let first = span.ports().next().expect("a span has a port");
        match seen.get(&first) {
            None => {
                let ports = if span.is_range() { "ports" } else { "port" };
                map.errors.push(error(
                    EntryReason::InvalidOption,
                    key,
                    value,
                    None,
                    format!("option {option:?} is set for {ports} {span}, which has no entry"),
                ));
                continue;
            }
            Some((entry_key, entry_span)) if *entry_span != span => {
                // Serving the entry without an option meant for it (an allow-source, say)
                // would do what the operator did not ask for: the entry waits for the fix.
                let entry_span = *entry_span;
                for port in entry_span.ports() {
                    map.entries.remove(&port);
                }
                map.errors.push(error(
                    EntryReason::InvalidOption,
                    key,
                    value,
                    Some(entry_span.ports().next().expect("a span has a port")),
                    format!(
                        "option key {key:?} names {span}, but entry {entry_key:?} maps {entry_span}: the option of a range is written \"{entry_span}.{option}\""
                    ),
                ));
                continue;
            }
            Some(_) => {}
        }
        if !KNOWN_OPTIONS.contains(&option) {
            // ingress-nginx ignores such keys; an unknown one is reported but takes nothing out.
            map.errors.push(EntryError {
                affects_routing: false,
                ..error(
                    EntryReason::UnknownOption,
                    key,
                    value,
                    None,
                    format!(
                        "unknown per-port option {option:?}; known options: {}",
                        KNOWN_OPTIONS.join(", ")
                    ),
                )
            });
            continue;
        }
        let applied = if option == OPTION_RANGE_TARGET && !span.is_range() {
            Err(format!(
                "option {option:?} applies to range keys only (\"<first port>-<last port>.{option}\")"
            ))
        } else {
            match map.entries.get_mut(&first) {
                Some(spec) => apply_option(&mut spec.options, &spec.proxy, protocol, option, value),
                // The port's own entry is bad and already reported; check the option alone.
                None => apply_option(
                    &mut PortOptions::default(),
                    &ProxyFlags::default(),
                    protocol,
                    option,
                    value,
                ),
            }
        };
        match applied {
            Ok(()) => {
                // Every port of a range has the same options.
                if let Some(options) = map.entries.get(&first).map(|s| s.options.clone()) {
                    for port in span.ports().skip(1) {
                        if let Some(spec) = map.entries.get_mut(&port) {
                            spec.options = options.clone();
                        }
                    }
                }
            }
            Err(problem) => {
                // A known option with a bad value makes the entry unusable: serving it without
                // the option would do something the operator did not ask for.
                for port in span.ports() {
                    map.entries.remove(&port);
                }
                map.errors.push(error(
                    EntryReason::InvalidOption,
                    key,
                    value,
                    Some(first),
                    problem,
                ));
            }
        }
    }
    map.errors.sort_by(|a, b| a.key.cmp(&b.key));
    map
}

/// A key's port part: one port, or a range `"<first>-<last>"` of at most `max_range` ports.
fn parse_listen_span(s: &str, max_range: usize) -> Result<PortSpan, String> {
    let range = s
        .split_once('-')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty());
    let Some((first, last)) = range else {
        return parse_listen_port(s).map(PortSpan::single);
    };
    let (first, last) = (parse_listen_port(first)?, parse_listen_port(last)?);
    if last < first {
        return Err(format!(
            "the port range {s:?} runs backwards; write \"{last}-{first}\""
        ));
    }
    let span = PortSpan {
        first: first.get(),
        last: last.get(),
    };
    if span.len() > max_range {
        return Err(format!(
            "the port range {s:?} has {} ports; at most {max_range} (--max-port-range)",
            span.len()
        ));
    }
    Ok(span)
}

fn parse_listen_port(s: &str) -> Result<ListenPort, String> {
    if s.is_empty() {
        return Err("the key must be a port number (1-65535)".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("the key contains whitespace; it must be a port number (1-65535)".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the key {s:?} is not a port number (1-65535; per-port options are written \"<port>.<option>\")"
        ));
    }
    match s.parse::<u32>() {
        Ok(0) => Err("port 0 cannot be listened on; use 1-65535".into()),
        Ok(n) if n <= 65535 => Ok(ListenPort::new(n as u16).expect("non-zero")),
        _ => Err(format!("port {s} is out of range (1-65535)")),
    }
}

/// Parses one value `<ns>/<svc>:<port>[:PROXY[:PROXY]]`.
pub fn parse_value(value: &str, protocol: Protocol) -> Result<RouteSpec, String> {
    if value.is_empty() {
        return Err("empty value; expected <namespace>/<service>:<port>".into());
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace()) {
        return Err(format!(
            "the value contains whitespace ({c:?}); expected <namespace>/<service>:<port>[:PROXY[:PROXY]] with no spaces"
        ));
    }
    let fields: Vec<&str> = value.split(':').collect();
    if fields.len() < 2 {
        return Err("no service port; expected <namespace>/<service>:<port>".into());
    }
    if fields.len() > 4 {
        return Err(format!(
            "{} fields; expected at most 4: <namespace>/<service>:<port>:<PROXY or empty>:<PROXY or empty>",
            fields.len()
        ));
    }
    let service = parse_service(fields[0])?;
    let service_port = parse_service_port(fields[1])?;
    let decode = parse_flag(fields.get(2).copied(), 3)?;
    let encode = parse_flag(fields.get(3).copied(), 4)?;
    if protocol == Protocol::Udp && (decode || encode) {
        return Err("PROXY protocol is only supported for TCP ports, not in udp-services".into());
    }
    Ok(RouteSpec {
        service,
        service_port,
        proxy: ProxyFlags { decode, encode },
        options: PortOptions::default(),
        route: None,
        range: None,
    })
}

fn parse_service(s: &str) -> Result<ObjectName, String> {
    let Some((ns, name)) = s.split_once('/') else {
        return Err(format!(
            "{s:?} has no namespace; expected <namespace>/<service>"
        ));
    };
    if ns.is_empty() {
        return Err("empty namespace; expected <namespace>/<service>".into());
    }
    if name.is_empty() {
        return Err("empty service name; expected <namespace>/<service>".into());
    }
    if name.contains('/') {
        return Err(format!(
            "{s:?} has more than one '/'; expected <namespace>/<service>"
        ));
    }
    check_dns_label(ns, "namespace")?;
    check_dns_label(name, "service name")?;
    Ok(ObjectName::new(ns, name))
}

fn parse_service_port(s: &str) -> Result<ServicePortRef, String> {
    if s.is_empty() {
        // ingress-nginx looks this up as a port *name* "", which matches a Service's one
        // unnamed port; it means the same here.
        return Ok(ServicePortRef::Name(String::new()));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(ServicePortRef::Number(n as u16)),
            _ => Err(format!("service port {s} is out of range (1-65535)")),
        };
    }
    check_dns_label(s, "service port name")?;
    Ok(ServicePortRef::Name(s.to_owned()))
}

fn parse_flag(field: Option<&str>, position: usize) -> Result<bool, String> {
    match field {
        None | Some("") => Ok(false),
        Some(f) if f.eq_ignore_ascii_case("PROXY") => Ok(true),
        Some(f) => Err(format!(
            "unknown flag {f:?} in field {position}; only \"PROXY\" or an empty field is allowed there"
        )),
    }
}

/// Checks an RFC 1123 label: lowercase alphanumerics and '-', alphanumeric at both ends, <= 63.
fn check_dns_label(s: &str, what: &str) -> Result<(), String> {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = !s.starts_with('-') && !s.ends_with('-');
    if s.len() > 63 || !ok_chars || !ok_ends {
        return Err(format!(
            "{what} {s:?} is not a valid Kubernetes name (lowercase letters, digits and '-', at most 63 characters)"
        ));
    }
    Ok(())
}

pub(crate) fn apply_option(
    options: &mut PortOptions,
    proxy: &ProxyFlags,
    protocol: Protocol,
    option: &str,
    value: &str,
) -> Result<(), String> {
    let tcp_only = [
        OPTION_IDLE_TIMEOUT,
        OPTION_MAX_CONNECTIONS,
        OPTION_RETRY_BEFORE_DATA,
    ];
    if protocol == Protocol::Udp && tcp_only.contains(&option) {
        return Err(format!(
            "option {option:?} applies to TCP ports only; UDP flows are limited by --udp-idle-timeout and --udp-max-flows"
        ));
    }
    if protocol == Protocol::Udp && policy::TCP_ONLY_POLICY_OPTIONS.contains(&option) {
        return Err(format!(
            "option {option:?} applies to TCP ports only (UDP ports take allow-source, deny-source, connect-attempts and balance)"
        ));
    }
    let sources = &mut options.sources;
    match option {
        policy::OPTION_ALLOW_SOURCE => {
            sources.allow = policy::parse_cidrs(option, value)?;
            Ok(())
        }
        policy::OPTION_DENY_SOURCE => {
            sources.deny = policy::parse_cidrs(option, value)?;
            Ok(())
        }
        policy::OPTION_PROXY_TRUSTED_SOURCES | policy::OPTION_PROXY_UNTRUSTED if !proxy.decode => {
            Err(format!(
                "option {option:?} applies only to a port whose entry decodes a PROXY header (\"<ns>/<svc>:<port>:PROXY\")"
            ))
        }
        policy::OPTION_PROXY_TRUSTED_SOURCES => {
            sources.proxy_trusted = policy::parse_cidrs(option, value)?;
            Ok(())
        }
        policy::OPTION_PROXY_UNTRUSTED => {
            sources.proxy_untrusted = policy::parse_untrusted(option, value)?;
            Ok(())
        }
        policy::OPTION_MAX_CONNECTIONS_PER_SOURCE => {
            sources.max_connections_per_source = policy::parse_count(option, value, 1_000_000)?;
            Ok(())
        }
        policy::OPTION_NEW_CONNECTIONS_PER_SECOND => {
            sources.new_connections_per_second = policy::parse_count(option, value, 1_000_000)?;
            Ok(())
        }
        policy::OPTION_NEW_CONNECTIONS_BURST => {
            sources.new_connections_burst =
                policy::parse_count(option, value, 1_000_000).map_err(|_| {
                    format!(
                        "option {option:?} takes a whole number from 0 to 1000000 (0: as many as new-connections-per-second), not {value:?}"
                    )
                })?;
            Ok(())
        }
        policy::OPTION_CONNECT_TIMEOUT => {
            options.connect_timeout = Some(policy::parse_connect_timeout(option, value)?);
            Ok(())
        }
        policy::OPTION_CONNECT_ATTEMPTS => {
            options.connect_attempts = Some(policy::parse_connect_attempts(option, value)?);
            Ok(())
        }
        policy::OPTION_BALANCE => {
            options.balance = policy::parse_balance(option, value)?;
            Ok(())
        }
        OPTION_SEND_PROXY_VERSION => {
            options.send_proxy_version = match value.to_ascii_lowercase().as_str() {
                "v1" | "1" => ProxyVersion::V1,
                "v2" | "2" => ProxyVersion::V2,
                _ => {
                    return Err(format!(
                        "option {option:?} takes \"v1\" or \"v2\", not {value:?}"
                    ));
                }
            };
            if !proxy.encode && options.send_proxy_version == ProxyVersion::V2 {
                tracing::debug!(
                    option,
                    "send-proxy-version set on a port that sends no PROXY header"
                );
            }
            Ok(())
        }
        OPTION_IDLE_TIMEOUT => {
            options.idle_timeout = Some(parse_idle_timeout(option, value)?);
            Ok(())
        }
        OPTION_MAX_CONNECTIONS => {
            options.max_connections = Some(value.parse().map_err(|_| {
                format!(
                    "option {option:?} takes a whole number of connections (0: unlimited), not {value:?}"
                )
            })?);
            Ok(())
        }
        OPTION_HEALTH_CHECK_INTERVAL => {
            let interval = match value.trim() {
                "off" | "0" => Duration::ZERO,
                text => humantime::parse_duration(text).map_err(|e| {
                    format!("option {option:?} takes a duration like \"5s\" or \"off\", not {value:?}: {e}")
                })?,
            };
            if !interval.is_zero() && interval < Duration::from_millis(100) {
                return Err(format!(
                    "option {option:?} is {value:?}: at least 100ms between probes, or \"off\""
                ));
            }
            options.health_check_interval = Some(interval);
            Ok(())
        }
        OPTION_RETRY_BEFORE_DATA => {
            options.retry_before_data = Some(match value.trim().to_ascii_lowercase().as_str() {
                "on" | "true" => true,
                "off" | "false" => false,
                _ => {
                    return Err(format!(
                        "option {option:?} takes \"on\" or \"off\", not {value:?}"
                    ));
                }
            });
            Ok(())
        }
        OPTION_RANGE_TARGET => {
            options.range_target = match value.trim().to_ascii_lowercase().as_str() {
                "each" => RangeTarget::Each,
                "one" => RangeTarget::One,
                _ => {
                    return Err(format!(
                        "option {option:?} takes \"each\" (port first+i to target port+i) or \"one\" (every port to the target port), not {value:?}"
                    ));
                }
            };
            Ok(())
        }
        OPTION_BACKENDS => {
            options.backends = Some(parse_backends(option, value)?);
            Ok(())
        }
        _ => Err(format!(
            "unknown per-port option {option:?}; known options: {}",
            KNOWN_OPTIONS.join(", ")
        )),
    }
}

/// `ns/svc:port=weight` items separated by commas (spaces around them allowed).
fn parse_backends(option: &str, value: &str) -> Result<Vec<WeightedBackend>, String> {
    let mut backends: Vec<WeightedBackend> = Vec::new();
    for item in value.split(',').map(str::trim) {
        let bad = |why: String| {
            format!(
                "option {option:?}: backend {item:?} {why}; expected \"<namespace>/<service>:<port>=<weight>, ...\""
            )
        };
        if item.is_empty() {
            return Err(format!(
                "option {option:?} has an empty item; expected \"<namespace>/<service>:<port>=<weight>, ...\""
            ));
        }
        let Some((target, weight)) = item.rsplit_once('=') else {
            return Err(bad("has no weight".into()));
        };
        let weight: u32 = match weight.trim().parse() {
            Ok(w) if w <= MAX_WEIGHT => w,
            _ => {
                return Err(bad(format!(
                    "has weight {weight:?}: a whole number from 0 to {MAX_WEIGHT}"
                )));
            }
        };
        let Some((service, port)) = target.trim().split_once(':') else {
            return Err(bad("has no service port".into()));
        };
        let backend = WeightedBackend {
            service: parse_service(service).map_err(&bad)?,
            service_port: parse_service_port(port).map_err(&bad)?,
            weight,
            invalid: None,
        };
        if backends
            .iter()
            .any(|b| b.service == backend.service && b.service_port == backend.service_port)
        {
            return Err(bad("is listed twice".into()));
        }
        backends.push(backend);
    }
    Ok(backends)
}

/// `30s`, `2m`, `1h30m`; `0s` or `off` turn the timeout off (zero).
fn parse_idle_timeout(option: &str, value: &str) -> Result<Duration, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    match humantime::parse_duration(value) {
        Ok(d) if d.is_zero() || d >= Duration::from_millis(10) => Ok(d),
        Ok(_) => Err(format!(
            "option {option:?}: {value:?} is too short: at least 10ms (or \"0s\"/\"off\" for no timeout)"
        )),
        Err(e) => Err(format!(
            "option {option:?} takes a duration such as \"30s\", \"5m\" or \"off\", not {value:?} ({e})"
        )),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
