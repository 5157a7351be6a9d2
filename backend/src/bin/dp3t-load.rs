//! `dp3t-load`: a small HTTP/1.1 load generator for the backend benchmarks
//! (`bench/load.sh`).
//!
//! It keeps `--connections` persistent keep-alive connections, each sending one request
//! at a time (closed loop), over a minimal hand-written HTTP/1.1 client so that the
//! generator itself costs little CPU on the same machine as the server. It only speaks
//! plain HTTP to the address it is given; runs are bounded by `--duration` or `--count`.
//!
//! ```text
//! dp3t-load download --url http://127.0.0.1:8080/v2/gaen/exposed?lastKeyBundleTag=… \
//!                    --connections 64 --duration 10
//! dp3t-load upload --url http://127.0.0.1:8080/v2/gaen/exposed --ha-key D/ha-dev-key.pem \
//!                  --connections 32 --count 20000 [--scheme lowcost|unlinkable|hybrid]
//! ```
//!
//! Prints a human summary on stderr and one JSON object on stdout:
//! `{"mode", "requests", "errors", "seconds", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "bytes"}`.

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(
    name = "dp3t-load",
    about = "HTTP load generator for the DP-3T backend benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// Runtime worker threads of the generator.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, global = true, default_value_t = 64)]
    connections: usize,
}

#[derive(Subcommand)]
enum Mode {
    /// GET one URL over and over for a fixed time.
    Download {
        /// `http://host:port/path?query`.
        #[arg(long)]
        url: String,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Unmeasured warm-up seconds before.
        #[arg(long, default_value_t = 1)]
        warmup: u64,
    },
    /// POST `--count` real uploads (distinct tokens, 30 real keys each).
    Upload {
        /// `http://host:port/v2/gaen/exposed`.
        #[arg(long)]
        url: String,
        /// The (development) health-authority private key that signs the tokens.
        #[arg(long)]
        ha_key: std::path::PathBuf,
        /// Number of uploads.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// The scheme of the bodies: GAEN v2 (30 keys, to the URL's path) or a DP-3T
        /// design (its own path): `lowcost` (the onset day's key), `unlinkable` (10 days
        /// of 96 real epochs, padded to 1,344 entries), `hybrid` (10 days of 2-hour
        /// windows, padded to 168).
        #[arg(long, value_enum, default_value_t = UploadScheme::Gaen)]
        scheme: UploadScheme,
    },
}

/// The upload bodies `dp3t-load upload` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum UploadScheme {
    /// `POST /v2/gaen/exposed`, 30 real keys.
    Gaen,
    /// The low-cost design.
    Lowcost,
    /// The unlinkable design.
    Unlinkable,
    /// The hybrid design.
    Hybrid,
}

/// One real upload body of `scheme` with its path (`None`: the URL's path, GAEN).
fn upload_body(
    scheme: UploadScheme,
    now: dp3t_core::time::UnixTime,
    onset: dp3t_core::time::Day,
    rng: &mut (impl rand::RngCore + rand::CryptoRng),
) -> anyhow::Result<(Vec<u8>, Option<&'static str>)> {
    use dp3t_core::time::{UnixTime, EPOCHS_PER_DAY, EPOCH_SECONDS};
    use dp3t_core::upload as up;
    let today = now.day().0;
    let payload = match scheme {
        UploadScheme::Gaen => {
            let keys: Vec<_> = (0..30u32)
                .map(|k| {
                    let mut data = [0u8; 16];
                    rng.fill_bytes(&mut data);
                    serde_json::json!({
                        "keyData": base64::engine::general_purpose::STANDARD.encode(data),
                        "rollingStartNumber": (today - 1 - (k % 9)) * 144,
                        "rollingPeriod": 144, "transmissionRiskLevel": 0, "fake": 0,
                    })
                })
                .collect();
            let body = serde_json::json!({"gaenKeys": keys, "withFederationGateway": false});
            return Ok((serde_json::to_vec(&body)?, None));
        }
        UploadScheme::Lowcost => {
            let mut key = [0u8; 32];
            rng.fill_bytes(&mut key);
            up::lowcost_upload(Some((&key, onset)), now, rng)?
        }
        UploadScheme::Unlinkable => {
            let first = onset.0 * EPOCHS_PER_DAY;
            let last = u32::try_from(now.0 / EPOCH_SECONDS)?;
            let real: Vec<(u32, [u8; 32])> = (first..last)
                .take(10 * EPOCHS_PER_DAY as usize)
                .map(|e| {
                    let mut seed = [0u8; 32];
                    rng.fill_bytes(&mut seed);
                    (e, seed)
                })
                .collect();
            up::unlinkable_upload(&real, now, rng)?
        }
        UploadScheme::Hybrid => {
            let w = dp3t_core::hybrid::WindowMinutes::new(120)?;
            let start = onset.0 as u64 * 86_400;
            let real: Vec<(UnixTime, [u8; 16])> = (0..120u64)
                .map(|i| UnixTime(start + i * 7_200))
                .filter(|t| t.0 + 7_200 <= now.0)
                .map(|t| {
                    let mut seed = [0u8; 16];
                    rng.fill_bytes(&mut seed);
                    (t, seed)
                })
                .collect();
            up::hybrid_upload(&real, w, now, rng)?
        }
    };
    Ok((payload.json.into_bytes(), Some(payload.path)))
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        bail!("no host in {url}");
    }
    Ok((host.to_owned(), path.to_owned()))
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    fn new(addr: &str) -> Self {
        Conn {
            addr: addr.to_owned(),
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Send `req` and read the whole response; returns (status, body length). Reconnects
    /// once if the server had closed an idle connection.
    async fn request(&mut self, req: &[u8]) -> io::Result<(u16, usize)> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.addr).await?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
                self.buf.clear();
            }
            match self.exchange(req).await {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 0 && e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.stream = None;
                }
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
        Err(io::Error::other("reconnect failed"))
    }

    async fn exchange(&mut self, req: &[u8]) -> io::Result<(u16, usize)> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("not connected"))?;
        stream.write_all(req).await?;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])
                    .map_err(|_| io::Error::other("non-UTF-8 response head"))?;
                let mut lines = head.split("\r\n");
                let status: u16 = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| io::Error::other("bad status line"))?;
                let mut length = 0usize;
                let mut close = false;
                for l in lines {
                    let Some((k, v)) = l.split_once(':') else {
                        continue;
                    };
                    let (k, v) = (k.trim(), v.trim());
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v
                            .parse()
                            .map_err(|_| io::Error::other("bad content-length"))?;
                    } else if k.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(io::Error::other("chunked responses are not supported"));
                    } else if k.eq_ignore_ascii_case("connection")
                        && v.eq_ignore_ascii_case("close")
                    {
                        close = true;
                    }
                }
                let total = end + 4 + length;
                while self.buf.len() < total {
                    if stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                self.buf.drain(..total);
                if close {
                    self.stream = None;
                }
                return Ok((status, length));
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// What one connection task measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    bytes: u64,
}

fn report(mode: &str, tallies: Vec<Tally>, seconds: f64) {
    let mut lat: Vec<u32> = Vec::new();
    let (mut errors, mut bytes) = (0, 0);
    for t in tallies {
        lat.extend(t.latencies_us);
        errors += t.errors;
        bytes += t.bytes;
    }
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let requests = lat.len() as u64;
    let rps = requests as f64 / seconds;
    eprintln!(
        "{mode}: {requests} ok, {errors} errors in {seconds:.2} s = {rps:.0} req/s; latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "{}",
        serde_json::json!({
            "mode": mode, "requests": requests, "errors": errors, "seconds": seconds,
            "rps": rps, "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
            "max_ms": pct(1.0), "bytes": bytes,
        })
    );
}

async fn download(
    addr: String,
    path: String,
    connections: usize,
    duration: u64,
    warmup: u64,
) -> anyhow::Result<()> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: dp3t-load\r\n\r\n")
        .into_bytes();
    let req = Arc::new(req);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(warmup);
    let stop = measure_from + Duration::from_secs(duration);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (addr, req) = (addr.clone(), Arc::clone(&req));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&addr);
            let mut t = Tally::default();
            loop {
                let sent = Instant::now();
                if sent >= stop {
                    break;
                }
                let r = conn.request(&req).await;
                let measured = sent >= measure_from;
                match r {
                    Ok((status, len)) if status == 200 || status == 204 => {
                        if measured {
                            t.latencies_us.push(
                                u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX),
                            );
                            t.bytes += len as u64;
                        }
                    }
                    Ok(_) | Err(_) => {
                        if measured {
                            t.errors += 1;
                        }
                        if r.is_err() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            t
        }));
    }
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await?);
    }
    report("download", tallies, duration as f64);
    Ok(())
}

fn upload_requests(
    addr: &str,
    path: &str,
    ha_key: &std::path::Path,
    count: usize,
    scheme: UploadScheme,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let pem = std::fs::read(ha_key).with_context(|| format!("reading {}", ha_key.display()))?;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).context("reading the HA key")?;
    let now = backend::unix_now();
    let today = now.day().0;
    let onset = dp3t_core::time::Day(today - 10).iso();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let mut rng = rand::thread_rng();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut jti = [0u8; 16];
        rng.fill_bytes(&mut jti);
        let claims = serde_json::json!({
            "scope": "exposed", "onset": onset, "fake": "0", "jti": hex::encode(jti),
            "iat": now.0, "exp": now.0 + 3600,
        });
        let token = jsonwebtoken::encode(&header, &claims, &key)?;
        let (body, own_path) =
            upload_body(scheme, now, dp3t_core::time::Day(today - 10), &mut rng)?;
        let path = own_path.unwrap_or(path);
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: dp3t-load\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        out.push(req);
        if i > 0 && i % 5000 == 0 {
            eprintln!("prepared {i} uploads");
        }
    }
    Ok(out)
}

async fn upload(
    addr: String,
    path: String,
    connections: usize,
    ha_key: std::path::PathBuf,
    count: usize,
    scheme: UploadScheme,
) -> anyhow::Result<()> {
    let requests = Arc::new(upload_requests(&addr, &path, &ha_key, count, scheme)?);
    let next = Arc::new(AtomicI64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (addr, requests, next) = (addr.clone(), Arc::clone(&requests), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&addr);
            let mut t = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = usize::try_from(i).ok().and_then(|i| requests.get(i)) else {
                    break;
                };
                let sent = Instant::now();
                match conn.request(req).await {
                    Ok((200, len)) => {
                        t.latencies_us
                            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                        t.bytes += len as u64;
                    }
                    _ => t.errors += 1,
                }
            }
            t
        }));
    }
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await?);
    }
    report("upload", tallies, start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.connections == 0 || cli.threads == 0 {
        bail!("--connections and --threads must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()?;
    match cli.mode {
        Mode::Download {
            url,
            duration,
            warmup,
        } => {
            let (addr, path) = split_url(&url)?;
            rt.block_on(download(
                addr,
                path,
                cli.connections,
                duration.max(1),
                warmup,
            ))
        }
        Mode::Upload {
            url,
            ha_key,
            count,
            scheme,
        } => {
            let (addr, path) = split_url(&url)?;
            rt.block_on(upload(addr, path, cli.connections, ha_key, count, scheme))
        }
    }
}
