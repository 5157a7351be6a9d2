//! Signing-key rotation as docs/OPERATIONS.md describes it (new key pair, new version,
//! restart), and `/healthz` while publication fails. Each test runs on SQLite and, when
//! `TEST_DATABASE_URL` is set, on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use dp3t_core::export::{parse_export_zip, read_verified_export};
use dp3t_core::signing::verify_response;

on_both_databases!(
    rotation_keeps_downloads_working,
    healthz_reports_failing_publication,
);

/// The `verification_key_version` written into an export zip.
fn key_version(zip: &[u8]) -> String {
    parse_export_zip(zip).unwrap().signature_infos()[0]
        .verification_key_version
        .clone()
}

async fn healthz(h: &Harness) -> (u16, serde_json::Value) {
    let r = h
        .client
        .get(format!("{}/healthz", h.url))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn rotation_keeps_downloads_working(backend: Backend) {
    let mut h = Harness::start(backend, |_| {}).await;
    let old_public = h.public_key.clone();
    // A phone that installed before anything was published.
    let t0 = Download::fetch(&h, None).await.tag;
    let first = vec![key_days_ago(3), key_days_ago(4)];
    assert_eq!(
        h.upload(&h.token(5, false), &padded(&first)).await.status(),
        200
    );
    let d1 = h.wait_for_keys(None, &set_of(&first)).await;
    let second = vec![key_days_ago(2)];
    assert_eq!(
        h.upload(&h.token(5, false), &padded(&second))
            .await
            .status(),
        200
    );
    let d2 = h.wait_for_keys(Some(d1.tag), &set_of(&second)).await;
    assert_eq!(key_version(&d2.body), "v1");

    // Rotation: a new key pair in place of the old one, a new version, a restart.
    for f in ["signing-key.pem", "signing-key.pub.pem"] {
        std::fs::remove_file(h.data_dir.join(f)).unwrap();
    }
    backend::keys::keygen(&h.data_dir).unwrap();
    h.config.signature_key_version = "v2".into();
    let h = h.restart().await;
    assert_ne!(h.public_key.to_pem().unwrap(), old_public.to_pem().unwrap());
    assert_eq!(healthz(&h).await.0, 200);

    let mut before = set_of(&first);
    before.extend(set_of(&second));
    // A new install, and a phone that lags behind the first bucket: the union of buckets
    // signed with the old key, answered and signed with the new one (Download::fetch
    // verifies the zip and the Signature header with the key now in the data dir).
    for tag in [None, Some(t0), Some(0)] {
        let d = Download::fetch(&h, tag).await;
        assert_eq!(d.status, 200, "tag {tag:?}");
        assert!(before.is_subset(&d.key_set()), "tag {tag:?}");
        assert_eq!(key_version(&d.body), "v2");
        assert!(read_verified_export(&d.body, &old_public).is_err());
    }
    // A phone one bucket behind: a single bucket released under the old key, re-signed.
    let d = Download::fetch(&h, Some(d1.tag)).await;
    assert_eq!(d.status, 200);
    assert!(set_of(&second).is_subset(&d.key_set()));
    assert_eq!(key_version(&d.body), "v2");
    // Up to date: nothing new, signed with the new key.
    let up_to_date = Download::fetch(&h, Some(d2.tag)).await;
    if up_to_date.tag == d2.tag {
        assert_eq!(up_to_date.status, 204);
    }
    // The GAEN v1 day export of the first keys' day reads the old buckets too.
    let day_ms = u64::from(first[0].rolling_start_number) * 600 * 1000;
    let r = h
        .client
        .get(format!("{}/v1/gaen/exposed/{day_ms}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sig = r.headers()["signature"].to_str().unwrap().to_owned();
    let body = r.bytes().await.unwrap();
    verify_response(&body, &sig, &h.public_key, now()).unwrap();
    let batch = read_verified_export(&body, &h.public_key).unwrap();
    assert!(batch.keys.iter().any(|k| k.key_data == first[0].key_data));

    // After the rotation: new buckets are signed with the new key, and unions mix them.
    // Not yesterday's key: until 02:00 UTC it is still under the 2-hour embargo.
    let third = vec![key_days_ago(5)];
    assert_eq!(
        h.upload(&h.token(5, false), &padded(&third)).await.status(),
        200
    );
    let d3 = h.wait_for_keys(Some(d2.tag), &set_of(&third)).await;
    assert_eq!(key_version(&d3.body), "v2");
    let mut all = before.clone();
    all.extend(set_of(&third));
    let d = h.wait_for_keys(None, &all).await;
    assert_eq!(key_version(&d.body), "v2");

    // The database keeps each bucket as it was released: old ones with the old key.
    let stored = h.state().db.buckets_between(0, u64::MAX / 2).await.unwrap();
    let mut old_signed = 0;
    let mut new_signed = 0;
    for b in &stored {
        if read_verified_export(&b.zip, &old_public).is_ok() {
            assert_eq!(key_version(&b.zip), "v1");
            old_signed += 1;
        } else {
            read_verified_export(&b.zip, &h.public_key).unwrap();
            assert_eq!(key_version(&b.zip), "v2");
            new_signed += 1;
        }
    }
    assert!(
        old_signed >= 1 && new_signed >= 1,
        "{old_signed} {new_signed}"
    );
    assert_eq!(healthz(&h).await.0, 200);
    h.finish().await;
}

/// Run `sql` on the server's database.
async fn execute(h: &Harness, sql: &str) {
    match &h.state().db {
        backend::db::Db::Sqlite { write, .. } => {
            sqlx::query(sql).execute(write).await.unwrap();
        }
        backend::db::Db::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
}

/// Poll `/healthz` until its status is `want`; bounded by 20 s.
async fn wait_for_health(h: &Harness, want: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = healthz(h).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "healthz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn healthz_reports_failing_publication(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let body = wait_for_health(&h, 200).await;
    assert_eq!(body["status"], "ok");
    // The database still answers, but releasing a bucket fails.
    execute(&h, "ALTER TABLE gaen_keys RENAME TO gaen_keys_away").await;
    let body = wait_for_health(&h, 503).await;
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["publication"], "failing");
    // Downloads still answer from the last released state.
    let d = h.download(None).await;
    assert_eq!(d.status(), 204);
    // Repaired: the next release succeeds and the node is healthy again.
    execute(&h, "ALTER TABLE gaen_keys_away RENAME TO gaen_keys").await;
    let body = wait_for_health(&h, 200).await;
    assert_eq!(body["status"], "ok");
    h.finish().await;
}
