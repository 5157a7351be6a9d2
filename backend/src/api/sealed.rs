//! Sealed uploads (PROTOCOL.md §16): `POST /v2/sealed` and `GET /v2/sealed/key`.
//!
//! A sealed upload is the whole upload — which API, the bearer token and the body —
//! encrypted to this server with HPKE ([`dp3t_core::sealed`]), so that a TLS terminator,
//! CDN or WAF in front of the server sees an opaque envelope of one size per scheme.
//! The endpoint reads the envelope (bounded, within the request deadline), opens it,
//! verifies the inner token for the inner route and hands the inner body to the same
//! pipeline as a plain upload ([`super::upload::process`]); the answer leaves after the
//! same delay with the same padded size as every other upload answer
//! ([`super::upload::answer_after`]). An envelope that does not open — unknown key id,
//! tampered, truncated, wrong version — is a refusal like any other, answered the same way.
//!
//! **Keys.** The server's X25519 key pairs live in `<data_dir>/sealed-keys.json`
//! (owner-only, written atomically), each with its key id (SHA-256 of the public key,
//! first 8 bytes) and an expiry. A key is published for [`KEY_LIFETIME_SECONDS`]; a new
//! one is made [`ROTATION_OVERLAP_SECONDS`] before the current one expires, so two are
//! published during the overlap and phones move to the newer one when they next fetch
//! the list. A key still opens envelopes for [`OPEN_GRACE_SECONDS`] after its expiry (a
//! phone may seal just before and send late), and is then erased from the file.
//! `GET /v2/sealed/key` lists the unexpired keys, newest first, signed with the response
//! signing key in a `Signature` header like every download.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use dp3t_core::engine::Scheme;
use dp3t_core::hybrid::WindowMinutes;
use dp3t_core::sealed::{
    envelope_len, key_list_json, open_upload, padded_len, OpenedUpload, OpeningKey, SealedRoute,
    SealingKey,
};
use dp3t_core::time::UnixTime;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::upload::{self, UploadRoute};
use super::{routes, ApiError, AppState, ErrorCode};
use crate::unix_now;

/// File of the HPKE key pairs in the data directory.
pub const SEALED_KEYS_FILE: &str = "sealed-keys.json";
/// How long phones may seal to a key: 30 days.
pub const KEY_LIFETIME_SECONDS: u64 = 30 * 86_400;
/// How long before a key's expiry its successor is made and published: 7 days.
pub const ROTATION_OVERLAP_SECONDS: u64 = 7 * 86_400;
/// How long after its expiry a key still opens envelopes: 1 day.
pub const OPEN_GRACE_SECONDS: u64 = 86_400;

/// The largest envelope of any scheme (unlinkable, or hybrid with 15-minute windows):
/// the body limit of `POST /v2/sealed`.
pub fn max_envelope_len() -> usize {
    let w15 = WindowMinutes::new(15).unwrap_or_default();
    [
        padded_len(Scheme::Gaen, w15),
        padded_len(Scheme::LowCost, w15),
        padded_len(Scheme::Unlinkable, w15),
        padded_len(Scheme::Hybrid, w15),
    ]
    .into_iter()
    .max()
    .map_or(0, envelope_len)
}

/// Why the key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SealedKeysError {
    /// Reading, writing or replacing the file (or its temporary copy) failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a key file of this server.
    #[error("{path}: {detail}")]
    Format {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SealedKeysError {
    let path = path.to_path_buf();
    move |source| SealedKeysError::Io { what, path, source }
}

/// When keys are made, published, kept and erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Seconds phones may seal to a new key.
    pub lifetime: u64,
    /// Seconds before expiry that the next key is made.
    pub overlap: u64,
    /// Seconds after expiry that a key still opens envelopes.
    pub grace: u64,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            lifetime: KEY_LIFETIME_SECONDS,
            overlap: ROTATION_OVERLAP_SECONDS,
            grace: OPEN_GRACE_SECONDS,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    /// The X25519 secret, base64.
    secret: String,
    /// Unix seconds.
    expires_at: u64,
}

#[derive(Serialize, Deserialize, Default)]
struct StoredKeys {
    keys: Vec<StoredKey>,
}

/// The server's HPKE key pairs, newest first, kept in the data directory.
pub struct SealedKeys {
    path: PathBuf,
    rotation: Rotation,
    keys: RwLock<Vec<OpeningKey>>,
}

impl std::fmt::Debug for SealedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKeys")
            .field("path", &self.path)
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

impl SealedKeys {
    /// Load the key pairs of `data_dir` (if any), erase those past their grace, and make
    /// a new one if none is current at `now` (writing the file back when anything
    /// changed).
    pub fn open(
        data_dir: &Path,
        rotation: Rotation,
        now: UnixTime,
    ) -> Result<Self, SealedKeysError> {
        let path = data_dir.join(SEALED_KEYS_FILE);
        let keys = match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let stored: StoredKeys =
                    serde_json::from_slice(&bytes).map_err(|e| SealedKeysError::Format {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?;
                stored
                    .keys
                    .iter()
                    .map(|k| {
                        let secret: [u8; 32] = base64::engine::general_purpose::STANDARD
                            .decode(&k.secret)
                            .ok()
                            .and_then(|v| v.try_into().ok())
                            .ok_or_else(|| SealedKeysError::Format {
                                path: path.clone(),
                                detail: "a secret is not base64 of 32 bytes".into(),
                            })?;
                        Ok(OpeningKey::from_secret_bytes(
                            secret,
                            UnixTime(k.expires_at),
                        ))
                    })
                    .collect::<Result<Vec<_>, SealedKeysError>>()?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error("reading", &path)(e)),
        };
        let store = SealedKeys {
            path,
            rotation,
            keys: RwLock::new(keys),
        };
        store.rotate(now)?;
        Ok(store)
    }

    /// Erase keys past their grace and make a new key when the newest one has less than
    /// the overlap left; write the file if anything changed. Cheap when nothing is due.
    pub fn rotate(&self, now: UnixTime) -> Result<(), SealedKeysError> {
        let due = |keys: &[OpeningKey]| {
            let stale = keys.iter().any(|k| {
                k.sealing_key()
                    .expires_at
                    .0
                    .saturating_add(self.rotation.grace)
                    <= now.0
            });
            let fresh = keys.iter().any(|k| {
                k.sealing_key().expires_at.0 > now.0.saturating_add(self.rotation.overlap)
            });
            stale || !fresh
        };
        if !due(&self.read()) {
            return Ok(());
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if !due(&keys) {
            return Ok(());
        }
        let mut next = keys.clone();
        next.retain(|k| {
            k.sealing_key()
                .expires_at
                .0
                .saturating_add(self.rotation.grace)
                > now.0
        });
        if !next
            .iter()
            .any(|k| k.sealing_key().expires_at.0 > now.0.saturating_add(self.rotation.overlap))
        {
            let key =
                OpeningKey::generate(now.plus(self.rotation.lifetime), &mut rand::rngs::OsRng);
            tracing::info!(
                key_id = %hex::encode(key.sealing_key().key_id),
                expires_at = key.sealing_key().expires_at.0,
                "made a new sealed-upload key"
            );
            next.push(key);
        }
        next.sort_by_key(|k| std::cmp::Reverse(k.sealing_key().expires_at));
        self.write_file(&next)?;
        *keys = next;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<OpeningKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write `keys` to a temporary owner-only file and rename it over the old one.
    fn write_file(&self, keys: &[OpeningKey]) -> Result<(), SealedKeysError> {
        let stored = StoredKeys {
            keys: keys
                .iter()
                .map(|k| StoredKey {
                    secret: base64::engine::general_purpose::STANDARD
                        .encode(k.secret_bytes().as_ref()),
                    expires_at: k.sealing_key().expires_at.0,
                })
                .collect(),
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&stored).map_err(|e| {
            SealedKeysError::Format {
                path: self.path.clone(),
                detail: e.to_string(),
            }
        })?);
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io_error("creating", &tmp))?;
        std::io::Write::write_all(&mut f, &json)
            .and_then(|()| f.sync_all())
            .map_err(io_error("writing", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io_error("replacing", &self.path))?;
        Ok(())
    }

    /// The keys phones may seal to at `now`, newest first.
    pub fn published(&self, now: UnixTime) -> Vec<SealingKey> {
        self.read()
            .iter()
            .map(|k| k.sealing_key().clone())
            .filter(|k| k.expires_at > now)
            .collect()
    }

    /// Open `envelope` with a key that is within its grace at `now`.
    pub fn open_envelope(
        &self,
        envelope: &[u8],
        now: UnixTime,
    ) -> Result<OpenedUpload, dp3t_core::Error> {
        let keys = self.read();
        let live: Vec<OpeningKey> = keys
            .iter()
            .filter(|k| {
                k.sealing_key()
                    .expires_at
                    .0
                    .saturating_add(self.rotation.grace)
                    > now.0
            })
            .cloned()
            .collect();
        drop(keys);
        open_upload(&live, envelope)
    }
}

/// The plain upload route a sealed one is for.
fn route_of(r: SealedRoute) -> &'static UploadRoute {
    match r {
        SealedRoute::GaenV2 => &routes::GAEN_V2,
        SealedRoute::GaenV1 => &routes::GAEN_V1,
        SealedRoute::GaenV1NextDay => &routes::GAEN_V1_NEXT_DAY,
        SealedRoute::LowCost => &routes::LOW_COST,
        SealedRoute::Unlinkable => &routes::UNLINKABLE,
        SealedRoute::Hybrid => &routes::HYBRID,
    }
}

/// Read, open, authorize and process one sealed upload.
async fn run(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
    deadline: Instant,
) -> Result<Option<String>, ApiError> {
    let envelope = upload::read_body(req, &mut payload, max_envelope_len(), deadline).await?;
    let now = unix_now();
    let opened = state
        .sealed
        .open_envelope(&envelope, now)
        .map_err(|e| ApiError::bad_request(ErrorCode::SealedEnvelope, e.to_string()))?;
    let route = route_of(opened.route);
    let grant = upload::authorize(&opened.token, route.token, state, now)?;
    upload::process(route, &grant, &opened.body, now, state).await
}

/// `POST /v2/sealed`: one sealed upload, for any scheme.
pub async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let st: &AppState = &state;
    upload::guarded(st, |deadline| run(&req, payload, st, deadline)).await
}

/// `GET /v2/sealed/key`: the keys to seal to, newest first, signed (`Signature`).
pub async fn keys(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let now = unix_now();
    if let Err(e) = state.sealed.rotate(now) {
        // The keys already held still serve; the rotation is retried on the next request.
        tracing::error!(error = %e, "rotating the sealed-upload keys failed");
    }
    let body = key_list_json(&state.sealed.published(now));
    let internal =
        |m: &str| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, m);
    let signature = state
        .publisher
        .sign_body(body.as_bytes())
        .map_err(|_| internal("signing the key list failed"))?;
    let signature =
        HeaderValue::from_str(&signature).map_err(|_| internal("bad signature header"))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header(("signature", signature))
        .content_type("application/json")
        .body(body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dp3t-sealed-keys-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn keys_rotate_with_an_overlap_and_are_erased_after_their_grace() {
        let d = dir();
        let rot = Rotation {
            lifetime: 100,
            overlap: 20,
            grace: 10,
        };
        let t0 = UnixTime(1_000);
        let store = SealedKeys::open(&d, rot, t0).unwrap();
        let first = store.published(t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].expires_at, UnixTime(1_100));
        // Loading again keeps the same key.
        let again = SealedKeys::open(&d, rot, UnixTime(1_050)).unwrap();
        assert_eq!(again.published(UnixTime(1_050)), first);
        // Within the overlap: a second key, published first; both open.
        store.rotate(UnixTime(1_085)).unwrap();
        let both = store.published(UnixTime(1_085));
        assert_eq!(both.len(), 2);
        assert_eq!(both[1], first[0]);
        assert_eq!(both[0].expires_at, UnixTime(1_185));
        // After the old key's expiry it is no longer published but still opens...
        assert_eq!(store.published(UnixTime(1_100)), vec![both[0].clone()]);
        let mut rng = rand::rngs::OsRng;
        let n = padded_len(Scheme::LowCost, WindowMinutes::DEFAULT);
        let env = dp3t_core::sealed::seal_upload(
            &first[0],
            SealedRoute::LowCost,
            "t",
            b"{}",
            n,
            &mut rng,
        )
        .unwrap();
        assert!(store.open_envelope(&env, UnixTime(1_105)).is_ok());
        // ... until its grace ends; then it is erased from the file too.
        assert!(store.open_envelope(&env, UnixTime(1_110)).is_err());
        store.rotate(UnixTime(1_110)).unwrap();
        let reloaded = SealedKeys::open(&d, rot, UnixTime(1_110)).unwrap();
        assert_eq!(reloaded.published(UnixTime(1_110)), vec![both[0].clone()]);
        assert!(reloaded.open_envelope(&env, UnixTime(1_105)).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.join(SEALED_KEYS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_body_limit_fits_every_scheme() {
        let w15 = WindowMinutes::new(15).unwrap();
        for s in [
            Scheme::Gaen,
            Scheme::LowCost,
            Scheme::Unlinkable,
            Scheme::Hybrid,
        ] {
            assert!(envelope_len(padded_len(s, w15)) <= max_envelope_len());
            assert!(envelope_len(padded_len(s, WindowMinutes::DEFAULT)) <= max_envelope_len());
        }
    }
}
