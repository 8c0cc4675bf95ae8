//! The fuzzing corpus (`fuzz/corpus/<target>/`) replayed through the same parsers and properties
//! as the libFuzzer targets in `fuzz/fuzz_targets/`, in the ordinary test suite: a bounded smoke
//! run of each target that needs no fuzzer, and a regression guard for every input a fuzzing run
//! kept. See fuzz/README.md.

use std::collections::BTreeMap;
use std::path::Path;

use dermaga::decode;
use dermaga::parse_manifest;
use dermaga::{ObjectName, Protocol};
use dermaga::{ReservedPorts, parse_port_map};

/// Every file of `fuzz/corpus/<target>/`; at least one.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| {
            let path = f.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

#[test]
fn port_map_corpus() {
    let name = ObjectName::new("dermaga", "tcp-services");
    let mut reserved = ReservedPorts::default();
    reserved.reserve(10254, "the admin server");
    for (file, input) in corpus("port_map") {
        let Ok(text) = std::str::from_utf8(&input) else {
            continue;
        };
        let data: BTreeMap<String, String> = text
            .lines()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect();
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let map = parse_port_map(&name, &data, protocol, &reserved);
            for error in &map.errors {
                assert!(data.contains_key(&error.key), "{file}: {error:?}");
            }
        }
    }
}

#[test]
fn proxy_header_corpus() {
    for (file, input) in corpus("proxy_header") {
        if let Ok(Some((decoded, len))) = decode(&input) {
            assert!(len <= input.len(), "{file}");
            assert_eq!(
                decode(&input[..len]).unwrap(),
                Some((decoded, len)),
                "{file}"
            );
        }
        // Every prefix: a header is either found whole or more bytes are asked for, never a
        // panic.
        for cut in 0..input.len().min(300) {
            let _ = decode(&input[..cut]);
        }
    }
}

#[test]
fn manifest_corpus() {
    for (_file, input) in corpus("manifest") {
        if let Ok(text) = std::str::from_utf8(&input) {
            let _ = parse_manifest(text);
        }
    }
}
