//! What the endpoints of the three DP-3T designs ([`super::lowcost`],
//! [`super::unlinkable`], [`super::hybrid`]) share: the upload pipeline, the download
//! answer, and their routes.
//!
//! Uploads go through the same steps as GAEN uploads ([`super::gaen`]), in the same
//! order: content type (415), body size (413), token (401/403, PROTOCOL.md §8), body
//! shape and ranges (400, checked by the design's parser), then the `jti` is recorded and
//! the upload stored in one transaction (a replayed `jti` gets 409 and stores nothing).
//! Every accepted upload — real or fake, whatever was dropped — answers `200` with an
//! empty body once the configured delay since its arrival has passed. A fake token or a
//! body of fake entries stores nothing but the `jti`.
//!
//! Range checks apply to the entries that would be stored (real entries under a real
//! token), with [`CLOCK_SKEW_SECONDS`] of tolerance for phones whose clock runs ahead;
//! padding entries only need the right shape. Entries before the token's `onset` are
//! dropped (a low-cost key is instead stepped forward along its chain to the onset day).
//!
//! Downloads answer `GET …/{batchReleaseTime}` from [`crate::designs::DesignPublisher`]:
//! `200` with the body, `Signature`, `X-BATCH-RELEASE-TIME` and
//! `Cache-Control: public, max-age=300`; `400` off a bucket boundary; `404` for a batch
//! in the future or older than the retention (the DP-3T v1 backend's answers). A batch
//! without uploads is a `200` with its padded body, never a `204`: the DP-3T SDK treats
//! anything but a `200` with a body as an error.

use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use dp3t_core::time::{Day, UnixTime};
use dp3t_core::upload::Flag;

use super::{
    hybrid, lowcost, method_not_allowed, read_authorized_upload, unlinkable, ApiError, AppState,
};
use crate::db::designs::DesignUploadRow;
use crate::db::StoreOutcome;
use crate::designs::{BucketError, Design};
use crate::publish::bucket_floor;
use crate::unix_now;

/// Largest accepted upload body of the DP-3T designs (256 KiB): an unlinkable upload of
/// 1,344 entries, or a hybrid one of 15-minute windows, is about 100 KiB.
pub const MAX_DESIGN_UPLOAD_BYTES: usize = 256 * 1024;
/// How far in the future (phone clock ahead of the server's) a real entry may start.
pub const CLOCK_SKEW_SECONDS: u64 = 300;
/// `Cache-Control` of published batches (as GAEN downloads).
pub const BATCH_CACHE_CONTROL: &str = "public, max-age=300";

/// What an upload parser knows about the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UploadContext {
    /// Server time of arrival.
    pub now: UnixTime,
    /// First contagious day (token claim `onset`).
    pub onset: Day,
    /// A fake token: nothing will be stored, so only shapes are checked.
    pub fake_token: bool,
    /// Retention in seconds.
    pub retention_seconds: u64,
}

impl UploadContext {
    /// Whether an entry whose time span ends at `end` (exclusive) reaches into the
    /// retention window.
    pub fn within_retention(&self, end: u64) -> bool {
        end > self.now.0.saturating_sub(self.retention_seconds)
    }

    /// Whether an entry starting at `start` starts in the future (beyond the skew).
    pub fn in_future(&self, start: u64) -> bool {
        start > self.now.0.saturating_add(CLOCK_SKEW_SECONDS)
    }
}

/// The entries of an upload to store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Records {
    /// Fixed-size records, concatenated.
    pub bytes: Vec<u8>,
    /// Number of records.
    pub count: u64,
    /// The body carried no real entry (fake upload).
    pub fake_body: bool,
}

/// A parser of one design's upload body.
pub(crate) type Parser = fn(&[u8], &UploadContext) -> Result<Records, ApiError>;

/// `400` for a JSON error of an upload body: `fake_flag` when a `fake` (or other 0/1)
/// flag holds anything but 0, 1, true or false, else `malformed_body` (wrong types,
/// missing or repeated fields). Unknown fields are not errors.
pub(crate) fn malformed(e: serde_json::Error) -> ApiError {
    let message = format!("invalid upload body: {e}");
    let code = if message.contains(Flag::EXPECTED) {
        "fake_flag"
    } else {
        "malformed_body"
    };
    ApiError::bad_request(code, message)
}

/// Decode standard base64 of exactly `N` bytes, or `400 key_data` naming `field`.
pub(crate) fn decode_fixed<const N: usize>(s: &str, field: &str) -> Result<[u8; N], ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "key_data",
                format!("{field} must be base64 of exactly {N} bytes"),
            )
        })
}

/// Returns whether the upload counts as fake.
async fn upload_inner(
    design: Design,
    parse: Parser,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(bool, u64), ApiError> {
    let (body, now, grant) =
        read_authorized_upload(req, payload, MAX_DESIGN_UPLOAD_BYTES, state).await?;
    let ctx = UploadContext {
        now,
        onset: grant.onset,
        fake_token: grant.fake,
        retention_seconds: state.retention_seconds,
    };
    let records = parse(&body, &ctx)?;
    let fake = grant.fake || records.fake_body;
    let row = (!grant.fake && records.count > 0).then(|| DesignUploadRow {
        design: design.name(),
        entries: records.bytes,
        entry_count: records.count,
        // Coarsened arrival: the end of the bucket the upload arrived in (§10).
        received_at: bucket_floor(now.0, state.bucket_seconds).saturating_add(state.bucket_seconds),
    });
    let outcome = state
        .designs
        .db()
        .store_design_upload(&grant.jti_hash, grant.expires_at, row.as_ref())
        .await
        .map_err(|e| {
            tracing::error!(design = design.name(), error = %e, "storing an upload failed");
            ApiError::upload_not_stored()
        })?;
    match outcome {
        StoreOutcome::Replayed => Err(ApiError::token_replayed()),
        StoreOutcome::Stored { inserted } => Ok((fake, inserted)),
    }
}

/// `POST` of an upload of `design`, parsed by `parse`.
pub(crate) async fn upload(
    design: Design,
    parse: Parser,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let arrived = Instant::now();
    match upload_inner(design, parse, &req, payload, &state).await {
        Ok((fake, stored)) => {
            state
                .designs
                .metrics()
                .upload_accepted(design, fake, stored);
            tokio::time::sleep_until((arrived + state.upload_delay).into()).await;
            Ok(HttpResponse::Ok().finish())
        }
        Err(e) => {
            state.metrics.upload_rejected(e.code);
            tracing::debug!(design = design.name(), reason = e.code, "upload refused");
            Err(e)
        }
    }
}

/// Parse the `{batchReleaseTime}` path segment: decimal milliseconds.
fn parse_release_ms(s: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "batch_release_time",
            "batchReleaseTime must be a decimal number of milliseconds",
        )
    };
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

/// `GET` of the batch of `design` released at the path's `batchReleaseTime`.
pub(crate) async fn download(
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
                        "internal",
                        "the batch could not be produced; retry later",
                    );
                }
            };
            let code = match &e {
                BucketError::NotOnBoundary(..) => "batch_release_time",
                BucketError::InFuture(_) => "not_released",
                BucketError::Expired(_) => "expired",
                _ => "unavailable",
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

/// Register the routes of the three designs. Downloads answer `HEAD` too (same status
/// and headers, no body), as the GAEN download does.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let r = |path: &'static str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(r("/v1").route(web::get().to(hello)))
        .service(r("/v1/exposed").route(web::post().to(lowcost::upload)))
        .service(
            r("/v1/exposed/{batchReleaseTime}")
                .route(web::get().to(lowcost::download))
                .route(web::head().to(lowcost::download)),
        )
        .service(r("/v1/unlinkable/exposed").route(web::post().to(unlinkable::upload)))
        .service(
            r("/v1/unlinkable/filter/{batchReleaseTime}")
                .route(web::get().to(unlinkable::download))
                .route(web::head().to(unlinkable::download)),
        )
        .service(r("/v1/hybrid/exposed").route(web::post().to(hybrid::upload)))
        .service(
            r("/v1/hybrid/exposed/{batchReleaseTime}")
                .route(web::get().to(hybrid::download))
                .route(web::head().to(hybrid::download)),
        );
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

    #[test]
    fn shared_field_checks() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert_eq!(decode_fixed::<16>(&b64, "seed").unwrap(), [1u8; 16]);
        let e = decode_fixed::<32>(&b64, "key").unwrap_err();
        assert_eq!(e.code, "key_data");
        assert!(e.message.contains("key"));
        assert_eq!(
            decode_fixed::<16>("!!", "seed").unwrap_err().code,
            "key_data"
        );
        let flag = |json: &str| serde_json::from_str::<Flag>(json).map_err(malformed);
        assert!(flag("1").unwrap().0);
        assert!(!flag("false").unwrap().0);
        assert_eq!(flag("2").unwrap_err().code, "fake_flag");
        assert_eq!(flag("\"1\"").unwrap_err().code, "fake_flag");
        let e = serde_json::from_str::<dp3t_core::upload::LowCostUpload>("{").unwrap_err();
        assert_eq!(malformed(e).code, "malformed_body");
    }
}
