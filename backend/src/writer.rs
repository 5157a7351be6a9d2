//! Group commit of uploads.
//!
//! Handlers do not open their own transactions: they hand their upload to the node's
//! writer tasks (one for SQLite, a few for PostgreSQL); a writer takes whatever has queued
//! up (up to [`MAX_BATCH`]) and stores it in a single transaction ([`Db::store_uploads`]). With SQLite, which has one writer, this
//! turns N commits — each rewriting the dozens of index pages that 30 random keys touch —
//! into one; with PostgreSQL it saves a WAL flush per upload. Under light load a batch is
//! a single upload, so nothing waits for company.
//!
//! Every transaction locks rows in one global order ([`Db::store_uploads`]), so batches do
//! not deadlock one another. A batch that fails for a transient reason (a deadlock with
//! another transaction, a busy SQLite file) is stored again a few times; if it still
//! fails, each of its uploads is stored in its own transaction, so one bad upload cannot
//! fail the others.
//!
//! ## Single-use records that link nothing
//!
//! The writer also owns the tokens' single-use records. A record must stop a second use
//! of a `jti`, and recognise a retry of the same upload (same body) after a lost answer,
//! but it must not let anyone who copies the database — the token issuer included, who
//! knows every `jti` — tell which token an upload came with. So the writer stores
//! ([`single_use_record`]):
//!
//! * HMAC-SHA256 of the `jti` digest and of the body digest under a **secret of the day
//!   the record expires** (`token_keys`, shared by the nodes through the database);
//! * an expiry coarsened to the hour after the token's `exp` plus the leeway.
//!
//! Records are deleted once expired (an expired token is refused anyway), and a day's
//! secret once every record made with it is gone ([`Db::delete_spent_tokens`], every
//! [`CLEANUP_INTERVAL`]); from then on the records that remain in old backups or in the
//! file's free pages cannot be tied to a `jti` by anyone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot, Mutex};
use zeroize::Zeroizing;

use crate::auth::LEEWAY_SECONDS;
use crate::db::{Db, DbError, DbResult, StoreOutcome, UploadRecord};

/// How often expired single-use records and spent day secrets are deleted.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(600);
/// Granularity of the stored expiry of single-use records.
pub const EXPIRY_GRANULARITY_SECONDS: u64 = 3600;

/// The stored form of a single-use record: `(jti HMAC, coarse expiry, body HMAC)` under
/// the day secret `secret` of the coarse expiry's day ([`day_of_record`]).
pub fn single_use_record(
    jti_digest: &[u8; 32],
    expires_at: u64,
    body_digest: &[u8; 32],
    secret: &[u8; 32],
) -> ([u8; 32], u64, [u8; 32]) {
    let mac = |label: &[u8], data: &[u8; 32]| -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        m.update(label);
        m.update(data);
        m.finalize().into_bytes().into()
    };
    (
        mac(b"jti", jti_digest),
        coarse_expiry(expires_at),
        mac(b"body", body_digest),
    )
}

/// `exp` plus the leeway, rounded up to [`EXPIRY_GRANULARITY_SECONDS`].
pub fn coarse_expiry(expires_at: u64) -> u64 {
    let t = expires_at.saturating_add(LEEWAY_SECONDS);
    t.div_ceil(EXPIRY_GRANULARITY_SECONDS)
        .saturating_mul(EXPIRY_GRANULARITY_SECONDS)
}

/// The day whose secret keys the record of a token expiring at `expires_at`.
pub fn day_of_record(expires_at: u64) -> u64 {
    coarse_expiry(expires_at) / 86_400
}

/// Most uploads committed together.
pub const MAX_BATCH: usize = 128;
/// Times a batch failing for a transient reason is stored again before giving up.
const TRANSIENT_RETRIES: u64 = 4;
/// Uploads that may wait for the writer before senders are slowed down.
const QUEUE: usize = 4096;

struct Job {
    upload: UploadRecord,
    reply: oneshot::Sender<DbResult<StoreOutcome>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone, Debug)]
pub struct UploadWriter {
    tx: mpsc::Sender<Job>,
}

impl UploadWriter {
    /// Spawn `writers` writer tasks (at least one) on the current tokio runtime; each
    /// takes the next batch off the shared queue. They end when every handle is dropped.
    /// One writer suits SQLite (one writer connection); a few let PostgreSQL overlap
    /// commits.
    pub fn spawn(db: Db, writers: usize) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            tokio::spawn(run(db.clone(), Arc::clone(&rx)));
        }
        tokio::spawn(cleanup(db, tx.downgrade()));
        UploadWriter { tx }
    }

    /// Store one upload (see [`Db::store_upload`]); resolves when its batch is committed.
    pub async fn store(&self, upload: UploadRecord) -> DbResult<StoreOutcome> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { upload, reply })
            .await
            .map_err(|_| DbError::Build("upload writer stopped".into()))?;
        answer
            .await
            .map_err(|_| DbError::Build("upload writer dropped the upload".into()))?
    }
}

/// Delete spent single-use records every [`CLEANUP_INTERVAL`], while the writer lives.
async fn cleanup(db: Db, alive: mpsc::WeakSender<Job>) {
    loop {
        if alive.upgrade().is_none() {
            return;
        }
        match db.delete_spent_tokens(crate::unix_now().0).await {
            Ok((records, secrets)) if records + secrets > 0 => {
                tracing::info!(records, secrets, "spent single-use records deleted")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "deleting spent single-use records failed"),
        }
        tokio::time::sleep(CLEANUP_INTERVAL).await;
    }
}

/// Day secrets this writer has fetched.
#[derive(Default)]
struct Secrets(HashMap<u64, Zeroizing<[u8; 32]>>);

impl Secrets {
    /// The stored form of `u`: its digests keyed with its day's secret.
    async fn seal(&mut self, db: &Db, u: &UploadRecord) -> DbResult<UploadRecord> {
        let day = day_of_record(u.expires_at);
        if !self.0.contains_key(&day) {
            let candidate = Zeroizing::new(rand::random::<[u8; 32]>());
            let secret = Zeroizing::new(db.token_key(day, &candidate).await?);
            // Days whose records are all deleted need their secret no more.
            let today = crate::unix_now().0 / 86_400;
            self.0.retain(|d, _| *d + 1 >= today);
            self.0.insert(day, secret);
        }
        let secret = self
            .0
            .get(&day)
            .ok_or(DbError::Corrupt("day secret missing"))?;
        let (jti_hash, expires_at, body_digest) =
            single_use_record(&u.jti_hash, u.expires_at, &u.body_digest, secret);
        Ok(UploadRecord {
            jti_hash,
            expires_at,
            body_digest,
            keys: u.keys.clone(),
            design: u.design.clone(),
        })
    }
}

/// [`Db::store_uploads`], run again (up to [`TRANSIENT_RETRIES`] times, after a short
/// random pause) while it fails for a reason that may not recur ([`DbError::is_transient`]:
/// a deadlock with another node's transaction, say).
async fn store_retrying(db: &Db, uploads: &[UploadRecord]) -> DbResult<Vec<StoreOutcome>> {
    let mut attempt = 0;
    loop {
        match db.store_uploads(uploads).await {
            Err(e) if e.is_transient() && attempt < TRANSIENT_RETRIES => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "transient store failure; retrying");
                let pause = rand::random::<u64>() % (20 * attempt) + 1;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn run(db: Db, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut secrets = Secrets::default();
    loop {
        let received = rx.lock().await.recv_many(&mut batch, MAX_BATCH).await;
        if received == 0 {
            return;
        }
        let mut jobs = Vec::with_capacity(batch.len());
        let mut uploads = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            match secrets.seal(&db, &job.upload).await {
                Ok(u) => {
                    uploads.push(u);
                    jobs.push(job);
                }
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        match store_retrying(&db, &uploads).await {
            Ok(outcomes) if outcomes.len() == jobs.len() => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            result => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, uploads = jobs.len(), "batch failed; storing uploads one by one");
                }
                for (job, upload) in jobs.into_iter().zip(&uploads) {
                    let outcome = store_retrying(&db, std::slice::from_ref(upload))
                        .await
                        .and_then(|mut v| v.pop().ok_or(DbError::Corrupt("no outcome")));
                    let _ = job.reply.send(outcome);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::db::NewKey;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_uploads_are_batched_and_replays_detected_within_a_batch() {
        let dir = std::env::temp_dir().join(format!(
            "dp3t-writer-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.join("w.db").display()), 2)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let writer = UploadWriter::spawn(db.clone(), 2);
        // Tokens that expire in the future: the writer's cleanup task, which starts with
        // it, deletes expired records and the day secrets they leave unused, and would race
        // with these inserts for a day in 1970.
        let expires_at = crate::unix_now().0 + 3_600;
        let upload = move |jti: u8, key: u8| UploadRecord {
            jti_hash: [jti; 32],
            expires_at,
            body_digest: [key; 32],
            keys: vec![NewKey {
                key_data: [key; 16],
                rolling_start_number: 1,
                rolling_period: 144,
                transmission_risk_level: 0,
                days_since_onset: 0,
                received_at: 5,
                publish_at: 5,
            }],
            design: None,
        };
        // 100 distinct tokens plus every token a second time, all at once.
        let mut handles = Vec::new();
        for i in 0..200u32 {
            let w = writer.clone();
            let u = upload((i % 100) as u8, (i % 100) as u8);
            handles.push(tokio::spawn(async move { w.store(u).await.unwrap() }));
        }
        let mut stored = 0;
        let mut replayed = 0;
        for h in handles {
            match h.await.unwrap() {
                StoreOutcome::Stored => stored += 1,
                StoreOutcome::Replayed { same_body } => {
                    assert!(same_body);
                    replayed += 1;
                }
            }
        }
        assert_eq!((stored, replayed), (100, 100));
        assert_eq!(db.count_keys().await.unwrap(), 100);
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stored_records_do_not_show_the_jti_or_the_exact_expiry() {
        let secret = [9u8; 32];
        let (jti, exp, body) = single_use_record(&[1; 32], 1_700_000_123, &[2; 32], &secret);
        // Neither digest is stored as it came, nor as a plain hash of it.
        assert_ne!(jti, [1; 32]);
        assert_ne!(body, [2; 32]);
        assert_ne!(jti, body);
        // Another day's secret gives unrelated records.
        let (jti2, _, _) = single_use_record(&[1; 32], 1_700_000_123, &[2; 32], &[8u8; 32]);
        assert_ne!(jti, jti2);
        // The expiry is the hour after exp plus the leeway.
        assert_eq!(exp % EXPIRY_GRANULARITY_SECONDS, 0);
        assert!(exp >= 1_700_000_123 + LEEWAY_SECONDS);
        assert!(exp < 1_700_000_123 + LEEWAY_SECONDS + EXPIRY_GRANULARITY_SECONDS);
        assert_eq!(day_of_record(1_700_000_123), exp / 86_400);
    }
}
