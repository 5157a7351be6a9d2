//! The low-cost design: the DP-3T v1 API (PROTOCOL.md §3, §7, §9.2).
//!
//! * `POST /v1/exposed` — `{"key": base64(32 bytes), "keyDate": ms of a UTC midnight,
//!   "fake": 0|1}`. `keyDate` must be a UTC midnight (400 `key_date`), and for a real
//!   upload inside the retention and not in the future (400 `key_date`). When `keyDate`
//!   lies before the token's `onset`, the key is stepped forward along its chain
//!   (`SK_{t+1} = SHA-256(SK_t)`) to the onset day, so only contagious days are published.
//!   A body with `"fake": 1` or a fake token stores nothing.
//! * `GET /v1/exposed/{batchReleaseTime}` — the `ProtoExposedList` of the keys received
//!   in the bucket ending at that time ([`super::dp3t`]).

use dp3t_core::lowcost::DayKey;
use dp3t_core::time::Day;
use dp3t_core::upload::LowCostUpload;

use super::upload::{decode_fixed, malformed, Entries, Parsed, UploadContext};
use super::{ApiError, ErrorCode};
use crate::designs::build::LowCostRecord;
use crate::designs::Design;

/// The records of a body, before the pipeline decides whether it is fake.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Records {
    bytes: Vec<u8>,
    count: u64,
    fake_body: bool,
}

/// Parse a low-cost upload body ([`UploadRoute`](super::upload::UploadRoute) parser).
pub(crate) fn parse(body: &[u8], ctx: &UploadContext) -> Result<Parsed, ApiError> {
    let r = records(body, ctx)?;
    Ok(Parsed {
        entries: Entries::Design {
            design: Design::LowCost,
            bytes: r.bytes,
            count: r.count,
        },
        fake_body: r.fake_body,
        next_day: None,
    })
}

/// Check a low-cost upload body's shape; the record to store, if its day is in range.
fn records(body: &[u8], ctx: &UploadContext) -> Result<Records, ApiError> {
    let upload: LowCostUpload = serde_json::from_slice(body).map_err(malformed)?;
    let key: [u8; 32] = decode_fixed(&upload.key, "key")?;
    let day = Day::from_midnight_millis(upload.key_date).map_err(|_| {
        ApiError::bad_request(
            ErrorCode::KeyDate,
            format!(
                "keyDate {} is not the milliseconds of a UTC midnight",
                upload.key_date
            ),
        )
    })?;
    if upload.fake.0 {
        return Ok(Records {
            fake_body: true,
            ..Records::default()
        });
    }
    // A day in the future or past the retention is dropped silently (nothing to publish),
    // the same for real and fake uploads.
    if ctx.in_future(day.start().0) || !ctx.within_retention(day.next().start().0) {
        return Ok(Records::default());
    }
    let (key, day) = if day < ctx.onset {
        if ctx.in_future(ctx.onset.start().0) {
            // Not contagious yet: nothing to publish.
            return Ok(Records::default());
        }
        let stepped = DayKey::from_bytes(key).step(day.days_until(ctx.onset));
        (*stepped.as_bytes(), ctx.onset)
    } else {
        (key, day)
    };
    Ok(Records {
        bytes: LowCostRecord { key, day: day.0 }.to_bytes().to_vec(),
        count: 1,
        fake_body: false,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use dp3t_core::time::UnixTime;

    const TODAY: u32 = 20_000;

    fn ctx(onset: u32) -> UploadContext {
        UploadContext {
            now: UnixTime(u64::from(TODAY) * 86_400 + 3_600),
            onset: Day(onset),
            delayed_key_date: None,
            timing: crate::config::Timing {
                bucket_seconds: 7_200,
                retention_seconds: 14 * 86_400,
                upload_delay: std::time::Duration::ZERO,
            },
        }
    }

    fn body(key: &[u8], key_date: u64, fake: u8) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "key": base64::engine::general_purpose::STANDARD.encode(key),
            "keyDate": key_date,
            "fake": fake,
        }))
        .unwrap()
    }

    fn ms(day: u32) -> u64 {
        Day(day).start_millis()
    }

    #[test]
    fn a_real_key_is_stored_and_stepped_to_the_onset() {
        let r = records(&body(&[1; 32], ms(TODAY - 3), 0), &ctx(TODAY - 5)).unwrap();
        let rec = LowCostRecord::from_bytes(&r.bytes[..].try_into().unwrap());
        assert_eq!((rec.key, rec.day, r.count), ([1; 32], TODAY - 3, 1));
        let r = records(&body(&[1; 32], ms(TODAY - 3), 0), &ctx(TODAY - 1)).unwrap();
        let rec = LowCostRecord::from_bytes(&r.bytes[..].try_into().unwrap());
        assert_eq!(rec.day, TODAY - 1);
        assert_eq!(&rec.key, DayKey::from_bytes([1; 32]).step(2).as_bytes());
        // Today's key is accepted (the phone rule stops replays after the release).
        assert_eq!(
            records(&body(&[1; 32], ms(TODAY), 0), &ctx(TODAY))
                .unwrap()
                .count,
            1
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        let c = ctx(TODAY - 5);
        let code = |b: Vec<u8>| records(&b, &c).unwrap_err().code;
        assert_eq!(code(body(&[1; 32], ms(TODAY) + 1, 0)), "key_date");
        // Days in the future or past the retention are dropped, not refused: a refusal
        // that only real uploads can get would tell them from fake ones.
        for day in [TODAY + 1, TODAY - 15] {
            assert_eq!(
                records(&body(&[1; 32], ms(day), 0), &c).unwrap(),
                Records::default()
            );
        }
        assert_eq!(code(body(&[1; 31], ms(TODAY), 0)), "key_data");
        assert_eq!(code(body(&[1; 32], ms(TODAY), 2)), "fake_flag");
        assert_eq!(
            code(br#"{"key":"!!","keyDate":0,"fake":0}"#.to_vec()),
            "key_data"
        );
        // Unknown fields (the v1 SDK's `authData`) never bypass the rules on known ones.
        assert_eq!(
            code(br#"{"key":"AA==","keyDate":0,"fake":0,"authData":{}}"#.to_vec()),
            "key_data"
        );
        assert_eq!(
            code(br#"{"key":"AA==","keyDate":0,"fake":0,"fake":1}"#.to_vec()),
            "malformed_body"
        );
        let mut with_auth: serde_json::Value =
            serde_json::from_slice(&body(&[1; 32], ms(TODAY), 0)).unwrap();
        with_auth["authData"] = serde_json::json!({"value": "123456789012"});
        assert_eq!(
            records(&serde_json::to_vec(&with_auth).unwrap(), &c)
                .unwrap()
                .count,
            1
        );
        assert_eq!(code(b"[]".to_vec()), "malformed_body");
        // The oldest day that still ends inside the retention is accepted.
        assert_eq!(
            records(&body(&[1; 32], ms(TODAY - 14), 0), &ctx(TODAY - 14))
                .unwrap()
                .count,
            1
        );
    }

    #[test]
    fn fake_uploads_store_nothing_but_are_shape_checked() {
        let r = records(&body(&[1; 32], ms(TODAY + 5), 1), &ctx(TODAY)).unwrap();
        assert_eq!((r.count, r.fake_body), (0, true));
        assert_eq!(
            records(&body(&[1; 32], ms(TODAY) + 5, 1), &ctx(TODAY))
                .unwrap_err()
                .code,
            "key_date"
        );
        let p = parse(&body(&[1; 32], ms(TODAY - 1), 0), &ctx(TODAY - 3)).unwrap();
        assert!(!p.fake_body);
        assert!(matches!(p.entries, Entries::Design { count: 1, .. }));
    }
}
