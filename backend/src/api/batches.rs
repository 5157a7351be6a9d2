//! The downloads of the three DP-3T designs ([`Design`]): `GET …/{batchReleaseTime}`
//! answered from [`crate::designs::DesignPublisher`]: `200` with the body, `Signature`,
//! `X-BATCH-RELEASE-TIME` and `Cache-Control: public, max-age=300`; `400` off a bucket
//! boundary; `404` for a batch in the future or older than the retention (the DP-3T v1
//! backend's answers). A batch without uploads is a `200` with its padded body, never a
//! `204`: the DP-3T SDK treats anything but a `200` with a body as an error. The uploads
//! of the designs go through [`super::upload`] with the parsers of [`super::lowcost`],
//! [`super::unlinkable`] and [`super::hybrid`].

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::{ApiError, AppState, ErrorCode};
use crate::designs::{BucketError, Design};
use crate::unix_now;

/// `Cache-Control` of published batches (as GAEN downloads).
pub const BATCH_CACHE_CONTROL: &str = "public, max-age=300";

/// Parse the `{batchReleaseTime}` path segment: decimal milliseconds.
fn parse_release_ms(s: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_request(
            ErrorCode::BatchReleaseTime,
            "batchReleaseTime must be a decimal number of milliseconds",
        )
    };
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

/// `GET` of the batch of `design` released at the path's `batchReleaseTime`.
pub async fn download(
    design: Design,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ms = parse_release_ms(&path)?;
    let bucket = state
        .designs
        .bucket(design, ms, unix_now())
        .await
        .map_err(|e| {
            let status = match &e {
                BucketError::NotOnBoundary(..) => StatusCode::BAD_REQUEST,
                BucketError::InFuture(_) | BucketError::Expired(_) => StatusCode::NOT_FOUND,
                BucketError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                BucketError::Internal(err) => {
                    tracing::error!(design = design.name(), error = %err, "building a batch failed");
                    return ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::Internal,
                        "the batch could not be produced; retry later",
                    );
                }
            };
            let code = match &e {
                BucketError::NotOnBoundary(..) => ErrorCode::BatchReleaseTime,
                BucketError::InFuture(_) => ErrorCode::NotReleased,
                BucketError::Expired(_) => ErrorCode::Expired,
                _ => ErrorCode::Unavailable,
            };
            ApiError::new(status, code, e.to_string())
        })?;
    Ok(HttpResponse::Ok()
        .content_type(design.content_type())
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static(BATCH_CACHE_CONTROL),
        ))
        .insert_header(("x-batch-release-time", bucket.release_time.clone()))
        .insert_header(("signature", bucket.signature.clone()))
        .body(bucket.body.clone()))
}

/// `GET /v1`: hello, as the DP-3T v1 backend.
pub async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Hello from DP3T WS")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn release_times_are_decimal_milliseconds() {
        assert_eq!(parse_release_ms("7200000").unwrap(), 7_200_000);
        for bad in [
            "",
            "-7200000",
            "+7200000",
            "7200000.0",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_release_ms(bad).unwrap_err().code,
                "batch_release_time",
                "{bad}"
            );
        }
    }
}
