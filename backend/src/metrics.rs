//! Prometheus metrics, hand-rolled on atomics: a fixed set of counters, one gauge and one
//! latency histogram per route, rendered in the text exposition format at `/metrics`.
//!
//! A fixed set (rather than a registry of dynamic labels) keeps the hot path to a couple
//! of relaxed atomic adds and makes it impossible for request data to create label values.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use dp3t_core::engine::Scheme;

use crate::api::ErrorCode;
use crate::db::scheme_name;

/// The four schemes, in the order of their metric series.
const SCHEMES: [Scheme; 4] = [
    Scheme::Gaen,
    Scheme::LowCost,
    Scheme::Unlinkable,
    Scheme::Hybrid,
];

/// The codes an upload can be refused with: the `reason` series of
/// `dp3t_uploads_rejected_total`, in this order.
pub const REJECT_REASONS: &[ErrorCode] = &[
    ErrorCode::ContentType,
    ErrorCode::TooLarge,
    ErrorCode::MalformedBody,
    ErrorCode::KeyCount,
    ErrorCode::KeyData,
    ErrorCode::RollingPeriod,
    ErrorCode::FakeFlag,
    ErrorCode::AuthMissing,
    ErrorCode::TokenMalformed,
    ErrorCode::TokenAlgorithm,
    ErrorCode::TokenSignature,
    ErrorCode::TokenExpired,
    ErrorCode::TokenNotYetValid,
    ErrorCode::TokenValidity,
    ErrorCode::TokenScope,
    ErrorCode::TokenClaims,
    ErrorCode::TokenReplayed,
    ErrorCode::EntryCount,
    ErrorCode::KeyDate,
    ErrorCode::Window,
    ErrorCode::WindowMinutes,
    ErrorCode::DelayedKeyDate,
    ErrorCode::SealedEnvelope,
    ErrorCode::RequestTimeout,
    ErrorCode::Busy,
    ErrorCode::Internal,
];

/// The routes with their own latency histogram (method, path); anything else is `other`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v2/gaen"),
    ("GET", "/v2/gaen/exposed"),
    ("POST", "/v2/gaen/exposed"),
    ("GET", "/healthz"),
    ("GET", "/openapi.yaml"),
    ("POST", "/v1/exposed"),
    ("GET", "/v1/exposed/{batchReleaseTime}"),
    ("POST", "/v1/unlinkable/exposed"),
    ("GET", "/v1/unlinkable/filter/{batchReleaseTime}"),
    ("POST", "/v1/hybrid/exposed"),
    ("GET", "/v1/hybrid/exposed/{batchReleaseTime}"),
    ("POST", "/v1/gaen/exposed"),
    ("POST", "/v1/gaen/exposednextday"),
    ("GET", "/v1/gaen/exposed/{keyDate}"),
    ("GET", "/v1/gaen/buckets/{day}"),
    ("POST", "/v2/sealed"),
    ("GET", "/v2/sealed/key"),
    ("OTHER", "other"),
];

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BOUNDS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Index into [`ROUTES`] for a request. A route ending in `{param}` matches any one
/// non-empty last path segment.
pub fn route_index(method: &str, path: &str) -> usize {
    let matches = |route: &str| match route.find('{') {
        Some(i) => path
            .strip_prefix(&route[..i])
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
        None => route == path,
    };
    ROUTES
        .iter()
        .position(|(m, p)| *m == method && matches(p))
        .unwrap_or(ROUTES.len() - 1)
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; 15],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
}

/// All counters of the server.
pub struct Metrics {
    uploads_accepted: AtomicU64,
    rejected: Vec<AtomicU64>,
    /// Per scheme, indexed by `Scheme as usize`.
    buckets_built: [AtomicU64; 4],
    bucket_failures: [AtomicU64; 4],
    export_builds: AtomicU64,
    http: Vec<Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            uploads_accepted: AtomicU64::new(0),
            rejected: ErrorCode::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            buckets_built: Default::default(),
            bucket_failures: Default::default(),
            export_builds: AtomicU64::new(0),
            http: ROUTES.iter().map(|_| Histogram::default()).collect(),
        }
    }
}

impl Metrics {
    /// An accepted upload, real or fake alike: no series may move differently for a
    /// real and a fake upload (what was stored is counted at release, per bucket).
    pub fn upload_answered(&self) {
        self.uploads_accepted.fetch_add(1, Relaxed);
    }

    /// A refused upload. Codes outside [`REJECT_REASONS`] are counted but not rendered.
    pub fn upload_rejected(&self, reason: ErrorCode) {
        if let Some(c) = self.rejected.get(reason as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Rejections counted so far for `reason`.
    pub fn rejected_count(&self, reason: ErrorCode) -> u64 {
        self.rejected
            .get(reason as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// A bucket of `scheme` was built and stored by this node.
    pub fn bucket_built(&self, scheme: Scheme) {
        self.buckets_built[scheme as usize].fetch_add(1, Relaxed);
    }

    /// Buckets of `scheme` built and stored by this node so far.
    pub fn buckets_built(&self, scheme: Scheme) -> u64 {
        self.buckets_built[scheme as usize].load(Relaxed)
    }

    /// Releasing a bucket of `scheme` failed (will be retried).
    pub fn bucket_failed(&self, scheme: Scheme) {
        self.bucket_failures[scheme as usize].fetch_add(1, Relaxed);
    }

    /// A download response (union export or re-signed header) was built and cached.
    pub fn export_built(&self) {
        self.export_builds.fetch_add(1, Relaxed);
    }

    /// Record the latency of a request on route `route` (an index from [`route_index`]).
    pub fn observe_request(&self, route: usize, d: Duration) {
        if let Some(h) = self.http.get(route) {
            h.observe(d);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8 * 1024);
        let counter = |s: &mut String, name: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut s,
            "dp3t_uploads_accepted_total",
            "Uploads answered with 200, real and fake alike.",
        );
        let _ = writeln!(
            s,
            "dp3t_uploads_accepted_total {}",
            self.uploads_accepted.load(Relaxed)
        );
        counter(
            &mut s,
            "dp3t_uploads_rejected_total",
            "Uploads refused, by reason.",
        );
        for r in REJECT_REASONS {
            let _ = writeln!(
                s,
                "dp3t_uploads_rejected_total{{reason=\"{r}\"}} {}",
                self.rejected_count(*r)
            );
        }
        for (name, help, values) in [
            (
                "dp3t_buckets_built_total",
                "Release buckets built and stored by this node, by scheme.",
                &self.buckets_built,
            ),
            (
                "dp3t_bucket_release_failures_total",
                "Failed attempts to release a bucket, by scheme.",
                &self.bucket_failures,
            ),
        ] {
            counter(&mut s, name, help);
            for scheme in SCHEMES {
                let _ = writeln!(
                    s,
                    "{name}{{scheme=\"{}\"}} {}",
                    scheme_name(scheme),
                    values[scheme as usize].load(Relaxed)
                );
            }
        }
        counter(
            &mut s,
            "dp3t_export_responses_built_total",
            "Download responses built (then cached) by this node.",
        );
        let _ = writeln!(
            s,
            "dp3t_export_responses_built_total {}",
            self.export_builds.load(Relaxed)
        );
        let name = "dp3t_http_request_duration_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Request latency by route.\n# TYPE {name} histogram"
        );
        for ((method, path), h) in ROUTES.iter().zip(&self.http) {
            let labels = format!("method=\"{method}\",route=\"{path}\"");
            let mut cumulative = 0;
            for (b, c) in LATENCY_BOUNDS.iter().zip(&h.buckets) {
                cumulative += c.load(Relaxed);
                let _ = writeln!(s, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(s, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
            let _ = writeln!(
                s,
                "{name}_sum{{{labels}}} {}",
                h.sum_micros.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(s, "{name}_count{{{labels}}} {count}");
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.upload_answered();
        m.upload_answered();
        m.upload_rejected(ErrorCode::TokenReplayed);
        m.upload_rejected(ErrorCode::Internal);
        let r = route_index("GET", "/v2/gaen/exposed");
        m.observe_request(r, Duration::from_micros(50));
        m.observe_request(r, Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("dp3t_uploads_accepted_total 2"));
        assert!(!text.contains("kind="));
        assert!(text.contains("dp3t_uploads_rejected_total{reason=\"token_replayed\"} 1"));
        assert!(text.contains("dp3t_uploads_rejected_total{reason=\"internal\"} 1"));
        let l = "method=\"GET\",route=\"/v2/gaen/exposed\"";
        assert!(text.contains(&format!(
            "dp3t_http_request_duration_seconds_bucket{{{l},le=\"0.0001\"}} 1"
        )));
        assert!(text.contains(&format!(
            "dp3t_http_request_duration_seconds_bucket{{{l},le=\"0.005\"}} 2"
        )));
        assert!(text.contains(&format!(
            "dp3t_http_request_duration_seconds_count{{{l}}} 2"
        )));
        assert_eq!(route_index("DELETE", "/x"), ROUTES.len() - 1);
        let filter = route_index("GET", "/v1/unlinkable/filter/1700006400000");
        assert_eq!(ROUTES[filter].1, "/v1/unlinkable/filter/{batchReleaseTime}");
        assert_eq!(route_index("GET", "/v1/exposed/"), ROUTES.len() - 1);
        assert_eq!(route_index("GET", "/v1/exposed/1/2"), ROUTES.len() - 1);
    }
}
