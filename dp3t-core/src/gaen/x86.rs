//! The x86-64 kernels of [`super`]: SHA-NI for the HKDF, VAES + AVX-512 for the AES blocks.
//!
//! This is one of the two modules of the crate that may use `unsafe` (with `kernels.rs`;
//! the crate denies it and forbids it in every other module), so the kernels are kept apart
//! from the key types and the portable code. Every kernel is compiled with
//! `#[target_feature]`, so calling one is `unsafe`; the safe dispatchers
//! [`encrypt_padded`], [`derive_rpis`], [`derive_rpis_many`] and [`rpik`] call a kernel
//! only after [`cpu`] has found its features, and otherwise tell the caller to take the
//! portable path. Inside the kernels the intrinsics are safe, and the only `unsafe` left
//! is the loads and stores through pointers, each with its bounds argued.
//!
//! The AVX-512 and VAES intrinsics are stable since Rust 1.89, the workspace's
//! `rust-version`.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{Block, RPIK_T1_WK, SHA256_IV, ZERO_SALT_INNER, ZERO_SALT_OUTER};
use crate::kernels::{
    block_of_32, bswap32, pad_block, sha_compress as compress, sha_compress_wk, sha_group,
    sha_state as state, sha_words as digest_words, Sha as State,
};

/// Which accelerated paths this CPU can take.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cpu {
    /// The SHA extensions, and the SSE levels [`rpik_sha_ni`] also uses.
    sha_ni: bool,
    /// VAES on 512-bit registers (AVX-512F), and AES-NI for the key schedule.
    vaes512: bool,
    /// What the pre-filter test [`crate::kernels::filter8`] uses (AVX-512 BW, VBMI and
    /// BITALG besides F), which the many-key kernel is compiled with.
    filter: bool,
}

/// The CPU's features, detected on first use and cached for the life of the process.
#[inline]
pub(super) fn cpu() -> Cpu {
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
        filter: crate::kernels::avx512(),
    })
}

/// [`super::encrypt_padded`] on VAES + AVX-512 when this CPU has them; `false` when the
/// portable path must do the work.
#[inline]
pub(super) fn encrypt_padded(rpik: &[u8; 16], start: u32, out: &mut [Block]) -> bool {
    if !cpu().vaes512 {
        return false;
    }
    // SAFETY: `cpu()` found every feature `encrypt_padded_vaes` is compiled for.
    unsafe { encrypt_padded_vaes(rpik, start, out) };
    true
}

/// [`super::derive_rpis_into`] with both kernels when this CPU has them; `false` when the
/// portable path must do the work.
#[inline]
pub(super) fn derive_rpis(tek: &[u8; 16], rolling_start: u32, out: &mut [Block]) -> bool {
    let cpu = cpu();
    if !(cpu.sha_ni && cpu.vaes512) {
        return false;
    }
    // SAFETY: `cpu()` found every feature `derive_rpis_fused` is compiled for.
    unsafe { derive_rpis_fused(tek, rolling_start, out) };
    true
}

/// [`super::rpik_fast`] on SHA-NI when this CPU has it; `None` when the portable path must
/// do the work.
#[inline]
pub(super) fn rpik(tek: &[u8; 16]) -> Option<[u8; 16]> {
    if !cpu().sha_ni {
        return None;
    }
    // SAFETY: `cpu()` found every feature `rpik_sha_ni` is compiled for.
    Some(unsafe { rpik_sha_ni(tek) })
}

/// A 64-byte block as 16 big-endian words, four to a register, lane 0 first.
type Msg = [__m128i; 4];

/// The message of a final block holding a 32-byte digest after a 64-byte prefix.
#[target_feature(enable = "sse2")]
#[inline]
fn digest_msg(d: [__m128i; 2]) -> Msg {
    block_of_32(d, 64)
}

/// The RPIK of `tek` as an AES key register (its 16 bytes in memory order).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn rpik_vec(tek: &[u8; 16]) -> __m128i {
    let [k] = rpik_lanes([tek]);
    k
}

/// [`super::rpik_fast`] on SHA-NI.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn rpik_sha_ni(tek: &[u8; 16]) -> [u8; 16] {
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
    encrypt_vaes_rk(&expand_key(key), start, out);
}

/// The round keys, each in all four lanes of a register.
#[target_feature(enable = "avx512f")]
#[inline]
fn broadcast_keys(rk: &[__m128i; 11]) -> [__m512i; 11] {
    let mut k = [_mm512_setzero_si512(); 11];
    for (k, r) in k.iter_mut().zip(rk) {
        *k = _mm512_broadcast_i32x4(*r);
    }
    k
}

/// The first four padded blocks "EN-RPI" || 0^6 || LE32(start + q), q = 0..3, as
/// little-endian 32-bit lanes: "EN-R", "PI\0\0", 0, start + q.
#[target_feature(enable = "avx512f")]
#[inline]
fn counters(start: u32) -> __m512i {
    let prefix = _mm512_set4_epi32(
        start as i32,
        0,
        i32::from_le_bytes(*b"PI\0\0"),
        i32::from_le_bytes(*b"EN-R"),
    );
    _mm512_add_epi32(
        prefix,
        _mm512_set_epi32(3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0),
    )
}

/// `encrypt_padded` with the key already expanded.
#[target_feature(enable = "sse2,avx512f,vaes")]
#[inline]
fn encrypt_vaes_rk(rk: &[__m128i; 11], start: u32, out: &mut [Block]) {
    let k = broadcast_keys(rk);
    let mut ctr = counters(start);
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
fn encrypt_padded_vaes(rpik: &[u8; 16], start: u32, out: &mut [Block]) {
    // SAFETY: `rpik` is 16 readable bytes; the load is unaligned.
    let key = unsafe { _mm_loadu_si128(rpik.as_ptr().cast()) };
    encrypt_vaes(key, start, out);
}

/// [`super::derive_rpis_into`] with both kernels, the RPIK never leaving a register.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1,aes,avx512f,vaes")]
fn derive_rpis_fused(tek: &[u8; 16], start: u32, out: &mut [Block]) {
    encrypt_vaes(rpik_vec(tek), start, out);
}

// ---------------------------------------------------------------------------------------
// Several keys at once: the matching hot path.
// ---------------------------------------------------------------------------------------

/// [`super::derive_rpis_many`] with both kernels when this CPU has them, keys in groups of
/// [`super::LANES`] and the tail in one smaller group; `false` when the portable path must
/// do the work. `keys` and `out` have the same length (the caller trims them).
#[inline]
pub(super) fn derive_rpis_many(keys: &[([u8; 16], u32)], out: &mut [super::DayBlocks]) -> bool {
    derive_groups(keys, out, None, &mut [])
}

/// [`super::derive_rpis_prefiltered`]: `false` when this CPU lacks a feature or a filter
/// has the wrong shape (the caller then derives and filters apart).
#[inline]
pub(super) fn derive_rpis_prefiltered(
    keys: &[([u8; 16], u32)],
    filters: &[super::WordFilter<'_>],
    out: &mut [super::DayBlocks],
    pass: &mut [[u64; 3]],
) -> bool {
    filters
        .iter()
        .all(|(w, s)| crate::kernels::filter_shape_ok(w, *s))
        && filters.len() == keys.len()
        && pass.len() == keys.len()
        && derive_groups(keys, out, Some(filters), pass)
}

/// Both of the above: groups of four, then the tail.
#[inline]
fn derive_groups(
    keys: &[([u8; 16], u32)],
    out: &mut [super::DayBlocks],
    filters: Option<&[super::WordFilter<'_>]>,
    pass: &mut [[u64; 3]],
) -> bool {
    let cpu = cpu();
    if !(cpu.sha_ni && cpu.vaes512 && cpu.filter) {
        return false;
    }
    macro_rules! group {
        ($n:literal, $from:expr) => {{
            let r = $from..$from + $n;
            let k: Option<&[_; $n]> = keys.get(r.clone()).and_then(|k| k.try_into().ok());
            let o: Option<&mut [_; $n]> = out.get_mut(r.clone()).and_then(|o| o.try_into().ok());
            let f: Option<&[_; $n]> = filters.and_then(|f| f.get(r.clone())?.try_into().ok());
            let p: &mut [[u64; 3]] = pass.get_mut(r).unwrap_or_default();
            if let (Some(k), Some(o)) = (k, o) {
                // SAFETY: `cpu()` found every feature `derive_lanes` is compiled for,
                // and the filters' shapes were checked by the caller.
                unsafe { derive_lanes::<$n>(k, o, f, p) };
            }
        }};
    }
    let full = keys.len() / 4 * 4;
    for from in (0..full).step_by(4) {
        group!(4, from);
    }
    // The tail: one group of 3, 2 or 1 keys (`keys` and `out` have the same length).
    match keys.len() - full {
        3 => group!(3, full),
        2 => group!(2, full),
        1 => group!(1, full),
        _ => {}
    }
    true
}

/// The first message block of `PRK = HMAC(0^32, TEK)`'s inner hash: the 16 key bytes,
/// `0x80`, zeros, and the length `(64 + 16) * 8` bits.
#[target_feature(enable = "sse2")]
#[inline]
fn tek_msg(tek: &[u8; 16]) -> Msg {
    let w = |j: usize| u32::from_be_bytes([tek[j], tek[j + 1], tek[j + 2], tek[j + 3]]) as i32;
    [
        _mm_set_epi32(w(12), w(8), w(4), w(0)),
        _mm_set_epi32(0, 0, 0, 0x8000_0000u32 as i32),
        _mm_setzero_si128(),
        _mm_set_epi32((64 + 16) * 8, 0, 0, 0),
    ]
}

/// Two sets of `N` independent compressions, all `2N` interleaved four rounds at a time.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn compress2<const N: usize>(
    a0: [State; N],
    mut ma: [Msg; N],
    b0: [State; N],
    mut mb: [Msg; N],
) -> ([State; N], [State; N]) {
    let (mut a, mut b) = (a0, b0);
    macro_rules! groups {
        ($($i:literal)*) => { $(
            sha_group::<$i, N>(&mut a, &mut ma);
            sha_group::<$i, N>(&mut b, &mut mb);
        )* };
    }
    groups!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    for n in 0..N {
        a[n].abef = _mm_add_epi32(a[n].abef, a0[n].abef);
        a[n].cdgh = _mm_add_epi32(a[n].cdgh, a0[n].cdgh);
        b[n].abef = _mm_add_epi32(b[n].abef, b0[n].abef);
        b[n].cdgh = _mm_add_epi32(b[n].cdgh, b0[n].cdgh);
    }
    (a, b)
}

/// The RPIKs of `N` TEKs as AES key registers: the six compressions of each HKDF, the
/// `N` keys' chains interleaved so that the SHA unit always has independent rounds.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn rpik_lanes<const N: usize>(teks: [&[u8; 16]; N]) -> [__m128i; N] {
    let mut m = [[_mm_setzero_si128(); 4]; N];
    for n in 0..N {
        m[n] = tek_msg(teks[n]);
    }
    // PRK = HMAC(0^32, TEK).
    let inner = compress([state(ZERO_SALT_INNER); N], m);
    for n in 0..N {
        m[n] = digest_msg(digest_words(inner[n]));
    }
    let prk = compress([state(ZERO_SALT_OUTER); N], m);
    // T(1) = HMAC(PRK, "EN-RPIK" || 0x01): both key blocks of every lane together.
    let mut mi = m;
    let mut mo = m;
    for n in 0..N {
        let key = digest_words(prk[n]);
        mi[n] = pad_block(key, 0x3636_3636);
        mo[n] = pad_block(key, 0x5c5c_5c5c);
    }
    let iv = [state(SHA256_IV); N];
    let (si, so) = compress2(iv, mi, iv, mo);
    let si = sha_compress_wk(si, &RPIK_T1_WK);
    for n in 0..N {
        m[n] = digest_msg(digest_words(si[n]));
    }
    let so = compress(so, m);
    let mut out = [_mm_setzero_si128(); N];
    for n in 0..N {
        out[n] = bswap32(digest_words(so[n])[0]);
    }
    out
}

/// The AES-128 key schedules of `N` keys, their chains interleaved step by step.
#[target_feature(enable = "aes,sse2")]
#[inline]
fn expand_keys<const N: usize>(keys: [__m128i; N]) -> [[__m128i; 11]; N] {
    #[target_feature(enable = "aes,sse2")]
    #[inline]
    fn step<const RCON: i32, const N: usize>(rk: &mut [[__m128i; 11]; N], r: usize) {
        for k in rk.iter_mut() {
            let p = k[r - 1];
            let a = _mm_shuffle_epi32(_mm_aeskeygenassist_si128::<RCON>(p), 0xff);
            let p = _mm_xor_si128(p, _mm_slli_si128::<4>(p));
            let p = _mm_xor_si128(p, _mm_slli_si128::<4>(p));
            let p = _mm_xor_si128(p, _mm_slli_si128::<4>(p));
            k[r] = _mm_xor_si128(p, a);
        }
    }
    let mut rk = [[_mm_setzero_si128(); 11]; N];
    for n in 0..N {
        rk[n][0] = keys[n];
    }
    step::<0x01, N>(&mut rk, 1);
    step::<0x02, N>(&mut rk, 2);
    step::<0x04, N>(&mut rk, 3);
    step::<0x08, N>(&mut rk, 4);
    step::<0x10, N>(&mut rk, 5);
    step::<0x20, N>(&mut rk, 6);
    step::<0x40, N>(&mut rk, 7);
    step::<0x80, N>(&mut rk, 8);
    step::<0x1b, N>(&mut rk, 9);
    step::<0x36, N>(&mut rk, 10);
    rk
}

/// All 144 RPIs of each of `N` keys: the HKDFs interleaved on SHA-NI, then the key
/// schedules interleaved, then each key's 144 blocks on VAES, 48 in flight. With
/// `filters`, each key's RPIs also go through its pre-filter while still in registers
/// (eight at a time, [`crate::kernels::filter8`]), and bit `j` of `pass[n]` (as three
/// words of 48 bits) is set when RPI `j` of key `n` passes.
///
/// # Safety
/// The CPU has every feature this is compiled for; each filter has the shape
/// [`crate::kernels::filter_shape_ok`] accepts; with `filters`, `pass` has `N` entries.
#[target_feature(
    enable = "sha,sse2,ssse3,sse4.1,aes,avx512f,vaes,avx512bw,avx512vbmi,avx512bitalg"
)]
unsafe fn derive_lanes<const N: usize>(
    keys: &[([u8; 16], u32); N],
    out: &mut [super::DayBlocks; N],
    filters: Option<&[super::WordFilter<'_>; N]>,
    pass: &mut [[u64; 3]],
) {
    let mut teks = [&keys[0].0; N];
    for n in 0..N {
        teks[n] = &keys[n].0;
    }
    let rks = expand_keys(rpik_lanes(teks));
    let even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    for n in 0..N {
        let k = broadcast_keys(&rks[n]);
        let mut ctr = counters(keys[n].1);
        for part in 0..3 {
            let s = encrypt_regs::<GROUP>(&k, &mut ctr);
            let p = out[n][part * 4 * GROUP..].as_mut_ptr().cast::<__m512i>();
            for (i, x) in s.into_iter().enumerate() {
                // SAFETY: blocks `48 part .. 48 part + 48` of a day's 144 are bytes
                // `64 i .. 64 i + 64` from `p`, i < GROUP; the store is unaligned.
                unsafe { _mm512_storeu_si512(p.add(i), x) };
            }
            if let (Some(f), Some(pass)) = (filters, pass.get_mut(n)) {
                let (words, shift) = f[n];
                let sh = _mm512_set1_epi64(i64::from(shift));
                let mut bits = 0u64;
                for i in 0..GROUP / 2 {
                    // The first 8 bytes of the eight RPIs of registers 2i and 2i + 1.
                    let first = _mm512_permutex2var_epi64(s[2 * i], even, s[2 * i + 1]);
                    // SAFETY: the filter's shape was checked (the contract).
                    let m = unsafe { crate::kernels::filter8(words.as_ptr(), sh, first) };
                    bits |= u64::from(m) << (8 * i);
                }
                pass[part] = bits;
            }
        }
    }
}

/// How fast the HKDFs run with 1 to 8 keys interleaved: the measurement behind
/// `LANES = 4` (BENCHMARKS.md, sixth session). It prints and asserts nothing about time;
/// run it by hand on a quiet machine:
/// `cargo test --release -p dp3t-core --lib rpik_lanes_timing -- --ignored --nocapture`.
#[cfg(test)]
mod lanes_timing {
    use super::*;

    /// ns a key of `iters` calls of `rpik_lanes::<N>`, each call's keys depending on the
    /// last call's output (so that nothing is hoisted), and a checksum.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn run<const N: usize>(iters: usize) -> (f64, i32) {
        let mut teks = [[0u8; 16]; N];
        for (i, t) in teks.iter_mut().enumerate() {
            t[0] = i as u8;
        }
        let mut acc = _mm_setzero_si128();
        let t0 = std::time::Instant::now();
        for it in 0..iters {
            teks[0][1] = it as u8;
            let r: [&[u8; 16]; N] = std::array::from_fn(|n| &teks[n]);
            for x in rpik_lanes::<N>(r) {
                acc = _mm_xor_si128(acc, x);
            }
            teks[N - 1][2] = _mm_cvtsi128_si32(acc) as u8;
        }
        let ns = t0.elapsed().as_nanos() as f64 / (iters * N) as f64;
        (ns, _mm_cvtsi128_si32(acc))
    }

    #[test]
    #[ignore = "a measurement to run by hand: prints ns a key, asserts nothing about time"]
    fn rpik_lanes_timing() {
        if !cpu().sha_ni {
            return;
        }
        for _ in 0..3 {
            // SAFETY: `cpu()` found SHA-NI and the SSE levels `run` is compiled for.
            let t = unsafe {
                [
                    run::<1>(500_000).0,
                    run::<2>(500_000).0,
                    run::<4>(500_000).0,
                ]
            };
            // SAFETY: as above.
            let u = unsafe { [run::<6>(500_000).0, run::<8>(500_000).0] };
            println!(
                "ns a key: 1 lane {:.1}, 2 {:.1}, 4 {:.1}, 6 {:.1}, 8 {:.1}",
                t[0], t[1], t[2], u[0], u[1]
            );
        }
    }
}
