//! # backend — the DP-3T key server
//!
//! A health authority's server for the GAEN flavour of DP-3T, compatible with the DP-3T
//! SDK v2 API: phones upload the keys of a positive person with a health-authority token,
//! and every phone downloads signed GAEN export files of the keys released since its last
//! download. The protocol rules are in `docs/PROTOCOL.md` §7–10; the HTTP API in `docs/API.md`;
//! running it in `docs/OPERATIONS.md`.
//!
//! The crate is a thin shell of I/O around `dp3t-core` (export encoding and signatures):
//!
//! * [`config`] — settings from defaults, a TOML file and `DP3T_*` variables;
//! * [`keys`] — key files, `keygen`, development upload tokens;
//! * [`auth`] — upload token validation;
//! * [`db`] — SQLite or PostgreSQL; [`writer`] — group commit of uploads;
//! * [`publish`] — release buckets, built once, cached, served from memory;
//! * [`designs`] — the same for the three DP-3T designs (low-cost, unlinkable, hybrid);
//! * [`api`] — the HTTP handlers; [`metrics`] — Prometheus counters;
//! * [`server`] — wiring, background tasks and graceful shutdown.

pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod db;
pub mod designs;
pub mod keys;
pub mod metrics;
pub mod publish;
pub mod release;
pub mod server;
pub mod writer;

use dp3t_core::time::UnixTime;

/// The current time from the system clock. The only clock read of the server; everything
/// below the handlers takes `now` as a parameter.
pub fn unix_now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}
