//! The database: SQLite (default, one file in the data directory) or PostgreSQL.
//!
//! Two concrete sqlx pools behind one enum rather than `sqlx::Any`: each query is written
//! once with `$n` placeholders (which both drivers accept) and runs on the concrete
//! driver, with its real types. Queries are checked at run time (no `query!` macros), so
//! building needs no database. Migrations are embedded at compile time from
//! `migrations/sqlite` and `migrations/postgres`.
//!
//! SQLite gets a dedicated pool with **one** writer connection (SQLite allows one writer at
//! a time; queuing in the pool is much cheaper than lock retries) and a separate read pool,
//! in WAL mode with `synchronous = NORMAL`. PostgreSQL gets one pool; bucket building
//! serialises on each scheme's `release_states` row (`SELECT … FOR UPDATE`), so several server nodes
//! can share one database.
//!
//! Nothing stored here identifies a client: no IP address, no precise time.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Row};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database.
    #[error("unsupported database URL (expected sqlite://… or postgres://…)")]
    UnsupportedUrl,
    /// A query or connection failed.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Building a bucket's export failed (the transaction was rolled back).
    #[error("building bucket: {0}")]
    Build(String),
    /// A stored value is out of its expected range (corrupt row).
    #[error("corrupt row: {0}")]
    Corrupt(&'static str),
    /// The database did not answer within [`CONNECT_TIMEOUT`] at start.
    #[error(
        "no answer from the database at {host} within {} s: is it running, and is the \
         address in DP3T_DATABASE_URL right?",
        CONNECT_TIMEOUT.as_secs()
    )]
    Unreachable {
        /// `host:port` (or socket directory) of the URL.
        host: String,
    },
    /// Connecting at start failed (refused, authentication, unknown database …).
    #[error("connecting to the database at {host}: {source}")]
    Connect {
        /// `host:port` (or socket directory) of the URL.
        host: String,
        /// What the driver said.
        source: sqlx::Error,
    },
    /// The schema is not the one this binary was built for, and migrations were not to be
    /// applied (`serve --no-migrate`, `DP3T_MIGRATE=false`).
    #[error("{0}")]
    Schema(SchemaProblem),
}

/// How long connecting to the database at start may take before it is reported
/// unreachable (instead of the pool's silent retries until its acquire timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`Db::check_schema`] refused a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaProblem {
    /// No migration was ever applied.
    Empty {
        /// Newest migration version this binary knows.
        expected: i64,
    },
    /// Migrations of this binary are not applied yet.
    Behind {
        /// Newest applied version.
        applied: i64,
        /// Newest migration version this binary knows.
        expected: i64,
        /// How many migrations are pending.
        pending: usize,
    },
    /// The database has migrations this binary does not know (a newer release migrated it).
    Ahead {
        /// The first unknown applied version.
        unknown: i64,
        /// Newest migration version this binary knows.
        expected: i64,
    },
    /// A migration was applied with other contents, or failed halfway.
    Modified {
        /// Its version.
        version: i64,
    },
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const FIX: &str = "run `dp3t-backend migrate` with the role that owns the schema, \
                           or start without --no-migrate / DP3T_MIGRATE=false";
        match self {
            SchemaProblem::Empty { expected } => write!(
                f,
                "the database has no schema (this binary needs version {expected}): {FIX}"
            ),
            SchemaProblem::Behind {
                applied,
                expected,
                pending,
            } => write!(
                f,
                "the database schema is at version {applied}, this binary needs {expected} \
                 ({pending} migration(s) pending): {FIX}"
            ),
            SchemaProblem::Ahead { unknown, expected } => write!(
                f,
                "the database has migration {unknown}, newer than this binary knows (up to \
                 {expected}): run the release that migrated it"
            ),
            SchemaProblem::Modified { version } => write!(
                f,
                "migration {version} in the database differs from this binary's or failed \
                 halfway: check the database before serving from it"
            ),
        }
    }
}

impl DbError {
    /// A failure that the same transaction, run again, may not meet: a PostgreSQL
    /// deadlock (`40P01`) or serialization failure (`40001`), or SQLite's busy or locked
    /// database.
    pub fn is_transient(&self) -> bool {
        let DbError::Sqlx(sqlx::Error::Database(e)) = self else {
            return false;
        };
        matches!(
            e.code().as_deref(),
            Some("40P01" | "40001" | "5" | "6" | "261" | "517")
        )
    }
}

/// Result alias of this module.
pub type DbResult<T> = Result<T, DbError>;

/// A key to insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewKey {
    /// The 16-byte TEK.
    pub key_data: [u8; 16],
    /// Rolling start interval number (ENIN).
    pub rolling_start_number: u32,
    /// Rolling period, 1..=144.
    pub rolling_period: u32,
    /// Transmission risk level as published.
    pub transmission_risk_level: i32,
    /// Days since the onset of symptoms, -14..=14 (see [`days_since_onset`]).
    pub days_since_onset: i32,
    /// End of the release bucket the upload arrived in (coarsened arrival time).
    pub received_at: u64,
    /// Earliest bucket end at which the key may be published.
    pub publish_at: u64,
}

/// A key claimed by a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKey {
    /// The 16-byte TEK.
    pub key_data: [u8; 16],
    /// Rolling start interval number.
    pub rolling_start_number: u32,
    /// Rolling period.
    pub rolling_period: u32,
    /// Transmission risk level.
    pub transmission_risk_level: i32,
    /// Days since the onset of symptoms, -14..=14.
    pub days_since_onset: i32,
}

/// Largest magnitude of `days_since_onset_of_symptoms` that the OS exposure configurations
/// map (the DP-3T iOS SDK's `infectiousnessForDaysSinceOnsetOfSymptoms` covers -14..=14); a
/// key outside it would be ignored by the phone.
pub const MAX_DAYS_SINCE_ONSET: i32 = 14;

/// The `days_since_onset_of_symptoms` of a key starting on `key_day`, for a patient whose
/// token says `onset` (PROTOCOL.md §10): `key_day - onset`, clamped to
/// [`MAX_DAYS_SINCE_ONSET`] either way so that every published key is scored.
pub fn days_since_onset(key_day: dp3t_core::time::Day, onset: dp3t_core::time::Day) -> i32 {
    let d = i64::from(key_day.0) - i64::from(onset.0);
    // Clamped into -14..=14, so the cast cannot truncate.
    d.clamp(
        -i64::from(MAX_DAYS_SINCE_ONSET),
        i64::from(MAX_DAYS_SINCE_ONSET),
    ) as i32
}

/// One upload to store: its token's single-use record, and the entries to insert.
///
/// The [`crate::writer`] turns the digests into keyed HMACs and coarsens `expires_at`
/// before they reach the database (see [`crate::writer::single_use_record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// Digest of the token's `jti` (as stored: keyed, see above).
    pub jti_hash: [u8; 32],
    /// When the record may be deleted (unix seconds).
    pub expires_at: u64,
    /// Digest of the upload body, so that a retry of the same upload with the same token
    /// is recognised (as stored: keyed).
    pub body_digest: [u8; 32],
    /// Keys to insert (possibly none, for fake uploads).
    pub keys: Vec<NewKey>,
    /// The entries of a DP-3T design upload to insert, if any.
    pub design: Option<designs::DesignUploadRow>,
}

/// The result of storing an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// The token was new and its upload is stored (keys already stored are ignored).
    Stored,
    /// The token's `jti` was used before; nothing was written. `same_body`: by an upload
    /// with the same body (a retry after a lost answer).
    Replayed {
        /// The first use carried the same body.
        same_body: bool,
    },
}

/// A published bucket as stored.
#[derive(Debug, Clone)]
pub struct BucketRecord {
    /// End of the bucket (its release time), unix seconds.
    pub end: u64,
    /// Start of the bucket.
    pub start: u64,
    /// Real keys in it.
    pub real_keys: u64,
    /// Keys including padding.
    pub total_keys: u64,
    /// The signed export zip.
    pub zip: Vec<u8>,
    /// The `Signature` header value for serving `zip`.
    pub signature: String,
}

/// Rows removed by [`Db::delete_older_than`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Keys deleted.
    pub keys: u64,
    /// Token records deleted.
    pub tokens: u64,
    /// Buckets deleted.
    pub buckets: u64,
}

/// The database handle: cheap to clone (pools are reference-counted).
#[derive(Clone, Debug)]
pub enum Db {
    /// SQLite: one writer connection, several readers.
    Sqlite {
        /// Pool with exactly one connection, for every write.
        write: SqlitePool,
        /// Pool for reads.
        read: SqlitePool,
    },
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Run `$body` with `$p` bound to the pool for writes (and transactions).
macro_rules! on_write {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Sqlite { write: $p, .. } => $body,
            Db::Postgres($p) => $body,
        }
    };
}

/// Start a write transaction on a pool of [`on_write!`]. On SQLite it is `BEGIN
/// IMMEDIATE`, which takes the write lock at once and so waits (the busy timeout) while
/// another connection, or another node on the same file, holds it: a transaction begun
/// plainly takes the lock only at its first write, and if it has read before, SQLite
/// answers `database is locked` at once rather than wait (it could deadlock). On
/// PostgreSQL a plain `BEGIN`.
pub(crate) trait BeginWrite {
    /// The pool's database.
    type Database: sqlx::Database;
    /// `BEGIN` (PostgreSQL) or `BEGIN IMMEDIATE` (SQLite).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Run `$body` with `$p` bound to the pool for reads.
macro_rules! on_read {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Sqlite { read: $p, .. } => $body,
            Db::Postgres($p) => $body,
        }
    };
}

// After the macros, which they use.
pub mod designs;
pub mod release;
pub mod sealed;

pub use release::{scheme_name, ReleaseState};

fn to_i64(v: u64) -> DbResult<i64> {
    i64::try_from(v).map_err(|_| DbError::Corrupt("value above i64::MAX"))
}

fn to_u64(v: i64) -> DbResult<u64> {
    u64::try_from(v).map_err(|_| DbError::Corrupt("negative value"))
}

fn stored_key(key_data: Vec<u8>, rsn: i64, rp: i64, trl: i64, dso: i64) -> DbResult<StoredKey> {
    Ok(StoredKey {
        key_data: key_data
            .try_into()
            .map_err(|_| DbError::Corrupt("key_data is not 16 bytes"))?,
        rolling_start_number: u32::try_from(rsn)
            .map_err(|_| DbError::Corrupt("rolling_start_number"))?,
        rolling_period: u32::try_from(rp).map_err(|_| DbError::Corrupt("rolling_period"))?,
        transmission_risk_level: i32::try_from(trl)
            .map_err(|_| DbError::Corrupt("transmission_risk_level"))?,
        days_since_onset: i32::try_from(dso)
            .ok()
            .filter(|d| d.abs() <= MAX_DAYS_SINCE_ONSET)
            .ok_or(DbError::Corrupt("days_since_onset"))?,
    })
}

/// `INSERT … VALUES (…), (…), …` for `n` keys: `$1..$7, $8..$14, …` for PostgreSQL,
/// anonymous `?` for SQLite (whose lookup of numbered parameters is linear in their count,
/// which shows at 210 parameters).
///
/// The rows go to `gaen_keys_incoming`, which has no index but its row id, so a commit
/// appends to a few pages instead of writing one random leaf of the unique key index per
/// key; duplicates are dropped when the release claims the rows into `gaen_keys`
/// ([`crate::db::release`], PROTOCOL.md §10). Ids are the database's, in arrival order
/// (a batch's keys sorted by key data); the claim rewrites the rows in random order.
fn insert_keys_sql(n: usize, numbered: bool) -> String {
    insert_rows_sql(
        "gaen_keys_incoming (key_data, rolling_start_number, rolling_period, \
         transmission_risk_level, days_since_onset, received_at, publish_at)",
        7,
        n,
        numbered,
    )
}

/// `INSERT` of `n` design records, one row each (see [`insert_keys_sql`]): no row holds
/// the entries of more than one record, and the release shuffles them.
fn insert_design_records_sql(n: usize, numbered: bool) -> String {
    insert_rows_sql(
        "design_uploads (design, entries, entry_count, received_at)",
        4,
        n,
        numbered,
    )
}

/// `INSERT INTO {table} VALUES (…), …` for `n` rows of `cols` columns: numbered
/// parameters for PostgreSQL, `?` for SQLite.
fn insert_rows_sql(table: &str, cols: usize, n: usize, numbered: bool) -> String {
    let mut sql = format!("INSERT INTO {table} ");
    sql.push_str("VALUES ");
    let anonymous = format!("({})", vec!["?"; cols].join(","));
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        if numbered {
            let p: Vec<String> = (1..=cols).map(|j| format!("${}", i * cols + j)).collect();
            sql.push_str(&format!("({})", p.join(",")));
        } else {
            sql.push_str(&anonymous);
        }
    }
    sql
}

/// Design records inserted per statement (4 parameters each).
const DESIGN_RECORDS_PER_INSERT: usize = 400;
/// Keys inserted per statement (7 parameters each). Small and fixed, so that a batch's
/// statements come in at most this many shapes, all of which stay in the connection's
/// statement cache (a statement of as many rows as the batch had keys would be parsed
/// and planned anew for almost every batch).
const KEYS_PER_INSERT: usize = 32;

const INSERT_TOKEN: &str = "INSERT INTO used_tokens (jti_hash, expires_at, body_digest) \
     VALUES ($1, $2, $3) ON CONFLICT (jti_hash) DO NOTHING";
const SELECT_TOKEN_BODY: &str = "SELECT body_digest FROM used_tokens WHERE jti_hash = $1";
/// The first stored copy of a bucket wins (two nodes may build the same bucket).
const INSERT_BUCKET: &str = "INSERT INTO published_buckets \
     (bucket_end, bucket_start, real_keys, total_keys, zip, signature) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (bucket_end) DO NOTHING";
/// The keys claimed by the bucket ending at `$1`, in the random order of their claim.
const BUCKET_KEYS: &str = "SELECT key_data, rolling_start_number, rolling_period, \
     transmission_risk_level, days_since_onset FROM gaen_keys WHERE bucket_end = $1 ORDER BY id";
const POPULATION: &str = "SELECT * FROM (SELECT rolling_start_number, rolling_period, \
     transmission_risk_level, days_since_onset, bucket_end AS at FROM gaen_keys \
     WHERE bucket_end > $1 AND bucket_end <= $2 \
     UNION ALL SELECT rolling_start_number, rolling_period, transmission_risk_level, \
     days_since_onset, publish_at FROM gaen_keys_incoming \
     WHERE publish_at > $1 AND publish_at <= $2) p ORDER BY random() LIMIT $3";
/// Distinct stored keys, claimed or not (an unclaimed key may be stored twice until its
/// claim drops the copy).
const COUNT_KEYS: &str = "SELECT COUNT(*) FROM (SELECT key_data, rolling_start_number \
     FROM gaen_keys UNION SELECT key_data, rolling_start_number FROM gaen_keys_incoming) k";
/// Real keys sampled to shape the padding of one bucket.
pub const POPULATION_SAMPLE: i64 = 2_000;
const SELECT_BUCKETS: &str =
    "SELECT bucket_end, bucket_start, real_keys, total_keys, zip, signature \
     FROM published_buckets WHERE bucket_end > $1 AND bucket_end <= $2 ORDER BY bucket_end";

/// `auto_vacuum = INCREMENTAL` takes effect on a new file, but a file created without it
/// (before this setting existed) keeps `NONE` until a full `VACUUM` rewrites it: do that
/// once, here. It takes as long as copying the file, and needs as much free disk space.
async fn ensure_incremental_auto_vacuum(write: &SqlitePool) -> DbResult<()> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(write)
        .await?;
    if mode != INCREMENTAL {
        tracing::warn!(
            "converting the SQLite file to incremental auto-vacuum (a one-time VACUUM that rewrites the file)"
        );
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .execute(write)
            .await?;
        sqlx::query("VACUUM").execute(write).await?;
    }
    Ok(())
}

/// Run a pool's first connection under [`CONNECT_TIMEOUT`], naming `host` in the error.
async fn with_connect_timeout<P>(
    host: &str,
    connect: impl std::future::Future<Output = Result<P, sqlx::Error>>,
) -> DbResult<P> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) | Ok(Err(sqlx::Error::PoolTimedOut)) => Err(DbError::Unreachable {
            host: host.to_owned(),
        }),
        Ok(Err(source)) => Err(DbError::Connect {
            host: host.to_owned(),
            source,
        }),
        Ok(Ok(pool)) => Ok(pool),
    }
}

/// Compare the migrations of this binary (`known`: version and checksum) with those
/// recorded in the database (`applied`: version, success, checksum).
fn schema_problem(
    known: &[(i64, Vec<u8>)],
    applied: &[(i64, bool, Vec<u8>)],
) -> Option<SchemaProblem> {
    let expected = known.iter().map(|(v, _)| *v).max().unwrap_or(0);
    for (version, success, checksum) in applied {
        match known.iter().find(|(v, _)| v == version) {
            None => {
                return Some(SchemaProblem::Ahead {
                    unknown: *version,
                    expected,
                })
            }
            Some((_, c)) if !success || c != checksum => {
                return Some(SchemaProblem::Modified { version: *version })
            }
            Some(_) => {}
        }
    }
    let pending = known
        .iter()
        .filter(|(v, _)| !applied.iter().any(|(a, _, _)| a == v))
        .count();
    match applied.iter().map(|(v, _, _)| *v).max() {
        _ if pending == 0 => None,
        None => Some(SchemaProblem::Empty { expected }),
        Some(applied) => Some(SchemaProblem::Behind {
            applied,
            expected,
            pending,
        }),
    }
}

impl Db {
    /// Connect to `url` (`sqlite://path` or `postgres://…`), creating a SQLite file if
    /// needed. Does not migrate. A database that does not answer within
    /// [`CONNECT_TIMEOUT`] is [`DbError::Unreachable`], naming its host.
    pub async fn connect(url: &str, max_connections: u32) -> DbResult<Db> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // 64 MiB page cache: the key index is written at random places.
                .pragma("cache_size", "-65536")
                // Checkpoint every ~40 MiB of WAL rather than 4 MiB: index pages that
                // many uploads touch are then copied back to the database once, not
                // once per 1000 frames.
                .pragma("wal_autocheckpoint", "10000")
                // Deleted rows are overwritten with zeros, not left in free space where a
                // copy of the file would still show them; freed pages are given back to
                // the file system by `reclaim_deleted_space`.
                .pragma("secure_delete", "ON")
                // The release's temporary table of claimed rows stays in memory, never in
                // a temporary file.
                .pragma("temp_store", "MEMORY")
                .auto_vacuum(SqliteAutoVacuum::Incremental)
                // No statement log, at any level: an INSERT of keys happens for real
                // uploads only, so its log line would tell them from fake ones.
                .disable_statement_logging();
            let host = opts.get_filename().display().to_string();
            let write = with_connect_timeout(
                &host,
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts.clone()),
            )
            .await?;
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            if !in_memory {
                ensure_incremental_auto_vacuum(&write).await?;
            }
            let read = if in_memory {
                write.clone()
            } else {
                with_connect_timeout(
                    &host,
                    SqlitePoolOptions::new()
                        .max_connections(max_connections.clamp(1, 8))
                        .acquire_timeout(Duration::from_secs(30))
                        .connect_with(opts),
                )
                .await?
            };
            Ok(Db::Sqlite { write, read })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // No statement log (see the SQLite options).
            let opts = PgConnectOptions::from_str(url)?.disable_statement_logging();
            let host = format!("{}:{}", opts.get_host(), opts.get_port());
            let pool = with_connect_timeout(
                &host,
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts),
            )
            .await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(DbError::UnsupportedUrl)
        }
    }

    /// Check that every migration of this binary, and no other, is applied, without
    /// changing anything: for `serve --no-migrate`, whose role may read and write rows but
    /// not create tables.
    pub async fn check_schema(&self) -> DbResult<()> {
        let (migrator, exists_sql) = match self {
            Db::Sqlite { .. } => (
                &SQLITE_MIGRATIONS,
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            ),
            Db::Postgres(_) => (
                &POSTGRES_MIGRATIONS,
                "SELECT count(*) FROM pg_catalog.pg_tables \
                 WHERE tablename = '_sqlx_migrations' AND schemaname = ANY (current_schemas(false))",
            ),
        };
        let known: Vec<(i64, Vec<u8>)> = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| (m.version, m.checksum.to_vec()))
            .collect();
        let exists: i64 = on_read!(self, p => sqlx::query_scalar(exists_sql).fetch_one(p).await?);
        let applied: Vec<(i64, bool, Vec<u8>)> = if exists == 0 {
            Vec::new()
        } else {
            on_read!(self, p => sqlx::query_as(
                "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(p)
            .await?)
        };
        schema_problem(&known, &applied).map_or(Ok(()), |e| Err(DbError::Schema(e)))
    }

    /// After rows were deleted: on SQLite, give the freed pages back to the file system
    /// (`incremental_vacuum`) and copy the WAL into the database and truncate it, so that
    /// neither file keeps deleted data (with `secure_delete`, deleted rows are already
    /// zeroed in their pages, but older copies of those pages live in the WAL until a
    /// checkpoint). On PostgreSQL nothing: see `docs/OPERATIONS.md` ("Deleted data") for
    /// what its operator must do.
    pub async fn reclaim_deleted_space(&self) -> DbResult<()> {
        if let Db::Sqlite { write, .. } = self {
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(write)
                .await?;
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(write)
                .await?;
            if busy != 0 {
                tracing::info!(
                    "WAL checkpoint incomplete (readers busy); the next one finishes it"
                );
            }
        }
        Ok(())
    }

    /// Which database this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite { .. } => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Apply pending migrations (PostgreSQL takes an advisory lock, so concurrent nodes
    /// are safe).
    pub async fn migrate(&self) -> DbResult<()> {
        match self {
            Db::Sqlite { write, .. } => SQLITE_MIGRATIONS.run(write).await?,
            Db::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// The secret of single-use records of day `period` (see [`crate::writer`]):
    /// `candidate` if none is stored yet (the first node wins), else the stored one.
    pub async fn token_key(&self, period: u64, candidate: &[u8; 32]) -> DbResult<[u8; 32]> {
        let period = to_i64(period)?;
        let stored: Vec<u8> = on_write!(self, p => {
            sqlx::query(
                "INSERT INTO token_keys (period, secret) VALUES ($1, $2) ON CONFLICT (period) DO NOTHING",
            )
            .bind(period)
            .bind(&candidate[..])
            .execute(p)
            .await?;
            sqlx::query("SELECT secret FROM token_keys WHERE period = $1")
                .bind(period)
                .fetch_one(p)
                .await?
                .try_get(0)?
        });
        stored
            .try_into()
            .map_err(|_| DbError::Corrupt("token key is not 32 bytes"))
    }

    /// Delete the single-use records that expired before `now`, and the secrets of the
    /// days whose records are all gone. Returns (records, secrets) deleted.
    pub async fn delete_spent_tokens(&self, now: u64) -> DbResult<(u64, u64)> {
        let now_i = to_i64(now)?;
        let last_gone_period = to_i64((now / 86_400).saturating_sub(1))?;
        on_write!(self, p => {
            let mut tx = p.begin_write().await?;
            let records = sqlx::query("DELETE FROM used_tokens WHERE expires_at < $1")
                .bind(now_i)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let secrets = sqlx::query("DELETE FROM token_keys WHERE period < $1")
                .bind(last_gone_period)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok((records, secrets))
        })
    }

    /// A trivial query, for `/healthz`.
    pub async fn health(&self) -> DbResult<()> {
        on_read!(self, p => { sqlx::query("SELECT 1 FROM release_states LIMIT 1").fetch_one(p).await?; });
        Ok(())
    }

    /// Record the token's `jti` and insert `keys`, in one transaction. If the `jti` was
    /// used before, nothing is written and [`StoreOutcome::Replayed`] is returned. (The
    /// server stores through [`Db::store_uploads`]; this is its one-upload form.)
    /// Duplicate keys (same data and rolling start) are ignored.
    pub async fn store_upload(
        &self,
        jti_hash: &[u8; 32],
        expires_at: u64,
        keys: &[NewKey],
    ) -> DbResult<StoreOutcome> {
        use sha2::Digest as _;
        let mut body = sha2::Sha256::new();
        for k in keys {
            body.update(k.key_data);
        }
        let upload = UploadRecord {
            jti_hash: *jti_hash,
            expires_at,
            body_digest: body.finalize().into(),
            keys: keys.to_vec(),
            design: None,
        };
        let mut out = self.store_uploads(std::slice::from_ref(&upload)).await?;
        out.pop().ok_or(DbError::Corrupt("no outcome"))
    }

    /// Store several uploads in **one** transaction (group commit), each exactly as
    /// [`Db::store_upload`] would: a replayed `jti` stores nothing of its upload (also when
    /// the first use is earlier in the same batch). One outcome per upload, in order. On
    /// error nothing is stored.
    ///
    /// Every transaction takes its row locks in one global order, so batches stored at the
    /// same time (by a node's writers, or by two nodes) cannot deadlock: the single-use
    /// records (the only unique index an upload writes) by `jti` digest. Then the keys of
    /// every fresh upload of the batch, together and sorted by key data (which also mixes
    /// the keys of the batch's uploads), are appended to `gaen_keys_incoming`, which has no
    /// unique index: duplicates are dropped by the release's claim. (Inserting each
    /// upload's keys in turn under the unique index, as before, let PostgreSQL abort one
    /// of two batches holding shared keys in opposite orders, and cost SQLite one random
    /// index page per key.)
    pub async fn store_uploads(&self, uploads: &[UploadRecord]) -> DbResult<Vec<StoreOutcome>> {
        type Row = ([u8; 16], i64, i64, i64, i64, i64, i64);
        let numbered = matches!(self, Db::Postgres(_));
        let mut expiries = Vec::with_capacity(uploads.len());
        let mut rows: Vec<Vec<Row>> = Vec::with_capacity(uploads.len());
        for u in uploads {
            expiries.push(to_i64(u.expires_at)?);
            let mut r = Vec::with_capacity(u.keys.len());
            for k in &u.keys {
                r.push((
                    k.key_data,
                    i64::from(k.rolling_start_number),
                    i64::from(k.rolling_period),
                    i64::from(k.transmission_risk_level),
                    i64::from(k.days_since_onset),
                    to_i64(k.received_at)?,
                    to_i64(k.publish_at)?,
                ));
            }
            rows.push(r);
        }
        // Single-use records in `jti` order; a stable sort keeps a batch's repeated `jti`
        // in batch order, so its first use is the one stored.
        let mut by_jti: Vec<usize> = (0..uploads.len()).collect();
        by_jti.sort_by_key(|&i| uploads[i].jti_hash);
        on_write!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut outcomes = vec![StoreOutcome::Stored; uploads.len()];
            for &i in &by_jti {
                let u = &uploads[i];
                let fresh = sqlx::query(INSERT_TOKEN)
                    .bind(&u.jti_hash[..])
                    .bind(expiries[i])
                    .bind(&u.body_digest[..])
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if fresh == 0 {
                    let first: Option<Vec<u8>> = sqlx::query(SELECT_TOKEN_BODY)
                        .bind(&u.jti_hash[..])
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|r| r.try_get(0))
                        .transpose()?
                        .flatten();
                    let same_body = first.is_some_and(|d| {
                        subtle::ConstantTimeEq::ct_eq(&d[..], &u.body_digest[..]).into()
                    });
                    outcomes[i] = StoreOutcome::Replayed { same_body };
                }
            }
            let fresh = |i: &usize| outcomes[*i] == StoreOutcome::Stored;
            let mut keys: Vec<&Row> = (0..uploads.len())
                .filter(fresh)
                .flat_map(|i| &rows[i])
                .collect();
            keys.sort_unstable_by_key(|r| (r.0, r.1));
            keys.dedup_by_key(|r| (r.0, r.1));
            for chunk in keys.chunks(KEYS_PER_INSERT) {
                let sql = insert_keys_sql(chunk.len(), numbered);
                let mut q = sqlx::query(&sql);
                for r in chunk {
                    q = q
                        .bind(&r.0[..])
                        .bind(r.1)
                        .bind(r.2)
                        .bind(r.3)
                        .bind(r.4)
                        .bind(r.5)
                        .bind(r.6);
                }
                q.execute(&mut *tx).await?;
            }
            // Design records have no unique key: plain inserts, which wait on no one.
            for d in (0..uploads.len()).filter(fresh).filter_map(|i| uploads[i].design.as_ref()) {
                let size = usize::try_from(d.entry_count)
                    .ok()
                    .filter(|n| *n > 0 && d.entries.len() % n == 0)
                    .map(|n| d.entries.len() / n)
                    .ok_or(DbError::Corrupt("design records of unequal size"))?;
                let received_at = to_i64(d.received_at)?;
                let records: Vec<&[u8]> = d.entries.chunks(size).collect();
                for chunk in records.chunks(DESIGN_RECORDS_PER_INSERT) {
                    let sql = insert_design_records_sql(chunk.len(), numbered);
                    let mut q = sqlx::query(&sql);
                    for r in chunk {
                        q = q
                            .bind(d.design)
                            .bind(*r)
                            .bind(1i64)
                            .bind(received_at);
                    }
                    q.execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(outcomes)
        })
    }

    /// The keys claimed by the GAEN bucket ending at `end` ([`Db::claim`]), in the random
    /// order of their claim.
    pub async fn bucket_keys(&self, end: u64) -> DbResult<Vec<StoredKey>> {
        let e = to_i64(end)?;
        on_read!(self, p => sqlx::query(BUCKET_KEYS).bind(e).fetch_all(p).await?
            .into_iter()
            .map(|r| stored_key(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?))
            .collect())
    }

    /// A random sample (at most [`POPULATION_SAMPLE`]) of the real GAEN keys published in
    /// `(after, upto]` (claimed by a bucket in that range, or due in it), each with the end
    /// of the bucket that publishes it, key data zeroed: the padding is shaped like them.
    pub async fn key_population(&self, after: u64, upto: u64) -> DbResult<Vec<(StoredKey, u64)>> {
        let (a, u) = (to_i64(after)?, to_i64(upto)?);
        on_read!(self, p => sqlx::query(POPULATION).bind(a).bind(u).bind(POPULATION_SAMPLE).fetch_all(p).await?
            .into_iter()
            .map(|r| Ok((
                stored_key(vec![0; 16], r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)?,
                to_u64(r.try_get(4)?)?,
            )))
            .collect())
    }

    /// Store a built GAEN bucket; if another node stored this bucket first, keep that copy.
    pub async fn insert_bucket(&self, b: &BucketRecord) -> DbResult<()> {
        let (end, start, real, total) = (
            to_i64(b.end)?,
            to_i64(b.start)?,
            to_i64(b.real_keys)?,
            to_i64(b.total_keys)?,
        );
        on_write!(self, p => {
            sqlx::query(INSERT_BUCKET)
                .bind(end)
                .bind(start)
                .bind(real)
                .bind(total)
                .bind(&b.zip[..])
                .bind(&b.signature)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Published buckets with `after < end <= upto`, oldest first.
    pub async fn buckets_between(&self, after: u64, upto: u64) -> DbResult<Vec<BucketRecord>> {
        let (a, u) = (to_i64(after)?, to_i64(upto)?);
        let rows = on_read!(self, p => sqlx::query(SELECT_BUCKETS).bind(a).bind(u).fetch_all(p).await?
            .into_iter()
            .map(|r| -> DbResult<BucketRecord> {
                Ok(BucketRecord {
                    end: to_u64(r.try_get(0)?)?,
                    start: to_u64(r.try_get(1)?)?,
                    real_keys: to_u64(r.try_get(2)?)?,
                    total_keys: to_u64(r.try_get(3)?)?,
                    zip: r.try_get(4)?,
                    signature: r.try_get(5)?,
                })
            })
            .collect::<DbResult<Vec<_>>>()?);
        Ok(rows)
    }

    /// Number of key rows (published or not), for the metrics gauge.
    pub async fn count_keys(&self) -> DbResult<u64> {
        let v: i64 = on_read!(self, p => sqlx::query(COUNT_KEYS)
            .fetch_one(p).await?.try_get(0)?);
        to_u64(v)
    }

    /// Delete keys whose publication time or whose own validity start (the reference
    /// backend's rule: counted from `rollingStartNumber`), token records whose expiry, and
    /// buckets whose release time lie before `cutoff` (unix seconds).
    pub async fn delete_older_than(&self, cutoff: u64) -> DbResult<RetentionReport> {
        let c = to_i64(cutoff)?;
        let rsn = to_i64(cutoff.div_ceil(600))?;
        on_write!(self, p => {
            let mut keys = 0;
            for table in ["gaen_keys", "gaen_keys_incoming"] {
                keys += sqlx::query(&format!(
                    "DELETE FROM {table} WHERE publish_at < $1 OR rolling_start_number < $2"
                ))
                .bind(c).bind(rsn).execute(p).await?.rows_affected();
            }
            let tokens = sqlx::query("DELETE FROM used_tokens WHERE expires_at < $1")
                .bind(c).execute(p).await?.rows_affected();
            let buckets = sqlx::query("DELETE FROM published_buckets WHERE bucket_end < $1")
                .bind(c).execute(p).await?.rows_affected();
            Ok(RetentionReport { keys, tokens, buckets })
        })
    }

    /// Close the pools (waits for connections in use to be returned).
    pub async fn close(&self) {
        match self {
            Db::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres(p) => p.close().await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn temp_db() -> (Db, std::path::PathBuf) {
        temp_db_named("dp3t-db").await
    }

    /// A fresh, migrated SQLite database in a new temporary directory named after
    /// `prefix`; returns the database and the directory (for the caller to remove).
    pub(super) async fn temp_db_named(prefix: &str) -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let db = Db::connect(&url, 4).await.unwrap();
        db.migrate().await.unwrap();
        (db, dir)
    }

    #[tokio::test]
    async fn check_schema_refuses_an_unmigrated_database_and_accepts_a_migrated_one() {
        let dir = std::env::temp_dir().join(format!(
            "dp3t-schema-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        let err = db.check_schema().await.unwrap_err();
        assert!(
            matches!(err, DbError::Schema(SchemaProblem::Empty { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("dp3t-backend migrate"), "{err}");
        db.migrate().await.unwrap();
        db.check_schema().await.unwrap();
        db.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file made before incremental auto-vacuum was set is converted once at connect.
    #[tokio::test]
    async fn an_existing_file_gets_incremental_auto_vacuum_and_secure_delete() {
        use sqlx::ConnectOptions as _;
        let dir = std::env::temp_dir().join(format!(
            "dp3t-vacuum-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let mut old = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x BLOB)")
            .execute(&mut old)
            .await
            .unwrap();
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&mut old)
            .await
            .unwrap();
        assert_eq!(mode, 0);
        sqlx::Connection::close(old).await.unwrap();
        let db = Db::connect(&url, 2).await.unwrap();
        let Db::Sqlite { write, read } = &db else {
            unreachable!()
        };
        for pool in [write, read] {
            let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(mode, 2, "incremental");
            let secure: i64 = sqlx::query_scalar("PRAGMA secure_delete")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(secure, 1);
        }
        db.reclaim_deleted_space().await.unwrap();
        db.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn schema_problems_are_named() {
        let known = vec![(1, vec![1]), (2, vec![2]), (3, vec![3])];
        let ok: Vec<_> = known.iter().map(|(v, c)| (*v, true, c.clone())).collect();
        assert_eq!(schema_problem(&known, &ok), None);
        assert_eq!(
            schema_problem(&known, &ok[..1]),
            Some(SchemaProblem::Behind {
                applied: 1,
                expected: 3,
                pending: 2
            })
        );
        assert_eq!(
            schema_problem(&known, &[]),
            Some(SchemaProblem::Empty { expected: 3 })
        );
        let mut ahead = ok.clone();
        ahead.push((4, true, vec![4]));
        assert_eq!(
            schema_problem(&known, &ahead),
            Some(SchemaProblem::Ahead {
                unknown: 4,
                expected: 3
            })
        );
        let mut changed = ok.clone();
        changed[1].2 = vec![9];
        assert_eq!(
            schema_problem(&known, &changed),
            Some(SchemaProblem::Modified { version: 2 })
        );
        let mut failed = ok;
        failed[2].1 = false;
        assert_eq!(
            schema_problem(&known, &failed),
            Some(SchemaProblem::Modified { version: 3 })
        );
    }

    /// A key `[b; 16]` due at `publish_at` (also its coarsened arrival).
    pub(super) fn key(b: u8, publish_at: u64) -> NewKey {
        NewKey {
            key_data: [b; 16],
            rolling_start_number: 2_700_000,
            rolling_period: 144,
            transmission_risk_level: 0,
            days_since_onset: 0,
            received_at: publish_at,
            publish_at,
        }
    }

    #[test]
    fn insert_statements_have_a_parameter_per_column_and_row() {
        assert_eq!(
            insert_rows_sql("t (a, b)", 2, 2, false),
            "INSERT INTO t (a, b) VALUES (?,?),(?,?)"
        );
        assert_eq!(
            insert_rows_sql("t (a, b)", 2, 2, true),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4)"
        );
        assert!(insert_keys_sql(2, true).starts_with("INSERT INTO gaen_keys_incoming ("));
        assert!(insert_keys_sql(2, true)
            .ends_with("($1,$2,$3,$4,$5,$6,$7),($8,$9,$10,$11,$12,$13,$14)"));
    }

    #[tokio::test]
    async fn replayed_tokens_write_nothing_and_duplicates_are_ignored() {
        let (db, dir) = temp_db().await;
        let out = db
            .store_upload(&[1; 32], 10, &[key(1, 100), key(2, 100), key(1, 100)])
            .await
            .unwrap();
        assert_eq!(out, StoreOutcome::Stored);
        assert_eq!(db.count_keys().await.unwrap(), 2);
        assert_eq!(
            db.store_upload(&[1; 32], 10, &[key(3, 100)]).await.unwrap(),
            StoreOutcome::Replayed { same_body: false }
        );
        // The same upload again (a retry after a lost answer) is recognised as such.
        assert_eq!(
            db.store_upload(&[1; 32], 10, &[key(1, 100), key(2, 100), key(1, 100)])
                .await
                .unwrap(),
            StoreOutcome::Replayed { same_body: true }
        );
        assert_eq!(db.count_keys().await.unwrap(), 2);
        let out = db
            .store_upload(&[2; 32], 10, &[key(2, 100), key(3, 100)])
            .await
            .unwrap();
        assert_eq!(out, StoreOutcome::Stored);
        assert_eq!(db.count_keys().await.unwrap(), 3);
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn keys_past_retention_by_their_own_date_are_neither_published_nor_kept() {
        let (db, dir) = temp_db().await;
        let day = 600 * 144;
        let now = 2_000 * day;
        let retention = 14 * day;
        // Uploaded now, valid from 13 and from 15 days ago.
        let key_of = |b: u8, days_ago: u64| NewKey {
            rolling_start_number: ((now - days_ago * day) / 600) as u32,
            ..key(b, now)
        };
        db.store_upload(&[1; 32], now, &[key_of(1, 13), key_of(2, 15)])
            .await
            .unwrap();
        db.claim(dp3t_core::engine::Scheme::Gaen, 600, now - retention, now)
            .await
            .unwrap();
        let claimed = db.bucket_keys(now).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].key_data, [1; 16]);
        // Retention counted from the keys' own date: the 15-day-old key goes now, though
        // it was uploaded today; the 13-day-old one two days later.
        let gone = db.delete_older_than(now - retention).await.unwrap();
        assert_eq!(gone.keys, 1);
        assert_eq!(db.count_keys().await.unwrap(), 1);
        let gone = db
            .delete_older_than(now + 2 * day - retention)
            .await
            .unwrap();
        assert_eq!(gone.keys, 1);
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
