//! What the GAEN downloads tell about real uploads (issue 12, items 3–5): every bucket has
//! a padded export, published counts are rounded up with a random extra, and padding
//! metadata comes from the real keys of the whole retention window, not from the bucket.
//! Each test runs on SQLite and, when `TEST_DATABASE_URL` is set, on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use dp3t_core::export::read_verified_export;

on_both_databases!(
    every_bucket_has_a_padded_export,
    counts_are_rounded_up,
    padding_metadata_comes_from_the_window,
);

async fn every_bucket_has_a_padded_export(backend: Backend) {
    let h = Harness::start(backend, |c| c.export_min_keys = 20).await;
    // No upload at all: the released bucket is a padded export, not a 204.
    let first = Download::fetch(&h, None).await;
    assert_eq!(first.status, 200);
    // On a loaded machine more than one 2-second bucket may be out before the first
    // download: it then holds all of them, each padded.
    let n = first.batch.as_ref().unwrap().keys.len() as u64;
    let out_by_then: u64 = h
        .state()
        .db
        .buckets_between(0, first.tag / 1000)
        .await
        .unwrap()
        .iter()
        .map(|b| b.total_keys)
        .sum();
    assert!(n >= 20, "{n}");
    assert_eq!(
        n, out_by_then,
        "the first download is the union of the buckets out"
    );
    // The next bucket, also without uploads: 200 and padded, like one with real keys.
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = loop {
        let d = Download::fetch(&h, Some(first.tag)).await;
        if d.tag > first.tag {
            break d;
        }
        assert!(Instant::now() < deadline, "no release within 20 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(next.status, 200);
    assert!(next.batch.as_ref().unwrap().keys.len() >= 20);
    // Each released bucket is stored with its padding.
    let stored = h
        .state()
        .db
        .buckets_between(0, next.tag / 1000)
        .await
        .unwrap();
    assert!(stored.len() >= 2);
    for b in &stored {
        assert_eq!(b.real_keys, 0);
        assert!((20..30).contains(&b.total_keys), "{}", b.total_keys);
    }
    h.finish().await;
}

/// The stored bucket holding exactly `real` real keys, waiting until it is released.
async fn bucket_with(h: &Harness, real: u64) -> backend::db::BucketRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = h.state().db.buckets_between(0, u64::MAX / 2).await.unwrap();
        if let Some(b) = all.into_iter().find(|b| b.real_keys == real) {
            return b;
        }
        assert!(Instant::now() < deadline, "no bucket with {real} real keys");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn counts_are_rounded_up(backend: Backend) {
    let h = Harness::start(backend, |c| c.export_min_keys = 8).await;
    // Keys of 2 to 11 days ago: none is under embargo, whatever the time of day.
    let real: Vec<UploadKey> = (2..=11).map(key_days_ago).collect();
    assert_eq!(
        h.upload(&h.token(13, false), &padded(&real)).await.status(),
        200
    );
    let b = bucket_with(&h, 10).await;
    // Above the minimum the real count is not published: 10 becomes 12 (rounded up to
    // a multiple of 8 / 2) plus a random 0..4.
    assert!((12..16).contains(&b.total_keys), "{}", b.total_keys);
    let batch = read_verified_export(&b.zip, &h.public_key).unwrap();
    assert_eq!(batch.keys.len() as u64, b.total_keys);
    let published: BTreeSet<[u8; 16]> = batch.keys.iter().map(|k| k.key_data).collect();
    assert!(set_of(&real).is_subset(&published));
    h.finish().await;
}

async fn padding_metadata_comes_from_the_window(backend: Backend) {
    let h = Harness::start(backend, |c| c.export_min_keys = 40).await;
    // Earlier in the window: ten keys of ten different days.
    let earlier: Vec<UploadKey> = (2..=11).map(key_days_ago).collect();
    assert_eq!(
        h.upload(&h.token(13, false), &padded(&earlier))
            .await
            .status(),
        200
    );
    bucket_with(&h, 10).await;
    // Then one patient with one key, alone in a bucket.
    let alone = vec![key_days_ago(2)];
    assert_eq!(
        h.upload(&h.token(3, false), &padded(&alone)).await.status(),
        200
    );
    let b = bucket_with(&h, 1).await;
    let batch = read_verified_export(&b.zip, &h.public_key).unwrap();
    // Padding copied from the bucket alone would give one metadata tuple, telling an
    // observer that one patient uploaded one key. Drawn from the window, it gives many.
    let tuples: BTreeSet<_> = batch
        .keys
        .iter()
        .map(|k| {
            (
                k.rolling_start_interval_number,
                k.rolling_period,
                k.transmission_risk_level,
                k.days_since_onset_of_symptoms,
            )
        })
        .collect();
    assert!(
        tuples.len() > 3,
        "{} distinct metadata tuples",
        tuples.len()
    );
    // Every padding key is publishable in this bucket: expired plus the embargo.
    for k in &batch.keys {
        let expiry =
            (u64::from(k.rolling_start_interval_number) + u64::from(k.rolling_period)) * 600;
        assert!(expiry + 7_200 <= batch.end_timestamp);
    }
    h.finish().await;
}
