//! # authority — the health authority's upload-code service
//!
//! The key server (`backend/`) accepts an upload only with a short-lived token signed by
//! the health authority. This crate is the service that issues those tokens, kept apart
//! from the key server so that the authority's private key never sits next to the
//! published data:
//!
//! 1. health-authority staff sign in to a small web page (or a lab system calls
//!    `POST /v1/authcode` with an API key) and create a one-time **code** of 12 digits for
//!    a patient who tested positive, with the onset date they chose;
//! 2. the patient types the code into the app, which exchanges it at `POST /v1/onset`
//!    (CovidCode-Service compatible) for a signed upload **token**;
//! 3. the app uploads its keys to the key server with that token.
//!
//! Nothing about the patient is entered or stored: a code row holds a keyed hash of the
//! code, the onset day, and hour-coarse times. Modules:
//!
//! * [`config`] — settings from defaults, a TOML file and `DP3T_AUTHORITY_*` variables;
//! * [`codes`] — code generation, display and keyed hashing;
//! * [`token`] — the health-authority signing key and the upload tokens;
//! * [`ratelimit`] — the in-memory brute-force limits on failed exchanges;
//! * [`staff`] — staff accounts: argon2id passwords, TOTP, sign-in throttling;
//! * [`totp`] — RFC 6238 one-time passwords;
//! * [`oidc`] — staff sign-in through the authority's OpenID Connect provider;
//! * [`db`] — SQLite or PostgreSQL;
//! * [`api`] — the JSON API (`/v1/onset`, `/v1/authcode`);
//! * [`web`] — the staff web page, its message catalogs and security headers;
//! * [`server`] — wiring, background tasks and graceful shutdown.

pub mod api;
pub mod codes;
pub mod config;
pub mod date;
pub mod db;
mod error;
pub mod oidc;
pub mod ratelimit;
pub mod server;
pub mod staff;
pub mod token;
pub mod totp;
pub mod web;

pub use error::{Error, Result};

/// The current unix time in seconds. The only clock read of the service; everything
/// below the handlers takes `now` as a parameter.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
