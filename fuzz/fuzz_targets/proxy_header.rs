//! The PROXY protocol decoder (`decode`, v1 and v2) on arbitrary bytes: never panics, a decoded
//! header lies within the input, and a header found in a prefix is found the same in the whole.
#![no_main]

use dermaga::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(Some((decoded, len))) = decode(input) {
        assert!(len <= input.len(), "the header lies within the input");
        let again = decode(&input[..len]).expect("the header alone decodes");
        assert_eq!(again, Some((decoded, len)));
    }
});
