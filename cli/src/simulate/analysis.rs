//! Ground truth and model-level scoring: who had a close contact (at least 15 minutes
//! within 2 m) with someone who uploaded, and what the §6 scoring of the scans that a
//! phone would have matched says for each attenuation threshold. All of it comes from the
//! model (no crypto); the engines' own results are compared with it in the report.

use std::collections::HashMap;

use dp3t_core::exposure::{ScanInstance, ScoringConfig};

use super::model::{Contact, ModelConfig, ModelOutput, DAY, INFECTIOUS_FROM};

/// Minutes within 2 m that make a close contact.
pub const CLOSE_MINUTES: u32 = 15;

/// Per (receiver, day): minutes within 2 m of uploaders, and the matchable scans.
#[derive(Debug, Default, Clone)]
pub struct Exposure {
    /// Minutes within 2 m.
    pub close_minutes: u32,
    /// Attenuations of the scans a phone would match (each one scan interval long).
    pub scans: Vec<i32>,
    /// Earliest positive test among the uploaders behind them.
    pub first_positive: u64,
}

/// Ground truth for a set of receivers.
#[derive(Debug, Default)]
pub struct Truth {
    /// By (receiver, day).
    pub by_day: HashMap<(u32, u32), Exposure>,
}

impl Truth {
    /// Build from `contacts`, counting only uploaders for which `uploader` holds; `receiver` maps a person to the id to count them under
    /// (`None`: not counted).
    pub fn build<'a>(
        m: &ModelConfig,
        out: &ModelOutput,
        contacts: impl Iterator<Item = &'a Contact>,
        uploader: impl Fn(u32) -> bool,
        receiver: impl Fn(u32) -> Option<u32>,
    ) -> Self {
        let mut by_day: HashMap<(u32, u32), Exposure> = HashMap::new();
        for c in contacts {
            let day = ((c.start - m.start) / DAY) as u32;
            for (u, r) in [(c.a, c.b), (c.b, c.a)] {
                if !uploader(u) {
                    continue;
                }
                let Some(course) = out.courses.get(&u) else {
                    continue;
                };
                let Some(upload) = course.upload_at else {
                    continue;
                };
                if c.start >= upload
                    || day < course.infected_day + INFECTIOUS_FROM
                    || !out.people[r as usize].app
                {
                    continue;
                }
                let Some(id) = receiver(r) else {
                    continue;
                };
                let e = by_day.entry((id, day)).or_insert_with(|| Exposure {
                    first_positive: u64::MAX,
                    ..Default::default()
                });
                e.close_minutes += m.close_minutes(c);
                if day >= course.keys_from_day {
                    // A phone that uploaded stops tracing.
                    let r_stop = out
                        .courses
                        .get(&r)
                        .and_then(|k| k.upload_at)
                        .unwrap_or(u64::MAX);
                    e.scans.extend(
                        m.scans(c, &out.people, u, r)
                            .into_iter()
                            .filter(|(t, _)| *t < upload && *t < r_stop)
                            .map(|(_, a)| a),
                    );
                    if let Some(p) = course.positive_at {
                        e.first_positive = e.first_positive.min(p);
                    }
                }
            }
        }
        Truth { by_day }
    }

    /// Receivers with a close contact on some day.
    pub fn close(&self) -> HashMap<u32, u64> {
        let mut out: HashMap<u32, u64> = HashMap::new();
        for ((id, _), e) in &self.by_day {
            if e.close_minutes >= CLOSE_MINUTES {
                let v = out.entry(*id).or_insert(u64::MAX);
                *v = (*v).min(e.first_positive);
            }
        }
        out
    }

    /// Receivers the §6 scoring with `cfg` notifies, from the matchable scans.
    pub fn notified(&self, cfg: &ScoringConfig, interval: u32) -> HashMap<u32, u64> {
        let mut out: HashMap<u32, u64> = HashMap::new();
        for ((id, _), e) in &self.by_day {
            let scans: Vec<ScanInstance> = e
                .scans
                .iter()
                .map(|&a| ScanInstance {
                    attenuation_db: a,
                    seconds: interval,
                })
                .collect();
            if cfg.score_scans(&scans).exposed {
                let v = out.entry(*id).or_insert(u64::MAX);
                *v = (*v).min(e.first_positive);
            }
        }
        out
    }
}

/// Precision and recall of `notified` against `truth`.
pub fn precision_recall<A, B>(
    notified: &HashMap<u32, A>,
    truth: &HashMap<u32, B>,
) -> (u64, f64, f64) {
    let tp = notified.keys().filter(|k| truth.contains_key(k)).count() as u64;
    let p = if notified.is_empty() {
        f64::NAN
    } else {
        tp as f64 / notified.len() as f64
    };
    let r = if truth.is_empty() {
        f64::NAN
    } else {
        tp as f64 / truth.len() as f64
    };
    (tp, p, r)
}

/// The attenuation thresholds of the sweep: `attenuation_low` from 43 to 73 dB in steps of
/// 3, `attenuation_medium` 8 dB above, the other settings at their defaults.
pub fn sweep_configs() -> Vec<ScoringConfig> {
    (0..11)
        .map(|i| {
            let low = 43 + 3 * i;
            ScoringConfig {
                attenuation_low: low,
                attenuation_medium: low + 8,
                ..ScoringConfig::default()
            }
        })
        .collect()
}
