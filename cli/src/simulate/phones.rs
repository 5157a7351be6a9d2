//! The engine phones: real `dp3t-core` engines fed by the model's contacts, uploading
//! through the in-process [`Server`], downloading and ingesting every released batch.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use dp3t_core::engine::{Engine, EngineConfig, Scheme};
use dp3t_core::signing::SigningKey;
use dp3t_core::time::{Day, UnixTime};
use dp3t_core::upload::next_fake_upload_time;

use super::model::{mix, ModelConfig, ModelOutput, Rng, DAY};
use super::server::{synthetic_entries, Released, Server, ServerConfig};

/// What one engine phone did.
#[derive(Debug, Clone, Default)]
pub struct PhoneResult {
    /// Wall time spent in `Engine::ingest` (on its own thread).
    pub ingest_time: Duration,
    /// Batches ingested.
    pub ingests: u64,
    /// Batches the engine refused (must stay 0).
    pub ingest_errors: u64,
    /// First time `exposure_days` was not empty after an ingest.
    pub notified_at: Option<u64>,
    /// Upload body bytes sent (real and fake).
    pub upload_bytes: u64,
    /// Uploads sent (real, fake).
    pub uploads: (u64, u64),
    /// Sightings stored at the end.
    pub sightings: usize,
    /// Bytes this phone downloaded: every batch's HTTP head and body, as received.
    pub downloaded_bytes: u64,
}

/// One released batch, as every phone downloaded it.
#[derive(Debug, Clone)]
pub struct BatchRecord {
    /// Release time.
    pub release: u64,
    /// Body bytes.
    pub body: usize,
    /// `Signature` header value bytes.
    pub signature: usize,
    /// Whole HTTP response head bytes (signature included).
    pub head: usize,
    /// Real entries.
    pub real: usize,
    /// Padding entries.
    pub padding: usize,
}

/// The outcome of one scheme.
#[derive(Debug, Clone)]
pub struct SchemeRun {
    /// The scheme (read by the tests).
    #[allow(dead_code)]
    pub scheme: Scheme,
    /// Per engine.
    pub phones: Vec<PhoneResult>,
    /// Every batch, in release order.
    pub batches: Vec<BatchRecord>,
    /// Real entries accepted from engines.
    pub engine_entries: u64,
    /// Real entries accepted from phones without engines.
    pub other_entries: u64,
    /// Largest sum of published bytes inside the retention window.
    pub max_retained_bytes: u64,
    /// Beacons heard and recorded.
    pub sightings_recorded: u64,
    /// Wall time of the whole scheme.
    pub wall: Duration,
}

struct Phone {
    engine: Engine,
    rng: ChaCha20Rng,
    stop_at: u64,
    next_fake: u64,
    result: PhoneResult,
}

enum Ev {
    Tick(u32),
    Hear { from: Sender, to: u32, att: i32 },
}

#[derive(Clone, Copy)]
enum Sender {
    Engine(u32),
    Foreign(u32),
}

/// How long a broadcast identifier lasts (foreign beacons change this often).
fn period(scheme: Scheme) -> u64 {
    match scheme {
        Scheme::Gaen => 600,
        _ => 900,
    }
}

/// How often a phone asks its engine for the current beacon even when nobody hears it,
/// so that it has a key for every day (GAEN, low-cost), epoch (unlinkable) or window
/// (hybrid), as a phone that broadcasts all day does.
fn tick(scheme: Scheme) -> u64 {
    match scheme {
        Scheme::Gaen | Scheme::LowCost => DAY,
        Scheme::Unlinkable => 900,
        Scheme::Hybrid => 7_200,
    }
}

/// A foreign beacon (a phone without an engine): random bytes of the scheme's length,
/// fixed per person and 10/15-minute period.
fn foreign_payload(scheme: Scheme, person: u32, t: u64, seed: u64) -> Vec<u8> {
    let slot = t / period(scheme);
    let mut g = Rng::keyed(&[seed, 40, u64::from(person), slot]);
    let len = if scheme == Scheme::Gaen { 20 } else { 16 };
    (0..len).map(|_| g.next_u64() as u8).collect()
}

/// Run every engine phone of `scheme` through the model's days.
pub fn run_scheme(
    model: &ModelConfig,
    out: &ModelOutput,
    scheme: Scheme,
    server_cfg: &ServerConfig,
    threads: usize,
) -> Result<SchemeRun, String> {
    let t0 = Instant::now();
    let s_idx = scheme as u64;
    let mut key_rng = ChaCha20Rng::seed_from_u64(mix(&[model.seed, 50, s_idx]));
    let key = SigningKey::generate(&mut key_rng);
    let config = EngineConfig::new(scheme, key.public_key());
    let mut server = Server::new(
        scheme,
        key,
        server_cfg.clone(),
        mix(&[model.seed, 51, s_idx]),
    );
    let mut phones = Vec::with_capacity(out.engines.len());
    for (i, &p) in out.engines.iter().enumerate() {
        let mut rng = ChaCha20Rng::seed_from_u64(mix(&[model.seed, 52, s_idx, i as u64]));
        let next_fake = next_fake_upload_time(UnixTime(model.start), &mut rng).0;
        phones.push(Phone {
            engine: Engine::new(config.clone()).map_err(|e| e.to_string())?,
            rng,
            stop_at: out
                .courses
                .get(&p)
                .and_then(|c| c.upload_at)
                .unwrap_or(u64::MAX),
            next_fake,
            result: PhoneResult::default(),
        });
    }
    // Uploads of the whole population, by day.
    let mut uploads: Vec<Vec<(u64, u32)>> = vec![Vec::new(); model.days as usize];
    for (&p, c) in &out.courses {
        if let Some(t) = c.upload_at {
            let d = ((t - model.start) / DAY) as usize;
            if let Some(v) = uploads.get_mut(d) {
                v.push((t, p));
            }
        }
    }
    for v in &mut uploads {
        v.sort_unstable();
    }
    let mut batches = Vec::new();
    let mut retained: std::collections::VecDeque<(u64, u64)> = Default::default();
    let (mut retained_sum, mut max_retained) = (0u64, 0u64);
    let (mut engine_entries, mut other_entries, mut heard) = (0u64, 0u64, 0u64);
    let per = tick(scheme);
    for day in 0..model.days {
        let day_start = model.start + u64::from(day) * DAY;
        let day_end = day_start + DAY;
        for ph in &mut phones {
            ph.engine.prune(UnixTime(day_start));
        }
        // Beacons and sightings of the day, in time order.
        let mut evs: Vec<(u64, u32, Ev)> = Vec::new();
        for (i, ph) in phones.iter().enumerate() {
            let mut t = day_start;
            while t < day_end && t < ph.stop_at {
                evs.push((t, i as u32, Ev::Tick(i as u32)));
                t += per;
            }
        }
        for c in &out.engine_contacts[day as usize] {
            for (s, r) in [(c.a, c.b), (c.b, c.a)] {
                let re = out.engine_of[r as usize];
                if re == u32::MAX || !out.people[s as usize].app {
                    continue;
                }
                let se = out.engine_of[s as usize];
                let from = if se == u32::MAX {
                    Sender::Foreign(s)
                } else {
                    Sender::Engine(se)
                };
                let r_stop = phones[re as usize].stop_at;
                let s_stop = if se == u32::MAX {
                    u64::MAX
                } else {
                    phones[se as usize].stop_at
                };
                for (t, att) in model.scans(c, &out.people, s, r) {
                    if t < r_stop && t < s_stop {
                        evs.push((t, re, Ev::Hear { from, to: re, att }));
                    }
                }
            }
        }
        evs.sort_by_key(|(t, r, e)| (*t, matches!(e, Ev::Hear { .. }), *r));
        for (t, _, ev) in evs {
            let now = UnixTime(t);
            match ev {
                Ev::Tick(i) => {
                    let ph = &mut phones[i as usize];
                    ph.engine
                        .current_beacon(now, &mut ph.rng)
                        .map_err(|e| e.to_string())?;
                }
                Ev::Hear { from, to, att } => {
                    let payload = match from {
                        Sender::Engine(s) => {
                            let ph = &mut phones[s as usize];
                            ph.engine
                                .current_beacon(now, &mut ph.rng)
                                .map_err(|e| e.to_string())?
                                .payload
                        }
                        Sender::Foreign(p) => foreign_payload(scheme, p, t, model.seed),
                    };
                    let interval = model.radio.scan_interval;
                    phones[to as usize]
                        .engine
                        .record_sighting(&payload, now, att, interval)
                        .map_err(|e| e.to_string())?;
                    heard += 1;
                }
            }
        }
        // Uploads of the day: engines build theirs, the others are synthetic.
        for &(t, p) in &uploads[day as usize] {
            let Some(course) = out.courses.get(&p) else {
                continue;
            };
            let e = out.engine_of[p as usize];
            if e == u32::MAX {
                let seed = mix(&[model.seed, 53, s_idx, u64::from(p)]);
                for entry in synthetic_entries(scheme, course.keys_from_day_abs(model), t, seed) {
                    server.accept(entry, t);
                    other_entries += 1;
                }
            } else {
                let ph = &mut phones[e as usize];
                let onset = Day(course.keys_from_day_abs(model));
                let upload = ph
                    .engine
                    .build_upload(onset, UnixTime(t), &mut ph.rng)
                    .map_err(|e| e.to_string())?;
                ph.result.upload_bytes += upload.json.len() as u64;
                ph.result.uploads.0 += 1;
                engine_entries += server.accept_upload(&upload, t)? as u64;
            }
        }
        // Fake uploads (PROTOCOL.md §7.7), on each phone's own schedule.
        for ph in &mut phones {
            while ph.next_fake < day_end {
                if ph.next_fake < ph.stop_at {
                    let now = UnixTime(ph.next_fake);
                    let fake = ph
                        .engine
                        .build_fake_upload(now, &mut ph.rng)
                        .map_err(|e| e.to_string())?;
                    ph.result.upload_bytes += fake.json.len() as u64;
                    ph.result.uploads.1 += 1;
                }
                ph.next_fake = next_fake_upload_time(UnixTime(ph.next_fake), &mut ph.rng).0;
            }
        }
        // Releases of the day; every phone downloads and ingests each batch.
        let mut end = day_start + server_cfg.bucket_seconds;
        while end <= day_end {
            let rel = server.release(end)?;
            record(&mut batches, &rel, end);
            let bytes = rel.wire_bytes() as u64;
            retained.push_back((end, bytes));
            retained_sum += bytes;
            while retained
                .front()
                .is_some_and(|(r, _)| *r + server_cfg.retention_days * DAY <= end)
            {
                if let Some((_, b)) = retained.pop_front() {
                    retained_sum -= b;
                }
            }
            max_retained = max_retained.max(retained_sum);
            ingest_all(&mut phones, &rel, end, model.seed, threads);
            end += server_cfg.bucket_seconds;
        }
    }
    let phones = phones
        .into_iter()
        .map(|p| {
            let mut r = p.result;
            r.sightings = p.engine.sightings().len();
            r
        })
        .collect();
    Ok(SchemeRun {
        scheme,
        phones,
        batches,
        engine_entries,
        other_entries,
        max_retained_bytes: max_retained,
        sightings_recorded: heard,
        wall: t0.elapsed(),
    })
}

fn record(batches: &mut Vec<BatchRecord>, rel: &Released, end: u64) {
    batches.push(BatchRecord {
        release: end,
        body: rel.published.body.len(),
        signature: rel.published.signature.len(),
        head: rel.http_head_bytes,
        real: rel.real,
        padding: rel.padding,
    });
}

/// Every phone downloads the batch a few minutes after its release (PROTOCOL.md §14: up
/// to 20 minutes of random delay) and ingests it; the engine's own matching and scoring
/// decide whether it is now exposed. Phones are split over `threads` OS threads; each
/// ingest is timed on its own thread.
fn ingest_all(phones: &mut [Phone], rel: &Released, end: u64, seed: u64, threads: usize) {
    let batch = rel.published.as_batch();
    let (head, body_len) = (rel.http_head_bytes as u64, rel.published.body.len() as u64);
    let chunk = phones.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for (c, part) in phones.chunks_mut(chunk).enumerate() {
            let batch = &batch;
            s.spawn(move || {
                for (i, ph) in part.iter_mut().enumerate() {
                    let idx = (c * chunk + i) as u64;
                    let delay = Rng::keyed(&[seed, 60, idx, end]).below(1200);
                    let now = UnixTime(end + delay);
                    let t = Instant::now();
                    let res = ph.engine.ingest(batch, now);
                    ph.result.ingest_time += t.elapsed();
                    ph.result.ingests += 1;
                    ph.result.downloaded_bytes += head + body_len;
                    if res.is_err() {
                        ph.result.ingest_errors += 1;
                    }
                    if ph.result.notified_at.is_none() && !ph.engine.exposure_days(now).is_empty() {
                        ph.result.notified_at = Some(now.0);
                    }
                }
            });
        }
    });
}

impl super::model::Course {
    /// The first day (absolute day number) whose keys are uploaded.
    pub fn keys_from_day_abs(&self, model: &ModelConfig) -> u32 {
        (model.start / DAY) as u32 + self.keys_from_day
    }
}
