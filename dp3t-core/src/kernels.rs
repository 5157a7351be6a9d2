//! x86-64 kernels of the DP-3T low-cost and hybrid designs: SHA-NI for the HMAC-SHA256
//! PRFs and the low-cost key chain, VAES on AVX-512 for the AES-256-CTR keystreams.
//!
//! Both designs derive, per published key, `PRF = HMAC-SHA256(key, constant message)` and
//! then an AES-256-CTR keystream under the PRF from a zero counter block. A phone does this
//! for every published key, so the kernels work on [`LANES`] keys at once:
//!
//! - the SHA-256 compressions of different keys are independent, so they run interleaved
//!   two at a time (the rounds of one hide the latency of the other's), and the inner
//!   HMAC block, whose message is a constant of the design, runs from a message schedule
//!   computed at compile time;
//! - the four keys' AES-256 key schedules are expanded together in one 512-bit register
//!   per round key (one key per 128-bit lane; `vaesenclast` in place of
//!   `aeskeygenassist`, which has no 512-bit form), and the counter blocks are encrypted
//!   four keys to a register: block `j` of each key shares the counter `j`, so a register
//!   holds block `j` of the four keystreams.
//!
//! Every kernel is compiled with `#[target_feature]`; the safe entry points call one only
//! after [`cpu`] has found its features and otherwise return `false`, so that the caller
//! takes the portable path (the RustCrypto crates, in `lowcost.rs`). The tests in
//! `lowcost.rs` and `hybrid.rs` check both paths against each other and the vectors.
//!
//! The GAEN kernels in `gaen/x86.rs` use the SHA-NI rounds here (with their own AES-128
//! key schedule and blocks).

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use crate::sha256::{final_block_wk, Wk, IV, K};
use crate::EphId;

/// Keys derived at once by one call of a kernel.
pub(crate) const LANES: usize = 4;
/// Most EphIDs per key in either design (a day of 15-minute epochs).
pub(crate) const MAX_BLOCKS: usize = 96;

/// Whether this CPU has every feature the kernels use: the SHA extensions (with SSSE3 and
/// SSE4.1), AES-NI, and VAES on AVX-512 (F and BW, for the per-lane byte shuffles and
/// shifts of the key schedule). Detected once and cached.
#[inline]
fn cpu() -> bool {
    static CPU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CPU.get_or_init(|| {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1")
            && std::is_x86_feature_detected!("aes")
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("vaes")
    })
}

/// Whether the kernels run on this CPU (tests use it to say which paths they compared).
#[cfg(test)]
pub(crate) fn available() -> bool {
    cpu()
}

/// One low-cost day step for [`LANES`] chains: from each day key `SK_t`, the day's first
/// `n` EphIDs into `out[lane][..n]`, and `SK_{t+1} = SHA-256(SK_t)` in place of the key.
/// `false` (nothing written) when the CPU lacks the features; `n` must be at most 96.
#[inline]
pub(crate) fn lowcost_step(
    keys: &mut [[u8; 32]; LANES],
    n: usize,
    out: &mut [[EphId; MAX_BLOCKS]; LANES],
) -> bool {
    if !cpu() || n > MAX_BLOCKS {
        return false;
    }
    // SAFETY: `cpu()` found every feature `lowcost_step_x86` is compiled for.
    unsafe { lowcost_step_x86(keys, n, out) };
    true
}

/// The hybrid EphIDs of [`LANES`] window seeds: the first `n` blocks of each seed's
/// keystream into `out[lane][..n]`. `false` (nothing written) when the CPU lacks the
/// features; `n` must be at most 96.
#[inline]
pub(crate) fn hybrid_ephids(
    seeds: &[[u8; 16]; LANES],
    n: usize,
    out: &mut [[EphId; MAX_BLOCKS]; LANES],
) -> bool {
    if !cpu() || n > MAX_BLOCKS {
        return false;
    }
    // SAFETY: `cpu()` found every feature `hybrid_ephids_x86` is compiled for.
    unsafe { hybrid_ephids_x86(seeds, n, out) };
    true
}

// ---------------------------------------------------------------------------------------
// The compile-time message schedules of the constant HMAC blocks.

/// The low-cost PRF's inner block: `"broadcast key"`.
static LOWCOST_WK: Wk = final_block_wk(crate::lowcost::BROADCAST_KEY);
/// The hybrid PRF's inner block: `"DP3T-HYBRID"`.
static HYBRID_WK: Wk = final_block_wk(crate::hybrid::HYBRID_INFO);

// ---------------------------------------------------------------------------------------
// SHA-NI, shared with the GAEN kernel (`gaen/x86.rs`).

/// A SHA-256 state as the SHA extensions hold it: `abef = [F, E, B, A]`,
/// `cdgh = [H, G, D, C]` (lane 0 first).
#[derive(Clone, Copy)]
pub(crate) struct Sha {
    pub(crate) abef: __m128i,
    pub(crate) cdgh: __m128i,
}

/// The state `H0..H7`.
#[target_feature(enable = "sse2")]
#[inline]
pub(crate) fn sha_state(h: [u32; 8]) -> Sha {
    let h = h.map(|x| x as i32);
    Sha {
        abef: _mm_set_epi32(h[0], h[1], h[4], h[5]),
        cdgh: _mm_set_epi32(h[2], h[3], h[6], h[7]),
    }
}

/// The digest as words `[H0, H1, H2, H3]`, `[H4, H5, H6, H7]` (lane 0 first): the message
/// words of a block that starts with the digest, and a day key in the low-cost chain.
#[target_feature(enable = "sse2")]
#[inline]
pub(crate) fn sha_words(s: Sha) -> [__m128i; 2] {
    // unpackhi = [H1, H3, H0, H2] and unpacklo = [H5, H7, H4, H6]; 0x72 takes lanes 2, 0, 3, 1.
    [
        _mm_shuffle_epi32::<0x72>(_mm_unpackhi_epi32(s.abef, s.cdgh)),
        _mm_shuffle_epi32::<0x72>(_mm_unpacklo_epi32(s.abef, s.cdgh)),
    ]
}

/// Swap the bytes of each 32-bit lane: bytes in memory order ↔ big-endian words.
#[target_feature(enable = "ssse3")]
#[inline]
pub(crate) fn bswap32(x: __m128i) -> __m128i {
    _mm_shuffle_epi8(
        x,
        _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3),
    )
}

/// Four rounds with `W_t + K_t` in `wk`.
#[target_feature(enable = "sha,sse2")]
#[inline]
pub(crate) fn rounds4(s: &mut Sha, wk: __m128i) {
    s.cdgh = _mm_sha256rnds2_epu32(s.cdgh, s.abef, wk);
    s.abef = _mm_sha256rnds2_epu32(s.abef, s.cdgh, _mm_shuffle_epi32::<0x0E>(wk));
}

/// `K_t` of rounds `4g .. 4g + 4`.
#[target_feature(enable = "sse2")]
#[inline]
fn k4(g: usize) -> __m128i {
    let k = |j: usize| K[4 * g + j] as i32;
    _mm_set_epi32(k(3), k(2), k(1), k(0))
}

/// Rounds `4G .. 4G + 4` of `N` independent compressions; `m[n]` is a ring of the last 16
/// message words of compression `n`, updated with `W[4G .. 4G + 4]` (FIPS 180-4 §6.2.2
/// step 1, by `sha256msg1`/`sha256msg2`). `G` is a constant, so every ring index is.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
pub(crate) fn sha_group<const G: usize, const N: usize>(
    s: &mut [Sha; N],
    m: &mut [[__m128i; 4]; N],
) {
    for n in 0..N {
        if G >= 4 {
            // W[t..t+4] from W[t-16..t-12], W[t-12..t-8], W[t-7..t-3] and W[t-4..t].
            let (a, b, c, d) = (
                m[n][G % 4],
                m[n][(G + 1) % 4],
                m[n][(G + 2) % 4],
                m[n][(G + 3) % 4],
            );
            let x = _mm_add_epi32(_mm_sha256msg1_epu32(a, b), _mm_alignr_epi8::<4>(d, c));
            m[n][G % 4] = _mm_sha256msg2_epu32(x, d);
        }
        rounds4(&mut s[n], _mm_add_epi32(m[n][G % 4], k4(G)));
    }
}

/// `N` independent SHA-256 compressions of the blocks `m` (as big-endian words) on the
/// states `s0`, interleaved four rounds at a time.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
pub(crate) fn sha_compress<const N: usize>(s0: [Sha; N], mut m: [[__m128i; 4]; N]) -> [Sha; N] {
    let mut s = s0;
    macro_rules! groups {
        ($($g:literal)*) => { $( sha_group::<$g, N>(&mut s, &mut m); )* };
    }
    groups!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    for n in 0..N {
        s[n].abef = _mm_add_epi32(s[n].abef, s0[n].abef);
        s[n].cdgh = _mm_add_epi32(s[n].cdgh, s0[n].cdgh);
    }
    s
}

/// `N` independent compressions of the same constant block, given as its `W_t + K_t`.
#[target_feature(enable = "sha,sse2")]
#[inline]
pub(crate) fn sha_compress_wk<const N: usize>(s0: [Sha; N], wk: &Wk) -> [Sha; N] {
    let mut s = s0;
    for g in 0..16 {
        // SAFETY: `wk.0` is 64 words, 16-byte aligned; words 4g .. 4g + 4 (g < 16) are in it.
        let w = unsafe { _mm_load_si128(wk.0.as_ptr().add(4 * g).cast()) };
        for x in s.iter_mut() {
            rounds4(x, w);
        }
    }
    for n in 0..N {
        s[n].abef = _mm_add_epi32(s[n].abef, s0[n].abef);
        s[n].cdgh = _mm_add_epi32(s[n].cdgh, s0[n].cdgh);
    }
    s
}

/// A padded final block holding `msg` (32 bytes, as words) after `prefix_bytes` bytes.
#[target_feature(enable = "sse2")]
#[inline]
pub(crate) fn block_of_32(msg: [__m128i; 2], prefix_bytes: i32) -> [__m128i; 4] {
    [
        msg[0],
        msg[1],
        _mm_set_epi32(0, 0, 0, 0x8000_0000u32 as i32),
        _mm_set_epi32((prefix_bytes + 32) * 8, 0, 0, 0),
    ]
}

/// An HMAC key block (`key ⊕ pad`, the key zero-extended to 64 bytes), the key given as
/// up to eight words.
#[target_feature(enable = "sse2")]
#[inline]
pub(crate) fn pad_block(key: [__m128i; 2], pad: i32) -> [__m128i; 4] {
    let p = _mm_set1_epi32(pad);
    [_mm_xor_si128(key[0], p), _mm_xor_si128(key[1], p), p, p]
}

/// `HMAC-SHA256(key, msg)` of [`LANES`] keys (as words; a 16-byte key has zero words
/// 4..8), `msg` the constant whose inner block is `wk`. The four key blocks of a pair of
/// lanes run interleaved, then the four inner and the four outer finals.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn hmac4(key: &[[__m128i; 2]; LANES], wk: &Wk) -> [[__m128i; 2]; LANES] {
    let iv = sha_state(IV);
    let [i0, o0] = sha_compress(
        [iv; 2],
        [
            pad_block(key[0], 0x3636_3636),
            pad_block(key[0], 0x5c5c_5c5c),
        ],
    );
    let [i1, o1] = sha_compress(
        [iv; 2],
        [
            pad_block(key[1], 0x3636_3636),
            pad_block(key[1], 0x5c5c_5c5c),
        ],
    );
    let [i2, o2] = sha_compress(
        [iv; 2],
        [
            pad_block(key[2], 0x3636_3636),
            pad_block(key[2], 0x5c5c_5c5c),
        ],
    );
    let [i3, o3] = sha_compress(
        [iv; 2],
        [
            pad_block(key[3], 0x3636_3636),
            pad_block(key[3], 0x5c5c_5c5c),
        ],
    );
    let inner = sha_compress_wk([i0, i1, i2, i3], wk).map(|s| block_of_32(sha_words(s), 64));
    let [a, b] = sha_compress([o0, o1], [inner[0], inner[1]]);
    let [c, d] = sha_compress([o2, o3], [inner[2], inner[3]]);
    [a, b, c, d].map(|s| sha_words(s))
}

// ---------------------------------------------------------------------------------------
// AES-256 on VAES, one key per 128-bit lane.

/// Four 128-bit registers as the four lanes of one 512-bit register (`x[0]` in lane 0).
#[target_feature(enable = "avx512f")]
#[inline]
fn pack4(x: [__m128i; 4]) -> __m512i {
    let lo = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(x[0]), x[1]);
    let hi = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(x[2]), x[3]);
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Per 128-bit lane: `w0, w1, w2, w3` → `w0, w0^w1, w0^w1^w2, w0^w1^w2^w3` (the running
/// XOR of the key schedule's words).
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn prefix_xor(x: __m512i) -> __m512i {
    let x = _mm512_xor_si512(x, _mm512_bslli_epi128::<4>(x));
    _mm512_xor_si512(x, _mm512_bslli_epi128::<8>(x))
}

/// The AES-256 key schedule (FIPS 197 §5.2) of four keys at once, key `l` in lane `l`:
/// `lo` holds bytes 0..16 of each key, `hi` bytes 16..32. `SubWord` is taken from
/// `vaesenclast` on a register whose four columns are equal (ShiftRows then moves nothing),
/// with the round constant as its round key.
#[target_feature(enable = "avx512f,avx512bw,vaes")]
#[inline]
fn expand256x4(lo: __m512i, hi: __m512i) -> [__m512i; 15] {
    // Every column := RotWord(w3), or := w3 (byte order within the lane: w3 is bytes 12..16).
    let rot_w3 = _mm512_broadcast_i32x4(_mm_set_epi8(
        12, 15, 14, 13, 12, 15, 14, 13, 12, 15, 14, 13, 12, 15, 14, 13,
    ));
    let w3 = _mm512_broadcast_i32x4(_mm_set_epi8(
        15, 14, 13, 12, 15, 14, 13, 12, 15, 14, 13, 12, 15, 14, 13, 12,
    ));
    let mut rk = [_mm512_setzero_si512(); 15];
    rk[0] = lo;
    rk[1] = hi;
    let rcon = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40];
    for (i, &rc) in rcon.iter().enumerate() {
        let t = _mm512_aesenclast_epi128(
            _mm512_shuffle_epi8(rk[2 * i + 1], rot_w3),
            _mm512_set1_epi32(rc),
        );
        rk[2 * i + 2] = _mm512_xor_si512(prefix_xor(rk[2 * i]), t);
        if 2 * i + 3 < 15 {
            let t = _mm512_aesenclast_epi128(
                _mm512_shuffle_epi8(rk[2 * i + 2], w3),
                _mm512_setzero_si512(),
            );
            rk[2 * i + 3] = _mm512_xor_si512(prefix_xor(rk[2 * i + 1]), t);
        }
    }
    rk
}

/// Rows of blocks encrypted together: 12 registers of four blocks in flight, with the 15
/// round keys 27 of the 32 registers.
const ROWS: usize = 12;

/// Encrypt the counter rows `ctr, ctr + 1, ...` (`R` of them; row `j` is the counter
/// block `j` in all four lanes) under the four lanes' round keys, and store lane `l` of
/// row `j` as EphID `first + j` of `out[l]`.
#[target_feature(enable = "avx512f,vaes")]
#[inline]
fn ctr_rows<const R: usize>(
    rk: &[__m512i; 15],
    first: usize,
    out: &mut [[EphId; MAX_BLOCKS]; LANES],
) {
    assert!(first + R <= MAX_BLOCKS);
    // The 128-bit big-endian counter `first + j` (< 256): only its last byte, the top byte
    // of the lane's upper 64 bits, is not zero.
    let mut x = [_mm512_setzero_si512(); R];
    for (j, x) in x.iter_mut().enumerate() {
        let c = _mm512_set_epi64(
            ((first + j) as i64) << 56,
            0,
            ((first + j) as i64) << 56,
            0,
            ((first + j) as i64) << 56,
            0,
            ((first + j) as i64) << 56,
            0,
        );
        *x = _mm512_xor_si512(c, rk[0]);
    }
    for k in &rk[1..14] {
        for x in x.iter_mut() {
            *x = _mm512_aesenc_epi128(*x, *k);
        }
    }
    for x in x.iter_mut() {
        *x = _mm512_aesenclast_epi128(*x, rk[14]);
    }
    for (j, x) in x.into_iter().enumerate() {
        let b = [
            _mm512_extracti32x4_epi32::<0>(x),
            _mm512_extracti32x4_epi32::<1>(x),
            _mm512_extracti32x4_epi32::<2>(x),
            _mm512_extracti32x4_epi32::<3>(x),
        ];
        for (o, b) in out.iter_mut().zip(b) {
            // SAFETY: `first + j < MAX_BLOCKS` (asserted above), so `o[first + j]` is an
            // EphID whose 16 bytes are writable; the store is unaligned.
            unsafe { _mm_storeu_si128(o[first + j].0.as_mut_ptr().cast(), b) };
        }
    }
}

/// The first `n` (≤ 96) keystream blocks of four AES-256-CTR keys, from zero counters.
#[target_feature(enable = "avx512f,avx512bw,vaes")]
#[inline]
fn keystreams(key: &[[__m128i; 2]; LANES], n: usize, out: &mut [[EphId; MAX_BLOCKS]; LANES]) {
    let lo = pack4(key.map(|k| bswap32(k[0])));
    let hi = pack4(key.map(|k| bswap32(k[1])));
    let rk = expand256x4(lo, hi);
    let mut j = 0;
    while j + ROWS <= n {
        ctr_rows::<ROWS>(&rk, j, out);
        j += ROWS;
    }
    while j + 4 <= n {
        ctr_rows::<4>(&rk, j, out);
        j += 4;
    }
    while j < n {
        ctr_rows::<1>(&rk, j, out);
        j += 1;
    }
}

/// A 32-byte key as big-endian words.
#[target_feature(enable = "sse2,ssse3")]
#[inline]
fn load_words32(k: &[u8; 32]) -> [__m128i; 2] {
    // SAFETY: `k` is 32 readable bytes; the two loads are unaligned.
    let (a, b) = unsafe {
        (
            _mm_loadu_si128(k.as_ptr().cast()),
            _mm_loadu_si128(k.as_ptr().add(16).cast()),
        )
    };
    [bswap32(a), bswap32(b)]
}

/// [`lowcost_step`] on SHA-NI and VAES.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1,aes,avx512f,avx512bw,vaes")]
fn lowcost_step_x86(
    keys: &mut [[u8; 32]; LANES],
    n: usize,
    out: &mut [[EphId; MAX_BLOCKS]; LANES],
) {
    let sk = keys.each_ref().map(|k| load_words32(k));
    // SK_{t+1} = SHA-256(SK_t): independent of the PRF, interleaved in pairs.
    let iv = sha_state(IV);
    let [a, b] = sha_compress([iv; 2], [block_of_32(sk[0], 0), block_of_32(sk[1], 0)]);
    let [c, d] = sha_compress([iv; 2], [block_of_32(sk[2], 0), block_of_32(sk[3], 0)]);
    let prf = hmac4(&sk, &LOWCOST_WK);
    for (k, s) in keys.iter_mut().zip([a, b, c, d]) {
        let [w0, w1] = sha_words(s).map(|w| bswap32(w));
        // SAFETY: `k` is 32 writable bytes; the two stores are unaligned.
        unsafe {
            _mm_storeu_si128(k.as_mut_ptr().cast(), w0);
            _mm_storeu_si128(k.as_mut_ptr().add(16).cast(), w1);
        }
    }
    keystreams(&prf, n, out);
}

/// [`hybrid_ephids`] on SHA-NI and VAES.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1,aes,avx512f,avx512bw,vaes")]
fn hybrid_ephids_x86(seeds: &[[u8; 16]; LANES], n: usize, out: &mut [[EphId; MAX_BLOCKS]; LANES]) {
    let key = seeds.each_ref().map(|s| {
        // SAFETY: `s` is 16 readable bytes; the load is unaligned.
        let w = unsafe { _mm_loadu_si128(s.as_ptr().cast()) };
        [bswap32(w), _mm_setzero_si128()]
    });
    let prf = hmac4(&key, &HYBRID_WK);
    keystreams(&prf, n, out);
}

/// Ask the CPU to bring the cache line holding `x` into L1: a hint, which reads nothing
/// and never faults (matching prefetches the pre-filter words of EphIDs it will test).
#[inline(always)]
pub(crate) fn prefetch<T>(x: &T) {
    // SAFETY: `x` is a live reference, and a prefetch neither reads nor writes memory
    // architecturally (SSE, part of the x86-64 baseline).
    unsafe { _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast()) };
}

// The EphIDs of a day are read as 96 × 16 contiguous bytes: an `EphId` is its one
// `[u8; 16]` field and nothing else.
const _: () = assert!(std::mem::size_of::<EphId>() == 16);

/// Identifiers that are their 16 bytes and nothing else, so that a slice of them can be
/// read as consecutive 16-byte rows by [`sighting_prefilter`].
///
/// # Safety
/// An implementor is 16 bytes with no padding, and its bytes are the identifier's.
pub(crate) unsafe trait Rows16: AsRef<[u8; 16]> {}
// SAFETY: an `EphId` is its one `[u8; 16]` field (size asserted above).
unsafe impl Rows16 for EphId {}
// SAFETY: a GAEN block is a `GenericArray<u8, U16>`, a `repr(transparent)` `[u8; 16]`.
unsafe impl Rows16 for crate::gaen::Block {}
const _: () = assert!(std::mem::size_of::<crate::gaen::Block>() == 16);

/// Whether this CPU has what [`filter8`] uses: AVX-512 F, BW, VBMI and BITALG (Intel
/// since Ice Lake, AMD since Zen 4; the older AVX-512 Xeons take the scalar test). Cached.
#[inline]
pub(crate) fn avx512() -> bool {
    static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX512.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vbmi")
            && std::is_x86_feature_detected!("avx512bitalg")
    })
}

/// The pre-filter of a phone's sighting index (`SightingIndex` in `matching.rs`) over
/// whole groups of eight ids, on AVX-512: id `j` passes when the word `bitmap[p >> shift
/// >> 6]` (`p` the first 8 bytes of the id, little-endian) has the three bits
/// `(p >> shift) & 63`, `(p >> 20) & 63` and `(p >> 26) & 63` set. The positions of the
/// ids that pass are appended to `out` from `n` on (at most 256 positions are kept);
/// returns the new count and how many ids were tested (a multiple of eight; the caller
/// tests the rest). `None` when the CPU lacks what [`filter8`] uses or `bitmap` does not
/// fit `shift`.
#[inline]
pub(crate) fn sighting_prefilter<T: Rows16>(
    bitmap: &[u64],
    shift: u32,
    ids: &[T],
    out: &mut [u8; 256],
) -> Option<(usize, usize)> {
    if !avx512() || !filter_shape_ok(bitmap, shift) {
        return None;
    }
    let groups = ids.len().min(256) / 8;
    // SAFETY: `avx512()` found the features; `bitmap.len() == 2^(58 - shift)`, so every
    // word index `p >> shift >> 6` is in bounds; `T: Rows16` makes `ids` 16-byte rows and
    // `groups * 8 <= ids.len()`.
    Some(unsafe { sighting_prefilter_x86(bitmap, shift, ids.as_ptr().cast(), groups, out) })
}

/// The eight words `words[idx[i]]`, by eight scalar loads: on AMD Zen 4 these run at
/// three a cycle, while `vpgatherqq` took about 35 cycles for eight words even from L1
/// (matching spent half its time in it).
///
/// # Safety
/// Every lane of `idx` is below the length of the slice `words` points into.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load8(words: *const u64, idx: __m512i) -> __m512i {
    let mut i = [0u64; 8];
    // SAFETY: `i` is 64 writable bytes; the store is unaligned.
    unsafe { _mm512_storeu_si512(i.as_mut_ptr().cast(), idx) };
    // SAFETY: each `i[j]` is in bounds of `words` (the contract).
    let w = i.map(|j| unsafe { words.add(j as usize).read() });
    // SAFETY: `w` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(w.as_ptr().cast()) }
}

/// The pre-filter test of eight ids whose first 8 bytes (little-endian) are the lanes of
/// `p`: bit `i` of the answer is set when `words[p_i >> shift >> 6]` has the bits
/// `(p_i >> shift) & 63`, `(p_i >> 20) & 63` and `(p_i >> 26) & 63` (the same test as
/// `filter_mask` in `matching.rs`). `shift` holds the shift in every lane. Also called
/// by the GAEN kernel on RPIs still in registers.
///
/// The three bit positions are picked out of each id as bytes in one instruction
/// (`vpmultishiftqb`), and the bits they name tested in one more (`vpshufbitqmb`): five
/// vector instructions besides the loads, where shifts, rotates and masks took ten.
///
/// # Safety
/// `words` points to `2^(58 - shift)` readable words, `shift <= 58`, and the CPU has
/// AVX-512 F, BW, VBMI and BITALG.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512bitalg")]
#[inline]
pub(crate) unsafe fn filter8(words: *const u64, shift: __m512i, p: __m512i) -> u8 {
    let word = _mm512_srlv_epi64(p, _mm512_add_epi64(shift, _mm512_set1_epi64(6)));
    // SAFETY: every lane is `p >> shift >> 6 < 2^(58 - shift)` (the contract).
    let got = unsafe { load8(words, word) };
    // The bit offsets into each id of the bytes to pick: `shift`, 20, 26, and 20 and 26
    // again (so that the test below can ask for all eight bits). Only each byte's low six
    // bits name a bit of the word.
    const OFFSETS: i64 =
        (20 << 8) | (26 << 16) | (20 << 24) | (26 << 32) | (20 << 40) | (26 << 48) | (20 << 56);
    let picked =
        _mm512_multishift_epi64_epi8(_mm512_or_si512(shift, _mm512_set1_epi64(OFFSETS)), p);
    // Bit 8i + k: bit `picked` byte k of word i is set.
    let bits = _mm512_movm_epi8(_mm512_bitshuffle_epi64_mask(got, picked));
    _mm512_cmpeq_epi64_mask(bits, _mm512_set1_epi64(-1))
}

/// Whether `words` and `shift` have the shape [`filter8`] needs.
#[inline]
pub(crate) fn filter_shape_ok(words: &[u64], shift: u32) -> bool {
    shift <= 58 && words.len() == 1usize << (58 - shift)
}

/// [`sighting_prefilter`] on AVX-512: eight ids a register, their words loaded, a mask
/// of those that pass, and a scalar loop over the (rare) set bits.
///
/// # Safety
/// `shift <= 58` and `bitmap.len() == 1 << (58 - shift)`; `rows` points to `8 * groups`
/// readable 16-byte rows; the CPU has the features [`avx512`] checks.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512bitalg")]
unsafe fn sighting_prefilter_x86(
    bitmap: &[u64],
    shift: u32,
    rows: *const u8,
    groups: usize,
    out: &mut [u8; 256],
) -> (usize, usize) {
    let even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    let sh = _mm512_set1_epi64(i64::from(shift));
    let mut n = 0;
    for g in 0..groups {
        // SAFETY: rows 8g .. 8g + 8 are bytes 128g .. 128g + 128, readable (the contract).
        let (a, b) = unsafe {
            (
                _mm512_loadu_si512(rows.add(128 * g).cast()),
                _mm512_loadu_si512(rows.add(128 * g + 64).cast()),
            )
        };
        // SAFETY: `bitmap.len() == 2^(58 - shift)` (the contract).
        let mut k = unsafe { filter8(bitmap.as_ptr(), sh, _mm512_permutex2var_epi64(a, even, b)) };
        while k != 0 {
            out[n & 255] = (8 * g) as u8 + k.trailing_zeros() as u8;
            n += 1;
            k &= k - 1;
        }
    }
    (n, 8 * groups)
}
