//! The optional transport: for apps that want one call instead of the
//! `next_actions`/`on_response` loop. The app implements [`HttpTransport`] with its HTTP
//! client (OkHttp, URLSession, ...); [`TracingClient`] drives a [`TracingSession`]
//! through it: [`TracingClient::sync`], [`TracingClient::report_infected`] and
//! [`TracingClient::run_due`] send what the session asks for, hand back the answers and
//! return when nothing is left to send. They are `suspend` functions in Kotlin and
//! `async` ones in Swift and Python: the app's own executor (coroutines, Swift
//! concurrency, asyncio) runs them; the library starts no runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;

use crate::session::{HttpHeader, HttpRequest, ReportPhase, TracingSession, TracingStatus};
use crate::{Dp3tError, PublishedBatch, TracingEngine};

/// What came back for an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HttpResponse {
    /// The HTTP status code (any: the session judges it).
    pub status: u16,
    /// The response headers (any case), `Date` and `Signature` included.
    pub headers: Vec<HttpHeader>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a request got no answer. An HTTP error status is not a `TransportError`: return
/// it as an [`HttpResponse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TransportError {
    /// No answer: offline, DNS, TLS, timeout, connection reset.
    #[error("network: {reason}")]
    Network {
        /// What went wrong, for the log. (Not `message`: Kotlin's exceptions have one.)
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for TransportError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        TransportError::Network {
            reason: format!("the transport threw: {}", e.reason),
        }
    }
}

/// The app's HTTP client. `send` prefixes `request.path` with the base URL of
/// `request.server` (the key server or the health authority), sends the method, headers
/// and body as given, and returns status, headers and body, whatever the status. It
/// throws [`TransportError`] only when there is no answer. Requests of one call may be
/// in flight concurrently (at most 8).
#[uniffi::export(with_foreign)]
#[async_trait::async_trait]
pub trait HttpTransport: Send + Sync {
    /// Send one request and wait for its answer.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// Requests sent at once at most.
const CONCURRENT_REQUESTS: usize = 8;
/// Rounds of requests per call at most (a guard against a session that never settles).
const MAX_ROUNDS: usize = 64;
/// The longest the helpers wait for a step the session scheduled (the upload 2 to 10
/// seconds after the code exchange). A longer wait (a retry after a failure) is left to
/// the app's background schedule: the call returns, the status says what happened.
const MAX_WAIT_SECONDS: u64 = 30;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A future without a runtime that runs `work` on a thread of its own and wakes the task
/// when it is done: the timer, and the heavy calls (matching a downloaded batch), so that
/// they never block the app's coroutine or task thread.
struct OffThread<T> {
    work: Option<Box<dyn FnOnce() -> T + Send>>,
    shared: Arc<Mutex<(Option<T>, Option<Waker>)>>,
}

impl<T: Send + 'static> Future for OffThread<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        {
            let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(done) = shared.0.take() {
                return Poll::Ready(done);
            }
            shared.1 = Some(cx.waker().clone());
        }
        if let Some(work) = self.work.take() {
            let shared = Arc::clone(&self.shared);
            std::thread::spawn(move || {
                let done = work();
                let waker = {
                    let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    s.0 = Some(done);
                    s.1.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            });
        }
        Poll::Pending
    }
}

// `work` is only ever moved, never shared: the future is Unpin whatever `T` is.
impl<T> Unpin for OffThread<T> {}

/// Run `work` on its own thread; the future resolves to its result.
pub(crate) fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = T> {
    OffThread {
        work: Some(Box::new(work)),
        shared: Arc::new(Mutex::new((None, None))),
    }
}

fn sleep(duration: Duration) -> impl Future<Output = ()> {
    off_thread(move || std::thread::sleep(duration))
}

/// A [`TracingSession`] with an [`HttpTransport`]: the one-call flows. The session stays
/// usable directly (status, beacons, sightings, saving).
#[derive(uniffi::Object)]
pub struct TracingClient {
    session: Arc<TracingSession>,
    transport: Arc<dyn HttpTransport>,
}

impl std::fmt::Debug for TracingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingClient").finish_non_exhaustive()
    }
}

/// When [`TracingClient::drive`] stops.
#[derive(Clone, Copy)]
enum Goal {
    /// Once nothing is due now.
    NothingDue,
    /// Once the user's report is done or failed (waiting for a scheduled upload).
    ReportSettled,
}

impl TracingClient {
    /// Send one round of requests, at most [`CONCURRENT_REQUESTS`] at a time, and hand
    /// the answers to the session.
    async fn send_all(&self, requests: Vec<HttpRequest>) -> Result<(), Dp3tError> {
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let chunk: Vec<HttpRequest> = requests.by_ref().take(CONCURRENT_REQUESTS).collect();
            let answers = join_all(chunk.into_iter().map(|r| {
                let id = r.id;
                let transport = Arc::clone(&self.transport);
                async move { (id, transport.send(r).await) }
            }))
            .await;
            for (id, answer) in answers {
                match answer {
                    // Off this thread: an answer may be a batch to verify and match.
                    Ok(resp) => {
                        let session = Arc::clone(&self.session);
                        off_thread(move || {
                            session.on_response(
                                id,
                                resp.status,
                                resp.headers,
                                resp.body,
                                now_unix(),
                            )
                        })
                        .await?
                    }
                    Err(TransportError::Network { .. }) => {
                        self.session.on_network_error(id, now_unix())?
                    }
                }
            }
        }
        Ok(())
    }

    /// Ask the session what to do and do it until `goal`; returns the last wake-up time.
    async fn drive(&self, goal: Goal) -> Result<u64, Dp3tError> {
        let mut wake_at = now_unix();
        for _ in 0..MAX_ROUNDS {
            let now = now_unix();
            if let Goal::ReportSettled = goal {
                if matches!(
                    self.session.status(now).report,
                    ReportPhase::Done | ReportPhase::Failed | ReportPhase::None
                ) {
                    break;
                }
            }
            let actions = self.session.next_actions(now)?;
            wake_at = actions.wake_at_unix;
            if !actions.requests.is_empty() {
                self.send_all(actions.requests).await?;
                continue;
            }
            match goal {
                Goal::NothingDue => break,
                Goal::ReportSettled => {
                    let wait = wake_at.saturating_sub(now_unix());
                    if wait > MAX_WAIT_SECONDS {
                        break;
                    }
                    sleep(Duration::from_secs(wait.max(1))).await;
                }
            }
        }
        Ok(wake_at)
    }
}

#[uniffi::export]
impl TracingClient {
    /// `session` driven through `transport`.
    #[uniffi::constructor]
    pub fn new(session: Arc<TracingSession>, transport: Arc<dyn HttpTransport>) -> Arc<Self> {
        Arc::new(TracingClient { session, transport })
    }

    /// The session (status, beacons, sightings, saving).
    pub fn session(&self) -> Arc<TracingSession> {
        Arc::clone(&self.session)
    }

    /// Sync now (the SDKs' `DP3T.sync()`): download what was published since the last
    /// sync, match it, and send whatever else is due (fake reports on their schedule).
    /// Returns the status afterwards; failures show in its `errors`.
    ///
    /// Errors: [`Dp3tError`] only for a bug or a state the session refuses.
    pub async fn sync(&self) -> Result<TracingStatus, Dp3tError> {
        self.session.sync_now(now_unix());
        self.drive(Goal::NothingDue).await?;
        Ok(self.session.status(now_unix()))
    }

    /// What a background job does when it wakes: send whatever is due (a scheduled sync,
    /// a fake report, a retry). Returns when to run again, unix seconds.
    pub async fn run_due(&self) -> Result<u64, Dp3tError> {
        self.drive(Goal::NothingDue).await
    }

    /// "I am infected": exchange the health authority's `code` for a token, then upload
    /// the keys from the onset day on (`onset_unix`, symptoms or test) after the usual
    /// short delay, the same way a fake report goes. Returns the status: `report` is
    /// `Done` on success, `Failed` for a refused code or upload (see `errors`), and still
    /// `ExchangingCode` or `Uploading` when the network failed: the session retries on
    /// its schedule (`run_due`).
    ///
    /// Errors: as [`TracingSession::report_infected`].
    pub async fn report_infected(
        &self,
        code: String,
        onset_unix: u64,
    ) -> Result<TracingStatus, Dp3tError> {
        self.session.report_infected(code, onset_unix, now_unix())?;
        self.drive(Goal::ReportSettled).await?;
        Ok(self.session.status(now_unix()))
    }

    /// [`TracingClient::report_infected`] with an upload token the app already holds.
    ///
    /// Errors: as [`TracingSession::report_infected_with_token`].
    pub async fn report_infected_with_token(
        &self,
        token: String,
        onset_unix: u64,
    ) -> Result<TracingStatus, Dp3tError> {
        self.session
            .report_infected_with_token(token, onset_unix, now_unix())?;
        self.drive(Goal::ReportSettled).await?;
        Ok(self.session.status(now_unix()))
    }
}

#[uniffi::export]
impl TracingEngine {
    /// [`TracingEngine::ingest`] on a thread of its own: `suspend` in Kotlin,
    /// `async` in Swift and Python, so that verifying and matching a large batch never
    /// blocks the caller's thread (the engine stays locked while it runs).
    pub async fn ingest_async(self: Arc<Self>, batch: PublishedBatch) -> Result<u32, Dp3tError> {
        off_thread(move || self.ingest(batch)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineConfig, Scheme, SessionConfig, TracingError};
    use dp3t_core::signing::SigningKey;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A minimal executor: poll on this thread, park until woken.
    fn block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }

    /// A transport that never gets an answer (or fails unexpectedly).
    struct Offline {
        calls: AtomicUsize,
        unexpected: bool,
    }

    #[async_trait::async_trait]
    impl HttpTransport for Offline {
        async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, TransportError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            sleep(Duration::from_millis(1)).await;
            if self.unexpected {
                Err(uniffi::UnexpectedUniFFICallbackError::new("boom").into())
            } else {
                Err(TransportError::Network {
                    reason: "offline".into(),
                })
            }
        }
    }

    fn session() -> Arc<TracingSession> {
        let key = SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let config = SessionConfig {
            engine: EngineConfig {
                scheme: Scheme::Gaen,
                backend_public_key_pem: key.public_key().to_pem().unwrap(),
                scoring: None,
                retention_days: None,
            },
            utc_offset_minutes: 0,
            sync_interval_seconds: None,
            release_bucket_seconds: None,
            fake_rate_per_day: Some(0.0),
            sync_jitter_seconds: None,
            retry_min_seconds: None,
        };
        TracingSession::new(config, now_unix()).unwrap()
    }

    #[test]
    fn a_sync_without_network_returns_with_the_error_in_the_status() {
        for unexpected in [false, true] {
            let transport = Arc::new(Offline {
                calls: AtomicUsize::new(0),
                unexpected,
            });
            let client = TracingClient::new(session(), transport.clone());
            let status = block_on(client.sync()).unwrap();
            assert_eq!(
                transport.calls.load(Ordering::SeqCst),
                1,
                "one GAEN request"
            );
            assert_eq!(status.errors, vec![TracingError::Network]);
            assert_eq!(status.last_sync_unix, None);
            // Nothing else is due: the retry is minutes away.
            let wake = block_on(client.run_due()).unwrap();
            assert!(wake > now_unix());
            assert_eq!(transport.calls.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn a_report_refused_by_the_session_is_an_error_and_a_lost_one_returns() {
        let transport = Arc::new(Offline {
            calls: AtomicUsize::new(0),
            unexpected: false,
        });
        let client = TracingClient::new(session(), transport.clone());
        assert!(matches!(
            block_on(client.report_infected("not a code!".into(), now_unix())),
            Err(Dp3tError::InvalidInput(_))
        ));
        assert_eq!(transport.calls.load(Ordering::SeqCst), 0);
        // The exchange gets no answer: the call returns (the retry is minutes away), the
        // report still under way, the error in the status.
        let status = block_on(client.report_infected("123456789012".into(), now_unix())).unwrap();
        assert_eq!(status.report, ReportPhase::ExchangingCode);
        assert!(status.errors.contains(&TracingError::Network), "{status:?}");
        assert!(transport.calls.load(Ordering::SeqCst) >= 1);
        assert!(matches!(
            block_on(client.report_infected("123456789012".into(), now_unix())),
            Err(Dp3tError::InvalidState(_))
        ));
    }

    #[test]
    fn the_timer_wakes_its_task() {
        block_on(sleep(Duration::from_millis(5)));
        block_on(sleep(Duration::ZERO));
    }

    #[test]
    fn ingest_async_is_ingest_off_the_callers_thread() {
        let key = SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(2));
        let engine = crate::TracingEngine::new(EngineConfig {
            scheme: Scheme::LowCost,
            backend_public_key_pem: key.public_key().to_pem().unwrap(),
            scoring: None,
            retention_days: None,
        })
        .unwrap();
        let batch = crate::PublishedBatch {
            kind: crate::BatchKind::LowCostList,
            body: vec![1, 2, 3],
            release_time_unix: now_unix(),
            signature_header: Some("not.a.jws".into()),
        };
        let sync = engine.ingest(batch.clone()).unwrap_err();
        let caller = std::thread::current().id();
        let on = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&on);
        let asynchronous = block_on(async move {
            *seen.lock().unwrap() = Some(std::thread::current().id());
            Arc::clone(&engine).ingest_async(batch).await
        })
        .unwrap_err();
        assert_eq!(format!("{sync:?}"), format!("{asynchronous:?}"));
        assert_eq!(
            *on.lock().unwrap(),
            Some(caller),
            "the future is polled by its caller"
        );
    }
}
