//! Upload authorisation (PROTOCOL.md §8): the health authority's `Bearer` JWT.
//!
//! Only ES256 and RS256 are accepted, each against the configured public keys of its
//! family; the algorithm is read from the token header *before* any key is touched, so
//! `none`, HMAC and every other algorithm are refused by name. Time checks are done here
//! with the caller's `now` (not the library's clock) so that they are testable: `exp`
//! must not have passed, `iat` must not be in the future, and `exp - iat` must be at most
//! 60 minutes. Single use of the `jti` is enforced by the database, in the same
//! transaction that stores the keys ([`crate::db::Db::store_upload`]); this module only
//! turns the `jti` into the fixed-size digest that is recorded.

use std::path::Path;

use base64::Engine;
use dp3t_core::signing::SigningKey;
use dp3t_core::time::{Day, UnixTime};
use jsonwebtoken::EncodingKey;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest accepted token validity, `exp - iat`, in seconds.
pub const MAX_TOKEN_VALIDITY_SECONDS: u64 = 3600;
/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;
/// The required `scope` claim.
pub const UPLOAD_SCOPE: &str = "exposed";

/// One trusted health-authority public key.
struct HaKey {
    source: String,
    key: DecodingKey,
}

/// The health-authority public keys that may sign upload tokens.
#[derive(Default)]
pub struct HaKeys {
    ec: Vec<HaKey>,
    rsa: Vec<HaKey>,
}

impl std::fmt::Debug for HaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaKeys")
            .field(
                "es256",
                &self.ec.iter().map(|k| &k.source).collect::<Vec<_>>(),
            )
            .field(
                "rs256",
                &self.rsa.iter().map(|k| &k.source).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl HaKeys {
    /// Add a PEM public key (SPKI EC P-256, or RSA as SPKI or PKCS#1). `source` names it
    /// in logs.
    pub fn add_pem(&mut self, pem: &[u8], source: &str) -> Result<(), crate::keys::KeyError> {
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            self.ec.push(HaKey {
                source: source.to_owned(),
                key,
            });
            return Ok(());
        }
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| crate::keys::KeyError::HaKey {
            source_name: source.to_owned(),
            source: e,
        })?;
        self.rsa.push(HaKey {
            source: source.to_owned(),
            key,
        });
        Ok(())
    }

    /// Add the PEM public key in file `path`.
    pub fn add_file(&mut self, path: &Path) -> Result<(), crate::keys::KeyError> {
        let pem = std::fs::read(path).map_err(|source| crate::keys::KeyError::Io {
            action: "reading health-authority key",
            path: path.to_owned(),
            source,
        })?;
        self.add_pem(&pem, &path.display().to_string())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ec.len() + self.rsa.len()
    }

    /// True when no key is configured (every upload will be refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the keys came from, for the startup log.
    pub fn sources(&self) -> Vec<String> {
        self.ec
            .iter()
            .chain(&self.rsa)
            .map(|k| k.source.clone())
            .collect()
    }
}

/// What a valid upload token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadGrant {
    /// First contagious day; keys starting earlier are dropped.
    pub onset: Day,
    /// A fake token: the upload is answered normally but stores no key.
    pub fake: bool,
    /// SHA-256 of the `jti`; the writer keys it before it is stored
    /// ([`crate::writer::single_use_record`]).
    pub jti_hash: [u8; 32],
    /// The token's `exp` (unix seconds).
    pub expires_at: u64,
    /// For a next-day token of the GAEN v1 API: the `rollingStartNumber` the delayed key
    /// must have. `None` for health-authority tokens.
    pub delayed_key_date: Option<u32>,
}

/// Why a token was refused. Each maps to a status code and a metrics label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header, or not of the `Bearer` scheme.
    #[error("missing Authorization: Bearer <token> header")]
    Missing,
    /// Not a three-part compact JWS, or undecodable header/claims.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// An algorithm other than ES256 or RS256 (including `none` and HMAC).
    #[error("token algorithm {0:?} is not accepted (only ES256 and RS256)")]
    Algorithm(String),
    /// No configured key verifies the signature.
    #[error("token signature does not verify with any trusted health-authority key")]
    Signature,
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `iat` lies in the future.
    #[error("token is not yet valid (iat in the future)")]
    NotYetValid,
    /// `exp - iat` exceeds 60 minutes (or `exp` is not after `iat`).
    #[error("token validity exp - iat must be positive and at most 3600 s")]
    Validity,
    /// `scope` is not `exposed`.
    #[error("token scope must be \"exposed\"")]
    Scope,
    /// A claim is missing or has the wrong form (`onset`, `fake`, `jti`, `iat`, `exp`).
    #[error("token claim {0}")]
    Claim(String),
}

impl AuthError {
    /// Short label for metrics and logs.
    pub fn reason(&self) -> crate::api::ErrorCode {
        use crate::api::ErrorCode;
        match self {
            AuthError::Missing => ErrorCode::AuthMissing,
            AuthError::Malformed(_) => ErrorCode::TokenMalformed,
            AuthError::Algorithm(_) => ErrorCode::TokenAlgorithm,
            AuthError::Signature => ErrorCode::TokenSignature,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::NotYetValid => ErrorCode::TokenNotYetValid,
            AuthError::Validity => ErrorCode::TokenValidity,
            AuthError::Scope => ErrorCode::TokenScope,
            AuthError::Claim(_) => ErrorCode::TokenClaims,
        }
    }
}

/// Extract the token from an `Authorization` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let h = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = h.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// The claims read from the token; all optional so that each absence gets its own error.
#[derive(Deserialize)]
struct Claims {
    scope: Option<String>,
    onset: Option<String>,
    fake: Option<serde_json::Value>,
    jti: Option<String>,
    iat: Option<u64>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// Read the `alg` of the (unverified) header, so that unsupported algorithms are named.
fn header_alg(token: &str) -> Result<String, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not a three-part compact JWS".into()));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not JSON".into()))?;
    v.get("alg")
        .and_then(|a| a.as_str())
        .map(str::to_owned)
        .ok_or_else(|| AuthError::Malformed("header has no alg".into()))
}

/// Verify an upload token at time `now` and return what it grants.
pub fn verify_upload_token(
    token: &str,
    keys: &HaKeys,
    now: UnixTime,
) -> Result<UploadGrant, AuthError> {
    check_claims(decode_verified::<Claims>(token, keys)?, now)
}

/// Decode the claims of a token whose ES256/RS256 signature verifies with one of `keys`.
/// No claim is checked here.
fn decode_verified<C: serde::de::DeserializeOwned>(
    token: &str,
    keys: &HaKeys,
) -> Result<C, AuthError> {
    let alg_name = header_alg(token)?;
    let (alg, candidates) = match alg_name.as_str() {
        "ES256" => (Algorithm::ES256, &keys.ec),
        "RS256" => (Algorithm::RS256, &keys.rsa),
        _ => return Err(AuthError::Algorithm(alg_name)),
    };
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    for k in candidates {
        match jsonwebtoken::decode::<C>(token, &k.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_) => continue,
                ErrorKind::Json(e) => return Err(AuthError::Claim(format!("malformed: {e}"))),
                ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                    return Err(AuthError::Malformed("undecodable part".into()))
                }
                _ => return Err(AuthError::Signature),
            },
        }
    }
    Err(AuthError::Signature)
}

/// Check `exp`, `iat` and `nbf` at `now`: the token is current and valid for at most
/// `max_validity` seconds.
fn check_times(
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    max_validity: u64,
    now: UnixTime,
) -> Result<(u64, u64), AuthError> {
    let exp = exp.ok_or_else(|| AuthError::Claim("exp is missing".into()))?;
    let iat = iat.ok_or_else(|| AuthError::Claim("iat is missing".into()))?;
    if exp <= iat || exp - iat > max_validity {
        return Err(AuthError::Validity);
    }
    if now.0 > exp.saturating_add(LEEWAY_SECONDS) {
        return Err(AuthError::Expired);
    }
    if iat > now.0.saturating_add(LEEWAY_SECONDS)
        || nbf.is_some_and(|nbf| nbf > now.0.saturating_add(LEEWAY_SECONDS))
    {
        return Err(AuthError::NotYetValid);
    }
    Ok((exp, iat))
}

/// Read the `fake` claim: `"0"`, `"1"`, or absent (= not fake, as the DP-3T backend has it).
fn fake_claim(v: Option<&serde_json::Value>) -> Result<bool, AuthError> {
    match v {
        None => Ok(false),
        Some(v) => match v.as_str() {
            Some("0") => Ok(false),
            Some("1") => Ok(true),
            _ => Err(AuthError::Claim("fake must be \"0\" or \"1\"".into())),
        },
    }
}

/// The single-use digest of a token: SHA-256 of its `jti`. A fake token needs no `jti`
/// (the DP-3T backend accepts any fake token before its `jti` check); it still gets a
/// single-use record, of random bytes, so that its upload does exactly the work of a
/// real one.
fn jti_digest(jti: Option<String>, fake: bool) -> Result<[u8; 32], AuthError> {
    match jti {
        Some(j) if !j.is_empty() && j.len() <= 256 => Ok(Sha256::digest(j.as_bytes()).into()),
        Some(_) => Err(AuthError::Claim(
            "jti must be a non-empty string of at most 256 bytes".into(),
        )),
        None if fake => Ok(rand::random()),
        None => Err(AuthError::Claim(
            "jti is missing (a real upload token must carry one)".into(),
        )),
    }
}

fn check_claims(c: Claims, now: UnixTime) -> Result<UploadGrant, AuthError> {
    let (exp, _) = check_times(c.exp, c.iat, c.nbf, MAX_TOKEN_VALIDITY_SECONDS, now)?;
    if c.scope.as_deref() != Some(UPLOAD_SCOPE) {
        return Err(AuthError::Scope);
    }
    let onset = c
        .onset
        .as_deref()
        .and_then(Day::parse_iso)
        .ok_or_else(|| AuthError::Claim("onset must be a YYYY-MM-DD date".into()))?;
    let fake = fake_claim(c.fake.as_ref())?;
    Ok(UploadGrant {
        onset,
        fake,
        jti_hash: jti_digest(c.jti, fake)?,
        expires_at: exp,
        delayed_key_date: None,
    })
}

/// The `scope` of the next-day token that `POST /v1/gaen/exposed` answers with.
pub const NEXT_DAY_SCOPE: &str = "currentDayExposed";
/// Validity of a next-day token: two days, as the DP-3T backend issues them.
pub const NEXT_DAY_TOKEN_SECONDS: u64 = 2 * 86_400;
/// Longest next-day token validity accepted (the DP-3T backend's three days).
pub const MAX_NEXT_DAY_VALIDITY_SECONDS: u64 = 3 * 86_400;
/// `iss` of next-day tokens.
pub const NEXT_DAY_ISSUER: &str = "dp3t-backend";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NextDayClaims {
    jti: Option<String>,
    iat: Option<u64>,
    iss: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    scope: Option<String>,
    delayed_key_date: Option<u32>,
    onset: Option<String>,
    fake: Option<serde_json::Value>,
}

/// Issues and verifies next-day tokens with the server's own signing key (ES256).
///
/// The token is opaque to the phone, which sends it back unchanged the next day. Its
/// claims are the DP-3T backend's (`jti`, `iat`, `iss`, `exp`, `scope:
/// "currentDayExposed"`, `delayedKeyDate` as a number, `fake`) plus the `onset` of the
/// first upload, from which the delayed key's `days_since_onset_of_symptoms` is computed.
/// Every field has a fixed width, so real and fake tokens have the same length. A
/// response `Signature` JWT signed by the same key cannot pass as one: it has no `scope`
/// and no `delayedKeyDate`.
pub struct NextDayTokens {
    encoding: EncodingKey,
    verifying: HaKeys,
}

impl std::fmt::Debug for NextDayTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NextDayTokens")
    }
}

impl NextDayTokens {
    /// Tokens signed by the server's signing key `key`.
    pub fn new(key: &SigningKey) -> Result<Self, AuthError> {
        let bad = |what: &str| AuthError::Malformed(format!("signing key: {what}"));
        let pem = key.to_pkcs8_pem().map_err(|_| bad("not encodable"))?;
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| bad("not P-256"))?;
        let public = key
            .public_key()
            .to_pem()
            .map_err(|_| bad("no public half"))?;
        let mut verifying = HaKeys::default();
        verifying
            .add_pem(public.as_bytes(), "signing key")
            .map_err(|_| bad("public half unreadable"))?;
        Ok(NextDayTokens {
            encoding,
            verifying,
        })
    }

    /// Issue the token for an upload by `grant` at `now`, binding the day `delayed_key_date`.
    pub fn issue(
        &self,
        onset: Day,
        fake: bool,
        delayed_key_date: u32,
        now: UnixTime,
    ) -> Result<String, AuthError> {
        let claims = NextDayClaims {
            jti: Some(hex::encode(rand::random::<[u8; 16]>())),
            iat: Some(now.0),
            iss: Some(NEXT_DAY_ISSUER.into()),
            exp: Some(now.0 + NEXT_DAY_TOKEN_SECONDS),
            nbf: None,
            scope: Some(NEXT_DAY_SCOPE.into()),
            delayed_key_date: Some(delayed_key_date),
            onset: Some(onset.iso()),
            fake: Some(if fake { "1" } else { "0" }.into()),
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::ES256),
            &claims,
            &self.encoding,
        )
        .map_err(|e| AuthError::Malformed(format!("cannot sign a next-day token: {e}")))
    }

    /// Verify a next-day token at `now`.
    /// The grant carries the first upload's `onset` and the `delayedKeyDate`.
    pub fn verify(&self, token: &str, now: UnixTime) -> Result<UploadGrant, AuthError> {
        let c: NextDayClaims = decode_verified(token, &self.verifying)?;
        let (exp, _) = check_times(c.exp, c.iat, c.nbf, MAX_NEXT_DAY_VALIDITY_SECONDS, now)?;
        if c.scope.as_deref() != Some(NEXT_DAY_SCOPE) {
            return Err(AuthError::Scope);
        }
        let delayed_key_date = c
            .delayed_key_date
            .ok_or_else(|| AuthError::Claim("delayedKeyDate is missing".into()))?;
        let onset = c
            .onset
            .as_deref()
            .and_then(Day::parse_iso)
            .ok_or_else(|| AuthError::Claim("onset must be a YYYY-MM-DD date".into()))?;
        let fake = fake_claim(c.fake.as_ref())?;
        Ok(UploadGrant {
            onset,
            fake,
            jti_hash: jti_digest(c.jti, fake)?,
            expires_at: exp,
            delayed_key_date: Some(delayed_key_date),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::{mint_dev_token, DevTokenRequest};
    use dp3t_core::signing::SigningKey;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const NOW: UnixTime = UnixTime(1_700_000_000);

    fn es_key() -> (String, HaKeys) {
        let sk = SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = sk.to_pkcs8_pem().unwrap().to_string();
        let mut keys = HaKeys::default();
        keys.add_pem(sk.public_key().to_pem().unwrap().as_bytes(), "test")
            .unwrap();
        (pem, keys)
    }

    fn sign(pem: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn good_claims() -> serde_json::Value {
        serde_json::json!({"scope": "exposed", "onset": "2023-11-10", "fake": "0",
            "jti": "abc", "iat": NOW.0 - 10, "exp": NOW.0 + 600})
    }

    #[test]
    fn a_good_token_grants_its_claims() {
        let (pem, keys) = es_key();
        let g = verify_upload_token(&sign(&pem, good_claims()), &keys, NOW).unwrap();
        assert_eq!(g.onset, Day::parse_iso("2023-11-10").unwrap());
        assert!(!g.fake);
        assert_eq!(g.expires_at, NOW.0 + 600);
        assert_eq!(g.jti_hash, <[u8; 32]>::from(Sha256::digest(b"abc")));
    }

    #[test]
    fn dev_tokens_verify() {
        let (pem, keys) = es_key();
        let t = mint_dev_token(
            &pem,
            &DevTokenRequest {
                onset: Day(19_000),
                fake: true,
                ttl_minutes: 60,
                now: NOW,
            },
        )
        .unwrap();
        let g = verify_upload_token(&t, &keys, NOW).unwrap();
        assert!(g.fake);
        assert_eq!(g.onset, Day(19_000));
    }

    #[test]
    fn each_bad_claim_has_its_error() {
        let (pem, keys) = es_key();
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good_claims();
            c[k] = v;
            verify_upload_token(&sign(&pem, c), &keys, NOW)
        };
        assert_eq!(with("scope", "other".into()), Err(AuthError::Scope));
        assert_eq!(with("exp", (NOW.0 - 100).into()), Err(AuthError::Validity));
        assert_eq!(with("iat", (NOW.0 - 4000).into()), Err(AuthError::Validity));
        assert_eq!(with("fake", 0.into()).unwrap_err().reason(), "token_claims");
        assert_eq!(
            with("onset", "2023-02-30".into()).unwrap_err().reason(),
            "token_claims"
        );
        assert_eq!(with("jti", "".into()).unwrap_err().reason(), "token_claims");
        let mut c = good_claims();
        c["iat"] = (NOW.0 - 3000).into();
        c["exp"] = (NOW.0 - 100).into();
        assert_eq!(
            verify_upload_token(&sign(&pem, c), &keys, NOW),
            Err(AuthError::Expired)
        );
        let mut c = good_claims();
        c["iat"] = (NOW.0 + 100).into();
        c["exp"] = (NOW.0 + 200).into();
        assert_eq!(
            verify_upload_token(&sign(&pem, c), &keys, NOW),
            Err(AuthError::NotYetValid)
        );
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("iat");
        assert_eq!(
            verify_upload_token(&sign(&pem, c), &keys, NOW)
                .unwrap_err()
                .reason(),
            "token_claims"
        );
    }

    #[test]
    fn reference_backend_claim_defaults() {
        let (pem, keys) = es_key();
        // No `fake` claim: a real token.
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("fake");
        assert!(
            !verify_upload_token(&sign(&pem, c), &keys, NOW)
                .unwrap()
                .fake
        );
        // A fake token without `jti` is accepted, each with its own single-use record.
        let mut c = good_claims();
        c["fake"] = "1".into();
        c.as_object_mut().unwrap().remove("jti");
        let a = verify_upload_token(&sign(&pem, c.clone()), &keys, NOW).unwrap();
        let b = verify_upload_token(&sign(&pem, c), &keys, NOW).unwrap();
        assert!(a.fake && b.fake);
        assert_ne!(a.jti_hash, b.jti_hash);
        // A real token without `jti` is not.
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("jti");
        assert_eq!(
            verify_upload_token(&sign(&pem, c), &keys, NOW)
                .unwrap_err()
                .reason(),
            "token_claims"
        );
        // `kid` in the header and a past `nbf` are accepted; a future `nbf` is not.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ha-2020".into());
        let mut c = good_claims();
        c["nbf"] = (NOW.0 - 10).into();
        let t = encode(
            &header,
            &c,
            &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(verify_upload_token(&t, &keys, NOW).is_ok());
        c["nbf"] = (NOW.0 + 600).into();
        let t = encode(
            &header,
            &c,
            &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify_upload_token(&t, &keys, NOW),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn a_changed_signature_character_is_a_signature_error() {
        let (pem, keys) = es_key();
        for _ in 0..20 {
            let mut t = sign(&pem, good_claims()).into_bytes();
            let i = t.len() - 20;
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            assert_eq!(
                verify_upload_token(&t, &keys, NOW),
                Err(AuthError::Signature)
            );
        }
    }

    #[test]
    fn other_algorithms_and_keys_are_refused() {
        let (pem, keys) = es_key();
        let (other_pem, _) = es_key();
        assert_eq!(
            verify_upload_token(&sign(&other_pem, good_claims()), &keys, NOW),
            Err(AuthError::Signature)
        );
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verify_upload_token(&hs, &keys, NOW),
            Err(AuthError::Algorithm("HS256".into()))
        );
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(&good_claims())
        );
        assert_eq!(
            verify_upload_token(&none, &keys, NOW),
            Err(AuthError::Algorithm("none".into()))
        );
        // RS256 without any RSA key configured.
        let rs = format!(
            "{}.{}.AAAA",
            b64(&serde_json::json!({"alg": "RS256"})),
            b64(&good_claims())
        );
        assert_eq!(
            verify_upload_token(&rs, &keys, NOW),
            Err(AuthError::Signature)
        );
        for junk in ["", "a.b", "a.b.c.d", "!!!.x.y"] {
            assert_eq!(
                verify_upload_token(junk, &keys, NOW).unwrap_err().reason(),
                "token_malformed"
            );
        }
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("Bearer ")), Err(AuthError::Missing));
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
    }
}
