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
//! Every bucket, with or without real entries, is built once after it ends: its rows are
//! claimed, its entries padded ([`build::padded_count`]) with random entries of the
//! right form dated like the real entries of the retention window ([`build::DatePrior`]),
//! shuffled (lists) or hashed into a DPCF filter (§4.1), signed (§9.5, with
//! `batch-release-time`), stored in `design_buckets` and kept in memory
//! ([`crate::db::designs`] describes the two-step claim). The padding comes from fresh
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

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;
use dp3t_core::signing::{verify_response, SigningKey};
use dp3t_core::time::UnixTime;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::cache::{Answer, AnswerKey, DownloadCache};
use crate::config::Config;
use crate::db::designs::{DesignBucketRecord, DesignRetentionReport};
use crate::db::{Db, DbError};
use crate::publish::{bucket_floor, RETRY_AFTER_FAILURE};
use build::{build_body, BuildError, BuildParams, DatePrior, RealEntries};

/// At most this many bucket ends are built by one release after downtime; older ones
/// are built on their first request.
pub const MAX_CATCH_UP_BUCKETS: u64 = 256;
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

    /// Name in the database and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Design::LowCost => "lowcost",
            Design::Unlinkable => "unlinkable",
            Design::Hybrid => "hybrid",
        }
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
    /// Bucket length in seconds.
    pub bucket_seconds: u64,
    /// Retention in seconds.
    pub retention_seconds: u64,
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
            bucket_seconds: config.release_bucket_seconds,
            retention_seconds: config.retention_seconds(),
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
            retention_seconds: self.retention_seconds,
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

/// Counters of the design endpoints, rendered after the GAEN ones at `/metrics`.
#[derive(Debug, Default)]
pub struct DesignMetrics {
    buckets_built: [AtomicU64; 3],
    release_failures: [AtomicU64; 3],
}

impl DesignMetrics {
    /// Buckets with uploads built by this node so far.
    pub fn buckets_built(&self, design: Design) -> u64 {
        self.buckets_built[design.index()].load(Relaxed)
    }

    /// The Prometheus text exposition of these counters.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048);
        let mut family = |name: &str, help: &str, f: &dyn Fn(&mut String, &str, usize)| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for d in Design::ALL {
                f(&mut s, d.name(), d.index());
            }
        };
        family(
            "dp3t_design_buckets_built_total",
            "Release buckets with uploads built by this node.",
            &|s, name, i| {
                let _ = writeln!(
                    s,
                    "dp3t_design_buckets_built_total{{design=\"{name}\"}} {}",
                    self.buckets_built[i].load(Relaxed)
                );
            },
        );
        family(
            "dp3t_design_release_failures_total",
            "Failed attempts to release a bucket of a design.",
            &|s, name, i| {
                let _ = writeln!(
                    s,
                    "dp3t_design_release_failures_total{{design=\"{name}\"}} {}",
                    self.release_failures[i].load(Relaxed)
                );
            },
        );
        s
    }
}

struct DesignState {
    design: Design,
    /// Every bucket ending up to here is released (stored in the database).
    released: AtomicU64,
    /// Serialises releases of this design on this node; holds the last failure time.
    advancing: tokio::sync::Mutex<Option<Instant>>,
}

/// The publisher of the three designs: owns their in-memory release state on this node.
pub struct DesignPublisher {
    db: Db,
    key: SigningKey,
    settings: DesignSettings,
    states: [DesignState; 3],
    metrics: DesignMetrics,
    /// Bodies served from memory, under the node's one byte bound (shared with GAEN);
    /// the database holds every released bucket.
    cache: Arc<DownloadCache>,
    /// The last release of some design failed (cleared when that design next succeeds).
    failing: [AtomicBool; 3],
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
        cache: Arc<DownloadCache>,
        now: UnixTime,
    ) -> Result<DesignPublisher, DesignError> {
        let state = |design| DesignState {
            design,
            released: AtomicU64::new(0),
            advancing: tokio::sync::Mutex::new(None),
        };
        let publisher = DesignPublisher {
            db,
            key,
            settings,
            states: [
                state(Design::LowCost),
                state(Design::Unlinkable),
                state(Design::Hybrid),
            ],
            metrics: DesignMetrics::default(),
            cache,
            failing: Default::default(),
        };
        publisher.enforce_retention(now).await?;
        for d in Design::ALL {
            publisher.advance(d, now).await?;
        }
        Ok(publisher)
    }

    /// The settings.
    pub fn settings(&self) -> &DesignSettings {
        &self.settings
    }

    /// The counters.
    pub fn metrics(&self) -> &DesignMetrics {
        &self.metrics
    }

    /// Whether the last release attempt of some design failed: `/healthz` reports the
    /// node degraded.
    pub fn publication_failing(&self) -> bool {
        self.failing.iter().any(|f| f.load(Relaxed))
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Buckets of `design` ending up to this time are released on this node.
    pub fn released_until(&self, design: Design) -> u64 {
        self.states[design.index()].released.load(Relaxed)
    }

    /// Release every bucket of `design` that has ended at `now`, if this node has not
    /// yet. Serialised per design and node; after a failure, calls within a second return
    /// without trying (the caller sees that `released_until` did not advance).
    pub async fn advance(&self, design: Design, now: UnixTime) -> Result<(), DesignError> {
        let st = &self.states[design.index()];
        let target = bucket_floor(now.0, self.settings.bucket_seconds);
        if st.released.load(Relaxed) >= target {
            return Ok(());
        }
        let mut last_failure = st.advancing.lock().await;
        if st.released.load(Relaxed) >= target
            || last_failure.is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE)
        {
            return Ok(());
        }
        match self.advance_locked(st, target).await {
            Ok(()) => {
                *last_failure = None;
                self.failing[design.index()].store(false, Relaxed);
                Ok(())
            }
            Err(e) => {
                *last_failure = Some(Instant::now());
                self.failing[design.index()].store(true, Relaxed);
                self.metrics.release_failures[design.index()].fetch_add(1, Relaxed);
                tracing::error!(design = design.name(), error = %e, bucket_end = target, "releasing a bucket failed");
                Err(e)
            }
        }
    }

    async fn advance_locked(&self, st: &DesignState, target: u64) -> Result<(), DesignError> {
        let name = st.design.name();
        let mut state = self.db.design_release_state(name).await?;
        if state.released_until < target {
            if state.claimed_until < target {
                state = self
                    .db
                    .claim_design_uploads(name, self.settings.bucket_seconds, target)
                    .await?;
            }
            // Every bucket end is published, with real entries or not; after downtime (or
            // on a fresh database) only the last MAX_CATCH_UP_BUCKETS of them.
            let len = self.settings.bucket_seconds.max(1);
            let claimed = state.claimed_until;
            let floor = if state.released_until == 0 {
                claimed.saturating_sub(len)
            } else {
                state.released_until
            }
            .max(claimed.saturating_sub(MAX_CATCH_UP_BUCKETS.saturating_mul(len)));
            let mut pending: std::collections::BTreeSet<u64> = (1..)
                .map(|i: u64| floor - floor % len + i.saturating_mul(len))
                .take_while(|e| *e <= claimed)
                .collect();
            pending.extend(
                self.db
                    .pending_design_buckets(name, state.released_until, claimed)
                    .await?,
            );
            let stored: std::collections::BTreeSet<u64> = self
                .db
                .design_buckets_between(name, state.released_until, claimed)
                .await?
                .into_iter()
                .map(|b| b.end)
                .collect();
            for end in pending.difference(&stored).copied() {
                let built = self.build_stored(st.design, end).await?;
                self.db.insert_design_bucket(name, &built).await?;
                // Likely asked for soon; what another node stored first is served instead.
                self.cache.retain(|k| {
                    *k != AnswerKey::Design {
                        design: st.design,
                        end,
                    }
                });
                self.metrics.buckets_built[st.design.index()].fetch_add(1, Relaxed);
                tracing::info!(
                    design = name,
                    bucket_end = end,
                    entries = built.real_entries,
                    published = built.total_entries,
                    bytes = built.body.len(),
                    "bucket released"
                );
            }
            self.db
                .set_design_released(name, state.claimed_until)
                .await?;
            state.released_until = state.claimed_until;
        }
        if state.released_until > st.released.load(Relaxed) {
            st.released.store(state.released_until, Relaxed);
        }
        Ok(())
    }

    /// Build the bucket of `design` ending at `end` from its claimed uploads (off the
    /// async threads: a large filter takes seconds).
    async fn build_stored(
        &self,
        design: Design,
        end: u64,
    ) -> Result<DesignBucketRecord, DesignError> {
        let mut real = RealEntries::empty(design);
        let mut after = 0;
        loop {
            let page = self
                .db
                .design_bucket_entries(design.name(), end, after)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, entries) in &page {
                real.extend_from_stored(entries);
            }
        }
        let prior = self.date_prior(design, end).await?;
        let params = self.settings.build_params(design);
        let key = self.key.clone();
        let built = tokio::task::spawn_blocking(move || {
            let mut rng = ChaCha20Rng::from_entropy();
            build_body(end, real, &params, &prior, &key, &mut rng)
        })
        .await
        .map_err(|e| DesignError::Task(e.to_string()))??;
        Ok(DesignBucketRecord {
            end,
            real_entries: built.real_entries,
            total_entries: built.total_entries,
            body: built.body,
            signature: built.signature,
        })
    }

    /// How the real entries of `design` published in the retention window before `end`
    /// (and in it) were dated: a random sample of stored uploads.
    async fn date_prior(&self, design: Design, end: u64) -> Result<DatePrior, DesignError> {
        let after = end.saturating_sub(self.settings.retention_seconds);
        let mut prior = DatePrior::default();
        for (entries, bucket_end) in self
            .db
            .design_population(design.name(), after, end, POPULATION_SAMPLE)
            .await?
        {
            prior.add_stored(design, &entries, bucket_end);
        }
        Ok(prior)
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
                let built = self.build_stored(design, end).await?;
                self.db.insert_design_bucket(name, &built).await?;
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
        let len = self.settings.bucket_seconds;
        let len_ms = len.saturating_mul(1000);
        if !release_ms.is_multiple_of(len_ms) {
            return Err(BucketError::NotOnBoundary(release_ms, len_ms));
        }
        let end = release_ms / 1000;
        if end > now.0 {
            return Err(BucketError::InFuture(release_ms));
        }
        if end < now.0.saturating_sub(self.settings.retention_seconds) {
            return Err(BucketError::Expired(release_ms));
        }
        let st = &self.states[design.index()];
        if st.released.load(Relaxed) < end {
            if let Err(e) = self.advance(design, now).await {
                tracing::warn!(design = design.name(), error = %e, "serving the last released state");
            }
            if st.released.load(Relaxed) < end {
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
        let cutoff = now.0.saturating_sub(self.settings.retention_seconds);
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
