//! HTTP API: the application state, the JSON error type, the middleware (security
//! headers, latency metrics) and every route, registered here in one place.
//!
//! * [`upload`]: the one upload pipeline, for every scheme; each scheme module supplies
//!   only its body parser: [`gaen`] (v2, v1 and the v1 next-day key), [`lowcost`],
//!   [`unlinkable`], [`hybrid`].
//! * Downloads: [`gaen`] (v2), [`gaen_v1`] (the v1 day exports and bucket lists),
//!   [`batches`] (the three designs).
//! * [`ops`]: `/healthz`, `/openapi.yaml`, and `/metrics` on its own listener.
//! * [`sealed`]: sealed uploads for every scheme (`POST /v2/sealed`) and the keys they are
//!   sealed to (`GET /v2/sealed/key`).
//!
//! Every error is a JSON object `{"error": "<code>", "message": "<text>"}` with a fitting
//! status code, including unknown routes (404) and wrong methods (405). No handler and no
//! middleware looks at or logs the client's address.

pub mod batches;
pub mod gaen;
pub mod gaen_v1;
pub mod hybrid;
pub mod lowcost;
pub mod ops;
pub mod sealed;
pub mod unlinkable;
pub mod upload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::dev::{Service as _, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

pub(crate) use crate::auth::bearer_token;
use crate::auth::{HaKeys, NextDayTokens};
use crate::db::Db;
use crate::designs::Design;
use crate::metrics::{route_index, Metrics};
use crate::publish::Publisher;
use crate::writer::UploadWriter;

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Group-commit writer for uploads.
    pub writer: UploadWriter,
    /// Release buckets and the download cache.
    pub publisher: Arc<Publisher>,
    /// Release buckets of the three DP-3T designs.
    pub designs: Arc<crate::designs::DesignPublisher>,
    /// Trusted health-authority keys.
    pub ha_keys: HaKeys,
    /// Issues and checks the next-day tokens of the GAEN v1 API.
    pub next_day: NextDayTokens,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Longest time for an upload's headers and body to arrive.
    pub request_timeout: Duration,
    /// Permits for uploads being read and processed at once.
    pub uploads_in_flight: Arc<tokio::sync::Semaphore>,
    /// Bucket length, retention and the constant answer time of uploads, derived once
    /// from the configuration.
    pub timing: crate::config::Timing,
    /// The HPKE key pairs that open sealed uploads.
    pub sealed: sealed::SealedKeys,
}

/// The stable machine-readable codes of error answers (`{"error": code, "message": …}`),
/// also the `reason` label of the refused-uploads metric. docs/API.md lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `Content-Type` is not `application/json` (415).
    ContentType,
    /// The upload body is over the route's limit (413).
    TooLarge,
    /// The body is not JSON of the route's shape: wrong types, missing or repeated fields.
    MalformedBody,
    /// A GAEN upload has the wrong number of keys.
    KeyCount,
    /// A key or entry is not base64 of the right length.
    KeyData,
    /// A GAEN key's `rollingPeriod` is out of range (v2).
    RollingPeriod,
    /// A 0/1 flag holds anything but 0, 1, true or false.
    FakeFlag,
    /// No bearer token (401).
    AuthMissing,
    /// The token is not a JWT (401).
    TokenMalformed,
    /// The token is signed with another algorithm than ES256 (401).
    TokenAlgorithm,
    /// The token's signature does not verify (401).
    TokenSignature,
    /// The token has expired (401).
    TokenExpired,
    /// The token is not valid yet (401).
    TokenNotYetValid,
    /// The token's validity is longer than allowed (401).
    TokenValidity,
    /// The token's scope is not this route's (403).
    TokenScope,
    /// A claim of the token is missing or out of range.
    TokenClaims,
    /// The token's `jti` was used before, with another body (409).
    TokenReplayed,
    /// A DP-3T design upload has the wrong number of entries.
    EntryCount,
    /// A low-cost `keyDate` (or a v1 day) is malformed.
    KeyDate,
    /// A hybrid window is malformed.
    Window,
    /// A hybrid window length is not one of the allowed lengths.
    WindowMinutes,
    /// A GAEN v1 `delayedKeyDate` is missing or not yesterday, today or tomorrow.
    DelayedKeyDate,
    /// A sealed upload does not open (unknown key id, tampered, truncated, wrong version).
    SealedEnvelope,
    /// The request did not arrive within `DP3T_REQUEST_TIMEOUT_MS` (408).
    RequestTimeout,
    /// Too many uploads in flight (503).
    Busy,
    /// The server could not do it; retry later (503).
    Internal,
    /// A query string could not be read (400).
    BadQuery,
    /// A design batch's `batchReleaseTime` is malformed or not on a bucket boundary (400).
    BatchReleaseTime,
    /// A GAEN v1 `publishedafter` is malformed (400), in the future or before the retention (404).
    PublishedAfter,
    /// A GAEN v1 day is malformed (400) or outside the retention (404).
    Day,
    /// The batch is not released yet (404).
    NotReleased,
    /// The batch is older than the retention (404).
    Expired,
    /// The batch cannot be read now (503).
    Unavailable,
    /// No such resource (404).
    NotFound,
    /// The database does not answer (503).
    DatabaseUnavailable,
    /// The path exists, the method does not (405).
    MethodNotAllowed,
}

impl ErrorCode {
    /// Every code, in a fixed order (the metric's series order).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::ContentType,
        ErrorCode::TooLarge,
        ErrorCode::MalformedBody,
        ErrorCode::KeyCount,
        ErrorCode::KeyData,
        ErrorCode::RollingPeriod,
        ErrorCode::FakeFlag,
        ErrorCode::AuthMissing,
        ErrorCode::TokenMalformed,
        ErrorCode::TokenAlgorithm,
        ErrorCode::TokenSignature,
        ErrorCode::TokenExpired,
        ErrorCode::TokenNotYetValid,
        ErrorCode::TokenValidity,
        ErrorCode::TokenScope,
        ErrorCode::TokenClaims,
        ErrorCode::TokenReplayed,
        ErrorCode::EntryCount,
        ErrorCode::KeyDate,
        ErrorCode::Window,
        ErrorCode::WindowMinutes,
        ErrorCode::DelayedKeyDate,
        ErrorCode::SealedEnvelope,
        ErrorCode::RequestTimeout,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::BadQuery,
        ErrorCode::BatchReleaseTime,
        ErrorCode::PublishedAfter,
        ErrorCode::Day,
        ErrorCode::NotReleased,
        ErrorCode::Expired,
        ErrorCode::Unavailable,
        ErrorCode::NotFound,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::MethodNotAllowed,
    ];

    /// The code as written in answers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ContentType => "content_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::KeyCount => "key_count",
            ErrorCode::KeyData => "key_data",
            ErrorCode::RollingPeriod => "rolling_period",
            ErrorCode::FakeFlag => "fake_flag",
            ErrorCode::AuthMissing => "auth_missing",
            ErrorCode::TokenMalformed => "token_malformed",
            ErrorCode::TokenAlgorithm => "token_algorithm",
            ErrorCode::TokenSignature => "token_signature",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::TokenValidity => "token_validity",
            ErrorCode::TokenScope => "token_scope",
            ErrorCode::TokenClaims => "token_claims",
            ErrorCode::TokenReplayed => "token_replayed",
            ErrorCode::EntryCount => "entry_count",
            ErrorCode::KeyDate => "key_date",
            ErrorCode::Window => "window",
            ErrorCode::WindowMinutes => "window_minutes",
            ErrorCode::DelayedKeyDate => "delayed_key_date",
            ErrorCode::SealedEnvelope => "sealed_envelope",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::BadQuery => "bad_query",
            ErrorCode::BatchReleaseTime => "batch_release_time",
            ErrorCode::PublishedAfter => "published_after",
            ErrorCode::Day => "day",
            ErrorCode::NotReleased => "not_released",
            ErrorCode::Expired => "expired",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[test]
fn error_codes_are_listed_once_in_declaration_order() {
    for (i, c) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i, "{c}");
        assert_eq!(
            ErrorCode::ALL
                .iter()
                .filter(|d| d.as_str() == c.as_str())
                .count(),
            1
        );
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A JSON error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (also the metrics reason for upload refusals).
    pub code: ErrorCode,
    /// Human-readable explanation naming the problem.
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// `503 internal`: an upload could not be stored.
    pub(crate) fn upload_not_stored() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            "the upload could not be stored; retry later",
        )
    }

    /// `409 token_replayed`: the upload token's `jti` was used before.
    pub(crate) fn token_replayed() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorCode::TokenReplayed,
            "this token (jti) has already been used",
        )
    }
}

impl ApiError {
    /// The JSON body of this error, its message cut to at most `max_message` bytes (on a
    /// character boundary).
    pub fn json_body(&self, max_message: usize) -> String {
        let mut end = self.message.len().min(max_message);
        while !self.message.is_char_boundary(end) {
            end -= 1;
        }
        serde_json::to_string(&ErrorBody {
            error: self.code.as_str(),
            message: &self.message[..end],
        })
        .unwrap_or_else(|_| format!("{{\"error\":\"{}\"}}", self.code))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        HttpResponse::build(self.status)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(ErrorBody {
                error: self.code.as_str(),
                message: &self.message,
            })
    }
}

/// Headers set on every response.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("strict-transport-security", "max-age=31536000"),
    ("cross-origin-resource-policy", "cross-origin"),
];

/// The upload routes: what differs between schemes is the parser, the body limit and
/// the kind of token.
pub(crate) mod routes {
    use super::upload::{TokenKind, UploadRoute};
    use super::{gaen, hybrid, lowcost, unlinkable};
    use crate::config::MAX_UPLOAD_BYTES;

    /// Largest accepted upload body of the DP-3T designs (256 KiB): an unlinkable upload
    /// of 1,344 entries, or a hybrid one of 15-minute windows, is about 100 KiB.
    pub const MAX_DESIGN_UPLOAD_BYTES: usize = 256 * 1024;

    pub static GAEN_V2: UploadRoute = UploadRoute {
        limit: MAX_UPLOAD_BYTES,
        token: TokenKind::HealthAuthority,
        parse: gaen::parse_v2,
    };
    pub static GAEN_V1: UploadRoute = UploadRoute {
        limit: MAX_UPLOAD_BYTES,
        token: TokenKind::HealthAuthority,
        parse: gaen::parse_v1,
    };
    pub static GAEN_V1_NEXT_DAY: UploadRoute = UploadRoute {
        limit: MAX_UPLOAD_BYTES,
        token: TokenKind::NextDay,
        parse: gaen::parse_next_day,
    };
    pub static LOW_COST: UploadRoute = UploadRoute {
        limit: MAX_DESIGN_UPLOAD_BYTES,
        token: TokenKind::HealthAuthority,
        parse: lowcost::parse,
    };
    pub static UNLINKABLE: UploadRoute = UploadRoute {
        limit: MAX_DESIGN_UPLOAD_BYTES,
        token: TokenKind::HealthAuthority,
        parse: unlinkable::parse,
    };
    pub static HYBRID: UploadRoute = UploadRoute {
        limit: MAX_DESIGN_UPLOAD_BYTES,
        token: TokenKind::HealthAuthority,
        parse: hybrid::parse,
    };
}

pub use routes::MAX_DESIGN_UPLOAD_BYTES;

/// A `POST` handler running the upload pipeline for `route`.
fn upload_to(route: &'static upload::UploadRoute) -> actix_web::Route {
    web::post().to(
        move |req: HttpRequest, payload: web::Payload, state: web::Data<AppState>| {
            upload::handle(route, req, payload, state)
        },
    )
}

/// A `GET` (and `HEAD`) handler of a design's batches.
fn batches_of(design: Design, r: actix_web::Resource) -> actix_web::Resource {
    let get = move |path: web::Path<String>, state: web::Data<AppState>| {
        batches::download(design, path, state)
    };
    r.route(web::get().to(get)).route(web::head().to(get))
}

/// Register all routes, error handlers and middleware on an actix `App`.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let r =
            |path: &'static str| web::resource(path).default_service(web::to(method_not_allowed));
        cfg.app_data(state)
            .app_data(web::QueryConfig::default().error_handler(|err, _req| {
                ApiError::bad_request(ErrorCode::BadQuery, err.to_string()).into()
            }))
            // GAEN, DP-3T SDK v2.
            .service(r("/v2/gaen").route(web::get().to(gaen::hello)))
            .service(
                r("/v2/gaen/exposed")
                    .route(web::get().to(gaen::download))
                    .route(web::head().to(gaen::download))
                    .route(upload_to(&routes::GAEN_V2)),
            )
            // GAEN, DP-3T SDK v1.
            .service(r("/v1/gaen").route(web::get().to(gaen_v1::hello)))
            .service(r("/v1/gaen/exposed").route(upload_to(&routes::GAEN_V1)))
            .service(r("/v1/gaen/exposednextday").route(upload_to(&routes::GAEN_V1_NEXT_DAY)))
            .service(
                r("/v1/gaen/exposed/{keyDate}")
                    .route(web::get().to(gaen_v1::download_day))
                    .route(web::head().to(gaen_v1::download_day)),
            )
            .service(r("/v1/gaen/buckets/{day}").route(web::get().to(gaen_v1::buckets)))
            // The three DP-3T designs.
            .service(r("/v1").route(web::get().to(batches::hello)))
            .service(r("/v1/exposed").route(upload_to(&routes::LOW_COST)))
            .service(batches_of(
                Design::LowCost,
                r("/v1/exposed/{batchReleaseTime}"),
            ))
            .service(r("/v1/unlinkable/exposed").route(upload_to(&routes::UNLINKABLE)))
            .service(batches_of(
                Design::Unlinkable,
                r("/v1/unlinkable/filter/{batchReleaseTime}"),
            ))
            .service(r("/v1/hybrid/exposed").route(upload_to(&routes::HYBRID)))
            .service(batches_of(
                Design::Hybrid,
                r("/v1/hybrid/exposed/{batchReleaseTime}"),
            ))
            // Sealed uploads, for every scheme.
            .service(r("/v2/sealed").route(web::post().to(sealed::upload)))
            .service(r("/v2/sealed/key").route(web::get().to(sealed::keys)))
            // Operations.
            .service(r("/healthz").route(web::get().to(ops::healthz)))
            .service(r("/openapi.yaml").route(web::get().to(ops::openapi)))
            .default_service(web::to(not_found));
    }
}

async fn not_found(req: HttpRequest) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route for {}", req.path()),
    )
}

async fn method_not_allowed(req: HttpRequest) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
}

impl actix_web::Responder for ApiError {
    type Body = BoxBody;
    fn respond_to(self, _req: &HttpRequest) -> HttpResponse<BoxBody> {
        self.error_response()
    }
}

/// Build the actix `App` with middleware; used by the server and the tests alike.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = Arc::clone(&state.metrics);
    actix_web::App::new()
        .configure(configure(state))
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let route = route_index(req.method().as_str(), req.path());
            let metrics = Arc::clone(&metrics);
            let fut = srv.call(req);
            async move {
                let mut res = fut.await?;
                let headers = res.headers_mut();
                for (name, value) in SECURITY_HEADERS {
                    headers.insert(
                        HeaderName::from_static(name),
                        HeaderValue::from_static(value),
                    );
                }
                if !headers.contains_key(header::CACHE_CONTROL) {
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                }
                metrics.observe_request(route, started.elapsed());
                Ok(res)
            }
        })
}
