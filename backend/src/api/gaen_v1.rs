//! The downloads of the GAEN v1 API of the DP-3T backend, kept for the apps built on the
//! DP-3T SDKs up to Android 2.0 and iOS 1.x (the v1 uploads are in [`super::gaen`]).
//!
//! * `GET /v1/gaen` — hello.
//! * `GET /v1/gaen/exposed/{keyDate}?publishedafter=<ms>` — the keys whose
//!   `rollingStartNumber` falls on the UTC day `keyDate` (milliseconds of its midnight),
//!   released after `publishedafter` ([`crate::publish::Publisher::day_export`]). `200`
//!   with a signed export zip, or `204` when there is none; both carry `Signature`,
//!   `X-PUBLISHED-UNTIL` (the release time to send as `publishedafter` next time, which
//!   the Android SDK reads on every answer) and `Cache-Control: public, max-age=300`. A
//!   `keyDate` that is not a UTC midnight is a `404`; a `publishedafter` off a bucket
//!   boundary is a `400`, one in the future or before the retention a `404` (the DP-3T
//!   backend's answers). The iOS SDK 1.x spells the query `publishedAfter`; both are read.
//! * `GET /v1/gaen/buckets/{yyyy-mm-dd}` — `{"dayTimestamp", "day", "relativeUrls"}`, the
//!   bucket URLs of a day within the retention (`400` for a malformed date, `404` outside
//!   the retention), signed.
//!
//! Both APIs publish the same stored keys: a key uploaded through v1 is in the v2 exports
//! and the other way round.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use dp3t_core::time::{Day, UnixTime};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, ErrorCode};
use crate::unix_now;

/// `Cache-Control` of v1 downloads (as v2's).
const CACHE_CONTROL: &str = "public, max-age=300";

/// `GET /v1/gaen`.
pub async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Hello from DP3T WS GAEN")
}

/// Query of the day download.
#[derive(Debug, Deserialize)]
pub struct DayQuery {
    /// The `X-PUBLISHED-UNTIL` of the client's previous download of this day (ms).
    publishedafter: Option<u64>,
    /// The iOS SDK 1.x spelling of `publishedafter`.
    #[serde(rename = "publishedAfter")]
    published_after: Option<u64>,
}

/// Parse a path segment of decimal milliseconds.
fn parse_ms(s: &str, code: ErrorCode, what: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::bad_request(code, format!("{what} must be decimal milliseconds"));
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

fn not_found(code: ErrorCode, message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code, message)
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "building a v1 download failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal,
        "the export could not be produced; retry later",
    )
}

/// Check a `publishedafter` at `now`: on a bucket boundary (else `400`), not in the future
/// and within the retention (else `404`).
fn check_published_after(ms: u64, now: UnixTime, state: &AppState) -> Result<u64, ApiError> {
    let bucket_ms = state.timing.bucket_seconds.saturating_mul(1000);
    if !ms.is_multiple_of(bucket_ms) {
        return Err(ApiError::bad_request(
            ErrorCode::PublishedAfter,
            format!(
                "publishedafter {ms} is not a release time (a multiple of {} ms)",
                bucket_ms
            ),
        ));
    }
    let secs = ms / 1000;
    if secs > now.0 || secs < now.0.saturating_sub(state.timing.retention_seconds) {
        return Err(not_found(
            ErrorCode::PublishedAfter,
            format!("publishedafter {ms} is in the future or older than the retention"),
        ));
    }
    Ok(ms)
}

/// `GET /v1/gaen/exposed/{keyDate}`.
pub async fn download_day(
    path: web::Path<String>,
    query: web::Query<DayQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ms = parse_ms(&path, ErrorCode::KeyDate, "keyDate")?;
    let day = Day::from_midnight_millis(ms).map_err(|_| {
        not_found(
            ErrorCode::KeyDate,
            format!("keyDate {ms} is not a UTC midnight"),
        )
    })?;
    let now = unix_now();
    let after = match query.publishedafter.or(query.published_after) {
        Some(pa) => Some(check_published_after(pa, now, &state)?),
        None => None,
    };
    let resp = state
        .publisher
        .day_export(day, after, now)
        .await
        .map_err(unavailable)?;
    let signature = HeaderValue::from_str(&resp.signature).map_err(unavailable)?;
    let mut b = match &resp.body {
        Some(_) => HttpResponse::Ok(),
        None => HttpResponse::NoContent(),
    };
    b.insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .insert_header(("x-published-until", resp.bundle_tag_ms.to_string()))
        .insert_header(("signature", signature));
    Ok(match &resp.body {
        Some(zip) => b.content_type("application/zip").body(zip.clone()),
        None => b.finish(),
    })
}

/// The answer of `GET /v1/gaen/buckets/{day}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DayBuckets {
    day_timestamp: u64,
    day: String,
    relative_urls: Vec<String>,
}

/// The bucket URLs of `day` at `now`: one per bucket start from its midnight up to the
/// earlier of `now` and its end.
fn day_buckets(day: Day, now: UnixTime, bucket_seconds: u64) -> DayBuckets {
    let start = day.start().0;
    let until = now.0.min(day.next().start().0);
    let relative_urls = (0..)
        .map(|i: u64| start.saturating_add(i.saturating_mul(bucket_seconds.max(1))))
        .take_while(|t| *t < until)
        .map(|t| format!("/v1/gaen/exposed/{}", t.saturating_mul(1000)))
        .collect();
    DayBuckets {
        day_timestamp: day.start_millis(),
        day: day.iso(),
        relative_urls,
    }
}

/// `GET /v1/gaen/buckets/{day}`.
pub async fn buckets(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let day = Day::parse_iso(&path).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::Day,
            format!("{:?} is not a YYYY-MM-DD date", path.as_str()),
        )
    })?;
    let now = unix_now();
    let start = day.start().0;
    if start >= now.0 || start <= now.0.saturating_sub(state.timing.retention_seconds) {
        return Err(not_found(
            ErrorCode::Day,
            format!(
                "{} is in the future or outside the retention",
                path.as_str()
            ),
        ));
    }
    let body = serde_json::to_vec(&day_buckets(day, now, state.timing.bucket_seconds))
        .map_err(unavailable)?;
    let signature = state.publisher.sign_body(&body).map_err(unavailable)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("signature", signature))
        .body(body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls_cover_the_day_up_to_now() {
        let day = Day(20_000);
        let midnight = u64::from(day.0) * 86_400;
        let b = day_buckets(day, UnixTime(midnight + 5 * 3600), 7200);
        assert_eq!(b.day, "2024-10-04");
        assert_eq!(b.day_timestamp, midnight * 1000);
        assert_eq!(
            b.relative_urls,
            vec![
                format!("/v1/gaen/exposed/{}", midnight * 1000),
                format!("/v1/gaen/exposed/{}", (midnight + 7200) * 1000),
                format!("/v1/gaen/exposed/{}", (midnight + 14_400) * 1000),
            ]
        );
        let full = day_buckets(day, UnixTime(midnight + 3 * 86_400), 7200);
        assert_eq!(full.relative_urls.len(), 12);
        assert!(serde_json::to_string(&full).unwrap().starts_with(&format!(
            "{{\"dayTimestamp\":{},\"day\":\"2024-10-04\",\"relativeUrls\":[",
            midnight * 1000
        )));
    }

    #[test]
    fn key_dates_are_decimal_milliseconds() {
        assert_eq!(
            parse_ms("86400000", ErrorCode::KeyDate, "keyDate").unwrap(),
            86_400_000
        );
        for bad in ["", "-1", "1e3", "x"] {
            assert_eq!(
                parse_ms(bad, ErrorCode::KeyDate, "keyDate")
                    .unwrap_err()
                    .code,
                "key_date"
            );
        }
    }
}
