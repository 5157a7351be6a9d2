//! The phone's tracing engine: own keys, sightings, matching, exposure days and uploads.
//!
//! The engine is sans-IO. The app passes in the time, an RNG, what the radio heard and
//! what it downloaded; it gets back beacons to broadcast, exposure days and upload bodies.
//! Scheduling (when to scan, when to download, when to send a fake upload) is the app's.
//!
//! ```
//! use dp3t_core::engine::{Engine, EngineConfig, PublishedBatch, Scheme};
//! use dp3t_core::signing::SigningKey;
//! use dp3t_core::time::{Day, UnixTime};
//! use rand::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let server_key = SigningKey::generate(&mut rng);
//! let config = EngineConfig::new(Scheme::LowCost, server_key.public_key());
//! let mut alice = Engine::new(config.clone())?;
//! let mut bob = Engine::new(config)?;
//!
//! // Alice and Bob spend 30 minutes together, close to each other.
//! let start = UnixTime(1_700_000_000);
//! for minute in 0..30 {
//!     let now = start.plus(minute * 60);
//!     let beacon = alice.current_beacon(now, &mut rng)?;
//!     bob.record_sighting(&beacon.payload, now, 45, 60)?;
//! }
//! // Alice tests positive and uploads; the server publishes her key the next day.
//! let upload = alice.build_upload(start.day(), start.plus(3_600), &mut rng)?;
//! # // The test kit's in-process server stands in for the backend here.
//! # let published = dp3t_testkit::publish::publish_lowcost(&upload, start.plus(86_400 + 7_200), &server_key)?;
//! // Bob downloads the batch (body + Signature header) and checks it locally.
//! let new_matches = bob.ingest(&published.as_batch(), start.plus(86_400 + 7_300))?;
//! assert!(new_matches > 0);
//! let days = bob.exposure_days(start.plus(86_400 + 7_300));
//! assert_eq!(days[0].day, start.day());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashSet};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cuckoo::CuckooFilter;
use crate::error::{Error, Result, StateError};
use crate::export::read_verified_export;
use crate::exposure::{day_is_considered, AttenuationSeconds, ExposureDay, ScoringConfig};
use crate::gaen::{Metadata, Tek};
use crate::hybrid::{Window, WindowMinutes, WindowSeed};
use crate::lowcost::{BroadcastDay, DayKey, EPHIDS_PER_DAY};
use crate::matching::{self, Match, PublishedTek, SightingIndex};
use crate::published::{HybridList, LowCostList};
use crate::signing::{verify_response, PublicKey};
use crate::store::{Sighting, SightingStore};
use crate::time::{Day, Enin, Epoch, UnixTime, ENIN_SECONDS, EPOCH_SECONDS};
use crate::unlinkable::{EpochSeed, HashedObservation};
use crate::upload::{self, UploadPayload};
use crate::EphId;

/// The four schemes a phone can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scheme {
    /// Google/Apple Exposure Notification keys (TEK → RPI + AEM).
    Gaen,
    /// DP-3T low-cost: a chain of day keys.
    LowCost,
    /// DP-3T unlinkable: a seed per epoch, published in Cuckoo filters.
    Unlinkable,
    /// DP-3T hybrid: a seed per time window.
    Hybrid,
}

/// Everything the engine needs to know that isn't state.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// The scheme.
    pub scheme: Scheme,
    /// The backend key that signs exports and `Signature` headers.
    pub backend_public_key: PublicKey,
    /// §6 thresholds and weights.
    pub scoring: ScoringConfig,
    /// Days own keys, sightings and exposure days are kept (default 14).
    pub retention_days: u32,
    /// Window length of the hybrid design (default 120 minutes).
    pub hybrid_window: WindowMinutes,
    /// TX power written into GAEN metadata, dBm.
    pub tx_power_dbm: i8,
}

impl EngineConfig {
    /// Defaults of the profile for `scheme`, trusting `backend_public_key`.
    pub fn new(scheme: Scheme, backend_public_key: PublicKey) -> Self {
        EngineConfig {
            scheme,
            backend_public_key,
            scoring: ScoringConfig::default(),
            retention_days: 14,
            hybrid_window: WindowMinutes::DEFAULT,
            tx_power_dbm: -8,
        }
    }
    fn validate(&self) -> Result<()> {
        self.scoring.validate()?;
        if !(1..=60).contains(&self.retention_days) {
            return Err(Error::out_of_range(
                "retention days",
                format!("{} not in 1..=60", self.retention_days),
            ));
        }
        Ok(())
    }
}

/// What to broadcast now, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beacon {
    /// 20 bytes `RPI || AEM` for GAEN; the 16-byte EphID for the DP-3T designs.
    pub payload: Vec<u8>,
    /// First second at which the payload must be replaced.
    pub valid_until: UnixTime,
}

/// A downloaded batch, as the server published it: the response body, its `Signature`
/// header, and its release time. The engine reads the body as its own scheme publishes it
/// (§9), so a batch cannot claim to be of another scheme:
///
/// * GAEN: an export zip, signed inside (§9.1); `signature` is not used.
/// * low-cost: a `ProtoExposedList` (§9.2), hybrid: a `HybridExposedList` (§9.3),
///   unlinkable: a DPCF filter (§4.1, §9.4); each signed by the `Signature` header (§9.5),
///   which is required.
///
/// Bytes of another scheme fail to decode or to verify, and change nothing.
#[derive(Debug, Clone, Copy)]
pub struct PublishedBatch<'a> {
    /// The response body, unchanged.
    pub body: &'a [u8],
    /// The response's `Signature` header (a compact JWS), if it had one.
    pub signature: Option<&'a str>,
    /// When the batch was released: the GAEN `x-key-bundle-tag`, or the DP-3T
    /// `X-BATCH-RELEASE-TIME` header (the path's `batchReleaseTime`), divided by 1000.
    /// Sightings at or after it never match (anti-replay). Low-cost and hybrid lists carry
    /// their own, signed, release time, which is the one used for them.
    pub release_time: UnixTime,
}

/// The phone's own keys, by scheme.
#[derive(Clone)]
enum OwnKeys {
    Gaen(Vec<(Day, Tek)>),
    LowCost(Vec<BroadcastDay>),
    Unlinkable(Vec<(Epoch, EpochSeed)>),
    Hybrid(Vec<(Window, WindowSeed)>),
}

/// The tracing engine of one phone. See the module documentation for an example.
pub struct Engine {
    config: EngineConfig,
    own: OwnKeys,
    sightings: SightingStore,
    /// Matched (identifier, day) pairs, so a re-downloaded batch adds nothing.
    matched: HashSet<([u8; 16], Day)>,
    /// Seconds of matched contact per day.
    exposure: BTreeMap<Day, AttenuationSeconds>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("scheme", &self.config.scheme)
            .field("sightings", &self.sightings.len())
            .field("exposure_days", &self.exposure.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A fresh engine with no keys and no sightings.
    pub fn new(config: EngineConfig) -> Result<Self> {
        config.validate()?;
        let own = match config.scheme {
            Scheme::Gaen => OwnKeys::Gaen(Vec::new()),
            Scheme::LowCost => OwnKeys::LowCost(Vec::new()),
            Scheme::Unlinkable => OwnKeys::Unlinkable(Vec::new()),
            Scheme::Hybrid => OwnKeys::Hybrid(Vec::new()),
        };
        Ok(Engine {
            config,
            own,
            sightings: SightingStore::new(),
            matched: HashSet::new(),
            exposure: BTreeMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The stored sightings.
    pub fn sightings(&self) -> &SightingStore {
        &self.sightings
    }

    // ------------------------------------------------------------ broadcasting

    /// The payload to broadcast at `now` and when it expires, rotating keys at their
    /// boundaries (GAEN and low-cost: UTC midnight; unlinkable: every epoch; hybrid: every
    /// window) and pruning keys past retention.
    pub fn current_beacon<R: CryptoRng + RngCore>(
        &mut self,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<Beacon> {
        self.prune_own(now);
        let tx = self.config.tx_power_dbm;
        let hybrid_w = self.config.hybrid_window;
        match &mut self.own {
            OwnKeys::Gaen(keys) => {
                let day = now.day();
                if keys.last().map(|(d, _)| *d) != Some(day) {
                    keys.push((day, Tek::generate(rng)));
                }
                let tek = &keys.last().expect("pushed above").1;
                let enin = now.enin()?;
                let rpi = tek.rpik().rpi(enin);
                let aem = tek.aemk().encrypt(&rpi, &Metadata::v1(tx));
                let mut payload = rpi.0.to_vec();
                payload.extend_from_slice(&aem.0);
                Ok(Beacon {
                    payload,
                    valid_until: Enin(enin.0.saturating_add(1)).start(),
                })
            }
            OwnKeys::LowCost(days) => {
                let today = now.day();
                if days.last().map(|d| d.day()) != Some(today) {
                    // Continue the chain when there is one; else start a fresh one.
                    let key = match days.last() {
                        Some(last) if last.day() < today => {
                            last.key().step(last.day().days_until(today))
                        }
                        _ => DayKey::generate(rng),
                    };
                    days.push(BroadcastDay::new(today, key, rng));
                }
                let (ephid, until) = days.last().expect("pushed above").ephid_at(now)?;
                Ok(Beacon {
                    payload: ephid.0.to_vec(),
                    valid_until: until,
                })
            }
            OwnKeys::Unlinkable(seeds) => {
                let epoch = now.epoch()?;
                if seeds.last().map(|(e, _)| *e) != Some(epoch) {
                    seeds.push((epoch, EpochSeed::generate(rng)));
                }
                let seed = &seeds.last().expect("pushed above").1;
                Ok(Beacon {
                    payload: seed.ephid().0.to_vec(),
                    valid_until: Epoch(epoch.0 + 1).start(),
                })
            }
            OwnKeys::Hybrid(windows) => {
                let window = Window::containing(now, hybrid_w);
                if windows.last().map(|(w, _)| *w) != Some(window) {
                    windows.push((window, WindowSeed::generate(rng)));
                }
                let seed = &windows.last().expect("pushed above").1;
                let idx = window.ephid_index(now).unwrap_or(0);
                let ephids = seed.ephids(window.minutes());
                let until = window
                    .start()
                    .plus((idx as u64 + 1) * EPOCH_SECONDS)
                    .min(window.end());
                Ok(Beacon {
                    payload: ephids[idx].0.to_vec(),
                    valid_until: until,
                })
            }
        }
    }

    // ------------------------------------------------------------ hearing

    /// Record that `payload` was heard at `at` for `seconds` with `attenuation_db`
    /// (TX power − RSSI). GAEN payloads are 16 (RPI) or 20 (RPI + AEM) bytes, DP-3T
    /// EphIDs 16 bytes. Unlinkable sightings are stored hashed with their epoch.
    pub fn record_sighting(
        &mut self,
        payload: &[u8],
        at: UnixTime,
        attenuation_db: i32,
        seconds: u32,
    ) -> Result<()> {
        let id: [u8; 16] = match (self.config.scheme, payload.len()) {
            (Scheme::Gaen, 16 | 20) => crate::fixed(&payload[..16], "RPI")?,
            (Scheme::Gaen, n) => {
                return Err(Error::InvalidLength {
                    what: "GAEN beacon (RPI or RPI+AEM)",
                    expected: 20,
                    actual: n,
                })
            }
            (Scheme::Unlinkable, _) => {
                let eph = EphId::from_slice(payload)?;
                let h = HashedObservation::new(&eph, at.epoch()?);
                crate::fixed(&h.0[..16], "hashed observation")?
            }
            (_, _) => EphId::from_slice(payload)?.0,
        };
        if u32::try_from(at.0).is_err() {
            return Err(Error::out_of_range("sighting time", "past 2106"));
        }
        self.sightings
            .record(id, at, attenuation_db, seconds, &self.config.scoring);
        Ok(())
    }

    // ------------------------------------------------------------ matching

    /// Check a downloaded batch against the stored sightings. The signature (inside the
    /// zip for GAEN, the `Signature` header otherwise) is verified with the configured
    /// backend key before anything in the body is used; a batch that fails is rejected.
    /// Returns the number of new (identifier, day) matches.
    pub fn ingest(&mut self, batch: &PublishedBatch<'_>, now: UnixTime) -> Result<u32> {
        let matches = self.find_matches(batch, now)?;
        Ok(self.add_matches(&matches))
    }

    /// Like [`Engine::ingest`] but returns the matches (each with its day and bucket
    /// seconds) without recording them.
    pub fn find_matches(&self, batch: &PublishedBatch<'_>, now: UnixTime) -> Result<Vec<Match>> {
        let pk = &self.config.backend_public_key;
        let sightings = self.sightings.sightings();
        let oldest = self.oldest_kept_day(now);
        let body = batch.body;
        Ok(match self.config.scheme {
            Scheme::Gaen => {
                let export = read_verified_export(body, pk)?;
                let keys: Vec<PublishedTek> = export
                    .keys
                    .iter()
                    .map(|k| PublishedTek {
                        key_data: k.key_data,
                        rolling_start: k.rolling_start_interval_number,
                        rolling_period: k.rolling_period.clamp(1, 144),
                    })
                    .filter(|k| {
                        let end = (u64::from(k.rolling_start) + u64::from(k.rolling_period))
                            * ENIN_SECONDS;
                        end > oldest.start().0
                    })
                    .collect();
                matching::match_gaen(&SightingIndex::new(sightings), &keys, batch.release_time)
            }
            Scheme::LowCost => {
                let claims = verify_response(body, batch.required_signature()?, pk, now)?;
                let list = LowCostList::decode(body)?;
                check_release(&claims, list.release_time)?;
                matching::match_lowcost(
                    &SightingIndex::new(sightings),
                    &list.entries,
                    list.release_time,
                    oldest,
                )
            }
            Scheme::Unlinkable => {
                let claims = verify_response(body, batch.required_signature()?, pk, now)?;
                check_release(&claims, batch.release_time)?;
                let filter = CuckooFilter::parse(body)?;
                matching::match_unlinkable(sightings, &filter, batch.release_time)
            }
            Scheme::Hybrid => {
                let claims = verify_response(body, batch.required_signature()?, pk, now)?;
                let list = HybridList::decode(body)?;
                check_release(&claims, list.release_time)?;
                matching::match_hybrid(
                    &SightingIndex::new(sightings),
                    &list.entries,
                    list.release_time,
                )
            }
        })
    }

    fn add_matches(&mut self, matches: &[Match]) -> u32 {
        let mut new = 0;
        for m in matches {
            if self.matched.insert((m.id, m.day)) {
                self.exposure
                    .entry(m.day)
                    .or_default()
                    .merge(&m.attenuation_seconds());
                new += 1;
            }
        }
        new
    }

    // ------------------------------------------------------------ exposure

    /// The exposure days at `now`: days of the last 10 whose matched contact reaches the
    /// minimum weighted minutes (§6), ascending.
    pub fn exposure_days(&self, now: UnixTime) -> Vec<ExposureDay> {
        self.exposure
            .iter()
            .filter(|(d, _)| day_is_considered(**d, now))
            .filter_map(|(d, s)| {
                let score = self.config.scoring.score(s);
                score.exposed.then_some(ExposureDay {
                    day: *d,
                    weighted_minutes: score.weighted_minutes,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------ uploads

    /// The real upload after a positive test with symptom onset (or test) day `onset`:
    /// the own keys from `onset` on, padded to the scheme's fixed size (§7). For the
    /// low-cost design the engine then discards its chain and starts a fresh one.
    pub fn build_upload<R: CryptoRng + RngCore>(
        &mut self,
        onset: Day,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<UploadPayload> {
        self.prune_own(now);
        let w = self.config.hybrid_window;
        match &mut self.own {
            OwnKeys::Gaen(keys) => {
                let real: Vec<([u8; 16], u32, u32)> = keys
                    .iter()
                    .filter(|(d, _)| *d >= onset && *d <= now.day())
                    .map(|(d, k)| Ok((*k.as_bytes(), d.first_enin()?.0, 144)))
                    .collect::<Result<_>>()?;
                let keep = real.len().saturating_sub(upload::GAEN_UPLOAD_KEYS);
                upload::gaen_upload(&real[keep..], now, rng)
            }
            OwnKeys::LowCost(days) => {
                let first = days
                    .iter()
                    .find(|d| d.day() >= onset && d.day() <= now.day())
                    .map(|d| (*d.key().as_bytes(), d.day()));
                let payload =
                    upload::lowcost_upload(first.as_ref().map(|(k, d)| (k, *d)), now, rng)?;
                if first.is_some() {
                    // §3: after a real upload the phone starts from a fresh random key.
                    days.clear();
                    days.push(BroadcastDay::new(now.day(), DayKey::generate(rng), rng));
                }
                Ok(payload)
            }
            OwnKeys::Unlinkable(seeds) => {
                let from = onset.first_epoch()?;
                let upto = now.epoch()?;
                let real: Vec<(u32, [u8; 32])> = seeds
                    .iter()
                    .filter(|(e, _)| *e >= from && *e <= upto)
                    .map(|(e, s)| (e.0, *s.as_bytes()))
                    .collect();
                let keep = real.len().saturating_sub(upload::UNLINKABLE_UPLOAD_ENTRIES);
                upload::unlinkable_upload(&real[keep..], now, rng)
            }
            OwnKeys::Hybrid(windows) => {
                let real: Vec<(UnixTime, [u8; 16])> = windows
                    .iter()
                    .filter(|(win, _)| win.minutes() == w)
                    .filter(|(win, _)| win.end() > onset.start() && win.start() <= now)
                    .map(|(win, s)| (win.start(), *s.as_bytes()))
                    .collect();
                let keep = real.len().saturating_sub(w.upload_entries());
                upload::hybrid_upload(&real[keep..], w, now, rng)
            }
        }
    }

    /// A fake upload: the same path, shape and size as a real one, all entries fake.
    pub fn build_fake_upload<R: CryptoRng + RngCore>(
        &self,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<UploadPayload> {
        match self.config.scheme {
            Scheme::Gaen => upload::gaen_upload(&[], now, rng),
            Scheme::LowCost => upload::lowcost_upload(None, now, rng),
            Scheme::Unlinkable => upload::unlinkable_upload(&[], now, rng),
            Scheme::Hybrid => upload::hybrid_upload(&[], self.config.hybrid_window, now, rng),
        }
    }

    /// A sealed upload (PROTOCOL.md §16) to `POST` to [`crate::sealed::UPLOAD_PATH`]: the
    /// real upload after a positive test with onset `onset` ([`Engine::build_upload`],
    /// when `onset` is `Some`) or a fake one ([`Engine::build_fake_upload`], `None`),
    /// with its bearer `token`, sealed to the server's `key`. Real and fake envelopes of
    /// the engine's scheme have one size ([`crate::sealed::padded_len`]).
    pub fn build_sealed_upload<R: CryptoRng + RngCore>(
        &mut self,
        onset: Option<Day>,
        token: &str,
        key: &crate::sealed::SealingKey,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        use crate::sealed::{padded_len, seal_upload, SealedRoute};
        let payload = match onset {
            Some(onset) => self.build_upload(onset, now, rng)?,
            None => self.build_fake_upload(now, rng)?,
        };
        let route = SealedRoute::from_path(payload.path).ok_or(Error::Encode("upload path"))?;
        let n = padded_len(self.config.scheme, self.config.hybrid_window);
        seal_upload(key, route, token, payload.json.as_bytes(), n, rng)
    }

    // ------------------------------------------------------------ upkeep

    fn oldest_kept_day(&self, now: UnixTime) -> Day {
        Day(now
            .day()
            .0
            .saturating_sub(self.config.retention_days.saturating_sub(1)))
    }

    fn prune_own(&mut self, now: UnixTime) {
        let oldest = self.oldest_kept_day(now);
        match &mut self.own {
            OwnKeys::Gaen(k) => k.retain(|(d, _)| *d >= oldest),
            OwnKeys::LowCost(k) => k.retain(|d| d.day() >= oldest),
            OwnKeys::Unlinkable(k) => k.retain(|(e, _)| e.day() >= oldest),
            OwnKeys::Hybrid(k) => k.retain(|(w, _)| w.end().day() >= oldest),
        }
    }

    /// Delete own keys, sightings and exposure data older than the retention.
    pub fn prune(&mut self, now: UnixTime) {
        let oldest = self.oldest_kept_day(now);
        self.prune_own(now);
        self.sightings.prune_before(oldest);
        self.matched.retain(|(_, d)| *d >= oldest);
        self.exposure.retain(|d, _| *d >= oldest);
    }

    // ------------------------------------------------------------ persistence

    /// The whole state, encrypted with ChaCha20-Poly1305 under `storage_key` (kept by the
    /// app in the OS keystore). Layout: `"D3ST"`, version byte, 12-byte random nonce,
    /// ciphertext with tag; the first five bytes are authenticated too.
    pub fn save<R: CryptoRng + RngCore>(
        &self,
        storage_key: &[u8; 32],
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        let plain = Zeroizing::new(
            postcard::to_stdvec(&self.to_state()).map_err(|_| Error::Encode("engine state"))?,
        );
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(storage_key.into());
        let mut out = Vec::with_capacity(STATE_HEADER + plain.len() + 16);
        out.extend_from_slice(STATE_MAGIC);
        out.push(STATE_VERSION);
        out.extend_from_slice(&nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &out[..5],
                },
            )
            .map_err(|_| Error::Encode("engine state"))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open a state made by [`Engine::save`]. A wrong key, truncated bytes or any altered
    /// bit gives [`Error::State`], never a partial engine.
    pub fn restore(bytes: &[u8], storage_key: &[u8; 32], config: EngineConfig) -> Result<Self> {
        config.validate()?;
        if bytes.len() < STATE_HEADER + 16 {
            return Err(Error::State(StateError::Truncated));
        }
        if &bytes[..4] != STATE_MAGIC {
            return Err(Error::State(StateError::Magic));
        }
        if bytes[4] != STATE_VERSION {
            return Err(Error::State(StateError::Version(bytes[4])));
        }
        let cipher = ChaCha20Poly1305::new(storage_key.into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&bytes[5..STATE_HEADER]),
                    Payload {
                        msg: &bytes[STATE_HEADER..],
                        aad: &bytes[..5],
                    },
                )
                .map_err(|_| Error::State(StateError::Authentication))?,
        );
        let state: StateV1 =
            postcard::from_bytes(&plain).map_err(|_| Error::State(StateError::Corrupt))?;
        Self::from_state(state, config)
    }

    fn to_state(&self) -> StateV1 {
        let own = match &self.own {
            OwnKeys::Gaen(k) => {
                OwnState::Gaen(k.iter().map(|(d, t)| (d.0, *t.as_bytes())).collect())
            }
            OwnKeys::LowCost(k) => OwnState::LowCost(
                k.iter()
                    .map(|d| (d.day().0, *d.key().as_bytes(), d.order().to_vec()))
                    .collect(),
            ),
            OwnKeys::Unlinkable(k) => {
                OwnState::Unlinkable(k.iter().map(|(e, s)| (e.0, *s.as_bytes())).collect())
            }
            OwnKeys::Hybrid(k) => OwnState::Hybrid(
                k.iter()
                    .map(|(w, s)| (w.start().0, w.minutes().get(), *s.as_bytes()))
                    .collect(),
            ),
        };
        StateV1 {
            scheme: self.config.scheme,
            own,
            sightings: self.sightings.sightings().to_vec(),
            matched: self.matched.iter().map(|(id, d)| (*id, d.0)).collect(),
            exposure: self
                .exposure
                .iter()
                .map(|(d, s)| (d.0, s.seconds))
                .collect(),
        }
    }

    fn from_state(s: StateV1, config: EngineConfig) -> Result<Self> {
        if s.scheme != config.scheme {
            return Err(Error::WrongScheme {
                expected: config.scheme,
                found: s.scheme,
            });
        }
        let corrupt = |_| Error::State(StateError::Corrupt);
        let own = match s.own {
            OwnState::Gaen(k) => OwnKeys::Gaen(
                k.into_iter()
                    .map(|(d, t)| (Day(d), Tek::from_bytes(t)))
                    .collect(),
            ),
            OwnState::LowCost(k) => OwnKeys::LowCost(
                k.into_iter()
                    .map(|(d, key, order)| {
                        let order: [u8; EPHIDS_PER_DAY] = order
                            .try_into()
                            .map_err(|_| Error::State(StateError::Corrupt))?;
                        BroadcastDay::from_parts(Day(d), DayKey::from_bytes(key), order)
                            .map_err(corrupt)
                    })
                    .collect::<Result<_>>()?,
            ),
            OwnState::Unlinkable(k) => OwnKeys::Unlinkable(
                k.into_iter()
                    .map(|(e, s)| (Epoch(e), EpochSeed::from_bytes(s)))
                    .collect(),
            ),
            OwnState::Hybrid(k) => OwnKeys::Hybrid(
                k.into_iter()
                    .map(|(start, w, seed)| {
                        let w = WindowMinutes::new(w).map_err(corrupt)?;
                        Ok((
                            Window::new(UnixTime(start), w).map_err(corrupt)?,
                            WindowSeed::from_bytes(seed),
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        Ok(Engine {
            config,
            own,
            sightings: SightingStore::from_sightings(s.sightings),
            matched: s.matched.into_iter().map(|(id, d)| (id, Day(d))).collect(),
            exposure: s
                .exposure
                .into_iter()
                .map(|(d, seconds)| (Day(d), AttenuationSeconds { seconds }))
                .collect(),
        })
    }
}

impl<'a> PublishedBatch<'a> {
    /// The `Signature` header, which a DP-3T design's batch needs (its body is not signed
    /// inside).
    fn required_signature(&self) -> Result<&'a str> {
        self.signature.ok_or_else(|| {
            Error::Signature(crate::error::SignatureError::Header(
                "missing: a DP-3T batch is signed only by its Signature header".into(),
            ))
        })
    }
}

/// When the signed claims name a release time, it must be the one the body or path says.
fn check_release(claims: &crate::signing::ResponseClaims, release: UnixTime) -> Result<()> {
    match claims.batch_release_time_ms {
        Some(ms) if UnixTime::from_millis(ms) != release => Err(Error::Signature(
            crate::error::SignatureError::Header(format!(
                "signed batch-release-time {ms} differs from the batch's {}",
                release.0 * 1000
            )),
        )),
        _ => Ok(()),
    }
}

const STATE_MAGIC: &[u8; 4] = b"D3ST";
const STATE_VERSION: u8 = 1;
const STATE_HEADER: usize = 4 + 1 + 12;

/// Version 1 of the saved state (postcard-encoded, then encrypted).
#[derive(Serialize, Deserialize)]
struct StateV1 {
    scheme: Scheme,
    own: OwnState,
    sightings: Vec<Sighting>,
    matched: Vec<([u8; 16], u32)>,
    exposure: Vec<(u32, [u64; 3])>,
}

#[derive(Serialize, Deserialize)]
enum OwnState {
    Gaen(Vec<(u32, [u8; 16])>),
    LowCost(Vec<(u32, [u8; 32], Vec<u8>)>),
    Unlinkable(Vec<(u32, [u8; 32])>),
    Hybrid(Vec<(u64, u32, [u8; 16])>),
}
