//! Queries of the three DP-3T designs (low-cost, unlinkable, hybrid): uploads, claims,
//! published buckets and their release state (tables of the `*_dp3t_designs` migration).
//!
//! A design is named by its string (`"lowcost"`, `"unlinkable"`, `"hybrid"`), so this
//! module does not depend on the publisher's types. One accepted upload is one row whose
//! `entries` holds its fixed-size binary records, so that a bucket of ten thousand
//! uploads is ten thousand rows, not millions.
//!
//! Releasing is done in two steps so that building a large bucket never holds a lock:
//!
//! 1. [`Db::claim_design_uploads`] — one short transaction, serialised per design (the
//!    single SQLite writer, or `SELECT … FOR UPDATE` on PostgreSQL): every unclaimed row
//!    received up to the target gets its bucket, `max(received_at, first bucket end after
//!    claimed_until)` — so a row whose insert committed after its own bucket was claimed
//!    goes into the next one — and `claimed_until` advances.
//! 2. The caller builds every claimed bucket not yet stored
//!    ([`Db::pending_design_buckets`], [`Db::design_bucket_entries`]), stores it with
//!    [`Db::insert_design_bucket`] (the first copy wins if two nodes race; the bodies are
//!    the same), then advances `released_until` ([`Db::set_design_released`]).
//!
//! A crash between the steps leaves claimed rows without a bucket; the next release
//! builds them. Buckets at or before `released_until` never change.

use sqlx::Row;

use super::{to_i64, to_u64, Db, DbError, DbResult, StoreOutcome};

/// Run `$body` with `$p` bound to the pool used for writes and transactions.
macro_rules! design_write {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Sqlite { write: $p, .. } => $body,
            Db::Postgres($p) => $body,
        }
    };
}

/// Run `$body` with `$p` bound to the pool used for reads.
macro_rules! design_read {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Sqlite { read: $p, .. } => $body,
            Db::Postgres($p) => $body,
        }
    };
}

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

/// Where a design's releases stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesignReleaseState {
    /// Uploads received up to here are assigned to buckets.
    pub claimed_until: u64,
    /// Buckets ending up to here are built and stored.
    pub released_until: u64,
}

/// Rows removed by [`Db::delete_design_data_older_than`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DesignRetentionReport {
    /// Upload rows deleted.
    pub uploads: u64,
    /// Buckets deleted.
    pub buckets: u64,
}

const SELECT_STATE: &str =
    "SELECT claimed_until, released_until FROM design_release_state WHERE design = $1";
const LOCK_STATE_PG: &str =
    "SELECT claimed_until, released_until FROM design_release_state WHERE design = $1 FOR UPDATE";
/// The claim of a design's records received up to `$3`, each to the bucket
/// `max(received_at, $2)`: deleted and written again **in random order** with new ids (see
/// `CLAIM_KEYS_SQLITE` in the parent module): until the claim, the records of one upload
/// sit together in arrival order; afterwards nothing groups them. SQLite through a
/// temporary table in memory, PostgreSQL in one statement.
const CLAIM_SQLITE: [&str; 5] = [
    "CREATE TEMP TABLE IF NOT EXISTS claimed_records (design TEXT, entries BLOB, \
     entry_count INTEGER, received_at INTEGER)",
    "INSERT INTO temp.claimed_records SELECT design, entries, entry_count, received_at \
     FROM design_uploads WHERE design = $1 AND bucket_end IS NULL AND received_at <= $2",
    "DELETE FROM design_uploads WHERE design = $1 AND bucket_end IS NULL AND received_at <= $2",
    "INSERT INTO design_uploads (design, entries, entry_count, received_at, bucket_end) \
     SELECT design, entries, entry_count, received_at, \
     CASE WHEN received_at > $1 THEN received_at ELSE $1 END \
     FROM temp.claimed_records ORDER BY random()",
    "DELETE FROM temp.claimed_records",
];
/// [`CLAIM_SQLITE`] on PostgreSQL.
const CLAIM_PG: &str = "WITH moved AS (DELETE FROM design_uploads \
     WHERE design = $1 AND bucket_end IS NULL AND received_at <= $3 \
     RETURNING design, entries, entry_count, received_at) \
     INSERT INTO design_uploads (design, entries, entry_count, received_at, bucket_end) \
     SELECT design, entries, entry_count, received_at, \
     CASE WHEN received_at > $2 THEN received_at ELSE $2 END FROM moved ORDER BY random()";
const SET_CLAIMED: &str = "UPDATE design_release_state SET claimed_until = $2 WHERE design = $1";
const PENDING: &str = "SELECT DISTINCT u.bucket_end FROM design_uploads u \
     WHERE u.design = $1 AND u.bucket_end > $2 AND u.bucket_end <= $3 \
     AND NOT EXISTS (SELECT 1 FROM design_buckets b \
                     WHERE b.design = u.design AND b.bucket_end = u.bucket_end) \
     ORDER BY u.bucket_end";
const ENTRIES_PAGE: &str = "SELECT id, entries FROM design_uploads \
     WHERE design = $1 AND bucket_end = $2 AND id > $3 ORDER BY id LIMIT $4";
const INSERT_BUCKET: &str = "INSERT INTO design_buckets \
     (design, bucket_end, real_entries, total_entries, body, signature) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (design, bucket_end) DO NOTHING";
const SET_RELEASED: &str = "UPDATE design_release_state SET released_until = $2 \
     WHERE design = $1 AND released_until < $2";
const POPULATION: &str = "SELECT entries, COALESCE(bucket_end, received_at) FROM design_uploads \
     WHERE design = $1 AND COALESCE(bucket_end, received_at) > $2 \
     AND COALESCE(bucket_end, received_at) <= $3 ORDER BY random() LIMIT $4";
const SELECT_BUCKETS: &str =
    "SELECT bucket_end, real_entries, total_entries, body, signature FROM design_buckets \
     WHERE design = $1 AND bucket_end > $2 AND bucket_end <= $3 ORDER BY bucket_end";

/// The first bucket end strictly after `t`.
fn next_end(t: u64, len: u64) -> u64 {
    (t - t % len).saturating_add(len)
}

impl Db {
    /// Record the token's `jti` and, unless `upload` is `None` (a fake upload, or one
    /// whose entries were all dropped), insert the upload, in one transaction. A `jti`
    /// used before (by any API) writes nothing and gives [`StoreOutcome::Replayed`];
    /// otherwise `inserted` is the number of records stored.
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
        design_read!(self, p => sqlx::query(POPULATION)
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

    /// Where `design`'s releases stand.
    pub async fn design_release_state(&self, design: &str) -> DbResult<DesignReleaseState> {
        let (claimed, released): (i64, i64) = design_read!(self, p => {
            let row = sqlx::query(SELECT_STATE)
                .bind(design)
                .fetch_optional(p)
                .await?
                .ok_or(DbError::Corrupt("no release state row for the design"))?;
            (row.try_get(0)?, row.try_get(1)?)
        });
        Ok(DesignReleaseState {
            claimed_until: to_u64(claimed)?,
            released_until: to_u64(released)?,
        })
    }

    /// Assign every unclaimed upload of `design` received up to `target` (a bucket end of
    /// length `bucket_seconds`) to its bucket, and advance `claimed_until` to `target`.
    /// Returns the state after the call (unchanged if `claimed_until` was already there).
    pub async fn claim_design_uploads(
        &self,
        design: &str,
        bucket_seconds: u64,
        target: u64,
    ) -> DbResult<DesignReleaseState> {
        let target_i = to_i64(target)?;
        let lock = match self {
            Db::Sqlite { .. } => SELECT_STATE,
            Db::Postgres(_) => LOCK_STATE_PG,
        };
        let postgres = matches!(self, Db::Postgres(_));
        design_write!(self, p => {
            let mut tx = p.begin().await?;
            let row = sqlx::query(lock)
                .bind(design)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(DbError::Corrupt("no release state row for the design"))?;
            let mut state = DesignReleaseState {
                claimed_until: to_u64(row.try_get(0)?)?,
                released_until: to_u64(row.try_get(1)?)?,
            };
            if state.claimed_until >= target {
                tx.commit().await?;
                return Ok(state);
            }
            let first = to_i64(next_end(state.claimed_until, bucket_seconds.max(1)))?;
            if postgres {
                sqlx::query(CLAIM_PG)
                    .bind(design)
                    .bind(first)
                    .bind(target_i)
                    .execute(&mut *tx)
                    .await?;
            } else {
                let [create, copy, delete, insert, clear] = CLAIM_SQLITE;
                sqlx::query(create).execute(&mut *tx).await?;
                sqlx::query(copy).bind(design).bind(target_i).execute(&mut *tx).await?;
                sqlx::query(delete).bind(design).bind(target_i).execute(&mut *tx).await?;
                sqlx::query(insert).bind(first).execute(&mut *tx).await?;
                sqlx::query(clear).execute(&mut *tx).await?;
            }
            sqlx::query(SET_CLAIMED).bind(design).bind(target_i).execute(&mut *tx).await?;
            tx.commit().await?;
            state.claimed_until = target;
            Ok(state)
        })
    }

    /// Ends of the buckets of `design` in `(after, upto]` that have claimed uploads but are
    /// not stored yet, oldest first.
    pub async fn pending_design_buckets(
        &self,
        design: &str,
        after: u64,
        upto: u64,
    ) -> DbResult<Vec<u64>> {
        let (a, u) = (to_i64(after)?, to_i64(upto)?);
        design_read!(self, p => sqlx::query(PENDING)
            .bind(design)
            .bind(a)
            .bind(u)
            .fetch_all(p)
            .await?
            .into_iter()
            .map(|r| to_u64(r.try_get(0)?))
            .collect())
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
        design_read!(self, p => sqlx::query(ENTRIES_PAGE)
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
        design_write!(self, p => {
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

    /// Advance `design`'s `released_until` to `until` (never backwards).
    pub async fn set_design_released(&self, design: &str, until: u64) -> DbResult<()> {
        let u = to_i64(until)?;
        design_write!(self, p => {
            sqlx::query(SET_RELEASED).bind(design).bind(u).execute(p).await?;
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
        design_read!(self, p => sqlx::query(SELECT_BUCKETS)
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
        let v: i64 = design_read!(self, p => sqlx::query("SELECT COUNT(*) FROM design_uploads WHERE design = $1")
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
        design_write!(self, p => {
            let uploads = sqlx::query("DELETE FROM design_uploads WHERE received_at < $1")
                .bind(c).execute(p).await?.rows_affected();
            let buckets = sqlx::query("DELETE FROM design_buckets WHERE bucket_end < $1")
                .bind(c).execute(p).await?.rows_affected();
            Ok(DesignRetentionReport { uploads, buckets })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn temp_db() -> (Db, std::path::PathBuf) {
        crate::db::tests::temp_db_named("dp3t-designs-db").await
    }

    fn upload(design: &'static str, byte: u8, received_at: u64) -> DesignUploadRow {
        DesignUploadRow {
            design,
            entries: vec![byte; 32],
            entry_count: 1,
            received_at,
        }
    }

    async fn entries(db: &Db, design: &str, end: u64) -> Vec<u8> {
        db.design_bucket_entries(design, end, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e[0])
            .collect()
    }

    #[tokio::test]
    async fn claims_assign_buckets_once_and_late_rows_go_to_the_next() {
        let (db, dir) = temp_db().await;
        let u = "unlinkable";
        for (jti, byte, at) in [(1u8, 1u8, 10u64), (2, 2, 20), (3, 3, 30)] {
            let out = db
                .store_design_upload(&[jti; 32], 99, Some(&upload(u, byte, at)))
                .await
                .unwrap();
            assert_eq!(out, StoreOutcome::Stored { inserted: 1 });
        }
        // A replayed token stores nothing, whatever the design.
        assert_eq!(
            db.store_design_upload(&[1; 32], 99, Some(&upload("hybrid", 9, 10)))
                .await
                .unwrap(),
            StoreOutcome::Replayed { same_body: true }
        );
        assert_eq!(db.count_design_uploads("hybrid").await.unwrap(), 0);
        // A fake upload records only the token.
        assert_eq!(
            db.store_design_upload(&[4; 32], 99, None).await.unwrap(),
            StoreOutcome::Stored { inserted: 0 }
        );

        let s = db.claim_design_uploads(u, 10, 20).await.unwrap();
        assert_eq!((s.claimed_until, s.released_until), (20, 0));
        assert_eq!(
            db.pending_design_buckets(u, 0, 20).await.unwrap(),
            vec![10, 20]
        );
        assert_eq!(entries(&db, u, 10).await, vec![1]);
        assert_eq!(entries(&db, u, 20).await, vec![2]);
        // Other designs are untouched.
        assert_eq!(
            db.design_release_state("lowcost")
                .await
                .unwrap()
                .claimed_until,
            0
        );

        // A row received in bucket 20 that committed after the claim goes to bucket 30.
        db.store_design_upload(&[5; 32], 99, Some(&upload(u, 5, 20)))
            .await
            .unwrap();
        let bucket = |end: u64| DesignBucketRecord {
            end,
            real_entries: 1,
            total_entries: 1,
            body: vec![end as u8],
            signature: format!("s{end}"),
        };
        db.insert_design_bucket(u, &bucket(10)).await.unwrap();
        // The first stored copy wins.
        let mut other = bucket(10);
        other.body = vec![0xff];
        db.insert_design_bucket(u, &other).await.unwrap();
        assert_eq!(db.pending_design_buckets(u, 0, 20).await.unwrap(), vec![20]);
        db.insert_design_bucket(u, &bucket(20)).await.unwrap();
        db.set_design_released(u, 20).await.unwrap();
        db.set_design_released(u, 10).await.unwrap(); // never backwards
        assert_eq!(
            db.design_release_state(u).await.unwrap(),
            DesignReleaseState {
                claimed_until: 20,
                released_until: 20
            }
        );

        db.claim_design_uploads(u, 10, 30).await.unwrap();
        let mut late = entries(&db, u, 30).await;
        late.sort_unstable();
        assert_eq!(late, vec![3, 5]);
        let stored = db.design_buckets_between(u, 0, 30).await.unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].body, vec![10]);

        let gone = db.delete_design_data_older_than(20).await.unwrap();
        assert_eq!(
            gone,
            DesignRetentionReport {
                uploads: 1,
                buckets: 1
            }
        );
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
