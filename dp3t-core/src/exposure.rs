//! Exposure scoring (PROTOCOL.md §6): seconds in attenuation buckets → weighted minutes →
//! exposure day or not.
//!
//! Everything here is a pure function of its inputs. The engine feeds it the per-day bucket
//! seconds of matched sightings; apps that use the phone OS's Exposure Notification API feed
//! it the OS's Exposure Windows through [`exposure_days_from_windows`]. Both paths share
//! [`AttenuationSeconds`] and [`ScoringConfig::weighted_minutes`], so they can't drift apart.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::{Day, UnixTime};

/// The thresholds and weights of §6.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoringConfig {
    /// Bucket 0 holds attenuations strictly below this (dB). Default 55.
    pub attenuation_low: i32,
    /// Bucket 1 holds attenuations from `attenuation_low` to strictly below this. Default 63.
    pub attenuation_medium: i32,
    /// Weight of bucket 0 minutes. Default 1.0.
    pub factor_low: f64,
    /// Weight of bucket 1 minutes. Default 0.5.
    pub factor_medium: f64,
    /// A day is an exposure day when its weighted minutes reach this. Default 15.
    pub min_minutes: f64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            attenuation_low: 55,
            attenuation_medium: 63,
            factor_low: 1.0,
            factor_medium: 0.5,
            min_minutes: 15.0,
        }
    }
}

/// Days back (from today) whose contacts still count.
pub const CONSIDERED_DAYS: u32 = 10;
/// Days exposure days are kept.
pub const EXPOSURE_RETENTION_DAYS: u32 = 14;

impl ScoringConfig {
    /// Check the config: thresholds ordered, factors and minimum finite and not negative.
    pub fn validate(&self) -> Result<()> {
        if self.attenuation_low > self.attenuation_medium {
            return Err(Error::out_of_range(
                "scoring config",
                "attenuation_low must not exceed attenuation_medium",
            ));
        }
        for (name, v) in [
            ("factor_low", self.factor_low),
            ("factor_medium", self.factor_medium),
            ("min_minutes", self.min_minutes),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::out_of_range(
                    "scoring config",
                    format!("{name} = {v} must be finite and ≥ 0"),
                ));
            }
        }
        Ok(())
    }
    /// Which bucket (0, 1 or 2) an attenuation falls in; the bounds are strict `<`.
    pub fn bucket(&self, attenuation_db: i32) -> usize {
        if attenuation_db < self.attenuation_low {
            0
        } else if attenuation_db < self.attenuation_medium {
            1
        } else {
            2
        }
    }
    /// `ceil(s0 / 60) * factor_low + ceil(s1 / 60) * factor_medium`.
    pub fn weighted_minutes(&self, s: &AttenuationSeconds) -> f64 {
        let m = |secs: u64| secs.div_ceil(60) as f64;
        m(s.seconds[0]) * self.factor_low + m(s.seconds[1]) * self.factor_medium
    }
    /// Score a set of bucket seconds.
    pub fn score(&self, s: &AttenuationSeconds) -> Score {
        let weighted_minutes = self.weighted_minutes(s);
        Score {
            weighted_minutes,
            exposed: weighted_minutes >= self.min_minutes,
        }
    }
    /// Score a list of scan instances (one contact's day).
    pub fn score_scans(&self, scans: &[ScanInstance]) -> Score {
        let mut s = AttenuationSeconds::default();
        for scan in scans {
            s.add(self, scan.attenuation_db, scan.seconds);
        }
        self.score(&s)
    }
}

/// One scan: how strongly and for how long a beacon was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanInstance {
    /// Attenuation (TX power − RSSI) in dB.
    pub attenuation_db: i32,
    /// Seconds of scanning this instance accounts for.
    pub seconds: u32,
}

/// Seconds of contact in the three attenuation buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AttenuationSeconds {
    /// `[bucket 0 (near), bucket 1 (medium), bucket 2 (far)]`, saturating.
    pub seconds: [u64; 3],
}

impl AttenuationSeconds {
    /// Add `seconds` at `attenuation_db`.
    pub fn add(&mut self, cfg: &ScoringConfig, attenuation_db: i32, seconds: u32) {
        let b = cfg.bucket(attenuation_db);
        self.seconds[b] = self.seconds[b].saturating_add(u64::from(seconds));
    }
    /// Add another set bucket by bucket.
    pub fn merge(&mut self, other: &AttenuationSeconds) {
        for (a, b) in self.seconds.iter_mut().zip(other.seconds) {
            *a = a.saturating_add(b);
        }
    }
}

/// The result of scoring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Weighted minutes.
    pub weighted_minutes: f64,
    /// Whether it reaches the minimum.
    pub exposed: bool,
}

/// An exposure day: the UTC day and its weighted minutes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExposureDay {
    /// The UTC day of the contact.
    pub day: Day,
    /// Weighted minutes of that day (≥ the minimum).
    pub weighted_minutes: f64,
}

/// A scan instance as the OS Exposure Notification API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsScanInstance {
    /// Typical attenuation in dB.
    pub typical_attenuation_db: i32,
    /// Seconds since the previous scan.
    pub seconds_since_last_scan: u32,
}

/// An Exposure Window as the OS reports it: a UTC day and its scan instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureWindow {
    /// The day of the window (the OS gives midnight UTC in ms; use [`Day::from_midnight_millis`]).
    pub day: Day,
    /// The scans.
    pub scan_instances: Vec<OsScanInstance>,
}

/// Whether a contact on `day` still counts at `now`: within the last [`CONSIDERED_DAYS`]
/// days (today included) and not in the future.
pub fn day_is_considered(day: Day, now: UnixTime) -> bool {
    let today = now.day();
    day <= today && today.0 - day.0 < CONSIDERED_DAYS
}

/// The §6 rule over OS Exposure Windows: per UTC day, sum each scan instance's
/// `seconds_since_last_scan` in its attenuation bucket, then score the day. Only days of
/// the last 10 count. Returns the exposure days in ascending order.
pub fn exposure_days_from_windows(
    windows: &[ExposureWindow],
    cfg: &ScoringConfig,
    now: UnixTime,
) -> Vec<ExposureDay> {
    let mut per_day: std::collections::BTreeMap<Day, AttenuationSeconds> = Default::default();
    for w in windows.iter().filter(|w| day_is_considered(w.day, now)) {
        let entry = per_day.entry(w.day).or_default();
        for s in &w.scan_instances {
            entry.add(cfg, s.typical_attenuation_db, s.seconds_since_last_scan);
        }
    }
    per_day
        .into_iter()
        .filter_map(|(day, s)| {
            let score = cfg.score(&s);
            score.exposed.then_some(ExposureDay {
                day,
                weighted_minutes: score.weighted_minutes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(a: i32, s: u32) -> ScanInstance {
        ScanInstance {
            attenuation_db: a,
            seconds: s,
        }
    }

    #[test]
    fn bucket_bounds_are_strict() {
        let c = ScoringConfig::default();
        assert_eq!(c.bucket(54), 0);
        assert_eq!(c.bucket(55), 1);
        assert_eq!(c.bucket(62), 1);
        assert_eq!(c.bucket(63), 2);
    }

    #[test]
    fn threshold_edges() {
        let c = ScoringConfig::default();
        // 14 min 1 s near rounds up to 15 minutes: exposed.
        let s = c.score_scans(&[scan(50, 14 * 60 + 1)]);
        assert_eq!(s.weighted_minutes, 15.0);
        assert!(s.exposed);
        // exactly 14 minutes near: not exposed.
        assert!(!c.score_scans(&[scan(50, 14 * 60)]).exposed);
        // 29 minutes medium = 14.5: not exposed; 30 minutes = 15: exposed.
        assert!(!c.score_scans(&[scan(60, 29 * 60)]).exposed);
        assert!(c.score_scans(&[scan(60, 30 * 60)]).exposed);
        // far contact never counts.
        assert_eq!(c.score_scans(&[scan(80, 3600)]).weighted_minutes, 0.0);
    }

    #[test]
    fn windows_only_count_the_last_ten_days() {
        let c = ScoringConfig::default();
        let now = UnixTime(Day(100).start().0 + 3600);
        let w = |d: u32| ExposureWindow {
            day: Day(d),
            scan_instances: vec![
                OsScanInstance {
                    typical_attenuation_db: 40,
                    seconds_since_last_scan: 600,
                },
                OsScanInstance {
                    typical_attenuation_db: 40,
                    seconds_since_last_scan: 600,
                },
            ],
        };
        let days = exposure_days_from_windows(&[w(100), w(91), w(90), w(101)], &c, now);
        assert_eq!(
            days.iter().map(|d| d.day).collect::<Vec<_>>(),
            vec![Day(91), Day(100)]
        );
        assert_eq!(days[0].weighted_minutes, 20.0);
    }

    #[test]
    fn config_validation() {
        assert!(ScoringConfig::default().validate().is_ok());
        let c = ScoringConfig {
            factor_low: f64::NAN,
            ..ScoringConfig::default()
        };
        assert!(c.validate().is_err());
        let c = ScoringConfig {
            attenuation_low: 70,
            ..ScoringConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
