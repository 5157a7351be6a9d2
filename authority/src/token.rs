//! The health authority's signing key and the upload tokens it signs.
//!
//! A token is an ES256 JWT with exactly the claims the key server checks
//! (`backend/src/auth.rs`): `scope` = `"exposed"`, `onset` (`YYYY-MM-DD`), `fake`
//! (`"0"` or `"1"`), a random `jti` for single use, `iat` and `exp` at most 60 minutes
//! apart, plus `iss`. Every claim has the same length in a fake and a real token (the
//! `jti` is 32 hex digits, the dates are ten characters, the times the same number of
//! digits) and ES256 signatures are always 64 bytes, so a fake token has exactly the size
//! and shape of a real one.
//!
//! The private key lives only here (`ha-signing-key.pem` in the data directory, created
//! on first start with a warning). The key server is given the public half
//! (`ha-signing-key.pub.pem`) through `DP3T_HA_PUBLIC_KEYS`.

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rand::{CryptoRng, RngCore};
use serde::Serialize;

use crate::date::format_iso_date;
use crate::{Error, Result};

/// File name of the private signing key (PKCS#8 PEM, EC P-256).
pub const SIGNING_KEY_FILE: &str = "ha-signing-key.pem";
/// File name of the public key to give to the key server (SPKI PEM).
pub const PUBLIC_KEY_FILE: &str = "ha-signing-key.pub.pem";
/// The `scope` claim the key server requires.
pub const UPLOAD_SCOPE: &str = "exposed";

/// Write `contents` to a new file readable by its owner only (mode 0600 on Unix).
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_new_file(path, contents, true)
}

fn write_new_file(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
    std::io::Write::write_all(&mut f, contents).map_err(|e| Error::io(path, e))
}

/// The claims of an upload token, in the order they are serialized.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
    scope: &'static str,
    onset: String,
    fake: &'static str,
}

/// Signs upload tokens with the health authority's private key.
pub struct TokenSigner {
    key: EncodingKey,
    public_pem: String,
    issuer: String,
    validity_seconds: u64,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("issuer", &self.issuer)
            .field("validity_seconds", &self.validity_seconds)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer from a PKCS#8 PEM EC P-256 private key.
    pub fn from_pem(pem: &str, issuer: &str, validity_minutes: u32) -> Result<TokenSigner> {
        use p256::pkcs8::DecodePrivateKey;
        let secret = p256::SecretKey::from_pkcs8_pem(pem)
            .map_err(|e| Error::Key(format!("not a PKCS#8 EC P-256 private key ({e})")))?;
        let public_pem = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Key(e.to_string()))?;
        let key = EncodingKey::from_ec_pem(pem.as_bytes())?;
        Ok(TokenSigner {
            key,
            public_pem,
            issuer: issuer.to_owned(),
            validity_seconds: u64::from(validity_minutes.clamp(1, 60)) * 60,
        })
    }

    /// Load `ha-signing-key.pem` from `dir`, or generate a key pair there (both files)
    /// when it does not exist. Returns the signer and whether the key was generated.
    pub fn load_or_create(
        dir: &Path,
        issuer: &str,
        validity_minutes: u32,
    ) -> Result<(TokenSigner, bool)> {
        let private = dir.join(SIGNING_KEY_FILE);
        let public = dir.join(PUBLIC_KEY_FILE);
        if private.exists() {
            let pem = zeroize::Zeroizing::new(
                std::fs::read_to_string(&private).map_err(|e| Error::io(&private, e))?,
            );
            let signer = TokenSigner::from_pem(&pem, issuer, validity_minutes)
                .map_err(|e| Error::Key(format!("{}: {e}", private.display())))?;
            if !public.exists() {
                write_new_file(&public, signer.public_pem.as_bytes(), false)?;
            }
            return Ok((signer, false));
        }
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::Key(e.to_string()))?;
        let signer = TokenSigner::from_pem(&pem, issuer, validity_minutes)?;
        write_private_file(&private, pem.as_bytes())?;
        if public.exists() {
            std::fs::remove_file(&public).map_err(|e| Error::io(&public, e))?;
        }
        write_new_file(&public, signer.public_pem.as_bytes(), false)?;
        Ok((signer, true))
    }

    /// The public key in SPKI PEM form, for the key server's `DP3T_HA_PUBLIC_KEYS`.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Token lifetime in seconds.
    pub fn validity_seconds(&self) -> u64 {
        self.validity_seconds
    }

    /// Sign an upload token for `onset_day` at time `now`.
    pub fn mint<R: RngCore + CryptoRng>(
        &self,
        onset_day: u32,
        fake: bool,
        now: u64,
        rng: &mut R,
    ) -> Result<String> {
        let mut jti = [0u8; 16];
        rng.fill_bytes(&mut jti);
        let claims = Claims {
            iss: &self.issuer,
            jti: hex::encode(jti),
            iat: now,
            exp: now + self.validity_seconds,
            scope: UPLOAD_SCOPE,
            onset: format_iso_date(onset_day),
            fake: if fake { "1" } else { "0" },
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".to_owned());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;

    fn claims_of(token: &str) -> serde_json::Value {
        let part = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn temp_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("dp3t-auth-tok-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tokens_carry_the_key_servers_claims() {
        let dir = temp_dir();
        let (s, created) = TokenSigner::load_or_create(&dir, "ha", 30).unwrap();
        assert!(created);
        let t = s
            .mint(19_000, false, 1_700_000_000, &mut rand::rngs::OsRng)
            .unwrap();
        let c = claims_of(&t);
        assert_eq!(c["scope"], "exposed");
        assert_eq!(c["onset"], format_iso_date(19_000));
        assert_eq!(c["fake"], "0");
        assert_eq!(c["iat"], 1_700_000_000u64);
        assert_eq!(c["exp"], 1_700_000_000u64 + 1800);
        assert_eq!(c["jti"].as_str().unwrap().len(), 32);
        // The same key is read back, and verifies.
        let (s2, created) = TokenSigner::load_or_create(&dir, "ha", 30).unwrap();
        assert!(!created);
        assert_eq!(s.public_pem(), s2.public_pem());
        let dk = jsonwebtoken::DecodingKey::from_ec_pem(s.public_pem().as_bytes()).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(&t, &dk, &v).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fake_and_real_tokens_have_the_same_size_and_shape() {
        let dir = temp_dir();
        let (s, _) = TokenSigner::load_or_create(&dir, "ha", 60).unwrap();
        let mut rng = rand::rngs::OsRng;
        for i in 0..50 {
            let real = s
                .mint(19_000 + i, false, 1_700_000_000 + u64::from(i), &mut rng)
                .unwrap();
            let fake = s.mint(19_010 - i, true, 1_700_000_000, &mut rng).unwrap();
            assert_eq!(real.len(), fake.len());
            let parts = |t: &str| t.split('.').map(str::len).collect::<Vec<_>>();
            assert_eq!(parts(&real), parts(&fake));
            let (cr, cf) = (claims_of(&real), claims_of(&fake));
            let keys =
                |c: &serde_json::Value| c.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&cr), keys(&cf));
            assert_eq!(cf["fake"], "1");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_key_file_is_an_error() {
        let dir = temp_dir();
        std::fs::write(dir.join(SIGNING_KEY_FILE), "not a key").unwrap();
        assert!(TokenSigner::load_or_create(&dir, "ha", 30).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
