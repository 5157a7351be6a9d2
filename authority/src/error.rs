//! The crate's one error type. Handlers turn it into a status code; the binary wraps it
//! in `anyhow` with context.

use std::path::PathBuf;

/// Everything that can go wrong in the authority library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or unparseable.
    #[error("configuration: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file holds no usable key.
    #[error("key: {0}")]
    Key(String),
    /// The database URL names no supported database.
    #[error("unsupported database URL (expected sqlite://… or postgres://…)")]
    UnsupportedDatabaseUrl,
    /// A query or connection failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Signing a token failed.
    #[error("token signing: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    /// Hashing or parsing a password hash failed.
    #[error("password hash: {0}")]
    Password(String),
    /// Input that breaks a rule (a future onset, a short password, an unknown user, …).
    #[error("{0}")]
    Invalid(String),
    /// Talking to the OpenID Connect provider failed, or it answered something invalid.
    #[error("OpenID Connect: {0}")]
    Oidc(String),
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
