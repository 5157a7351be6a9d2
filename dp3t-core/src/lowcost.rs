//! The DP-3T low-cost design (PROTOCOL.md §3).
//!
//! A phone keeps a chain of day keys, `SK_{t+1} = SHA-256(SK_t)`. Each day's key gives a
//! PRF key, `HMAC-SHA256(SK_t, "broadcast key")`, whose AES-256-CTR keystream from a zero
//! counter block, cut in 16-byte chunks, gives the day's 96 EphIDs. The phone broadcasts
//! them in a per-day random order, one per 15-minute epoch; the order comes from the
//! injected RNG and is kept with the key ([`BroadcastDay`]).
//!
//! Matching walks published chains day by day ([`walk_chains`]): a day step is five
//! SHA-256 compressions (the next key, and the PRF's HMAC) and 96 AES-256 blocks. On
//! x86-64 with SHA-NI and VAES the walk steps four chains at once on the kernels of
//! `kernels.rs`; elsewhere, and on CPUs without those features, it steps them one by one
//! on the RustCrypto crates. The tests check both against each other.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes256;
use hmac::{Hmac, Mac};
use rand::seq::SliceRandom;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::time::{Day, UnixTime, EPOCHS_PER_DAY, EPOCH_SECONDS};
use crate::{fixed, EphId};

/// The PRF message of the low-cost design (13 ASCII bytes, lower-case).
pub const BROADCAST_KEY: &[u8] = b"broadcast key";
/// EphIDs per day (`24 h / 15 min`).
pub const EPHIDS_PER_DAY: usize = EPOCHS_PER_DAY as usize;

/// A day key `SK_t` (32 secret bytes).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct DayKey([u8; 32]);

impl std::fmt::Debug for DayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DayKey(<redacted>)")
    }
}

impl DayKey {
    /// A fresh first key of a chain from the injected CSPRNG.
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        DayKey(k)
    }
    /// Wrap known key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        DayKey(b)
    }
    /// From a slice of exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        Ok(DayKey(fixed(b, "day key")?))
    }
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// `SK_{t+1} = SHA-256(SK_t)`.
    pub fn next(&self) -> DayKey {
        DayKey(Sha256::digest(self.0).into())
    }
    /// The key `days` steps further down the chain.
    pub fn step(&self, days: u32) -> DayKey {
        let mut k = self.clone();
        for _ in 0..days {
            k = k.next();
        }
        k
    }
    /// `PRF = HMAC-SHA256(SK_t, "broadcast key")`.
    pub fn prf(&self) -> [u8; 32] {
        hmac_sha256(&self.0, BROADCAST_KEY)
    }
    /// The 96 EphIDs of the day, in unshuffled order.
    pub fn ephids(&self) -> [EphId; EPHIDS_PER_DAY] {
        let mut out = [EphId::default(); EPHIDS_PER_DAY];
        let mut prf = self.prf();
        ephids_from_prf(&prf, &mut out);
        prf.zeroize();
        out
    }
}

/// HMAC-SHA256 of `msg` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Fill `out` with the AES-256-CTR keystream under `prf` from the all-zero counter block
/// (128-bit big-endian counter), one EphID per 16-byte block. Shared by the low-cost and
/// hybrid designs.
pub(crate) fn ephids_from_prf(prf: &[u8; 32], out: &mut [EphId]) {
    let cipher = Aes256::new(GenericArray::from_slice(prf));
    // At most 96 EphIDs per key in either design: one stack buffer, no allocation.
    let mut blocks = [aes::Block::default(); EPHIDS_PER_DAY];
    for chunk_start in (0..out.len()).step_by(EPHIDS_PER_DAY) {
        let n = (out.len() - chunk_start).min(EPHIDS_PER_DAY);
        for (i, b) in blocks[..n].iter_mut().enumerate() {
            *b = GenericArray::from(((chunk_start + i) as u128).to_be_bytes());
        }
        cipher.encrypt_blocks(&mut blocks[..n]);
        for (o, b) in out[chunk_start..chunk_start + n]
            .iter_mut()
            .zip(blocks.iter())
        {
            o.0.copy_from_slice(b);
        }
    }
}

/// A chain to walk: from `key`, the day key of `day`, for `days` consecutive days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainWalk {
    /// The first day's key.
    pub key: DayKey,
    /// Its day.
    pub day: Day,
    /// Days to walk (`0` walks none).
    pub days: u32,
}

/// Chains stepped at once by the kernels.
const LANES: usize = 4;

/// One lane of [`walk_chains`]: the current key, its day and the days left after it.
struct Lane {
    key: [u8; 32],
    day: Day,
    left: u32,
}

/// Walk every chain of `walks`, calling `f(i, day, ephids)` with the 96 EphIDs (in
/// unshuffled order, as [`DayKey::ephids`] gives them) of each of its days, where `i` is
/// the walk's position in `walks`. Days of one chain come in order; chains interleave.
pub fn walk_chains<I, F>(walks: I, f: F)
where
    I: IntoIterator<Item = ChainWalk>,
    F: FnMut(usize, Day, &[EphId; EPHIDS_PER_DAY]),
{
    walk_chains_ahead(walks, |_, _| {}, f);
}

/// [`walk_chains`] with a look ahead: `ahead(day, ephids)` is called as soon as a day's EphIDs
/// are derived, and `f` for them only after the next step of the walk, so that what
/// `ahead` starts (a prefetch of the memory `f` will read) overlaps that step's crypto.
pub fn walk_chains_ahead<I, A, F>(walks: I, ahead: A, f: F)
where
    I: IntoIterator<Item = ChainWalk>,
    A: FnMut(Day, &[EphId; EPHIDS_PER_DAY]),
    F: FnMut(usize, Day, &[EphId; EPHIDS_PER_DAY]),
{
    walk_chains_on(walks, ahead, f, true);
}

/// [`walk_chains_ahead`], on the kernels when `fast` and the CPU allows, else on the
/// portable code (the tests compare the two).
fn walk_chains_on<I, A, F>(walks: I, mut ahead: A, mut f: F, fast: bool)
where
    I: IntoIterator<Item = ChainWalk>,
    A: FnMut(Day, &[EphId; EPHIDS_PER_DAY]),
    F: FnMut(usize, Day, &[EphId; EPHIDS_PER_DAY]),
{
    let mut walks = walks.into_iter().enumerate();
    let mut lanes: [Option<(usize, Lane)>; LANES] = Default::default();
    let mut keys = [[0u8; 32]; LANES];
    // Two output buffers: the step just derived, and the one before, whose `f` is due.
    let mut out = [[[EphId::default(); EPHIDS_PER_DAY]; LANES]; 2];
    let mut due: [Option<(usize, Day)>; LANES] = [None; LANES];
    let mut cur = 0;
    loop {
        for lane in lanes.iter_mut().filter(|l| l.is_none()) {
            *lane = walks.by_ref().find(|(_, w)| w.days > 0).map(|(i, w)| {
                (
                    i,
                    Lane {
                        key: *w.key.as_bytes(),
                        day: w.day,
                        left: w.days - 1,
                    },
                )
            });
        }
        if lanes.iter().all(Option::is_none) {
            break;
        }
        for (k, lane) in keys.iter_mut().zip(&lanes) {
            // An idle lane computes on zeros; its output is ignored.
            *k = lane.as_ref().map_or([0; 32], |(_, l)| l.key);
        }
        let o = &mut out[cur];
        if !(fast && step_fast(&mut keys, o)) {
            for (k, o) in keys.iter_mut().zip(o.iter_mut()) {
                step_portable(k, o);
            }
        }
        let mut now: [Option<(usize, Day)>; LANES] = [None; LANES];
        for (((slot, k), o), now) in lanes.iter_mut().zip(&keys).zip(o.iter()).zip(&mut now) {
            let Some((i, lane)) = slot else { continue };
            ahead(lane.day, o);
            *now = Some((*i, lane.day));
            if lane.left == 0 {
                lane.key.zeroize();
                *slot = None;
            } else {
                lane.key = *k;
                lane.day = lane.day.next();
                lane.left -= 1;
            }
        }
        for (d, o) in due.iter().zip(out[cur ^ 1].iter()) {
            if let Some((i, day)) = *d {
                f(i, day, o);
            }
        }
        due = now;
        cur ^= 1;
    }
    for (d, o) in due.iter().zip(out[cur ^ 1].iter()) {
        if let Some((i, day)) = *d {
            f(i, day, o);
        }
    }
    keys.zeroize();
}

/// A day step of four chains on the x86-64 kernels; `false` when they can't run here.
#[cfg(target_arch = "x86_64")]
fn step_fast(keys: &mut [[u8; 32]; LANES], out: &mut [[EphId; EPHIDS_PER_DAY]; LANES]) -> bool {
    crate::kernels::lowcost_step(keys, EPHIDS_PER_DAY, out)
}

/// No kernels off x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn step_fast(_: &mut [[u8; 32]; LANES], _: &mut [[EphId; EPHIDS_PER_DAY]; LANES]) -> bool {
    false
}

/// A day step of one chain on the RustCrypto crates: the EphIDs of `key`'s day, and the
/// next key in place of `key`.
fn step_portable(key: &mut [u8; 32], out: &mut [EphId; EPHIDS_PER_DAY]) {
    let mut prf = hmac_sha256(key, BROADCAST_KEY);
    ephids_from_prf(&prf, out);
    prf.zeroize();
    *key = Sha256::digest(*key).into();
}

/// One day of broadcasting: the day's key and the random order of its EphIDs.
#[derive(Clone, PartialEq, Eq)]
pub struct BroadcastDay {
    day: Day,
    key: DayKey,
    order: [u8; EPHIDS_PER_DAY],
}

impl std::fmt::Debug for BroadcastDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastDay")
            .field("day", &self.day)
            .finish_non_exhaustive()
    }
}

impl BroadcastDay {
    /// The day `day` broadcasting with `key`, its EphID order shuffled by `rng`.
    pub fn new<R: CryptoRng + RngCore>(day: Day, key: DayKey, rng: &mut R) -> Self {
        let mut order = [0u8; EPHIDS_PER_DAY];
        for (i, o) in order.iter_mut().enumerate() {
            *o = i as u8;
        }
        order.shuffle(rng);
        BroadcastDay { day, key, order }
    }
    /// Rebuild from saved parts; `order` must be a permutation of `0..96`.
    pub fn from_parts(day: Day, key: DayKey, order: [u8; EPHIDS_PER_DAY]) -> Result<Self> {
        let mut seen = [false; EPHIDS_PER_DAY];
        for &o in &order {
            let slot = seen
                .get_mut(o as usize)
                .ok_or_else(|| Error::out_of_range("EphID order", format!("index {o} ≥ 96")))?;
            if *slot {
                return Err(Error::out_of_range("EphID order", "not a permutation"));
            }
            *slot = true;
        }
        Ok(BroadcastDay { day, key, order })
    }
    /// The day.
    pub fn day(&self) -> Day {
        self.day
    }
    /// The day key.
    pub fn key(&self) -> &DayKey {
        &self.key
    }
    /// The broadcast order (a permutation of `0..96`).
    pub fn order(&self) -> &[u8; EPHIDS_PER_DAY] {
        &self.order
    }
    /// The EphID to broadcast at `now` and the first second it stops being valid (the end
    /// of the current epoch). `now` must fall on this day.
    pub fn ephid_at(&self, now: UnixTime) -> Result<(EphId, UnixTime)> {
        if now.day() != self.day {
            return Err(Error::out_of_range(
                "time",
                format!("unix {} is not on day {}", now.0, self.day.0),
            ));
        }
        let e = now.epoch_of_day() as usize;
        let idx = self.order[e] as usize;
        let ephids = self.key.ephids();
        let until = UnixTime(self.day.start().0 + (e as u64 + 1) * EPOCH_SECONDS);
        Ok((ephids[idx], until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn reference_chain_and_ephids() {
        let sk0 = DayKey::from_bytes([0; 32]);
        let sk1 = sk0.next();
        assert_eq!(
            hex::encode(sk1.as_bytes()),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(
            hex::encode(sk0.prf()),
            "7c0e632124721e388416257f1697bbdfac09c694ff7bb9a6a6b41fd6770b5f72"
        );
        let e = sk0.ephids();
        assert_eq!(hex::encode(e[0].0), "eb0958c011492732c59e3ed2a5eef01d");
        assert_eq!(hex::encode(e[95].0), "c2ff48f3a5ee557ee6a05b837eeae882");
        assert_eq!(sk0.step(2), sk1.next());
        assert_eq!(sk0.step(0), sk0);
    }

    #[test]
    fn broadcast_covers_every_ephid_once_a_day() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let key = DayKey::generate(&mut rng);
        let day = Day(20_000);
        let b = BroadcastDay::new(day, key.clone(), &mut rng);
        let mut seen: Vec<EphId> = (0..96u64)
            .map(|e| b.ephid_at(UnixTime(day.start().0 + e * 900 + 5)).unwrap().0)
            .collect();
        let (_, until) = b.ephid_at(UnixTime(day.start().0 + 10)).unwrap();
        assert_eq!(until, UnixTime(day.start().0 + 900));
        seen.sort();
        let mut all = key.ephids().to_vec();
        all.sort();
        assert_eq!(seen, all);
        assert!(b.ephid_at(UnixTime(day.next().start().0)).is_err());
        assert!(BroadcastDay::from_parts(day, key.clone(), [0; 96]).is_err());
        assert_eq!(BroadcastDay::from_parts(day, key, *b.order()).unwrap(), b);
    }

    /// Every day's EphIDs of `walks`, as `(walk, day, ephids)`, on the kernels or not.
    fn walked(walks: &[ChainWalk], fast: bool) -> Vec<(usize, Day, Vec<EphId>)> {
        let mut got = Vec::new();
        let mut ahead = 0;
        walk_chains_on(
            walks.iter().cloned(),
            |_, _| ahead += 1,
            |i, d, e| got.push((i, d, e.to_vec())),
            fast,
        );
        assert_eq!(ahead, got.len());
        got.sort_by_key(|(i, d, _)| (*i, *d));
        got
    }

    /// Whether this run compared the kernels at all (they need SHA-NI and VAES).
    fn kernels_here() -> bool {
        #[cfg(target_arch = "x86_64")]
        return crate::kernels::available();
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    #[test]
    fn vector_files_through_the_chain_walk() {
        eprintln!("low-cost kernels on this CPU: {}", kernels_here());
        for file in [
            include_str!("../../spec-vectors/dp3t-lowcost-reference.json"),
            include_str!("../../spec-vectors/generated-dp3t-lowcost.json"),
        ] {
            let v: serde_json::Value = serde_json::from_str(file).unwrap();
            let cases = v["cases"].as_array().unwrap();
            // Each case walked alone for two days, all cases at once (lanes of several
            // chains): day 0 gives the case's EphIDs, day 1 those of its next key.
            let walks: Vec<ChainWalk> = cases
                .iter()
                .map(|c| ChainWalk {
                    key: DayKey::from_slice(&hex::decode(c["sk"].as_str().unwrap()).unwrap())
                        .unwrap(),
                    day: Day(100),
                    days: 2,
                })
                .collect();
            for fast in [true, false] {
                let got = walked(&walks, fast);
                assert_eq!(got.len(), 2 * cases.len());
                for (i, c) in cases.iter().enumerate() {
                    let (_, day, ephids) = &got[2 * i];
                    assert_eq!(*day, Day(100));
                    for e in c["ephids"].as_array().unwrap() {
                        let j = e["index"].as_u64().unwrap() as usize;
                        assert_eq!(hex::encode(ephids[j].0), e["ephid"].as_str().unwrap());
                    }
                    if let Some(next) = c["next_sk"].as_str() {
                        let next = DayKey::from_slice(&hex::decode(next).unwrap()).unwrap();
                        assert_eq!(got[2 * i + 1].2, next.ephids().to_vec());
                        assert_eq!(got[2 * i + 1].1, Day(101));
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The kernels (four chains a step) give what the portable code gives, and both
        /// what the one-key API gives, for any keys and walk lengths.
        #[test]
        fn chain_walk_fast_equals_portable(
            walks in proptest::collection::vec(
                (proptest::prelude::any::<[u8; 32]>(), 0u32..20_000, 0u32..9), 0..11),
        ) {
            let walks: Vec<ChainWalk> = walks
                .into_iter()
                .map(|(k, d, n)| ChainWalk { key: DayKey::from_bytes(k), day: Day(d), days: n })
                .collect();
            let fast = walked(&walks, true);
            let portable = walked(&walks, false);
            proptest::prop_assert_eq!(&fast, &portable);
            let mut want = Vec::new();
            for (i, w) in walks.iter().enumerate() {
                for s in 0..w.days {
                    want.push((i, Day(w.day.0 + s), w.key.step(s).ephids().to_vec()));
                }
            }
            proptest::prop_assert_eq!(&fast, &want);
        }
    }
}
