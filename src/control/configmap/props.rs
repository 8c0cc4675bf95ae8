//! Property tests of the port-map grammar (issue #5): whatever bytes a ConfigMap holds, parsing
//! never panics, every rejection names what was written, valid specs survive
//! `Display` → [`parse_value`] unchanged, and one bad entry never takes a good one with it.
//!
//! Failures are persisted by proptest in `proptest-regressions/control/configmap/props.txt`
//! (committed when one exists), so a found case is replayed first on every later run.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    }
}

fn cm() -> ObjectName {
    ObjectName::new("dermaga", "tcp-services")
}

/// The admin port, reserved as the gateway reserves it.
const ADMIN: u16 = 10254;

fn reserved() -> ReservedPorts {
    let mut r = ReservedPorts::default();
    r.reserve(ADMIN, "the admin server listens there");
    r
}

/// An RFC 1123 label: what Kubernetes accepts as a namespace or Service name.
fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
}

/// A Service port reference: a number, a name (IANA-style: starts with a letter, so it is
/// never all digits), or the empty name of a Service's one unnamed port.
fn service_port() -> impl Strategy<Value = ServicePortRef> {
    prop_oneof![
        4 => (1u16..=65535).prop_map(ServicePortRef::Number),
        3 => "[a-z]([a-z0-9-]{0,13}[a-z0-9])?".prop_map(ServicePortRef::Name),
        1 => Just(ServicePortRef::Name(String::new())),
    ]
}

fn route_spec() -> impl Strategy<Value = RouteSpec> {
    (
        dns_label(),
        dns_label(),
        service_port(),
        any::<(bool, bool)>(),
    )
        .prop_map(|(ns, name, service_port, (decode, encode))| RouteSpec {
            service: ObjectName::new(ns, name),
            service_port,
            proxy: ProxyFlags { decode, encode },
            options: PortOptions::default(),
            route: None,
            range: None,
        })
}

/// Values an operator could plausibly write, accepted or not: the canonical form with the
/// flags in any case, leading zeros, empty trailing fields, or a junk field.
fn near_valid_value() -> impl Strategy<Value = String> {
    let flag = prop_oneof![
        Just(""),
        Just("PROXY"),
        Just("proxy"),
        Just("Proxy"),
        Just("PROXI"),
        Just(" PROXY"),
    ];
    (
        route_spec(),
        0usize..3,
        flag.clone(),
        flag,
        0usize..4,
        "[a-zA-Z0-9:/ ._-]{0,3}",
    )
        .prop_map(|(spec, zeros, f3, f4, fields, junk)| {
            let port = match &spec.service_port {
                ServicePortRef::Number(n) => format!("{}{n}", "0".repeat(zeros)),
                ServicePortRef::Name(n) => n.clone(),
            };
            let mut v = format!("{}:{port}", spec.service);
            match fields {
                0 => {}
                1 => v.push_str(&format!(":{f3}")),
                2 => v.push_str(&format!(":{f3}:{f4}")),
                _ => v.push_str(&junk),
            }
            v
        })
}

/// Anything at all: unicode strings, lossy-decoded bytes, and strings over the grammar's own
/// alphabet (which reach deeper than random unicode does).
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[a-zA-Z0-9/:.\\- \t\n\u{0}é\u{212a}\u{130}]{0,40}",
        near_valid_value(),
    ]
}

/// One edit of `s` at a character boundary: insert, delete or replace a character.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let c = prop_oneof![
        3 => proptest::char::range(' ', '~'),
        1 => any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), c.clone()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), c).prop_map(|(i, c)| Mutation::Replace(i, c)),
    ]
}

fn mutate(s: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    match *m {
        Mutation::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
        Mutation::Delete(i) if !chars.is_empty() => {
            let i = i % chars.len();
            chars.remove(i);
        }
        Mutation::Replace(i, c) if !chars.is_empty() => {
            let i = i % chars.len();
            chars[i] = c;
        }
        _ => {}
    }
    chars.into_iter().collect()
}

/// For an accepted value: its canonical form parses back to the same spec, and is a fixed
/// point of parse → format.
fn assert_canonical(value: &str, spec: &RouteSpec) -> Result<(), TestCaseError> {
    let formatted = spec.to_string();
    let again = parse_value(&formatted, Protocol::Tcp)
        .map_err(|e| TestCaseError::fail(format!("{value:?} → {formatted:?} rejected: {e}")))?;
    prop_assert_eq!(&again, spec, "{:?} → {:?}", value, formatted);
    prop_assert_eq!(again.to_string(), formatted);
    Ok(())
}

/// Parses a one-entry map and checks that the outcome is an entry or exactly one error that
/// names the key and the value.
fn assert_one_outcome(key: &str, value: &str) -> Result<(), TestCaseError> {
    let data = BTreeMap::from([(key.to_owned(), value.to_owned())]);
    let map = parse_port_map(&cm(), &data, Protocol::Tcp, &reserved());
    prop_assert_eq!(map.entries.len() + map.errors.len(), 1, "{:?}", map);
    if let Some(e) = map.errors.first() {
        prop_assert!(!e.problem.is_empty());
        let shown = e.to_string();
        prop_assert!(shown.contains(&format!("{key:?}")), "{}", shown);
        prop_assert!(shown.contains(&format!("{value:?}")), "{}", shown);
        prop_assert_eq!(&e.key, key);
        prop_assert_eq!(&e.value, value);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// (1) Any value: no panic; an error says something; an accepted value is canonical.
    #[test]
    fn prop_value_any_input_is_ok_or_a_reason(value in any_text()) {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            match parse_value(&value, protocol) {
                Ok(spec) => assert_canonical(&value, &spec)?,
                Err(problem) => prop_assert!(!problem.is_empty()),
            }
        }
    }

    /// (1) Any key and value in a map: one entry or one error naming both.
    #[test]
    fn prop_entry_any_key_and_value_is_one_outcome_naming_them(
        key in prop_oneof![any_text(), "0*[0-9]{1,6}(\\.[a-z-]{0,20})?"],
        value in any_text(),
    ) {
        assert_one_outcome(&key, &value)?;
    }

    /// (2) format → parse gives back the spec, for every valid spec.
    #[test]
    fn prop_spec_format_parse_round_trips(spec in route_spec()) {
        let formatted = spec.to_string();
        prop_assert_eq!(parse_value(&formatted, Protocol::Tcp), Ok(spec.clone()));
        if !spec.proxy.decode && !spec.proxy.encode {
            prop_assert_eq!(parse_value(&formatted, Protocol::Udp), Ok(spec));
        }
    }

    /// (2) parse → format → parse is stable for whatever near-valid value is accepted.
    #[test]
    fn prop_accepted_values_format_canonically(value in near_valid_value()) {
        if let Ok(spec) = parse_value(&value, Protocol::Tcp) {
            assert_canonical(&value, &spec)?;
        }
    }

    /// (3) One edit to a valid value: no panic; still one outcome naming key and value.
    #[test]
    fn prop_mutated_valid_value_never_panics(
        spec in route_spec(),
        edits in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut value = spec.to_string();
        for m in &edits {
            value = mutate(&value, m);
        }
        if let Ok(spec) = parse_value(&value, Protocol::Tcp) {
            assert_canonical(&value, &spec)?;
        }
        assert_one_outcome("8080", &value)?;
    }

    /// Whole `data` maps of random entries: no panic, no key reported twice, every key
    /// accounted for (an entry, an error, or an option applied to an entry), every error
    /// names its key and value, every entry is what its value says.
    #[test]
    fn prop_random_maps_account_for_every_key(
        data in proptest::collection::btree_map(
            prop_oneof![
                3 => (1u16..40).prop_map(|p| p.to_string()),
                1 => (1u16..40).prop_map(|p| format!("0{p}")),
                1 => Just(ADMIN.to_string()),
                2 => ((1u16..40), prop_oneof![
                    Just(OPTION_SEND_PROXY_VERSION.to_string()),
                    "[a-z-]{0,12}",
                ]).prop_map(|(p, o)| format!("{p}.{o}")),
                2 => any_text(),
            ],
            prop_oneof![
                3 => route_spec().prop_map(|s| s.to_string()),
                1 => prop_oneof![Just("v1"), Just("v2"), Just("V2"), Just("3")]
                    .prop_map(String::from),
                2 => any_text(),
            ],
            0..12,
        ),
        protocol in prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
    ) {
        let map = parse_port_map(&cm(), &data, protocol, &reserved());
        let mut reported = BTreeSet::new();
        for e in &map.errors {
            prop_assert!(data.get(&e.key) == Some(&e.value), "{:?}", e);
            prop_assert!(reported.insert(e.key.clone()), "{:?} reported twice", e.key);
            let shown = e.to_string();
            prop_assert!(shown.contains(&format!("{:?}", e.key)), "{}", shown);
            prop_assert!(shown.contains(&format!("{:?}", e.value)), "{}", shown);
        }
        for (port, spec) in &map.entries {
            let from = data.iter().find(|(k, v)| {
                !reported.contains(*k)
                    && parse_listen_port(k).ok() == Some(*port)
                    && parse_value(v, protocol)
                        .is_ok_and(|s| s.service == spec.service && s.proxy == spec.proxy)
            });
            prop_assert!(from.is_some(), "entry {} has no clean key in {:?}", port, data);
        }
        // A key is accounted for when it is reported, or when its port has an entry (it is
        // that entry or an option applied to it), or when its port's removal is reported by
        // another key (a bad option, or a second key for the same port).
        let port_of = |key: &str| {
            parse_listen_port(key.split_once('.').map_or(key, |(p, _)| p)).ok()
        };
        let reported_ports: BTreeSet<ListenPort> =
            reported.iter().filter_map(|k| port_of(k)).collect();
        for key in data.keys() {
            let accounted = reported.contains(key)
                || port_of(key).is_some_and(|p| {
                    map.entries.contains_key(&p) || reported_ports.contains(&p)
                });
            prop_assert!(accounted, "key {:?} neither reported nor applied: {:?}", key, map);
        }
    }

    /// Good entries next to bad ones of every kind: exactly the bad ones are reported, once
    /// each, and the good ones come through as written.
    #[test]
    fn prop_each_bad_entry_is_reported_alone(
        ports in proptest::collection::btree_set(
            (1u16..=65535).prop_filter("not the admin port", |p| *p != ADMIN), 1..10),
        specs in proptest::collection::vec(route_spec(), 10),
        split in any::<prop::sample::Index>(),
        bad_keys in proptest::collection::btree_set("[a-z][a-z0-9 -]{0,10}", 0..3),
        bad_values in proptest::collection::vec(any_text(), 10),
        unknown_option in "[a-z][a-z-]{0,10}",
        versions in proptest::collection::vec(prop_oneof![Just("v1"), Just("V2"), Just("2")], 10),
    ) {
        let ports: Vec<u16> = ports.into_iter().collect();
        let cut = split.index(ports.len() + 1);
        let (good_ports, bad_ports) = ports.split_at(cut);
        let mut data = BTreeMap::new();
        let mut want = BTreeMap::new();
        let mut bad = BTreeSet::new();
        for (i, port) in good_ports.iter().enumerate() {
            let mut spec = specs[i].clone();
            data.insert(port.to_string(), spec.to_string());
            match i % 3 {
                // A known option with a good value is applied.
                0 => {
                    data.insert(format!("{port}.{OPTION_SEND_PROXY_VERSION}"), versions[i].into());
                    spec.options.send_proxy_version = if versions[i] == "v1" {
                        ProxyVersion::V1
                    } else {
                        ProxyVersion::V2
                    };
                }
                // An unknown option is reported and takes nothing out.
                1 if unknown_option != OPTION_SEND_PROXY_VERSION => {
                    let key = format!("{port}.{unknown_option}");
                    data.insert(key.clone(), "x".into());
                    bad.insert(key);
                }
                _ => {}
            }
            want.insert(ListenPort::new(*port).expect("non-zero"), spec);
        }
        for (i, port) in bad_ports.iter().enumerate() {
            let value = &bad_values[i];
            if parse_value(value, Protocol::Tcp).is_err() {
                data.insert(port.to_string(), value.clone());
                bad.insert(port.to_string());
            }
        }
        for key in bad_keys {
            data.insert(key.clone(), specs[0].to_string());
            bad.insert(key);
        }
        let map = parse_port_map(&cm(), &data, Protocol::Tcp, &reserved());
        prop_assert_eq!(&map.entries, &want);
        let reported: Vec<&str> = map.errors.iter().map(|e| e.key.as_str()).collect();
        let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
        prop_assert_eq!(reported, bad);
    }
}
