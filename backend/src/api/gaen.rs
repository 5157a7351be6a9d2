//! The GAEN endpoints of the DP-3T SDK v2 API.
//!
//! * `GET /v2/gaen` — hello.
//! * `POST /v2/gaen/exposed` — upload (PROTOCOL.md §7, §8). Checks, in order: content
//!   type (415), body size (413), token (401/403), body shape (400), then stores the keys
//!   and records the `jti` in one transaction (a replayed `jti` gets 409 and stores
//!   nothing). Every accepted upload — real or fake, whatever was dropped — answers `200`
//!   with an empty body once the configured delay since its arrival has passed.
//! * `GET /v2/gaen/exposed?lastKeyBundleTag=<ms>` — signed export of the keys released
//!   after the tag ([`crate::publish`]).

use std::collections::HashSet;
use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use dp3t_core::time::{Day, Enin, UnixTime, INTERVALS_PER_DAY};
use dp3t_core::upload::{GaenNextDayUpload, GaenUpload, GaenUploadKey, GAEN_UPLOAD_KEYS};
use serde::Deserialize;

use super::{read_authorized_upload, read_upload, ApiError, AppState};
use crate::auth::AuthError;
use crate::config::MAX_UPLOAD_BYTES;
use crate::db::{days_since_onset, NewKey, StoreOutcome, UploadRecord};
use crate::publish::{bucket_floor, publish_at};
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
    let body: GaenUpload = serde_json::from_slice(bytes).map_err(super::dp3t::malformed)?;
    if !key_counts.contains(&body.gaen_keys.len()) {
        let (lo, hi) = (key_counts.start(), key_counts.end());
        let want = if lo == hi {
            format!("exactly {lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(ApiError::bad_request(
            "key_count",
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
                "key_data",
                format!("{field}.keyData must be base64 of exactly 16 bytes"),
            )
        })?;
    if rule == RollingPeriodRule::Refuse && !(1..=144).contains(&k.rolling_period) {
        return Err(ApiError::bad_request(
            "rolling_period",
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
                "malformed_body",
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

pub(crate) fn auth_error(e: AuthError) -> ApiError {
    let status = match e {
        AuthError::Scope => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    ApiError::new(status, e.reason(), e.to_string())
}

/// The keys of an accepted upload that are to be stored, and how many were dropped.
fn keys_to_store(
    keys: &[ParsedKey],
    onset: Day,
    now: UnixTime,
    bucket_seconds: u64,
    retention_seconds: u64,
) -> (Vec<NewKey>, u64) {
    let today = now.day();
    let latest_day = today.next();
    let oldest_end = now.0.saturating_sub(retention_seconds);
    let received_at = bucket_floor(now.0, bucket_seconds).saturating_add(bucket_seconds);
    let onset_enin = onset.0.saturating_mul(INTERVALS_PER_DAY);
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
                days_since_onset: days_since_onset(Enin(start).day(), onset),
                received_at,
                publish_at: publish_at(now.0, bucket_seconds, start, k.rolling_period),
            });
        }
    }
    let dropped = (keys.len() - out.len()) as u64;
    (out, dropped)
}

pub(crate) fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            format!(
                "Content-Type must be application/json, got {:?}",
                truncate(ct, 64)
            ),
        ))
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The key counts each API accepts: v2 exactly 30; v1 14 to 30 (the DP-3T backend's
/// rule; the v1 SDKs sent 14).
const V1_KEY_COUNTS: std::ops::RangeInclusive<usize> = 14..=GAEN_UPLOAD_KEYS;

/// Store an accepted upload's keys and spend its `jti` through the group-commit writer.
async fn store(
    state: &AppState,
    jti_hash: [u8; 32],
    expires_at: u64,
    fake: bool,
    (to_store, dropped): (Vec<NewKey>, u64),
) -> Result<(), ApiError> {
    let candidates = to_store.len() as u64;
    let outcome = state
        .writer
        .store(UploadRecord {
            jti_hash,
            expires_at,
            keys: to_store,
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "storing an upload failed");
            ApiError::upload_not_stored()
        })?;
    match outcome {
        StoreOutcome::Replayed => Err(ApiError::token_replayed()),
        StoreOutcome::Stored { inserted } => {
            let duplicates = candidates - inserted.min(candidates);
            state
                .metrics
                .upload_accepted(fake, inserted, dropped + duplicates);
            Ok(())
        }
    }
}

/// The keys of `upload` to store under `onset`: none when `fake`.
fn selected(
    state: &AppState,
    keys: &[ParsedKey],
    onset: Day,
    fake: bool,
    now: UnixTime,
) -> Result<(Vec<NewKey>, u64), ApiError> {
    onset
        .first_enin()
        .map_err(|_| ApiError::bad_request("token_claims", "onset is out of range"))?;
    Ok(if fake {
        (Vec::new(), keys.len() as u64)
    } else {
        keys_to_store(
            keys,
            onset,
            now,
            state.bucket_seconds,
            state.retention_seconds,
        )
    })
}

/// `POST /v2/gaen/exposed`: exactly 30 keys.
async fn upload_v2_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Option<String>, ApiError> {
    let (body, now, grant) = read_authorized_upload(req, payload, MAX_UPLOAD_BYTES, state).await?;
    let upload = parse_body(
        &body,
        GAEN_UPLOAD_KEYS..=GAEN_UPLOAD_KEYS,
        RollingPeriodRule::Refuse,
    )?;
    // A fake token or a top-level `"fake": 1` (the SDKs' fake requests) stores nothing.
    let fake = grant.fake || upload.fake;
    let keys = selected(state, &upload.keys, grant.onset, fake, now)?;
    store(state, grant.jti_hash, grant.expires_at, fake, keys).await?;
    Ok(None)
}

/// Check a v1 `delayedKeyDate` (an ENIN): its UTC day must be yesterday, today or
/// tomorrow at `now`, as the DP-3T backend requires.
fn check_delayed_key_date(enin: Option<u32>, now: UnixTime) -> Result<u32, ApiError> {
    let enin =
        enin.ok_or_else(|| ApiError::bad_request("delayed_key_date", "delayedKeyDate is missing"))?;
    let day = Enin(enin).day();
    let today = now.day();
    if day.0.saturating_add(1) < today.0 || day.0 > today.0.saturating_add(1) {
        return Err(ApiError::bad_request(
            "delayed_key_date",
            format!("delayedKeyDate {enin} must be between yesterday and tomorrow"),
        ));
    }
    Ok(enin)
}

/// `POST /v1/gaen/exposed`: 14 to 30 keys and a `delayedKeyDate`; answers with a
/// next-day token.
async fn upload_v1_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Option<String>, ApiError> {
    let (body, now, grant) = read_authorized_upload(req, payload, MAX_UPLOAD_BYTES, state).await?;
    let upload = parse_body(&body, V1_KEY_COUNTS, RollingPeriodRule::Drop)?;
    let delayed = check_delayed_key_date(upload.delayed_key_date, now)?;
    let fake = grant.fake || upload.fake;
    let keys = selected(state, &upload.keys, grant.onset, fake, now)?;
    let token = state
        .next_day
        .issue(grant.onset, fake, delayed, now)
        .map_err(|e| {
            tracing::error!(error = %e, "issuing a next-day token failed");
            ApiError::upload_not_stored()
        })?;
    store(state, grant.jti_hash, grant.expires_at, fake, keys).await?;
    Ok(Some(token))
}

/// `POST /v1/gaen/exposednextday`: the delayed key, with the next-day token. A key whose
/// `rollingStartNumber` is not the token's `delayedKeyDate`, or whose day is not
/// yesterday, today or tomorrow, is dropped silently (the DP-3T backend's rule).
async fn upload_next_day_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Option<String>, ApiError> {
    let (body, now, grant) = read_upload(req, payload, MAX_UPLOAD_BYTES, |token, now| {
        state.next_day.verify(token, now)
    })
    .await?;
    let upload: GaenNextDayUpload =
        serde_json::from_slice(&body).map_err(super::dp3t::malformed)?;
    let key = parse_key(&upload.delayed_key, "delayedKey", RollingPeriodRule::Drop)?;
    let fake = grant.fake || upload.fake.is_some_and(|f| f.0);
    let matches = key.rolling_start_number == grant.delayed_key_date
        && check_delayed_key_date(Some(key.rolling_start_number), now).is_ok();
    let keys = if matches {
        selected(state, std::slice::from_ref(&key), grant.onset, fake, now)?
    } else {
        (Vec::new(), 1)
    };
    store(state, grant.jti_hash, grant.expires_at, fake, keys).await?;
    Ok(None)
}

/// Answer an upload: `200 OK` (with the next-day token in `Authorization` when there is
/// one) once the constant delay since `arrived` has passed, or the refusal.
async fn answer(
    arrived: Instant,
    state: &AppState,
    outcome: Result<Option<String>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    match outcome {
        Ok(token) => {
            tokio::time::sleep_until((arrived + state.upload_delay).into()).await;
            let mut b = HttpResponse::Ok();
            b.content_type("text/plain; charset=utf-8");
            if let Some(t) = token {
                b.insert_header((header::AUTHORIZATION, format!("Bearer {t}")));
            }
            Ok(b.body("OK"))
        }
        Err(e) => {
            state.metrics.upload_rejected(e.code);
            tracing::debug!(reason = e.code, "upload refused");
            Err(e)
        }
    }
}

/// `POST /v2/gaen/exposed`.
pub async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let arrived = Instant::now();
    let outcome = upload_v2_inner(&req, payload, &state).await;
    answer(arrived, &state, outcome).await
}

/// `POST /v1/gaen/exposed`.
pub async fn upload_v1(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let arrived = Instant::now();
    let outcome = upload_v1_inner(&req, payload, &state).await;
    answer(arrived, &state, outcome).await
}

/// `POST /v1/gaen/exposednextday`.
pub async fn upload_next_day(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let arrived = Instant::now();
    let outcome = upload_next_day_inner(&req, payload, &state).await;
    answer(arrived, &state, outcome).await
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
                "internal",
                "the export could not be produced; retry later",
            )
        })?;
    let signature = HeaderValue::from_str(&resp.signature).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
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
        let onset = Day(day.0 - 5);
        let (out, dropped) = keys_to_store(&keys, onset, now, 7_200, 14 * 86_400);
        let kept: Vec<u8> = out.iter().map(|k| k.key_data[0]).collect();
        assert_eq!(kept, vec![1, 5, 6]);
        assert_eq!(dropped, 4);
        assert!(out
            .iter()
            .all(|k| k.received_at == u64::from(day.0) * 86_400 + 7_200));
        assert_eq!(out[0].publish_at, u64::from(day.0) * 86_400 + 7_200);
        assert_eq!(out[2].publish_at, u64::from(day.0 + 1) * 86_400 + 7_200);
        // Outside retention: a key that expired more than 14 days ago.
        let old = vec![k(day.0 - 20, false, 9)];
        assert!(keys_to_store(&old, Day(0), now, 7_200, 14 * 86_400)
            .0
            .is_empty());
    }
}
