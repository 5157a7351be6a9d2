//! The unlinkable design (PROTOCOL.md §4, §7, §9.4).
//!
//! * `POST /v1/unlinkable/exposed` — `{"seeds": [1344 × {"epoch": n, "seed":
//!   base64(32 bytes), "fake": 0|1}]}`. Exactly 1,344 entries (400 `entry_count`); every
//!   seed 32 bytes of base64 (400 `key_data`); real epochs inside the retention and not in
//!   the future (400 `epoch`). Fake entries, and real ones before the token's onset, are
//!   dropped. The server stores only `SHA-256(EphID(seed) || BE32(epoch))` of each real
//!   pair — the filter entry — never the seed.
//! * `GET /v1/unlinkable/filter/{batchReleaseTime}` — the DPCF filter (§4.1) of every
//!   entry received in the bucket ending at that time ([`super::dp3t`]).

use dp3t_core::time::{Epoch, EPOCH_SECONDS};
use dp3t_core::unlinkable::{EpochSeed, HashedObservation};
use dp3t_core::upload::{UnlinkableUpload, UNLINKABLE_UPLOAD_ENTRIES};

use super::upload::{decode_fixed, malformed, Entries, Parsed, UploadContext};
use super::{ApiError, ErrorCode};
use crate::designs::Design;

/// The records of a body, before the pipeline decides whether it is fake.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Records {
    bytes: Vec<u8>,
    count: u64,
    fake_body: bool,
}

/// Parse an unlinkable upload body ([`UploadRoute`](super::upload::UploadRoute) parser).
pub(crate) fn parse(body: &[u8], ctx: &UploadContext) -> Result<Parsed, ApiError> {
    let r = records(body, ctx)?;
    Ok(Parsed {
        entries: Entries::Design {
            design: Design::Unlinkable,
            bytes: r.bytes,
            count: r.count,
        },
        fake_body: r.fake_body,
        next_day: None,
    })
}

/// Parse and check an unlinkable upload body; the filter entries to store.
fn records(body: &[u8], ctx: &UploadContext) -> Result<Records, ApiError> {
    let upload: UnlinkableUpload = serde_json::from_slice(body).map_err(malformed)?;
    if upload.seeds.len() != UNLINKABLE_UPLOAD_ENTRIES {
        return Err(ApiError::bad_request(
            ErrorCode::EntryCount,
            format!(
                "seeds must hold exactly {UNLINKABLE_UPLOAD_ENTRIES} entries (pad with fake ones), got {}",
                upload.seeds.len()
            ),
        ));
    }
    let first_epoch = u64::from(ctx.onset.0) * 96;
    let mut entries: Vec<[u8; 32]> = Vec::new();
    let mut real = 0usize;
    for (i, e) in upload.seeds.iter().enumerate() {
        let seed: [u8; 32] = decode_fixed(&e.seed, &format!("seeds[{i}].seed"))?;
        if e.fake.0 {
            continue;
        }
        real += 1;
        let start = u64::from(e.epoch) * EPOCH_SECONDS;
        // Entries in the future or past the retention are dropped silently, the same
        // for real and fake uploads (a refusal only real uploads could get would tell
        // them apart; a phone whose clock runs fast would lose its whole upload).
        if ctx.in_future(start) || !ctx.within_retention(start + EPOCH_SECONDS) {
            continue;
        }
        if u64::from(e.epoch) >= first_epoch {
            let seed = EpochSeed::from_bytes(seed);
            entries.push(HashedObservation::of_seed(&seed, Epoch(e.epoch)).0);
        }
    }
    entries.sort_unstable();
    entries.dedup();
    Ok(Records {
        count: entries.len() as u64,
        bytes: entries.concat(),
        fake_body: real == 0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use dp3t_core::time::{Day, UnixTime};

    const NOW: u64 = 20_000 * 86_400 + 36_000; // day 20000, 10:00
    const EPOCH_NOW: u32 = (NOW / 900) as u32;

    fn ctx() -> UploadContext {
        UploadContext {
            now: UnixTime(NOW),
            onset: Day(19_995),
            delayed_key_date: None,
            timing: crate::config::Timing {
                bucket_seconds: 7_200,
                retention_seconds: 14 * 86_400,
                upload_delay: std::time::Duration::ZERO,
            },
        }
    }

    fn entry(epoch: u32, seed: u8, fake: u8) -> serde_json::Value {
        serde_json::json!({
            "epoch": epoch,
            "seed": base64::engine::general_purpose::STANDARD.encode([seed; 32]),
            "fake": fake,
        })
    }

    fn body(real: &[serde_json::Value], n: usize) -> Vec<u8> {
        let mut seeds = real.to_vec();
        while seeds.len() < n {
            // Padding may lie anywhere, even later today.
            seeds.push(entry(EPOCH_NOW + 20, 0xAA, 1));
        }
        serde_json::to_vec(&serde_json::json!({ "seeds": seeds })).unwrap()
    }

    #[test]
    fn real_entries_become_hashed_observations() {
        let r = records(
            &body(
                &[
                    entry(EPOCH_NOW - 10, 1, 0),
                    entry(EPOCH_NOW, 2, 0),
                    entry(EPOCH_NOW, 2, 0),       // duplicate
                    entry(19_990 * 96 + 5, 3, 0), // before onset: dropped
                ],
                1_344,
            ),
            &ctx(),
        )
        .unwrap();
        assert_eq!(r.count, 2);
        let want =
            HashedObservation::of_seed(&EpochSeed::from_bytes([1; 32]), Epoch(EPOCH_NOW - 10));
        assert!(r.bytes.chunks(32).any(|c| c == want.0));
        assert!(!r.fake_body);
        let all_fake = records(&body(&[], 1_344), &ctx()).unwrap();
        assert_eq!((all_fake.count, all_fake.fake_body), (0, true));
    }

    #[test]
    fn refusals_name_the_problem() {
        let code = |b: Vec<u8>| records(&b, &ctx()).unwrap_err().code;
        assert_eq!(code(body(&[], 1_343)), "entry_count");
        assert_eq!(code(body(&[], 1_345)), "entry_count");
        // Out-of-range epochs are dropped, not refused.
        for epoch in [EPOCH_NOW + 2, EPOCH_NOW - 15 * 96] {
            let r = records(&body(&[entry(epoch, 1, 0)], 1_344), &ctx()).unwrap();
            assert_eq!((r.count, r.fake_body), (0, false));
        }
        let mut bad = entry(EPOCH_NOW, 1, 1);
        bad["seed"] = "AAAA".into();
        assert_eq!(code(body(&[bad], 1_344)), "key_data");
        // An unknown field is ignored; it never bypasses a rule on a known one.
        let mut extra = entry(EPOCH_NOW, 1, 0);
        extra["x"] = 1.into();
        assert_eq!(records(&body(&[extra], 1_344), &ctx()).unwrap().count, 1);
        let mut extra = entry(EPOCH_NOW, 1, 0);
        extra["x"] = 1.into();
        extra["seed"] = "AAAA".into();
        assert_eq!(code(body(&[extra], 1_344)), "key_data");
    }
}
