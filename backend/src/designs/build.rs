//! Building the published body of one release bucket of a DP-3T design: the stored
//! record formats, padding, shuffling, encoding (PROTOCOL.md §9.2–9.4) and the response
//! signature (§9.5). Pure computation, no I/O: the same functions serve the server's
//! releases, the lazily computed bodies of buckets without uploads, and the
//! `dp3t-publish-bench` benchmark.
//!
//! Every body is a function of its inputs and of the caller's RNG only. The publisher
//! seeds that RNG from a per-deployment secret, the design and the bucket end
//! ([`padding_rng`]), so the body of a bucket (its real entries in database order, its
//! padding, its order) comes out the same on every node and after every restart.

use dp3t_core::cuckoo::FilterBuilder;
use dp3t_core::hybrid::{Window, WindowMinutes, WindowSeed};
use dp3t_core::lowcost::DayKey;
use dp3t_core::published::{HybridEntry, HybridList, LowCostEntry, LowCostList};
use dp3t_core::signing::{sign_response, ResponseClaims, SigningKey};
use dp3t_core::time::{Day, UnixTime, DAY_SECONDS};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

use super::Design;

/// Bytes of one stored low-cost record: `key (32) || BE32 day`.
pub const LOWCOST_RECORD_LEN: usize = 36;
/// Bytes of one stored unlinkable record: `SHA-256(EphID || BE32 epoch)`.
pub const UNLINKABLE_RECORD_LEN: usize = 32;
/// Bytes of one stored hybrid record: `seed (16) || BE64 window start || BE16 minutes`.
pub const HYBRID_RECORD_LEN: usize = 26;

/// A published low-cost key `(SK_t, t)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LowCostRecord {
    /// The day key.
    pub key: [u8; 32],
    /// Its UTC day number.
    pub day: u32,
}

/// A published hybrid window seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HybridRecord {
    /// The 16-byte window seed.
    pub seed: [u8; 16],
    /// Window start, unix seconds (aligned to the window length).
    pub start: u64,
    /// Window length `W` in minutes (a valid [`WindowMinutes`]).
    pub minutes: u16,
}

impl LowCostRecord {
    /// The stored form.
    pub fn to_bytes(&self) -> [u8; LOWCOST_RECORD_LEN] {
        let mut b = [0u8; LOWCOST_RECORD_LEN];
        b[..32].copy_from_slice(&self.key);
        b[32..].copy_from_slice(&self.day.to_be_bytes());
        b
    }

    /// Read the stored form.
    pub fn from_bytes(b: &[u8; LOWCOST_RECORD_LEN]) -> Self {
        let mut key = [0u8; 32];
        key.copy_from_slice(&b[..32]);
        LowCostRecord {
            key,
            day: u32::from_be_bytes([b[32], b[33], b[34], b[35]]),
        }
    }
}

impl HybridRecord {
    /// The stored form.
    pub fn to_bytes(&self) -> [u8; HYBRID_RECORD_LEN] {
        let mut b = [0u8; HYBRID_RECORD_LEN];
        b[..16].copy_from_slice(&self.seed);
        b[16..24].copy_from_slice(&self.start.to_be_bytes());
        b[24..].copy_from_slice(&self.minutes.to_be_bytes());
        b
    }

    /// Read the stored form.
    pub fn from_bytes(b: &[u8; HYBRID_RECORD_LEN]) -> Self {
        let mut seed = [0u8; 16];
        seed.copy_from_slice(&b[..16]);
        let mut start = [0u8; 8];
        start.copy_from_slice(&b[16..24]);
        HybridRecord {
            seed,
            start: u64::from_be_bytes(start),
            minutes: u16::from_be_bytes([b[24], b[25]]),
        }
    }
}

/// The real entries of one bucket, decoded from the stored records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealEntries {
    /// Low-cost keys.
    LowCost(Vec<LowCostRecord>),
    /// Unlinkable filter entries.
    Unlinkable(Vec<[u8; 32]>),
    /// Hybrid window seeds.
    Hybrid(Vec<HybridRecord>),
}

impl RealEntries {
    /// No entries, of `design`.
    pub fn empty(design: Design) -> Self {
        match design {
            Design::LowCost => RealEntries::LowCost(Vec::new()),
            Design::Unlinkable => RealEntries::Unlinkable(Vec::new()),
            Design::Hybrid => RealEntries::Hybrid(Vec::new()),
        }
    }

    /// Append the records of one stored upload (`entries` is a whole number of records of
    /// this design; a trailing partial record, which the server never writes, is ignored).
    pub fn extend_from_stored(&mut self, entries: &[u8]) {
        match self {
            RealEntries::LowCost(v) => v.extend(
                entries
                    .chunks_exact(LOWCOST_RECORD_LEN)
                    .filter_map(|c| c.try_into().ok())
                    .map(LowCostRecord::from_bytes),
            ),
            RealEntries::Unlinkable(v) => v.extend(
                entries
                    .chunks_exact(UNLINKABLE_RECORD_LEN)
                    .filter_map(|c| <[u8; 32]>::try_from(c).ok()),
            ),
            RealEntries::Hybrid(v) => v.extend(
                entries
                    .chunks_exact(HYBRID_RECORD_LEN)
                    .filter_map(|c| c.try_into().ok())
                    .map(HybridRecord::from_bytes),
            ),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            RealEntries::LowCost(v) => v.len(),
            RealEntries::Unlinkable(v) => v.len(),
            RealEntries::Hybrid(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What shapes a published body, besides its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildParams {
    /// Padding minimum: the body holds at least this many entries.
    pub min_entries: usize,
    /// Fingerprint bits of unlinkable filters.
    pub fingerprint_bits: u8,
    /// Retention in seconds: padding entries are dated inside it.
    pub retention_seconds: u64,
    /// `iss` of the response signature.
    pub issuer: String,
}

/// A built, signed bucket body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltBody {
    /// The published bytes.
    pub body: Vec<u8>,
    /// The `Signature` header value for them.
    pub signature: String,
    /// Real entries in it (after removing exact duplicates, except for filters).
    pub real_entries: u64,
    /// Entries including padding.
    pub total_entries: u64,
}

/// Failure to build a body.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Encoding, filter construction or signing failed.
    #[error(transparent)]
    Core(#[from] dp3t_core::Error),
}

/// The deterministic padding and shuffling RNG of the bucket of `design` ending at
/// `bucket_end`: ChaCha20 keyed with `SHA-256("dp3t-padding/v1" || secret || design ||
/// BE64 bucket_end)`.
pub fn padding_rng(secret: &[u8; 32], design: Design, bucket_end: u64) -> ChaCha20Rng {
    let mut h = Sha256::new();
    h.update(b"dp3t-padding/v1");
    h.update(secret);
    h.update(design.name().as_bytes());
    h.update(bucket_end.to_be_bytes());
    ChaCha20Rng::from_seed(h.finalize().into())
}

/// Build and sign the body of the bucket ending at `release` (unix seconds) from its
/// real entries: padded to `params.min_entries` with random entries of the right form,
/// shuffled (lists) or hashed into a DPCF filter, then signed with `key` (§9.5 claims with
/// `batch-release-time`).
pub fn build_body(
    release: u64,
    real: RealEntries,
    params: &BuildParams,
    key: &SigningKey,
    rng: &mut impl RngCore,
) -> Result<BuiltBody, BuildError> {
    let (body, real_entries, total_entries) = match real {
        RealEntries::LowCost(v) => lowcost_body(release, v, params, rng)?,
        RealEntries::Unlinkable(v) => unlinkable_body(v, params, rng)?,
        RealEntries::Hybrid(v) => hybrid_body(release, v, params, rng)?,
    };
    let signature = sign_body(&body, release, params, key)?;
    Ok(BuiltBody {
        body,
        signature,
        real_entries: real_entries as u64,
        total_entries: total_entries as u64,
    })
}

/// The `Signature` header of `body` released at `release`: `iat` = release time,
/// `exp` = release + retention, `batch-release-time` in ms (as the DP-3T backend).
pub fn sign_body(
    body: &[u8],
    release: u64,
    params: &BuildParams,
    key: &SigningKey,
) -> Result<String, BuildError> {
    let claims = ResponseClaims::for_body(
        body,
        &params.issuer,
        release,
        release.saturating_add(params.retention_seconds),
        Some(release.saturating_mul(1000)),
    );
    Ok(sign_response(body, key, &claims)?)
}

/// The last second of the bucket ending at `release`: padding is dated at or before it.
fn latest(release: u64) -> u64 {
    release.saturating_sub(1)
}

fn retention_days(params: &BuildParams) -> u32 {
    u32::try_from(params.retention_seconds / DAY_SECONDS)
        .unwrap_or(u32::MAX)
        .max(1)
}

fn lowcost_body(
    release: u64,
    mut real: Vec<LowCostRecord>,
    params: &BuildParams,
    rng: &mut impl RngCore,
) -> Result<(Vec<u8>, usize, usize), BuildError> {
    real.sort_unstable();
    real.dedup();
    let n_real = real.len();
    let last_day = UnixTime(latest(release)).day().0;
    let days = retention_days(params);
    while real.len() < params.min_entries {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let day = last_day.saturating_sub(rng.gen_range(0..days));
        real.push(LowCostRecord { key, day });
    }
    real.shuffle(rng);
    let total = real.len();
    let list = LowCostList {
        release_time: UnixTime(release),
        entries: real
            .iter()
            .map(|r| LowCostEntry {
                key: DayKey::from_bytes(r.key),
                day: Day(r.day),
            })
            .collect(),
    };
    Ok((list.encode()?, n_real, total))
}

fn unlinkable_body(
    mut real: Vec<[u8; 32]>,
    params: &BuildParams,
    rng: &mut impl RngCore,
) -> Result<(Vec<u8>, usize, usize), BuildError> {
    let n_real = real.len();
    // Padding entries are uniformly random 32-byte strings, exactly what SHA-256 outputs
    // look like; none of them is any phone's observation.
    real.reserve(params.min_entries.saturating_sub(n_real));
    while real.len() < params.min_entries {
        let mut e = [0u8; 32];
        rng.fill_bytes(&mut e);
        real.push(e);
    }
    let total = real.len();
    let filter = FilterBuilder::new()
        .fingerprint_bits(params.fingerprint_bits)?
        .build(&real)?;
    Ok((filter.to_bytes(), n_real, total))
}

fn hybrid_body(
    release: u64,
    mut real: Vec<HybridRecord>,
    params: &BuildParams,
    rng: &mut impl RngCore,
) -> Result<(Vec<u8>, usize, usize), BuildError> {
    real.sort_unstable();
    real.dedup();
    let n_real = real.len();
    let last = latest(release);
    while real.len() < params.min_entries {
        // The window length of a random real entry of the bucket (so lengths don't tell
        // padding apart), or the profile's default when there is none.
        let minutes = match real.get(..n_real).and_then(|r| r.choose(rng)) {
            Some(r) => r.minutes,
            None => WindowMinutes::DEFAULT.get() as u16,
        };
        let len = u64::from(minutes) * 60;
        let windows = (params.retention_seconds / len).max(1);
        let newest = last - last % len;
        let start = newest.saturating_sub(rng.gen_range(0..windows) * len);
        let mut seed = [0u8; 16];
        rng.fill_bytes(&mut seed);
        real.push(HybridRecord {
            seed,
            start,
            minutes,
        });
    }
    real.shuffle(rng);
    let total = real.len();
    let entries = real
        .iter()
        .map(|r| {
            let minutes = WindowMinutes::new(u32::from(r.minutes))?;
            Ok(HybridEntry {
                window: Window::new(UnixTime(r.start), minutes)?,
                seed: WindowSeed::from_bytes(r.seed),
            })
        })
        .collect::<Result<Vec<_>, dp3t_core::Error>>()?;
    let list = HybridList {
        release_time: UnixTime(release),
        entries,
    };
    Ok((list.encode()?, n_real, total))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dp3t_core::cuckoo::CuckooFilter;
    use dp3t_core::signing::verify_response;

    fn params(min: usize) -> BuildParams {
        BuildParams {
            min_entries: min,
            fingerprint_bits: 48,
            retention_seconds: 14 * 86_400,
            issuer: "dp3t".into(),
        }
    }

    fn key() -> SigningKey {
        SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(1))
    }

    const RELEASE: u64 = 20_000 * 86_400 + 7_200;

    #[test]
    fn records_round_trip() {
        let l = LowCostRecord {
            key: [7; 32],
            day: 19_999,
        };
        assert_eq!(LowCostRecord::from_bytes(&l.to_bytes()), l);
        let h = HybridRecord {
            seed: [3; 16],
            start: 1_700_006_400,
            minutes: 120,
        };
        assert_eq!(HybridRecord::from_bytes(&h.to_bytes()), h);
        let mut r = RealEntries::empty(Design::Hybrid);
        let mut stored = h.to_bytes().to_vec();
        stored.extend_from_slice(&h.to_bytes());
        stored.push(0); // a partial record is ignored
        r.extend_from_stored(&stored);
        assert_eq!(r, RealEntries::Hybrid(vec![h, h]));
    }

    #[test]
    fn lowcost_padding_is_shaped_like_real_keys_and_signed() {
        let k = key();
        let real = vec![
            LowCostRecord {
                key: [1; 32],
                day: 19_998,
            };
            2
        ];
        let built = build_body(
            RELEASE,
            RealEntries::LowCost(real),
            &params(10),
            &k,
            &mut ChaCha20Rng::seed_from_u64(2),
        )
        .unwrap();
        assert_eq!((built.real_entries, built.total_entries), (1, 10));
        let list = LowCostList::decode(&built.body).unwrap();
        assert_eq!(list.release_time, UnixTime(RELEASE));
        assert_eq!(list.entries.len(), 10);
        assert!(list
            .entries
            .iter()
            .all(|e| e.day.0 <= 20_000 && e.day.0 > 20_000 - 14));
        let claims = verify_response(
            &built.body,
            &built.signature,
            &k.public_key(),
            UnixTime(RELEASE + 10),
        )
        .unwrap();
        assert_eq!(claims.batch_release_time_ms, Some(RELEASE * 1000));
        assert_eq!(claims.iat, RELEASE);
    }

    #[test]
    fn the_same_rng_gives_the_same_bytes() {
        let k = key();
        let secret = [9u8; 32];
        for design in [Design::LowCost, Design::Unlinkable, Design::Hybrid] {
            let build = |end: u64| {
                build_body(
                    end,
                    RealEntries::empty(design),
                    &params(50),
                    &k,
                    &mut padding_rng(&secret, design, end),
                )
                .unwrap()
            };
            assert_eq!(build(RELEASE), build(RELEASE), "{design:?}");
            assert_ne!(build(RELEASE).body, build(RELEASE + 7_200).body);
        }
    }

    #[test]
    fn unlinkable_filter_holds_real_entries_and_padding() {
        let k = key();
        let real: Vec<[u8; 32]> = (0..100u8).map(|i| [i; 32]).collect();
        let built = build_body(
            RELEASE,
            RealEntries::Unlinkable(real.clone()),
            &params(1_000),
            &k,
            &mut ChaCha20Rng::seed_from_u64(3),
        )
        .unwrap();
        let f = CuckooFilter::parse(&built.body).unwrap();
        assert_eq!(f.fingerprint_bits(), 48);
        assert_eq!(f.len(), 1_000);
        assert!(real.iter().all(|e| f.contains(e)));
        assert!(!f.contains(&[0xEE; 32]));
        // No padding and no entries: still a valid, empty filter.
        let empty = build_body(
            RELEASE,
            RealEntries::Unlinkable(Vec::new()),
            &params(0),
            &k,
            &mut ChaCha20Rng::seed_from_u64(3),
        )
        .unwrap();
        assert!(CuckooFilter::parse(&empty.body).unwrap().is_empty());
    }

    #[test]
    fn hybrid_padding_copies_window_lengths_and_stays_aligned() {
        let k = key();
        let real = vec![HybridRecord {
            seed: [5; 16],
            start: RELEASE - 86_400,
            minutes: 60,
        }];
        let built = build_body(
            RELEASE,
            RealEntries::Hybrid(real),
            &params(20),
            &k,
            &mut ChaCha20Rng::seed_from_u64(4),
        )
        .unwrap();
        let list = HybridList::decode(&built.body).unwrap();
        assert_eq!(list.entries.len(), 20);
        for e in &list.entries {
            assert_eq!(e.window.minutes().get(), 60);
            assert!(e.window.start().0 < RELEASE);
            assert!(e.window.end().0 + 14 * 86_400 > RELEASE);
        }
        // Without real entries, padding uses the default window length.
        let built = build_body(
            RELEASE,
            RealEntries::empty(Design::Hybrid),
            &params(3),
            &k,
            &mut ChaCha20Rng::seed_from_u64(4),
        )
        .unwrap();
        let list = HybridList::decode(&built.body).unwrap();
        assert!(list
            .entries
            .iter()
            .all(|e| e.window.minutes() == WindowMinutes::DEFAULT));
    }
}
