//! Server configuration: built-in defaults, then an optional TOML file, then environment
//! variables, each layer overriding the one before.
//!
//! The defaults run out of the box on a laptop (SQLite in `./dp3t-data`, port 8080 on the
//! loopback interface, two-hour release buckets). Every setting has one environment
//! variable (`DP3T_…`) and one TOML key of the same name in lower case without the
//! prefix; `docs/OPERATIONS.md` lists them all. Values are checked once, here, so the rest
//! of the server can trust them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Largest accepted upload body in bytes (64 KiB).
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Complete, validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for the SQLite database and the key files (`DP3T_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Database URL (`DP3T_DATABASE_URL`); `None` means SQLite at `<data_dir>/dp3t.db`.
    pub database_url: Option<String>,
    /// Listen address (`DP3T_BIND`), `127.0.0.1:8080` by default.
    pub bind: String,
    /// Listen address of `/metrics` (`DP3T_METRICS_BIND`), `127.0.0.1:9090` by default;
    /// never the public port.
    pub metrics_bind: String,
    /// Apply pending migrations at start (`DP3T_MIGRATE`); when false, `serve` only checks
    /// that the schema is the expected one.
    pub migrate: bool,
    /// Release bucket length in seconds (`DP3T_RELEASE_BUCKET_SECONDS`), 1..=86400.
    pub release_bucket_seconds: u64,
    /// Constant answer time of uploads in milliseconds (`DP3T_UPLOAD_DELAY_MS`).
    pub upload_delay_ms: u64,
    /// Longest time for an upload's body to arrive, in milliseconds
    /// (`DP3T_REQUEST_TIMEOUT_MS`); the headers are bounded by the same value.
    pub request_timeout_ms: u64,
    /// Uploads read and processed at once; beyond it, `503` with `Retry-After`
    /// (`DP3T_MAX_UPLOADS_IN_FLIGHT`).
    pub max_uploads_in_flight: usize,
    /// Days keys, token records and buckets are kept (`DP3T_RETENTION_DAYS`).
    pub retention_days: u32,
    /// Non-empty buckets are padded with random keys up to this many (`DP3T_EXPORT_MIN_KEYS`).
    pub export_min_keys: usize,
    /// Region written into exports (`DP3T_REGION`).
    pub region: String,
    /// `verification_key_id` of the export signature (`DP3T_SIGNATURE_KEY_ID`).
    pub signature_key_id: String,
    /// `verification_key_version` of the export signature (`DP3T_SIGNATURE_KEY_VERSION`).
    pub signature_key_version: String,
    /// `iss` claim of response signatures (`DP3T_ISSUER`).
    pub issuer: String,
    /// Health-authority public key files (PEM, EC P-256 or RSA) (`DP3T_HA_PUBLIC_KEYS`,
    /// comma-separated).
    pub ha_public_keys: Vec<PathBuf>,
    /// Trust `<data_dir>/ha-dev-key.pub.pem` when present (`DP3T_TRUST_DEV_HA_KEY`).
    pub trust_dev_ha_key: bool,
    /// HTTP worker threads (`DP3T_WORKERS`); `None` = one per CPU core.
    pub workers: Option<usize>,
    /// Maximum database connections (`DP3T_DB_MAX_CONNECTIONS`).
    pub db_max_connections: u32,
    /// Log format (`DP3T_LOG_FORMAT`: `text` or `json`).
    pub log_format: LogFormat,
    /// Low-cost lists are padded with random keys up to this many
    /// (`DP3T_LOWCOST_MIN_KEYS`).
    pub lowcost_min_keys: usize,
    /// Unlinkable filters are padded with random entries up to this many
    /// (`DP3T_UNLINKABLE_MIN_ENTRIES`).
    pub unlinkable_min_entries: usize,
    /// Hybrid lists are padded with random window seeds up to this many
    /// (`DP3T_HYBRID_MIN_SEEDS`).
    pub hybrid_min_seeds: usize,
    /// Fingerprint bits `f` of unlinkable filters, 8..=64 (`DP3T_FILTER_FINGERPRINT_BITS`):
    /// false-positive rate at most `8 / 2^f` per lookup.
    pub filter_fingerprint_bits: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./dp3t-data"),
            database_url: None,
            bind: "127.0.0.1:8080".to_owned(),
            metrics_bind: "127.0.0.1:9090".to_owned(),
            migrate: true,
            release_bucket_seconds: 7200,
            upload_delay_ms: 1500,
            request_timeout_ms: 10_000,
            max_uploads_in_flight: 1024,
            retention_days: 14,
            export_min_keys: 100,
            region: "XX".to_owned(),
            signature_key_id: "dp3t-dev".to_owned(),
            signature_key_version: "v1".to_owned(),
            issuer: "dp3t".to_owned(),
            ha_public_keys: Vec::new(),
            trust_dev_ha_key: true,
            workers: None,
            db_max_connections: 16,
            log_format: LogFormat::Text,
            // About as many phone-days as GAEN's 100 keys: 100 uploads of one key,
            // 100 days of 96 epochs, 100 days of twelve 2-hour windows.
            lowcost_min_keys: 100,
            unlinkable_min_entries: 9_600,
            hybrid_min_seeds: 1_200,
            filter_fingerprint_bits: 48,
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
    metrics_bind: Option<String>,
    migrate: Option<bool>,
    release_bucket_seconds: Option<u64>,
    upload_delay_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_uploads_in_flight: Option<usize>,
    retention_days: Option<u32>,
    export_min_keys: Option<usize>,
    region: Option<String>,
    signature_key_id: Option<String>,
    signature_key_version: Option<String>,
    issuer: Option<String>,
    ha_public_keys: Option<Vec<PathBuf>>,
    trust_dev_ha_key: Option<bool>,
    workers: Option<usize>,
    db_max_connections: Option<u32>,
    log_format: Option<LogFormat>,
    lowcost_min_keys: Option<usize>,
    unlinkable_min_entries: Option<usize>,
    hybrid_min_seeds: Option<usize>,
    filter_fingerprint_bits: Option<u8>,
}

impl Config {
    /// Defaults, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        Self::load_with(file, |k| std::env::var(k).ok())
    }

    /// Like [`Config::load`] with an explicit environment lookup (used by tests).
    pub fn load_with(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let mut c = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let f: FileConfig = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
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
            metrics_bind,
            migrate,
            release_bucket_seconds,
            upload_delay_ms,
            request_timeout_ms,
            max_uploads_in_flight,
            retention_days,
            export_min_keys,
            region,
            signature_key_id,
            signature_key_version,
            issuer,
            ha_public_keys,
            trust_dev_ha_key,
            db_max_connections,
            log_format,
            lowcost_min_keys,
            unlinkable_min_entries,
            hybrid_min_seeds,
            filter_fingerprint_bits
        );
        if f.database_url.is_some() {
            self.database_url = f.database_url;
        }
        if f.workers.is_some() {
            self.workers = f.workers;
        }
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> anyhow::Result<T> {
            v.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}: {v:?} is not a valid number"))
        }
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("DP3T_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("DP3T_DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = get("DP3T_BIND") {
            self.bind = v;
        }
        if let Some(v) = get("DP3T_METRICS_BIND") {
            self.metrics_bind = v;
        }
        if let Some(v) = get("DP3T_RELEASE_BUCKET_SECONDS") {
            self.release_bucket_seconds = num("DP3T_RELEASE_BUCKET_SECONDS", &v)?;
        }
        if let Some(v) = get("DP3T_UPLOAD_DELAY_MS") {
            self.upload_delay_ms = num("DP3T_UPLOAD_DELAY_MS", &v)?;
        }
        if let Some(v) = get("DP3T_REQUEST_TIMEOUT_MS") {
            self.request_timeout_ms = num("DP3T_REQUEST_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = get("DP3T_MAX_UPLOADS_IN_FLIGHT") {
            self.max_uploads_in_flight = num("DP3T_MAX_UPLOADS_IN_FLIGHT", &v)?;
        }
        if let Some(v) = get("DP3T_RETENTION_DAYS") {
            self.retention_days = num("DP3T_RETENTION_DAYS", &v)?;
        }
        if let Some(v) = get("DP3T_EXPORT_MIN_KEYS") {
            self.export_min_keys = num("DP3T_EXPORT_MIN_KEYS", &v)?;
        }
        if let Some(v) = get("DP3T_REGION") {
            self.region = v;
        }
        if let Some(v) = get("DP3T_SIGNATURE_KEY_ID") {
            self.signature_key_id = v;
        }
        if let Some(v) = get("DP3T_SIGNATURE_KEY_VERSION") {
            self.signature_key_version = v;
        }
        if let Some(v) = get("DP3T_ISSUER") {
            self.issuer = v;
        }
        if let Some(v) = get("DP3T_HA_PUBLIC_KEYS") {
            self.ha_public_keys = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect();
        }
        if let Some(v) = get("DP3T_MIGRATE") {
            self.migrate = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => bail!("DP3T_MIGRATE: {v:?} is not a boolean"),
            };
        }
        if let Some(v) = get("DP3T_TRUST_DEV_HA_KEY") {
            self.trust_dev_ha_key = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => bail!("DP3T_TRUST_DEV_HA_KEY: {v:?} is not a boolean"),
            };
        }
        if let Some(v) = get("DP3T_WORKERS") {
            self.workers = Some(num("DP3T_WORKERS", &v)?);
        }
        if let Some(v) = get("DP3T_DB_MAX_CONNECTIONS") {
            self.db_max_connections = num("DP3T_DB_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = get("DP3T_LOWCOST_MIN_KEYS") {
            self.lowcost_min_keys = num("DP3T_LOWCOST_MIN_KEYS", &v)?;
        }
        if let Some(v) = get("DP3T_UNLINKABLE_MIN_ENTRIES") {
            self.unlinkable_min_entries = num("DP3T_UNLINKABLE_MIN_ENTRIES", &v)?;
        }
        if let Some(v) = get("DP3T_HYBRID_MIN_SEEDS") {
            self.hybrid_min_seeds = num("DP3T_HYBRID_MIN_SEEDS", &v)?;
        }
        if let Some(v) = get("DP3T_FILTER_FINGERPRINT_BITS") {
            self.filter_fingerprint_bits = num("DP3T_FILTER_FINGERPRINT_BITS", &v)?;
        }
        if let Some(v) = get("DP3T_LOG_FORMAT") {
            self.log_format = match v.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => bail!("DP3T_LOG_FORMAT: {v:?} must be text or json"),
            };
        }
        Ok(())
    }

    /// Check ranges and combinations; called by [`Config::load`].
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=86_400).contains(&self.release_bucket_seconds) {
            bail!("release_bucket_seconds must be in 1..=86400");
        }
        if !(1..=365).contains(&self.retention_days) {
            bail!("retention_days must be in 1..=365");
        }
        if self.upload_delay_ms > 60_000 {
            bail!("upload_delay_ms must be at most 60000");
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            bail!("request_timeout_ms must be in 100..=600000");
        }
        if !(1..=1_000_000).contains(&self.max_uploads_in_flight) {
            bail!("max_uploads_in_flight must be in 1..=1000000");
        }
        if self.export_min_keys > 1_000_000 {
            bail!("export_min_keys must be at most 1000000");
        }
        if self.region.is_empty() || self.region.len() > 64 {
            bail!("region must be 1..=64 characters");
        }
        if self.workers == Some(0) {
            bail!("workers must be at least 1");
        }
        if self.db_max_connections == 0 {
            bail!("db_max_connections must be at least 1");
        }
        if self.lowcost_min_keys > 1_000_000 || self.hybrid_min_seeds > 1_000_000 {
            bail!("lowcost_min_keys and hybrid_min_seeds must be at most 1000000");
        }
        if self.unlinkable_min_entries > 50_000_000 {
            bail!("unlinkable_min_entries must be at most 50000000");
        }
        if !(8..=64).contains(&self.filter_fingerprint_bits) {
            bail!("filter_fingerprint_bits must be in 8..=64");
        }
        Ok(())
    }

    /// Retention in seconds.
    pub fn retention_seconds(&self) -> u64 {
        u64::from(self.retention_days) * 86_400
    }

    /// The database URL actually used: the configured one or SQLite in the data dir.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("dp3t.db").display()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_run_out_of_the_box() {
        let c = Config::load_with(None, env(&[])).unwrap();
        assert_eq!(c.bind, "127.0.0.1:8080");
        assert_eq!(c.release_bucket_seconds, 7200);
        assert_eq!(c.upload_delay_ms, 1500);
        assert_eq!(c.retention_days, 14);
        assert!(c.effective_database_url().starts_with("sqlite://"));
        assert!(c.effective_database_url().ends_with("dp3t.db"));
    }

    #[test]
    fn env_overrides_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("dp3t-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "bind = \"0.0.0.0:9\"\nregion = \"CH\"\nretention_days = 10\n",
        )
        .unwrap();
        let c = Config::load_with(
            Some(&file),
            env(&[
                ("DP3T_REGION", "DE"),
                ("DP3T_HA_PUBLIC_KEYS", "a.pem, b.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(c.bind, "0.0.0.0:9");
        assert_eq!(c.region, "DE");
        assert_eq!(c.retention_days, 10);
        assert_eq!(
            c.ha_public_keys,
            vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::load_with(None, env(&[("DP3T_RELEASE_BUCKET_SECONDS", "0")])).is_err());
        assert!(Config::load_with(None, env(&[("DP3T_UPLOAD_DELAY_MS", "x")])).is_err());
        assert!(Config::load_with(None, env(&[("DP3T_TRUST_DEV_HA_KEY", "maybe")])).is_err());
        assert!(Config::load_with(None, env(&[("DP3T_LOG_FORMAT", "xml")])).is_err());
        let c = Config::load_with(None, env(&[("DP3T_RELEASE_BUCKET_SECONDS", "5")])).unwrap();
        assert_eq!(c.release_bucket_seconds, 5);
        assert!(Config::load_with(None, env(&[("DP3T_FILTER_FINGERPRINT_BITS", "65")])).is_err());
        assert!(Config::load_with(None, env(&[("DP3T_FILTER_FINGERPRINT_BITS", "7")])).is_err());
        let c = Config::load_with(
            None,
            env(&[
                ("DP3T_FILTER_FINGERPRINT_BITS", "32"),
                ("DP3T_LOWCOST_MIN_KEYS", "7"),
                ("DP3T_UNLINKABLE_MIN_ENTRIES", "8"),
                ("DP3T_HYBRID_MIN_SEEDS", "9"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (
                c.filter_fingerprint_bits,
                c.lowcost_min_keys,
                c.unlinkable_min_entries,
                c.hybrid_min_seeds
            ),
            (32, 7, 8, 9)
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("dp3t-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "bnid = \"x\"\n").unwrap();
        assert!(Config::load_with(Some(&file), env(&[])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
