//! Published data × stored sightings → matches: the phone's hot path.
//!
//! A phone holds up to ~100,000 sightings and checks every published batch against them
//! (a national GAEN batch can hold a million keys, i.e. 144 million RPIs). The sightings
//! are indexed once per batch in a [`SightingIndex`]: a blocked Bloom filter of 32 to 64
//! bits per sighting (a pre-filter that answers "certainly not heard" for ~99.9% of
//! identifiers with one memory read) in front of buckets of sightings (a counting sort,
//! built in two passes) that confirm the full 16 bytes. Identifiers are pseudo-random, so
//! their bytes are used directly as hashes: the first 8 for the pre-filters, the last 8
//! for the bucket and a fingerprint.
//!
//! GAEN and low-cost matching also split the sightings by day, each day with its own
//! filter small enough for the L1 cache, and take the published keys day by day. On
//! x86-64 with SHA-NI and VAES + AVX-512, a GAEN key's RPIs meet the filter while still
//! in registers, as they leave the AES unit.
//!
//! Every candidate then passes the scheme's time rules: sightings at or after the batch's
//! release time never match, GAEN keys and hybrid windows match only within their validity
//! ±2 hours, and a low-cost day key matches only sightings of its own day.
//!
//! With the `parallel` feature (default) large batches are split across rayon's pool.

use crate::cuckoo::CuckooFilter;
use crate::exposure::AttenuationSeconds;
use crate::gaen::{derive_rpis_many, derive_rpis_prefiltered, Block, WordFilter, LANES};
use crate::hybrid::for_each_window_ahead;
use crate::lowcost::{walk_chains_ahead, ChainWalk};
use crate::published::{HybridEntry, LowCostEntry};
use crate::store::Sighting;
use crate::time::{Day, UnixTime, ENIN_SECONDS};
use crate::EphId;
use std::ops::RangeInclusive;

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
    /// The pre-filter of every sighting.
    filter: PreFilter,
    /// The sightings in buckets by the top bits of their id's second half ([`suffix`]):
    /// bucket `b` is `order[starts[b] .. starts[b + 1]]`, about 0.4 sightings each, so
    /// a pre-filter false positive usually ends at an empty bucket.
    starts: Vec<u32>,
    /// `64 - log2(number of buckets)`.
    bucket_shift: u32,
    /// Indices into `sightings`, bucket by bucket.
    order: Vec<u32>,
    /// The 32-bit fingerprint of each `order` entry's id ([`fingerprint`]), read before
    /// the sighting itself is.
    fingerprints: Vec<u32>,
}

/// The first 8 bytes of an id, little-endian: the hash of the pre-filters.
#[inline(always)]
fn prefix(id: &[u8; 16]) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&id[..8]);
    u64::from_le_bytes(p)
}

/// The pre-filter's three bits of an id prefix inside its 64-bit word (word `bit >> 6`):
/// bit `bit & 63` and two more from prefix bits 20..26 and 26..32, which the word index
/// does not use (the index's buckets and fingerprints read the id's other half). Three
/// bits in one word (a blocked Bloom filter) cost one memory read like one bit, and let
/// through about 0.1% of unheard ids instead of about 2.4% with one bit: each of those
/// costs a look into the index, a likely cache miss.
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

/// The last 8 bytes of an id, little-endian: its bucket in the index (top bits) and its
/// fingerprint (low 32 bits), apart from the bits [`prefix`] gives the pre-filters.
#[inline(always)]
fn suffix(id: &[u8; 16]) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&id[8..]);
    u64::from_le_bytes(p)
}

/// The index's fingerprint of an id: the low 32 bits of its [`suffix`] (the bucket takes
/// the top 18 for 100,000 sightings).
#[inline(always)]
fn fingerprint(id: &[u8; 16]) -> u32 {
    suffix(id) as u32
}

/// A blocked Bloom filter of 16-byte ids: `2^(64 - shift)` bits in 64-bit words; an id
/// sets three bits of the word its prefix's top bits choose ([`filter_mask`]). It answers
/// "certainly not stored" with one memory read.
struct PreFilter {
    words: Vec<u64>,
    shift: u32,
}

/// The most bits a filter is given to stay in a 32 KiB L1 data cache, when that still
/// leaves it 16 bits an id (a false-positive rate under 1%).
const L1_BITS: usize = 1 << 18;

impl PreFilter {
    /// An empty filter of `2^bits` bits, `bits` in `12..=40`.
    fn with_bits(bits: u32) -> Self {
        let bits = bits.clamp(12, 40);
        PreFilter {
            words: vec![0; 1 << (bits - 6)],
            shift: 64 - bits,
        }
    }

    /// A filter for `n` ids: 32 to 64 bits each (with three bits set per id, a
    /// false-positive rate of about 0.1%), between 2^12 and 2^27 bits.
    fn for_ids(n: usize) -> Self {
        Self::with_bits((n.max(1) * 32).next_power_of_two().trailing_zeros().min(27))
    }

    /// A filter for the `n` ids of one day, read over and over while that day's keys are
    /// matched: as [`PreFilter::for_ids`], but kept to [`L1_BITS`] (so that it stays in
    /// the L1 cache) as long as that leaves 16 bits an id.
    fn for_day(n: usize) -> Self {
        let f = Self::for_ids(n);
        if f.words.len() * 64 > L1_BITS && n * 16 <= L1_BITS {
            return Self::with_bits(L1_BITS.trailing_zeros());
        }
        f
    }

    /// The words and shift, as the GAEN kernel reads them.
    fn words(&self) -> WordFilter<'_> {
        (&self.words, self.shift)
    }

    /// Add `id`.
    #[inline(always)]
    fn insert(&mut self, id: &[u8; 16]) {
        let p = prefix(id);
        let bit = (p >> self.shift) as usize;
        // `bit < 2^(64 - shift)`: the filter has exactly that many bits.
        self.words[bit >> 6] |= filter_mask(p, bit);
    }

    /// False when `id` was certainly not added.
    #[inline(always)]
    fn maybe_contains(&self, id: &[u8; 16]) -> bool {
        let p = prefix(id);
        let bit = (p >> self.shift) as usize;
        let mask = filter_mask(p, bit);
        self.words[bit >> 6] & mask == mask
    }

    /// The positions in `ids` (at most 256 of them are read) of the ids that pass
    /// ([`PreFilter::maybe_contains`]), in order, written to the front of `out`; returns
    /// how many. This is the inner loop of matching (144 RPIs of every published GAEN
    /// key, 96 EphIDs of every low-cost day), so it is kept to a dozen instructions an
    /// id, and its branch is almost never taken (about 0.1% of ids pass), so no
    /// iteration waits on another.
    ///
    /// On x86-64 CPUs with AVX-512 the ids go eight to a register ([`crate::kernels`]);
    /// the rest one by one. Both give the same positions (tested).
    #[inline]
    fn prefilter<T: Id16>(&self, ids: &[T], out: &mut [u8; 256]) -> usize {
        #[cfg(target_arch = "x86_64")]
        if let Some((n, done)) =
            crate::kernels::sighting_prefilter(&self.words, self.shift, ids, out)
        {
            return self.prefilter_scalar(ids, out, n, done);
        }
        self.prefilter_scalar(ids, out, 0, 0)
    }

    /// [`PreFilter::prefilter`] one id at a time, from position `from` on, with `n`
    /// positions already in `out`.
    #[inline]
    fn prefilter_scalar<T: AsRef<[u8; 16]>>(
        &self,
        ids: &[T],
        out: &mut [u8; 256],
        mut n: usize,
        from: usize,
    ) -> usize {
        let words: &[u64] = &self.words;
        let shift = self.shift;
        let ids = &ids[..ids.len().min(256)];
        // An index loop: the `enumerate().take().skip()` form kept its counters on the
        // stack, and ran at about 10 cycles an id.
        #[allow(clippy::needless_range_loop)]
        for j in from..ids.len() {
            let p = prefix(ids[j].as_ref());
            let bit = (p >> shift) as usize;
            let mask = filter_mask(p, bit);
            if words[bit >> 6] & mask == mask {
                out[n & 255] = j as u8;
                n += 1;
            }
        }
        n
    }

    /// Start bringing the word of `id` into the cache, for a test a little later.
    #[inline(always)]
    fn prefetch(&self, id: &[u8; 16]) {
        let bit = (prefix(id) >> self.shift) as usize;
        #[cfg(target_arch = "x86_64")]
        crate::kernels::prefetch(&self.words[bit >> 6]);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bit;
    }
}

impl<'a> SightingIndex<'a> {
    /// Index `sightings` (their ids need not be distinct).
    pub fn new(sightings: &'a [Sighting]) -> Self {
        let n = sightings.len().max(1);
        // The filter and the buckets are built side by side (on two threads with the
        // `parallel` feature, for 4,096 sightings or more).
        let ((starts, bucket_shift, order, fingerprints), filter) = join(
            sightings.len() >= 4096,
            || {
                // A counting sort into 2n..4n buckets.
                let buckets = (n * 2).next_power_of_two();
                let bucket_shift = 64 - buckets.trailing_zeros();
                let bucket = |s: &Sighting| (suffix(&s.id) >> bucket_shift) as usize;
                // starts[b] counts bucket b, then (summed) is where it ends, then (as the
                // entries are placed from the back) where it begins.
                let mut starts = vec![0u32; buckets + 1];
                for s in sightings {
                    starts[bucket(s)] += 1;
                }
                let mut sum = 0;
                for c in &mut starts {
                    sum += *c;
                    *c = sum;
                }
                let mut order = vec![0u32; sightings.len()];
                let mut fingerprints = vec![0u32; sightings.len()];
                for (i, s) in sightings.iter().enumerate().rev() {
                    let end = &mut starts[bucket(s)];
                    *end -= 1;
                    order[*end as usize] = i as u32;
                    fingerprints[*end as usize] = fingerprint(&s.id);
                }
                (starts, bucket_shift, order, fingerprints)
            },
            || {
                // 512 KiB for 100,000 sightings, which stays in L2.
                let mut filter = PreFilter::for_ids(n);
                sightings.iter().for_each(|s| filter.insert(&s.id));
                filter
            },
        );
        SightingIndex {
            sightings,
            filter,
            starts,
            bucket_shift,
            order,
            fingerprints,
        }
    }

    /// Cheap pre-filter: false means the id was certainly not heard. The id is typed (an
    /// RPI, an EphID or a sighting id, all 16 bytes), so no length can be wrong.
    #[inline(always)]
    pub fn maybe_contains(&self, id: &[u8; 16]) -> bool {
        self.filter.maybe_contains(id)
    }

    /// The positions in `ids` (at most 256 are read) of the ids that pass
    /// [`SightingIndex::maybe_contains`], in order, written to the front of `out`;
    /// returns how many (see [`PreFilter::prefilter`]).
    #[inline]
    pub(crate) fn prefilter<T: Id16>(&self, ids: &[T], out: &mut [u8; 256]) -> usize {
        self.filter.prefilter(ids, out)
    }

    /// Start bringing the pre-filter word of `id` into the cache, for a
    /// [`SightingIndex::maybe_contains`] a little later.
    #[inline(always)]
    pub fn prefetch(&self, id: &[u8; 16]) {
        self.filter.prefetch(id);
    }

    /// The bucket of `id`.
    #[inline(always)]
    fn bucket(&self, id: &[u8; 16]) -> usize {
        (suffix(id) >> self.bucket_shift) as usize
    }

    /// Start bringing the start of `id`'s bucket into the cache, for a lookup a little
    /// later.
    #[inline(always)]
    fn prefetch_slot(&self, id: &[u8; 16]) {
        let b = self.bucket(id);
        #[cfg(target_arch = "x86_64")]
        crate::kernels::prefetch(&self.starts[b]);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = b;
    }

    /// The second step of [`SightingIndex::prefetch_slot`], once the bucket's start is in
    /// cache: start bringing the bucket's first fingerprint in.
    #[inline(always)]
    fn prefetch_bucket(&self, id: &[u8; 16]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = self.fingerprints.get(self.starts[self.bucket(id)] as usize) {
            crate::kernels::prefetch(f);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    /// Every sighting of `id` (one per day it was heard).
    #[inline]
    pub fn lookup(&self, id: &[u8; 16]) -> impl Iterator<Item = &'a Sighting> + '_ {
        let key = *id;
        let fp = fingerprint(id);
        let b = self.bucket(id);
        let (from, until) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        (from..until)
            .filter(move |&pos| self.fingerprints[pos] == fp)
            .map(|pos| &self.sightings[self.order[pos] as usize])
            .filter(move |s| s.id == key)
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

/// `(a(), b())`, on two threads when `parallel` holds and the feature `parallel` is on.
fn join<A: Send, B: Send>(
    parallel: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    #[cfg(feature = "parallel")]
    if parallel {
        return rayon::join(a, b);
    }
    let _ = parallel;
    (a(), b())
}

/// Split `items` across threads (feature `parallel`) and concatenate the matches.
fn for_each_chunk<T: Sync>(items: &[T], f: impl Fn(&[T], &mut Vec<Match>) + Sync) -> Vec<Match> {
    #[cfg(feature = "parallel")]
    let chunk = (items.len() / (rayon::current_num_threads() * 8)).max(1024);
    #[cfg(not(feature = "parallel"))]
    let chunk = items.len();
    for_each_chunk_with(items, chunk, || (), |(), c, out| f(c, out))
}

/// Split `items` into chunks of `chunk` (at least 1) and run `f` on each, across threads
/// with the `parallel` feature once there are 4,096 items; concatenate the matches. Each
/// task makes its scratch with `init` once and reuses it for all the chunks it takes.
fn for_each_chunk_with<T: Sync, S>(
    items: &[T],
    chunk: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, &[T], &mut Vec<Match>) + Sync,
) -> Vec<Match> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        if items.len() >= 4096 {
            return items
                .par_chunks(chunk.max(1))
                .map_init(init, |scratch, c| {
                    let mut out = Vec::new();
                    f(scratch, c, &mut out);
                    out
                })
                .reduce(Vec::new, |mut a, mut b| {
                    a.append(&mut b);
                    a
                });
        }
    }
    let mut scratch = init();
    let mut out = Vec::new();
    for c in items.chunks(chunk.max(1)) {
        f(&mut scratch, c, &mut out);
    }
    out
}

/// The most days GAEN matching splits the sightings into (a phone keeps 14); beyond,
/// every key uses the index's filter.
const MAX_GAEN_DAYS: u32 = 64;

/// The days `d` whose GAEN window `[d·86400 − 2 h, (d+1)·86400 + 2 h)` holds all of `s`:
/// at most two, none if the sighting is longer than a day and 4 h. Filter `d` of
/// [`gaen_day_filters`] holds these sightings, all that a key valid inside day `d` can match.
fn gaen_days_of(s: &Sighting) -> RangeInclusive<u32> {
    let lo = u64::from(s.last_seen).saturating_sub(TOLERANCE_SECONDS) / 86_400;
    let hi = (u64::from(s.first_seen) + TOLERANCE_SECONDS) / 86_400;
    // Both are at most (2^32 + 7,200) / 86,400: they fit.
    lo as u32..=hi as u32
}

/// The day filters of GAEN matching ([`gaen_days_of`]); `None` when the sightings span
/// more than [`MAX_GAEN_DAYS`]. A national batch's keys are spread over 14 days, so a
/// day's filter holds about a fourteenth of the sightings and stays in the L1 cache
/// while that day's keys are matched (the index's own filter, 512 KiB for 100,000
/// sightings, is read from L2).
fn gaen_day_filters(sightings: &[Sighting]) -> Option<DayFilters> {
    // One pass finds the first and the last day and counts each day's sightings in a ring
    // of `RING` slots, exact once the span is known to be under `MAX_GAEN_DAYS < RING`.
    const RING: usize = 2 * MAX_GAEN_DAYS as usize;
    let mut ring = [0usize; RING];
    let (mut first, mut last) = (u32::MAX, 0);
    for r in sightings.iter().map(gaen_days_of).filter(|r| !r.is_empty()) {
        first = first.min(*r.start());
        last = last.max(*r.end());
        // A longer range (a sighting that ends before it starts) spans too many days.
        if r.end() - r.start() < RING as u32 {
            r.for_each(|d| ring[d as usize % RING] += 1);
        }
    }
    if first > last {
        (first, last) = (0, 0);
    }
    if last - first >= MAX_GAEN_DAYS {
        return None;
    }
    let counts: Vec<usize> = (first..=last).map(|d| ring[d as usize % RING]).collect();
    // The earlier and the later days filled side by side (see `join`).
    let mid = first + (last - first) / 2;
    let (early_counts, late_counts) = counts.split_at((mid - first + 1) as usize);
    let (mut early, late) = join(
        sightings.len() >= 4096 && first < last,
        || DayFilters::fill(sightings, first, early_counts, gaen_days_of),
        || DayFilters::fill(sightings, mid + 1, late_counts, gaen_days_of),
    );
    early.days.extend(late.days);
    Some(early)
}

/// Where a published key goes in GAEN matching: `Some(d)` for the filter of day `d`
/// (an index into `days`), `Some(days.len())` for the index's own filter (a key that
/// crosses midnight, or no day filters), `None` when no sighting lies in the key's
/// validity ±2 h (nothing to derive).
fn gaen_bucket(days: Option<&DayFilters>, k: &PublishedTek) -> Option<usize> {
    let Some(days) = days else {
        return Some(0);
    };
    if u64::from(k.rolling_start % 144) + u64::from(k.rolling_period) > 144 {
        return Some(days.days.len());
    }
    let d = (k.rolling_start / 144).checked_sub(days.first)? as usize;
    days.days.get(d)?.as_ref().map(|_| d)
}

/// Keys a GAEN matching task takes at a time: enough to amortise the sort by day, few
/// enough that the tasks end together and the scratch stays in L2 (8,192 × 32 bytes).
const GAEN_CHUNK: usize = 8192;

/// Candidates (RPIs that passed a pre-filter) gathered before they are looked up: their
/// buckets are fetched as they come ([`gaen_lookups`]), so the lookups' cache misses
/// overlap with the derivation instead of stalling it.
const GAEN_CANDIDATES: usize = 16;

/// What one GAEN matching task reuses from chunk to chunk (no allocation per chunk).
struct GaenScratch<'f> {
    /// Each key's bucket ([`gaen_bucket`]), `u32::MAX` for a key that cannot match.
    buckets: Vec<u32>,
    /// Where each bucket's keys start in `sorted`.
    starts: Vec<usize>,
    /// The chunk's keys in the order of their buckets, each with its pre-filter.
    sorted: Vec<(PublishedTek, &'f PreFilter)>,
    /// RPIs that passed the pre-filter, with the time range their key allows.
    candidates: Vec<(Block, u64, u64)>,
    /// Candidates whose lookups are next ([`gaen_lookups`]).
    held: Vec<(Block, u64, u64)>,
}

/// The candidates' lookups, pipelined: the new ones' first fingerprints are fetched (their
/// buckets' starts were fetched as they came), then the ones held from the last call,
/// fetched by then, are looked up; the new ones are held for the next call. Two calls
/// with no new candidates finish everything.
fn gaen_lookups(
    index: &SightingIndex<'_>,
    candidates: &mut Vec<(Block, u64, u64)>,
    held: &mut Vec<(Block, u64, u64)>,
    out: &mut Vec<Match>,
) {
    for (rpi, _, _) in candidates.iter() {
        index.prefetch_bucket(rpi.as_ref());
    }
    for (rpi, from, until) in held.drain(..) {
        index.collect(rpi.as_ref(), from, until, out);
    }
    std::mem::swap(candidates, held);
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
    let days = gaen_day_filters(index.sightings);
    let buckets = days.as_ref().map_or(1, |d| d.days.len() + 1);
    let filter_of = |b: usize| {
        days.as_ref()
            .and_then(|d| d.days.get(b)?.as_ref())
            .unwrap_or(&index.filter)
    };
    let scratch = || GaenScratch {
        buckets: Vec::new(),
        starts: Vec::new(),
        sorted: Vec::new(),
        candidates: Vec::with_capacity(GAEN_CANDIDATES + 3 * 48),
        held: Vec::with_capacity(GAEN_CANDIDATES + 3 * 48),
    };
    for_each_chunk_with(keys, GAEN_CHUNK, scratch, |scratch, chunk, out| {
        let Some(&first) = chunk.first() else {
            return;
        };
        // The chunk's keys copied in the order of their filters (a counting sort: each
        // day's keys together, then the keys that cross midnight), so that a day's filter
        // is read while it is in cache and the keys are read in order; keys that cannot
        // match are dropped.
        let GaenScratch {
            buckets: selected,
            starts,
            sorted,
            candidates,
            held,
        } = scratch;
        selected.clear();
        selected.extend(
            chunk
                .iter()
                .map(|k| gaen_bucket(days.as_ref(), k).map_or(u32::MAX, |b| b as u32)),
        );
        starts.clear();
        starts.resize(buckets + 1, 0);
        for &b in selected.iter().filter(|&&b| b != u32::MAX) {
            starts[b as usize + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        sorted.clear();
        sorted.resize(starts[buckets], (first, &index.filter));
        for (k, &b) in chunk.iter().zip(selected.iter()) {
            if b != u32::MAX {
                let b = b as usize;
                sorted[starts[b]] = (*k, filter_of(b));
                starts[b] += 1;
            }
        }
        let mut batch = [([0u8; 16], 0u32); LANES];
        let mut filters: [WordFilter<'_>; LANES] = [index.filter.words(); LANES];
        let mut bufs = [[Block::default(); 144]; LANES];
        // The keys are derived LANES at a time (their HKDFs and AES passes interleaved),
        // each RPI tested against the pre-filter as it leaves the AES unit (about 0.1%
        // pass); the few candidates are gathered and looked up together.
        for group in sorted.chunks(LANES) {
            let len = group.len();
            for ((b, f), (k, s)) in batch.iter_mut().zip(&mut filters).zip(group) {
                *b = (k.key_data, k.rolling_start);
                *f = s.words();
            }
            let mut pass = [[0u64; 3]; LANES];
            if !derive_rpis_prefiltered(
                &batch[..len],
                &filters[..len],
                &mut bufs[..len],
                &mut pass[..len],
            ) {
                derive_rpis_many(&batch[..len], &mut bufs[..len]);
                for (((_, f), buf), pass) in group.iter().zip(&bufs).zip(&mut pass) {
                    let mut found = [0u8; 256];
                    let n = f.prefilter(&buf[..], &mut found);
                    for &j in &found[..n] {
                        pass[usize::from(j) / 48] |= 1 << (j % 48);
                    }
                }
            }
            for (((k, _), buf), pass) in group.iter().zip(&bufs).zip(&pass) {
                if pass == &[0; 3] {
                    continue;
                }
                let from =
                    (u64::from(k.rolling_start) * ENIN_SECONDS).saturating_sub(TOLERANCE_SECONDS);
                let until = ((u64::from(k.rolling_start) + u64::from(k.rolling_period))
                    * ENIN_SECONDS
                    + TOLERANCE_SECONDS)
                    .min(release_time.0);
                let period = k.rolling_period.min(144) as usize;
                for (part, &bits) in pass.iter().enumerate() {
                    let mut bits = bits;
                    while bits != 0 {
                        let j = 48 * part + bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        if j < period {
                            index.prefetch_slot(buf[j].as_ref());
                            candidates.push((buf[j], from, until));
                        }
                    }
                }
            }
            if candidates.len() >= GAEN_CANDIDATES {
                gaen_lookups(index, candidates, held, out);
            }
        }
        gaen_lookups(index, candidates, held, out);
        gaen_lookups(index, candidates, held, out);
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
    let filters = DayFilters::new(index.sightings, first_day.0, last_day.0, |s| {
        s.day().0..=s.day().0
    });
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
                let mut candidates = [0u8; 256];
                let n = f.prefilter(&ephids[..], &mut candidates);
                for &j in &candidates[..n] {
                    index.collect(&ephids[usize::from(j)].0, from, until, out);
                }
            },
        );
    })
}

/// Pre-filters of the sightings by UTC day, for the days `first..=last`
/// ([`PreFilter::for_day`]: one day's filter stays in cache while that day's keys are
/// matched). GAEN puts a sighting in the days of [`gaen_days_of`], low-cost in the day it
/// began on. A day that no sighting falls in has no filter: nothing can match there.
struct DayFilters {
    first: u32,
    days: Vec<Option<PreFilter>>,
}

impl DayFilters {
    /// Filter `d` holds every sighting `s` with `d` in `days_of(s)`, for the days
    /// `first..=last`.
    fn new(
        sightings: &[Sighting],
        first: u32,
        last: u32,
        days_of: impl Fn(&Sighting) -> RangeInclusive<u32>,
    ) -> Self {
        let len = (last as usize + 1).saturating_sub(first as usize);
        let mut counts = vec![0usize; len];
        for s in sightings {
            for d in days_of(s) {
                if let Some(c) = d
                    .checked_sub(first)
                    .and_then(|i| counts.get_mut(i as usize))
                {
                    *c += 1;
                }
            }
        }
        Self::fill(sightings, first, &counts, days_of)
    }

    /// [`DayFilters::new`] for the days `first .. first + counts.len()`, given how many
    /// sightings each holds (each filter is sized by its count).
    fn fill(
        sightings: &[Sighting],
        first: u32,
        counts: &[usize],
        days_of: impl Fn(&Sighting) -> RangeInclusive<u32>,
    ) -> Self {
        let mut days: Vec<Option<PreFilter>> = counts
            .iter()
            .map(|&n| (n > 0).then(|| PreFilter::for_day(n)))
            .collect();
        for s in sightings {
            for d in days_of(s) {
                let slot = d.checked_sub(first).and_then(|i| days.get_mut(i as usize));
                if let Some(Some(f)) = slot {
                    f.insert(&s.id);
                }
            }
        }
        DayFilters { first, days }
    }

    /// The filter of `day`; `None` outside the range or for a day without sightings.
    #[inline(always)]
    fn of(&self, day: Day) -> Option<&PreFilter> {
        self.days
            .get(day.0.checked_sub(self.first)? as usize)?
            .as_ref()
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

    /// Ids that share their last 8 bytes (one bucket, one fingerprint), as a crafted
    /// broadcast could: a lookup still returns the sightings of its own id only.
    #[test]
    fn index_tells_apart_ids_of_one_bucket_and_fingerprint() {
        let id = |i: u8| {
            let mut id = [0xAB; 16];
            id[0] = i;
            id
        };
        let list: Vec<Sighting> = (0..60u32)
            .map(|i| Sighting {
                id: id((i % 20) as u8),
                first_seen: 86_400 * (1 + i / 20),
                last_seen: 86_400 * (1 + i / 20) + 60,
                seconds: [60, 0, 0],
            })
            .collect();
        let idx = SightingIndex::new(&list);
        for i in 0..20u8 {
            let found: Vec<_> = idx.lookup(&id(i)).collect();
            assert_eq!(found.len(), 3, "id {i} on three days");
            assert!(found.iter().all(|s| s.id == id(i)));
        }
        assert_eq!(idx.lookup(&id(20)).count(), 0);
    }

    /// A batch of several GAEN tasks' chunks: contacts planted in keys on both sides of
    /// every chunk boundary, and one key with more contacts than the candidate list
    /// holds, are all found, and nothing else is.
    #[test]
    fn gaen_matching_finds_contacts_across_chunks_and_candidate_flushes() {
        let day = 20_000u32;
        let n = 2 * GAEN_CHUNK + 100;
        let keys: Vec<PublishedTek> = (0..n as u32)
            .map(|i| {
                let key_data = random_id(7, i);
                PublishedTek {
                    key_data,
                    rolling_start: (day + i % 3) * 144,
                    rolling_period: 144,
                }
            })
            .collect();
        let mut planted: Vec<(usize, u32)> = [0, GAEN_CHUNK - 1, GAEN_CHUNK, 2 * GAEN_CHUNK, n - 1]
            .iter()
            .map(|&k| (k, (k % 144) as u32))
            .collect();
        planted.extend((0..2 * GAEN_CANDIDATES as u32 + 3).map(|j| (GAEN_CHUNK + 1, j)));
        let mut sightings: Vec<Sighting> = (0..5_000u32)
            .map(|i| Sighting {
                id: random_id(8, i),
                first_seen: (day + i % 3) * 86_400 + i,
                last_seen: (day + i % 3) * 86_400 + i + 300,
                seconds: [300, 0, 0],
            })
            .collect();
        let mut want = Vec::new();
        for &(k, j) in &planted {
            let key = &keys[k];
            let enin = key.rolling_start + j;
            let rpi = crate::gaen::Tek::from_bytes(key.key_data)
                .rpik()
                .rpi(crate::time::Enin(enin));
            let s = Sighting {
                id: rpi.0,
                first_seen: enin * 600 + 10,
                last_seen: enin * 600 + 310,
                seconds: [300, 0, 0],
            };
            sightings.push(s);
            want.push(Match::of(&s));
        }
        let idx = SightingIndex::new(&sightings);
        let mut got = match_gaen(&idx, &keys, UnixTime(u64::from(day + 5) * 86_400));
        let key = |m: &Match| (m.id, m.day, m.seconds);
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got, want);
    }

    /// Sightings that end before they start (a clock step on the phone) span too many
    /// days to split the others by day: the keys go through the index's own filter,
    /// the contact is still found, and the days are not walked one by one.
    #[test]
    fn gaen_matching_survives_sightings_that_end_before_they_start() {
        let day = 20_000u32;
        let key = PublishedTek {
            key_data: random_id(9, 0),
            rolling_start: day * 144,
            rolling_period: 144,
        };
        let enin = key.rolling_start + 77;
        let rpi = crate::gaen::Tek::from_bytes(key.key_data)
            .rpik()
            .rpi(crate::time::Enin(enin));
        let contact = Sighting {
            id: rpi.0,
            first_seen: enin * 600,
            last_seen: enin * 600 + 300,
            seconds: [300, 0, 0],
        };
        let mut sightings: Vec<Sighting> = (0..5_000u32)
            .map(|i| Sighting {
                id: random_id(10, i),
                first_seen: u32::MAX - i,
                last_seen: i,
                seconds: [0, 0, 0],
            })
            .collect();
        sightings.push(contact);
        assert!(gaen_day_filters(&sightings).is_none());
        let idx = SightingIndex::new(&sightings);
        let got = match_gaen(&idx, &[key], UnixTime(u64::from(day + 2) * 86_400));
        assert_eq!(got, vec![Match::of(&contact)]);
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
        let m = idx.filter.prefilter_scalar(probe, &mut slow, 0, 0);
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

        /// The GAEN kernel's pre-filter (the RPIs tested in registers, as they leave the
        /// AES unit) sets exactly the bits of the RPIs that pass the one-by-one test, for
        /// every group size and tail, each key with its own filter; and its blocks are
        /// those [`derive_rpis_many`] gives.
        #[test]
        fn gaen_kernel_prefilter_equals_one_by_one(
            keys in proptest::collection::vec((proptest::prelude::any::<[u8; 16]>(), proptest::prelude::any::<u32>()), 1..10),
            noise in proptest::collection::vec(proptest::prelude::any::<[u8; 16]>(), 0..2000),
            planted in proptest::collection::vec((0usize..10, 0usize..144), 0..30),
        ) {
            let mut small = PreFilter::for_day(noise.len() / 4);
            let mut large = PreFilter::for_ids(noise.len());
            noise.iter().take(noise.len() / 4).for_each(|id| small.insert(id));
            noise.iter().for_each(|id| large.insert(id));
            let mut plain = vec![[Block::default(); 144]; keys.len()];
            derive_rpis_many(&keys, &mut plain);
            for &(k, j) in &planted {
                let rpi: [u8; 16] = plain[k % keys.len()][j].into();
                if k % 2 == 0 { small.insert(&rpi) } else { large.insert(&rpi) }
            }
            let filters: Vec<&PreFilter> = (0..keys.len()).map(|i| if i % 2 == 0 { &small } else { &large }).collect();
            let words: Vec<WordFilter<'_>> = filters.iter().map(|f| f.words()).collect();
            let mut out = vec![[Block::default(); 144]; keys.len()];
            let mut pass = vec![[0u64; 3]; keys.len()];
            if derive_rpis_prefiltered(&keys, &words, &mut out, &mut pass) {
                proptest::prop_assert_eq!(&out, &plain);
                for (i, f) in filters.iter().enumerate() {
                    let mut want = [0u64; 3];
                    for j in 0..144 {
                        if f.maybe_contains(plain[i][j].as_ref()) {
                            want[j / 48] |= 1 << (j % 48);
                        }
                    }
                    proptest::prop_assert_eq!(pass[i], want, "key {}", i);
                }
            }
        }

        /// A day's filter (kept to L1 size) holds every id put in it, and its test of a
        /// day's 96 EphIDs (eight at a time on AVX-512) agrees with the one-by-one test.
        #[test]
        fn day_filter_batch_equals_one_by_one(
            stored in proptest::collection::vec(proptest::prelude::any::<[u8; 16]>(), 0..400),
            probe in proptest::collection::vec(proptest::prelude::any::<[u8; 16]>(), 96),
            planted in 0usize..96,
        ) {
            let mut f = PreFilter::for_day(stored.len());
            stored.iter().for_each(|id| f.insert(id));
            let mut ids = [EphId::default(); crate::lowcost::EPHIDS_PER_DAY];
            for (e, p) in ids.iter_mut().zip(&probe) {
                e.0 = *p;
            }
            if let Some(s) = stored.first() {
                ids[planted].0 = *s;
            }
            let one_by_one: Vec<u8> = (0..96u8).filter(|&j| f.maybe_contains(&ids[usize::from(j)].0)).collect();
            let mut out = [0u8; 256];
            let n = f.prefilter(&ids[..], &mut out);
            proptest::prop_assert_eq!(&out[..n], &one_by_one[..]);
            for s in &stored {
                proptest::prop_assert!(f.maybe_contains(s));
            }
            if !stored.is_empty() {
                proptest::prop_assert!(one_by_one.contains(&(planted as u8)));
            }
        }

        /// GAEN matching (the keys sorted by day, each day through its own filter, the
        /// keys that cross midnight through the index's) finds exactly what a plain scan
        /// finds: every sighting of one of a key's RPIs that lies inside the key's validity
        /// ±2 h and ended before the release. Sightings sit near midnights, keys are
        /// aligned to days or not, short or long; with or without a sighting far in the
        /// past (then the sightings are not split by day).
        #[test]
        fn gaen_matching_equals_a_plain_scan(
            keys in proptest::collection::vec(
                (proptest::prelude::any::<[u8; 16]>(), 0u32..5 * 144, 1u32..=144), 1..24),
            contacts in proptest::collection::vec(
                (0usize..24, 0u32..144, -9_000i64..9_000, 0u32..20_000), 0..40),
            noise in proptest::collection::vec(
                (proptest::prelude::any::<[u8; 16]>(), 0u32..6 * 86_400), 0..40),
            release in 2u64 * 86_400..7 * 86_400,
            far in proptest::prelude::any::<bool>(),
        ) {
            let base = 20_000u32 * 144;
            let keys: Vec<PublishedTek> = keys
                .iter()
                .map(|&(key_data, start, period)| {
                    // Half the keys start at a midnight, as phones publish them.
                    let start = if start % 2 == 0 { start / 144 * 144 } else { start };
                    PublishedTek { key_data, rolling_start: base + start, rolling_period: period }
                })
                .collect();
            let mut sightings: Vec<Sighting> = noise
                .iter()
                .map(|&(id, t)| Sighting { id, first_seen: base * 600 + t, last_seen: base * 600 + t + 300, seconds: [300, 0, 0] })
                .collect();
            for &(k, j, shift, length) in &contacts {
                let k = &keys[k % keys.len()];
                let enin = k.rolling_start + j % k.rolling_period;
                let rpi = crate::gaen::Tek::from_bytes(k.key_data).rpik().rpi(crate::time::Enin(enin));
                let t = (i64::from(enin) * 600 + shift).max(0) as u32;
                sightings.push(Sighting { id: rpi.0, first_seen: t, last_seen: t + length, seconds: [length, 0, 0] });
            }
            if far {
                // A sighting years before the others: too many days to split, so every
                // key goes through the index's own filter.
                sightings.push(Sighting { id: [1; 16], first_seen: 100, last_seen: 400, seconds: [300, 0, 0] });
            }
            let release = UnixTime(u64::from(base) * 600 + release);
            let idx = SightingIndex::new(&sightings);
            let mut got = match_gaen(&idx, &keys, release);
            let mut want = Vec::new();
            for k in &keys {
                let rpik = crate::gaen::Tek::from_bytes(k.key_data).rpik();
                let from = (u64::from(k.rolling_start) * 600).saturating_sub(TOLERANCE_SECONDS);
                let until = ((u64::from(k.rolling_start) + u64::from(k.rolling_period)) * 600 + TOLERANCE_SECONDS).min(release.0);
                for j in 0..k.rolling_period {
                    let rpi = rpik.rpi(crate::time::Enin(k.rolling_start + j));
                    want.extend(sightings.iter().filter(|s| s.id == rpi.0 && s.within(from, until)).map(Match::of));
                }
            }
            let key = |m: &Match| (m.id, m.day, m.seconds);
            got.sort_by_key(key);
            want.sort_by_key(key);
            proptest::prop_assert_eq!(got, want);
        }
    }
}
