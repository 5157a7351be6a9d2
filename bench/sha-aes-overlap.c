// Two questions about ../shared/bench/gaen_limit_isa.c (the ISA limit) on this CPU, answered
// with its own SHA-256 lanes and AES constants (the file is included, its main renamed):
//  1. SHA alone, without the probe's `blk[0] = i` store before each call (the store the
//     call's message loads then wait for): ns per compression, 4 lanes.
//  2. Can AES work hide under SHA rounds? One 4-lane compression alone, six "units" alone
//     (16 AES-128 blocks on VAES plus the pre-filter test of their 16 RPIs against a 32 KiB
//     table, as the GAEN kernel does), and the two interleaved (a unit after every third
//     group of rounds). Built three ways: the whole unit; -DAES_ONLY (its AES blocks,
//     no test); -DFILTER_ONLY (its tests, on RPIs read from a table instead of
//     encrypted). Run by bench/sha-aes-overlap.sh; prints one JSON line per build.
#define main probe_main
#include "gaen_limit_isa.c"
#undef main
#include <stdlib.h>

static uint64_t TABLE[4096];
static uint32_t SINK;
static __m512i RPIS[4096];
static int RPOS;

__attribute__((target("aes,vaes,avx512f")))
static inline uint32_t unit(const __m512i k[11], __m512i *ctr) {
    const __m512i four = _mm512_set4_epi32(4, 0, 0, 0);
    const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i sh = _mm512_set1_epi64(46), one = _mm512_set1_epi64(1);
    __m512i x[4];
    for (int j = 0; j < 4; j++) { x[j] = _mm512_xor_si512(*ctr, k[0]); *ctr = _mm512_add_epi32(*ctr, four); }
#ifndef FILTER_ONLY
    for (int r = 1; r < 10; r++) for (int j = 0; j < 4; j++) x[j] = _mm512_aesenc_epi128(x[j], k[r]);
    for (int j = 0; j < 4; j++) x[j] = _mm512_aesenclast_epi128(x[j], k[10]);
#else
    for (int j = 0; j < 4; j++) x[j] = _mm512_xor_si512(x[j], RPIS[(RPOS + j) & 4095]);
    RPOS += 4;
#endif
#ifdef SCALAR_FILTER
    // The tests in the integer unit: each RPI's first 8 bytes read back from memory (as a
    // kernel would read the blocks it stored), its word loaded, three bits tested by shifts.
    (void)even; (void)sh; (void)one;
    const uint64_t *q = (const uint64_t *)&RPIS[RPOS & 4095];
    RPOS += 4;
    uint32_t sbits = 0;
#pragma GCC novector
    for (int j = 0; j < 16; j++) {
        uint64_t p = q[2 * j], x = p >> 46, w = TABLE[(x >> 6) & 4095];
        sbits |= (uint32_t)((w >> (x & 63)) & (w >> ((p >> 20) & 63)) & (w >> ((p >> 26) & 63)) & 1) << j;
    }
    return sbits;
#endif
#ifdef AES_ONLY
    return (uint32_t)_mm_cvtsi128_si32(_mm512_castsi512_si128(
        _mm512_xor_si512(_mm512_xor_si512(x[0], x[1]), _mm512_xor_si512(x[2], x[3]))));
#endif
    uint32_t bits = 0;
    for (int h = 0; h < 2; h++) {
        __m512i p = _mm512_permutex2var_epi64(x[2 * h], even, x[2 * h + 1]);
        __m512i bit = _mm512_srlv_epi64(p, sh);
        uint64_t i[8], w[8];
        _mm512_storeu_si512(i, _mm512_srli_epi64(bit, 6));
        for (int j = 0; j < 8; j++) w[j] = TABLE[i[j] & 4095];
        __m512i got = _mm512_loadu_si512(w);
        __m512i m = _mm512_ternarylogic_epi64(_mm512_rolv_epi64(one, bit),
            _mm512_rolv_epi64(one, _mm512_srli_epi64(p, 20)), _mm512_rolv_epi64(one, _mm512_srli_epi64(p, 26)), 0xfe);
        bits |= (uint32_t)_mm512_cmpeq_epi64_mask(_mm512_and_si512(got, m), m) << (8 * h);
    }
    return bits;
}

// sha256_lanes of the probe with a unit after every third group of rounds.
__attribute__((target("sha,sse4.1,ssse3,aes,vaes,avx512f")))
static void mixed(uint32_t st[L][8], const uint8_t *blk[L], __m512i *ctr, const __m512i k[11]) {
    const __m128i MASK = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i S0[L], S1[L], A0[L], A1[L], M[L][4];
    for (int l = 0; l < L; l++) {
        __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[l][0]), 0xB1);
        __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[l][4]), 0x1B);
        S0[l] = _mm_alignr_epi8(t, s1, 8);
        S1[l] = _mm_blend_epi16(s1, t, 0xF0);
        A0[l] = S0[l]; A1[l] = S1[l];
    }
    for (int g = 0; g < 16; g++) {
        __m128i kk = _mm_loadu_si128((const __m128i *)&K256[4 * g]);
        for (int l = 0; l < L; l++) {
            __m128i *m = M[l];
            if (g < 4) m[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(blk[l] + 16 * g)), MASK);
            else m[g & 3] = _mm_sha256msg2_epu32(
                     _mm_add_epi32(_mm_sha256msg1_epu32(m[g & 3], m[(g - 3) & 3]),
                                   _mm_alignr_epi8(m[(g - 1) & 3], m[(g - 2) & 3], 4)),
                     m[(g - 1) & 3]);
            __m128i w = _mm_add_epi32(m[g & 3], kk);
            S1[l] = _mm_sha256rnds2_epu32(S1[l], S0[l], w);
            S0[l] = _mm_sha256rnds2_epu32(S0[l], S1[l], _mm_shuffle_epi32(w, 0x0E));
        }
        if (g % 3 == 0) SINK += unit(k, ctr);
    }
    for (int l = 0; l < L; l++) {
        __m128i s0 = _mm_add_epi32(S0[l], A0[l]), s1 = _mm_add_epi32(S1[l], A1[l]);
        __m128i t = _mm_shuffle_epi32(s0, 0x1B);
        s1 = _mm_shuffle_epi32(s1, 0xB1);
        _mm_storeu_si128((__m128i *)&st[l][0], _mm_blend_epi16(t, s1, 0xF0));
        _mm_storeu_si128((__m128i *)&st[l][4], _mm_alignr_epi8(s1, t, 8));
    }
}

int main(void) {
    if (!have_vaes()) { fprintf(stderr, "needs VAES on AVX-512\n"); return 2; }
    for (int i = 0; i < 4096; i++) TABLE[i] = (uint64_t)rand() << 32 ^ (uint64_t)rand();
    for (int i = 0; i < 4096; i++) RPIS[i] = _mm512_set_epi32(rand(), rand(), rand(), rand(), rand(), rand(), rand(), rand(),
                                                            rand(), rand(), rand(), rand(), rand(), rand(), rand(), rand());
    uint32_t st[L][8] = {{0}};
    uint8_t blk[64] = {1};
    const uint8_t *bp[L] = {blk, blk, blk, blk};
    __m512i k[11], ctr = _mm512_set1_epi32(5);
    for (int j = 0; j < 11; j++) k[j] = _mm512_set1_epi32(j * 7 + 1);
    const long n = 300000;
    double best[3] = {1e9, 1e9, 1e9};
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (long i = 0; i < n; i++) sha256_lanes(st, bp);
        double t1 = now();
        for (long i = 0; i < n; i++) for (int u = 0; u < 6; u++) SINK += unit(k, &ctr);
        double t2 = now();
        for (long i = 0; i < n; i++) mixed(st, bp, &ctr, k);
        double t3 = now();
        double r[3] = {(t1 - t0) * 1e9 / n, (t2 - t1) * 1e9 / n, (t3 - t2) * 1e9 / n};
        for (int j = 0; j < 3; j++) if (r[j] < best[j]) best[j] = r[j];
    }
#if defined(SCALAR_FILTER)
    const char *unit_kind = "scalar_filter_only";
#elif defined(AES_ONLY)
    const char *unit_kind = "aes_only";
#elif defined(FILTER_ONLY)
    const char *unit_kind = "filter_only";
#else
    const char *unit_kind = "aes_and_filter";
#endif
    printf("{\"unit\": \"%s\", \"sha_4_lanes_no_store_ns_per_block\": %.2f, \"sha_4_lanes_call_ns\": %.1f, "
           "\"six_units_ns\": %.1f, \"sum_ns\": %.1f, \"interleaved_ns\": %.1f, \"sink\": %u}\n",
           unit_kind, best[0] / L, best[0], best[1], best[0] + best[1], best[2], (SINK + st[0][0]) & 0);
    return 0;
}
