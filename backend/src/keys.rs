//! Key files in the data directory, and the development tooling around them.
//!
//! | file | what |
//! |---|---|
//! | `signing-key.pem` / `signing-key.pub.pem` | the server's ECDSA P-256 key that signs export files and the `Signature` header; phones and export readers verify with the public half |
//! | `ha-dev-key.pem` / `ha-dev-key.pub.pem` | a **development** health-authority key for minting upload tokens locally (`dp3t-backend token`) |
//!
//! `serve` creates a missing signing key on first start and warns that it is a development
//! key; production installs provision their own (see `docs/OPERATIONS.md`, key rotation)
//! and set `DP3T_REQUIRE_KEYS=true`, with which `serve` refuses to start without it.
//! The dev HA key is created by `keygen`, or by `serve` when no health-authority key is
//! configured at all, and is trusted only while `DP3T_TRUST_DEV_HA_KEY` is true (the
//! default). Private key files are written with mode 0600 where the OS supports it.

use std::path::{Path, PathBuf};

use dp3t_core::signing::{PublicKey, SigningKey};
use dp3t_core::time::{Day, UnixTime};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;

/// File name of the server's private signing key.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";
/// File name of the server's public signing key.
pub const SIGNING_PUB_FILE: &str = "signing-key.pub.pem";
/// File name of the development health-authority private key.
pub const HA_DEV_KEY_FILE: &str = "ha-dev-key.pem";
/// File name of the development health-authority public key.
pub const HA_DEV_PUB_FILE: &str = "ha-dev-key.pub.pem";

/// A key file that cannot be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, creating or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// `reading`, `creating` or `writing`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file exists where a new one would be written.
    #[error("{} already exists; not overwriting it", .0.display())]
    Exists(PathBuf),
    /// A file does not hold a key of the expected kind.
    #[error("parsing {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: dp3t_core::Error,
    },
    /// A health-authority public key is neither EC P-256 nor RSA in PEM form.
    #[error("{source_name}: not an EC P-256 or RSA public key in PEM form ({source})")]
    HaKey {
        /// Where it came from (a file name).
        source_name: String,
        /// What the JWT library said.
        source: jsonwebtoken::errors::Error,
    },
    /// The development HA key is missing.
    #[error(
        "reading {}: {source} (run `dp3t-backend keygen --data-dir {}` first)",
        path.display(),
        dir.display()
    )]
    NoDevKey {
        /// `ha-dev-key.pem`.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Encoding a key failed.
    #[error("encoding a key: {0}")]
    Encode(#[from] dp3t_core::Error),
    /// Reading the HA private key or signing a token failed.
    #[error("{what}: {source}")]
    Token {
        /// What was being done.
        what: &'static str,
        /// What the JWT library said.
        source: jsonwebtoken::errors::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyError {
    let path = path.to_owned();
    move |source| KeyError::Io {
        action,
        path,
        source,
    }
}

/// Write `contents` to `path`, readable by the owner only when `private`.
fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), KeyError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(io("creating", path))?;
    std::io::Write::write_all(&mut f, contents.as_bytes()).map_err(io("writing", path))?;
    Ok(())
}

/// Generate a key pair and write it as `private_name` / `public_name` in `dir`.
/// Refuses to overwrite existing files.
fn write_key_pair(
    dir: &Path,
    private_name: &str,
    public_name: &str,
) -> Result<SigningKey, KeyError> {
    let (private, public) = (dir.join(private_name), dir.join(public_name));
    for p in [&private, &public] {
        if p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key.to_pkcs8_pem()?;
    let pub_pem = key.public_key().to_pem()?;
    write_file(&private, &pem, true)?;
    write_file(&public, &pub_pem, false)?;
    Ok(key)
}

/// `dp3t-backend keygen`: write both key pairs into `dir` (created if needed). Existing
/// files are never overwritten; returns the paths written.
pub fn keygen(dir: &Path) -> Result<Vec<PathBuf>, KeyError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut written = Vec::new();
    for (private, public) in [
        (SIGNING_KEY_FILE, SIGNING_PUB_FILE),
        (HA_DEV_KEY_FILE, HA_DEV_PUB_FILE),
    ] {
        if dir.join(private).exists() && dir.join(public).exists() {
            continue;
        }
        write_key_pair(dir, private, public)?;
        written.push(dir.join(private));
        written.push(dir.join(public));
    }
    Ok(written)
}

/// Load the signing key from `dir` if it exists (writing a missing public half next to
/// it); `None` when there is no `signing-key.pem`. Reads only, unless the public half is
/// missing.
pub fn load_signing_key(dir: &Path) -> Result<Option<SigningKey>, KeyError> {
    let path = dir.join(SIGNING_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let pem =
        zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(io("reading", &path))?);
    let key = SigningKey::from_pem(&pem).map_err(|source| KeyError::Parse {
        path: path.clone(),
        source,
    })?;
    let pub_path = dir.join(SIGNING_PUB_FILE);
    if !pub_path.exists() {
        write_file(&pub_path, &key.public_key().to_pem()?, false)?;
    }
    Ok(Some(key))
}

/// Load the signing key from `dir`, creating it (and its public half) if missing.
/// Returns the key and whether it was just created.
pub fn load_or_create_signing_key(dir: &Path) -> Result<(SigningKey, bool), KeyError> {
    if let Some(key) = load_signing_key(dir)? {
        return Ok((key, false));
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let key = write_key_pair(dir, SIGNING_KEY_FILE, SIGNING_PUB_FILE)?;
    Ok((key, true))
}

/// Create the development HA key pair in `dir` if it is missing; true if created.
pub fn ensure_dev_ha_key(dir: &Path) -> Result<bool, KeyError> {
    if dir.join(HA_DEV_KEY_FILE).exists() || dir.join(HA_DEV_PUB_FILE).exists() {
        return Ok(false);
    }
    write_key_pair(dir, HA_DEV_KEY_FILE, HA_DEV_PUB_FILE)?;
    Ok(true)
}

/// Read a public key file (e.g. `signing-key.pub.pem`).
pub fn read_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(io("reading", path))?;
    PublicKey::from_pem(&pem).map_err(|source| KeyError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The server's public signing key in the form the DP-3T apps embed it: standard base64
/// of the PEM text (`-----BEGIN PUBLIC KEY-----` …, an EC P-256 SubjectPublicKeyInfo).
/// The Android SDK decodes it with `SignatureUtil.getPublicKeyFromBase64`; the iOS SDK
/// takes the decoded PEM bytes as its `jwtPublicKey`.
pub fn app_public_key(dir: &Path) -> Result<String, KeyError> {
    let path = dir.join(SIGNING_PUB_FILE);
    let key = read_public_key(&path)?;
    Ok(app_public_key_of(&key)?)
}

/// [`app_public_key`] of a key.
pub fn app_public_key_of(key: &PublicKey) -> Result<String, dp3t_core::Error> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::STANDARD.encode(key.to_pem()?))
}

/// What a development upload token should say.
#[derive(Debug, Clone)]
pub struct DevTokenRequest {
    /// First contagious day (`onset`).
    pub onset: Day,
    /// Mint a fake token (`fake = "1"`).
    pub fake: bool,
    /// Validity in minutes (1..=60; the server refuses more).
    pub ttl_minutes: u64,
    /// Issue time.
    pub now: UnixTime,
}

/// Mint an ES256 upload token with the (development) HA private key `pem`. The `jti` is
/// 16 random bytes in hex. **Development tooling**: a real health authority runs its
/// own token service.
pub fn mint_dev_token(pem: &str, req: &DevTokenRequest) -> Result<String, KeyError> {
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|source| KeyError::Token {
        what: "reading the HA private key",
        source,
    })?;
    let mut jti = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut jti);
    let claims = serde_json::json!({
        "scope": crate::auth::UPLOAD_SCOPE,
        "onset": req.onset.iso(),
        "fake": if req.fake { "1" } else { "0" },
        "jti": hex::encode(jti),
        "iat": req.now.0,
        "exp": req.now.0 + req.ttl_minutes * 60,
    });
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).map_err(|source| {
        KeyError::Token {
            what: "signing the token",
            source,
        }
    })
}

/// `dp3t-backend token`: read `ha-dev-key.pem` from `dir` and mint a token.
pub fn dev_token_from_dir(dir: &Path, req: &DevTokenRequest) -> Result<String, KeyError> {
    let path = dir.join(HA_DEV_KEY_FILE);
    let pem = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|source| {
        KeyError::NoDevKey {
            path: path.clone(),
            dir: dir.to_owned(),
            source,
        }
    })?);
    mint_dev_token(&pem, req)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_four_files_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("dp3t-keygen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = keygen(&dir).unwrap();
        assert_eq!(written.len(), 4);
        let before = std::fs::read(dir.join(SIGNING_KEY_FILE)).unwrap();
        assert!(keygen(&dir).unwrap().is_empty());
        assert_eq!(std::fs::read(dir.join(SIGNING_KEY_FILE)).unwrap(), before);
        let (k, created) = load_or_create_signing_key(&dir).unwrap();
        assert!(!created);
        assert_eq!(
            k.public_key(),
            read_public_key(&dir.join(SIGNING_PUB_FILE)).unwrap()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(HA_DEV_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
