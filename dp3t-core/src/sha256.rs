//! SHA-256 (FIPS 180-4) as `const fn`s: the constants, one compression and the message
//! schedule, for the states and schedules the kernels precompute at compile time (the
//! zero-salt HMAC states of GAEN's HKDF, the `W_t + K_t` of the constant HMAC blocks of
//! all three designs). The SHA-NI rounds that use them are in `kernels.rs`.

/// The initial state `H0..H7`.
pub(crate) const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The round constants `K_0..K_63`.
pub(crate) const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// The `W_t + K_t` of the 64 rounds of one block, 16-byte aligned so that its groups of
/// four load as whole registers.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[repr(C, align(16))]
pub(crate) struct Wk(pub(crate) [u32; 64]);

/// The message schedule `W_0..W_63` of one block of big-endian words (§6.2.2 step 1).
pub(crate) const fn schedule(block: [u32; 16]) -> [u32; 64] {
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

/// One compression (§6.2.2) of `block` (big-endian words) on `state`.
pub(crate) const fn compress(state: [u32; 8], block: [u32; 16]) -> [u32; 8] {
    let w = schedule(block);
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
    let mut t = 0;
    while t < 64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(K[t])
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

/// The last block of a message whose first 64 bytes are already hashed (an HMAC's key
/// block) and whose rest is `msg` (at most 55 bytes), padded (§5.1.1), as words.
pub(crate) const fn final_block_words(msg: &[u8]) -> [u32; 16] {
    assert!(msg.len() <= 55);
    let mut b = [0u8; 64];
    let mut i = 0;
    while i < msg.len() {
        b[i] = msg[i];
        i += 1;
    }
    b[msg.len()] = 0x80;
    let len = (((64 + msg.len()) * 8) as u64).to_be_bytes();
    let mut i = 0;
    while i < 8 {
        b[56 + i] = len[i];
        i += 1;
    }
    let mut w = [0u32; 16];
    let mut t = 0;
    while t < 16 {
        w[t] = u32::from_be_bytes([b[4 * t], b[4 * t + 1], b[4 * t + 2], b[4 * t + 3]]);
        t += 1;
    }
    w
}

/// The `W_t + K_t` of [`final_block_words`]`(msg)`: the inner block of `HMAC(key, msg)`
/// for a constant `msg`, whose rounds then need no message schedule at run time.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const fn final_block_wk(msg: &[u8]) -> Wk {
    let w = schedule(final_block_words(msg));
    let mut wk = [0u32; 64];
    let mut t = 0;
    while t < 64 {
        wk[t] = w[t].wrapping_add(K[t]);
        t += 1;
    }
    Wk(wk)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sha2::digest::generic_array::GenericArray;

    fn sha2_compress(state: [u32; 8], block: &[u8; 64]) -> [u32; 8] {
        let mut s = state;
        sha2::compress256(
            &mut s,
            std::slice::from_ref(GenericArray::from_slice(block)),
        );
        s
    }

    fn words(block: &[u8; 64]) -> [u32; 16] {
        std::array::from_fn(|t| u32::from_be_bytes(block[4 * t..4 * t + 4].try_into().unwrap()))
    }

    /// The `const fn` compression and padding agree with the `sha2` crate, on the blocks
    /// the kernels precompute and on an arbitrary one.
    #[test]
    fn const_compression_equals_sha2() {
        for block in [
            [0x36u8; 64],
            [0x5c; 64],
            std::array::from_fn(|i| (i * 37 + 11) as u8),
        ] {
            assert_eq!(compress(IV, words(&block)), sha2_compress(IV, &block));
        }
        for msg in [&b"EN-RPIK\x01"[..], b"broadcast key", b"DP3T-HYBRID", b""] {
            let mut block = [0u8; 64];
            block[..msg.len()].copy_from_slice(msg);
            block[msg.len()] = 0x80;
            block[56..].copy_from_slice(&(((64 + msg.len()) * 8) as u64).to_be_bytes());
            assert_eq!(final_block_words(msg), words(&block));
            let wk = final_block_wk(msg).0;
            let w = schedule(words(&block));
            assert!((0..64).all(|t| wk[t] == w[t].wrapping_add(K[t])));
        }
    }
}
