//! The DPCF Cuckoo filter of the DP-3T unlinkable design (PROTOCOL.md §4, §4.1).
//!
//! Every release bucket, the server puts the hashes `H = SHA-256(EphID || BE32(epoch))` of the
//! released pairs into a Cuckoo filter and publishes its bytes; each phone parses the filter
//! and tests the `H` values it heard against it. This module is both halves:
//!
//! - [`FilterBuilder`] chooses the parameters and builds a [`CuckooFilter`] from a set of
//!   32-byte hashes. It is deterministic (the same items give the same bytes), never fails
//!   for lack of room (it grows the table and starts again), and so the filter never has a
//!   false negative.
//! - [`CuckooFilter::parse`] turns wire bytes into a filter, checking every field of the
//!   DPCF v1 format once; [`CuckooFilter::contains`] is then a plain lookup with no error path.
//!
//! The hash functions (`fp`, `i1`, `alt`, `mix64`) are fixed by the spec, so filters built
//! here are readable by any other DPCF implementation and the reverse. The table is held as
//! one flat `Vec<u64>` of `m * b` slots (0 = empty), whatever the fingerprint width, which keeps
//! both the build's kick-outs and the phone's lookups to one or two cache lines each.
//!
//! Sans-IO: no clock, no global RNG. Kick-out choices come from a small counter-based
//! generator seeded from the item count.

use std::fmt;

use crate::error::{Error, FilterError, Result};

/// The four magic bytes that open every DPCF filter.
pub const MAGIC: [u8; 4] = *b"DPCF";
/// The only DPCF format version this module reads and writes.
pub const VERSION: u8 = 1;
/// Size of the fixed DPCF header in bytes (the slots follow it).
pub const HEADER_LEN: usize = 16;
/// Fingerprint width the builder uses unless told otherwise (false-positive rate 2^-45 at
/// `b = 4`).
pub const DEFAULT_FINGERPRINT_BITS: u8 = 48;
/// Slots per bucket the builder uses unless told otherwise.
pub const DEFAULT_BUCKET_SIZE: u8 = 4;

/// Smallest and largest fingerprint width allowed by §4.1.
const F_RANGE: std::ops::RangeInclusive<u8> = 8..=64;
/// Smallest and largest bucket size allowed by §4.1.
const B_RANGE: std::ops::RangeInclusive<u8> = 1..=8;
/// Evictions tried for one item before the build gives up on the current table size.
const MAX_KICKS: u32 = 1_000;
/// Table sizes tried (each about 6 % larger than the last) before the build reports
/// [`FilterError::Full`].
const MAX_ATTEMPTS: u32 = 32;

/// A DPCF Cuckoo filter (§4.1), built by [`FilterBuilder`] or read by [`CuckooFilter::parse`].
///
/// Holding one means its parameters are in range and every slot fits in `f` bits; there is
/// nothing left to check.
#[derive(Clone, PartialEq, Eq)]
pub struct CuckooFilter {
    /// Fingerprint bits, in `8..=64`.
    f: u8,
    /// Slots per bucket, in `1..=8`.
    b: u8,
    /// Number of buckets, at least 1.
    m: u32,
    /// Item count of the header, at most `m * b`.
    count: u32,
    /// `m * b` slots, bucket by bucket; 0 is empty, anything else a fingerprint `< 2^f`.
    slots: Vec<u64>,
}

impl CuckooFilter {
    /// Whether `x` (a 32-byte hash) is in the filter.
    ///
    /// Never wrong for an inserted item; wrong for any other item with probability at most
    /// [`false_positive_rate`](Self::false_positive_rate).
    pub fn contains(&self, x: &[u8; 32]) -> bool {
        let m = u64::from(self.m);
        let fp = fingerprint(x, self.f);
        let i1 = index1(x, m);
        if self.bucket(i1).contains(&fp) {
            return true;
        }
        self.bucket(alt_index(i1, fp, m)).contains(&fp)
    }

    /// Fingerprint width `f` in bits (8..=64).
    pub fn fingerprint_bits(&self) -> u8 {
        self.f
    }

    /// Slots per bucket `b` (1..=8).
    pub fn bucket_size(&self) -> u8 {
        self.b
    }

    /// Number of buckets `m` (at least 1).
    pub fn buckets(&self) -> u32 {
        self.m
    }

    /// Number of items inserted, as written in the header.
    ///
    /// For a filter built here this is the number of fingerprints stored: an exact duplicate
    /// is stored and counted once, and so, rarely, is a different item whose fingerprint
    /// already sat in its bucket (the filter reports both as present either way).
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether the header says no item was inserted.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Upper bound of the false-positive rate of one lookup, `2b / 2^f` (§4.1).
    pub fn false_positive_rate(&self) -> f64 {
        fp_rate_bound(self.f, self.b)
    }

    /// Length in bytes of [`to_bytes`](Self::to_bytes): `16 + m * b * ceil(f / 8)`.
    pub fn serialized_len(&self) -> usize {
        // Cannot overflow: `slots` holds `m * b` values of 8 bytes, each at least as wide as
        // a serialized slot, and that allocation exists.
        HEADER_LEN + self.slots.len() * slot_bytes(self.f)
    }

    /// The DPCF v1 bytes of this filter (§4.1, all integers big-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let width = slot_bytes(self.f);
        let mut out = Vec::with_capacity(self.serialized_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, self.f, self.b, 0]);
        out.extend_from_slice(&self.m.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        for &slot in &self.slots {
            out.extend_from_slice(&slot.to_be_bytes()[8 - width..]);
        }
        out
    }

    /// Read a DPCF v1 filter, rejecting anything that is not exactly one.
    ///
    /// Errors ([`Error::Filter`]): fewer than 16 bytes or a length other than
    /// `16 + m * b * ceil(f / 8)` ([`FilterError::Length`]); bad magic
    /// ([`FilterError::Magic`]); a version other than 1 ([`FilterError::Version`]); `f`
    /// outside 8..=64, `b` outside 1..=8, `m = 0`, a non-zero reserved byte, an item count
    /// above `m * b`, or a slot value that does not fit in `f` bits
    /// ([`FilterError::Parameter`]).
    ///
    /// The length is checked against the header before anything is allocated, so the memory
    /// used is at most eight times the input length.
    pub fn parse(bytes: &[u8]) -> Result<CuckooFilter> {
        let too_short = || FilterError::Length {
            expected: HEADER_LEN as u64,
            actual: bytes.len() as u64,
        };
        let (header, body) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or_else(too_short)?;
        let [g0, g1, g2, g3, version, f, b, reserved, n0, n1, n2, n3, c0, c1, c2, c3] = *header;
        if [g0, g1, g2, g3] != MAGIC {
            return Err(FilterError::Magic.into());
        }
        if version != VERSION {
            return Err(FilterError::Version(version).into());
        }
        if !F_RANGE.contains(&f) {
            return Err(param("f", f.into()));
        }
        if !B_RANGE.contains(&b) {
            return Err(param("b", b.into()));
        }
        if reserved != 0 {
            return Err(param("reserved", reserved.into()));
        }
        let m = u32::from_be_bytes([n0, n1, n2, n3]);
        if m == 0 {
            return Err(param("m", 0));
        }
        let count = u32::from_be_bytes([c0, c1, c2, c3]);

        let width = slot_bytes(f);
        let n_slots = u64::from(m) * u64::from(b); // < 2^35
        let expected = n_slots
            .checked_mul(width as u64)
            .and_then(|body_len| body_len.checked_add(HEADER_LEN as u64))
            .ok_or(FilterError::Length {
                expected: u64::MAX,
                actual: bytes.len() as u64,
            })?;
        if expected != bytes.len() as u64 {
            return Err(FilterError::Length {
                expected,
                actual: bytes.len() as u64,
            }
            .into());
        }
        if u64::from(count) > n_slots {
            return Err(param("item count", count.into()));
        }

        // The length matched, so `body.len() / width` slots exist and fit in memory.
        let mask = fingerprint_mask(f);
        let mut slots = Vec::with_capacity(body.len() / width);
        for chunk in body.chunks_exact(width) {
            let value = chunk
                .iter()
                .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
            if value > mask {
                return Err(param("slot value", value));
            }
            slots.push(value);
        }
        Ok(CuckooFilter {
            f,
            b,
            m,
            count,
            slots,
        })
    }

    /// The `b` slots of bucket `i`. `i < m` always holds at the call sites, and `slots` has
    /// exactly `m * b` entries, so the range is in bounds.
    #[inline]
    fn bucket(&self, i: u64) -> &[u64] {
        let b = usize::from(self.b);
        let start = i as usize * b;
        &self.slots[start..start + b]
    }
}

impl fmt::Debug for CuckooFilter {
    /// The parameters only: the slots can be tens of megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CuckooFilter")
            .field("f", &self.f)
            .field("b", &self.b)
            .field("m", &self.m)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Chooses DPCF parameters and builds a [`CuckooFilter`].
///
/// ```
/// use dp3t_core::cuckoo::{CuckooFilter, FilterBuilder};
///
/// let items = [[1u8; 32], [2u8; 32]];
/// let filter = FilterBuilder::new().build(&items)?;
/// let read = CuckooFilter::parse(&filter.to_bytes())?;
/// assert!(read.contains(&[1u8; 32]) && read.contains(&[2u8; 32]));
/// # Ok::<(), dp3t_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterBuilder {
    /// Fingerprint bits, in `8..=64`.
    f: u8,
    /// Slots per bucket, in `1..=8`.
    b: u8,
    /// False-positive target that chose `f`, kept so that a later bucket size re-chooses it.
    target: Option<f64>,
}

impl Default for FilterBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl FilterBuilder {
    /// `f = 48` ([`DEFAULT_FINGERPRINT_BITS`]), `b = 4` ([`DEFAULT_BUCKET_SIZE`]).
    pub fn new() -> Self {
        FilterBuilder {
            f: DEFAULT_FINGERPRINT_BITS,
            b: DEFAULT_BUCKET_SIZE,
            target: None,
        }
    }

    /// Use `f` fingerprint bits (8..=64); replaces any false-positive target set before.
    pub fn fingerprint_bits(self, f: u8) -> Result<Self> {
        if !F_RANGE.contains(&f) {
            return Err(param("f", f.into()));
        }
        Ok(FilterBuilder {
            f,
            target: None,
            ..self
        })
    }

    /// Use `b` slots per bucket (1..=8).
    ///
    /// If a false-positive target was set, `f` is chosen again for the new `b`, and this
    /// fails if no `f` meets the target with it.
    pub fn bucket_size(self, b: u8) -> Result<Self> {
        if !B_RANGE.contains(&b) {
            return Err(param("b", b.into()));
        }
        let f = match self.target {
            Some(p) => bits_for_rate(p, b)?,
            None => self.f,
        };
        Ok(FilterBuilder { f, b, ..self })
    }

    /// Use the smallest `f` in 8..=64 whose bound `2b / 2^f` is at most `p`, for the
    /// current bucket size.
    ///
    /// Fails with [`Error::OutOfRange`] if `p` is not in the open interval (0, 1) or is
    /// below `2b / 2^64`, the best any DPCF filter can do.
    pub fn target_false_positive_rate(self, p: f64) -> Result<Self> {
        let f = bits_for_rate(p, self.b)?;
        Ok(FilterBuilder {
            f,
            target: Some(p),
            ..self
        })
    }

    /// Build a filter holding every item of `items` (duplicates are stored once).
    ///
    /// The table gets `m = ceil(n / (b * load))` buckets for a load that depends on `b`
    /// (0.95 at `b = 4`); if an item cannot be placed within a bounded number of kick-outs,
    /// the build starts again with about 6 % more buckets. The result is deterministic.
    ///
    /// Errors: more than `u32::MAX` items ([`FilterError::Parameter`]), or a table that still
    /// does not fit after many enlargements, or would need more than `u32::MAX` buckets
    /// ([`FilterError::Full`]).
    pub fn build(&self, items: &[[u8; 32]]) -> Result<CuckooFilter> {
        let n =
            u32::try_from(items.len()).map_err(|_| param("number of items", items.len() as u64))?;
        let wanted = f64::from(n) / (f64::from(self.b) * target_load(self.b));
        // Saturating float-to-int cast; anything above u32::MAX is refused below.
        let m = (wanted.ceil() as u64).max(1);
        build_growing(items, self.f, self.b, m, MAX_ATTEMPTS)
    }
}

/// Build with `m` buckets, then with ever larger tables, for at most `attempts` sizes.
fn build_growing(
    items: &[[u8; 32]],
    f: u8,
    b: u8,
    mut m: u64,
    attempts: u32,
) -> Result<CuckooFilter> {
    let full = || Error::from(FilterError::Full(items.len() as u64));
    for attempt in 0..attempts {
        let m32 = u32::try_from(m).map_err(|_| full())?;
        let seed = mix64((items.len() as u64) ^ (u64::from(attempt) << 40));
        if let Some(filter) = try_build(items, f, b, m32, seed) {
            return Ok(filter);
        }
        m += m / 16 + 1;
    }
    Err(full())
}

/// One build attempt with exactly `m` buckets; `None` if some item found no place.
///
/// Buckets are kept packed (occupied slots first): items go to the first empty slot and
/// kick-outs only overwrite occupied slots. Hence while bucket `i1(x)` has an empty slot,
/// every earlier copy of `x`'s fingerprint in its bucket pair sits in `i1(x)`, and one scan
/// of that bucket both finds duplicates and finds room.
fn try_build(items: &[[u8; 32]], f: u8, b: u8, m: u32, seed: u64) -> Option<CuckooFilter> {
    let width = usize::from(b);
    let m64 = u64::from(m);
    let mut slots = vec![0u64; m as usize * width];
    let mut count: u32 = 0;
    let mut rng = KickRng(seed);

    'items: for x in items {
        let fp = fingerprint(x, f);
        let i1 = index1(x, m64);
        let i2 = alt_index(i1, fp, m64);
        for i in [i1, i2] {
            let start = i as usize * width;
            for slot in &mut slots[start..start + width] {
                if *slot == fp {
                    continue 'items;
                }
                if *slot == 0 {
                    *slot = fp;
                    count += 1;
                    continue 'items;
                }
            }
        }
        // Both buckets full: random-walk eviction.
        let mut homeless = fp;
        let mut i = if rng.next() & 1 == 0 { i1 } else { i2 };
        for _ in 0..MAX_KICKS {
            let victim = rng.below(width);
            std::mem::swap(&mut homeless, &mut slots[i as usize * width + victim]);
            i = alt_index(i, homeless, m64);
            let start = i as usize * width;
            if let Some(slot) = slots[start..start + width].iter_mut().find(|s| **s == 0) {
                *slot = homeless;
                count += 1;
                continue 'items;
            }
        }
        return None;
    }
    Some(CuckooFilter {
        f,
        b,
        m,
        count,
        slots,
    })
}

/// Target load (items per slot) of the first table size tried, by bucket size: just below
/// the load at which random-walk cuckoo insertion starts to fail.
fn target_load(b: u8) -> f64 {
    match b {
        1 => 0.45,
        2 => 0.85,
        3 => 0.92,
        4 => 0.95,
        _ => 0.96,
    }
}

/// Smallest `f` in 8..=64 with `2b / 2^f <= p`.
fn bits_for_rate(p: f64, b: u8) -> Result<u8> {
    let what = "target false-positive rate";
    if !(p > 0.0 && p < 1.0) {
        return Err(Error::out_of_range(what, format!("{p} is not in (0, 1)")));
    }
    F_RANGE
        .into_iter()
        .find(|&f| fp_rate_bound(f, b) <= p)
        .ok_or_else(|| {
            Error::out_of_range(
                what,
                format!(
                    "{p} is below {:e}, the bound at f = 64, b = {b}",
                    fp_rate_bound(64, b)
                ),
            )
        })
}

/// `2b / 2^f`, exact in `f64` (a small integer divided by a power of two).
fn fp_rate_bound(f: u8, b: u8) -> f64 {
    f64::from(2 * u32::from(b)) / (1u128 << f) as f64
}

/// `ceil(f / 8)`, the serialized width of one slot.
fn slot_bytes(f: u8) -> usize {
    usize::from(f).div_ceil(8)
}

/// Largest value that fits in `f` bits (`8 <= f <= 64`).
fn fingerprint_mask(f: u8) -> u64 {
    u64::MAX >> (64 - u32::from(f))
}

/// `fp(x) = BE64(x[0..8]) >> (64 - f)`, with 0 replaced by 1 (§4.1).
#[inline]
fn fingerprint(x: &[u8; 32], f: u8) -> u64 {
    let fp = be64(x, 0) >> (64 - u32::from(f));
    if fp == 0 {
        1
    } else {
        fp
    }
}

/// `i1(x) = BE64(x[8..16]) mod m` (§4.1).
#[inline]
fn index1(x: &[u8; 32], m: u64) -> u64 {
    be64(x, 8) % m
}

/// `alt(i, fp) = (mix64(fp) mod m + m - i) mod m` (§4.1), for `i < m <= 2^32`.
///
/// The sum is below `2m`, so the outer `mod` is one conditional subtraction.
#[inline]
fn alt_index(i: u64, fp: u64, m: u64) -> u64 {
    let sum = mix64(fp) % m + m - i;
    if sum >= m {
        sum - m
    } else {
        sum
    }
}

/// The splitmix64 finalizer of §4.1, all arithmetic wrapping.
#[inline]
fn mix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Big-endian u64 of `x[at..at + 8]` (`at` is 0 or 8).
#[inline]
fn be64(x: &[u8; 32], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&x[at..at + 8]);
    u64::from_be_bytes(word)
}

/// A [`FilterError::Parameter`] as an [`Error`].
fn param(name: &'static str, value: u64) -> Error {
    FilterError::Parameter { name, value }.into()
}

/// Deterministic generator for kick-out choices (splitmix64 over a counter). Not for
/// anything secret: it only decides which slot to evict.
struct KickRng(u64);

impl KickRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// A value in `0..n` (`n` small), by multiply-high.
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_items(seed: u64, n: usize) -> Vec<[u8; 32]> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let mut x = [0u8; 32];
                rng.fill_bytes(&mut x);
                x
            })
            .collect()
    }

    /// The input `00 01 02 .. 1f`.
    fn counting_input() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    fn filter_err(r: Result<CuckooFilter>) -> FilterError {
        match r {
            Err(Error::Filter(e)) => e,
            other => panic!("expected a filter error, got {other:?}"),
        }
    }

    /// A header with the given fields and an all-empty body of the length it implies.
    fn raw(f: u8, b: u8, m: u32, count: u32) -> Vec<u8> {
        let mut out = b"DPCF".to_vec();
        out.extend_from_slice(&[1, f, b, 0]);
        out.extend_from_slice(&m.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        let body = m as usize * usize::from(b) * usize::from(f).div_ceil(8);
        out.resize(HEADER_LEN + body, 0);
        out
    }

    #[test]
    fn mix64_is_splitmix64() {
        // First output of splitmix64 seeded with 0 (reference implementation by Vigna).
        assert_eq!(mix64(0), 0xE220_A839_7B1D_CDAF);
        // Computed independently from the formula of §4.1.
        assert_eq!(mix64(0x0001_0203_0405), 0x04EA_997D_8FB9_0751);
    }

    #[test]
    fn hand_computed_fp_i1_alt() {
        let x = counting_input();
        // BE64(x[0..8]) = 0x0001020304050607
        assert_eq!(fingerprint(&x, 64), 0x0001_0203_0405_0607);
        assert_eq!(fingerprint(&x, 48), 0x0001_0203_0405);
        // The top 8 or 12 bits are zero, so fp becomes 1.
        assert_eq!(fingerprint(&x, 8), 1);
        assert_eq!(fingerprint(&x, 12), 1);
        // BE64(x[8..16]) = 0x08090a0b0c0d0e0f = 578437695752307215
        assert_eq!(index1(&x, 1000), 567);
        assert_eq!(index1(&x, 1), 0);
        // mix64(fp) mod 1000 = 353828826412328785 mod 1000 = 785 ... (785 + 1000 - 567) mod 1000
        assert_eq!(alt_index(567, 0x0001_0203_0405, 1000), 330);
        // The largest m the format allows.
        let m = u64::from(u32::MAX);
        assert_eq!(index1(&x, m), 336_992_282);
        assert_eq!(alt_index(336_992_282, 0x0001_0203_0405, m), 2_156_759_220);

        let mut y = [0u8; 32];
        y[0] = 0xAB;
        y[1] = 0xCD;
        assert_eq!(fingerprint(&y, 8), 0xAB);
        assert_eq!(fingerprint(&y, 12), 0xABC);
        assert_eq!(fingerprint(&[0u8; 32], 64), 1);
    }

    #[test]
    fn lookup_follows_the_spec_rule() {
        // Place fp(x) by hand in bucket alt(i1) of an otherwise empty filter.
        let x = counting_input();
        let mut filter = CuckooFilter::parse(&raw(48, 4, 1000, 0)).expect("valid");
        assert!(!filter.contains(&x));
        filter.slots[330 * 4 + 3] = 0x0001_0203_0405;
        assert!(filter.contains(&x));
        filter.slots[330 * 4 + 3] = 0;
        filter.slots[567 * 4] = 0x0001_0203_0405;
        assert!(filter.contains(&x));
        filter.slots[567 * 4] = 0x0001_0203_0406;
        assert!(!filter.contains(&x));
    }

    #[test]
    fn alt_is_an_involution() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for m in [1u64, 2, 3, 1000, 1_262_000, u64::from(u32::MAX)] {
            for _ in 0..10_000 {
                let i = rng.next_u64() % m;
                let fp = rng.next_u64();
                let j = alt_index(i, fp, m);
                assert!(j < m);
                assert_eq!(alt_index(j, fp, m), i);
            }
        }
    }

    #[test]
    fn round_trip_serialize_parse() {
        let items = random_items(1, 5_000);
        for (f, b) in [(48, 4), (8, 4), (12, 2), (64, 8), (33, 1)] {
            let builder = FilterBuilder::new()
                .fingerprint_bits(f)
                .and_then(|x| x.bucket_size(b))
                .expect("valid parameters");
            let filter = builder.build(&items).expect("build");
            let bytes = filter.to_bytes();
            assert_eq!(bytes.len(), filter.serialized_len());
            assert_eq!(&bytes[..8], &[b'D', b'P', b'C', b'F', 1, f, b, 0]);
            assert_eq!(&bytes[8..12], &filter.buckets().to_be_bytes());
            assert_eq!(&bytes[12..16], &filter.len().to_be_bytes());
            let read = CuckooFilter::parse(&bytes).expect("parse");
            assert_eq!(read, filter);
            assert_eq!(read.fingerprint_bits(), f);
            assert_eq!(read.bucket_size(), b);
            assert!(items.iter().all(|x| read.contains(x)));
        }
    }

    #[test]
    fn no_false_negatives_100k() {
        let items = random_items(2, 100_000);
        let filter = FilterBuilder::new().build(&items).expect("build");
        assert_eq!(filter.len(), 100_000);
        assert!(items.iter().all(|x| filter.contains(x)));
        // ~0.95 load at b = 4: 6-byte slots, about 6.3 bytes per entry.
        let per_entry = filter.serialized_len() as f64 / items.len() as f64;
        assert!(per_entry <= 7.0, "{per_entry} bytes per entry");
    }

    #[test]
    fn no_false_negatives_at_small_f_and_every_b() {
        let items = random_items(3, 50_000);
        for b in 1..=8 {
            let filter = FilterBuilder::new()
                .fingerprint_bits(8)
                .and_then(|x| x.bucket_size(b))
                .and_then(|x| x.build(&items))
                .expect("build");
            assert!(items.iter().all(|x| filter.contains(x)), "b = {b}");
        }
    }

    #[test]
    fn measured_false_positive_rate_at_f8() {
        let filter = FilterBuilder::new()
            .fingerprint_bits(8)
            .and_then(|x| x.build(&random_items(4, 20_000)))
            .expect("build");
        let bound = filter.false_positive_rate();
        assert_eq!(bound, 8.0 / 256.0);
        let probes = random_items(5, 100_000);
        let hits = probes.iter().filter(|x| filter.contains(x)).count();
        let rate = hits as f64 / probes.len() as f64;
        // Expected about load * 2b / (2^f - 1) ≈ 0.03; the bound must hold and the filter
        // must not be trivially empty.
        assert!(rate <= bound * 1.1, "rate {rate} above bound {bound}");
        assert!(rate >= bound * 0.6, "rate {rate} suspiciously low");
    }

    #[test]
    fn false_positive_rate_target_picks_smallest_f() {
        // b = 4: 8 / 2^23 = 9.5e-7 <= 1e-6 < 8 / 2^22.
        let builder = FilterBuilder::new()
            .target_false_positive_rate(1e-6)
            .expect("reachable");
        assert_eq!(builder.f, 23);
        let filter = builder.build(&random_items(6, 100)).expect("build");
        assert_eq!(filter.fingerprint_bits(), 23);
        assert!(filter.false_positive_rate() <= 1e-6);
        // The bound itself is met exactly.
        let exact = FilterBuilder::new()
            .target_false_positive_rate(8.0 / 2f64.powi(48))
            .expect("reachable");
        assert_eq!(exact.f, 48);
        // Loose targets are clamped to the smallest f.
        let loose = FilterBuilder::new().target_false_positive_rate(0.5);
        assert_eq!(loose.expect("reachable").f, 8);
        // A later bucket size re-chooses f: 2 / 2^21 <= 1e-6 < 2 / 2^20.
        let b1 = builder.bucket_size(1).expect("reachable");
        assert_eq!((b1.f, b1.b), (21, 1));
        // An explicit f replaces the target.
        let fixed = builder.fingerprint_bits(40).and_then(|x| x.bucket_size(8));
        assert_eq!(fixed.expect("valid").f, 40);
    }

    #[test]
    fn false_positive_rate_target_errors() {
        for p in [0.0, 1.0, -0.1, 2.0, f64::NAN, f64::INFINITY, 1e-30] {
            let r = FilterBuilder::new().target_false_positive_rate(p);
            assert!(matches!(r, Err(Error::OutOfRange { .. })), "p = {p}");
        }
        // Reachable at b = 1 (2^-63) but not at b = 8 (2^-60).
        let builder = FilterBuilder::new()
            .bucket_size(1)
            .and_then(|x| x.target_false_positive_rate(2f64.powi(-62)))
            .expect("reachable at b = 1");
        assert!(matches!(
            builder.bucket_size(8),
            Err(Error::OutOfRange { .. })
        ));
    }

    #[test]
    fn builder_rejects_bad_parameters() {
        for f in [0, 7, 65, 255] {
            assert!(matches!(
                FilterBuilder::new().fingerprint_bits(f),
                Err(Error::Filter(FilterError::Parameter { name: "f", .. }))
            ));
        }
        for b in [0, 9] {
            assert!(matches!(
                FilterBuilder::new().bucket_size(b),
                Err(Error::Filter(FilterError::Parameter { name: "b", .. }))
            ));
        }
        assert_eq!(FilterBuilder::default(), FilterBuilder::new());
    }

    #[test]
    fn empty_filter() {
        let filter = FilterBuilder::new().build(&[]).expect("build");
        assert!(filter.is_empty());
        assert_eq!(filter.buckets(), 1);
        assert_eq!(filter.serialized_len(), 16 + 4 * 6);
        assert!(!filter.contains(&[0u8; 32]));
        let read = CuckooFilter::parse(&filter.to_bytes()).expect("parse");
        assert_eq!(read, filter);
    }

    #[test]
    fn duplicates_take_one_slot() {
        let x = counting_input();
        let mut items = vec![x; 1_000];
        items.push([9u8; 32]);
        let filter = FilterBuilder::new().build(&items).expect("build");
        assert_eq!(filter.len(), 2);
        assert_eq!(filter.slots.iter().filter(|&&s| s != 0).count(), 2);
        assert!(filter.contains(&x) && filter.contains(&[9u8; 32]));
    }

    #[test]
    fn build_is_deterministic() {
        let items = random_items(8, 10_000);
        let a = FilterBuilder::new().build(&items).expect("build");
        let b = FilterBuilder::new().build(&items).expect("build");
        assert_eq!(a.to_bytes(), b.to_bytes());
    }

    #[test]
    fn too_small_table_grows_instead_of_failing() {
        let items = random_items(9, 1_000);
        // 1000 items cannot fit in 200 * 4 slots, so the first attempts must fail.
        assert!(try_build(&items, 48, 4, 200, 1).is_none());
        let filter = build_growing(&items, 48, 4, 200, MAX_ATTEMPTS).expect("grows");
        assert!(filter.buckets() > 250);
        assert!(items.iter().all(|x| filter.contains(x)));
        // With too few attempts allowed, the build reports Full.
        assert_eq!(
            filter_err(build_growing(&items, 48, 4, 200, 2)),
            FilterError::Full(1_000)
        );
    }

    #[test]
    fn parse_rejects_every_malformed_input() {
        let good = raw(48, 4, 10, 3);
        assert!(CuckooFilter::parse(&good).is_ok());
        let with = |at: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[at] = value;
            CuckooFilter::parse(&bytes)
        };

        // Short.
        for len in [0, 1, 4, 15] {
            assert_eq!(
                filter_err(CuckooFilter::parse(&good[..len])),
                FilterError::Length {
                    expected: 16,
                    actual: len as u64
                }
            );
        }
        // Magic, version.
        assert_eq!(filter_err(with(0, b'X')), FilterError::Magic);
        assert_eq!(filter_err(with(3, b'f')), FilterError::Magic);
        assert_eq!(filter_err(with(4, 0)), FilterError::Version(0));
        assert_eq!(filter_err(with(4, 2)), FilterError::Version(2));
        // Parameters.
        let p = |name, value| FilterError::Parameter { name, value };
        assert_eq!(filter_err(with(5, 7)), p("f", 7));
        assert_eq!(filter_err(with(5, 65)), p("f", 65));
        assert_eq!(filter_err(with(6, 0)), p("b", 0));
        assert_eq!(filter_err(with(6, 9)), p("b", 9));
        assert_eq!(filter_err(with(7, 1)), p("reserved", 1));
        assert_eq!(
            filter_err(CuckooFilter::parse(&raw(48, 4, 0, 0))),
            p("m", 0)
        );
        // Length off by one either way.
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            filter_err(CuckooFilter::parse(&long)),
            FilterError::Length {
                expected: 16 + 240,
                actual: 16 + 241
            }
        );
        assert_eq!(
            filter_err(CuckooFilter::parse(&good[..good.len() - 1])),
            FilterError::Length {
                expected: 16 + 240,
                actual: 16 + 239
            }
        );
        // A huge m with a short body: rejected on length, nothing allocated.
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            filter_err(CuckooFilter::parse(&huge)),
            FilterError::Length {
                expected: 16 + u64::from(u32::MAX) * 4 * 6,
                actual: 256
            }
        );
        // Count above m * b.
        assert_eq!(
            filter_err(CuckooFilter::parse(&raw(48, 4, 10, 41))),
            p("item count", 41)
        );
        assert!(CuckooFilter::parse(&raw(48, 4, 10, 40)).is_ok());
        // A slot value wider than f bits: f = 12 uses 2-byte slots, so 0x1000 is too wide.
        let mut wide = raw(12, 2, 3, 0);
        assert!(CuckooFilter::parse(&wide).is_ok());
        wide[16 + 2 * 5..].copy_from_slice(&[0x0F, 0xFF]);
        assert!(CuckooFilter::parse(&wide).is_ok());
        wide[16 + 2 * 5..].copy_from_slice(&[0x10, 0x00]);
        assert_eq!(
            filter_err(CuckooFilter::parse(&wide)),
            p("slot value", 0x1000)
        );
        // f = 50: 7-byte slots, top 6 bits must be clear.
        let mut wide50 = raw(50, 1, 1, 0);
        wide50[16] = 0x04;
        assert_eq!(
            filter_err(CuckooFilter::parse(&wide50)),
            p("slot value", 1 << 50)
        );
        // f = 64: every value fits.
        let mut full64 = raw(64, 1, 1, 1);
        full64[16..].copy_from_slice(&[0xFF; 8]);
        assert!(CuckooFilter::parse(&full64).is_ok());
    }

    /// Build time and size for the server's largest bucket. Run with
    /// `cargo test --release -p dp3t-core cuckoo -- --ignored --nocapture`.
    #[test]
    #[ignore = "slow in debug builds; a measurement, not a check"]
    fn build_4_8_million() {
        let n = 4_800_000;
        let items = random_items(10, n);
        let start = std::time::Instant::now();
        let filter = FilterBuilder::new().build(&items).expect("build");
        let build = start.elapsed();
        let start = std::time::Instant::now();
        let bytes = filter.to_bytes();
        let serialize = start.elapsed();
        let start = std::time::Instant::now();
        let read = CuckooFilter::parse(&bytes).expect("parse");
        let parse = start.elapsed();
        let probes = random_items(11, 100_000);
        let start = std::time::Instant::now();
        let hits = probes.iter().filter(|x| read.contains(x)).count();
        let lookups = start.elapsed();
        println!(
            "n = {n}: build {:.3} s, m = {}, load {:.4}, {} bytes = {:.3} bytes/entry; \
             to_bytes {:.3} s, parse {:.3} s, 100k lookups {:.1} ms ({hits} hits)",
            build.as_secs_f64(),
            filter.buckets(),
            f64::from(filter.len()) / (f64::from(filter.buckets()) * 4.0),
            bytes.len(),
            bytes.len() as f64 / n as f64,
            serialize.as_secs_f64(),
            parse.as_secs_f64(),
            lookups.as_secs_f64() * 1e3,
        );
        assert!(items.iter().all(|x| read.contains(x)));
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = CuckooFilter::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_dpcf_like_bytes(
            f in 0u8..=70,
            b in 0u8..=10,
            m in prop_oneof![3 => 0u32..=20, 1 => any::<u32>()],
            count in prop_oneof![3 => 0u32..=20, 1 => any::<u32>()],
            mut body in proptest::collection::vec(any::<u8>(), 0..1_200),
            fit in any::<bool>(),
        ) {
            // Half the time, give the body the length the header implies, so that the
            // checks after the length check are reached too.
            let implied = u64::from(m) * u64::from(b) * u64::from(f).div_ceil(8);
            if fit && implied <= 4_096 {
                body.resize(implied as usize, 0x5A);
            }
            let mut bytes = b"DPCF".to_vec();
            bytes.extend_from_slice(&[1, f, b, 0]);
            bytes.extend_from_slice(&m.to_be_bytes());
            bytes.extend_from_slice(&count.to_be_bytes());
            bytes.extend_from_slice(&body);
            if let Ok(filter) = CuckooFilter::parse(&bytes) {
                // Whatever parses is canonical: it serializes back to the same bytes.
                prop_assert_eq!(filter.to_bytes(), bytes);
            }
        }

        #[test]
        fn mutated_filters_parse_canonically_or_fail(
            at in 0usize..200,
            value in any::<u8>(),
        ) {
            let filter = FilterBuilder::new()
                .fingerprint_bits(20)
                .and_then(|x| x.build(&random_items(12, 20)))
                .expect("build");
            let mut bytes = filter.to_bytes();
            let at = at % bytes.len();
            bytes[at] = value;
            if let Ok(read) = CuckooFilter::parse(&bytes) {
                prop_assert_eq!(read.to_bytes(), bytes);
            }
        }

        #[test]
        fn build_serialize_parse_contains(
            items in proptest::collection::vec(any::<[u8; 32]>(), 0..300),
            f in 8u8..=64,
            b in 1u8..=8,
        ) {
            let filter = FilterBuilder::new()
                .fingerprint_bits(f)
                .and_then(|x| x.bucket_size(b))
                .and_then(|x| x.build(&items))
                .expect("build");
            let read = CuckooFilter::parse(&filter.to_bytes()).expect("parse");
            prop_assert_eq!(&read, &filter);
            for x in &items {
                prop_assert!(read.contains(x));
            }
        }
    }
}
