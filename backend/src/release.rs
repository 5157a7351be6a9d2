//! The one release engine of the four schemes (PROTOCOL.md §10).
//!
//! Time is cut into buckets of `DP3T_RELEASE_BUCKET_SECONDS`, aligned to unix 0 and named
//! by their **end**. Once a bucket has ended, a [`Releaser`] releases it, whatever the
//! scheme, in the same three steps:
//!
//! 1. **Claim** ([`Db::claim`]): one short transaction assigns every row due by the bucket
//!    end to its bucket and rewrites the claimed rows in random order.
//! 2. **Build**, off the async workers: for every claimed bucket not yet stored, and every
//!    empty bucket end since the last release (at most [`MAX_CATCH_UP_BUCKETS`] after
//!    downtime), the scheme's [`BucketBuilder`] loads the claimed rows and a sample of the
//!    retention window to date the padding, then pads, encodes and signs the body on a
//!    blocking thread.
//! 3. **Store and install**: the body is stored (the database is the source of truth; if
//!    two nodes build the same bucket, the first stored copy wins and both serve it),
//!    `released_until` advances in the database, the builder installs the new range in
//!    memory, and only then does the node announce it.
//!
//! Each scheme contributes only a [`BucketBuilder`]: the GAEN export
//! ([`crate::publish`]), the low-cost list, the DPCF filter and the hybrid list
//! ([`crate::designs`]). Releases of one scheme are serialised per node; a failure is
//! logged, counted (`dp3t_bucket_release_failures_total{scheme}`), marks the node degraded
//! for `/healthz`, and is retried after [`RETRY_AFTER_FAILURE`] while the node serves its
//! last state, which is still correct, just older. Nodes learn of releases by their own
//! clock: the first request after a bucket end, or the one background ticker
//! ([`crate::server::ticker`]), releases it or finds that another node did.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dp3t_core::engine::Scheme;
use dp3t_core::time::UnixTime;

use crate::config::Timing;
use crate::db::{scheme_name, Db, DbError, DbResult};
use crate::metrics::Metrics;

/// After a failed release, requests serve the last state for this long before retrying.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// How often the ticker deletes data past retention (all schemes).
pub const RETENTION_INTERVAL_SECS: u64 = 3_600;
/// At most this many empty bucket ends are built by one release after downtime; buckets
/// with claimed rows are always built.
pub const MAX_CATCH_UP_BUCKETS: u64 = 256;

/// End of the newest bucket that has ended at `now`.
pub fn bucket_floor(now: u64, len: u64) -> u64 {
    now - now % len
}

/// The smallest bucket end at or after `t`.
pub fn bucket_ceil(t: u64, len: u64) -> u64 {
    match t % len {
        0 => t,
        r => t.saturating_add(len - r),
    }
}

/// Why a release failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Encoding, filter construction or signing failed.
    #[error("building a bucket: {0}")]
    Core(#[from] dp3t_core::Error),
    /// A build task panicked or was cancelled.
    #[error("bucket build task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What one stored bucket holds, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltSummary {
    /// Real entries.
    pub real: u64,
    /// Entries including padding.
    pub published: u64,
    /// Bytes of the body.
    pub bytes: usize,
}

/// What a scheme contributes to the release engine.
pub trait BucketBuilder: Send + Sync + 'static {
    /// What building one bucket needs, loaded from the database.
    type Input: Send + 'static;
    /// A built bucket, ready to store.
    type Built: Send + 'static;

    /// The scheme.
    fn scheme(&self) -> Scheme;

    /// Load the claimed rows of the bucket ending at `end`, and what its padding is dated
    /// from.
    fn load(
        &self,
        db: &Db,
        end: u64,
    ) -> impl Future<Output = Result<Self::Input, ReleaseError>> + Send;

    /// Pad, encode and sign the bucket ending at `end` (on a blocking thread). `None`:
    /// nothing to publish (padding off and no real entry).
    fn build(&self, end: u64, input: Self::Input) -> Result<Option<Self::Built>, ReleaseError>;

    /// Store a built bucket; a copy stored first (by another node) wins.
    fn store(&self, db: &Db, built: &Self::Built) -> impl Future<Output = DbResult<()>> + Send;

    /// What `built` holds, for the log.
    fn summary(built: &Self::Built) -> BuiltSummary;

    /// Make the buckets released in `(from, to]` servable on this node, before the node
    /// announces `to`. By default nothing: bodies are read from the database on a miss.
    fn install(
        &self,
        _db: &Db,
        _from: u64,
        _to: u64,
    ) -> impl Future<Output = Result<(), ReleaseError>> + Send {
        async { Ok(()) }
    }
}

/// The releases of one scheme on this node.
pub struct Releaser<B> {
    db: Db,
    builder: Arc<B>,
    timing: Timing,
    metrics: Arc<Metrics>,
    /// Every bucket ending up to here is released and installed on this node.
    released: AtomicU64,
    /// Serialises releases on this node; holds the time of the last failure.
    advancing: tokio::sync::Mutex<Option<Instant>>,
    /// The last release failed (cleared by the next success).
    failing: AtomicBool,
}

impl<B: BucketBuilder> std::fmt::Debug for Releaser<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Releaser")
            .field("scheme", &self.builder.scheme())
            .field("released_until", &self.released_until())
            .finish_non_exhaustive()
    }
}

impl<B: BucketBuilder> Releaser<B> {
    /// The releaser of `builder`'s scheme over `db`. Call [`Releaser::advance`] once
    /// before serving.
    pub fn new(db: Db, builder: B, timing: Timing, metrics: Arc<Metrics>) -> Self {
        Releaser {
            db,
            builder: Arc::new(builder),
            timing,
            metrics,
            released: AtomicU64::new(0),
            advancing: tokio::sync::Mutex::new(None),
            failing: AtomicBool::new(false),
        }
    }

    /// The scheme's builder.
    pub fn builder(&self) -> &B {
        &self.builder
    }

    /// The timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Buckets ending up to this time are released and installed on this node.
    pub fn released_until(&self) -> u64 {
        self.released.load(Ordering::Acquire)
    }

    /// Whether the last release attempt failed.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Release every bucket that has ended by `now`, if this node has not yet. After a
    /// failure, calls within [`RETRY_AFTER_FAILURE`] return at once without trying (the
    /// caller sees that `released_until` did not advance).
    pub async fn advance(&self, now: UnixTime) -> Result<(), ReleaseError> {
        let target = bucket_floor(now.0, self.timing.bucket_seconds.max(1));
        if self.released_until() >= target {
            return Ok(());
        }
        let mut last_failure = self.advancing.lock().await;
        if self.released_until() >= target
            || last_failure.is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE)
        {
            return Ok(());
        }
        match self.advance_locked(target).await {
            Ok(()) => {
                *last_failure = None;
                self.failing.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                *last_failure = Some(Instant::now());
                self.failing.store(true, Ordering::Relaxed);
                let scheme = self.builder.scheme();
                self.metrics.bucket_failed(scheme);
                tracing::error!(scheme = scheme_name(scheme), error = %e, bucket_end = target, "releasing a bucket failed");
                Err(e)
            }
        }
    }

    async fn advance_locked(&self, target: u64) -> Result<(), ReleaseError> {
        let scheme = self.builder.scheme();
        let len = self.timing.bucket_seconds.max(1);
        let known = self.released_until();
        let mut state = self.db.release_state(scheme).await?;
        if state.released_until < target {
            if state.claimed_until < target {
                let retention_start = target.saturating_sub(self.timing.retention_seconds);
                state = self.db.claim(scheme, len, retention_start, target).await?;
            }
            let claimed = state.claimed_until;
            // Every bucket end is published, with real entries or not; after downtime (or
            // on a fresh database) only the last MAX_CATCH_UP_BUCKETS empty ones.
            let floor = if state.released_until == 0 {
                claimed.saturating_sub(len)
            } else {
                state.released_until
            }
            .max(claimed.saturating_sub(MAX_CATCH_UP_BUCKETS.saturating_mul(len)));
            let mut pending: BTreeSet<u64> = (1..)
                .map(|i: u64| bucket_floor(floor, len).saturating_add(i.saturating_mul(len)))
                .take_while(|e| *e <= claimed)
                .collect();
            pending.extend(
                self.db
                    .pending_buckets(scheme, state.released_until, claimed)
                    .await?,
            );
            let stored: BTreeSet<u64> = self
                .db
                .stored_bucket_ends(scheme, state.released_until, claimed)
                .await?
                .into_iter()
                .collect();
            for end in pending.difference(&stored).copied() {
                self.build_and_store(end).await?;
            }
            self.db.set_released(scheme, claimed).await?;
            state.released_until = claimed;
        }
        if state.released_until > known {
            self.builder
                .install(&self.db, known, state.released_until)
                .await?;
            self.released.store(state.released_until, Ordering::Release);
        }
        Ok(())
    }

    /// Build the bucket ending at `end` from its claimed rows and store it (the first
    /// stored copy wins). Releases call it; so does a first request for a bucket that no
    /// release built (older than a catch-up after downtime).
    pub async fn build_and_store(&self, end: u64) -> Result<(), ReleaseError> {
        let input = self.builder.load(&self.db, end).await?;
        let builder = Arc::clone(&self.builder);
        let built = tokio::task::spawn_blocking(move || builder.build(end, input)).await??;
        let Some(built) = built else { return Ok(()) };
        self.builder.store(&self.db, &built).await?;
        let scheme = self.builder.scheme();
        self.metrics.bucket_built(scheme);
        let s = B::summary(&built);
        tracing::info!(
            scheme = scheme_name(scheme),
            bucket_end = end,
            entries = s.real,
            published = s.published,
            bytes = s.bytes,
            "bucket released"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_arithmetic() {
        assert_eq!(bucket_floor(7_205, 7_200), 7_200);
        assert_eq!(bucket_floor(7_200, 7_200), 7_200);
        assert_eq!(bucket_ceil(7_200, 7_200), 7_200);
        assert_eq!(bucket_ceil(7_201, 7_200), 14_400);
        assert_eq!(bucket_ceil(0, 5), 0);
    }
}
