//! No log line, at any level, differs between a real and a fake upload (issue 12 item 9).
//! The whole server's logs are captured at DEBUG while a real upload and then a fake
//! one of the same shape are made; once numbers are masked, the two sets of lines must be
//! the same. (Before, the database driver logged each statement at DEBUG, and only real
//! uploads insert keys.)
//!
//! One test per binary: it installs the process-wide log subscriber.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// The lines captured since the last call, numbers masked, sorted.
    fn take(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        let mut lines: Vec<String> = String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| {
                l.chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .collect()
            })
            .collect();
        lines.sort();
        lines
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_tells_a_real_upload_from_a_fake_one() {
    let capture = Capture::default();
    let writer = capture.clone();
    // DEBUG and above of every crate (where the database driver logged its statements),
    // and TRACE of the server's own; not the test's HTTP client, and not actix's
    // per-poll TRACE lines, whose count depends on how the bytes were chunked.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "debug,backend=trace,hyper_util=off,reqwest=off",
        ))
        .without_time()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    // Long buckets: no release happens while the uploads are logged.
    let h = Harness::start(Backend::Sqlite, |c| c.release_bucket_seconds = 86_400).await;
    // Warm up (the first upload creates the day's single-use secret), then measure.
    assert_eq!(
        h.upload(&h.token(5, true), &padded(&[])).await.status(),
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    capture.take();
    let real = h
        .upload(
            &h.token(5, false),
            &padded(&[key_days_ago(3), key_days_ago(4)]),
        )
        .await;
    assert_eq!(real.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let real_lines = capture.take();
    let fake = h
        .upload(
            &h.token(5, true),
            &padded(&[key_days_ago(3), key_days_ago(4)]),
        )
        .await;
    assert_eq!(fake.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let fake_lines = capture.take();
    assert_eq!(h.key_rows().await, 2, "the real upload was stored");
    assert_eq!(
        real_lines, fake_lines,
        "log lines differ between a real and a fake upload"
    );
    h.finish().await;
}
