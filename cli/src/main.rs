//! `dp3t`: the command-line companion of dp3t-core.
//!
//! * `dp3t vectors verify FILE...` checks spec-vector files (PROTOCOL.md §11).
//! * `dp3t vectors generate --scheme S --count N [--seed X] [--out FILE]` writes them.
//! * `dp3t bench match …` measures local matching at national scale.
//! * `dp3t export verify ZIP --public-key PEM` checks and prints a GAEN export.
//! * `dp3t simulate [--preset P] …` simulates a population (docs/SIMULATION.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dp3t_testkit::vectors::{self, VectorKind};

/// `println!` that ignores a closed standard output (`dp3t vectors verify … | head`)
/// instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod bench;
mod simulate;

const SCHEMES_HELP: &str = "\
Schemes (PROTOCOL.md §11):
  gaen             Exposure Notification v1.2: TEK -> RPIK, AEMK, RPIs, AEMs
  dp3t-lowcost     DP-3T low-cost: day key -> next day key, PRF, the 96 EphIDs
  dp3t-unlinkable  DP-3T unlinkable: epoch seed -> EphID -> hashed observations
  dp3t-hybrid      DP-3T hybrid: window seed -> PRF -> the W/15 EphIDs of a window
  dp3t-cuckoo      DPCF Cuckoo filters: entries present and absent, and bytes to reject
  gaen-export      GAEN export zips that must or must not verify, and their contents
  exposure-score   attenuation scans and a config -> weighted minutes, exposed or not
  hpke-upload      HPKE base mode (RFC 9180) and sealed upload envelopes (§16) to open or refuse";

#[derive(Parser)]
#[command(name = "dp3t", version, about = "DP-3T / GAEN reference tooling", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check or generate spec-vector files.
    #[command(subcommand, after_help = SCHEMES_HELP)]
    Vectors(VectorsCmd),
    /// Benchmarks of the engine.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Inspect GAEN export files.
    #[command(subcommand)]
    Export(ExportCmd),
    /// Simulate a population: real engines on a sample of phones, a contact model for
    /// the rest; bandwidth, server storage, matching time, precision and recall per
    /// scheme (docs/SIMULATION.md).
    Simulate(simulate::SimulateArgs),
}

#[derive(Subcommand)]
enum ExportCmd {
    /// Parse a GAEN export zip, verify its signature with a PEM public key and print its
    /// contents as JSON. Exit status 0 when it verifies, 1 when it does not, 2 when the
    /// files cannot be read.
    Verify {
        /// The export zip (e.g. the body of `GET /v2/gaen/exposed`).
        zip: PathBuf,
        /// The server's public key (`signing-key.pub.pem`).
        #[arg(long)]
        public_key: PathBuf,
    },
}

#[derive(Subcommand)]
enum VectorsCmd {
    /// Check every field of every case of each FILE against this implementation.
    ///
    /// Prints one line per mismatch (file, case index, field, expected, actual), then
    /// `N passed, M failed` counting cases. Exit status: 0 all passed, 1 a case failed,
    /// 2 a file is malformed or names an unknown scheme.
    #[command(after_help = SCHEMES_HELP)]
    Verify {
        /// Vector files (JSON, format dp3t-spec-vectors/1).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write a file of deterministic random cases in the same format.
    #[command(after_help = SCHEMES_HELP)]
    Generate {
        /// The scheme (see below).
        #[arg(long)]
        scheme: String,
        /// Number of cases.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Seed of the deterministic RNG: the same seed gives the same file.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Match a synthetic published batch against a phone's synthetic sightings.
    Match(bench::MatchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Vectors(VectorsCmd::Verify { files }) => verify(&files),
        Cmd::Vectors(VectorsCmd::Generate {
            scheme,
            count,
            seed,
            out,
        }) => generate(&scheme, count, seed, out),
        Cmd::Bench(BenchCmd::Match(args)) => bench::run_match(&args),
        Cmd::Export(ExportCmd::Verify { zip, public_key }) => export_verify(&zip, &public_key),
        Cmd::Simulate(args) => simulate::run_cli(&args),
    }
}

fn export_verify(zip: &PathBuf, public_key: &PathBuf) -> ExitCode {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let inputs = read(zip).and_then(|z| {
        let pem = String::from_utf8(read(public_key)?)
            .map_err(|_| format!("{}: not UTF-8 PEM", public_key.display()))?;
        let pk = dp3t_core::signing::PublicKey::from_pem(&pem)
            .map_err(|e| format!("{}: {e}", public_key.display()))?;
        Ok((z, pk))
    });
    let (z, pk) = match inputs {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match dp3t_core::export::read_verified_export(&z, &pk) {
        Ok(batch) => {
            let keys: Vec<_> = batch
                .keys
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "key_data": k.key_data.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                        "rolling_start_interval_number": k.rolling_start_interval_number,
                        "rolling_period": k.rolling_period,
                        "transmission_risk_level": k.transmission_risk_level,
                    })
                })
                .collect();
            outln!(
                "{}",
                serde_json::json!({
                    "verified": true,
                    "region": batch.region,
                    "start_timestamp": batch.start_timestamp,
                    "end_timestamp": batch.end_timestamp,
                    "keys": keys,
                })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            outln!(
                "{}",
                serde_json::json!({"verified": false, "error": e.to_string()})
            );
            ExitCode::from(1)
        }
    }
}

fn verify(files: &[PathBuf]) -> ExitCode {
    let (mut passed, mut failed, mut malformed) = (0usize, 0usize, false);
    for path in files {
        let name = path.display();
        let parsed = std::fs::read(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|b| vectors::parse_file(&b).map_err(|e| e.to_string()))
            .and_then(|f| vectors::verify(&f).map_err(|e| e.to_string()));
        match parsed {
            Ok(report) => {
                for m in &report.mismatches {
                    outln!(
                        "{name}: case {}: {}: expected {}, actual {}",
                        m.case,
                        m.field,
                        m.expected,
                        m.actual
                    );
                }
                passed += report.passed;
                failed += report.failed;
            }
            Err(e) => {
                eprintln!("{name}: error: {e}");
                malformed = true;
            }
        }
    }
    outln!("{passed} passed, {failed} failed");
    if malformed {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn generate(scheme: &str, count: usize, seed: u64, out: Option<PathBuf>) -> ExitCode {
    let result = scheme
        .parse::<VectorKind>()
        .and_then(|s| vectors::generate(s, count, seed))
        .map_err(|e| e.to_string())
        .and_then(|f| match &out {
            Some(p) => std::fs::write(p, f.to_json())
                .map_err(|e| format!("cannot write {}: {e}", p.display())),
            None => {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(f.to_json().as_bytes());
                Ok(())
            }
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
