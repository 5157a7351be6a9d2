//! Two nodes on one SQLite file (CI failure of 2026-12-02: a second node failed to start,
//! its first release answered `database is locked`). A transaction that reads before it
//! writes cannot wait for the write lock (SQLite returns `SQLITE_BUSY` at once rather
//! than risk a deadlock), so every write transaction must take the lock when it begins.
//! Here another connection holds the write lock for a moment while this node claims a
//! bucket, purges spent tokens and stores uploads: each must wait and then succeed.

#![allow(clippy::unwrap_used)]

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::{open_db, stored_key, stored_upload, Backend};
use dp3t_core::engine::Scheme;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Hold the write lock of the database at `url` from another connection for `hold`,
/// starting once a write is under way there.
async fn hold_write_lock(url: &str, hold: Duration) -> tokio::task::JoinHandle<()> {
    let mut other = SqliteConnectOptions::from_str(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("UPDATE release_states SET claimed_until = claimed_until")
        .execute(&mut other)
        .await
        .unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        other.close().await.unwrap();
    })
}

#[tokio::test]
async fn writes_wait_for_another_nodes_write_lock() {
    let (db, url, _, _dir) = open_db(Backend::Sqlite).await;
    // Something to claim: one upload received before the bucket ends.
    let upload = |jti: u8| stored_upload([jti; 32], vec![stored_key([9; 16], 600)]);
    db.store_uploads(&[upload(1)]).await.unwrap();
    for round in 0..3u64 {
        let holder = hold_write_lock(&url, Duration::from_millis(300)).await;
        let claimed = db.claim(Scheme::Gaen, 7_200, 0, 7_200 * (round + 1)).await;
        assert!(claimed.is_ok(), "round {round}: claim failed: {claimed:?}");
        holder.await.unwrap();

        let holder = hold_write_lock(&url, Duration::from_millis(300)).await;
        let purged = db.delete_spent_tokens(1).await;
        assert!(purged.is_ok(), "round {round}: purge failed: {purged:?}");
        holder.await.unwrap();

        let holder = hold_write_lock(&url, Duration::from_millis(300)).await;
        let stored = db.store_uploads(&[upload(2 + round as u8)]).await;
        assert!(stored.is_ok(), "round {round}: store failed: {stored:?}");
        holder.await.unwrap();
    }
}
