//! Release buckets (PROTOCOL.md §10): build, pad, sign and cache each bucket once, and
//! answer `GET /v2/gaen/exposed?lastKeyBundleTag=…` from memory.
//!
//! ## Model
//!
//! Time is cut into buckets of `DP3T_RELEASE_BUCKET_SECONDS`, aligned to unix 0 and named
//! by their **end** (the DP-3T "batch release time"). Every stored key carries
//! `publish_at`, the earliest bucket end at which it may appear: the end of the bucket its
//! upload arrived in, or — if later — its embargo end `(rsin + rolling_period) * 600 + 2 h`
//! rounded up to a bucket end.
//!
//! The bucket ending at `T` is released by the one release engine ([`crate::release`]):
//! its claim takes every key not yet claimed with `publish_at <= T`; [`GaenBuilder`]
//! shuffles them, pads them with random keys to `DP3T_EXPORT_MIN_KEYS` (shaped like the real
//! keys of the retention window), writes and signs the export zip, signs the response, and
//! stores both in `published_buckets`; then `released_until` advances to `T` and the new
//! buckets are loaded into memory. Each bucket is stored once and its bytes never change.
//! A key whose insert commits just after its bucket was claimed is not lost: it goes to
//! the next bucket. With padding on, every bucket has an export; with
//! `DP3T_EXPORT_MIN_KEYS = 0` empty buckets store nothing.
//!
//! ## Downloads
//!
//! The answer for a tag `t` holds the keys of every bucket with `t < end <= R`, where `R`
//! (`released_until`, sent back as `x-key-bundle-tag`) is the end of the newest released
//! bucket, and the response's `Signature` carries `batch-release-time = R`. That answer
//! depends only on the first non-empty bucket after `t` and on `R`, so it is cached under
//! that pair: any tag, on a bucket boundary or not, maps to one of at most
//! retention/bucket entries, and the cache is dropped when `R` advances.
//!
//! * A client that is up to date (its tag is the previous release) gets the newest
//!   bucket's stored zip and stored `Signature`: no database query, no signature, ever.
//! * Otherwise the union of the buckets is written as one zip (keys sorted by key data),
//!   signed once, and cached until the next release.
//! * Nothing new, or a tag at or after `R`: `204` with the signature of the empty body.
//! * Tags older than the retention are treated as the retention limit.
//!
//! ## Key rotation
//!
//! Stored buckets keep the bytes they were released with, signed with the key (and
//! `verification_key_id`/`version`) of that time; they are read as stored, never
//! re-verified against the current key. Every answer is signed with the current key: a
//! bucket signed with an earlier key is re-signed (its keys written into a new zip) when
//! it is served, so a new install and a phone that lags behind both get a download that
//! verifies with the key now configured. A failed release or download build marks the
//! node degraded for `/healthz` until the next success.
//!
//! Nodes learn of releases by their own clock ([`crate::release`]). If the database is
//! unreachable the node keeps serving its last state, which is still correct, just older.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use actix_web::web::Bytes;
use dp3t_core::engine::Scheme;
use dp3t_core::export::{
    parse_export_zip, write_export_zip, ExportBatch, ExportKey, SignatureInfo,
};
use dp3t_core::signing::{sign_response, PublicKey, ResponseClaims, SigningKey};
use dp3t_core::time::{Day, Enin, UnixTime, DAY_SECONDS};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

use crate::cache::{Answer, AnswerKey, DownloadCache};
use crate::config::Timing;
use crate::db::{BucketRecord, Db, DbError, DbResult, StoredKey};
use crate::designs::build::padded_count;
use crate::metrics::Metrics;
use crate::release::{
    bucket_ceil, bucket_floor, BucketBuilder, BuiltSummary, ReleaseError, Releaser,
};

/// Seconds after a key's expiry before it may be published (§10).
pub const EMBARGO_SECONDS: u64 = 2 * 3600;
/// `report_type` written for every key (CONFIRMED_TEST).
const REPORT_TYPE_CONFIRMED_TEST: i32 = 1;
/// Draws from the population until one fits the bucket (at most this many tries).
const PADDING_TRIES: usize = 32;

/// The metadata of one padding key of the bucket ending at `end`: that of a random real
/// key of the retention window (`population`: keys with the end of the bucket that
/// publishes them), moved by whole days so that it has the same age relative to this
/// bucket as the real key had relative to its own, and publishable in it (expired plus
/// embargo by `end`, inside the retention). With no such key (an empty window), a key of
/// one to five days ago.
fn padding_shape(
    population: &[(StoredKey, u64)],
    end: u64,
    settings: &PublishSettings,
    rng: &mut impl Rng,
) -> StoredKey {
    let end_day = UnixTime(end.saturating_sub(1)).day().0;
    let fits = |k: &StoredKey| {
        let start = u64::from(k.rolling_start_number) * 600;
        let expiry = start + u64::from(k.rolling_period) * 600;
        expiry + EMBARGO_SECONDS <= end && start + settings.timing.retention_seconds >= end
    };
    for _ in 0..PADDING_TRIES {
        let Some((k, published)) = population.choose(rng) else {
            break;
        };
        let their_day = UnixTime(published.saturating_sub(1)).day().0;
        let shift = i64::from(end_day) - i64::from(their_day);
        let rsn = i64::from(k.rolling_start_number) + shift * 144;
        let Ok(rolling_start_number) = u32::try_from(rsn) else {
            continue;
        };
        let shaped = StoredKey {
            rolling_start_number,
            ..*k
        };
        if fits(&shaped) {
            return shaped;
        }
    }
    let age = rng.gen_range(1..=5u32);
    StoredKey {
        key_data: [0; 16],
        rolling_start_number: end_day.saturating_sub(age) * 144,
        rolling_period: 144,
        transmission_risk_level: 0,
        days_since_onset: 0,
    }
}

/// Settings of the publisher, taken from [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// Bucket length and retention.
    pub timing: Timing,
    /// Padding minimum of non-empty buckets.
    pub min_keys: usize,
    /// Export region.
    pub region: String,
    /// Export `verification_key_id`.
    pub key_id: String,
    /// Export `verification_key_version`.
    pub key_version: String,
    /// `iss` of response signatures.
    pub issuer: String,
}

/// Failure to produce a download.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Encoding or signing failed.
    #[error("export: {0}")]
    Core(#[from] dp3t_core::Error),
    /// Releasing a bucket failed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// Building an answer failed (the error as its waiters share it).
    #[error("building a download: {0}")]
    Build(String),
}

/// A download answer, cached and shared.
#[derive(Debug)]
pub struct ExportResponse {
    /// The zip, or `None` for `204 No Content`.
    pub body: Option<Bytes>,
    /// The `Signature` header value.
    pub signature: String,
    /// `x-key-bundle-tag` value: `R` in milliseconds.
    pub bundle_tag_ms: u64,
}

/// A released, non-empty bucket held in memory.
struct Bucket {
    start: u64,
    end: u64,
    zip: Bytes,
    signature: String,
    /// Its keys, parsed from `zip` the first time an answer needs them, and whether the
    /// zip is signed with this node's current key.
    parsed: OnceLock<Result<ParsedBucket, dp3t_core::Error>>,
}

/// What a stored bucket's zip holds, read once.
struct ParsedBucket {
    keys: Vec<ExportKey>,
    /// The zip's signature verifies with the current public key: its bytes and stored
    /// `Signature` may be served as they are. False for buckets released before a key
    /// rotation, which are served re-signed.
    signed_by_current: bool,
}

/// Cache key of a download: the first bucket end in range (or none), and `R`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RangeKey {
    first_end: Option<u64>,
    released_until: u64,
}

#[derive(Default)]
struct State {
    released_until: u64,
    buckets: BTreeMap<u64, Arc<Bucket>>,
}

/// What building an answer needs, shared with the blocking threads that build them.
struct Signer {
    key: SigningKey,
    public: PublicKey,
    settings: PublishSettings,
}

/// The released buckets this node serves, and the answers built from them.
struct Memory {
    state: RwLock<State>,
    /// Answers built once and served many times, bounded in bytes (shared with the
    /// designs).
    cache: Arc<DownloadCache>,
    retention_seconds: u64,
}

/// GAEN's part of the release engine: a bucket's claimed keys, padded, shuffled, zipped
/// and signed into an export; released buckets loaded into memory.
pub struct GaenBuilder {
    signer: Arc<Signer>,
    memory: Arc<Memory>,
}

impl BucketBuilder for GaenBuilder {
    type Input = (Vec<StoredKey>, Vec<(StoredKey, u64)>);
    type Built = BucketRecord;

    fn scheme(&self) -> Scheme {
        Scheme::Gaen
    }

    async fn load(&self, db: &Db, end: u64) -> Result<Self::Input, ReleaseError> {
        let claimed = db.bucket_keys(end).await?;
        let after = end.saturating_sub(self.memory.retention_seconds);
        let population = db.key_population(after, end).await?;
        Ok((claimed, population))
    }

    fn build(
        &self,
        end: u64,
        (claimed, population): Self::Input,
    ) -> Result<Option<BucketRecord>, ReleaseError> {
        Ok(self.signer.build_bucket(end, claimed, population)?)
    }

    async fn store(&self, db: &Db, built: &BucketRecord) -> DbResult<()> {
        db.insert_bucket(built).await
    }

    fn summary(built: &BucketRecord) -> BuiltSummary {
        BuiltSummary {
            real: built.real_keys,
            published: built.total_keys,
            bytes: built.zip.len(),
        }
    }

    async fn install(&self, db: &Db, from: u64, to: u64) -> Result<(), ReleaseError> {
        let rows = db.buckets_between(from, to).await?;
        self.memory.install(rows, to);
        Ok(())
    }
}

/// The GAEN publisher: releases GAEN buckets through the release engine and answers
/// downloads from the node's memory.
pub struct Publisher {
    db: Db,
    release: Releaser<GaenBuilder>,
    signer: Arc<Signer>,
    memory: Arc<Memory>,
    settings: PublishSettings,
    metrics: Arc<Metrics>,
    /// The last download build failed (cleared by the next successful release):
    /// `/healthz` reports the node degraded.
    failing: AtomicBool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("release", &self.release)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// When a key may first be published: the later of the end of the arrival bucket and
/// the end of its embargo, both on bucket ends.
pub fn publish_at(now: u64, len: u64, rolling_start: u32, rolling_period: u32) -> u64 {
    let arrival_end = bucket_floor(now, len).saturating_add(len);
    let expiry = (u64::from(rolling_start) + u64::from(rolling_period)) * 600;
    arrival_end.max(bucket_ceil(expiry.saturating_add(EMBARGO_SECONDS), len))
}

impl Publisher {
    /// A publisher over `db`, signing with `key`. Call [`Publisher::advance`] once before
    /// serving.
    pub fn new(
        db: Db,
        key: SigningKey,
        settings: PublishSettings,
        metrics: Arc<Metrics>,
        cache: Arc<DownloadCache>,
    ) -> Self {
        let public = key.public_key();
        let signer = Arc::new(Signer {
            key,
            public,
            settings: settings.clone(),
        });
        let memory = Arc::new(Memory {
            state: RwLock::new(State::default()),
            cache,
            retention_seconds: settings.timing.retention_seconds,
        });
        let builder = GaenBuilder {
            signer: Arc::clone(&signer),
            memory: Arc::clone(&memory),
        };
        Publisher {
            release: Releaser::new(db.clone(), builder, settings.timing, Arc::clone(&metrics)),
            db,
            signer,
            memory,
            settings,
            metrics,
            failing: AtomicBool::new(false),
        }
    }

    /// Whether the last attempt to release a bucket or to build a download failed (the
    /// node then serves its last state): `/healthz` reports it degraded.
    pub fn publication_failing(&self) -> bool {
        self.release.failing() || self.failing.load(Ordering::Relaxed)
    }

    /// `released_until` as this node knows it.
    pub fn released_until(&self) -> u64 {
        self.release.released_until()
    }

    /// Release every bucket that has ended by `now`, if this node has not seen it yet
    /// ([`Releaser::advance`]).
    pub async fn advance(&self, now: UnixTime) -> Result<(), PublishError> {
        let before = self.released_until();
        self.release.advance(now).await?;
        if self.released_until() > before {
            self.failing.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Delete data past retention from the database and from memory.
    pub async fn enforce_retention(
        &self,
        now: UnixTime,
    ) -> Result<crate::db::RetentionReport, PublishError> {
        let cutoff = now.0.saturating_sub(self.settings.timing.retention_seconds);
        let report = self.db.delete_older_than(cutoff).await?;
        let mut st = self.memory.state.write().unwrap_or_else(|e| e.into_inner());
        st.buckets = st.buckets.split_off(&cutoff);
        Ok(report)
    }

    /// The answer to `GET /v2/gaen/exposed?lastKeyBundleTag=tag_ms` at `now`: from the
    /// download cache, or built on a blocking thread (concurrent requests for the same
    /// answer share one build) and cached.
    pub async fn export_since(
        &self,
        tag_ms: Option<u64>,
        now: UnixTime,
    ) -> Result<Arc<ExportResponse>, PublishError> {
        if let Err(e) = self.advance(now).await {
            // Serve the last released state; it is correct, only older.
            tracing::warn!(error = %e, "serving the last released state");
        }
        let (range, buckets) = self.range(tag_ms);
        let key = AnswerKey::Union {
            first_end: range.first_end,
            released_until: range.released_until,
        };
        let reuses_stored = matches!(&buckets[..], [only] if only.end == range.released_until);
        self.cached_export(key, !reuses_stored, move |signer| {
            signer.build_response(range, &buckets)
        })
        .await
    }

    /// The answer to the GAEN v1 `GET /v1/gaen/exposed/{day}?publishedafter=ms` at `now`:
    /// the keys of `day` (by their `rollingStartNumber`) in the buckets released after
    /// `published_after_ms` and up to `R`, which is the `X-PUBLISHED-UNTIL` the client
    /// sends back next time. Padding keys are dated like real ones, so a day's padding
    /// comes with it. The export covers the day (`start_timestamp` its midnight,
    /// `end_timestamp` the next), is signed with the current key, and the answer is cached
    /// like the others. `body` is `None` (a `204`) when the day has no key.
    pub async fn day_export(
        &self,
        day: Day,
        published_after_ms: Option<u64>,
        now: UnixTime,
    ) -> Result<Arc<ExportResponse>, PublishError> {
        if let Err(e) = self.advance(now).await {
            tracing::warn!(error = %e, "serving the last released state");
        }
        let (range, buckets) = self.range(published_after_ms);
        let key = AnswerKey::Day {
            day: day.0,
            first_end: range.first_end,
            released_until: range.released_until,
        };
        self.cached_export(key, true, move |signer| {
            signer.build_day(day, range, &buckets)
        })
        .await
    }

    /// A GAEN answer from the download cache, or built by `build` on a blocking thread
    /// (concurrent requests for it share one build) and cached; `counts` says whether a
    /// successful build is a new export for the metrics.
    async fn cached_export(
        &self,
        key: AnswerKey,
        counts: bool,
        build: impl FnOnce(&Signer) -> Result<ExportResponse, PublishError> + Send + 'static,
    ) -> Result<Arc<ExportResponse>, PublishError> {
        let signer = Arc::clone(&self.signer);
        let metrics = Arc::clone(&self.metrics);
        let answer = self
            .memory
            .cache
            .get_or_build(key, || async move {
                let response = tokio::task::spawn_blocking(move || {
                    let r = build(&signer);
                    if r.is_ok() && counts {
                        metrics.export_built();
                    }
                    r
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                Ok(Arc::new(Answer::Gaen(Arc::new(response))))
            })
            .await;
        self.gaen_answer(answer)
    }

    /// The range of a tag, and the released buckets in it.
    fn range(&self, tag_ms: Option<u64>) -> (RangeKey, Vec<Arc<Bucket>>) {
        let st = self.memory.state.read().unwrap_or_else(|e| e.into_inner());
        let range = self.range_key(&st, tag_ms);
        let buckets = match range.first_end {
            Some(first) => st
                .buckets
                .range((Included(first), Included(range.released_until)))
                .map(|(_, b)| Arc::clone(b))
                .collect(),
            None => Vec::new(),
        };
        (range, buckets)
    }

    fn gaen_answer(
        &self,
        answer: Result<Arc<Answer>, String>,
    ) -> Result<Arc<ExportResponse>, PublishError> {
        match answer.as_deref() {
            Ok(Answer::Gaen(r)) => Ok(Arc::clone(r)),
            Ok(Answer::Design(_)) => Err(PublishError::Build("cache entry of another kind".into())),
            Err(e) => {
                self.failing.store(true, Ordering::Relaxed);
                Err(PublishError::Build(e.clone()))
            }
        }
    }

    /// The `Signature` header for serving `body` at release `R` (as every other download).
    pub fn sign_body(&self, body: &[u8]) -> Result<String, PublishError> {
        Ok(sign_response(
            body,
            &self.signer.key,
            &self.signer.claims(body, self.released_until()),
        )?)
    }

    /// The download cache (shared with the designs).
    pub fn cache(&self) -> &Arc<DownloadCache> {
        &self.memory.cache
    }

    fn range_key(&self, st: &State, tag_ms: Option<u64>) -> RangeKey {
        let r = st.released_until;
        let lower = tag_ms
            .map(|ms| ms / 1000)
            .unwrap_or(0)
            .max(r.saturating_sub(self.settings.timing.retention_seconds));
        let first_end = if lower >= r {
            None
        } else {
            st.buckets
                .range((Excluded(lower), Included(r)))
                .next()
                .map(|(end, _)| *end)
        };
        RangeKey {
            first_end,
            released_until: r,
        }
    }
}

impl Memory {
    /// Add loaded buckets, advance `released_until`, drop cached answers and buckets past
    /// retention.
    fn install(&self, rows: Vec<BucketRecord>, released_until: u64) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        for r in rows {
            st.buckets.insert(
                r.end,
                Arc::new(Bucket {
                    start: r.start,
                    end: r.end,
                    zip: Bytes::from(r.zip),
                    signature: r.signature,
                    parsed: OnceLock::new(),
                }),
            );
        }
        if released_until > st.released_until {
            st.released_until = released_until;
            // Answers of earlier releases are never asked for again.
            self.cache.retain(|k| match k {
                AnswerKey::Union {
                    released_until: r, ..
                }
                | AnswerKey::Day {
                    released_until: r, ..
                } => *r >= released_until,
                AnswerKey::Design { .. } => true,
            });
        }
        let oldest = st.released_until.saturating_sub(self.retention_seconds);
        st.buckets = st.buckets.split_off(&oldest.saturating_add(1));
    }
}

impl Signer {
    /// Turn the keys claimed for the bucket ending at `end` into its export: shuffled,
    /// padded ([`padded_count`] of `DP3T_EXPORT_MIN_KEYS`) with random keys shaped like
    /// the real keys of the retention window (`population`), zipped, signed. With padding
    /// on, every bucket has an export, with real keys or not.
    fn build_bucket(
        &self,
        end: u64,
        claimed: Vec<StoredKey>,
        population: Vec<(StoredKey, u64)>,
    ) -> Result<Option<BucketRecord>, dp3t_core::Error> {
        let mut rng = rand::thread_rng();
        let real = claimed.len();
        let total = padded_count(real, self.settings.min_keys, &mut rng);
        if total == 0 {
            return Ok(None);
        }
        let to_export = |k: &StoredKey, key_data: [u8; 16]| ExportKey {
            key_data,
            rolling_start_interval_number: k.rolling_start_number,
            rolling_period: k.rolling_period,
            transmission_risk_level: k.transmission_risk_level,
            report_type: Some(REPORT_TYPE_CONFIRMED_TEST),
            days_since_onset_of_symptoms: Some(k.days_since_onset),
        };
        let mut keys: Vec<ExportKey> = claimed.iter().map(|k| to_export(k, k.key_data)).collect();
        while keys.len() < total {
            let mut data = [0u8; 16];
            rng.fill_bytes(&mut data);
            let shape = padding_shape(&population, end, &self.settings, &mut rng);
            keys.push(to_export(&shape, data));
        }
        keys.shuffle(&mut rng);
        let start = end.saturating_sub(self.settings.timing.bucket_seconds);
        let (zip, signature) = self.signed_zip(keys, start, end, end)?;
        Ok(Some(BucketRecord {
            end,
            start,
            real_keys: real as u64,
            total_keys: total as u64,
            zip,
            signature,
        }))
    }

    /// An export zip of `keys` covering `start..end`, signed inside, and the `Signature`
    /// header that serves it at release `release`: what a stored bucket and a built
    /// answer both are.
    fn signed_zip(
        &self,
        keys: Vec<ExportKey>,
        start: u64,
        end: u64,
        release: u64,
    ) -> Result<(Vec<u8>, String), dp3t_core::Error> {
        let batch = ExportBatch {
            start_timestamp: start,
            end_timestamp: end,
            region: self.settings.region.clone(),
            batch_num: 1,
            batch_size: 1,
            keys,
            revised_keys: Vec::new(),
        };
        let zip = write_export_zip(&batch, &self.signature_info(), &self.key)?;
        let signature = sign_response(&zip, &self.key, &self.claims(&zip, release))?;
        Ok((zip, signature))
    }

    fn claims(&self, body: &[u8], release: u64) -> ResponseClaims {
        ResponseClaims::for_body(
            body,
            &self.settings.issuer,
            release,
            release.saturating_add(self.settings.timing.retention_seconds),
            Some(release.saturating_mul(1000)),
        )
    }

    fn signature_info(&self) -> SignatureInfo {
        SignatureInfo {
            verification_key_version: self.settings.key_version.clone(),
            verification_key_id: self.settings.key_id.clone(),
        }
    }

    /// A stored bucket, parsed once. Its keys are taken as stored: the database is the
    /// source of truth, and a bucket signed with an earlier key (before a rotation) is
    /// not re-verified against the current one.
    fn parsed<'a>(&self, b: &'a Bucket) -> Result<&'a ParsedBucket, PublishError> {
        let parsed = b.parsed.get_or_init(|| {
            let export = parse_export_zip(&b.zip)?;
            let keys = export.batch_unverified().keys.clone();
            let signed_by_current = export.verify(&self.public).is_ok();
            Ok(ParsedBucket {
                keys,
                signed_by_current,
            })
        });
        Ok(parsed.as_ref().map_err(Clone::clone)?)
    }

    /// The keys of a stored bucket.
    fn bucket_keys<'a>(&self, b: &'a Bucket) -> Result<&'a [ExportKey], PublishError> {
        Ok(&self.parsed(b)?.keys)
    }

    /// An export of `keys` covering `start..end`, and its response signature for release `r`.
    fn signed_union(
        &self,
        keys: Vec<ExportKey>,
        start: u64,
        end: u64,
        r: u64,
    ) -> Result<ExportResponse, PublishError> {
        let (zip, signature) = self.signed_zip(keys, start, end, r)?;
        Ok(ExportResponse {
            body: Some(Bytes::from(zip)),
            signature,
            bundle_tag_ms: r.saturating_mul(1000),
        })
    }

    fn build_response(
        &self,
        key: RangeKey,
        buckets: &[Arc<Bucket>],
    ) -> Result<ExportResponse, PublishError> {
        let r = key.released_until;
        let bundle_tag_ms = r.saturating_mul(1000);
        match buckets {
            [] => Ok(ExportResponse {
                signature: sign_response(b"", &self.key, &self.claims(b"", r))?,
                body: None,
                bundle_tag_ms,
            }),
            [only] if only.end == r && self.parsed(only)?.signed_by_current => Ok(ExportResponse {
                body: Some(only.zip.clone()),
                signature: only.signature.clone(),
                bundle_tag_ms,
            }),
            [only] if self.parsed(only)?.signed_by_current => Ok(ExportResponse {
                signature: sign_response(&only.zip, &self.key, &self.claims(&only.zip, r))?,
                body: Some(only.zip.clone()),
                bundle_tag_ms,
            }),
            // Several buckets, or one signed with an earlier key: one zip, signed now.
            [first, ..] => {
                let mut keys = Vec::new();
                for b in buckets {
                    keys.extend(self.bucket_keys(b)?.iter().cloned());
                }
                keys.sort_by_key(|k| k.key_data);
                self.signed_union(keys, first.start, r, r)
            }
        }
    }

    /// The GAEN v1 day export of `day` over `buckets`, for release `range.released_until`.
    fn build_day(
        &self,
        day: Day,
        range: RangeKey,
        buckets: &[Arc<Bucket>],
    ) -> Result<ExportResponse, PublishError> {
        let r = range.released_until;
        let mut keys = Vec::new();
        for b in buckets {
            keys.extend(
                self.bucket_keys(b)?
                    .iter()
                    .filter(|k| Enin(k.rolling_start_interval_number).day() == day)
                    .cloned(),
            );
        }
        if keys.is_empty() {
            return Ok(ExportResponse {
                signature: sign_response(b"", &self.key, &self.claims(b"", r))?,
                body: None,
                bundle_tag_ms: r.saturating_mul(1000),
            });
        }
        keys.sort_by_key(|k| k.key_data);
        let start = day.start().0;
        self.signed_union(keys, start, start.saturating_add(DAY_SECONDS), r)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn publish_at_respects_arrival_and_embargo() {
        let day = 19_000u64;
        let rsin = (day * 144) as u32;
        // A key of three days ago: only the arrival bucket counts.
        let now = (day + 3) * 86_400 + 1_000;
        assert_eq!(
            publish_at(now, 7_200, rsin, 144),
            (day + 3) * 86_400 + 7_200
        );
        // Today's key: published at the first bucket end >= tomorrow 00:00 + 2 h.
        let now = day * 86_400 + 3_600;
        assert_eq!(
            publish_at(now, 7_200, rsin, 144),
            (day + 1) * 86_400 + 7_200
        );
        // With a bucket length that does not divide the embargo end, round up.
        let p = publish_at(now, 5_000, rsin, 144);
        assert!(
            p >= (day + 1) * 86_400 + 7_200
                && p.is_multiple_of(5_000)
                && p - 5_000 < (day + 1) * 86_400 + 7_200
        );
        // A short rolling period expires earlier: 01:00 + 2 h, rounded up to 04:00.
        assert_eq!(publish_at(now, 7_200, rsin, 6), day * 86_400 + 14_400);
    }
}
