//! The database: SQLite (default, one file in the data directory) or PostgreSQL
//! (`DP3T_AUTHORITY_DATABASE_URL=postgres://…`).
//!
//! As in the key server, two concrete sqlx pools behind one enum: each query is written
//! once with `$n` placeholders (both drivers accept them), every integer is a 64-bit
//! column, and the queries are checked at run time so that building needs no database.
//! Migrations are embedded from `authority/migrations/{sqlite,postgres}`.
//!
//! What is stored, and why none of it identifies a patient: a code row is a keyed hash,
//! the onset day, the hour it was created, its expiry and its state. There is no column
//! for a name, a phone number, a note or the staff member who created it; the audit table
//! counts codes per staff member per hour, without saying which codes.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::{Error, Result};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Code states as stored.
pub mod state {
    /// Not yet used, not revoked (may have expired).
    pub const LIVE: i64 = 0;
    /// Exchanged for a token.
    pub const EXCHANGED: i64 = 1;
    /// Revoked by staff.
    pub const REVOKED: i64 = 2;
}

/// Session stages as stored.
pub mod stage {
    /// Password checked; the second factor is pending.
    pub const SECOND_FACTOR: i64 = 0;
    /// Fully signed in.
    pub const SIGNED_IN: i64 = 1;
}

/// A staff account.
#[derive(Clone)]
pub struct StaffRow {
    /// Login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// TOTP secret.
    pub totp_secret: Vec<u8>,
    /// Disabled accounts cannot sign in.
    pub disabled: bool,
}

impl std::fmt::Debug for StaffRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffRow")
            .field("username", &self.username)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A staff session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Who.
    pub username: String,
    /// [`stage`] value.
    pub stage: i64,
    /// The synchronizer token every form of the session must carry.
    pub csrf_token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Today's figures for the staff page: counts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayCounts {
    /// Codes created since midnight UTC.
    pub created: u64,
    /// Codes exchanged since midnight UTC.
    pub exchanged: u64,
    /// Codes revoked since midnight UTC.
    pub revoked: u64,
    /// Codes live now.
    pub live: u64,
}

/// One audit line: `actor` did `action` `count` times in the hour starting at `hour`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Start of the hour, unix seconds.
    pub hour: u64,
    /// `staff:<name>`, `oidc:<subject>` or `apikey:<name>`.
    pub actor: String,
    /// `create` or `revoke`.
    pub action: String,
    /// How many codes.
    pub count: u64,
}

/// The connection pool.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Db {
    /// Connect to `url` and apply the migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.clamp(1, 8))
                .connect_with(opts)
                .await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(Error::UnsupportedDatabaseUrl)
        }
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Close the pool.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    // ---- codes ----

    /// Store a new live code. `false` if the hash is already present (a collision of
    /// two random codes: the caller draws another).
    pub async fn insert_code(
        &self,
        code_hash: &[u8; 32],
        onset_day: u32,
        created_hour: u64,
        expires_at: u64,
    ) -> Result<bool> {
        let q = "INSERT INTO codes (code_hash, onset_day, created_hour, expires_at, state) \
                 VALUES ($1, $2, $3, $4, 0) ON CONFLICT (code_hash) DO NOTHING";
        let n = on_pool!(self, p => sqlx::query(q)
            .bind(&code_hash[..])
            .bind(i64::from(onset_day))
            .bind(i(created_hour))
            .bind(i(expires_at))
            .execute(p)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Use a code: atomically turn a live, unexpired code into an exchanged one and
    /// return its onset day. `None` for a wrong, spent, revoked or expired code.
    pub async fn redeem_code(&self, code_hash: &[u8; 32], now: u64) -> Result<Option<u32>> {
        let q = "UPDATE codes SET state = 1, ended_hour = $1 \
                 WHERE code_hash = $2 AND state = 0 AND expires_at > $3 RETURNING onset_day";
        let row = on_pool!(self, p => sqlx::query(q)
            .bind(i(now - now % 3600))
            .bind(&code_hash[..])
            .bind(i(now))
            .fetch_optional(p)
            .await?
            .map(|r| r.try_get::<i64, _>(0)));
        match row {
            None => Ok(None),
            Some(v) => Ok(u32::try_from(v?).ok()),
        }
    }

    /// Revoke a live code. `false` if there is no such live code.
    pub async fn revoke_code(&self, code_hash: &[u8; 32], now: u64) -> Result<bool> {
        let q = "UPDATE codes SET state = 2, ended_hour = $1 \
                 WHERE code_hash = $2 AND state = 0 AND expires_at > $3";
        let n = on_pool!(self, p => sqlx::query(q)
            .bind(i(now - now % 3600))
            .bind(&code_hash[..])
            .bind(i(now))
            .execute(p)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Codes that could be exchanged now.
    pub async fn count_live(&self, now: u64) -> Result<u64> {
        let q = "SELECT COUNT(*) FROM codes WHERE state = 0 AND expires_at > $1";
        let n: i64 =
            on_pool!(self, p => sqlx::query(q).bind(i(now)).fetch_one(p).await?.try_get(0)?);
        Ok(u(n))
    }

    /// Today's counts (UTC day of `now`).
    pub async fn day_counts(&self, now: u64) -> Result<DayCounts> {
        let start = i(now - now % 86_400);
        let q = "SELECT \
                   (SELECT COUNT(*) FROM codes WHERE created_hour >= $1), \
                   (SELECT COUNT(*) FROM codes WHERE state = 1 AND ended_hour >= $1), \
                   (SELECT COUNT(*) FROM codes WHERE state = 2 AND ended_hour >= $1), \
                   (SELECT COUNT(*) FROM codes WHERE state = 0 AND expires_at > $2)";
        let (a, b, c, d): (i64, i64, i64, i64) = on_pool!(self, p => {
            let r = sqlx::query(q).bind(start).bind(i(now)).fetch_one(p).await?;
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)
        });
        Ok(DayCounts {
            created: u(a),
            exchanged: u(b),
            revoked: u(c),
            live: u(d),
        })
    }

    /// Delete codes that ended or expired more than two days ago, expired sessions, and
    /// audit lines older than `audit_days`. Returns the codes deleted.
    pub async fn purge(&self, now: u64, audit_days: u64) -> Result<u64> {
        let horizon = i(now.saturating_sub(2 * 86_400));
        let n = on_pool!(self, p => sqlx::query("DELETE FROM codes WHERE expires_at < $1")
            .bind(horizon)
            .execute(p)
            .await?
            .rows_affected());
        on_pool!(self, p => sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1")
            .bind(i(now))
            .execute(p)
            .await?
            .rows_affected());
        on_pool!(self, p => sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(i(now))
            .execute(p)
            .await?
            .rows_affected());
        on_pool!(self, p => sqlx::query("DELETE FROM audit WHERE hour < $1")
            .bind(i(now.saturating_sub(audit_days * 86_400)))
            .execute(p)
            .await?
            .rows_affected());
        Ok(n)
    }

    // ---- audit ----

    /// Count `n` more `action`s by `actor` in the hour of `now`.
    pub async fn audit_add(&self, now: u64, actor: &str, action: &str, n: u64) -> Result<()> {
        let q = "INSERT INTO audit (hour, actor, action, count) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (hour, actor, action) DO UPDATE SET count = audit.count + excluded.count";
        on_pool!(self, p => sqlx::query(q)
            .bind(i(now - now % 3600))
            .bind(actor)
            .bind(action)
            .bind(i(n))
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Audit lines from `since` on, oldest first.
    pub async fn audit_since(&self, since: u64) -> Result<Vec<AuditRow>> {
        let q = "SELECT hour, actor, action, count FROM audit WHERE hour >= $1 \
                 ORDER BY hour, actor, action";
        let rows = on_pool!(self, p => {
            let rows = sqlx::query(q).bind(i(since)).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(AuditRow {
                    hour: u(r.try_get(0)?),
                    actor: r.try_get(1)?,
                    action: r.try_get(2)?,
                    count: u(r.try_get(3)?),
                });
            }
            out
        });
        Ok(rows)
    }

    // ---- staff ----

    /// Create a staff account. `false` if the name is taken.
    pub async fn insert_staff(
        &self,
        username: &str,
        password_hash: &str,
        totp_secret: &[u8],
        now: u64,
    ) -> Result<bool> {
        let q = "INSERT INTO staff (username, password_hash, totp_secret, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING";
        let n = on_pool!(self, p => sqlx::query(q)
            .bind(username)
            .bind(password_hash)
            .bind(totp_secret)
            .bind(i(now))
            .execute(p)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// A staff account by name.
    pub async fn staff(&self, username: &str) -> Result<Option<StaffRow>> {
        let q =
            "SELECT username, password_hash, totp_secret, disabled FROM staff WHERE username = $1";
        let row = on_pool!(self, p => match sqlx::query(q).bind(username).fetch_optional(p).await? {
            None => None,
            Some(r) => Some(StaffRow {
                username: r.try_get(0)?,
                password_hash: r.try_get(1)?,
                totp_secret: r.try_get(2)?,
                disabled: r.try_get::<i64, _>(3)? != 0,
            }),
        });
        Ok(row)
    }

    /// Record that TOTP step `step` was used; `false` if it (or a later one) was used
    /// before, which makes a one-time password single use.
    pub async fn use_totp_step(&self, username: &str, step: u64) -> Result<bool> {
        let q = "UPDATE staff SET totp_last_step = $1 WHERE username = $2 AND totp_last_step < $1";
        let n = on_pool!(self, p => sqlx::query(q).bind(i(step)).bind(username).execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// Enable or disable an account (disabling also ends its sessions). `false` if
    /// there is no such account.
    pub async fn set_staff_disabled(&self, username: &str, disabled: bool) -> Result<bool> {
        let n = on_pool!(self, p => sqlx::query("UPDATE staff SET disabled = $1 WHERE username = $2")
            .bind(i64::from(disabled))
            .bind(username)
            .execute(p)
            .await?
            .rows_affected());
        if disabled {
            on_pool!(self, p => sqlx::query("DELETE FROM sessions WHERE username = $1")
                .bind(username)
                .execute(p)
                .await?
                .rows_affected());
        }
        Ok(n == 1)
    }

    // ---- sessions ----

    /// Store a session under the hash of its cookie value.
    pub async fn insert_session(&self, id_hash: &[u8; 32], s: &SessionRow) -> Result<()> {
        let q = "INSERT INTO sessions (id_hash, username, stage, csrf_token, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)";
        on_pool!(self, p => sqlx::query(q)
            .bind(&id_hash[..])
            .bind(&s.username)
            .bind(s.stage)
            .bind(&s.csrf_token)
            .bind(i(s.expires_at))
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    /// An unexpired session.
    pub async fn session(&self, id_hash: &[u8; 32], now: u64) -> Result<Option<SessionRow>> {
        let q = "SELECT username, stage, csrf_token, expires_at FROM sessions \
                 WHERE id_hash = $1 AND expires_at > $2";
        let row = on_pool!(self, p => match sqlx::query(q).bind(&id_hash[..]).bind(i(now)).fetch_optional(p).await? {
            None => None,
            Some(r) => Some(SessionRow {
                username: r.try_get(0)?,
                stage: r.try_get(1)?,
                csrf_token: r.try_get(2)?,
                expires_at: u(r.try_get(3)?),
            }),
        });
        Ok(row)
    }

    /// End a session.
    pub async fn delete_session(&self, id_hash: &[u8; 32]) -> Result<()> {
        on_pool!(self, p => sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(&id_hash[..])
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    // ---- OpenID Connect sign-ins in progress ----

    /// Remember a started OpenID Connect sign-in under the hash of its `state`.
    pub async fn insert_oidc_login(
        &self,
        state_hash: &[u8; 32],
        pkce_verifier: &str,
        nonce: &str,
        expires_at: u64,
    ) -> Result<()> {
        let q = "INSERT INTO oidc_logins (state_hash, pkce_verifier, nonce, expires_at) \
                 VALUES ($1, $2, $3, $4)";
        on_pool!(self, p => sqlx::query(q)
            .bind(&state_hash[..])
            .bind(pkce_verifier)
            .bind(nonce)
            .bind(i(expires_at))
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Take (and delete) an unexpired started sign-in: `(pkce_verifier, nonce)`. Single
    /// use, so a callback URL cannot be replayed.
    pub async fn take_oidc_login(
        &self,
        state_hash: &[u8; 32],
        now: u64,
    ) -> Result<Option<(String, String)>> {
        let q = "DELETE FROM oidc_logins WHERE state_hash = $1 AND expires_at > $2 \
                 RETURNING pkce_verifier, nonce";
        let row = on_pool!(self, p => match sqlx::query(q).bind(&state_hash[..]).bind(i(now)).fetch_optional(p).await? {
            None => None,
            Some(r) => Some((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)),
        });
        Ok(row)
    }

    // ---- API keys ----

    /// Register an API key by the hash of its secret. `false` if the name is taken.
    pub async fn insert_api_key(&self, name: &str, key_hash: &[u8; 32], now: u64) -> Result<bool> {
        let q = "INSERT INTO api_keys (name, key_hash, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING";
        let n = on_pool!(self, p => sqlx::query(q)
            .bind(name)
            .bind(&key_hash[..])
            .bind(i(now))
            .execute(p)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// The name of the unrevoked API key with this hash.
    pub async fn api_key_name(&self, key_hash: &[u8; 32]) -> Result<Option<String>> {
        let q = "SELECT name FROM api_keys WHERE key_hash = $1 AND revoked = 0";
        let name = on_pool!(self, p => match sqlx::query(q).bind(&key_hash[..]).fetch_optional(p).await? {
            None => None,
            Some(r) => Some(r.try_get::<String, _>(0)?),
        });
        Ok(name)
    }

    /// Revoke an API key by name. `false` if there is no such key.
    pub async fn revoke_api_key(&self, name: &str) -> Result<bool> {
        let n = on_pool!(self, p => sqlx::query("UPDATE api_keys SET revoked = 1 WHERE name = $1")
            .bind(name)
            .execute(p)
            .await?
            .rows_affected());
        Ok(n == 1)
    }
}
