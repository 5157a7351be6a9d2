//! The real server over HTTP: uploads, release, downloads, every refusal, tokens, the fake
//! path, concurrency and restarts. Each test runs on SQLite and, when `TEST_DATABASE_URL`
//! is set, on PostgreSQL (a fresh database per test).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use futures_util::future::join_all;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

on_both_databases!(
    upload_release_download_and_verify,
    later_buckets_and_tags,
    padding_fills_small_buckets,
    every_body_refusal,
    every_token_refusal,
    jti_replay_inserts_nothing,
    retry_after_a_lost_answer_gets_the_same_answer,
    fake_uploads_look_like_real_ones,
    concurrent_uploads_lose_and_duplicate_nothing,
    rs256_tokens_from_a_configured_key,
    published_bytes_survive_a_restart,
    ops_endpoints_and_headers,
);

fn b64url(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn es256(h: &Harness, claims: &serde_json::Value) -> String {
    h.sign_claims(claims)
}

/// Upload the JSON body `v` as `application/json` with `token`.
async fn upload_json(h: &Harness, token: &str, v: &serde_json::Value) -> reqwest::Response {
    h.upload_raw(
        Some(token),
        Some("application/json"),
        v.to_string().into_bytes(),
    )
    .await
}

async fn upload_release_download_and_verify(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let before = Download::fetch(&h, None).await;
    assert_eq!(before.status, 204);
    assert_eq!(before.cache_control, "public, max-age=300");

    let good = vec![key_days_ago(3), key_days_ago(4), key_days_ago(2)];
    let mut short = key_days_ago(3);
    short.rolling_period = 72;
    let dropped = vec![
        UploadKey {
            fake: 1,
            ..key_days_ago(3)
        }, // marked fake
        key_days_ago(8),  // before onset (5 days ago)
        key_days_ago(-2), // past tomorrow
        key_days_ago(0),  // today: embargoed until tomorrow 02:00
        key_days_ago(-1), // tomorrow: embargoed
    ];
    let mut keys = good.clone();
    keys.push(short.clone());
    keys.extend(dropped.clone());
    let keys = padded(&keys);
    let resp = h.upload(&h.token(5, false), &keys).await;
    assert_eq!(resp.status(), 200);
    // The reference backend's answer: `200`, body `OK`.
    assert_eq!(resp.text().await.unwrap(), "OK");

    let mut expected = set_of(&good);
    expected.insert(short.key_data);
    let d = h.wait_for_keys(None, &expected).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.content_type.as_deref(), Some("application/zip"));
    assert_eq!(d.cache_control, "public, max-age=300");
    let batch = d.batch.as_ref().unwrap();
    assert_eq!(
        d.key_set(),
        expected,
        "exactly the valid keys, nothing dropped shows up"
    );
    assert_eq!(batch.region, "XX");
    assert!(batch.end_timestamp * 1000 <= d.tag && batch.start_timestamp < batch.end_timestamp);
    let k = batch
        .keys
        .iter()
        .find(|k| k.key_data == short.key_data)
        .unwrap();
    assert_eq!(
        (k.rolling_start_interval_number, k.rolling_period),
        (short.rolling_start_number, 72)
    );

    // Same bytes and signature every time; nothing newer after the tag.
    let again = Download::fetch(&h, None).await;
    if again.tag == d.tag {
        assert_eq!(again.body, d.body);
        assert_eq!(again.signature, d.signature);
    }
    let after = Download::fetch(&h, Some(d.tag)).await;
    assert_eq!(after.status, 204);
    assert!(after.tag >= d.tag);
    // A tag in the future is "nothing new", not an error.
    assert_eq!(
        Download::fetch(&h, Some(d.tag + 86_400_000)).await.status,
        204
    );

    let metrics = h.metrics_text().await;
    assert!(metrics.contains("dp3t_uploads_accepted_total 1"));
    assert!(!metrics.contains("dp3t_buckets_built_total{scheme=\"gaen\"} 0"));
    h.finish().await;
}

async fn later_buckets_and_tags(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let first = vec![key_days_ago(3), key_days_ago(3)];
    assert_eq!(
        h.upload(&h.token(5, false), &padded(&first)).await.status(),
        200
    );
    let d1 = h.wait_for_keys(None, &set_of(&first)).await;
    assert_eq!(d1.key_set(), set_of(&first));

    let second = vec![key_days_ago(2)];
    assert_eq!(
        h.upload(&h.token(5, false), &padded(&second))
            .await
            .status(),
        200
    );
    // From the first tag: only the second upload.
    let d2 = h.wait_for_keys(Some(d1.tag), &set_of(&second)).await;
    assert_eq!(d2.key_set(), set_of(&second));
    assert!(d2.tag > d1.tag);
    // From the start: the union, sorted by key data.
    let all = Download::fetch(&h, Some(0)).await;
    let mut union = set_of(&first);
    union.extend(set_of(&second));
    if all.tag == d2.tag {
        assert_eq!(all.key_set(), union);
        let keys: Vec<_> = all
            .batch
            .as_ref()
            .unwrap()
            .keys
            .iter()
            .map(|k| k.key_data)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        // A tag between bucket boundaries (1 ms after the first) gives the same answer as
        // the first tag itself.
        let mid = Download::fetch(&h, Some(d1.tag + 1)).await;
        let exact = Download::fetch(&h, Some(d1.tag)).await;
        if mid.tag == exact.tag {
            assert_eq!(mid.body, exact.body);
        }
    }
    // Cached union: same bytes on a second request.
    let all2 = Download::fetch(&h, Some(0)).await;
    if all2.tag == all.tag {
        assert_eq!(all2.body, all.body);
        assert_eq!(all2.signature, all.signature);
    }
    h.finish().await;
}

async fn padding_fills_small_buckets(backend: Backend) {
    let h = Harness::start(backend, |c| c.export_min_keys = 40).await;
    let mut real = vec![key_days_ago(3), key_days_ago(5)];
    real[1].rolling_period = 100;
    assert_eq!(
        h.upload(&h.token(6, false), &padded(&real)).await.status(),
        200
    );
    h.wait_for_keys(None, &set_of(&real)).await;
    // Every bucket is padded, with real keys or not, to the minimum rounded up plus a
    // random extra (issue 12: published counts); look at the one with the real keys.
    let stored = h.state().db.buckets_between(0, u64::MAX / 2).await.unwrap();
    let bucket = stored.iter().find(|b| b.real_keys == 2).unwrap();
    let batch = dp3t_core::export::read_verified_export(&bucket.zip, &h.public_key).unwrap();
    assert!((40..60).contains(&batch.keys.len()));
    let distinct: BTreeSet<_> = batch.keys.iter().map(|k| k.key_data).collect();
    assert_eq!(distinct.len(), batch.keys.len());
    // Padding keys copy the metadata of the window's real keys (here only these).
    let shapes: BTreeSet<_> = real
        .iter()
        .map(|k| (k.rolling_start_number, k.rolling_period))
        .collect();
    for k in &batch.keys {
        assert!(shapes.contains(&(k.rolling_start_interval_number, k.rolling_period)));
    }
    h.finish().await;
}

async fn every_body_refusal(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let token = h.token(5, false);
    let good = padded(&[key_days_ago(3)]);
    let body = upload_body(&good);

    assert_error(
        h.upload_raw(Some(&token), Some("text/plain"), body.clone())
            .await,
        415,
        "content_type",
    )
    .await;
    assert_error(
        h.upload_raw(Some(&token), None, body.clone()).await,
        415,
        "content_type",
    )
    .await;
    assert_error(
        h.upload_raw(
            Some(&token),
            Some("application/json"),
            vec![b' '; 64 * 1024 + 1],
        )
        .await,
        413,
        "too_large",
    )
    .await;
    assert_error(
        h.upload_raw(
            Some(&token),
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await,
        400,
        "malformed_body",
    )
    .await;
    // Unknown fields are ignored, but never bypass a rule on a known field.
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["surprise"] = 1.into();
    v["gaenKeys"][3]["color"] = "red".into();
    v["gaenKeys"][3]["keyData"] = "AAAA".into();
    assert_error(upload_json(&h, &token, &v).await, 400, "key_data").await;
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["fake"] = "1".into();
    assert_error(upload_json(&h, &token, &v).await, 400, "fake_flag").await;
    let dup = format!(
        r#"{{"gaenKeys":[],{}"#,
        String::from_utf8(body.clone())
            .unwrap()
            .trim_start_matches('{')
    );
    assert_error(
        h.upload_raw(Some(&token), Some("application/json"), dup.into_bytes())
            .await,
        400,
        "malformed_body",
    )
    .await;
    assert_error(h.upload(&token, &good[..29]).await, 400, "key_count").await;
    let mut more = good.clone();
    more.push(fake_key());
    assert_error(h.upload(&token, &more).await, 400, "key_count").await;
    for bad in ["AAAA", "not base64!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="] {
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["gaenKeys"][0]["keyData"] = bad.into();
        assert_error(upload_json(&h, &token, &v).await, 400, "key_data").await;
    }
    for rp in [0, 145] {
        let mut keys = good.clone();
        keys[0].rolling_period = rp;
        assert_error(h.upload(&token, &keys).await, 400, "rolling_period").await;
    }
    let mut keys = good.clone();
    keys[0].fake = 2;
    assert_error(h.upload(&token, &keys).await, 400, "fake_flag").await;
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["gaenKeys"][0]["rollingStartNumber"] = (-1).into();
    assert_error(upload_json(&h, &token, &v).await, 400, "malformed_body").await;

    // None of the refusals stored anything or used up the token.
    assert_eq!(h.key_rows().await, 0);
    assert_eq!(h.upload(&token, &good).await.status(), 200);
    assert_eq!(h.key_rows().await, 1);
    assert_eq!(
        h.state()
            .metrics
            .rejected_count(backend::api::ErrorCode::KeyData),
        4
    );
    h.finish().await;
}

async fn every_token_refusal(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let keys = padded(&[key_days_ago(3)]);
    let body = upload_body(&keys);
    let n = now().0;
    let send = |t: Option<String>| {
        let h = &h;
        let body = body.clone();
        async move {
            h.upload_raw(t.as_deref(), Some("application/json"), body)
                .await
        }
    };

    assert_error(send(None).await, 401, "auth_missing").await;
    let resp = h
        .client
        .post(format!("{}/v2/gaen/exposed", h.url))
        .header("content-type", "application/json")
        .header("authorization", format!("Basic {}", h.token(5, false)))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "auth_missing").await;
    assert_error(send(Some("not-a-jwt".into())).await, 401, "token_malformed").await;

    // alg: none, with and without a signature part.
    let c = claims(5);
    let none = format!(
        "{}.{}.",
        b64url(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64url(&c)
    );
    assert_error(send(Some(none)).await, 401, "token_algorithm").await;
    // HS256 keyed with the public key (the classic confusion attack) and with a secret.
    let pub_pem = std::fs::read(h.data_dir.join("ha-dev-key.pub.pem")).unwrap();
    for secret in [&pub_pem[..], b"secret"] {
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert_error(send(Some(hs)).await, 401, "token_algorithm").await;
    }
    // ES384 is refused by name too.
    let es384 = format!(
        "{}.{}.AAAA",
        b64url(&serde_json::json!({"alg": "ES384"})),
        b64url(&c)
    );
    assert_error(send(Some(es384)).await, 401, "token_algorithm").await;
    // A valid ES256 signature by an untrusted key.
    let other = dp3t_core::signing::SigningKey::generate(&mut rand::rngs::OsRng);
    let other_pem = other.to_pkcs8_pem().unwrap();
    let forged = encode(
        &Header::new(Algorithm::ES256),
        &c,
        &EncodingKey::from_ec_pem(other_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_error(send(Some(forged)).await, 401, "token_signature").await;
    // Tampered claims under a trusted signature.
    let good = es256(&h, &c);
    let parts: Vec<&str> = good.split('.').collect();
    let mut c2 = c.clone();
    c2["onset"] = "2000-01-01".into();
    let tampered = format!("{}.{}.{}", parts[0], b64url(&c2), parts[2]);
    assert_error(send(Some(tampered)).await, 401, "token_signature").await;

    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims(5);
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v;
        }
        es256(&h, &c)
    };
    // Expired (beyond the 30 s leeway), validity too long, not yet valid.
    let mut c = claims(5);
    c["iat"] = (n - 3000).into();
    c["exp"] = (n - 120).into();
    assert_error(send(Some(es256(&h, &c))).await, 401, "token_expired").await;
    assert_error(
        send(Some(with("exp", (n + 3601).into()))).await,
        401,
        "token_validity",
    )
    .await;
    let mut c = claims(5);
    c["iat"] = (n - 10).into();
    c["exp"] = (n - 10 + 3601).into();
    assert_error(send(Some(es256(&h, &c))).await, 401, "token_validity").await;
    let mut c = claims(5);
    c["iat"] = (n + 600).into();
    c["exp"] = (n + 1200).into();
    assert_error(send(Some(es256(&h, &c))).await, 401, "token_not_yet_valid").await;
    // Wrong or missing scope.
    assert_error(
        send(Some(with("scope", "other".into()))).await,
        403,
        "token_scope",
    )
    .await;
    assert_error(
        send(Some(with("scope", serde_json::Value::Null))).await,
        403,
        "token_scope",
    )
    .await;
    // Malformed or missing claims.
    for (k, v) in [
        ("onset", serde_json::Value::Null),
        ("onset", "yesterday".into()),
        // (A missing `fake` means a real token: see sdk_compat.rs.)
        ("fake", 0.into()),
        ("fake", "yes".into()),
        ("jti", serde_json::Value::Null),
        ("jti", "".into()),
        ("iat", serde_json::Value::Null),
        ("exp", serde_json::Value::Null),
    ] {
        assert_error(send(Some(with(k, v))).await, 401, "token_claims").await;
    }
    assert_eq!(h.key_rows().await, 0);
    // Exactly 60 minutes of validity is fine.
    let mut c = claims(5);
    c["iat"] = (n - 10).into();
    c["exp"] = (n - 10 + 3600).into();
    assert_eq!(send(Some(es256(&h, &c))).await.status(), 200);
    assert_eq!(h.key_rows().await, 1);
    h.finish().await;
}

/// Send an upload and drop the connection before the answer (during the constant delay),
/// as a flaky mobile network does; returns once the server has had time to store it.
async fn upload_and_hang_up(h: &Harness, token: &str, body: &[u8]) {
    use std::io::Write as _;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let req = format!(
        "POST /v2/gaen/exposed HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Dropped here: the answer (due after the delay) is never read.
    })
    .await
    .unwrap();
}

async fn retry_after_a_lost_answer_gets_the_same_answer(backend: Backend) {
    let h = Harness::start(backend, |c| c.upload_delay_ms = 1000).await;
    // A real upload whose answer is lost, then retried with the same token and body.
    let real = padded(&[key_days_ago(3)]);
    let token = h.token(5, false);
    upload_and_hang_up(&h, &token, &upload_body(&real)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.key_rows().await == 0 {
        assert!(Instant::now() < deadline, "the upload was not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let retry = h.upload(&token, &real).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.text().await.unwrap(), "OK");
    assert_eq!(h.key_rows().await, 1, "stored once");
    // Another body with the spent token is still refused.
    assert_error(
        h.upload(&token, &padded(&[key_days_ago(2)])).await,
        409,
        "token_replayed",
    )
    .await;
    // A fake upload behaves the same on retry.
    let fake = h.token(5, true);
    let body = padded(&[]);
    assert_eq!(h.upload(&fake, &body).await.status(), 200);
    assert_eq!(h.upload(&fake, &body).await.status(), 200);
    // And across a restart of the server.
    let h = h.restart().await;
    assert_eq!(h.upload(&token, &real).await.status(), 200);
    assert_eq!(h.key_rows().await, 1);
    h.wait_for_keys(None, &set_of(&real)).await;
    h.finish().await;
}

async fn jti_replay_inserts_nothing(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let token = h.token(5, false);
    let first = vec![key_days_ago(3)];
    assert_eq!(h.upload(&token, &padded(&first)).await.status(), 200);
    assert_eq!(h.key_rows().await, 1);
    let second = vec![key_days_ago(3), key_days_ago(2)];
    assert_error(
        h.upload(&token, &padded(&second)).await,
        409,
        "token_replayed",
    )
    .await;
    // Also replayed as a concurrent burst: every copy refused, nothing stored.
    let replay = padded(&second);
    let results = join_all((0..8).map(|_| h.upload(&token, &replay))).await;
    assert!(results.iter().all(|r| r.status() == 409));
    assert_eq!(h.key_rows().await, 1);
    let d = h.wait_for_keys(None, &set_of(&first)).await;
    assert_eq!(d.key_set(), set_of(&first));
    h.finish().await;
}

async fn fake_uploads_look_like_real_ones(backend: Backend) {
    let h = Harness::start(backend, |c| c.upload_delay_ms = 400).await;
    let real_keys = padded(&[key_days_ago(3), key_days_ago(4)]);
    let timed = |token: String, keys: Vec<UploadKey>| {
        let h = &h;
        async move {
            let t = Instant::now();
            let r = h.upload(&token, &keys).await;
            let status = r.status().as_u16();
            let headers: Vec<String> = {
                let mut v: Vec<String> = r
                    .headers()
                    .iter()
                    .filter(|(k, _)| k.as_str() != "date")
                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
                    .collect();
                v.sort();
                v
            };
            let body = r.bytes().await.unwrap();
            (status, headers, body, t.elapsed())
        }
    };
    // A fake token with keys that would be valid, a real token with only fake keys, and
    // a real upload: identical answers, all after the delay.
    let fake_token = timed(h.token(5, true), real_keys.clone()).await;
    let all_fake = timed(h.token(5, false), padded(&[])).await;
    let real = timed(h.token(5, false), real_keys.clone()).await;
    for (status, headers, body, elapsed) in [&fake_token, &all_fake, &real] {
        assert_eq!(*status, 200);
        assert_eq!(headers, &real.1);
        assert_eq!(body, &real.2);
        assert!(*elapsed >= Duration::from_millis(400), "{elapsed:?}");
    }
    assert_eq!(h.key_rows().await, 2, "only the real upload stored keys");
    // The fake token is single-use too.
    let fake = h.token(5, true);
    assert_eq!(h.upload(&fake, &padded(&[])).await.status(), 200);
    assert_error(h.upload(&fake, &padded(&[])).await, 409, "token_replayed").await;
    let d = h.wait_for_keys(None, &set_of(&real_keys)).await;
    assert_eq!(d.key_set(), set_of(&real_keys));
    // The metrics count real and fake uploads alike (issue 12: a scrape after an upload
    // must not tell which it was).
    let m = h.metrics_text().await;
    assert!(m.contains("dp3t_uploads_accepted_total 4"), "{m}");
    assert!(!m.contains("kind="));
    assert!(!m.contains("dp3t_keys_stored_total"));
    h.finish().await;
}

async fn concurrent_uploads_lose_and_duplicate_nothing(backend: Backend) {
    let h = Harness::start(backend, |c| c.upload_delay_ms = 20).await;
    let uploads: Vec<Vec<UploadKey>> = (0..200)
        .map(|_| (0..10).map(|_| key_days_ago(3)).collect())
        .collect();
    let mut expected = BTreeSet::new();
    let mut requests = Vec::new();
    for (i, real) in uploads.iter().enumerate() {
        expected.extend(set_of(real));
        // Each upload also re-sends two keys of its neighbour: duplicates are idempotent.
        let mut keys = real.clone();
        keys.extend(uploads[(i + 1) % uploads.len()][..2].iter().cloned());
        requests.push((h.token(5, false), padded(&keys)));
    }
    let statuses: Vec<u16> = join_all(
        requests
            .iter()
            .map(|(token, keys)| async { h.upload(token, keys).await.status().as_u16() }),
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(h.key_rows().await, 2000);
    let d = h.wait_for_keys(None, &expected).await;
    let keys = &d.batch.as_ref().unwrap().keys;
    assert_eq!(keys.len(), 2000, "no key twice");
    assert_eq!(d.key_set(), expected);
    h.finish().await;
}

async fn rs256_tokens_from_a_configured_key(backend: Backend) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let h = Harness::start(backend, |c| {
        c.ha_public_keys = vec![fixtures.join("rsa-test-key.pub.pem")];
    })
    .await;
    let rsa = std::fs::read(fixtures.join("rsa-test-key.pem")).unwrap();
    let c = claims(5);
    let token = encode(
        &Header::new(Algorithm::RS256),
        &c,
        &EncodingKey::from_rsa_pem(&rsa).unwrap(),
    )
    .unwrap();
    let keys = vec![key_days_ago(3)];
    assert_eq!(h.upload(&token, &padded(&keys)).await.status(), 200);
    // The dev key stays trusted next to configured keys.
    assert_eq!(
        h.upload(&h.token(5, false), &padded(&[key_days_ago(2)]))
            .await
            .status(),
        200
    );
    assert_eq!(h.key_rows().await, 2);
    // An RS256 token with the right shape but made by another RSA key is refused.
    let parts: Vec<&str> = token.split('.').collect();
    let mut c2 = c.clone();
    c2["jti"] = "another".into();
    let bad = format!("{}.{}.{}", parts[0], b64url(&c2), parts[2]);
    assert_error(
        h.upload_raw(
            Some(&bad),
            Some("application/json"),
            upload_body(&padded(&keys)),
        )
        .await,
        401,
        "token_signature",
    )
    .await;
    h.finish().await;
}

async fn published_bytes_survive_a_restart(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let keys = vec![key_days_ago(3), key_days_ago(3)];
    let token = h.token(5, false);
    assert_eq!(h.upload(&token, &padded(&keys)).await.status(), 200);
    let before = h.wait_for_keys(None, &set_of(&keys)).await;
    let h = h.restart().await;
    // One bucket in range: its zip is served as stored in published_buckets, byte for
    // byte; the Signature too while the newest release is the same.
    let after = Download::fetch(&h, None).await;
    assert_eq!(after.body, before.body);
    if after.tag == before.tag {
        assert_eq!(after.signature, before.signature);
    }
    // Used tokens are remembered across restarts.
    assert_error(
        h.upload(&token, &padded(&[key_days_ago(2)])).await,
        409,
        "token_replayed",
    )
    .await;
    h.finish().await;
}

async fn ops_endpoints_and_headers(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let get = |path: &str| h.client.get(format!("{}{path}", h.url)).send();
    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), 200);
    for (k, v) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(r.headers().get(k).unwrap(), v, "{k}");
    }
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    let expected_db = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(v["database"], expected_db);

    let r = get("/v2/gaen").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("Hello"));

    let r = get("/openapi.yaml").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), backend::api::ops::OPENAPI_YAML);

    let m = h.metrics_text().await;
    for name in [
        "dp3t_uploads_accepted_total",
        "dp3t_uploads_rejected_total{reason=\"token_replayed\"}",
        "dp3t_buckets_built_total",
        "dp3t_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\",le=\"+Inf\"} 1",
        "dp3t_buckets_built_total{scheme=\"hybrid\"}",
        "dp3t_bucket_release_failures_total{scheme=\"gaen\"} 0",
    ] {
        assert!(m.contains(name), "{name}");
    }
    // docs/API.md documents exactly the metric families the server renders.
    let rendered: std::collections::BTreeSet<&str> = m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let api = include_str!("../../docs/API.md");
    let section = &api[api.find("## `GET /metrics`").unwrap()..];
    let documented: std::collections::BTreeSet<&str> = section
        .lines()
        .take_while(|l| !l.starts_with("## ") || l.starts_with("## `GET /metrics`"))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert_eq!(rendered, documented);

    // HEAD of the download: same status and headers, no body.
    let r = h
        .client
        .head(format!("{}/v2/gaen/exposed", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().contains_key("x-key-bundle-tag"));
    assert!(r.headers().contains_key("signature"));

    assert_error(get("/nope").await.unwrap(), 404, "not_found").await;
    let r = h
        .client
        .delete(format!("{}/v2/gaen/exposed", h.url))
        .send()
        .await
        .unwrap();
    assert_error(r, 405, "method_not_allowed").await;
    assert_error(
        get("/v2/gaen/exposed?lastKeyBundleTag=abc").await.unwrap(),
        400,
        "bad_query",
    )
    .await;
    assert_error(
        get("/v2/gaen/exposed?lastKeyBundleTag=-5").await.unwrap(),
        400,
        "bad_query",
    )
    .await;
    h.finish().await;
}
