//! The download cache under hostile clients (issue 11, item 2): one answer per distinct
//! `lastKeyBundleTag` (and per bucket of the designs) must not grow memory past
//! `DP3T_DOWNLOAD_CACHE_BYTES`, and what is evicted is served again, identical, from the
//! database. Each test runs on SQLite and, when `TEST_DATABASE_URL` is set, on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

on_both_databases!(
    a_thousand_distinct_tags_stay_within_the_bound,
    design_buckets_share_the_bound,
);

/// The bound of these tests: a few answers' worth.
const BOUND: usize = 24 * 1024;

async fn a_thousand_distinct_tags_stay_within_the_bound(backend: Backend) {
    let h = Harness::start(backend, |c| {
        c.release_bucket_seconds = 1;
        c.export_min_keys = 60;
        c.download_cache_bytes = BOUND;
    })
    .await;
    let first = Download::fetch(&h, None).await.tag;
    // Let a dozen padded buckets be released, so that unions differ and grow.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut r = first;
    while r < first + 12_000 {
        assert!(Instant::now() < deadline, "no releases");
        tokio::time::sleep(Duration::from_millis(250)).await;
        r = Download::fetch(&h, None).await.tag;
    }
    let cache = h.state().publisher.cache();
    assert_eq!(cache.capacity(), BOUND);
    let mut largest = 0;
    let mut peak = 0;
    let started = Instant::now();
    let span = r - first;
    for i in 0..1_000u64 {
        // A thousand distinct tags, spread over every bucket of the range.
        let tag = first - 1_000 + i * span / 1_000;
        // Every 50th answer is verified in full (signatures are slow in debug builds).
        let len = if i % 50 == 0 {
            let d = Download::fetch(&h, Some(tag)).await;
            assert_eq!(d.status, 200, "tag {tag}");
            d.body.len()
        } else {
            let r = h.download(Some(tag)).await;
            assert_eq!(r.status(), 200, "tag {tag}");
            r.bytes().await.unwrap().len()
        };
        largest = largest.max(len);
        peak = peak.max(cache.bytes());
        assert!(cache.bytes() <= BOUND, "{} > {BOUND}", cache.bytes());
    }
    // For BENCHMARKS.md (run with --nocapture); not asserted.
    eprintln!(
        "1000 distinct tags: peak cache {peak} B of {BOUND} B, largest answer {largest} B, {:.0} downloads/s (debug build, one client)",
        1000.0 / started.elapsed().as_secs_f64()
    );
    // Answers larger than a fifth of the bound were asked for: without the bound, the
    // cache would hold many times it.
    assert!(largest * 5 > BOUND, "largest answer {largest}");
    assert!(!cache.is_empty());
    // An evicted answer is built again, the same keys, still verified.
    let again = Download::fetch(&h, Some(first)).await;
    assert_eq!(again.status, 200);
    h.finish().await;
}

async fn design_buckets_share_the_bound(backend: Backend) {
    let h = Harness::start(backend, |c| {
        c.release_bucket_seconds = 1;
        c.lowcost_min_keys = 100;
        c.download_cache_bytes = BOUND;
    })
    .await;
    let cache = h.state().publisher.cache();
    // The last minute's buckets, each about 4 KiB: many times the bound.
    let now_s = now().0;
    let mut first_bodies = Vec::new();
    for end in (now_s - 60)..now_s {
        let r = h
            .client
            .get(format!("{}/v1/exposed/{}", h.url, end * 1000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        first_bodies.push((end, r.bytes().await.unwrap()));
        assert!(cache.bytes() <= BOUND, "{} > {BOUND}", cache.bytes());
    }
    let total: usize = first_bodies.iter().map(|(_, b)| b.len()).sum();
    assert!(total > 4 * BOUND, "{total}");
    // Evicted bodies come back from the database byte for byte.
    for (end, body) in first_bodies.iter().take(5) {
        let r = h
            .client
            .get(format!("{}/v1/exposed/{}", h.url, end * 1000))
            .send()
            .await
            .unwrap();
        assert_eq!(&r.bytes().await.unwrap(), body);
    }
    h.finish().await;
}
