//! Group commits that share keys, run side by side (CI failure of 2026-12-02: three of
//! 200 concurrent uploads answered `503` on PostgreSQL). Writers of one node, or of two
//! nodes, store batches at the same time; when two batches hold the same keys in opposite
//! orders, PostgreSQL aborts one of them as a deadlock. No batch may fail for it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use backend::db::{NewKey, StoreOutcome, UploadRecord};
use common::{drop_db, open_db, stored_key, stored_upload, Backend};

fn key(byte: u8, round: u8) -> NewKey {
    let mut key_data = [byte; 16];
    key_data[15] = round;
    stored_key(key_data, 600)
}

fn upload(jti: u32, keys: Vec<NewKey>) -> UploadRecord {
    let mut jti_hash = [0; 32];
    jti_hash[..4].copy_from_slice(&jti.to_be_bytes());
    stored_upload(jti_hash, keys)
}

async fn batches_sharing_keys_in_opposite_orders_all_commit(backend: Backend) {
    let (db, _url, pg, _dir) = open_db(backend).await;
    let db = Arc::new(db);
    const ROUNDS: u8 = 40;
    const WIDTH: u8 = 40;
    let mut jti = 0u32;
    let mut expected = 0u64;
    for round in 0..ROUNDS {
        // Batch A: uploads of keys 1, 2, … WIDTH, one key each; batch B: the same keys,
        // uploads in the opposite order. Each upload alone is sorted; the batches are not.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for k in 1..=WIDTH {
            jti += 1;
            a.push(upload(jti, vec![key(k, round)]));
        }
        for k in (1..=WIDTH).rev() {
            jti += 1;
            b.push(upload(jti, vec![key(k, round)]));
        }
        expected += u64::from(WIDTH);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks = [a, b].map(|batch| {
            let db = Arc::clone(&db);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                db.store_uploads(&batch).await
            })
        });
        for t in tasks {
            let outcomes = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a batch failed: {e}"));
            assert_eq!(outcomes.len(), usize::from(WIDTH));
            assert!(outcomes.iter().all(|o| *o == StoreOutcome::Stored));
        }
    }
    assert_eq!(
        db.count_keys().await.unwrap(),
        expected,
        "no key lost or doubled"
    );
    db.close().await;
    drop_db(pg).await;
}

on_both_databases!(batches_sharing_keys_in_opposite_orders_all_commit);
