//! The response `Signature` header (PROTOCOL.md §9.4): a JWS with a detached content hash.
//! The input is `header NUL body`; the header is checked against the body with the fixture
//! key at the fixture time. Seeds are real signed responses, so mutations explore the
//! claims and the signature, not only the first parse error.

#![no_main]

use dp3t_core::signing::verify_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let key = dp3t_fuzz::signing_key().public_key();
    let _ = verify_response(body, header, &key, dp3t_fuzz::NOW);
});
