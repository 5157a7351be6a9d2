//! Group commit of uploads.
//!
//! Handlers do not open their own transactions: they hand their upload to the node's
//! writer tasks (one for SQLite, a few for PostgreSQL); a writer takes whatever has queued
//! up (up to [`MAX_BATCH`]) and stores it in a single transaction ([`Db::store_uploads`]). With SQLite, which has one writer, this
//! turns N commits — each rewriting the dozens of index pages that 30 random keys touch —
//! into one; with PostgreSQL it saves a WAL flush per upload. Under light load a batch is
//! a single upload, so nothing waits for company.
//!
//! If a batch fails (a PostgreSQL deadlock with another node, say), each of its uploads is
//! retried in its own transaction, so one bad upload cannot fail the others.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::db::{Db, DbError, DbResult, StoreOutcome, UploadRecord};

/// Most uploads committed together.
pub const MAX_BATCH: usize = 128;
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

async fn run(db: Db, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = rx.lock().await.recv_many(&mut batch, MAX_BATCH).await;
        if received == 0 {
            return;
        }
        let uploads: Vec<UploadRecord> = batch.iter().map(|j| j.upload.clone()).collect();
        match db.store_uploads(&uploads).await {
            Ok(outcomes) if outcomes.len() == batch.len() => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            result => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, uploads = batch.len(), "batch failed; storing uploads one by one");
                }
                for job in batch.drain(..) {
                    let outcome = db
                        .store_uploads(std::slice::from_ref(&job.upload))
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
        let upload = |jti: u8, key: u8| UploadRecord {
            jti_hash: [jti; 32],
            expires_at: 10,
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
                StoreOutcome::Stored { inserted } => {
                    assert_eq!(inserted, 1);
                    stored += 1;
                }
                StoreOutcome::Replayed => replayed += 1,
            }
        }
        assert_eq!((stored, replayed), (100, 100));
        assert_eq!(db.count_keys().await.unwrap(), 100);
        db.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
