//! The registry of the loopback addresses the tests use, and the check that keeps it true.
//!
//! The modules of this binary run their tests in parallel threads, and a gateway listens on
//! fixed ports (10000, 20000, …), so two tests listening on one address would take each other's
//! ports. Hence the rule, read from the sources by the test below:
//! - `127.0.0.0/16` is for backends and clients. They bind port 0, so tests may share these.
//!   (`127.0.250.250` is where nothing listens: `support::REFUSING`.)
//! - `127.1.<block>.<host>` is for gateways (and their admin servers). Each block belongs to the
//!   one module listed in [`GATEWAY_BLOCKS`], and each address in it to one test function.
//!
//! Only this binary's modules need keeping apart: `cargo test` runs the test binaries (the unit
//! tests, loadtest's) one after another, never beside each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which module owns which `127.1.<block>.0/24`.
const GATEWAY_BLOCKS: &[(&str, &[u8])] = &[
    ("kube_provider", &[2]),
    ("resilience", &[4]),
    ("limits", &[5]),
    ("shutdown", &[6]),
    ("udp", &[7]),
    ("ops", &[8]),
    ("forwarding", &[10]),
    ("proxy_protocol", &[11]),
    ("retry", &[12]),
    ("routing", &[13]),
    ("check", &[14]),
    ("binary", &[15, 17]),
    ("config_file", &[16]),
    ("weights", &[18]),
    ("gateway_api", &[19]),
    ("tls_passthrough", &[20]),
    ("policy", &[21]),
    ("service_ports", &[22]),
    ("port_range", &[23]),
    ("doctor", &[24]),
];

/// A gateway address as written in a test: where, and in which function.
#[derive(Debug)]
struct Use {
    module: String,
    function: String,
    address: [u8; 2],
    at: String,
}

/// Every `127.1.B.H` in `text`, with the function it is written in.
fn gateway_addresses(module: &str, file: &str, text: &str) -> Vec<Use> {
    let mut uses = Vec::new();
    let mut function = String::from("(module level)");
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if let Some(rest) = code.trim_start().split("fn ").nth(1)
            && code.split_whitespace().any(|w| w == "fn")
        {
            function = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        for (i, _) in code.match_indices("127.1.") {
            let preceded_by_digit = code[..i].ends_with(|c: char| c.is_ascii_digit() || c == '.');
            let octets: Vec<u8> = code[i + "127.1.".len()..]
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()
                .unwrap_or_default()
                .split('.')
                .take(2)
                .filter_map(|o| o.parse().ok())
                .collect();
            if preceded_by_digit || octets.len() != 2 {
                continue;
            }
            uses.push(Use {
                module: module.to_owned(),
                function: function.clone(),
                address: [octets[0], octets[1]],
                at: format!("{file}:{}", n + 1),
            });
        }
    }
    uses
}

fn module_of(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    Path::new(first)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn problems(uses: &[Use]) -> Vec<String> {
    let owner: BTreeMap<u8, &str> = GATEWAY_BLOCKS
        .iter()
        .flat_map(|(module, blocks)| blocks.iter().map(move |b| (*b, *module)))
        .collect();
    let mut problems = Vec::new();
    let mut functions: BTreeMap<[u8; 2], BTreeSet<(&str, &str)>> = BTreeMap::new();
    for u in uses {
        let [block, host] = u.address;
        match owner.get(&block) {
            Some(m) if *m == u.module => {}
            Some(m) => problems.push(format!(
                "{}: 127.1.{block}.{host} is in module {m}'s block, not {}'s",
                u.at, u.module
            )),
            None => problems.push(format!(
                "{}: 127.1.{block}.{host} is in no module's block: add {} to GATEWAY_BLOCKS",
                u.at, u.module
            )),
        }
        functions
            .entry(u.address)
            .or_default()
            .insert((&u.module, &u.function));
    }
    for ([block, host], users) in functions {
        if users.len() > 1 {
            problems.push(format!(
                "127.1.{block}.{host} is used by {} functions: {users:?}",
                users.len()
            ));
        }
    }
    problems
}

#[test]
fn every_gateway_address_is_in_its_modules_block_and_used_by_one_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut files = Vec::new();
    crate::support::rust_files(&root, &mut files);
    files.sort();
    let mut uses = Vec::new();
    for file in &files {
        if file.ends_with("addresses.rs") {
            continue; // this registry's own examples
        }
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        uses.extend(gateway_addresses(&module_of(&root, file), &name, &text));
    }
    assert!(
        uses.len() > 50,
        "the scan found too few addresses: {uses:?}"
    );
    let problems = problems(&uses);
    assert!(
        problems.is_empty(),
        "gateway addresses outside the registry:\n  {}",
        problems.join("\n  ")
    );
    let blocks: BTreeSet<u8> = uses.iter().map(|u| u.address[0]).collect();
    let registered: BTreeSet<u8> = GATEWAY_BLOCKS
        .iter()
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    assert_eq!(blocks, registered, "a registered block that no test uses");
}

#[test]
fn the_check_finds_a_borrowed_block_a_stray_block_and_a_shared_address() {
    let text = "fn one() {\n    options(\"127.1.10.1\");\n    let b = \"127.0.0.2\"; // 127.1.99.9 in a comment\n}\nasync fn two() {\n    options(\"127.1.10.1\");\n}\n";
    let uses = gateway_addresses("forwarding", "forwarding.rs", text);
    assert_eq!(uses.len(), 2, "{uses:?}");
    assert_eq!(
        (uses[0].function.as_str(), uses[1].function.as_str()),
        ("one", "two")
    );
    let found = problems(&uses);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("127.1.10.1 is used by 2 functions"),
        "{found:?}"
    );

    let borrowed = gateway_addresses(
        "udp",
        "udp.rs",
        "fn f() { \"127.1.10.2\"; \"127.1.200.1\"; }",
    );
    let found = problems(&borrowed);
    assert!(
        found[0].contains("in module forwarding's block, not udp's"),
        "{found:?}"
    );
    assert!(
        found[1].contains("127.1.200.1 is in no module's block"),
        "{found:?}"
    );
    // Not an address of ours: 127.1.x inside a longer number or a version string.
    assert!(gateway_addresses("udp", "udp.rs", "\"10.127.1.2.3\" \"v2127.1.5\"").is_empty());
}
