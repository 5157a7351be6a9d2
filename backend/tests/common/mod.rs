//! Test harness: the real server on a free 127.0.0.1 port, in-process on its own thread,
//! over SQLite (always) or PostgreSQL (when `TEST_DATABASE_URL` is set; each test gets a
//! fresh database that is dropped afterwards), spoken to over HTTP with reqwest.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backend::config::Config;
use backend::server::{start_in_thread, RunningServer};
use base64::Engine as _;
use dp3t_core::export::{read_verified_export, ExportBatch};
use dp3t_core::signing::{verify_response, PublicKey};
use dp3t_core::time::UnixTime;
use sqlx::Connection as _;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generate `mod $name { sqlite(), postgres() }` for an `async fn $name(Backend)`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if std::env::var("TEST_DATABASE_URL").map_or(true, |u| u.is_empty()) {
                    eprintln!("TEST_DATABASE_URL not set: PostgreSQL variant skipped");
                    return;
                }
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )*};
}

pub struct Harness {
    pub server: Option<RunningServer>,
    pub url: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pub config: Config,
    pub public_key: PublicKey,
    pub ha_pem: String,
    pg_database: Option<(String, String)>,
    /// A second node ([`Harness::another_node`]) leaves the data dir to the first.
    owns_data_dir: bool,
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// Test defaults: 2-second buckets, 50 ms upload delay, no padding.
pub fn test_config(data_dir: PathBuf) -> Config {
    Config {
        data_dir,
        bind: "127.0.0.1:0".into(),
        metrics_bind: "127.0.0.1:0".into(),
        release_bucket_seconds: 2,
        upload_delay_ms: 50,
        // Generous: the tests share two cores with their own load generators.
        request_timeout_ms: 120_000,
        export_min_keys: 0,
        workers: Some(2),
        db_max_connections: 8,
        ..Config::default()
    }
}

/// A new, empty PostgreSQL database owned by the role of `TEST_DATABASE_URL`: its URL, the
/// admin URL and its name.
pub async fn fresh_pg_database() -> (String, String, String) {
    let admin_url = std::env::var("TEST_DATABASE_URL").unwrap();
    let name = unique("dp3t_t");
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (base, params) = match admin_url.split_once('?') {
        Some((b, p)) => (b.to_owned(), format!("?{p}")),
        None => (admin_url.clone(), String::new()),
    };
    let prefix = base.rsplit_once('/').map(|(p, _)| p.to_owned()).unwrap();
    (format!("{prefix}/{name}{params}"), admin_url, name)
}

/// Drop the database `name` made by [`fresh_pg_database`], connections and all.
///
/// `WITH (FORCE)` refuses (42501, "must be a member of the role whose process is being
/// terminated") when an autovacuum worker happens to be in the database: the worker has
/// no role the test role is a member of. A plain `DROP DATABASE` stops autovacuum
/// workers itself, so it is the second try; both are retried for a few seconds.
pub async fn drop_pg_database(admin_url: &str, name: &str) {
    let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let mut last = None;
    for attempt in 0..20 {
        let force = if attempt % 2 == 0 {
            " WITH (FORCE)"
        } else {
            ""
        };
        match sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\"{force}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => {
                conn.close().await.unwrap();
                return;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("cannot drop test database {name}: {last:?}");
}

impl Harness {
    /// Start a server on `backend` with the test config, adjusted by `tweak`.
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Harness {
        let data_dir = std::env::temp_dir().join(unique("dp3t-test"));
        std::fs::create_dir_all(&data_dir).unwrap();
        backend::keys::keygen(&data_dir).unwrap();
        let mut config = test_config(data_dir.clone());
        let mut pg_database = None;
        if backend == Backend::Postgres {
            let (url, admin, name) = fresh_pg_database().await;
            config.database_url = Some(url);
            pg_database = Some((admin, name));
        }
        tweak(&mut config);
        Self::start_with(config, pg_database).await
    }

    async fn start_with(config: Config, pg_database: Option<(String, String)>) -> Harness {
        let data_dir = config.data_dir.clone();
        let c = config.clone();
        let server = tokio::task::spawn_blocking(move || start_in_thread(c))
            .await
            .unwrap()
            .unwrap();
        let public_key =
            backend::keys::read_public_key(&data_dir.join("signing-key.pub.pem")).unwrap();
        let ha_pem = std::fs::read_to_string(data_dir.join("ha-dev-key.pem")).unwrap();
        Harness {
            url: server.url(),
            server: Some(server),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            data_dir,
            config,
            public_key,
            ha_pem,
            pg_database,
            owns_data_dir: true,
        }
    }

    /// A second server node on the same data dir and database (a deployment of two
    /// instances). Finish it before the first.
    pub async fn another_node(&self) -> Harness {
        let mut node = Self::start_with(self.config.clone(), None).await;
        node.owns_data_dir = false;
        node
    }

    /// Stop the server and start a new one on the same data dir and database.
    pub async fn restart(mut self) -> Harness {
        self.stop_server().await;
        Self::start_with(self.config, self.pg_database).await
    }

    async fn stop_server(&mut self) {
        if let Some(s) = self.server.take() {
            tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
        }
    }

    /// Stop the server, drop the PostgreSQL database, remove the data dir.
    pub async fn finish(mut self) {
        self.stop_server().await;
        if let Some((admin, name)) = self.pg_database.take() {
            drop_pg_database(&admin, &name).await;
        }
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }

    pub fn state(&self) -> &backend::api::AppState {
        &self.server.as_ref().unwrap().state
    }

    pub async fn key_rows(&self) -> u64 {
        self.state().db.count_keys().await.unwrap()
    }

    /// A valid dev token.
    pub fn token(&self, onset_days_ago: u32, fake: bool) -> String {
        backend::keys::mint_dev_token(
            &self.ha_pem,
            &backend::keys::DevTokenRequest {
                onset: dp3t_core::time::Day(today() - onset_days_ago),
                fake,
                ttl_minutes: 30,
                now: now(),
            },
        )
        .unwrap()
    }

    /// Sign `claims` as an ES256 token with the development HA key.
    pub fn sign_claims(&self, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(self.ha_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// `POST` `body` to `path`, with a bearer `token` and a `content_type` when given.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.url)).body(body);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send().await.unwrap()
    }

    pub async fn upload_raw(
        &self,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.post("/v2/gaen/exposed", token, content_type, body)
            .await
    }

    pub async fn upload(&self, token: &str, keys: &[UploadKey]) -> reqwest::Response {
        self.upload_raw(Some(token), Some("application/json"), upload_body(keys))
            .await
    }

    pub async fn download(&self, tag: Option<u64>) -> reqwest::Response {
        let url = match tag {
            Some(t) => format!("{}/v2/gaen/exposed?lastKeyBundleTag={t}", self.url),
            None => format!("{}/v2/gaen/exposed", self.url),
        };
        self.client.get(url).send().await.unwrap()
    }

    /// The text of `GET /metrics`, scraped from the metrics listener (not the public port).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.server.as_ref().unwrap().metrics_url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Poll the download for `tag` until it is a 200 whose keys include all of `expected`;
    /// bounded by 20 s.
    pub async fn wait_for_keys(&self, tag: Option<u64>, expected: &BTreeSet<[u8; 16]>) -> Download {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let d = Download::fetch(self, tag).await;
            if let Some(batch) = &d.batch {
                let have: BTreeSet<[u8; 16]> = batch.keys.iter().map(|k| k.key_data).collect();
                if expected.is_subset(&have) {
                    return d;
                }
            }
            assert!(Instant::now() < deadline, "keys not released within 20 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A download, verified: zip signature with dp3t-core, `Signature` header with
/// `verify_response`.
pub struct Download {
    pub status: u16,
    pub tag: u64,
    pub signature: String,
    pub cache_control: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub batch: Option<ExportBatch>,
}

impl Download {
    pub async fn fetch(h: &Harness, tag: Option<u64>) -> Download {
        let resp = h.download(tag).await;
        let status = resp.status().as_u16();
        assert!(status == 200 || status == 204, "download status {status}");
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let tag: u64 = header("x-key-bundle-tag").unwrap().parse().unwrap();
        let signature = header("signature").expect("Signature header");
        let cache_control = header("cache-control").unwrap();
        let content_type = header("content-type");
        let body = resp.bytes().await.unwrap().to_vec();
        let claims = verify_response(&body, &signature, &h.public_key, now()).unwrap();
        assert_eq!(claims.batch_release_time_ms, Some(tag));
        let batch = if status == 200 {
            let b = read_verified_export(&body, &h.public_key).unwrap();
            Some(b)
        } else {
            assert!(body.is_empty());
            None
        };
        Download {
            status,
            tag,
            signature,
            cache_control,
            content_type,
            body,
            batch,
        }
    }

    pub fn key_set(&self) -> BTreeSet<[u8; 16]> {
        self.batch
            .as_ref()
            .map(|b| b.keys.iter().map(|k| k.key_data).collect())
            .unwrap_or_default()
    }
}

/// A key as uploaded.
#[derive(Clone, Debug)]
pub struct UploadKey {
    pub key_data: [u8; 16],
    pub rolling_start_number: u32,
    pub rolling_period: u32,
    pub fake: u8,
}

/// The claims of a good real upload token with its onset `onset_days_ago` days ago.
pub fn claims(onset_days_ago: u32) -> serde_json::Value {
    let n = now().0;
    serde_json::json!({
        "scope": "exposed",
        "onset": dp3t_core::time::Day(today() - onset_days_ago).iso(),
        "fake": "0",
        "jti": format!("{:032x}", rand::random::<u128>()),
        "iat": n - 5,
        "exp": n + 600,
    })
}

pub fn now() -> UnixTime {
    backend::unix_now()
}

pub fn today() -> u32 {
    now().day().0
}

/// A real key of `days_ago` days ago with random data.
pub fn key_days_ago(days_ago: i64) -> UploadKey {
    UploadKey {
        key_data: rand::random(),
        rolling_start_number: ((i64::from(today()) - days_ago) * 144) as u32,
        rolling_period: 144,
        fake: 0,
    }
}

pub fn fake_key() -> UploadKey {
    UploadKey {
        fake: 1,
        ..key_days_ago(1)
    }
}

/// `real` padded to 30 keys with fake ones.
pub fn padded(real: &[UploadKey]) -> Vec<UploadKey> {
    let mut v = real.to_vec();
    while v.len() < 30 {
        v.push(fake_key());
    }
    v
}

pub fn key_json(k: &UploadKey) -> serde_json::Value {
    serde_json::json!({
        "keyData": base64::engine::general_purpose::STANDARD.encode(k.key_data),
        "rollingStartNumber": k.rolling_start_number,
        "rollingPeriod": k.rolling_period,
        "transmissionRiskLevel": 0,
        "fake": k.fake,
    })
}

pub fn upload_body(keys: &[UploadKey]) -> Vec<u8> {
    let keys: Vec<_> = keys.iter().map(key_json).collect();
    serde_json::to_vec(&serde_json::json!({"gaenKeys": keys, "withFederationGateway": false}))
        .unwrap()
}

pub fn set_of(keys: &[UploadKey]) -> BTreeSet<[u8; 16]> {
    keys.iter()
        .filter(|k| k.fake == 0)
        .map(|k| k.key_data)
        .collect()
}

/// Assert a JSON error answer with `status` and `code`.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status, "expected {status} {code}");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap(),
        "application/json"
    );
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], code, "{v}");
    assert!(!v["message"].as_str().unwrap().is_empty());
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("dp3t-db"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database of the given kind, migrated; its URL, the PostgreSQL database to drop
/// ([`drop_db`]) and the directory of the SQLite file.
pub async fn open_db(
    backend: Backend,
) -> (backend::db::Db, String, Option<(String, String)>, TempDir) {
    let dir = TempDir::new();
    let (url, pg) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.0.join("dp3t.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, admin, name) = fresh_pg_database().await;
            (url, Some((admin, name)))
        }
    };
    let db = backend::db::Db::connect(&url, 8).await.unwrap();
    db.migrate().await.unwrap();
    (db, url, pg, dir)
}

/// Drop the PostgreSQL database of [`open_db`], if any.
pub async fn drop_db(pg: Option<(String, String)>) {
    if let Some((admin, name)) = pg {
        drop_pg_database(&admin, &name).await;
    }
}

/// A key valid for the day from ENIN 2,000,000, received and published at `at` (seconds).
pub fn stored_key(key_data: [u8; 16], at: u64) -> backend::db::NewKey {
    backend::db::NewKey {
        key_data,
        rolling_start_number: 2_000_000,
        rolling_period: 144,
        transmission_risk_level: 0,
        days_since_onset: 0,
        received_at: at,
        publish_at: at,
    }
}

/// A GAEN upload of `keys` under the single-use digest `jti_hash`, for `Db::store_uploads`.
pub fn stored_upload(
    jti_hash: [u8; 32],
    keys: Vec<backend::db::NewKey>,
) -> backend::db::UploadRecord {
    backend::db::UploadRecord {
        jti_hash,
        expires_at: 4_000_000_000,
        body_digest: [7; 32],
        keys,
        design: None,
    }
}

/// The real `dp3t-backend serve` in its own process on SQLite in `data`, API and metrics on
/// free 127.0.0.1 ports, two workers, nothing read from the caller's `DP3T_DATABASE_URL`
/// or `DP3T_CONFIG`; `env` adds or overrides settings. Returns the child and the URL it
/// printed (`http://127.0.0.1:PORT`); what it prints next is read and dropped on a thread
/// (or its next line would kill it with SIGPIPE).
pub fn spawn_serve(data: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dp3t-backend"))
        .arg("serve")
        .env("DP3T_DATA_DIR", data)
        .env("DP3T_BIND", "127.0.0.1:0")
        .env("DP3T_METRICS_BIND", "127.0.0.1:0")
        .env("DP3T_WORKERS", "2")
        .env_remove("DP3T_DATABASE_URL")
        .env_remove("DP3T_CONFIG")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line.split_whitespace().last().unwrap().to_owned();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stdout.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    (child, url)
}
