//! Sealed uploads built by the engine (PROTOCOL.md §16): for every scheme, a real upload
//! with as many entries as one upload holds and a fake one seal to envelopes of the same
//! size, which the server's key opens to the plain upload (route, token, body).

#![allow(clippy::unwrap_used)]

use dp3t_core::engine::{Engine, EngineConfig, Scheme};
use dp3t_core::hybrid::WindowMinutes;
use dp3t_core::sealed::{self, OpeningKey, SealedRoute, MAX_TOKEN_LEN};
use dp3t_core::signing::SigningKey;
use dp3t_core::time::UnixTime;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// 2026-03-01T00:00:00Z.
const START: u64 = 1_772_323_200;

/// An engine that has broadcast for 14 days, every 15 minutes, so that its real upload
/// is as full as one upload gets.
fn engine(scheme: Scheme, window: WindowMinutes, rng: &mut ChaCha20Rng) -> Engine {
    let server = SigningKey::generate(rng);
    let mut config = EngineConfig::new(scheme, server.public_key());
    config.hybrid_window = window;
    let mut e = Engine::new(config).unwrap();
    for i in 0..14 * 96 {
        e.current_beacon(UnixTime(START + i * 900), rng).unwrap();
    }
    e
}

#[test]
fn real_and_fake_sealed_uploads_have_one_size_and_open() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let key = OpeningKey::generate(UnixTime(START + 60 * 86_400), &mut rng);
    let now = UnixTime(START + 14 * 86_400 - 60);
    // The longest token a sealed upload carries, so the bodies are checked against the
    // least room they can have.
    let token = "t".repeat(MAX_TOKEN_LEN);
    let cases = [
        (Scheme::Gaen, WindowMinutes::DEFAULT, SealedRoute::GaenV2),
        (
            Scheme::LowCost,
            WindowMinutes::DEFAULT,
            SealedRoute::LowCost,
        ),
        (
            Scheme::Unlinkable,
            WindowMinutes::DEFAULT,
            SealedRoute::Unlinkable,
        ),
        (Scheme::Hybrid, WindowMinutes::DEFAULT, SealedRoute::Hybrid),
        (
            Scheme::Hybrid,
            WindowMinutes::new(15).unwrap(),
            SealedRoute::Hybrid,
        ),
        (
            Scheme::Hybrid,
            WindowMinutes::new(1440).unwrap(),
            SealedRoute::Hybrid,
        ),
    ];
    for (scheme, window, route) in cases {
        let mut e = engine(scheme, window, &mut rng);
        let fake = e
            .build_sealed_upload(None, &token, key.sealing_key(), now, &mut rng)
            .unwrap();
        let onset = UnixTime(START).day();
        let real = e
            .build_sealed_upload(Some(onset), &token, key.sealing_key(), now, &mut rng)
            .unwrap();
        let n = sealed::padded_len(scheme, window);
        assert_eq!(real.len(), sealed::envelope_len(n), "{scheme:?} {window:?}");
        assert_eq!(fake.len(), real.len(), "{scheme:?} {window:?}");
        let keys = std::slice::from_ref(&key);
        let opened_real = sealed::open_upload(keys, &real).unwrap();
        let opened_fake = sealed::open_upload(keys, &fake).unwrap();
        for o in [&opened_real, &opened_fake] {
            assert_eq!(o.route, route);
            assert_eq!(o.token, token);
        }
        // The bodies are the plain uploads: equal length, and the fake one says so.
        assert_eq!(opened_real.body.len(), opened_fake.body.len());
        let fake_body: serde_json::Value = serde_json::from_slice(&opened_fake.body).unwrap();
        let real_body: serde_json::Value = serde_json::from_slice(&opened_real.body).unwrap();
        assert_ne!(fake_body, real_body);
    }
}

#[test]
fn a_sealed_upload_opens_only_with_its_key() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let key = OpeningKey::generate(UnixTime(START + 86_400), &mut rng);
    let other = OpeningKey::generate(UnixTime(START + 86_400), &mut rng);
    let mut e = engine(Scheme::LowCost, WindowMinutes::DEFAULT, &mut rng);
    let env = e
        .build_sealed_upload(None, "token", key.sealing_key(), UnixTime(START), &mut rng)
        .unwrap();
    assert!(sealed::open_upload(std::slice::from_ref(&other), &env).is_err());
    assert!(sealed::open_upload(&[other, key], &env).is_ok());
}
