//! The SDK surface: [`TracingSession`], the core's sans-IO session (sync schedule, the
//! infected flow, fake reports, response checks, status) behind a mutex, plus the calls
//! for apps on the OS Exposure Notification API and the BLE advertisement format.
//!
//! The app does only I/O: it sends the [`HttpRequest`]s that
//! [`TracingSession::next_actions`] returns, hands back what came back with
//! [`TracingSession::on_response`], passes in what the radio heard, and wakes the
//! session at [`Actions::wake_at_unix`]. A [`StatusListener`] hears every status change.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dp3t_core::ble;
use dp3t_core::error::SessionError as CoreSessionError;
use dp3t_core::session as core_session;
use dp3t_core::time::{Day, UnixTime};
use rand_core::OsRng;

use crate::UploadPayload;
use crate::{guarded, Beacon, Dp3tError, EngineConfig, ExposureDay, Scheme};

/// Which server a request goes to. The app holds both base URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Server {
    /// The key server: downloads and uploads.
    Backend,
    /// The health authority's code service (`POST /v1/onset`).
    Authority,
}

/// HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
}

/// What a request is for. Fake requests are not marked: they are meant to look real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RequestPurpose {
    /// A download of published keys.
    Sync,
    /// The exchange of an authorization code for an upload token.
    CodeExchange,
    /// An upload of keys.
    Upload,
}

/// One HTTP header.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HttpHeader {
    /// Name (any case on the way in).
    pub name: String,
    /// Value.
    pub value: String,
}

/// One request for the app to send; answer it with [`TracingSession::on_response`] or
/// [`TracingSession::on_network_error`], quoting `id`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HttpRequest {
    /// The session's name for the request.
    pub id: u64,
    /// Which base URL to prefix.
    pub server: Server,
    /// GET or POST.
    pub method: HttpMethod,
    /// Path and query to append to the base URL.
    pub path: String,
    /// Headers to send.
    pub headers: Vec<HttpHeader>,
    /// Body (empty for GET).
    pub body: Vec<u8>,
    /// What it is for.
    pub purpose: RequestPurpose,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Actions {
    /// Requests to send now (in any order, concurrently or not).
    pub requests: Vec<HttpRequest>,
    /// When to call `next_actions` again at the latest, unix seconds: schedule a
    /// background job (WorkManager, BGTaskScheduler) for it.
    pub wake_at_unix: u64,
}

/// Where the user's own report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ReportPhase {
    /// No report.
    None,
    /// The code is being exchanged for a token.
    ExchangingCode,
    /// The upload is being sent.
    Uploading,
    /// Uploaded; tracing has stopped.
    Done,
    /// Failed (see the errors); a new report may be started.
    Failed,
}

/// Healthy, exposed or infected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum InfectionStatus {
    /// No exposure day, no report.
    Healthy,
    /// At least one exposure day in the last 10 days.
    Exposed,
    /// The user reported a positive test.
    Infected,
}

/// A problem the status reports, like the DP-3T SDKs' error states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TracingError {
    /// No answer (network, TLS, timeout).
    Network,
    /// An unexpected HTTP status.
    Server {
        /// The status code.
        status: u16,
    },
    /// A missing or invalid response signature.
    Signature,
    /// The phone's clock is more than 10 minutes off the server's: ask the user to fix
    /// the date and time.
    ClockSkew,
    /// A response that could not be read.
    Malformed,
    /// The report was refused (bad or used code, invalid token).
    ReportRejected {
        /// The status code.
        status: u16,
    },
    /// The upload token expired before the upload went through.
    ReportExpired,
}

impl From<CoreSessionError> for TracingError {
    fn from(e: CoreSessionError) -> Self {
        match e {
            CoreSessionError::Network => TracingError::Network,
            CoreSessionError::Server(status) => TracingError::Server { status },
            CoreSessionError::Signature => TracingError::Signature,
            CoreSessionError::ClockSkew => TracingError::ClockSkew,
            CoreSessionError::ReportRejected(status) => TracingError::ReportRejected { status },
            CoreSessionError::ReportExpired => TracingError::ReportExpired,
            _ => TracingError::Malformed,
        }
    }
}

/// The status the app shows (the SDKs' `getStatus()`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct TracingStatus {
    /// The scheme.
    pub scheme: Scheme,
    /// Healthy, exposed or infected.
    pub infection: InfectionStatus,
    /// Exposure days of the last 10 days, oldest first.
    pub exposure_days: Vec<ExposureDay>,
    /// False once the user reported an infection.
    pub tracing_active: bool,
    /// Stored sightings.
    pub sightings: u64,
    /// The last successful sync, unix seconds.
    pub last_sync_unix: Option<u64>,
    /// When the next sync is due, unix seconds.
    pub next_sync_unix: u64,
    /// The user's report.
    pub report: ReportPhase,
    /// Current problems; empty when all is well.
    pub errors: Vec<TracingError>,
}

impl From<core_session::SessionStatus> for TracingStatus {
    fn from(s: core_session::SessionStatus) -> Self {
        TracingStatus {
            scheme: s.scheme.into(),
            infection: match s.infection {
                core_session::InfectionStatus::Healthy => InfectionStatus::Healthy,
                core_session::InfectionStatus::Exposed => InfectionStatus::Exposed,
                core_session::InfectionStatus::Infected => InfectionStatus::Infected,
            },
            exposure_days: s.exposure_days.into_iter().map(Into::into).collect(),
            tracing_active: s.tracing_active,
            sightings: s.sightings as u64,
            last_sync_unix: s.last_sync.map(|t| t.0),
            next_sync_unix: s.next_sync.0,
            report: match s.report {
                core_session::ReportPhase::None => ReportPhase::None,
                core_session::ReportPhase::ExchangingCode => ReportPhase::ExchangingCode,
                core_session::ReportPhase::Uploading => ReportPhase::Uploading,
                core_session::ReportPhase::Done => ReportPhase::Done,
                core_session::ReportPhase::Failed => ReportPhase::Failed,
            },
            errors: s.errors.into_iter().map(Into::into).collect(),
        }
    }
}

/// How to set up a [`TracingSession`]: the engine's configuration plus optional
/// overrides of the SDK defaults.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SessionConfig {
    /// Scheme, backend key, scoring, retention.
    pub engine: EngineConfig,
    /// The phone's offset from UTC in minutes: fake reports are placed in local waking
    /// hours (06:00 to 22:00).
    #[uniffi(default = 0)]
    pub utc_offset_minutes: i32,
    /// Seconds between syncs; `None` for 7,200.
    #[uniffi(default = None)]
    pub sync_interval_seconds: Option<u64>,
    /// The backend's release bucket in seconds; `None` for 7,200.
    #[uniffi(default = None)]
    pub release_bucket_seconds: Option<u64>,
    /// Fake reports per day; `None` for 0.2. `0` turns them off (tests only).
    #[uniffi(default = None)]
    pub fake_rate_per_day: Option<f64>,
    /// Largest random delay added to a scheduled sync, seconds; `None` for 1,200.
    #[uniffi(default = None)]
    pub sync_jitter_seconds: Option<u64>,
    /// First retry delay after a failed sync (doubling up to the interval), seconds;
    /// `None` for 300.
    #[uniffi(default = None)]
    pub retry_min_seconds: Option<u64>,
}

impl SessionConfig {
    fn to_core(&self) -> Result<core_session::SessionConfig, Dp3tError> {
        let mut c = core_session::SessionConfig::new(self.engine.to_core()?);
        c.utc_offset_minutes = self.utc_offset_minutes;
        if let Some(v) = self.sync_interval_seconds {
            c.sync_interval_seconds = v;
        }
        if let Some(v) = self.release_bucket_seconds {
            c.release_bucket_seconds = v;
        }
        if let Some(v) = self.fake_rate_per_day {
            c.fake_rate_per_day = v;
        }
        if let Some(v) = self.sync_jitter_seconds {
            c.sync_jitter_seconds = v;
        }
        if let Some(v) = self.retry_min_seconds {
            c.retry_min_seconds = v;
        }
        Ok(c)
    }
}

/// Told about every status change (Android: post it to a `LiveData`/`StateFlow`; iOS:
/// to a `Combine` subject). Called on the thread that made the call that changed it;
/// it must not call back into the session.
#[uniffi::export(with_foreign)]
pub trait StatusListener: Send + Sync {
    /// The new status.
    fn on_status_changed(&self, status: TracingStatus);
}

/// A phone's tracing session: the engine plus the SDK's schedules and flows (see the
/// module docs). Thread-safe: calls are serialized by a lock.
#[derive(uniffi::Object)]
pub struct TracingSession {
    inner: Mutex<core_session::TracingSession>,
    listener: Mutex<Option<Arc<dyn StatusListener>>>,
}

impl std::fmt::Debug for TracingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingSession").finish_non_exhaustive()
    }
}

impl TracingSession {
    fn lock(&self) -> MutexGuard<'_, core_session::TracingSession> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` on the session and tell the listener if the status changed.
    fn changing<T>(
        &self,
        now_unix: u64,
        f: impl FnOnce(&mut core_session::TracingSession) -> Result<T, Dp3tError>,
    ) -> Result<T, Dp3tError> {
        let (result, before, after) = {
            let mut s = self.lock();
            let now = UnixTime(now_unix);
            let before = s.status(now);
            let result = f(&mut s);
            let after = s.status(now);
            (result, before, after)
        };
        if before != after {
            let listener = self
                .listener
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(l) = listener {
                l.on_status_changed(after.into());
            }
        }
        result
    }
}

fn headers_in(headers: Vec<HttpHeader>) -> Vec<(String, String)> {
    headers.into_iter().map(|h| (h.name, h.value)).collect()
}

fn request_out(r: core_session::HttpRequest) -> HttpRequest {
    HttpRequest {
        id: r.id,
        server: match r.server {
            core_session::Server::Backend => Server::Backend,
            core_session::Server::Authority => Server::Authority,
        },
        method: match r.method {
            core_session::Method::Get => HttpMethod::Get,
            core_session::Method::Post => HttpMethod::Post,
        },
        path: r.path,
        headers: r
            .headers
            .into_iter()
            .map(|(name, value)| HttpHeader { name, value })
            .collect(),
        body: r.body,
        purpose: match r.purpose {
            core_session::Purpose::Sync => RequestPurpose::Sync,
            core_session::Purpose::CodeExchange => RequestPurpose::CodeExchange,
            core_session::Purpose::Upload => RequestPurpose::Upload,
        },
    }
}

#[uniffi::export]
impl TracingSession {
    /// A new session (first start of the app) at `now_unix`: a sync is due at once.
    ///
    /// Errors: [`Dp3tError::InvalidInput`] for a bad configuration.
    #[uniffi::constructor]
    pub fn new(config: SessionConfig, now_unix: u64) -> Result<Arc<Self>, Dp3tError> {
        guarded("TracingSession.new", || {
            let s = core_session::TracingSession::new(
                config.to_core()?,
                UnixTime(now_unix),
                &mut OsRng,
            )?;
            Ok(Arc::new(TracingSession {
                inner: Mutex::new(s),
                listener: Mutex::new(None),
            }))
        })
    }

    /// Open a state written by [`TracingSession::save`].
    ///
    /// Errors: as `TracingEngine.restore`.
    #[uniffi::constructor]
    pub fn restore(
        state: Vec<u8>,
        storage_key: Vec<u8>,
        config: SessionConfig,
    ) -> Result<Arc<Self>, Dp3tError> {
        guarded("TracingSession.restore", || {
            let key = crate::storage_key(storage_key)?;
            let s = core_session::TracingSession::restore(&state, &key, config.to_core()?)?;
            Ok(Arc::new(TracingSession {
                inner: Mutex::new(s),
                listener: Mutex::new(None),
            }))
        })
    }

    /// The engine's and the session's state, encrypted under the 32-byte `storage_key`.
    /// Save after every call that changed something.
    pub fn save(&self, storage_key: Vec<u8>) -> Result<Vec<u8>, Dp3tError> {
        guarded("TracingSession.save", || {
            let key = crate::storage_key(storage_key)?;
            Ok(self.lock().save(&key, &mut OsRng)?)
        })
    }

    /// Register the listener that hears every status change (replaces an earlier one).
    pub fn set_status_listener(&self, listener: Arc<dyn StatusListener>) {
        *self.listener.lock().unwrap_or_else(PoisonError::into_inner) = Some(listener);
    }

    /// The payload to advertise now and when to ask again. Refused with
    /// [`Dp3tError::InvalidState`] after the user reported an infection.
    pub fn current_beacon(&self, now_unix: u64) -> Result<Beacon, Dp3tError> {
        guarded("current_beacon", || {
            let b = self.lock().current_beacon(UnixTime(now_unix), &mut OsRng)?;
            Ok(Beacon {
                payload: b.payload,
                valid_until_unix: b.valid_until.0,
            })
        })
    }

    /// Record a beacon the radio heard (`payload` as `parse_advertisement` returns it).
    pub fn on_sighting(
        &self,
        payload: Vec<u8>,
        at_unix: u64,
        attenuation_db: i32,
        seconds: u32,
    ) -> Result<(), Dp3tError> {
        guarded("on_sighting", || {
            self.changing(at_unix, |s| {
                Ok(s.on_sighting(&payload, UnixTime(at_unix), attenuation_db, seconds)?)
            })
        })
    }

    /// What to do at `now_unix`: requests to send and when to wake up.
    pub fn next_actions(&self, now_unix: u64) -> Result<Actions, Dp3tError> {
        guarded("next_actions", || {
            self.changing(now_unix, |s| {
                let a = s.next_actions(UnixTime(now_unix), &mut OsRng)?;
                Ok(Actions {
                    requests: a.requests.into_iter().map(request_out).collect(),
                    wake_at_unix: a.wake_at.0,
                })
            })
        })
    }

    /// The answer to request `id`: status, headers, body, received at `now_unix`. The
    /// session checks it (signature, release time, `Date` skew) before using it; a
    /// refused answer shows in the status, not as an error here.
    ///
    /// Errors: [`Dp3tError::InvalidState`] for an `id` that is not in flight.
    pub fn on_response(
        &self,
        id: u64,
        status: u16,
        headers: Vec<HttpHeader>,
        body: Vec<u8>,
        now_unix: u64,
    ) -> Result<(), Dp3tError> {
        guarded("on_response", || {
            let headers = headers_in(headers);
            self.changing(now_unix, |s| {
                Ok(s.on_response(id, status, &headers, &body, UnixTime(now_unix), &mut OsRng)?)
            })
        })
    }

    /// Request `id` failed without an answer (no network, TLS error, timeout).
    pub fn on_network_error(&self, id: u64, now_unix: u64) -> Result<(), Dp3tError> {
        guarded("on_network_error", || {
            self.changing(now_unix, |s| {
                Ok(s.on_network_error(id, UnixTime(now_unix), &mut OsRng)?)
            })
        })
    }

    /// Start the "I am infected" flow with the health authority's code and the onset
    /// (symptoms or test) as unix seconds; requests follow from `next_actions`.
    ///
    /// Errors: [`Dp3tError::InvalidState`] while a report runs or after one succeeded;
    /// [`Dp3tError::InvalidInput`] for a malformed code or an onset after `now_unix`.
    pub fn report_infected(
        &self,
        code: String,
        onset_unix: u64,
        now_unix: u64,
    ) -> Result<(), Dp3tError> {
        guarded("report_infected", || {
            self.changing(now_unix, |s| {
                Ok(s.report_infected(&code, UnixTime(onset_unix).day(), UnixTime(now_unix))?)
            })
        })
    }

    /// [`TracingSession::report_infected`] with an upload token the app already holds
    /// (no code exchange).
    pub fn report_infected_with_token(
        &self,
        token: String,
        onset_unix: u64,
        now_unix: u64,
    ) -> Result<(), Dp3tError> {
        guarded("report_infected_with_token", || {
            self.changing(now_unix, |s| {
                Ok(s.report_infected_with_token(
                    &token,
                    UnixTime(onset_unix).day(),
                    UnixTime(now_unix),
                )?)
            })
        })
    }

    /// Sync at the next `next_actions` (the SDKs' `DP3T.sync()`; "pull to refresh").
    pub fn sync_now(&self, now_unix: u64) {
        self.lock().sync_now(UnixTime(now_unix));
    }

    /// The status at `now_unix`.
    pub fn status(&self, now_unix: u64) -> TracingStatus {
        self.lock().status(UnixTime(now_unix)).into()
    }
}

// ---------------------------------------------------------------------------------------
// Apps on the OS Exposure Notification API
// ---------------------------------------------------------------------------------------

/// A Temporary Exposure Key as the OS returns it (Android `TemporaryExposureKey`, iOS
/// `ENTemporaryExposureKey`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OsExposureKey {
    /// The 16 key bytes.
    pub key_data: Vec<u8>,
    /// `rollingStartIntervalNumber` (10-minute intervals since the epoch).
    pub rolling_start_number: u32,
    /// `rollingPeriod`, 1 to 144.
    pub rolling_period: u32,
}

/// The padded GAEN upload for an app whose keys come from the OS: the keys valid on or
/// after the UTC day of `onset_unix` (the newest 30 at most), padded with fake keys to
/// 30 and shuffled, so it has the size of a fake upload. POST `json` to `path` with the
/// token.
///
/// Errors: [`Dp3tError::InvalidInput`] for a key that is not 16 bytes, a rolling period
/// outside 1..=144, or an onset after `now_unix`.
#[uniffi::export]
pub fn gaen_upload_from_os_keys(
    keys: Vec<OsExposureKey>,
    onset_unix: u64,
    now_unix: u64,
) -> Result<UploadPayload, Dp3tError> {
    guarded("gaen_upload_from_os_keys", || {
        if onset_unix > now_unix {
            return Err(Dp3tError::InvalidInput("onset is after now".into()));
        }
        let onset: Day = UnixTime(onset_unix).day();
        let first = onset
            .first_enin()
            .map_err(|e| Dp3tError::InvalidInput(e.to_string()))?
            .0;
        let mut real = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let data: [u8; 16] = k.key_data.as_slice().try_into().map_err(|_| {
                Dp3tError::InvalidInput(format!(
                    "key {i}: {} bytes, a TEK has 16",
                    k.key_data.len()
                ))
            })?;
            if !(1..=144).contains(&k.rolling_period) {
                return Err(Dp3tError::InvalidInput(format!(
                    "key {i}: rolling period {} not in 1..=144",
                    k.rolling_period
                )));
            }
            // Keys still valid on the onset day or later.
            if k.rolling_start_number.saturating_add(k.rolling_period) > first {
                real.push((data, k.rolling_start_number, k.rolling_period));
            }
        }
        real.sort_by_key(|(_, start, _)| *start);
        let keep = real
            .len()
            .saturating_sub(dp3t_core::upload::GAEN_UPLOAD_KEYS);
        Ok(dp3t_core::upload::gaen_upload(&real[keep..], UnixTime(now_unix), &mut OsRng)?.into())
    })
}

// ---------------------------------------------------------------------------------------
// BLE
// ---------------------------------------------------------------------------------------

/// What a phone without the OS EN API advertises (docs/MOBILE.md, "The BLE format").
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Advertisement {
    /// The 16-bit service UUID, 0xFD68.
    pub service_uuid16: u16,
    /// The full 128-bit form, `0000FD68-0000-1000-8000-00805F9B34FB`.
    pub service_uuid: String,
    /// The service data: the 16-byte EphID.
    pub service_data: Vec<u8>,
    /// The advertising-data bytes (AD structures: 16-bit service UUID list, then service
    /// data), for stacks that take raw bytes.
    pub ad_bytes: Vec<u8>,
}

/// The advertisement for a DP-3T beacon payload (16 bytes, from `current_beacon`).
///
/// Errors: [`Dp3tError::InvalidInput`] for a payload that is not 16 bytes (GAEN beacons
/// are advertised by the OS, not by the app).
#[uniffi::export]
pub fn advertisement(payload: Vec<u8>) -> Result<Advertisement, Dp3tError> {
    guarded("advertisement", || {
        let a = ble::Advertisement::for_payload(&payload)?;
        Ok(Advertisement {
            service_uuid16: ble::SERVICE_UUID16,
            service_uuid: ble::SERVICE_UUID.to_owned(),
            service_data: a.ephid.to_vec(),
            ad_bytes: a.to_ad_bytes(),
        })
    })
}

/// The EphID in received advertising data: the raw AD bytes of a scan record
/// (Android `ScanRecord.getBytes()`). A stack that hands over the 0xFD68 service data by
/// itself (Android `ScanRecord.getServiceData(uuid)`) already has the EphID: pass it
/// straight to `on_sighting`.
///
/// Errors: [`Dp3tError::InvalidInput`] saying what is wrong: malformed AD structures, no
/// 0xFD68 service data, service data that is not 16 bytes, or the UUID listed without
/// service data (an iOS phone in the background: read the GATT characteristic
/// `8C8494E3-BAB5-1848-40A0-1B06991C0001` instead).
#[uniffi::export]
pub fn parse_advertisement(bytes: Vec<u8>) -> Result<Vec<u8>, Dp3tError> {
    guarded("parse_advertisement", || {
        Ok(ble::parse_advertisement(&bytes)?.to_vec())
    })
}

/// The 128-bit DP-3T service UUID to scan for, `0000FD68-0000-1000-8000-00805F9B34FB`.
#[uniffi::export]
pub fn dp3t_service_uuid() -> String {
    ble::SERVICE_UUID.to_owned()
}
