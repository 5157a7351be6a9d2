//! The engine phones: real `dp3t-core` engines fed by the model's contacts, uploading
//! through the in-process [`Server`], downloading and ingesting every released batch.

use std::sync::Mutex;
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
    /// CPU time spent in `Engine::ingest` (its thread's CPU clock).
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
    /// Where the wall time went.
    pub spans: Spans,
}

/// Wall time of a scheme's phases (timing spans, for profiling; not part of the results).
#[derive(Debug, Clone, Default)]
pub struct Spans {
    /// Turning the day's contacts into the beacons engine phones heard (sequential).
    pub contacts: Duration,
    /// Engines broadcasting and recording sightings (parallel over phones).
    pub beacons: Duration,
    /// Real uploads (sequential) and fake uploads (parallel).
    pub uploads: Duration,
    /// Building, padding and signing the batches (sequential).
    pub server: Duration,
    /// Every phone ingesting every batch (parallel over phones).
    pub ingest: Duration,
}

struct Phone {
    engine: Engine,
    rng: ChaCha20Rng,
    stop_at: u64,
    next_fake: u64,
    result: PhoneResult,
    /// Today's beacons heard by other engines: indices into the day's hears.
    sends: Vec<u32>,
    /// Today's beacons this phone heard: indices into the day's hears.
    hears: Vec<u32>,
    /// The payloads of `sends`, as `(hear index, payload)`.
    sent: Vec<(u32, Payload)>,
}

/// A beacon payload: 20 bytes (GAEN `RPI || AEM`) or 16 (an EphID), no allocation.
#[derive(Clone, Copy)]
struct Payload {
    bytes: [u8; 20],
    len: u8,
}

impl Payload {
    fn new(b: &[u8]) -> Self {
        let mut bytes = [0u8; 20];
        let len = b.len().min(20);
        bytes[..len].copy_from_slice(&b[..len]);
        Payload {
            bytes,
            len: len as u8,
        }
    }
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// One beacon heard by an engine phone.
#[derive(Clone, Copy)]
struct Hear {
    t: u64,
    from: Sender,
    to: u32,
    att: i32,
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
fn foreign_payload(scheme: Scheme, person: u32, t: u64, seed: u64) -> Payload {
    let slot = t / period(scheme);
    let mut g = Rng::keyed(&[seed, 40, u64::from(person), slot]);
    let len = if scheme == Scheme::Gaen { 20 } else { 16 };
    let mut bytes = [0u8; 20];
    for b in &mut bytes[..len] {
        *b = g.next_u64() as u8;
    }
    Payload {
        bytes,
        len: len as u8,
    }
}

/// The phones' worker threads: `threads` OS threads, each inside its own one-thread
/// rayon pool. Phones are handed out one at a time (whoever is free takes the next), and
/// the engine's own parallel matching (`dp3t-core`'s `parallel` feature) runs inline on
/// the thread that called it, so the CPU time measured around one ingest is that phone's
/// work and nobody else's. No result depends on which thread ran which phone.
struct Workers {
    pools: Vec<rayon::ThreadPool>,
}

impl Workers {
    fn new(threads: usize) -> Result<Self, String> {
        let pools = (0..threads.max(1))
            .map(|_| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(Workers { pools })
    }

    /// Run `f(index, item)` for every item, on all workers; the first error wins.
    fn each<T: Send>(
        &self,
        items: &mut [T],
        f: impl Fn(usize, &mut T) -> Result<(), String> + Sync,
    ) -> Result<(), String> {
        let queue = Mutex::new(items.iter_mut().enumerate());
        let failed: Mutex<Option<String>> = Mutex::new(None);
        std::thread::scope(|s| {
            for pool in &self.pools {
                let (queue, failed, f) = (&queue, &failed, &f);
                s.spawn(move || {
                    pool.install(|| loop {
                        let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                        let Some((i, item)) = next else { break };
                        if let Err(e) = f(i, item) {
                            if let Ok(mut g) = failed.lock() {
                                g.get_or_insert(e);
                            }
                        }
                    })
                });
            }
        });
        match failed.into_inner() {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e),
            Err(_) => Err("a phone worker panicked".into()),
        }
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): what one ingest costs the
/// core that ran it, whatever else the machine was doing.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a Linux constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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
    let workers = Workers::new(threads)?;
    let mut spans = Spans::default();
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
            sends: Vec::new(),
            hears: Vec::new(),
            sent: Vec::new(),
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
    let interval = model.radio.scan_interval;
    let mut hears: Vec<Hear> = Vec::new();
    let mut payloads: Vec<Payload> = Vec::new();
    for day in 0..model.days {
        let day_start = model.start + u64::from(day) * DAY;
        let day_end = day_start + DAY;
        let t = Instant::now();
        // The beacons engine phones heard today, in the model's contact order.
        hears.clear();
        for ph in &mut phones {
            ph.sends.clear();
            ph.hears.clear();
            ph.sent.clear();
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
                        let h = hears.len() as u32;
                        hears.push(Hear {
                            t,
                            from,
                            to: re,
                            att,
                        });
                        phones[re as usize].hears.push(h);
                        if let Sender::Engine(se) = from {
                            phones[se as usize].sends.push(h);
                        }
                    }
                }
            }
        }
        spans.contacts += t.elapsed();
        // Each phone, on its own: prune, then broadcast all day. A phone's beacons depend
        // only on its own keys and RNG, asked in time order (a tick before the beacons
        // heard in the same second, those in receiver order, as one global time-ordered
        // pass would ask them).
        let t = Instant::now();
        let hears_ref = &hears;
        workers.each(&mut phones, |i, ph| {
            ph.engine.prune(UnixTime(day_start));
            let mut asks: Vec<(u64, bool, u32, u32)> = Vec::new();
            let mut tt = day_start;
            while tt < day_end && tt < ph.stop_at {
                asks.push((tt, false, i as u32, 0));
                tt += per;
            }
            for &h in &ph.sends {
                let e = &hears_ref[h as usize];
                asks.push((e.t, true, e.to, h));
            }
            asks.sort_unstable();
            for (tt, is_hear, _, h) in asks {
                let b = ph
                    .engine
                    .current_beacon(UnixTime(tt), &mut ph.rng)
                    .map_err(|e| e.to_string())?;
                if is_hear {
                    ph.sent.push((h, Payload::new(&b.payload)));
                }
            }
            Ok(())
        })?;
        payloads.clear();
        payloads.resize(
            hears.len(),
            Payload {
                bytes: [0; 20],
                len: 0,
            },
        );
        for ph in &phones {
            for &(h, p) in &ph.sent {
                payloads[h as usize] = p;
            }
        }
        for (h, e) in hears.iter().enumerate() {
            if let Sender::Foreign(p) = e.from {
                payloads[h] = foreign_payload(scheme, p, e.t, model.seed);
            }
        }
        // Each phone records what it heard, in time order (ties in the model's order).
        let payloads_ref = &payloads;
        workers.each(&mut phones, |_, ph| {
            ph.hears.sort_by_key(|&h| hears_ref[h as usize].t);
            for &h in &ph.hears {
                let e = &hears_ref[h as usize];
                ph.engine
                    .record_sighting(
                        payloads_ref[h as usize].as_slice(),
                        UnixTime(e.t),
                        e.att,
                        interval,
                    )
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })?;
        heard += hears.len() as u64;
        spans.beacons += t.elapsed();
        // Uploads of the day: engines build theirs, the others are synthetic.
        let t = Instant::now();
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
        workers.each(&mut phones, |_, ph| {
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
            Ok(())
        })?;
        spans.uploads += t.elapsed();
        // Releases of the day; every phone downloads and ingests each batch.
        let mut end = day_start + server_cfg.bucket_seconds;
        while end <= day_end {
            let t = Instant::now();
            let rel = server.release(end)?;
            spans.server += t.elapsed();
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
            let t = Instant::now();
            ingest_all(&workers, &mut phones, &rel, end, model.seed)?;
            spans.ingest += t.elapsed();
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
        spans,
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
/// decide whether it is now exposed. Each ingest is timed with its thread's CPU clock.
fn ingest_all(
    workers: &Workers,
    phones: &mut [Phone],
    rel: &Released,
    end: u64,
    seed: u64,
) -> Result<(), String> {
    let batch = rel.published.as_batch();
    let (head, body_len) = (rel.http_head_bytes as u64, rel.published.body.len() as u64);
    workers.each(phones, |idx, ph| {
        let delay = Rng::keyed(&[seed, 60, idx as u64, end]).below(1200);
        let now = UnixTime(end + delay);
        let t = thread_cpu_time();
        let res = ph.engine.ingest(&batch, now);
        ph.result.ingest_time += thread_cpu_time().saturating_sub(t);
        ph.result.ingests += 1;
        ph.result.downloaded_bytes += head + body_len;
        if res.is_err() {
            ph.result.ingest_errors += 1;
        }
        if ph.result.notified_at.is_none() && !ph.engine.exposure_days(now).is_empty() {
            ph.result.notified_at = Some(now.0);
        }
        Ok(())
    })
}

impl super::model::Course {
    /// The first day (absolute day number) whose keys are uploaded.
    pub fn keys_from_day_abs(&self, model: &ModelConfig) -> u32 {
        (model.start / DAY) as u32 + self.keys_from_day
    }
}
