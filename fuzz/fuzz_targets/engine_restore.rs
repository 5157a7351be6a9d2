//! `Engine::restore` (the phone's saved state). The first input byte picks the path:
//!
//! * even: the rest is a *plaintext* state, sealed here with the fixture key, so the
//!   fuzzer reaches the state decoder and its checks (random ciphertext never would);
//! * odd: the rest is given to `restore` as is (header, length and tag checks).
//!
//! The second byte picks the engine's scheme. A restored engine must save and restore
//! again.

#![no_main]

use dp3t_core::engine::{Engine, EngineConfig, Scheme};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

const SCHEMES: [Scheme; 4] = [
    Scheme::Gaen,
    Scheme::LowCost,
    Scheme::Unlinkable,
    Scheme::Hybrid,
];

fuzz_target!(|data: &[u8]| {
    let [mode, scheme, rest @ ..] = data else {
        return;
    };
    let scheme = SCHEMES[usize::from(*scheme) % SCHEMES.len()];
    let config = EngineConfig::new(scheme, dp3t_fuzz::signing_key().public_key());
    let bytes = if mode % 2 == 0 {
        dp3t_fuzz::seal_state(rest)
    } else {
        rest.to_vec()
    };
    let Ok(engine) = Engine::restore(&bytes, &dp3t_fuzz::STORAGE_KEY, config.clone()) else {
        return;
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let saved = engine
        .save(&dp3t_fuzz::STORAGE_KEY, &mut rng)
        .expect("a restored engine saves");
    Engine::restore(&saved, &dp3t_fuzz::STORAGE_KEY, config).expect("and restores again");
});
