//! Configuration: built-in defaults, then an optional TOML file, then environment
//! variables (`DP3T_AUTHORITY_…`), each layer overriding the one before.
//!
//! The defaults run out of the box on a laptop: SQLite and key files in
//! `./dp3t-authority-data`, port 8081 on the loopback interface. Every setting has one
//! environment variable and one TOML key of the same name in lower case without the
//! prefix; `authority/README.md` lists them. Values are checked once, here.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// Oldest onset a code may carry, in days before today (PROTOCOL: keys older than the
/// 14-day retention are never published).
pub const MAX_ONSET_DAYS_BACK: u32 = 14;

/// A secret setting: `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(…)")
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> SecretString {
        SecretString(s.to_owned())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for the SQLite database and the key files (`DP3T_AUTHORITY_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Database URL (`DP3T_AUTHORITY_DATABASE_URL`); `None` means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Listen address (`DP3T_AUTHORITY_BIND`), `127.0.0.1:8081` by default.
    pub bind: String,
    /// Hours a new code stays valid (`DP3T_AUTHORITY_CODE_VALIDITY_HOURS`), 1..=168.
    pub code_validity_hours: u32,
    /// Lifetime of an upload token in minutes (`DP3T_AUTHORITY_TOKEN_VALIDITY_MINUTES`),
    /// 1..=60 (the key server refuses longer ones).
    pub token_validity_minutes: u32,
    /// Every `/v1/onset` answer — success, fake, wrong code, limited — leaves after this
    /// many milliseconds (`DP3T_AUTHORITY_ONSET_DELAY_MS`).
    pub onset_delay_ms: u64,
    /// `iss` claim of the tokens (`DP3T_AUTHORITY_ISSUER`).
    pub issuer: String,
    /// Failed exchanges one client address may make per hour
    /// (`DP3T_AUTHORITY_CLIENT_FAILURES_PER_HOUR`).
    pub client_failures_per_hour: u32,
    /// Largest chance per UTC day that guessing finds a live code, summed over all
    /// clients (`DP3T_AUTHORITY_MAX_DAILY_GUESS_RISK`); see [`crate::ratelimit`].
    pub max_daily_guess_risk: f64,
    /// Mark cookies `Secure` and use the `__Host-` prefix (`DP3T_AUTHORITY_COOKIE_SECURE`).
    /// Browsers accept secure cookies from `http://localhost`; turn this off only for a
    /// plain-HTTP test on another host name.
    pub cookie_secure: bool,
    /// Minutes a staff session lasts (`DP3T_AUTHORITY_SESSION_MINUTES`).
    pub session_minutes: u32,
    /// Take the client address from `X-Forwarded-For` (`DP3T_AUTHORITY_TRUST_FORWARDED_FOR`):
    /// only behind a reverse proxy that sets it.
    pub trust_forwarded_for: bool,
    /// HTTP worker threads (`DP3T_AUTHORITY_WORKERS`); `None` = one per CPU core.
    pub workers: Option<usize>,
    /// Log format (`DP3T_AUTHORITY_LOG_FORMAT`: `text` or `json`).
    pub log_format: LogFormat,
    /// OpenID Connect issuer URL (`DP3T_AUTHORITY_OIDC_ISSUER`); unset: no OIDC sign-in.
    pub oidc_issuer: Option<String>,
    /// Client id at the provider (`DP3T_AUTHORITY_OIDC_CLIENT_ID`).
    pub oidc_client_id: Option<String>,
    /// Client secret, for confidential clients (`DP3T_AUTHORITY_OIDC_CLIENT_SECRET`).
    pub oidc_client_secret: Option<SecretString>,
    /// The callback URL registered at the provider, ending in `/staff/oidc/callback`
    /// (`DP3T_AUTHORITY_OIDC_REDIRECT_URL`).
    pub oidc_redirect_url: Option<String>,
    /// Provider name on the sign-in button (`DP3T_AUTHORITY_OIDC_DISPLAY_NAME`).
    pub oidc_display_name: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./dp3t-authority-data"),
            database_url: None,
            bind: "127.0.0.1:8081".to_owned(),
            code_validity_hours: 24,
            token_validity_minutes: 30,
            onset_delay_ms: 1000,
            issuer: "dp3t-authority".to_owned(),
            client_failures_per_hour: 10,
            max_daily_guess_risk: 1e-6,
            cookie_secure: true,
            session_minutes: 480,
            trust_forwarded_for: false,
            workers: None,
            log_format: LogFormat::Text,
            oidc_issuer: None,
            oidc_client_id: None,
            oidc_client_secret: None,
            oidc_redirect_url: None,
            oidc_display_name: "single sign-on".to_owned(),
        }
    }
}

/// The TOML file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    bind: Option<String>,
    code_validity_hours: Option<u32>,
    token_validity_minutes: Option<u32>,
    onset_delay_ms: Option<u64>,
    issuer: Option<String>,
    client_failures_per_hour: Option<u32>,
    max_daily_guess_risk: Option<f64>,
    cookie_secure: Option<bool>,
    session_minutes: Option<u32>,
    trust_forwarded_for: Option<bool>,
    workers: Option<usize>,
    log_format: Option<LogFormat>,
    oidc_issuer: Option<String>,
    oidc_client_id: Option<String>,
    oidc_client_secret: Option<SecretString>,
    oidc_redirect_url: Option<String>,
    oidc_display_name: Option<String>,
}

fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T> {
    v.trim()
        .parse()
        .map_err(|_| Error::Config(format!("{name}: {v:?} is not valid")))
}

fn boolean(name: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::Config(format!("{name}: {v:?} is not a boolean"))),
    }
}

impl Config {
    /// Defaults, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        Self::load_with(file, |k| std::env::var(k).ok())
    }

    /// Like [`Config::load`] with an explicit environment lookup (used by tests).
    pub fn load_with(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut c = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let f: FileConfig = toml::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            c.apply_file(f);
        }
        c.apply_env(env)?;
        c.validate()?;
        Ok(c)
    }

    fn apply_file(&mut self, f: FileConfig) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = f.$field { self.$field = v; } )* };
        }
        set!(
            data_dir,
            bind,
            code_validity_hours,
            token_validity_minutes,
            onset_delay_ms,
            issuer,
            client_failures_per_hour,
            max_daily_guess_risk,
            cookie_secure,
            session_minutes,
            trust_forwarded_for,
            log_format,
            oidc_display_name
        );
        for (field, value) in [
            (&mut self.oidc_issuer, f.oidc_issuer),
            (&mut self.oidc_client_id, f.oidc_client_id),
            (&mut self.oidc_redirect_url, f.oidc_redirect_url),
        ] {
            if value.is_some() {
                *field = value;
            }
        }
        if f.oidc_client_secret.is_some() {
            self.oidc_client_secret = f.oidc_client_secret;
        }
        if f.database_url.is_some() {
            self.database_url = f.database_url;
        }
        if f.workers.is_some() {
            self.workers = f.workers;
        }
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<()> {
        let get = |name: &str| {
            env(&format!("DP3T_AUTHORITY_{name}"))
                .filter(|v| !v.trim().is_empty())
                .map(|v| (format!("DP3T_AUTHORITY_{name}"), v))
        };
        if let Some((_, v)) = get("DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some((_, v)) = get("DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some((_, v)) = get("BIND") {
            self.bind = v;
        }
        if let Some((n, v)) = get("CODE_VALIDITY_HOURS") {
            self.code_validity_hours = parse(&n, &v)?;
        }
        if let Some((n, v)) = get("TOKEN_VALIDITY_MINUTES") {
            self.token_validity_minutes = parse(&n, &v)?;
        }
        if let Some((n, v)) = get("ONSET_DELAY_MS") {
            self.onset_delay_ms = parse(&n, &v)?;
        }
        if let Some((_, v)) = get("ISSUER") {
            self.issuer = v;
        }
        if let Some((n, v)) = get("CLIENT_FAILURES_PER_HOUR") {
            self.client_failures_per_hour = parse(&n, &v)?;
        }
        if let Some((n, v)) = get("MAX_DAILY_GUESS_RISK") {
            self.max_daily_guess_risk = parse(&n, &v)?;
        }
        if let Some((n, v)) = get("COOKIE_SECURE") {
            self.cookie_secure = boolean(&n, &v)?;
        }
        if let Some((n, v)) = get("SESSION_MINUTES") {
            self.session_minutes = parse(&n, &v)?;
        }
        if let Some((n, v)) = get("TRUST_FORWARDED_FOR") {
            self.trust_forwarded_for = boolean(&n, &v)?;
        }
        if let Some((n, v)) = get("WORKERS") {
            self.workers = Some(parse(&n, &v)?);
        }
        if let Some((_, v)) = get("OIDC_ISSUER") {
            self.oidc_issuer = Some(v);
        }
        if let Some((_, v)) = get("OIDC_CLIENT_ID") {
            self.oidc_client_id = Some(v);
        }
        if let Some((_, v)) = get("OIDC_CLIENT_SECRET") {
            self.oidc_client_secret = Some(SecretString(v));
        }
        if let Some((_, v)) = get("OIDC_REDIRECT_URL") {
            self.oidc_redirect_url = Some(v);
        }
        if let Some((_, v)) = get("OIDC_DISPLAY_NAME") {
            self.oidc_display_name = v;
        }
        if let Some((n, v)) = get("LOG_FORMAT") {
            self.log_format = match v.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(Error::Config(format!("{n}: {v:?} must be text or json"))),
            };
        }
        Ok(())
    }

    /// Check ranges; called by [`Config::load`].
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        if !(1..=168).contains(&self.code_validity_hours) {
            return bad("code_validity_hours must be in 1..=168");
        }
        if !(1..=60).contains(&self.token_validity_minutes) {
            return bad("token_validity_minutes must be in 1..=60 (the key server's limit)");
        }
        if self.onset_delay_ms > 30_000 {
            return bad("onset_delay_ms must be at most 30000");
        }
        if self.issuer.is_empty() || self.issuer.len() > 64 {
            return bad("issuer must be 1..=64 characters");
        }
        if self.client_failures_per_hour == 0 {
            return bad("client_failures_per_hour must be at least 1");
        }
        if !(self.max_daily_guess_risk > 0.0 && self.max_daily_guess_risk <= 1e-3) {
            return bad("max_daily_guess_risk must be in (0, 0.001]");
        }
        if !(5..=24 * 60).contains(&self.session_minutes) {
            return bad("session_minutes must be in 5..=1440");
        }
        if self.workers == Some(0) {
            return bad("workers must be at least 1");
        }
        if self.oidc_issuer.is_some()
            && (self.oidc_client_id.is_none() || self.oidc_redirect_url.is_none())
        {
            return bad("oidc_issuer needs oidc_client_id and oidc_redirect_url");
        }
        if self.oidc_display_name.is_empty() || self.oidc_display_name.len() > 64 {
            return bad("oidc_display_name must be 1..=64 characters");
        }
        Ok(())
    }

    /// The OpenID Connect settings, when an issuer is configured.
    pub fn oidc(&self) -> Option<crate::oidc::OidcSettings> {
        Some(crate::oidc::OidcSettings {
            issuer: self.oidc_issuer.clone()?,
            client_id: self.oidc_client_id.clone()?,
            client_secret: self.oidc_client_secret.as_ref().map(|s| s.0.clone()),
            redirect_url: self.oidc_redirect_url.clone()?,
            display_name: self.oidc_display_name.clone(),
        })
    }

    /// The database URL actually used: the configured one or SQLite in the data dir.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("authority.db").display()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |k| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone())
    }

    #[test]
    fn defaults_are_valid_and_env_overrides_them() {
        let c = Config::load_with(None, env_of(&[])).unwrap();
        assert_eq!(c.code_validity_hours, 24);
        assert!(c.cookie_secure);
        let c = Config::load_with(
            None,
            env_of(&[
                ("DP3T_AUTHORITY_DATABASE_URL", "postgres://x/y"),
                ("DP3T_AUTHORITY_CODE_VALIDITY_HOURS", "48"),
                ("DP3T_AUTHORITY_COOKIE_SECURE", "off"),
            ]),
        )
        .unwrap();
        assert_eq!(c.effective_database_url(), "postgres://x/y");
        assert_eq!(c.code_validity_hours, 48);
        assert!(!c.cookie_secure);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for (k, v) in [
            ("DP3T_AUTHORITY_TOKEN_VALIDITY_MINUTES", "61"),
            ("DP3T_AUTHORITY_CODE_VALIDITY_HOURS", "0"),
            ("DP3T_AUTHORITY_MAX_DAILY_GUESS_RISK", "0.5"),
            ("DP3T_AUTHORITY_COOKIE_SECURE", "maybe"),
            ("DP3T_AUTHORITY_CLIENT_FAILURES_PER_HOUR", "x"),
            ("DP3T_AUTHORITY_OIDC_ISSUER", "https://idp.example"),
        ] {
            assert!(
                Config::load_with(None, env_of(&[(k, v)])).is_err(),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn the_file_layer_is_read_and_unknown_keys_refused() {
        let dir = std::env::temp_dir().join(format!("dp3t-auth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.toml");
        std::fs::write(&p, "bind = \"0.0.0.0:9\"\nsession_minutes = 60\n").unwrap();
        let c = Config::load_with(Some(&p), env_of(&[])).unwrap();
        assert_eq!((c.bind.as_str(), c.session_minutes), ("0.0.0.0:9", 60));
        std::fs::write(&p, "colour = 1\n").unwrap();
        assert!(Config::load_with(Some(&p), env_of(&[])).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
