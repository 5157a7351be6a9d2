//! The Google/Apple Exposure Notification scheme, cryptography v1.2 (PROTOCOL.md §2).
//!
//! `TEK → RPIK → RPI_j` and `TEK → AEMK → AEM_j`. The derivation of all 144 RPIs of a key
//! is the hot path of matching (a phone derives them for every published key), so it is
//! shaped for speed: HKDF runs on precomputed HMAC states of the all-zero salt (six
//! SHA-256 compressions in all, see [`rpik_fast`]), the AES key is expanded once, and the
//! 144 blocks are encrypted in one pipelined pass. Matching derives four keys at a time
//! ([`derive_rpis_many`]): one key's six compressions form a chain, each waiting on the
//! last, so four independent chains interleaved keep the SHA unit busy.
//!
//! On x86-64 the two halves have hand-written kernels, chosen at run time and cached
//! (`x86::cpu()`, in `gaen/x86.rs`, the crate's only `unsafe` code): SHA-NI for the six compressions (state kept in registers, the two independent
//! ones interleaved) and VAES on AVX-512 for the blocks (four per register, 48 in flight).
//! Everywhere else, and on x86-64 CPUs without those features, the RustCrypto `sha2` and
//! `aes` crates do the work. Both kernels are tested against those crates and the official
//! vectors. The figures are in `BENCHMARKS.md` (`bench/core.sh` reruns them).

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128Enc;
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::Result;
use crate::fixed;
use crate::sha256::{self, IV as SHA256_IV};
use crate::time::{Enin, INTERVALS_PER_DAY};

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

/// The Rolling Proximity Identifier Key: the 16 bytes of an AES-128 key. No key schedule is
/// kept; [`Rpik::rpi`] expands it for one block, [`Rpik::rpis`] once for a whole run.
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
        let cipher = Aes128Enc::new(GenericArray::from_slice(&self.0));
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
        let cipher = Aes128Enc::new(GenericArray::from_slice(&self.0));
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
/// block) under the AES-128 key `rpik`, expanding the key once and pipelining the blocks.
///
/// On x86-64 CPUs with VAES and AVX-512 the blocks are encrypted four to a 512-bit
/// register, 48 at a time; elsewhere the `aes` crate does it (AES-NI, eight blocks at a
/// time, or its constant-time software AES).
#[inline]
pub fn encrypt_padded(rpik: &[u8; 16], start: u32, out: &mut [Block]) {
    #[cfg(target_arch = "x86_64")]
    if x86::encrypt_padded(rpik, start, out) {
        return;
    }
    encrypt_padded_portable(rpik, start, out);
}

/// [`encrypt_padded`] with the `aes` crate only.
fn encrypt_padded_portable(rpik: &[u8; 16], start: u32, out: &mut [Block]) {
    let cipher = Aes128Enc::new(GenericArray::from_slice(rpik));
    let mut block = GenericArray::from(padded_data(start));
    for (j, o) in out.iter_mut().enumerate() {
        // One template, only the interval number (the last four bytes) patched. Calling
        // `padded_data` here instead made the compiler assemble each block on the stack
        // from narrow stores and read it back wide, a failed store-to-load forward per
        // block: 4× slower than this whole function (BENCHMARKS.md).
        block[12..].copy_from_slice(&start.wrapping_add(j as u32).to_le_bytes());
        *o = block;
    }
    cipher.encrypt_blocks(out);
}

/// Derive the RPIs of a whole key (all intervals of `period`) into `out`, which must hold
/// at least `period` elements. This is the matching hot path: six SHA-256 compressions and
/// one pipelined AES pass. Returns the filled prefix.
#[inline]
pub fn derive_rpis_into<'a>(
    tek: &[u8; 16],
    rolling_start: u32,
    period: u32,
    out: &'a mut [Block; INTERVALS_PER_DAY as usize],
) -> &'a [Block] {
    let n = (period.min(INTERVALS_PER_DAY)) as usize;
    let out = &mut out[..n];
    #[cfg(target_arch = "x86_64")]
    if x86::derive_rpis(tek, rolling_start, out) {
        return out;
    }
    let rpik = rpik_fast(tek);
    encrypt_padded(&rpik, rolling_start, out);
    out
}

/// The RPIs of one key's whole day: [`INTERVALS_PER_DAY`] blocks.
pub type DayBlocks = [Block; INTERVALS_PER_DAY as usize];

/// How many keys [`derive_rpis_many`] derives together: four HKDF chains keep the SHA-NI
/// unit busy (one chain alone waits on the latency of every round).
pub const LANES: usize = 4;

/// Derive all [`INTERVALS_PER_DAY`] RPIs of several keys: `out[i]` receives those of
/// `keys[i] = (TEK, rolling start)`, interval `start + j` in block `j` (the counter wraps
/// like [`encrypt_padded`]'s). A key with a shorter rolling period uses the prefix of its
/// blocks. Only `min(keys.len(), out.len())` keys are derived.
///
/// This is the matching hot path. On x86-64 CPUs with SHA-NI and VAES + AVX-512 the keys
/// go through in groups of [`LANES`] (the tail in one smaller group): the groups' HKDFs
/// interleaved on SHA-NI, their AES key schedules interleaved, then their blocks on VAES.
/// Elsewhere each key takes [`derive_rpis_into`]'s path. Both give the same blocks
/// (tested for every group size and tail).
pub fn derive_rpis_many(keys: &[([u8; 16], u32)], out: &mut [DayBlocks]) {
    let n = keys.len().min(out.len());
    let (keys, out) = (&keys[..n], &mut out[..n]);
    #[cfg(target_arch = "x86_64")]
    if x86::derive_rpis_many(keys, out) {
        return;
    }
    derive_rpis_many_portable(keys, out);
}

/// A pre-filter as the vector kernel reads it: `2^(64 - shift)` bits in words, an id
/// passing when its word (`prefix >> shift >> 6`) has three bits set (see `matching.rs`).
pub(crate) type WordFilter<'a> = (&'a [u64], u32);

/// [`derive_rpis_many`], each key's RPIs also tested against its pre-filter
/// (`filters[i]`) while still in registers: bit `j % 48` of `pass[i][j / 48]` is set when
/// RPI `j` of key `i` passes. `false` (nothing done) off x86-64, on CPUs without SHA-NI and
/// VAES + AVX-512, or when the lengths differ; the caller then derives with
/// [`derive_rpis_many`] and filters apart.
#[inline]
pub(crate) fn derive_rpis_prefiltered(
    keys: &[([u8; 16], u32)],
    filters: &[WordFilter<'_>],
    out: &mut [DayBlocks],
    pass: &mut [[u64; 3]],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if out.len() == keys.len() {
        return x86::derive_rpis_prefiltered(keys, filters, out, pass);
    }
    let _ = (keys, filters, out, pass);
    false
}

/// [`derive_rpis_many`] one key at a time.
fn derive_rpis_many_portable(keys: &[([u8; 16], u32)], out: &mut [DayBlocks]) {
    for ((tek, start), o) in keys.iter().zip(out.iter_mut()) {
        derive_rpis_into(tek, *start, INTERVALS_PER_DAY, o);
    }
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

/// `HKDF-SHA256(tek, no salt, "EN-RPIK", 16)` in six SHA-256 compressions: the zero-salt
/// HMAC states are precomputed (at compile time), leaving two compressions for
/// `PRK = HMAC(0^32, TEK)` and four for `HMAC(PRK, "EN-RPIK" || 0x01)`. Equal to the
/// RFC 5869 construction (tested).
///
/// On x86-64 CPUs with the SHA extensions the six compressions run on SHA-NI with the
/// state kept in registers between them, and the two independent ones (`PRK ⊕ ipad`,
/// `PRK ⊕ opad`) interleaved; elsewhere `sha2::compress256` does them.
#[inline]
pub fn rpik_fast(tek: &[u8; 16]) -> [u8; 16] {
    #[cfg(target_arch = "x86_64")]
    if let Some(rpik) = x86::rpik(tek) {
        return rpik;
    }
    rpik_portable(tek)
}

/// [`rpik_fast`] with `sha2::compress256`.
fn rpik_portable(tek: &[u8; 16]) -> [u8; 16] {
    // PRK = HMAC(zeros, TEK)
    let mut s = ZERO_SALT_INNER;
    compress(&mut s, &final_block(tek));
    let inner = state_bytes(&s);
    let mut s = ZERO_SALT_OUTER;
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
    compress(&mut si, &final_block(RPIK_T1_MSG));
    let inner = state_bytes(&si);
    compress(&mut so, &final_block(&inner));
    let okm = state_bytes(&so);
    let mut out = [0u8; 16];
    out.copy_from_slice(&okm[..16]);
    out
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

// ---------------------------------------------------------------------------------------
// SHA-256 constants, computed at compile time.
// ---------------------------------------------------------------------------------------

/// The message of the only HKDF-Expand block: `info || 0x01`.
const RPIK_T1_MSG: &[u8; 8] = b"EN-RPIK\x01";

/// The SHA-256 state after the first block of HMAC with the 32-byte all-zero key
/// (`0^32 ⊕ ipad`, then zero padding to 64 bytes: 64 bytes of `0x36`).
const ZERO_SALT_INNER: [u32; 8] = sha256::compress(SHA256_IV, [0x3636_3636; 16]);
/// The same for the outer hash (64 bytes of `0x5c`).
const ZERO_SALT_OUTER: [u32; 8] = sha256::compress(SHA256_IV, [0x5c5c_5c5c; 16]);

/// `W_t + K_t` for the 64 rounds of the final block of `HMAC(PRK, "EN-RPIK" || 0x01)`'s
/// inner hash, whose message is a constant.
#[cfg(target_arch = "x86_64")]
static RPIK_T1_WK: sha256::Wk = sha256::final_block_wk(RPIK_T1_MSG);

// ---------------------------------------------------------------------------------------
// x86-64 acceleration: SHA-NI for the HKDF, VAES + AVX-512 for the AES blocks.
// ---------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
mod x86;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    /// The official vector file: every RPI of the key through the hot path, and the RPIK
    /// through both HKDF paths.
    #[test]
    fn official_vector_all_144_rpis() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../spec-vectors/gaen-official.json")).unwrap();
        let case = &v["cases"][0];
        let tek = h16(case["tek"].as_str().unwrap());
        let start = case["rolling_start_interval_number"].as_u64().unwrap() as u32;
        let rpik = h16(case["rpik"].as_str().unwrap());
        assert_eq!(rpik_fast(&tek), rpik);
        assert_eq!(rpik_portable(&tek), rpik);
        let ids = case["identifiers"].as_array().unwrap();
        assert_eq!(ids.len(), 144);
        let mut buf = [Block::default(); 144];
        let fast = derive_rpis_into(&tek, start, 144, &mut buf);
        let mut portable = [Block::default(); 144];
        encrypt_padded_portable(&rpik, start, &mut portable);
        for (j, id) in ids.iter().enumerate() {
            assert_eq!(id["interval"].as_u64().unwrap() as u32, start + j as u32);
            let want = h16(id["rpi"].as_str().unwrap());
            assert_eq!(fast[j][..], want, "interval {j}");
            assert_eq!(portable[j][..], want, "interval {j}");
        }
    }

    #[test]
    fn zero_salt_states_equal_sha2() {
        assert_eq!(
            (ZERO_SALT_INNER, ZERO_SALT_OUTER),
            (
                {
                    let mut s = SHA256_IV;
                    compress(&mut s, &[0x36; 64]);
                    s
                },
                {
                    let mut s = SHA256_IV;
                    compress(&mut s, &[0x5c; 64]);
                    s
                }
            )
        );
    }

    /// Which accelerated paths ran, so that a CPU without them does not pass silently.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn report_accelerated_paths() {
        eprintln!("gaen acceleration on this CPU: {:?}", x86::cpu());
    }

    proptest! {
        /// The SHA-NI HKDF (when this CPU has it) equals the portable one and RFC 5869.
        #[test]
        fn rpik_paths_agree(tek in any::<[u8; 16]>()) {
            let want = hkdf16(&tek, RPIK_INFO);
            prop_assert_eq!(rpik_portable(&tek), want);
            prop_assert_eq!(rpik_fast(&tek), want);
        }

        /// The VAES path (when this CPU has it) equals the `aes` crate for every length
        /// (full groups, whole registers, partial registers) and for counters that wrap.
        #[test]
        fn encrypt_paths_agree(
            key in any::<[u8; 16]>(),
            start in prop_oneof![any::<u32>(), (u32::MAX - 200)..=u32::MAX],
            len in 0usize..=200,
        ) {
            let mut fast = vec![Block::default(); len];
            let mut portable = vec![Block::default(); len];
            encrypt_padded(&key, start, &mut fast);
            encrypt_padded_portable(&key, start, &mut portable);
            prop_assert_eq!(fast, portable);
        }

        /// The fused hot path equals the two portable halves, for every period length.
        #[test]
        fn derive_paths_agree(tek in any::<[u8; 16]>(), start in any::<u32>(), period in 0u32..=200) {
            let mut buf = [Block::default(); 144];
            let fast = derive_rpis_into(&tek, start, period, &mut buf).to_vec();
            let n = period.min(144) as usize;
            let mut portable = vec![Block::default(); n];
            encrypt_padded_portable(&rpik_portable(&tek), start, &mut portable);
            prop_assert_eq!(fast, portable);
        }
    }

    /// The portable derivation of `keys`, one key at a time with the `sha2` and `aes`
    /// crates only: what every accelerated path must equal.
    fn portable_many(keys: &[([u8; 16], u32)]) -> Vec<DayBlocks> {
        keys.iter()
            .map(|(tek, start)| {
                let mut b = [Block::default(); 144];
                encrypt_padded_portable(&rpik_portable(tek), *start, &mut b);
                b
            })
            .collect()
    }

    /// Every group size and tail (1..=9 keys: two full groups of four and every
    /// remainder), the official key among them, against the portable path and the
    /// official RPIs.
    #[test]
    fn many_official_vector_in_every_lane() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../spec-vectors/gaen-official.json")).unwrap();
        let case = &v["cases"][0];
        let tek = h16(case["tek"].as_str().unwrap());
        let start = case["rolling_start_interval_number"].as_u64().unwrap() as u32;
        let ids = case["identifiers"].as_array().unwrap();
        for n in 1..=9usize {
            for lane in 0..n {
                let keys: Vec<([u8; 16], u32)> = (0..n)
                    .map(|i| {
                        if i == lane {
                            (tek, start)
                        } else {
                            ([i as u8; 16], 1000 * i as u32)
                        }
                    })
                    .collect();
                let mut out = vec![[Block::default(); 144]; n];
                derive_rpis_many(&keys, &mut out);
                assert_eq!(out, portable_many(&keys), "{n} keys");
                for (j, id) in ids.iter().enumerate() {
                    assert_eq!(
                        out[lane][j][..],
                        h16(id["rpi"].as_str().unwrap()),
                        "{n} keys, lane {lane}, interval {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn many_derives_only_what_fits() {
        let keys = [([1u8; 16], 5u32), ([2; 16], 6), ([3; 16], 7)];
        let mut out = vec![[Block::default(); 144]; 2];
        derive_rpis_many(&keys, &mut out);
        assert_eq!(out, portable_many(&keys[..2]));
        let mut out = vec![[Block::default(); 144]; 5];
        derive_rpis_many(&keys, &mut out);
        assert_eq!(out[..3], portable_many(&keys)[..]);
        assert!(out[3..]
            .iter()
            .all(|b| b.iter().all(|x| x[..] == [0u8; 16])));
        derive_rpis_many(&[], &mut out);
    }

    proptest! {
        /// The interleaved path equals the portable one for 1..=9 keys (groups of four and
        /// every tail), with counters that wrap.
        #[test]
        fn many_paths_agree(
            keys in proptest::collection::vec(
                (any::<[u8; 16]>(), prop_oneof![any::<u32>(), (u32::MAX - 200)..=u32::MAX]),
                1..=9,
            ),
        ) {
            let mut out = vec![[Block::default(); 144]; keys.len()];
            derive_rpis_many(&keys, &mut out);
            prop_assert_eq!(&out, &portable_many(&keys));
            let mut fallback = vec![[Block::default(); 144]; keys.len()];
            derive_rpis_many_portable(&keys, &mut fallback);
            prop_assert_eq!(out, fallback);
        }
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
