//! Server configuration: built-in defaults, then an optional TOML file, then environment
//! variables, each layer overriding the one before.
//!
//! Every setting is defined once, in [`SETTINGS`]: its TOML key, its environment variable,
//! its default, its documentation and its parser (which also checks its range). From that
//! one table come the file and environment parsing, `serve --help` ([`help_text`]), the
//! settings table of `docs/OPERATIONS.md` ([`markdown_table`], checked by a test), and the
//! "did you mean" of an unknown key or `DP3T_*` variable. Values are checked here, once,
//! before the server writes anything, so the rest of the server can trust them.
//!
//! The defaults run out of the box on a laptop (SQLite in `./dp3t-data`, port 8080 on the
//! loopback interface, metrics on 9090 on the loopback interface, two-hour release
//! buckets).

use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// A configuration that cannot be used; the message names the setting and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file cannot be read.
    #[error("reading config file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not TOML.
    #[error("parsing config file {}: {source}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: Box<toml::de::Error>,
    },
    /// A key of the TOML file is no setting.
    #[error("config file {}: unknown key {key:?}{}", path.display(), did_you_mean(*nearest))]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The closest valid key.
        nearest: Option<&'static str>,
    },
    /// A `DP3T_*` environment variable is no setting (a typo would otherwise be ignored).
    #[error("unknown environment variable {name}{}", did_you_mean(*nearest))]
    UnknownVariable {
        /// The variable.
        name: String,
        /// The closest valid variable.
        nearest: Option<&'static str>,
    },
    /// A value is out of range or of the wrong kind.
    #[error("{name}: {value:?} {problem}")]
    Invalid {
        /// The variable (or TOML key) that carried it.
        name: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn did_you_mean(nearest: Option<&str>) -> String {
    nearest.map_or_else(String::new, |n| format!(" (did you mean {n}?)"))
}

/// Complete, validated server configuration. Each field is one row of [`SETTINGS`].
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Refuse to start without an existing signing key instead of generating one
    /// (`DP3T_REQUIRE_KEYS`); also never generate a development HA key.
    pub require_keys: bool,
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
    /// Bytes of built downloads (GAEN answers, design bucket bodies) kept in memory, least
    /// recently used evicted first (`DP3T_DOWNLOAD_CACHE_BYTES`).
    pub download_cache_bytes: usize,
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
    /// The defaults of [`SETTINGS`] (a test checks that both agree).
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./dp3t-data"),
            database_url: None,
            bind: "127.0.0.1:8080".to_owned(),
            metrics_bind: "127.0.0.1:9090".to_owned(),
            migrate: true,
            require_keys: false,
            release_bucket_seconds: 7200,
            upload_delay_ms: 1500,
            request_timeout_ms: 10_000,
            max_uploads_in_flight: 1024,
            retention_days: 14,
            export_min_keys: 100,
            download_cache_bytes: crate::cache::DEFAULT_CACHE_BYTES,
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

/// The timing of a node, derived once from the configuration and passed down as one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Release bucket length in seconds.
    pub bucket_seconds: u64,
    /// Retention in seconds.
    pub retention_seconds: u64,
    /// Constant answer time of uploads.
    pub upload_delay: Duration,
}

/// One setting: where it is read from, what it means, and how its text is parsed.
#[derive(Clone, Copy)]
pub struct Setting {
    /// Key in the TOML file.
    pub key: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// Default as text, parsed like any value; `None` when the default is "not set".
    pub default: Option<&'static str>,
    /// What "not set" means, when [`Setting::default`] is `None`.
    pub unset: &'static str,
    /// What it does (one line of Markdown, also shown by `serve --help`).
    pub doc: &'static str,
    /// Parse and check a value, and store it.
    set: fn(&mut Config, &str) -> Result<(), String>,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting").field("env", &self.env).finish()
    }
}

impl Setting {
    /// The default as shown to people.
    pub fn default_text(&self) -> String {
        self.default
            .map_or_else(|| self.unset.to_owned(), |d| format!("`{d}`"))
    }
}

/// A number in `range`.
fn num<T>(v: &str, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let n: T = v.trim().parse().map_err(|_| "is not a number".to_owned())?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be in {}..={}", range.start(), range.end()))
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("is not a boolean (true or false)".to_owned()),
    }
}

/// `host:port` with a numeric port (0 = any free port); the host is resolved at bind time.
fn address(v: &str) -> Result<String, String> {
    let v = v.trim();
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| "is not host:port".to_owned())?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("is not host:port".to_owned());
    }
    port.parse::<u16>()
        .map_err(|_| "has no port in 0..=65535".to_owned())?;
    Ok(v.to_owned())
}

fn text(v: &str, max: usize) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(format!("must be 1..={max} characters"));
    }
    Ok(v.to_owned())
}

fn database_url(v: &str) -> Result<String, String> {
    let v = v.trim();
    if ["sqlite:", "postgres:", "postgresql:"]
        .iter()
        .any(|p| v.starts_with(p))
    {
        Ok(v.to_owned())
    } else {
        Err("is not a sqlite:// or postgres:// URL".to_owned())
    }
}

/// Every setting, in the order of `serve --help` and `docs/OPERATIONS.md`.
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: "data_dir",
        env: "DP3T_DATA_DIR",
        default: Some("./dp3t-data"),
        unset: "",
        doc: "key files and the SQLite database",
        set: |c, v| {
            c.data_dir = PathBuf::from(text(v, 4096)?);
            Ok(())
        },
    },
    Setting {
        key: "database_url",
        env: "DP3T_DATABASE_URL",
        default: None,
        unset: "*(none)* → `sqlite://<data dir>/dp3t.db`",
        doc: "`sqlite://path` or `postgres://user:pass@host:port/db`",
        set: |c, v| {
            c.database_url = Some(database_url(v)?);
            Ok(())
        },
    },
    Setting {
        key: "bind",
        env: "DP3T_BIND",
        default: Some("127.0.0.1:8080"),
        unset: "",
        doc: "listen address of the API (`0.0.0.0:8080` behind a load balancer)",
        set: |c, v| {
            c.bind = address(v)?;
            Ok(())
        },
    },
    Setting {
        key: "metrics_bind",
        env: "DP3T_METRICS_BIND",
        default: Some("127.0.0.1:9090"),
        unset: "",
        doc: "listen address of `GET /metrics` (Prometheus); never the public port, keep it off the internet",
        set: |c, v| {
            c.metrics_bind = address(v)?;
            Ok(())
        },
    },
    Setting {
        key: "migrate",
        env: "DP3T_MIGRATE",
        default: Some("true"),
        unset: "",
        doc: "apply pending migrations at start; `false` (or `serve --no-migrate`) only checks the schema version, for a role without DDL rights",
        set: |c, v| {
            c.migrate = boolean(v)?;
            Ok(())
        },
    },
    Setting {
        key: "require_keys",
        env: "DP3T_REQUIRE_KEYS",
        default: Some("false"),
        unset: "",
        doc: "refuse to start without an existing `signing-key.pem` instead of generating one (and never generate a dev HA key). **Set `true` in production**",
        set: |c, v| {
            c.require_keys = boolean(v)?;
            Ok(())
        },
    },
    Setting {
        key: "release_bucket_seconds",
        env: "DP3T_RELEASE_BUCKET_SECONDS",
        default: Some("7200"),
        unset: "",
        doc: "release bucket length, 1..=86400. Small values such as 2–5 are for tests and demos",
        set: |c, v| {
            c.release_bucket_seconds = num(v, 1..=86_400)?;
            Ok(())
        },
    },
    Setting {
        key: "upload_delay_ms",
        env: "DP3T_UPLOAD_DELAY_MS",
        default: Some("1500"),
        unset: "",
        doc: "every accepted upload answers this long after it arrived (real or fake), 0..=60000",
        set: |c, v| {
            c.upload_delay_ms = num(v, 0..=60_000)?;
            Ok(())
        },
    },
    Setting {
        key: "request_timeout_ms",
        env: "DP3T_REQUEST_TIMEOUT_MS",
        default: Some("10000"),
        unset: "",
        doc: "longest time for a request's headers, and for an upload's body, to arrive, 100..=600000",
        set: |c, v| {
            c.request_timeout_ms = num(v, 100..=600_000)?;
            Ok(())
        },
    },
    Setting {
        key: "max_uploads_in_flight",
        env: "DP3T_MAX_UPLOADS_IN_FLIGHT",
        default: Some("1024"),
        unset: "",
        doc: "uploads read and processed at once; beyond it `503` with `Retry-After`, 1..=1000000",
        set: |c, v| {
            c.max_uploads_in_flight = num(v, 1..=1_000_000)?;
            Ok(())
        },
    },
    Setting {
        key: "retention_days",
        env: "DP3T_RETENTION_DAYS",
        default: Some("14"),
        unset: "",
        doc: "how long keys, used-token records and buckets are kept, 1..=365",
        set: |c, v| {
            c.retention_days = num(v, 1..=365)?;
            Ok(())
        },
    },
    Setting {
        key: "export_min_keys",
        env: "DP3T_EXPORT_MIN_KEYS",
        default: Some("100"),
        unset: "",
        doc: "non-empty buckets are padded with random keys up to this count (0 = no padding), 0..=1000000",
        set: |c, v| {
            c.export_min_keys = num(v, 0..=1_000_000)?;
            Ok(())
        },
    },
    Setting {
        key: "download_cache_bytes",
        env: "DP3T_DOWNLOAD_CACHE_BYTES",
        default: Some("67108864"),
        unset: "",
        doc: "bytes of built downloads (GAEN answers, design bucket bodies) kept in memory, least recently used evicted first, 0..=68719476736",
        set: |c, v| {
            c.download_cache_bytes = num(v, 0..=(64usize << 30))?;
            Ok(())
        },
    },
    Setting {
        key: "region",
        env: "DP3T_REGION",
        default: Some("XX"),
        unset: "",
        doc: "`region` field of the exports (e.g. an ISO country code or MCC), 1..=64 characters",
        set: |c, v| {
            c.region = text(v, 64)?;
            Ok(())
        },
    },
    Setting {
        key: "signature_key_id",
        env: "DP3T_SIGNATURE_KEY_ID",
        default: Some("dp3t-dev"),
        unset: "",
        doc: "`verification_key_id` of the export signature, as registered with the phone OS vendors",
        set: |c, v| {
            c.signature_key_id = text(v, 256)?;
            Ok(())
        },
    },
    Setting {
        key: "signature_key_version",
        env: "DP3T_SIGNATURE_KEY_VERSION",
        default: Some("v1"),
        unset: "",
        doc: "`verification_key_version` of the export signature",
        set: |c, v| {
            c.signature_key_version = text(v, 256)?;
            Ok(())
        },
    },
    Setting {
        key: "issuer",
        env: "DP3T_ISSUER",
        default: Some("dp3t"),
        unset: "",
        doc: "`iss` claim of the `Signature` header",
        set: |c, v| {
            c.issuer = text(v, 256)?;
            Ok(())
        },
    },
    Setting {
        key: "ha_public_keys",
        env: "DP3T_HA_PUBLIC_KEYS",
        default: None,
        unset: "*(none)*",
        doc: "comma-separated PEM files of trusted health-authority public keys (EC P-256 for ES256, RSA for RS256); a TOML array in the file",
        set: |c, v| {
            c.ha_public_keys = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect();
            Ok(())
        },
    },
    Setting {
        key: "trust_dev_ha_key",
        env: "DP3T_TRUST_DEV_HA_KEY",
        default: Some("true"),
        unset: "",
        doc: "also trust `<data dir>/ha-dev-key.pub.pem` when it exists. **Set `false` in production**",
        set: |c, v| {
            c.trust_dev_ha_key = boolean(v)?;
            Ok(())
        },
    },
    Setting {
        key: "workers",
        env: "DP3T_WORKERS",
        default: None,
        unset: "one per CPU",
        doc: "HTTP worker threads, 1..=1024",
        set: |c, v| {
            c.workers = Some(num(v, 1..=1024)?);
            Ok(())
        },
    },
    Setting {
        key: "db_max_connections",
        env: "DP3T_DB_MAX_CONNECTIONS",
        default: Some("16"),
        unset: "",
        doc: "database pool size, 1..=1000 (SQLite: one writer, plus up to 8 readers)",
        set: |c, v| {
            c.db_max_connections = num(v, 1..=1000)?;
            Ok(())
        },
    },
    Setting {
        key: "log_format",
        env: "DP3T_LOG_FORMAT",
        default: Some("text"),
        unset: "",
        doc: "`text` or `json` (one JSON object per line)",
        set: |c, v| {
            c.log_format = match v.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err("must be text or json".to_owned()),
            };
            Ok(())
        },
    },
    Setting {
        key: "lowcost_min_keys",
        env: "DP3T_LOWCOST_MIN_KEYS",
        default: Some("100"),
        unset: "",
        doc: "every low-cost batch (`/v1/exposed/{t}`) is padded with random keys up to this count, 0..=1000000",
        set: |c, v| {
            c.lowcost_min_keys = num(v, 0..=1_000_000)?;
            Ok(())
        },
    },
    Setting {
        key: "unlinkable_min_entries",
        env: "DP3T_UNLINKABLE_MIN_ENTRIES",
        default: Some("9600"),
        unset: "",
        doc: "every unlinkable filter is padded with random entries up to this count (96 per phone-day), 0..=50000000",
        set: |c, v| {
            c.unlinkable_min_entries = num(v, 0..=50_000_000)?;
            Ok(())
        },
    },
    Setting {
        key: "hybrid_min_seeds",
        env: "DP3T_HYBRID_MIN_SEEDS",
        default: Some("1200"),
        unset: "",
        doc: "every hybrid batch is padded with random window seeds up to this count (12 per phone-day of 2-hour windows), 0..=1000000",
        set: |c, v| {
            c.hybrid_min_seeds = num(v, 0..=1_000_000)?;
            Ok(())
        },
    },
    Setting {
        key: "filter_fingerprint_bits",
        env: "DP3T_FILTER_FINGERPRINT_BITS",
        default: Some("48"),
        unset: "",
        doc: "fingerprint bits `f` of the unlinkable Cuckoo filters, 8..=64: at most `8 / 2^f` false positives per lookup, about `1.05 × ceil(f/8)` bytes per entry",
        set: |c, v| {
            c.filter_fingerprint_bits = num(v, 8..=64)?;
            Ok(())
        },
    },
];

/// `DP3T_*` variables that belong to the project's other programs and scripts, not to
/// this server: they are not settings, and not errors either.
const OTHER_VARIABLES: &[&str] = &[
    // `--config FILE` of `serve` and `migrate` (read by the command line parser)
    "DP3T_CONFIG",
    // the tests and CI scripts (`.ci/run`, `mobile-ffi/tests/run-bindings.sh`)
    "DP3T_REQUIRE_BROWSER",
    "DP3T_PYTHON_BINDINGS",
    "DP3T_BACKEND_BIN",
];
/// Prefixes of the variables of the project's other programs (`dp3t-authority`) and tests.
const OTHER_PREFIXES: &[&str] = &["DP3T_AUTHORITY_", "DP3T_TEST_"];

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The candidate nearest to `name`, if it is near enough to be a likely typo.
fn nearest(name: &str, candidates: impl Iterator<Item = &'static str>) -> Option<&'static str> {
    candidates
        .map(|c| {
            (
                distance(&name.to_ascii_uppercase(), &c.to_ascii_uppercase()),
                c,
            )
        })
        .min()
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .map(|(_, c)| c)
}

impl Config {
    /// Defaults, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
            .collect();
        Self::load_with(file, &vars)
    }

    /// Like [`Config::load`] with an explicit environment (used by tests). Every
    /// `DP3T_*` variable must be a setting (or one of the project's other programs').
    pub fn load_with(
        file: Option<&Path>,
        vars: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(path) = file {
            c.apply_file(path)?;
        }
        for (name, value) in vars {
            if !name.starts_with("DP3T_") {
                continue;
            }
            match SETTINGS.iter().find(|s| s.env == name) {
                // An empty variable is unset, as in most shells' `VAR= cmd`.
                Some(_) if value.trim().is_empty() => {}
                Some(s) => c.set(s, name, value)?,
                None if OTHER_VARIABLES.contains(&name.as_str())
                    || OTHER_PREFIXES.iter().any(|p| name.starts_with(p)) => {}
                None => {
                    return Err(ConfigError::UnknownVariable {
                        name: name.clone(),
                        nearest: nearest(name, SETTINGS.iter().map(|s| s.env)),
                    })
                }
            }
        }
        Ok(c)
    }

    fn set(&mut self, s: &Setting, name: &str, value: &str) -> Result<(), ConfigError> {
        (s.set)(self, value).map_err(|problem| ConfigError::Invalid {
            name: name.to_owned(),
            value: value.to_owned(),
            problem,
        })
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        for (key, value) in &table {
            let Some(s) = SETTINGS.iter().find(|s| s.key == key) else {
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    key: key.clone(),
                    nearest: nearest(key, SETTINGS.iter().map(|s| s.key)),
                });
            };
            let text = match value {
                toml::Value::String(v) => v.clone(),
                toml::Value::Integer(v) => v.to_string(),
                toml::Value::Boolean(v) => v.to_string(),
                toml::Value::Array(items) => {
                    let mut parts = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            toml::Value::String(v) if !v.contains(',') => parts.push(v.clone()),
                            other => {
                                return Err(ConfigError::Invalid {
                                    name: key.clone(),
                                    value: other.to_string(),
                                    problem: "must be a string without commas".to_owned(),
                                })
                            }
                        }
                    }
                    parts.join(",")
                }
                other => {
                    return Err(ConfigError::Invalid {
                        name: key.clone(),
                        value: other.to_string(),
                        problem: "must be a string, an integer or a boolean".to_owned(),
                    })
                }
            };
            self.set(s, key, &text)?;
        }
        Ok(())
    }

    /// Retention in seconds.
    pub fn retention_seconds(&self) -> u64 {
        u64::from(self.retention_days) * 86_400
    }

    /// The timing values, once, to pass down.
    pub fn timing(&self) -> Timing {
        Timing {
            bucket_seconds: self.release_bucket_seconds,
            retention_seconds: self.retention_seconds(),
            upload_delay: Duration::from_millis(self.upload_delay_ms),
        }
    }

    /// The database URL actually used: the configured one or SQLite in the data dir.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("dp3t.db").display()),
        }
    }
}

/// The settings as `serve --help` shows them: every variable with its default and meaning.
pub fn help_text() -> String {
    let mut out = String::from(
        "Settings (environment variable, or the key in lower case without DP3T_ in the \
         --config file; the environment wins; docs/OPERATIONS.md has the same table):\n",
    );
    for s in SETTINGS {
        let default = s.default_text().replace(['`', '*'], "");
        out.push_str(&format!(
            "  {} [default: {default}]\n      {}\n",
            s.env,
            s.doc.replace(['`', '*'], "")
        ));
    }
    out
}

/// The settings table of `docs/OPERATIONS.md` (Markdown).
pub fn markdown_table() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for s in SETTINGS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            s.env,
            s.default_text(),
            s.doc
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_run_out_of_the_box() {
        let c = Config::load_with(None, &env(&[])).unwrap();
        assert_eq!(c.bind, "127.0.0.1:8080");
        assert_eq!(c.metrics_bind, "127.0.0.1:9090");
        assert_eq!(c.release_bucket_seconds, 7200);
        assert_eq!(c.upload_delay_ms, 1500);
        assert_eq!(c.retention_days, 14);
        assert!(c.migrate);
        assert!(!c.require_keys);
        assert!(c.effective_database_url().starts_with("sqlite://"));
        assert!(c.effective_database_url().ends_with("dp3t.db"));
    }

    #[test]
    fn the_table_defaults_are_the_struct_defaults() {
        let mut envs = std::collections::BTreeSet::new();
        let mut keys = std::collections::BTreeSet::new();
        for s in SETTINGS {
            assert!(envs.insert(s.env) && keys.insert(s.key), "{} twice", s.env);
            assert_eq!(s.env, format!("DP3T_{}", s.key.to_ascii_uppercase()));
            assert!(!s.doc.is_empty());
            match s.default {
                Some(d) => {
                    let mut c = Config::default();
                    (s.set)(&mut c, d).unwrap();
                    assert_eq!(c, Config::default(), "{}", s.env);
                }
                None => assert!(!s.unset.is_empty(), "{}", s.env),
            }
        }
    }

    #[test]
    fn env_overrides_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("dp3t-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "bind = \"0.0.0.0:9\"\nregion = \"CH\"\nretention_days = 10\n\
             ha_public_keys = [\"x.pem\"]\ntrust_dev_ha_key = false\n",
        )
        .unwrap();
        let c = Config::load_with(
            Some(&file),
            &env(&[
                ("DP3T_REGION", "DE"),
                ("DP3T_HA_PUBLIC_KEYS", "a.pem, b.pem"),
                ("DP3T_WORKERS", ""),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.bind, "0.0.0.0:9");
        assert_eq!(c.region, "DE");
        assert_eq!(c.retention_days, 10);
        assert!(!c.trust_dev_ha_key);
        assert_eq!(c.workers, None);
        assert_eq!(
            c.ha_public_keys,
            vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        let c = Config::load_with(Some(&file), &env(&[])).unwrap();
        assert_eq!(c.ha_public_keys, vec![PathBuf::from("x.pem")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_are_errors() {
        for (name, value) in [
            ("DP3T_RELEASE_BUCKET_SECONDS", "0"),
            ("DP3T_UPLOAD_DELAY_MS", "x"),
            ("DP3T_TRUST_DEV_HA_KEY", "maybe"),
            ("DP3T_LOG_FORMAT", "xml"),
            ("DP3T_FILTER_FINGERPRINT_BITS", "65"),
            ("DP3T_FILTER_FINGERPRINT_BITS", "7"),
            ("DP3T_BIND", "127.0.0.1:99999"),
            ("DP3T_BIND", "8080"),
            ("DP3T_METRICS_BIND", "localhost:x"),
            ("DP3T_DATABASE_URL", "mysql://x"),
            ("DP3T_MIGRATE", "perhaps"),
            ("DP3T_WORKERS", "0"),
            ("DP3T_REGION", &"X".repeat(65)),
        ] {
            let err = Config::load_with(None, &env(&[(name, value)])).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("{name}: ")),
                "{name}={value}: {err}"
            );
        }
        let c = Config::load_with(None, &env(&[("DP3T_RELEASE_BUCKET_SECONDS", "5")])).unwrap();
        assert_eq!(c.release_bucket_seconds, 5);
        let c = Config::load_with(
            None,
            &env(&[
                ("DP3T_FILTER_FINGERPRINT_BITS", "32"),
                ("DP3T_LOWCOST_MIN_KEYS", "7"),
                ("DP3T_UNLINKABLE_MIN_ENTRIES", "8"),
                ("DP3T_HYBRID_MIN_SEEDS", "9"),
                ("DP3T_BIND", "[::1]:0"),
                ("DP3T_MIGRATE", "false"),
                ("DP3T_REQUIRE_KEYS", "true"),
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
        assert_eq!(c.bind, "[::1]:0");
        assert!(!c.migrate && c.require_keys);
    }

    /// Regression: `DP3T_BINDD` was silently ignored.
    #[test]
    fn unknown_variables_name_the_nearest_setting() {
        let err = Config::load_with(None, &env(&[("DP3T_BINDD", "0.0.0.0:80")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment variable DP3T_BINDD (did you mean DP3T_BIND?)"
        );
        let err = Config::load_with(None, &env(&[("DP3T_RETENTON_DAYS", "3")])).unwrap_err();
        assert!(err.to_string().contains("DP3T_RETENTION_DAYS"), "{err}");
        let err = Config::load_with(None, &env(&[("DP3T_ZZZZZZZZZZZZZ", "1")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment variable DP3T_ZZZZZZZZZZZZZ"
        );
        // The variables of the project's other programs are not errors.
        Config::load_with(
            None,
            &env(&[
                ("DP3T_CONFIG", "x.toml"),
                ("DP3T_AUTHORITY_BIND", "x"),
                ("DP3T_TEST_BACKEND", "x"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn unknown_file_keys_name_the_nearest_key() {
        let dir = std::env::temp_dir().join(format!("dp3t-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "bnid = \"x\"\n").unwrap();
        let err = Config::load_with(Some(&file), &env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("unknown key \"bnid\" (did you mean bind?)"),
            "{err}"
        );
        std::fs::write(&file, "retention_days = \"x\"\n").unwrap();
        let err = Config::load_with(Some(&file), &env(&[])).unwrap_err();
        assert!(err.to_string().starts_with("retention_days: "), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn help_lists_every_setting_with_its_default() {
        let help = help_text();
        for s in SETTINGS {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(s.env))
                .unwrap();
            assert!(line.contains("[default: "), "{line}");
            if let Some(d) = s.default {
                assert!(line.contains(d), "{line}");
            }
        }
    }

    /// `docs/OPERATIONS.md` holds [`markdown_table`] between two markers. With
    /// `UPDATE_DOCS=1` this test rewrites it instead of failing.
    #[test]
    fn operations_doc_has_the_generated_settings_table() {
        const BEGIN: &str = "<!-- settings table: generated from backend/src/config.rs -->\n";
        const END: &str = "<!-- end of settings table -->";
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OPERATIONS.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
        let end = doc[start..].find(END).expect("end marker") + start;
        let table = markdown_table();
        if doc[start..end] != table {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                std::fs::write(&path, format!("{}{table}{}", &doc[..start], &doc[end..])).unwrap();
            } else {
                panic!(
                    "docs/OPERATIONS.md's settings table is not the one of config.rs; \
                     run `UPDATE_DOCS=1 cargo test -p backend --lib operations_doc`"
                );
            }
        }
    }
}
