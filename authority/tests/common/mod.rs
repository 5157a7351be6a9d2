//! Test harness: the real authority on a free 127.0.0.1 port, in-process on its own
//! thread, over SQLite (always) or PostgreSQL (when `TEST_DATABASE_URL` is set; each test
//! gets a fresh database, dropped afterwards); optionally the real key server next to it,
//! trusting only the authority's public key. Spoken to over HTTP with reqwest.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use authority::config::Config;
use authority::server::{start_in_thread, RunningServer};
use base64::Engine as _;
use sqlx::Connection as _;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `mod $name { sqlite(), postgres() }` for an `async fn $name(Backend)`.
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

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

pub fn now() -> u64 {
    authority::unix_now()
}

pub fn today() -> u32 {
    authority::date::day_of(now())
}

pub fn iso(day: u32) -> String {
    authority::date::format_iso_date(day)
}

/// Test defaults: a short constant delay, plain cookies (reqwest's tests speak HTTP).
pub fn test_config(data_dir: PathBuf) -> Config {
    Config {
        data_dir,
        bind: "127.0.0.1:0".into(),
        onset_delay_ms: 200,
        workers: Some(2),
        cookie_secure: false,
        ..Config::default()
    }
}

async fn fresh_pg_database() -> (String, String, String) {
    let admin_url = std::env::var("TEST_DATABASE_URL").unwrap();
    let name = unique("dp3t_auth_t");
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

pub struct Harness {
    pub server: Option<RunningServer>,
    pub url: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pub config: Config,
    pg_database: Option<(String, String)>,
}

impl Harness {
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Harness {
        let data_dir = std::env::temp_dir().join(unique("dp3t-authority-test"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut config = test_config(data_dir.clone());
        let mut pg_database = None;
        if backend == Backend::Postgres {
            let (url, admin, name) = fresh_pg_database().await;
            config.database_url = Some(url);
            pg_database = Some((admin, name));
        }
        tweak(&mut config);
        let c = config.clone();
        let server = tokio::task::spawn_blocking(move || start_in_thread(c))
            .await
            .unwrap()
            .unwrap();
        Harness {
            url: format!("http://127.0.0.1:{}", server.addr.port()),
            server: Some(server),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            data_dir,
            config,
            pg_database,
        }
    }

    pub fn state(&self) -> &authority::api::AppState {
        &self.server.as_ref().unwrap().state
    }

    pub fn public_key_path(&self) -> PathBuf {
        self.data_dir.join(authority::token::PUBLIC_KEY_FILE)
    }

    pub async fn finish(mut self) {
        if let Some(s) = self.server.take() {
            tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
        }
        if let Some((admin, name)) = self.pg_database.take() {
            // `WITH (FORCE)` is refused while an autovacuum worker is in the database (the
            // test role may not signal it); a plain drop stops such workers itself.
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            let mut dropped = Err(None);
            for force in [" WITH (FORCE)", ""].into_iter().cycle().take(20) {
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\"{force}");
                dropped = sqlx::query(&sql).execute(&mut conn).await.map_err(Some);
                if dropped.is_ok() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            dropped.unwrap();
            conn.close().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// `POST /v1/onset`.
    pub async fn exchange(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/onset", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Create a code directly through the state (as the staff page does).
    pub async fn create_code(&self, onset_day: u32) -> authority::codes::Code {
        self.state()
            .create_codes(onset_day, 1, "staff:test", now())
            .await
            .unwrap()
            .pop()
            .unwrap()
    }

    /// Create a staff account; returns its TOTP secret.
    pub async fn add_staff(&self, name: &str, password: &str) -> Vec<u8> {
        authority::staff::add_account(&self.state().db, name, password, now())
            .await
            .unwrap()
            .totp_secret
    }
}

/// The claims of a JWT, without verification.
pub fn claims(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

// ---- the key server next to it ----

pub struct KeyServer {
    pub server: Option<backend::server::RunningServer>,
    pub url: String,
    pub data_dir: PathBuf,
    pub public_key: dp3t_core::signing::PublicKey,
    pub client: reqwest::Client,
}

impl KeyServer {
    /// The real key server on a free port, trusting only `ha_public_key` (the dev HA key
    /// is switched off), with 2-second release buckets and no padding.
    pub async fn start(ha_public_key: PathBuf) -> KeyServer {
        let data_dir = std::env::temp_dir().join(unique("dp3t-keyserver-test"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let config = backend::config::Config {
            data_dir: data_dir.clone(),
            bind: "127.0.0.1:0".into(),
            metrics_bind: "127.0.0.1:0".into(),
            release_bucket_seconds: 2,
            upload_delay_ms: 50,
            export_min_keys: 0,
            workers: Some(2),
            db_max_connections: 4,
            ha_public_keys: vec![ha_public_key],
            trust_dev_ha_key: false,
            ..backend::config::Config::default()
        };
        let server = tokio::task::spawn_blocking(move || backend::server::start_in_thread(config))
            .await
            .unwrap()
            .unwrap();
        let public_key =
            backend::keys::read_public_key(&data_dir.join("signing-key.pub.pem")).unwrap();
        KeyServer {
            url: server.url(),
            server: Some(server),
            data_dir,
            public_key,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub async fn finish(mut self) {
        if let Some(s) = self.server.take() {
            tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Upload `real` (padded to 30 keys with fake ones) with `token`; the status.
    pub async fn upload(&self, token: &str, real: &[[u8; 16]]) -> u16 {
        let key = |data: [u8; 16], fake: u8| {
            serde_json::json!({
                "keyData": base64::engine::general_purpose::STANDARD.encode(data),
                // The day before yesterday: yesterday's key is embargoed until 02:00 UTC.
                "rollingStartNumber": (today() - 2) * 144,
                "rollingPeriod": 144,
                "transmissionRiskLevel": 0,
                "fake": fake,
            })
        };
        let mut keys: Vec<_> = real.iter().map(|k| key(*k, 0)).collect();
        while keys.len() < 30 {
            keys.push(key(rand::random(), 1));
        }
        self.client
            .post(format!("{}/v2/gaen/exposed", self.url))
            .header("authorization", format!("Bearer {token}"))
            .json(&serde_json::json!({"gaenKeys": keys, "withFederationGateway": false}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// GAEN v1 upload (`POST /v1/gaen/exposed`, 14 keys, `delayedKeyDate` of today):
    /// the status and the next-day token the key server answers with.
    pub async fn upload_v1(&self, token: &str, real: &[[u8; 16]]) -> (u16, Option<String>) {
        // The day before yesterday: yesterday's key is embargoed until 02:00 UTC.
        let mut keys: Vec<_> = real.iter().map(|k| gaen_key(*k, today() - 2, 0)).collect();
        while keys.len() < 14 {
            keys.push(gaen_key(rand::random(), today() - 2, 1));
        }
        let resp = self
            .client
            .post(format!("{}/v1/gaen/exposed", self.url))
            .header("authorization", format!("Bearer {token}"))
            .json(
                &serde_json::json!({"gaenKeys": keys, "delayedKeyDate": today() * 144, "fake": 0}),
            )
            .send()
            .await
            .unwrap();
        let next_day = resp
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status().as_u16(), next_day)
    }

    /// GAEN v1 next-day upload of today's key with the next-day `Authorization` value.
    pub async fn upload_next_day(&self, authorization: &str, key: [u8; 16]) -> u16 {
        self.client
            .post(format!("{}/v1/gaen/exposednextday", self.url))
            .header("authorization", authorization)
            .json(&serde_json::json!({"delayedKey": gaen_key(key, today(), 0), "fake": 0}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Download the export until it holds all of `expected` (verified with the key
    /// server's public key); bounded by 20 s. Returns the keys found.
    pub async fn wait_for_keys(&self, expected: &BTreeSet<[u8; 16]>) -> BTreeSet<[u8; 16]> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let resp = self
                .client
                .get(format!("{}/v2/gaen/exposed", self.url))
                .send()
                .await
                .unwrap();
            if resp.status().as_u16() == 200 {
                let body = resp.bytes().await.unwrap();
                let batch =
                    dp3t_core::export::read_verified_export(&body, &self.public_key).unwrap();
                let have: BTreeSet<[u8; 16]> = batch.keys.iter().map(|k| k.key_data).collect();
                if expected.is_subset(&have) {
                    return have;
                }
            }
            assert!(Instant::now() < deadline, "keys not published within 20 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A key in the JSON of the GAEN upload APIs.
pub fn gaen_key(data: [u8; 16], day: u32, fake: u8) -> serde_json::Value {
    serde_json::json!({
        "keyData": base64::engine::general_purpose::STANDARD.encode(data),
        "rollingStartNumber": day * 144,
        "rollingPeriod": 144,
        "transmissionRiskLevel": 0,
        "fake": fake,
    })
}

// ---- staff page over plain HTTP ----

/// A cookie jar of one browser-like client (reqwest's own jar would need a feature).
#[derive(Default, Debug, Clone)]
pub struct Jar(pub Vec<(String, String)>);

impl Jar {
    pub fn take(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (kv, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            self.0.retain(|(name, _)| name != k);
            if !val.is_empty() && !v.contains("Max-Age=0") {
                self.0.push((k.to_owned(), val.to_owned()));
            }
        }
    }

    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The value of `<input … name="csrf" value="…">` in a page.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The text of the element with `id`.
pub fn text_of_id(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].to_owned())
}

pub struct Staff<'a> {
    pub h: &'a Harness,
    pub jar: Jar,
}

impl<'a> Staff<'a> {
    pub fn new(h: &'a Harness) -> Staff<'a> {
        Staff {
            h,
            jar: Jar::default(),
        }
    }

    pub async fn get(&mut self, path: &str) -> (u16, String) {
        let resp = self
            .h
            .client
            .get(format!("{}{path}", self.h.url))
            .header("cookie", self.jar.header())
            .send()
            .await
            .unwrap();
        self.jar.take(&resp);
        let status = resp.status().as_u16();
        let loc = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let body = resp.text().await.unwrap();
        (status, loc.unwrap_or(body))
    }

    /// POST a form; for redirects the body returned is the `Location`.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        self.post_with(path, form, &[]).await
    }

    pub async fn post_with(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut req = self
            .h
            .client
            .post(format!("{}{path}", self.h.url))
            .header("cookie", self.jar.header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        self.jar.take(&resp);
        let status = resp.status().as_u16();
        let loc = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let body = resp.text().await.unwrap();
        (status, loc.unwrap_or(body))
    }

    /// Sign in with password and TOTP; panics on failure.
    pub async fn sign_in(&mut self, name: &str, password: &str, secret: &[u8]) {
        let (s, page) = self.get("/staff/login").await;
        assert_eq!(s, 200);
        let csrf = csrf_of(&page);
        let (s, loc) = self
            .post(
                "/staff/login",
                &[("username", name), ("password", password), ("csrf", &csrf)],
            )
            .await;
        assert_eq!((s, loc.as_str()), (303, "/staff/totp"));
        let (s, page) = self.get("/staff/totp").await;
        assert_eq!(s, 200);
        let csrf = csrf_of(&page);
        let code = authority::totp::code_at(secret, now());
        let (s, loc) = self
            .post("/staff/totp", &[("totp", &code), ("csrf", &csrf)])
            .await;
        assert_eq!((s, loc.as_str()), (303, "/staff"));
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
