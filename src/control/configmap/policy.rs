//! Per-port policy options: who may connect (`allow-source`, `deny-source`), who may send a
//! PROXY header (`proxy-trusted-sources`, `proxy-untrusted`), how much one client may take
//! (`max-connections-per-source`, `new-connections-per-second`, `new-connections-burst`), how
//! connects are made (`connect-timeout`, `connect-attempts`) and how an endpoint is chosen
//! (`balance`). Parsed here into [`SourcePolicy`] and [`Balance`]; applied by the data plane
//! ([`crate::data::source_policy`] and [`crate::control::table::Route::pick_order_for`]).
//!
//! Every function returns the error text that names the option and the bad value.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

/// Per-port option: CIDRs whose clients may connect (every other source is refused).
pub const OPTION_ALLOW_SOURCE: &str = "allow-source";
/// Per-port option: CIDRs whose clients are refused.
pub const OPTION_DENY_SOURCE: &str = "deny-source";
/// Per-port option: peers allowed to send a PROXY header (on a port that decodes one).
pub const OPTION_PROXY_TRUSTED_SOURCES: &str = "proxy-trusted-sources";
/// Per-port option: what happens to a connection from a peer not in `proxy-trusted-sources`.
pub const OPTION_PROXY_UNTRUSTED: &str = "proxy-untrusted";
/// Per-port option: TCP connections open at once from one client address.
pub const OPTION_MAX_CONNECTIONS_PER_SOURCE: &str = "max-connections-per-source";
/// Per-port option: new TCP connections per second from one client address.
pub const OPTION_NEW_CONNECTIONS_PER_SECOND: &str = "new-connections-per-second";
/// Per-port option: how many new connections one client may open at once above the rate.
pub const OPTION_NEW_CONNECTIONS_BURST: &str = "new-connections-burst";
/// Per-port option: time allowed for one upstream connect (overrides `--connect-timeout`).
pub const OPTION_CONNECT_TIMEOUT: &str = "connect-timeout";
/// Per-port option: endpoints tried per connection (overrides `--connect-attempts`).
pub const OPTION_CONNECT_ATTEMPTS: &str = "connect-attempts";
/// Per-port option: how an endpoint is chosen for a new connection or UDP flow.
pub const OPTION_BALANCE: &str = "balance";

/// Policy options that only TCP ports take (a UDP port has no connections to count or time).
pub const TCP_ONLY_POLICY_OPTIONS: [&str; 6] = [
    OPTION_PROXY_TRUSTED_SOURCES,
    OPTION_PROXY_UNTRUSTED,
    OPTION_MAX_CONNECTIONS_PER_SOURCE,
    OPTION_NEW_CONNECTIONS_PER_SECOND,
    OPTION_NEW_CONNECTIONS_BURST,
    OPTION_CONNECT_TIMEOUT,
];

/// Most endpoints one connection may try (a bound on a typo such as `1000`).
pub const MAX_CONNECT_ATTEMPTS: usize = 16;

/// How an endpoint is chosen among a backend's usable endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Each in turn (the default).
    #[default]
    RoundRobin,
    /// The one with the fewest open connections (UDP: flows) through this gateway; ties in
    /// turn.
    LeastConnections,
    /// The less loaded of two drawn at random (the "power of two choices").
    RandomTwo,
    /// Rendezvous (highest random weight) hashing of the client address: a client keeps its
    /// endpoint while that endpoint stays; when one of N goes, only its ~1/N of clients move.
    SourceHash,
}

impl Balance {
    /// The option's value for this choice.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastConnections => "least-connections",
            Balance::RandomTwo => "random-two",
            Balance::SourceHash => "source-hash",
        }
    }
}

/// What a port does with a connection whose peer may not send a PROXY header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UntrustedProxy {
    /// Reset it at once (the default): a port behind a PROXY-speaking load balancer should
    /// only be reached through it.
    #[default]
    Reject,
    /// Serve it without reading a header: the peer is the client (a port reached both through
    /// the load balancer and directly from inside the cluster).
    Direct,
}

/// Who may use a port, and how much one client may take of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct SourcePolicy {
    /// Sources allowed (empty: every source not denied).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<IpNet>,
    /// Sources refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<IpNet>,
    /// Peers whose PROXY header is believed (empty: every peer, ingress-nginx's behaviour).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proxy_trusted: Vec<IpNet>,
    /// What happens to a connection from any other peer.
    pub proxy_untrusted: UntrustedProxy,
    /// Connections open at once from one client address (0: no limit).
    pub max_connections_per_source: u32,
    /// New connections per second from one client address (0: no limit).
    pub new_connections_per_second: u32,
    /// New connections one client may open at once beyond the rate (0: the rate, at least 1).
    pub new_connections_burst: u32,
}

impl SourcePolicy {
    /// True when the port filters or limits sources at all (the data plane's fast check).
    pub fn is_active(&self) -> bool {
        !self.allow.is_empty()
            || !self.deny.is_empty()
            || self.max_connections_per_source > 0
            || self.new_connections_per_second > 0
    }

    /// True when the port counts connections per source.
    pub fn limits_sources(&self) -> bool {
        self.max_connections_per_source > 0 || self.new_connections_per_second > 0
    }

    /// Whether `source` may connect: the most specific matching CIDR decides (a `/32` in
    /// `allow-source` makes an exception to a denied `/8`), a deny winning a tie; a source no
    /// CIDR matches is allowed only when `allow-source` is empty.
    pub fn admits(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        let longest = |nets: &[IpNet]| {
            nets.iter()
                .filter(|n| n.contains(&source))
                .map(IpNet::prefix_len)
                .max()
        };
        match (longest(&self.allow), longest(&self.deny)) {
            (Some(allow), Some(deny)) => allow > deny,
            (None, Some(_)) => false,
            (Some(_), None) => true,
            (None, None) => self.allow.is_empty(),
        }
    }

    /// Whether `peer` may send a PROXY header on this port.
    pub fn trusts_proxy_from(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.proxy_trusted.is_empty() || self.proxy_trusted.iter().any(|n| n.contains(&peer))
    }

    /// The bucket size of the rate limit: the burst, or the rate itself (at least 1).
    pub fn burst(&self) -> u32 {
        if self.new_connections_burst > 0 {
            self.new_connections_burst
        } else {
            self.new_connections_per_second.max(1)
        }
    }
}

/// A comma-separated list of CIDRs or single addresses (`10.0.0.0/8, 192.0.2.7, 2001:db8::/32`).
pub fn parse_cidrs(option: &str, value: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!(
                "option {option:?} has an empty item in {value:?}; expected CIDRs such as \"10.0.0.0/8, 192.0.2.7\""
            ));
        }
        let net = match item.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match item.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "option {option:?}: {item:?} is not a CIDR or an IP address (such as \"10.0.0.0/8\" or \"192.0.2.7\")"
                    ));
                }
            },
        };
        // `10.1.2.3/8` is almost certainly a typo for a network; say so instead of guessing.
        if net.trunc() != net {
            return Err(format!(
                "option {option:?}: {item:?} has host bits set; the network is {}",
                net.trunc()
            ));
        }
        nets.push(net);
    }
    Ok(nets)
}

/// `reject` or `direct`.
pub fn parse_untrusted(option: &str, value: &str) -> Result<UntrustedProxy, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "reject" => Ok(UntrustedProxy::Reject),
        "direct" => Ok(UntrustedProxy::Direct),
        _ => Err(format!(
            "option {option:?} takes \"reject\" or \"direct\", not {value:?}"
        )),
    }
}

/// A whole number from 0 to `max` (0 meaning no limit where the option says so).
pub fn parse_count(option: &str, value: &str, max: u32) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "option {option:?} takes a whole number from 0 to {max} (0: no limit), not {value:?}"
        )),
    }
}

/// `connect-timeout`: a duration of at least 10ms.
pub fn parse_connect_timeout(option: &str, value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value.trim()) {
        Ok(d) if d >= Duration::from_millis(10) && d <= Duration::from_secs(300) => Ok(d),
        Ok(_) => Err(format!(
            "option {option:?}: {value:?} is out of range: from 10ms to 5m"
        )),
        Err(e) => Err(format!(
            "option {option:?} takes a duration such as \"2s\" or \"500ms\", not {value:?} ({e})"
        )),
    }
}

/// `connect-attempts`: 1 to [`MAX_CONNECT_ATTEMPTS`].
pub fn parse_connect_attempts(option: &str, value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONNECT_ATTEMPTS).contains(&n) => Ok(n),
        _ => Err(format!(
            "option {option:?} takes a whole number from 1 to {MAX_CONNECT_ATTEMPTS}, not {value:?}"
        )),
    }
}

/// One of the [`Balance`] names.
pub fn parse_balance(option: &str, value: &str) -> Result<Balance, String> {
    let all = [
        Balance::RoundRobin,
        Balance::LeastConnections,
        Balance::RandomTwo,
        Balance::SourceHash,
    ];
    let wanted = value.trim().to_ascii_lowercase();
    all.into_iter()
        .find(|b| b.as_str() == wanted)
        .ok_or_else(|| {
            format!(
                "option {option:?} takes one of {}, not {value:?}",
                all.map(Balance::as_str).join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &str, deny: &str) -> SourcePolicy {
        let nets = |v: &str| {
            if v.is_empty() {
                Vec::new()
            } else {
                parse_cidrs("x", v).unwrap()
            }
        };
        SourcePolicy {
            allow: nets(allow),
            deny: nets(deny),
            ..SourcePolicy::default()
        }
    }

    #[test]
    fn the_most_specific_cidr_decides_and_deny_wins_a_tie() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let office = policy("10.0.0.0/8", "10.9.0.0/16");
        assert!(office.admits(ip("10.1.2.3")));
        assert!(!office.admits(ip("10.9.2.3")));
        assert!(!office.admits(ip("192.0.2.1")));
        // An IPv4-mapped IPv6 peer is its IPv4 address.
        assert!(office.admits(ip("::ffff:10.1.2.3")));
        let exception = policy("10.0.0.7", "10.0.0.0/8");
        assert!(exception.admits(ip("10.0.0.7")));
        assert!(!exception.admits(ip("10.0.0.8")));
        assert!(
            !exception.admits(ip("192.0.2.1")),
            "allow-source names networks, and this is in none"
        );
        let tie = policy("10.0.0.0/8", "10.0.0.0/8");
        assert!(!tie.admits(ip("10.0.0.1")));
        assert!(policy("", "").admits(ip("2001:db8::1")));
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            parse_cidrs("allow-source", "10.0.0.0/8, office").unwrap_err(),
            "option \"allow-source\": \"office\" is not a CIDR or an IP address (such as \"10.0.0.0/8\" or \"192.0.2.7\")"
        );
        assert_eq!(
            parse_cidrs("deny-source", "10.1.2.3/8").unwrap_err(),
            "option \"deny-source\": \"10.1.2.3/8\" has host bits set; the network is 10.0.0.0/8"
        );
        assert!(parse_cidrs("deny-source", "10.0.0.0/8,,").is_err());
        assert_eq!(
            parse_cidrs("x", " 2001:db8::/32 ,192.0.2.7").unwrap(),
            vec![
                "2001:db8::/32".parse::<IpNet>().unwrap(),
                "192.0.2.7/32".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_balance("balance", "fastest").unwrap_err(),
            "option \"balance\" takes one of round-robin, least-connections, random-two, source-hash, not \"fastest\""
        );
        assert_eq!(
            parse_balance("balance", "Source-Hash").unwrap(),
            Balance::SourceHash
        );
        assert!(parse_connect_attempts("connect-attempts", "0").is_err());
        assert!(parse_connect_attempts("connect-attempts", "17").is_err());
        assert!(parse_connect_timeout("connect-timeout", "1ms").is_err());
        assert_eq!(
            parse_connect_timeout("connect-timeout", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_untrusted("proxy-untrusted", "allow").is_err());
        assert!(parse_count("max-connections-per-source", "-1", 1000).is_err());
    }
}
