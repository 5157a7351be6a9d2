//! Fixtures shared by the fuzz targets and by the seed-corpus generator
//! (`examples/seed_corpora.rs`): one fixed signing key, one fixed storage key and one
//! fixed "now", so that seeds made with them verify inside the targets and the fuzzer
//! starts past the signature checks instead of stopping at them.

#![forbid(unsafe_code)]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use dp3t_core::signing::SigningKey;
use dp3t_core::time::UnixTime;
use rand::SeedableRng;
use std::sync::OnceLock;

/// The targets and their seed directories, in the order `fuzz/run-all.sh` runs them.
pub const TARGETS: [&str; 7] = [
    "export_zip",
    "dpcf",
    "published_lists",
    "signature_header",
    "vector_file",
    "engine_restore",
    "upload_bodies",
];

/// The server key every seed is signed with (made once: a P-256 key generation per run
/// halved the speed of the targets that verify).
pub fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(0xF022)))
}

/// The time the targets verify at: inside the validity of every seed.
pub const NOW: UnixTime = UnixTime(1_728_000_000);

/// The key the engine-state seeds are sealed with.
pub const STORAGE_KEY: [u8; 32] = [7; 32];

/// The saved-state header of `Engine::save`: magic and version.
pub const STATE_HEADER: [u8; 5] = *b"D3ST\x01";

/// Seal `plain` as `Engine::save` would (header, zero nonce, ChaCha20-Poly1305 with the
/// header as associated data), so a target can feed arbitrary *plaintext* state to
/// `Engine::restore` and reach its decoder, which random ciphertext never would.
pub fn seal_state(plain: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new((&STORAGE_KEY).into());
    let nonce = [0u8; 12];
    let mut out = STATE_HEADER.to_vec();
    out.extend_from_slice(&nonce);
    // Encryption of a byte slice with a valid key cannot fail; an empty result would only
    // make restore refuse it, which is a valid outcome too.
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &STATE_HEADER,
            },
        )
        .unwrap_or_default();
    out.extend_from_slice(&ct);
    out
}

/// Open a sealed state (the inverse of [`seal_state`] for any nonce), for the seed
/// generator to turn a real saved state into a plaintext seed.
pub fn open_state(sealed: &[u8]) -> Option<Vec<u8>> {
    let cipher = ChaCha20Poly1305::new((&STORAGE_KEY).into());
    let (head, ct) = (sealed.get(..17)?, sealed.get(17..)?);
    cipher
        .decrypt(
            Nonce::from_slice(&head[5..17]),
            Payload {
                msg: ct,
                aad: &head[..5],
            },
        )
        .ok()
}
