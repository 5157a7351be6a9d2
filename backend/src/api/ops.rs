//! Operational endpoints: `/healthz` (database reachable, publication working),
//! `/openapi.yaml` (the API description, compiled into the binary from
//! `docs/openapi.yaml`), and `/metrics` (Prometheus text).
//!
//! `/metrics` is not on the public port: it is served by [`metrics_app`] on its own
//! listener (`DP3T_METRICS_BIND`, loopback by default). Counters move with each upload, so
//! a scrape from the internet right after a phone's upload would tell more about that
//! upload than its answer does; only the operator's monitoring should reach them.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::{ApiError, AppState, ErrorCode};

/// The OpenAPI document of this server.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

/// `GET /healthz`: 200 with `{"status":"ok",…}` when the database answers and the last
/// release succeeded; 503 with `{"status":"degraded",…}` while releases fail; else 503.
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.db.health().await.map_err(|e| {
        tracing::warn!(error = %e, "health check failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DatabaseUnavailable,
            "the database does not answer",
        )
    })?;
    if state.publisher.publication_failing() || state.designs.publication_failing() {
        // The node answers from its last released state, which grows stale.
        return Ok(HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "degraded",
            "publication": "failing",
            "database": state.db.kind(),
            "releasedUntil": state.publisher.released_until().saturating_mul(1000),
        })));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "database": state.db.kind(),
        "releasedUntil": state.publisher.released_until().saturating_mul(1000),
    })))
}

/// The application of the metrics listener: `GET /metrics`, and 404 for everything else.
pub fn metrics_app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .app_data(state)
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(HttpResponse::NotFound))
}

/// `GET /metrics` (on the metrics listener only).
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// `GET /openapi.yaml`.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml; charset=utf-8")
        .body(OPENAPI_YAML)
}
