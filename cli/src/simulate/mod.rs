//! `dp3t simulate`: a seeded, deterministic population simulator.
//!
//! * [`model`]: people, contacts, radio, epidemic (sans-IO, no crypto).
//! * [`phones`]: a sample of K phones that run real `dp3t-core` engines, upload through an
//!   in-process server ([`server`]: the core's encoders and signer, the backend's padding
//!   rule) and ingest every released batch.
//! * [`analysis`]: ground truth and model-level scoring.
//! * [`analytic`]: bandwidth only, at national scale, from real batches.
//!
//! The report says for every number whether it comes from the engines or from the model.

pub mod analysis;
pub mod analytic;
pub mod model;
pub mod phones;
pub mod png;
pub mod server;
pub mod svg;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use dp3t_core::engine::Scheme;
use dp3t_core::exposure::ScoringConfig;
use serde_json::{json, Value};

use analysis::{precision_recall, sweep_configs, Truth};
use model::{ModelConfig, ModelOutput, Planted, Radio, DAY};
use phones::SchemeRun;
use server::ServerConfig;

/// `dp3t simulate` arguments.
#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Preset: `ci` (seconds, used by the tests), `town` (50,000 people, 14 days, 300
    /// engines) or `city-1m` (1,000,000 people, 21 days, 1,000 engines).
    #[arg(long, default_value = "town")]
    pub preset: String,
    /// People (overrides the preset).
    #[arg(long)]
    pub population: Option<u32>,
    /// Days (overrides the preset).
    #[arg(long)]
    pub days: Option<u32>,
    /// Phones running real engines (overrides the preset).
    #[arg(long)]
    pub engines: Option<u32>,
    /// Imported infections per day (overrides the preset).
    #[arg(long)]
    pub imports_per_day: Option<f64>,
    /// Seed: the same seed gives the same report (timings aside).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Schemes, comma-separated: gaen, lowcost, unlinkable, hybrid (`none`: the model only).
    #[arg(long, default_value = "gaen,lowcost,unlinkable,hybrid")]
    pub schemes: String,
    /// Output directory (report.json, report.md, plots as *.png and *.svg).
    #[arg(long, default_value = "simulate-report")]
    pub out: PathBuf,
    /// Threads for the phones' downloads (default: available parallelism).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Bandwidth only: real batches for `--infections-per-day` new infections a day
    /// (14 days of keys each), no population (see docs/SIMULATION.md).
    #[arg(long)]
    pub analytic: bool,
    /// New infections per day of the analytic mode.
    #[arg(long, default_value_t = 40_000)]
    pub infections_per_day: u64,
}

/// A preset: the model and the server.
pub fn preset(name: &str, seed: u64) -> Result<(ModelConfig, ServerConfig), String> {
    let start = 1_767_225_600; // 2026-01-01T00:00:00Z
    let base = ModelConfig {
        seed,
        population: 50_000,
        days: 14,
        engines: 300,
        app_share: 0.6,
        neighbourhood: 2_000,
        work_share: 0.7,
        work_size_max: 30,
        work_contacts_per_day: 5.0,
        random_contacts_per_day: 8.0,
        random_local_share: 0.7,
        imports_per_day: 50.0,
        beta_close_per_min: 0.0006,
        beta_far_per_min: 0.0001,
        test_share: 0.6,
        upload_share: 0.7,
        radio: Radio::default(),
        planted: vec![],
        start,
    };
    match name {
        "ci" => Ok((
            ModelConfig {
                population: 1_500,
                days: 5,
                engines: 16,
                neighbourhood: 500,
                imports_per_day: 6.0,
                beta_close_per_min: 0.002,
                planted: vec![
                    Planted {
                        minutes: 30,
                        distance_m: 1.0,
                        day: 2,
                    },
                    Planted {
                        minutes: 2,
                        distance_m: 1.0,
                        day: 2,
                    },
                ],
                ..base
            },
            ServerConfig {
                bucket_seconds: DAY,
                gaen_min_keys: 10,
                lowcost_min_keys: 10,
                unlinkable_min_entries: 200,
                hybrid_min_seeds: 20,
                retention_days: 14,
            },
        )),
        "town" => Ok((base, ServerConfig::backend_defaults())),
        "city-1m" => Ok((
            ModelConfig {
                population: 1_000_000,
                days: 21,
                engines: 1_000,
                imports_per_day: 300.0,
                ..base
            },
            ServerConfig::backend_defaults(),
        )),
        other => Err(format!("unknown preset {other:?} (ci, town, city-1m)")),
    }
}

/// Parse `gaen,lowcost,...`.
pub fn parse_schemes(s: &str) -> Result<Vec<Scheme>, String> {
    if s == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|x| match x.trim() {
            "gaen" => Ok(Scheme::Gaen),
            "lowcost" | "low-cost" => Ok(Scheme::LowCost),
            "unlinkable" => Ok(Scheme::Unlinkable),
            "hybrid" => Ok(Scheme::Hybrid),
            o => Err(format!("unknown scheme {o:?}")),
        })
        .collect()
}

/// The name of a scheme in reports.
pub fn scheme_name(s: Scheme) -> &'static str {
    match s {
        Scheme::Gaen => "gaen",
        Scheme::LowCost => "lowcost",
        Scheme::Unlinkable => "unlinkable",
        Scheme::Hybrid => "hybrid",
    }
}

/// The CLI entry point.
pub fn run_cli(args: &SimulateArgs) -> ExitCode {
    let result = if args.analytic {
        parse_schemes(&args.schemes).and_then(|schemes| {
            let report = analytic::run(&schemes, args.infections_per_day)?;
            write_outputs(&args.out, &report, &analytic::markdown(&report), &[])
        })
    } else {
        simulate_cli(args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn simulate_cli(args: &SimulateArgs) -> Result<(), String> {
    let (mut model, server) = preset(&args.preset, args.seed)?;
    if let Some(n) = args.population {
        model.population = n;
    }
    if let Some(d) = args.days {
        model.days = d;
    }
    if let Some(k) = args.engines {
        model.engines = k;
    }
    if let Some(i) = args.imports_per_day {
        model.imports_per_day = i;
    }
    let schemes = parse_schemes(&args.schemes)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let sim = simulate(&model, &server, &schemes, threads)?;
    let md = markdown(&sim.report);
    let plots = svg::plots(&sim.report);
    write_outputs(&args.out, &sim.report, &md, &plots)?;
    png::write_all(&svg::charts(&sim.report), &args.out)?;
    eprintln!(
        "wrote {} (model {:.1} s, total {:.1} s)",
        args.out.display(),
        sim.report["timing"]["model_seconds"]
            .as_f64()
            .unwrap_or(0.0),
        sim.report["timing"]["total_seconds"]
            .as_f64()
            .unwrap_or(0.0)
    );
    Ok(())
}

fn write_outputs(
    dir: &Path,
    report: &Value,
    md: &str,
    plots: &[(String, String)],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let w = |name: &str, data: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).map_err(|e| format!("{}: {e}", p.display()))
    };
    let pretty = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    w("report.json", &pretty)?;
    w("report.md", md)?;
    for (name, data) in plots {
        w(name, data)?;
    }
    Ok(())
}

/// A finished simulation. The model's output and the runs are read by the tests.
#[allow(dead_code)]
pub struct Simulation {
    /// The report (JSON); timings only under `"timing"` keys.
    pub report: Value,
    /// The model's output.
    pub model: ModelOutput,
    /// The engine runs.
    pub runs: Vec<SchemeRun>,
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1e6).round() / 1e6)
    } else {
        Value::Null
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

/// Run the model, then the engines of every scheme, and build the report.
pub fn simulate(
    model: &ModelConfig,
    server: &ServerConfig,
    schemes: &[Scheme],
    threads: usize,
) -> Result<Simulation, String> {
    let t0 = Instant::now();
    let out = model.run();
    let model_secs = t0.elapsed().as_secs_f64();
    let days = f64::from(model.days);
    let interval = model.radio.scan_interval;

    // Ground truth of the engines (contacts between two engine phones) and of the
    // population (every app user who met an uploader), both from the model.
    // An engine can only match the keys of another engine: phones without one upload
    // random keys.
    let engine = |p: u32| Some(out.engine_of[p as usize]).filter(|&e| e != u32::MAX);
    let engine_truth = Truth::build(
        model,
        &out,
        out.engine_contacts.iter().flatten(),
        |p| engine(p).is_some(),
        engine,
    );
    let pop_truth = Truth::build(model, &out, out.uploader_contacts.iter(), |_| true, Some);
    let default_cfg = ScoringConfig::default();
    let engine_close = engine_truth.close();
    let engine_model_notified = engine_truth.notified(&default_cfg, interval);
    let pop_close = pop_truth.close();
    let pop_notified = pop_truth.notified(&default_cfg, interval);
    let (pop_tp, pop_p, pop_r) = precision_recall(&pop_notified, &pop_close);

    let sweep: Vec<Value> = sweep_configs()
        .iter()
        .map(|cfg| {
            let (etp, ep, er) = precision_recall(&engine_truth.notified(cfg, interval), &engine_close);
            let pn = pop_truth.notified(cfg, interval);
            let (ptp, pp, pr) = precision_recall(&pn, &pop_close);
            json!({
                "attenuation_low": cfg.attenuation_low,
                "attenuation_medium": cfg.attenuation_medium,
                "engine_phones": {"true_positives": etp, "precision": num(ep), "recall": num(er)},
                "population": {"notified": pn.len(), "true_positives": ptp, "precision": num(pp), "recall": num(pr)},
            })
        })
        .collect();

    let mut runs = Vec::new();
    let mut scheme_reports = serde_json::Map::new();
    for &scheme in schemes {
        let run = phones::run_scheme(model, &out, scheme, server, threads)?;
        let k = run.phones.len().max(1) as f64;
        let total_wire: u64 = run.batches.iter().map(|b| (b.body + b.head) as u64).sum();
        let total_body: u64 = run.batches.iter().map(|b| b.body as u64).sum();
        let total_sig: u64 = run.batches.iter().map(|b| b.signature as u64).sum();
        let total_head: u64 = run.batches.iter().map(|b| b.head as u64).sum();
        let real: u64 = run.batches.iter().map(|b| b.real as u64).sum();
        let padding: u64 = run.batches.iter().map(|b| b.padding as u64).sum();
        let upload_bytes: u64 = run.phones.iter().map(|p| p.upload_bytes).sum();
        let (real_up, fake_up) = run
            .phones
            .iter()
            .fold((0, 0), |a, p| (a.0 + p.uploads.0, a.1 + p.uploads.1));
        let errors: u64 = run.phones.iter().map(|p| p.ingest_errors).sum();
        let mut cpu: Vec<f64> = run
            .phones
            .iter()
            .map(|p| p.ingest_time.as_secs_f64() * 1000.0 / days)
            .collect();
        let cpu_mean = cpu.iter().sum::<f64>() / k;
        // Notifications by the engines, against the model's truth. Only phones notified
        // by an upload made before the truth cut-off count (later ones have no truth).
        let notified: HashMap<u32, u64> = run
            .phones
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.notified_at.map(|t| (i as u32, t)))
            .collect();
        let (tp, precision, recall) = precision_recall(&notified, &engine_close);
        let mut delays: Vec<f64> = notified
            .iter()
            .filter_map(|(e, t)| {
                engine_close
                    .get(e)
                    .filter(|&&p| p != u64::MAX && p <= *t)
                    .map(|p| (*t - p) as f64 / 3600.0)
            })
            .collect();
        let delay_mean = if delays.is_empty() {
            f64::NAN
        } else {
            delays.iter().sum::<f64>() / delays.len() as f64
        };
        let agree = run
            .phones
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                p.notified_at.is_some() == engine_model_notified.contains_key(&(*i as u32))
            })
            .count();
        let planted: Vec<Value> = out
            .planted_pairs
            .iter()
            .map(|&(s, r, minutes)| {
                json!({
                    "minutes": minutes,
                    "sender_engine": s,
                    "receiver_engine": r,
                    "notified": run.phones[r as usize].notified_at.is_some(),
                })
            })
            .collect();
        let per_day: Vec<u64> = (0..model.days)
            .map(|d| {
                let lo = model.start + u64::from(d) * DAY;
                run.batches
                    .iter()
                    .filter(|b| b.release > lo && b.release <= lo + DAY)
                    .map(|b| (b.body + b.head) as u64)
                    .sum()
            })
            .collect();
        let name = scheme_name(scheme);
        scheme_reports.insert(
            name.into(),
            json!({
                "source": "engines: real dp3t-core engines, real signed batches (in-process server)",
                "phones": run.phones.len(),
                "batches": run.batches.len(),
                "download": {
                    "bytes_per_phone_per_day": num(total_wire as f64 / days),
                    "body_bytes_per_phone_per_day": num(total_body as f64 / days),
                    "http_head_bytes_per_phone_per_day": num(total_head as f64 / days),
                    "signature_header_bytes_per_phone_per_day": num(total_sig as f64 / days),
                    "bytes_per_day": per_day,
                    "total_bytes_per_phone": total_wire,
                    "real_entries": real,
                    "padding_entries": padding,
                    "real_entries_from_engines": run.engine_entries,
                    "real_entries_from_model_phones": run.other_entries,
                },
                "upload": {
                    "body_bytes_per_phone_per_day": num(upload_bytes as f64 / k / days),
                    "real_uploads": real_up,
                    "fake_uploads": fake_up,
                },
                "server": {
                    "max_published_bytes_in_retention": run.max_retained_bytes,
                    "real_entries_accepted": run.engine_entries + run.other_entries,
                },
                "sightings_recorded": run.sightings_recorded,
                "ingest_errors": errors,
                "notifications": {
                    "close_contacts_truth": engine_close.len(),
                    "notified": notified.len(),
                    "true_positives": tp,
                    "precision": num(precision),
                    "recall": num(recall),
                    "agree_with_model_scoring": agree,
                    "model_scoring_notified": engine_model_notified.len(),
                    "planted": planted,
                },
                "timing": {
                    "match_ms_per_phone_per_day": {
                        "mean": num(cpu_mean),
                        "p50": num(percentile(&mut cpu, 0.5)),
                        "p95": num(percentile(&mut cpu, 0.95)),
                        "max": num(percentile(&mut cpu, 1.0)),
                    },
                    "hours_positive_test_to_notification": {
                        "mean": num(delay_mean),
                        "p50": num(percentile(&mut delays, 0.5)),
                        "p90": num(percentile(&mut delays, 0.9)),
                    },
                    "scheme_wall_seconds": num(run.wall.as_secs_f64()),
                    "wall_seconds_by_phase": {
                        "contacts_to_beacons_heard": num(run.spans.contacts.as_secs_f64()),
                        "beacons_and_sightings": num(run.spans.beacons.as_secs_f64()),
                        "uploads": num(run.spans.uploads.as_secs_f64()),
                        "server_build_and_sign": num(run.spans.server.as_secs_f64()),
                        "ingest": num(run.spans.ingest.as_secs_f64()),
                    },
                },
            }),
        );
        runs.push(run);
    }
    let app_users = out.people.iter().filter(|p| p.app).count();
    let total_infections: u64 = out.infections_per_day.iter().sum();
    let report = json!({
        "format": "dp3t-simulate/1",
        "config": {
            "seed": model.seed,
            "population": model.population,
            "days": model.days,
            "engines": out.engines.len(),
            "planted_pairs": out.planted_pairs.len(),
            "app_share": model.app_share,
            "imports_per_day": model.imports_per_day,
            "test_share": model.test_share,
            "upload_share": model.upload_share,
            "bucket_seconds": server.bucket_seconds,
            "padding_minimums": {
                "gaen": server.gaen_min_keys, "lowcost": server.lowcost_min_keys,
                "unlinkable": server.unlinkable_min_entries, "hybrid": server.hybrid_min_seeds,
            },
            "radio": {
                "at_1m_db": model.radio.at_1m_db, "exponent": model.radio.exponent,
                "noise_sd_db": model.radio.noise_sd_db, "calibration_db": model.radio.calibration_db,
                "scan_interval_s": model.radio.scan_interval, "skip_every": model.radio.skip_every,
            },
        },
        "population": {
            "source": "model: contact model and epidemic, no crypto",
            "people": model.population,
            "app_users": app_users,
            "infections": total_infections,
            "infections_per_day": out.infections_per_day,
            "positives_per_day": out.positives_per_day,
            "uploads_per_day": out.uploads_per_day,
            "contacts_generated_per_day": out.contacts_per_day,
            "close_contacts_of_uploaders_app_users": pop_close.len(),
            "notified_by_model_scoring": pop_notified.len(),
            "true_positives": pop_tp,
            "precision": num(pop_p),
            "recall": num(pop_r),
        },
        "sweep": {
            "source": "model: §6 scoring of the scans a phone would match, per threshold",
            "points": sweep,
        },
        "schemes": scheme_reports,
        "timing": {
            "model_seconds": num(model_secs),
            "total_seconds": num(t0.elapsed().as_secs_f64()),
            "threads": threads,
        },
    });
    Ok(Simulation {
        report,
        model: out,
        runs,
    })
}

/// The report without any `"timing"` object: what the same seed must reproduce.
#[cfg(test)]
pub fn without_timing(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "timing")
                .map(|(k, v)| (k.clone(), without_timing(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_timing).collect()),
        other => other.clone(),
    }
}

fn fmt_num(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if n.is_u64() || n.is_i64() {
                group(x as u64)
            } else if x.abs() >= 1000.0 {
                group(x.round() as u64)
            } else {
                format!("{x:.3}")
            }
        }
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// `1234567` → `1,234,567`.
pub fn group(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The Markdown rendering of a report.
pub fn markdown(r: &Value) -> String {
    let mut md = String::new();
    let c = &r["config"];
    md.push_str(&format!(
        "# dp3t simulate\n\nSeed {}, {} people, {} days, {} engine phones ({} planted pairs), \
         release bucket {} s.\n\n",
        c["seed"],
        fmt_num(&c["population"]),
        c["days"],
        c["engines"],
        c["planted_pairs"],
        c["bucket_seconds"]
    ));
    md.push_str("Source of each row: **E** = measured on the real engines and the real signed batches; **M** = counted from the contact model without crypto.\n\n");
    let schemes: Vec<(&String, &Value)> = r["schemes"]
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    md.push_str("| metric | src |");
    for (n, _) in &schemes {
        md.push_str(&format!(" {n} |"));
    }
    md.push_str("\n|---|---|");
    for _ in &schemes {
        md.push_str("---:|");
    }
    md.push('\n');
    let rows: &[(&str, &[&str])] = &[
        (
            "download bytes / phone / day (head + body)",
            &["download", "bytes_per_phone_per_day"],
        ),
        (
            "  of which body",
            &["download", "body_bytes_per_phone_per_day"],
        ),
        (
            "  of which HTTP head (signature included)",
            &["download", "http_head_bytes_per_phone_per_day"],
        ),
        ("batches", &["batches"]),
        ("real entries published", &["download", "real_entries"]),
        (
            "padding entries published",
            &["download", "padding_entries"],
        ),
        (
            "upload body bytes / phone / day (real + fake)",
            &["upload", "body_bytes_per_phone_per_day"],
        ),
        ("fake uploads", &["upload", "fake_uploads"]),
        (
            "server: published bytes kept (max over retention)",
            &["server", "max_published_bytes_in_retention"],
        ),
        (
            "matching CPU ms / phone / day, mean",
            &["timing", "match_ms_per_phone_per_day", "mean"],
        ),
        (
            "matching CPU ms / phone / day, p95",
            &["timing", "match_ms_per_phone_per_day", "p95"],
        ),
        (
            "close contacts (≥15 min ≤2 m) of engine uploaders",
            &["notifications", "close_contacts_truth"],
        ),
        ("notified by the engine", &["notifications", "notified"]),
        ("precision", &["notifications", "precision"]),
        ("recall", &["notifications", "recall"]),
        (
            "hours positive test → notification, median",
            &["timing", "hours_positive_test_to_notification", "p50"],
        ),
        (
            "engine and model scoring agree (phones)",
            &["notifications", "agree_with_model_scoring"],
        ),
        ("batches refused by the engine", &["ingest_errors"]),
    ];
    for (label, path) in rows {
        let src = if label.starts_with("close") { "M" } else { "E" };
        md.push_str(&format!("| {label} | {src} |"));
        for (_, s) in &schemes {
            let mut v = *s;
            for p in *path {
                v = &v[*p];
            }
            md.push_str(&format!(" {} |", fmt_num(v)));
        }
        md.push('\n');
    }
    let p = &r["population"];
    md.push_str(&format!(
        "\n## Population (M)\n\n| | |\n|---|---:|\n| people | {} |\n| app users | {} |\n| infections | {} |\n\
         | close contacts of uploaders (app users) | {} |\n| notified by §6 scoring of their scans | {} |\n\
         | precision | {} |\n| recall | {} |\n",
        fmt_num(&p["people"]), fmt_num(&p["app_users"]), fmt_num(&p["infections"]),
        fmt_num(&p["close_contacts_of_uploaders_app_users"]), fmt_num(&p["notified_by_model_scoring"]),
        fmt_num(&p["precision"]), fmt_num(&p["recall"])
    ));
    md.push_str(
        "\n## Attenuation threshold sweep (M: §6 scoring of the scans a phone would match)\n\n",
    );
    md.push_str("| low / medium dB | engine phones P | R | population P | R | notified |\n|---|---:|---:|---:|---:|---:|\n");
    for pt in r["sweep"]["points"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        md.push_str(&format!(
            "| {} / {} | {} | {} | {} | {} | {} |\n",
            pt["attenuation_low"],
            pt["attenuation_medium"],
            fmt_num(&pt["engine_phones"]["precision"]),
            fmt_num(&pt["engine_phones"]["recall"]),
            fmt_num(&pt["population"]["precision"]),
            fmt_num(&pt["population"]["recall"]),
            fmt_num(&pt["population"]["notified"]),
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ALL: [Scheme; 4] = [
        Scheme::Gaen,
        Scheme::LowCost,
        Scheme::Unlinkable,
        Scheme::Hybrid,
    ];

    fn ci(seed: u64) -> Simulation {
        let (m, s) = preset("ci", seed).unwrap();
        simulate(&m, &s, &ALL, 2).unwrap()
    }

    #[test]
    fn planted_contacts_and_download_bytes() {
        let sim = ci(7);
        for run in &sim.runs {
            let name = scheme_name(run.scheme);
            // The 30-minute contact at 1 m is notified, the 2-minute one is not.
            for &(_, r, minutes) in &sim.model.planted_pairs {
                let notified = run.phones[r as usize].notified_at.is_some();
                assert_eq!(notified, minutes >= 15, "{name}: planted {minutes} min");
            }
            // Every phone downloaded exactly the published batches, head and body.
            let published: u64 = run.batches.iter().map(|b| (b.body + b.head) as u64).sum();
            for p in &run.phones {
                assert_eq!(p.downloaded_bytes, published, "{name}");
                assert_eq!(p.ingest_errors, 0, "{name}");
            }
            let days = f64::from(sim.report["config"]["days"].as_u64().unwrap() as u32);
            let reported = sim.report["schemes"][name]["download"]["bytes_per_phone_per_day"]
                .as_f64()
                .unwrap();
            assert!((reported - published as f64 / days).abs() < 1e-3, "{name}");
        }
    }

    #[test]
    fn planted_contacts_hold_for_other_seeds() {
        for seed in [1, 2, 3] {
            let (mut m, s) = preset("ci", seed).unwrap();
            // Only the planted pairs matter here: a smaller population is enough.
            m.population = 300;
            m.engines = 2;
            let sim = simulate(&m, &s, &ALL, 1).unwrap();
            for run in &sim.runs {
                for &(_, r, minutes) in &sim.model.planted_pairs {
                    let notified = run.phones[r as usize].notified_at.is_some();
                    assert_eq!(
                        notified,
                        minutes >= 15,
                        "seed {seed} {:?} {minutes} min",
                        run.scheme
                    );
                }
            }
        }
    }

    #[test]
    fn same_seed_same_report() {
        let (m, s) = preset("ci", 11).unwrap();
        let a = simulate(&m, &s, &[Scheme::Gaen, Scheme::Hybrid], 2).unwrap();
        let b = simulate(&m, &s, &[Scheme::Gaen, Scheme::Hybrid], 1).unwrap();
        assert_eq!(without_timing(&a.report), without_timing(&b.report));
        let (m2, _) = preset("ci", 12).unwrap();
        assert_ne!(m.run().infections_per_day.len(), 0);
        assert_ne!(
            without_timing(&a.report)["population"],
            without_timing(&simulate(&m2, &s, &[], 1).unwrap().report)["population"]
        );
    }
}
