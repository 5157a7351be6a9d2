//! ECDSA P-256 keys and the response signature of PROTOCOL.md §9.5.
//!
//! Two things are signed with the backend's one P-256 key:
//!
//! * GAEN export files (§9.1): a DER-encoded ECDSA-SHA256 signature over `export.bin`,
//!   made with [`SigningKey::sign_der`] and checked with [`PublicKey::verify_der`].
//! * Published HTTP responses (§9.5): the `Signature` header, a compact JWS (`ES256`)
//!   whose claims bind the SHA-256 of the body, made with [`sign_response`] and checked
//!   with [`verify_response`].
//!
//! ## The `Signature` header, as the DP-3T backend writes it
//!
//! The DP-3T Java backend (`SignatureResponseWrapper`, jjwt) emits claims
//! `content-hash` (standard base64 with padding of SHA-256 of the body), `hash-alg`
//! (`"sha-256"`), `iss` (`"dp3t"`), `iat` and `exp` (JSON numbers, seconds) and, for
//! endpoints with an `X-BATCH-RELEASE-TIME` header, `batch-release-time` as a **string** of
//! milliseconds; for those it also sets `iat` to the batch release time and `exp` to
//! `iat` + the retention period. jjwt writes the JOSE header `{"alg":"ES256"}` without
//! `typ`; earlier prototypes (Go) wrote `{"alg":"ES256","typ":"JWT"}`, `"hash-alg":
//! "sha256"`, and `iat`/`exp` as strings. [`sign_response`] writes the Java backend's
//! claims with the header `{"alg":"ES256","typ":"JWT"}`; [`verify_response`] accepts every
//! variant above (a `typ` other than `JWT` is refused) and nothing else.
//!
//! ## Secrets
//!
//! [`SigningKey`] wraps `p256::ecdsa::SigningKey`, whose scalar is zeroized on drop; its
//! `Debug` shows only the public key, and [`SigningKey::to_pkcs8_pem`] returns a
//! [`Zeroizing`] string. Error messages never contain key material.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::error::{Error, Result, SignatureError};
use crate::time::UnixTime;

/// The JOSE header written by [`sign_response`], before base64url encoding.
pub const RESPONSE_JWS_HEADER: &str = r#"{"alg":"ES256","typ":"JWT"}"#;

/// The only JWS algorithm [`verify_response`] accepts.
pub const RESPONSE_JWS_ALG: &str = "ES256";

/// The `hash-alg` claim written by [`sign_response`] (the DP-3T backend's value).
pub const RESPONSE_HASH_ALG: &str = "sha-256";

/// How far in the future `iat` may lie, in seconds, to allow for clock skew between the
/// server and the phone: [`verify_response`] accepts `iat - 300 <= now <= exp`.
pub const RESPONSE_CLOCK_SKEW_SECONDS: u64 = 300;

/// Longest `Signature` header [`verify_response`] looks at, in bytes. Real headers are
/// about 400 bytes; anything near this limit is refused as malformed before decoding.
pub const MAX_RESPONSE_HEADER_LEN: usize = 8 * 1024;

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// An ECDSA P-256 private key: the backend's signing key for export files and responses.
///
/// The secret scalar is zeroized when the key is dropped (each clone wipes its own copy),
/// and `Debug` prints only the public key.
#[derive(Clone)]
pub struct SigningKey {
    inner: p256::ecdsa::SigningKey,
}

impl SigningKey {
    /// Generate a fresh key from the caller's cryptographic RNG.
    pub fn generate(rng: &mut (impl rand_core::CryptoRng + rand_core::RngCore)) -> Self {
        SigningKey {
            inner: p256::ecdsa::SigningKey::random(rng),
        }
    }

    /// Read a P-256 private key from PEM: PKCS#8 (`-----BEGIN PRIVATE KEY-----`) or SEC1
    /// (`-----BEGIN EC PRIVATE KEY-----`, as written by `openssl ecparam -genkey`; an
    /// `EC PARAMETERS` block before it is skipped). Encrypted keys and other curves are
    /// refused with [`SignatureError::Key`].
    pub fn from_pem(pem: &str) -> Result<Self> {
        let inner = if let Some(block) = pem_block(pem, "PRIVATE KEY") {
            p256::ecdsa::SigningKey::from_pkcs8_pem(block)
                .map_err(|e| key_error(format!("PKCS#8 private key: {e}")))?
        } else if let Some(block) = pem_block(pem, "EC PRIVATE KEY") {
            p256::SecretKey::from_sec1_pem(block)
                .map(p256::ecdsa::SigningKey::from)
                .map_err(|e| key_error(format!("SEC1 private key: {e}")))?
        } else if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(key_error("encrypted private keys are not supported"));
        } else {
            return Err(key_error(
                "no \"PRIVATE KEY\" or \"EC PRIVATE KEY\" PEM block found",
            ));
        };
        Ok(SigningKey { inner })
    }

    /// The key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, LF line endings), in a string
    /// that is wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        self.inner
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| key_error(format!("cannot encode private key: {e}")))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.inner.verifying_key())
    }

    /// ECDSA-SHA256 signature of `msg`, DER-encoded (the form of GAEN `export.sig`).
    /// Signing is deterministic (RFC 6979).
    pub fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
        self.sign_fixed(msg).to_der().as_bytes().to_vec()
    }

    /// ECDSA-SHA256 signature of `msg` in the fixed `r || s` form (JWS `ES256`).
    fn sign_fixed(&self, msg: &[u8]) -> Signature {
        self.inner.sign(msg)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// An ECDSA P-256 public key: what phones and export readers verify with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Read an SPKI public key from PEM (`-----BEGIN PUBLIC KEY-----`). Keys of other
    /// curves or algorithms are refused with [`SignatureError::Key`].
    pub fn from_pem(pem: &str) -> Result<Self> {
        let block = pem_block(pem, "PUBLIC KEY")
            .ok_or_else(|| key_error("no \"PUBLIC KEY\" PEM block found"))?;
        VerifyingKey::from_public_key_pem(block)
            .map(PublicKey)
            .map_err(|e| key_error(format!("SPKI public key: {e}")))
    }

    /// The key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`, LF line endings).
    pub fn to_pem(&self) -> Result<String> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| key_error(format!("cannot encode public key: {e}")))
    }

    /// Check a DER-encoded ECDSA-SHA256 signature over `msg`.
    ///
    /// Errors: [`SignatureError::Malformed`] if `der_sig` is not a DER ECDSA signature,
    /// [`SignatureError::Mismatch`] if it is one but does not verify with this key.
    pub fn verify_der(&self, msg: &[u8], der_sig: &[u8]) -> Result<()> {
        let sig = Signature::from_der(der_sig)
            .map_err(|_| SignatureError::Malformed("not a DER ECDSA P-256 signature".into()))?;
        self.verify_fixed(msg, &sig)
    }

    /// [`PublicKey::verify_der`] for a message whose SHA-256 the caller already has, so
    /// that a list of signatures over one large message hashes it once.
    pub(crate) fn verify_der_prehashed(&self, sha256: &[u8; 32], der_sig: &[u8]) -> Result<()> {
        let sig = Signature::from_der(der_sig)
            .map_err(|_| SignatureError::Malformed("not a DER ECDSA P-256 signature".into()))?;
        self.0
            .verify_prehash(sha256, &sig)
            .map_err(|_| Error::from(SignatureError::Mismatch))
    }

    fn verify_fixed(&self, msg: &[u8], sig: &Signature) -> Result<()> {
        self.0
            .verify(msg, sig)
            .map_err(|_| Error::from(SignatureError::Mismatch))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let point = self.0.to_encoded_point(true);
        write!(f, "PublicKey({})", hex::encode(point.as_bytes()))
    }
}

/// The slice of `text` from `-----BEGIN {label}-----` to the matching END line, if any.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let rest = text.get(start..)?;
    let stop = rest.find(&end)?.checked_add(end.len())?;
    rest.get(..stop)
}

fn key_error(msg: impl Into<String>) -> Error {
    SignatureError::Key(msg.into()).into()
}

// ---------------------------------------------------------------------------------------
// Response signature (§9.5)
// ---------------------------------------------------------------------------------------

/// The claims of a response `Signature` header (§9.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseClaims {
    /// SHA-256 of the response body (`content-hash`, standard base64 on the wire).
    pub content_hash: [u8; 32],
    /// Issuer (`iss`); the DP-3T backend uses `"dp3t"`.
    pub iss: String,
    /// Issued at, unix seconds (`iat`).
    pub iat: u64,
    /// Expiry, unix seconds (`exp`).
    pub exp: u64,
    /// The release time of the published batch in milliseconds (`batch-release-time`),
    /// for endpoints that have one.
    pub batch_release_time_ms: Option<u64>,
}

impl ResponseClaims {
    /// Claims for `body`: its SHA-256 with the given issuer, times and batch release time.
    pub fn for_body(
        body: &[u8],
        iss: &str,
        iat: u64,
        exp: u64,
        batch_release_time_ms: Option<u64>,
    ) -> Self {
        ResponseClaims {
            content_hash: Sha256::digest(body).into(),
            iss: iss.to_owned(),
            iat,
            exp,
            batch_release_time_ms,
        }
    }

    /// The claims as the JSON object of the JWS payload.
    fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert(
            "content-hash".into(),
            Value::String(STANDARD.encode(self.content_hash)),
        );
        map.insert("hash-alg".into(), Value::String(RESPONSE_HASH_ALG.into()));
        map.insert("iss".into(), Value::String(self.iss.clone()));
        map.insert("iat".into(), Value::from(self.iat));
        map.insert("exp".into(), Value::from(self.exp));
        if let Some(ms) = self.batch_release_time_ms {
            // A string of milliseconds, as the DP-3T backend copies it from the
            // X-BATCH-RELEASE-TIME header.
            map.insert("batch-release-time".into(), Value::String(ms.to_string()));
        }
        Value::Object(map)
    }

    /// Read the claims of a verified JWS payload.
    fn from_json(payload: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| header_error(format!("claims are not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(header_error("claims are not a JSON object"));
        };

        let hash_alg = map
            .get("hash-alg")
            .and_then(Value::as_str)
            .ok_or_else(|| header_error("missing string claim hash-alg"))?;
        if !(hash_alg.eq_ignore_ascii_case("sha-256") || hash_alg.eq_ignore_ascii_case("sha256")) {
            return Err(header_error(format!(
                "unsupported hash-alg {:?}",
                truncate(hash_alg)
            )));
        }

        let content_hash_b64 = map
            .get("content-hash")
            .and_then(Value::as_str)
            .ok_or_else(|| header_error("missing string claim content-hash"))?;
        let content_hash: [u8; 32] = STANDARD
            .decode(content_hash_b64)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| header_error("content-hash is not base64 of 32 bytes"))?;

        let iss = map
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| header_error("missing string claim iss"))?
            .to_owned();
        let iat = numeric_claim(&map, "iat")?.ok_or_else(|| header_error("missing claim iat"))?;
        let exp = numeric_claim(&map, "exp")?.ok_or_else(|| header_error("missing claim exp"))?;
        let batch_release_time_ms = numeric_claim(&map, "batch-release-time")?;

        Ok(ResponseClaims {
            content_hash,
            iss,
            iat,
            exp,
            batch_release_time_ms,
        })
    }
}

/// A non-negative integer claim written as a JSON number or as a string of digits
/// (both forms occur in DP-3T deployments). `None` if absent.
fn numeric_claim(map: &Map<String, Value>, name: &str) -> Result<Option<u64>> {
    let parsed = match map.get(name) {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok()
        }
        Some(_) => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| header_error(format!("claim {name} is not a non-negative integer")))
}

/// Sign a response body: the value of its `Signature` header (§9.5), a compact JWS with
/// header `{"alg":"ES256","typ":"JWT"}` and the given claims.
///
/// `claims.content_hash` is written as given; build it with [`ResponseClaims::for_body`]
/// so that it is the SHA-256 of `body`. If it is not, this returns
/// [`SignatureError::ContentHash`] rather than a header no phone would accept.
pub fn sign_response(body: &[u8], key: &SigningKey, claims: &ResponseClaims) -> Result<String> {
    let actual: [u8; 32] = Sha256::digest(body).into();
    if !bool::from(actual.ct_eq(&claims.content_hash)) {
        return Err(SignatureError::ContentHash.into());
    }
    let payload = serde_json::to_vec(&claims.to_json())
        .map_err(|e| header_error(format!("cannot encode claims: {e}")))?;
    let mut jws = URL_SAFE_NO_PAD.encode(RESPONSE_JWS_HEADER);
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut jws);
    let signature = key.sign_fixed(jws.as_bytes());
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut jws);
    Ok(jws)
}

/// Verify the `Signature` header of a response and return its claims.
///
/// Checks, in order: the JWS shape; the JOSE header (`alg` must be `ES256`, so `none`,
/// HMAC and RSA are refused; `typ`, if present, must be `JWT`; no `crit`); the ES256
/// signature with `key`; the claims (`hash-alg` must name SHA-256, as `sha-256` or
/// `sha256`); the validity window `iat - 300 <= now <= exp`; and finally that
/// `content-hash` equals SHA-256 of `body` (constant-time comparison).
///
/// Errors: [`SignatureError::Header`] for anything malformed or unsupported,
/// [`SignatureError::Malformed`] for a signature that is not 64 bytes of `r || s`,
/// [`SignatureError::Mismatch`] for a signature that does not verify,
/// [`SignatureError::Expired`] outside the window, [`SignatureError::ContentHash`] if the
/// body differs. Never panics, whatever the header.
pub fn verify_response(
    body: &[u8],
    header: &str,
    key: &PublicKey,
    now: UnixTime,
) -> Result<ResponseClaims> {
    let header = header.trim();
    if header.len() > MAX_RESPONSE_HEADER_LEN {
        return Err(header_error(format!(
            "longer than {MAX_RESPONSE_HEADER_LEN} bytes"
        )));
    }
    let mut parts = header.split('.');
    let (Some(protected_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(header_error(
            "not a compact JWS (three dot-separated parts)",
        ));
    };

    // 1. JOSE header: only ES256.
    let protected = URL_SAFE_NO_PAD
        .decode(protected_b64)
        .map_err(|_| header_error("JOSE header is not base64url"))?;
    check_jose_header(&protected)?;

    // 2. Signature over "<header>.<payload>" exactly as received.
    let signature_bytes = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| SignatureError::Malformed("signature is not base64url".into()))?;
    let signature = Signature::from_slice(&signature_bytes).map_err(|_| {
        SignatureError::Malformed("ES256 signature must be 64 bytes of r || s".into())
    })?;
    let signing_input_len = protected_b64.len() + 1 + payload_b64.len();
    let signing_input = header
        .get(..signing_input_len)
        .ok_or_else(|| header_error("not a compact JWS"))?;
    key.verify_fixed(signing_input.as_bytes(), &signature)?;

    // 3. Claims.
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| header_error("claims are not base64url"))?;
    let claims = ResponseClaims::from_json(&payload)?;

    // 4. Validity window.
    if claims.iat.saturating_sub(RESPONSE_CLOCK_SKEW_SECONDS) > now.0 || now.0 > claims.exp {
        return Err(SignatureError::Expired.into());
    }

    // 5. The body.
    let actual: [u8; 32] = Sha256::digest(body).into();
    if !bool::from(actual.ct_eq(&claims.content_hash)) {
        return Err(SignatureError::ContentHash.into());
    }
    Ok(claims)
}

fn check_jose_header(protected: &[u8]) -> Result<()> {
    let value: Value =
        serde_json::from_slice(protected).map_err(|_| header_error("JOSE header is not JSON"))?;
    let Value::Object(map) = value else {
        return Err(header_error("JOSE header is not a JSON object"));
    };
    match map.get("alg") {
        Some(Value::String(alg)) if alg == RESPONSE_JWS_ALG => {}
        Some(Value::String(alg)) => {
            return Err(header_error(format!(
                "algorithm {:?} is not accepted (only ES256)",
                truncate(alg)
            )))
        }
        _ => return Err(header_error("JOSE header has no string alg")),
    }
    match map.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(header_error("JOSE header typ is not JWT")),
    }
    if map.contains_key("crit") {
        return Err(header_error("JOSE header has critical extensions"));
    }
    Ok(())
}

/// At most 32 characters of an attacker-chosen string, for error messages.
fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

fn header_error(msg: impl Into<String>) -> Error {
    SignatureError::Header(msg.into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng as _;

    fn key(seed: u64) -> SigningKey {
        SigningKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed))
    }

    fn sig_err(r: Result<impl fmt::Debug>) -> SignatureError {
        match r {
            Err(Error::Signature(e)) => e,
            other => panic!("expected a signature error, got {other:?}"),
        }
    }

    const BODY: &[u8] = b"published keys";
    const T0: u64 = 1_700_000_000;

    fn signed(key: &SigningKey, brt: Option<u64>) -> String {
        let claims = ResponseClaims::for_body(BODY, "dp3t", T0, T0 + 86_400, brt);
        sign_response(BODY, key, &claims).expect("sign")
    }

    /// Build a JWS from raw header and claims JSON, signed with `key`.
    fn raw_jws(key: &SigningKey, header: &str, claims: &str) -> String {
        let mut jws = URL_SAFE_NO_PAD.encode(header);
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let sig = key.sign_fixed(jws.as_bytes());
        format!("{jws}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    fn claims_json(hash_alg: &str, iat: &str, exp: &str, extra: &str) -> String {
        format!(
            r#"{{"content-hash":"{}","hash-alg":"{hash_alg}","iss":"dp3t","iat":{iat},"exp":{exp}{extra}}}"#,
            STANDARD.encode(Sha256::digest(BODY))
        )
    }

    #[test]
    fn pkcs8_pem_round_trip_and_public_key_pem() {
        let k = key(1);
        let pem = k.to_pkcs8_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SigningKey::from_pem(&pem).expect("parse");
        assert_eq!(back.public_key(), k.public_key());

        let pub_pem = k.public_key().to_pem().expect("pub pem");
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(
            PublicKey::from_pem(&pub_pem).expect("parse"),
            k.public_key()
        );
    }

    #[test]
    fn sec1_pem_with_ec_parameters_block_is_read() {
        let k = key(2);
        let sec1 = p256::SecretKey::from(k.inner.as_nonzero_scalar())
            .to_sec1_pem(LineEnding::CRLF)
            .expect("sec1");
        // `openssl ecparam -genkey` writes the curve parameters first.
        let text = format!(
            "-----BEGIN EC PARAMETERS-----\r\nBggqhkjOPQMBBw==\r\n-----END EC PARAMETERS-----\r\n{}",
            &*sec1
        );
        let back = SigningKey::from_pem(&text).expect("parse");
        assert_eq!(back.public_key(), k.public_key());
    }

    #[test]
    fn bad_pems_are_key_errors() {
        for pem in [
            "",
            "not a key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "-----BEGIN EC PRIVATE KEY-----\n!!\n-----END EC PRIVATE KEY-----",
        ] {
            assert!(matches!(
                sig_err(SigningKey::from_pem(pem)),
                SignatureError::Key(_)
            ));
        }
        assert!(matches!(
            sig_err(PublicKey::from_pem(
                "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----"
            )),
            SignatureError::Key(_)
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = key(3);
        let pem = k.to_pkcs8_pem().expect("pem");
        let der = p256::SecretKey::from(k.inner.as_nonzero_scalar()).to_bytes();
        let debug = format!("{k:?}");
        assert!(debug.contains("public_key"));
        assert!(!debug.contains(&hex::encode(der)));
        assert!(!debug.contains(pem.lines().nth(1).expect("line")));
    }

    #[test]
    fn der_signatures_verify_and_detect_changes() {
        let k = key(4);
        let sig = k.sign_der(b"export.bin");
        assert_eq!(sig[0], 0x30, "DER SEQUENCE");
        k.public_key().verify_der(b"export.bin", &sig).expect("ok");
        assert_eq!(
            sig_err(k.public_key().verify_der(b"export.bim", &sig)),
            SignatureError::Mismatch
        );
        assert_eq!(
            sig_err(key(5).public_key().verify_der(b"export.bin", &sig)),
            SignatureError::Mismatch
        );
        assert!(matches!(
            sig_err(k.public_key().verify_der(b"export.bin", &sig[1..])),
            SignatureError::Malformed(_)
        ));
        let digest: [u8; 32] = Sha256::digest(b"export.bin").into();
        k.public_key()
            .verify_der_prehashed(&digest, &sig)
            .expect("prehashed ok");
        assert_eq!(
            sig_err(key(5).public_key().verify_der_prehashed(&digest, &sig)),
            SignatureError::Mismatch
        );
    }

    #[test]
    fn response_round_trip_with_batch_release_time_as_string() {
        let k = key(6);
        let jws = signed(&k, Some(1_700_000_000_000));
        assert!(jws.starts_with("eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9."));
        let payload = URL_SAFE_NO_PAD
            .decode(jws.split('.').nth(1).expect("payload"))
            .expect("b64");
        let json: Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(json["batch-release-time"], Value::from("1700000000000"));
        assert_eq!(json["hash-alg"], Value::from("sha-256"));
        assert_eq!(json["iat"], Value::from(T0));

        let claims =
            verify_response(BODY, &jws, &k.public_key(), UnixTime(T0 + 10)).expect("verifies");
        assert_eq!(
            claims,
            ResponseClaims::for_body(BODY, "dp3t", T0, T0 + 86_400, Some(1_700_000_000_000))
        );
        let without = signed(&k, None);
        let claims =
            verify_response(BODY, &without, &k.public_key(), UnixTime(T0)).expect("verifies");
        assert_eq!(claims.batch_release_time_ms, None);
    }

    #[test]
    fn sign_response_refuses_claims_for_another_body() {
        let claims = ResponseClaims::for_body(b"other", "dp3t", T0, T0 + 1, None);
        assert_eq!(
            sig_err(sign_response(BODY, &key(7), &claims)),
            SignatureError::ContentHash
        );
    }

    #[test]
    fn response_checks_body_key_and_time() {
        let k = key(8);
        let jws = signed(&k, None);
        let pk = k.public_key();
        assert_eq!(
            sig_err(verify_response(b"other body", &jws, &pk, UnixTime(T0))),
            SignatureError::ContentHash
        );
        assert_eq!(
            sig_err(verify_response(
                BODY,
                &jws,
                &key(9).public_key(),
                UnixTime(T0)
            )),
            SignatureError::Mismatch
        );
        // The window is iat - 300 ..= exp.
        verify_response(BODY, &jws, &pk, UnixTime(T0 - 300)).expect("skew allowed");
        verify_response(BODY, &jws, &pk, UnixTime(T0 + 86_400)).expect("last second");
        assert_eq!(
            sig_err(verify_response(BODY, &jws, &pk, UnixTime(T0 - 301))),
            SignatureError::Expired
        );
        assert_eq!(
            sig_err(verify_response(BODY, &jws, &pk, UnixTime(T0 + 86_401))),
            SignatureError::Expired
        );
    }

    #[test]
    fn tampered_claims_do_not_verify() {
        let k = key(10);
        let jws = signed(&k, None);
        let parts: Vec<&str> = jws.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(claims_json("sha-256", "0", "99999999999", ""));
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(
            sig_err(verify_response(
                BODY,
                &forged,
                &k.public_key(),
                UnixTime(T0)
            )),
            SignatureError::Mismatch
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let k = key(11);
        let claims = claims_json("sha-256", &T0.to_string(), &(T0 + 10).to_string(), "");
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":"es256"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"ES256","typ":"JOSE+JSON"}"#,
            r#"{"alg":"ES256","crit":["b64"],"b64":false}"#,
            r#"["ES256"]"#,
        ] {
            let jws = raw_jws(&k, header, &claims);
            assert!(
                matches!(
                    sig_err(verify_response(BODY, &jws, &k.public_key(), UnixTime(T0))),
                    SignatureError::Header(_)
                ),
                "{header}"
            );
        }
        // The classic "alg":"none" token with an empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        assert!(matches!(
            sig_err(verify_response(BODY, &none, &k.public_key(), UnixTime(T0))),
            SignatureError::Header(_)
        ));
    }

    #[test]
    fn backend_variants_are_accepted() {
        // jjwt (the Java backend) writes no typ; the Go prototype wrote strings and "sha256".
        let k = key(12);
        let brt = r#","batch-release-time":"1589185940913""#;
        for (header, claims) in [
            (
                r#"{"alg":"ES256"}"#,
                claims_json("sha-256", &T0.to_string(), &(T0 + 10).to_string(), brt),
            ),
            (
                r#"{"alg":"ES256","typ":"JWT"}"#,
                claims_json(
                    "sha256",
                    &format!("\"{T0}\""),
                    &format!("\"{}\"", T0 + 10),
                    r#","batch-release-time":1589185940913"#,
                ),
            ),
        ] {
            let jws = raw_jws(&k, header, &claims);
            let got = verify_response(BODY, &jws, &k.public_key(), UnixTime(T0)).expect(header);
            assert_eq!(got.iat, T0);
            assert_eq!(got.exp, T0 + 10);
            assert_eq!(got.batch_release_time_ms, Some(1_589_185_940_913));
        }
    }

    #[test]
    fn bad_claims_are_header_errors() {
        let k = key(13);
        let t = T0.to_string();
        for claims in [
            claims_json("md5", &t, &t, ""),
            claims_json("sha-256", "-1", &t, ""),
            claims_json("sha-256", "1.5", &t, ""),
            claims_json("sha-256", "\"12a\"", &t, ""),
            claims_json("sha-256", &t, &t, r#","batch-release-time":"soon""#),
            r#"{"hash-alg":"sha-256","iss":"dp3t","iat":1,"exp":2}"#.to_owned(),
            r#"{"content-hash":"AAAA","hash-alg":"sha-256","iss":"dp3t","iat":1,"exp":2}"#
                .to_owned(),
            "[1,2]".to_owned(),
            "not json".to_owned(),
        ] {
            let jws = raw_jws(&k, RESPONSE_JWS_HEADER, &claims);
            assert!(
                matches!(
                    sig_err(verify_response(BODY, &jws, &k.public_key(), UnixTime(T0))),
                    SignatureError::Header(_)
                ),
                "{claims}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let pk = key(14).public_key();
        let good = signed(&key(14), None);
        let long = "a".repeat(MAX_RESPONSE_HEADER_LEN + 1);
        for h in [
            "",
            ".",
            "..",
            "...",
            "a.b",
            "a.b.c.d",
            "é.é.é",
            "eyJhbGciOiJFUzI1NiJ9..",
            long.as_str(),
            &good[..good.len() - 2],
            &good.replace('.', ".."),
        ] {
            assert!(verify_response(BODY, h, &pk, UnixTime(T0)).is_err(), "{h}");
        }
    }

    proptest! {
        #[test]
        fn verify_response_never_panics(h in ".{0,600}") {
            let _ = verify_response(BODY, &h, &key(15).public_key(), UnixTime(T0));
        }

        #[test]
        fn verify_response_never_panics_on_mutations(
            pos in 0usize..400, byte in 0u8..128, cut in 0usize..400
        ) {
            let k = key(16);
            let mut h = signed(&k, Some(5)).into_bytes();
            let p = pos % h.len();
            h[p] = byte;
            h.truncate(h.len() - cut % h.len());
            if let Ok(s) = String::from_utf8(h) {
                let _ = verify_response(BODY, &s, &k.public_key(), UnixTime(T0));
            }
        }
    }
}
