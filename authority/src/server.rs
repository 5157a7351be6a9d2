//! Putting the service together: data directory, keys, database, HTTP server, background
//! tasks, graceful shutdown.
//!
//! [`prepare`] does everything that can fail before a socket is opened (and creates the
//! signing key and code secret on first start, with a warning); [`run`] serves on a bound
//! listener; [`start_in_thread`] runs the same server on its own thread, for tests and
//! embedding.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};

use crate::api::{self, AppState};
use crate::codes::{CodeHasher, CODE_KEY_FILE};
use crate::config::Config;
use crate::db::Db;
use crate::ratelimit::Limiter;
use crate::staff::{PasswordCheck, Throttle};
use crate::token::{TokenSigner, PUBLIC_KEY_FILE, SIGNING_KEY_FILE};
use crate::web::i18n::Catalogs;
use crate::web::{self as staff_web, CSP};
use crate::{unix_now, Error, Result};

/// How often the live-code count is read back from the database.
const LIVE_REFRESH_SECONDS: u64 = 30;
/// How often old rows are purged.
const PURGE_SECONDS: u64 = 600;
/// Days of audit lines kept.
pub const AUDIT_RETENTION_DAYS: u64 = 400;

/// Open the configured database (creating the data directory for SQLite).
pub async fn open_database(config: &Config) -> Result<Db> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::io(&config.data_dir, e))?;
    }
    Db::open(&config.effective_database_url(), 16).await
}

/// Load (or on first start create) the signing key and the code secret.
pub fn load_keys(config: &Config) -> Result<(TokenSigner, CodeHasher)> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::io(&config.data_dir, e))?;
    let (signer, created) = TokenSigner::load_or_create(
        &config.data_dir,
        &config.issuer,
        config.token_validity_minutes,
    )?;
    if created {
        tracing::warn!(
            key = %config.data_dir.join(SIGNING_KEY_FILE).display(),
            "generated a new token-signing key: fine for development; for production provision \
             the key yourself (see authority/README.md) and give the key server {}",
            PUBLIC_KEY_FILE
        );
    }
    let (hasher, created) = CodeHasher::load_or_create(&config.data_dir.join(CODE_KEY_FILE))?;
    if created {
        tracing::warn!(
            key = %config.data_dir.join(CODE_KEY_FILE).display(),
            "generated a new code-hashing secret; every node sharing this database needs the same file"
        );
    }
    Ok((signer, hasher))
}

/// Everything but the socket.
pub async fn prepare(config: Config) -> Result<web::Data<AppState>> {
    let (signer, hasher) = load_keys(&config)?;
    let db = open_database(&config).await?;
    let limiter = Limiter::new(config.client_failures_per_hour, config.max_daily_guess_risk);
    let oidc = match config.oidc() {
        Some(settings) => {
            let o = crate::oidc::Oidc::discover(settings).await?;
            tracing::info!(?o, "OpenID Connect sign-in enabled");
            Some(o)
        }
        None => None,
    };
    let state = AppState {
        db,
        hasher,
        signer,
        limiter,
        live_codes: AtomicU64::new(0),
        throttle: Throttle::default(),
        passwords: PasswordCheck::new()?,
        catalogs: Catalogs::load()?,
        oidc,
        config,
    };
    state.refresh_live_codes(unix_now()).await?;
    Ok(web::Data::new(state))
}

/// Refresh the live-code count, prune rate-limit entries, purge old rows; forever.
pub async fn ticker(state: web::Data<AppState>) {
    let mut last_purge = 0;
    loop {
        actix_web::rt::time::sleep(Duration::from_secs(LIVE_REFRESH_SECONDS)).await;
        let now = unix_now();
        if let Err(e) = state.refresh_live_codes(now).await {
            tracing::error!(error = %e, "counting live codes failed");
        }
        state.limiter.prune(now);
        if now >= last_purge + PURGE_SECONDS {
            last_purge = now;
            match state.db.purge(now, AUDIT_RETENTION_DAYS).await {
                Ok(n) if n > 0 => tracing::info!(codes = n, "purged old codes"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "purge failed"),
            }
        }
    }
}

/// The security headers of every answer (handlers may set their own `cache-control`).
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("content-security-policy", CSP))
        .add(("x-content-type-options", "nosniff"))
        .add(("x-frame-options", "DENY"))
        .add(("referrer-policy", "same-origin"))
        .add(("cross-origin-opener-policy", "same-origin"))
        .add(("cache-control", "no-store"))
}

/// Serve on `listener` until stopped. `signals`: stop on SIGINT/SIGTERM.
pub fn run(
    state: web::Data<AppState>,
    listener: TcpListener,
    signals: bool,
) -> std::io::Result<actix_web::dev::Server> {
    let workers = state.config.workers;
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(web::PayloadConfig::new(api::MAX_BODY_BYTES))
            .app_data(web::FormConfig::default().limit(api::MAX_BODY_BYTES))
            .wrap(security_headers())
            .configure(api::routes)
            .configure(staff_web::routes)
    })
    .shutdown_timeout(10)
    .listen(listener)?;
    if let Some(w) = workers {
        server = server.workers(w);
    }
    if !signals {
        server = server.disable_signals();
    }
    Ok(server.run())
}

/// `dp3t-authority serve`: prepare, bind, print the URL, serve until a signal.
pub async fn serve(config: Config) -> Result<()> {
    let bind = config.bind.clone();
    let state = prepare(config).await?;
    let listener = TcpListener::bind(&bind).map_err(|e| Error::io(&bind, e))?;
    let addr = listener.local_addr().map_err(|e| Error::io(&bind, e))?;
    let server = run(state.clone(), listener, true).map_err(|e| Error::io(&bind, e))?;
    let ticker = actix_web::rt::spawn(ticker(state.clone()));
    let shown = if addr.ip().is_loopback() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    tracing::info!(%addr, "listening");
    println!("dp3t-authority listening on {shown} (staff page: {shown}/staff)");
    println!(
        "the key server must trust {}",
        state.config.data_dir.join(PUBLIC_KEY_FILE).display()
    );
    let result = server.await;
    ticker.abort();
    state.db.close().await;
    tracing::info!("stopped");
    result.map_err(|e| Error::io(&bind, e))
}

/// A server running on its own thread.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The handler state, for inspection.
    pub state: web::Data<AppState>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// `http://localhost:port` (a host name, so that browsers accept secure cookies).
    pub fn url(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }

    /// Stop gracefully and wait for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
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

/// Start the service described by `config` on its own thread (use port 0 for a free
/// port). Returns once it accepts connections.
pub fn start_in_thread(config: Config) -> Result<RunningServer> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("dp3t-authority".into())
        .spawn(move || {
            let sys = actix_web::rt::System::new();
            sys.block_on(async move {
                let bind = config.bind.clone();
                let started = async {
                    let state = prepare(config).await?;
                    let listener = TcpListener::bind(&bind).map_err(|e| Error::io(&bind, e))?;
                    let addr = listener.local_addr().map_err(|e| Error::io(&bind, e))?;
                    let server =
                        run(state.clone(), listener, false).map_err(|e| Error::io(&bind, e))?;
                    Ok::<_, Error>((state, addr, server))
                }
                .await;
                match started {
                    Ok((state, addr, server)) => {
                        let ticker = actix_web::rt::spawn(ticker(state.clone()));
                        let _ = tx.send(Ok((addr, server.handle(), state.clone())));
                        let _ = server.await;
                        ticker.abort();
                        state.db.close().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| Error::io("server thread", e))?;
    let (addr, handle, state) = rx
        .recv()
        .map_err(|_| Error::Invalid("the server thread ended before starting".into()))??;
    Ok(RunningServer {
        addr,
        state,
        handle,
        thread: Some(thread),
    })
}
