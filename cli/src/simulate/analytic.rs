//! Bandwidth only, at national scale: `infections` new infections a day, each uploading
//! 14 days of keys, published in 12 two-hour buckets. The daily download is measured: all
//! 12 buckets of a day are built at full size by the simulator's server (the core's
//! encoders and signer) and their bodies and HTTP heads added up. Batches of 1,000,
//! 10,000 and 100,000 entries give the bytes per entry and the fixed bytes per batch (a
//! straight line through the two smaller, checked at the largest) that explain the
//! totals.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};

use dp3t_core::engine::{Engine, EngineConfig, Scheme};
use dp3t_core::signing::SigningKey;
use dp3t_core::time::UnixTime;

use super::server::{synthetic_entries, Entry, Server, ServerConfig};
use super::{group, scheme_name};

const START: u64 = 1_767_225_600 + 30 * 86_400;

/// Real entries published per upload of 14 days of keys.
pub fn entries_per_upload(s: Scheme) -> u64 {
    match s {
        Scheme::Gaen => 14,
        Scheme::LowCost => 1,
        Scheme::Unlinkable => 14 * 96,
        Scheme::Hybrid => 14 * 12,
    }
}

/// The white paper's back-of-the-envelope bytes per entry (key or seed size only).
fn paper_bytes_per_entry(s: Scheme) -> f64 {
    match s {
        // TEK 16 bytes + rolling start 4 bytes.
        Scheme::Gaen => 20.0,
        // SK_t 32 bytes (the date is implicit in the batch).
        Scheme::LowCost => 32.0,
        // A Cuckoo filter entry: fingerprint bits / 8 / load factor (48 bits, 95 %).
        Scheme::Unlinkable => 6.0 / 0.95,
        // 16-byte seed + window start.
        Scheme::Hybrid => 20.0,
    }
}

/// One real batch of `n` entries (no padding): `(body bytes, HTTP head bytes)`.
fn batch_size(scheme: Scheme, n: u64, key: &SigningKey, seed: u64) -> Result<(u64, u64), String> {
    let cfg = ServerConfig {
        gaen_min_keys: 0,
        lowcost_min_keys: 0,
        unlinkable_min_entries: 0,
        hybrid_min_seeds: 0,
        ..ServerConfig::backend_defaults()
    };
    let mut server = Server::new(scheme, key.clone(), cfg, seed);
    let per = entries_per_upload(scheme);
    let release = START;
    let mut added = 0u64;
    let mut i = 0u64;
    let mut r = ChaCha20Rng::seed_from_u64(seed);
    while added < n {
        // 14 days of keys of one upload, ending the day before the release.
        let upload_at = release - 86_400 - 3_600;
        let from = (upload_at / 86_400) as u32 - 13;
        for e in synthetic_entries(scheme, from, upload_at, r.next_u64() ^ i) {
            if added >= n {
                break;
            }
            let e = match e {
                // Keys of the upload day would wait for their embargo; date them a day
                // earlier so that all are in this batch.
                Entry::Gaen(mut k) => {
                    k.rolling_start_interval_number = k
                        .rolling_start_interval_number
                        .min(((release / 86_400 - 1) * 144) as u32);
                    Entry::Gaen(k)
                }
                other => other,
            };
            server.accept(e, release - 3_600 - 86_400);
            added += 1;
        }
        i += 1;
    }
    let _ = per;
    let rel = server.release(release)?;
    Ok((rel.published.body.len() as u64, rel.http_head_bytes as u64))
}

/// The analytic report.
pub fn run(schemes: &[Scheme], infections: u64) -> Result<Value, String> {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = SigningKey::generate(&mut rng);
    let mut out = serde_json::Map::new();
    for &s in schemes {
        let sizes = [1_000u64, 10_000, 100_000];
        let mut points = Vec::new();
        for &n in &sizes {
            points.push((n, batch_size(s, n, &key, n)?));
        }
        // Line through the two smaller sizes; the largest checks it.
        let (n0, (b0, _)) = points[0];
        let (n1, (b1, _)) = points[1];
        let slope = (b1 as f64 - b0 as f64) / (n1 - n0) as f64;
        let intercept = b0 as f64 - slope * n0 as f64;
        let (n2, (b2, _)) = points[2];
        let predicted = intercept + slope * n2 as f64;
        let residual = (b2 as f64 - predicted) / b2 as f64;
        let head = points[2].1 .1 as f64;
        let per_day = infections * entries_per_upload(s);
        let buckets = 12u64;
        let predicted_daily = buckets as f64 * (intercept + head) + slope * per_day as f64;
        // The measured day: 12 real buckets sharing the day's entries.
        let day = |total: u64, seed: u64| -> Result<(u64, u64), String> {
            let mut sum = (0u64, 0u64);
            for b in 0..buckets {
                let n = total * (b + 1) / buckets - total * b / buckets;
                let (body, head) = batch_size(s, n, &key, seed + b)?;
                sum = (sum.0 + body, sum.1 + head);
            }
            Ok(sum)
        };
        let (day_body, day_head) = day(per_day, 1_000_000)?;
        let cwa = match s {
            Scheme::Gaen => Some(day(2_000 * 14, 2_000_000)?),
            _ => None,
        };
        // Upload body size (real and fake are the same size).
        let mut e =
            Engine::new(EngineConfig::new(s, key.public_key())).map_err(|e| e.to_string())?;
        let up = e
            .build_fake_upload(UnixTime(START), &mut rng)
            .map_err(|e| e.to_string())?
            .json
            .len();
        let _ = e.current_beacon(UnixTime(START), &mut rng);
        out.insert(
            scheme_name(s).into(),
            json!({
                "entries_per_upload": entries_per_upload(s),
                "entries_per_day": per_day,
                "measured_batches": points.iter().map(|(n, (b, h))| json!({"entries": n, "body_bytes": b, "http_head_bytes": h})).collect::<Vec<_>>(),
                "bytes_per_entry": slope,
                "bytes_per_batch_fixed": intercept,
                "linear_fit_error_at_100k": residual,
                "download_bytes_per_phone_per_day_12_buckets": day_body + day_head,
                "download_body_bytes_per_day": day_body,
                "download_http_head_bytes_per_day": day_head,
                "fit_prediction_bytes_per_day": predicted_daily.round(),
                "paper_formula_bytes_per_day": (per_day as f64 * paper_bytes_per_entry(s)).round(),
                "server_storage_bytes_14_days": (slope * per_day as f64 * 14.0).round(),
                "upload_body_bytes": up,
                "cwa_2000_cases_download_bytes_per_day": cwa.map(|(b, h)| b + h),
            }),
        );
    }
    Ok(json!({
        "format": "dp3t-simulate-analytic/1",
        "infections_per_day": infections,
        "key_days": 14,
        "buckets_per_day": 12,
        "schemes": out,
    }))
}

/// Markdown table of the analytic report.
pub fn markdown(r: &Value) -> String {
    let mut md = format!(
        "# dp3t simulate --analytic\n\n{} new infections per day, each uploading 14 days of keys; \
         12 release buckets a day, all built (core encoders, signed) and measured.\n\n\
         | scheme | entries/day | bytes/entry (measured) | fixed bytes/batch | fit error at 100k | download/phone/day | white-paper formula | upload body |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        group(r["infections_per_day"].as_u64().unwrap_or(0))
    );
    if let Some(m) = r["schemes"].as_object() {
        for (name, s) in m {
            md.push_str(&format!(
                "| {name} | {} | {:.2} | {:.0} | {:.4}% | {} | {} | {} |\n",
                group(s["entries_per_day"].as_u64().unwrap_or(0)),
                s["bytes_per_entry"].as_f64().unwrap_or(0.0),
                s["bytes_per_batch_fixed"].as_f64().unwrap_or(0.0),
                100.0 * s["linear_fit_error_at_100k"].as_f64().unwrap_or(0.0),
                group(
                    s["download_bytes_per_phone_per_day_12_buckets"]
                        .as_u64()
                        .unwrap_or(0)
                ),
                group(s["paper_formula_bytes_per_day"].as_f64().unwrap_or(0.0) as u64),
                group(s["upload_body_bytes"].as_u64().unwrap_or(0)),
            ));
        }
    }
    md
}
