//! Per-port options on Gateway API routes, by annotation: `dermaga.io/<option>` on a TCPRoute,
//! UDPRoute or TLSRoute takes the value a port map's `"<port>.<option>"` key would, for the
//! options the Gateway API has no field for (connect and idle timeouts, retries, connection
//! limits, balancing, source policy). The route that serves a listener brings its options.
//!
//! A bad value is reported on the route (`UnsupportedValue`) and its backends refuse
//! connections until it is fixed, as a port map's entry with a bad option is not served:
//! serving without, say, an `allow-source` would let in what the route meant to keep out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::control::configmap::{
    self, KNOWN_OPTIONS, OPTION_HEALTH_CHECK_INTERVAL, OPTION_IDLE_TIMEOUT, OPTION_MAX_CONNECTIONS,
    OPTION_RETRY_BEFORE_DATA, PortOptions, ProxyFlags, policy,
};
use crate::control::index::Kind;
use crate::names::Protocol;

/// The annotations' prefix.
pub const PREFIX: &str = "dermaga.io/";

/// The options a route may set by annotation.
pub const ROUTE_OPTIONS: [&str; 12] = [
    OPTION_IDLE_TIMEOUT,
    OPTION_MAX_CONNECTIONS,
    OPTION_HEALTH_CHECK_INTERVAL,
    OPTION_RETRY_BEFORE_DATA,
    policy::OPTION_CONNECT_TIMEOUT,
    policy::OPTION_CONNECT_ATTEMPTS,
    policy::OPTION_BALANCE,
    policy::OPTION_ALLOW_SOURCE,
    policy::OPTION_DENY_SOURCE,
    policy::OPTION_MAX_CONNECTIONS_PER_SOURCE,
    policy::OPTION_NEW_CONNECTIONS_PER_SECOND,
    policy::OPTION_NEW_CONNECTIONS_BURST,
];

/// Options decided when a TLS passthrough connection is accepted, before its ClientHello
/// chooses a TLSRoute: a TLSRoute cannot set them.
const DECIDED_AT_ACCEPT: [&str; 6] = [
    OPTION_MAX_CONNECTIONS,
    policy::OPTION_ALLOW_SOURCE,
    policy::OPTION_DENY_SOURCE,
    policy::OPTION_MAX_CONNECTIONS_PER_SOURCE,
    policy::OPTION_NEW_CONNECTIONS_PER_SECOND,
    policy::OPTION_NEW_CONNECTIONS_BURST,
];

/// The options a route's `dermaga.io/<option>` annotations set, and what is wrong with them
/// (each a message naming the annotation).
pub fn route_options(meta: &ObjectMeta, kind: Kind) -> (PortOptions, Vec<String>) {
    let mut options = PortOptions::default();
    let mut problems = Vec::new();
    let protocol = if kind == Kind::UdpRoute {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    for (key, value) in meta.annotations.iter().flatten() {
        let Some(option) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if !KNOWN_OPTIONS.contains(&option) {
            // Other dermaga.io annotations (backend-proxy-protocol) are read elsewhere.
            continue;
        }
        if !ROUTE_OPTIONS.contains(&option) {
            problems.push(format!(
                "annotation {key}: not available on routes (route annotations: {})",
                ROUTE_OPTIONS.join(", ")
            ));
            continue;
        }
        if kind == Kind::TlsRoute && DECIDED_AT_ACCEPT.contains(&option) {
            problems.push(format!(
                "annotation {key}: a TLS passthrough connection is admitted before its ClientHello chooses the TLSRoute, so a TLSRoute cannot set it"
            ));
            continue;
        }
        let applied = configmap::apply_option(
            &mut options,
            &ProxyFlags::default(),
            protocol,
            option,
            value,
        );
        if let Err(problem) = applied {
            problems.push(format!("annotation {key}: {problem}"));
        }
    }
    (options, problems)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::control::configmap::Balance;

    fn meta(annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn annotations_set_the_options_a_port_map_key_would() {
        let (options, problems) = route_options(
            &meta(&[
                ("dermaga.io/balance", "source-hash"),
                ("dermaga.io/allow-source", "10.0.0.0/8"),
                ("dermaga.io/connect-timeout", "2s"),
                ("dermaga.io/backend-proxy-protocol", "v2"),
                ("example.com/balance", "whatever"),
            ]),
            Kind::TcpRoute,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(options.balance, Balance::SourceHash);
        assert_eq!(options.sources.allow.len(), 1);
        assert_eq!(
            options.connect_timeout,
            Some(std::time::Duration::from_secs(2))
        );
    }

    #[test]
    fn bad_or_unavailable_annotations_are_named() {
        let (_, problems) = route_options(
            &meta(&[
                ("dermaga.io/balance", "fastest"),
                ("dermaga.io/backends", "default/a:80=1"),
                ("dermaga.io/idle-timeout", "30s"),
            ]),
            Kind::UdpRoute,
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("annotation dermaga.io/backends: not available on routes"));
        assert!(problems[1].contains("\"fastest\""));
        assert!(problems[2].contains("applies to TCP ports only"));
        let (_, problems) = route_options(
            &meta(&[("dermaga.io/allow-source", "10.0.0.0/8")]),
            Kind::TlsRoute,
        );
        assert!(problems[0].contains("cannot set it"), "{problems:?}");
    }
}
