//! The `dp3t-backend` binary: `keygen`, `token`, `migrate`, and `serve` started with no
//! setup at all, then stopped with SIGTERM.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backend::auth::{verify_upload_token, HaKeys};

const BIN: &str = env!("CARGO_BIN_EXE_dp3t-backend");

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dp3t-cli-{name}-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn keygen_then_token() {
    let dir = temp_dir("keygen");
    let d = dir.to_str().unwrap();
    let out = run(&["keygen", "--data-dir", d]);
    assert!(out.status.success());
    for f in [
        "signing-key.pem",
        "signing-key.pub.pem",
        "ha-dev-key.pem",
        "ha-dev-key.pub.pem",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    // The public key as the apps embed it: base64 of the PEM text, printed by keygen and
    // by pubkey, decoding to the key file exactly.
    let pem = std::fs::read_to_string(dir.join("signing-key.pub.pem")).unwrap();
    let out = run(&["pubkey", "--data-dir", d]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(printed.trim())
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), pem);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let out = run(&["keygen", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(printed.trim()));
    assert!(!run(&["pubkey", "--data-dir", "/nonexistent-dp3t"])
        .status
        .success());

    let before = std::fs::read(dir.join("ha-dev-key.pem")).unwrap();
    let out = run(&["keygen", "--data-dir", d]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing written"));
    assert_eq!(std::fs::read(dir.join("ha-dev-key.pem")).unwrap(), before);

    let mut keys = HaKeys::default();
    keys.add_file(&dir.join("ha-dev-key.pub.pem")).unwrap();
    for (extra, fake) in [(&[][..], false), (&["--fake"][..], true)] {
        let mut args = vec![
            "token",
            "--data-dir",
            d,
            "--onset",
            "2024-03-01",
            "--ttl-minutes",
            "15",
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap();
        let grant = verify_upload_token(token.trim(), &keys, backend::unix_now()).unwrap();
        assert_eq!(grant.fake, fake);
        assert_eq!(backend::date::format_iso_date(grant.onset), "2024-03-01");
        assert!(grant.expires_at <= backend::unix_now().0 + 15 * 60);
    }
    for bad in [
        vec!["token", "--data-dir", d, "--onset", "2024-02-30"],
        vec![
            "token",
            "--data-dir",
            d,
            "--onset",
            "2024-03-01",
            "--ttl-minutes",
            "61",
        ],
        vec![
            "token",
            "--data-dir",
            "/nonexistent-dp3t",
            "--onset",
            "2024-03-01",
        ],
    ] {
        let out = run(&bad);
        assert!(!out.status.success(), "{bad:?}");
        assert!(!out.stderr.is_empty());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let dir = temp_dir("migrate");
    let out = Command::new(BIN)
        .arg("migrate")
        .env("DP3T_DATA_DIR", &dir)
        .env_remove("DP3T_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("dp3t.db").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_needs_no_setup_and_stops_on_sigterm() {
    let dir = temp_dir("serve");
    let data = dir.join("data");
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("DP3T_DATA_DIR", &data)
        .env("DP3T_BIND", "127.0.0.1:0")
        .env("DP3T_METRICS_BIND", "127.0.0.1:0")
        .env_remove("DP3T_DATABASE_URL")
        .env_remove("DP3T_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server printed its URL");
    let url = line.split_whitespace().last().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server printed its metrics URL");
    let metrics_url = line.split_whitespace().last().unwrap().to_owned();
    assert!(metrics_url.ends_with("/metrics"), "{line}");
    assert_ne!(metrics_url, format!("{url}/metrics"));
    for f in [
        "dp3t.db",
        "signing-key.pem",
        "signing-key.pub.pem",
        "ha-dev-key.pem",
    ] {
        assert!(data.join(f).exists(), "{f}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status =
        |u: String| rt.block_on(async { reqwest::get(u).await.unwrap().status().as_u16() });
    assert_eq!(status(format!("{url}/healthz")), 200);
    // Metrics on their own listener only.
    assert_eq!(status(format!("{url}/metrics")), 404);
    assert_eq!(status(metrics_url), 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
