//! What the published DP-3T apps send, byte for byte: one test per client request of
//! issue 9's table, each with the body, field order, value types and escaping that the
//! SDK's own serializer produces (Android: Gson, declaration order, `=` escaped as
//! `\u003d`; iOS: `JSONEncoder`, `/` escaped as `\/`, integers for flags), answered `200`
//! and, for real uploads, published in the exports of both GAEN APIs.
//!
//! Sources read: DP-3T/dp3t-sdk-android (`GaenRequest`, `GaenKey`, `GaenSecondDay`,
//! `DP3TKotlin.sendFakeInfectedRequest`, `ReportService`, `BucketService`),
//! DP-3T/dp3t-sdk-ios (`ExposeeListModel`, `DelayedKeyModel`, `Endpoints`), and
//! DP-3T/dp3t-sdk-backend (`GaenController`, `GaenV2Controller`, `JWTValidator`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use dp3t_core::export::{read_verified_export, ExportBatch};
use dp3t_core::signing::verify_response;
use dp3t_core::time::Day;

on_both_databases!(
    android_2x_v2_upload_with_delayed_key_date,
    android_2x_fake_request,
    ios_2x_v2_upload_with_integer_flags,
    v1_api_upload_next_day_and_day_download,
    v1_old_android_padding_with_zero_rolling_period,
    token_without_fake_claim_is_real,
    fake_token_without_jti_is_accepted,
    unknown_fields_never_bypass_rules,
    documented_bodies_still_work,
);

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Android's Gson output of a `GaenKey` (declaration order; `=` as `\u003d`).
fn gson_key(k: &UploadKey) -> String {
    format!(
        r#"{{"keyData":"{}","rollingStartNumber":{},"rollingPeriod":{},"transmissionRiskLevel":0,"fake":{}}}"#,
        B64.encode(k.key_data).replace('=', r"\u003d"),
        k.rolling_start_number,
        k.rolling_period,
        k.fake
    )
}

/// iOS's `JSONEncoder` output of a `CodableDiagnosisKey` (`/` as `\/`; its own order).
fn ios_key(k: &UploadKey) -> String {
    format!(
        r#"{{"keyData":"{}","rollingPeriod":{},"rollingStartNumber":{},"transmissionRiskLevel":0,"fake":{}}}"#,
        B64.encode(k.key_data).replace('/', r"\/"),
        k.rolling_period,
        k.rolling_start_number,
        k.fake
    )
}

fn join(keys: &[UploadKey], f: fn(&UploadKey) -> String) -> String {
    keys.iter().map(f).collect::<Vec<_>>().join(",")
}

/// The Android SDK's padding: random 16-byte keys, one day apart going back, fake 1.
fn android_padding(real: &[UploadKey], to: usize) -> Vec<UploadKey> {
    let mut v = real.to_vec();
    let mut rsn = today() * 144;
    while v.len() < to {
        rsn -= 144;
        v.push(UploadKey {
            key_data: rand::random(),
            rolling_start_number: rsn,
            rolling_period: 144,
            fake: 1,
        });
    }
    v
}

/// POST `body` to `path` the way the Android SDK does (Retrofit + Gson headers).
async fn android_post(h: &Harness, path: &str, auth: &str, body: String) -> reqwest::Response {
    h.client
        .post(format!("{}{path}", h.url))
        .header("accept", "application/json")
        .header("content-type", "application/json; charset=UTF-8")
        .header("user-agent", "org.dpppt.demo;2.3.0;1600000000;Android;29")
        .header("authorization", auth)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// POST `body` to `path` the way the iOS SDK does.
async fn ios_post(h: &Harness, path: &str, auth: &str, body: String) -> reqwest::Response {
    h.client
        .post(format!("{}{path}", h.url))
        .header("content-type", "application/json")
        .header("user-agent", "org.dpppt.demo;2.0.0;42;iOS;14.2")
        .header("authorization", auth)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Assert the reference backend's answer to an accepted upload: `200`, body `OK`.
async fn assert_ok(resp: reqwest::Response) -> reqwest::header::HeaderMap {
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    let headers = resp.headers().clone();
    assert_eq!(resp.text().await.unwrap(), "OK");
    headers
}

/// Every key of an export carries `report_type` CONFIRMED_TEST and a
/// `days_since_onset_of_symptoms` the apps score (-14..=14), equal to the key's day minus
/// the onset day for the keys in `onsets`.
fn assert_scored(batch: &ExportBatch, onset: Day) {
    for k in &batch.keys {
        assert_eq!(k.report_type, Some(1));
        let dsos = k.days_since_onset_of_symptoms.expect("days since onset");
        assert!((-14..=14).contains(&dsos), "{dsos}");
        let day = (k.rolling_start_interval_number / 144) as i32;
        assert_eq!(dsos, (day - onset.0 as i32).clamp(-14, 14));
    }
}

/// A verified v1 day download.
struct DayDownload {
    status: u16,
    published_until: u64,
    batch: Option<ExportBatch>,
}

async fn fetch_day(h: &Harness, day: u32, published_after: Option<u64>) -> DayDownload {
    let ms = u64::from(day) * 86_400_000;
    let url = match published_after {
        Some(p) => format!("{}/v1/gaen/exposed/{ms}?publishedafter={p}", h.url),
        None => format!("{}/v1/gaen/exposed/{ms}", h.url),
    };
    let resp = h.client.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    assert!(status == 200 || status == 204, "status {status}");
    let header = |n: &str| resp.headers().get(n).unwrap().to_str().unwrap().to_owned();
    let published_until: u64 = header("x-published-until").parse().unwrap();
    assert_eq!(header("cache-control"), "public, max-age=300");
    let signature = header("signature");
    let body = resp.bytes().await.unwrap();
    let claims = verify_response(&body, &signature, &h.public_key, now()).unwrap();
    assert_eq!(claims.batch_release_time_ms, Some(published_until));
    let batch = (status == 200).then(|| read_verified_export(&body, &h.public_key).unwrap());
    if let Some(b) = &batch {
        assert_eq!(b.start_timestamp, u64::from(day) * 86_400);
        assert!(b
            .keys
            .iter()
            .all(|k| k.rolling_start_interval_number / 144 == day));
    }
    DayDownload {
        status,
        published_until,
        batch,
    }
}

/// Poll the v1 day download until it holds every key of `expected`; bounded by 20 s.
async fn wait_for_day(h: &Harness, day: u32, expected: &BTreeSet<[u8; 16]>) -> DayDownload {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = fetch_day(h, day, None).await;
        if let Some(b) = &d.batch {
            let have: BTreeSet<[u8; 16]> = b.keys.iter().map(|k| k.key_data).collect();
            if expected.is_subset(&have) {
                return d;
            }
        }
        assert!(
            Instant::now() < deadline,
            "day keys not released within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn android_2x_v2_upload_with_delayed_key_date(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let onset = 5;
    for federation in [None, Some("true"), Some("false")] {
        let real = [key_days_ago(2), key_days_ago(3)];
        let keys = android_padding(&real, 30);
        let wfg = federation
            .map(|v| format!(r#","withFederationGateway":{v}"#))
            .unwrap_or_default();
        let body = format!(
            r#"{{"gaenKeys":[{}],"delayedKeyDate":{},"fake":0{wfg}}}"#,
            join(&keys, gson_key),
            today() * 144
        );
        let auth = format!("Bearer {}", h.token(onset, false));
        assert_ok(android_post(&h, "/v2/gaen/exposed", &auth, body).await).await;
        let d = h.wait_for_keys(None, &set_of(&real)).await;
        assert_scored(d.batch.as_ref().unwrap(), Day(today() - onset));
        // Published through the v1 API too.
        wait_for_day(&h, today() - 2, &set_of(&real[..1])).await;
    }
    h.finish().await;
}

async fn android_2x_fake_request(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    // DP3TKotlin.sendFakeInfectedRequest: no key, padded to 30 fake keys, `fake: 1`, with a
    // fake token.
    let keys = android_padding(&[], 30);
    let body = format!(
        r#"{{"gaenKeys":[{}],"delayedKeyDate":{},"fake":1,"withFederationGateway":false}}"#,
        join(&keys, gson_key),
        today() * 144
    );
    let auth = format!("Bearer {}", h.token(3, true));
    assert_ok(android_post(&h, "/v2/gaen/exposed", &auth, body).await).await;
    // A top-level `fake: 1` makes the whole upload fake, even with real keys and a real
    // token: nothing is stored.
    let real = [key_days_ago(2)];
    let body = format!(
        r#"{{"gaenKeys":[{}],"delayedKeyDate":{},"fake":1}}"#,
        join(&android_padding(&real, 30), gson_key),
        today() * 144
    );
    let auth = format!("Bearer {}", h.token(3, false));
    assert_ok(android_post(&h, "/v2/gaen/exposed", &auth, body).await).await;
    assert_eq!(h.key_rows().await, 0);
    h.finish().await;
}

async fn ios_2x_v2_upload_with_integer_flags(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let onset = 4;
    for wfg in [Some(1), Some(0), None] {
        // Keys whose base64 holds a '/' exercise the `\/` escape.
        // (Keys of 2 or more days ago: yesterday's are embargoed until 02:00 UTC.)
        let mut real = vec![key_days_ago(2), key_days_ago(4)];
        real[0].key_data = [0xFF; 16];
        real[0].key_data[0] = rand::random();
        let keys = android_padding(&real, 30);
        let wfg = wfg
            .map(|v| format!(r#","withFederationGateway":{v}"#))
            .unwrap_or_default();
        let body = format!(r#"{{"gaenKeys":[{}]{wfg},"fake":0}}"#, join(&keys, ios_key));
        assert!(body.contains(r"\/"));
        let auth = format!("Bearer {}", h.token(onset, false));
        assert_ok(ios_post(&h, "/v2/gaen/exposed", &auth, body).await).await;
        let d = h.wait_for_keys(None, &set_of(&real)).await;
        assert_scored(d.batch.as_ref().unwrap(), Day(today() - onset));
        wait_for_day(&h, today() - 4, &set_of(&real[1..])).await;
    }
    h.finish().await;
}

async fn v1_api_upload_next_day_and_day_download(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let onset = 6;
    let real = [key_days_ago(2), key_days_ago(3), key_days_ago(6)];
    let delayed_key_date = today() * 144;

    // Android <= 2.0: 14 keys, `delayedKeyDate` and `fake`, in Gson order.
    let body = format!(
        r#"{{"gaenKeys":[{}],"delayedKeyDate":{delayed_key_date},"fake":0}}"#,
        join(&android_padding(&real, 14), gson_key)
    );
    let auth = format!("Bearer {}", h.token(onset, false));
    let headers = assert_ok(android_post(&h, "/v1/gaen/exposed", &auth, body).await).await;
    // The next-day token, in the header the SDKs read and send back as it is.
    let next_day = headers
        .get("authorization")
        .expect("next-day token")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(next_day.starts_with("Bearer "));
    let rows = h.key_rows().await;
    assert_eq!(rows, 3);

    // The delayed key the next day (here: today's key, as the token binds it).
    let delayed = UploadKey {
        key_data: rand::random(),
        rolling_start_number: delayed_key_date,
        rolling_period: 144,
        fake: 0,
    };
    let body = format!(r#"{{"delayedKey":{},"fake":0}}"#, gson_key(&delayed));
    assert_ok(android_post(&h, "/v1/gaen/exposednextday", &next_day, body.clone()).await).await;
    assert_eq!(h.key_rows().await, rows + 1);
    // The next-day token is single use: the same upload again is a retry (200, stored
    // once), another body with it is refused.
    assert_ok(android_post(&h, "/v1/gaen/exposednextday", &next_day, body).await).await;
    assert_eq!(h.key_rows().await, rows + 1);
    let other_key = UploadKey {
        key_data: rand::random(),
        ..delayed.clone()
    };
    let body2 = format!(r#"{{"delayedKey":{},"fake":0}}"#, gson_key(&other_key));
    assert_error(
        android_post(&h, "/v1/gaen/exposednextday", &next_day, body2).await,
        409,
        "token_replayed",
    )
    .await;
    // A key of another day is dropped silently, as the reference backend does.
    let auth = format!("Bearer {}", h.token(onset, false));
    let body = format!(
        r#"{{"gaenKeys":[{}],"fake":0,"delayedKeyDate":{delayed_key_date}}}"#,
        join(&android_padding(&[], 14), ios_key)
    );
    let headers = assert_ok(ios_post(&h, "/v1/gaen/exposed", &auth, body).await).await;
    let other = headers.get("authorization").unwrap().to_str().unwrap();
    let wrong_day = UploadKey {
        rolling_start_number: delayed_key_date - 144,
        ..delayed.clone()
    };
    let body = format!(r#"{{"delayedKey":{},"fake":0}}"#, ios_key(&wrong_day));
    assert_ok(ios_post(&h, "/v1/gaen/exposednextday", other, body).await).await;
    assert_eq!(h.key_rows().await, rows + 1);
    // An upload token is not a next-day token, and a next-day token is not an upload token.
    let body = format!(r#"{{"delayedKey":{},"fake":0}}"#, gson_key(&delayed));
    assert_error(
        android_post(&h, "/v1/gaen/exposednextday", &auth, body).await,
        401,
        "token_signature",
    )
    .await;
    let body = format!(
        r#"{{"gaenKeys":[{}],"delayedKeyDate":{delayed_key_date},"fake":0}}"#,
        join(&android_padding(&[], 14), gson_key)
    );
    assert_error(
        android_post(&h, "/v1/gaen/exposed", other, body).await,
        401,
        "token_signature",
    )
    .await;
    // `delayedKeyDate` is required, and must be yesterday, today or tomorrow.
    for extra in [
        "",
        &format!(r#","delayedKeyDate":{}"#, delayed_key_date - 2 * 144),
    ] {
        let body = format!(
            r#"{{"gaenKeys":[{}],"fake":0{extra}}}"#,
            join(&android_padding(&[], 14), gson_key)
        );
        let auth = format!("Bearer {}", h.token(onset, false));
        assert_error(
            android_post(&h, "/v1/gaen/exposed", &auth, body).await,
            400,
            "delayed_key_date",
        )
        .await;
    }

    // The day downloads of v1, and the same keys in v2.
    let d = wait_for_day(&h, today() - 2, &set_of(&real[..1])).await;
    assert_scored(d.batch.as_ref().unwrap(), Day(today() - onset));
    // Asked again after what it has seen, the day has nothing new: 204, still signed and
    // with X-PUBLISHED-UNTIL.
    let again = fetch_day(&h, today() - 2, Some(d.published_until)).await;
    assert_eq!(again.status, 204);
    assert!(again.published_until >= d.published_until);
    wait_for_day(&h, today() - 6, &set_of(&real[2..])).await;
    h.wait_for_keys(None, &set_of(&real)).await;
    // iOS 1.x spells the query `publishedAfter`.
    let r = h
        .client
        .get(format!(
            "{}/v1/gaen/exposed/{}?publishedAfter={}",
            h.url,
            u64::from(today() - 2) * 86_400_000,
            d.published_until
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Refusals of the day download, as the reference backend answers them.
    let get = |path: String| h.client.get(format!("{}{path}", h.url)).send();
    let midnight = u64::from(today()) * 86_400_000;
    assert_error(
        get(format!("/v1/gaen/exposed/{}", midnight + 1))
            .await
            .unwrap(),
        404,
        "key_date",
    )
    .await;
    assert_error(
        get("/v1/gaen/exposed/abc".into()).await.unwrap(),
        400,
        "key_date",
    )
    .await;
    assert_error(
        get(format!("/v1/gaen/exposed/{midnight}?publishedafter=1234"))
            .await
            .unwrap(),
        400,
        "published_after",
    )
    .await;
    assert_error(
        get(format!(
            "/v1/gaen/exposed/{midnight}?publishedafter={}",
            midnight + 30 * 86_400_000
        ))
        .await
        .unwrap(),
        404,
        "published_after",
    )
    .await;

    // The day's bucket list.
    let r = get(format!("/v1/gaen/buckets/{}", Day(today() - 1).iso()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let signature = r
        .headers()
        .get("signature")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body = r.bytes().await.unwrap();
    verify_response(&body, &signature, &h.public_key, now()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let day_ms = u64::from(today() - 1) * 86_400_000;
    assert_eq!(v["dayTimestamp"], day_ms);
    assert_eq!(
        v["relativeUrls"][0],
        format!("/v1/gaen/exposed/{day_ms}").as_str()
    );
    assert_eq!(
        v["relativeUrls"].as_array().unwrap().len() as u64,
        86_400 / h.config.release_bucket_seconds
    );
    assert_error(
        get("/v1/gaen/buckets/2020-13-01".into()).await.unwrap(),
        400,
        "day",
    )
    .await;
    assert_error(
        get("/v1/gaen/buckets/2020-01-01".into()).await.unwrap(),
        404,
        "day",
    )
    .await;
    h.finish().await;
}

async fn v1_old_android_padding_with_zero_rolling_period(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    // The first v1 Android SDK padded to 14 with all-zero keys of rollingPeriod 0 and
    // fake 0; the reference backend drops such keys silently.
    let real = [key_days_ago(2)];
    let mut keys = real.to_vec();
    while keys.len() < 14 {
        keys.push(UploadKey {
            key_data: [0; 16],
            rolling_start_number: (today() - 1) * 144,
            rolling_period: 0,
            fake: 0,
        });
    }
    let body = format!(
        r#"{{"gaenKeys":[{}],"delayedKeyDate":{},"fake":0}}"#,
        join(&keys, gson_key),
        today() * 144
    );
    let auth = format!("Bearer {}", h.token(5, false));
    assert_ok(android_post(&h, "/v1/gaen/exposed", &auth, body).await).await;
    assert_eq!(h.key_rows().await, 1);
    wait_for_day(&h, today() - 2, &set_of(&real)).await;
    h.finish().await;
}

async fn token_without_fake_claim_is_real(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let mut c = claims(5);
    c.as_object_mut().unwrap().remove("fake");
    let token = h.sign_claims(&c);
    let real = [key_days_ago(2)];
    assert_ok(h.upload(&token, &padded(&real)).await).await;
    h.wait_for_keys(None, &set_of(&real)).await;
    // It is still single use.
    assert_error(
        h.upload(&token, &padded(&real)).await,
        409,
        "token_replayed",
    )
    .await;
    h.finish().await;
}

async fn fake_token_without_jti_is_accepted(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let mut c = claims(5);
    c["fake"] = "1".into();
    c.as_object_mut().unwrap().remove("jti");
    let token = h.sign_claims(&c);
    for _ in 0..2 {
        assert_ok(h.upload(&token, &padded(&[key_days_ago(2)])).await).await;
    }
    assert_eq!(h.key_rows().await, 0);
    // A real token without jti is still refused.
    let mut c = claims(5);
    c.as_object_mut().unwrap().remove("jti");
    assert_error(
        h.upload(&h.sign_claims(&c), &padded(&[])).await,
        401,
        "token_claims",
    )
    .await;
    h.finish().await;
}

async fn unknown_fields_never_bypass_rules(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let token = h.token(5, false);
    let keys = padded(&[key_days_ago(2)]);
    let good = join(&keys, gson_key);
    let cases = [
        // A second `gaenKeys` (JSON allows it; the server refuses a repeated field).
        (
            format!(r#"{{"gaenKeys":[{good}],"gaenKeys":[]}}"#),
            "malformed_body",
        ),
        // `fake` as a string, or out of range.
        (
            format!(r#"{{"gaenKeys":[{good}],"fake":"0"}}"#),
            "fake_flag",
        ),
        (format!(r#"{{"gaenKeys":[{good}],"fake":2}}"#), "fake_flag"),
        (
            format!(r#"{{"gaenKeys":[{good}],"withFederationGateway":"yes"}}"#),
            "fake_flag",
        ),
        // Unknown fields next to a short key, a bad rolling period, a wrong count.
        (
            format!(
                r#"{{"gaenKeys":[{}],"extra":{{"keyData":"x"}}}}"#,
                good.replacen(
                    &B64.encode(keys[0].key_data).replace('=', r"\u003d"),
                    "AAAA",
                    1
                )
            ),
            "key_data",
        ),
        (
            format!(
                r#"{{"gaenKeys":[{}],"countries":["CH"]}}"#,
                good.replacen(
                    r#""rollingPeriod":144"#,
                    r#""rollingPeriod":145,"origin":"CH""#,
                    1
                )
            ),
            "rolling_period",
        ),
        (
            format!(
                r#"{{"gaenKeys":[{}],"delayedKeyDate":1}}"#,
                join(&keys[..29], gson_key)
            ),
            "key_count",
        ),
    ];
    for (body, code) in cases {
        assert_error(
            android_post(&h, "/v2/gaen/exposed", &format!("Bearer {token}"), body).await,
            400,
            code,
        )
        .await;
    }
    // None of them spent the token or stored a key.
    assert_eq!(h.key_rows().await, 0);
    assert_ok(h.upload(&token, &keys).await).await;
    h.finish().await;
}

async fn documented_bodies_still_work(backend: Backend) {
    // The body docs/API.md documents, as the project's own core builds it.
    let h = Harness::start(backend, |_| {}).await;
    let real = [key_days_ago(2)];
    let token = h.token(5, false);
    assert_ok(h.upload(&token, &padded(&real)).await).await;
    let mut rng = rand::thread_rng();
    let k = real[0].clone();
    let core = dp3t_core::upload::gaen_upload(
        &[(rand::random(), k.rolling_start_number, 144)],
        now(),
        &mut rng,
    )
    .unwrap();
    let token = h.token(5, false);
    assert_ok(
        h.upload_raw(
            Some(&token),
            Some("application/json"),
            core.json.into_bytes(),
        )
        .await,
    )
    .await;
    assert_eq!(h.key_rows().await, 2);
    h.wait_for_keys(None, &set_of(&real)).await;
    h.finish().await;
}
