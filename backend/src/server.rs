//! Putting the server together: data directory, keys, database, publisher, HTTP server,
//! background tasks, graceful shutdown.
//!
//! [`Listeners::bind`] binds the public and the metrics address first, so that an address
//! in use is reported before anything is written; [`prepare`] then does everything else
//! that can fail; [`run`] serves on the bound listeners until a signal (or a [`actix_web::dev::ServerHandle`]) stops it,
//! letting requests in flight finish; [`start_in_thread`] runs the same server on its own
//! thread and runtime, for tests and embedding.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpServer};

use crate::api::{self, AppState};
use crate::auth::HaKeys;
use crate::config::Config;
use crate::db::{Db, DbError};
use crate::keys;
use crate::metrics::Metrics;
use crate::publish::{PublishSettings, Publisher};
use crate::release::{bucket_floor, RETENTION_INTERVAL_SECS};
use crate::unix_now;
use crate::writer::UploadWriter;

/// Why a server could not start or stopped with an error; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file system or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (`binding 127.0.0.1:8080 (DP3T_BIND)`, …).
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key file.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// `DP3T_REQUIRE_KEYS` is true and there is no signing key.
    #[error(
        "no signing key at {} and DP3T_REQUIRE_KEYS is true: provision it \
         (docs/OPERATIONS.md, \"The signing key\"); the server generates none",
        .0.display()
    )]
    SigningKeyRequired(std::path::PathBuf),
    /// `--no-migrate` on a data directory without a database.
    #[error(
        "no database at {} and migrations are not to be applied \
         (--no-migrate / DP3T_MIGRATE=false): run `dp3t-backend migrate` first",
        .0.display()
    )]
    NoDatabase(std::path::PathBuf),
    /// Applying the migrations failed.
    #[error(
        "applying migrations (a role that may not create tables serves with --no-migrate \
         after the owner ran `dp3t-backend migrate`): {0}"
    )]
    Migrate(#[source] DbError),
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Releasing or loading GAEN buckets.
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    /// Releasing or loading the designs' buckets.
    #[error(transparent)]
    Designs(#[from] crate::designs::DesignError),
    /// Setting up the next-day tokens.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Loading or creating the keys of sealed uploads.
    #[error("sealed-upload keys: {0}")]
    SealedKeys(Box<dyn std::error::Error + Send + Sync>),
    /// The server thread of [`start_in_thread`] ended before it started serving.
    #[error("the server thread ended before starting")]
    ThreadEnded,
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// A server ready to listen.
#[derive(Debug)]
pub struct Prepared {
    /// The configuration it was built from.
    pub config: Config,
    /// Shared state of the handlers.
    pub state: web::Data<AppState>,
}

/// Connect the database, then apply pending migrations, or with `config.migrate` false
/// only check that the schema is this binary's (for a role that may not create tables).
pub async fn open_database(config: &Config) -> Result<Db, ServerError> {
    if config.database_url.is_none() {
        let path = config.data_dir.join(SQLITE_FILE);
        if !config.migrate && !path.exists() {
            // Connecting would create an empty file; say what is missing instead.
            return Err(ServerError::NoDatabase(path));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(io_error(format!(
            "creating data dir {}",
            config.data_dir.display()
        )))?;
    }
    let db = Db::connect(&config.effective_database_url(), config.db_max_connections).await?;
    if config.migrate {
        db.migrate().await.map_err(ServerError::Migrate)?;
    } else {
        db.check_schema().await?;
        tracing::info!("schema is at the expected version (migrations not applied: --no-migrate)");
    }
    Ok(db)
}

/// The SQLite file in the data directory when no database URL is configured.
const SQLITE_FILE: &str = "dp3t.db";

/// Check what must already exist (health-authority key files, the signing key when
/// `require_keys`), then open and migrate the database, then create what is missing (the
/// data directory, development keys), then load the released buckets. Nothing is written
/// before the configuration, the key files and the database have been found usable.
pub async fn prepare(config: Config) -> Result<Prepared, ServerError> {
    let mut ha_keys = HaKeys::default();
    for path in &config.ha_public_keys {
        ha_keys.add_file(path)?;
    }
    let key_path = config.data_dir.join(keys::SIGNING_KEY_FILE);
    let existing_key = keys::load_signing_key(&config.data_dir)?;
    if existing_key.is_none() && config.require_keys {
        return Err(ServerError::SigningKeyRequired(key_path));
    }

    let db = open_database(&config).await?;
    // The timing values, derived once and handed to every part below.
    let timing = config.timing();

    std::fs::create_dir_all(&config.data_dir).map_err(io_error(format!(
        "creating data dir {}",
        config.data_dir.display()
    )))?;
    let signing_key = match existing_key {
        Some(key) => {
            tracing::info!(path = %key_path.display(), "loaded signing key");
            key
        }
        None => {
            let (key, _) = keys::load_or_create_signing_key(&config.data_dir)?;
            tracing::warn!(
                path = %key_path.display(),
                "generated a new signing key: this is a DEVELOPMENT key; production installs provision and back up their own and set DP3T_REQUIRE_KEYS=true (docs/OPERATIONS.md)"
            );
            key
        }
    };
    if config.trust_dev_ha_key {
        if config.ha_public_keys.is_empty()
            && !config.require_keys
            && keys::ensure_dev_ha_key(&config.data_dir)?
        {
            tracing::warn!(
                dir = %config.data_dir.display(),
                "no health-authority key configured: generated a DEVELOPMENT key ha-dev-key.pem; anyone holding it can authorise uploads"
            );
        }
        let dev_pub = config.data_dir.join(keys::HA_DEV_PUB_FILE);
        if dev_pub.exists() {
            ha_keys.add_file(&dev_pub)?;
            tracing::warn!(path = %dev_pub.display(), "trusting the DEVELOPMENT health-authority key (set DP3T_TRUST_DEV_HA_KEY=false in production)");
        }
    }
    if ha_keys.is_empty() {
        tracing::warn!("no health-authority key is trusted: every upload will be refused");
    } else {
        tracing::info!(keys = ?ha_keys.sources(), "trusted health-authority keys");
    }

    let metrics = Arc::new(Metrics::default());
    let cache = Arc::new(crate::cache::DownloadCache::new(
        config.download_cache_bytes,
    ));
    let designs = Arc::new(
        crate::designs::DesignPublisher::open(
            db.clone(),
            signing_key.clone(),
            crate::designs::DesignSettings::from_config(&config),
            Arc::clone(&metrics),
            Arc::clone(&cache),
            unix_now(),
        )
        .await?,
    );
    let next_day = crate::auth::NextDayTokens::new(&signing_key)?;
    let publisher = Arc::new(Publisher::new(
        db.clone(),
        signing_key,
        PublishSettings {
            timing,
            min_keys: config.export_min_keys,
            region: config.region.clone(),
            key_id: config.signature_key_id.clone(),
            key_version: config.signature_key_version.clone(),
            issuer: config.issuer.clone(),
        },
        Arc::clone(&metrics),
        cache,
    ));
    publisher.enforce_retention(unix_now()).await?;
    db.reclaim_deleted_space().await?;
    publisher.advance(unix_now()).await?;
    let sealed = api::sealed::SealedKeys::open(
        db.clone(),
        &config.data_dir,
        api::sealed::Rotation::default(),
        unix_now(),
    )
    .await
    .map_err(|e| ServerError::SealedKeys(e.into()))?;
    let state = web::Data::new(AppState {
        writer: UploadWriter::spawn(db.clone(), upload_writers(&db)),
        db,
        publisher,
        designs,
        ha_keys,
        next_day,
        metrics,
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        uploads_in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_uploads_in_flight)),
        timing,
        sealed,
    });
    tracing::info!(
        database = state.db.kind(),
        bucket_seconds = config.release_bucket_seconds,
        upload_delay_ms = config.upload_delay_ms,
        retention_days = config.retention_days,
        "server prepared"
    );
    Ok(Prepared { config, state })
}

/// Writer tasks for uploads: one for SQLite (it has one writer connection), a few for
/// PostgreSQL so that commits overlap.
fn upload_writers(db: &Db) -> usize {
    match db {
        Db::Sqlite { .. } => 1,
        Db::Postgres(_) => 4,
    }
}

/// Background task: release each bucket as soon as it ends, count keys, enforce retention.
pub async fn ticker(state: web::Data<AppState>) {
    // One ticker releases every scheme's buckets (GAEN and the three designs) and runs
    // the one retention task.
    let len = state.timing.bucket_seconds;
    let mut last_retention = unix_now().0;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let next_end = bucket_floor(now.as_secs(), len) + len;
        let wait = Duration::from_secs(next_end)
            .saturating_sub(now)
            .saturating_add(Duration::from_millis(20));
        // Wake at least once a second while behind (a failed release is retried).
        let floor = bucket_floor(now.as_secs(), len);
        let behind = state.publisher.released_until() < floor
            || crate::designs::Design::ALL
                .iter()
                .any(|d| state.designs.released_until(*d) < floor);
        let wait = if behind {
            wait.min(Duration::from_secs(1))
        } else {
            wait
        };
        tokio::time::sleep(wait).await;
        let now = unix_now();
        // A failure is logged and counted by the publisher, and retried on the next tick.
        let _ = state.publisher.advance(now).await;
        state.designs.advance_all(now).await;
        if now.0 >= last_retention + RETENTION_INTERVAL_SECS {
            last_retention = now.0;
            match state.publisher.enforce_retention(now).await {
                Ok(r) => tracing::info!(
                    keys = r.keys,
                    tokens = r.tokens,
                    buckets = r.buckets,
                    "retention"
                ),
                Err(e) => tracing::error!(error = %e, "retention failed"),
            }
            match state.designs.enforce_retention(now).await {
                Ok(r) => {
                    tracing::info!(uploads = r.uploads, buckets = r.buckets, "design retention")
                }
                Err(e) => tracing::error!(error = %e, "design retention failed"),
            }
            if let Err(e) = state.db.reclaim_deleted_space().await {
                tracing::error!(error = %e, "reclaiming deleted space failed");
            }
        }
    }
}

/// The two HTTP servers of a node: the public API, and `/metrics` on its own listener.
#[allow(missing_debug_implementations)] // actix's `Server` has no `Debug`
pub struct Servers {
    /// The public API (uploads, downloads, `/healthz`).
    pub api: actix_web::dev::Server,
    /// `/metrics` only, on the metrics listener.
    pub metrics: actix_web::dev::Server,
}

impl Servers {
    /// Run both until the API server stops (a signal or its handle), then stop the metrics
    /// server. The result is the API server's.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics_handle = self.metrics.handle();
        let metrics = actix_web::rt::spawn(self.metrics);
        let result = self.api.await;
        metrics_handle.stop(true).await;
        let _ = metrics.await;
        result
    }
}

/// The public and the metrics listener, bound before anything is written, so that an
/// address in use is reported first.
#[derive(Debug)]
pub struct Listeners {
    /// The public API listener (`DP3T_BIND`).
    pub api: TcpListener,
    /// The metrics listener (`DP3T_METRICS_BIND`).
    pub metrics: TcpListener,
}

impl Listeners {
    /// Bind `config.bind` and `config.metrics_bind`.
    pub fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let api = TcpListener::bind(&config.bind)
            .map_err(io_error(format!("binding {} (DP3T_BIND)", config.bind)))?;
        let metrics = TcpListener::bind(&config.metrics_bind).map_err(io_error(format!(
            "binding {} (DP3T_METRICS_BIND)",
            config.metrics_bind
        )))?;
        Ok(Listeners { api, metrics })
    }
}

/// Serve on `listeners` until stopped. `signals`: stop gracefully on SIGINT/SIGTERM.
/// Must run inside an actix/tokio runtime. `/metrics` is served on the metrics listener
/// only; the public one answers 404 for it.
pub fn run(prepared: &Prepared, listeners: Listeners, signals: bool) -> std::io::Result<Servers> {
    let state = prepared.state.clone();
    let request_timeout = state.request_timeout;
    let mut server = HttpServer::new(move || api::app(state.clone()))
        .shutdown_timeout(10)
        .client_request_timeout(request_timeout)
        .listen(listeners.api)?;
    if let Some(w) = prepared.config.workers {
        server = server.workers(w);
    }
    if !signals {
        server = server.disable_signals();
    }
    let state = prepared.state.clone();
    let metrics = HttpServer::new(move || api::ops::metrics_app(state.clone()))
        .workers(1)
        .shutdown_timeout(1)
        .disable_signals()
        .listen(listeners.metrics)?
        .run();
    Ok(Servers {
        api: server.run(),
        metrics,
    })
}

/// `dp3t-backend serve`: bind, prepare, print the URLs, serve until SIGINT/SIGTERM, then
/// finish requests in flight and close the database.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    let listeners = Listeners::bind(&config)?;
    let addr = listeners
        .api
        .local_addr()
        .map_err(io_error("local address"))?;
    let metrics_addr = listeners
        .metrics
        .local_addr()
        .map_err(io_error("local address"))?;
    let prepared = prepare(config).await?;
    let servers = run(&prepared, listeners, true).map_err(io_error("starting the HTTP server"))?;
    let ticker = actix_web::rt::spawn(ticker(prepared.state.clone()));
    tracing::info!(%addr, %metrics_addr, "listening");
    println!("dp3t-backend listening on http://{addr}");
    println!("metrics on http://{metrics_addr}/metrics");
    let result = servers.run_until_stopped().await;
    ticker.abort();
    prepared.state.db.close().await;
    tracing::info!("stopped");
    result.map_err(io_error("HTTP server"))
}

/// A server running on its own thread (tests, embedding).
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The bound address of the metrics listener.
    pub metrics_addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The handler state (database, publisher, metrics), for inspection.
    pub state: web::Data<AppState>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://metrics_addr/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    /// Stop gracefully and wait for the thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            // The future only sends the stop command; the server thread does the work.
            drop(self.handle.stop(true));
            let _ = t.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start the server described by `config` on its own thread, listening on `config.bind`
/// and `config.metrics_bind` (use port 0 for free ports). Returns once it accepts
/// connections.
pub fn start_in_thread(config: Config) -> Result<RunningServer, ServerError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("dp3t-backend".into())
        .spawn(move || {
            let sys = actix_web::rt::System::new();
            sys.block_on(async move {
                let started = async {
                    let listeners = Listeners::bind(&config)?;
                    let addrs = (
                        listeners
                            .api
                            .local_addr()
                            .map_err(io_error("local address"))?,
                        listeners
                            .metrics
                            .local_addr()
                            .map_err(io_error("local address"))?,
                    );
                    let prepared = prepare(config).await?;
                    let servers = run(&prepared, listeners, false)
                        .map_err(io_error("starting the HTTP server"))?;
                    Ok::<_, ServerError>((prepared, addrs, servers))
                }
                .await;
                match started {
                    Ok((prepared, addrs, servers)) => {
                        let ticker = actix_web::rt::spawn(ticker(prepared.state.clone()));
                        let _ = tx.send(Ok((addrs, servers.api.handle(), prepared.state.clone())));
                        let _ = servers.run_until_stopped().await;
                        ticker.abort();
                        prepared.state.db.close().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(io_error("spawning the server thread"))?;
    let ((addr, metrics_addr), handle, state) =
        rx.recv().map_err(|_| ServerError::ThreadEnded)??;
    Ok(RunningServer {
        addr,
        metrics_addr,
        handle,
        thread: Some(thread),
        state,
    })
}
