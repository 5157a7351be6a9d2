//! Published data × stored sightings → matches: the phone's hot path.
//!
//! A phone holds up to ~100,000 sightings and checks every published batch against them
//! (a national GAEN batch can hold a million keys, i.e. 144 million RPIs). The sightings
//! are indexed once per batch in a [`SightingIndex`]: a bitmap of about 64 bits per
//! sighting (a pre-filter that answers "certainly not heard" for ~99.6% of identifiers
//! with one memory read that stays in cache) in front of an open-addressing table that
//! confirms the full 16 bytes. Identifiers are pseudo-random, so their first 8 bytes are
//! used directly as the hash.
//!
//! Every candidate then passes the scheme's time rules: sightings at or after the batch's
//! release time never match, GAEN keys and hybrid windows match only within their validity
//! ±2 hours, and a low-cost day key matches only sightings of its own day.
//!
//! With the `parallel` feature (default) large batches are split across rayon's pool.

use crate::cuckoo::CuckooFilter;
use crate::exposure::AttenuationSeconds;
use crate::gaen::{derive_rpis_many, Block, DayBlocks, LANES};
use crate::hybrid::for_each_window_ahead;
use crate::lowcost::{walk_chains_ahead, ChainWalk, EPHIDS_PER_DAY};
use crate::published::{HybridEntry, LowCostEntry};
use crate::store::Sighting;
use crate::time::{Day, UnixTime, ENIN_SECONDS};
use crate::EphId;

/// Clock-skew tolerance around a key's or window's validity (profile choice, §2).
pub const TOLERANCE_SECONDS: u64 = 7_200;

/// A stored sighting that matched published data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    /// The matched identifier (as stored).
    pub id: [u8; 16],
    /// The UTC day of the contact.
    pub day: Day,
    /// Seconds in the three attenuation buckets.
    pub seconds: [u32; 3],
}

impl Match {
    fn of(s: &Sighting) -> Self {
        Match {
            id: s.id,
            day: s.day(),
            seconds: s.seconds,
        }
    }
    /// The bucket seconds as a scoring input.
    pub fn attenuation_seconds(&self) -> AttenuationSeconds {
        AttenuationSeconds {
            seconds: self.seconds.map(u64::from),
        }
    }
}

/// A published GAEN key, as matching needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedTek {
    /// Key bytes.
    pub key_data: [u8; 16],
    /// First ENIN of validity.
    pub rolling_start: u32,
    /// Intervals of validity (clamped to 1..=144).
    pub rolling_period: u32,
}

/// Sightings indexed for fast membership tests by identifier.
pub struct SightingIndex<'a> {
    sightings: &'a [Sighting],
    /// Pre-filter bitmap, `1 << bitmap_bits` bits.
    bitmap: Vec<u64>,
    bitmap_shift: u32,
    /// Open addressing, slot → 32-bit fingerprint of the id (never 0; 0 = empty), so a
    /// pre-filter false positive costs one read of this compact array.
    fingerprints: Vec<u32>,
    /// Slot → position in `order` of the first sighting with that id.
    positions: Vec<u32>,
    table_mask: usize,
    /// Indices into `sightings`, sorted by id, so equal ids (several days) are adjacent.
    order: Vec<u32>,
}

/// The first 8 bytes of an id, little-endian: the hash of the pre-filter and the table.
#[inline(always)]
fn prefix(id: &[u8; 16]) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&id[..8]);
    u64::from_le_bytes(p)
}

/// The pre-filter's three bits of an id prefix inside its 64-bit word (word `bit >> 6`):
/// bit `bit & 63` and two more from prefix bits 20..26 and 26..32, which neither the word
/// index nor the fingerprint use. Three bits in one word (a blocked Bloom filter) cost one
/// memory read like one bit, and let through about 0.1% of unheard ids instead of about
/// 2.4% with one bit: each of those costs a probe of the table, a likely cache miss.
#[inline(always)]
fn filter_mask(p: u64, bit: usize) -> u64 {
    (1 << (bit & 63)) | (1 << ((p >> 20) & 63)) | (1 << ((p >> 26) & 63))
}

/// What [`SightingIndex::prefilter`] reads: 16-byte identifiers (RPIs and EphIDs); on
/// x86-64, laid out as their bytes, for the vector kernel.
#[cfg(target_arch = "x86_64")]
pub(crate) trait Id16: crate::kernels::Rows16 {}
#[cfg(target_arch = "x86_64")]
impl<T: crate::kernels::Rows16> Id16 for T {}
/// What [`SightingIndex::prefilter`] reads: 16-byte identifiers (RPIs and EphIDs).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) trait Id16: AsRef<[u8; 16]> {}
#[cfg(not(target_arch = "x86_64"))]
impl<T: AsRef<[u8; 16]>> Id16 for T {}

/// The table's fingerprint of an id prefix: its high 32 bits, never 0.
#[inline(always)]
fn fingerprint(p: u64) -> u32 {
    ((p >> 32) as u32).max(1)
}

impl<'a> SightingIndex<'a> {
    /// Index `sightings` (their ids need not be distinct).
    pub fn new(sightings: &'a [Sighting]) -> Self {
        let n = sightings.len().max(1);
        // 32 to 64 bits per sighting (with three bits each, a false-positive rate of about
        // 0.1%; 512 KiB for 100,000 sightings, which stays in L2), between 2^12 and 2^27 bits.
        let bits = (n * 32).next_power_of_two().trailing_zeros().clamp(12, 27);
        let mut bitmap = vec![0u64; 1 << (bits - 6)];
        let bitmap_shift = 64 - bits;
        let mut order: Vec<u32> = (0..sightings.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| sightings[a as usize].id.cmp(&sightings[b as usize].id));
        let table_len = (n * 2).next_power_of_two();
        let mut fingerprints = vec![0u32; table_len];
        let mut positions = vec![0u32; table_len];
        let table_mask = table_len - 1;
        let mut prev: Option<&[u8; 16]> = None;
        for (pos, &i) in order.iter().enumerate() {
            let id = &sightings[i as usize].id;
            let p = prefix(id);
            let bit = (p >> bitmap_shift) as usize;
            bitmap[bit >> 6] |= filter_mask(p, bit);
            if prev == Some(id) {
                continue;
            }
            prev = Some(id);
            let mut slot = (p as usize) & table_mask;
            while fingerprints[slot] != 0 {
                slot = (slot + 1) & table_mask;
            }
            fingerprints[slot] = fingerprint(p);
            positions[slot] = pos as u32;
        }
        SightingIndex {
            sightings,
            bitmap,
            bitmap_shift,
            fingerprints,
            positions,
            table_mask,
            order,
        }
    }

    /// Cheap pre-filter: false means the id was certainly not heard. The id is typed (an
    /// RPI, an EphID or a sighting id, all 16 bytes), so no length can be wrong.
    #[inline(always)]
    pub fn maybe_contains(&self, id: &[u8; 16]) -> bool {
        let p = prefix(id);
        let bit = (p >> self.bitmap_shift) as usize;
        let mask = filter_mask(p, bit);
        // `bit < 2^bits` and the bitmap has exactly 2^bits bits.
        self.bitmap[bit >> 6] & mask == mask
    }

    /// The positions in `ids` (at most 256 of them are read) of the ids that pass the
    /// pre-filter ([`SightingIndex::maybe_contains`]), in order, written to the front of
    /// `out`; returns how many. This is the inner loop of matching (144 RPIs of every
    /// published key), so it is kept to a dozen instructions an id: the bitmap and its
    /// shift in registers, one 8-byte load of the prefix, and a branch that is almost
    /// never taken (about 0.1% of ids pass), so no iteration waits on another.
    ///
    /// On x86-64 CPUs with AVX-512 the ids go eight to a register, their bitmap words
    /// gathered ([`crate::kernels`]); the rest one by one. Both give the same positions
    /// (tested).
    #[inline]
    pub(crate) fn prefilter<T: Id16>(&self, ids: &[T], out: &mut [u8; 256]) -> usize {
        #[cfg(target_arch = "x86_64")]
        if let Some((n, done)) =
            crate::kernels::sighting_prefilter(&self.bitmap, self.bitmap_shift, ids, out)
        {
            return self.prefilter_scalar(ids, out, n, done);
        }
        self.prefilter_scalar(ids, out, 0, 0)
    }

    /// [`SightingIndex::prefilter`] one id at a time, from position `from` on, with `n`
    /// positions already in `out`.
    #[inline]
    fn prefilter_scalar<T: AsRef<[u8; 16]>>(
        &self,
        ids: &[T],
        out: &mut [u8; 256],
        mut n: usize,
        from: usize,
    ) -> usize {
        let bitmap: &[u64] = &self.bitmap;
        let shift = self.bitmap_shift;
        let ids = &ids[..ids.len().min(256)];
        // An index loop: the `enumerate().take().skip()` form kept its counters on the
        // stack, and ran at about 10 cycles an id.
        #[allow(clippy::needless_range_loop)]
        for j in from..ids.len() {
            let p = prefix(ids[j].as_ref());
            let bit = (p >> shift) as usize;
            let mask = filter_mask(p, bit);
            if bitmap[bit >> 6] & mask == mask {
                out[n & 255] = j as u8;
                n += 1;
            }
        }
        n
    }

    /// Start bringing the pre-filter word of `id` into the cache, for a
    /// [`SightingIndex::maybe_contains`] a little later.
    #[inline(always)]
    pub fn prefetch(&self, id: &[u8; 16]) {
        let bit = (prefix(id) >> self.bitmap_shift) as usize;
        #[cfg(target_arch = "x86_64")]
        crate::kernels::prefetch(&self.bitmap[bit >> 6]);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bit;
    }

    /// Start bringing the table slot where a lookup of `id` begins into the cache.
    #[inline(always)]
    fn prefetch_slot(&self, id: &[u8; 16]) {
        let slot = (prefix(id) as usize) & self.table_mask;
        #[cfg(target_arch = "x86_64")]
        crate::kernels::prefetch(&self.fingerprints[slot]);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Every sighting of `id` (one per day it was heard).
    #[inline]
    pub fn lookup(&self, id: &[u8; 16]) -> impl Iterator<Item = &'a Sighting> + '_ {
        let key = *id;
        let p = prefix(id);
        let fp = fingerprint(p);
        let mut slot = (p as usize) & self.table_mask;
        let mut first = None;
        loop {
            let f = self.fingerprints[slot];
            if f == 0 {
                break;
            }
            if f == fp {
                let pos = self.positions[slot] as usize;
                if self.sightings[self.order[pos] as usize].id == key {
                    first = Some(pos);
                    break;
                }
            }
            slot = (slot + 1) & self.table_mask;
        }
        let start = first.unwrap_or(self.order.len());
        self.order[start..]
            .iter()
            .map(|&i| &self.sightings[i as usize])
            .take_while(move |s| s.id == key)
    }

    /// Append a [`Match`] for every sighting of `id` lying inside `[from, until)`.
    #[inline]
    fn collect(&self, id: &[u8; 16], from: u64, until: u64, out: &mut Vec<Match>) {
        out.extend(
            self.lookup(id)
                .filter(|s| s.within(from, until))
                .map(Match::of),
        );
    }

    /// Number of indexed sightings.
    pub fn len(&self) -> usize {
        self.sightings.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.sightings.is_empty()
    }
}

/// Split `items` across threads (feature `parallel`) and concatenate the matches.
fn for_each_chunk<T: Sync>(items: &[T], f: impl Fn(&[T], &mut Vec<Match>) + Sync) -> Vec<Match> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        if items.len() >= 4096 {
            let chunk = (items.len() / (rayon::current_num_threads() * 8)).max(1024);
            return items
                .par_chunks(chunk)
                .map(|c| {
                    let mut out = Vec::new();
                    f(c, &mut out);
                    out
                })
                .reduce(Vec::new, |mut a, mut b| {
                    a.append(&mut b);
                    a
                });
        }
    }
    let mut out = Vec::new();
    f(items, &mut out);
    out
}

/// Match published GAEN keys: derive each key's RPIs and look them up. A sighting counts
/// if it lies within the key's validity ±2 h and ended before `release_time`.
pub fn match_gaen(
    index: &SightingIndex<'_>,
    keys: &[PublishedTek],
    release_time: UnixTime,
) -> Vec<Match> {
    if index.is_empty() {
        return Vec::new();
    }
    for_each_chunk(keys, |chunk, out| {
        let lookup = |k: &PublishedTek, buf: &DayBlocks, out: &mut Vec<Match>| {
            let rpis = &buf[..k.rolling_period.min(144) as usize];
            // A first pass over the pre-filter (about 0.1% of RPIs pass), then the full
            // lookups for the few candidates.
            let mut candidates = [0u8; 256];
            let n = index.prefilter(rpis, &mut candidates);
            if n == 0 {
                return;
            }
            let from =
                (u64::from(k.rolling_start) * ENIN_SECONDS).saturating_sub(TOLERANCE_SECONDS);
            let until = ((u64::from(k.rolling_start) + u64::from(k.rolling_period)) * ENIN_SECONDS
                + TOLERANCE_SECONDS)
                .min(release_time.0);
            for &j in &candidates[..n] {
                index.collect(rpis[usize::from(j)].as_ref(), from, until, out);
            }
        };
        let mut batch = [([0u8; 16], 0u32); LANES];
        // The keys are derived LANES at a time (their HKDFs and AES passes interleaved),
        // then each key's RPIs are looked up. (Fetching a group's pre-filter words while
        // the next group derives was measured slower: 1.5 against 1.75 M keys/s.)
        let mut bufs = [[Block::default(); 144]; LANES];
        for group in chunk.chunks(LANES) {
            for (b, k) in batch.iter_mut().zip(group) {
                *b = (k.key_data, k.rolling_start);
            }
            derive_rpis_many(&batch[..group.len()], &mut bufs);
            for (k, buf) in group.iter().zip(&bufs) {
                lookup(k, buf, out);
            }
        }
    })
}

/// Match published low-cost keys: walk each chain from its day (or from `oldest_day`, the
/// first day a phone still stores) to the release day, and compare each day's 96 EphIDs
/// with that day's sightings only.
pub fn match_lowcost(
    index: &SightingIndex<'_>,
    entries: &[LowCostEntry],
    release_time: UnixTime,
    oldest_day: Day,
) -> Vec<Match> {
    if index.is_empty() {
        return Vec::new();
    }
    let last_day = release_time.day();
    let first_day = entries
        .iter()
        .map(|e| e.day.max(oldest_day))
        .min()
        .unwrap_or(last_day);
    let filters = DayFilters::new(index.sightings, first_day, last_day);
    for_each_chunk(entries, |chunk, out| {
        let walks = chunk.iter().filter(|e| e.day <= last_day).map(|e| {
            // Skip straight to the first day anyone could still have stored.
            let skip = e.day.days_until(oldest_day);
            let day = Day(e.day.0.saturating_add(skip));
            ChainWalk {
                key: if skip == 0 {
                    e.key.clone()
                } else {
                    e.key.step(skip)
                },
                day,
                days: last_day.0.saturating_add(1).saturating_sub(day.0),
            }
        });
        // The chains are walked four at a time; each day's EphIDs meet that day's
        // sightings only, through that day's pre-filter, whose words are fetched while
        // the next day derives.
        walk_chains_ahead(
            walks,
            |day, ephids| {
                if let Some(f) = filters.of(day) {
                    ephids.iter().for_each(|e| f.prefetch(&e.0));
                }
            },
            |_, day, ephids| {
                let Some(f) = filters.of(day) else { return };
                let (from, until) = (day.start().0, day.next().start().0.min(release_time.0));
                let mut pass = f.test96(ephids);
                while pass != 0 {
                    let j = pass.trailing_zeros() as usize;
                    pass &= pass - 1;
                    index.collect(&ephids[j].0, from, until, out);
                }
            },
        );
    })
}

/// A pre-filter of one day's sightings for the low-cost walk: about 64 bits per sighting,
/// two bits set per id in one 64-bit word (a blocked Bloom filter), so that a test is one
/// read, well under 1% of EphIDs pass it, and a day's filter (64 KiB for 7,000 sightings)
/// stays in L2 while the chains walk that day.
struct DayFilter {
    words: Vec<u64>,
    shift: u32,
}

impl DayFilter {
    fn new(ids: &[&[u8; 16]]) -> Self {
        let bits = (ids.len().max(1) * 64)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(9, 40);
        let mut f = DayFilter {
            words: vec![0; 1 << (bits - 6)],
            shift: 64 - (bits - 6),
        };
        for id in ids {
            let (w, m) = f.slot(id);
            f.words[w] |= m;
        }
        f
    }
    /// The word of `id` (from the high bits of its prefix) and its two bits (from the low
    /// twelve).
    #[inline(always)]
    fn slot(&self, id: &[u8; 16]) -> (usize, u64) {
        let p = prefix(id);
        (
            (p >> self.shift) as usize,
            (1 << (p & 63)) | (1 << ((p >> 6) & 63)),
        )
    }
    #[inline(always)]
    fn maybe_contains(&self, id: &[u8; 16]) -> bool {
        let (w, m) = self.slot(id);
        self.words[w] & m == m
    }
    /// Bit `j` set when EphID `j` of a day may be in the filter (on AVX-512 eight at a
    /// time).
    #[inline]
    fn test96(&self, ids: &[EphId; EPHIDS_PER_DAY]) -> u128 {
        #[cfg(target_arch = "x86_64")]
        if let Some(pass) = crate::kernels::filter96(&self.words, self.shift, ids) {
            return pass;
        }
        ids.iter().enumerate().fold(0, |acc, (j, id)| {
            acc | u128::from(self.maybe_contains(&id.0)) << j
        })
    }
    #[inline(always)]
    fn prefetch(&self, id: &[u8; 16]) {
        let (w, _) = self.slot(id);
        #[cfg(target_arch = "x86_64")]
        crate::kernels::prefetch(&self.words[w]);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = w;
    }
}

/// The [`DayFilter`]s of the days `first..=last`, each over the sightings that began on it.
struct DayFilters {
    first: Day,
    days: Vec<DayFilter>,
}

impl DayFilters {
    fn new(sightings: &[Sighting], first: Day, last: Day) -> Self {
        let n = last.0.saturating_add(1).saturating_sub(first.0) as usize;
        let mut ids: Vec<Vec<&[u8; 16]>> = vec![Vec::new(); n];
        for s in sightings {
            if let Some(v) = (s.day().0)
                .checked_sub(first.0)
                .and_then(|d| ids.get_mut(d as usize))
            {
                v.push(&s.id);
            }
        }
        DayFilters {
            first,
            days: ids.iter().map(|v| DayFilter::new(v)).collect(),
        }
    }
    /// The filter of `day`; `None` outside the range (no sighting of it can match).
    #[inline(always)]
    fn of(&self, day: Day) -> Option<&DayFilter> {
        self.days.get(day.0.checked_sub(self.first.0)? as usize)
    }
}

/// Look up every id of `ids` (at most 256): a pass over the pre-filter, then the full
/// lookups of the few candidates, keeping sightings inside `[from, until)`.
#[inline]
fn lookup_all(
    index: &SightingIndex<'_>,
    ids: &[EphId],
    from: u64,
    until: u64,
    out: &mut Vec<Match>,
) {
    let mut candidates = [0u8; 256];
    let n = index.prefilter(ids, &mut candidates);
    // The candidates' table slots are fetched together before any is probed, so that
    // their cache misses overlap.
    for &j in &candidates[..n] {
        index.prefetch_slot(&ids[usize::from(j)].0);
    }
    for &j in &candidates[..n] {
        index.collect(&ids[usize::from(j)].0, from, until, out);
    }
}

/// Match published hybrid windows: each window's EphIDs against sightings heard inside
/// the window ±2 h and before `release_time`.
pub fn match_hybrid(
    index: &SightingIndex<'_>,
    entries: &[HybridEntry],
    release_time: UnixTime,
) -> Vec<Match> {
    if index.is_empty() {
        return Vec::new();
    }
    for_each_chunk(entries, |chunk, out| {
        // The windows are derived four at a time; their EphIDs' pre-filter words are
        // fetched while the next four derive.
        let windows = chunk.iter().map(|e| (&e.seed, e.window.minutes()));
        for_each_window_ahead(
            windows,
            |ephids| ephids.iter().for_each(|e| index.prefetch(&e.0)),
            |i, ephids| {
                let w = chunk[i].window;
                let from = w.start().0.saturating_sub(TOLERANCE_SECONDS);
                let until = (w.end().0 + TOLERANCE_SECONDS).min(release_time.0);
                lookup_all(index, ephids, from, until, out);
            },
        );
    })
}

/// Match a published unlinkable filter: test each stored hashed observation (its 16-byte
/// prefix, which is all a DPCF lookup reads) against the filter.
pub fn match_unlinkable(
    sightings: &[Sighting],
    filter: &CuckooFilter,
    release_time: UnixTime,
) -> Vec<Match> {
    for_each_chunk(sightings, |chunk, out| {
        for s in chunk {
            if u64::from(s.last_seen) >= release_time.0 {
                continue;
            }
            let mut h = [0u8; 32];
            h[..16].copy_from_slice(&s.id);
            if filter.contains(&h) {
                out.push(Match::of(s));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(id: u8, day: u32, at: u32) -> Sighting {
        Sighting {
            id: [id; 16],
            first_seen: day * 86_400 + at,
            last_seen: day * 86_400 + at + 60,
            seconds: [60, 0, 0],
        }
    }

    #[test]
    fn index_finds_every_sighting_and_nothing_else() {
        let list: Vec<Sighting> = (0..200u32)
            .map(|i| sighting((i % 100) as u8, 10 + i / 100, 100))
            .collect();
        let idx = SightingIndex::new(&list);
        for id in 0..100u8 {
            assert!(idx.maybe_contains(&[id; 16]));
            assert_eq!(idx.lookup(&[id; 16]).count(), 2, "id {id} on two days");
        }
        for id in 100..=255u8 {
            assert_eq!(idx.lookup(&[id; 16]).count(), 0);
        }
        let empty = SightingIndex::new(&[]);
        assert_eq!(empty.lookup(&[0; 16]).count(), 0);
    }

    /// Pseudo-random 16-byte ids: SHA-256 of `(tag, i)`, truncated.
    fn random_id(tag: u8, i: u32) -> [u8; 16] {
        use sha2::Digest;
        let d = sha2::Sha256::new()
            .chain_update([tag])
            .chain_update(i.to_le_bytes())
            .finalize();
        let mut id = [0; 16];
        id.copy_from_slice(&d[..16]);
        id
    }

    /// The pre-filter's false-positive rate at a phone's scale (100,000 sightings), which
    /// sets how many table probes matching pays per key: about 0.1% of unheard ids pass
    /// with three bits a word (0.35% with two).
    #[test]
    fn prefilter_lets_through_about_a_thousandth_of_unheard_ids() {
        let sightings: Vec<Sighting> = (0..100_000)
            .map(|i| Sighting {
                id: random_id(0, i),
                first_seen: 0,
                last_seen: 1,
                seconds: [1, 0, 0],
            })
            .collect();
        let idx = SightingIndex::new(&sightings);
        assert!(sightings.iter().all(|s| idx.maybe_contains(&s.id)));
        let probes = 400_000;
        let passed = (0..probes)
            .filter(|&i| idx.maybe_contains(&random_id(1, i)))
            .count();
        let rate = passed as f64 / f64::from(probes);
        assert!(
            (0.0005..0.0017).contains(&rate),
            "false-positive rate {rate}"
        );
    }

    /// Lists of 16-byte ids, some of them stored: the vector pre-filter (AVX-512 where
    /// the CPU has it) must give the positions the one-by-one test gives.
    fn prefilter_agrees<T: Id16 + Copy>(stored: &[[u8; 16]], probe: &[T]) {
        let sightings: Vec<Sighting> = stored
            .iter()
            .map(|id| Sighting {
                id: *id,
                first_seen: 0,
                last_seen: 1,
                seconds: [1, 0, 0],
            })
            .collect();
        let idx = SightingIndex::new(&sightings);
        let (mut fast, mut slow) = ([0u8; 256], [0u8; 256]);
        let n = idx.prefilter(probe, &mut fast);
        let m = idx.prefilter_scalar(probe, &mut slow, 0, 0);
        let expected: Vec<u8> = (0..probe.len().min(256))
            .filter(|&j| idx.maybe_contains(probe[j].as_ref()))
            .map(|j| j as u8)
            .collect();
        assert_eq!(&fast[..n.min(256)], &expected[..]);
        assert_eq!(&slow[..m.min(256)], &expected[..]);
        for (j, p) in probe.iter().enumerate().take(256) {
            if stored.contains(p.as_ref()) {
                assert!(expected.contains(&(j as u8)), "stored id {j} filtered out");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The sighting index's pre-filter over a list (eight at a time on AVX-512, then
        /// one by one) equals the one-by-one test, for RPIs and EphIDs, any list length
        /// (the tail after the last full eight included) and any fill of the bitmap.
        #[test]
        fn sighting_prefilter_batch_equals_one_by_one(
            stored in proptest::collection::vec(proptest::prelude::any::<[u8; 16]>(), 0..3000),
            probe in proptest::collection::vec(proptest::prelude::any::<[u8; 16]>(), 0..300),
            planted in proptest::collection::vec((0usize..300, 0usize..3000), 0..20),
        ) {
            let mut probe = probe;
            for (at, from) in planted {
                if let (Some(p), Some(s)) = (probe.get_mut(at), stored.get(from)) {
                    *p = *s;
                }
            }
            let ephids: Vec<EphId> = probe.iter().map(|p| EphId(*p)).collect();
            prefilter_agrees(&stored, &ephids);
            let blocks: Vec<Block> = probe.iter().map(|p| Block::from(*p)).collect();
            prefilter_agrees(&stored, &blocks);
        }

        /// The day filter holds every id put in it, and its 96-at-once test (AVX-512
        /// where the CPU has it) agrees with the one-by-one test.
        #[test]
        fn day_filter_batch_equals_one_by_one(
            stored in proptest::collection::vec(proptest::prelude::any::<[u8; 16]>(), 0..400),
            probe in proptest::collection::vec(proptest::prelude::any::<[u8; 16]>(), 96),
            planted in 0usize..96,
        ) {
            let refs: Vec<&[u8; 16]> = stored.iter().collect();
            let f = DayFilter::new(&refs);
            let mut ids = [EphId::default(); EPHIDS_PER_DAY];
            for (e, p) in ids.iter_mut().zip(&probe) {
                e.0 = *p;
            }
            if let Some(s) = stored.first() {
                ids[planted].0 = *s;
            }
            let one_by_one = ids
                .iter()
                .enumerate()
                .fold(0u128, |acc, (j, id)| acc | u128::from(f.maybe_contains(&id.0)) << j);
            proptest::prop_assert_eq!(f.test96(&ids), one_by_one);
            for s in &stored {
                proptest::prop_assert!(f.maybe_contains(s));
            }
            if !stored.is_empty() {
                proptest::prop_assert!(f.test96(&ids) >> planted & 1 == 1);
            }
        }
    }
}
