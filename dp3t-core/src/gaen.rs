//! The Google/Apple Exposure Notification scheme, cryptography v1.2 (PROTOCOL.md §2).
//!
//! `TEK → RPIK → RPI_j` and `TEK → AEMK → AEM_j`. The derivation of all 144 RPIs of a key
//! is the hot path of matching (a phone derives them for every published key), so it is
//! shaped for speed: HKDF runs on precomputed HMAC states of the all-zero salt (six
//! SHA-256 compressions in all, see [`rpik_fast`]), the AES key is expanded once, and the
//! 144 blocks are encrypted in one pipelined call.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::fixed;
use crate::time::{Enin, RollingPeriod, INTERVALS_PER_DAY};

/// HKDF info of the Rolling Proximity Identifier Key.
pub const RPIK_INFO: &[u8] = b"EN-RPIK";
/// HKDF info of the Associated Encrypted Metadata Key.
pub const AEMK_INFO: &[u8] = b"EN-AEMK";
/// The 6-byte prefix of every RPI's padded data.
pub const RPI_PREFIX: &[u8; 6] = b"EN-RPI";

/// A Temporary Exposure Key: 16 secret bytes, valid for one rolling period.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Tek([u8; 16]);

impl std::fmt::Debug for Tek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tek(<redacted>)")
    }
}

impl Tek {
    /// A fresh key from the injected CSPRNG.
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Self {
        let mut k = [0u8; 16];
        rng.fill_bytes(&mut k);
        Tek(k)
    }
    /// Wrap known key bytes (a published key, a test vector).
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Tek(b)
    }
    /// Parse from a slice of exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        Ok(Tek(fixed(b, "TEK")?))
    }
    /// The key bytes (for upload; handle with care).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// `RPIK = HKDF-SHA256(TEK, no salt, "EN-RPIK", 16)`.
    pub fn rpik(&self) -> Rpik {
        Rpik(rpik_fast(&self.0))
    }
    /// `AEMK = HKDF-SHA256(TEK, no salt, "EN-AEMK", 16)`.
    pub fn aemk(&self) -> Aemk {
        Aemk(hkdf16(&self.0, AEMK_INFO))
    }
}

/// The Rolling Proximity Identifier Key, with its AES key schedule expanded once.
#[derive(Clone)]
pub struct Rpik([u8; 16]);

impl Zeroize for Rpik {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}
impl Drop for Rpik {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Rpik {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rpik(<redacted>)")
    }
}

impl Rpik {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// The RPI of one interval.
    pub fn rpi(&self, interval: Enin) -> Rpi {
        let cipher = Aes128::new(GenericArray::from_slice(&self.0));
        let mut block = GenericArray::from(padded_data(interval.0));
        cipher.encrypt_block(&mut block);
        Rpi(block.into())
    }
    /// The RPIs of `count` consecutive intervals from `start`, expanding the key once.
    pub fn rpis(&self, start: Enin, count: u32) -> Result<Vec<Rpi>> {
        start.checked_add(count)?;
        let mut out = vec![Block::default(); count as usize];
        encrypt_padded(&self.0, start.0, &mut out);
        Ok(out.into_iter().map(|b| Rpi(b.into())).collect())
    }
}

/// The Associated Encrypted Metadata Key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Aemk([u8; 16]);

impl std::fmt::Debug for Aemk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aemk(<redacted>)")
    }
}

impl Aemk {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// `AEM = AES-128-CTR(AEMK, IV = RPI, metadata)`. Four bytes need one keystream block.
    pub fn encrypt(&self, rpi: &Rpi, metadata: &Metadata) -> Aem {
        Aem(self.apply(rpi, metadata.to_bytes()))
    }
    /// The inverse of [`Aemk::encrypt`] (CTR mode is its own inverse).
    pub fn decrypt(&self, rpi: &Rpi, aem: &Aem) -> Metadata {
        Metadata::from_bytes(self.apply(rpi, aem.0))
    }
    fn apply(&self, rpi: &Rpi, data: [u8; 4]) -> [u8; 4] {
        let cipher = Aes128::new(GenericArray::from_slice(&self.0));
        let mut block = GenericArray::from(rpi.0);
        cipher.encrypt_block(&mut block);
        let mut out = data;
        for (o, k) in out.iter_mut().zip(block.iter()) {
            *o ^= k;
        }
        out
    }
}

/// A Rolling Proximity Identifier: what a phone broadcasts for one 10-minute interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rpi(pub [u8; 16]);

/// Associated Encrypted Metadata: 4 bytes broadcast next to the RPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Aem(pub [u8; 4]);

/// The 4-byte metadata of EN v1.x: version and TX power; the reserved bytes are kept as
/// read so that decryption of a newer peer's metadata never fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Metadata {
    /// Byte 0: protocol version, `0x40` for v1.0.
    pub version: u8,
    /// Byte 1: transmit power in dBm (signed).
    pub tx_power: i8,
    /// Bytes 2-3: reserved, zero in v1.0.
    pub reserved: [u8; 2],
}

impl Metadata {
    /// Version byte of EN v1.0.
    pub const VERSION_1_0: u8 = 0x40;
    /// v1.0 metadata with the given TX power.
    pub fn v1(tx_power: i8) -> Self {
        Metadata {
            version: Self::VERSION_1_0,
            tx_power,
            reserved: [0, 0],
        }
    }
    /// The wire bytes.
    pub fn to_bytes(&self) -> [u8; 4] {
        [
            self.version,
            self.tx_power as u8,
            self.reserved[0],
            self.reserved[1],
        ]
    }
    /// From wire bytes.
    pub fn from_bytes(b: [u8; 4]) -> Self {
        Metadata {
            version: b[0],
            tx_power: b[1] as i8,
            reserved: [b[2], b[3]],
        }
    }
}

/// A TEK together with its validity, as published or uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWithValidity {
    /// The key.
    pub tek: Tek,
    /// First interval of validity (day-aligned for keys made by this crate).
    pub rolling_start: Enin,
    /// Number of intervals of validity.
    pub rolling_period: RollingPeriod,
}

impl KeyWithValidity {
    /// Interval after the last valid one.
    pub fn end(&self) -> Enin {
        Enin(
            self.rolling_start
                .0
                .saturating_add(self.rolling_period.get()),
        )
    }
    /// All RPIs of the key's validity, expanding HKDF and AES once.
    pub fn rpis(&self) -> Result<Vec<Rpi>> {
        self.tek
            .rpik()
            .rpis(self.rolling_start, self.rolling_period.get())
    }
}

/// `PaddedData_j = "EN-RPI" || 0^6 || LE32(j)`.
#[inline]
pub fn padded_data(interval: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(RPI_PREFIX);
    b[12..].copy_from_slice(&interval.to_le_bytes());
    b
}

/// One AES block as the `aes` crate holds it (16 bytes; `Deref<Target = [u8]>`).
pub type Block = aes::Block;

/// Encrypt the padded data of intervals `start, start+1, ...` into `out` (one RPI per
/// block) under the AES-128 key `rpik`, expanding the key once and letting the cipher
/// pipeline the blocks.
#[inline]
pub fn encrypt_padded(rpik: &[u8; 16], start: u32, out: &mut [Block]) {
    let cipher = Aes128::new(GenericArray::from_slice(rpik));
    for (j, o) in out.iter_mut().enumerate() {
        *o = GenericArray::from(padded_data(start.wrapping_add(j as u32)));
    }
    cipher.encrypt_blocks(out);
}

/// Derive the RPIs of a whole key (all intervals of `period`) into `out`, which must hold
/// at least `period` elements. This is the matching hot path: six SHA-256 compressions and
/// one pipelined AES call. Returns the filled prefix.
#[inline]
pub fn derive_rpis_into<'a>(
    tek: &[u8; 16],
    rolling_start: u32,
    period: u32,
    out: &'a mut [Block; INTERVALS_PER_DAY as usize],
) -> &'a [Block] {
    let n = (period.min(INTERVALS_PER_DAY)) as usize;
    let rpik = rpik_fast(tek);
    encrypt_padded(&rpik, rolling_start, &mut out[..n]);
    &out[..n]
}

/// Generic HKDF-SHA256 with no salt and a 16-byte output (the `hkdf` crate).
fn hkdf16(ikm: &[u8], info: &[u8]) -> [u8; 16] {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, ikm);
    let mut okm = [0u8; 16];
    // 16 ≤ 255 * 32, so expand cannot fail.
    if hk.expand(info, &mut okm).is_err() {
        unreachable!("HKDF output length 16 is always valid");
    }
    okm
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The SHA-256 states after the first block of HMAC with the 32-byte all-zero key
/// (`0x36` and `0x5c` blocks). Computed once per process.
fn zero_salt_states() -> &'static ([u32; 8], [u32; 8]) {
    static STATES: std::sync::OnceLock<([u32; 8], [u32; 8])> = std::sync::OnceLock::new();
    STATES.get_or_init(|| {
        let mut inner = SHA256_IV;
        let mut outer = SHA256_IV;
        compress(&mut inner, &[0x36; 64]);
        compress(&mut outer, &[0x5c; 64]);
        (inner, outer)
    })
}

#[inline(always)]
fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// One SHA-256 block holding `msg` (≤ 55 bytes) after a 64-byte prefix already hashed:
/// the message, `0x80`, zeros, and the bit length of prefix+message.
#[inline(always)]
fn final_block(msg: &[u8]) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..msg.len()].copy_from_slice(msg);
    b[msg.len()] = 0x80;
    let bits = ((64 + msg.len()) as u64) * 8;
    b[56..].copy_from_slice(&bits.to_be_bytes());
    b
}

#[inline(always)]
fn state_bytes(s: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(s) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// `HKDF-SHA256(tek, no salt, "EN-RPIK", 16)` in six SHA-256 compressions: the zero-salt
/// HMAC states are precomputed, leaving two compressions for `PRK = HMAC(0^32, TEK)` and
/// four for `HMAC(PRK, "EN-RPIK" || 0x01)`. Equal to the RFC 5869 construction (tested).
#[inline]
pub fn rpik_fast(tek: &[u8; 16]) -> [u8; 16] {
    let (zi, zo) = zero_salt_states();
    // PRK = HMAC(zeros, TEK)
    let mut s = *zi;
    compress(&mut s, &final_block(tek));
    let inner = state_bytes(&s);
    let mut s = *zo;
    compress(&mut s, &final_block(&inner));
    let mut prk = state_bytes(&s);
    // T(1) = HMAC(PRK, info || 0x01)
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for i in 0..32 {
        ipad[i] ^= prk[i];
        opad[i] ^= prk[i];
    }
    prk.zeroize();
    let mut si = SHA256_IV;
    compress(&mut si, &ipad);
    let mut so = SHA256_IV;
    compress(&mut so, &opad);
    ipad.zeroize();
    opad.zeroize();
    compress(&mut si, &final_block(b"EN-RPIK\x01"));
    let inner = state_bytes(&si);
    compress(&mut so, &final_block(&inner));
    let okm = state_bytes(&so);
    let mut out = [0u8; 16];
    out.copy_from_slice(&okm[..16]);
    out
}

/// Parse a 4-byte AEM from a slice.
impl Aem {
    /// From a slice of exactly 4 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        Ok(Aem(fixed(b, "AEM")?))
    }
}

impl Rpi {
    /// From a slice of exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        Ok(Rpi(fixed(b, "RPI")?))
    }
}

/// Check that `rolling_start` is a valid ENIN start for a day key of this crate.
pub fn check_day_aligned(rolling_start: Enin) -> Result<()> {
    if rolling_start.0 % INTERVALS_PER_DAY != 0 {
        return Err(Error::out_of_range(
            "rolling start",
            format!("{} is not day-aligned", rolling_start.0),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h16(s: &str) -> [u8; 16] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn official_vector_first_intervals() {
        let tek = Tek::from_bytes(h16("75c734c6dd1a782de7a965da5eb93125"));
        assert_eq!(tek.rpik().0, h16("185ad91db69ec7dd048960f1f3ba6175"));
        assert_eq!(tek.aemk().0, h16("d57c46af7a1d83965b9bed8bd152936a"));
        let rpi = tek.rpik().rpi(Enin(2_642_976));
        assert_eq!(rpi.0, h16("8be6cd371c5c891604bfbe49df845096"));
        let aem = tek
            .aemk()
            .encrypt(&rpi, &Metadata::from_bytes([0x40, 0x08, 0, 0]));
        assert_eq!(aem.0, [0x72, 0x03, 0x38, 0x74]);
    }

    #[test]
    fn fast_hkdf_equals_rfc5869() {
        let mut k = [0u8; 16];
        for i in 0..200u8 {
            k[(i % 16) as usize] = k[(i % 16) as usize].wrapping_mul(31).wrapping_add(i);
            assert_eq!(rpik_fast(&k), hkdf16(&k, RPIK_INFO));
        }
    }

    #[test]
    fn bulk_equals_single() {
        let tek = Tek::from_bytes([7; 16]);
        let rpik = tek.rpik();
        let all = rpik.rpis(Enin(1000), 144).unwrap();
        let mut buf = [Block::default(); 144];
        let fast = derive_rpis_into(tek.as_bytes(), 1000, 144, &mut buf);
        for (j, r) in all.iter().enumerate() {
            assert_eq!(*r, rpik.rpi(Enin(1000 + j as u32)));
            assert_eq!(r.0[..], fast[j][..]);
        }
        assert!(rpik.rpis(Enin(u32::MAX - 3), 144).is_err());
    }

    #[test]
    fn padded_data_is_little_endian() {
        assert_eq!(
            padded_data(0x01020304),
            *b"EN-RPI\0\0\0\0\0\0\x04\x03\x02\x01"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let tek = Tek::from_bytes([0xab; 16]);
        assert!(!format!("{tek:?}{:?}{:?}", tek.rpik(), tek.aemk()).contains("ab"));
    }

    proptest! {
        #[test]
        fn aem_round_trips(tek in any::<[u8; 16]>(), interval in any::<u32>(), md in any::<[u8; 4]>()) {
            let tek = Tek::from_bytes(tek);
            let rpi = tek.rpik().rpi(Enin(interval));
            let m = Metadata::from_bytes(md);
            let aem = tek.aemk().encrypt(&rpi, &m);
            prop_assert_eq!(tek.aemk().decrypt(&rpi, &aem), m);
        }
    }
}
