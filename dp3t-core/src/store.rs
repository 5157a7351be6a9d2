//! What a phone heard: aggregated sightings, with retention.
//!
//! A sighting is aggregated per **identifier and UTC day**: the first and last second it
//! was heard that day and the seconds in each of the three attenuation buckets of §6.
//! The identifier is the 16-byte RPI (GAEN) or EphID (low-cost, hybrid); for the unlinkable
//! design it is the first 16 bytes of `H = SHA-256(EphID || BE32(epoch))`, never the EphID
//! itself (the DPCF lookup reads only those 16 bytes, §4.1).
//!
//! One [`Sighting`] is 36 bytes (16 id + 2 × 4 time + 3 × 4 seconds) in memory and in the
//! saved state; the aggregation index adds about 40 bytes per entry in memory while the
//! engine runs. Measured figures are in `BENCHMARKS.md`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::exposure::{AttenuationSeconds, ScoringConfig};
use crate::time::{Day, UnixTime, DAY_SECONDS};

/// One identifier heard on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// RPI, EphID, or the 16-byte prefix of the hashed observation (unlinkable).
    pub id: [u8; 16],
    /// First second heard (unix, u32 until 2106).
    pub first_seen: u32,
    /// Last second heard, including the sighting's duration.
    pub last_seen: u32,
    /// Seconds in attenuation buckets 0, 1, 2.
    pub seconds: [u32; 3],
}

impl Sighting {
    /// The UTC day of the sighting.
    pub fn day(&self) -> Day {
        Day(self.first_seen / DAY_SECONDS as u32)
    }
    /// The bucket seconds as a scoring input.
    pub fn attenuation_seconds(&self) -> AttenuationSeconds {
        AttenuationSeconds {
            seconds: self.seconds.map(u64::from),
        }
    }
    /// Whether every second of the sighting lies inside `[from, until)`.
    pub fn within(&self, from: u64, until: u64) -> bool {
        u64::from(self.first_seen) >= from && u64::from(self.last_seen) < until
    }
}

/// The sightings of a phone, aggregated per identifier and day.
#[derive(Debug, Clone, Default)]
pub struct SightingStore {
    sightings: Vec<Sighting>,
    index: HashMap<([u8; 16], u32), u32>,
}

impl SightingStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
    /// Rebuild from saved sightings (merging any duplicates of the same id and day).
    pub fn from_sightings(list: Vec<Sighting>) -> Self {
        let mut s = SightingStore::new();
        for x in list {
            s.merge(x);
        }
        s
    }
    /// Add `seconds` of hearing `id` at `at` with `attenuation_db`.
    pub fn record(
        &mut self,
        id: [u8; 16],
        at: UnixTime,
        attenuation_db: i32,
        seconds: u32,
        cfg: &ScoringConfig,
    ) {
        let first = u32::try_from(at.0).unwrap_or(u32::MAX);
        let mut secs = [0u32; 3];
        secs[cfg.bucket(attenuation_db)] = seconds;
        self.merge(Sighting {
            id,
            first_seen: first,
            last_seen: first.saturating_add(seconds.saturating_sub(1)),
            seconds: secs,
        });
    }
    fn merge(&mut self, x: Sighting) {
        let key = (x.id, x.day().0);
        match self.index.get(&key) {
            Some(&i) => {
                let s = &mut self.sightings[i as usize];
                s.first_seen = s.first_seen.min(x.first_seen);
                s.last_seen = s.last_seen.max(x.last_seen);
                for (a, b) in s.seconds.iter_mut().zip(x.seconds) {
                    *a = a.saturating_add(b);
                }
            }
            None => {
                self.index.insert(key, self.sightings.len() as u32);
                self.sightings.push(x);
            }
        }
    }
    /// All sightings.
    pub fn sightings(&self) -> &[Sighting] {
        &self.sightings
    }
    /// Number of (identifier, day) aggregates.
    pub fn len(&self) -> usize {
        self.sightings.len()
    }
    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.sightings.is_empty()
    }
    /// Drop sightings of days before `oldest_kept`.
    pub fn prune_before(&mut self, oldest_kept: Day) {
        let before = self.sightings.len();
        self.sightings.retain(|s| s.day() >= oldest_kept);
        if self.sightings.len() != before {
            self.index = self
                .sightings
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.id, s.day().0), i as u32))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_per_id_and_day() {
        let cfg = ScoringConfig::default();
        let mut s = SightingStore::new();
        let d = Day(20_000).start().0;
        s.record([1; 16], UnixTime(d + 100), 50, 60, &cfg);
        s.record([1; 16], UnixTime(d + 400), 60, 30, &cfg);
        s.record([1; 16], UnixTime(d + 86_400 + 5), 50, 10, &cfg);
        s.record([2; 16], UnixTime(d + 100), 70, 10, &cfg);
        assert_eq!(s.len(), 3);
        let a = s.sightings()[0];
        assert_eq!(a.seconds, [60, 30, 0]);
        assert_eq!(
            (a.first_seen as u64, a.last_seen as u64),
            (d + 100, d + 429)
        );
        s.prune_before(Day(20_001));
        assert_eq!(s.len(), 1);
        s.record([1; 16], UnixTime(d + 86_400 + 50), 50, 10, &cfg);
        assert_eq!(s.len(), 1, "index rebuilt after pruning");
        assert_eq!(s.sightings()[0].seconds, [20, 0, 0]);
    }
}
