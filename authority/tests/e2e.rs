//! End to end over HTTP, without a browser: a code is created, exchanged at `/v1/onset`
//! for a token, the token uploads keys to the real key server (which trusts only the
//! authority's public key), and the keys come out in the key server's signed export.
//! A fake token is accepted by the key server and publishes nothing; a token signed by
//! another key is refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::{today, Backend, Harness, KeyServer};

async fn code_to_published_key(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let ks = KeyServer::start(h.public_key_path()).await;
    let code = h.create_code(today() - 4).await;
    let resp = h
        .exchange(serde_json::json!({"authorizationCode": code.grouped(), "fake": "0"}))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let token = resp.json::<serde_json::Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let key: [u8; 16] = rand::random();
    assert_eq!(ks.upload(&token, &[key]).await, 200);
    // Single use at the key server too.
    assert_eq!(ks.upload(&token, &[rand::random()]).await, 409);
    // A fake token: accepted, stores nothing.
    let fake = h
        .exchange(serde_json::json!({"authorizationCode": "", "fake": "1"}))
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let fake_key: [u8; 16] = rand::random();
    assert_eq!(ks.upload(&fake, &[fake_key]).await, 200);
    let published = ks.wait_for_keys(&BTreeSet::from([key])).await;
    assert!(!published.contains(&fake_key));
    // A token from another authority's key is refused.
    let other_dir = std::env::temp_dir().join(common::unique("dp3t-other-ha"));
    std::fs::create_dir_all(&other_dir).unwrap();
    let (other, _) = authority::token::TokenSigner::load_or_create(&other_dir, "x", 30).unwrap();
    let forged = other
        .mint(today() - 1, false, common::now(), &mut rand::rngs::OsRng)
        .unwrap();
    assert_eq!(ks.upload(&forged, &[rand::random()]).await, 401);
    let _ = std::fs::remove_dir_all(&other_dir);
    ks.finish().await;
    h.finish().await;
}

/// The GAEN v1 flow of the older SDKs: the authority's token authorizes the v1 upload,
/// the key server answers with its own next-day token (it, not the authority, issues
/// those, as the DP-3T backend does), and that token uploads the delayed key.
async fn gaen_v1_upload_and_next_day_key(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let ks = KeyServer::start(h.public_key_path()).await;
    let code = h.create_code(today() - 2).await;
    let token = h
        .exchange(serde_json::json!({"authorizationCode": code.digits(), "fake": "0"}))
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let key: [u8; 16] = rand::random();
    let (status, next_day) = ks.upload_v1(&token, &[key]).await;
    assert_eq!(status, 200);
    let next_day = next_day.expect("a next-day token");
    let claims = common::claims(next_day.trim_start_matches("Bearer "));
    assert_eq!(claims["scope"], "currentDayExposed");
    assert_eq!(ks.upload_next_day(&next_day, rand::random()).await, 200);
    // The authority's token itself is not a next-day token.
    assert_ne!(
        ks.upload_next_day(&format!("Bearer {token}"), rand::random())
            .await,
        200
    );
    ks.wait_for_keys(&BTreeSet::from([key])).await;
    ks.finish().await;
    h.finish().await;
}

on_both_databases!(code_to_published_key, gaen_v1_upload_and_next_day_key);
