//! Time units of the protocols (PROTOCOL.md §1), as newtypes with checked conversions.
//!
//! The core never reads a clock: callers pass unix seconds in, and every unit is derived
//! from them here, once. All times are UTC. Conversions that could overflow the wire width
//! (ENIN and epochs are 32-bit) return [`Error::OutOfRange`] instead of wrapping.

use crate::error::{Error, Result};

/// Seconds per GAEN interval (10 minutes).
pub const ENIN_SECONDS: u64 = 600;
/// GAEN intervals per day.
pub const INTERVALS_PER_DAY: u32 = 144;
/// Seconds per DP-3T epoch (`L = 15` minutes).
pub const EPOCH_SECONDS: u64 = 900;
/// DP-3T epochs per day.
pub const EPOCHS_PER_DAY: u32 = 96;
/// Seconds per day.
pub const DAY_SECONDS: u64 = 86_400;
/// Default release bucket length: 2 hours.
pub const RELEASE_BUCKET_SECONDS: u64 = 7_200;

/// Seconds since 1970-01-01T00:00:00Z.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// From milliseconds (the unit of the DP-3T HTTP APIs), rounding down.
    pub fn from_millis(ms: u64) -> Self {
        UnixTime(ms / 1000)
    }
    /// As milliseconds; errors only past the year 584 million.
    pub fn as_millis(self) -> Result<u64> {
        self.0
            .checked_mul(1000)
            .ok_or_else(|| Error::out_of_range("unix time", "overflows milliseconds"))
    }
    /// The UTC day this instant falls in.
    pub fn day(self) -> Day {
        Day((self.0 / DAY_SECONDS) as u32)
    }
    /// The GAEN interval number, or an error past the year 4553 (u32 overflow).
    pub fn enin(self) -> Result<Enin> {
        u32::try_from(self.0 / ENIN_SECONDS)
            .map(Enin)
            .map_err(|_| Error::out_of_range("ENIN", format!("unix {} past u32", self.0)))
    }
    /// The absolute 15-minute DP-3T epoch, or an error on u32 overflow.
    pub fn epoch(self) -> Result<Epoch> {
        u32::try_from(self.0 / EPOCH_SECONDS)
            .map(Epoch)
            .map_err(|_| Error::out_of_range("epoch", format!("unix {} past u32", self.0)))
    }
    /// The epoch within its UTC day, `0..96`.
    pub fn epoch_of_day(self) -> u8 {
        ((self.0 % DAY_SECONDS) / EPOCH_SECONDS) as u8
    }
    /// Saturating addition of seconds.
    pub fn plus(self, seconds: u64) -> Self {
        UnixTime(self.0.saturating_add(seconds))
    }
    /// Saturating subtraction of seconds.
    pub fn minus(self, seconds: u64) -> Self {
        UnixTime(self.0.saturating_sub(seconds))
    }
}

/// GAEN "EN interval number": `floor(unix / 600)`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Enin(pub u32);

impl Enin {
    /// First second of the interval.
    pub fn start(self) -> UnixTime {
        UnixTime(u64::from(self.0) * ENIN_SECONDS)
    }
    /// The day-aligned interval at or before this one (`144 * floor(ENIN / 144)`), the
    /// rolling start of the TEK that covers it.
    pub fn day_start(self) -> Enin {
        Enin(self.0 - self.0 % INTERVALS_PER_DAY)
    }
    /// The UTC day of this interval.
    pub fn day(self) -> Day {
        Day(self.0 / INTERVALS_PER_DAY)
    }
    /// `self + n`, or an error on overflow.
    pub fn checked_add(self, n: u32) -> Result<Enin> {
        self.0
            .checked_add(n)
            .map(Enin)
            .ok_or_else(|| Error::out_of_range("ENIN", "overflow"))
    }
}

/// A TEK's rolling period in intervals, `1..=144`. The core checks every rolling period it
/// reads or writes through [`RollingPeriod::new`], so the range is written down once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollingPeriod(u8);

impl RollingPeriod {
    /// The full day, 144 intervals.
    pub const FULL_DAY: RollingPeriod = RollingPeriod(144);
    /// Checked constructor: `1..=144`.
    pub fn new(intervals: u32) -> Result<Self> {
        if (1..=INTERVALS_PER_DAY).contains(&intervals) {
            Ok(RollingPeriod(intervals as u8))
        } else {
            Err(Error::out_of_range(
                "rolling period",
                format!("{intervals} not in 1..=144"),
            ))
        }
    }
    /// Number of intervals.
    pub const fn get(self) -> u32 {
        self.0 as u32
    }
}

impl From<RollingPeriod> for u32 {
    fn from(p: RollingPeriod) -> u32 {
        p.get()
    }
}

impl From<RollingPeriod> for i32 {
    /// Lossless: at most 144. The export protobuf spells the period as an `int32`.
    fn from(p: RollingPeriod) -> i32 {
        i32::from(p.0)
    }
}

impl Default for RollingPeriod {
    fn default() -> Self {
        Self::FULL_DAY
    }
}

/// Absolute DP-3T epoch: `floor(unix / 900)`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u32);

impl Epoch {
    /// First second of the epoch.
    pub fn start(self) -> UnixTime {
        UnixTime(u64::from(self.0) * EPOCH_SECONDS)
    }
    /// The UTC day of this epoch.
    pub fn day(self) -> Day {
        Day(self.0 / EPOCHS_PER_DAY)
    }
    /// The big-endian bytes hashed into unlinkable observations (§4).
    pub fn to_be_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }
}

/// UTC day number: `floor(unix / 86400)`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Day(pub u32);

impl Day {
    /// Midnight UTC that starts the day.
    pub fn start(self) -> UnixTime {
        UnixTime(u64::from(self.0) * DAY_SECONDS)
    }
    /// Midnight as milliseconds (the `keyDate` of the DP-3T v1 API).
    pub fn start_millis(self) -> u64 {
        u64::from(self.0) * DAY_SECONDS * 1000
    }
    /// Parse a `keyDate` in milliseconds; it must be exactly a UTC midnight.
    pub fn from_midnight_millis(ms: u64) -> Result<Day> {
        if !ms.is_multiple_of(DAY_SECONDS * 1000) {
            return Err(Error::out_of_range(
                "keyDate",
                format!("{ms} is not a UTC midnight in ms"),
            ));
        }
        u32::try_from(ms / (DAY_SECONDS * 1000))
            .map(Day)
            .map_err(|_| Error::out_of_range("keyDate", "too large"))
    }
    /// The first ENIN of the day (a TEK's rolling start number).
    pub fn first_enin(self) -> Result<Enin> {
        self.0
            .checked_mul(INTERVALS_PER_DAY)
            .map(Enin)
            .ok_or_else(|| Error::out_of_range("day", "ENIN overflow"))
    }
    /// The first absolute epoch of the day.
    pub fn first_epoch(self) -> Result<Epoch> {
        self.0
            .checked_mul(EPOCHS_PER_DAY)
            .map(Epoch)
            .ok_or_else(|| Error::out_of_range("day", "epoch overflow"))
    }
    /// Days from `self` to `later` (0 when `later` is not after `self`).
    pub fn days_until(self, later: Day) -> u32 {
        later.0.saturating_sub(self.0)
    }
    /// The next day.
    pub fn next(self) -> Day {
        Day(self.0.saturating_add(1))
    }
    /// Parse a strict `YYYY-MM-DD` calendar date (1970-01-01 or later; the `onset` of
    /// upload tokens and covidcodes) into its UTC day. Anything else (other separators, a
    /// time part, 2021-02-30, …) is `None`. No date library: the proleptic Gregorian
    /// conversion of Howard Hinnant's `days_from_civil` / `civil_from_days`.
    pub fn parse_iso(s: &str) -> Option<Day> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = s.get(r)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        Day::from_civil(i64::from(y), m, d)
    }
    /// The UTC day of the proleptic Gregorian date `y-m-d`; `None` for an impossible date
    /// (2021-02-29) or a year outside 1970..=9999 (the four-digit years of ISO and HTTP
    /// dates, so that no arithmetic can overflow).
    pub fn from_civil(y: i64, m: u32, d: u32) -> Option<Day> {
        let y32 = u32::try_from(y)
            .ok()
            .filter(|y| (1970..=9999).contains(y))?;
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y32, m) {
            return None;
        }
        u32::try_from(days_from_civil(y, m, d)).ok().map(Day)
    }
    /// The day as a `YYYY-MM-DD` calendar date (UTC), as [`Day::parse_iso`] reads it
    /// back for every day up to 9999-12-31 (later days get a longer year, which it refuses).
    pub fn iso(self) -> String {
        let (y, m, d) = civil_from_days(i64::from(self.0));
        format!("{y:04}-{m:02}-{d:02}")
    }
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A release bucket of `len` seconds aligned to unix 0, named by its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseBucket {
    start: u64,
    len: u64,
}

impl ReleaseBucket {
    /// The bucket of `len` seconds (must be ≥ 1) that contains `t`.
    pub fn containing(t: UnixTime, len: u64) -> Result<Self> {
        if len == 0 {
            return Err(Error::out_of_range("release bucket", "length 0"));
        }
        Ok(ReleaseBucket {
            start: t.0 - t.0 % len,
            len,
        })
    }
    /// The bucket that starts at `start`, which must be on a boundary.
    pub fn starting_at(start: UnixTime, len: u64) -> Result<Self> {
        let b = Self::containing(start, len)?;
        if b.start != start.0 {
            return Err(Error::out_of_range(
                "release bucket",
                format!("{} is not a multiple of {len} s", start.0),
            ));
        }
        Ok(b)
    }
    /// The bucket that ends at `end` (the DP-3T `batchReleaseTime` convention).
    pub fn ending_at(end: UnixTime, len: u64) -> Result<Self> {
        let b = Self::starting_at(end, len)?;
        if b.start < len {
            return Err(Error::out_of_range("release bucket", "before unix 0"));
        }
        Ok(ReleaseBucket {
            start: b.start - len,
            len,
        })
    }
    /// First second of the bucket.
    pub fn start(self) -> UnixTime {
        UnixTime(self.start)
    }
    /// First second after the bucket: when its contents are released.
    pub fn end(self) -> UnixTime {
        UnixTime(self.start.saturating_add(self.len))
    }
    /// Bucket length in seconds.
    pub fn len_seconds(self) -> u64 {
        self.len
    }
    /// The following bucket.
    pub fn next(self) -> Self {
        ReleaseBucket {
            start: self.start.saturating_add(self.len),
            len: self.len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_known() {
        assert_eq!(Day::parse_iso("1970-01-01"), Some(Day(0)));
        // 2020-04-02, the day of the official GAEN vectors (unix 1585785600).
        assert_eq!(
            Day::parse_iso("2020-04-02"),
            Some(Day(1_585_785_600 / 86_400))
        );
        assert_eq!(Day::parse_iso("2020-02-29"), Some(Day(18_321)));
        assert_eq!(Day(18_321).iso(), "2020-02-29");
        assert_eq!(
            Day::parse_iso("2024-02-29").map(Day::iso).as_deref(),
            Some("2024-02-29")
        );
    }

    #[test]
    fn iso_dates_past_year_9999_are_written_but_not_read() {
        let last = Day(2_932_896);
        assert_eq!(Day::parse_iso("9999-12-31"), Some(last));
        assert_eq!(last.iso(), "9999-12-31");
        assert_eq!(last.next().iso(), "10000-01-01");
        assert_eq!(Day::parse_iso(&last.next().iso()), None);
        assert!(Day(u32::MAX).iso().starts_with("11761191-"));
    }

    #[test]
    fn iso_dates_round_trip_over_many_days() {
        for d in (0..40_000).step_by(7) {
            assert_eq!(Day::parse_iso(&Day(d).iso()), Some(Day(d)));
        }
    }

    #[test]
    fn malformed_iso_dates_are_rejected() {
        for s in [
            "",
            "2020-4-02",
            "2020/04/02",
            "2020-13-01",
            "2020-00-10",
            "2021-02-29",
            "2020-04-31",
            "1969-12-31",
            "2020-04-02T00:00",
            "+020-04-02",
            "2020-04-0a",
            "２020-04-02",
        ] {
            assert_eq!(Day::parse_iso(s), None, "{s}");
        }
    }

    #[test]
    fn enin_of_the_official_vector_day() {
        // 2020-04-02T00:00:00Z, the key date of the official GAEN vectors.
        let t = UnixTime(1_585_785_600);
        assert_eq!(t.enin().unwrap(), Enin(2_642_976));
        assert_eq!(t.enin().unwrap().day_start(), Enin(2_642_976));
        assert_eq!(
            UnixTime(1_585_785_600 + 86_399).enin().unwrap().day_start(),
            Enin(2_642_976)
        );
        assert_eq!(t.day().first_enin().unwrap(), Enin(2_642_976));
    }

    #[test]
    fn enin_overflow_is_an_error_not_a_wrap() {
        assert!(UnixTime(u64::from(u32::MAX) * 600 + 600).enin().is_err());
        assert!(UnixTime(u64::from(u32::MAX) * 600).enin().is_ok());
    }

    #[test]
    fn epochs_and_days() {
        let t = UnixTime(1_586_556_000); // 2020-04-10T22:00Z
        assert_eq!(t.epoch().unwrap(), Epoch(1_762_840));
        assert_eq!(t.epoch_of_day(), 88);
        assert_eq!(t.epoch().unwrap().day(), t.day());
        assert_eq!(Epoch(1).to_be_bytes(), [0, 0, 0, 1]);
    }

    #[test]
    fn rolling_period_bounds() {
        assert!(RollingPeriod::new(0).is_err());
        assert!(RollingPeriod::new(145).is_err());
        assert_eq!(RollingPeriod::new(144).unwrap(), RollingPeriod::FULL_DAY);
    }

    #[test]
    fn key_date_must_be_midnight() {
        assert_eq!(Day::from_midnight_millis(86_400_000).unwrap(), Day(1));
        assert!(Day::from_midnight_millis(86_400_001).is_err());
        assert_eq!(Day(3).start_millis(), 3 * 86_400_000);
    }

    #[test]
    fn release_buckets() {
        let b = ReleaseBucket::containing(UnixTime(7_200 * 5 + 13), 7_200).unwrap();
        assert_eq!(b.start(), UnixTime(36_000));
        assert_eq!(b.end(), UnixTime(43_200));
        assert_eq!(
            ReleaseBucket::ending_at(UnixTime(43_200), 7_200).unwrap(),
            b
        );
        assert!(ReleaseBucket::ending_at(UnixTime(43_201), 7_200).is_err());
        assert!(ReleaseBucket::containing(UnixTime(1), 0).is_err());
        assert_eq!(b.next().start(), b.end());
    }
}
