//! The DP-3T unlinkable design (PROTOCOL.md §4).
//!
//! Every 15-minute epoch has its own random 32-byte seed; `EphID = SHA-256(seed)[..16]`.
//! A phone never stores the EphIDs it hears: it stores the hashed observation
//! `H = SHA-256(EphID || BE32(epoch))`, which is what the server's Cuckoo filter holds.

use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::Result;
use crate::time::Epoch;
use crate::{fixed, EphId};

/// A per-epoch seed (32 secret bytes).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct EpochSeed([u8; 32]);

impl std::fmt::Debug for EpochSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochSeed(<redacted>)")
    }
}

impl EpochSeed {
    /// A fresh seed from the injected CSPRNG.
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        EpochSeed(k)
    }
    /// Wrap known seed bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        EpochSeed(b)
    }
    /// From a slice of exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        Ok(EpochSeed(fixed(b, "seed")?))
    }
    /// The seed bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// `EphID = first 16 bytes of SHA-256(seed)`.
    pub fn ephid(&self) -> EphId {
        let d = Sha256::digest(self.0);
        let mut e = [0u8; 16];
        e.copy_from_slice(&d[..16]);
        EphId(e)
    }
}

/// What a phone stores for a beacon heard in `epoch`, and what the server's filter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashedObservation(pub [u8; 32]);

impl HashedObservation {
    /// `SHA-256(EphID || BE32(epoch))`.
    pub fn new(ephid: &EphId, epoch: Epoch) -> Self {
        let mut h = Sha256::new();
        h.update(ephid.0);
        h.update(epoch.to_be_bytes());
        HashedObservation(h.finalize().into())
    }
    /// The filter entry of an uploaded `(epoch, seed)` pair.
    pub fn of_seed(seed: &EpochSeed, epoch: Epoch) -> Self {
        Self::new(&seed.ephid(), epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vector() {
        let seed = EpochSeed::from_bytes(
            hex::decode("eaa2054637009757b9988b28998209d253eede69345f835bb91b3b333108d229")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            hex::encode(seed.ephid().0),
            "b7b1d06cd81686669aeea51e9f4723b5"
        );
        assert_eq!(
            hex::encode(HashedObservation::of_seed(&seed, Epoch(1_762_781)).0),
            "93e8cffb4f828baf9e36b658ab8988b9afd39bec9f95b24930768157148adcc9"
        );
    }
}
