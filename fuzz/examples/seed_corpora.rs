//! Writes the seed corpora of every fuzz target into `fuzz/corpus/<target>/`, from the
//! files of `spec-vectors/` and from in-process stories signed with the fixture key.
//!
//! Run from `fuzz/`: `cargo run --example seed_corpora`. Deterministic: the same files
//! every time, so a fuzzing run can be repeated from the same start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use dp3t_core::engine::{Engine, EngineConfig, Scheme};
use dp3t_core::export::read_verified_export;
use dp3t_core::signing::verify_response;
use dp3t_core::time::UnixTime;
use dp3t_testkit::publish::publish;
use rand::SeedableRng;
use serde_json::Value;

type Corpora = BTreeMap<&'static str, Vec<(String, Vec<u8>)>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut corpora: Corpora = BTreeMap::new();
    from_vector_files(&root.join("spec-vectors"), &mut corpora)?;
    for name in ["ens-testExport-2-records.zip"] {
        let zip = std::fs::read(root.join("dp3t-core/tests/data").join(name))?;
        corpora
            .entry("export_zip")
            .or_default()
            .push((name.into(), zip));
    }
    from_stories(&mut corpora)?;
    for target in dp3t_fuzz::TARGETS {
        let dir = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        let seeds = corpora.get(target).map(Vec::as_slice).unwrap_or_default();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}

/// Zips, filters and (shortened) vector files from `spec-vectors/`.
fn from_vector_files(dir: &Path, out: &mut Corpora) -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for path in files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("file")
            .to_owned();
        let mut file: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let cases = file["cases"].as_array().cloned().unwrap_or_default();
        for (i, case) in cases.iter().enumerate() {
            if let Some(zip) = case["zip"].as_str() {
                out.entry("export_zip")
                    .or_default()
                    .push((format!("{stem}-{i}"), B64.decode(zip.trim())?));
            }
            if let Some(filter) = case["filter"].as_str() {
                out.entry("dpcf")
                    .or_default()
                    .push((format!("{stem}-{i}"), B64.decode(filter.trim())?));
            }
        }
        // A vector-file seed per file, cut to its first three cases: small seeds keep
        // the fuzzer fast, and three cases still show every field of the scheme.
        file["cases"] = Value::Array(cases.into_iter().take(3).collect());
        out.entry("vector_file")
            .or_default()
            .push((format!("{stem}.json"), serde_json::to_vec_pretty(&file)?));
    }
    Ok(())
}

/// For each scheme, two phones meet, one uploads, the test kit publishes with the fixture
/// key, and the other ingests: the published body, its Signature header and the saved
/// state of the phone that matched become seeds.
fn from_stories(out: &mut Corpora) -> Result<(), Box<dyn std::error::Error>> {
    let key = dp3t_fuzz::signing_key();
    let schemes = [
        Scheme::Gaen,
        Scheme::LowCost,
        Scheme::Unlinkable,
        Scheme::Hybrid,
    ];
    for (s, scheme) in schemes.into_iter().enumerate() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(s as u64);
        let config = EngineConfig::new(scheme, key.public_key());
        let mut alice = Engine::new(config.clone())?;
        let mut bob = Engine::new(config)?;
        let start = UnixTime(dp3t_fuzz::NOW.0 - 2 * 86_400);
        for minute in 0..30 {
            let now = start.plus(minute * 60);
            let beacon = alice.current_beacon(now, &mut rng)?;
            bob.record_sighting(&beacon.payload, now, 45, 60)?;
        }
        let upload = alice.build_upload(start.day(), start.plus(3_600), &mut rng)?;
        upload_body_seeds(scheme, &upload.json, out)?;
        let release = start.plus(86_400 + 7_200);
        let published = publish(scheme, &upload, release, &key)?;
        bob.ingest(&published.as_batch(), release.plus(60))?;
        // The targets check at the fixture time with the fixture key: make sure the seeds
        // pass there, or the fuzzer would start behind the first refusal.
        if scheme == Scheme::Gaen {
            read_verified_export(&published.body, &key.public_key())?;
        } else {
            verify_response(
                &published.body,
                &published.signature,
                &key.public_key(),
                dp3t_fuzz::NOW,
            )?;
        }
        let name = format!("{scheme:?}").to_lowercase();
        match scheme {
            Scheme::Gaen => out.entry("export_zip").or_default(),
            Scheme::Unlinkable => out.entry("dpcf").or_default(),
            Scheme::LowCost | Scheme::Hybrid => out.entry("published_lists").or_default(),
        }
        .push((format!("story-{name}"), published.body.clone()));
        let mut signed = published.signature.clone().into_bytes();
        signed.push(0);
        signed.extend_from_slice(&published.body);
        out.entry("signature_header")
            .or_default()
            .push((format!("story-{name}"), signed));
        let sealed = bob.save(&dp3t_fuzz::STORAGE_KEY, &mut rng)?;
        let plain = dp3t_fuzz::open_state(&sealed).ok_or("a fresh state opens")?;
        let restore = out.entry("engine_restore").or_default();
        restore.push((
            format!("plain-{name}"),
            [&[0, s as u8][..], &plain].concat(),
        ));
        restore.push((
            format!("sealed-{name}"),
            [&[1, s as u8][..], &sealed].concat(),
        ));
    }
    Ok(())
}

/// Seeds of `upload_bodies`: `route byte, onset byte (2 days before the fixture time, the
/// story's onset), body` for the story's real upload; for GAEN also as a v1 body (with a
/// `delayedKeyDate`) and a next-day body made of its first key.
fn upload_body_seeds(
    scheme: Scheme,
    json: &str,
    out: &mut Corpora,
) -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("{scheme:?}").to_lowercase();
    let seeds = out.entry("upload_bodies").or_default();
    let seed = |route: u8, body: &[u8]| [&[route, 2][..], body].concat();
    match scheme {
        Scheme::Gaen => {
            seeds.push((format!("story-{name}-v2"), seed(0, json.as_bytes())));
            let mut v1: Value = serde_json::from_str(json)?;
            let today = dp3t_fuzz::NOW.day().0 * 144;
            v1["delayedKeyDate"] = today.into();
            seeds.push((format!("story-{name}-v1"), seed(1, v1.to_string().as_bytes())));
            let mut key = v1["gaenKeys"][0].clone();
            key["rollingStartNumber"] = today.into();
            let next_day = serde_json::json!({ "delayedKey": key, "fake": 0 });
            seeds.push((format!("story-{name}-nextday"), seed(2, next_day.to_string().as_bytes())));
        }
        Scheme::LowCost => seeds.push((format!("story-{name}"), seed(3, json.as_bytes()))),
        Scheme::Unlinkable => seeds.push((format!("story-{name}"), seed(4, json.as_bytes()))),
        Scheme::Hybrid => seeds.push((format!("story-{name}"), seed(5, json.as_bytes()))),
    }
    Ok(())
}
