//! What an operator relies on, through the real server: `/metrics` only on its own
//! listener; least-privilege PostgreSQL (the owner migrates, a role with row rights only
//! serves); deleted data gone from the SQLite files.

#![allow(clippy::unwrap_used)]

mod common;

use common::{key_days_ago, padded, set_of, test_config, Backend, Harness};
use sqlx::Connection as _;

on_both_databases!(metrics_are_not_on_the_public_port);

/// Regression: the counters moved with each upload and were readable by anyone on the
/// public port (privacy issue, item 1). The public port now answers 404 for `/metrics`, as
/// for any unknown route, and the metrics listener serves them.
async fn metrics_are_not_on_the_public_port(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let public = h
        .client
        .get(format!("{}/metrics", h.url))
        .send()
        .await
        .unwrap();
    common::assert_error(public, 404, "not_found").await;
    let server = h.server.as_ref().unwrap();
    assert_ne!(server.metrics_addr, server.addr);
    assert!(server.metrics_addr.ip().is_loopback());
    let scraped = h.client.get(server.metrics_url()).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("dp3t_http_request_duration_seconds"));
    // The metrics listener serves nothing else.
    let other = h
        .client
        .get(format!("http://{}/healthz", server.metrics_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    h.finish().await;
}

/// `url` with its user and password replaced.
fn as_role(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:{password}@{host_and_db}")
}

/// Start a server on its own thread; the error with its causes.
async fn try_start(config: backend::config::Config) -> Result<(), String> {
    let started = tokio::task::spawn_blocking(move || backend::server::start_in_thread(config))
        .await
        .unwrap();
    match started {
        Ok(server) => {
            tokio::task::spawn_blocking(move || server.stop())
                .await
                .unwrap();
            Ok(())
        }
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Regression (issue: least-privilege PostgreSQL, as documented, failed): `serve` always
/// ran the migrator, which needs CREATE on the schema, so a role with row rights only got
/// `permission denied for schema public`. Now the owner runs `migrate`, and the serving
/// role starts with `--no-migrate` (`migrate = false`), which checks the schema version
/// and refuses a database that is not migrated with a message saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_postgres_owner_migrates_and_a_row_role_serves() {
    if std::env::var("TEST_DATABASE_URL").map_or(true, |u| u.is_empty()) {
        eprintln!("TEST_DATABASE_URL not set: PostgreSQL test skipped");
        return;
    }
    let (owner_url, admin_url, name) = common::fresh_pg_database().await;
    let app_url = as_role(&owner_url, "dp3t_app", "dp3t_app");
    let mut owner = sqlx::PgConnection::connect(&owner_url).await.unwrap();
    let role: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dp3t_app')")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert!(role, "role dp3t_app is missing: run .ci/postgres.sh");
    // As in docs/OPERATIONS.md: nobody but the owner creates objects in the schema.
    sqlx::query("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .execute(&mut owner)
        .await
        .unwrap();

    let data_dir = std::env::temp_dir().join(format!("dp3t-lp-{}", rand::random::<u64>()));
    backend::keys::keygen(&data_dir).unwrap();
    let mut config = test_config(data_dir.clone());
    config.database_url = Some(app_url.clone());

    // Not migrated: --no-migrate refuses, and says what to run.
    config.migrate = false;
    let err = try_start(config.clone()).await.unwrap_err();
    assert!(err.contains("no schema"), "{err}");
    assert!(err.contains("dp3t-backend migrate"), "{err}");
    // The old behaviour, migrating as the serving role, fails for lack of rights.
    config.migrate = true;
    let err = try_start(config.clone()).await.unwrap_err();
    assert!(err.contains("permission denied"), "{err}");

    // The owner migrates and grants row rights.
    let db = backend::db::Db::connect(&owner_url, 2).await.unwrap();
    db.migrate().await.unwrap();
    db.close().await;
    for grant in [
        "GRANT USAGE ON SCHEMA public TO dp3t_app",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO dp3t_app",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO dp3t_app",
    ] {
        sqlx::query(grant).execute(&mut owner).await.unwrap();
    }
    owner.close().await.unwrap();

    // The serving role with --no-migrate: starts, stores an upload, publishes it.
    let h = Harness::start(Backend::Sqlite, |c| {
        c.database_url = Some(app_url.clone());
        c.migrate = false;
    })
    .await;
    assert_eq!(h.state().db.kind(), "postgres");
    let keys = vec![key_days_ago(3), key_days_ago(4)];
    let resp = h.upload(&h.token(5, false), &padded(&keys)).await;
    assert_eq!(resp.status(), 200);
    h.wait_for_keys(None, &set_of(&keys)).await;
    h.finish().await;

    common::drop_pg_database(&admin_url, &name).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The SQLite files of a data directory (database, WAL), concatenated.
fn sqlite_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for f in ["dp3t.db", "dp3t.db-wal", "dp3t.db-journal"] {
        if let Ok(bytes) = std::fs::read(dir.join(f)) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Regression (privacy issue, item 8): 30 days after upload the rows were gone but every
/// key was still in `dp3t.db`, in free space and in old WAL frames. With `secure_delete`,
/// incremental auto-vacuum and a WAL checkpoint after retention, a search of the raw files
/// finds none of the deleted keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_are_not_in_the_sqlite_files_after_retention() {
    let mut h = Harness::start(Backend::Sqlite, |_| {}).await;
    let keys: Vec<_> = (0..6).map(|i| key_days_ago(3 + i % 3)).collect();
    for chunk in keys.chunks(2) {
        let resp = h.upload(&h.token(5, false), &padded(chunk)).await;
        assert_eq!(resp.status(), 200);
    }
    h.wait_for_keys(None, &set_of(&keys)).await;
    // The search works: before retention the keys are in the files.
    let before = sqlite_bytes(&h.data_dir);
    assert!(
        keys.iter().all(|k| contains(&before, &k.key_data)),
        "the stored keys are not found in the raw files"
    );

    // Retention as the server runs it, with every row past it.
    let db = h.state().db.clone();
    let report = db.delete_older_than(u64::MAX >> 2).await.unwrap();
    assert!(report.keys >= keys.len() as u64, "{report:?}");
    db.reclaim_deleted_space().await.unwrap();
    let server = h.server.take().unwrap();
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    db.close().await;

    let after = sqlite_bytes(&h.data_dir);
    let found: Vec<_> = keys
        .iter()
        .filter(|k| contains(&after, &k.key_data))
        .map(|k| hex::encode(k.key_data))
        .collect();
    assert!(
        found.is_empty(),
        "deleted keys still in the files: {found:?}"
    );
    h.finish().await;
}
