//! Queries of the three DP-3T designs (low-cost, unlinkable, hybrid): uploads, claims,
//! published buckets and their release state (tables of the `*_dp3t_designs` migration).
//!
//! A design is named by its string (`"lowcost"`, `"unlinkable"`, `"hybrid"`), so this
//! module does not depend on the publisher's types. One accepted upload is one row whose
//! `entries` holds its fixed-size binary records, so that a bucket of ten thousand
//! uploads is ten thousand rows, not millions.
//!
//! Their claims and release state are the one release protocol of [`super::release`].

use sqlx::Row;

use super::{to_i64, to_u64, Db, DbError, DbResult, StoreOutcome};

/// Largest number of upload rows read at once while loading a bucket's entries.
pub const ENTRY_PAGE_ROWS: i64 = 1_000;

/// One accepted real upload of a design, ready to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesignUploadRow {
    /// `"lowcost"`, `"unlinkable"` or `"hybrid"`.
    pub design: &'static str,
    /// The records, concatenated.
    pub entries: Vec<u8>,
    /// Number of records in `entries`.
    pub entry_count: u64,
    /// End of the release bucket the upload arrived in (unix seconds).
    pub received_at: u64,
}

/// A stored bucket of a design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesignBucketRecord {
    /// Bucket end (release time), unix seconds.
    pub end: u64,
    /// Real entries.
    pub real_entries: u64,
    /// Entries including padding.
    pub total_entries: u64,
    /// Published body.
    pub body: Vec<u8>,
    /// `Signature` header value.
    pub signature: String,
}

/// Rows removed by [`Db::delete_design_data_older_than`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DesignRetentionReport {
    /// Upload rows deleted.
    pub uploads: u64,
    /// Buckets deleted.
    pub buckets: u64,
}

const ENTRIES_PAGE: &str = "SELECT id, entries FROM design_uploads \
     WHERE design = $1 AND bucket_end = $2 AND id > $3 ORDER BY id LIMIT $4";
const INSERT_BUCKET: &str = "INSERT INTO design_buckets \
     (design, bucket_end, real_entries, total_entries, body, signature) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (design, bucket_end) DO NOTHING";
const POPULATION: &str = "SELECT entries, COALESCE(bucket_end, received_at) FROM design_uploads \
     WHERE design = $1 AND COALESCE(bucket_end, received_at) > $2 \
     AND COALESCE(bucket_end, received_at) <= $3 ORDER BY random() LIMIT $4";
const SELECT_BUCKETS: &str =
    "SELECT bucket_end, real_entries, total_entries, body, signature FROM design_buckets \
     WHERE design = $1 AND bucket_end > $2 AND bucket_end <= $3 ORDER BY bucket_end";

impl Db {
    /// Record the token's `jti` and, unless `upload` is `None` (a fake upload, or one
    /// whose entries were all dropped), insert the upload, in one transaction. A `jti`
    /// used before (by any API) writes nothing and gives [`StoreOutcome::Replayed`].
    pub async fn store_design_upload(
        &self,
        jti_hash: &[u8; 32],
        expires_at: u64,
        upload: Option<&DesignUploadRow>,
    ) -> DbResult<StoreOutcome> {
        // The one write path of uploads (the group-commit writer's).
        let record = super::UploadRecord {
            jti_hash: *jti_hash,
            expires_at,
            body_digest: *jti_hash,
            keys: Vec::new(),
            design: upload.cloned(),
        };
        let mut out = self.store_uploads(std::slice::from_ref(&record)).await?;
        out.pop().ok_or(DbError::Corrupt("no outcome"))
    }

    /// A random sample of at most `limit` stored uploads of `design` published in
    /// `(after, upto]` (claimed by a bucket, or received, in that range): their records
    /// and the end of the bucket that publishes them. Padding is dated from it.
    pub async fn design_population(
        &self,
        design: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> DbResult<Vec<(Vec<u8>, u64)>> {
        let (a, u) = (to_i64(after)?, to_i64(upto)?);
        on_read!(self, p => sqlx::query(POPULATION)
            .bind(design)
            .bind(a)
            .bind(u)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
            .into_iter()
            .map(|r| Ok((r.try_get(0)?, to_u64(r.try_get(1)?)?)))
            .collect())
    }

    /// The stored bucket of `design` ending at `end`, if any.
    pub async fn design_bucket(
        &self,
        design: &str,
        end: u64,
    ) -> DbResult<Option<DesignBucketRecord>> {
        let mut rows = self
            .design_buckets_between(design, end.saturating_sub(1), end)
            .await?;
        Ok(rows.pop().filter(|r| r.end == end))
    }

    /// One page of the stored entries of the uploads claimed by `design`'s bucket ending at
    /// `end`: rows with an id above `after_id`, in id order, at most [`ENTRY_PAGE_ROWS`].
    /// Returns `(last id, entries)` pairs; an empty page means the end.
    pub async fn design_bucket_entries(
        &self,
        design: &str,
        end: u64,
        after_id: i64,
    ) -> DbResult<Vec<(i64, Vec<u8>)>> {
        let e = to_i64(end)?;
        on_read!(self, p => sqlx::query(ENTRIES_PAGE)
            .bind(design)
            .bind(e)
            .bind(after_id)
            .bind(ENTRY_PAGE_ROWS)
            .fetch_all(p)
            .await?
            .into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect())
    }

    /// Store a built bucket; if another node stored this bucket first, keep that copy.
    pub async fn insert_design_bucket(
        &self,
        design: &str,
        bucket: &DesignBucketRecord,
    ) -> DbResult<()> {
        let (end, real, total) = (
            to_i64(bucket.end)?,
            to_i64(bucket.real_entries)?,
            to_i64(bucket.total_entries)?,
        );
        on_write!(self, p => {
            sqlx::query(INSERT_BUCKET)
                .bind(design)
                .bind(end)
                .bind(real)
                .bind(total)
                .bind(&bucket.body[..])
                .bind(&bucket.signature)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Stored buckets of `design` with `after < end <= upto`, oldest first.
    pub async fn design_buckets_between(
        &self,
        design: &str,
        after: u64,
        upto: u64,
    ) -> DbResult<Vec<DesignBucketRecord>> {
        let (a, u) = (to_i64(after)?, to_i64(upto)?);
        on_read!(self, p => sqlx::query(SELECT_BUCKETS)
            .bind(design)
            .bind(a)
            .bind(u)
            .fetch_all(p)
            .await?
            .into_iter()
            .map(|r| {
                Ok(DesignBucketRecord {
                    end: to_u64(r.try_get(0)?)?,
                    real_entries: to_u64(r.try_get(1)?)?,
                    total_entries: to_u64(r.try_get(2)?)?,
                    body: r.try_get(3)?,
                    signature: r.try_get(4)?,
                })
            })
            .collect())
    }

    /// Number of stored upload rows of `design` (published or not).
    pub async fn count_design_uploads(&self, design: &str) -> DbResult<u64> {
        let v: i64 = on_read!(self, p => sqlx::query("SELECT COUNT(*) FROM design_uploads WHERE design = $1")
            .bind(design)
            .fetch_one(p)
            .await?
            .try_get(0)?);
        to_u64(v)
    }

    /// Delete upload rows received, and buckets released, before `cutoff` (unix seconds).
    pub async fn delete_design_data_older_than(
        &self,
        cutoff: u64,
    ) -> DbResult<DesignRetentionReport> {
        let c = to_i64(cutoff)?;
        on_write!(self, p => {
            let uploads = sqlx::query("DELETE FROM design_uploads WHERE received_at < $1")
                .bind(c).execute(p).await?.rows_affected();
            let buckets = sqlx::query("DELETE FROM design_buckets WHERE bucket_end < $1")
                .bind(c).execute(p).await?.rows_affected();
            Ok(DesignRetentionReport { uploads, buckets })
        })
    }
}
