//! Newtypes for the nouns of the routing model: ports, protocols, service references.
//!
//! Everything here is plain data with `Display` impls that read the way a user wrote them
//! (`default/svc:10000`, `10000/TCP`), so errors and logs can quote them directly.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU16;

/// Transport protocol of a listener and of the Service port it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Protocol {
    /// `tcp-services`.
    Tcp,
    /// `udp-services`.
    Udp,
}

impl Protocol {
    /// The spelling Kubernetes uses in `spec.ports[].protocol`.
    pub fn as_k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_k8s())
    }
}

/// An external port of the gateway (1..=65535): a key of the port map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ListenPort(NonZeroU16);

impl ListenPort {
    /// `None` for port 0.
    pub fn new(port: u16) -> Option<Self> {
        NonZeroU16::new(port).map(Self)
    }

    /// The port number.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

impl fmt::Display for ListenPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A run of external ports opened by one port-map entry: one port (`"10000"`), or a range
/// (`"30000-30099"`). The `port` label of the metrics and the `/routes` view of a range entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpan {
    /// The first port.
    pub first: u16,
    /// The last port (equal to `first` for one port).
    pub last: u16,
}

impl PortSpan {
    /// One port.
    pub fn single(port: ListenPort) -> Self {
        Self {
            first: port.get(),
            last: port.get(),
        }
    }

    /// How many ports.
    pub fn len(self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// True for a range of more than one port.
    pub fn is_range(self) -> bool {
        self.last > self.first
    }

    /// Whether `port` is in it.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Its ports, in order.
    pub fn ports(self) -> impl Iterator<Item = ListenPort> {
        (self.first..=self.last).filter_map(ListenPort::new)
    }
}

impl fmt::Display for PortSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_range() {
            write!(f, "{}-{}", self.first, self.last)
        } else {
            write!(f, "{}", self.first)
        }
    }
}

impl serde::Serialize for PortSpan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a route is keyed by: the listen port and its protocol (53/TCP and 53/UDP are two routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct RouteKey {
    /// External port.
    pub port: ListenPort,
    /// Protocol of the listener.
    pub protocol: Protocol,
}

impl RouteKey {
    /// A TCP route key.
    pub fn tcp(port: ListenPort) -> Self {
        Self {
            port,
            protocol: Protocol::Tcp,
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// `namespace/name` of a Service (or of any namespaced object).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ObjectName {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectName {
    /// Builds a name from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `namespace/name`, both parts non-empty.
    pub fn parse(s: &str) -> Option<Self> {
        let (ns, name) = s.split_once('/')?;
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(Self::new(ns, name))
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for ObjectName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| format!("expected NAMESPACE/NAME, got {s:?}"))
    }
}

/// The Service port an entry names: by number (`spec.ports[].port`) or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(untagged)]
pub enum ServicePortRef {
    /// `spec.ports[].port`.
    Number(u16),
    /// `spec.ports[].name`.
    Name(String),
}

impl fmt::Display for ServicePortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServicePortRef::Number(n) => write!(f, "{n}"),
            ServicePortRef::Name(n) => f.write_str(n),
        }
    }
}

/// PROXY protocol version written to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// Text header (what ingress-nginx sends).
    #[default]
    V1,
    /// Binary header.
    V2,
}

impl fmt::Display for ProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        })
    }
}

/// An endpoint as health tracks it: its address and the protocol it serves there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HealthKey {
    /// Where connections and flows go.
    pub addr: SocketAddr,
    /// The protocol of the routes that use it.
    pub protocol: Protocol,
}

impl HealthKey {
    /// A TCP endpoint.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            addr,
            protocol: Protocol::Tcp,
        }
    }

    /// A UDP endpoint.
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            addr,
            protocol: Protocol::Udp,
        }
    }
}

/// An address alone is a TCP endpoint (active checks and the TCP path name endpoints so).
impl From<SocketAddr> for HealthKey {
    fn from(addr: SocketAddr) -> Self {
        Self::tcp(addr)
    }
}

impl std::fmt::Display for HealthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}
