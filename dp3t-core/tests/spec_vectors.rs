//! Every file in `spec-vectors/` passes, and every scheme has enough cases.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dp3t_testkit::vectors::{parse_file, verify, VectorKind};

fn files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec-vectors");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("spec-vectors/ exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_vector_file_passes() {
    let mut cases: BTreeMap<VectorKind, usize> = BTreeMap::new();
    for path in files() {
        let bytes = std::fs::read(&path).unwrap();
        let file = parse_file(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let report = verify(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            report.failed,
            0,
            "{}: {:?}",
            path.display(),
            report.mismatches
        );
        assert_eq!(report.passed, file.cases.len());
        *cases.entry(file.scheme).or_default() += report.passed;
    }
    for scheme in VectorKind::ALL {
        let n = cases.get(&scheme).copied().unwrap_or(0);
        assert!(n >= 20, "{scheme}: only {n} cases");
    }
}

#[test]
fn generated_files_are_reproducible_from_their_source_line() {
    // Each generated file says how it was made; making it again gives the same bytes.
    for path in files() {
        let bytes = std::fs::read(&path).unwrap();
        let file = parse_file(&bytes).unwrap();
        let Some(args) = file.source.strip_prefix("dp3t-rs `dp3t vectors generate ") else {
            continue;
        };
        let words: Vec<&str> = args.trim_end_matches('`').split_whitespace().collect();
        let arg = |name: &str| {
            let i = words.iter().position(|w| *w == name).unwrap();
            words[i + 1]
        };
        let again = dp3t_testkit::vectors::generate(
            arg("--scheme").parse().unwrap(),
            arg("--count").parse().unwrap(),
            arg("--seed").parse().unwrap(),
        )
        .unwrap();
        assert_eq!(again.to_json().as_bytes(), &bytes[..], "{}", path.display());
    }
}

#[test]
fn the_official_vectors_are_all_there() {
    let names: Vec<String> = files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for official in [
        "gaen-official.json",
        "dp3t-lowcost-reference.json",
        "dp3t-unlinkable-reference.json",
        "gaen-export-ens-example.json",
    ] {
        assert!(names.iter().any(|n| n == official), "{official} missing");
    }
}
