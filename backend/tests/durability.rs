//! Every acknowledged upload is published exactly once, even when the server process is
//! killed (`SIGKILL`, no shutdown code runs) while uploads are streaming in (issue 16:
//! group commit and the sorted batch inserts must keep this guarantee).
//!
//! The real binary runs on SQLite in its own process. Concurrent clients upload; the
//! process is killed in the middle; a new process starts on the same data directory and
//! releases. The published batch must hold the keys of every upload that was answered
//! `200`, each once, and nothing but keys that were sent.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;

/// The server process on `data`, killed (`SIGKILL`) when dropped.
struct Server {
    child: std::process::Child,
    addr: String,
}

impl Server {
    fn start(data: &std::path::Path) -> Server {
        let (child, url) = spawn_serve(
            data,
            &[
                ("DP3T_UPLOAD_DELAY_MS", "0"),
                ("DP3T_RELEASE_BUCKET_SECONDS", "2"),
                ("DP3T_EXPORT_MIN_KEYS", "0"),
            ],
        );
        let addr = url.trim_start_matches("http://").to_owned();
        Server { child, addr }
    }

    /// `SIGKILL`: the process ends at once, whatever it was doing.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_uploads_are_published_exactly_once_after_sigkill() {
    let data = std::env::temp_dir().join(format!(
        "dp3t-durability-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&data).unwrap();
    backend::keys::keygen(&data).unwrap();
    let ha_pem = std::fs::read_to_string(data.join("ha-dev-key.pem")).unwrap();
    let public_key = backend::keys::read_public_key(&data.join("signing-key.pub.pem")).unwrap();
    let server = Server::start(&data);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("http://{}/v2/gaen/exposed", server.addr);

    // 32 clients upload 30 keys each, one upload after another, until the server dies.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (client, url, ha_pem, tx) = (client.clone(), url.clone(), ha_pem.clone(), tx.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let token = backend::keys::mint_dev_token(
                    &ha_pem,
                    &backend::keys::DevTokenRequest {
                        onset: dp3t_core::time::Day(today() - 5),
                        fake: false,
                        ttl_minutes: 30,
                        now: now(),
                    },
                )
                .unwrap();
                let keys: Vec<UploadKey> = (0..30).map(|_| key_days_ago(3)).collect();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(upload_body(&padded(&keys)))
                    .send()
                    .await;
                let status = sent.as_ref().map(|r| r.status().as_u16()).ok();
                let _ = tx.send((keys, status));
                if status.is_none() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    // Kill the process once a few hundred uploads are answered: commits are going on.
    let mut outcomes = Vec::new();
    while outcomes.len() < 400 {
        outcomes.push(rx.recv().await.unwrap());
    }
    server.kill();
    while let Some(o) = rx.recv().await {
        outcomes.push(o);
    }
    for c in clients {
        c.await.unwrap();
    }
    let acknowledged: Vec<&Vec<UploadKey>> = outcomes
        .iter()
        .filter(|(_, s)| *s == Some(200))
        .map(|(k, _)| k)
        .collect();
    assert!(
        acknowledged.len() >= 400,
        "{} acknowledged",
        acknowledged.len()
    );
    assert!(
        outcomes.iter().all(|(_, s)| matches!(s, None | Some(200))),
        "every answer before the kill is 200"
    );
    let mut expected = BTreeSet::new();
    for keys in &acknowledged {
        expected.extend(set_of(keys));
    }
    let sent: BTreeSet<[u8; 16]> = outcomes.iter().flat_map(|(k, _)| set_of(k)).collect();

    // A new process on the same files releases what was stored.
    let server = Server::start(&data);
    let url = format!("http://{}/v2/gaen/exposed", server.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let published = loop {
        let resp = client.get(&url).send().await.unwrap();
        assert!(matches!(resp.status().as_u16(), 200 | 204));
        let body = resp.bytes().await.unwrap();
        if !body.is_empty() {
            let batch = dp3t_core::export::read_verified_export(&body, &public_key).unwrap();
            let mut counts: BTreeMap<[u8; 16], usize> = BTreeMap::new();
            for k in &batch.keys {
                *counts.entry(k.key_data).or_default() += 1;
            }
            if expected.iter().all(|k| counts.contains_key(k)) {
                break counts;
            }
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged keys not published within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        published.values().all(|n| *n == 1),
        "a key was published twice"
    );
    assert!(
        published.keys().all(|k| sent.contains(k)),
        "a published key was never sent"
    );
    drop(server);
    std::fs::remove_dir_all(&data).unwrap();
}
