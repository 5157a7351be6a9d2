//! # dp3t-mobile-ffi
//!
//! The phone SDK: a thin [uniffi](https://mozilla.github.io/uniffi-rs) facade over
//! [`dp3t_core::engine`], from which Kotlin (Android), Swift (iOS) and Python bindings are
//! generated (`mobile-ffi/generate-bindings.sh`). The integration guide for app developers
//! is `docs/MOBILE.md`.
//!
//! ## What lives here, and what doesn't
//!
//! All protocol logic stays in `dp3t-core`. This crate only
//!
//! * turns foreign-friendly values (unix seconds as `u64`, byte arrays, strings, records)
//!   into the core's typed values and back;
//! * supplies the two things the sans-IO core never takes for itself: randomness (the OS
//!   CSPRNG, [`rand_core::OsRng`]) and, for [`verify_response_signature`] only, the
//!   system clock;
//! * wraps the engine in a [`Mutex`] so that one [`TracingEngine`] can be shared by the
//!   app's Bluetooth callbacks, its download job and its UI (every exported object is
//!   `Send + Sync`);
//! * collapses the core's detailed [`dp3t_core::Error`] into one foreign-friendly
//!   [`Dp3tError`] whose variant says what the app should do about it.
//!
//! ## The API in one example
//!
//! The same calls, with camelCase names, are what Kotlin and Swift apps make.
//!
//! ```
//! use dp3t_mobile_ffi::{EngineConfig, Scheme, TracingEngine};
//! # let server = dp3t_core::signing::SigningKey::generate(&mut rand::rngs::OsRng);
//! # let backend_pem = server.public_key().to_pem()?;
//! let config = EngineConfig {
//!     scheme: Scheme::Gaen,
//!     backend_public_key_pem: backend_pem,
//!     scoring: None,
//!     retention_days: None,
//! };
//! let alice = TracingEngine::new(config.clone())?;
//! let bob = TracingEngine::new(config.clone())?;
//! let now = 1_728_036_000; // the app's clock, unix seconds
//! let beacon = alice.current_beacon(now)?; // advertise beacon.payload until valid_until_unix
//! bob.record_sighting(beacon.payload, now, 45, 60)?; // what Bob's scanner heard
//! assert!(bob.exposure_status(now).exposed_days.is_empty());
//! // Persist after every change; the storage key lives in the OS keystore.
//! let storage_key = vec![42u8; 32];
//! let saved = bob.save(storage_key.clone())?;
//! let bob = TracingEngine::restore(saved, storage_key, config)?;
//! let upload = alice.build_upload(now - 86_400, now + 3_600)?; // POST upload.json to upload.path
//! assert_eq!(upload.path, "/v2/gaen/exposed");
//! # drop(bob);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Time
//!
//! Every call that needs the time takes `now_unix` (seconds since the epoch, UTC) from the
//! app, exactly like the core: the app owns the clock and the scheduling. The one
//! exception is [`TracingEngine::ingest`], which verifies and matches a batch *as of its
//! release time* (see there); [`TracingEngine::ingest_at`] takes the app's clock instead.
//!
//! ## Panics
//!
//! No panic crosses the boundary: inputs are checked and every call that can fail (every
//! one that parses input, uses the OS random generator or does more than read the state)
//! runs inside [`std::panic::catch_unwind`], so even a bug in the core reaches the app as
//! [`Dp3tError::Internal`], a normal error. The few infallible calls (`scheme`,
//! `exposure_status`, `prune`, `default_scoring_config`) only read or filter the state
//! and have no panicking path; uniffi's own guard would still turn a panic there into its
//! internal error rather than unwinding into foreign code. A mutex poisoned by a panic is
//! recovered: the engine's data stays structurally valid whatever point a call stopped at
//! (at worst a batch is half-ingested, and ingesting it again completes it).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use dp3t_core::engine::{self as core_engine, Engine};
use dp3t_core::error::{Error as CoreError, SignatureError, StateError};
use dp3t_core::exposure as core_exposure;
use dp3t_core::signing::{verify_response, PublicKey};
use dp3t_core::time::{Day, UnixTime};
use rand_core::OsRng;
use zeroize::Zeroizing;

mod session;
pub use session::*;
mod transport;
pub use transport::*;

uniffi::setup_scaffolding!();

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Everything that can go wrong in a call, grouped by what the app should do about it.
///
/// In Kotlin this is the exception class `Dp3tException` with one subclass per variant
/// (`Dp3tException.BadSignature` ...), in Swift the `Dp3tError` enum, in Python the
/// exception `Dp3tError` with one subclass per variant. The message says in words what
/// was wrong; it never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum Dp3tError {
    /// An argument is malformed or out of range: a beacon or storage key of the wrong
    /// length, a time the protocol can't represent, an invalid configuration, a public
    /// key PEM that can't be read, an onset after `now`. A bug in the app's call.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A signature did not verify: the export's signature, or the `Signature` header
    /// (missing, malformed, made with another key, expired, or over another body). The
    /// download must not be trusted; try it again later.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The published data is signed correctly (or not signed inside) but cannot be read:
    /// not a zip, bad protobuf, bad DPCF filter.
    #[error("malformed batch: {0}")]
    MalformedBatch(String),
    /// The batch kind or the saved state belongs to another scheme than the engine's.
    #[error("wrong scheme: {0}")]
    WrongScheme(String),
    /// The saved state does not open with this storage key (or its bytes were altered).
    #[error("wrong storage key: {0}")]
    WrongStorageKey(String),
    /// The saved state is truncated, not a state of this library, or of an unknown version.
    #[error("corrupt state: {0}")]
    CorruptState(String),
    /// The call does not fit the current state: a second report while one runs or after
    /// one succeeded, a beacon after tracing stopped, an answer to a request that is not
    /// in flight.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A bug: something that should never happen did. Please report it.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CoreError> for Dp3tError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::InvalidLength { .. } | CoreError::OutOfRange { .. } => {
                Dp3tError::InvalidInput(message)
            }
            CoreError::Signature(SignatureError::Key(_)) => Dp3tError::InvalidInput(message),
            CoreError::Signature(_) => Dp3tError::BadSignature(message),
            CoreError::Filter(_) | CoreError::Export(_) | CoreError::PublishedList(_) => {
                Dp3tError::MalformedBatch(message)
            }
            CoreError::State(StateError::Authentication) => Dp3tError::WrongStorageKey(message),
            CoreError::State(_) => Dp3tError::CorruptState(message),
            CoreError::WrongScheme { .. } => Dp3tError::WrongScheme(message),
            CoreError::InvalidState(_) => Dp3tError::InvalidState(message),
            CoreError::UploadTooLarge { .. } | CoreError::Ble(_) | CoreError::Sealed(_) => {
                Dp3tError::InvalidInput(message)
            }
            // `Encode` (a bug), `Vectors`, and any variant added later: nothing the app
            // could fix.
            _ => Dp3tError::Internal(message),
        }
    }
}

/// Run `f`, turning a panic into [`Dp3tError::Internal`] so that it never unwinds into
/// the foreign caller.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, Dp3tError>) -> Result<T, Dp3tError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(Dp3tError::Internal(format!("{what}: panicked: {detail}")))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Records and enums
// ---------------------------------------------------------------------------------------

/// The four schemes an engine can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Scheme {
    /// Google/Apple Exposure Notification keys (TEK → RPI + AEM), 20-byte beacons.
    Gaen,
    /// DP-3T low-cost design: a chain of day keys, 16-byte EphIDs.
    LowCost,
    /// DP-3T unlinkable design: a seed per 15-minute epoch, published in Cuckoo filters.
    Unlinkable,
    /// DP-3T hybrid design: a seed per time window (120 minutes).
    Hybrid,
}

impl From<Scheme> for core_engine::Scheme {
    fn from(s: Scheme) -> Self {
        match s {
            Scheme::Gaen => core_engine::Scheme::Gaen,
            Scheme::LowCost => core_engine::Scheme::LowCost,
            Scheme::Unlinkable => core_engine::Scheme::Unlinkable,
            Scheme::Hybrid => core_engine::Scheme::Hybrid,
        }
    }
}

impl From<core_engine::Scheme> for Scheme {
    fn from(s: core_engine::Scheme) -> Self {
        match s {
            core_engine::Scheme::Gaen => Scheme::Gaen,
            core_engine::Scheme::LowCost => Scheme::LowCost,
            core_engine::Scheme::Unlinkable => Scheme::Unlinkable,
            core_engine::Scheme::Hybrid => Scheme::Hybrid,
        }
    }
}

/// The exposure-scoring thresholds and weights of PROTOCOL.md §6. Every field has the
/// protocol's default, so `ScoringConfig()` in Kotlin, Swift or Python is the default
/// configuration (the same as [`default_scoring_config`]).
#[derive(Debug, Clone, Copy, PartialEq, uniffi::Record)]
pub struct ScoringConfig {
    /// Attenuations (dB) strictly below this are "near" (bucket 0). Default 55.
    #[uniffi(default = 55)]
    pub attenuation_low: i32,
    /// Attenuations from `attenuation_low` to strictly below this are "medium"
    /// (bucket 1); the rest are far and never count. Default 63.
    #[uniffi(default = 63)]
    pub attenuation_medium: i32,
    /// Weight of a near minute. Default 1.0.
    #[uniffi(default = 1.0)]
    pub factor_low: f64,
    /// Weight of a medium minute. Default 0.5.
    #[uniffi(default = 0.5)]
    pub factor_medium: f64,
    /// A day is an exposure day when its weighted minutes reach this. Default 15.
    #[uniffi(default = 15.0)]
    pub min_minutes: f64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        core_exposure::ScoringConfig::default().into()
    }
}

impl From<core_exposure::ScoringConfig> for ScoringConfig {
    fn from(c: core_exposure::ScoringConfig) -> Self {
        ScoringConfig {
            attenuation_low: c.attenuation_low,
            attenuation_medium: c.attenuation_medium,
            factor_low: c.factor_low,
            factor_medium: c.factor_medium,
            min_minutes: c.min_minutes,
        }
    }
}

impl From<ScoringConfig> for core_exposure::ScoringConfig {
    fn from(c: ScoringConfig) -> Self {
        core_exposure::ScoringConfig {
            attenuation_low: c.attenuation_low,
            attenuation_medium: c.attenuation_medium,
            factor_low: c.factor_low,
            factor_medium: c.factor_medium,
            min_minutes: c.min_minutes,
        }
    }
}

/// How to set up a [`TracingEngine`]. Only `scheme` and `backend_public_key_pem` are
/// required; the rest override the protocol's defaults.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct EngineConfig {
    /// The scheme the app runs (the backend it talks to decides).
    pub scheme: Scheme,
    /// The backend's ECDSA P-256 public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`):
    /// the key that signs export files and `Signature` headers.
    pub backend_public_key_pem: String,
    /// §6 thresholds, factors and minimum minutes; `None` for the defaults.
    #[uniffi(default = None)]
    pub scoring: Option<ScoringConfig>,
    /// Days own keys, sightings and exposure days are kept, `1..=60`; `None` for 14.
    #[uniffi(default = None)]
    pub retention_days: Option<u32>,
}

impl EngineConfig {
    /// The core's configuration: the PEM parsed, the overrides applied. Range checks are
    /// the core's (`Engine::new` and `Engine::restore` validate).
    fn to_core(&self) -> Result<core_engine::EngineConfig, Dp3tError> {
        let key = PublicKey::from_pem(&self.backend_public_key_pem)
            .map_err(|e| Dp3tError::InvalidInput(format!("backend_public_key_pem: {e}")))?;
        let mut config = core_engine::EngineConfig::new(self.scheme.into(), key);
        if let Some(scoring) = self.scoring {
            config.scoring = scoring.into();
        }
        if let Some(days) = self.retention_days {
            config.retention_days = days;
        }
        Ok(config)
    }
}

/// What to broadcast now, and until when.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Beacon {
    /// The advertisement payload: 20 bytes `RPI || AEM` for GAEN, the 16-byte EphID for
    /// the DP-3T designs.
    pub payload: Vec<u8>,
    /// First second (unix) at which the payload must be replaced: ask for a new beacon
    /// then.
    pub valid_until_unix: u64,
}

/// What kind of published data a [`PublishedBatch`] holds (PROTOCOL.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum BatchKind {
    /// A GAEN export zip (`export.bin` + `export.sig`), signed inside (§9.1).
    GaenExportZip,
    /// A low-cost `ProtoExposedList` body; needs its `Signature` header (§9.2, §9.5).
    LowCostList,
    /// A DPCF Cuckoo filter body of the unlinkable design; needs its `Signature` header
    /// (§9.4, §9.5).
    UnlinkableFilter,
    /// A `HybridExposedList` body; needs its `Signature` header (§9.3, §9.5).
    HybridList,
}

impl BatchKind {
    /// The scheme whose engine reads this kind of batch.
    fn scheme(self) -> core_engine::Scheme {
        match self {
            BatchKind::GaenExportZip => core_engine::Scheme::Gaen,
            BatchKind::LowCostList => core_engine::Scheme::LowCost,
            BatchKind::UnlinkableFilter => core_engine::Scheme::Unlinkable,
            BatchKind::HybridList => core_engine::Scheme::Hybrid,
        }
    }
}

/// One downloaded batch, as the backend published it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PublishedBatch {
    /// What the body is.
    pub kind: BatchKind,
    /// The response body, unchanged.
    pub body: Vec<u8>,
    /// The batch's release time, unix seconds: the `X-BATCH-RELEASE-TIME` header or
    /// path parameter divided by 1000, or the GAEN bundle's `x-key-bundle-tag` divided by
    /// 1000. Sightings at or after it never match (anti-replay), and [`TracingEngine::ingest`]
    /// checks the signature as of this time.
    pub release_time_unix: u64,
    /// The response's `Signature` header (a compact JWS). Required for `LowCostList`,
    /// `UnlinkableFilter` and `HybridList`, whose bodies are not signed inside; not used
    /// for `GaenExportZip`, whose signature is inside the zip.
    #[uniffi(default = None)]
    pub signature_header: Option<String>,
}

/// One exposure day: a UTC day whose matched contacts reach the minimum weighted minutes.
#[derive(Debug, Clone, Copy, PartialEq, uniffi::Record)]
pub struct ExposureDay {
    /// The UTC day as a unix day number, `floor(unix / 86400)`; it starts at
    /// `day * 86400`.
    pub day: u32,
    /// Weighted minutes of contact that day (§6).
    pub weighted_minutes: f64,
}

impl From<core_exposure::ExposureDay> for ExposureDay {
    fn from(d: core_exposure::ExposureDay) -> Self {
        ExposureDay {
            day: d.day.0,
            weighted_minutes: d.weighted_minutes,
        }
    }
}

/// What the app shows the user.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ExposureStatus {
    /// The exposure days of the last 10 days, oldest first; empty when not exposed.
    pub exposed_days: Vec<ExposureDay>,
}

/// An upload body, ready to POST with the health authority's `Authorization` token.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UploadPayload {
    /// The JSON body (`Content-Type: application/json`). Real and fake uploads of a
    /// scheme have the same length.
    pub json: String,
    /// The HTTP path to POST it to, relative to the backend's base URL
    /// (e.g. `/v2/gaen/exposed`).
    pub path: String,
}

impl From<dp3t_core::upload::UploadPayload> for UploadPayload {
    fn from(u: dp3t_core::upload::UploadPayload) -> Self {
        UploadPayload {
            json: u.json,
            path: u.path.to_owned(),
        }
    }
}

/// One scan instance of an OS Exposure Window (Android `ScanInstance`, iOS
/// `ENScanInstance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct ScanInstance {
    /// The typical attenuation of the scan, dB.
    pub typical_attenuation_db: i32,
    /// Seconds since the previous scan: the time this instance accounts for.
    pub seconds_since_last_scan: u32,
}

/// An Exposure Window as the phone OS's Exposure Notification API reports it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ExposureWindow {
    /// The window's UTC day as a unix day number: the OS's midnight-UTC date in
    /// milliseconds divided by `86_400_000`.
    pub day: u32,
    /// Its scan instances.
    pub scan_instances: Vec<ScanInstance>,
}

impl From<ExposureWindow> for core_exposure::ExposureWindow {
    fn from(w: ExposureWindow) -> Self {
        core_exposure::ExposureWindow {
            day: Day(w.day),
            scan_instances: w
                .scan_instances
                .into_iter()
                .map(|s| core_exposure::OsScanInstance {
                    typical_attenuation_db: s.typical_attenuation_db,
                    seconds_since_last_scan: s.seconds_since_last_scan,
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------

/// The tracing engine of one phone: its own keys, the beacons it heard, its matches.
///
/// Safe to share between threads: every method locks the engine for the duration of the
/// call, so calls are serialized. `ingest` holds the lock while it matches a batch; run
/// it off the main thread. Persist the engine with [`TracingEngine::save`] after calls
/// that change it (beacons, sightings, ingest, uploads, prune) and open it again with
/// [`TracingEngine::restore`].
#[derive(Debug, uniffi::Object)]
pub struct TracingEngine {
    engine: Mutex<Engine>,
}

impl TracingEngine {
    fn lock(&self) -> MutexGuard<'_, Engine> {
        // A poisoned lock only means an earlier call panicked (and reported
        // `Internal`); the data inside is still well-formed, see the crate docs.
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The 32-byte storage key, or [`Dp3tError::InvalidInput`].
fn storage_key(key: Vec<u8>) -> Result<Zeroizing<[u8; 32]>, Dp3tError> {
    let key = Zeroizing::new(key);
    let array: [u8; 32] = key.as_slice().try_into().map_err(|_| {
        Dp3tError::InvalidInput(format!("storage key must be 32 bytes, got {}", key.len()))
    })?;
    Ok(Zeroizing::new(array))
}

#[uniffi::export]
impl TracingEngine {
    /// A fresh engine with no keys and no sightings (first start of the app).
    ///
    /// Errors: [`Dp3tError::InvalidInput`] if the PEM can't be read or an override is out
    /// of range.
    #[uniffi::constructor]
    pub fn new(config: EngineConfig) -> Result<Arc<Self>, Dp3tError> {
        guarded("new", || {
            let engine = Engine::new(config.to_core()?)?;
            Ok(Arc::new(TracingEngine {
                engine: Mutex::new(engine),
            }))
        })
    }

    /// Open a state written by [`TracingEngine::save`] with the same storage key and a
    /// config of the same scheme. Nothing partial is ever returned.
    ///
    /// Errors: [`Dp3tError::WrongStorageKey`] (other key, or altered bytes),
    /// [`Dp3tError::CorruptState`] (truncated, not a state, unknown version),
    /// [`Dp3tError::WrongScheme`] (state of another scheme),
    /// [`Dp3tError::InvalidInput`] (key not 32 bytes, bad config).
    #[uniffi::constructor]
    pub fn restore(
        state: Vec<u8>,
        storage_key: Vec<u8>,
        config: EngineConfig,
    ) -> Result<Arc<Self>, Dp3tError> {
        guarded("restore", || {
            let key = self::storage_key(storage_key)?;
            let engine = Engine::restore(&state, &key, config.to_core()?)?;
            Ok(Arc::new(TracingEngine {
                engine: Mutex::new(engine),
            }))
        })
    }

    /// The whole state, encrypted and authenticated (ChaCha20-Poly1305) under
    /// `storage_key`: 32 random bytes the app keeps in the Android Keystore / iOS
    /// Keychain. Write the result to app-private storage.
    ///
    /// Errors: [`Dp3tError::InvalidInput`] if the key is not 32 bytes.
    pub fn save(&self, storage_key: Vec<u8>) -> Result<Vec<u8>, Dp3tError> {
        guarded("save", || {
            let key = self::storage_key(storage_key)?;
            Ok(self.lock().save(&key, &mut OsRng)?)
        })
    }

    /// The scheme this engine runs.
    pub fn scheme(&self) -> Scheme {
        self.lock().config().scheme.into()
    }

    /// The payload to advertise at `now_unix`, and when to ask again. Rotates keys at
    /// their boundaries (GAEN and low-cost: UTC midnight; unlinkable: every 15 minutes;
    /// hybrid: every window) and drops own keys past the retention.
    ///
    /// Errors: [`Dp3tError::InvalidInput`] for a time the protocol can't represent.
    pub fn current_beacon(&self, now_unix: u64) -> Result<Beacon, Dp3tError> {
        guarded("current_beacon", || {
            let beacon = self.lock().current_beacon(UnixTime(now_unix), &mut OsRng)?;
            Ok(Beacon {
                payload: beacon.payload,
                valid_until_unix: beacon.valid_until.0,
            })
        })
    }

    /// Record that `payload` was heard at `at_unix` for `seconds`, with `attenuation_db`
    /// (TX power − RSSI; for GAEN use the calibrated TX power of the device class).
    /// Call it once per scan result; repeated sightings of one payload on one day are
    /// aggregated.
    ///
    /// Errors: [`Dp3tError::InvalidInput`] if the payload has the wrong length for the
    /// scheme (GAEN: 16 or 20 bytes; DP-3T: 16) or the time is out of range.
    pub fn record_sighting(
        &self,
        payload: Vec<u8>,
        at_unix: u64,
        attenuation_db: i32,
        seconds: u32,
    ) -> Result<(), Dp3tError> {
        guarded("record_sighting", || {
            Ok(self
                .lock()
                .record_sighting(&payload, UnixTime(at_unix), attenuation_db, seconds)?)
        })
    }

    /// Check a downloaded batch against the recorded sightings; returns the number of new
    /// matches (a batch ingested twice adds nothing the second time).
    ///
    /// The signature is verified with the configured backend key before anything in the
    /// body is used, **as of the batch's release time**: the `Signature` claims must be
    /// valid at `release_time_unix` (the backend signs with `iat` = release time and `exp`
    /// = release time + retention) and name the same release time. So a batch downloaded
    /// late, or on a phone whose clock is off, still verifies, and the result depends only
    /// on the arguments. A replayed old batch can't do harm: sightings at or after its
    /// release time never match it, and the matches it holds were already counted. Use
    /// [`TracingEngine::ingest_at`] to check the signature's expiry against the app's own
    /// clock instead.
    ///
    /// Errors: [`Dp3tError::BadSignature`] (missing header, forged, expired, altered
    /// body), [`Dp3tError::MalformedBatch`], [`Dp3tError::WrongScheme`] (kind of another
    /// scheme). A rejected batch changes nothing.
    pub fn ingest(&self, batch: PublishedBatch) -> Result<u32, Dp3tError> {
        let at = batch.release_time_unix;
        self.ingest_at(batch, at)
    }

    /// [`TracingEngine::ingest`], with the signature's validity window (`iat − 5 min ≤ now
    /// ≤ exp`) and the retention of the batch's keys checked at `now_unix` rather than at
    /// the batch's release time.
    pub fn ingest_at(&self, batch: PublishedBatch, now_unix: u64) -> Result<u32, Dp3tError> {
        guarded("ingest", || {
            let mut engine = self.lock();
            // The core reads every batch as its own scheme publishes it; the kind a caller
            // declares is checked here, once, so that a mix-up is named as such.
            let runs = engine.config().scheme;
            if batch.kind.scheme() != runs {
                return Err(Dp3tError::WrongScheme(format!(
                    "a {:?} batch where the engine runs {runs:?}",
                    batch.kind
                )));
            }
            if batch.signature_header.is_none() && batch.kind != BatchKind::GaenExportZip {
                return Err(Dp3tError::BadSignature(format!(
                    "a {:?} batch needs its Signature header: the body is not signed inside",
                    batch.kind
                )));
            }
            let core_batch = core_engine::PublishedBatch {
                body: &batch.body,
                signature: batch.signature_header.as_deref(),
                release_time: UnixTime(batch.release_time_unix),
            };
            Ok(engine.ingest(&core_batch, UnixTime(now_unix))?)
        })
    }

    /// The exposure days at `now_unix`: days of the last 10 whose matched contacts reach
    /// the minimum weighted minutes.
    pub fn exposure_status(&self, now_unix: u64) -> ExposureStatus {
        ExposureStatus {
            exposed_days: self
                .lock()
                .exposure_days(UnixTime(now_unix))
                .into_iter()
                .map(ExposureDay::from)
                .collect(),
        }
    }

    /// The upload after a positive test: own keys from the UTC day of `onset_unix`
    /// (symptom onset, or the test date) to `now_unix`, padded to the scheme's fixed
    /// size. POST `json` to `path` with the health authority's token. In the low-cost
    /// design the engine then starts a fresh key chain.
    ///
    /// Errors: [`Dp3tError::InvalidInput`] if `onset_unix` is after `now_unix`.
    pub fn build_upload(&self, onset_unix: u64, now_unix: u64) -> Result<UploadPayload, Dp3tError> {
        guarded("build_upload", || {
            if onset_unix > now_unix {
                return Err(Dp3tError::InvalidInput(format!(
                    "onset {onset_unix} is after now {now_unix}"
                )));
            }
            let onset = UnixTime(onset_unix).day();
            Ok(self
                .lock()
                .build_upload(onset, UnixTime(now_unix), &mut OsRng)?
                .into())
        })
    }

    /// A fake upload: same path, shape and length as a real one, every entry fake. Send
    /// it with a fake token at the times [`TracingEngine::next_fake_upload_time`] draws,
    /// so that real uploads don't stand out on the network.
    pub fn build_fake_upload(&self, now_unix: u64) -> Result<UploadPayload, Dp3tError> {
        guarded("build_fake_upload", || {
            Ok(self
                .lock()
                .build_fake_upload(UnixTime(now_unix), &mut OsRng)?
                .into())
        })
    }

    /// A sealed upload (PROTOCOL.md §16): the real upload from the UTC day of
    /// `onset_unix` (as [`TracingEngine::build_upload`]), or a fake one when `onset_unix`
    /// is `None`, with its bearer `token`, sealed to the server's current key. `key_list`
    /// and `key_list_signature` are the body and `Signature` header of
    /// `GET /v2/sealed/key`, checked here with the engine's backend key at `now_unix`.
    /// POST the returned bytes to `/v2/sealed` (`application/octet-stream`, no
    /// `Authorization` header). Real and fake envelopes of a scheme have one size.
    ///
    /// Errors: [`Dp3tError::BadSignature`] if the key list's signature does not verify,
    /// [`Dp3tError::InvalidInput`] if it lists no unexpired key or the token is too long,
    /// or `onset_unix` is after `now_unix`.
    pub fn build_sealed_upload(
        &self,
        onset_unix: Option<u64>,
        token: String,
        key_list: Vec<u8>,
        key_list_signature: String,
        now_unix: u64,
    ) -> Result<Vec<u8>, Dp3tError> {
        guarded("build_sealed_upload", || {
            if onset_unix.is_some_and(|o| o > now_unix) {
                return Err(Dp3tError::InvalidInput(format!(
                    "onset {onset_unix:?} is after now {now_unix}"
                )));
            }
            let now = UnixTime(now_unix);
            let mut engine = self.lock();
            let key = dp3t_core::sealed::verified_key_list(
                &key_list,
                &key_list_signature,
                &engine.config().backend_public_key,
                now,
            )?
            .ok_or_else(|| Dp3tError::InvalidInput("the key list has no unexpired key".into()))?;
            let onset = onset_unix.map(|o| UnixTime(o).day());
            Ok(engine.build_sealed_upload(onset, &token, &key, now, &mut OsRng)?)
        })
    }

    /// When to send the next fake upload: `now_unix` plus a random delay, exponential
    /// with a mean of 5 days (§7). Schedule a background job for it.
    ///
    /// Errors: [`Dp3tError::Internal`] only if the OS random generator fails.
    pub fn next_fake_upload_time(&self, now_unix: u64) -> Result<u64, Dp3tError> {
        guarded("next_fake_upload_time", || {
            Ok(dp3t_core::upload::next_fake_upload_time(UnixTime(now_unix), &mut OsRng).0)
        })
    }

    /// Delete own keys, sightings and exposure data older than the retention. Call it
    /// once a day (e.g. from the download job).
    pub fn prune(&self, now_unix: u64) {
        self.lock().prune(UnixTime(now_unix));
    }
}

// ---------------------------------------------------------------------------------------
// Free functions
// ---------------------------------------------------------------------------------------

/// Verify the `Signature` header of any backend response (§9.5) with the backend's public
/// key (SPKI PEM): the JWS signature, its validity window at the phone's current clock,
/// and that it covers exactly `body`.
///
/// Errors: [`Dp3tError::BadSignature`] if it does not verify, [`Dp3tError::InvalidInput`]
/// if the PEM can't be read.
#[uniffi::export]
pub fn verify_response_signature(
    body: Vec<u8>,
    signature_header: String,
    public_key_pem: String,
) -> Result<(), Dp3tError> {
    guarded("verify_response_signature", || {
        let key = PublicKey::from_pem(&public_key_pem)
            .map_err(|e| Dp3tError::InvalidInput(format!("public_key_pem: {e}")))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Dp3tError::Internal("the system clock is before 1970".into()))?;
        verify_response(&body, &signature_header, &key, UnixTime(now.as_secs()))?;
        Ok(())
    })
}

/// The §6 rule over the Exposure Windows of the OS Exposure Notification API, for apps
/// that let the OS do the Bluetooth and the matching: per UTC day, the scan instances'
/// seconds in their attenuation buckets, scored with `config`. Only days of the last 10
/// count. Returns the exposure days, oldest first.
///
/// Errors: [`Dp3tError::InvalidInput`] if `config` is invalid (thresholds out of order,
/// a factor negative or not finite).
#[uniffi::export]
pub fn exposure_days_from_windows(
    windows: Vec<ExposureWindow>,
    config: ScoringConfig,
    now_unix: u64,
) -> Result<Vec<ExposureDay>, Dp3tError> {
    guarded("exposure_days_from_windows", || {
        let config: core_exposure::ScoringConfig = config.into();
        config.validate()?;
        let windows: Vec<core_exposure::ExposureWindow> =
            windows.into_iter().map(Into::into).collect();
        Ok(
            core_exposure::exposure_days_from_windows(&windows, &config, UnixTime(now_unix))
                .into_iter()
                .map(ExposureDay::from)
                .collect(),
        )
    })
}

/// The protocol's default scoring configuration (§6): 55 dB, 63 dB, 1.0, 0.5, 15 minutes.
#[uniffi::export]
pub fn default_scoring_config() -> ScoringConfig {
    ScoringConfig::default()
}

#[cfg(test)]
mod tests;
