//! The JSON API and the state the handlers share.
//!
//! * `POST /v1/onset` — the app's exchange, compatible with CovidCode-Service: a body
//!   `{"authorizationCode": "…", "fake": "0"|"1"}` is answered `{"accessToken": "<JWT>"}`.
//!   Every answer (success, fake, wrong/spent/expired code → 404, malformed body → 400,
//!   rate limit → 429) leaves [`crate::config::Config::onset_delay_ms`] after the
//!   request arrived, so the time taken tells nothing; a fake request uses no code and
//!   gets a token of exactly the size and shape of a real one, with `fake: "1"`.
//! * `POST /v1/authcode` — lab systems create codes with an API key
//!   (`Authorization: Bearer <key>`): `{"onsetDate": "YYYY-MM-DD"}` is answered
//!   `{"authorizationCode": "123456789012"}` (CovidCode-Service's shape); with
//!   `"count": n` (1..=100) `{"authorizationCodes": […]}`.
//! * `GET /healthz` — liveness and database check.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::codes::{Code, CodeHasher};
use crate::config::{Config, MAX_ONSET_DAYS_BACK};
use crate::date::{day_of, parse_iso_date};
use crate::db::Db;
use crate::ratelimit::{Limiter, Refusal};
use crate::staff::{PasswordCheck, Throttle};
use crate::token::TokenSigner;
use crate::web::i18n::Catalogs;
use crate::{unix_now, Error, Result};

/// Largest request body of the JSON API.
pub const MAX_BODY_BYTES: usize = 4096;
/// Most codes one `POST /v1/authcode` may create.
pub const MAX_BULK_CODES: u32 = 100;
/// Prefix of API keys (helps secret scanners find leaked ones).
pub const API_KEY_PREFIX: &str = "dp3ta_";

/// Everything the handlers share.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub db: Db,
    /// Keys the code hashes.
    pub hasher: CodeHasher,
    /// Signs upload tokens.
    pub signer: TokenSigner,
    /// Brute-force limits of `/v1/onset`.
    pub limiter: Limiter,
    /// Live codes, never below the true number between refreshes: increased when codes
    /// are created, decreased when they are used or revoked, reset from the database by
    /// the ticker (which also accounts for expiry).
    pub live_codes: AtomicU64,
    /// Staff sign-in throttling.
    pub throttle: Throttle,
    /// Password checks with equal cost for unknown names.
    pub passwords: PasswordCheck,
    /// Message catalogs of the staff page.
    pub catalogs: Catalogs,
    /// The OpenID Connect provider, when configured.
    pub oidc: Option<crate::oidc::Oidc>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.db.kind())
            .finish_non_exhaustive()
    }
}

/// Why codes could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The onset is in the future or more than 14 days back.
    #[error("the onset must be between {MAX_ONSET_DAYS_BACK} days ago and today")]
    Onset,
    /// The database failed.
    #[error(transparent)]
    Internal(#[from] Error),
}

/// Check that `onset_day` is allowed on the day of `now`.
pub fn check_onset(onset_day: u32, now: u64) -> Result<(), CreateError> {
    let today = day_of(now);
    if onset_day > today || onset_day + MAX_ONSET_DAYS_BACK < today {
        return Err(CreateError::Onset);
    }
    Ok(())
}

impl AppState {
    /// Create `count` codes for `onset_day`, counted in the audit log for `actor`.
    pub async fn create_codes(
        &self,
        onset_day: u32,
        count: u32,
        actor: &str,
        now: u64,
    ) -> Result<Vec<Code>, CreateError> {
        check_onset(onset_day, now)?;
        let expires_at = now + u64::from(self.config.code_validity_hours) * 3600;
        let mut out = Vec::with_capacity(count as usize);
        while out.len() < count as usize {
            let code = Code::generate(&mut rand::rngs::OsRng);
            if self
                .db
                .insert_code(
                    &self.hasher.hash(&code),
                    onset_day,
                    now - now % 3600,
                    expires_at,
                )
                .await?
            {
                self.live_codes.fetch_add(1, Ordering::Relaxed);
                out.push(code);
            }
        }
        self.db
            .audit_add(now, actor, "create", u64::from(count))
            .await?;
        tracing::info!(actor, count, "codes created");
        Ok(out)
    }

    /// Revoke a live code; `false` if there is none with this number.
    pub async fn revoke_code(&self, code: &Code, actor: &str, now: u64) -> Result<bool> {
        let done = self.db.revoke_code(&self.hasher.hash(code), now).await?;
        if done {
            let _ = self
                .live_codes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(1))
                });
            self.db.audit_add(now, actor, "revoke", 1).await?;
            tracing::info!(actor, "code revoked");
        }
        Ok(done)
    }

    /// Reset the live-code estimate from the database.
    pub async fn refresh_live_codes(&self, now: u64) -> Result<u64> {
        let n = self.db.count_live(now).await?;
        self.live_codes.store(n, Ordering::Relaxed);
        Ok(n)
    }
}

/// The client address for rate limiting: the peer, or the first `X-Forwarded-For`
/// entry behind a trusted proxy. Never logged.
pub fn client_addr(req: &HttpRequest, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        if let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return ip;
        }
    }
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0u8, 0, 0, 0]))
}

fn json(status: StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("cache-control", "no-store"))
        .json(body)
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    json(
        status,
        serde_json::json!({"error": code, "message": message}),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnsetRequest {
    authorization_code: Option<String>,
    fake: Option<String>,
}

/// What an exchange came to, before the constant delay.
async fn exchange(state: &AppState, client: IpAddr, body: &[u8], now: u64) -> HttpResponse {
    let Ok(req) = serde_json::from_slice::<OnsetRequest>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "expected {\"authorizationCode\": \"…\", \"fake\": \"0\"|\"1\"}",
        );
    };
    let fake = match req.fake.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed",
                "fake must be \"0\" or \"1\"",
            )
        }
    };
    if fake {
        // No code is looked at or used. The onset is drawn from the allowed window so
        // that the token looks like any other.
        let today = day_of(now);
        let onset = today - rand::rngs::OsRng.gen_range(0..=MAX_ONSET_DAYS_BACK.min(today));
        return match state.signer.mint(onset, true, now, &mut rand::rngs::OsRng) {
            Ok(t) => json(StatusCode::OK, serde_json::json!({"accessToken": t})),
            Err(e) => {
                tracing::error!(error = %e, "signing a fake token failed");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        };
    }
    let code = req.authorization_code.as_deref().and_then(Code::parse);
    // A malformed code cannot hit: it costs the client a failure but no global budget.
    let live = if code.is_some() {
        state.live_codes.load(Ordering::Relaxed)
    } else {
        0
    };
    let reservation = match state.limiter.begin(client, live, now) {
        Ok(r) => r,
        Err(Refusal::Client) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed attempts from this address; try again later",
            )
        }
        Err(Refusal::Global) => {
            tracing::warn!(
                "global guessing budget spent: exchanges refused until the next UTC day"
            );
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed attempts; try again later",
            );
        }
    };
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no valid code with this number",
        )
    };
    let Some(code) = code else {
        return not_found();
    };
    match state.db.redeem_code(&state.hasher.hash(&code), now).await {
        Ok(Some(onset)) => {
            state.limiter.succeeded(reservation);
            let _ = state
                .live_codes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(1))
                });
            match state.signer.mint(onset, false, now, &mut rand::rngs::OsRng) {
                Ok(t) => json(StatusCode::OK, serde_json::json!({"accessToken": t})),
                Err(e) => {
                    tracing::error!(error = %e, "signing a token failed");
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "internal error",
                    )
                }
            }
        }
        Ok(None) => not_found(),
        Err(e) => {
            state.limiter.succeeded(reservation);
            tracing::error!(error = %e, "redeeming a code failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

/// `POST /v1/onset`.
pub async fn onset(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let started = Instant::now();
    let client = client_addr(&req, state.config.trust_forwarded_for);
    let answer = if body.len() > MAX_BODY_BYTES {
        error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large")
    } else {
        exchange(&state, client, &body, unix_now()).await
    };
    let deadline = started + Duration::from_millis(state.config.onset_delay_ms);
    if Instant::now() > deadline {
        tracing::warn!("an exchange took longer than onset_delay_ms; raise it");
    }
    actix_web::rt::time::sleep_until(deadline.into()).await;
    answer
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthcodeRequest {
    onset_date: String,
    count: Option<u32>,
}

/// SHA-256 of an API key: what is stored (the keys are 256-bit random, so a plain hash
/// is enough).
pub fn api_key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new API key: the prefix and 32 random bytes in hex.
pub fn new_api_key() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    format!("{API_KEY_PREFIX}{}", hex::encode(b))
}

/// `POST /v1/authcode`.
pub async fn authcode(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, k)| k.trim());
    let Some(key) = key else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authorization: Bearer <API key> required",
        );
    };
    let name = match state.db.api_key_name(&api_key_hash(key)).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown or revoked API key",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "API key lookup failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            );
        }
    };
    if body.len() > MAX_BODY_BYTES {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large");
    }
    let Ok(r) = serde_json::from_slice::<AuthcodeRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "expected {\"onsetDate\": \"YYYY-MM-DD\"} and optionally \"count\"",
        );
    };
    let Some(onset) = parse_iso_date(&r.onset_date) else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "onsetDate must be a YYYY-MM-DD date",
        );
    };
    let count = r.count.unwrap_or(1);
    if !(1..=MAX_BULK_CODES).contains(&count) {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "count must be in 1..=100",
        );
    }
    match state
        .create_codes(onset, count, &format!("apikey:{name}"), unix_now())
        .await
    {
        Ok(codes) if r.count.is_none() => json(
            StatusCode::OK,
            serde_json::json!({"authorizationCode": codes.first().map(Code::digits)}),
        ),
        Ok(codes) => json(
            StatusCode::OK,
            serde_json::json!({"authorizationCodes": codes.iter().map(Code::digits).collect::<Vec<_>>()}),
        ),
        Err(CreateError::Onset) => error(
            StatusCode::BAD_REQUEST,
            "onset",
            &CreateError::Onset.to_string(),
        ),
        Err(CreateError::Internal(e)) => {
            tracing::error!(error = %e, "creating codes failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

/// `GET /healthz`.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.db.count_live(unix_now()).await {
        Ok(_) => HttpResponse::Ok().content_type("text/plain").body("ok\n"),
        Err(_) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("database unavailable\n"),
    }
}

/// Register the JSON routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/onset", web::post().to(onset))
        .route("/v1/authcode", web::post().to(authcode))
        .route("/healthz", web::get().to(healthz));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_onset_window_is_today_back_to_fourteen_days() {
        let now = 20_000 * 86_400 + 5;
        assert!(check_onset(20_000, now).is_ok());
        assert!(check_onset(20_000 - 14, now).is_ok());
        assert!(check_onset(20_001, now).is_err());
        assert!(check_onset(20_000 - 15, now).is_err());
    }

    #[test]
    fn api_keys_are_long_and_hashed() {
        let k = new_api_key();
        assert!(k.starts_with(API_KEY_PREFIX));
        assert_eq!(k.len(), API_KEY_PREFIX.len() + 64);
        assert_ne!(new_api_key(), k);
        assert_eq!(api_key_hash(&k), api_key_hash(&k.clone()));
    }
}
