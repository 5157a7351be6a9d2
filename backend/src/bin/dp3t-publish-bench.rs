//! `dp3t-publish-bench`: time (and peak memory) to build and sign the published body of
//! one release bucket of a DP-3T design, with the server's own code
//! ([`backend::designs::build::build_body`]); optionally the whole release path through a
//! SQLite or PostgreSQL database, and the cost of serving a released bucket from memory.
//!
//! ```text
//! dp3t-publish-bench unlinkable --uploads 10000 --entries 480   # 4.8 M filter entries
//! dp3t-publish-bench lowcost --keys 100000
//! dp3t-publish-bench hybrid --seeds 100000
//! dp3t-publish-bench release --uploads 10000 --entries 480 [--database-url URL]
//! ```
//!
//! Entries are random (a seeded ChaCha20 stream), which is what hashed observations and
//! day keys look like. Prints one JSON object per measurement on stdout; the peak resident
//! memory of the process (`VmHWM`) is included, and `bench/designs.sh` runs each mode under
//! `/usr/bin/time -f %M` as well.

use std::time::Instant;

use anyhow::Context;
use backend::db::designs::DesignUploadRow;
use backend::db::Db;
use backend::designs::build::{
    build_body, sign_body, BuildParams, HybridRecord, LowCostRecord, RealEntries,
};
use backend::designs::{Design, DesignPublisher, DesignSettings};
use clap::{Parser, Subcommand};
use dp3t_core::signing::SigningKey;
use dp3t_core::time::UnixTime;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Bucket end used by the benchmark (a 2-hour boundary in 2023).
const RELEASE: u64 = 1_700_006_400;
const RETENTION: u64 = 14 * 86_400;

#[derive(Parser)]
#[command(
    name = "dp3t-publish-bench",
    about = "Build-and-sign benchmark of the DP-3T design buckets"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// Fingerprint bits of unlinkable filters.
    #[arg(long, global = true, default_value_t = 48)]
    fingerprint_bits: u8,
}

#[derive(Subcommand)]
enum Mode {
    /// An unlinkable filter of `uploads * entries` random hashed observations.
    Unlinkable {
        /// Uploads in the bucket.
        #[arg(long, default_value_t = 10_000)]
        uploads: usize,
        /// Real entries per upload (480 = 5 days of 96 epochs).
        #[arg(long, default_value_t = 480)]
        entries: usize,
    },
    /// A low-cost list of `keys` random day keys.
    Lowcost {
        /// Keys in the bucket.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
    },
    /// A hybrid list of `seeds` random 2-hour window seeds.
    Hybrid {
        /// Window seeds in the bucket.
        #[arg(long, default_value_t = 100_000)]
        seeds: usize,
    },
    /// The whole release of one unlinkable bucket through a database: insert the uploads,
    /// then claim, load, build, sign, store and install it, then serve it from memory.
    Release {
        /// Uploads in the bucket.
        #[arg(long, default_value_t = 10_000)]
        uploads: usize,
        /// Real entries per upload.
        #[arg(long, default_value_t = 480)]
        entries: usize,
        /// Database (default: a fresh SQLite file in a temporary directory).
        #[arg(long)]
        database_url: Option<String>,
    },
}

/// Peak resident set size of this process in KiB (`VmHWM`), if the kernel tells.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn params(min: usize, f: u8) -> BuildParams {
    BuildParams {
        min_entries: min,
        fingerprint_bits: f,
        retention_seconds: RETENTION,
        issuer: "dp3t".into(),
    }
}

/// Build and sign `real`, and report.
fn build_and_report(
    design: &str,
    real: RealEntries,
    params: &BuildParams,
    key: &SigningKey,
    rng: &mut ChaCha20Rng,
) -> anyhow::Result<()> {
    let entries = real.len();
    let started = Instant::now();
    let built = build_body(RELEASE, real, params, &Default::default(), key, rng)?;
    let total = started.elapsed();
    // The signature alone (SHA-256 of the body and one ECDSA signature), for the split.
    let started = Instant::now();
    sign_body(&built.body, RELEASE, params, key)?;
    let sign = started.elapsed();
    let out = serde_json::json!({
        "mode": design,
        "entries": entries,
        "build_and_sign_seconds": total.as_secs_f64(),
        "sign_seconds": sign.as_secs_f64(),
        "body_bytes": built.body.len(),
        "bytes_per_entry": built.body.len() as f64 / entries.max(1) as f64,
        "peak_rss_kib": peak_rss_kib(),
    });
    eprintln!(
        "{design}: {entries} entries built and signed in {:.3} s (signature {:.3} s), {} bytes ({:.2} bytes/entry), peak RSS {} KiB",
        total.as_secs_f64(),
        sign.as_secs_f64(),
        built.body.len(),
        built.body.len() as f64 / entries.max(1) as f64,
        peak_rss_kib().unwrap_or(0)
    );
    println!("{out}");
    Ok(())
}

fn random_entries(rng: &mut ChaCha20Rng, n: usize) -> Vec<[u8; 32]> {
    let mut v = vec![[0u8; 32]; n];
    for e in &mut v {
        rng.fill_bytes(e);
    }
    v
}

async fn release(
    uploads: usize,
    entries: usize,
    url: Option<String>,
    f: u8,
    key: SigningKey,
    rng: &mut ChaCha20Rng,
) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("dp3t-publish-bench-{}", std::process::id()));
    let url = match url {
        Some(u) => u,
        None => {
            std::fs::create_dir_all(&tmp)?;
            format!("sqlite://{}", tmp.join("bench.db").display())
        }
    };
    let db = Db::connect(&url, 8).await.context("connecting")?;
    db.migrate().await.context("migrating")?;
    let started = Instant::now();
    for i in 0..uploads {
        let mut jti = [0u8; 32];
        rng.fill_bytes(&mut jti);
        let row = DesignUploadRow {
            design: Design::Unlinkable.name(),
            entries: random_entries(rng, entries).concat(),
            entry_count: entries as u64,
            received_at: RELEASE,
        };
        db.store_design_upload(&jti, RELEASE, Some(&row)).await?;
        if i % 1000 == 999 {
            eprintln!("  {} uploads stored", i + 1);
        }
    }
    let insert = started.elapsed();
    let settings = DesignSettings {
        timing: backend::config::Timing {
            bucket_seconds: 7_200,
            retention_seconds: RETENTION,
            upload_delay: std::time::Duration::ZERO,
        },
        issuer: "dp3t".into(),
        lowcost_min_keys: 0,
        unlinkable_min_entries: 0,
        hybrid_min_seeds: 0,
        fingerprint_bits: f,
    };
    let now = UnixTime(RELEASE + 1);
    let started = Instant::now();
    // Opening releases every ended bucket: claim, load, build, sign, store, install.
    let cache = std::sync::Arc::new(backend::cache::DownloadCache::new(
        backend::cache::DEFAULT_CACHE_BYTES,
    ));
    let metrics = std::sync::Arc::new(backend::metrics::Metrics::default());
    let publisher = DesignPublisher::open(db.clone(), key, settings, metrics, cache, now).await?;
    let release = started.elapsed();
    let bucket = publisher
        .bucket(Design::Unlinkable, RELEASE * 1000, now)
        .await?;
    let lookups = 1_000_000u32;
    let started = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..lookups {
        bytes += publisher
            .bucket(Design::Unlinkable, RELEASE * 1000, now)
            .await?
            .body
            .len();
    }
    let lookup = started.elapsed() / lookups;
    let out = serde_json::json!({
        "mode": "release",
        "database": db.kind(),
        "uploads": uploads,
        "entries": uploads * entries,
        "insert_seconds": insert.as_secs_f64(),
        "release_seconds": release.as_secs_f64(),
        "body_bytes": bucket.body.len(),
        "cached_lookup_ns": lookup.as_nanos(),
        "peak_rss_kib": peak_rss_kib(),
    });
    eprintln!(
        "release on {}: {} uploads inserted in {:.1} s; bucket of {} entries released (claim, load, build, sign, store) in {:.3} s; {} bytes; served from memory in {} ns per lookup ({} bytes)",
        db.kind(),
        uploads,
        insert.as_secs_f64(),
        uploads * entries,
        release.as_secs_f64(),
        bucket.body.len(),
        lookup.as_nanos(),
        bytes / lookups as usize,
    );
    println!("{out}");
    db.close().await;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut rng = ChaCha20Rng::seed_from_u64(2020);
    let key = SigningKey::generate(&mut rng);
    let f = cli.fingerprint_bits;
    match cli.mode {
        Mode::Unlinkable { uploads, entries } => {
            let real = RealEntries::Unlinkable(random_entries(&mut rng, uploads * entries));
            build_and_report("unlinkable", real, &params(0, f), &key, &mut rng)
        }
        Mode::Lowcost { keys } => {
            let last_day = (RELEASE / 86_400) as u32;
            let real = (0..keys)
                .map(|_| {
                    let mut key = [0u8; 32];
                    rng.fill_bytes(&mut key);
                    LowCostRecord {
                        key,
                        day: last_day - rng.gen_range(0..14),
                    }
                })
                .collect();
            build_and_report(
                "lowcost",
                RealEntries::LowCost(real),
                &params(0, f),
                &key,
                &mut rng,
            )
        }
        Mode::Hybrid { seeds } => {
            let real = (0..seeds)
                .map(|_| {
                    let mut seed = [0u8; 16];
                    rng.fill_bytes(&mut seed);
                    HybridRecord {
                        seed,
                        start: RELEASE - 7_200 * rng.gen_range(1..168),
                        minutes: 120,
                    }
                })
                .collect();
            build_and_report(
                "hybrid",
                RealEntries::Hybrid(real),
                &params(0, f),
                &key,
                &mut rng,
            )
        }
        Mode::Release {
            uploads,
            entries,
            database_url,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(release(uploads, entries, database_url, f, key, &mut rng)),
    }
}
