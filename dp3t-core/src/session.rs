//! The tracing session: what the DP-3T SDKs do around the engine, without doing any I/O.
//!
//! An [`Engine`] knows keys, sightings and matching; an app built on it still has to
//! decide when to download, build and check every HTTP request, run the "I am infected"
//! flow (code exchange, then a padded upload), send fake requests that look like real
//! ones, and tell the user where things stand. The DP-3T Android and iOS SDKs do that
//! in their sync workers, backend repositories and status objects. [`TracingSession`]
//! does the same as a state machine: the app asks it what to do
//! ([`TracingSession::next_actions`]), does the HTTP itself, and reports what came back
//! ([`TracingSession::on_response`]). It never reads a clock, a socket or a global RNG,
//! so one seeded test drives a whole week of a phone's life in milliseconds.
//!
//! What it does, and where the numbers come from:
//!
//! * **Sync** every [`SessionConfig::sync_interval_seconds`] (2 h, the backend's release
//!   bucket) plus a random jitter, so that phones do not all call at the bucket's end.
//!   A failed sync is retried after 5 min, doubling up to the interval (the SDKs leave
//!   this to the OS job scheduler's exponential back-off). GAEN asks
//!   `GET /v2/gaen/exposed?lastKeyBundleTag=` with the last `x-key-bundle-tag`; the
//!   DP-3T designs ask for every release bucket end `t` since the last one they have.
//! * **Every response is checked** before its body is used: the `Signature` header (and
//!   the export's own signature for GAEN) with the backend key, the signed
//!   `batch-release-time` against the tag or path, and the `Date` header (plus `Age`)
//!   against the phone's clock: more than 10 minutes apart and the response is refused
//!   as a timing error, as the SDKs' timing interceptor does (a phone whose clock is off
//!   would otherwise mismatch or accept expired data).
//! * **Reporting an infection**: the health authority's code is exchanged for an upload
//!   token (`POST /v1/onset` on the authority, the CovidCode API), then the padded
//!   upload is sent with that token after a short random delay. After a real upload the
//!   phone stops tracing, as in the SDKs.
//! * **Fake traffic**: at exponentially distributed times (rate 0.2 per day, moved into
//!   the waking hours of the phone's time zone, when real reports happen), the session
//!   runs the same flow with a random code and `"fake": "1"`, then uploads a fake body of
//!   the same size with the fake token it gets, after a delay drawn from the same
//!   distribution as the real one. On the wire, a fake report and a real one differ
//!   only inside TLS.
//! * **Status**: exposure days, infection state, last and next sync, current errors.
//!
//! The session's own state (sync tags, schedules, the upload flow and its token) is
//! saved together with the engine's, encrypted under the same storage key
//! ([`TracingSession::save`]).

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::Rng;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::engine::{Beacon, Engine, EngineConfig, PublishedBatch, Scheme};
use crate::error::{Error, Result, SessionError, StateError};
use crate::exposure::ExposureDay;
use crate::signing::verify_response;
use crate::time::{Day, UnixTime, DAY_SECONDS, RELEASE_BUCKET_SECONDS};

/// Largest difference between the server's `Date` (plus `Age`) and the phone's clock
/// that a response may show: 10 minutes, as in the DP-3T SDKs.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 600;
/// Default sync interval: the backend's release bucket, 2 hours.
pub const SYNC_INTERVAL_SECONDS: u64 = RELEASE_BUCKET_SECONDS;
/// Default random delay added to every scheduled sync, at most 20 minutes.
pub const SYNC_JITTER_SECONDS: u64 = 1_200;
/// First retry delay after a failed sync; it doubles up to the sync interval.
pub const RETRY_MIN_SECONDS: u64 = 300;
/// A request with no answer after this long counts as a network failure.
pub const REQUEST_TIMEOUT_SECONDS: u64 = 120;
/// The path of the code exchange on the health authority's server (CovidCode).
pub const ONSET_PATH: &str = "/v1/onset";
/// Digits of a fake authorization code: the length of a CovidCode code.
pub const FAKE_CODE_DIGITS: usize = 12;
/// An upload token is kept for at most this long (the backend accepts tokens of at most
/// one hour), then the report is given up as expired.
pub const TOKEN_LIFETIME_SECONDS: u64 = 3_600;

/// Settings of a session. [`SessionConfig::new`] gives the SDKs' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// The engine's configuration (scheme, backend key, scoring, retention).
    pub engine: EngineConfig,
    /// Seconds between successful syncs (default 7,200).
    pub sync_interval_seconds: u64,
    /// Largest random delay added to a scheduled sync (default 1,200).
    pub sync_jitter_seconds: u64,
    /// First retry delay after a failure; doubles up to the interval (default 300).
    pub retry_min_seconds: u64,
    /// The backend's release bucket in seconds (default 7,200): the DP-3T designs
    /// download one batch per bucket end.
    pub release_bucket_seconds: u64,
    /// Largest accepted `Date` skew in seconds (default 600).
    pub max_clock_skew_seconds: u64,
    /// Fake reports per day (default 0.2, a mean of one every 5 days); 0 turns them off.
    pub fake_rate_per_day: f64,
    /// The phone's offset from UTC in minutes, for the waking hours below.
    pub utc_offset_minutes: i32,
    /// Local hours `[start, end)` in which fake reports are placed (default 6 to 22).
    pub active_hours: (u8, u8),
    /// Range of the random delay between getting a token and uploading, in seconds,
    /// used alike for real and fake reports (default 2 to 10).
    pub upload_delay_seconds: (u64, u64),
}

impl SessionConfig {
    /// The defaults, around `engine`.
    pub fn new(engine: EngineConfig) -> Self {
        SessionConfig {
            engine,
            sync_interval_seconds: SYNC_INTERVAL_SECONDS,
            sync_jitter_seconds: SYNC_JITTER_SECONDS,
            retry_min_seconds: RETRY_MIN_SECONDS,
            release_bucket_seconds: RELEASE_BUCKET_SECONDS,
            max_clock_skew_seconds: MAX_CLOCK_SKEW_SECONDS,
            fake_rate_per_day: crate::upload::FAKE_UPLOAD_RATE_PER_DAY,
            utc_offset_minutes: 0,
            active_hours: (6, 22),
            upload_delay_seconds: (2, 10),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &'static str, detail: String| Err(Error::out_of_range(what, detail));
        if self.sync_interval_seconds == 0 || self.release_bucket_seconds == 0 {
            return bad("sync interval / release bucket", "must be positive".into());
        }
        if self.retry_min_seconds == 0 {
            return bad("retry delay", "must be positive".into());
        }
        if !self.fake_rate_per_day.is_finite() || self.fake_rate_per_day < 0.0 {
            return bad("fake rate", format!("{} per day", self.fake_rate_per_day));
        }
        let (a, b) = self.active_hours;
        if a >= b || b > 24 {
            return bad("active hours", format!("[{a}, {b}) is not within a day"));
        }
        if self.utc_offset_minutes.unsigned_abs() > 14 * 60 {
            return bad("UTC offset", format!("{} minutes", self.utc_offset_minutes));
        }
        let (lo, hi) = self.upload_delay_seconds;
        if lo > hi || hi > 600 {
            return bad("upload delay", format!("[{lo}, {hi}] seconds"));
        }
        Ok(())
    }
}

/// Which server a request goes to; the app holds the base URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Server {
    /// The key server (`backend/`): downloads and uploads.
    Backend,
    /// The health authority's code service (`POST /v1/onset`).
    Authority,
}

/// The HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
}

/// What a request is for (for logs and progress; fake requests are not marked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A download of published keys.
    Sync,
    /// The exchange of an authorization code for an upload token.
    CodeExchange,
    /// An upload of keys.
    Upload,
}

/// One HTTP request for the app to send. Answer it with [`TracingSession::on_response`]
/// (or [`TracingSession::on_network_error`]) quoting `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The session's name for this request.
    pub id: u64,
    /// Which base URL to prefix.
    pub server: Server,
    /// GET or POST.
    pub method: Method,
    /// Path and query, to append to the server's base URL.
    pub path: String,
    /// Headers to send, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for GET).
    pub body: Vec<u8>,
    /// What it is for.
    pub purpose: Purpose,
}

/// What the app should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actions {
    /// Requests to send now, in any order, concurrently or not.
    pub requests: Vec<HttpRequest>,
    /// When to call [`TracingSession::next_actions`] again at the latest (schedule a
    /// background job for it).
    pub wake_at: UnixTime,
}

/// Where the phone's own report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportPhase {
    /// No report (the usual case).
    None,
    /// The code is being exchanged for a token.
    ExchangingCode,
    /// The token is there; the upload is being sent.
    Uploading,
    /// The keys were uploaded; tracing is stopped.
    Done,
    /// The report failed; see the status errors. The app may start a new one.
    Failed,
}

/// Where the user stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfectionStatus {
    /// No exposure day and no report.
    Healthy,
    /// At least one exposure day in the last 10 days.
    Exposed,
    /// The user reported a positive test (keys uploaded).
    Infected,
}

/// What the app shows, like the SDKs' `getStatus()`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStatus {
    /// The engine's scheme.
    pub scheme: Scheme,
    /// Healthy, exposed or infected.
    pub infection: InfectionStatus,
    /// Exposure days of the last 10 days, oldest first.
    pub exposure_days: Vec<ExposureDay>,
    /// False once the user reported an infection.
    pub tracing_active: bool,
    /// Stored sightings.
    pub sightings: usize,
    /// The last successful sync.
    pub last_sync: Option<UnixTime>,
    /// When the next sync is due.
    pub next_sync: UnixTime,
    /// The user's report.
    pub report: ReportPhase,
    /// Current problems: the last sync's error, a failed report. Empty when all is well.
    pub errors: Vec<SessionError>,
}

// ------------------------------------------------------------------------------ state

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum InFlight {
    /// A GAEN download.
    GaenSync,
    /// A DP-3T batch download of release time `t` (ms).
    BatchSync(u64),
    /// A code exchange.
    Exchange { fake: bool },
    /// An upload.
    Upload { fake: bool },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    what: InFlight,
    sent_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum RoundItem {
    Pending,
    Ok,
    /// Not released yet (the server's clock is a little behind): asked again next round.
    Later,
    Failed,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SyncData {
    /// GAEN: the last `x-key-bundle-tag`.
    gaen_tag_ms: Option<u64>,
    /// DP-3T designs: every batch up to this release time (ms) is ingested.
    batches_until_ms: u64,
    next_at: u64,
    failures: u32,
    last_success: Option<u64>,
    error: Option<SessionError>,
    /// The round in progress: release time (ms; 0 for GAEN) to its state.
    round: BTreeMap<u64, RoundItem>,
    round_error: Option<SessionError>,
}

/// One run of the report flow, real or fake.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flow {
    fake: bool,
    stage: Stage,
    /// Real flows: the onset day the app gave (the token's `onset` claim wins).
    onset: u32,
    /// When the token was received (tokens live an hour).
    token_at: u64,
    attempts: u32,
    /// The stage's request is out.
    in_flight: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Stage {
    /// Send the exchange at `at`.
    Exchange { code: String, at: u64 },
    /// Upload with `token` at `at`.
    Upload { token: String, at: u64 },
}

impl Stage {
    fn at_mut(&mut self) -> &mut u64 {
        match self {
            Stage::Exchange { at, .. } | Stage::Upload { at, .. } => at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Data {
    created: u64,
    next_id: u64,
    in_flight: BTreeMap<u64, Pending>,
    sync: SyncData,
    report: Option<Flow>,
    report_phase: ReportPhase,
    report_error: Option<SessionError>,
    infected: bool,
    fake: Option<Flow>,
    next_fake_at: u64,
}

/// A phone's tracing session: the engine plus the SDK's schedules and flows. See the
/// module documentation.
pub struct TracingSession {
    config: SessionConfig,
    engine: Engine,
    data: Data,
}

impl std::fmt::Debug for TracingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingSession")
            .field("engine", &self.engine)
            .field("in_flight", &self.data.in_flight.len())
            .field("report_phase", &self.data.report_phase)
            .finish_non_exhaustive()
    }
}

impl TracingSession {
    /// A new session at `now` (first start of the app): a fresh engine, a sync due at
    /// once, and the first fake report drawn.
    pub fn new<R: CryptoRng + RngCore>(
        config: SessionConfig,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<Self> {
        config.validate()?;
        let engine = Engine::new(config.engine.clone())?;
        let bucket = config.release_bucket_seconds;
        let mut session = TracingSession {
            data: Data {
                created: now.0,
                next_id: 1,
                in_flight: BTreeMap::new(),
                sync: SyncData {
                    // The first batch that can hold a contact of ours is the one of the
                    // bucket we start in.
                    batches_until_ms: (now.0 - now.0 % bucket).saturating_mul(1000),
                    next_at: now.0,
                    ..SyncData::default()
                },
                report: None,
                report_phase: ReportPhase::None,
                report_error: None,
                infected: false,
                fake: None,
                next_fake_at: u64::MAX,
            },
            config,
            engine,
        };
        session.data.next_fake_at = session.draw_fake_time(now, rng);
        Ok(session)
    }

    /// The engine (beacons, sightings, matching) for calls the session does not wrap.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The payload to advertise at `now`; see [`Engine::current_beacon`]. Refused with
    /// [`Error::InvalidState`] once the user reported an infection: tracing stops then.
    pub fn current_beacon<R: CryptoRng + RngCore>(
        &mut self,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<Beacon> {
        if self.data.infected {
            return Err(Error::InvalidState("tracing stopped after the report"));
        }
        self.engine.current_beacon(now, rng)
    }

    /// Record what the radio heard; see [`Engine::record_sighting`]. Ignored (not an
    /// error) once tracing stopped.
    pub fn on_sighting(
        &mut self,
        payload: &[u8],
        at: UnixTime,
        attenuation_db: i32,
        seconds: u32,
    ) -> Result<()> {
        if self.data.infected {
            return Ok(());
        }
        self.engine
            .record_sighting(payload, at, attenuation_db, seconds)
    }

    /// Start the "I am infected" flow with the health authority's `code` and the symptom
    /// onset (or test) day. The exchange request comes out of the next
    /// [`TracingSession::next_actions`].
    ///
    /// Errors: [`Error::InvalidState`] while a report is under way or after one
    /// succeeded; [`Error::OutOfRange`] for a code that is not 1 to 64 ASCII letters or
    /// digits, or an onset after `now`.
    pub fn report_infected(&mut self, code: &str, onset: Day, now: UnixTime) -> Result<()> {
        self.check_can_report(onset, now)?;
        if code.is_empty() || code.len() > 64 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::out_of_range(
                "authorization code",
                "must be 1 to 64 ASCII letters or digits",
            ));
        }
        self.data.report = Some(Flow {
            fake: false,
            stage: Stage::Exchange {
                code: code.to_owned(),
                at: now.0,
            },
            onset: onset.0,
            token_at: 0,
            attempts: 0,
            in_flight: false,
        });
        self.data.report_phase = ReportPhase::ExchangingCode;
        self.data.report_error = None;
        Ok(())
    }

    /// Like [`TracingSession::report_infected`] for an app that already holds an upload
    /// token (a development token, or an authority flow outside this library): the
    /// upload comes out of the next [`TracingSession::next_actions`].
    pub fn report_infected_with_token(
        &mut self,
        token: &str,
        onset: Day,
        now: UnixTime,
    ) -> Result<()> {
        self.check_can_report(onset, now)?;
        if token.is_empty() || token.len() > 8 * 1024 || !token.is_ascii() {
            return Err(Error::out_of_range("token", "must be 1 to 8 KiB of ASCII"));
        }
        self.data.report = Some(Flow {
            fake: false,
            stage: Stage::Upload {
                token: token.to_owned(),
                at: now.0,
            },
            onset: onset.0,
            token_at: now.0,
            attempts: 0,
            in_flight: false,
        });
        self.data.report_phase = ReportPhase::Uploading;
        self.data.report_error = None;
        Ok(())
    }

    /// Sync at the next call of [`TracingSession::next_actions`] (the SDKs'
    /// `DP3T.sync()`, e.g. on "pull to refresh"), unless a sync is under way.
    pub fn sync_now(&mut self, now: UnixTime) {
        if self.data.sync.round.is_empty() {
            self.data.sync.next_at = self.data.sync.next_at.min(now.0);
        }
    }

    fn check_can_report(&self, onset: Day, now: UnixTime) -> Result<()> {
        if self.data.infected {
            return Err(Error::InvalidState("the infection was already reported"));
        }
        if self.data.report.is_some() {
            return Err(Error::InvalidState("a report is under way"));
        }
        if onset > now.day() {
            return Err(Error::out_of_range("onset", "after today"));
        }
        Ok(())
    }

    // -------------------------------------------------------------- scheduling

    /// What to do at `now`: requests to send, and when to ask again. Requests are handed
    /// out once; unanswered ones count as failed after [`REQUEST_TIMEOUT_SECONDS`].
    pub fn next_actions<R: CryptoRng + RngCore>(
        &mut self,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<Actions> {
        self.expire_requests(now, rng);
        let mut requests = Vec::new();

        // Sync.
        if !self.data.infected && self.data.sync.round.is_empty() && now.0 >= self.data.sync.next_at
        {
            self.start_sync_round(now, &mut requests, rng);
        }

        // The real report, then the fake one.
        for fake in [false, true] {
            if let Some(req) = self.advance_flow(fake, now, rng)? {
                requests.push(req);
            }
        }
        if self.data.fake.is_none() && now.0 >= self.data.next_fake_at {
            let code: String = (0..FAKE_CODE_DIGITS)
                .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
                .collect();
            self.data.fake = Some(Flow {
                fake: true,
                stage: Stage::Exchange { code, at: now.0 },
                onset: now.day().0,
                token_at: 0,
                attempts: 0,
                in_flight: false,
            });
            self.data.next_fake_at = self.draw_fake_time(now, rng);
            if let Some(req) = self.advance_flow(true, now, rng)? {
                requests.push(req);
            }
        }

        Ok(Actions {
            requests,
            wake_at: self.wake_at(now),
        })
    }

    fn wake_at(&self, now: UnixTime) -> UnixTime {
        let mut at = self.data.next_fake_at;
        if !self.data.infected && self.data.sync.round.is_empty() {
            at = at.min(self.data.sync.next_at);
        }
        for flow in [&self.data.report, &self.data.fake].into_iter().flatten() {
            if !flow.in_flight {
                match &flow.stage {
                    Stage::Exchange { at: t, .. } | Stage::Upload { at: t, .. } => at = at.min(*t),
                }
            }
        }
        for p in self.data.in_flight.values() {
            at = at.min(p.sent_at.saturating_add(REQUEST_TIMEOUT_SECONDS));
        }
        UnixTime(at.max(now.0))
    }

    fn new_id(&mut self) -> u64 {
        let id = self.data.next_id;
        self.data.next_id = self.data.next_id.wrapping_add(1).max(1);
        id
    }

    fn request(
        &mut self,
        what: InFlight,
        now: UnixTime,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> HttpRequest {
        let id = self.new_id();
        self.data.in_flight.insert(
            id,
            Pending {
                what,
                sent_at: now.0,
            },
        );
        let (server, method, purpose) = match what {
            InFlight::GaenSync | InFlight::BatchSync(_) => {
                (Server::Backend, Method::Get, Purpose::Sync)
            }
            InFlight::Exchange { .. } => (Server::Authority, Method::Post, Purpose::CodeExchange),
            InFlight::Upload { .. } => (Server::Backend, Method::Post, Purpose::Upload),
        };
        HttpRequest {
            id,
            server,
            method,
            path,
            headers,
            body,
            purpose,
        }
    }

    fn start_sync_round<R: CryptoRng + RngCore>(
        &mut self,
        now: UnixTime,
        out: &mut Vec<HttpRequest>,
        rng: &mut R,
    ) {
        let scheme = self.config.engine.scheme;
        if scheme == Scheme::Gaen {
            let path = match self.data.sync.gaen_tag_ms {
                Some(tag) => format!("/v2/gaen/exposed?lastKeyBundleTag={tag}"),
                None => "/v2/gaen/exposed".to_owned(),
            };
            self.data.sync.round.insert(0, RoundItem::Pending);
            let req = self.request(InFlight::GaenSync, now, path, Vec::new(), Vec::new());
            out.push(req);
            return;
        }
        let bucket_ms = self.config.release_bucket_seconds.saturating_mul(1000);
        let now_ms = now.0.saturating_mul(1000);
        let retention_ms = u64::from(self.config.engine.retention_days) * DAY_SECONDS * 1000;
        let oldest = now_ms.saturating_sub(retention_ms);
        let mut t = self.data.sync.batches_until_ms.saturating_add(bucket_ms);
        if t < oldest {
            t = oldest - oldest % bucket_ms + bucket_ms;
            self.data.sync.batches_until_ms = t - bucket_ms;
        }
        let prefix = match scheme {
            Scheme::LowCost => "/v1/exposed",
            Scheme::Unlinkable => "/v1/unlinkable/filter",
            _ => "/v1/hybrid/exposed",
        };
        while t <= now_ms {
            self.data.sync.round.insert(t, RoundItem::Pending);
            let req = self.request(
                InFlight::BatchSync(t),
                now,
                format!("{prefix}/{t}"),
                Vec::new(),
                Vec::new(),
            );
            out.push(req);
            t = t.saturating_add(bucket_ms);
        }
        if self.data.sync.round.is_empty() {
            // Nothing released since the last sync: a successful empty round.
            self.finish_round(now, None, rng);
        }
    }

    /// Move a report flow forward if its time has come; returns the request to send.
    fn advance_flow<R: CryptoRng + RngCore>(
        &mut self,
        fake: bool,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<Option<HttpRequest>> {
        let slot = if fake {
            &mut self.data.fake
        } else {
            &mut self.data.report
        };
        let Some(flow) = slot.as_mut().filter(|f| !f.in_flight) else {
            return Ok(None);
        };
        match &flow.stage {
            Stage::Exchange { code, at } if now.0 >= *at => {
                let body = serde_json::json!({
                    "authorizationCode": code,
                    "fake": if fake { "1" } else { "0" },
                })
                .to_string()
                .into_bytes();
                flow.in_flight = true;
                let req = self.request(
                    InFlight::Exchange { fake },
                    now,
                    ONSET_PATH.to_owned(),
                    json_headers(None),
                    body,
                );
                Ok(Some(req))
            }
            Stage::Upload { token, at } if now.0 >= *at => {
                let token = token.clone();
                let onset = Day(onset_from_token(&token).unwrap_or(flow.onset));
                flow.in_flight = true;
                let payload = if fake {
                    self.engine.build_fake_upload(now, rng)?
                } else {
                    // Keys from the onset to today; the low-cost engine starts a new
                    // chain right away. The same body is rebuilt on a retry.
                    self.engine.build_upload(onset.min(now.day()), now, rng)?
                };
                let req = self.request(
                    InFlight::Upload { fake },
                    now,
                    payload.path.to_owned(),
                    json_headers(Some(&token)),
                    payload.json.into_bytes(),
                );
                Ok(Some(req))
            }
            _ => Ok(None),
        }
    }

    fn draw_fake_time<R: CryptoRng + RngCore>(&self, now: UnixTime, rng: &mut R) -> u64 {
        let rate = self.config.fake_rate_per_day;
        if rate <= 0.0 {
            return u64::MAX;
        }
        // Exponential inter-arrival time: -ln(u) / rate days, u in (0, 1].
        let u: f64 = 1.0 - rng.gen::<f64>();
        let days = -u.ln() / rate;
        let t = now
            .0
            .saturating_add((days * DAY_SECONDS as f64).round() as u64);
        self.in_waking_hours(t, rng)
    }

    /// Move `t` into the next local waking hours when it falls at night, to a uniform
    /// random time within them: real reports happen while people are awake.
    fn in_waking_hours<R: RngCore>(&self, t: u64, rng: &mut R) -> u64 {
        let offset = i64::from(self.config.utc_offset_minutes) * 60;
        let local = t.saturating_add_signed(offset);
        let (a, b) = self.config.active_hours;
        let (start, end) = (u64::from(a) * 3600, u64::from(b) * 3600);
        let second_of_day = local % DAY_SECONDS;
        if (start..end).contains(&second_of_day) {
            return t;
        }
        let mut day_start = local - second_of_day;
        if second_of_day >= end {
            day_start += DAY_SECONDS;
        }
        let local_new = day_start + start + rng.gen_range(0..end - start);
        local_new.saturating_add_signed(-offset)
    }

    fn upload_delay<R: RngCore>(&self, rng: &mut R) -> u64 {
        let (lo, hi) = self.config.upload_delay_seconds;
        rng.gen_range(lo..=hi)
    }

    fn retry_delay(&self, failures: u32) -> u64 {
        let shift = failures.saturating_sub(1).min(20);
        self.config
            .retry_min_seconds
            .saturating_mul(1u64 << shift)
            .min(self.config.sync_interval_seconds)
    }

    // -------------------------------------------------------------- responses

    /// What came back for request `id`: the status code, the headers (any case) and the
    /// body, received at `now`. The session checks it (clock skew, signatures, release
    /// times) before it uses anything, and records the outcome in the status: a refused
    /// response is not an error of this call.
    ///
    /// Errors: [`Error::InvalidState`] for an `id` that is not in flight (answered
    /// already, timed out, or never handed out); then nothing changes.
    pub fn on_response<R: CryptoRng + RngCore>(
        &mut self,
        id: u64,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
        now: UnixTime,
        rng: &mut R,
    ) -> Result<()> {
        let pending = self
            .data
            .in_flight
            .remove(&id)
            .ok_or(Error::InvalidState("no request with this id is in flight"))?;
        let outcome = self
            .check_clock(headers, now)
            .and_then(|()| self.use_response(pending.what, status, headers, body, now, rng));
        if outcome == Ok(false) {
            if let InFlight::BatchSync(t) = pending.what {
                self.data.sync.round.insert(t, RoundItem::Later);
            }
        }
        let outcome = outcome.map(|_| ());
        self.settle(pending.what, outcome, now, rng);
        Ok(())
    }

    /// Request `id` could not be sent or got no answer (no network, TLS failure,
    /// timeout). Same errors as [`TracingSession::on_response`].
    pub fn on_network_error<R: CryptoRng + RngCore>(
        &mut self,
        id: u64,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<()> {
        let pending = self
            .data
            .in_flight
            .remove(&id)
            .ok_or(Error::InvalidState("no request with this id is in flight"))?;
        self.settle(pending.what, Err(SessionError::Network), now, rng);
        Ok(())
    }

    fn expire_requests<R: CryptoRng + RngCore>(&mut self, now: UnixTime, rng: &mut R) {
        let expired: Vec<u64> = self
            .data
            .in_flight
            .iter()
            .filter(|(_, p)| now.0 >= p.sent_at.saturating_add(REQUEST_TIMEOUT_SECONDS))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.data.in_flight.remove(&id) {
                self.settle(p.what, Err(SessionError::Network), now, rng);
            }
        }
    }

    /// The SDKs' timing check: the server's `Date` plus `Age` within the allowed skew of
    /// the phone's clock. A response without `Date` passes.
    fn check_clock(
        &self,
        headers: &[(String, String)],
        now: UnixTime,
    ) -> std::result::Result<(), SessionError> {
        let Some(date) = header(headers, "date") else {
            return Ok(());
        };
        let server = parse_http_date(date).ok_or(SessionError::Malformed)?;
        let age = header(headers, "age")
            .and_then(|a| a.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let live = server.saturating_add(age);
        if live.abs_diff(now.0) > self.config.max_clock_skew_seconds {
            return Err(SessionError::ClockSkew);
        }
        Ok(())
    }

    /// Check and use a response; `Ok(true)` when it did what it was for, `Ok(false)` for
    /// a batch that is not released yet.
    fn use_response<R: CryptoRng + RngCore>(
        &mut self,
        what: InFlight,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
        now: UnixTime,
        rng: &mut R,
    ) -> std::result::Result<bool, SessionError> {
        let pk = self.config.engine.backend_public_key.clone();
        match what {
            InFlight::GaenSync => {
                if status != 200 && status != 204 {
                    return Err(SessionError::Server(status));
                }
                let tag: u64 = header(headers, "x-key-bundle-tag")
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or(SessionError::Malformed)?;
                let signature = header(headers, "signature").ok_or(SessionError::Signature)?;
                let claims = verify_response(body, signature, &pk, now)
                    .map_err(|_| SessionError::Signature)?;
                if claims.batch_release_time_ms.is_some_and(|ms| ms != tag) {
                    return Err(SessionError::Signature);
                }
                if status == 200 && !body.is_empty() {
                    let batch = PublishedBatch {
                        body,
                        signature: None,
                        release_time: UnixTime::from_millis(tag),
                    };
                    self.engine
                        .ingest(&batch, now)
                        .map_err(SessionError::from)?;
                }
                self.data.sync.gaen_tag_ms = Some(tag);
                Ok(true)
            }
            InFlight::BatchSync(t) => {
                if status == 404 && t < self.oldest_batch_ms(now) {
                    return Ok(true); // expired at the server: nothing to get any more
                }
                let bucket_ms = self.config.release_bucket_seconds.saturating_mul(1000);
                if status == 404 && t.saturating_add(bucket_ms) > now.0.saturating_mul(1000) {
                    return Ok(false); // the newest bucket, not released yet
                }
                if status != 200 {
                    return Err(SessionError::Server(status));
                }
                if let Some(h) = header(headers, "x-batch-release-time") {
                    if h.trim().parse::<u64>().ok() != Some(t) {
                        return Err(SessionError::Malformed);
                    }
                }
                let signature = header(headers, "signature").ok_or(SessionError::Signature)?;
                let release_time = UnixTime::from_millis(t);
                let batch = PublishedBatch {
                    body,
                    signature: Some(signature),
                    release_time,
                };
                self.engine
                    .ingest(&batch, now)
                    .map_err(SessionError::from)?;
                Ok(true)
            }
            InFlight::Exchange { fake } => {
                if status != 200 {
                    return Err(SessionError::Server(status));
                }
                let token = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("accessToken")?.as_str().map(str::to_owned))
                    .filter(|t| !t.is_empty() && t.is_ascii())
                    .ok_or(SessionError::Malformed)?;
                let at = now.0.saturating_add(self.upload_delay(rng));
                let slot = if fake {
                    &mut self.data.fake
                } else {
                    &mut self.data.report
                };
                if let Some(flow) = slot.as_mut() {
                    flow.stage = Stage::Upload { token, at };
                    flow.token_at = now.0;
                    flow.attempts = 0;
                }
                Ok(true)
            }
            InFlight::Upload { .. } => {
                if status == 200 || status == 204 {
                    Ok(true)
                } else {
                    Err(SessionError::Server(status))
                }
            }
        }
    }

    fn oldest_batch_ms(&self, now: UnixTime) -> u64 {
        let retention = u64::from(self.config.engine.retention_days) * DAY_SECONDS;
        now.0.saturating_sub(retention).saturating_mul(1000)
    }

    /// Record the outcome of a request and schedule what follows.
    fn settle<R: CryptoRng + RngCore>(
        &mut self,
        what: InFlight,
        outcome: std::result::Result<(), SessionError>,
        now: UnixTime,
        rng: &mut R,
    ) {
        match what {
            InFlight::GaenSync | InFlight::BatchSync(_) => {
                let key = match what {
                    InFlight::BatchSync(t) => t,
                    _ => 0,
                };
                let state = if outcome.is_ok() {
                    RoundItem::Ok
                } else {
                    RoundItem::Failed
                };
                if let Some(item) = self.data.sync.round.get_mut(&key) {
                    if *item == RoundItem::Pending {
                        *item = state;
                    }
                }
                if let Err(e) = outcome {
                    self.data.sync.round_error = Some(e);
                }
                if self
                    .data
                    .sync
                    .round
                    .values()
                    .all(|s| *s != RoundItem::Pending)
                {
                    let error = self.data.sync.round_error.take();
                    self.finish_round(now, error, rng);
                }
            }
            InFlight::Exchange { fake } | InFlight::Upload { fake } => {
                let is_upload = matches!(what, InFlight::Upload { .. });
                self.settle_flow(fake, is_upload, outcome, now);
            }
        }
    }

    fn finish_round<R: CryptoRng + RngCore>(
        &mut self,
        now: UnixTime,
        error: Option<SessionError>,
        rng: &mut R,
    ) {
        // The DP-3T designs: advance over the batches that succeeded in a row.
        let round = std::mem::take(&mut self.data.sync.round);
        for (t, state) in &round {
            if *t == 0 {
                continue;
            }
            if *state != RoundItem::Ok {
                break;
            }
            self.data.sync.batches_until_ms = self.data.sync.batches_until_ms.max(*t);
        }
        let jitter = rng.gen_range(0..=self.config.sync_jitter_seconds);
        match error {
            None => {
                self.data.sync.failures = 0;
                self.data.sync.error = None;
                self.data.sync.last_success = Some(now.0);
                self.data.sync.next_at = now
                    .0
                    .saturating_add(self.config.sync_interval_seconds)
                    .saturating_add(jitter);
                self.engine.prune(now);
            }
            Some(e) => {
                self.data.sync.failures = self.data.sync.failures.saturating_add(1);
                self.data.sync.error = Some(e);
                let delay = self.retry_delay(self.data.sync.failures);
                self.data.sync.next_at = now.0.saturating_add(delay).saturating_add(jitter / 4);
            }
        }
    }

    fn settle_flow(
        &mut self,
        fake: bool,
        is_upload: bool,
        outcome: std::result::Result<(), SessionError>,
        now: UnixTime,
    ) {
        let taken = if fake {
            self.data.fake.take()
        } else {
            self.data.report.take()
        };
        let Some(mut flow) = taken else {
            return;
        };
        flow.in_flight = false;
        let keep = match outcome {
            // The token is in (`use_response` put it in the flow): the upload follows.
            Ok(()) if !is_upload => {
                if !fake {
                    self.data.report_phase = ReportPhase::Uploading;
                }
                true
            }
            Ok(()) => {
                if !fake {
                    self.data.infected = true;
                    self.data.report_phase = ReportPhase::Done;
                    self.data.report_error = None;
                }
                false
            }
            // Fake flows never retry: a lost fake costs nothing.
            Err(_) if fake => false,
            // The server said no (bad code, spent or expired token): retrying won't help.
            Err(SessionError::Server(s)) if (400..500).contains(&s) && s != 429 => {
                self.data.report_phase = ReportPhase::Failed;
                self.data.report_error = Some(SessionError::ReportRejected(s));
                false
            }
            Err(e) => {
                flow.attempts = flow.attempts.saturating_add(1);
                let at = now.0.saturating_add(self.retry_delay(flow.attempts));
                if is_upload && at > flow.token_at.saturating_add(TOKEN_LIFETIME_SECONDS) {
                    self.data.report_phase = ReportPhase::Failed;
                    self.data.report_error = Some(SessionError::ReportExpired);
                    false
                } else {
                    self.data.report_error = Some(e);
                    *flow.stage.at_mut() = at;
                    true
                }
            }
        };
        if keep {
            if fake {
                self.data.fake = Some(flow);
            } else {
                self.data.report = Some(flow);
            }
        }
    }

    // -------------------------------------------------------------- status

    /// What to show the user at `now`.
    pub fn status(&self, now: UnixTime) -> SessionStatus {
        let exposure_days = self.engine.exposure_days(now);
        let infection = if self.data.infected {
            InfectionStatus::Infected
        } else if exposure_days.is_empty() {
            InfectionStatus::Healthy
        } else {
            InfectionStatus::Exposed
        };
        let errors = [self.data.sync.error, self.data.report_error]
            .into_iter()
            .flatten()
            .collect();
        SessionStatus {
            scheme: self.config.engine.scheme,
            infection,
            exposure_days,
            tracing_active: !self.data.infected,
            sightings: self.engine.sightings().len(),
            last_sync: self.data.sync.last_success.map(UnixTime),
            next_sync: UnixTime(self.data.sync.next_at),
            report: self.data.report_phase,
            errors,
        }
    }

    /// When the next fake report starts (for tests and diagnostics).
    pub fn next_fake_report(&self) -> UnixTime {
        UnixTime(self.data.next_fake_at)
    }

    // -------------------------------------------------------------- persistence

    /// The engine's state and the session's, encrypted and authenticated
    /// (ChaCha20-Poly1305) under `storage_key`. Layout: `"D3SS"`, version 1, a 12-byte
    /// random nonce, then the ciphertext of (the engine's own encrypted state, the
    /// session's data). In-flight requests are kept: answer them after a restore, or let
    /// them time out.
    pub fn save<R: CryptoRng + RngCore>(
        &self,
        storage_key: &[u8; 32],
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        let saved = Saved {
            engine: self.engine.save(storage_key, rng)?,
            data: self.data.clone(),
        };
        let plain = Zeroizing::new(
            postcard::to_stdvec(&saved).map_err(|_| Error::Encode("session state"))?,
        );
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(SAVED_HEADER + plain.len() + 16);
        out.extend_from_slice(SAVED_MAGIC);
        out.push(SAVED_VERSION);
        out.extend_from_slice(&nonce);
        let ct = ChaCha20Poly1305::new(storage_key.into())
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &out[..5],
                },
            )
            .map_err(|_| Error::Encode("session state"))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open a state made by [`TracingSession::save`]; [`Error::State`] for a wrong key
    /// or altered bytes, [`Error::WrongScheme`] for a state of another scheme.
    pub fn restore(bytes: &[u8], storage_key: &[u8; 32], config: SessionConfig) -> Result<Self> {
        config.validate()?;
        if bytes.len() < SAVED_HEADER + 16 {
            return Err(Error::State(StateError::Truncated));
        }
        if &bytes[..4] != SAVED_MAGIC {
            return Err(Error::State(StateError::Magic));
        }
        if bytes[4] != SAVED_VERSION {
            return Err(Error::State(StateError::Version(bytes[4])));
        }
        let plain = Zeroizing::new(
            ChaCha20Poly1305::new(storage_key.into())
                .decrypt(
                    Nonce::from_slice(&bytes[5..SAVED_HEADER]),
                    Payload {
                        msg: &bytes[SAVED_HEADER..],
                        aad: &bytes[..5],
                    },
                )
                .map_err(|_| Error::State(StateError::Authentication))?,
        );
        let saved: Saved =
            postcard::from_bytes(&plain).map_err(|_| Error::State(StateError::Corrupt))?;
        let engine = Engine::restore(&saved.engine, storage_key, config.engine.clone())?;
        Ok(TracingSession {
            config,
            engine,
            data: saved.data,
        })
    }
}

const SAVED_MAGIC: &[u8; 4] = b"D3SS";
const SAVED_VERSION: u8 = 1;
const SAVED_HEADER: usize = 4 + 1 + 12;

#[derive(Serialize, Deserialize)]
struct Saved {
    engine: Vec<u8>,
    data: Data,
}

fn json_headers(token: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Accept".to_owned(), "application/json".to_owned()),
    ];
    if let Some(t) = token {
        h.push(("Authorization".to_owned(), format!("Bearer {t}")));
    }
    h
}

/// The first header named `name` (ASCII case-insensitive).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The `onset` claim (`YYYY-MM-DD`) of an upload token, read without verifying it: the
/// backend verifies the token, and uses this same claim to drop earlier keys.
fn onset_from_token(token: &str) -> Option<u32> {
    let payload = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    parse_iso_date(claims.get("onset")?.as_str()?)
}

/// `YYYY-MM-DD` as a unix day number ([`Day::parse_iso`]).
pub fn parse_iso_date(s: &str) -> Option<u32> {
    Day::parse_iso(s).map(|d| d.0)
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7), the form every
/// current server sends, as unix seconds. The obsolete forms are not read.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let mut it = s.split_ascii_whitespace();
    let _weekday = it.next()?;
    let day: u32 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let mi: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if it.next()? != "GMT" || it.next().is_some() || hms.next().is_some() {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = Day::from_civil(year, month, day)?;
    Some(u64::from(days.0) * DAY_SECONDS + h * 3600 + mi * 60 + sec)
}

impl From<Error> for SessionError {
    fn from(e: Error) -> Self {
        match e {
            Error::Signature(_) => SessionError::Signature,
            _ => SessionError::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_read_as_servers_write_them() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            // Years no calendar reaches: refused, not an arithmetic overflow.
            "Sun, 06 Nov 99999999999999999 08:49:37 GMT",
            "Sun, 06 Nov -99999999999999999 08:49:37 GMT",
            "Sun, 06 Nov 1969 23:59:59 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso_dates_and_token_onsets() {
        assert_eq!(parse_iso_date("1970-01-02"), Some(1));
        assert_eq!(parse_iso_date("2024-10-04"), Some(20_000));
        assert_eq!(parse_iso_date("2024-13-04"), None);
        assert_eq!(parse_iso_date("2024-1-04"), None);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"onset":"2024-10-04","fake":"0"}"#);
        assert_eq!(onset_from_token(&format!("e30.{claims}.sig")), Some(20_000));
        assert_eq!(onset_from_token("not a token"), None);
    }
}
