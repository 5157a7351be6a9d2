//! The DP-3T hybrid design (PROTOCOL.md §5).
//!
//! Time is cut into windows of `W` minutes (a multiple of 15 from 15 to 1440, default 120),
//! aligned to unix 0. Each window has a random 16-byte seed;
//! `PRF = HMAC-SHA256(seed, "DP3T-HYBRID")` and the window's `W/15` EphIDs are the
//! AES-256-CTR keystream of the PRF from a zero counter block, one per 15-minute epoch.
//!
//! Matching derives the EphIDs of many windows ([`for_each_window`]); on x86-64 with
//! SHA-NI and VAES it derives four windows at once on the kernels of `kernels.rs`, and
//! elsewhere one by one on the RustCrypto crates. The tests check both against each other.

use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::lowcost::{ephids_from_prf, hmac_sha256};
use crate::time::{UnixTime, EPOCH_SECONDS};
use crate::{fixed, EphId};

/// The PRF message of the hybrid design (11 ASCII bytes).
pub const HYBRID_INFO: &[u8] = b"DP3T-HYBRID";

/// A window length in minutes: a multiple of 15 in `15..=1440`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowMinutes(u16);

impl WindowMinutes {
    /// The profile's default, 2 hours.
    pub const DEFAULT: WindowMinutes = WindowMinutes(120);
    /// Checked constructor.
    pub fn new(minutes: u32) -> Result<Self> {
        if (15..=1440).contains(&minutes) && minutes.is_multiple_of(15) {
            Ok(WindowMinutes(minutes as u16))
        } else {
            Err(Error::out_of_range(
                "window minutes",
                format!("{minutes} is not a multiple of 15 in 15..=1440"),
            ))
        }
    }
    /// Minutes.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
    /// Seconds.
    pub fn seconds(self) -> u64 {
        u64::from(self.0) * 60
    }
    /// EphIDs per window (`W / 15`).
    pub fn ephid_count(self) -> usize {
        usize::from(self.0) / 15
    }
    /// Entries of a padded hybrid upload: `14 * 1440 / W`.
    pub fn upload_entries(self) -> usize {
        14 * 1440 / usize::from(self.0)
    }
}

impl Default for WindowMinutes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One time window: an aligned start and a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    start: UnixTime,
    minutes: WindowMinutes,
}

impl Window {
    /// The window of length `minutes` that contains `t`.
    pub fn containing(t: UnixTime, minutes: WindowMinutes) -> Self {
        let len = minutes.seconds();
        Window {
            start: UnixTime(t.0 - t.0 % len),
            minutes,
        }
    }
    /// The window starting at `start`, which must be aligned to the window length.
    pub fn new(start: UnixTime, minutes: WindowMinutes) -> Result<Self> {
        if !start.0.is_multiple_of(minutes.seconds()) {
            return Err(Error::out_of_range(
                "window start",
                format!("{} is not aligned to {} min", start.0, minutes.get()),
            ));
        }
        Ok(Window { start, minutes })
    }
    /// First second.
    pub fn start(self) -> UnixTime {
        self.start
    }
    /// First second after the window.
    pub fn end(self) -> UnixTime {
        self.start.plus(self.minutes.seconds())
    }
    /// Length.
    pub fn minutes(self) -> WindowMinutes {
        self.minutes
    }
    /// Whether `t` lies inside.
    pub fn contains(self, t: UnixTime) -> bool {
        self.start <= t && t < self.end()
    }
    /// Index of the EphID broadcast at `t` (`t` inside the window).
    pub fn ephid_index(self, t: UnixTime) -> Option<usize> {
        self.contains(t)
            .then(|| ((t.0 - self.start.0) / EPOCH_SECONDS) as usize)
    }
}

/// A window seed (16 secret bytes).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct WindowSeed([u8; 16]);

impl std::fmt::Debug for WindowSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowSeed(<redacted>)")
    }
}

impl WindowSeed {
    /// A fresh seed from the injected CSPRNG.
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Self {
        let mut k = [0u8; 16];
        rng.fill_bytes(&mut k);
        WindowSeed(k)
    }
    /// Wrap known seed bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        WindowSeed(b)
    }
    /// From a slice of exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        Ok(WindowSeed(fixed(b, "hybrid seed")?))
    }
    /// The seed bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// `PRF = HMAC-SHA256(seed, "DP3T-HYBRID")`.
    pub fn prf(&self) -> [u8; 32] {
        hmac_sha256(&self.0, HYBRID_INFO)
    }
    /// The `W/15` EphIDs of a window of `minutes`.
    pub fn ephids(&self, minutes: WindowMinutes) -> Vec<EphId> {
        let mut buf = [EphId::default(); 96];
        self.ephids_into(minutes, &mut buf).to_vec()
    }
    /// The `W/15` EphIDs of a window of `minutes`, written into `out` without allocating
    /// (the matching hot path); returns the filled prefix.
    pub fn ephids_into<'a>(&self, minutes: WindowMinutes, out: &'a mut [EphId; 96]) -> &'a [EphId] {
        let n = minutes.ephid_count();
        let mut prf = self.prf();
        ephids_from_prf(&prf, &mut out[..n]);
        prf.zeroize();
        &out[..n]
    }
}

/// Windows derived at once by the kernels.
const LANES: usize = 4;

/// Call `f(i, ephids)` with the `W/15` EphIDs of every window `(seed, W)` of `windows`,
/// in order, where `i` is the window's position in `windows`.
pub fn for_each_window<'s, I, F>(windows: I, f: F)
where
    I: IntoIterator<Item = (&'s WindowSeed, WindowMinutes)>,
    F: FnMut(usize, &[EphId]),
{
    for_each_window_ahead(windows, |_| {}, f);
}

/// [`for_each_window`] with a look ahead: `ahead(ephids)` is called as soon as a window's
/// EphIDs are derived, and `f` for them only after the next windows are, so that what
/// `ahead` starts (a prefetch of the memory `f` will read) overlaps their crypto.
pub fn for_each_window_ahead<'s, I, A, F>(windows: I, ahead: A, f: F)
where
    I: IntoIterator<Item = (&'s WindowSeed, WindowMinutes)>,
    A: FnMut(&[EphId]),
    F: FnMut(usize, &[EphId]),
{
    for_each_window_on(windows, ahead, f, true);
}

/// [`for_each_window_ahead`], on the kernels when `fast` and the CPU allows, else on the
/// portable code (the tests compare the two).
fn for_each_window_on<'s, I, A, F>(windows: I, mut ahead: A, mut f: F, fast: bool)
where
    I: IntoIterator<Item = (&'s WindowSeed, WindowMinutes)>,
    A: FnMut(&[EphId]),
    F: FnMut(usize, &[EphId]),
{
    let mut windows = windows.into_iter();
    let mut seeds = [[0u8; 16]; LANES];
    // Two output buffers: the windows just derived, and those before, whose `f` is due;
    // with each, the windows' EphID counts (0 for an idle lane).
    let mut counts = [[0usize; LANES]; 2];
    let mut out = [[[EphId::default(); 96]; LANES]; 2];
    let mut cur = 0;
    let mut next = 0;
    loop {
        let mut lanes = 0;
        counts[cur] = [0; LANES];
        for (s, c) in seeds.iter_mut().zip(counts[cur].iter_mut()) {
            let Some((seed, minutes)) = windows.next() else {
                break;
            };
            *s = seed.0;
            *c = minutes.ephid_count();
            lanes += 1;
        }
        if lanes == 0 {
            break;
        }
        // Idle lanes compute on the last batch's seeds; their output is ignored.
        let n = counts[cur].iter().copied().max().unwrap_or(0);
        let o = &mut out[cur];
        if !(fast && ephids_fast(&seeds, n, o)) {
            for ((s, &c), o) in seeds.iter().zip(&counts[cur]).zip(o.iter_mut()) {
                let mut prf = hmac_sha256(s, HYBRID_INFO);
                ephids_from_prf(&prf, &mut o[..c]);
                prf.zeroize();
            }
        }
        for (o, &c) in o.iter().zip(&counts[cur]).take(lanes) {
            ahead(&o[..c]);
        }
        cur ^= 1;
        for (o, &c) in out[cur].iter().zip(&counts[cur]).filter(|(_, &c)| c > 0) {
            f(next, &o[..c]);
            next += 1;
        }
    }
    cur ^= 1;
    for (o, &c) in out[cur].iter().zip(&counts[cur]).filter(|(_, &c)| c > 0) {
        f(next, &o[..c]);
        next += 1;
    }
    seeds.zeroize();
}

/// Four windows' EphIDs on the x86-64 kernels; `false` when they can't run here.
#[cfg(target_arch = "x86_64")]
fn ephids_fast(seeds: &[[u8; 16]; LANES], n: usize, out: &mut [[EphId; 96]; LANES]) -> bool {
    crate::kernels::hybrid_ephids(seeds, n, out)
}

/// No kernels off x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn ephids_fast(_: &[[u8; 16]; LANES], _: usize, _: &mut [[EphId; 96]; LANES]) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_minutes_bounds() {
        for w in (15..=1440).step_by(15) {
            let wm = WindowMinutes::new(w).unwrap();
            assert_eq!(wm.ephid_count(), w as usize / 15);
            assert_eq!(
                WindowSeed::from_bytes([1; 16]).ephids(wm).len(),
                w as usize / 15
            );
        }
        for w in [0, 14, 16, 1455, 30 * 60] {
            assert!(WindowMinutes::new(w).is_err(), "{w}");
        }
        assert_eq!(WindowMinutes::DEFAULT.upload_entries(), 168);
    }

    #[test]
    fn longer_windows_extend_the_keystream() {
        // The keystream does not depend on W: a 30-minute window's EphIDs are a prefix of
        // a 60-minute window's from the same seed.
        let s = WindowSeed::from_bytes([9; 16]);
        let a = s.ephids(WindowMinutes::new(30).unwrap());
        let b = s.ephids(WindowMinutes::new(60).unwrap());
        assert_eq!(a[..], b[..2]);
    }

    #[test]
    fn window_arithmetic() {
        let w = WindowMinutes::new(120).unwrap();
        let win = Window::containing(UnixTime(7_200 * 3 + 901), w);
        assert_eq!(win.start(), UnixTime(21_600));
        assert_eq!(win.end(), UnixTime(28_800));
        assert_eq!(win.ephid_index(UnixTime(21_600 + 901)), Some(1));
        assert_eq!(win.ephid_index(UnixTime(28_800)), None);
        assert!(Window::new(UnixTime(60), w).is_err());
        assert_eq!(Window::new(UnixTime(21_600), w).unwrap(), win);
    }

    /// The EphIDs of every window, in order, on the kernels or not.
    fn derived(windows: &[(WindowSeed, WindowMinutes)], fast: bool) -> Vec<(usize, Vec<EphId>)> {
        let mut got = Vec::new();
        let mut ahead = 0;
        for_each_window_on(
            windows.iter().map(|(s, m)| (s, *m)),
            |_| ahead += 1,
            |i, e| got.push((i, e.to_vec())),
            fast,
        );
        assert_eq!(ahead, got.len());
        got
    }

    #[test]
    fn vector_file_through_the_batch() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../../spec-vectors/generated-dp3t-hybrid.json"
        ))
        .unwrap();
        let cases = v["cases"].as_array().unwrap();
        let windows: Vec<(WindowSeed, WindowMinutes)> = cases
            .iter()
            .map(|c| {
                let seed = hex::decode(c["seed"].as_str().unwrap()).unwrap();
                let minutes = c["window_minutes"].as_u64().unwrap() as u32;
                (
                    WindowSeed::from_slice(&seed).unwrap(),
                    WindowMinutes::new(minutes).unwrap(),
                )
            })
            .collect();
        for fast in [true, false] {
            let got = derived(&windows, fast);
            assert_eq!(got.len(), cases.len());
            for ((i, ephids), c) in got.iter().zip(cases) {
                let want = c["ephids"].as_array().unwrap();
                assert_eq!(ephids.len(), want.len(), "case {i}");
                for e in want {
                    let j = e["index"].as_u64().unwrap() as usize;
                    assert_eq!(hex::encode(ephids[j].0), e["ephid"].as_str().unwrap());
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The kernels (four windows at once, of mixed lengths) give what the portable
        /// code and the one-window API give.
        #[test]
        fn batch_fast_equals_portable(
            windows in proptest::collection::vec(
                (proptest::prelude::any::<[u8; 16]>(), 1u32..=96), 0..11),
        ) {
            let windows: Vec<(WindowSeed, WindowMinutes)> = windows
                .into_iter()
                .map(|(s, q)| (WindowSeed::from_bytes(s), WindowMinutes::new(15 * q).unwrap()))
                .collect();
            let fast = derived(&windows, true);
            proptest::prop_assert_eq!(&fast, &derived(&windows, false));
            let want: Vec<(usize, Vec<EphId>)> = windows
                .iter()
                .enumerate()
                .map(|(i, (s, m))| (i, s.ephids(*m)))
                .collect();
            proptest::prop_assert_eq!(&fast, &want);
        }
    }
}
