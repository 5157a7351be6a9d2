//! The simulator's in-process server: uploads in, signed padded batches out, one per
//! release bucket, through the same encoders, signer and padding rule as the backend
//! (`dp3t_core::export::write_export_zip`, `LowCostList::encode`, `FilterBuilder`,
//! `HybridList::encode`, `sign_response`; padding as `backend/src/designs/build.rs`
//! `padded_count`, PROTOCOL.md §10). It reads upload bodies with the core's own upload
//! structs. What it leaves out: authentication, the database, and the backend's dating
//! of padding from the real entries of the retention window (padding here is dated
//! uniformly over the retention), which changes no size by more than a varint byte.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::seq::SliceRandom;
use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use dp3t_core::cuckoo::FilterBuilder;
use dp3t_core::engine::Scheme;
use dp3t_core::export::{write_export_zip, ExportBatch, ExportKey, SignatureInfo};
use dp3t_core::hybrid::{Window, WindowMinutes, WindowSeed};
use dp3t_core::lowcost::DayKey;
use dp3t_core::published::{HybridEntry, HybridList, LowCostEntry, LowCostList};
use dp3t_core::signing::{sign_response, ResponseClaims, SigningKey};
use dp3t_core::time::{Day, Epoch, UnixTime, DAY_SECONDS, ENIN_SECONDS};
use dp3t_core::unlinkable::{EpochSeed, HashedObservation};
use dp3t_core::upload::{GaenUpload, HybridUpload, LowCostUpload, UnlinkableUpload, UploadPayload};
use dp3t_testkit::publish::Published;

/// Server settings (the backend's defaults in [`ServerConfig::backend_defaults`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Release bucket length, seconds (`DP3T_RELEASE_BUCKET_SECONDS`, 7,200).
    pub bucket_seconds: u64,
    /// `DP3T_EXPORT_MIN_KEYS` (100).
    pub gaen_min_keys: usize,
    /// `DP3T_LOWCOST_MIN_KEYS` (100).
    pub lowcost_min_keys: usize,
    /// `DP3T_UNLINKABLE_MIN_ENTRIES` (9,600).
    pub unlinkable_min_entries: usize,
    /// `DP3T_HYBRID_MIN_SEEDS` (1,200).
    pub hybrid_min_seeds: usize,
    /// Retention, days (14).
    pub retention_days: u64,
}

impl ServerConfig {
    /// The backend's defaults (PROTOCOL.md §10, §14).
    pub fn backend_defaults() -> Self {
        ServerConfig {
            bucket_seconds: 7_200,
            gaen_min_keys: 100,
            lowcost_min_keys: 100,
            unlinkable_min_entries: 9_600,
            hybrid_min_seeds: 1_200,
            retention_days: 14,
        }
    }
    fn min_for(&self, scheme: Scheme) -> usize {
        match scheme {
            Scheme::Gaen => self.gaen_min_keys,
            Scheme::LowCost => self.lowcost_min_keys,
            Scheme::Unlinkable => self.unlinkable_min_entries,
            Scheme::Hybrid => self.hybrid_min_seeds,
        }
    }
}

/// `backend/src/designs/build.rs` `padded_count`: `max(real, min)` rounded up to a multiple
/// of `step = max(1, min / 2)`, plus a uniform extra in `0..step`.
pub fn padded_count(real: usize, min: usize, rng: &mut impl RngCore) -> usize {
    if min == 0 {
        return real;
    }
    let step = (min / 2).max(1);
    real.max(min)
        .div_ceil(step)
        .saturating_mul(step)
        .saturating_add(rng.gen_range(0..step))
}

/// A published entry waiting for its bucket.
#[derive(Debug, Clone)]
pub enum Entry {
    /// GAEN key.
    Gaen(ExportKey),
    /// Low-cost key.
    LowCost(LowCostEntry),
    /// Unlinkable hashed observation `H(seed || epoch)`.
    Unlinkable([u8; 32]),
    /// Hybrid window.
    Hybrid(HybridEntry),
}

/// A released batch and what it holds.
#[derive(Debug, Clone)]
pub struct Released {
    /// The body and its `Signature` header.
    pub published: Published,
    /// Real entries.
    pub real: usize,
    /// Padding entries.
    pub padding: usize,
    /// The HTTP/1.1 response head the backend sends with it (status line and headers).
    pub http_head_bytes: usize,
}

impl Released {
    /// Bytes on the wire for one download: head + body (no TLS, TCP or IP).
    pub fn wire_bytes(&self) -> usize {
        self.http_head_bytes + self.published.body.len()
    }
}

/// The server of one scheme.
pub struct Server {
    scheme: Scheme,
    key: SigningKey,
    cfg: ServerConfig,
    rng: ChaCha20Rng,
    /// `(publication time, entry)`.
    pending: Vec<(u64, Entry)>,
    /// Real entries accepted so far.
    pub accepted_real: u64,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Server {
    /// A server signing with `key`, padding from `seed`.
    pub fn new(scheme: Scheme, key: SigningKey, cfg: ServerConfig, seed: u64) -> Self {
        Server {
            scheme,
            key,
            cfg,
            rng: ChaCha20Rng::seed_from_u64(seed),
            pending: Vec::new(),
            accepted_real: 0,
        }
    }

    fn bucket_end(&self, t: u64) -> u64 {
        let len = self.cfg.bucket_seconds;
        (t / len + 1) * len
    }

    /// When an entry arriving at `arrival` is published: the end of its arrival bucket;
    /// for GAEN not before the key's embargo (expiry + 2 h), rounded up to a bucket end.
    fn publication(&self, arrival: u64, entry: &Entry) -> u64 {
        let at = self.bucket_end(arrival);
        match entry {
            Entry::Gaen(k) => {
                let embargo = (u64::from(k.rolling_start_interval_number)
                    + u64::from(k.rolling_period))
                    * ENIN_SECONDS
                    + 7_200;
                let len = self.cfg.bucket_seconds;
                at.max(embargo.div_ceil(len) * len)
            }
            _ => at,
        }
    }

    /// Accept the real entries of an upload body made by an engine.
    pub fn accept_upload(&mut self, upload: &UploadPayload, arrival: u64) -> Result<usize, String> {
        let entries = parse_upload(self.scheme, upload)?;
        let n = entries.len();
        for e in entries {
            self.accept(e, arrival);
        }
        Ok(n)
    }

    /// Accept one real entry arriving at `arrival`.
    pub fn accept(&mut self, e: Entry, arrival: u64) {
        let at = self.publication(arrival, &e);
        self.pending.push((at, e));
        self.accepted_real += 1;
    }

    /// Build, pad, sign and release the batch of the bucket ending at `end`.
    pub fn release(&mut self, end: u64) -> Result<Released, String> {
        let mut real = Vec::new();
        let mut keep = Vec::with_capacity(self.pending.len());
        for (at, e) in self.pending.drain(..) {
            if at <= end {
                real.push(e);
            } else {
                keep.push((at, e));
            }
        }
        self.pending = keep;
        let n_real = real.len();
        let total = padded_count(n_real, self.cfg.min_for(self.scheme), &mut self.rng);
        while real.len() < total {
            let pad = self.padding(end);
            real.push(pad);
        }
        real.shuffle(&mut self.rng);
        let release = UnixTime(end);
        let body = match self.scheme {
            Scheme::Gaen => {
                let keys = real
                    .into_iter()
                    .filter_map(|e| match e {
                        Entry::Gaen(k) => Some(k),
                        _ => None,
                    })
                    .collect();
                let batch = ExportBatch {
                    start_timestamp: end.saturating_sub(self.cfg.bucket_seconds),
                    end_timestamp: end,
                    region: "CH".into(),
                    batch_num: 1,
                    batch_size: 1,
                    keys,
                    revised_keys: vec![],
                };
                let info = SignatureInfo {
                    verification_key_version: "v1".into(),
                    verification_key_id: "228".into(),
                };
                write_export_zip(&batch, &info, &self.key).map_err(err)?
            }
            Scheme::LowCost => LowCostList {
                release_time: release,
                entries: real
                    .into_iter()
                    .filter_map(|e| match e {
                        Entry::LowCost(k) => Some(k),
                        _ => None,
                    })
                    .collect(),
            }
            .encode()
            .map_err(err)?,
            Scheme::Unlinkable => {
                let items: Vec<[u8; 32]> = real
                    .into_iter()
                    .filter_map(|e| match e {
                        Entry::Unlinkable(h) => Some(h),
                        _ => None,
                    })
                    .collect();
                FilterBuilder::new().build(&items).map_err(err)?.to_bytes()
            }
            Scheme::Hybrid => HybridList {
                release_time: release,
                entries: real
                    .into_iter()
                    .filter_map(|e| match e {
                        Entry::Hybrid(k) => Some(k),
                        _ => None,
                    })
                    .collect(),
            }
            .encode()
            .map_err(err)?,
        };
        let claims = ResponseClaims::for_body(
            &body,
            "dp3t",
            end,
            end + self.cfg.retention_days * DAY_SECONDS,
            Some(end * 1000),
        );
        let signature = sign_response(&body, &self.key, &claims).map_err(err)?;
        let head = http_head(self.scheme, body.len(), &signature, end);
        Ok(Released {
            published: Published {
                body,
                signature,
                release_time: release,
                scheme: self.scheme,
            },
            real: n_real,
            padding: total - n_real,
            http_head_bytes: head.len(),
        })
    }

    /// One padding entry for the bucket ending at `end` (§10; dated uniformly over the
    /// retention).
    fn padding(&mut self, end: u64) -> Entry {
        let today = UnixTime(end.saturating_sub(1)).day();
        let retention = self.cfg.retention_days.max(2) as u32;
        let r = &mut self.rng;
        match self.scheme {
            Scheme::Gaen => {
                let mut data = [0u8; 16];
                r.fill_bytes(&mut data);
                let day = Day(today.0.saturating_sub(r.gen_range(1..retention)));
                Entry::Gaen(ExportKey {
                    key_data: data,
                    rolling_start_interval_number: day.0 * 144,
                    rolling_period: 144,
                    transmission_risk_level: 0,
                    report_type: Some(1),
                    days_since_onset_of_symptoms: Some(r.gen_range(0..=14)),
                })
            }
            Scheme::LowCost => {
                let mut k = [0u8; 32];
                r.fill_bytes(&mut k);
                Entry::LowCost(LowCostEntry {
                    key: DayKey::from_bytes(k),
                    day: Day(today.0.saturating_sub(r.gen_range(0..retention))),
                })
            }
            Scheme::Unlinkable => {
                let mut h = [0u8; 32];
                r.fill_bytes(&mut h);
                Entry::Unlinkable(h)
            }
            Scheme::Hybrid => {
                let mut s = [0u8; 16];
                r.fill_bytes(&mut s);
                let w = WindowMinutes::DEFAULT;
                let slots = u64::from(retention) * DAY_SECONDS / w.seconds();
                let first = (end / w.seconds()).saturating_sub(slots);
                let start = (first + r.gen_range(0..slots)) * w.seconds();
                match Window::new(UnixTime(start), w) {
                    Ok(window) => Entry::Hybrid(HybridEntry {
                        window,
                        seed: WindowSeed::from_bytes(s),
                    }),
                    // Unreachable for aligned starts; an unlinkable-style entry would be
                    // filtered out of a hybrid list, so fall back to the retention's start.
                    Err(_) => Entry::Hybrid(HybridEntry {
                        window: Window::containing(UnixTime(end), w),
                        seed: WindowSeed::from_bytes(s),
                    }),
                }
            }
        }
    }
}

/// The HTTP/1.1 response head the backend sends with a batch (`backend/src/api/gaen.rs`,
/// `batches.rs`): status line, content-length, content-type, cache-control, the batch
/// tag or release time, the `Signature` header and a date.
pub fn http_head(scheme: Scheme, body_len: usize, signature: &str, release: u64) -> String {
    let (ct, tag) = match scheme {
        Scheme::Gaen => ("application/zip", "x-key-bundle-tag"),
        Scheme::Unlinkable => ("application/octet-stream", "x-batch-release-time"),
        Scheme::LowCost | Scheme::Hybrid => ("application/x-protobuf", "x-batch-release-time"),
    };
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\ncontent-type: {ct}\r\n\
         cache-control: public, max-age=300\r\n{tag}: {}\r\nsignature: {signature}\r\n\
         date: Wed, 02 Dec 2026 00:00:00 GMT\r\n\r\n",
        release * 1000
    )
}

/// The real entries of an upload body, read with the core's upload structs.
pub fn parse_upload(scheme: Scheme, upload: &UploadPayload) -> Result<Vec<Entry>, String> {
    let b64 = |s: &str| B64.decode(s).map_err(err);
    let mut out = Vec::new();
    match scheme {
        Scheme::Gaen => {
            let u: GaenUpload = serde_json::from_str(&upload.json).map_err(err)?;
            for k in u.gaen_keys.iter().filter(|k| !k.fake.0) {
                let data = b64(&k.key_data)?;
                out.push(Entry::Gaen(ExportKey {
                    key_data: data.as_slice().try_into().map_err(err)?,
                    rolling_start_interval_number: k.rolling_start_number,
                    rolling_period: k.rolling_period,
                    transmission_risk_level: 0,
                    report_type: Some(1),
                    days_since_onset_of_symptoms: Some(0),
                }));
            }
        }
        Scheme::LowCost => {
            let u: LowCostUpload = serde_json::from_str(&upload.json).map_err(err)?;
            if !u.fake.0 {
                out.push(Entry::LowCost(LowCostEntry {
                    key: DayKey::from_slice(&b64(&u.key)?).map_err(err)?,
                    day: Day::from_midnight_millis(u.key_date).map_err(err)?,
                }));
            }
        }
        Scheme::Unlinkable => {
            let u: UnlinkableUpload = serde_json::from_str(&upload.json).map_err(err)?;
            for e in u.seeds.iter().filter(|e| !e.fake.0) {
                let seed = EpochSeed::from_slice(&b64(&e.seed)?).map_err(err)?;
                out.push(Entry::Unlinkable(
                    HashedObservation::of_seed(&seed, Epoch(e.epoch)).0,
                ));
            }
        }
        Scheme::Hybrid => {
            let u: HybridUpload = serde_json::from_str(&upload.json).map_err(err)?;
            for w in u.windows.iter().filter(|w| !w.fake.0) {
                out.push(Entry::Hybrid(HybridEntry {
                    window: Window::new(
                        UnixTime::from_millis(w.window_start),
                        WindowMinutes::new(w.window_minutes).map_err(err)?,
                    )
                    .map_err(err)?,
                    seed: WindowSeed::from_slice(&b64(&w.seed)?).map_err(err)?,
                }));
            }
        }
    }
    Ok(out)
}

/// The entries a phone without an engine would upload (random keys of the right shape):
/// the keys of days `from..=upload day` (GAEN, all; low-cost, the first day's; unlinkable,
/// every epoch; hybrid, every window) up to the upload time.
pub fn synthetic_entries(scheme: Scheme, from_day: u32, upload_at: u64, seed: u64) -> Vec<Entry> {
    let mut r = ChaCha20Rng::seed_from_u64(seed);
    let now = UnixTime(upload_at);
    let from = Day(from_day.max(now.day().0.saturating_sub(13)));
    let mut out = Vec::new();
    match scheme {
        Scheme::Gaen => {
            for d in from.0..=now.day().0 {
                let mut k = [0u8; 16];
                r.fill_bytes(&mut k);
                out.push(Entry::Gaen(ExportKey {
                    key_data: k,
                    rolling_start_interval_number: d * 144,
                    rolling_period: 144,
                    transmission_risk_level: 0,
                    report_type: Some(1),
                    days_since_onset_of_symptoms: Some(0),
                }));
            }
        }
        Scheme::LowCost => {
            let mut k = [0u8; 32];
            r.fill_bytes(&mut k);
            out.push(Entry::LowCost(LowCostEntry {
                key: DayKey::from_bytes(k),
                day: from,
            }));
        }
        Scheme::Unlinkable => {
            let first = u64::from(from.0) * 96;
            let last = upload_at / 900;
            for _ in first..=last {
                let mut h = [0u8; 32];
                r.fill_bytes(&mut h);
                out.push(Entry::Unlinkable(h));
            }
        }
        Scheme::Hybrid => {
            let w = WindowMinutes::DEFAULT;
            let first = from.start().0 / w.seconds();
            let last = upload_at / w.seconds();
            for i in first..=last {
                let mut s = [0u8; 16];
                r.fill_bytes(&mut s);
                if let Ok(window) = Window::new(UnixTime(i * w.seconds()), w) {
                    out.push(Entry::Hybrid(HybridEntry {
                        window,
                        seed: WindowSeed::from_bytes(s),
                    }));
                }
            }
        }
    }
    out
}
