//! Benchmark of the download cache bound (issue 11, item 2; BENCHMARKS.md, "Download
//! cache bound"): cache bytes and download rate with `DP3T_DOWNLOAD_CACHE_BYTES` at
//! 64 MiB, on a 14-day data set of 168 two-hour buckets, against the same with the bound
//! at the configuration's maximum (64 GiB, in effect unbounded).
//!
//! `cargo run --release -p backend --example cache_bench` runs each configuration in a
//! child process of its own (so that its peak RSS is its own), on SQLite, and also on
//! PostgreSQL when `TEST_DATABASE_URL` is set (a fresh database, dropped afterwards), and
//! prints one table row per run. One run alone: `cache_bench --run BOUND sqlite|postgres`;
//! `CACHE_BENCH_CLIENTS` sets the number of concurrent clients (4).
//!
//! Each run:
//! 1. seeds a temporary data dir: for each of the 168 bucket ends up to the current one,
//!    [`REAL_KEYS_PER_BUCKET`] real keys (uploads of [`KEYS_PER_UPLOAD`] daily keys of the
//!    1–10 days before arrival) are stored with `Db::store_uploads` and the bucket is
//!    released by the real `Publisher::advance` at that (past) bucket end: padded, zipped
//!    and signed exactly as the server does it;
//! 2. starts the real server (`start_in_thread`, 2 HTTP workers, 127.0.0.1) on it with the
//!    bound under test; the server loads the 168 released buckets;
//! 3. downloads `GET /v2/gaen/exposed?lastKeyBundleTag=…` with 168 distinct tags (one per
//!    bucket end: answers of 1 to 168 buckets), [`ROUNDS`] rounds, each round in a new
//!    random order, from [`CLIENTS`] concurrent clients, sampling the cache's bytes and
//!    the process's `VmRSS` (server and clients share the process);
//! 4. verifies a few answers in full (zip signature, `Signature` header, key count equal
//!    to the stored buckets' key counts).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use backend::cache::DownloadCache;
use backend::config::Config;
use backend::db::{days_since_onset, NewKey, UploadRecord};
use backend::metrics::Metrics;
use backend::publish::{publish_at, PublishSettings, Publisher};
use backend::release::bucket_floor;
use dp3t_core::time::{Day, UnixTime};
use rand::seq::SliceRandom;
use rand::Rng;
use sqlx::Connection as _;

/// Bucket length (the default `DP3T_RELEASE_BUCKET_SECONDS`).
const BUCKET: u64 = 7_200;
/// 14 days of 2-hour buckets.
const BUCKETS: u64 = 168;
/// Real keys stored per bucket (before padding).
const REAL_KEYS_PER_BUCKET: usize = 1_000;
/// Keys per upload: one per day, for the 1–10 days before arrival.
const KEYS_PER_UPLOAD: usize = 10;
/// Concurrent download clients (`CACHE_BENCH_CLIENTS` overrides).
const CLIENTS: usize = 4;
/// Rounds over the 168 distinct tags.
const ROUNDS: usize = 3;
/// The bound under test.
const BOUND: usize = 64 << 20;
/// The largest bound the configuration accepts: in effect none.
const UNBOUNDED: usize = 64 << 30;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--run") {
        let bound: usize = args.get(1).context("--run BOUND DB")?.parse()?;
        let pg = args.get(2).map(String::as_str) == Some("postgres");
        return run(bound, pg);
    }
    let mut dbs = vec!["sqlite"];
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        dbs.push("postgres");
    }
    println!(
        "| database | bound | peak cache bytes | bytes of the 168 answers | largest answer | \
         round 1 downloads/s | rounds 2–{ROUNDS} downloads/s | p50 / p99 ms (rounds 2–{ROUNDS}) | \
         answers built | RSS after start / peak MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for db in dbs {
        for bound in [BOUND, UNBOUNDED] {
            let out = std::process::Command::new(std::env::current_exe()?)
                .args(["--run", &bound.to_string(), db])
                .stderr(std::process::Stdio::inherit())
                .output()?;
            ensure!(out.status.success(), "run {db} {bound} failed");
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
    Ok(())
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A fresh PostgreSQL database next to `TEST_DATABASE_URL`: its URL and its name.
async fn fresh_pg_database(admin: &str) -> Result<(String, String)> {
    let name = format!("dp3t_cache_bench_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let (base, params) = match admin.split_once('?') {
        Some((b, p)) => (b.to_owned(), format!("?{p}")),
        None => (admin.to_owned(), String::new()),
    };
    let prefix = base.rsplit_once('/').context("database URL")?.0;
    Ok((format!("{prefix}/{name}{params}"), name))
}

/// `WITH (FORCE)` is refused while an autovacuum worker is in the database (this role may
/// not signal it); a plain drop stops such workers itself, so it is the fallback.
async fn drop_pg_database(admin: &str, name: &str) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    let forced = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    if sqlx::query(&forced).execute(&mut conn).await.is_err() {
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}

/// Store and release the 168 buckets ending at `last` and before, through the real
/// publisher at past times. Returns the seconds it took.
async fn seed(config: &Config, last: u64) -> Result<f64> {
    let started = Instant::now();
    let db = backend::server::open_database(config).await?;
    let key = backend::keys::load_signing_key(&config.data_dir)?.context("signing key")?;
    let publisher = Publisher::new(
        db.clone(),
        key,
        PublishSettings {
            timing: backend::config::Timing {
                bucket_seconds: BUCKET,
                ..config.timing()
            },
            min_keys: config.export_min_keys,
            region: config.region.clone(),
            key_id: config.signature_key_id.clone(),
            key_version: config.signature_key_version.clone(),
            issuer: config.issuer.clone(),
        },
        Arc::new(Metrics::default()),
        Arc::new(DownloadCache::new(0)),
    );
    let mut rng = rand::thread_rng();
    for i in 0..BUCKETS {
        let end = last - (BUCKETS - 1 - i) * BUCKET;
        let mut uploads = Vec::new();
        for _ in 0..REAL_KEYS_PER_BUCKET / KEYS_PER_UPLOAD {
            // Arrived during the bucket; coarsened to its end as the server stores it.
            let arrival = end - rng.gen_range(1..BUCKET);
            let today = UnixTime(arrival).day().0;
            let onset = Day(today - rng.gen_range(2..=6));
            let keys = (1..=KEYS_PER_UPLOAD as u32)
                .map(|ago| {
                    let rsn = (today - ago) * 144;
                    NewKey {
                        key_data: rng.gen(),
                        rolling_start_number: rsn,
                        rolling_period: 144,
                        transmission_risk_level: 0,
                        days_since_onset: days_since_onset(Day(today - ago), onset),
                        received_at: end,
                        publish_at: publish_at(arrival, BUCKET, rsn, 144),
                    }
                })
                .collect();
            uploads.push(UploadRecord {
                jti_hash: rng.gen(),
                expires_at: end + 3_600,
                body_digest: rng.gen(),
                keys,
                design: None,
            });
        }
        db.store_uploads(&uploads).await?;
        publisher.advance(UnixTime(end)).await?;
        ensure!(
            publisher.released_until() == end,
            "bucket {end} not released"
        );
    }
    db.close().await;
    Ok(started.elapsed().as_secs_f64())
}

fn run(bound: usize, pg: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let data_dir: PathBuf = std::env::temp_dir().join(format!(
        "dp3t-cache-bench-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&data_dir)?;
    backend::keys::keygen(&data_dir)?;
    let mut config = Config {
        data_dir: data_dir.clone(),
        bind: "127.0.0.1:0".into(),
        metrics_bind: "127.0.0.1:0".into(),
        release_bucket_seconds: BUCKET,
        upload_delay_ms: 0,
        workers: Some(2),
        db_max_connections: 8,
        download_cache_bytes: bound,
        ..Config::default()
    };
    let admin = std::env::var("TEST_DATABASE_URL").unwrap_or_default();
    let mut pg_name = None;
    if pg {
        let (url, name) = rt.block_on(fresh_pg_database(&admin))?;
        config.database_url = Some(url);
        pg_name = Some(name);
    }
    let result = (|| {
        let last = bucket_floor(backend::unix_now().0, BUCKET);
        let seconds = rt.block_on(seed(&config, last))?;
        eprintln!("seeded {BUCKETS} buckets x {REAL_KEYS_PER_BUCKET} real keys in {seconds:.1} s");
        let server = backend::server::start_in_thread(config.clone())?;
        let out = rt.block_on(bench(&server, last, bound, pg, data_dir.clone()));
        server.stop();
        out
    })();
    if let Some(name) = pg_name {
        rt.block_on(drop_pg_database(&admin, &name))?;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

/// What the clients and the sampler record.
#[derive(Default)]
struct Record {
    peak_cache: AtomicUsize,
    peak_rss_kib: AtomicU64,
    served: AtomicU64,
    largest: AtomicUsize,
    latencies_us: Mutex<Vec<u64>>,
}

fn answers_built(state: &backend::api::AppState) -> u64 {
    state
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("dp3t_export_responses_built_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn bench(
    server: &backend::server::RunningServer,
    last: u64,
    bound: usize,
    pg: bool,
    server_data_dir: PathBuf,
) -> Result<()> {
    let state = server.state.clone();
    let r = state.publisher.released_until();
    if r != last {
        // A bucket end passed between seeding and start: the newest bucket is padding only.
        eprintln!("note: released_until {r} != seeded {last} (a bucket end passed)");
    }
    let cache = Arc::clone(state.publisher.cache());
    ensure!(cache.capacity() == bound, "bound {}", cache.capacity());
    let url = server.url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let clients_n: usize = std::env::var("CACHE_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CLIENTS);
    // One tag per bucket end: the answer for `r - n * BUCKET` holds the last n buckets.
    let tags: Vec<u64> = (1..=BUCKETS).map(|n| (r - n * BUCKET) * 1000).collect();
    let rss_start = rss_kib().0;
    let record = Arc::new(Record::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (record, stop, cache) = (Arc::clone(&record), Arc::clone(&stop), Arc::clone(&cache));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                record
                    .peak_cache
                    .fetch_max(cache.bytes(), Ordering::Relaxed);
                record
                    .peak_rss_kib
                    .fetch_max(rss_kib().0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let built_before = answers_built(&state);
    let mut rates = Vec::new();
    let mut answer_sizes = vec![0usize; tags.len()];
    for round in 0..ROUNDS {
        let mut order: Vec<usize> = (0..tags.len()).collect();
        order.shuffle(&mut rand::thread_rng());
        let order = Arc::new(order);
        let next = Arc::new(AtomicUsize::new(0));
        if round == 1 {
            record
                .latencies_us
                .lock()
                .map_err(|_| anyhow::anyhow!("lock"))?
                .clear();
        }
        let started = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..clients_n {
            let (order, next, record, cache) = (
                Arc::clone(&order),
                Arc::clone(&next),
                Arc::clone(&record),
                Arc::clone(&cache),
            );
            let (client, url, tags) = (client.clone(), url.clone(), tags.clone());
            clients.push(tokio::spawn(async move {
                let mut sizes = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&t) = order.get(i) else { break };
                    let sent = Instant::now();
                    let resp = client
                        .get(format!(
                            "{url}/v2/gaen/exposed?lastKeyBundleTag={}",
                            tags[t]
                        ))
                        .send()
                        .await?;
                    ensure!(resp.status() == 200, "tag {}: {}", tags[t], resp.status());
                    let len = resp.bytes().await?.len();
                    let us = sent.elapsed().as_micros() as u64;
                    record
                        .peak_cache
                        .fetch_max(cache.bytes(), Ordering::Relaxed);
                    record.served.fetch_add(len as u64, Ordering::Relaxed);
                    record.largest.fetch_max(len, Ordering::Relaxed);
                    record
                        .latencies_us
                        .lock()
                        .map_err(|_| anyhow::anyhow!("lock"))?
                        .push(us);
                    sizes.push((t, len));
                }
                Ok(sizes)
            }));
        }
        for c in clients {
            for (t, len) in c.await?? {
                answer_sizes[t] = len;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        rates.push(tags.len() as f64 / secs);
        eprintln!(
            "bound {bound}: round {} {:.1} downloads/s, cache {} B, VmRSS {:.0} MiB",
            round + 1,
            tags.len() as f64 / secs,
            cache.bytes(),
            mib(rss_kib().0)
        );
    }
    let built = answers_built(&state) - built_before;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    if state.publisher.released_until() != r {
        eprintln!("note: a bucket was released during the downloads (the cache was dropped)");
    }
    verify(&state, &client, &url, r, &tags, &server_data_dir).await?;

    let mut lat = record
        .latencies_us
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .clone();
    lat.sort_unstable();
    let pct = |p: usize| {
        lat.get((lat.len() * p / 100).min(lat.len() - 1))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let warm = rates[1..].iter().sum::<f64>() / (rates.len() - 1) as f64;
    let (_, hwm) = rss_kib();
    let bound_text = if bound == UNBOUNDED {
        "64 GiB (none)".to_owned()
    } else {
        format!("{} ({} MiB)", group(bound as u64), bound >> 20)
    };
    println!(
        "| {} | {bound_text} | {} | {} | {} B | {:.1} | {:.1} | {:.0} / {:.0} | {built} of {} | {:.0} / {:.0} |",
        if pg { "PostgreSQL" } else { "SQLite" },
        group(record.peak_cache.load(Ordering::Relaxed) as u64),
        group(answer_sizes.iter().map(|&s| s as u64).sum()),
        group(record.largest.load(Ordering::Relaxed) as u64),
        rates[0],
        warm,
        pct(50),
        pct(99),
        ROUNDS * tags.len(),
        mib(rss_start),
        mib(hwm.max(record.peak_rss_kib.load(Ordering::Relaxed))),
    );
    Ok(())
}

/// Verify the answers of 1, 24, 48, … 168 buckets in full: the zip's signature, the
/// `Signature` header for release `r`, and as many keys as the stored buckets hold.
async fn verify(
    state: &backend::api::AppState,
    client: &reqwest::Client,
    url: &str,
    r: u64,
    tags: &[u64],
    data_dir: &std::path::Path,
) -> Result<()> {
    let public = backend::keys::read_public_key(&data_dir.join("signing-key.pub.pem"))?;
    let stored = state.db.buckets_between(0, r).await?;
    for n in [1usize, 24, 48, 72, 96, 120, 144, 168] {
        let tag = tags[n - 1];
        let resp = client
            .get(format!("{url}/v2/gaen/exposed?lastKeyBundleTag={tag}"))
            .send()
            .await?;
        ensure!(resp.status() == 200);
        let header = |name: &str| -> Result<String> {
            Ok(resp
                .headers()
                .get(name)
                .context("header")?
                .to_str()?
                .to_owned())
        };
        let signature = header("signature")?;
        ensure!(header("x-key-bundle-tag")? == (r * 1000).to_string());
        let body = resp.bytes().await?;
        let claims =
            dp3t_core::signing::verify_response(&body, &signature, &public, backend::unix_now())?;
        ensure!(claims.batch_release_time_ms == Some(r * 1000));
        let batch = dp3t_core::export::read_verified_export(&body, &public)?;
        let expected: u64 = stored
            .iter()
            .filter(|b| b.end > tag / 1000)
            .map(|b| b.total_keys)
            .sum();
        if batch.keys.len() as u64 != expected {
            bail!("{n} buckets: {} keys, stored {expected}", batch.keys.len());
        }
    }
    eprintln!("verified 8 answers (1 to 168 buckets): signatures and key counts");
    Ok(())
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
