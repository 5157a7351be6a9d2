//! The published protobuf lists (PROTOCOL.md §9.2, §9.3): the low-cost `ProtoExposedList`
//! and the `HybridExposedList`. Decode any bytes as both; what decodes must re-encode and
//! decode to the same list.

#![no_main]

use dp3t_core::published::{HybridList, LowCostList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = LowCostList::decode(data) {
        let bytes = list.encode().expect("a decoded low-cost list re-encodes");
        let back = LowCostList::decode(&bytes).expect("a re-encoded low-cost list decodes");
        assert_eq!(back, list);
    }
    if let Ok(list) = HybridList::decode(data) {
        let bytes = list.encode().expect("a decoded hybrid list re-encodes");
        let back = HybridList::decode(&bytes).expect("a re-encoded hybrid list decodes");
        assert_eq!(back, list);
    }
});
