//! `dp3t-authority`: the health authority's upload-code service.
//!
//! ```text
//! dp3t-authority serve    [--config FILE]      run the service (the default command)
//! dp3t-authority migrate  [--config FILE]      apply database migrations and exit
//! dp3t-authority user add NAME                 create a staff account (password from stdin)
//! dp3t-authority user disable|enable NAME      lock or unlock an account
//! dp3t-authority apikey add|revoke NAME        API keys for lab systems (POST /v1/authcode)
//! dp3t-authority audit [--days N]              who created or revoked how many codes, per hour
//! dp3t-authority public-key                    print the public key for the key server
//! ```

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context};
use authority::config::{Config, LogFormat};
use authority::db::Db;
use authority::{api, server, staff, totp, unix_now};
use clap::{Parser, Subcommand};

/// The health authority's upload-code service (codes, tokens, staff web page).
#[derive(Parser)]
#[command(name = "dp3t-authority", version, about)]
struct Cli {
    /// TOML configuration file; DP3T_AUTHORITY_* environment variables override it.
    #[arg(long, global = true, env = "DP3T_AUTHORITY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (SQLite in ./dp3t-authority-data and 127.0.0.1:8081 unless configured).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Staff accounts of the embedded sign-in.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// API keys for lab systems.
    Apikey {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print the audit log: who created or revoked how many codes, per hour (UTC).
    Audit {
        /// How many days back.
        #[arg(long, default_value_t = 7)]
        days: u64,
    },
    /// Print the token-signing public key (PEM) to configure in the key server's
    /// DP3T_HA_PUBLIC_KEYS; creates the key pair on first use.
    PublicKey,
}

#[derive(Subcommand)]
enum UserAction {
    /// Create an account. The password is read from the first line of standard input
    /// (at least 12 characters); the TOTP secret is printed for an authenticator app.
    Add {
        /// Account name.
        name: String,
    },
    /// Lock an account and end its sessions.
    Disable {
        /// Account name.
        name: String,
    },
    /// Unlock an account.
    Enable {
        /// Account name.
        name: String,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create a key; it is printed once and only its hash is stored.
    Add {
        /// A name for the lab system (appears in the audit log).
        name: String,
    },
    /// Revoke a key.
    Revoke {
        /// The key's name.
        name: String,
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

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    actix_web::rt::System::new().block_on(f)
}

async fn open(config: &Config) -> anyhow::Result<Db> {
    server::open_database(config).await.with_context(|| {
        format!(
            "opening the {} database",
            if config.database_url.is_some() {
                "configured"
            } else {
                "SQLite"
            }
        )
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).context("loading the configuration")?;
    init_logging(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => block_on(async { Ok(server::serve(config).await?) }),
        Command::Migrate => block_on(async {
            let db = open(&config).await?;
            println!("migrations applied to the {} database", db.kind());
            db.close().await;
            Ok(())
        }),
        Command::User { action } => block_on(async {
            let db = open(&config).await?;
            match action {
                UserAction::Add { name } => {
                    let mut password = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut password)
                        .context("reading the password from standard input")?;
                    let password = password.trim_end_matches(['\r', '\n']);
                    let account = staff::add_account(&db, &name, password, unix_now()).await?;
                    println!("created staff account {name}");
                    println!(
                        "TOTP secret (enter it in an authenticator app): {}",
                        totp::base32_encode(&account.totp_secret)
                    );
                    println!(
                        "or as a URI: {}",
                        totp::otpauth_uri(&config.issuer, &name, &account.totp_secret)
                    );
                }
                UserAction::Disable { name } => {
                    if !db.set_staff_disabled(&name, true).await? {
                        bail!("no account {name:?}");
                    }
                    println!("disabled {name}; its sessions are ended");
                }
                UserAction::Enable { name } => {
                    if !db.set_staff_disabled(&name, false).await? {
                        bail!("no account {name:?}");
                    }
                    println!("enabled {name}");
                }
            }
            db.close().await;
            Ok(())
        }),
        Command::Apikey { action } => block_on(async {
            let db = open(&config).await?;
            match action {
                KeyAction::Add { name } => {
                    if !staff::valid_username(&name) {
                        bail!("key names are 1 to 64 letters, digits, '.', '_', '-' or '@'");
                    }
                    let key = api::new_api_key();
                    if !db
                        .insert_api_key(&name, &api::api_key_hash(&key), unix_now())
                        .await?
                    {
                        bail!("a key named {name:?} exists");
                    }
                    println!("{key}");
                    eprintln!("API key {name} created; it is shown only now. Use: Authorization: Bearer <key>");
                }
                KeyAction::Revoke { name } => {
                    if !db.revoke_api_key(&name).await? {
                        bail!("no key {name:?}");
                    }
                    println!("revoked {name}");
                }
            }
            db.close().await;
            Ok(())
        }),
        Command::Audit { days } => block_on(async {
            let db = open(&config).await?;
            let rows = db
                .audit_since(unix_now().saturating_sub(days * 86_400))
                .await?;
            println!(
                "{:<17} {:<32} {:<7} {:>6}",
                "hour (UTC)", "who", "what", "codes"
            );
            for r in rows {
                let day = authority::date::format_iso_date(authority::date::day_of(r.hour));
                println!(
                    "{day} {:02}:00 {:<32} {:<7} {:>6}",
                    r.hour % 86_400 / 3600,
                    r.actor,
                    r.action,
                    r.count
                );
            }
            db.close().await;
            Ok(())
        }),
        Command::PublicKey => {
            let (signer, _) = server::load_keys(&config)?;
            print!("{}", signer.public_pem());
            Ok(())
        }
    }
}
