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
use dp3t_core::time::{Enin, UnixTime};
use serde::Deserialize;

use super::{read_authorized_upload, ApiError, AppState};
use crate::auth::AuthError;
use crate::config::MAX_UPLOAD_BYTES;
use crate::db::{NewKey, StoreOutcome, UploadRecord};
use crate::publish::{bucket_floor, publish_at};
use crate::unix_now;

/// Keys per upload (§7).
pub const KEYS_PER_UPLOAD: usize = 30;

/// `GET /v2/gaen`.
pub async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Hello from DP3T WS GAEN V2")
}

/// The upload body (§7). Unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UploadBody {
    gaen_keys: Vec<UploadKey>,
    #[serde(default)]
    #[allow(dead_code)]
    with_federation_gateway: Option<bool>,
}

/// One key of the upload body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UploadKey {
    key_data: String,
    rolling_start_number: u32,
    rolling_period: u32,
    #[serde(default)]
    transmission_risk_level: i32,
    #[serde(default)]
    fake: u8,
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

fn parse_body(bytes: &[u8]) -> Result<Vec<ParsedKey>, ApiError> {
    let body: UploadBody = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("malformed_body", format!("invalid upload body: {e}"))
    })?;
    if body.gaen_keys.len() != KEYS_PER_UPLOAD {
        return Err(ApiError::bad_request(
            "key_count",
            format!(
                "gaenKeys must hold exactly {KEYS_PER_UPLOAD} keys (pad with fake keys), got {}",
                body.gaen_keys.len()
            ),
        ));
    }
    body.gaen_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let key_data: [u8; 16] = base64::engine::general_purpose::STANDARD
                .decode(&k.key_data)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "key_data",
                        format!("gaenKeys[{i}].keyData must be base64 of exactly 16 bytes"),
                    )
                })?;
            if !(1..=144).contains(&k.rolling_period) {
                return Err(ApiError::bad_request(
                    "rolling_period",
                    format!(
                        "gaenKeys[{i}].rollingPeriod must be in 1..=144, got {}",
                        k.rolling_period
                    ),
                ));
            }
            if !(0..=8).contains(&k.transmission_risk_level) {
                return Err(ApiError::bad_request(
                    "malformed_body",
                    format!("gaenKeys[{i}].transmissionRiskLevel must be in 0..=8"),
                ));
            }
            let fake = match k.fake {
                0 => false,
                1 => true,
                other => {
                    return Err(ApiError::bad_request(
                        "fake_flag",
                        format!("gaenKeys[{i}].fake must be 0 or 1, got {other}"),
                    ))
                }
            };
            Ok(ParsedKey {
                key_data,
                rolling_start_number: k.rolling_start_number,
                rolling_period: k.rolling_period,
                transmission_risk_level: k.transmission_risk_level,
                fake,
            })
        })
        .collect()
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
    onset_enin: u32,
    now: UnixTime,
    bucket_seconds: u64,
    retention_seconds: u64,
) -> (Vec<NewKey>, u64) {
    let today = now.day();
    let latest_day = today.next();
    let oldest_end = now.0.saturating_sub(retention_seconds);
    let received_at = bucket_floor(now.0, bucket_seconds).saturating_add(bucket_seconds);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for k in keys {
        let start = k.rolling_start_number;
        let end_secs = (u64::from(start) + u64::from(k.rolling_period)) * 600;
        let keep = !k.fake
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

async fn upload_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<bool, ApiError> {
    let (body, now, grant) = read_authorized_upload(req, payload, MAX_UPLOAD_BYTES, state).await?;
    let keys = parse_body(&body)?;
    let onset_enin = grant
        .onset
        .first_enin()
        .map_err(|_| ApiError::bad_request("token_claims", "onset is out of range"))?
        .0;
    let (to_store, dropped) = if grant.fake {
        (Vec::new(), keys.len() as u64)
    } else {
        keys_to_store(
            &keys,
            onset_enin,
            now,
            state.bucket_seconds,
            state.retention_seconds,
        )
    };
    let candidates = to_store.len() as u64;
    let outcome = state
        .writer
        .store(UploadRecord {
            jti_hash: grant.jti_hash,
            expires_at: grant.expires_at,
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
                .upload_accepted(grant.fake, inserted, dropped + duplicates);
            Ok(grant.fake)
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
    match upload_inner(&req, payload, &state).await {
        Ok(_fake) => {
            tokio::time::sleep_until((arrived + state.upload_delay).into()).await;
            Ok(HttpResponse::Ok().finish())
        }
        Err(e) => {
            state.metrics.upload_rejected(e.code);
            tracing::debug!(reason = e.code, "upload refused");
            Err(e)
        }
    }
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
        assert!(parse_body(&body_with(30, key)).is_ok());
        assert_eq!(
            parse_body(&body_with(29, key)).unwrap_err().code,
            "key_count"
        );
        let e = parse_body(&body_with(30, |i| {
            let mut k = key(i);
            if i == 7 {
                k["keyData"] = "AAAA".into();
            }
            k
        }))
        .unwrap_err();
        assert_eq!(e.code, "key_data");
        assert!(e.message.contains("gaenKeys[7]"));
        let e = parse_body(&body_with(30, |i| {
            let mut k = key(i);
            k["rollingPeriod"] = 0.into();
            k
        }))
        .unwrap_err();
        assert_eq!(e.code, "rolling_period");
        let e = parse_body(&body_with(30, |i| {
            let mut k = key(i);
            k["extra"] = 1.into();
            k
        }))
        .unwrap_err();
        assert_eq!(e.code, "malformed_body");
        assert!(e.message.contains("unknown field"), "{}", e.message);
        let e = parse_body(&body_with(30, |i| {
            let mut k = key(i);
            k["fake"] = 2.into();
            k
        }))
        .unwrap_err();
        assert_eq!(e.code, "fake_flag");
        assert_eq!(parse_body(b"{").unwrap_err().code, "malformed_body");
        assert_eq!(parse_body(b"[]").unwrap_err().code, "malformed_body");
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
        let onset = (day.0 - 5) * 144;
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
        assert!(keys_to_store(&old, 0, now, 7_200, 14 * 86_400).0.is_empty());
    }
}
