//! The `dp3t` binary: exit codes and output of `vectors verify`, `vectors generate` and
//! `bench match`.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn dp3t(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dp3t"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dp3t-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn verify_passes_on_the_official_vectors() {
    let (code, out, _) = dp3t(&[
        "vectors",
        "verify",
        "spec-vectors/gaen-official.json",
        "spec-vectors/gaen-export-ens-example.json",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim_end().lines().last(), Some("2 passed, 0 failed"));
}

#[test]
fn verify_exits_1_on_a_single_wrong_byte() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../spec-vectors/gaen-official.json"
    ))
    .unwrap();
    let bad = src.replacen("\"aem\": \"72033874\"", "\"aem\": \"72033875\"", 1);
    assert_ne!(src, bad);
    let p = tmp("wrong-byte.json");
    std::fs::write(&p, bad).unwrap();
    let (code, out, _) = dp3t(&["vectors", "verify", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("case 0: identifiers[0].aem: expected 72033875, actual 72033874"),
        "{out}"
    );
    assert_eq!(lines[1], "0 passed, 1 failed");
}

#[test]
fn verify_exits_2_on_malformed_files_and_unknown_schemes() {
    let p = tmp("unknown.json");
    std::fs::write(
        &p,
        r#"{"format":"dp3t-spec-vectors/1","scheme":"gaen-v9","cases":[]}"#,
    )
    .unwrap();
    let (code, _, err) = dp3t(&["vectors", "verify", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown scheme \"gaen-v9\""), "{err}");
    let q = tmp("truncated.json");
    std::fs::write(
        &q,
        r#"{"format":"dp3t-spec-vectors/1","scheme":"gaen","cases":[{"tek":"#,
    )
    .unwrap();
    assert_eq!(dp3t(&["vectors", "verify", q.to_str().unwrap()]).0, 2);
    assert_eq!(dp3t(&["vectors", "verify", "/nonexistent/file.json"]).0, 2);
}

#[test]
fn generate_then_verify_round_trips_for_every_scheme() {
    for scheme in [
        "gaen",
        "dp3t-lowcost",
        "dp3t-unlinkable",
        "dp3t-hybrid",
        "dp3t-cuckoo",
        "gaen-export",
        "exposure-score",
    ] {
        let p = tmp(&format!("{scheme}.json"));
        let (code, _, err) = dp3t(&[
            "vectors",
            "generate",
            "--scheme",
            scheme,
            "--count",
            "21",
            "--seed",
            "9",
            "--out",
            p.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        let (code, out, _) = dp3t(&["vectors", "verify", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{scheme}: {out}");
        assert_eq!(out.trim_end(), "21 passed, 0 failed");
    }
    assert_eq!(
        dp3t(&["vectors", "generate", "--scheme", "nope", "--count", "1"]).0,
        2
    );
}

#[test]
fn bench_match_finds_exactly_the_planted_sightings() {
    for scheme in ["gaen", "lowcost", "unlinkable", "hybrid"] {
        let (code, out, err) = dp3t(&[
            "bench",
            "match",
            "--scheme",
            scheme,
            "--keys",
            "3000",
            "--sightings",
            "2000",
            "--planted",
            "7",
            "--seed",
            "3",
            "--threads",
            "1",
        ]);
        assert_eq!(code, 0, "{scheme}: {out} {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["found"], 7, "{scheme}");
        assert_eq!(v["planted"], 7);
        assert_eq!(v["threads"], 1);
        assert!(v["keys_per_sec"].as_f64().unwrap() > 0.0);
        assert_eq!(v["repeat"], 1);
        assert_eq!(v["first_seconds"], v["seconds"], "{scheme}");
    }
}

#[test]
fn bench_match_repeats_in_one_process_and_reports_the_first_and_the_fastest() {
    let args = |repeat: &str| {
        let mut a = vec![
            "bench",
            "match",
            "--scheme",
            "gaen",
            "--keys",
            "5000",
            "--sightings",
            "2000",
            "--planted",
            "5",
            "--threads",
            "2",
            "--repeat",
        ];
        a.push(repeat);
        dp3t(&a)
    };
    let (code, out, err) = args("3");
    assert_eq!(code, 0, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["found"], 5);
    assert_eq!(v["repeat"], 3);
    let (best, first) = (
        v["seconds"].as_f64().unwrap(),
        v["first_seconds"].as_f64().unwrap(),
    );
    assert!(best > 0.0 && best <= first, "{out}");
    assert!(v["keys_per_sec"].as_f64() >= v["first_keys_per_sec"].as_f64());
    for bad in ["0", "101", "x"] {
        let (code, _, err) = args(bad);
        assert_eq!(code, 2, "--repeat {bad}: {err}");
        assert!(err.contains("--repeat"), "{err}");
    }
}

#[test]
fn export_verify_checks_the_public_example() {
    let (code, out, _) = dp3t(&[
        "export",
        "verify",
        "dp3t-core/tests/data/ens-testExport-2-records.zip",
        "--public-key",
        "dp3t-core/tests/data/ens-public.pem",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["region"], "US");
    assert_eq!(v["keys"].as_array().unwrap().len(), 2);
    // Any other (valid) key: not verified, exit 1.
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../spec-vectors/generated-gaen-export.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let p = tmp("other.pem");
    std::fs::write(&p, vectors["cases"][0]["public_key_pem"].as_str().unwrap()).unwrap();
    let (code, out, _) = dp3t(&[
        "export",
        "verify",
        "dp3t-core/tests/data/ens-testExport-2-records.zip",
        "--public-key",
        p.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"verified\":false"), "{out}");
    assert_eq!(
        dp3t(&[
            "export",
            "verify",
            "/nonexistent.zip",
            "--public-key",
            "dp3t-core/tests/data/ens-public.pem"
        ])
        .0,
        2
    );
}

/// The exit status and standard error of `vectors verify` on one file holding `json`.
fn verify_text(name: &str, json: &str) -> (i32, String) {
    let p = tmp(name);
    std::fs::write(&p, json).unwrap();
    let (code, _, err) = dp3t(&["vectors", "verify", p.to_str().unwrap()]);
    (code, err)
}

#[test]
fn verify_exits_2_on_an_unknown_field_and_names_it() {
    // A misspelled optional output holding a wrong value used to give "3 passed".
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../spec-vectors/dp3t-lowcost-reference.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&src).unwrap();
    let mut v2 = v.clone();
    let case = v2["cases"][0].as_object_mut().unwrap();
    let next = case.remove("next_sk").unwrap();
    let wrong = format!("ff{}", &next.as_str().unwrap()[2..]);
    case.insert("nextSk".into(), wrong.into());
    let (code, err) = verify_text("unknown-field.json", &v2.to_string());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nextSk"), "{err}");
    let mut v3 = v;
    v3["comment"] = "top-level fields are checked too".into();
    let (code, err) = verify_text("unknown-top.json", &v3.to_string());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("comment"), "{err}");
}

#[test]
fn verify_exits_2_on_a_case_that_checks_no_output() {
    let sk = "00".repeat(32);
    let (code, err) = verify_text(
        "inputs-only.json",
        &format!(
            r#"{{"format":"dp3t-spec-vectors/1","scheme":"dp3t-lowcost","cases":[{{"sk":"{sk}"}}]}}"#
        ),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("case 0: checks no output"), "{err}");
}

#[test]
fn verify_exits_2_on_a_file_without_cases() {
    let (code, err) = verify_text(
        "no-cases.json",
        r#"{"format":"dp3t-spec-vectors/1","scheme":"gaen","cases":[]}"#,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no cases"), "{err}");
    let (code, _, err) = dp3t(&["vectors", "generate", "--scheme", "gaen", "--count", "0"]);
    assert_eq!(code, 2, "{err}");
}
