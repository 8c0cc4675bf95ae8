//! Table-driven tests of the port-map grammar.

use super::*;

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cm() -> ObjectName {
    ObjectName::new("dermaga", "tcp-services")
}

fn reserved() -> ReservedPorts {
    let mut r = ReservedPorts::default();
    r.reserve(10254, "the admin server listens there (--admin-address)");
    r
}

fn port(n: u16) -> ListenPort {
    ListenPort::new(n).unwrap()
}

#[test]
fn valid_forms_mean_what_ingress_nginx_means() {
    let svc = ObjectName::new("default", "svc");
    let cases: &[(&str, ServicePortRef, bool, bool)] = &[
        (
            "default/svc:10000",
            ServicePortRef::Number(10000),
            false,
            false,
        ),
        (
            "default/svc:http",
            ServicePortRef::Name("http".into()),
            false,
            false,
        ),
        (
            "default/svc:22:PROXY",
            ServicePortRef::Number(22),
            true,
            false,
        ),
        (
            "default/svc:22:proxy",
            ServicePortRef::Number(22),
            true,
            false,
        ),
        (
            "default/svc:22:PROXY:PROXY",
            ServicePortRef::Number(22),
            true,
            true,
        ),
        (
            "default/svc:22::PROXY",
            ServicePortRef::Number(22),
            false,
            true,
        ),
        (
            "default/svc:22:PROXY:",
            ServicePortRef::Number(22),
            true,
            false,
        ),
        ("default/svc:22:", ServicePortRef::Number(22), false, false),
        ("default/svc:22::", ServicePortRef::Number(22), false, false),
        (
            "default/svc:",
            ServicePortRef::Name(String::new()),
            false,
            false,
        ),
        (
            "default/svc::PROXY",
            ServicePortRef::Name(String::new()),
            true,
            false,
        ),
    ];
    for (value, sp, decode, encode) in cases {
        let spec = parse_value(value, Protocol::Tcp).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(spec.service, svc, "{value}");
        assert_eq!(&spec.service_port, sp, "{value}");
        assert_eq!(
            spec.proxy,
            ProxyFlags {
                decode: *decode,
                encode: *encode
            },
            "{value}"
        );
    }
}

#[test]
fn each_bad_entry_gets_one_error_naming_key_value_and_problem() {
    let cases: &[(&str, &str, &str)] = &[
        ("0", "default/svc:80", "port 0"),
        ("65536", "default/svc:80", "out of range"),
        ("99999999999", "default/svc:80", "out of range"),
        ("http", "default/svc:80", "not a port number"),
        ("-5", "default/svc:80", "not a port number"),
        ("", "default/svc:80", "must be a port number"),
        (" 8080", "default/svc:80", "whitespace"),
        ("10001", "svc:80", "no namespace"),
        ("10002", "/svc:80", "empty namespace"),
        ("10003", "default/:80", "empty service name"),
        ("10004", "default/svc", "no service port"),
        (
            "10006",
            "default/svc:80:FOO",
            "unknown flag \"FOO\" in field 3",
        ),
        (
            "10007",
            "default/svc:80:PROXY:SEND",
            "unknown flag \"SEND\" in field 4",
        ),
        ("10008", "default/svc:80:PROXY:PROXY:PROXY", "5 fields"),
        ("10009", "default/svc: 80", "whitespace"),
        ("10010", "default/svc:80 ", "whitespace"),
        ("10011", "default/svc:0", "out of range"),
        ("10012", "default/svc:70000", "out of range"),
        (
            "10013",
            "Default/svc:80",
            "namespace \"Default\" is not a valid",
        ),
        (
            "10014",
            "default/my_svc:80",
            "service name \"my_svc\" is not a valid",
        ),
        ("10015", "a/b/c:80", "more than one '/'"),
        ("10016", "", "empty value"),
        ("10254", "default/svc:80", "reserved: the admin server"),
        ("10017.nosuch", "x", "no entry"),
        ("10018.bogus-option", "v1", "unknown per-port option"),
        ("10019.send-proxy-version", "v3", "takes \"v1\" or \"v2\""),
    ];
    for (key, value, want) in cases {
        let mut entries = vec![(*key, *value), ("20000", "default/good:80")];
        if key.starts_with("10018") || key.starts_with("10019") {
            entries.push((&key[..5], "default/svc:80"));
        }
        let parsed = parse_port_map(&cm(), &map(&entries), Protocol::Tcp, &reserved());
        assert_eq!(parsed.errors.len(), 1, "{key}={value}: {:?}", parsed.errors);
        let err = &parsed.errors[0];
        let text = err.to_string();
        assert!(text.contains(want), "{key}={value}: {text}");
        assert!(text.contains(&format!("{key:?}")), "names the key: {text}");
        assert!(
            text.contains(&format!("{value:?}")),
            "names the value: {text}"
        );
        assert!(
            text.contains("dermaga/tcp-services"),
            "names the ConfigMap: {text}"
        );
        assert!(
            parsed.entries.contains_key(&port(20000)),
            "{key}={value}: the good entry still applies"
        );
    }
}

#[test]
fn bad_value_with_good_key_remembers_the_port() {
    let parsed = parse_port_map(
        &cm(),
        &map(&[("10000", "default/svc:80:NOPE")]),
        Protocol::Tcp,
        &reserved(),
    );
    assert_eq!(parsed.errors[0].port, Some(port(10000)));
    let parsed = parse_port_map(
        &cm(),
        &map(&[("x", "default/svc:80")]),
        Protocol::Tcp,
        &reserved(),
    );
    assert_eq!(parsed.errors[0].port, None);
}

#[test]
fn leading_zeros_collide_with_the_plain_key() {
    let parsed = parse_port_map(
        &cm(),
        &map(&[("10000", "default/a:80"), ("010000", "default/b:80")]),
        Protocol::Tcp,
        &reserved(),
    );
    assert_eq!(parsed.entries.len(), 1);
    assert_eq!(parsed.errors.len(), 1);
    assert!(
        parsed.errors[0].problem.contains("already mapped by key"),
        "{:?}",
        parsed.errors
    );
}

#[test]
fn send_proxy_version_option_applies_to_its_port() {
    let parsed = parse_port_map(
        &cm(),
        &map(&[
            ("10000", "default/a:80::PROXY"),
            ("10000.send-proxy-version", "v2"),
            ("10001", "default/b:80::PROXY"),
        ]),
        Protocol::Tcp,
        &reserved(),
    );
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert_eq!(
        parsed.entries[&port(10000)].options.send_proxy_version,
        ProxyVersion::V2
    );
    assert_eq!(
        parsed.entries[&port(10001)].options.send_proxy_version,
        ProxyVersion::V1
    );
}

#[test]
fn an_unknown_option_is_reported_and_takes_nothing_out() {
    let parsed = parse_port_map(
        &cm(),
        &map(&[("10000", "default/a:80"), ("10000.note", "owned by team x")]),
        Protocol::Tcp,
        &reserved(),
    );
    assert!(parsed.entries.contains_key(&port(10000)));
    assert_eq!(parsed.errors.len(), 1);
    assert_eq!(parsed.errors[0].port, None);
    assert!(
        parsed.errors[0]
            .problem
            .contains("unknown per-port option \"note\"")
    );
}

#[test]
fn a_bad_option_takes_its_port_out_but_no_other() {
    let parsed = parse_port_map(
        &cm(),
        &map(&[
            ("10000", "default/a:80::PROXY"),
            ("10000.send-proxy-version", "v9"),
            ("10001", "default/b:80"),
        ]),
        Protocol::Tcp,
        &reserved(),
    );
    assert!(!parsed.entries.contains_key(&port(10000)));
    assert!(parsed.entries.contains_key(&port(10001)));
    assert_eq!(parsed.errors[0].port, Some(port(10000)));
}

#[test]
fn proxy_flags_are_rejected_for_udp() {
    let err = parse_value("kube-system/dns:53:PROXY", Protocol::Udp).unwrap_err();
    assert!(err.contains("only supported for TCP"), "{err}");
    assert!(parse_value("kube-system/dns:53", Protocol::Udp).is_ok());
}

#[test]
fn spec_display_round_trips() {
    for value in [
        "default/svc:80",
        "default/svc:http:PROXY",
        "default/svc:22::PROXY",
        "default/svc:22:PROXY:PROXY",
    ] {
        let spec = parse_value(value, Protocol::Tcp).unwrap();
        assert_eq!(spec.to_string(), value);
        assert_eq!(parse_value(&spec.to_string(), Protocol::Tcp).unwrap(), spec);
    }
}

#[test]
fn limit_options_apply_to_their_port() {
    let parsed = parse_port_map(
        &cm(),
        &map(&[
            ("10000", "default/a:80"),
            ("10000.idle-timeout", "90s"),
            ("10000.max-connections", "500"),
            ("10001", "default/b:80"),
            ("10001.idle-timeout", "off"),
            ("10002", "default/c:80"),
            ("10002.idle-timeout", "0s"),
            ("10002.max-connections", "0"),
            ("10003", "default/d:80"),
        ]),
        Protocol::Tcp,
        &reserved(),
    );
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let options = |n| parsed.entries[&port(n)].options.clone();
    assert_eq!(options(10000).idle_timeout, Some(Duration::from_secs(90)));
    assert_eq!(options(10000).max_connections, Some(500));
    assert_eq!(options(10001).idle_timeout, Some(Duration::ZERO));
    assert_eq!(options(10002).idle_timeout, Some(Duration::ZERO));
    assert_eq!(options(10002).max_connections, Some(0));
    assert_eq!(options(10003).idle_timeout, None, "unset: the flag applies");
    assert_eq!(
        options(10003).max_connections,
        None,
        "unset: the flag applies"
    );
}

#[test]
fn bad_limit_values_are_rejected_naming_key_and_value() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "10000.idle-timeout",
            "soon",
            "takes a duration such as \"30s\"",
        ),
        (
            "10000.idle-timeout",
            "30",
            "takes a duration such as \"30s\"",
        ),
        ("10000.idle-timeout", "-5s", "takes a duration"),
        ("10000.idle-timeout", "1ms", "too short: at least 10ms"),
        (
            "10000.max-connections",
            "lots",
            "takes a whole number of connections",
        ),
        (
            "10000.max-connections",
            "-1",
            "takes a whole number of connections",
        ),
        (
            "10000.max-connections",
            "1.5",
            "takes a whole number of connections",
        ),
    ];
    for (key, value, expected) in cases {
        let parsed = parse_port_map(
            &cm(),
            &map(&[
                ("10000", "default/a:80"),
                (key, value),
                ("10001", "default/b:80"),
            ]),
            Protocol::Tcp,
            &reserved(),
        );
        assert_eq!(parsed.errors.len(), 1, "{key}={value}: {:?}", parsed.errors);
        let error = &parsed.errors[0];
        assert_eq!(error.reason, EntryReason::InvalidOption);
        assert!(error.problem.contains(expected), "{key}={value}: {error}");
        assert!(error.problem.contains(&format!("{value:?}")), "{error}");
        let shown = error.to_string();
        assert!(shown.contains(&format!("{key:?}")), "{shown}");
        assert!(!parsed.entries.contains_key(&port(10000)), "{key}={value}");
        assert!(
            parsed.entries.contains_key(&port(10001)),
            "others unaffected"
        );
    }
}

#[test]
fn limit_options_are_for_tcp_ports_only() {
    for option in ["53.idle-timeout", "53.max-connections"] {
        let parsed = parse_port_map(
            &cm(),
            &map(&[("53", "kube-system/dns:53"), (option, "10")]),
            Protocol::Udp,
            &reserved(),
        );
        assert_eq!(parsed.errors.len(), 1, "{option}");
        assert!(
            parsed.errors[0].problem.contains("TCP ports only"),
            "{}",
            parsed.errors[0]
        );
    }
}

#[test]
fn the_backends_option_splits_a_port_by_weight() {
    let parsed = parse_port_map(
        &cm(),
        &map(&[
            ("10000", "default/web:80"),
            (
                "10000.backends",
                "default/web:80=90, default/web-canary:http=10,other/web-v3:8080=0",
            ),
            ("10001", "default/b:80"),
        ]),
        Protocol::Tcp,
        &reserved(),
    );
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let split = parsed.entries[&port(10000)].backends();
    let shown: Vec<String> = split.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "default/web:80=90",
            "default/web-canary:http=10",
            "other/web-v3:8080=0"
        ]
    );
    // Without the option: the entry's own Service, weight 1.
    let alone = parsed.entries[&port(10001)].backends();
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0].to_string(), "default/b:80=1");
}

#[test]
fn a_bad_backends_option_names_the_item_and_takes_only_its_port_out() {
    let cases = [
        ("default/a:80", "has no weight"),
        (
            "default/a:80=",
            "has weight \"\": a whole number from 0 to 1000000",
        ),
        ("default/a:80=-1", "a whole number from 0 to 1000000"),
        ("default/a:80=1000001", "a whole number from 0 to 1000000"),
        ("default/a=5", "has no service port"),
        ("a:80=5", "has no namespace"),
        ("default/A:80=5", "not a valid Kubernetes name"),
        ("default/a:80=1, default/a:80=2", "is listed twice"),
        ("default/a:80=1,,default/b:80=2", "has an empty item"),
        ("", "has an empty item"),
    ];
    for (value, expected) in cases {
        let parsed = parse_port_map(
            &cm(),
            &map(&[
                ("10000", "default/a:80"),
                ("10000.backends", value),
                ("10001", "default/b:80"),
            ]),
            Protocol::Tcp,
            &reserved(),
        );
        assert_eq!(parsed.errors.len(), 1, "{value}: {:?}", parsed.errors);
        let error = &parsed.errors[0];
        assert_eq!(error.reason, EntryReason::InvalidOption, "{value}");
        assert!(error.problem.contains(expected), "{value}: {error}");
        assert!(error.to_string().contains("\"10000.backends\""), "{error}");
        assert!(!parsed.entries.contains_key(&port(10000)), "{value}");
        assert!(
            parsed.entries.contains_key(&port(10001)),
            "others unaffected"
        );
    }
}

#[test]
fn a_range_key_opens_each_of_its_ports_with_one_spec_and_its_options() {
    let parsed = parse_port_map(
        &cm(),
        &map(&[
            ("30000-30099", "voip/rtp:30000"),
            ("30000-30099.balance", "source-hash"),
            ("30000-30099.range-target", "one"),
            ("5060", "voip/sip:5060"),
        ]),
        Protocol::Udp,
        &reserved(),
    );
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert_eq!(parsed.entries.len(), 101);
    let span = PortSpan {
        first: 30000,
        last: 30099,
    };
    for p in span.ports() {
        let spec = &parsed.entries[&p];
        assert_eq!(spec.range, Some(span));
        assert_eq!(spec.options.balance, Balance::SourceHash);
        assert_eq!(spec.options.range_target, RangeTarget::One);
    }
    assert_eq!(parsed.entries[&port(5060)].range, None);
}

#[test]
fn bad_ranges_are_named_and_cost_nothing_else() {
    let mut limits = reserved();
    limits.max_range_ports = 100;
    let parsed = parse_port_map(
        &cm(),
        &map(&[
            ("10250-10260", "default/a:80"),
            ("20099-20000", "default/b:80"),
            ("30000-30100", "default/c:80"),
            ("40000-40009", "default/d:80"),
            ("40005", "default/e:80"),
            ("40000.balance", "random-two"),
            ("41000", "default/f:80"),
            ("41000.range-target", "one"),
            ("42000-42001", "default/g:80"),
            ("42000-42001.balance", "fastest"),
        ]),
        Protocol::Tcp,
        &limits,
    );
    let problems: Vec<(&str, &str)> = parsed
        .errors
        .iter()
        .map(|e| (e.key.as_str(), e.problem.as_str()))
        .collect();
    assert_eq!(
        problems,
        [
            (
                "10250-10260",
                "port 10254 is reserved: the admin server listens there (--admin-address)"
            ),
            (
                "20099-20000",
                "the port range \"20099-20000\" runs backwards; write \"20000-20099\""
            ),
            (
                "30000-30100",
                "the port range \"30000-30100\" has 101 ports; at most 100 (--max-port-range)"
            ),
            (
                "40000.balance",
                "option key \"40000.balance\" names 40000, but entry \"40000-40009\" maps 40000-40009: the option of a range is written \"40000-40009.balance\""
            ),
            (
                "40005",
                "port 40005 is already mapped by key \"40000-40009\""
            ),
            (
                "41000.range-target",
                "option \"range-target\" applies to range keys only (\"<first port>-<last port>.range-target\")"
            ),
            (
                "42000-42001.balance",
                "option \"balance\" takes one of round-robin, least-connections, random-two, source-hash, not \"fastest\""
            ),
        ]
    );
    // A range with a bad option, or an option written on one of its ports, is not served,
    // port by port (serving it without the option would do what was not asked).
    assert_eq!(parsed.entries.len(), 0, "{:?}", parsed.entries.keys());
    assert!(!parsed.entries.contains_key(&port(40009)));
    assert!(!parsed.entries.contains_key(&port(42000)));
    // Without the stray option key, the range is served.
    let parsed = parse_port_map(
        &cm(),
        &map(&[("40000-40009", "default/d:80")]),
        Protocol::Tcp,
        &limits,
    );
    assert_eq!(parsed.entries.len(), 10);
    assert!(!parsed.entries.contains_key(&port(41000)));
    // "-5" is still "not a port number", not a range.
    let parsed = parse_port_map(
        &cm(),
        &map(&[("-5", "default/a:80")]),
        Protocol::Tcp,
        &limits,
    );
    assert!(parsed.errors[0].problem.contains("is not a port number"));
}
