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
        assert_eq!(grant.onset.iso(), "2024-03-01");
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

/// Spawn `dp3t-backend serve` with `args` and `env` on free ports, wait for the URL it
/// prints (bounded), and return the child and the URL.
fn spawn_serve(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (std::process::Child, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .env("DP3T_BIND", "127.0.0.1:0")
        .env("DP3T_METRICS_BIND", "127.0.0.1:0")
        .env_remove("DP3T_DATABASE_URL")
        .env_remove("DP3T_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
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
    (child, url)
}

/// SIGTERM, then wait (bounded) for a clean exit.
fn stop(mut child: std::process::Child) {
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
}

/// Run `dp3t-backend` with `args` and `env` (no DP3T_DATABASE_URL of the caller's) to its
/// end; a command still running after 30 s (a server that started when it should have
/// refused) is killed and fails the test.
fn run_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DP3T_DATABASE_URL")
        .env_remove("DP3T_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_within(cmd, Duration::from_secs(30))
}

/// Run `cmd` to its end; one still running after `limit` (a server that started when it
/// should have refused) is killed and fails the test.
fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn migrate_creates_the_sqlite_database_and_no_migrate_only_checks_it() {
    let dir = temp_dir("migrate");
    let env = [("DP3T_DATA_DIR", dir.as_os_str())];
    // Regression: `serve` always ran the migrator. With --no-migrate (or
    // DP3T_MIGRATE=false) a missing schema is refused with a message that says what to do.
    for (args, extra) in [
        (&["serve", "--no-migrate"][..], None),
        (
            &["serve"][..],
            Some(("DP3T_MIGRATE", std::ffi::OsStr::new("false"))),
        ),
    ] {
        let mut env = env.to_vec();
        env.extend(extra);
        env.push(("DP3T_BIND", std::ffi::OsStr::new("127.0.0.1:0")));
        env.push(("DP3T_METRICS_BIND", std::ffi::OsStr::new("127.0.0.1:0")));
        let out = run_env(args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started without a schema");
        assert!(stderr.contains("dp3t-backend migrate"), "{stderr}");
        assert!(
            !dir.join("dp3t.db").exists(),
            "{args:?} created the database"
        );
    }
    let out = run_env(&["migrate"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("dp3t.db").exists());
    let (child, url) = spawn_serve(&["--no-migrate"], &env);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::get(format!("{url}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    stop(child);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: an unreachable database gave 30 s of silence and then "pool timed out".
/// A listener that accepts and never answers stands in for a blackholed database host;
/// a closed port for a stopped one.
#[test]
fn an_unreachable_database_is_named_within_seconds() {
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = blackhole.local_addr().unwrap();
    std::thread::spawn(move || {
        // Hold the accepted connections open, saying nothing, until the process ends.
        let mut conns = Vec::new();
        for c in blackhole.incoming().map_while(Result::ok) {
            conns.push(c);
        }
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for addr in [silent, closed] {
        let dir = temp_dir("unreachable");
        let url = format!("postgres://dp3t:secret-password@{addr}/dp3t");
        let started = Instant::now();
        let out = run_env(
            &["serve"],
            &[
                ("DP3T_DATA_DIR", dir.as_os_str()),
                ("DP3T_DATABASE_URL", std::ffi::OsStr::new(&url)),
                ("DP3T_BIND", std::ffi::OsStr::new("127.0.0.1:0")),
                ("DP3T_METRICS_BIND", std::ffi::OsStr::new("127.0.0.1:0")),
            ],
        );
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(&addr.to_string()), "{addr}: {stderr}");
        assert!(!stderr.contains("secret-password"), "{stderr}");
        // The bound is 5 s of connecting; the rest is process start and key loading.
        assert!(took < Duration::from_secs(15), "{addr}: {took:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
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

    stop(child);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: with no subcommand `dp3t-backend` started a server.
#[test]
fn no_subcommand_prints_help_and_serve_help_lists_every_setting() {
    let dir = temp_dir("nocmd");
    let mut cmd = Command::new(BIN);
    cmd.current_dir(&dir)
        .env("DP3T_BIND", "127.0.0.1:0")
        .env("DP3T_METRICS_BIND", "127.0.0.1:0");
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Usage: dp3t-backend <COMMAND>"), "{text}");
    assert!(text.contains("serve"), "{text}");
    assert!(!dir.join("dp3t-data").exists(), "it started a server");

    let out = run(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for s in backend::config::SETTINGS {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} [default: ", s.env)))
            .unwrap_or_else(|| panic!("{} missing from serve --help:\n{help}", s.env));
        if let Some(d) = s.default {
            assert!(line.contains(d), "{line}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: a bad port was reported only after the keys and the database were
/// created; `DP3T_BINDD` was silently ignored; a missing signing key was generated even
/// where the operator wanted none. Each is now refused before anything is written.
#[test]
fn bad_settings_are_refused_before_anything_is_written() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("DP3T_BIND", "127.0.0.1:99999")], "DP3T_BIND"),
        (&[("DP3T_BIND", &taken_addr)], "DP3T_BIND"),
        (&[("DP3T_METRICS_BIND", &taken_addr)], "DP3T_METRICS_BIND"),
        (
            &[("DP3T_BINDD", "0.0.0.0:8080")],
            "DP3T_BINDD (did you mean DP3T_BIND?)",
        ),
        (&[("DP3T_REQUIRE_KEYS", "true")], "signing-key.pem"),
    ];
    for (vars, expected) in cases {
        let dir = temp_dir("bad");
        let data = dir.join("data");
        let mut env = vec![
            ("DP3T_DATA_DIR", data.as_os_str()),
            ("DP3T_BIND", std::ffi::OsStr::new("127.0.0.1:0")),
            ("DP3T_METRICS_BIND", std::ffi::OsStr::new("127.0.0.1:0")),
        ];
        env.extend(vars.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(*v))));
        let out = run_env(&["serve"], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{vars:?} started");
        assert!(stderr.contains(expected), "{vars:?}: {stderr}");
        assert!(!data.exists(), "{vars:?} wrote into the data directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // With the keys provisioned, DP3T_REQUIRE_KEYS=true starts, and generates nothing.
    let dir = temp_dir("required");
    let out = run(&["keygen", "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success());
    for f in ["ha-dev-key.pem", "ha-dev-key.pub.pem"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let (child, url) = spawn_serve(
        &[],
        &[
            ("DP3T_DATA_DIR", dir.as_os_str()),
            ("DP3T_REQUIRE_KEYS", std::ffi::OsStr::new("true")),
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::get(format!("{url}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    stop(child);
    assert!(
        !dir.join("ha-dev-key.pem").exists(),
        "generated a dev HA key"
    );
    drop(taken);
    std::fs::remove_dir_all(&dir).unwrap();
}
