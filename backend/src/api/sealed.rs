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
//! **Keys.** The server's X25519 key pairs live in the database (`sealed_keys`, see
//! [`crate::db::sealed`]), so every node of a deployment publishes and opens with the same
//! keys. Each has its key id (SHA-256 of the public key, first 8 bytes) and an expiry. A
//! key is published for [`KEY_LIFETIME_SECONDS`]; a new one is made
//! [`ROTATION_OVERLAP_SECONDS`] before the current one expires (by whichever node finds it
//! due, one node at a time), so two are published during the overlap and phones move to
//! the newer one when they next fetch the list. A key still opens envelopes for
//! [`OPEN_GRACE_SECONDS`] after its expiry (a phone may seal just before and send late),
//! and is then deleted. A node reloads the keys at most every [`REFRESH_SECONDS`] when
//! the list is asked for, and at once (at most every [`RELOAD_ON_UNKNOWN_SECONDS`]) when an
//! envelope names a key id it does not hold: another node made it. A key file of an
//! earlier version (`<data_dir>/sealed-keys.json`) is imported once and then removed.
//! `GET /v2/sealed/key` lists the unexpired keys, newest first, signed with the response
//! signing key in a `Signature` header like every download.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::db::sealed::SealedKeyRow;
use crate::db::Db;
use crate::unix_now;

/// File of the HPKE key pairs in the data directory.
pub const SEALED_KEYS_FILE: &str = "sealed-keys.json";
/// How long phones may seal to a key: 30 days.
pub const KEY_LIFETIME_SECONDS: u64 = 30 * 86_400;
/// How long before a key's expiry its successor is made and published: 7 days.
pub const ROTATION_OVERLAP_SECONDS: u64 = 7 * 86_400;
/// How long after its expiry a key still opens envelopes: 1 day.
pub const OPEN_GRACE_SECONDS: u64 = 86_400;
/// A node reloads the keys from the database at most this often when the list is asked.
pub const REFRESH_SECONDS: u64 = 60;
/// ... and at most this often when an envelope names a key id it does not hold.
pub const RELOAD_ON_UNKNOWN_SECONDS: u64 = 5;

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
    /// Reading or rotating the keys in the database failed.
    #[error("sealed-upload keys: {0}")]
    Db(#[from] crate::db::DbError),
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

/// The server's HPKE key pairs, newest first, as last loaded from the database.
pub struct SealedKeys {
    db: Db,
    rotation: Rotation,
    keys: RwLock<Vec<OpeningKey>>,
    /// Unix seconds of the last load.
    loaded_at: AtomicU64,
    /// Unix seconds of the last load caused by an envelope that did not open.
    reloaded_for_unknown_at: AtomicU64,
}

impl std::fmt::Debug for SealedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKeys")
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

fn to_row(k: &OpeningKey) -> SealedKeyRow {
    SealedKeyRow {
        key_id: k.sealing_key().key_id.to_vec(),
        secret: k.secret_bytes(),
        expires_at: k.sealing_key().expires_at.0,
    }
}

/// The keys of an earlier version's key file in `data_dir`, if there is one.
fn read_legacy_file(path: &Path) -> Result<Vec<OpeningKey>, SealedKeysError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("reading", path)(e)),
    };
    let stored: StoredKeys =
        serde_json::from_slice(&bytes).map_err(|e| SealedKeysError::Format {
            path: path.to_path_buf(),
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
                    path: path.to_path_buf(),
                    detail: "a secret is not base64 of 32 bytes".into(),
                })?;
            Ok(OpeningKey::from_secret_bytes(
                secret,
                UnixTime(k.expires_at),
            ))
        })
        .collect()
}

impl SealedKeys {
    /// Load the key pairs from `db` (importing, then removing, a key file of an earlier
    /// version in `data_dir`), erase those past their grace, and make a new one if none
    /// is current at `now`.
    pub async fn open(
        db: Db,
        data_dir: &Path,
        rotation: Rotation,
        now: UnixTime,
    ) -> Result<Self, SealedKeysError> {
        let store = SealedKeys {
            db,
            rotation,
            keys: RwLock::new(Vec::new()),
            loaded_at: AtomicU64::new(0),
            reloaded_for_unknown_at: AtomicU64::new(0),
        };
        let legacy = data_dir.join(SEALED_KEYS_FILE);
        let import: Vec<SealedKeyRow> = read_legacy_file(&legacy)?.iter().map(to_row).collect();
        store.load(now, &import).await?;
        if !import.is_empty() {
            std::fs::remove_file(&legacy).map_err(io_error("removing", &legacy))?;
            tracing::info!(
                keys = import.len(),
                "imported the sealed-upload key file into the database"
            );
        }
        Ok(store)
    }

    /// Rotate in the database (erase keys past their grace; make a new key when none has
    /// more than the overlap left) and load what is there.
    async fn load(&self, now: UnixTime, import: &[SealedKeyRow]) -> Result<(), SealedKeysError> {
        let candidate =
            OpeningKey::generate(now.plus(self.rotation.lifetime), &mut rand::rngs::OsRng);
        let rows = self
            .db
            .rotate_sealed_keys(
                now.0.saturating_sub(self.rotation.grace),
                now.0.saturating_add(self.rotation.overlap),
                &to_row(&candidate),
                import,
            )
            .await?;
        if rows
            .iter()
            .any(|r| r.key_id == candidate.sealing_key().key_id)
        {
            tracing::info!(
                key_id = %hex::encode(candidate.sealing_key().key_id),
                expires_at = candidate.sealing_key().expires_at.0,
                "made a new sealed-upload key"
            );
        }
        let keys: Vec<OpeningKey> = rows
            .iter()
            .map(|r| OpeningKey::from_secret_bytes(*r.secret, UnixTime(r.expires_at)))
            .collect();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        self.loaded_at.store(now.0, Ordering::Relaxed);
        Ok(())
    }

    /// [`SealedKeys::load`] if the last load is `min_age` seconds old or more.
    async fn load_if_older(&self, now: UnixTime, min_age: u64) -> Result<(), SealedKeysError> {
        if now.0
            >= self
                .loaded_at
                .load(Ordering::Relaxed)
                .saturating_add(min_age)
        {
            self.load(now, &[]).await?;
        }
        Ok(())
    }

    /// Rotate and reload now (the list endpoint does it at most every
    /// [`REFRESH_SECONDS`]; tests and operators' tools call this).
    pub async fn rotate(&self, now: UnixTime) -> Result<(), SealedKeysError> {
        self.load(now, &[]).await
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<OpeningKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys phones may seal to at `now`, newest first.
    pub fn published(&self, now: UnixTime) -> Vec<SealingKey> {
        self.read()
            .iter()
            .map(|k| k.sealing_key().clone())
            .filter(|k| k.expires_at > now)
            .collect()
    }

    /// Open `envelope` with a key that is within its grace at `now`. An envelope that
    /// does not open with the keys held makes the node reload them (at most every
    /// [`RELOAD_ON_UNKNOWN_SECONDS`]: another node may have made a new key) and try again.
    pub async fn open_envelope(
        &self,
        envelope: &[u8],
        now: UnixTime,
    ) -> Result<OpenedUpload, dp3t_core::Error> {
        match self.open_with_held(envelope, now) {
            Ok(opened) => Ok(opened),
            Err(e) => {
                let last = self.reloaded_for_unknown_at.load(Ordering::Relaxed);
                if now.0 < last.saturating_add(RELOAD_ON_UNKNOWN_SECONDS)
                    || self
                        .reloaded_for_unknown_at
                        .compare_exchange(last, now.0, Ordering::Relaxed, Ordering::Relaxed)
                        .is_err()
                {
                    return Err(e);
                }
                if let Err(load) = self.load(now, &[]).await {
                    tracing::error!(error = %load, "reloading the sealed-upload keys failed");
                    return Err(e);
                }
                self.open_with_held(envelope, now)
            }
        }
    }

    fn open_with_held(
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
        .await
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
    if let Err(e) = state.sealed.load_if_older(now, REFRESH_SECONDS).await {
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

    async fn db(d: &Path) -> Db {
        let url = format!("sqlite://{}?mode=rwc", d.join("dp3t.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        db.migrate().await.unwrap();
        db
    }

    fn sealed_to(key: &SealingKey) -> Vec<u8> {
        let n = padded_len(Scheme::LowCost, WindowMinutes::DEFAULT);
        dp3t_core::sealed::seal_upload(
            key,
            SealedRoute::LowCost,
            "t",
            b"{}",
            n,
            &mut rand::rngs::OsRng,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn keys_rotate_with_an_overlap_and_are_erased_after_their_grace() {
        let d = dir();
        let rot = Rotation {
            lifetime: 100,
            overlap: 20,
            grace: 10,
        };
        let t0 = UnixTime(1_000);
        let store = SealedKeys::open(db(&d).await, &d, rot, t0).await.unwrap();
        let first = store.published(t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].expires_at, UnixTime(1_100));
        // A second node on the same database has the same key.
        let other = SealedKeys::open(db(&d).await, &d, rot, UnixTime(1_050))
            .await
            .unwrap();
        assert_eq!(other.published(UnixTime(1_050)), first);
        // Within the overlap: a second key, published first; both open.
        store.rotate(UnixTime(1_085)).await.unwrap();
        let both = store.published(UnixTime(1_085));
        assert_eq!(both.len(), 2);
        assert_eq!(both[1], first[0]);
        assert_eq!(both[0].expires_at, UnixTime(1_185));
        // The other node opens an envelope sealed to the new key (it reloads on an
        // unknown key id), and does not make a key of its own.
        let to_new = sealed_to(&both[0]);
        assert!(other.open_envelope(&to_new, UnixTime(1_086)).await.is_ok());
        assert_eq!(other.published(UnixTime(1_086)), both);
        other.rotate(UnixTime(1_087)).await.unwrap();
        assert_eq!(other.published(UnixTime(1_087)), both);
        // After the old key's expiry it is no longer published but still opens...
        assert_eq!(store.published(UnixTime(1_100)), vec![both[0].clone()]);
        let env = sealed_to(&first[0]);
        assert!(store.open_envelope(&env, UnixTime(1_105)).await.is_ok());
        // ... until its grace ends; then it is deleted from the database too.
        assert!(store.open_envelope(&env, UnixTime(1_110)).await.is_err());
        store.rotate(UnixTime(1_110)).await.unwrap();
        let reloaded = SealedKeys::open(db(&d).await, &d, rot, UnixTime(1_110))
            .await
            .unwrap();
        assert_eq!(reloaded.published(UnixTime(1_110)), vec![both[0].clone()]);
        assert!(reloaded.open_envelope(&env, UnixTime(1_105)).await.is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_key_file_of_an_earlier_version_is_imported_and_removed() {
        let d = dir();
        let old = OpeningKey::generate(UnixTime(5_000), &mut rand::rngs::OsRng);
        let file = StoredKeys {
            keys: vec![StoredKey {
                secret: base64::engine::general_purpose::STANDARD
                    .encode(old.secret_bytes().as_ref()),
                expires_at: 5_000,
            }],
        };
        std::fs::write(d.join(SEALED_KEYS_FILE), serde_json::to_vec(&file).unwrap()).unwrap();
        let store = SealedKeys::open(db(&d).await, &d, Rotation::default(), UnixTime(1_000))
            .await
            .unwrap();
        assert!(
            !d.join(SEALED_KEYS_FILE).exists(),
            "the file is removed once imported"
        );
        // Envelopes sealed to the old key still open; a fresh key is published too.
        let env = sealed_to(old.sealing_key());
        assert!(store.open_envelope(&env, UnixTime(1_001)).await.is_ok());
        assert!(store.published(UnixTime(1_001)).contains(old.sealing_key()));
        // A file that is not a key file is refused, and left alone.
        std::fs::write(d.join(SEALED_KEYS_FILE), b"{").unwrap();
        let e = SealedKeys::open(db(&d).await, &d, Rotation::default(), UnixTime(1_000)).await;
        assert!(matches!(e, Err(SealedKeysError::Format { .. })), "{e:?}");
        assert!(d.join(SEALED_KEYS_FILE).exists());
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
