//! The hybrid design (PROTOCOL.md §5, §7, §9.3).
//!
//! * `POST /v1/hybrid/exposed` — `{"windows": [N × {"windowStart": ms, "windowMinutes":
//!   W, "seed": base64(16 bytes), "fake": 0|1}]}` with one `W` for all entries, a multiple
//!   of 15 in 15..=1440 (400 `window_minutes`), and `N = 14 * 1440 / W` (400
//!   `entry_count`). Every window start is aligned to `W` (400 `window`); real windows
//!   must lie inside the retention and not start in the future (400 `window`). Fake
//!   entries, and real windows that end before the token's onset, are dropped.
//! * `GET /v1/hybrid/exposed/{batchReleaseTime}` — the `HybridExposedList` of the
//!   windows received in the bucket ending at that time ([`super::dp3t`]).

use dp3t_core::hybrid::WindowMinutes;
use dp3t_core::upload::HybridUpload;

use super::upload::{decode_fixed, malformed, Entries, Parsed, UploadContext};
use super::{ApiError, ErrorCode};
use crate::designs::build::HybridRecord;
use crate::designs::Design;

/// The records of a body, before the pipeline decides whether it is fake.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Records {
    bytes: Vec<u8>,
    count: u64,
    fake_body: bool,
}

/// Parse a hybrid upload body ([`UploadRoute`](super::upload::UploadRoute) parser).
pub(crate) fn parse(body: &[u8], ctx: &UploadContext) -> Result<Parsed, ApiError> {
    let r = records(body, ctx)?;
    Ok(Parsed {
        entries: Entries::Design {
            design: Design::Hybrid,
            bytes: r.bytes,
            count: r.count,
        },
        fake_body: r.fake_body,
        next_day: None,
    })
}

/// Parse and check a hybrid upload body; the window records to store.
fn records(body: &[u8], ctx: &UploadContext) -> Result<Records, ApiError> {
    let upload: HybridUpload = serde_json::from_slice(body).map_err(malformed)?;
    let Some(first) = upload.windows.first() else {
        return Err(ApiError::bad_request(
            ErrorCode::EntryCount,
            "windows must hold 14 * 1440 / W entries, got none",
        ));
    };
    let bad_w = |i: usize, w: u32| {
        ApiError::bad_request(
            ErrorCode::WindowMinutes,
            format!("windows[{i}].windowMinutes {w} is not a multiple of 15 in 15..=1440"),
        )
    };
    let minutes =
        WindowMinutes::new(first.window_minutes).map_err(|_| bad_w(0, first.window_minutes))?;
    for (i, w) in upload.windows.iter().enumerate() {
        if WindowMinutes::new(w.window_minutes).is_err() {
            return Err(bad_w(i, w.window_minutes));
        }
        if w.window_minutes != minutes.get() {
            return Err(ApiError::bad_request(
                ErrorCode::WindowMinutes,
                format!(
                    "windows[{i}].windowMinutes {} differs from windows[0]'s {}: one length per upload",
                    w.window_minutes,
                    minutes.get()
                ),
            ));
        }
    }
    let expected = minutes.upload_entries();
    if upload.windows.len() != expected {
        return Err(ApiError::bad_request(
            ErrorCode::EntryCount,
            format!(
                "windows of {} minutes must hold exactly {expected} entries (pad with fake ones), got {}",
                minutes.get(),
                upload.windows.len()
            ),
        ));
    }
    let len = minutes.seconds();
    let onset = ctx.onset.start().0;
    let mut records = Vec::new();
    let mut real = 0usize;
    for (i, w) in upload.windows.iter().enumerate() {
        let seed: [u8; 16] = decode_fixed(&w.seed, &format!("windows[{i}].seed"))?;
        let start = w.window_start / 1000;
        if w.window_start % 1000 != 0 || start % len != 0 {
            return Err(ApiError::bad_request(
                ErrorCode::Window,
                format!(
                    "windows[{i}].windowStart {} is not aligned to {} minutes",
                    w.window_start,
                    minutes.get()
                ),
            ));
        }
        if w.fake.0 {
            continue;
        }
        real += 1;
        // Windows in the future or past the retention are dropped silently, the same for
        // real and fake uploads (see the unlinkable parser).
        let end = start.saturating_add(len);
        if ctx.in_future(start) || !ctx.within_retention(end) {
            continue;
        }
        if end > onset {
            records.push(HybridRecord {
                seed,
                start,
                minutes: minutes.get() as u16,
            });
        }
    }
    records.sort_unstable();
    records.dedup();
    Ok(Records {
        count: records.len() as u64,
        bytes: records.iter().flat_map(|r| r.to_bytes()).collect(),
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

    fn window(start: u64, w: u32, fake: u8) -> serde_json::Value {
        serde_json::json!({
            "windowStart": start * 1000,
            "windowMinutes": w,
            "seed": base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
            "fake": fake,
        })
    }

    fn body(real: &[serde_json::Value], w: u32, n: usize) -> Vec<u8> {
        let mut windows = real.to_vec();
        while windows.len() < n {
            windows.push(window(
                NOW + 7_200 - (NOW + 7_200) % (u64::from(w) * 60),
                w,
                1,
            ));
        }
        serde_json::to_vec(&serde_json::json!({ "windows": windows })).unwrap()
    }

    #[test]
    fn real_windows_are_stored() {
        let r = records(
            &body(
                &[
                    window(NOW - 7_200 - NOW % 7_200, 120, 0),
                    window(NOW - NOW % 7_200, 120, 0),
                    window(19_990 * 86_400, 120, 0), // before onset: dropped
                ],
                120,
                168,
            ),
            &ctx(),
        )
        .unwrap();
        assert_eq!(r.count, 2);
        assert_eq!(r.bytes.len(), 2 * 26);
        let rec = HybridRecord::from_bytes(&r.bytes[..26].try_into().unwrap());
        assert_eq!((rec.seed, rec.minutes), ([7; 16], 120));
        // 15-minute windows: 1,344 entries.
        assert_eq!(records(&body(&[], 15, 1_344), &ctx()).unwrap().count, 0);
    }

    #[test]
    fn refusals_name_the_problem() {
        let code = |b: Vec<u8>| records(&b, &ctx()).unwrap_err().code;
        assert_eq!(code(body(&[], 120, 167)), "entry_count");
        assert_eq!(code(body(&[], 120, 0)), "entry_count");
        assert_eq!(
            code(body(&[window(NOW - NOW % 7_200 + 900, 120, 0)], 120, 168)),
            "window"
        );
        // Windows in the future or past the retention are dropped, not refused.
        for start in [NOW + 7_200 - NOW % 7_200, NOW - 15 * 86_400 - NOW % 7_200] {
            let r = records(&body(&[window(start, 120, 0)], 120, 168), &ctx()).unwrap();
            assert_eq!((r.count, r.fake_body), (0, false));
        }
        assert_eq!(
            code(body(&[window(NOW - NOW % 1_200, 20, 0)], 20, 1_008)),
            "window_minutes"
        );
        assert_eq!(
            code(body(&[window(0, 1_455, 1)], 1_455, 14)),
            "window_minutes"
        );
        assert_eq!(
            code(body(&[window(NOW - NOW % 3_600, 60, 0)], 120, 168)),
            "window_minutes"
        );
        let mut ms = window(NOW - NOW % 7_200, 120, 1);
        ms["windowStart"] = ((NOW - NOW % 7_200) * 1000 + 1).into();
        assert_eq!(code(body(&[ms], 120, 168)), "window");
        let mut seed = window(NOW - NOW % 7_200, 120, 1);
        seed["seed"] = base64::engine::general_purpose::STANDARD
            .encode([1u8; 32])
            .into();
        assert_eq!(code(body(&[seed], 120, 168)), "key_data");
    }
}
