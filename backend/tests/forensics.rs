//! A copy of the database, read as an adversary would (issue 12, item 7): once a bucket is
//! released, nothing stored may group the entries of one upload. The tests store uploads
//! one transaction each (as the group-commit writer does under light load), release, and
//! then read what a copy of the tables shows beyond the columns: on PostgreSQL the
//! transaction id of each row (`xmin`) and its place in the heap (`ctid`); on SQLite the
//! B-tree order (`rowid`). Each runs on SQLite and, when `TEST_DATABASE_URL` is set, on
//! PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use backend::db::designs::DesignUploadRow;
use backend::db::NewKey;
use common::*;
use dp3t_core::engine::Scheme;
use sqlx::{Connection as _, Row as _};

on_both_databases!(
    released_keys_are_not_grouped_by_upload,
    released_design_records_are_not_grouped_by_upload
);

/// Uploads stored, one transaction each.
const UPLOADS: usize = 8;
/// Entries per upload.
const PER_UPLOAD: usize = 12;
/// The bucket end every entry is released in (any time past the embargo of the keys).
const RELEASE: u64 = 1_800_000_000;

/// The stored bytes of each row in physical order (PostgreSQL: heap order by `ctid`;
/// SQLite: the table's B-tree, by `rowid`), with the row's transaction id on PostgreSQL.
async fn physical_rows(
    backend: Backend,
    url: &str,
    table: &str,
    column: &str,
) -> Vec<(Vec<u8>, Option<String>)> {
    match backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let rows = sqlx::query(&format!(
                "SELECT {column}, xmin::text FROM {table} ORDER BY ctid"
            ))
            .fetch_all(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
            rows.iter().map(|r| (r.get(0), Some(r.get(1)))).collect()
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            let rows = sqlx::query(&format!("SELECT {column} FROM {table} ORDER BY rowid"))
                .fetch_all(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            rows.iter().map(|r| (r.get(0), None)).collect()
        }
    }
}

/// What a copy shows about grouping: `(adjacent pairs of rows of the same upload, pairs,
/// transaction ids that hold the rows of exactly one upload)`.
fn grouping(
    rows: &[(Vec<u8>, Option<String>)],
    upload_of: &HashMap<Vec<u8>, usize>,
) -> (usize, usize, usize) {
    let uploads: Vec<usize> = rows.iter().map(|(k, _)| upload_of[k]).collect();
    assert_eq!(
        uploads.len(),
        UPLOADS * PER_UPLOAD,
        "every stored entry is in the table"
    );
    let same = uploads.windows(2).filter(|w| w[0] == w[1]).count();
    let mut by_xid: HashMap<&str, std::collections::BTreeSet<usize>> = HashMap::new();
    for ((_, xid), u) in rows.iter().zip(&uploads) {
        if let Some(x) = xid {
            by_xid.entry(x).or_default().insert(*u);
        }
    }
    let single = by_xid.values().filter(|s| s.len() == 1).count();
    (same, uploads.len() - 1, single)
}

/// Adjacent pairs from one upload: by chance about `(PER_UPLOAD - 1) / (n - 1)` of the
/// pairs (~12 %); rows in arrival order give `(PER_UPLOAD - 1) / PER_UPLOAD` (~92 %).
/// The bound sits many standard deviations from both.
fn assert_not_grouped(what: &str, (same, pairs, single): (usize, usize, usize)) {
    eprintln!("{what}: {same} of {pairs} neighbouring rows from one upload, {single} transaction ids of one upload");
    assert!(
        same * 100 < pairs * 40,
        "{what}: rows in physical order are grouped by upload ({same} of {pairs} neighbours)"
    );
    assert_eq!(
        single, 0,
        "{what}: a transaction id holds exactly one upload's rows"
    );
}

async fn released_keys_are_not_grouped_by_upload(backend: Backend) {
    let (db, url, pg, _dir) = open_db(backend).await;
    let mut upload_of = HashMap::new();
    let first_rsn = u32::try_from(RELEASE / 600 - 12 * 144).unwrap();
    for u in 0..UPLOADS {
        let keys: Vec<NewKey> = (0..PER_UPLOAD)
            .map(|i| {
                let key_data: [u8; 16] = rand::random();
                upload_of.insert(key_data.to_vec(), u);
                NewKey {
                    key_data,
                    rolling_start_number: first_rsn + u32::try_from(i).unwrap() * 144,
                    rolling_period: 144,
                    transmission_risk_level: 0,
                    days_since_onset: 0,
                    received_at: RELEASE,
                    publish_at: RELEASE,
                }
            })
            .collect();
        let jti: [u8; 32] = rand::random();
        db.store_upload(&jti, RELEASE + 3600, &keys).await.unwrap();
    }
    db.claim(Scheme::Gaen, 7200, RELEASE - 14 * 86_400, RELEASE)
        .await
        .unwrap();
    assert_eq!(
        db.bucket_keys(RELEASE).await.unwrap().len(),
        UPLOADS * PER_UPLOAD
    );
    let rows = physical_rows(backend, &url, "gaen_keys", "key_data").await;
    assert_not_grouped("gaen_keys", grouping(&rows, &upload_of));
    // The table uploads append to keeps nothing of a released key.
    let left = physical_rows(backend, &url, "gaen_keys_incoming", "key_data").await;
    assert!(
        left.is_empty(),
        "{} rows left in gaen_keys_incoming",
        left.len()
    );
    db.close().await;
    drop_db(pg).await;
}

async fn released_design_records_are_not_grouped_by_upload(backend: Backend) {
    let (db, url, pg, _dir) = open_db(backend).await;
    let mut upload_of = HashMap::new();
    const RECORD: usize = 32;
    for u in 0..UPLOADS {
        let mut entries = Vec::with_capacity(PER_UPLOAD * RECORD);
        for _ in 0..PER_UPLOAD {
            let r: [u8; RECORD] = rand::random();
            upload_of.insert(r.to_vec(), u);
            entries.extend_from_slice(&r);
        }
        let row = DesignUploadRow {
            design: "unlinkable",
            entries,
            entry_count: PER_UPLOAD as u64,
            received_at: RELEASE,
        };
        let jti: [u8; 32] = rand::random();
        db.store_design_upload(&jti, RELEASE + 3600, Some(&row))
            .await
            .unwrap();
    }
    db.claim(Scheme::Unlinkable, 7200, 0, RELEASE)
        .await
        .unwrap();
    let rows = physical_rows(backend, &url, "design_uploads", "entries").await;
    assert_not_grouped("design_uploads", grouping(&rows, &upload_of));
    db.close().await;
    drop_db(pg).await;
}
