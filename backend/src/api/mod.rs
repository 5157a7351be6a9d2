//! HTTP API: one module per API family, plus what they share — the application state,
//! the JSON error type and the middleware (security headers, latency metrics).
//!
//! * [`gaen`]: the DP-3T SDK GAEN uploads (`/v2/gaen…`, `/v1/gaen…`) and v2 download.
//! * [`gaen_v1`]: the GAEN v1 downloads of the DP-3T backend (`/v1/gaen…`).
//! * [`ops`]: `/healthz`, `/metrics`, `/openapi.yaml`.
//! * [`lowcost`], [`unlinkable`], [`hybrid`]: the three DP-3T designs (`/v1…`), sharing
//!   [`dp3t`].
//!
//! Every error is a JSON object `{"error": "<code>", "message": "<text>"}` with a fitting
//! status code, including unknown routes (404) and wrong methods (405). No handler and no
//! middleware looks at or logs the client's address.

pub mod dp3t;
pub mod gaen;
pub mod gaen_v1;
pub mod hybrid;
pub mod lowcost;
pub mod ops;
pub mod unlinkable;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::dev::{Service as _, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use dp3t_core::time::UnixTime;
use serde::Serialize;

use crate::auth::{
    bearer_token, verify_upload_token, AuthError, HaKeys, NextDayTokens, UploadGrant,
};
use crate::db::Db;
use crate::metrics::{route_index, Metrics};
use crate::publish::Publisher;
use crate::unix_now;
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
    /// Constant answer time of uploads.
    pub upload_delay: Duration,
    /// Release bucket length in seconds.
    pub bucket_seconds: u64,
    /// Retention in seconds.
    pub retention_seconds: u64,
}

/// A JSON error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (also the metrics reason for upload refusals).
    pub code: &'static str,
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
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// `503 internal`: an upload could not be stored.
    pub(crate) fn upload_not_stored() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "internal",
            "the upload could not be stored; retry later",
        )
    }

    /// `409 token_replayed`: the upload token's `jti` was used before.
    pub(crate) fn token_replayed() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "token_replayed",
            "this token (jti) has already been used",
        )
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
                error: self.code,
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

/// Register all routes, error handlers and middleware on an actix `App`.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state)
            .app_data(web::QueryConfig::default().error_handler(|err, _req| {
                ApiError::bad_request("bad_query", err.to_string()).into()
            }))
            .service(
                web::resource("/v2/gaen")
                    .route(web::get().to(gaen::hello))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v2/gaen/exposed")
                    .route(web::get().to(gaen::download))
                    .route(web::head().to(gaen::download))
                    .route(web::post().to(gaen::upload))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/gaen")
                    .route(web::get().to(gaen_v1::hello))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/gaen/exposed")
                    .route(web::post().to(gaen::upload_v1))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/gaen/exposednextday")
                    .route(web::post().to(gaen::upload_next_day))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/gaen/exposed/{keyDate}")
                    .route(web::get().to(gaen_v1::download_day))
                    .route(web::head().to(gaen_v1::download_day))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/v1/gaen/buckets/{day}")
                    .route(web::get().to(gaen_v1::buckets))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/healthz")
                    .route(web::get().to(ops::healthz))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/metrics")
                    .route(web::get().to(ops::metrics))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/openapi.yaml")
                    .route(web::get().to(ops::openapi))
                    .default_service(web::to(method_not_allowed)),
            )
            .configure(dp3t::routes)
            .default_service(web::to(not_found));
    }
}

async fn not_found(req: HttpRequest) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", req.path()),
    )
}

async fn method_not_allowed(req: HttpRequest) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
}

/// Read an upload body of at most `limit` bytes: `413 too_large` when the declared
/// `Content-Length` or the body itself is larger, `400 malformed_body` when it cannot be read.
pub(crate) async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("upload body must be at most {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "malformed_body",
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(too_large()),
    }
}

/// The checks every upload starts with, in this order: the `Content-Type`, the body (at
/// most `limit` bytes, see [`read_body`]), then the bearer token against the trusted
/// health-authority keys. Returns the body, the time of the check and the token's grant.
pub(crate) async fn read_authorized_upload(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    state: &AppState,
) -> Result<(web::Bytes, UnixTime, UploadGrant), ApiError> {
    read_upload(req, payload, limit, |token, now| {
        verify_upload_token(token, &state.ha_keys, now)
    })
    .await
}

/// [`read_authorized_upload`] with the token checked by `verify` (for the next-day tokens
/// of the GAEN v1 API, which the server issued itself).
pub(crate) async fn read_upload<G>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    verify: impl FnOnce(&str, UnixTime) -> Result<G, AuthError>,
) -> Result<(web::Bytes, UnixTime, G), ApiError> {
    gaen::check_content_type(req)?;
    let body = read_body(req, payload, limit).await?;
    let now = unix_now();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = bearer_token(auth).map_err(gaen::auth_error)?;
    let grant = verify(token, now).map_err(gaen::auth_error)?;
    Ok((body, now, grant))
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
