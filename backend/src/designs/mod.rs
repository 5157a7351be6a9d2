//! Publication of the three DP-3T designs beside GAEN (PROTOCOL.md §3–5, §9.2–9.5, §10):
//! the low-cost design (DP-3T v1 API), the unlinkable design (Cuckoo filters) and the
//! hybrid design.
//!
//! ## Model: the DP-3T batch convention
//!
//! Time is cut into release buckets of `DP3T_RELEASE_BUCKET_SECONDS` (the same buckets as
//! GAEN), aligned to unix 0 and named by their **end** in milliseconds, the
//! `batchReleaseTime`. The batch released at `T` holds the uploads *received* in the
//! bucket that ends at `T` — the DP-3T v1 backend's rule — and every bucket boundary
//! within the retention is a batch, with or without uploads. A phone asks for each
//! batch it has not seen (`GET …/{batchReleaseTime}`) and matches it.
//!
//! There is no GAEN-style embargo: PROTOCOL.md §3–5 has none for these designs, and the
//! replay it would guard against is stopped on the phone, which never matches a sighting
//! made at or after the batch's release time (§3, `dp3t_core::matching`). A low-cost key
//! or an unlinkable seed of the current day or epoch may thus be published at the end of
//! the bucket it arrived in.
//!
//! ## Built once, identical everywhere
//!
//! Every bucket, with or without real entries, is built once after it ends, by the one
//! release engine ([`crate::release`]) with a [`DesignBuilder`]: its rows are
//! claimed, its entries padded ([`build::padded_count`]) with random entries of the
//! right form dated like the real entries of the retention window ([`build::DatePrior`]),
//! shuffled (lists) or hashed into a DPCF filter (§4.1), signed (§9.5, with
//! `batch-release-time`) and stored in `design_buckets` ([`crate::db::release`] describes
//! the two-step claim). The padding comes from fresh
//! randomness and exists only in the stored bytes; if two nodes build the same bucket,
//! the first stored copy wins and both serve it. A bucket that no release built (older
//! than a catch-up after downtime) is built, stored and served the same way on its
//! first request.
//!
//! ## Serving
//!
//! A download is a lookup in the node's download cache ([`crate::cache`]), bounded in
//! bytes together with the GAEN answers: no database query and no signature on the hot
//! path. A body that is not in memory (evicted, or never asked for) is loaded from the
//! database, which holds every released bucket, on a miss; concurrent misses of one
//! bucket share one load. The first request for a bucket that has ended but that this node has not yet released
//! releases it (the background ticker normally has). Buckets older than the retention
//! are deleted from the database and from memory; requests for them get 404, as do
//! requests for buckets that have not ended.

pub mod build;

use std::sync::Arc;

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;
use dp3t_core::engine::Scheme;
use dp3t_core::signing::{verify_response, SigningKey};
use dp3t_core::time::UnixTime;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::cache::{Answer, AnswerKey, DownloadCache};
use crate::config::{Config, Timing};
use crate::db::designs::{DesignBucketRecord, DesignRetentionReport};
use crate::db::{scheme_name, Db, DbError, DbResult};
use crate::metrics::Metrics;
use crate::release::{BucketBuilder, BuiltSummary, ReleaseError, Releaser};
use build::{build_body, BuildError, BuildParams, DatePrior, RealEntries};

/// Stored uploads sampled to date the padding of one bucket.
const POPULATION_SAMPLE: u32 = 500;

/// One of the three DP-3T designs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Design {
    /// Low-cost: day keys `(SK_t, t)`, published as `ProtoExposedList` (§3, §9.2).
    LowCost,
    /// Unlinkable: per-epoch seeds, published as a DPCF filter of hashed observations
    /// (§4, §9.4).
    Unlinkable,
    /// Hybrid: per-window seeds, published as `HybridExposedList` (§5, §9.3).
    Hybrid,
}

impl Design {
    /// The three designs.
    pub const ALL: [Design; 3] = [Design::LowCost, Design::Unlinkable, Design::Hybrid];

    /// The scheme.
    pub fn scheme(self) -> Scheme {
        match self {
            Design::LowCost => Scheme::LowCost,
            Design::Unlinkable => Scheme::Unlinkable,
            Design::Hybrid => Scheme::Hybrid,
        }
    }

    /// Name in the database and in metrics.
    pub fn name(self) -> &'static str {
        scheme_name(self.scheme())
    }

    /// Content type of the published body.
    pub fn content_type(self) -> &'static str {
        match self {
            Design::LowCost | Design::Hybrid => "application/x-protobuf",
            Design::Unlinkable => "application/octet-stream",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Settings of the design publisher, taken from [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesignSettings {
    /// Bucket length and retention.
    pub timing: Timing,
    /// `iss` of response signatures.
    pub issuer: String,
    /// Padding minimum of low-cost lists, in keys.
    pub lowcost_min_keys: usize,
    /// Padding minimum of unlinkable filters, in entries.
    pub unlinkable_min_entries: usize,
    /// Padding minimum of hybrid lists, in window seeds.
    pub hybrid_min_seeds: usize,
    /// Fingerprint bits of unlinkable filters.
    pub fingerprint_bits: u8,
}

impl DesignSettings {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        DesignSettings {
            timing: config.timing(),
            issuer: config.issuer.clone(),
            lowcost_min_keys: config.lowcost_min_keys,
            unlinkable_min_entries: config.unlinkable_min_entries,
            hybrid_min_seeds: config.hybrid_min_seeds,
            fingerprint_bits: config.filter_fingerprint_bits,
        }
    }

    /// Build parameters of `design`.
    pub fn build_params(&self, design: Design) -> BuildParams {
        BuildParams {
            min_entries: match design {
                Design::LowCost => self.lowcost_min_keys,
                Design::Unlinkable => self.unlinkable_min_entries,
                Design::Hybrid => self.hybrid_min_seeds,
            },
            fingerprint_bits: self.fingerprint_bits,
            retention_seconds: self.timing.retention_seconds,
            issuer: self.issuer.clone(),
        }
    }
}

/// Failure of a release or of a download.
#[derive(Debug, thiserror::Error)]
pub enum DesignError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Releasing a bucket failed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// Building a body failed.
    #[error("building a bucket: {0}")]
    Build(#[from] BuildError),
    /// A build task panicked or was cancelled.
    #[error("bucket build task failed: {0}")]
    Task(String),
    /// Building or loading a bucket failed (the error as its concurrent waiters share it).
    #[error("{0}")]
    Shared(String),
    /// A signature is not a valid header value (cannot happen with our signer).
    #[error("signature is not a valid header value")]
    Header,
}

/// Why a bucket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// `batchReleaseTime` is not a multiple of the bucket length.
    #[error("batchReleaseTime {0} is not on a release bucket boundary (a multiple of {1} ms)")]
    NotOnBoundary(u64, u64),
    /// The bucket has not ended yet.
    #[error("the batch released at {0} is in the future")]
    InFuture(u64),
    /// The bucket is older than the retention.
    #[error("the batch released at {0} is older than the retention")]
    Expired(u64),
    /// This node could not release the bucket (database unavailable).
    #[error("the batch released at {0} is not available yet; retry later")]
    Unavailable(u64),
    /// Building the body of a bucket without uploads failed.
    #[error(transparent)]
    Internal(#[from] DesignError),
}

/// A published bucket, ready to serve.
#[derive(Debug, Clone)]
pub struct PublishedBucket {
    /// The body.
    pub body: Bytes,
    /// The `Signature` header.
    pub signature: HeaderValue,
    /// The `X-BATCH-RELEASE-TIME` header (ms).
    pub release_time: HeaderValue,
    /// Real entries in it.
    pub real_entries: u64,
    /// Entries including padding.
    pub total_entries: u64,
}

impl PublishedBucket {
    fn new(
        end: u64,
        body: Vec<u8>,
        signature: &str,
        real_entries: u64,
        total_entries: u64,
    ) -> Result<Self, DesignError> {
        Ok(PublishedBucket {
            body: Bytes::from(body),
            signature: HeaderValue::from_str(signature).map_err(|_| DesignError::Header)?,
            release_time: HeaderValue::from(end.saturating_mul(1000)),
            real_entries,
            total_entries,
        })
    }
}

/// A design's part of the release engine: a bucket's claimed records, padded, shuffled
/// or hashed into a filter, and signed.
pub struct DesignBuilder {
    design: Design,
    key: SigningKey,
    params: BuildParams,
    /// Dropped entries of a bucket once stored: what another node stored first is served.
    cache: Arc<DownloadCache>,
}

impl BucketBuilder for DesignBuilder {
    type Input = (RealEntries, DatePrior);
    type Built = DesignBucketRecord;

    fn scheme(&self) -> Scheme {
        self.design.scheme()
    }

    async fn load(&self, db: &Db, end: u64) -> Result<Self::Input, ReleaseError> {
        let name = self.design.name();
        let mut real = RealEntries::empty(self.design);
        let mut after = 0;
        loop {
            let page = db.design_bucket_entries(name, end, after).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, entries) in &page {
                real.extend_from_stored(entries);
            }
        }
        // How the real entries published in the retention window before `end` (and in
        // it) were dated: a random sample of stored uploads.
        let since = end.saturating_sub(self.params.retention_seconds);
        let mut prior = DatePrior::default();
        for (entries, bucket_end) in db
            .design_population(name, since, end, POPULATION_SAMPLE)
            .await?
        {
            prior.add_stored(self.design, &entries, bucket_end);
        }
        Ok((real, prior))
    }

    fn build(
        &self,
        end: u64,
        (real, prior): Self::Input,
    ) -> Result<Option<DesignBucketRecord>, ReleaseError> {
        let mut rng = ChaCha20Rng::from_entropy();
        let built = build_body(end, real, &self.params, &prior, &self.key, &mut rng)
            .map_err(|BuildError::Core(e)| ReleaseError::Core(e))?;
        Ok(Some(DesignBucketRecord {
            end,
            real_entries: built.real_entries,
            total_entries: built.total_entries,
            body: built.body,
            signature: built.signature,
        }))
    }

    async fn store(&self, db: &Db, built: &DesignBucketRecord) -> DbResult<()> {
        db.insert_design_bucket(self.design.name(), built).await?;
        let (design, end) = (self.design, built.end);
        self.cache
            .retain(|k| *k != AnswerKey::Design { design, end });
        Ok(())
    }

    fn summary(built: &DesignBucketRecord) -> BuiltSummary {
        BuiltSummary {
            real: built.real_entries,
            published: built.total_entries,
            bytes: built.body.len(),
        }
    }
}

/// The publisher of the three designs: their releases through the release engine, and
/// their downloads.
pub struct DesignPublisher {
    db: Db,
    key: SigningKey,
    settings: DesignSettings,
    releasers: [Releaser<DesignBuilder>; 3],
    /// Bodies served from memory, under the node's one byte bound (shared with GAEN);
    /// the database holds every released bucket.
    cache: Arc<DownloadCache>,
}

impl std::fmt::Debug for DesignPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesignPublisher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl DesignPublisher {
    /// Open the publisher over `db` (migrated): delete data past retention and release
    /// every bucket that has ended at `now`.
    pub async fn open(
        db: Db,
        key: SigningKey,
        settings: DesignSettings,
        metrics: Arc<Metrics>,
        cache: Arc<DownloadCache>,
        now: UnixTime,
    ) -> Result<DesignPublisher, DesignError> {
        let releaser = |design| {
            let builder = DesignBuilder {
                design,
                key: key.clone(),
                params: settings.build_params(design),
                cache: Arc::clone(&cache),
            };
            Releaser::new(db.clone(), builder, settings.timing, Arc::clone(&metrics))
        };
        let publisher = DesignPublisher {
            releasers: Design::ALL.map(releaser),
            db,
            key,
            settings,
            cache,
        };
        publisher.enforce_retention(now).await?;
        for d in Design::ALL {
            publisher.advance(d, now).await?;
        }
        Ok(publisher)
    }

    /// Whether the last release attempt of some design failed: `/healthz` reports the
    /// node degraded.
    pub fn publication_failing(&self) -> bool {
        self.releasers.iter().any(Releaser::failing)
    }

    /// Buckets of `design` ending up to this time are released on this node.
    pub fn released_until(&self, design: Design) -> u64 {
        self.releasers[design.index()].released_until()
    }

    /// Release every bucket of `design` that has ended at `now`, if this node has not
    /// yet ([`Releaser::advance`]).
    pub async fn advance(&self, design: Design, now: UnixTime) -> Result<(), DesignError> {
        Ok(self.releasers[design.index()].advance(now).await?)
    }

    /// The stored `Signature` of a bucket if it verifies with the current key, else (a
    /// bucket released before a key rotation) the body signed anew with the current key
    /// and the same claims. The stored row keeps what it was released with.
    fn current_signature(
        key: &SigningKey,
        params: &BuildParams,
        r: &DesignBucketRecord,
    ) -> Result<String, DesignError> {
        if verify_response(&r.body, &r.signature, &key.public_key(), UnixTime(r.end)).is_ok() {
            return Ok(r.signature.clone());
        }
        Ok(build::sign_body(&r.body, r.end, params, key)?)
    }

    /// The bucket of `design` ending at `end` (released) from the database, or (a bucket
    /// no release built) built and stored now; the first stored copy wins on every node.
    async fn load_bucket(&self, design: Design, end: u64) -> Result<Arc<Answer>, DesignError> {
        let name = design.name();
        let row = match self.db.design_bucket(name, end).await? {
            Some(row) => row,
            None => {
                self.releasers[design.index()].build_and_store(end).await?;
                self.db
                    .design_bucket(name, end)
                    .await?
                    .ok_or(DesignError::Db(DbError::Corrupt("stored bucket vanished")))?
            }
        };
        let key = self.key.clone();
        let params = self.settings.build_params(design);
        // Hashing a large filter to check its signature takes a while: off the async
        // workers.
        let bucket = tokio::task::spawn_blocking(move || {
            let signature = Self::current_signature(&key, &params, &row)?;
            PublishedBucket::new(
                end,
                row.body,
                &signature,
                row.real_entries,
                row.total_entries,
            )
        })
        .await
        .map_err(|e| DesignError::Task(e.to_string()))??;
        Ok(Arc::new(Answer::Design(Arc::new(bucket))))
    }

    /// The published bucket of `design` released at `release_ms` (the path's
    /// `batchReleaseTime`), at `now`.
    pub async fn bucket(
        &self,
        design: Design,
        release_ms: u64,
        now: UnixTime,
    ) -> Result<Arc<PublishedBucket>, BucketError> {
        let len = self.settings.timing.bucket_seconds;
        let len_ms = len.saturating_mul(1000);
        if !release_ms.is_multiple_of(len_ms) {
            return Err(BucketError::NotOnBoundary(release_ms, len_ms));
        }
        let end = release_ms / 1000;
        if end > now.0 {
            return Err(BucketError::InFuture(release_ms));
        }
        if end < now.0.saturating_sub(self.settings.timing.retention_seconds) {
            return Err(BucketError::Expired(release_ms));
        }
        if self.released_until(design) < end {
            if let Err(e) = self.advance(design, now).await {
                tracing::warn!(design = design.name(), error = %e, "serving the last released state");
            }
            if self.released_until(design) < end {
                return Err(BucketError::Unavailable(release_ms));
            }
        }
        let answer = self
            .cache
            .get_or_build(AnswerKey::Design { design, end }, || async move {
                self.load_bucket(design, end)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| BucketError::Internal(DesignError::Shared(e)))?;
        match &*answer {
            Answer::Design(b) => Ok(Arc::clone(b)),
            Answer::Gaen(_) => Err(BucketError::Internal(DesignError::Shared(
                "cache entry of another kind".into(),
            ))),
        }
    }

    /// Delete uploads and buckets past retention from the database and from memory.
    pub async fn enforce_retention(
        &self,
        now: UnixTime,
    ) -> Result<DesignRetentionReport, DesignError> {
        let cutoff = now.0.saturating_sub(self.settings.timing.retention_seconds);
        let report = self.db.delete_design_data_older_than(cutoff).await?;
        self.cache
            .retain(|k| !matches!(k, AnswerKey::Design { end, .. } if *end < cutoff));
        Ok(report)
    }

    /// Release every design's ended buckets (errors are logged and counted).
    pub async fn advance_all(&self, now: UnixTime) {
        for d in Design::ALL {
            // Logged and counted inside; retried on the next tick or request.
            let _ = self.advance(d, now).await;
        }
    }
}
