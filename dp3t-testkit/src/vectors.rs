//! Spec-vector files (PROTOCOL.md §11): read, check, and generate them.
//!
//! A vector file is JSON: `{"format": "dp3t-spec-vectors/1", "scheme": …, "source": …,
//! "cases": […]}`. [`parse_file`] turns bytes into a typed [`VectorFile`] (a malformed file
//! or an unknown scheme is an [`Error::Vectors`], never skipped); [`verify`] recomputes
//! every listed field of every case with this crate and reports each difference as a
//! [`Mismatch`]; [`generate`] writes deterministic random cases from a seed. This is
//! tooling for implementers and CI (the `dp3t vectors` command), so it lives in the test
//! kit and not in the core that phones ship.
//!
//! Which fields are *inputs* and which are *expected outputs* matters for errors: an input
//! that does not decode (a TEK that is not 16 bytes of hex) makes the file malformed, while
//! an expected output that differs in any way (even one that is not hex) is a mismatch.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use dp3t_core::cuckoo::{CuckooFilter, FilterBuilder};
use dp3t_core::export::{self, ExportBatch, ExportKey, SignatureInfo};
use dp3t_core::exposure::{ScanInstance, ScoringConfig};
use dp3t_core::gaen::{Metadata, Tek};
use dp3t_core::hybrid::{WindowMinutes, WindowSeed};
use dp3t_core::lowcost::DayKey;
use dp3t_core::signing::{PublicKey, SigningKey};
use dp3t_core::time::{Enin, Epoch};
use dp3t_core::unlinkable::{EpochSeed, HashedObservation};
use dp3t_core::EphId;

use crate::{Error, Result};

/// The `format` string of every vector file.
pub const FORMAT: &str = "dp3t-spec-vectors/1";

/// The eight kinds of vector file of PROTOCOL.md §11 (named by the file's `scheme` field;
/// four are the schemes a phone runs, [`dp3t_core::engine::Scheme`], the others test one part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VectorKind {
    /// `gaen`: TEK → RPIK, AEMK, RPIs and AEMs.
    Gaen,
    /// `dp3t-lowcost`: day key → next key, PRF, EphIDs.
    LowCost,
    /// `dp3t-unlinkable`: seed → EphID → hashed observations.
    Unlinkable,
    /// `dp3t-hybrid`: window seed → PRF → EphIDs.
    Hybrid,
    /// `dp3t-cuckoo`: DPCF filters, present and absent entries, invalid filters.
    Cuckoo,
    /// `gaen-export`: export zips that must or must not verify, with their contents.
    GaenExport,
    /// `exposure-score`: scans and a config → weighted minutes and exposed.
    ExposureScore,
    /// `hpke-upload`: HPKE base mode (RFC 9180, X25519/HKDF-SHA256/ChaCha20-Poly1305) and
    /// sealed upload envelopes (§16) that must or must not open.
    HpkeUpload,
}

impl VectorKind {
    /// Every scheme, in the order of §11.
    pub const ALL: [VectorKind; 8] = [
        VectorKind::Gaen,
        VectorKind::LowCost,
        VectorKind::Unlinkable,
        VectorKind::Hybrid,
        VectorKind::Cuckoo,
        VectorKind::GaenExport,
        VectorKind::ExposureScore,
        VectorKind::HpkeUpload,
    ];
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            VectorKind::Gaen => "gaen",
            VectorKind::LowCost => "dp3t-lowcost",
            VectorKind::Unlinkable => "dp3t-unlinkable",
            VectorKind::Hybrid => "dp3t-hybrid",
            VectorKind::Cuckoo => "dp3t-cuckoo",
            VectorKind::GaenExport => "gaen-export",
            VectorKind::ExposureScore => "exposure-score",
            VectorKind::HpkeUpload => "hpke-upload",
        }
    }
}

impl std::str::FromStr for VectorKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        VectorKind::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let known: Vec<_> = VectorKind::ALL.iter().map(|s| s.name()).collect();
                Error::Vectors(format!(
                    "unknown scheme {s:?} (known: {})",
                    known.join(", ")
                ))
            })
    }
}

impl std::fmt::Display for VectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed vector file; the cases stay JSON until [`verify`] reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorFile {
    /// The scheme of every case.
    pub scheme: VectorKind,
    /// Where the values come from.
    pub source: String,
    /// The cases, in file order.
    pub cases: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    format: String,
    scheme: String,
    #[serde(default)]
    source: String,
    cases: Vec<Value>,
}

/// Parse a vector file: well-formed JSON, the right `format`, a known `scheme`, a non-empty
/// `cases` array, and no other top-level field (a misspelled field is an error that names
/// it). The cases themselves are checked by [`verify`].
pub fn parse_file(bytes: &[u8]) -> Result<VectorFile> {
    let raw: RawFile = serde_json::from_slice(bytes)
        .map_err(|e| Error::Vectors(format!("not a vector file: {e}")))?;
    if raw.format != FORMAT {
        return Err(Error::Vectors(format!(
            "format is {:?}, expected {FORMAT:?}",
            raw.format
        )));
    }
    let scheme = raw.scheme.parse()?;
    if raw.cases.is_empty() {
        return Err(Error::Vectors(NO_CASES.into()));
    }
    Ok(VectorFile {
        scheme,
        source: raw.source,
        cases: raw.cases,
    })
}

/// Why a file without cases is refused: it would "pass" while checking nothing.
const NO_CASES: &str = "the file has no cases, so it checks nothing";

impl VectorFile {
    /// The file as pretty JSON.
    pub fn to_json(&self) -> String {
        let v = json!({
            "format": FORMAT,
            "scheme": self.scheme.name(),
            "source": self.source,
            "cases": self.cases,
        });
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// One field of one case that differs from what this implementation computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Index of the case in the file.
    pub case: usize,
    /// The field, as a path (`identifiers[3].rpi`).
    pub field: String,
    /// The value in the file.
    pub expected: String,
    /// The value computed here.
    pub actual: String,
}

/// The outcome of checking one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Cases whose every field matched.
    pub passed: usize,
    /// Cases with at least one mismatch.
    pub failed: usize,
    /// Every mismatch, in case order.
    pub mismatches: Vec<Mismatch>,
}

/// Check every case of a file. `Err` means the file is malformed: it has no cases, a case
/// lacks a required field, has a field this format does not define (misspelled fields would
/// otherwise be skipped silently), has an input that does not decode, or checks no output
/// at all. Differences are in the [`Report`].
pub fn verify(file: &VectorFile) -> Result<Report> {
    if file.cases.is_empty() {
        return Err(Error::Vectors(NO_CASES.into()));
    }
    let mut report = Report::default();
    for (i, case) in file.cases.iter().enumerate() {
        let mut c = Checker {
            case: i,
            checked: 0,
            out: Vec::new(),
        };
        let r = match file.scheme {
            VectorKind::Gaen => check_gaen(case, &mut c),
            VectorKind::LowCost => check_lowcost(case, &mut c),
            VectorKind::Unlinkable => check_unlinkable(case, &mut c),
            VectorKind::Hybrid => check_hybrid(case, &mut c),
            VectorKind::Cuckoo => check_cuckoo(case, &mut c),
            VectorKind::GaenExport => check_export(case, &mut c),
            VectorKind::ExposureScore => check_score(case, &mut c),
            VectorKind::HpkeUpload => check_hpke(case, &mut c),
        };
        r.map_err(|e| match e {
            Error::Vectors(m) => Error::Vectors(format!("case {i}: {m}")),
            other => Error::Vectors(format!("case {i}: {other}")),
        })?;
        if c.checked == 0 {
            return Err(Error::Vectors(format!(
                "case {i}: checks no output (it lists inputs only, or only empty lists)"
            )));
        }
        if c.out.is_empty() {
            report.passed += 1;
        } else {
            report.failed += 1;
            report.mismatches.append(&mut c.out);
        }
    }
    Ok(report)
}

/// Collects the mismatches of one case, and counts the expected outputs it compared so that
/// a case that compares none can be refused.
struct Checker {
    case: usize,
    checked: usize,
    out: Vec<Mismatch>,
}

impl Checker {
    /// Compare an expected hex string with computed bytes (case-insensitively).
    fn hex(&mut self, field: impl Into<String>, expected: &str, actual: &[u8]) {
        self.checked += 1;
        let a = hex::encode(actual);
        if !expected.eq_ignore_ascii_case(&a) {
            self.push(field, expected.to_string(), a);
        }
    }
    fn eq<T: PartialEq + std::fmt::Display>(
        &mut self,
        field: impl Into<String>,
        expected: T,
        actual: T,
    ) {
        self.checked += 1;
        if expected != actual {
            self.push(field, expected.to_string(), actual.to_string());
        }
    }
    fn push(&mut self, field: impl Into<String>, expected: String, actual: String) {
        self.out.push(Mismatch {
            case: self.case,
            field: field.into(),
            expected,
            actual,
        });
    }
}

fn case<T: for<'de> Deserialize<'de>>(v: &Value) -> Result<T> {
    T::deserialize(v).map_err(|e| Error::Vectors(e.to_string()))
}

fn input_hex<const N: usize>(s: &str, field: &str) -> Result<[u8; N]> {
    let b = hex::decode(s).map_err(|e| Error::Vectors(format!("{field}: not hex: {e}")))?;
    b.try_into()
        .map_err(|b: Vec<u8>| Error::Vectors(format!("{field}: {} bytes, expected {N}", b.len())))
}

fn input_b64(s: &str, field: &str) -> Result<Vec<u8>> {
    B64.decode(s.trim())
        .map_err(|e| Error::Vectors(format!("{field}: not base64: {e}")))
}

// ---------------------------------------------------------------- gaen

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct GaenCase {
    tek: String,
    rolling_start_interval_number: u32,
    metadata: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rpik: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aemk: Option<String>,
    identifiers: Vec<GaenId>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct GaenId {
    interval: u32,
    rpi: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    aem: Option<String>,
}

fn check_gaen(v: &Value, c: &mut Checker) -> Result<()> {
    let g: GaenCase = case(v)?;
    let tek = Tek::from_bytes(input_hex(&g.tek, "tek")?);
    let md = Metadata::from_bytes(input_hex(&g.metadata, "metadata")?);
    let rpik = tek.rpik();
    let aemk = tek.aemk();
    if let Some(e) = &g.rpik {
        c.hex("rpik", e, rpik.as_bytes());
    }
    if let Some(e) = &g.aemk {
        c.hex("aemk", e, aemk.as_bytes());
    }
    for (j, id) in g.identifiers.iter().enumerate() {
        let rpi = rpik.rpi(Enin(id.interval));
        c.hex(format!("identifiers[{j}].rpi"), &id.rpi, &rpi.0);
        if let Some(e) = &id.aem {
            c.hex(
                format!("identifiers[{j}].aem"),
                e,
                &aemk.encrypt(&rpi, &md).0,
            );
        }
    }
    Ok(())
}

fn gen_gaen(rng: &mut ChaCha20Rng, i: usize) -> Result<Value> {
    let tek = Tek::generate(rng);
    // Days between 2020 and 2030, day-aligned like every key this crate makes.
    let day = rng.gen_range(18_300u32..21_900);
    let rsin = day * 144;
    let md = Metadata::v1(rng.gen_range(-40i8..=20));
    let rpik = tek.rpik();
    let aemk = tek.aemk();
    // The first case lists the whole rolling period; the others a random sample.
    let intervals: Vec<u32> = if i == 0 {
        (0..144).collect()
    } else {
        let mut v: Vec<u32> = (0..8).map(|_| rng.gen_range(0..144)).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let identifiers = intervals
        .into_iter()
        .map(|j| {
            let rpi = rpik.rpi(Enin(rsin + j));
            GaenId {
                interval: rsin + j,
                rpi: hex::encode(rpi.0),
                aem: Some(hex::encode(aemk.encrypt(&rpi, &md).0)),
            }
        })
        .collect();
    to_value(GaenCase {
        tek: hex::encode(tek.as_bytes()),
        rolling_start_interval_number: rsin,
        metadata: hex::encode(md.to_bytes()),
        rpik: Some(hex::encode(rpik.as_bytes())),
        aemk: Some(hex::encode(aemk.as_bytes())),
        identifiers,
    })
}

fn to_value<T: Serialize>(t: T) -> Result<Value> {
    serde_json::to_value(t).map_err(|e| Error::Vectors(e.to_string()))
}

// ---------------------------------------------------------------- low-cost

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LowCostCase {
    sk: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_sk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ephids: Option<Vec<IndexedEphId>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct IndexedEphId {
    index: usize,
    ephid: String,
}

fn check_lowcost(v: &Value, c: &mut Checker) -> Result<()> {
    let l: LowCostCase = case(v)?;
    let sk = DayKey::from_bytes(input_hex(&l.sk, "sk")?);
    if let Some(e) = &l.next_sk {
        c.hex("next_sk", e, sk.next().as_bytes());
    }
    if let Some(e) = &l.prf {
        c.hex("prf", e, &sk.prf());
    }
    if let Some(list) = &l.ephids {
        let all = sk.ephids();
        check_indexed(c, list, &all)?;
    }
    Ok(())
}

fn check_indexed(c: &mut Checker, list: &[IndexedEphId], all: &[EphId]) -> Result<()> {
    for (j, e) in list.iter().enumerate() {
        let actual = all.get(e.index).ok_or_else(|| {
            Error::Vectors(format!(
                "ephids[{j}].index {} out of range 0..{}",
                e.index,
                all.len()
            ))
        })?;
        c.hex(format!("ephids[{j}].ephid"), &e.ephid, &actual.0);
    }
    Ok(())
}

fn gen_lowcost(rng: &mut ChaCha20Rng, _i: usize) -> Result<Value> {
    let sk = DayKey::generate(rng);
    let ephids = sk
        .ephids()
        .iter()
        .enumerate()
        .map(|(index, e)| IndexedEphId {
            index,
            ephid: hex::encode(e.0),
        })
        .collect();
    to_value(LowCostCase {
        sk: hex::encode(sk.as_bytes()),
        next_sk: Some(hex::encode(sk.next().as_bytes())),
        prf: Some(hex::encode(sk.prf())),
        ephids: Some(ephids),
    })
}

// ---------------------------------------------------------------- unlinkable

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct UnlinkableCase {
    seed: String,
    ephid: String,
    observations: Vec<Observation>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Observation {
    epoch: u32,
    hashed: String,
}

fn check_unlinkable(v: &Value, c: &mut Checker) -> Result<()> {
    let u: UnlinkableCase = case(v)?;
    let seed = EpochSeed::from_bytes(input_hex(&u.seed, "seed")?);
    let ephid = seed.ephid();
    c.hex("ephid", &u.ephid, &ephid.0);
    for (j, o) in u.observations.iter().enumerate() {
        let h = HashedObservation::new(&ephid, Epoch(o.epoch));
        c.hex(format!("observations[{j}].hashed"), &o.hashed, &h.0);
    }
    Ok(())
}

fn gen_unlinkable(rng: &mut ChaCha20Rng, _i: usize) -> Result<Value> {
    let seed = EpochSeed::generate(rng);
    let ephid = seed.ephid();
    let base = rng.gen_range(1_752_000u32..2_102_400);
    let observations = (0..3)
        .map(|k| {
            let epoch = Epoch(base + k * rng.gen_range(0..4));
            Observation {
                epoch: epoch.0,
                hashed: hex::encode(HashedObservation::new(&ephid, epoch).0),
            }
        })
        .collect();
    to_value(UnlinkableCase {
        seed: hex::encode(seed.as_bytes()),
        ephid: hex::encode(ephid.0),
        observations,
    })
}

// ---------------------------------------------------------------- hybrid

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HybridCase {
    seed: String,
    window_minutes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    prf: Option<String>,
    ephids: Vec<IndexedEphId>,
}

fn check_hybrid(v: &Value, c: &mut Checker) -> Result<()> {
    let h: HybridCase = case(v)?;
    let seed = WindowSeed::from_bytes(input_hex(&h.seed, "seed")?);
    let w = WindowMinutes::new(h.window_minutes)
        .map_err(|e| Error::Vectors(format!("window_minutes: {e}")))?;
    if let Some(e) = &h.prf {
        c.hex("prf", e, &seed.prf());
    }
    check_indexed(c, &h.ephids, &seed.ephids(w))
}

fn gen_hybrid(rng: &mut ChaCha20Rng, i: usize) -> Result<Value> {
    let seed = WindowSeed::generate(rng);
    // Walk through the allowed lengths so a file of 96 cases covers all of them.
    let minutes = 15 * (1 + (i as u32 * 37) % 96);
    let w = WindowMinutes::new(minutes)?;
    let ephids = seed
        .ephids(w)
        .iter()
        .enumerate()
        .map(|(index, e)| IndexedEphId {
            index,
            ephid: hex::encode(e.0),
        })
        .collect();
    to_value(HybridCase {
        seed: hex::encode(seed.as_bytes()),
        window_minutes: minutes,
        prf: Some(hex::encode(seed.prf())),
        ephids,
    })
}

// ---------------------------------------------------------------- cuckoo

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CuckooCase {
    filter: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    present: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    absent: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    invalid: bool,
}

fn check_cuckoo(v: &Value, c: &mut Checker) -> Result<()> {
    let k: CuckooCase = case(v)?;
    let bytes = input_b64(&k.filter, "filter")?;
    let parsed = CuckooFilter::parse(&bytes);
    if k.invalid {
        let seen = if parsed.is_ok() {
            "accepted"
        } else {
            "rejected"
        };
        c.eq("invalid", "rejected", seen);
        return Ok(());
    }
    let filter = match parsed {
        Ok(f) => f,
        Err(e) => {
            c.checked += 1;
            c.push(
                "filter",
                "a valid DPCF filter".into(),
                format!("rejected: {e}"),
            );
            return Ok(());
        }
    };
    for (field, list, want) in [("present", &k.present, true), ("absent", &k.absent, false)] {
        for (j, h) in list.iter().enumerate() {
            let x: [u8; 32] = input_hex(h, field)?;
            let got = filter.contains(&x);
            c.eq(format!("{field}[{j}]"), want, got);
        }
    }
    Ok(())
}

fn gen_cuckoo(rng: &mut ChaCha20Rng, i: usize) -> Result<Value> {
    // Two valid filters for every invalid one.
    if i % 3 == 2 {
        return gen_cuckoo_invalid(rng, i / 3);
    }
    let f = [8u8, 12, 16, 24, 32, 40, 48, 56, 64][rng.gen_range(0..9)];
    let b = rng.gen_range(1u8..=8);
    let n = rng.gen_range(0usize..200);
    let items: Vec<[u8; 32]> = (0..n).map(|_| rng.gen()).collect();
    let filter = FilterBuilder::new()
        .fingerprint_bits(f)?
        .bucket_size(b)?
        .build(&items)?;
    let present = items.iter().take(20).map(hex::encode).collect();
    let mut absent = Vec::new();
    while absent.len() < 10 {
        let x: [u8; 32] = rng.gen();
        // At small f a random entry may be a false positive; only list true negatives.
        if !filter.contains(&x) {
            absent.push(hex::encode(x));
        }
    }
    to_value(CuckooCase {
        filter: B64.encode(filter.to_bytes()),
        present,
        absent,
        invalid: false,
    })
}

fn gen_cuckoo_invalid(rng: &mut ChaCha20Rng, kind: usize) -> Result<Value> {
    let items: Vec<[u8; 32]> = (0..rng.gen_range(1usize..40)).map(|_| rng.gen()).collect();
    let filter = FilterBuilder::new().build(&items)?;
    let mut b = filter.to_bytes();
    let slot_bytes = 6; // f = 48
    match kind % 12 {
        0 => b[0] = b'X',                       // magic
        1 => b[4] = 2,                          // version
        2 => b[5] = 7,                          // f too small
        3 => b[5] = 65,                         // f too large
        4 => b[6] = 0,                          // b = 0
        5 => b[6] = 9,                          // b too large
        6 => b[8..12].copy_from_slice(&[0; 4]), // m = 0
        7 => b[7] = 1,                          // reserved
        8 => b.truncate(b.len() - 1),           // one byte short
        9 => b.push(0),                         // one byte long
        10 => b.truncate(rng.gen_range(0..16)), // shorter than the header
        _ => {
            // f = 40 in the header over 6-byte slots: lengths no longer agree.
            b[5] = 40;
            let _ = slot_bytes;
        }
    }
    to_value(CuckooCase {
        filter: B64.encode(b),
        present: vec![],
        absent: vec![],
        invalid: true,
    })
}

// ---------------------------------------------------------------- gaen-export

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ExportCase {
    zip: String,
    public_key_pem: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<VectorKey>>,
}

#[derive(Deserialize, Serialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
struct VectorKey {
    key_data: String,
    rolling_start_interval_number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    rolling_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transmission_risk_level: Option<i32>,
}

fn check_export(v: &Value, c: &mut Checker) -> Result<()> {
    let x: ExportCase = case(v)?;
    let zip = input_b64(&x.zip, "zip")?;
    let pk = PublicKey::from_pem(&x.public_key_pem)
        .map_err(|e| Error::Vectors(format!("public_key_pem: {e}")))?;
    let batch = match export::read_verified_export(&zip, &pk) {
        Ok(b) => b,
        Err(e) => {
            c.eq("valid", x.valid, false);
            if x.valid {
                if let Some(m) = c.out.last_mut() {
                    m.actual = format!("false ({e})");
                }
            }
            return Ok(());
        }
    };
    c.eq("valid", x.valid, true);
    if !x.valid {
        return Ok(());
    }
    if let Some(r) = &x.region {
        c.eq("region", r.as_str(), batch.region.as_str());
    }
    if let Some(t) = x.start_timestamp {
        c.eq("start_timestamp", t, batch.start_timestamp);
    }
    if let Some(t) = x.end_timestamp {
        c.eq("end_timestamp", t, batch.end_timestamp);
    }
    if let Some(keys) = &x.keys {
        c.eq("keys.length", keys.len(), batch.keys.len());
        // Order within an export carries no meaning (§9.1): compare both sides sorted.
        let mut want: Vec<&VectorKey> = keys.iter().collect();
        want.sort_by(|a, b| {
            (
                a.key_data.to_ascii_lowercase(),
                a.rolling_start_interval_number,
            )
                .cmp(&(
                    b.key_data.to_ascii_lowercase(),
                    b.rolling_start_interval_number,
                ))
        });
        let mut have: Vec<&ExportKey> = batch.keys.iter().collect();
        have.sort_by_key(|k| (k.key_data, k.rolling_start_interval_number));
        for (j, (w, h)) in want.iter().zip(have.iter()).enumerate() {
            c.hex(format!("keys[{j}].key_data"), &w.key_data, &h.key_data);
            c.eq(
                format!("keys[{j}].rolling_start_interval_number"),
                w.rolling_start_interval_number,
                h.rolling_start_interval_number,
            );
            if let Some(p) = w.rolling_period {
                c.eq(format!("keys[{j}].rolling_period"), p, h.rolling_period);
            }
            if let Some(t) = w.transmission_risk_level {
                c.eq(
                    format!("keys[{j}].transmission_risk_level"),
                    t,
                    h.transmission_risk_level,
                );
            }
        }
    }
    Ok(())
}

fn gen_export(rng: &mut ChaCha20Rng, i: usize) -> Result<Value> {
    let key = SigningKey::generate(rng);
    let pem = key.public_key().to_pem()?;
    let day = rng.gen_range(18_300u32..21_900);
    let mut keys: Vec<ExportKey> = (0..rng.gen_range(1usize..12))
        .map(|_| ExportKey {
            key_data: rng.gen(),
            rolling_start_interval_number: (day - rng.gen_range(0..14)) * 144,
            rolling_period: if rng.gen_bool(0.8) {
                144
            } else {
                rng.gen_range(1..=144)
            },
            transmission_risk_level: rng.gen_range(0..=8),
            report_type: Some(1),
            days_since_onset_of_symptoms: None,
        })
        .collect();
    keys.sort_by_key(|k| k.key_data);
    let start = u64::from(day) * 86_400;
    let batch = ExportBatch {
        start_timestamp: start,
        end_timestamp: start + 7_200,
        region: ["CH", "DE", "US", "BE"][rng.gen_range(0..4)].to_string(),
        batch_num: 1,
        batch_size: 1,
        keys: keys.clone(),
        revised_keys: vec![],
    };
    let info = SignatureInfo {
        verification_key_version: "v1".into(),
        verification_key_id: "dp3t-vectors".into(),
    };
    let zip = export::write_export_zip(&batch, &info, &key)?;
    let described = |valid: bool, zip: Vec<u8>, pem: String| ExportCase {
        zip: B64.encode(zip),
        public_key_pem: pem,
        valid,
        region: valid.then(|| batch.region.clone()),
        start_timestamp: valid.then_some(batch.start_timestamp),
        end_timestamp: valid.then_some(batch.end_timestamp),
        keys: valid.then(|| {
            keys.iter()
                .map(|k| VectorKey {
                    key_data: hex::encode(k.key_data),
                    rolling_start_interval_number: k.rolling_start_interval_number,
                    rolling_period: Some(k.rolling_period),
                    transmission_risk_level: Some(k.transmission_risk_level),
                })
                .collect()
        }),
    };
    // Half the cases are valid; the others must fail, each in its own way.
    let case = match i % 10 {
        0 | 2 | 4 | 6 | 8 => described(true, zip, pem),
        1 => {
            // A byte of export.bin flipped (past the header), then re-zipped.
            let mut entries = unzip(&zip)?;
            if let Some(bin) = entries.get_mut("export.bin") {
                let at = rng.gen_range(16..bin.len());
                bin[at] ^= 0x01;
            }
            described(false, rezip(&entries)?, pem)
        }
        3 => {
            // Signed by another key.
            let other = SigningKey::generate(rng).public_key().to_pem()?;
            described(false, zip, other)
        }
        5 => {
            let mut z = zip;
            z.truncate(z.len() / 2);
            described(false, z, pem)
        }
        7 => {
            let mut entries = unzip(&zip)?;
            entries.insert("extra.txt".into(), b"hello".to_vec());
            described(false, rezip(&entries)?, pem)
        }
        _ => {
            // A wrong header, signed correctly: the signature verifies but the file is
            // not an export.
            let mut entries = unzip(&zip)?;
            if let Some(bin) = entries.get_mut("export.bin") {
                bin[..16].copy_from_slice(b"EK Export v2    ");
            }
            described(false, rezip(&entries)?, pem)
        }
    };
    to_value(case)
}

fn zip_err(e: impl std::fmt::Display) -> Error {
    Error::Vectors(format!("zip: {e}"))
}

fn unzip(zip: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(zip_err)?;
    let mut out = BTreeMap::new();
    for i in 0..a.len() {
        let mut f = a.by_index(i).map_err(zip_err)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).map_err(zip_err)?;
        out.insert(f.name().map_err(zip_err)?.to_string(), v);
    }
    Ok(out)
}

fn rezip(entries: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).map_err(zip_err)?;
        w.write_all(data).map_err(zip_err)?;
    }
    Ok(w.finish().map_err(zip_err)?.into_inner())
}

// ---------------------------------------------------------------- exposure-score

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ScoreCase {
    config: VectorConfig,
    scans: Vec<VectorScan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weighted_minutes: Option<f64>,
    exposed: bool,
}

/// [`ScoringConfig`] as a vector file spells it. The core type ignores unknown fields; here
/// a misspelled threshold must be an error, so the file has its own strict mirror.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct VectorConfig {
    attenuation_low: i32,
    attenuation_medium: i32,
    factor_low: f64,
    factor_medium: f64,
    min_minutes: f64,
}

impl From<VectorConfig> for ScoringConfig {
    fn from(v: VectorConfig) -> Self {
        ScoringConfig {
            attenuation_low: v.attenuation_low,
            attenuation_medium: v.attenuation_medium,
            factor_low: v.factor_low,
            factor_medium: v.factor_medium,
            min_minutes: v.min_minutes,
        }
    }
}

impl From<ScoringConfig> for VectorConfig {
    fn from(v: ScoringConfig) -> Self {
        VectorConfig {
            attenuation_low: v.attenuation_low,
            attenuation_medium: v.attenuation_medium,
            factor_low: v.factor_low,
            factor_medium: v.factor_medium,
            min_minutes: v.min_minutes,
        }
    }
}

/// [`ScanInstance`] as a vector file spells it, strict for the same reason.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct VectorScan {
    attenuation_db: i32,
    seconds: u32,
}

fn check_score(v: &Value, c: &mut Checker) -> Result<()> {
    // The rule is defined for any thresholds and weights (even unordered thresholds), so
    // the verifier computes it as given instead of rejecting unusual configs.
    let s: ScoreCase = case(v)?;
    let config = ScoringConfig::from(s.config);
    let scans: Vec<ScanInstance> = s
        .scans
        .iter()
        .map(|x| ScanInstance {
            attenuation_db: x.attenuation_db,
            seconds: x.seconds,
        })
        .collect();
    let score = config.score_scans(&scans);
    if let Some(w) = s.weighted_minutes {
        c.checked += 1;
        if (w - score.weighted_minutes).abs() > 1e-9 {
            c.push(
                "weighted_minutes",
                w.to_string(),
                score.weighted_minutes.to_string(),
            );
        }
    }
    c.eq("exposed", s.exposed, score.exposed);
    Ok(())
}

fn gen_score(rng: &mut ChaCha20Rng, i: usize) -> Result<Value> {
    let config = if i % 4 == 3 {
        let low = rng.gen_range(40..70);
        ScoringConfig {
            attenuation_low: low,
            attenuation_medium: low + rng.gen_range(0..20),
            factor_low: f64::from(rng.gen_range(1u32..=8)) / 4.0,
            factor_medium: f64::from(rng.gen_range(0u32..=8)) / 8.0,
            min_minutes: f64::from(rng.gen_range(5u32..30)),
        }
    } else {
        ScoringConfig::default()
    };
    let edge = |rng: &mut ChaCha20Rng, around: i32| around + rng.gen_range(-1..=0);
    // Scans that sit on the bucket edges, with durations around the minimum.
    let mut scans = Vec::new();
    let target_secs = (config.min_minutes * 60.0) as u32;
    match i % 4 {
        0 => {
            // Near only, within a second of the minimum.
            let at = edge(rng, config.attenuation_low);
            scans.push(ScanInstance {
                attenuation_db: at,
                seconds: target_secs.saturating_sub(60) + rng.gen_range(0..=61),
            });
        }
        1 => {
            // Medium only, straddling the medium threshold.
            for _ in 0..rng.gen_range(1..5) {
                scans.push(ScanInstance {
                    attenuation_db: edge(rng, config.attenuation_medium),
                    seconds: rng.gen_range(60..900),
                });
            }
        }
        _ => {
            for _ in 0..rng.gen_range(1..8) {
                let a = match rng.gen_range(0..3) {
                    0 => edge(rng, config.attenuation_low),
                    1 => edge(rng, config.attenuation_medium),
                    _ => rng.gen_range(20..90),
                };
                scans.push(ScanInstance {
                    attenuation_db: a,
                    seconds: rng.gen_range(1..600),
                });
            }
        }
    }
    let score = config.score_scans(&scans);
    to_value(ScoreCase {
        config: config.into(),
        scans: scans
            .iter()
            .map(|x| VectorScan {
                attenuation_db: x.attenuation_db,
                seconds: x.seconds,
            })
            .collect(),
        weighted_minutes: Some(score.weighted_minutes),
        exposed: score.exposed,
    })
}

// ---------------------------------------------------------------- hpke-upload

/// A raw HPKE case: RFC 9180 base mode, sequence number 0.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HpkeCase {
    #[serde(skip_serializing_if = "Option::is_none")]
    ikm_e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ikm_r: Option<String>,
    sk_e: String,
    sk_r: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pk_r: Option<String>,
    info: String,
    aad: String,
    pt: String,
    enc: String,
    ct: String,
}

/// A sealed upload envelope (§16): built from its inputs and opened (`valid`), or one
/// that must not open.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeCase {
    sk_r: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sk_e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    padded_len: Option<usize>,
    envelope: String,
    valid: bool,
}

fn check_hpke(v: &Value, c: &mut Checker) -> Result<()> {
    use dp3t_core::sealed;
    if v.get("envelope").is_none() {
        let h: HpkeCase = case(v)?;
        let sk_e = input_hex::<32>(&h.sk_e, "sk_e")?;
        let sk_r = input_hex::<32>(&h.sk_r, "sk_r")?;
        let hexv = |s: &str, f: &str| {
            hex::decode(s).map_err(|e| Error::Vectors(format!("{f}: not hex: {e}")))
        };
        let (info, aad, pt) = (
            hexv(&h.info, "info")?,
            hexv(&h.aad, "aad")?,
            hexv(&h.pt, "pt")?,
        );
        if let Some(ikm) = &h.ikm_e {
            c.hex(
                "sk_e",
                &h.sk_e,
                sealed::derive_secret(&hexv(ikm, "ikm_e")?)?.as_ref(),
            );
        }
        if let Some(ikm) = &h.ikm_r {
            c.hex(
                "sk_r",
                &h.sk_r,
                sealed::derive_secret(&hexv(ikm, "ikm_r")?)?.as_ref(),
            );
        }
        let pk_r = sealed::OpeningKey::from_secret_bytes(sk_r, dp3t_core::time::UnixTime(0))
            .sealing_key()
            .public;
        if let Some(pk) = &h.pk_r {
            c.hex("pk_r", pk, &pk_r);
        }
        let (enc, ct) = sealed::hpke_base_seal(sk_e, &pk_r, &info, &aad, &pt)?;
        c.hex("enc", &h.enc, &enc);
        c.hex("ct", &h.ct, &ct);
        // And the recipient opens the file's ciphertext to the plaintext.
        let opened = hexv(&h.ct, "ct").ok().and_then(|ct| {
            let enc: [u8; 32] = hex::decode(&h.enc).ok()?.try_into().ok()?;
            sealed::hpke_base_open(sk_r, &enc, &info, &aad, &ct).ok()
        });
        c.hex(
            "pt (opened)",
            &h.pt,
            opened.as_deref().map_or(&[][..], |p| &p[..]),
        );
        return Ok(());
    }
    let e: EnvelopeCase = case(v)?;
    let sk_r = input_hex::<32>(&e.sk_r, "sk_r")?;
    let key = sealed::OpeningKey::from_secret_bytes(sk_r, dp3t_core::time::UnixTime(u64::MAX));
    if let Some(id) = &e.key_id {
        c.hex("key_id", id, &key.sealing_key().key_id);
    }
    let envelope = input_b64(&e.envelope, "envelope")?;
    let opened = sealed::open_upload(std::slice::from_ref(&key), &envelope);
    c.eq("valid", e.valid, opened.is_ok());
    if !e.valid {
        return Ok(());
    }
    let (Some(sk_e), Some(route), Some(token), Some(body), Some(padded_len)) =
        (&e.sk_e, e.route, &e.token, &e.body, e.padded_len)
    else {
        return Err(Error::Vectors(
            "a valid envelope needs sk_e, route, token, body and padded_len".into(),
        ));
    };
    let sk_e = input_hex::<32>(sk_e, "sk_e")?;
    let route = sealed::SealedRoute::from_code(route)
        .ok_or_else(|| Error::Vectors(format!("route: unknown code {route}")))?;
    let body = input_b64(body, "body")?;
    let built = sealed::seal_upload_with_ephemeral(
        key.sealing_key(),
        sk_e,
        route,
        token,
        &body,
        padded_len,
    )?;
    c.eq("envelope", e.envelope.trim().to_owned(), B64.encode(&built));
    if let Ok(o) = opened {
        c.eq("route (opened)", route.code(), o.route.code());
        c.eq("token (opened)", token.clone(), o.token);
        c.eq("body (opened)", B64.encode(&body), B64.encode(&o.body));
    }
    Ok(())
}

/// Case 0: RFC 9180 Appendix A.2.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
/// ChaCha20-Poly1305, base mode, sequence number 0). Then sealed upload envelopes, one in
/// four of them damaged so that it must not open.
fn gen_hpke(rng: &mut ChaCha20Rng, i: usize) -> Result<Value> {
    use dp3t_core::engine::Scheme as S;
    use dp3t_core::sealed::{self, SealedRoute};
    if i == 0 {
        return to_value(HpkeCase {
            ikm_e: Some("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b".into()),
            ikm_r: Some("1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df".into()),
            sk_e: "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600".into(),
            sk_r: "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb".into(),
            pk_r: Some("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a".into()),
            info: "4f6465206f6e2061204772656369616e2055726e".into(),
            aad: "436f756e742d30".into(),
            pt: "4265617574792069732074727574682c20747275746820626561757479".into(),
            enc: "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a".into(),
            ct: "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28".into(),
        });
    }
    let sk_r: [u8; 32] = rng.gen();
    let sk_e: [u8; 32] = rng.gen();
    let key = sealed::OpeningKey::from_secret_bytes(sk_r, dp3t_core::time::UnixTime(u64::MAX));
    let route = SealedRoute::ALL[i % SealedRoute::ALL.len()];
    // The low-cost and GAEN sizes keep the file small; the layout is the same for all.
    let scheme = if i.is_multiple_of(3) {
        S::Gaen
    } else {
        S::LowCost
    };
    let padded_len = sealed::padded_len(scheme, WindowMinutes::DEFAULT);
    let token_len = rng.gen_range(0..900);
    let token: String = (0..token_len)
        .map(|_| {
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
                    [rng.gen_range(0..65)],
            )
        })
        .collect();
    let body_len = rng.gen_range(0..=600);
    let mut body = vec![0u8; body_len];
    rng.fill(&mut body[..]);
    let mut envelope = sealed::seal_upload_with_ephemeral(
        key.sealing_key(),
        sk_e,
        route,
        &token,
        &body,
        padded_len,
    )?;
    let valid = !i.is_multiple_of(4);
    if !valid {
        match (i / 4) % 5 {
            0 => {
                let at = rng.gen_range(sealed::HEADER_LEN..envelope.len());
                envelope[at] ^= 1 << rng.gen_range(0..8);
            }
            1 => envelope[0] = 2,
            2 => envelope[1 + rng.gen_range(0..sealed::KEY_ID_LEN)] ^= 0x10,
            3 => envelope.truncate(rng.gen_range(0..envelope.len())),
            _ => {
                // A well-sealed plaintext whose padding is not all zeros.
                let mut pt = vec![route.code(), 0, 0, 0, 0, 0, 0];
                pt.resize(padded_len, 0);
                let last = pt.len() - 1;
                pt[last] = 1;
                let aad = &envelope[..1 + sealed::KEY_ID_LEN].to_vec();
                let (enc, ct) = sealed::hpke_base_seal(
                    sk_e,
                    &key.sealing_key().public,
                    sealed::INFO,
                    aad,
                    &pt,
                )?;
                envelope.truncate(1 + sealed::KEY_ID_LEN);
                envelope.extend_from_slice(&enc);
                envelope.extend_from_slice(&ct);
            }
        }
    }
    to_value(EnvelopeCase {
        sk_r: hex::encode(sk_r),
        key_id: Some(hex::encode(key.sealing_key().key_id)),
        sk_e: valid.then(|| hex::encode(sk_e)),
        route: valid.then(|| route.code()),
        token: valid.then_some(token),
        body: valid.then(|| B64.encode(&body)),
        padded_len: valid.then_some(padded_len),
        envelope: B64.encode(&envelope),
        valid,
    })
}

/// Generate a file of `count` deterministic cases of `scheme` from `seed`.
pub fn generate(scheme: VectorKind, count: usize, seed: u64) -> Result<VectorFile> {
    if count == 0 {
        return Err(Error::Vectors(format!("count is 0: {NO_CASES}")));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let g: fn(&mut ChaCha20Rng, usize) -> Result<Value> = match scheme {
        VectorKind::Gaen => gen_gaen,
        VectorKind::LowCost => gen_lowcost,
        VectorKind::Unlinkable => gen_unlinkable,
        VectorKind::Hybrid => gen_hybrid,
        VectorKind::Cuckoo => gen_cuckoo,
        VectorKind::GaenExport => gen_export,
        VectorKind::ExposureScore => gen_score,
        VectorKind::HpkeUpload => gen_hpke,
    };
    let cases = (0..count).map(|i| g(&mut rng, i)).collect::<Result<_>>()?;
    Ok(VectorFile {
        scheme,
        source: format!(
            "dp3t-rs `dp3t vectors generate --scheme {scheme} --count {count} --seed {seed}`"
        ),
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_verify_for_every_scheme() {
        for scheme in VectorKind::ALL {
            let f = generate(scheme, 12, 7).unwrap();
            let json = f.to_json();
            let back = parse_file(json.as_bytes()).unwrap();
            let r = verify(&back).unwrap();
            assert_eq!(
                (r.passed, r.failed),
                (12, 0),
                "{scheme}: {:?}",
                r.mismatches
            );
        }
    }

    #[test]
    fn generation_is_deterministic() {
        let a = generate(VectorKind::Gaen, 3, 42).unwrap().to_json();
        let b = generate(VectorKind::Gaen, 3, 42).unwrap().to_json();
        assert_eq!(a, b);
        assert_ne!(a, generate(VectorKind::Gaen, 3, 43).unwrap().to_json());
    }

    #[test]
    fn one_wrong_byte_is_a_mismatch() {
        let mut f = generate(VectorKind::LowCost, 2, 1).unwrap();
        let s = f.cases[1]["prf"].as_str().unwrap().to_string();
        let flipped = format!("{}{}", if s.starts_with('0') { "1" } else { "0" }, &s[1..]);
        f.cases[1]["prf"] = Value::String(flipped);
        let r = verify(&f).unwrap();
        assert_eq!((r.passed, r.failed), (1, 1));
        assert_eq!(r.mismatches[0].case, 1);
        assert_eq!(r.mismatches[0].field, "prf");
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(parse_file(b"{").is_err());
        assert!(parse_file(br#"{"format":"x","scheme":"gaen","cases":[]}"#).is_err());
        let unknown = parse_file(br#"{"format":"dp3t-spec-vectors/1","scheme":"nope","cases":[]}"#);
        assert!(matches!(unknown, Err(Error::Vectors(m)) if m.contains("unknown scheme")));
        let f = parse_file(
            br#"{"format":"dp3t-spec-vectors/1","scheme":"gaen","cases":[{"tek":"00"}]}"#,
        )
        .unwrap();
        assert!(verify(&f).is_err());
    }

    /// The message of a file-level error, for asserting on it.
    fn error_of(json: &str) -> String {
        match parse_file(json.as_bytes()).and_then(|f| verify(&f)) {
            Ok(r) => panic!("accepted: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unknown_fields_are_errors_that_name_the_field() {
        // A misspelled optional output holding a wrong value must not pass silently.
        let f = generate(VectorKind::LowCost, 3, 1).unwrap();
        let json = f.to_json().replacen("\"next_sk\"", "\"nextSk\"", 1);
        let json = json.replacen("\"nextSk\": \"", "\"nextSk\": \"ff", 1);
        let e = error_of(&json);
        assert!(e.contains("case 0") && e.contains("nextSk"), "{e}");
        // At the top of the file, in a nested list, and inside a scoring config.
        let e =
            error_of(r#"{"format":"dp3t-spec-vectors/1","scheme":"gaen","cases":[],"sourec":"x"}"#);
        assert!(e.contains("sourec"), "{e}");
        let g = generate(VectorKind::Gaen, 1, 1).unwrap().to_json();
        let e = error_of(&g.replacen("\"rpi\":", "\"rpi_typo\": \"00\", \"rpi\":", 1));
        assert!(e.contains("rpi_typo"), "{e}");
        let x = generate(VectorKind::ExposureScore, 1, 1).unwrap().to_json();
        let e = error_of(&x.replacen("\"min_minutes\"", "\"minMinutes\": 1, \"min_minutes\"", 1));
        assert!(e.contains("minMinutes"), "{e}");
        let e = error_of(&x.replacen("\"seconds\"", "\"secs\": 1, \"seconds\"", 1));
        assert!(e.contains("secs"), "{e}");
    }

    #[test]
    fn a_case_that_checks_no_output_is_an_error() {
        let head = r#"{"format":"dp3t-spec-vectors/1","scheme":"#;
        let sk = "00".repeat(32);
        let filter = FilterBuilder::new().build(&[[1u8; 32]]).unwrap();
        for (scheme, case) in [
            ("dp3t-lowcost", format!(r#"{{"sk":"{sk}"}}"#)),
            ("dp3t-lowcost", format!(r#"{{"sk":"{sk}","ephids":[]}}"#)),
            (
                "gaen",
                format!(
                    r#"{{"tek":"{}","rolling_start_interval_number":0,"metadata":"40000000","identifiers":[]}}"#,
                    "00".repeat(16)
                ),
            ),
            (
                "dp3t-hybrid",
                format!(
                    r#"{{"seed":"{}","window_minutes":60,"ephids":[]}}"#,
                    "00".repeat(16)
                ),
            ),
            (
                "dp3t-cuckoo",
                format!(r#"{{"filter":"{}"}}"#, B64.encode(filter.to_bytes())),
            ),
        ] {
            let e = error_of(&format!(r#"{head}"{scheme}","cases":[{case}]}}"#));
            assert!(
                e.contains("case 0") && e.contains("checks no output"),
                "{scheme}: {e}"
            );
        }
    }

    #[test]
    fn hpke_upload_vectors_catch_a_wrong_byte() {
        let f = generate(VectorKind::HpkeUpload, 9, 3).unwrap();
        assert_eq!(verify(&f).unwrap().failed, 0);
        // A flipped ciphertext byte in the RFC case, and a valid envelope said invalid.
        let mut bad = f.clone();
        let ct = bad.cases[0]["ct"].as_str().unwrap().replacen('1', "0", 1);
        bad.cases[0]["ct"] = Value::String(ct);
        bad.cases[1]["valid"] = Value::Bool(false);
        let r = verify(&bad).unwrap();
        assert_eq!(r.failed, 2, "{:?}", r.mismatches);
        assert!(r.mismatches.iter().any(|m| m.field == "ct"));
        assert!(r.mismatches.iter().any(|m| m.field == "valid"));
    }

    #[test]
    fn a_file_without_cases_is_an_error() {
        for scheme in VectorKind::ALL {
            let e = error_of(&format!(
                r#"{{"format":"dp3t-spec-vectors/1","scheme":"{scheme}","cases":[]}}"#
            ));
            assert!(e.contains("no cases"), "{scheme}: {e}");
        }
        assert!(generate(VectorKind::Gaen, 0, 1).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(f) = parse_file(&bytes) {
                let _ = verify(&f);
            }
        }
    }
}
