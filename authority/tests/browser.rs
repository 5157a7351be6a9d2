//! The staff web page in a real headless Chromium, driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`, installed by `.ci/run`), all on 127.0.0.1/localhost:
//!
//! 1. sign in as staff with password and TOTP;
//! 2. create a code for an onset date;
//! 3. read the code from the page;
//! 4. exchange it over HTTP at `/v1/onset` for a token;
//! 5. upload keys with the token to a running key server that trusts the authority's key;
//! 6. download the key server's signed export and find the keys in it.
//!
//! A screenshot of each page is saved under `target/authority-screenshots/` (shown in
//! docs/AUTHORITY.md). Without `chromedriver` on the PATH the test is skipped, unless
//! `DP3T_REQUIRE_BROWSER=1` (set by `.ci/run`), which turns the absence into a failure.
//! The authority runs with its production cookie settings (`__Host-`, `Secure`): Chromium
//! accepts secure cookies from `http://localhost`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{iso, today, Backend, Harness, KeyServer};
use fantoccini::{Client, ClientBuilder, Locator};

const PASSWORD: &str = "correct horse battery staple";

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| find_program(n))
}

async fn start_driver(program: &Path) -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(program)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{}/status", driver.url)).send().await {
            if r.status().is_success() {
                return driver;
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-extensions".to_owned(),
        "--window-size=1000,900".to_owned(),
        "--lang=en-US".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    args.sort();
    let mut options = serde_json::json!({ "args": args });
    if let Some(bin) = chromium() {
        options["binary"] = bin.display().to_string().into();
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("authority-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Wait for an element; on timeout, fail with the page the browser shows.
async fn wait_for(c: &Client, locator: Locator<'_>) {
    if c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(locator)
        .await
        .is_err()
    {
        let url = c
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let source = c.source().await.unwrap_or_default();
        panic!("{locator:?} not found on {url}:\n{source}");
    }
}

async fn text(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

async fn staff_page_to_published_key(driver: &Driver) {
    let h = Harness::start(Backend::Sqlite, |c| c.cookie_secure = true).await;
    let secret = h.add_staff("alice", PASSWORD).await;
    let ks = KeyServer::start(h.public_key_path()).await;
    let profile = std::env::temp_dir().join(common::unique("dp3t-chromium-profile"));
    let c = browser(driver, &profile).await;
    let base = h.server.as_ref().unwrap().url(); // http://localhost:port

    // 1. Sign in: password, then TOTP.
    c.goto(&format!("{base}/staff")).await.unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/staff/login"));
    shot(&c, "1-sign-in").await;
    c.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, Locator::Id("totp")).await;
    shot(&c, "2-second-factor").await;
    let otp = authority::totp::code_at(&secret, common::now());
    c.find(Locator::Id("totp"))
        .await
        .unwrap()
        .send_keys(&otp)
        .await
        .unwrap();
    c.find(Locator::Id("verify"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, Locator::Id("onset")).await;
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|k| k.name() == "__Host-dp3t-session")
        .expect("session cookie");
    assert_eq!(session.secure(), Some(true));
    assert_eq!(session.http_only(), Some(true));
    shot(&c, "3-staff-page").await;

    // 2. Create a code for an onset three days ago.
    let onset = today() - 3;
    c.find(Locator::Id("onset"))
        .await
        .unwrap()
        .select_by_value(&iso(onset))
        .await
        .unwrap();
    c.find(Locator::Id("create"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, Locator::Id("code")).await;
    // The print button is shown by our script (the CSP lets it run).
    wait_for(&c, Locator::Css("#print:not([hidden])")).await;
    shot(&c, "4-code").await;

    // 3. Read it from the page.
    let shown = text(&c, "code").await;
    let groups: Vec<&str> = shown.split_whitespace().collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [4, 4, 4],
        "{shown:?}"
    );
    assert!(text(&c, "code-onset").await.contains(&iso(onset)));

    // 4. Exchange it over HTTP, as the app does.
    let resp = h
        .exchange(serde_json::json!({"authorizationCode": shown, "fake": "0"}))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let token = resp.json::<serde_json::Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(common::claims(&token)["onset"], iso(onset));

    // 5. Upload keys to the key server with the token.
    let keys: Vec<[u8; 16]> = (0..3).map(|_| rand::random()).collect();
    assert_eq!(ks.upload(&token, &keys).await, 200);

    // 6. Download the export and find the keys.
    let published = ks
        .wait_for_keys(&keys.iter().copied().collect::<BTreeSet<_>>())
        .await;
    assert!(keys.iter().all(|k| published.contains(k)));

    // The counts on the page moved; revoke a second code; the audit page; German.
    c.goto(&format!("{base}/staff")).await.unwrap();
    assert_eq!(text(&c, "count-created").await, "1");
    assert_eq!(text(&c, "count-exchanged").await, "1");
    c.find(Locator::Id("onset"))
        .await
        .unwrap()
        .select_by_value(&iso(today()))
        .await
        .unwrap();
    c.find(Locator::Id("create"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, Locator::Id("code")).await;
    let second = text(&c, "code").await;
    c.find(Locator::Id("another"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, Locator::Id("revoke-code")).await;
    c.find(Locator::Id("revoke-code"))
        .await
        .unwrap()
        .send_keys(&second)
        .await
        .unwrap();
    c.find(Locator::Id("revoke"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, Locator::Css("p.notice")).await;
    assert_eq!(text(&c, "count-revoked").await, "1");
    shot(&c, "5-revoked").await;
    c.goto(&format!("{base}/staff/audit")).await.unwrap();
    assert!(c.source().await.unwrap().contains("staff:alice"));
    shot(&c, "6-audit-log").await;
    c.goto(&format!("{base}/staff/lang/de")).await.unwrap();
    wait_for(&c, Locator::Id("onset")).await;
    assert!(c.source().await.unwrap().contains("Code erstellen"));
    shot(&c, "7-german").await;
    c.find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, Locator::Id("username")).await;

    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    ks.finish().await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_signs_in_creates_a_code_and_its_keys_are_published() {
    let Some(program) = find_program("chromedriver") else {
        assert!(
            std::env::var_os("DP3T_REQUIRE_BROWSER").is_none(),
            "DP3T_REQUIRE_BROWSER is set but chromedriver is not on the PATH"
        );
        eprintln!("chromedriver not found: browser test skipped (apt-get install chromium chromium-driver)");
        return;
    };
    let driver = start_driver(&program).await;
    tokio::time::timeout(
        Duration::from_secs(180),
        staff_page_to_published_key(&driver),
    )
    .await
    .expect("the browser test finishes within 180 s");
}
