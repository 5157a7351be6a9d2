//! HTTP API: one module per API family, plus what they share — the application state,
//! the JSON error type and the middleware (security headers, latency metrics).
//!
//! * [`gaen`]: the DP-3T SDK v2 GAEN endpoints (`/v2/gaen…`).
//! * [`ops`]: `/healthz`, `/metrics`, `/openapi.yaml`.
//! * [`lowcost`], [`unlinkable`], [`hybrid`]: the three DP-3T designs (`/v1…`), sharing
//!   [`dp3t`].
//!
//! Every error is a JSON object `{"error": "<code>", "message": "<text>"}` with a fitting
//! status code, including unknown routes (404) and wrong methods (405). No handler and no
//! middleware looks at or logs the client's address.

pub mod dp3t;
pub mod gaen;
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
use serde::Serialize;

use crate::auth::HaKeys;
use crate::db::Db;
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
