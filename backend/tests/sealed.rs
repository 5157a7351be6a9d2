//! Sealed uploads end to end (PROTOCOL.md §16, issue 12 item 11): the phone's core seals
//! to the key the server publishes (signed), the server opens the envelope, stores the
//! keys, and they appear in the signed export; an envelope that does not open, or that
//! replays a spent token, is answered with the same size on the wire and after the same
//! delay as an accepted one.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use dp3t_core::engine::{Engine, EngineConfig, Scheme};
use dp3t_core::hybrid::WindowMinutes;
use dp3t_core::sealed::{self, SealedRoute, SealingKey};
use dp3t_core::time::UnixTime;
use rand::SeedableRng;

on_both_databases!(
    a_sealed_upload_from_the_core_reaches_the_export,
    sealed_refusals_look_like_acceptances,
    two_nodes_share_their_keys_and_rotations,
);

/// `GET /v2/sealed/key`, its `Signature` checked with the server's response key.
async fn sealing_key(h: &Harness) -> SealingKey {
    let resp = h
        .client
        .get(format!("{}{}", h.url, sealed::KEY_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let sig = resp
        .headers()
        .get("signature")
        .expect("Signature header")
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.bytes().await.unwrap();
    let key = sealed::verified_key_list(&body, &sig, &h.public_key, now())
        .unwrap()
        .expect("an unexpired key");
    assert!(key.expires_at > now());
    key
}

/// A raw HTTP/1.1 POST of `body` to `path`: the whole answer and how long it took.
fn raw_post(h: &Harness, path: &str, body: &[u8]) -> (Vec<u8>, Duration) {
    let addr = h.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
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

async fn a_sealed_upload_from_the_core_reaches_the_export(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let key = sealing_key(&h).await;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(21);
    let config = EngineConfig::new(Scheme::Gaen, h.public_key.clone());
    let mut phone = Engine::new(config).unwrap();
    let today = now().day();
    for days_ago in (0..5u64).rev() {
        phone
            .current_beacon(UnixTime(now().0 - days_ago * 86_400), &mut rng)
            .unwrap();
    }
    let onset = dp3t_core::time::Day(today.0 - 4);
    let token = h.token(4, false);
    let envelope = phone
        .build_sealed_upload(Some(onset), &token, &key, now(), &mut rng)
        .unwrap();
    assert_eq!(
        envelope.len(),
        sealed::envelope_len(sealed::padded_len(Scheme::Gaen, WindowMinutes::DEFAULT))
    );

    // What the server will find inside: the phone's real keys of the days before today.
    let opened = h
        .state()
        .sealed
        .open_envelope(&envelope, now())
        .await
        .unwrap();
    assert_eq!(opened.route, SealedRoute::GaenV2);
    let body: serde_json::Value = serde_json::from_slice(&opened.body).unwrap();
    let expected = published_real_keys(&body);
    assert_eq!(expected.len(), 3);

    let (answer, _) = tokio::task::block_in_place(|| raw_post(&h, sealed::UPLOAD_PATH, &envelope));
    assert_eq!(
        status_of(&answer),
        200,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let d = h.wait_for_keys(None, &expected).await;
    assert!(expected.is_subset(&d.key_set()));

    // A fake sealed upload of the same phone: the same size, accepted, nothing stored.
    let before = h.key_rows().await;
    let fake = phone
        .build_sealed_upload(None, &h.token(0, true), &key, now(), &mut rng)
        .unwrap();
    assert_eq!(fake.len(), envelope.len());
    let (answer, _) = tokio::task::block_in_place(|| raw_post(&h, sealed::UPLOAD_PATH, &fake));
    assert_eq!(status_of(&answer), 200);
    assert_eq!(h.key_rows().await, before);
    h.finish().await;
}

async fn sealed_refusals_look_like_acceptances(backend: Backend) {
    let delay = Duration::from_millis(300);
    let h = Harness::start(backend, |c| c.upload_delay_ms = 300).await;
    let key = sealing_key(&h).await;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(22);
    let n = sealed::padded_len(Scheme::Gaen, WindowMinutes::DEFAULT);
    let body = upload_body(&padded(&[key_days_ago(2)]));
    let seal = |token: &str, rng: &mut rand_chacha::ChaCha20Rng| {
        sealed::seal_upload(&key, SealedRoute::GaenV2, token, &body, n, rng).unwrap()
    };
    let token = h.token(3, false);
    let good = seal(&token, &mut rng);
    // The same token with other keys: a replay (the same body again would be a retry).
    let other = upload_body(&padded(&[key_days_ago(1)]));
    let replay =
        sealed::seal_upload(&key, SealedRoute::GaenV2, &token, &other, n, &mut rng).unwrap();
    let mut wrong_key_id = seal(&h.token(3, false), &mut rng);
    wrong_key_id[3] ^= 0x01;
    let mut tampered = seal(&h.token(3, false), &mut rng);
    let last = tampered.len() - 20;
    tampered[last] ^= 0x40;
    let mut wrong_version = seal(&h.token(3, false), &mut rng);
    wrong_version[0] = 9;
    let bad_token = seal("not-a-token", &mut rng);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("good", good, 200),
        ("replay", replay, 409),
        ("wrong key id", wrong_key_id, 400),
        ("tampered", tampered, 400),
        ("wrong version", wrong_version, 400),
        ("bad inner token", bad_token, 401),
        ("empty", Vec::new(), 400),
    ];
    let mut sizes = Vec::new();
    for (name, envelope, status) in cases {
        let (answer, took) =
            tokio::task::block_in_place(|| raw_post(&h, sealed::UPLOAD_PATH, &envelope));
        assert_eq!(status_of(&answer), status, "{name}");
        assert!(took >= delay, "{name} answered after {took:?}");
        sizes.push((name, answer.len()));
    }
    // A plain upload's answer, for comparison: every upload answer has one size.
    let plain = upload_body(&padded(&[key_days_ago(2)]));
    let token = h.token(3, false);
    let (answer, _) = tokio::task::block_in_place(|| {
        let addr = h.url.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        let req = format!(
            "POST /v2/gaen/exposed HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            plain.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(&plain).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        (out, ())
    });
    assert_eq!(status_of(&answer), 200);
    sizes.push(("plain", answer.len()));
    assert!(
        sizes.iter().all(|s| s.1 == sizes[0].1),
        "answers differ in size on the wire: {sizes:?}"
    );
    h.finish().await;
}

/// Two server nodes on one database (issue 12, item 11: "keeps the old key for a rotation
/// overlap" must hold for a deployment, not a node): a key one node makes when a rotation
/// is due is published by, and opens at, the other, so a phone that fetched the list from
/// one node may send to either.
async fn two_nodes_share_their_keys_and_rotations(backend: Backend) {
    let a = Harness::start(backend, |_| {}).await;
    let b = a.another_node().await;
    let first = sealing_key(&a).await;
    assert_eq!(
        sealing_key(&b).await,
        first,
        "both nodes publish the same key"
    );
    // Node A finds a rotation due (as it would 23 days later) and makes the next key.
    let later = UnixTime(now().0 + 23 * 86_400);
    a.state().sealed.rotate(later).await.unwrap();
    let at_a = a.state().sealed.published(later);
    assert_eq!(at_a.len(), 2);
    let next = at_a[0].clone();
    assert_ne!(next, first);
    // A phone seals to it and sends the envelope to node B, which has not reloaded yet.
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(22);
    let mut phone = Engine::new(EngineConfig::new(Scheme::Gaen, a.public_key.clone())).unwrap();
    for days_ago in (0..4u64).rev() {
        phone
            .current_beacon(UnixTime(now().0 - days_ago * 86_400), &mut rng)
            .unwrap();
    }
    let onset = dp3t_core::time::Day(now().day().0 - 3);
    let envelope = phone
        .build_sealed_upload(Some(onset), &a.token(3, false), &next, now(), &mut rng)
        .unwrap();
    let opened = a
        .state()
        .sealed
        .open_envelope(&envelope, now())
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&opened.body).unwrap();
    let expected = published_real_keys(&body);
    assert_eq!(expected.len(), 2);
    let (answer, _) = tokio::task::block_in_place(|| raw_post(&b, sealed::UPLOAD_PATH, &envelope));
    assert_eq!(status_of(&answer), 200);
    // Refusals answer like acceptances: what counts is that node B stored the keys.
    let d = b.wait_for_keys(None, &expected).await;
    assert!(expected.is_subset(&d.key_set()));
    // Node B now publishes both keys too, newest first.
    assert_eq!(b.state().sealed.published(later), at_a);
    b.finish().await;
    a.finish().await;
}

/// The real keys of a GAEN upload body that the server publishes now: not yesterday's,
/// which the 2-hour embargo holds back until 02:00 UTC, nor today's.
fn published_real_keys(body: &serde_json::Value) -> BTreeSet<[u8; 16]> {
    use base64::Engine as _;
    body["gaenKeys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["fake"] == 0)
        .filter(|k| k["rollingStartNumber"].as_u64().unwrap() < u64::from(now().day().0 - 1) * 144)
        .map(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k["keyData"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}
