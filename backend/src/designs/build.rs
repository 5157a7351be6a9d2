//! Building the published body of one release bucket of a DP-3T design: the stored
//! record formats, padding, shuffling, encoding (PROTOCOL.md §9.2–9.4) and the response
//! signature (§9.5). Pure computation, no I/O: the same functions serve the server's
//! releases, the lazily computed bodies of buckets without uploads, and the
//! `dp3t-publish-bench` benchmark.
//!
//! Every body is a function of its inputs and of the caller's RNG only. The publisher
//! draws fresh randomness for each bucket and stores the built bytes, which are then the
//! only copy of that padding: no secret from which padding could be recomputed exists
//! (PROTOCOL.md §10; an earlier version derived it from a deployment-wide secret).
//!
//! Padding is meant to be indistinguishable from real entries:
//!
//! * **How many** ([`padded_count`]): the count is rounded up and a random extra is
//!   added, so a published count above the minimum does not tell the real count.
//! * **When** ([`DatePrior`]): padding is dated like the real entries of the whole
//!   retention window (their age at publication, drawn from the empirical distribution),
//!   not evenly over the retention, and not copied from the bucket's own entries.

use dp3t_core::cuckoo::FilterBuilder;
use dp3t_core::hybrid::{Window, WindowMinutes, WindowSeed};
use dp3t_core::lowcost::DayKey;
use dp3t_core::published::{HybridEntry, HybridList, LowCostEntry, LowCostList};
use dp3t_core::signing::{sign_response, ResponseClaims, SigningKey};
use dp3t_core::time::{Day, UnixTime, DAY_SECONDS};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

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

/// How many entries a bucket with `real` entries publishes, for a padding minimum of
/// `min` (0 turns padding off): `max(real, min)` rounded up to a multiple of
/// `step = max(1, min / 2)`, plus a uniform random extra in `0..step`. Every real count
/// from 0 to the minimum gives the same distribution, and above it the published count
/// only tells the real count to within `2 * step`.
pub fn padded_count(real: usize, min: usize, rng: &mut impl RngCore) -> usize {
    if min == 0 {
        return real;
    }
    let step = (min / 2).max(1);
    real.max(min)
        .div_ceil(step)
        .saturating_mul(step)
        .saturating_add(rng.gen_range(0..step))
}

/// How real entries of the retention window were dated, relative to the bucket that
/// published them: padding is dated from it ([`DatePrior::add_stored`] per stored
/// upload). Empty when the window holds no real entry; padding then falls back to
/// dates spread evenly over the retention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatePrior {
    /// Low-cost: days between a key's day and the day of its bucket's last second.
    pub lowcost_day_ages: Vec<u32>,
    /// Hybrid: a window's length in minutes, and seconds from its start to its bucket's
    /// end.
    pub hybrid_ages: Vec<(u16, u64)>,
}

impl DatePrior {
    /// Add the records of one stored upload of `design`, published in the bucket ending
    /// at `bucket_end`.
    pub fn add_stored(&mut self, design: Design, entries: &[u8], bucket_end: u64) {
        let mut real = RealEntries::empty(design);
        real.extend_from_stored(entries);
        match real {
            RealEntries::LowCost(v) => {
                let last_day = UnixTime(latest(bucket_end)).day().0;
                self.lowcost_day_ages
                    .extend(v.iter().filter_map(|r| last_day.checked_sub(r.day)));
            }
            RealEntries::Hybrid(v) => self.hybrid_ages.extend(
                v.iter()
                    .filter_map(|r| Some((r.minutes, bucket_end.checked_sub(r.start)?))),
            ),
            RealEntries::Unlinkable(_) => {}
        }
    }
}

/// Draws from `prior` until `valid` accepts one (at most this many tries).
const PRIOR_TRIES: usize = 32;

fn draw<T: Copy>(prior: &[T], rng: &mut impl RngCore, valid: impl Fn(T) -> bool) -> Option<T> {
    (0..PRIOR_TRIES)
        .filter_map(|_| prior.choose(rng).copied())
        .find(|v| valid(*v))
}

/// Build and sign the body of the bucket ending at `release` (unix seconds) from its
/// real entries: padded ([`padded_count`] of `params.min_entries`) with random entries of
/// the right form dated from `prior`, shuffled (lists) or hashed into a DPCF filter, then
/// signed with `key` (§9.5 claims with `batch-release-time`).
pub fn build_body(
    release: u64,
    real: RealEntries,
    params: &BuildParams,
    prior: &DatePrior,
    key: &SigningKey,
    rng: &mut impl RngCore,
) -> Result<BuiltBody, BuildError> {
    let (body, real_entries, total_entries) = match real {
        RealEntries::LowCost(v) => lowcost_body(release, v, params, prior, rng)?,
        RealEntries::Unlinkable(v) => unlinkable_body(v, params, rng)?,
        RealEntries::Hybrid(v) => hybrid_body(release, v, params, prior, rng)?,
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
    prior: &DatePrior,
    rng: &mut impl RngCore,
) -> Result<(Vec<u8>, usize, usize), BuildError> {
    real.sort_unstable();
    real.dedup();
    let n_real = real.len();
    let last_day = UnixTime(latest(release)).day().0;
    let days = retention_days(params);
    let target = padded_count(n_real, params.min_entries, rng);
    while real.len() < target {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let age = draw(&prior.lowcost_day_ages, rng, |a| a < days)
            .unwrap_or_else(|| rng.gen_range(0..days));
        real.push(LowCostRecord {
            key,
            day: last_day.saturating_sub(age),
        });
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
    let target = padded_count(n_real, params.min_entries, rng);
    real.reserve(target.saturating_sub(n_real));
    while real.len() < target {
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
    prior: &DatePrior,
    rng: &mut impl RngCore,
) -> Result<(Vec<u8>, usize, usize), BuildError> {
    real.sort_unstable();
    real.dedup();
    let n_real = real.len();
    let last = latest(release);
    let target = padded_count(n_real, params.min_entries, rng);
    // A drawn age is usable if its window, aligned, starts before the release and ends
    // within the retention.
    let window_start = |(minutes, age): (u16, u64)| {
        let len = u64::from(minutes.max(1)) * 60;
        let t = release.checked_sub(age)?;
        let start = t - t % len;
        (WindowMinutes::new(u32::from(minutes)).is_ok()
            && start <= last
            && start + len + params.retention_seconds > release)
            .then_some(start)
    };
    while real.len() < target {
        // The window length and age of a random real entry of the retention window (so
        // neither tells padding apart), or, with none, the profile's default length and
        // an age spread over the retention.
        let drawn = draw(&prior.hybrid_ages, rng, |a| window_start(a).is_some());
        let (minutes, start) = match drawn.and_then(|a| Some((a.0, window_start(a)?))) {
            Some(ms) => ms,
            None => {
                let minutes = WindowMinutes::DEFAULT.get() as u16;
                let len = u64::from(minutes) * 60;
                let windows = (params.retention_seconds / len).max(1);
                let newest = last - last % len;
                (
                    minutes,
                    newest.saturating_sub(rng.gen_range(0..windows) * len),
                )
            }
        };
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
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn none() -> DatePrior {
        DatePrior::default()
    }

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
            &none(),
            &k,
            &mut ChaCha20Rng::seed_from_u64(2),
        )
        .unwrap();
        assert_eq!(built.real_entries, 1);
        assert!((10..15).contains(&built.total_entries));
        let list = LowCostList::decode(&built.body).unwrap();
        assert_eq!(list.release_time, UnixTime(RELEASE));
        assert_eq!(list.entries.len() as u64, built.total_entries);
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
    fn counts_are_rounded_up_with_a_random_extra() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        // Padding off: the real count.
        assert_eq!(padded_count(7, 0, &mut rng), 7);
        // Every real count up to the minimum: the same range, [min, min + step).
        let mut seen = std::collections::BTreeSet::new();
        for real in [0, 1, 37, 99, 100] {
            for _ in 0..200 {
                let n = padded_count(real, 100, &mut rng);
                assert!((100..150).contains(&n), "{real} -> {n}");
                seen.insert(n);
            }
        }
        assert!(seen.len() > 40, "the extra is random: {}", seen.len());
        // Above it: rounded up to a multiple of the step, plus the extra, so the real
        // count is not published.
        let counts: Vec<usize> = (0..200).map(|_| padded_count(117, 100, &mut rng)).collect();
        assert!(counts.iter().all(|n| (150..200).contains(n)));
        assert!(counts.iter().filter(|n| **n == 117).count() == 0);
    }

    #[test]
    fn bodies_come_from_fresh_randomness() {
        let k = key();
        for design in [Design::LowCost, Design::Unlinkable, Design::Hybrid] {
            let build = |seed: u64| {
                build_body(
                    RELEASE,
                    RealEntries::empty(design),
                    &params(50),
                    &none(),
                    &k,
                    &mut ChaCha20Rng::seed_from_u64(seed),
                )
                .unwrap()
            };
            assert_eq!(build(1), build(1), "{design:?}");
            assert_ne!(build(1).body, build(2).body, "{design:?}");
        }
    }

    /// The AUC of the best classifier of `real` against `pad` on one discrete feature,
    /// trained on even indices (smoothed histograms, likelihood ratio) and measured on odd
    /// ones.
    fn holdout_auc(real: &[u64], pad: &[u64]) -> f64 {
        use std::collections::HashMap;
        let hist = |v: &[u64]| {
            let mut h: HashMap<u64, f64> = HashMap::new();
            for x in v.iter().step_by(2) {
                *h.entry(*x).or_default() += 1.0;
            }
            h
        };
        let (hr, hp) = (hist(real), hist(pad));
        let (nr, np) = (real.len() as f64 / 2.0, pad.len() as f64 / 2.0);
        let score = |x: &u64| {
            (hr.get(x).copied().unwrap_or(0.0) + 1.0)
                / (nr + 1.0)
                / ((hp.get(x).copied().unwrap_or(0.0) + 1.0) / (np + 1.0))
        };
        let tr: Vec<f64> = real.iter().skip(1).step_by(2).map(score).collect();
        let tp: Vec<f64> = pad.iter().skip(1).step_by(2).map(score).collect();
        let mut wins = 0.0;
        for a in &tr {
            for b in &tp {
                wins += if a > b {
                    1.0
                } else if a == b {
                    0.5
                } else {
                    0.0
                };
            }
        }
        wins / (tr.len() * tp.len()) as f64
    }

    /// Real uploads as phones make them: onset 0–4 days before the upload, keys from two
    /// days before onset up to yesterday (low-cost) or windows of those days (hybrid).
    /// Returns (bucket end, stored records) per upload.
    fn realistic_uploads(design: Design, rng: &mut ChaCha20Rng) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        for _ in 0..400 {
            let end = RELEASE - rng.gen_range(0..14 * 12) * 7_200;
            let upload_day = UnixTime(end - 1).day().0;
            let onset = upload_day - rng.gen_range(0..5);
            let mut stored = Vec::new();
            for day in onset - 2..upload_day {
                match design {
                    Design::LowCost => stored.extend_from_slice(
                        &LowCostRecord {
                            key: rng.gen(),
                            day,
                        }
                        .to_bytes(),
                    ),
                    _ => {
                        for w in 0..12 {
                            let start = u64::from(day) * 86_400 + w * 7_200;
                            stored.extend_from_slice(
                                &HybridRecord {
                                    seed: rng.gen(),
                                    start,
                                    minutes: 120,
                                }
                                .to_bytes(),
                            );
                        }
                    }
                }
            }
            out.push((end, stored));
        }
        out
    }

    #[test]
    fn padding_is_dated_like_real_entries() {
        let k = key();
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        for design in [Design::LowCost, Design::Hybrid] {
            let uploads = realistic_uploads(design, &mut rng);
            // The population of the retention window.
            let mut prior = DatePrior::default();
            for (end, stored) in &uploads {
                prior.add_stored(design, stored, *end);
            }
            // Buckets holding a few of these uploads each, published with padding.
            let (mut real_ages, mut pad_ages, mut uniform_ages) = (vec![], vec![], vec![]);
            for (i, chunk) in uploads.chunks(4).take(60).enumerate() {
                let end = chunk[0].0;
                let mut real = RealEntries::empty(design);
                for (_, stored) in chunk {
                    real.extend_from_stored(stored);
                }
                let real_set: std::collections::BTreeSet<Vec<u8>> = match &real {
                    RealEntries::LowCost(v) => v.iter().map(|r| r.key.to_vec()).collect(),
                    RealEntries::Hybrid(v) => v.iter().map(|r| r.seed.to_vec()).collect(),
                    RealEntries::Unlinkable(_) => unreachable!(),
                };
                // Real entries of the chunk are dated relative to their own bucket end.
                for (e, stored) in chunk {
                    let mut p = DatePrior::default();
                    p.add_stored(design, stored, *e);
                    real_ages.extend(p.lowcost_day_ages.iter().map(|a| u64::from(*a)));
                    real_ages.extend(p.hybrid_ages.iter().map(|(_, a)| a / 7_200));
                }
                let n_real = real.len();
                for (prior, ages) in [(&prior, &mut pad_ages), (&none(), &mut uniform_ages)] {
                    let built = build_body(
                        end,
                        real.clone(),
                        &params(n_real * 2),
                        prior,
                        &k,
                        &mut ChaCha20Rng::seed_from_u64(i as u64),
                    )
                    .unwrap();
                    match design {
                        Design::LowCost => {
                            let last = UnixTime(end - 1).day().0;
                            for e in LowCostList::decode(&built.body).unwrap().entries {
                                if !real_set.contains(e.key.as_bytes().as_slice()) {
                                    ages.push(u64::from(last - e.day.0));
                                }
                            }
                        }
                        _ => {
                            for e in HybridList::decode(&built.body).unwrap().entries {
                                if !real_set.contains(e.seed.as_bytes().as_slice()) {
                                    ages.push((end - e.window.start().0) / 7_200);
                                }
                            }
                        }
                    }
                }
            }
            let auc = holdout_auc(&real_ages, &pad_ages);
            let auc = auc.max(1.0 - auc);
            assert!(auc <= 0.55, "{design:?}: AUC {auc}");
            // Padding spread evenly over the retention (what an empty window gets, and
            // what every bucket got before) is told apart easily: the test has power.
            let even = holdout_auc(&real_ages, &uniform_ages);
            assert!(even.max(1.0 - even) > 0.65, "{design:?}: AUC {even}");
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
            &none(),
            &k,
            &mut ChaCha20Rng::seed_from_u64(3),
        )
        .unwrap();
        let f = CuckooFilter::parse(&built.body).unwrap();
        assert_eq!(f.fingerprint_bits(), 48);
        assert!((1_000..1_500).contains(&f.len()));
        assert!(real.iter().all(|e| f.contains(e)));
        assert!(!f.contains(&[0xEE; 32]));
        // No padding and no entries: still a valid, empty filter.
        let empty = build_body(
            RELEASE,
            RealEntries::Unlinkable(Vec::new()),
            &params(0),
            &none(),
            &k,
            &mut ChaCha20Rng::seed_from_u64(3),
        )
        .unwrap();
        assert!(CuckooFilter::parse(&empty.body).unwrap().is_empty());
    }

    #[test]
    fn hybrid_padding_copies_window_lengths_and_stays_aligned() {
        let k = key();
        let real = HybridRecord {
            seed: [5; 16],
            start: RELEASE - 86_400,
            minutes: 60,
        };
        // The window's population: this entry, and one published three days earlier.
        let mut prior = DatePrior::default();
        prior.add_stored(Design::Hybrid, &real.to_bytes(), RELEASE);
        prior.add_stored(Design::Hybrid, &real.to_bytes(), RELEASE - 3 * 86_400);
        let built = build_body(
            RELEASE,
            RealEntries::Hybrid(vec![real]),
            &params(20),
            &prior,
            &k,
            &mut ChaCha20Rng::seed_from_u64(4),
        )
        .unwrap();
        let list = HybridList::decode(&built.body).unwrap();
        assert!((20..30).contains(&list.entries.len()));
        for e in &list.entries {
            assert_eq!(e.window.minutes().get(), 60);
            assert!(e.window.start().0 < RELEASE);
            assert!(e.window.end().0 + 14 * 86_400 > RELEASE);
            // Dated at the ages of the population: a day before the release.
            assert_eq!(e.window.start().0, RELEASE - 86_400);
        }
        // Without real entries, padding uses the default window length.
        let built = build_body(
            RELEASE,
            RealEntries::empty(Design::Hybrid),
            &params(3),
            &none(),
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
