//! Sealed uploads (PROTOCOL.md §16): the whole upload — which API, the bearer token and
//! the body — encrypted to the key server with HPKE, so that a TLS terminator, a CDN or a
//! WAF in front of the server learns nothing but the size, and the size is the same for
//! every sealed upload of a scheme, real or fake.
//!
//! HPKE is RFC 9180 in base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20-Poly1305 (KEM 0x0020, KDF 0x0001, AEAD 0x0003), written here on
//! `x25519-dalek`, `hkdf` and `chacha20poly1305` (about a hundred lines, checked against
//! the RFC's Appendix A.2.1 vectors in the tests and in `spec-vectors/hpke-upload.json`).
//! One envelope carries one message (sequence number 0).
//!
//! The envelope, byte for byte:
//!
//! ```text
//! envelope  = version (1, = 0x01) ‖ key_id (8) ‖ enc (32) ‖ ciphertext (padded_len + 16)
//! aad       = version ‖ key_id                    info = "dp3t sealed upload v1"
//! plaintext = route (1) ‖ BE16(token_len) ‖ BE32(body_len) ‖ token ‖ body ‖ zeros
//! ```
//!
//! `padded_len` depends only on the scheme ([`padded_len`]), so the three GAEN APIs, real
//! and fake uploads, and tokens of any length up to what fits, all give envelopes of one
//! size. The opener insists on zero padding and exact lengths. The key id is the first 8
//! bytes of SHA-256 of the X25519 public key, so a published key list cannot name a key
//! by another key's id.
//!
//! Sans-IO like the rest of the crate: the sender passes its RNG, the opener passes the
//! keys it holds; neither reads a clock.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

use crate::engine::Scheme;
use crate::error::Result;
use crate::hybrid::WindowMinutes;
use crate::signing::{verify_response, PublicKey};
use crate::time::UnixTime;
use crate::upload::path;

/// The envelope version this module writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 8;
/// Bytes of the encapsulated key `enc` (an X25519 public key).
pub const ENC_LEN: usize = 32;
/// Bytes of the ChaCha20-Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes before the ciphertext: version, key id, enc.
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN + ENC_LEN;
/// Bytes of the plaintext's own header: route, token length, body length.
pub const INNER_HEADER_LEN: usize = 1 + 2 + 4;
/// The HPKE `info` of every sealed upload.
pub const INFO: &[u8] = b"dp3t sealed upload v1";
/// Longest token a sealed upload carries. Health-authority JWTs and next-day tokens are
/// a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 2048;
/// HTTP path of the sealed upload endpoint (`POST`, body = the envelope).
pub const UPLOAD_PATH: &str = "/v2/sealed";
/// HTTP path of the published sealing keys (`GET`, signed like every download).
pub const KEY_PATH: &str = "/v2/sealed/key";

/// Bytes of the largest body each scheme's uploads can have, plus margin: GAEN (the v2,
/// v1 and next-day bodies of 30 keys), low-cost, unlinkable (1,344 epochs), hybrid per
/// window of 15 minutes (windows of `W` minutes have `W/15` times fewer entries).
const GAEN_BODY_ROOM: usize = 6 * 1024;
const LOWCOST_BODY_ROOM: usize = 1024;
const UNLINKABLE_BODY_ROOM: usize = 112 * 1024;
const HYBRID_BODY_ROOM_15_MIN: usize = 128 * 1024;

/// Plaintext bytes of every sealed upload of `scheme` (hybrid: with windows of
/// `hybrid_window`, which all phones of a deployment share). Room for the inner header,
/// a token of [`MAX_TOKEN_LEN`] and the scheme's largest body.
pub fn padded_len(scheme: Scheme, hybrid_window: WindowMinutes) -> usize {
    let body = match scheme {
        Scheme::Gaen => GAEN_BODY_ROOM,
        Scheme::LowCost => LOWCOST_BODY_ROOM,
        Scheme::Unlinkable => UNLINKABLE_BODY_ROOM,
        Scheme::Hybrid => {
            let per_15 = hybrid_window.ephid_count().max(1);
            // Rounded up to 1 KiB so that the size says no more than the window does.
            (HYBRID_BODY_ROOM_15_MIN / per_15).div_ceil(1024) * 1024 + 1024
        }
    };
    INNER_HEADER_LEN + MAX_TOKEN_LEN + body
}

/// Bytes on the wire of a sealed upload whose plaintext is `padded_len` bytes.
pub fn envelope_len(padded_len: usize) -> usize {
    HEADER_LEN + padded_len + TAG_LEN
}

/// Why a sealed upload could not be built or opened. Opening failures say nothing about
/// the plaintext: a wrong key, a flipped bit and a truncated envelope are told apart only
/// as far as the envelope's clear header allows. (A part of the crate's one error type,
/// [`crate::Error::Sealed`].)
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealedError {
    /// The envelope is shorter than a header, an inner header and a tag.
    #[error("envelope of {0} bytes is too short")]
    Length(usize),
    /// The envelope's version byte is not one this implementation reads.
    #[error("unknown envelope version {0}")]
    Version(u8),
    /// No opening key has the envelope's key id (expired and erased, or never ours).
    #[error("no opening key with this key id")]
    UnknownKey,
    /// The HPKE decapsulation or the AEAD tag failed: tampered, or sealed to another key.
    #[error("the envelope does not open")]
    Open,
    /// The opened plaintext is not a well-formed upload (route, lengths, padding).
    #[error("malformed plaintext: {0}")]
    Plaintext(&'static str),
    /// The token or body does not fit the scheme's sealed size.
    #[error("{what} of {len} bytes does not fit a sealed upload (room: {limit})")]
    TooLarge {
        /// What did not fit.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The room there was.
        limit: usize,
    },
    /// The Diffie-Hellman result was all zeros (a small-order public key, RFC 9180 §7.1.4).
    #[error("small-order X25519 public key")]
    SmallOrder,
    /// A published sealing key list is malformed, or its key ids do not match its keys.
    #[error("sealing key list: {0}")]
    KeyList(String),
}

/// The upload API a sealed envelope is for (its first plaintext byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum SealedRoute {
    /// GAEN, DP-3T v2 (`/v2/gaen/exposed`).
    GaenV2 = 1,
    /// GAEN, DP-3T v1 (`/v1/gaen/exposed`).
    GaenV1 = 2,
    /// GAEN, DP-3T v1, the next day's key (`/v1/gaen/exposednextday`).
    GaenV1NextDay = 3,
    /// Low-cost (`/v1/exposed`).
    LowCost = 4,
    /// Unlinkable (`/v1/unlinkable/exposed`).
    Unlinkable = 5,
    /// Hybrid (`/v1/hybrid/exposed`).
    Hybrid = 6,
}

impl SealedRoute {
    /// Every route, by code.
    pub const ALL: [SealedRoute; 6] = [
        SealedRoute::GaenV2,
        SealedRoute::GaenV1,
        SealedRoute::GaenV1NextDay,
        SealedRoute::LowCost,
        SealedRoute::Unlinkable,
        SealedRoute::Hybrid,
    ];

    /// The byte written into the plaintext.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The route of a plaintext byte.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The plain HTTP path of the same API.
    pub fn path(self) -> &'static str {
        match self {
            SealedRoute::GaenV2 => path::GAEN,
            SealedRoute::GaenV1 => path::GAEN_V1,
            SealedRoute::GaenV1NextDay => path::GAEN_V1_NEXT_DAY,
            SealedRoute::LowCost => path::LOW_COST,
            SealedRoute::Unlinkable => path::UNLINKABLE,
            SealedRoute::Hybrid => path::HYBRID,
        }
    }

    /// The route of a plain upload path (what [`crate::upload::UploadPayload::path`] holds).
    pub fn from_path(p: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.path() == p)
    }

    /// The scheme whose sealed size this route's uploads have.
    pub fn scheme(self) -> Scheme {
        match self {
            SealedRoute::GaenV2 | SealedRoute::GaenV1 | SealedRoute::GaenV1NextDay => Scheme::Gaen,
            SealedRoute::LowCost => Scheme::LowCost,
            SealedRoute::Unlinkable => Scheme::Unlinkable,
            SealedRoute::Hybrid => Scheme::Hybrid,
        }
    }
}

/// An upload opened by the server.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedUpload {
    /// Which API the body is for.
    pub route: SealedRoute,
    /// The bearer token (without `Bearer `).
    pub token: String,
    /// The upload body, as it would have been POSTed to [`SealedRoute::path`].
    pub body: Vec<u8>,
}

impl std::fmt::Debug for OpenedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the token nor the body is logged by accident.
        f.debug_struct("OpenedUpload")
            .field("route", &self.route)
            .field("token_len", &self.token.len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The key id of an X25519 public key: the first 8 bytes of its SHA-256.
pub fn key_id_of(public: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let h = Sha256::digest(public);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&h[..KEY_ID_LEN]);
    id
}

/// A server key that phones seal to: what `GET /v2/sealed/key` publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealingKey {
    /// [`key_id_of`] the public key.
    pub key_id: [u8; KEY_ID_LEN],
    /// The X25519 public key.
    pub public: [u8; 32],
    /// Unix seconds after which phones no longer seal to it.
    pub expires_at: UnixTime,
}

/// A server key pair that opens sealed uploads. Its secret is erased when dropped.
#[derive(Clone)]
pub struct OpeningKey {
    secret: StaticSecret,
    sealing: SealingKey,
}

impl std::fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpeningKey")
            .field("key_id", &hex::encode(self.sealing.key_id))
            .field("expires_at", &self.sealing.expires_at)
            .finish_non_exhaustive()
    }
}

impl OpeningKey {
    /// A fresh key pair that phones may seal to until `expires_at`.
    pub fn generate<R: CryptoRng + RngCore>(expires_at: UnixTime, rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_secret_bytes(*bytes, expires_at)
    }

    /// The key pair of a stored 32-byte X25519 secret.
    pub fn from_secret_bytes(secret: [u8; 32], expires_at: UnixTime) -> Self {
        let secret = StaticSecret::from(secret);
        let public = X25519Public::from(&secret).to_bytes();
        OpeningKey {
            secret,
            sealing: SealingKey {
                key_id: key_id_of(&public),
                public,
                expires_at,
            },
        }
    }

    /// The 32 secret bytes, to store.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public half, to publish.
    pub fn sealing_key(&self) -> &SealingKey {
        &self.sealing
    }
}

// ------------------------------------------------------------------ HPKE (RFC 9180)

const KEM_ID: u16 = 0x0020;
const KDF_ID: u16 = 0x0001;
const AEAD_ID: u16 = 0x0003;
const MODE_BASE: u8 = 0x00;

fn kem_suite_id() -> [u8; 5] {
    let k = KEM_ID.to_be_bytes();
    [b'K', b'E', b'M', k[0], k[1]]
}

fn hpke_suite_id() -> [u8; 10] {
    let (k, f, a) = (
        KEM_ID.to_be_bytes(),
        KDF_ID.to_be_bytes(),
        AEAD_ID.to_be_bytes(),
    );
    [b'H', b'P', b'K', b'E', k[0], k[1], f[0], f[1], a[0], a[1]]
}

/// `LabeledExtract(salt, label, ikm)`: the PRK.
fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut input = Zeroizing::new(Vec::with_capacity(
        7 + suite.len() + label.len() + ikm.len(),
    ));
    input.extend_from_slice(b"HPKE-v1");
    input.extend_from_slice(suite);
    input.extend_from_slice(label);
    input.extend_from_slice(ikm);
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), &input);
    Zeroizing::new(prk.into())
}

/// `LabeledExpand(prk, label, info, L)` into `out` (`L = out.len()`, at most 255·32).
fn labeled_expand(
    suite: &[u8],
    prk: &[u8; 32],
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let len = u16::try_from(out.len()).map_err(|_| crate::Error::Encode("HPKE expand length"))?;
    let hk = Hkdf::<Sha256>::from_prk(prk).map_err(|_| crate::Error::Encode("HPKE PRK"))?;
    let len = len.to_be_bytes();
    let parts: [&[u8]; 5] = [&len, b"HPKE-v1", suite, label, info];
    hk.expand_multi_info(&parts, out)
        .map_err(|_| crate::Error::Encode("HPKE expand"))
}

/// `DeriveKeyPair(ikm)` of DHKEM(X25519, HKDF-SHA256): the secret key bytes.
pub fn derive_secret(ikm: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let suite = kem_suite_id();
    let prk = labeled_extract(&suite, b"", b"dkp_prk", ikm);
    let mut sk = Zeroizing::new([0u8; 32]);
    labeled_expand(&suite, &prk, b"sk", b"", sk.as_mut())?;
    Ok(sk)
}

/// `DH(sk, pk)`, refusing the all-zero output of a small-order point.
fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&X25519Public::from(*public));
    let bytes = Zeroizing::new(shared.to_bytes());
    if bool::from(bytes.ct_eq(&[0u8; 32])) {
        return Err(SealedError::SmallOrder.into());
    }
    Ok(bytes)
}

/// `ExtractAndExpand(dh, enc ‖ pkR)`: the KEM shared secret.
fn kem_shared_secret(
    dh: &[u8; 32],
    enc: &[u8; 32],
    pk_r: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>> {
    let suite = kem_suite_id();
    let prk = labeled_extract(&suite, b"", b"eae_prk", dh);
    let mut context = [0u8; 64];
    context[..32].copy_from_slice(enc);
    context[32..].copy_from_slice(pk_r);
    let mut ss = Zeroizing::new([0u8; 32]);
    labeled_expand(&suite, &prk, b"shared_secret", &context, ss.as_mut())?;
    Ok(ss)
}

/// The base-mode key schedule: the AEAD key and base nonce.
struct Context {
    key: Zeroizing<[u8; 32]>,
    base_nonce: [u8; 12],
}

fn key_schedule(shared_secret: &[u8; 32], info: &[u8]) -> Result<Context> {
    let suite = hpke_suite_id();
    let psk_id_hash = labeled_extract(&suite, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(&suite, b"", b"info_hash", info);
    let mut ksc = [0u8; 65];
    ksc[0] = MODE_BASE;
    ksc[1..33].copy_from_slice(psk_id_hash.as_ref());
    ksc[33..].copy_from_slice(info_hash.as_ref());
    let secret = labeled_extract(&suite, shared_secret, b"secret", b"");
    let mut key = Zeroizing::new([0u8; 32]);
    labeled_expand(&suite, &secret, b"key", &ksc, key.as_mut())?;
    let mut base_nonce = [0u8; 12];
    labeled_expand(&suite, &secret, b"base_nonce", &ksc, &mut base_nonce)?;
    Ok(Context { key, base_nonce })
}

/// Single-shot HPKE base-mode seal with the given ephemeral secret: `(enc, ct)`.
fn hpke_seal(
    sk_e: &StaticSecret,
    pk_r: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    pt: &[u8],
) -> Result<([u8; 32], Vec<u8>)> {
    let enc = X25519Public::from(sk_e).to_bytes();
    let shared = kem_shared_secret(&*dh(sk_e, pk_r)?, &enc, pk_r)?;
    let ctx = key_schedule(&shared, info)?;
    let ct = ChaCha20Poly1305::new(ctx.key.as_ref().into())
        .encrypt(Nonce::from_slice(&ctx.base_nonce), Payload { msg: pt, aad })
        .map_err(|_| crate::Error::Encode("sealed upload"))?;
    Ok((enc, ct))
}

/// Single-shot HPKE base-mode open.
fn hpke_open(
    sk_r: &StaticSecret,
    enc: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let pk_r = X25519Public::from(sk_r).to_bytes();
    let shared = kem_shared_secret(&*dh(sk_r, enc)?, enc, &pk_r)?;
    let ctx = key_schedule(&shared, info)?;
    ChaCha20Poly1305::new(ctx.key.as_ref().into())
        .decrypt(Nonce::from_slice(&ctx.base_nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| SealedError::Open.into())
}

/// Single-shot HPKE base-mode seal (RFC 9180 §6.1, sequence number 0) of `pt` to `pk_r`
/// with the ephemeral secret `sk_e`: `(enc, ciphertext)`. The building block of
/// [`seal_upload`], public so that other implementations' vectors can be checked.
pub fn hpke_base_seal(
    sk_e: [u8; 32],
    pk_r: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    pt: &[u8],
) -> Result<([u8; 32], Vec<u8>)> {
    hpke_seal(&StaticSecret::from(sk_e), pk_r, info, aad, pt)
}

/// Single-shot HPKE base-mode open with the recipient secret `sk_r`.
pub fn hpke_base_open(
    sk_r: [u8; 32],
    enc: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    hpke_open(&StaticSecret::from(sk_r), enc, info, aad, ct)
}

// ------------------------------------------------------------------ envelopes

/// Seal one upload to `key`: `token` and `body` for `route`, padded to `padded_len`
/// plaintext bytes (use [`padded_len`] of the route's scheme, so that every upload of
/// the scheme has one size). Returns the envelope to `POST` to [`UPLOAD_PATH`].
pub fn seal_upload<R: CryptoRng + RngCore>(
    key: &SealingKey,
    route: SealedRoute,
    token: &str,
    body: &[u8],
    padded_len: usize,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let mut ikm = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(ikm.as_mut());
    let sk_e = StaticSecret::from(*ikm);
    seal_with(key, &sk_e, route, token, body, padded_len)
}

/// [`seal_upload`] with a given ephemeral secret (the vector files pin it).
pub fn seal_upload_with_ephemeral(
    key: &SealingKey,
    ephemeral_secret: [u8; 32],
    route: SealedRoute,
    token: &str,
    body: &[u8],
    padded_len: usize,
) -> Result<Vec<u8>> {
    seal_with(
        key,
        &StaticSecret::from(ephemeral_secret),
        route,
        token,
        body,
        padded_len,
    )
}

fn seal_with(
    key: &SealingKey,
    sk_e: &StaticSecret,
    route: SealedRoute,
    token: &str,
    body: &[u8],
    padded_len: usize,
) -> Result<Vec<u8>> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(SealedError::TooLarge {
            what: "token",
            len: token.len(),
            limit: MAX_TOKEN_LEN,
        }
        .into());
    }
    let room = padded_len.saturating_sub(INNER_HEADER_LEN + token.len());
    let body_len = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= room);
    let Some(body_len) = body_len else {
        return Err(SealedError::TooLarge {
            what: "body",
            len: body.len(),
            limit: room,
        }
        .into());
    };
    // `token.len() <= MAX_TOKEN_LEN < 2^16`, checked above.
    let token_len = u16::try_from(token.len()).map_err(|_| crate::Error::Encode("token"))?;
    let mut pt = Zeroizing::new(Vec::with_capacity(padded_len));
    pt.push(route.code());
    pt.extend_from_slice(&token_len.to_be_bytes());
    pt.extend_from_slice(&body_len.to_be_bytes());
    pt.extend_from_slice(token.as_bytes());
    pt.extend_from_slice(body);
    pt.resize(padded_len, 0);

    let mut envelope = Vec::with_capacity(envelope_len(padded_len));
    envelope.push(VERSION);
    envelope.extend_from_slice(&key.key_id);
    let (enc, ct) = hpke_seal(sk_e, &key.public, INFO, &envelope, &pt)?;
    envelope.extend_from_slice(&enc);
    envelope.extend_from_slice(&ct);
    Ok(envelope)
}

/// The key id an envelope names, without opening it (`None` if it is too short).
pub fn envelope_key_id(envelope: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
    envelope.get(1..1 + KEY_ID_LEN)?.try_into().ok()
}

/// Open a sealed upload with whichever of `keys` its key id names.
///
/// Errors ([`SealedError`]): [`Length`](SealedError::Length) (shorter than a header and
/// tag), [`Version`](SealedError::Version), [`UnknownKey`](SealedError::UnknownKey),
/// [`Open`](SealedError::Open) (tampered, or sealed to another key pair with the same
/// id), [`Plaintext`](SealedError::Plaintext) (a route, length or padding byte that a
/// sender following this module never writes). Never panics.
pub fn open_upload(keys: &[OpeningKey], envelope: &[u8]) -> Result<OpenedUpload> {
    if envelope.len() < HEADER_LEN + INNER_HEADER_LEN + TAG_LEN {
        return Err(SealedError::Length(envelope.len()).into());
    }
    let (aad, rest) = envelope.split_at(1 + KEY_ID_LEN);
    if aad[0] != VERSION {
        return Err(SealedError::Version(aad[0]).into());
    }
    let key = keys
        .iter()
        .find(|k| k.sealing.key_id[..] == aad[1..])
        .ok_or(SealedError::UnknownKey)?;
    let (enc, ct) = rest.split_at(ENC_LEN);
    let enc: [u8; 32] = enc
        .try_into()
        .map_err(|_| SealedError::Length(envelope.len()))?;
    let pt = hpke_open(&key.secret, &enc, INFO, aad, ct)?;
    parse_plaintext(&pt)
}

fn parse_plaintext(pt: &[u8]) -> Result<OpenedUpload> {
    let bad = |m| crate::Error::from(SealedError::Plaintext(m));
    let (head, rest) = pt
        .split_at_checked(INNER_HEADER_LEN)
        .ok_or_else(|| bad("shorter than its header"))?;
    let route = SealedRoute::from_code(head[0]).ok_or_else(|| bad("unknown route"))?;
    let token_len = usize::from(u16::from_be_bytes([head[1], head[2]]));
    let body_len = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    if token_len > MAX_TOKEN_LEN {
        return Err(bad("token longer than allowed"));
    }
    let (token, rest) = rest
        .split_at_checked(token_len)
        .ok_or_else(|| bad("token runs past the end"))?;
    let (body, padding) = rest
        .split_at_checked(body_len)
        .ok_or_else(|| bad("body runs past the end"))?;
    if padding.iter().any(|&b| b != 0) {
        return Err(bad("non-zero padding"));
    }
    let token = std::str::from_utf8(token).map_err(|_| bad("token is not UTF-8"))?;
    Ok(OpenedUpload {
        route,
        token: token.to_owned(),
        body: body.to_vec(),
    })
}

// ------------------------------------------------------------------ the published key list

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyListJson {
    keys: Vec<KeyJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyJson {
    key_id: String,
    public_key: String,
    expires_at: u64,
}

/// The body of `GET /v2/sealed/key`: `{"keys":[{"keyId": hex, "publicKey": base64,
/// "expiresAt": unix seconds}]}`, in the order given (the server lists the newest first).
pub fn key_list_json(keys: &[SealingKey]) -> String {
    use base64::Engine as _;
    let list = KeyListJson {
        keys: keys
            .iter()
            .map(|k| KeyJson {
                key_id: hex::encode(k.key_id),
                public_key: base64::engine::general_purpose::STANDARD.encode(k.public),
                expires_at: k.expires_at.0,
            })
            .collect(),
    };
    // A struct of strings and integers always serializes.
    serde_json::to_string(&list).unwrap_or_default()
}

/// Parse a key list body (not its signature: see [`verified_key_list`]). Every key id
/// must be [`key_id_of`] its public key.
pub fn parse_key_list(body: &[u8]) -> Result<Vec<SealingKey>> {
    use base64::Engine as _;
    let bad = |m: String| crate::Error::from(SealedError::KeyList(m));
    let list: KeyListJson = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    list.keys
        .into_iter()
        .map(|k| {
            let public: [u8; 32] = base64::engine::general_purpose::STANDARD
                .decode(&k.public_key)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| bad("publicKey is not base64 of 32 bytes".into()))?;
            let key_id = key_id_of(&public);
            if !k.key_id.eq_ignore_ascii_case(&hex::encode(key_id)) {
                return Err(bad(format!("keyId {} does not name its key", k.key_id)));
            }
            Ok(SealingKey {
                key_id,
                public,
                expires_at: UnixTime(k.expires_at),
            })
        })
        .collect()
}

/// Check a key list's `Signature` header with the backend key (as every download, §9.5),
/// parse it, and return the key to seal to at `now`: of the keys not yet expired, the
/// one that expires last. `Ok(None)` if every key has expired.
pub fn verified_key_list(
    body: &[u8],
    signature: &str,
    backend_key: &PublicKey,
    now: UnixTime,
) -> Result<Option<SealingKey>> {
    verify_response(body, signature, backend_key, now)?;
    Ok(current_key(&parse_key_list(body)?, now).cloned())
}

/// Of `keys`, the one to seal to at `now`: unexpired, expiring last.
pub fn current_key(keys: &[SealingKey], now: UnixTime) -> Option<&SealingKey> {
    keys.iter()
        .filter(|k| k.expires_at > now)
        .max_by_key(|k| k.expires_at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
    fn h32(s: &str) -> [u8; 32] {
        h(s).try_into().unwrap()
    }

    // RFC 9180 Appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305,
    // mode 0 (base), sequence number 0.
    const INFO_A21: &str = "4f6465206f6e2061204772656369616e2055726e";
    const IKM_E: &str = "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b";
    const PK_EM: &str = "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a";
    const SK_EM: &str = "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600";
    const IKM_R: &str = "1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df";
    const PK_RM: &str = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";
    const SK_RM: &str = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
    const SHARED: &str = "0bbe78490412b4bbea4812666f7916932b828bba79942424abb65244930d69a7";
    const KEY: &str = "ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91";
    const BASE_NONCE: &str = "5c4d98150661b848853b547f";
    const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
    const AAD0: &str = "436f756e742d30";
    const CT0: &str = "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28";

    #[test]
    fn rfc9180_a21_derive_key_pair() {
        assert_eq!(hex::encode(*derive_secret(&h(IKM_E)).unwrap()), SK_EM);
        assert_eq!(hex::encode(*derive_secret(&h(IKM_R)).unwrap()), SK_RM);
        let pk = |sk: &str| X25519Public::from(&StaticSecret::from(h32(sk))).to_bytes();
        assert_eq!(hex::encode(pk(SK_EM)), PK_EM);
        assert_eq!(hex::encode(pk(SK_RM)), PK_RM);
    }

    #[test]
    fn rfc9180_a21_key_schedule() {
        let sk_e = StaticSecret::from(h32(SK_EM));
        let shared =
            kem_shared_secret(&dh(&sk_e, &h32(PK_RM)).unwrap(), &h32(PK_EM), &h32(PK_RM)).unwrap();
        assert_eq!(hex::encode(*shared), SHARED);
        let ctx = key_schedule(&shared, &h(INFO_A21)).unwrap();
        assert_eq!(hex::encode(*ctx.key), KEY);
        assert_eq!(hex::encode(ctx.base_nonce), BASE_NONCE);
    }

    #[test]
    fn rfc9180_a21_seal_and_open() {
        let sk_e = StaticSecret::from(h32(SK_EM));
        let (enc, ct) = hpke_seal(&sk_e, &h32(PK_RM), &h(INFO_A21), &h(AAD0), &h(PT)).unwrap();
        assert_eq!(hex::encode(enc), PK_EM);
        assert_eq!(hex::encode(&ct), CT0);
        let sk_r = StaticSecret::from(h32(SK_RM));
        let pt = hpke_open(&sk_r, &enc, &h(INFO_A21), &h(AAD0), &h(CT0)).unwrap();
        assert_eq!(hex::encode(&*pt), PT);
        // Another aad, or one flipped ciphertext bit, does not open.
        assert!(hpke_open(&sk_r, &enc, &h(INFO_A21), b"Count-1", &h(CT0)).is_err());
        let mut bad = h(CT0);
        bad[3] ^= 1;
        assert!(hpke_open(&sk_r, &enc, &h(INFO_A21), &h(AAD0), &bad).is_err());
    }

    fn server(rng: &mut ChaCha20Rng) -> OpeningKey {
        OpeningKey::generate(UnixTime(2_000_000_000), rng)
    }

    #[test]
    fn seal_then_open_gives_the_upload_back() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = server(&mut rng);
        let body = br#"{"gaenKeys":[]}"#;
        let n = padded_len(Scheme::Gaen, WindowMinutes::DEFAULT);
        let env = seal_upload(
            key.sealing_key(),
            SealedRoute::GaenV1,
            "tok.en",
            body,
            n,
            &mut rng,
        )
        .unwrap();
        assert_eq!(env.len(), envelope_len(n));
        assert_eq!(envelope_key_id(&env), Some(key.sealing_key().key_id));
        let opened = open_upload(std::slice::from_ref(&key), &env).unwrap();
        assert_eq!(opened.route, SealedRoute::GaenV1);
        assert_eq!(opened.token, "tok.en");
        assert_eq!(opened.body, body);
        assert!(!format!("{opened:?}").contains("tok.en"));
    }

    #[test]
    fn size_depends_on_the_scheme_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let key = server(&mut rng);
        let n = padded_len(Scheme::Gaen, WindowMinutes::DEFAULT);
        let sizes: Vec<usize> = [
            (SealedRoute::GaenV2, "a", &b"{}"[..]),
            (
                SealedRoute::GaenV1NextDay,
                &"b".repeat(900)[..],
                &[7u8; 3000][..],
            ),
        ]
        .iter()
        .map(|(r, t, b)| {
            seal_upload(key.sealing_key(), *r, t, b, n, &mut rng)
                .unwrap()
                .len()
        })
        .collect();
        assert_eq!(sizes[0], sizes[1]);
    }

    #[test]
    fn what_does_not_open() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let key = server(&mut rng);
        let other = server(&mut rng);
        let keys = std::slice::from_ref(&key);
        let n = padded_len(Scheme::LowCost, WindowMinutes::DEFAULT);
        let env = seal_upload(
            key.sealing_key(),
            SealedRoute::LowCost,
            "t",
            b"{}",
            n,
            &mut rng,
        )
        .unwrap();
        let err = |e: &[u8]| match open_upload(keys, e) {
            Err(crate::Error::Sealed(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(&env[..HEADER_LEN]), SealedError::Length(HEADER_LEN));
        let mut v = env.clone();
        v[0] = 2;
        assert_eq!(err(&v), SealedError::Version(2));
        let mut v = env.clone();
        v[1] ^= 1;
        assert_eq!(err(&v), SealedError::UnknownKey);
        for i in [HEADER_LEN - 1, HEADER_LEN + 10, env.len() - 1] {
            let mut v = env.clone();
            v[i] ^= 0x80;
            assert_eq!(err(&v), SealedError::Open, "byte {i}");
        }
        assert_eq!(err(&env[..env.len() - 1]), SealedError::Open);
        // Sealed to another key: its id is unknown here.
        let env2 = seal_upload(
            other.sealing_key(),
            SealedRoute::LowCost,
            "t",
            b"{}",
            n,
            &mut rng,
        )
        .unwrap();
        assert_eq!(err(&env2), SealedError::UnknownKey);
        // The other key opens its own envelope, and both open theirs when held together.
        let both = [key.clone(), other];
        assert!(open_upload(&both, &env).is_ok());
        assert!(open_upload(&both, &env2).is_ok());
    }

    #[test]
    fn too_large_is_refused_before_sealing() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let key = server(&mut rng);
        let n = padded_len(Scheme::LowCost, WindowMinutes::DEFAULT);
        let long = "t".repeat(MAX_TOKEN_LEN + 1);
        let r = seal_upload(
            key.sealing_key(),
            SealedRoute::LowCost,
            &long,
            b"",
            n,
            &mut rng,
        );
        assert!(matches!(
            r,
            Err(crate::Error::Sealed(SealedError::TooLarge {
                what: "token",
                ..
            }))
        ));
        let body = vec![b' '; n];
        let r = seal_upload(
            key.sealing_key(),
            SealedRoute::LowCost,
            "t",
            &body,
            n,
            &mut rng,
        );
        assert!(matches!(
            r,
            Err(crate::Error::Sealed(SealedError::TooLarge {
                what: "body",
                ..
            }))
        ));
    }

    #[test]
    fn plaintexts_a_sender_never_writes_are_refused() {
        let ok = |route: u8, tl: u16, bl: u32, tail: &[u8]| {
            let mut p = vec![route];
            p.extend_from_slice(&tl.to_be_bytes());
            p.extend_from_slice(&bl.to_be_bytes());
            p.extend_from_slice(tail);
            parse_plaintext(&p)
        };
        assert!(ok(1, 1, 1, b"ab\0\0").is_ok());
        assert!(ok(0, 1, 1, b"ab").is_err());
        assert!(ok(7, 1, 1, b"ab").is_err());
        assert!(ok(1, 3, 0, b"ab").is_err());
        assert!(ok(1, 1, 2, b"ab").is_err());
        assert!(ok(1, 1, 1, b"ab\0\x01").is_err());
        assert!(ok(1, 1, 0, b"\xff").is_err());
        assert!(parse_plaintext(&[1, 0]).is_err());
    }

    #[test]
    fn key_list_round_trips_and_names_keys_by_their_hash() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let a = OpeningKey::generate(UnixTime(100), &mut rng);
        let b = OpeningKey::generate(UnixTime(200), &mut rng);
        let list = vec![b.sealing_key().clone(), a.sealing_key().clone()];
        let json = key_list_json(&list);
        assert_eq!(parse_key_list(json.as_bytes()).unwrap(), list);
        assert_eq!(current_key(&list, UnixTime(50)), Some(b.sealing_key()));
        assert_eq!(current_key(&list, UnixTime(150)), Some(b.sealing_key()));
        assert_eq!(current_key(&list, UnixTime(200)), None);
        let forged = json.replace(
            &hex::encode(b.sealing_key().key_id),
            &hex::encode(a.sealing_key().key_id),
        );
        assert!(parse_key_list(forged.as_bytes()).is_err());
        assert!(parse_key_list(br#"{"keys":[],"x":1}"#).is_err());
    }

    #[test]
    fn verified_key_list_checks_the_signature() {
        use crate::signing::{sign_response, ResponseClaims, SigningKey};
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let backend = SigningKey::generate(&mut rng);
        let k = OpeningKey::generate(UnixTime(2_000_000_000), &mut rng);
        let body = key_list_json(std::slice::from_ref(k.sealing_key()));
        let now = UnixTime(1_800_000_000);
        let claims = ResponseClaims::for_body(body.as_bytes(), "dp3t", now.0, now.0 + 60, None);
        let sig = sign_response(body.as_bytes(), &backend, &claims).unwrap();
        let got = verified_key_list(body.as_bytes(), &sig, &backend.public_key(), now).unwrap();
        assert_eq!(got.as_ref(), Some(k.sealing_key()));
        let other = SigningKey::generate(&mut rng).public_key();
        assert!(verified_key_list(body.as_bytes(), &sig, &other, now).is_err());
        let tampered = body.replace("2000000000", "2000000001");
        assert!(verified_key_list(tampered.as_bytes(), &sig, &backend.public_key(), now).is_err());
    }

    #[test]
    fn every_route_round_trips_its_code_and_path() {
        for r in SealedRoute::ALL {
            assert_eq!(SealedRoute::from_code(r.code()), Some(r));
            assert_eq!(SealedRoute::from_path(r.path()), Some(r));
        }
        assert_eq!(SealedRoute::from_code(0), None);
    }

    proptest::proptest! {
        #[test]
        fn opening_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut rng = ChaCha20Rng::seed_from_u64(7);
            let key = server(&mut rng);
            let mut env = bytes.clone();
            if env.len() > 9 {
                env[0] = VERSION;
                env[1..9].copy_from_slice(&key.sealing_key().key_id);
            }
            let _ = open_upload(std::slice::from_ref(&key), &env);
        }
    }
}
