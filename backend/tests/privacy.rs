//! Privacy measured as an adversary measures it (issue 12): what an observer of the
//! encrypted stream sees of an upload's answer is its length and its timing. Every answer
//! to an upload request, accepted or refused, real or fake, on every upload route, must
//! have the same number of bytes on the wire and leave after the same delay.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

on_both_databases!(
    every_upload_answer_has_the_same_size_on_the_wire,
    refusals_and_acceptances_leave_after_the_same_delay,
    stored_rows_do_not_group_an_upload,
);

/// Send a raw HTTP/1.1 POST and return the whole answer as bytes, and how long it took.
fn raw_post(
    h: &Harness,
    path: &str,
    auth: Option<&str>,
    ct: &str,
    body: &[u8],
) -> (Vec<u8>, Duration) {
    let addr = h.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: Bearer {a}\r\n"));
    }
    req.push_str("\r\n");
    let started = Instant::now();
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    (out, started.elapsed())
}

fn status_of(answer: &[u8]) -> u16 {
    std::str::from_utf8(&answer[9..12])
        .unwrap()
        .parse()
        .unwrap()
}

/// One request: a name, the path, the token, the content type and the body.
type Case = (&'static str, String, Option<String>, &'static str, Vec<u8>);

/// Requests that exercise every outcome of every upload route.
fn cases(h: &Harness) -> Vec<Case> {
    let good = upload_body(&padded(&[key_days_ago(3)]));
    let mut bad_key: serde_json::Value = serde_json::from_slice(&good).unwrap();
    bad_key["gaenKeys"][0]["keyData"] = "AAAA".into();
    let mut expired = claims(5);
    expired["iat"] = (now().0 - 3000).into();
    expired["exp"] = (now().0 - 200).into();
    let replayed = h.token(5, false);
    let v1 = format!(
        r#"{{"gaenKeys":{},"delayedKeyDate":{},"fake":0}}"#,
        serde_json::to_string(
            &serde_json::from_slice::<serde_json::Value>(&good).unwrap()["gaenKeys"]
        )
        .unwrap(),
        today() * 144
    );
    let lowcost = format!(
        r#"{{"key":"{}","keyDate":{},"fake":0}}"#,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]),
        u64::from(today() - 2) * 86_400_000
    );
    let json = "application/json";
    vec![
        (
            "real",
            "/v2/gaen/exposed".into(),
            Some(h.token(5, false)),
            json,
            good.clone(),
        ),
        (
            "fake token",
            "/v2/gaen/exposed".into(),
            Some(h.token(5, true)),
            json,
            good.clone(),
        ),
        (
            "replay (first)",
            "/v2/gaen/exposed".into(),
            Some(replayed.clone()),
            json,
            good.clone(),
        ),
        (
            "replay (409)",
            "/v2/gaen/exposed".into(),
            Some(replayed),
            json,
            upload_body(&padded(&[key_days_ago(4)])),
        ),
        (
            "bad key (400)",
            "/v2/gaen/exposed".into(),
            Some(h.token(5, false)),
            json,
            bad_key.to_string().into_bytes(),
        ),
        (
            "expired (401)",
            "/v2/gaen/exposed".into(),
            Some(h.sign_claims(&expired)),
            json,
            good.clone(),
        ),
        (
            "bad signature (401)",
            "/v2/gaen/exposed".into(),
            Some(format!("{}x", h.token(5, false))),
            json,
            good.clone(),
        ),
        (
            "no token (401)",
            "/v2/gaen/exposed".into(),
            None,
            json,
            good.clone(),
        ),
        (
            "content type (415)",
            "/v2/gaen/exposed".into(),
            Some(h.token(5, false)),
            "text/plain",
            good.clone(),
        ),
        (
            "not json (400)",
            "/v2/gaen/exposed".into(),
            Some(h.token(5, false)),
            json,
            b"{".to_vec(),
        ),
        (
            "v1 with next-day token",
            "/v1/gaen/exposed".into(),
            Some(h.token(5, false)),
            json,
            v1.clone().into_bytes(),
        ),
        (
            "v1 fake",
            "/v1/gaen/exposed".into(),
            Some(h.token(5, true)),
            json,
            v1.into_bytes(),
        ),
        (
            "low-cost",
            "/v1/exposed".into(),
            Some(h.token(5, false)),
            json,
            lowcost.into_bytes(),
        ),
        (
            "next-day, wrong token (401)",
            "/v1/gaen/exposednextday".into(),
            Some(h.token(5, false)),
            json,
            b"{}".to_vec(),
        ),
    ]
}

async fn every_upload_answer_has_the_same_size_on_the_wire(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let mut sizes = Vec::new();
    for (name, path, token, ct, body) in cases(&h) {
        let (answer, _) =
            tokio::task::block_in_place(|| raw_post(&h, &path, token.as_deref(), ct, &body));
        sizes.push((name, status_of(&answer), answer.len()));
    }
    let statuses: Vec<u16> = sizes.iter().map(|s| s.1).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 409, 400, 401, 401, 401, 415, 400, 200, 200, 200, 401],
        "{sizes:?}"
    );
    assert!(
        sizes.iter().all(|s| s.2 == sizes[0].2),
        "answers differ in size on the wire: {sizes:?}"
    );
    h.finish().await;
}

/// Two-sample Kolmogorov–Smirnov test: the p-value (asymptotic) that `a` and `b` come
/// from one distribution.
fn ks_p_value(a: &mut [f64], b: &mut [f64]) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            i += 1;
        } else {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let en = (n * m / (n + m)).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    let mut p = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        p += 2.0 * (-1f64).powf(k - 1.0) * (-2.0 * k * k * lambda * lambda).exp();
    }
    p.clamp(0.0, 1.0)
}

async fn refusals_and_acceptances_leave_after_the_same_delay(backend: Backend) {
    let h = Harness::start(backend, |c| c.upload_delay_ms = 150).await;
    let good = upload_body(&padded(&[key_days_ago(3)]));
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..40 {
        // Alternate, so that a drift of the machine's load hits both alike.
        let (token, sink) = if i % 2 == 0 {
            (h.token(5, false), &mut accepted)
        } else {
            (format!("{}x", h.token(5, false)), &mut refused)
        };
        let (answer, t) = tokio::task::block_in_place(|| {
            raw_post(
                &h,
                "/v2/gaen/exposed",
                Some(&token),
                "application/json",
                &good,
            )
        });
        assert_eq!(status_of(&answer), if i % 2 == 0 { 200 } else { 401 });
        assert!(
            t >= Duration::from_millis(150),
            "answered before the delay: {t:?}"
        );
        sink.push(t.as_secs_f64());
    }
    let p = ks_p_value(&mut accepted, &mut refused);
    assert!(
        p > 0.001,
        "KS p = {p}: refusals are distinguishable by timing"
    );
    h.finish().await;
}

#[test]
fn ks_test_tells_different_distributions_apart() {
    let mut a: Vec<f64> = (0..40).map(|i| 1.0 + f64::from(i) * 0.001).collect();
    let mut b: Vec<f64> = (0..40).map(|i| 1.05 + f64::from(i) * 0.001).collect();
    assert!(ks_p_value(&mut a, &mut b) < 1e-6);
    let mut c: Vec<f64> = (0..40).map(|i| 1.0 + f64::from(i) * 0.001).collect();
    let mut d: Vec<f64> = (0..40).map(|i| 1.0005 + f64::from(i) * 0.001).collect();
    assert!(ks_p_value(&mut c, &mut d) > 0.5);
}

/// With a copy of the database, the keys of one upload must not be told apart from
/// another's by their row ids (sequential ids put them next to each other).
async fn stored_rows_do_not_group_an_upload(backend: Backend) {
    use sqlx::{Connection as _, Row as _};
    // 10-second buckets: the four uploads usually share one (backend/tests/forensics.rs
    // checks the same deterministically, and the heap order and xmin on PostgreSQL).
    let h = Harness::start(backend, |c| c.release_bucket_seconds = 10).await;
    let uploads: Vec<Vec<UploadKey>> = (0..4)
        .map(|_| (0..6).map(|d| key_days_ago(2 + d)).collect())
        .collect();
    for keys in &uploads {
        assert_eq!(
            h.upload(&h.token(8, false), &padded(keys)).await.status(),
            200
        );
    }
    // Rows are written in arrival order and shuffled when their bucket is released.
    let all: BTreeSet<[u8; 16]> = uploads.iter().flat_map(|u| set_of(u)).collect();
    h.wait_for_keys(None, &all).await;
    let url = h
        .config
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", h.data_dir.join("dp3t.db").display()));
    const ORDERED: &str = "SELECT key_data, bucket_end FROM gaen_keys ORDER BY bucket_end, id";
    let rows: Vec<(Vec<u8>, i64)> = if url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(ORDERED)
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    } else {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(ORDERED)
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    assert_eq!(rows.len(), 24);
    let upload_of = |k: &[u8]| {
        uploads
            .iter()
            .position(|u| u.iter().any(|x| x.key_data[..] == *k))
            .unwrap()
    };
    // In id order within each released bucket: neighbours from the same upload. A bucket
    // of all four uploads has 23 pairs: 20 from one upload in arrival order, about
    // 23 * 5/23 = 5 when shuffled.
    let mut pairs = 0;
    let mut same = 0;
    for w in rows.windows(2) {
        if w[0].1 == w[1].1 {
            pairs += 1;
            same += usize::from(upload_of(&w[0].0) == upload_of(&w[1].0));
        }
    }
    assert!(
        pairs >= 17,
        "the uploads were released in too many buckets: {pairs} pairs"
    );
    assert!(
        same * 100 <= pairs * 60,
        "rows grouped by upload: {same} of {pairs}"
    );
    h.finish().await;
}
