//! The Google/Apple Exposure Notification scheme, cryptography v1.2 (PROTOCOL.md §2).
//!
//! `TEK → RPIK → RPI_j` and `TEK → AEMK → AEM_j`. The derivation of all 144 RPIs of a key
//! is the hot path of matching (a phone derives them for every published key), so it is
//! shaped for speed: HKDF runs on precomputed HMAC states of the all-zero salt (six
//! SHA-256 compressions in all, see [`rpik_fast`]), the AES key is expanded once, and the
//! 144 blocks are encrypted in one pipelined pass.
//!
//! On x86-64 the two halves have hand-written kernels, chosen at run time and cached
//! (`cpu()`): SHA-NI for the six compressions (state kept in registers, the two independent
//! ones interleaved) and VAES on AVX-512 for the blocks (four per register, 48 in flight).
//! Everywhere else, and on x86-64 CPUs without those features, the RustCrypto `sha2` and
//! `aes` crates do the work. Both kernels are tested against those crates and the official
//! vectors. The figures are in `BENCHMARKS.md` (`bench/core.sh` reruns them).

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128Enc;
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
/// block) under the AES-128 key `rpik`, expanding the key once and pipelining the blocks.
///
/// On x86-64 CPUs with VAES and AVX-512 the blocks are encrypted four to a 512-bit
/// register, 48 at a time; elsewhere the `aes` crate does it (AES-NI, eight blocks at a
/// time, or its constant-time software AES).
#[inline]
pub fn encrypt_padded(rpik: &[u8; 16], start: u32, out: &mut [Block]) {
    #[cfg(target_arch = "x86_64")]
    if cpu().vaes512 {
        // SAFETY: `cpu()` found every feature `encrypt_padded_vaes` is compiled for.
        unsafe { x86::encrypt_padded_vaes(rpik, start, out) };
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
    {
        let cpu = cpu();
        if cpu.sha_ni && cpu.vaes512 {
            // SAFETY: `cpu()` found every feature `derive_rpis_fused` is compiled for.
            unsafe { x86::derive_rpis_fused(tek, rolling_start, out) };
            return out;
        }
    }
    let rpik = rpik_fast(tek);
    encrypt_padded(&rpik, rolling_start, out);
    out
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
    if cpu().sha_ni {
        // SAFETY: `cpu()` found every feature `rpik_sha_ni` is compiled for.
        return unsafe { x86::rpik_sha_ni(tek) };
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

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The SHA-256 round constants.
const K256: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// The SHA-256 state after the first block of HMAC with the 32-byte all-zero key
/// (`0^32 ⊕ ipad`, then zero padding to 64 bytes: 64 bytes of `0x36`).
const ZERO_SALT_INNER: [u32; 8] = const_compress(SHA256_IV, [0x3636_3636; 16]);
/// The same for the outer hash (64 bytes of `0x5c`).
const ZERO_SALT_OUTER: [u32; 8] = const_compress(SHA256_IV, [0x5c5c_5c5c; 16]);

/// The 16 big-endian words of the final block of `HMAC(PRK, "EN-RPIK" || 0x01)`'s inner
/// hash: the 8 message bytes, `0x80`, zeros, and the length `(64 + 8) * 8` bits.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const RPIK_T1_WORDS: [u32; 16] = [
    u32::from_be_bytes(*b"EN-R"),
    u32::from_be_bytes(*b"PIK\x01"),
    0x8000_0000,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    (64 + 8) * 8,
];

/// `W_t + K_t` for the 64 rounds of that constant block (its message schedule is fixed).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const RPIK_T1_WK: [u32; 64] = {
    let w = const_schedule(RPIK_T1_WORDS);
    let mut wk = [0u32; 64];
    let mut t = 0;
    while t < 64 {
        wk[t] = w[t].wrapping_add(K256[t]);
        t += 1;
    }
    wk
};

/// The SHA-256 message schedule of one block of big-endian words.
const fn const_schedule(block: [u32; 16]) -> [u32; 64] {
    let mut w = [0u32; 64];
    let mut t = 0;
    while t < 64 {
        w[t] = if t < 16 {
            block[t]
        } else {
            let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
            let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
            s1.wrapping_add(w[t - 7])
                .wrapping_add(s0)
                .wrapping_add(w[t - 16])
        };
        t += 1;
    }
    w
}

/// One SHA-256 compression (FIPS 180-4 §6.2.2) as a `const fn`, for the constants above.
const fn const_compress(state: [u32; 8], block: [u32; 16]) -> [u32; 8] {
    let w = const_schedule(block);
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
    let mut t = 0;
    while t < 64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(K256[t])
            .wrapping_add(w[t]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        h = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
        t += 1;
    }
    let mut out = state;
    let v = [a, b, c, d, e, f, g, h];
    let mut i = 0;
    while i < 8 {
        out[i] = out[i].wrapping_add(v[i]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// x86-64 acceleration: SHA-NI for the HKDF, VAES + AVX-512 for the AES blocks.
// ---------------------------------------------------------------------------------------

/// Which accelerated paths this CPU can take.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
struct Cpu {
    /// The SHA extensions, and the SSE levels [`x86::rpik_sha_ni`] also uses.
    sha_ni: bool,
    /// VAES on 512-bit registers (AVX-512F), and AES-NI for the key schedule.
    vaes512: bool,
}

/// The CPU's features, detected on first use and cached for the life of the process.
#[cfg(target_arch = "x86_64")]
#[inline]
fn cpu() -> Cpu {
    static CPU: std::sync::OnceLock<Cpu> = std::sync::OnceLock::new();
    *CPU.get_or_init(|| Cpu {
        sha_ni: std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1"),
        vaes512: std::is_x86_feature_detected!("vaes")
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("aes")
            && std::is_x86_feature_detected!("sse2"),
    })
}

/// The accelerated kernels. Every function here is compiled with `#[target_feature]`: the
/// entry points are `unsafe` to call and are called only after [`cpu`] has found those
/// features; inside, the intrinsics are safe, and the only `unsafe` left is the loads and
/// stores through pointers, each with its bounds argued.
///
/// The AVX-512 and VAES intrinsics are stable since Rust 1.89, the workspace's
/// `rust-version`.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Block, K256, RPIK_T1_WK, SHA256_IV, ZERO_SALT_INNER, ZERO_SALT_OUTER};

    /// A SHA-256 state in the register layout of the SHA extensions:
    /// `abef = [F, E, B, A]`, `cdgh = [H, G, D, C]` (lane 0 first).
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    /// A 64-byte block as 16 big-endian words, four to a register, lane 0 first.
    type Msg = [__m128i; 4];

    /// A state given as `H0..H7`.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn state(h: [u32; 8]) -> State {
        let h = h.map(|w| w as i32);
        State {
            abef: _mm_set_epi32(h[0], h[1], h[4], h[5]),
            cdgh: _mm_set_epi32(h[2], h[3], h[6], h[7]),
        }
    }

    /// The digest words `[H0..H3]` and `[H4..H7]`, ready to be the message words of the
    /// next block (a digest's bytes read back as big-endian words are its state words).
    #[target_feature(enable = "sse2")]
    #[inline]
    fn digest_words(s: State) -> [__m128i; 2] {
        // unpackhi = [B, D, A, C], unpacklo = [F, H, E, G]; 0x72 picks lanes 2, 0, 3, 1.
        [
            _mm_shuffle_epi32(_mm_unpackhi_epi32(s.abef, s.cdgh), 0x72),
            _mm_shuffle_epi32(_mm_unpacklo_epi32(s.abef, s.cdgh), 0x72),
        ]
    }

    /// The message of a final block holding a 32-byte digest after a 64-byte prefix.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn digest_msg(d: [__m128i; 2]) -> Msg {
        [
            d[0],
            d[1],
            _mm_set_epi32(0, 0, 0, 0x8000_0000u32 as i32),
            _mm_set_epi32((64 + 32) * 8, 0, 0, 0),
        ]
    }

    /// Four rounds: `wk` holds `W_t + K_t` for them.
    #[target_feature(enable = "sha,sse2")]
    #[inline]
    fn rounds4(s: &mut State, wk: __m128i) {
        s.cdgh = _mm_sha256rnds2_epu32(s.cdgh, s.abef, wk);
        s.abef = _mm_sha256rnds2_epu32(s.abef, s.cdgh, _mm_shuffle_epi32(wk, 0x0E));
    }

    /// `K_t` for rounds `4i .. 4i+4`.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn k4(i: usize) -> __m128i {
        let k = |j: usize| K256[4 * i + j] as i32;
        _mm_set_epi32(k(3), k(2), k(1), k(0))
    }

    /// Rounds `4I .. 4I+4` of `N` independent compressions, with the message words
    /// `W[4I .. 4I+4]` computed from the previous sixteen, which sit in the ring `m[n]`.
    /// `I` is a constant so that every index is, and the ring stays in registers.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn group<const I: usize, const N: usize>(s: &mut [State; N], m: &mut [Msg; N]) {
        for n in 0..N {
            if I >= 4 {
                let [v0, v1, v2, v3] =
                    [I % 4, (I + 1) % 4, (I + 2) % 4, (I + 3) % 4].map(|j| m[n][j]);
                let t = _mm_add_epi32(_mm_sha256msg1_epu32(v0, v1), _mm_alignr_epi8(v3, v2, 4));
                m[n][I % 4] = _mm_sha256msg2_epu32(t, v3);
            }
            rounds4(&mut s[n], _mm_add_epi32(m[n][I % 4], k4(I)));
        }
    }

    /// `N` independent SHA-256 compressions, interleaved four rounds at a time so that
    /// the latency of one chain hides in the other's.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn compress<const N: usize>(s0: [State; N], mut m: [Msg; N]) -> [State; N] {
        let mut s = s0;
        macro_rules! groups {
            ($($i:literal)*) => { $( group::<$i, N>(&mut s, &mut m); )* };
        }
        groups!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        for n in 0..N {
            s[n].abef = _mm_add_epi32(s[n].abef, s0[n].abef);
            s[n].cdgh = _mm_add_epi32(s[n].cdgh, s0[n].cdgh);
        }
        s
    }

    /// One compression of the constant block whose `W_t + K_t` are `wk`.
    #[target_feature(enable = "sha,sse2")]
    #[inline]
    fn compress_const(s0: State, wk: &[u32; 64]) -> State {
        let mut s = s0;
        macro_rules! groups {
            ($($i:literal)*) => { $(
                let w = |j: usize| wk[4 * $i + j] as i32;
                rounds4(&mut s, _mm_set_epi32(w(3), w(2), w(1), w(0)));
            )* };
        }
        groups!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        State {
            abef: _mm_add_epi32(s.abef, s0.abef),
            cdgh: _mm_add_epi32(s.cdgh, s0.cdgh),
        }
    }

    /// Reverse the bytes of each 32-bit lane (big-endian words ↔ bytes).
    #[target_feature(enable = "ssse3")]
    #[inline]
    fn bswap32(x: __m128i) -> __m128i {
        let mask = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
        _mm_shuffle_epi8(x, mask)
    }

    /// The RPIK of `tek` as an AES key register (its 16 bytes in memory order).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn rpik_vec(tek: &[u8; 16]) -> __m128i {
        let w = |j: usize| u32::from_be_bytes([tek[j], tek[j + 1], tek[j + 2], tek[j + 3]]);
        let tek_msg = [
            _mm_set_epi32(w(12) as i32, w(8) as i32, w(4) as i32, w(0) as i32),
            _mm_set_epi32(0, 0, 0, 0x8000_0000u32 as i32),
            _mm_setzero_si128(),
            _mm_set_epi32((64 + 16) * 8, 0, 0, 0),
        ];
        // PRK = HMAC(0^32, TEK): inner and outer hash over the precomputed key blocks.
        let [inner] = compress([state(ZERO_SALT_INNER)], [tek_msg]);
        let [prk] = compress([state(ZERO_SALT_OUTER)], [digest_msg(digest_words(inner))]);
        // T(1) = HMAC(PRK, "EN-RPIK" || 0x01): the two key blocks are independent.
        let [p0, p1] = digest_words(prk);
        let pad = |c: i32| {
            let c = _mm_set1_epi32(c);
            [_mm_xor_si128(p0, c), _mm_xor_si128(p1, c), c, c]
        };
        let iv = state(SHA256_IV);
        let [si, so] = compress([iv, iv], [pad(0x3636_3636), pad(0x5c5c_5c5c)]);
        let si = compress_const(si, &RPIK_T1_WK);
        let [so] = compress([so], [digest_msg(digest_words(si))]);
        bswap32(digest_words(so)[0])
    }

    /// [`super::rpik_fast`] on SHA-NI.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn rpik_sha_ni(tek: &[u8; 16]) -> [u8; 16] {
        let k = rpik_vec(tek);
        let mut out = [0u8; 16];
        // SAFETY: `out` is 16 writable bytes; the store is unaligned.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), k) };
        out
    }

    /// The AES-128 key schedule (FIPS 197 §5.2) with `aeskeygenassist`.
    #[target_feature(enable = "aes,sse2")]
    #[inline]
    fn expand_key(key: __m128i) -> [__m128i; 11] {
        #[target_feature(enable = "aes,sse2")]
        #[inline]
        fn next<const RCON: i32>(k: __m128i) -> __m128i {
            let a = _mm_shuffle_epi32(_mm_aeskeygenassist_si128::<RCON>(k), 0xff);
            let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            _mm_xor_si128(k, a)
        }
        let k0 = key;
        let k1 = next::<0x01>(k0);
        let k2 = next::<0x02>(k1);
        let k3 = next::<0x04>(k2);
        let k4 = next::<0x08>(k3);
        let k5 = next::<0x10>(k4);
        let k6 = next::<0x20>(k5);
        let k7 = next::<0x40>(k6);
        let k8 = next::<0x80>(k7);
        let k9 = next::<0x1b>(k8);
        let k10 = next::<0x36>(k9);
        [k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10]
    }

    /// Registers (of four blocks each) encrypted together: 12 × 4 = 48 blocks in flight,
    /// three groups for a day's 144; with the 11 round keys that is 23 of the 32 registers.
    const GROUP: usize = 12;

    /// Encrypt `count` registers of padded data from counter register `ctr` (advancing it)
    /// with round keys `k`.
    #[target_feature(enable = "avx512f,vaes")]
    #[inline]
    fn encrypt_regs<const N: usize>(k: &[__m512i; 11], ctr: &mut __m512i) -> [__m512i; N] {
        let four = _mm512_set4_epi32(4, 0, 0, 0);
        let mut s = [_mm512_setzero_si512(); N];
        for x in s.iter_mut() {
            *x = _mm512_xor_si512(*ctr, k[0]);
            *ctr = _mm512_add_epi32(*ctr, four);
        }
        for rk in &k[1..10] {
            for x in s.iter_mut() {
                *x = _mm512_aesenc_epi128(*x, *rk);
            }
        }
        for x in s.iter_mut() {
            *x = _mm512_aesenclast_epi128(*x, k[10]);
        }
        s
    }

    /// `encrypt_padded` with the key already in a register.
    #[target_feature(enable = "aes,sse2,avx512f,vaes")]
    #[inline]
    fn encrypt_vaes(key: __m128i, start: u32, out: &mut [Block]) {
        let rk = expand_key(key);
        let mut k = [_mm512_setzero_si512(); 11];
        for (k, r) in k.iter_mut().zip(rk) {
            *k = _mm512_broadcast_i32x4(r);
        }
        // Four padded blocks "EN-RPI" || 0^6 || LE32(start + q), q = 0..3, as little-endian
        // 32-bit lanes: "EN-R", "PI\0\0", 0, start + q.
        let prefix = _mm512_set4_epi32(
            start as i32,
            0,
            i32::from_le_bytes(*b"PI\0\0"),
            i32::from_le_bytes(*b"EN-R"),
        );
        let mut ctr = _mm512_add_epi32(
            prefix,
            _mm512_set_epi32(3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0),
        );
        let mut groups = out.chunks_exact_mut(4 * GROUP);
        for g in &mut groups {
            let s = encrypt_regs::<GROUP>(&k, &mut ctr);
            let p = g.as_mut_ptr().cast::<__m512i>();
            for (i, x) in s.into_iter().enumerate() {
                // SAFETY: `g` is 4 * GROUP blocks of 16 bytes; register i goes to bytes
                // 64i .. 64i + 64 of it, i < GROUP. The store is unaligned.
                unsafe { _mm512_storeu_si512(p.add(i), x) };
            }
        }
        for q in groups.into_remainder().chunks_mut(4) {
            let [x] = encrypt_regs::<1>(&k, &mut ctr);
            // One 64-bit mask bit per half block: 2 per block, q.len() ≤ 4 blocks.
            let mask = (((1u32 << (2 * q.len())) - 1) & 0xff) as __mmask8;
            // SAFETY: the mask selects the first 16 * q.len() bytes, exactly `q`; the
            // masked-off lanes are neither written nor faulted on. Unaligned is allowed.
            unsafe { _mm512_mask_storeu_epi64(q.as_mut_ptr().cast(), mask, x) };
        }
    }

    /// [`super::encrypt_padded`] on VAES + AVX-512.
    #[target_feature(enable = "aes,sse2,avx512f,vaes")]
    pub(super) fn encrypt_padded_vaes(rpik: &[u8; 16], start: u32, out: &mut [Block]) {
        // SAFETY: `rpik` is 16 readable bytes; the load is unaligned.
        let key = unsafe { _mm_loadu_si128(rpik.as_ptr().cast()) };
        encrypt_vaes(key, start, out);
    }

    /// [`super::derive_rpis_into`] with both kernels, the RPIK never leaving a register.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1,aes,avx512f,vaes")]
    pub(super) fn derive_rpis_fused(tek: &[u8; 16], start: u32, out: &mut [Block]) {
        encrypt_vaes(rpik_vec(tek), start, out);
    }
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
    if !rolling_start.0.is_multiple_of(INTERVALS_PER_DAY) {
        return Err(Error::out_of_range(
            "rolling start",
            format!("{} is not day-aligned", rolling_start.0),
        ));
    }
    Ok(())
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
    fn const_sha256_equals_sha2() {
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
        let mut words = [0u32; 16];
        for (w, c) in words
            .iter_mut()
            .zip(final_block(RPIK_T1_MSG).chunks_exact(4))
        {
            *w = u32::from_be_bytes(c.try_into().unwrap());
        }
        assert_eq!(words, RPIK_T1_WORDS);
        let mut s = SHA256_IV;
        compress(&mut s, &final_block(RPIK_T1_MSG));
        assert_eq!(const_compress(SHA256_IV, RPIK_T1_WORDS), s);
    }

    /// Which accelerated paths ran, so that a CPU without them does not pass silently.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn report_accelerated_paths() {
        eprintln!("gaen acceleration on this CPU: {:?}", cpu());
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
