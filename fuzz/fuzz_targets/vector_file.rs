//! The spec-vector file reader of the test kit (PROTOCOL.md §11): parse any bytes as a
//! vector file and check every case. Malformed files must be errors, never panics.

#![no_main]

use dp3t_testkit::vectors::{parse_file, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = parse_file(data) {
        let _ = verify(&file);
    }
});
