//! # dp3t-core
//!
//! The protocol core of a DP-3T / Exposure Notification implementation: identifier
//! derivation for the four schemes (GAEN, and the DP-3T low-cost, unlinkable and hybrid
//! designs), the DPCF Cuckoo filter, GAEN export files, response signatures, exposure
//! scoring. The normative byte layouts are in `docs/PROTOCOL.md`. Test tooling (an in-process
//! publisher, the spec-vector files) is in the unpublished `dp3t-testkit` crate, not here.
//!
//! The crate is **sans-IO**: it never reads a clock, a file, a socket or a global RNG.
//! Callers pass the time (unix seconds) and an RNG (`&mut impl CryptoRng + RngCore`),
//! so the same code runs on a phone, on the server and in deterministic tests.
//!
//! `unsafe` lives in two files, `gaen/x86.rs` (the x86-64 SIMD kernels of the GAEN
//! derivation) and `kernels.rs` (those of the low-cost and hybrid designs), which allow it
//! for themselves. The crate denies it, every other module forbids
//! it (so no `allow` can bring it back there), and every `unsafe` block must carry a
//! `SAFETY:` comment.

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[forbid(unsafe_code)]
pub mod ble;
#[forbid(unsafe_code)]
pub mod cuckoo;
#[forbid(unsafe_code)]
pub mod engine;
#[forbid(unsafe_code)]
pub mod error;
#[forbid(unsafe_code)]
pub mod export;
#[forbid(unsafe_code)]
pub mod exposure;
// Denied by the crate, allowed only in its child `gaen::x86`.
pub mod gaen;
#[forbid(unsafe_code)]
pub mod hybrid;
// Denied by the crate, allowed only inside (the low-cost and hybrid x86-64 kernels).
#[cfg(target_arch = "x86_64")]
mod kernels;
#[forbid(unsafe_code)]
pub mod lowcost;
#[forbid(unsafe_code)]
pub mod matching;
#[forbid(unsafe_code)]
pub mod published;
#[forbid(unsafe_code)]
pub mod sealed;
#[forbid(unsafe_code)]
pub mod session;
#[forbid(unsafe_code)]
mod sha256;
#[forbid(unsafe_code)]
pub mod signing;
#[forbid(unsafe_code)]
pub mod store;
#[forbid(unsafe_code)]
pub mod time;
#[forbid(unsafe_code)]
pub mod unlinkable;
#[forbid(unsafe_code)]
pub mod upload;

pub use error::{Error, Result};

/// A 16-byte DP-3T ephemeral identifier (EphID), as broadcast over Bluetooth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EphId(pub [u8; 16]);

impl AsRef<[u8; 16]> for EphId {
    fn as_ref(&self) -> &[u8; 16] {
        &self.0
    }
}

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
