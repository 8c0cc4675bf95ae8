//! The `--config` manifest reader (`parse_manifest`: multi-document YAML or a `kind: List`) on
//! arbitrary text: never panics; an error is a value, not a crash.
#![no_main]

use dermaga::parse_manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = parse_manifest(text);
    }
});
