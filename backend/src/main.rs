//! `dp3t-backend`: the DP-3T key server binary.
//!
//! ```text
//! dp3t-backend serve   [--config FILE] [--no-migrate]
//!                                                run the server (`serve --help` lists every setting)
//! dp3t-backend migrate [--config FILE]          apply database migrations and exit
//! dp3t-backend keygen  --data-dir D              write signing and dev HA key pairs (development)
//! dp3t-backend pubkey  --data-dir D              print the public key as the apps embed it
//! dp3t-backend token   --data-dir D --onset YYYY-MM-DD [--fake] [--ttl-minutes N]
//!                                                print a dev upload token (development)
//! ```

use std::path::PathBuf;

use anyhow::Context;
use backend::config::{Config, LogFormat};
use backend::{keys, server, unix_now};
use clap::{Parser, Subcommand};

/// DP-3T key server (GAEN, DP-3T SDK v2 API).
///
/// `dp3t-backend serve` runs it; `dp3t-backend serve --help` lists every setting.
#[derive(Parser)]
#[command(name = "dp3t-backend", version, about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SQLite in ./dp3t-data and 127.0.0.1:8080 unless configured).
    #[command(after_help = backend::config::help_text())]
    Serve {
        /// TOML configuration file; DP3T_* environment variables override it.
        #[arg(long, env = "DP3T_CONFIG")]
        config: Option<PathBuf>,
        /// Do not apply migrations; refuse to start unless the schema is this binary's
        /// (same as DP3T_MIGRATE=false). For a database role without DDL rights, after
        /// `migrate` ran as the owner.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply database migrations and exit.
    #[command(after_help = backend::config::help_text())]
    Migrate {
        /// TOML configuration file; DP3T_* environment variables override it.
        #[arg(long, env = "DP3T_CONFIG")]
        config: Option<PathBuf>,
    },
    /// DEVELOPMENT: write signing-key.pem/.pub.pem and ha-dev-key.pem/.pub.pem into a
    /// directory (existing files are kept).
    Keygen {
        /// Target directory.
        #[arg(long, default_value = "./dp3t-data")]
        data_dir: PathBuf,
    },
    /// Print the server's public signing key as the DP-3T apps embed it: base64 of the
    /// PEM text (Android `getPublicKeyFromBase64`, iOS `jwtPublicKey`).
    Pubkey {
        /// Directory holding signing-key.pub.pem.
        #[arg(long, default_value = "./dp3t-data")]
        data_dir: PathBuf,
    },
    /// DEVELOPMENT: print an upload token signed with ha-dev-key.pem.
    Token {
        /// Directory holding ha-dev-key.pem.
        #[arg(long, default_value = "./dp3t-data")]
        data_dir: PathBuf,
        /// First contagious day, YYYY-MM-DD.
        #[arg(long)]
        onset: String,
        /// Mint a fake token (the upload is accepted but stores nothing).
        #[arg(long)]
        fake: bool,
        /// Validity in minutes (the server accepts at most 60).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=60))]
        ttl_minutes: u64,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// glibc keeps freed memory in per-thread arenas and, with its dynamic mmap threshold,
/// serves the megabyte buffers of download answers from them, so a node that built many
/// large answers stays at its high-water mark (BENCHMARKS.md, "Download cache bound":
/// 557 MiB peak with the 64 MiB cache bound; 248 MiB with this). A fixed threshold of
/// 128 KiB gives such buffers their own mappings, returned to the OS when freed. An
/// operator's `MALLOC_MMAP_THRESHOLD_` wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers_to_the_os() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter and is safe to call at any
        // time; it runs here first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

fn main() -> anyhow::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    return_large_buffers_to_the_os();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, no_migrate } => {
            let mut config = Config::load(config.as_deref())?;
            if no_migrate {
                config.migrate = false;
            }
            init_logging(config.log_format);
            Ok(actix_web::rt::System::new().block_on(server::serve(config))?)
        }
        Command::Migrate { config } => {
            let mut config = Config::load(config.as_deref())?;
            config.migrate = true;
            init_logging(config.log_format);
            actix_web::rt::System::new().block_on(async {
                let db = server::open_database(&config).await?;
                db.close().await;
                println!("migrations applied to the {} database", db.kind());
                anyhow::Ok(())
            })
        }
        Command::Keygen { data_dir } => {
            let written = keys::keygen(&data_dir)?;
            if written.is_empty() {
                println!(
                    "all key files already exist in {}; nothing written",
                    data_dir.display()
                );
            }
            for p in written {
                println!("wrote {}", p.display());
            }
            println!(
                "note: these are DEVELOPMENT keys (see docs/OPERATIONS.md for production keys)"
            );
            println!(
                "public key for the apps (base64 of the PEM): {}",
                keys::app_public_key(&data_dir)?
            );
            Ok(())
        }
        Command::Pubkey { data_dir } => {
            println!("{}", keys::app_public_key(&data_dir)?);
            Ok(())
        }
        Command::Token {
            data_dir,
            onset,
            fake,
            ttl_minutes,
        } => {
            let onset = dp3t_core::time::Day::parse_iso(&onset)
                .with_context(|| format!("--onset {onset:?} is not a YYYY-MM-DD date"))?;
            let token = keys::dev_token_from_dir(
                &data_dir,
                &keys::DevTokenRequest {
                    onset,
                    fake,
                    ttl_minutes,
                    now: unix_now(),
                },
            )?;
            println!("{token}");
            Ok(())
        }
    }
}
