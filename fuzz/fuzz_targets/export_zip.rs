//! GAEN export zips (PROTOCOL.md §9.1): parse any bytes, and verify what parses, with the
//! fixture key (which signed the seeds) and with the public ENS example key.
//!
//! Properties: no panic and bounded memory whatever the bytes; a parsed export that
//! verifies re-encodes to an export that parses to the same batch.

#![no_main]

use dp3t_core::export::{parse_export_zip, write_export_zip, SignatureInfo};
use dp3t_core::signing::PublicKey;
use libfuzzer_sys::fuzz_target;

const ENS_PEM: &str = include_str!("../../dp3t-core/tests/data/ens-public.pem");

fuzz_target!(|data: &[u8]| {
    let Ok(unverified) = parse_export_zip(data) else {
        return;
    };
    let key = dp3t_fuzz::signing_key();
    if let Ok(ens) = PublicKey::from_pem(ENS_PEM) {
        let _ = unverified.clone().verify(&ens);
    }
    let Ok(batch) = unverified.verify(&key.public_key()) else {
        return;
    };
    let info = SignatureInfo {
        verification_key_version: "v1".into(),
        verification_key_id: "fuzz".into(),
    };
    // What the reader accepted, the writer must write and the reader read back equal.
    let again = write_export_zip(&batch, &info, key).expect("a verified batch re-encodes");
    let back = parse_export_zip(&again)
        .and_then(|u| u.verify(&key.public_key()))
        .expect("a re-encoded batch parses and verifies");
    assert_eq!(back, batch);
});
