//! GAEN: the upload body parsers of the DP-3T SDK's v2 and v1 APIs (the pipeline around
//! them is [`super::upload`]), and the v2 download.
//!
//! * `GET /v2/gaen` — hello.
//! * `POST /v2/gaen/exposed` — [`parse_v2`]: exactly 30 keys (PROTOCOL.md §7, §8).
//! * `POST /v1/gaen/exposed` — [`parse_v1`]: 14 to 30 keys and a `delayedKeyDate`; the
//!   answer carries a next-day token.
//! * `POST /v1/gaen/exposednextday` — [`parse_next_day`]: the delayed key.
//! * `GET /v2/gaen/exposed?lastKeyBundleTag=<ms>` — signed export of the keys released
//!   after the tag ([`crate::publish`]).

use std::collections::HashSet;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use base64::Engine as _;
use dp3t_core::time::{Enin, UnixTime, INTERVALS_PER_DAY};
use dp3t_core::upload::{GaenNextDayUpload, GaenUpload, GaenUploadKey, GAEN_UPLOAD_KEYS};
use serde::Deserialize;

use super::upload::{malformed, Entries, Parsed, UploadContext};
use super::{ApiError, AppState, ErrorCode};
use crate::db::{days_since_onset, NewKey};
use crate::publish::publish_at;
use crate::unix_now;

/// `GET /v2/gaen`.
pub async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Hello from DP3T WS GAEN V2")
}

/// A key that passed the shape checks.
#[derive(Debug)]
struct ParsedKey {
    key_data: [u8; 16],
    rolling_start_number: u32,
    rolling_period: u32,
    transmission_risk_level: i32,
    fake: bool,
}

/// An upload body that passed the shape checks.
#[derive(Debug)]
struct ParsedUpload {
    keys: Vec<ParsedKey>,
    /// The top-level `fake` flag: the whole upload is fake.
    fake: bool,
    /// `delayedKeyDate` (v1 only), as sent.
    delayed_key_date: Option<u32>,
}

/// How an API treats a key whose `rollingPeriod` is outside 1..=144.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RollingPeriodRule {
    /// `400 rolling_period` (the v2 API).
    Refuse,
    /// Dropped silently, as the DP-3T backend does: the v1 SDKs padded with
    /// `rollingPeriod: 0` keys.
    Drop,
}

/// Parse an upload body whose key count lies in `key_counts` ([`GaenUpload`],
/// PROTOCOL.md §7). Unknown fields are ignored at every level; every field that is read
/// is checked.
fn parse_body(
    bytes: &[u8],
    key_counts: std::ops::RangeInclusive<usize>,
    rule: RollingPeriodRule,
) -> Result<ParsedUpload, ApiError> {
    let body: GaenUpload = serde_json::from_slice(bytes).map_err(malformed)?;
    if !key_counts.contains(&body.gaen_keys.len()) {
        let (lo, hi) = (key_counts.start(), key_counts.end());
        let want = if lo == hi {
            format!("exactly {lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(ApiError::bad_request(
            ErrorCode::KeyCount,
            format!(
                "gaenKeys must hold {want} keys (pad with fake keys), got {}",
                body.gaen_keys.len()
            ),
        ));
    }
    let keys = body
        .gaen_keys
        .iter()
        .enumerate()
        .map(|(i, k)| parse_key(k, &format!("gaenKeys[{i}]"), rule))
        .collect::<Result<_, _>>()?;
    Ok(ParsedUpload {
        keys,
        fake: body.fake.is_some_and(|f| f.0),
        delayed_key_date: body.delayed_key_date,
    })
}

/// Check one key of an upload body; `field` names it in errors.
fn parse_key(
    k: &GaenUploadKey,
    field: &str,
    rule: RollingPeriodRule,
) -> Result<ParsedKey, ApiError> {
    let key_data: [u8; 16] = base64::engine::general_purpose::STANDARD
        .decode(&k.key_data)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::KeyData,
                format!("{field}.keyData must be base64 of exactly 16 bytes"),
            )
        })?;
    if rule == RollingPeriodRule::Refuse && !(1..=144).contains(&k.rolling_period) {
        return Err(ApiError::bad_request(
            ErrorCode::RollingPeriod,
            format!(
                "{field}.rollingPeriod must be in 1..=144, got {}",
                k.rolling_period
            ),
        ));
    }
    let transmission_risk_level = i32::try_from(k.transmission_risk_level)
        .ok()
        .filter(|t| (0..=8).contains(t))
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::MalformedBody,
                format!("{field}.transmissionRiskLevel must be in 0..=8"),
            )
        })?;
    Ok(ParsedKey {
        key_data,
        rolling_start_number: k.rolling_start_number,
        rolling_period: k.rolling_period,
        transmission_risk_level,
        fake: k.fake.0,
    })
}

/// The keys of an upload to store, once the range rules have dropped the rest: fake
/// keys, keys of a `rollingPeriod` outside 1..=144, keys before the onset day, after
/// tomorrow or expired past the retention, and duplicates within the upload.
fn keys_to_store(keys: &[ParsedKey], ctx: &UploadContext) -> Vec<NewKey> {
    let now = ctx.now;
    let latest_day = now.day().next();
    let oldest_end = now.0.saturating_sub(ctx.timing.retention_seconds);
    let received_at = ctx.received_at();
    let onset_enin = ctx.onset.0.saturating_mul(INTERVALS_PER_DAY);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for k in keys {
        let start = k.rolling_start_number;
        let end_secs = (u64::from(start) + u64::from(k.rolling_period)) * 600;
        let keep = !k.fake
            && (1..=144).contains(&k.rolling_period)
            && start >= onset_enin
            && Enin(start).day() <= latest_day
            && end_secs > oldest_end
            && seen.insert((k.key_data, start));
        if keep {
            out.push(NewKey {
                key_data: k.key_data,
                rolling_start_number: start,
                rolling_period: k.rolling_period,
                transmission_risk_level: k.transmission_risk_level,
                days_since_onset: days_since_onset(Enin(start).day(), ctx.onset),
                received_at,
                publish_at: publish_at(
                    now.0,
                    ctx.timing.bucket_seconds.max(1),
                    start,
                    k.rolling_period,
                ),
            });
        }
    }
    out
}

/// The key counts each API accepts: v2 exactly 30; v1 14 to 30 (the DP-3T backend's
/// rule; the v1 SDKs sent 14).
const V1_KEY_COUNTS: std::ops::RangeInclusive<usize> = 14..=GAEN_UPLOAD_KEYS;

/// `POST /v2/gaen/exposed`: exactly 30 keys.
pub(crate) fn parse_v2(body: &[u8], ctx: &UploadContext) -> Result<Parsed, ApiError> {
    let upload = parse_body(
        body,
        GAEN_UPLOAD_KEYS..=GAEN_UPLOAD_KEYS,
        RollingPeriodRule::Refuse,
    )?;
    Ok(Parsed {
        entries: Entries::Keys(keys_to_store(&upload.keys, ctx)),
        fake_body: upload.fake,
        next_day: None,
    })
}

/// Check a v1 `delayedKeyDate` (an ENIN): its UTC day must be yesterday, today or
/// tomorrow at `now`, as the DP-3T backend requires.
fn check_delayed_key_date(enin: Option<u32>, now: UnixTime) -> Result<u32, ApiError> {
    let enin = enin.ok_or_else(|| {
        ApiError::bad_request(ErrorCode::DelayedKeyDate, "delayedKeyDate is missing")
    })?;
    let day = Enin(enin).day();
    let today = now.day();
    if day.0.saturating_add(1) < today.0 || day.0 > today.0.saturating_add(1) {
        return Err(ApiError::bad_request(
            ErrorCode::DelayedKeyDate,
            format!("delayedKeyDate {enin} must be between yesterday and tomorrow"),
        ));
    }
    Ok(enin)
}

/// `POST /v1/gaen/exposed`: 14 to 30 keys and a `delayedKeyDate`, answered with a
/// next-day token bound to it.
pub(crate) fn parse_v1(body: &[u8], ctx: &UploadContext) -> Result<Parsed, ApiError> {
    let upload = parse_body(body, V1_KEY_COUNTS, RollingPeriodRule::Drop)?;
    let delayed = check_delayed_key_date(upload.delayed_key_date, ctx.now)?;
    Ok(Parsed {
        entries: Entries::Keys(keys_to_store(&upload.keys, ctx)),
        fake_body: upload.fake,
        next_day: Some(delayed),
    })
}

/// `POST /v1/gaen/exposednextday`: the delayed key. A key whose `rollingStartNumber` is
/// not the token's `delayedKeyDate`, or whose day is not yesterday, today or tomorrow, is
/// dropped silently (the DP-3T backend's rule).
pub(crate) fn parse_next_day(body: &[u8], ctx: &UploadContext) -> Result<Parsed, ApiError> {
    let upload: GaenNextDayUpload = serde_json::from_slice(body).map_err(malformed)?;
    let key = parse_key(&upload.delayed_key, "delayedKey", RollingPeriodRule::Drop)?;
    let matches = Some(key.rolling_start_number) == ctx.delayed_key_date
        && check_delayed_key_date(Some(key.rolling_start_number), ctx.now).is_ok();
    let keys = if matches {
        keys_to_store(std::slice::from_ref(&key), ctx)
    } else {
        Vec::new()
    };
    Ok(Parsed {
        entries: Entries::Keys(keys),
        fake_body: upload.fake.is_some_and(|f| f.0),
        next_day: None,
    })
}

/// Query of the download.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposedQuery {
    /// The `x-key-bundle-tag` of the client's previous download (ms); absent = everything
    /// within retention.
    last_key_bundle_tag: Option<u64>,
}

/// `GET /v2/gaen/exposed?lastKeyBundleTag=<ms>`.
pub async fn download(
    query: web::Query<ExposedQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let resp = state
        .publisher
        .export_since(query.last_key_bundle_tag, unix_now())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "building a download failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                "the export could not be produced; retry later",
            )
        })?;
    let signature = HeaderValue::from_str(&resp.signature).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "bad signature header",
        )
    })?;
    let mut b = match &resp.body {
        Some(_) => HttpResponse::Ok(),
        None => HttpResponse::NoContent(),
    };
    b.insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header(("x-key-bundle-tag", resp.bundle_tag_ms.to_string()))
        .insert_header(("signature", signature));
    Ok(match &resp.body {
        Some(zip) => b.content_type("application/zip").body(zip.clone()),
        None => b.finish(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dp3t_core::time::Day;

    fn body_with(n: usize, f: impl Fn(usize) -> serde_json::Value) -> Vec<u8> {
        let keys: Vec<_> = (0..n).map(f).collect();
        serde_json::to_vec(&serde_json::json!({"gaenKeys": keys, "withFederationGateway": false}))
            .unwrap()
    }

    fn key(i: usize) -> serde_json::Value {
        serde_json::json!({"keyData": base64::engine::general_purpose::STANDARD.encode([i as u8; 16]),
            "rollingStartNumber": 2_700_000, "rollingPeriod": 144, "transmissionRiskLevel": 0, "fake": 0})
    }

    #[test]
    fn shape_errors_name_the_problem() {
        assert!(parse_body(&body_with(30, key), 30..=30, RollingPeriodRule::Refuse).is_ok());
        assert_eq!(
            parse_body(&body_with(29, key), 30..=30, RollingPeriodRule::Refuse)
                .unwrap_err()
                .code,
            "key_count"
        );
        let e = parse_body(
            &body_with(30, |i| {
                let mut k = key(i);
                if i == 7 {
                    k["keyData"] = "AAAA".into();
                }
                k
            }),
            30..=30,
            RollingPeriodRule::Refuse,
        )
        .unwrap_err();
        assert_eq!(e.code, "key_data");
        assert!(e.message.contains("gaenKeys[7]"));
        let e = parse_body(
            &body_with(30, |i| {
                let mut k = key(i);
                k["rollingPeriod"] = 0.into();
                k
            }),
            30..=30,
            RollingPeriodRule::Refuse,
        )
        .unwrap_err();
        assert_eq!(e.code, "rolling_period");
        let e = parse_body(
            &body_with(30, |i| {
                let mut k = key(i);
                k["extra"] = 1.into();
                k
            }),
            30..=30,
            RollingPeriodRule::Refuse,
        );
        assert!(e.is_ok(), "unknown fields are ignored");
        let e = parse_body(
            &body_with(30, |i| {
                let mut k = key(i);
                k["fake"] = 2.into();
                k
            }),
            30..=30,
            RollingPeriodRule::Refuse,
        )
        .unwrap_err();
        assert_eq!(e.code, "fake_flag");
        assert_eq!(
            parse_body(b"{", 30..=30, RollingPeriodRule::Refuse)
                .unwrap_err()
                .code,
            "malformed_body"
        );
        assert_eq!(
            parse_body(b"[]", 30..=30, RollingPeriodRule::Refuse)
                .unwrap_err()
                .code,
            "malformed_body"
        );
    }

    #[test]
    fn drop_rules() {
        let day = Day(20_000);
        let now = UnixTime(u64::from(day.0) * 86_400 + 5_000);
        let k = |d: u32, fake: bool, data: u8| ParsedKey {
            key_data: [data; 16],
            rolling_start_number: d * 144,
            rolling_period: 144,
            transmission_risk_level: 0,
            fake,
        };
        let keys = vec![
            k(day.0 - 3, false, 1), // kept
            k(day.0 - 3, true, 2),  // fake
            k(day.0 - 6, false, 3), // before onset
            k(day.0 + 2, false, 4), // past tomorrow
            k(day.0 + 1, false, 5), // tomorrow: kept (embargoed)
            k(day.0 - 3, false, 1), // duplicate
            k(day.0, false, 6),     // today: kept (embargoed)
        ];
        let ctx = |onset: Day| UploadContext {
            now,
            onset,
            delayed_key_date: None,
            timing: crate::config::Timing {
                bucket_seconds: 7_200,
                retention_seconds: 14 * 86_400,
                upload_delay: std::time::Duration::ZERO,
            },
        };
        let out = keys_to_store(&keys, &ctx(Day(day.0 - 5)));
        let kept: Vec<u8> = out.iter().map(|k| k.key_data[0]).collect();
        assert_eq!(kept, vec![1, 5, 6]);
        assert_eq!(
            out.iter().map(|k| k.days_since_onset).collect::<Vec<_>>(),
            vec![2, 6, 5]
        );
        assert!(out
            .iter()
            .all(|k| k.received_at == u64::from(day.0) * 86_400 + 7_200));
        assert_eq!(out[0].publish_at, u64::from(day.0) * 86_400 + 7_200);
        assert_eq!(out[2].publish_at, u64::from(day.0 + 1) * 86_400 + 7_200);
        // Outside retention: a key that expired more than 14 days ago.
        let old = vec![k(day.0 - 20, false, 9)];
        assert!(keys_to_store(&old, &ctx(Day(0))).is_empty());
        // A rolling period outside 1..=144 (v1 padding) is dropped.
        let mut zero = k(day.0 - 3, false, 7);
        zero.rolling_period = 0;
        assert!(keys_to_store(&[zero], &ctx(Day(0))).is_empty());
    }
}
