//! # dp3t-core
//!
//! The protocol core of a DP-3T / Exposure Notification implementation: identifier
//! derivation for the four schemes (GAEN, and the DP-3T low-cost, unlinkable and hybrid
//! designs), the DPCF Cuckoo filter, GAEN export files, response signatures, exposure
//! scoring, and spec-vector checking. The normative byte layouts are in `PROTOCOL.md`.
//!
//! The crate is **sans-IO**: it never reads a clock, a file, a socket or a global RNG.
//! Callers pass the time (unix seconds) and an RNG (`&mut impl CryptoRng + RngCore`),
//! so the same code runs on a phone, on the server and in deterministic tests.

pub mod ble;
pub mod cuckoo;
pub mod engine;
pub mod error;
pub mod export;
pub mod exposure;
pub mod gaen;
pub mod hybrid;
pub mod lowcost;
pub mod matching;
pub mod published;
pub mod session;
pub mod signing;
pub mod store;
pub mod time;
pub mod unlinkable;
pub mod upload;
pub mod vectors;

pub use error::{Error, Result};

/// A 16-byte DP-3T ephemeral identifier (EphID), as broadcast over Bluetooth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EphId(pub [u8; 16]);

impl EphId {
    /// Parse from a slice that must be exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        Ok(EphId(fixed(b, "EphID")?))
    }
}

/// Copy a slice into a fixed-size array, or say which field had the wrong length.
pub(crate) fn fixed<const N: usize>(b: &[u8], what: &'static str) -> Result<[u8; N]> {
    b.try_into().map_err(|_| Error::InvalidLength {
        what,
        expected: N,
        actual: b.len(),
    })
}

/// The README's Rust examples, compiled and run as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
