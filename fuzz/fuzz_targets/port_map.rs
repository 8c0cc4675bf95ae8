//! The port-map parser (`parse_port_map`) on arbitrary `data`: never panics, and every entry is
//! either a route or an error naming its key. Input: lines `key=value` (split at the first `=`),
//! for both protocols.
#![no_main]

use std::collections::BTreeMap;

use dermaga::{ReservedPorts, parse_port_map};
use dermaga::{ObjectName, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let data: BTreeMap<String, String> = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect();
    let name = ObjectName::new("dermaga", "tcp-services");
    let mut reserved = ReservedPorts::default();
    reserved.reserve(10254, "the admin server".to_owned());
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let map = parse_port_map(&name, &data, protocol, &reserved);
        for error in &map.errors {
            assert!(data.contains_key(&error.key), "an error names its key");
        }
    }
});
