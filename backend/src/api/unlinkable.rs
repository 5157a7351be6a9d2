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

use actix_web::{web, HttpRequest, HttpResponse};
use dp3t_core::time::{Epoch, EPOCH_SECONDS};
use dp3t_core::unlinkable::{EpochSeed, HashedObservation};
use dp3t_core::upload::{UnlinkableUpload, UNLINKABLE_UPLOAD_ENTRIES};

use super::dp3t::{self, decode_fixed, malformed, Records, UploadContext};
use super::{ApiError, AppState};
use crate::designs::Design;

/// Parse and check an unlinkable upload body; the filter entries to store.
pub(crate) fn parse(body: &[u8], ctx: &UploadContext) -> Result<Records, ApiError> {
    let upload: UnlinkableUpload = serde_json::from_slice(body).map_err(malformed)?;
    if upload.seeds.len() != UNLINKABLE_UPLOAD_ENTRIES {
        return Err(ApiError::bad_request(
            "entry_count",
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
        if ctx.fake_token {
            continue;
        }
        let start = u64::from(e.epoch) * EPOCH_SECONDS;
        if ctx.in_future(start) {
            return Err(ApiError::bad_request(
                "epoch",
                format!("seeds[{i}].epoch {} is in the future", e.epoch),
            ));
        }
        if !ctx.within_retention(start + EPOCH_SECONDS) {
            return Err(ApiError::bad_request(
                "epoch",
                format!("seeds[{i}].epoch {} is outside the retention", e.epoch),
            ));
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

/// `POST /v1/unlinkable/exposed`.
pub async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    dp3t::upload(Design::Unlinkable, parse, req, payload, state).await
}

/// `GET /v1/unlinkable/filter/{batchReleaseTime}`.
pub async fn download(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    dp3t::download(Design::Unlinkable, path, state).await
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
            fake_token: false,
            retention_seconds: 14 * 86_400,
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
        let r = parse(
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
        let all_fake = parse(&body(&[], 1_344), &ctx()).unwrap();
        assert_eq!((all_fake.count, all_fake.fake_body), (0, true));
    }

    #[test]
    fn refusals_name_the_problem() {
        let code = |b: Vec<u8>| parse(&b, &ctx()).unwrap_err().code;
        assert_eq!(code(body(&[], 1_343)), "entry_count");
        assert_eq!(code(body(&[], 1_345)), "entry_count");
        assert_eq!(code(body(&[entry(EPOCH_NOW + 2, 1, 0)], 1_344)), "epoch");
        assert_eq!(
            code(body(&[entry(EPOCH_NOW - 15 * 96, 1, 0)], 1_344)),
            "epoch"
        );
        let mut bad = entry(EPOCH_NOW, 1, 1);
        bad["seed"] = "AAAA".into();
        assert_eq!(code(body(&[bad], 1_344)), "key_data");
        // An unknown field is ignored; it never bypasses a rule on a known one.
        let mut extra = entry(EPOCH_NOW, 1, 0);
        extra["x"] = 1.into();
        assert_eq!(parse(&body(&[extra], 1_344), &ctx()).unwrap().count, 1);
        let mut extra = entry(EPOCH_NOW + 500, 1, 0);
        extra["x"] = 1.into();
        assert_eq!(code(body(&[extra], 1_344)), "epoch");
        // A fake token skips range checks but not shape checks.
        let mut c = ctx();
        c.fake_token = true;
        assert_eq!(
            parse(&body(&[entry(EPOCH_NOW + 50, 1, 0)], 1_344), &c)
                .unwrap()
                .count,
            0
        );
    }
}
