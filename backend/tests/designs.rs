//! The three DP-3T designs (low-cost, unlinkable, hybrid) through the real server over
//! HTTP: phone engines from dp3t-core upload, the bucket is released, another engine
//! downloads, verifies and matches exactly the expected days; the published bytes are also
//! read by an independent reader of PROTOCOL.md written here (a hand-rolled protobuf walk
//! and DPCF lookup). Plus padding, empty batches, restarts, the fake path and every
//! refusal. Each test runs on SQLite and, when `TEST_DATABASE_URL` is set, on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use dp3t_core::engine::{Engine, EngineConfig, PublishedBatch, Scheme};
use dp3t_core::signing::verify_response;
use dp3t_core::time::{Day, UnixTime};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

on_both_databases!(
    lowcost_story,
    unlinkable_story,
    hybrid_story,
    padded_batches_empty_batches_and_restarts,
    fake_uploads_store_nothing_and_answer_alike,
    every_upload_refusal,
    every_download_refusal,
);

const DESIGNS: [Scheme; 3] = [Scheme::LowCost, Scheme::Unlinkable, Scheme::Hybrid];

fn design_name(s: Scheme) -> &'static str {
    match s {
        Scheme::LowCost => "lowcost",
        Scheme::Unlinkable => "unlinkable",
        Scheme::Hybrid => "hybrid",
        Scheme::Gaen => unreachable!("not a DP-3T design"),
    }
}

fn design_of(s: Scheme) -> backend::designs::Design {
    use backend::designs::Design;
    match s {
        Scheme::LowCost => Design::LowCost,
        Scheme::Unlinkable => Design::Unlinkable,
        Scheme::Hybrid => Design::Hybrid,
        Scheme::Gaen => unreachable!("not a DP-3T design"),
    }
}

fn upload_path(s: Scheme) -> &'static str {
    match s {
        Scheme::LowCost => "/v1/exposed",
        Scheme::Unlinkable => "/v1/unlinkable/exposed",
        Scheme::Hybrid => "/v1/hybrid/exposed",
        Scheme::Gaen => unreachable!("not a DP-3T design"),
    }
}

fn batch_path(s: Scheme, ms: impl std::fmt::Display) -> String {
    match s {
        Scheme::LowCost => format!("/v1/exposed/{ms}"),
        Scheme::Unlinkable => format!("/v1/unlinkable/filter/{ms}"),
        Scheme::Hybrid => format!("/v1/hybrid/exposed/{ms}"),
        Scheme::Gaen => unreachable!("not a DP-3T design"),
    }
}

/// Test servers publish exactly the real entries unless a test asks for padding.
fn no_padding(c: &mut backend::config::Config) {
    c.lowcost_min_keys = 0;
    c.unlinkable_min_entries = 0;
    c.hybrid_min_seeds = 0;
}

async fn post_json(h: &Harness, path: &str, token: &str, json: &str) -> reqwest::Response {
    h.post(
        path,
        Some(token),
        Some("application/json"),
        json.as_bytes().to_vec(),
    )
    .await
}

async fn stored_rows(h: &Harness, s: Scheme) -> u64 {
    h.state()
        .db
        .count_design_uploads(design_name(s))
        .await
        .unwrap()
}

/// A downloaded batch whose headers and `Signature` were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Batch {
    release_ms: u64,
    body: Vec<u8>,
    signature: String,
}

impl Batch {
    fn as_batch(&self) -> PublishedBatch<'_> {
        PublishedBatch {
            body: &self.body,
            signature: Some(&self.signature),
            release_time: UnixTime::from_millis(self.release_ms),
        }
    }
}

/// GET the batch of `s` released at `ms`: must be a signed 200 with the DP-3T headers.
async fn fetch_batch(h: &Harness, s: Scheme, ms: u64) -> Batch {
    let resp = h
        .client
        .get(format!("{}{}", h.url, batch_path(s, ms)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{s:?} batch {ms}");
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .unwrap_or_else(|| panic!("header {n}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let content_type = match s {
        Scheme::Unlinkable => "application/octet-stream",
        _ => "application/x-protobuf",
    };
    assert_eq!(header("content-type"), content_type);
    assert_eq!(header("cache-control"), "public, max-age=300");
    assert_eq!(header("x-batch-release-time"), ms.to_string());
    let signature = header("signature");
    let body = resp.bytes().await.unwrap().to_vec();
    let claims = verify_response(&body, &signature, &h.public_key, now()).unwrap();
    assert_eq!(claims.batch_release_time_ms, Some(ms));
    Batch {
        release_ms: ms,
        body,
        signature,
    }
}

/// Sleep until `now() >= t` (unix seconds), plus a little for the release.
async fn wait_until(t: u64) {
    while now().0 < t {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// POST `json` to `path` and return the batches (in ms) the upload may have landed in:
/// the ends of the buckets between the request's start and its answer, once released.
async fn upload_and_wait(h: &Harness, path: &str, token: &str, json: &str) -> Vec<u64> {
    let len = h.config.release_bucket_seconds;
    let t0 = now().0;
    let resp = post_json(h, path, token, json).await;
    let t1 = now().0;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    let first = t0 - t0 % len + len;
    let last = t1 - t1 % len + len;
    wait_until(last).await;
    (first..=last)
        .step_by(len as usize)
        .map(|t| t * 1000)
        .collect()
}

// -------------------------------------------------------------- independent readers

/// Protobuf fields of one message: `(field number, varint or bytes)`; only wire types 0
/// and 2 occur in §9.2 and §9.3.
#[derive(Debug)]
enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn proto_fields(mut b: &[u8]) -> Vec<(u64, Field)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint too long")
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        match key & 7 {
            0 => out.push((key >> 3, Field::Varint(varint(&mut b)))),
            2 => {
                let n = varint(&mut b) as usize;
                out.push((key >> 3, Field::Bytes(b[..n].to_vec())));
                b = &b[n..];
            }
            w => panic!("unexpected wire type {w}"),
        }
    }
    out
}

/// `ProtoExposedList` → (batchReleaseTime, [(key, keyDate)]).
fn read_lowcost_list(body: &[u8]) -> (u64, Vec<(Vec<u8>, u64)>) {
    let mut release = 0;
    let mut entries = Vec::new();
    for (n, f) in proto_fields(body) {
        match (n, f) {
            (1, Field::Varint(v)) => release = v,
            (2, Field::Bytes(m)) => {
                let (mut key, mut date) = (Vec::new(), 0);
                for (n, f) in proto_fields(&m) {
                    match (n, f) {
                        (2, Field::Bytes(k)) => key = k,
                        (3, Field::Varint(d)) => date = d,
                        other => panic!("unexpected ProtoExposee field {other:?}"),
                    }
                }
                entries.push((key, date));
            }
            other => panic!("unexpected ProtoExposedList field {other:?}"),
        }
    }
    (release, entries)
}

/// `HybridExposedList` → (batchReleaseTime, [(seed, windowStart, windowMinutes)]).
fn read_hybrid_list(body: &[u8]) -> (u64, Vec<(Vec<u8>, u64, u64)>) {
    let mut release = 0;
    let mut entries = Vec::new();
    for (n, f) in proto_fields(body) {
        match (n, f) {
            (1, Field::Varint(v)) => release = v,
            (2, Field::Bytes(m)) => {
                let (mut seed, mut start, mut minutes) = (Vec::new(), 0, 0);
                for (n, f) in proto_fields(&m) {
                    match (n, f) {
                        (1, Field::Bytes(s)) => seed = s,
                        (2, Field::Varint(v)) => start = v,
                        (3, Field::Varint(v)) => minutes = v,
                        other => panic!("unexpected HybridSeed field {other:?}"),
                    }
                }
                entries.push((seed, start, minutes));
            }
            other => panic!("unexpected HybridExposedList field {other:?}"),
        }
    }
    (release, entries)
}

/// A DPCF v1 filter read per PROTOCOL.md §4.1.
struct Dpcf {
    f: u32,
    b: usize,
    m: u64,
    count: u32,
    slots: Vec<u64>,
}

impl Dpcf {
    fn parse(bytes: &[u8]) -> Dpcf {
        assert_eq!(&bytes[..4], b"DPCF");
        assert_eq!(bytes[4], 1, "version");
        let (f, b) = (u32::from(bytes[5]), usize::from(bytes[6]));
        assert_eq!(bytes[7], 0, "reserved");
        let m = u64::from(u32::from_be_bytes(bytes[8..12].try_into().unwrap()));
        let count = u32::from_be_bytes(bytes[12..16].try_into().unwrap());
        let width = f.div_ceil(8) as usize;
        assert_eq!(bytes.len(), 16 + m as usize * b * width, "length");
        let slots = bytes[16..]
            .chunks(width)
            .map(|c| c.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
            .collect();
        Dpcf {
            f,
            b,
            m,
            count,
            slots,
        }
    }

    fn mix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn contains(&self, x: &[u8; 32]) -> bool {
        let be = |r: std::ops::Range<usize>| u64::from_be_bytes(x[r].try_into().unwrap());
        let fp = match be(0..8) >> (64 - self.f) {
            0 => 1,
            v => v,
        };
        let i1 = be(8..16) % self.m;
        let i2 = (Self::mix64(fp) % self.m + self.m - i1) % self.m;
        [i1, i2].iter().any(|&i| {
            let s = i as usize * self.b;
            self.slots[s..s + self.b].contains(&fp)
        })
    }
}

/// `SHA-256(EphID || BE32(epoch))` with `EphID = SHA-256(seed)[..16]` (§4).
fn hashed_observation(seed: &[u8], epoch: u32) -> [u8; 32] {
    let ephid = Sha256::digest(seed);
    let mut h = Sha256::new();
    h.update(&ephid[..16]);
    h.update(epoch.to_be_bytes());
    h.finalize().into()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Check the batches against the real entries of `upload_json` (sent with onset `onset`)
/// with the independent readers: every real entry is published exactly once, and nothing
/// else is (test servers publish without padding).
fn check_independently(s: Scheme, upload_json: &str, onset: Day, batches: &[Batch]) {
    let upload: serde_json::Value = serde_json::from_str(upload_json).unwrap();
    match s {
        Scheme::LowCost => {
            assert_eq!(upload["fake"], 0);
            let want = (
                b64(upload["key"].as_str().unwrap()),
                upload["keyDate"].as_u64().unwrap(),
            );
            assert!(
                want.1 >= onset.start_millis(),
                "no stepping needed in this story"
            );
            let mut got = Vec::new();
            for b in batches {
                let (release, entries) = read_lowcost_list(&b.body);
                assert_eq!(release, b.release_ms);
                got.extend(entries);
            }
            assert_eq!(got, vec![want]);
        }
        Scheme::Unlinkable => {
            let want: BTreeSet<[u8; 32]> = upload["seeds"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["fake"] == 0)
                .map(|e| {
                    (
                        b64(e["seed"].as_str().unwrap()),
                        e["epoch"].as_u64().unwrap() as u32,
                    )
                })
                .filter(|(_, epoch)| u64::from(*epoch) >= u64::from(onset.0) * 96)
                .map(|(seed, epoch)| hashed_observation(&seed, epoch))
                .collect();
            assert!(!want.is_empty());
            let filters: Vec<Dpcf> = batches.iter().map(|b| Dpcf::parse(&b.body)).collect();
            assert_eq!(
                filters.iter().map(|f| f.count as usize).sum::<usize>(),
                want.len()
            );
            for f in &filters {
                assert_eq!(f.f, 48);
            }
            for x in &want {
                assert_eq!(filters.iter().filter(|f| f.contains(x)).count(), 1);
            }
            let absent = hashed_observation(&[0xEE; 32], 1);
            assert!(filters.iter().all(|f| !f.contains(&absent)));
        }
        Scheme::Hybrid => {
            let want: BTreeSet<(Vec<u8>, u64, u64)> = upload["windows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["fake"] == 0)
                .map(|e| {
                    (
                        b64(e["seed"].as_str().unwrap()),
                        e["windowStart"].as_u64().unwrap(),
                        e["windowMinutes"].as_u64().unwrap(),
                    )
                })
                .filter(|(_, start, w)| start + w * 60_000 > onset.start_millis())
                .collect();
            assert!(!want.is_empty());
            let mut got = Vec::new();
            for b in batches {
                let (release, entries) = read_hybrid_list(&b.body);
                assert_eq!(release, b.release_ms);
                got.extend(entries);
            }
            assert_eq!(got.len(), want.len());
            assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
        }
        Scheme::Gaen => unreachable!("not a DP-3T design"),
    }
}

// -------------------------------------------------------------- stories

/// `from` broadcasts to `to` every minute for `minutes` from `start`.
fn meet(
    rng: &mut ChaCha20Rng,
    from: &mut Engine,
    to: &mut Engine,
    start: UnixTime,
    minutes: u64,
    attenuation: i32,
) {
    for m in 0..minutes {
        let t = start.plus(m * 60);
        let b = from.current_beacon(t, rng).unwrap();
        to.record_sighting(&b.payload, t, attenuation, 60).unwrap();
    }
}

/// Alice meets Bob before her onset, on an exposure day, and once too briefly; she
/// uploads through the server; Bob downloads the released batches and finds exactly the
/// exposure day.
async fn story(backend: Backend, s: Scheme) {
    let h = Harness::start(backend, no_padding).await;
    let mut rng = ChaCha20Rng::seed_from_u64(s as u64 + 100);
    let config = EngineConfig::new(s, h.public_key.clone());
    let mut alice = Engine::new(config.clone()).unwrap();
    let mut bob = Engine::new(config).unwrap();
    let today = today();
    let at = |days_ago: u32, hour: u64| UnixTime(Day(today - days_ago).start().0 + hour * 3600);
    meet(&mut rng, &mut alice, &mut bob, at(4, 10), 30, 45); // before onset
    meet(&mut rng, &mut alice, &mut bob, at(2, 10), 30, 45); // exposure
    meet(&mut rng, &mut alice, &mut bob, at(1, 14), 5, 45); // too short
    let onset = Day(today - 3);
    let upload = alice.build_upload(onset, now(), &mut rng).unwrap();
    assert_eq!(upload.path, upload_path(s));

    let releases = upload_and_wait(&h, upload.path, &h.token(3, false), &upload.json).await;
    // One row per record (no row groups an upload's entries).
    assert!(stored_rows(&h, s).await >= 1);
    let mut batches = Vec::new();
    for ms in releases {
        batches.push(fetch_batch(&h, s, ms).await);
    }
    check_independently(s, &upload.json, onset, &batches);

    let t = now();
    for b in &batches {
        bob.ingest(&b.as_batch(), t).unwrap();
    }
    let days = bob.exposure_days(t);
    assert_eq!(
        days.iter().map(|d| d.day).collect::<Vec<_>>(),
        vec![Day(today - 2)],
        "{s:?}"
    );
    assert_eq!(days[0].weighted_minutes, 30.0);

    // Served from memory: the same bytes and signature again, and the bucket is stored.
    let again = fetch_batch(&h, s, batches[0].release_ms).await;
    assert_eq!(again, batches[0]);
    // Every released bucket is built and stored, with real entries or not (issue 12:
    // padded exports for every bucket); this node built the one with the upload.
    assert!(h.state().metrics.buckets_built(design_of(s).scheme()) >= 1);
    h.finish().await;
}

async fn lowcost_story(backend: Backend) {
    story(backend, Scheme::LowCost).await
}

async fn unlinkable_story(backend: Backend) {
    story(backend, Scheme::Unlinkable).await
}

async fn hybrid_story(backend: Backend) {
    story(backend, Scheme::Hybrid).await
}

// -------------------------------------------------------------- padding, empty batches

async fn padded_batches_empty_batches_and_restarts(backend: Backend) {
    let h = Harness::start(backend, |c| {
        c.lowcost_min_keys = 20;
        c.unlinkable_min_entries = 500;
        c.hybrid_min_seeds = 30;
    })
    .await;
    let len = h.config.release_bucket_seconds;
    let today = today();
    // A batch long before any upload (and before this server existed): 200, padded, signed.
    let n = now().0 - 3_600;
    let empty_ms = (n - n % len) * 1000;
    let mut kept = Vec::new();
    for s in DESIGNS {
        let b = fetch_batch(&h, s, empty_ms).await;
        match s {
            Scheme::LowCost => {
                let (release, entries) = read_lowcost_list(&b.body);
                assert_eq!(release, empty_ms);
                assert!((20..30).contains(&entries.len()));
                for (key, date) in &entries {
                    assert_eq!(key.len(), 32);
                    let day = date / 86_400_000;
                    assert_eq!(date % 86_400_000, 0);
                    assert!(day <= u64::from(today) && day + 14 >= u64::from(today));
                }
            }
            Scheme::Unlinkable => assert!((500..750).contains(&Dpcf::parse(&b.body).count)),
            Scheme::Hybrid => {
                let (_, entries) = read_hybrid_list(&b.body);
                assert!((30..45).contains(&entries.len()));
                for (seed, start, w) in &entries {
                    assert_eq!((seed.len(), *w), (16, 120));
                    assert_eq!(start % 7_200_000, 0);
                    assert!(*start < empty_ms);
                }
            }
            Scheme::Gaen => unreachable!(),
        }
        // Computed once, then the same bytes.
        assert_eq!(fetch_batch(&h, s, empty_ms).await, b);
        kept.push((s, b));
    }

    // One real upload of each design lands in a padded batch.
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let t = UnixTime(Day(today - 1).start().0 + 36_000);
    for s in DESIGNS {
        let mut alice = Engine::new(EngineConfig::new(s, h.public_key.clone())).unwrap();
        alice.current_beacon(t, &mut rng).unwrap();
        let upload = alice.build_upload(Day(today - 2), now(), &mut rng).unwrap();
        let json: serde_json::Value = serde_json::from_str(&upload.json).unwrap();
        let releases = upload_and_wait(&h, upload.path, &h.token(2, false), &upload.json).await;
        let mut found = 0;
        for ms in releases {
            let b = fetch_batch(&h, s, ms).await;
            let real_here = match s {
                Scheme::LowCost => {
                    let (_, e) = read_lowcost_list(&b.body);
                    assert!((20..30).contains(&e.len()));
                    let key = b64(json["key"].as_str().unwrap());
                    e.iter().any(|(k, _)| *k == key)
                }
                Scheme::Unlinkable => {
                    let f = Dpcf::parse(&b.body);
                    assert!((500..750).contains(&f.count));
                    let entry = &json["seeds"][real_index(&json, "seeds")];
                    f.contains(&hashed_observation(
                        &b64(entry["seed"].as_str().unwrap()),
                        entry["epoch"].as_u64().unwrap() as u32,
                    ))
                }
                Scheme::Hybrid => {
                    let (_, e) = read_hybrid_list(&b.body);
                    assert!((30..45).contains(&e.len()));
                    let entry = &json["windows"][real_index(&json, "windows")];
                    let seed = b64(entry["seed"].as_str().unwrap());
                    e.iter().any(|(s, _, _)| *s == seed)
                }
                Scheme::Gaen => unreachable!(),
            };
            if real_here {
                found += 1;
                kept.push((s, b));
            }
        }
        assert_eq!(found, 1, "{s:?}: the upload is in exactly one batch");
    }

    // Published bytes never change: the same after a restart (stored or computed).
    let h = h.restart().await;
    for (s, b) in &kept {
        let again = fetch_batch(&h, *s, b.release_ms).await;
        assert_eq!(&again.body, &b.body, "{s:?} {}", b.release_ms);
        assert_eq!(&again.signature, &b.signature);
    }
    h.finish().await;
}

// -------------------------------------------------------------- fake path

async fn fake_uploads_store_nothing_and_answer_alike(backend: Backend) {
    let h = Harness::start(backend, |c| {
        no_padding(c);
        c.upload_delay_ms = 400;
    })
    .await;
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let t = UnixTime(Day(today() - 1).start().0 + 36_000);
    for s in DESIGNS {
        let mut alice = Engine::new(EngineConfig::new(s, h.public_key.clone())).unwrap();
        alice.current_beacon(t, &mut rng).unwrap();
        let fake_body = alice.build_fake_upload(now(), &mut rng).unwrap();
        let real_body = alice
            .build_upload(Day(today() - 2), now(), &mut rng)
            .unwrap();
        assert_eq!(fake_body.json.len(), real_body.json.len(), "{s:?}");
        let mut answers = Vec::new();
        for (token, json) in [
            (h.token(2, true), &real_body.json),  // fake token
            (h.token(2, false), &fake_body.json), // fake body
            (h.token(2, false), &real_body.json), // real
        ] {
            let started = Instant::now();
            let resp = post_json(&h, upload_path(s), &token, json).await;
            let elapsed = started.elapsed();
            assert!(elapsed >= Duration::from_millis(400), "{s:?}: {elapsed:?}");
            let status = resp.status().as_u16();
            answers.push((status, resp.bytes().await.unwrap()));
            if answers.len() < 3 {
                assert_eq!(stored_rows(&h, s).await, 0, "{s:?}: a fake upload stored");
            }
        }
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "{s:?}: {answers:?}"
        );
        assert_eq!(answers[0].0, 200);
        assert!(
            stored_rows(&h, s).await > 0,
            "{s:?}: the real upload is stored"
        );
    }
    // No metrics series tells the real upload from the fake ones (issue 12).
    let metrics = h.metrics_text().await;
    assert!(
        metrics.contains("dp3t_uploads_accepted_total 9"),
        "{metrics}"
    );
    assert!(!metrics.contains("kind=\"real\""));
    assert!(metrics.contains("route=\"/v1/unlinkable/exposed\""));
    h.finish().await;
}

// -------------------------------------------------------------- refusals

fn lowcost_json(key_len: usize, key_date: u64, fake: u8) -> String {
    serde_json::json!({
        "key": base64::engine::general_purpose::STANDARD.encode(vec![1u8; key_len]),
        "keyDate": key_date,
        "fake": fake,
    })
    .to_string()
}

/// A valid unlinkable body with one real entry of epoch `epoch`, as JSON to tweak.
fn unlinkable_value(epoch: u32, rng: &mut ChaCha20Rng) -> serde_json::Value {
    let p = dp3t_core::upload::unlinkable_upload(&[(epoch, [3; 32])], now(), rng).unwrap();
    serde_json::from_str(&p.json).unwrap()
}

/// A valid hybrid body with one real window starting at `start`, as JSON to tweak.
fn hybrid_value(start: u64, minutes: u32, rng: &mut ChaCha20Rng) -> serde_json::Value {
    let w = dp3t_core::hybrid::WindowMinutes::new(minutes).unwrap();
    let p = dp3t_core::upload::hybrid_upload(&[(UnixTime(start), [4; 16])], w, now(), rng).unwrap();
    serde_json::from_str(&p.json).unwrap()
}

fn real_index(v: &serde_json::Value, list: &str) -> usize {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["fake"] == 0)
        .unwrap()
}

async fn every_upload_refusal(backend: Backend) {
    let h = Harness::start(backend, no_padding).await;
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let token = h.token(5, false);
    let n = now().0;
    let today_ms = Day(today()).start_millis();
    let day_ms = 86_400_000;
    let lc = "/v1/exposed";
    let ul = "/v1/unlinkable/exposed";
    let hy = "/v1/hybrid/exposed";
    let refused = |path: &'static str, json: String, code: &'static str| {
        refused(&h, token.clone(), path, json, code)
    };

    // Low-cost.
    refused(lc, lowcost_json(32, today_ms + 3_600_000, 0), "key_date").await;
    // Out of range is dropped, not refused (issue 12: a refusal only real uploads can get
    // tells them apart from fake ones): 200, nothing stored.
    dropped(
        &h,
        Scheme::LowCost,
        lowcost_json(32, today_ms + 2 * day_ms, 0),
    )
    .await;
    dropped(
        &h,
        Scheme::LowCost,
        lowcost_json(32, today_ms - 15 * day_ms, 0),
    )
    .await;
    refused(lc, lowcost_json(16, today_ms, 0), "key_data").await;
    refused(
        lc,
        r#"{"key":"not base64!","keyDate":0,"fake":0}"#.into(),
        "key_data",
    )
    .await;
    refused(lc, lowcost_json(32, today_ms, 2), "fake_flag").await;
    // The v1 SDK's `authData` is ignored, and never bypasses the rule on `key`.
    refused(
        lc,
        r#"{"key":"AAAA","keyDate":0,"fake":0,"authData":{"value":"x"}}"#.into(),
        "key_data",
    )
    .await;
    refused(lc, r#"{"key":"AAAA"}"#.into(), "malformed_body").await;

    // Unlinkable.
    let epoch = (n / 900) as u32 - 4;
    let good = unlinkable_value(epoch, &mut rng);
    let i = real_index(&good, "seeds");
    let mut v = good.clone();
    v["seeds"].as_array_mut().unwrap().pop();
    refused(ul, v.to_string(), "entry_count").await;
    for e in [epoch + 20, epoch - 15 * 96] {
        let mut v = good.clone();
        v["seeds"][i]["epoch"] = e.into();
        dropped(&h, Scheme::Unlinkable, v.to_string()).await;
    }
    let mut v = good.clone();
    v["seeds"][(i + 1) % 1344]["seed"] = "AAAA".into();
    refused(ul, v.to_string(), "key_data").await;
    // Unknown fields never bypass a rule on a known one.
    let mut v = good.clone();
    v["seeds"][i]["extra"] = true.into();
    v["seeds"][(i + 1) % 1344]["seed"] = "AAAA".into();
    refused(ul, v.to_string(), "key_data").await;
    let mut v = good.clone();
    v["seeds"][i]["fake"] = "0".into();
    refused(ul, v.to_string(), "fake_flag").await;

    // Hybrid.
    let start = n - n % 7_200 - 7_200;
    let good = hybrid_value(start, 120, &mut rng);
    let i = real_index(&good, "windows");
    let mut v = good.clone();
    v["windows"][i]["windowStart"] = ((start + 900) * 1000).into();
    refused(hy, v.to_string(), "window").await;
    for w in [start + 4 * 7_200, start - 15 * 86_400] {
        let mut v = good.clone();
        v["windows"][i]["windowStart"] = (w * 1000).into();
        dropped(&h, Scheme::Hybrid, v.to_string()).await;
    }
    let mut v = good.clone();
    v["windows"][i]["windowMinutes"] = 60.into();
    refused(hy, v.to_string(), "window_minutes").await;
    let mut v = good.clone();
    for w in v["windows"].as_array_mut().unwrap() {
        w["windowMinutes"] = 20.into();
    }
    refused(hy, v.to_string(), "window_minutes").await;
    let mut v = good.clone();
    v["windows"].as_array_mut().unwrap().truncate(100);
    refused(hy, v.to_string(), "entry_count").await;
    let mut v = good.clone();
    v["windows"][i]["seed"] = base64::engine::general_purpose::STANDARD
        .encode([1u8; 32])
        .into();
    refused(hy, v.to_string(), "key_data").await;
    let w15 = hybrid_value(n - n % 900 - 900, 15, &mut rng).to_string();
    assert!(
        w15.len() > 64 * 1024,
        "1,344 windows need more than GAEN's 64 KiB"
    );

    // Shared: content type, size, token.
    for (path, json) in [
        (lc, lowcost_json(32, today_ms - day_ms, 0)),
        (ul, good_unlinkable(&mut rng)),
        (hy, w15.clone()),
    ] {
        assert_error(
            h.post(
                path,
                Some(&token),
                Some("text/plain"),
                json.clone().into_bytes(),
            )
            .await,
            415,
            "content_type",
        )
        .await;
        assert_error(
            h.post(path, Some(&token), None, json.clone().into_bytes())
                .await,
            415,
            "content_type",
        )
        .await;
        assert_error(
            h.post(
                path,
                None,
                Some("application/json"),
                json.clone().into_bytes(),
            )
            .await,
            401,
            "auth_missing",
        )
        .await;
        assert_error(
            post_json(&h, path, "not.a.jwt", &json).await,
            401,
            "token_malformed",
        )
        .await;
        // Another signature: one character in the middle of the signature part changed.
        let mut forged = h.token(5, false).into_bytes();
        let i = forged.len() - 20;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_error(
            post_json(&h, path, &forged, &json).await,
            401,
            "token_signature",
        )
        .await;
        assert_error(
            h.post(
                path,
                Some(&token),
                Some("application/json"),
                vec![b' '; 300 * 1024],
            )
            .await,
            413,
            "too_large",
        )
        .await;
        assert_error(
            post_json(&h, path, &token, "{").await,
            400,
            "malformed_body",
        )
        .await;
    }
    for s in DESIGNS {
        assert_eq!(
            stored_rows(&h, s).await,
            0,
            "{s:?}: no refusal stores anything"
        );
    }

    // A token is single use, across every API: the replay stores nothing.
    let once = h.token(5, false);
    let first = post_json(&h, lc, &once, &lowcost_json(32, today_ms - day_ms, 0)).await;
    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(stored_rows(&h, Scheme::LowCost).await, 1);
    let mut other = lowcost_json(32, today_ms - 2 * day_ms, 0);
    assert_error(
        post_json(&h, lc, &once, &other).await,
        409,
        "token_replayed",
    )
    .await;
    other = good_unlinkable(&mut rng);
    assert_error(
        post_json(&h, ul, &once, &other).await,
        409,
        "token_replayed",
    )
    .await;
    assert_error(post_json(&h, hy, &once, &w15).await, 409, "token_replayed").await;
    assert_error(
        h.upload(&once, &padded(&[key_days_ago(2)])).await,
        409,
        "token_replayed",
    )
    .await;
    assert_eq!(stored_rows(&h, Scheme::LowCost).await, 1);
    assert_eq!(stored_rows(&h, Scheme::Unlinkable).await, 0);
    assert_eq!(stored_rows(&h, Scheme::Hybrid).await, 0);
    assert_eq!(h.key_rows().await, 0);
    h.finish().await;
}

async fn refused(h: &Harness, token: String, path: &str, json: String, code: &str) {
    assert_error(post_json(h, path, &token, &json).await, 400, code).await;
}

/// Upload `json` to scheme `s` with a fresh real token: answered `200`, nothing stored.
async fn dropped(h: &Harness, s: Scheme, json: String) {
    let before = stored_rows(h, s).await;
    let resp = post_json(h, upload_path(s), &h.token(5, false), &json).await;
    assert_eq!(resp.status(), 200, "{s:?}");
    assert_eq!(stored_rows(h, s).await, before, "{s:?}: nothing stored");
}

fn good_unlinkable(rng: &mut ChaCha20Rng) -> String {
    let n = now().0;
    unlinkable_value((n / 900) as u32 - 1, rng).to_string()
}

async fn every_download_refusal(backend: Backend) {
    let h = Harness::start(backend, no_padding).await;
    let len_ms = h.config.release_bucket_seconds * 1000;
    let n = now().0 * 1000;
    let boundary = n - n % len_ms;
    for s in DESIGNS {
        let get = |ms: String| {
            let url = format!("{}{}", h.url, batch_path(s, ms));
            let client = h.client.clone();
            async move { client.get(url).send().await.unwrap() }
        };
        assert_error(
            get((boundary + 1).to_string()).await,
            400,
            "batch_release_time",
        )
        .await;
        assert_error(get("12abc".into()).await, 400, "batch_release_time").await;
        assert_error(get("-7200000".into()).await, 400, "batch_release_time").await;
        assert_error(
            get((boundary + 60 * len_ms).to_string()).await,
            404,
            "not_released",
        )
        .await;
        let old = boundary - 15 * 86_400_000;
        assert_error(get((old - old % len_ms).to_string()).await, 404, "expired").await;
        // The newest released boundary is served (empty, signed).
        let b = fetch_batch(&h, s, boundary).await;
        match s {
            Scheme::LowCost => assert!(read_lowcost_list(&b.body).1.is_empty()),
            Scheme::Unlinkable => assert_eq!(Dpcf::parse(&b.body).count, 0),
            Scheme::Hybrid => assert!(read_hybrid_list(&b.body).1.is_empty()),
            Scheme::Gaen => unreachable!(),
        }
        // HEAD: the same status and headers, no body.
        let head = h
            .client
            .head(format!("{}{}", h.url, batch_path(s, boundary)))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status().as_u16(), 200);
        assert_eq!(
            head.headers()["content-length"].to_str().unwrap(),
            b.body.len().to_string()
        );
        assert_eq!(head.headers()["signature"].to_str().unwrap(), b.signature);
        assert!(head.bytes().await.unwrap().is_empty());
        let wrong_method = h
            .client
            .post(format!("{}{}", h.url, batch_path(s, boundary)))
            .send()
            .await
            .unwrap();
        assert_error(wrong_method, 405, "method_not_allowed").await;
        let wrong_method = h
            .client
            .get(format!("{}{}", h.url, upload_path(s)))
            .send()
            .await
            .unwrap();
        assert_error(wrong_method, 405, "method_not_allowed").await;
    }
    let hello = h.client.get(format!("{}/v1", h.url)).send().await.unwrap();
    assert_eq!(hello.status().as_u16(), 200);
    h.finish().await;
}
