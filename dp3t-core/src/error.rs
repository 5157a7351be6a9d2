//! The one error type of `dp3t-core`.
//!
//! Every fallible function of the crate returns [`Error`]. Parsers of wire data (filters,
//! export zips, published lists, vector files, saved state) give a precise variant so that
//! callers can tell "malformed" from "forged" from "out of range", and so that a server can
//! map each to a 4xx answer. Nothing here ever carries key material.

use std::fmt;

/// Everything that can go wrong in `dp3t-core`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A byte string had the wrong length (`what` names the field).
    #[error("{what}: expected {expected} bytes, got {actual}")]
    InvalidLength {
        /// Which field.
        what: &'static str,
        /// The length the format requires.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
    /// A number was outside the range the protocol allows (`what` names it).
    #[error("{what} out of range: {detail}")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A DPCF Cuckoo filter could not be built or parsed (§4.1).
    #[error("DPCF filter: {0}")]
    Filter(#[from] FilterError),
    /// A GAEN export zip could not be built, parsed or verified (§9.1).
    #[error("GAEN export: {0}")]
    Export(#[from] ExportError),
    /// A signature (export signature or response `Signature` header) did not verify,
    /// or a key could not be read.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// A published list (low-cost or hybrid protobuf, §9.2 / §9.3) could not be decoded.
    #[error("published list: {0}")]
    PublishedList(String),
    /// A spec-vector file was malformed or named an unknown scheme (§11).
    #[error("vector file: {0}")]
    Vectors(String),
    /// Saved engine state could not be opened: wrong key, truncated, tampered or of an
    /// unknown version. No partial state is ever returned.
    #[error("saved state: {0}")]
    State(StateError),
    /// A batch, a saved state or a call meant for another scheme than the engine's.
    #[error("wrong scheme: {found:?} where the engine runs {expected:?}")]
    WrongScheme {
        /// The engine's scheme.
        expected: crate::engine::Scheme,
        /// The scheme of what was given.
        found: crate::engine::Scheme,
    },
    /// A call that does not fit the current state (reporting twice, answering a request
    /// that is not in flight, broadcasting after tracing stopped).
    #[error("not now: {0}")]
    InvalidState(&'static str),
    /// More entries than one upload holds.
    #[error("{count} {what} do not fit one upload of {limit}")]
    UploadTooLarge {
        /// What was counted.
        what: &'static str,
        /// How many were given.
        count: usize,
        /// How many fit.
        limit: usize,
    },
    /// A Bluetooth advertisement is not a DP-3T beacon.
    #[error("BLE advertisement: {0}")]
    Ble(#[from] BleError),
    /// Encoding or encrypting `what` failed (a bug: the inputs are always encodable).
    #[error("cannot encode {0}")]
    Encode(&'static str),
    /// A sealed upload could not be sealed or opened, or a published sealing key list
    /// could not be read.
    #[error("sealed upload: {0}")]
    Sealed(#[from] crate::sealed::SealedError),
}

/// Why received advertising data holds no DP-3T EphID (`ble::parse_advertisement`).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BleError {
    /// An AD structure at this offset runs past the end of the data.
    #[error("AD structure at offset {offset} runs past the end")]
    Truncated {
        /// Offset of its length byte.
        offset: usize,
    },
    /// No 0xFD68 service UUID or service data: not a DP-3T phone.
    #[error("no 0xFD68 service data: not a DP-3T beacon")]
    NotDp3t,
    /// 0xFD68 is listed but carries no service data (an iOS phone in the background):
    /// connect and read the GATT characteristic instead.
    #[error("0xFD68 listed without service data: read the GATT characteristic")]
    UuidOnly,
    /// The 0xFD68 service data is not a 16-byte EphID.
    #[error("0xFD68 service data of {0} bytes, an EphID has 16")]
    ServiceDataLength(usize),
}

/// Why a tracing session's request did not do what it was for; shown in the session's
/// status (`session::SessionStatus::errors`), like the DP-3T SDKs' error states.
#[derive(
    Debug, thiserror::Error, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum SessionError {
    /// No answer: no network, a TLS failure, a timeout.
    #[error("network error")]
    Network,
    /// The server answered with an unexpected HTTP status.
    #[error("server answered HTTP {0}")]
    Server(u16),
    /// A `Signature` header or an export signature is missing or does not verify, or
    /// signs another release time.
    #[error("response signature missing or invalid")]
    Signature,
    /// The server's `Date` (plus `Age`) is more than the allowed skew away from the
    /// phone's clock: the phone's time is probably wrong.
    #[error("the phone's clock differs from the server's")]
    ClockSkew,
    /// A response whose headers or body cannot be read.
    #[error("malformed response")]
    Malformed,
    /// The report was refused for good (bad or used code, invalid token): HTTP status.
    #[error("report refused by the server (HTTP {0})")]
    ReportRejected(u16),
    /// The upload token expired before the upload went through.
    #[error("upload token expired before the upload succeeded")]
    ReportExpired,
}

/// Why a DPCF filter was rejected or could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterError {
    /// Fewer than 16 bytes, or not the length the header implies.
    #[error("length {actual} does not match the header (expected {expected})")]
    Length {
        /// Length implied by the header (or 16, the header size).
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// The first four bytes are not `DPCF`.
    #[error("bad magic (not a DPCF filter)")]
    Magic,
    /// A version other than 1.
    #[error("unsupported version {0}")]
    Version(u8),
    /// A parameter outside its allowed range (`f`, `b`, `m`, reserved byte).
    #[error("parameter {name} = {value} out of range")]
    Parameter {
        /// Parameter name as in §4.1.
        name: &'static str,
        /// Its value.
        value: u64,
    },
    /// The builder could not place every item (the filter would be too full).
    #[error("could not insert all {0} items; the table is too full")]
    Full(u64),
}

/// Why a GAEN export zip was rejected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportError {
    /// Not a readable zip archive (truncated, corrupt, or not a zip at all).
    #[error("not a readable zip archive: {0}")]
    Zip(String),
    /// The archive does not hold exactly `export.bin` and `export.sig`.
    #[error("archive entries must be exactly export.bin and export.sig, found {0:?}")]
    Entries(Vec<String>),
    /// An entry or a field is larger than the limits allow.
    #[error("{what} too large: {size} > {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// `export.bin` does not start with the 16-byte `EK Export v1` header.
    #[error("export.bin does not start with the \"EK Export v1    \" header")]
    Header,
    /// A protobuf message could not be decoded.
    #[error("malformed protobuf in {what}: {detail}")]
    Protobuf {
        /// Which message.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// A key in the export breaks the format (length, rolling period ...).
    #[error("key {index}: {detail}")]
    Key {
        /// Index of the key in the export.
        index: usize,
        /// What is wrong.
        detail: String,
    },
    /// A field of the export header is out of range (batch number and size, timestamps).
    #[error("{what}: {detail}")]
    Field {
        /// Which field.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// Why a signature did not verify or a key could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// A PEM or DER key could not be parsed.
    #[error("cannot read key: {0}")]
    Key(String),
    /// The signature bytes are not a valid DER/fixed ECDSA signature.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// No signature in the list verified with the given public key.
    #[error("signature does not verify with the configured public key")]
    Mismatch,
    /// The JWS `Signature` header is malformed or its claims do not fit.
    #[error("response signature header: {0}")]
    Header(String),
    /// The body's SHA-256 does not equal the signed `content-hash`.
    #[error("content-hash does not match the body")]
    ContentHash,
    /// The signed JWS has expired or is not yet valid.
    #[error("response signature expired or not yet valid")]
    Expired,
}

/// Why saved engine state could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// Shorter than the header plus tag.
    Truncated,
    /// Not a state blob of this library.
    Magic,
    /// A format version this build does not read.
    Version(u8),
    /// Decryption failed: the storage key is wrong or the bytes were altered.
    Authentication,
    /// The decrypted content does not decode (should not happen without a bug).
    Corrupt,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Truncated => f.write_str("truncated"),
            StateError::Magic => f.write_str("not a dp3t state blob (bad magic)"),
            StateError::Version(v) => write!(f, "unsupported state version {v}"),
            StateError::Authentication => {
                f.write_str("authentication failed: wrong storage key or altered bytes")
            }
            StateError::Corrupt => f.write_str("decrypted state does not decode"),
        }
    }
}

impl Error {
    /// Shorthand for [`Error::OutOfRange`].
    pub fn out_of_range(what: &'static str, detail: impl Into<String>) -> Self {
        Error::OutOfRange {
            what,
            detail: detail.into(),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
