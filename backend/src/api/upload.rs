//! The one upload pipeline, whatever the scheme (PROTOCOL.md §7, §8).
//!
//! Every upload route — GAEN v2 and v1, the v1 next-day key, and the three DP-3T designs
//! — is an [`UploadRoute`]: a path, a body limit, the kind of token it takes and a
//! **parser** from the body to typed entries. Everything else happens here, once, in this
//! order:
//!
//! 1. `Content-Type: application/json` (415);
//! 2. the bearer token, checked **before the body is read** (401/403): a client without a
//!    valid token never gets the server to buffer its body;
//! 3. the body, at most the route's limit (413), read within the request deadline;
//! 4. the scheme's parser (400): shape errors only — entries out of range are dropped
//!    silently, the same way for real and fake uploads, so that no refusal can happen to
//!    a real upload and not to a fake one;
//! 5. the fake flag: a fake token, or a body that says it is fake, stores nothing;
//! 6. the group-commit writer ([`crate::writer`]) spends the token's `jti` and stores the
//!    entries in one transaction. A second use of a `jti` is `409`, unless it carries
//!    the same body: that is a retry after a lost answer, and gets the first try's `200`
//!    (the upload is stored once);
//! 7. the answer leaves at the **same time after arrival** (`DP3T_UPLOAD_DELAY_MS`) and
//!    with the **same size** whatever happened: accepted or refused, real or fake. The
//!    answer's variable part (reason phrase, content type, body, `Content-Length`
//!    digits, the v1 next-day token) is padded to [`ANSWER_SIZE`] bytes with an
//!    `X-Padding` header, so an observer of the encrypted stream learns nothing from its
//!    length or its timing.
//!
//! Refusals are still logged, at `debug`, with the reason code only: no field says which
//! upload, or whether it was real.

use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use dp3t_core::time::{Day, UnixTime};
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use super::{bearer_token, ApiError, AppState, ErrorCode};
use crate::auth::{verify_upload_token, AuthError, UploadGrant};
use crate::config::Timing;
use crate::db::designs::DesignUploadRow;
use crate::db::{NewKey, StoreOutcome, UploadRecord};
use crate::designs::Design;
use crate::release::bucket_floor;
use crate::unix_now;

/// Bytes of every upload answer's variable part (see the module docs): reason phrase,
/// `Content-Type` value, body, `Content-Length` digits, `Authorization` value and the
/// `X-Padding` value together. Larger than the longest answer (a v1 answer with its
/// next-day token, or a refusal with its message), so every answer can be padded to it.
pub const ANSWER_SIZE: usize = 1024;

/// Which token an upload route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A health-authority upload token (`scope: "exposed"`).
    HealthAuthority,
    /// A next-day token this server issued (GAEN v1 `exposednextday`).
    NextDay,
}

/// What a parser knows about the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UploadContext {
    /// Server time of arrival.
    pub now: UnixTime,
    /// First contagious day (token claim `onset`).
    pub onset: Day,
    /// The day a next-day token binds (`delayedKeyDate`), for the next-day route.
    pub delayed_key_date: Option<u32>,
    /// Bucket length and retention.
    pub timing: Timing,
}

impl UploadContext {
    /// Whether an entry whose time span ends at `end` (exclusive) reaches into the
    /// retention window.
    pub fn within_retention(&self, end: u64) -> bool {
        end > self.now.0.saturating_sub(self.timing.retention_seconds)
    }

    /// Whether an entry starting at `start` starts in the future (beyond the skew).
    pub fn in_future(&self, start: u64) -> bool {
        start > self.now.0.saturating_add(CLOCK_SKEW_SECONDS)
    }

    /// The coarsened arrival stored with entries: the end of the arrival's bucket (§10).
    pub fn received_at(&self) -> u64 {
        let len = self.timing.bucket_seconds.max(1);
        bucket_floor(self.now.0, len).saturating_add(len)
    }
}

/// How far in the future (phone clock ahead of the server's) an entry may start and still
/// be stored.
pub const CLOCK_SKEW_SECONDS: u64 = 300;

/// The entries of an upload to store if it is real.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entries {
    /// GAEN keys.
    Keys(Vec<NewKey>),
    /// Fixed-size records of a DP-3T design, concatenated.
    Design {
        /// The design.
        design: Design,
        /// The records.
        bytes: Vec<u8>,
        /// How many.
        count: u64,
    },
}

/// A parsed upload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// What to store if the upload is real (already filtered by the range rules).
    pub entries: Entries,
    /// The body says the upload is fake (a top-level `fake: 1`, or no real entry at all).
    pub fake_body: bool,
    /// GAEN v1: the `delayedKeyDate` to bind the answer's next-day token to.
    pub next_day: Option<u32>,
}

/// A parser of one route's upload body.
pub(crate) type Parser = fn(&[u8], &UploadContext) -> Result<Parsed, ApiError>;

/// One upload route: everything that differs between schemes.
#[derive(Debug)]
pub(crate) struct UploadRoute {
    /// Body limit in bytes.
    pub limit: usize,
    /// The token it takes.
    pub token: TokenKind,
    /// The body parser.
    pub parse: Parser,
}

/// `400` for a JSON error of an upload body: `fake_flag` when a `fake` (or other 0/1)
/// flag holds anything but 0, 1, true or false, else `malformed_body` (wrong types,
/// missing or repeated fields). Unknown fields are not errors.
pub(crate) fn malformed(e: serde_json::Error) -> ApiError {
    let message = format!("invalid upload body: {e}");
    let code = if message.contains(dp3t_core::upload::Flag::EXPECTED) {
        ErrorCode::FakeFlag
    } else {
        ErrorCode::MalformedBody
    };
    ApiError::bad_request(code, message)
}

/// Decode standard base64 of exactly `N` bytes, or `400 key_data` naming `field`.
pub(crate) fn decode_fixed<const N: usize>(s: &str, field: &str) -> Result<[u8; N], ApiError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::KeyData,
                format!("{field} must be base64 of exactly {N} bytes"),
            )
        })
}

/// Check the `Content-Type`: `application/json`, parameters allowed.
fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        let shown: String = ct.chars().take(64).collect();
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ContentType,
            format!("Content-Type must be application/json, got {shown:?}"),
        ))
    }
}

/// The status of a refused token: 403 for a wrong scope, else 401.
pub(crate) fn auth_error(e: AuthError) -> ApiError {
    let status = match e {
        AuthError::Scope => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    ApiError::new(status, e.reason(), e.to_string())
}

/// Read a body of at most `limit` bytes: `413 too_large` when the declared
/// `Content-Length` or the body itself is larger, `400 malformed_body` when it cannot be
/// read, `408 request_timeout` when it has not arrived by `deadline`.
pub(crate) async fn read_body(
    req: &HttpRequest,
    payload: &mut web::Payload,
    limit: usize,
    deadline: Instant,
) -> Result<web::Bytes, ApiError> {
    // Read chunk by chunk: a refused request's body is never read, and the connection's
    // own back-pressure keeps what the client already sent out of memory.
    let too_large = || body_too_large(limit);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(
                    ErrorCode::MalformedBody,
                    format!("could not read the body: {e}"),
                )
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    match tokio::time::timeout_at(deadline.into(), read).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the body did not arrive in time",
        )),
        Ok(r) => r,
    }
}

/// Verify a bearer `token` of `kind` at `now`.
pub(crate) fn authorize(
    token: &str,
    kind: TokenKind,
    state: &AppState,
    now: UnixTime,
) -> Result<UploadGrant, ApiError> {
    match kind {
        TokenKind::HealthAuthority => verify_upload_token(token, &state.ha_keys, now),
        TokenKind::NextDay => state.next_day.verify(token, now),
    }
    .map_err(auth_error)
}

/// Steps 1–3 of the pipeline for a plain HTTP upload, then [`process`]. Returns the
/// next-day token to answer with, if any.
async fn run(
    route: &UploadRoute,
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
    deadline: Instant,
) -> Result<Option<String>, ApiError> {
    check_content_type(req)?;
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = bearer_token(auth).map_err(auth_error)?;
    let now = unix_now();
    let grant = authorize(token, route.token, state, now)?;
    let body = read_body(req, payload, route.limit, deadline).await?;
    process(route, &grant, &body, now, state).await
}

/// Steps 4–6 of the pipeline, for an authorized upload `body` (from a plain request, or
/// opened from a sealed envelope): parse, apply the fake flag, store through the writer.
/// Returns the next-day token to answer with, if any.
pub(crate) async fn process(
    route: &UploadRoute,
    grant: &UploadGrant,
    body: &[u8],
    now: UnixTime,
    state: &AppState,
) -> Result<Option<String>, ApiError> {
    if body.len() > route.limit {
        return Err(body_too_large(route.limit));
    }
    grant
        .onset
        .first_enin()
        .map_err(|_| ApiError::bad_request(ErrorCode::TokenClaims, "onset is out of range"))?;
    let ctx = UploadContext {
        now,
        onset: grant.onset,
        delayed_key_date: grant.delayed_key_date,
        timing: state.timing,
    };
    let parsed = (route.parse)(body, &ctx)?;
    let fake = grant.fake || parsed.fake_body;
    let next_day = match parsed.next_day {
        Some(day) => Some(
            state
                .next_day
                .issue(grant.onset, fake, day, now)
                .map_err(|e| {
                    tracing::error!(error = %e, "issuing a next-day token failed");
                    ApiError::upload_not_stored()
                })?,
        ),
        None => None,
    };
    let mut record = UploadRecord {
        jti_hash: grant.jti_hash,
        expires_at: grant.expires_at,
        body_digest: Sha256::digest(body).into(),
        keys: Vec::new(),
        design: None,
    };
    if !fake {
        match parsed.entries {
            Entries::Keys(keys) => record.keys = keys,
            Entries::Design {
                design,
                bytes,
                count,
            } if count > 0 => {
                record.design = Some(DesignUploadRow {
                    design: design.name(),
                    entries: bytes,
                    entry_count: count,
                    received_at: ctx.received_at(),
                })
            }
            Entries::Design { .. } => {}
        }
    }
    let outcome = state.writer.store(record).await.map_err(|e| {
        tracing::error!(error = %e, "storing an upload failed");
        ApiError::upload_not_stored()
    })?;
    match outcome {
        // A retry of the same upload with the same token, after an answer that was lost
        // (a dropped connection, a restart): the upload is stored, so it gets the same
        // `200` as the first try.
        StoreOutcome::Replayed { same_body: true } => Ok(next_day),
        StoreOutcome::Replayed { same_body: false } => Err(ApiError::token_replayed()),
        StoreOutcome::Stored => Ok(next_day),
    }
}

/// Handle an upload on `route`: the whole pipeline, then the constant-time,
/// constant-size answer.
pub(crate) async fn handle(
    route: &UploadRoute,
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let st: &AppState = &state;
    guarded(st, |deadline| async move {
        run(route, &req, &mut payload, st, deadline).await
    })
    .await
}

/// The frame of every upload handler (plain or sealed): take an in-flight permit (or
/// answer `503 busy` at once), run `work` with the request deadline, release the permit,
/// then answer after the constant delay ([`answer_after`]).
pub(crate) async fn guarded<F, Fut>(state: &AppState, work: F) -> HttpResponse
where
    F: FnOnce(Instant) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, ApiError>>,
{
    let arrived = Instant::now();
    // At most `DP3T_MAX_UPLOADS_IN_FLIGHT` uploads are read and processed at once, so
    // memory stays bounded whatever clients do; beyond it, an immediate `503`.
    let Ok(permit) = state.uploads_in_flight.clone().try_acquire_owned() else {
        state.metrics.upload_rejected(ErrorCode::Busy);
        return HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .content_type("application/json")
            .body(r#"{"error":"busy","message":"too many uploads in flight; retry later"}"#);
    };
    let outcome = work(arrived + state.request_timeout).await;
    // The body is gone: waiting out the delay holds no permit.
    drop(permit);
    answer_after(arrived, state, outcome).await
}

/// Step 7: count the outcome, wait until the constant delay since `arrived` has passed,
/// and answer with the padded answer.
pub(crate) async fn answer_after(
    arrived: Instant,
    state: &AppState,
    outcome: Result<Option<String>, ApiError>,
) -> HttpResponse {
    if let Err(e) = &outcome {
        state.metrics.upload_rejected(e.code);
        tracing::debug!(reason = e.code.as_str(), "upload refused");
    } else {
        state.metrics.upload_answered();
    }
    tokio::time::sleep_until((arrived + state.timing.upload_delay).into()).await;
    padded_answer(outcome)
}

/// The answer to an upload, padded to [`ANSWER_SIZE`]: `200 OK` (with the next-day
/// token in `Authorization` when there is one, as the DP-3T backend answers) or the JSON
/// refusal.
fn padded_answer(outcome: Result<Option<String>, ApiError>) -> HttpResponse {
    let (status, content_type, body, token) = match outcome {
        Ok(token) => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "OK".to_owned(),
            token.map(|t| format!("Bearer {t}")),
        ),
        Err(e) => (
            e.status,
            "application/json",
            e.json_body(ANSWER_SIZE / 2),
            None,
        ),
    };
    let reason = status.canonical_reason().unwrap_or("");
    let used = reason.len()
        + content_type.len()
        + body.len()
        + body.len().to_string().len()
        + token
            .as_ref()
            .map_or(0, |t| t.len() + "authorization: \r\n".len());
    let mut b = HttpResponse::build(status);
    b.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((
            "x-padding",
            HeaderValue::from_str(&"x".repeat(ANSWER_SIZE.saturating_sub(used).max(1)))
                .unwrap_or(HeaderValue::from_static("x")),
        ));
    if let Some(t) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        b.insert_header((header::AUTHORIZATION, t));
    }
    b.body(body)
}

/// `413 too_large` for a body over `limit` bytes.
fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge,
        format!("upload body must be at most {limit} bytes"),
    )
}

/// The upload routes whose bodies [`check_body`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRoute {
    /// `POST /v2/gaen/exposed`.
    GaenV2,
    /// `POST /v1/gaen/exposed`.
    GaenV1,
    /// `POST /v1/gaen/exposednextday`.
    GaenV1NextDay,
    /// `POST /v2/lowcost/exposed`.
    LowCost,
    /// `POST /v2/unlinkable/exposed`.
    Unlinkable,
    /// `POST /v2/hybrid/exposed`.
    Hybrid,
}

impl BodyRoute {
    /// Every route, in a fixed order.
    pub const ALL: [BodyRoute; 6] = [
        BodyRoute::GaenV2,
        BodyRoute::GaenV1,
        BodyRoute::GaenV1NextDay,
        BodyRoute::LowCost,
        BodyRoute::Unlinkable,
        BodyRoute::Hybrid,
    ];

    fn route(self) -> &'static UploadRoute {
        use super::routes;
        match self {
            BodyRoute::GaenV2 => &routes::GAEN_V2,
            BodyRoute::GaenV1 => &routes::GAEN_V1,
            BodyRoute::GaenV1NextDay => &routes::GAEN_V1_NEXT_DAY,
            BodyRoute::LowCost => &routes::LOW_COST,
            BodyRoute::Unlinkable => &routes::UNLINKABLE,
            BodyRoute::Hybrid => &routes::HYBRID,
        }
    }

    /// The route's body limit in bytes (a longer body is a `413` before any parsing).
    pub fn limit(self) -> usize {
        self.route().limit
    }
}

/// What a body parser made of a body: what would be stored if the upload is real.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodySummary {
    /// GAEN keys to store.
    pub keys: Vec<NewKey>,
    /// DP-3T design records to store: the design, the concatenated records and their count.
    pub records: Option<(Design, Vec<u8>, u64)>,
    /// The body says the upload is fake.
    pub fake_body: bool,
    /// GAEN v1: the `delayedKeyDate` the answer's next-day token binds.
    pub next_day: Option<u32>,
}

/// Run the server's parser of `route` on `body` exactly as an upload would (the step 4
/// of the module docs), at server time `now` for a token with onset day `onset` (and,
/// for the next-day route, a token bound to `delayed_key_date`). Bodies over the route's
/// limit are refused with `413 too_large`, as the pipeline would. For fuzzing
/// (`fuzz/fuzz_targets/upload_bodies.rs`) and tests: no token, database or network.
pub fn check_body(
    route: BodyRoute,
    body: &[u8],
    now: UnixTime,
    onset: Day,
    delayed_key_date: Option<u32>,
    bucket_seconds: u64,
    retention_seconds: u64,
) -> Result<BodySummary, ApiError> {
    let r = route.route();
    if body.len() > r.limit {
        return Err(body_too_large(r.limit));
    }
    let ctx = UploadContext {
        now,
        onset,
        delayed_key_date,
        timing: Timing {
            bucket_seconds: bucket_seconds.max(1),
            retention_seconds,
            upload_delay: std::time::Duration::ZERO,
        },
    };
    let parsed = (r.parse)(body, &ctx)?;
    let (keys, records) = match parsed.entries {
        Entries::Keys(k) => (k, None),
        Entries::Design {
            design,
            bytes,
            count,
        } => (Vec::new(), Some((design, bytes, count))),
    };
    Ok(BodySummary {
        keys,
        records,
        fake_body: parsed.fake_body,
        next_day: parsed.next_day,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody as _;

    /// The bytes an HTTP/1.1 encoder writes for the variable part of `r`.
    fn variable_len(r: HttpResponse) -> usize {
        let reason = r.status().canonical_reason().unwrap().len();
        let header = |n: &str| r.headers().get(n).map_or(0, |v| v.len());
        let auth = r
            .headers()
            .get("authorization")
            .map_or(0, |v| v.len() + "authorization: \r\n".len());
        let ct = header("content-type");
        let pad = header("x-padding");
        let body = r.into_body().try_into_bytes().unwrap().len();
        reason + ct + body + body.to_string().len() + auth + pad
    }

    #[test]
    fn every_answer_has_the_same_size() {
        let token = "e".repeat(400);
        let answers = [
            padded_answer(Ok(None)),
            padded_answer(Ok(Some(token))),
            padded_answer(Err(ApiError::token_replayed())),
            padded_answer(Err(ApiError::bad_request(
                ErrorCode::KeyData,
                "x".repeat(5000),
            ))),
            padded_answer(Err(auth_error(AuthError::Signature))),
            padded_answer(Err(ApiError::upload_not_stored())),
        ];
        for a in answers {
            assert_eq!(variable_len(a), ANSWER_SIZE);
        }
    }

    #[test]
    fn check_body_runs_each_route_parser() {
        let now = UnixTime(1_800_000_000);
        let day = now.day();
        let onset = Day(day.0 - 5);
        let check =
            |route, body: &[u8]| check_body(route, body, now, onset, None, 7200, 14 * 86_400);
        // A v2 body of 30 keys: the keys from the onset to yesterday are kept.
        let keys: Vec<String> = (0..30u32)
            .map(|i| {
                let rsn = (day.0 - 29 + i) * 144;
                format!(
                    r#"{{"keyData":"{}","rollingStartNumber":{rsn},"rollingPeriod":144,"fake":0}}"#,
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        [i as u8; 16]
                    )
                )
            })
            .collect();
        let body = format!(r#"{{"gaenKeys":[{}],"fake":0}}"#, keys.join(","));
        let s = check(BodyRoute::GaenV2, body.as_bytes()).unwrap();
        assert_eq!(s.keys.len(), 6, "onset day to tomorrow");
        assert!(!s.fake_body);
        // Shape errors are 400s, for every route; bodies over the limit 413.
        for route in BodyRoute::ALL {
            let e = check(route, b"{").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{route:?}");
            let e = check(route, &vec![b' '; route.limit() + 1]).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge)
            );
        }
    }
}
