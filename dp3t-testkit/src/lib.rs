//! # dp3t-testkit
//!
//! Tooling that tests and the `dp3t` command need but that a phone or a server must not
//! ship: so it lives here, outside `dp3t-core`, in a crate that is never published.
//!
//! * [`publish`]: a minimal in-process "server" that turns an upload body into the signed
//!   batch the backend would publish, for stories that run two phones without a network.
//! * [`vectors`]: the spec-vector files of `spec-vectors/` (read, check against
//!   `dp3t-core`, and generate deterministically from a seed).
//!
//! Everything here returns [`Error`]; errors of the core come through as [`Error::Core`].

#![forbid(unsafe_code)]

pub mod publish;
pub mod vectors;

/// Everything that can go wrong in the test kit.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A spec-vector file was malformed, named an unknown scheme or checked nothing.
    #[error("vector file: {0}")]
    Vectors(String),
    /// An upload body the publisher cannot read.
    #[error("upload body: {0}")]
    Upload(String),
    /// An error of `dp3t-core` (building a filter, a list, an export, a signature).
    #[error(transparent)]
    Core(#[from] dp3t_core::Error),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
