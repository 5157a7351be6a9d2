//! The release protocol of the database, the same for the four schemes (PROTOCOL.md §10):
//! one row of `release_states` per scheme, one claim, one list of buckets left to build.
//!
//! Releasing is done in two steps so that building a large bucket never holds a lock:
//!
//! 1. [`Db::claim`]: one short transaction, serialised per scheme (the single SQLite
//!    writer, or `SELECT … FOR UPDATE` on PostgreSQL). Every unclaimed row that is due by
//!    the target gets its bucket: `max(due, first bucket end after claimed_until)`, so that
//!    a row whose insert committed after its own bucket was claimed goes into the next
//!    one. "Due" is a GAEN key's `publish_at` (arrival and embargo, §10) and a design
//!    upload's `received_at`. The claimed rows are written again **in random order** with
//!    new ids: until the claim the rows of one upload sit together in arrival order,
//!    afterwards nothing groups them (ids, places in the file, and on PostgreSQL `xmin`).
//!    `claimed_until` advances to the target.
//! 2. The release engine ([`crate::release`]) builds every claimed bucket not yet stored
//!    ([`Db::pending_buckets`], and the empty bucket ends it pads), stores each (the first
//!    stored copy wins if two nodes race), then advances `released_until`
//!    ([`Db::set_released`]).
//!
//! A crash between the steps leaves claimed rows without a bucket; the next release builds
//! them. Buckets at or before `released_until` never change.

use dp3t_core::engine::Scheme;
use sqlx::Row;

use super::{to_i64, to_u64, BeginWrite, Db, DbError, DbResult};

/// The name of `scheme` in the database, the logs and the metrics.
pub fn scheme_name(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Gaen => "gaen",
        Scheme::LowCost => "lowcost",
        Scheme::Unlinkable => "unlinkable",
        Scheme::Hybrid => "hybrid",
    }
}

/// Where a scheme's releases stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseState {
    /// Rows due up to here are assigned to buckets.
    pub claimed_until: u64,
    /// Buckets ending up to here are built and stored.
    pub released_until: u64,
}

const SELECT_STATE: &str =
    "SELECT claimed_until, released_until FROM release_states WHERE scheme = $1";
const LOCK_STATE_PG: &str =
    "SELECT claimed_until, released_until FROM release_states WHERE scheme = $1 FOR UPDATE";
const SET_CLAIMED: &str = "UPDATE release_states SET claimed_until = $2 WHERE scheme = $1";
const SET_RELEASED: &str = "UPDATE release_states SET released_until = $2 \
     WHERE scheme = $1 AND released_until < $2";

/// The claim of GAEN keys due by `$1` whose validity began at or after the retention start
/// (`$2`, a rolling start number), each to the bucket `max(publish_at, $3)`: the due rows
/// leave `gaen_keys_incoming` (where uploads append them without an index) and go into
/// `gaen_keys` in random order, the first stored copy of a key only, and none of a key
/// published by an earlier bucket (the unique index, `ON CONFLICT DO NOTHING`). The first
/// copy is the one with the smallest id; a later copy of the same key was uploaded later,
/// so it is never due before the first. SQLite through a temporary table (in memory:
/// `temp_store`), PostgreSQL in one statement. The deleted rows are freed pages (SQLite,
/// with `secure_delete`) or dead tuples for VACUUM (PostgreSQL, docs/OPERATIONS.md).
const CLAIM_KEYS_SQLITE: [&str; 5] = [
    "CREATE TEMP TABLE IF NOT EXISTS claimed_keys (key_data BLOB, rolling_start_number \
     INTEGER, rolling_period INTEGER, transmission_risk_level INTEGER, days_since_onset \
     INTEGER, received_at INTEGER, publish_at INTEGER)",
    "INSERT INTO temp.claimed_keys SELECT key_data, rolling_start_number, rolling_period, \
     transmission_risk_level, days_since_onset, received_at, publish_at \
     FROM gaen_keys_incoming WHERE publish_at <= $1 AND rolling_start_number >= $2 \
     AND id IN (SELECT MIN(id) FROM gaen_keys_incoming \
                GROUP BY key_data, rolling_start_number)",
    "DELETE FROM gaen_keys_incoming WHERE publish_at <= $1 AND rolling_start_number >= $2",
    "INSERT INTO gaen_keys (key_data, rolling_start_number, rolling_period, \
     transmission_risk_level, days_since_onset, received_at, publish_at, bucket_end) \
     SELECT key_data, rolling_start_number, rolling_period, transmission_risk_level, \
     days_since_onset, received_at, publish_at, \
     CASE WHEN publish_at > $1 THEN publish_at ELSE $1 END \
     FROM temp.claimed_keys WHERE true ORDER BY random() \
     ON CONFLICT (key_data, rolling_start_number) DO NOTHING",
    "DELETE FROM temp.claimed_keys",
];
/// [`CLAIM_KEYS_SQLITE`] on PostgreSQL.
const CLAIM_KEYS_PG: &str = "WITH due AS (DELETE FROM gaen_keys_incoming \
     WHERE publish_at <= $1 AND rolling_start_number >= $2 \
     RETURNING id, key_data, rolling_start_number, rolling_period, transmission_risk_level, \
     days_since_onset, received_at, publish_at), \
     first AS (SELECT DISTINCT ON (key_data, rolling_start_number) key_data, \
     rolling_start_number, rolling_period, transmission_risk_level, days_since_onset, \
     received_at, publish_at FROM due ORDER BY key_data, rolling_start_number, id) \
     INSERT INTO gaen_keys (key_data, rolling_start_number, rolling_period, \
     transmission_risk_level, days_since_onset, received_at, publish_at, bucket_end) \
     SELECT key_data, rolling_start_number, rolling_period, transmission_risk_level, \
     days_since_onset, received_at, publish_at, \
     CASE WHEN publish_at > $3 THEN publish_at ELSE $3 END FROM first ORDER BY random() \
     ON CONFLICT (key_data, rolling_start_number) DO NOTHING";

/// The claim of a design's records received up to `$2`, each to the bucket
/// `max(received_at, $1)` (see [`CLAIM_KEYS_SQLITE`]).
const CLAIM_RECORDS_SQLITE: [&str; 5] = [
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
/// [`CLAIM_RECORDS_SQLITE`] on PostgreSQL.
const CLAIM_RECORDS_PG: &str = "WITH moved AS (DELETE FROM design_uploads \
     WHERE design = $1 AND bucket_end IS NULL AND received_at <= $3 \
     RETURNING design, entries, entry_count, received_at) \
     INSERT INTO design_uploads (design, entries, entry_count, received_at, bucket_end) \
     SELECT design, entries, entry_count, received_at, \
     CASE WHEN received_at > $2 THEN received_at ELSE $2 END FROM moved ORDER BY random()";

const PENDING_KEYS: &str = "SELECT DISTINCT k.bucket_end FROM gaen_keys k \
     WHERE k.bucket_end > $1 AND k.bucket_end <= $2 \
     AND NOT EXISTS (SELECT 1 FROM published_buckets b WHERE b.bucket_end = k.bucket_end) \
     ORDER BY k.bucket_end";
const PENDING_RECORDS: &str = "SELECT DISTINCT u.bucket_end FROM design_uploads u \
     WHERE u.design = $1 AND u.bucket_end > $2 AND u.bucket_end <= $3 \
     AND NOT EXISTS (SELECT 1 FROM design_buckets b \
                     WHERE b.design = u.design AND b.bucket_end = u.bucket_end) \
     ORDER BY u.bucket_end";
const STORED_GAEN: &str = "SELECT bucket_end FROM published_buckets \
     WHERE bucket_end > $1 AND bucket_end <= $2 ORDER BY bucket_end";
const STORED_DESIGN: &str = "SELECT bucket_end FROM design_buckets \
     WHERE design = $1 AND bucket_end > $2 AND bucket_end <= $3 ORDER BY bucket_end";

/// The first bucket end strictly after `t`.
fn next_end(t: u64, len: u64) -> u64 {
    (t - t % len).saturating_add(len)
}

impl Db {
    /// Where `scheme`'s releases stand.
    pub async fn release_state(&self, scheme: Scheme) -> DbResult<ReleaseState> {
        let name = scheme_name(scheme);
        let (claimed, released): (i64, i64) = on_read!(self, p => {
            let row = sqlx::query(SELECT_STATE)
                .bind(name)
                .fetch_optional(p)
                .await?
                .ok_or(DbError::Corrupt("no release state row for the scheme"))?;
            (row.try_get(0)?, row.try_get(1)?)
        });
        Ok(ReleaseState {
            claimed_until: to_u64(claimed)?,
            released_until: to_u64(released)?,
        })
    }

    /// Assign every unclaimed row of `scheme` due by `target` (a bucket end of length
    /// `bucket_seconds`) to its bucket, and advance `claimed_until` to `target`. GAEN keys
    /// whose validity began before `retention_start` are never claimed (retention deletes
    /// them). Returns the state after the call (unchanged if `claimed_until` was already
    /// there).
    pub async fn claim(
        &self,
        scheme: Scheme,
        bucket_seconds: u64,
        retention_start: u64,
        target: u64,
    ) -> DbResult<ReleaseState> {
        let name = scheme_name(scheme);
        let target_i = to_i64(target)?;
        let oldest_rsn = to_i64(retention_start.div_ceil(600))?;
        let lock = match self {
            Db::Sqlite { .. } => SELECT_STATE,
            Db::Postgres(_) => LOCK_STATE_PG,
        };
        let postgres = matches!(self, Db::Postgres(_));
        on_write!(self, p => {
            let mut tx = p.begin_write().await?;
            let row = sqlx::query(lock)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(DbError::Corrupt("no release state row for the scheme"))?;
            let mut state = ReleaseState {
                claimed_until: to_u64(row.try_get(0)?)?,
                released_until: to_u64(row.try_get(1)?)?,
            };
            if state.claimed_until >= target {
                tx.commit().await?;
                return Ok(state);
            }
            let first = to_i64(next_end(state.claimed_until, bucket_seconds.max(1)))?;
            match (scheme, postgres) {
                (Scheme::Gaen, true) => {
                    sqlx::query(CLAIM_KEYS_PG)
                        .bind(target_i)
                        .bind(oldest_rsn)
                        .bind(first)
                        .execute(&mut *tx)
                        .await?;
                }
                (Scheme::Gaen, false) => {
                    let [create, copy, delete, insert, clear] = CLAIM_KEYS_SQLITE;
                    sqlx::query(create).execute(&mut *tx).await?;
                    sqlx::query(copy).bind(target_i).bind(oldest_rsn).execute(&mut *tx).await?;
                    sqlx::query(delete).bind(target_i).bind(oldest_rsn).execute(&mut *tx).await?;
                    sqlx::query(insert).bind(first).execute(&mut *tx).await?;
                    sqlx::query(clear).execute(&mut *tx).await?;
                }
                (_, true) => {
                    sqlx::query(CLAIM_RECORDS_PG)
                        .bind(name)
                        .bind(first)
                        .bind(target_i)
                        .execute(&mut *tx)
                        .await?;
                }
                (_, false) => {
                    let [create, copy, delete, insert, clear] = CLAIM_RECORDS_SQLITE;
                    sqlx::query(create).execute(&mut *tx).await?;
                    sqlx::query(copy).bind(name).bind(target_i).execute(&mut *tx).await?;
                    sqlx::query(delete).bind(name).bind(target_i).execute(&mut *tx).await?;
                    sqlx::query(insert).bind(first).execute(&mut *tx).await?;
                    sqlx::query(clear).execute(&mut *tx).await?;
                }
            }
            sqlx::query(SET_CLAIMED).bind(name).bind(target_i).execute(&mut *tx).await?;
            tx.commit().await?;
            state.claimed_until = target;
            Ok(state)
        })
    }

    /// Ends of `scheme`'s buckets in `(after, upto]` that have claimed rows but are not
    /// stored yet, oldest first.
    pub async fn pending_buckets(
        &self,
        scheme: Scheme,
        after: u64,
        upto: u64,
    ) -> DbResult<Vec<u64>> {
        self.bucket_ends(scheme, PENDING_KEYS, PENDING_RECORDS, after, upto)
            .await
    }

    /// Ends of `scheme`'s stored buckets in `(after, upto]`, oldest first.
    pub async fn stored_bucket_ends(
        &self,
        scheme: Scheme,
        after: u64,
        upto: u64,
    ) -> DbResult<Vec<u64>> {
        self.bucket_ends(scheme, STORED_GAEN, STORED_DESIGN, after, upto)
            .await
    }

    /// Bucket ends in `(after, upto]` by `gaen` (binding the range) or by `design`
    /// (binding the design's name, then the range).
    async fn bucket_ends(
        &self,
        scheme: Scheme,
        gaen: &'static str,
        design: &'static str,
        after: u64,
        upto: u64,
    ) -> DbResult<Vec<u64>> {
        let (a, u) = (to_i64(after)?, to_i64(upto)?);
        on_read!(self, p => {
            let rows = match scheme {
                Scheme::Gaen => sqlx::query(gaen).bind(a).bind(u).fetch_all(p).await?,
                _ => sqlx::query(design)
                    .bind(scheme_name(scheme))
                    .bind(a)
                    .bind(u)
                    .fetch_all(p)
                    .await?,
            };
            rows.into_iter().map(|r| to_u64(r.try_get(0)?)).collect()
        })
    }

    /// Advance `scheme`'s `released_until` to `until` (never backwards).
    pub async fn set_released(&self, scheme: Scheme, until: u64) -> DbResult<()> {
        let u = to_i64(until)?;
        on_write!(self, p => {
            sqlx::query(SET_RELEASED).bind(scheme_name(scheme)).bind(u).execute(p).await?;
        });
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::db::designs::{DesignBucketRecord, DesignRetentionReport, DesignUploadRow};
    use crate::db::{BucketRecord, NewKey, RetentionReport, StoreOutcome};

    async fn temp_db() -> (Db, std::path::PathBuf) {
        crate::db::tests::temp_db_named("dp3t-release-db").await
    }

    use crate::db::tests::key;

    fn upload(design: &'static str, byte: u8, received_at: u64) -> DesignUploadRow {
        DesignUploadRow {
            design,
            entries: vec![byte; 32],
            entry_count: 1,
            received_at,
        }
    }

    async fn keys_of(db: &Db, end: u64) -> Vec<u8> {
        let mut k: Vec<u8> = db
            .bucket_keys(end)
            .await
            .unwrap()
            .iter()
            .map(|k| k.key_data[0])
            .collect();
        k.sort_unstable();
        k
    }

    async fn records_of(db: &Db, design: &str, end: u64) -> Vec<u8> {
        let mut r: Vec<u8> = db
            .design_bucket_entries(design, end, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e[0])
            .collect();
        r.sort_unstable();
        r
    }

    #[tokio::test]
    async fn gaen_claims_assign_each_key_once_and_late_keys_go_to_the_next_bucket() {
        let (db, dir) = temp_db().await;
        let g = Scheme::Gaen;
        db.store_upload(&[1; 32], 10, &[key(1, 100), key(2, 200), key(3, 300)])
            .await
            .unwrap();
        let s = db.claim(g, 100, 0, 200).await.unwrap();
        assert_eq!(
            s,
            ReleaseState {
                claimed_until: 200,
                released_until: 0
            }
        );
        // Each key in the bucket of its publish_at; key 3 is not due yet.
        assert_eq!(db.pending_buckets(g, 0, 200).await.unwrap(), vec![100, 200]);
        assert_eq!(keys_of(&db, 100).await, vec![1]);
        assert_eq!(keys_of(&db, 200).await, vec![2]);
        // Claiming an earlier or equal time changes nothing.
        assert_eq!(db.claim(g, 100, 0, 150).await.unwrap(), s);
        // A key whose insert commits after its bucket was claimed goes to the next one.
        db.store_upload(&[2; 32], 10, &[key(4, 100)]).await.unwrap();
        let bucket = |end: u64, zip: u8| BucketRecord {
            end,
            start: end - 100,
            real_keys: 1,
            total_keys: 1,
            zip: vec![zip],
            signature: format!("s{end}"),
        };
        db.insert_bucket(&bucket(100, 1)).await.unwrap();
        // The first stored copy wins.
        db.insert_bucket(&bucket(100, 0xff)).await.unwrap();
        assert_eq!(db.pending_buckets(g, 0, 200).await.unwrap(), vec![200]);
        db.insert_bucket(&bucket(200, 2)).await.unwrap();
        assert_eq!(
            db.stored_bucket_ends(g, 0, 200).await.unwrap(),
            vec![100, 200]
        );
        db.set_released(g, 200).await.unwrap();
        db.set_released(g, 100).await.unwrap(); // never backwards
        assert_eq!(db.release_state(g).await.unwrap().released_until, 200);
        db.claim(g, 100, 0, 300).await.unwrap();
        assert_eq!(keys_of(&db, 300).await, vec![3, 4]);
        let stored = db.buckets_between(0, 300).await.unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].zip, vec![1]);
        // Other schemes are untouched.
        assert_eq!(
            db.release_state(Scheme::LowCost).await.unwrap(),
            ReleaseState {
                claimed_until: 0,
                released_until: 0
            }
        );
        let gone = db.delete_older_than(201).await.unwrap();
        assert_eq!(
            gone,
            RetentionReport {
                keys: 3,
                tokens: 2,
                buckets: 2
            }
        );
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn gaen_claims_skip_keys_older_than_the_retention() {
        let (db, dir) = temp_db().await;
        let old = NewKey {
            rolling_start_number: 1_000,
            ..key(1, 100)
        };
        db.store_upload(&[1; 32], 10, &[old, key(2, 100)])
            .await
            .unwrap();
        db.claim(Scheme::Gaen, 100, 2_000 * 600, 100).await.unwrap();
        assert_eq!(keys_of(&db, 100).await, vec![2]);
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn gaen_claims_publish_each_key_once_and_its_first_copy() {
        let (db, dir) = temp_db().await;
        let first = NewKey {
            transmission_risk_level: 1,
            ..key(1, 100)
        };
        // The same key again, later and with other metadata, and key 2 twice.
        let again = NewKey {
            transmission_risk_level: 7,
            received_at: 100,
            ..key(1, 100)
        };
        db.store_upload(&[1; 32], 10, &[first, key(2, 100)])
            .await
            .unwrap();
        db.store_upload(&[2; 32], 10, &[again, key(2, 100)])
            .await
            .unwrap();
        assert_eq!(db.count_keys().await.unwrap(), 2, "distinct keys");
        db.claim(Scheme::Gaen, 100, 0, 100).await.unwrap();
        let claimed = db.bucket_keys(100).await.unwrap();
        let mut bytes: Vec<u8> = claimed.iter().map(|k| k.key_data[0]).collect();
        bytes.sort_unstable();
        assert_eq!(bytes, vec![1, 2], "each key once");
        let k1 = claimed.iter().find(|k| k.key_data[0] == 1).unwrap();
        assert_eq!(k1.transmission_risk_level, 1, "the first copy");
        // A key published before and uploaded again is not published again.
        db.store_upload(&[3; 32], 10, &[key(2, 150), key(3, 150)])
            .await
            .unwrap();
        db.claim(Scheme::Gaen, 100, 0, 200).await.unwrap();
        assert_eq!(keys_of(&db, 200).await, vec![3]);
        assert_eq!(db.count_keys().await.unwrap(), 3);
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn design_claims_assign_buckets_once_and_late_rows_go_to_the_next() {
        let (db, dir) = temp_db().await;
        let u = "unlinkable";
        let scheme = Scheme::Unlinkable;
        for (jti, byte, at) in [(1u8, 1u8, 10u64), (2, 2, 20), (3, 3, 30)] {
            let out = db
                .store_design_upload(&[jti; 32], 99, Some(&upload(u, byte, at)))
                .await
                .unwrap();
            assert_eq!(out, StoreOutcome::Stored);
        }
        assert_eq!(db.count_design_uploads(u).await.unwrap(), 3);
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
            StoreOutcome::Stored
        );
        assert_eq!(db.count_design_uploads(u).await.unwrap(), 3);

        let s = db.claim(scheme, 10, 0, 20).await.unwrap();
        assert_eq!((s.claimed_until, s.released_until), (20, 0));
        assert_eq!(
            db.pending_buckets(scheme, 0, 20).await.unwrap(),
            vec![10, 20]
        );
        assert_eq!(records_of(&db, u, 10).await, vec![1]);
        assert_eq!(records_of(&db, u, 20).await, vec![2]);
        // Other schemes are untouched.
        for other in [Scheme::Gaen, Scheme::LowCost, Scheme::Hybrid] {
            assert_eq!(db.release_state(other).await.unwrap().claimed_until, 0);
        }

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
        assert_eq!(db.pending_buckets(scheme, 0, 20).await.unwrap(), vec![20]);
        db.insert_design_bucket(u, &bucket(20)).await.unwrap();
        assert_eq!(
            db.stored_bucket_ends(scheme, 0, 20).await.unwrap(),
            vec![10, 20]
        );
        db.set_released(scheme, 20).await.unwrap();
        db.set_released(scheme, 10).await.unwrap(); // never backwards
        assert_eq!(
            db.release_state(scheme).await.unwrap(),
            ReleaseState {
                claimed_until: 20,
                released_until: 20
            }
        );

        db.claim(scheme, 10, 0, 30).await.unwrap();
        assert_eq!(records_of(&db, u, 30).await, vec![3, 5]);
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
