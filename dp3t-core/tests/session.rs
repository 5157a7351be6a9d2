//! The tracing session driven as an app drives it, against an in-test backend and health
//! authority that speak the real wire format: sync schedule with jitter and back-off,
//! the infected flow with the code exchange, the fake schedule, the response checks
//! (signatures, `Date` skew) and the encrypted state, for all four schemes. Everything
//! is seeded: no clock, no network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use dp3t_core::engine::{EngineConfig, Scheme};
use dp3t_core::error::{Error, SessionError, StateError};
use dp3t_core::export::{write_export_zip, ExportBatch, ExportKey, SignatureInfo};
use dp3t_core::hybrid::{Window, WindowMinutes, WindowSeed};
use dp3t_core::lowcost::DayKey;
use dp3t_core::published::{HybridEntry, HybridList, LowCostEntry, LowCostList};
use dp3t_core::session::{
    HttpRequest, InfectionStatus, Method, Purpose, ReportPhase, Server, SessionConfig,
    TracingSession,
};
use dp3t_core::signing::{sign_response, ResponseClaims, SigningKey};
use dp3t_core::time::{Day, Epoch, UnixTime};
use dp3t_core::unlinkable::{EpochSeed, HashedObservation};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;

const SCHEMES: [Scheme; 4] = [
    Scheme::Gaen,
    Scheme::LowCost,
    Scheme::Unlinkable,
    Scheme::Hybrid,
];
/// 2024-10-04.
const DAY: u32 = 20_000;
const KEY: [u8; 32] = [9; 32];
const BUCKET: u64 = 7_200;

fn at(day: u32, hour: u64, minute: u64) -> UnixTime {
    UnixTime(u64::from(day) * 86_400 + hour * 3600 + minute * 60)
}

/// An IMF-fixdate, as servers write the `Date` header.
fn http_date(t: UnixTime) -> String {
    let days = (t.0 / 86_400) as i64;
    // Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let s = t.0 % 86_400;
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        weekdays[(days % 7) as usize],
        months[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn is_fake(v: &Value) -> bool {
    v.as_u64() == Some(1) || v.as_bool() == Some(true)
}

/// A backend and a health authority in one, speaking the wire format of docs/API.md.
struct World {
    scheme: Scheme,
    key: SigningKey,
    rng: ChaCha20Rng,
    /// Real upload bodies with their arrival time.
    uploads: Vec<(UnixTime, Value)>,
    exchanges: Vec<(UnixTime, bool)>,
    fake_uploads: Vec<(UnixTime, usize)>,
    real_upload_sizes: Vec<usize>,
    /// Answer every response with this clock skew (seconds, may be negative).
    skew: i64,
    /// Sign with another key.
    forge: bool,
    /// The authority refuses codes with this status.
    refuse_codes: Option<u16>,
}

impl World {
    fn new(scheme: Scheme, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        World {
            scheme,
            key: SigningKey::generate(&mut rng),
            rng,
            uploads: Vec::new(),
            exchanges: Vec::new(),
            fake_uploads: Vec::new(),
            real_upload_sizes: Vec::new(),
            skew: 0,
            forge: false,
            refuse_codes: None,
        }
    }

    fn config(&self) -> SessionConfig {
        let mut c = SessionConfig::new(EngineConfig::new(self.scheme, self.key.public_key()));
        c.fake_rate_per_day = 0.0;
        c
    }

    fn token(&self, onset: Day, fake: bool) -> String {
        let (y, m, d) = civil(onset);
        let claims = format!(
            r#"{{"scope":"exposed","onset":"{y:04}-{m:02}-{d:02}","fake":"{}"}}"#,
            u8::from(fake)
        );
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims.as_bytes()))
    }

    fn sign(&mut self, body: &[u8], release: UnixTime, now: UnixTime) -> String {
        let key = if self.forge {
            SigningKey::generate(&mut self.rng)
        } else {
            self.key.clone()
        };
        let claims = ResponseClaims::for_body(
            body,
            "dp3t-test",
            release.0.min(now.0),
            now.0 + 14 * 86_400,
            Some(release.0 * 1000),
        );
        sign_response(body, &key, &claims).unwrap()
    }

    /// Serve one request at `now`.
    fn serve(&mut self, r: &HttpRequest, now: UnixTime) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let date = UnixTime(now.0.saturating_add_signed(self.skew));
        let mut headers = vec![("Date".to_owned(), http_date(date))];
        match (r.server, r.method, r.purpose) {
            (Server::Authority, Method::Post, Purpose::CodeExchange) => {
                assert_eq!(r.path, "/v1/onset");
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                let fake = match body["fake"].as_str().unwrap() {
                    "0" => false,
                    "1" => true,
                    other => panic!("fake = {other}"),
                };
                let code = body["authorizationCode"].as_str().unwrap();
                assert_eq!(code.len(), 12, "codes look alike: {code}");
                self.exchanges.push((now, fake));
                if let (Some(status), false) = (self.refuse_codes, fake) {
                    return (status, headers, Vec::new());
                }
                let token = self.token(Day(DAY), fake);
                let out = serde_json::json!({ "accessToken": token }).to_string();
                (200, headers, out.into_bytes())
            }
            (Server::Backend, Method::Post, Purpose::Upload) => {
                let auth = r
                    .headers
                    .iter()
                    .find(|(k, _)| k == "Authorization")
                    .map(|(_, v)| v.clone())
                    .unwrap();
                let token = auth.strip_prefix("Bearer ").unwrap();
                let claims = token.split('.').nth(1).unwrap();
                let claims: Value =
                    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                if claims["fake"] == "1" {
                    self.fake_uploads.push((now, r.body.len()));
                } else {
                    self.real_upload_sizes.push(r.body.len());
                    self.uploads.push((now, body));
                }
                (200, headers, Vec::new())
            }
            (Server::Backend, Method::Get, Purpose::Sync) => {
                let release_ms = if self.scheme == Scheme::Gaen {
                    // Everything received before the last bucket end.
                    (now.0 - now.0 % BUCKET) * 1000
                } else {
                    r.path.rsplit('/').next().unwrap().parse::<u64>().unwrap()
                };
                let release = UnixTime::from_millis(release_ms);
                let (status, body) = self.publish(release);
                let sig = self.sign(&body, release, now);
                headers.push(("Signature".to_owned(), sig));
                if self.scheme == Scheme::Gaen {
                    headers.push(("x-key-bundle-tag".to_owned(), release_ms.to_string()));
                } else {
                    headers.push(("X-BATCH-RELEASE-TIME".to_owned(), release_ms.to_string()));
                }
                (status, headers, body)
            }
            other => panic!("unexpected request {other:?}"),
        }
    }

    /// The batch released at `release` (GAEN: everything before it).
    fn publish(&mut self, release: UnixTime) -> (u16, Vec<u8>) {
        let due: Vec<Value> = self
            .uploads
            .iter()
            .filter(|(t, _)| {
                if self.scheme == Scheme::Gaen {
                    *t < release
                } else {
                    *t < release && t.0 >= release.0 - BUCKET
                }
            })
            .map(|(_, v)| v.clone())
            .collect();
        let b64 = |s: &Value| STANDARD.decode(s.as_str().unwrap()).unwrap();
        match self.scheme {
            Scheme::Gaen => {
                let mut keys = Vec::new();
                for u in &due {
                    for k in u["gaenKeys"].as_array().unwrap() {
                        if !is_fake(&k["fake"]) {
                            keys.push(ExportKey {
                                key_data: b64(&k["keyData"]).try_into().unwrap(),
                                rolling_start_interval_number: k["rollingStartNumber"]
                                    .as_u64()
                                    .unwrap()
                                    as u32,
                                rolling_period: k["rollingPeriod"].as_u64().unwrap() as u32,
                                transmission_risk_level: 0,
                                report_type: Some(1),
                                days_since_onset_of_symptoms: None,
                            });
                        }
                    }
                }
                if keys.is_empty() {
                    return (204, Vec::new());
                }
                keys.sort_by_key(|k| k.key_data);
                let batch = ExportBatch {
                    start_timestamp: release.0 - BUCKET,
                    end_timestamp: release.0,
                    region: "CH".into(),
                    batch_num: 1,
                    batch_size: 1,
                    keys,
                    revised_keys: vec![],
                };
                let info = SignatureInfo {
                    verification_key_version: "v1".into(),
                    verification_key_id: "dp3t-test".into(),
                };
                (200, write_export_zip(&batch, &info, &self.key).unwrap())
            }
            Scheme::LowCost => {
                let mut entries = vec![LowCostEntry {
                    key: DayKey::from_slice(&[0x55; 32]).unwrap(),
                    day: Day(DAY - 3),
                }];
                for u in due.iter().filter(|u| !is_fake(&u["fake"])) {
                    entries.push(LowCostEntry {
                        key: DayKey::from_slice(&b64(&u["key"])).unwrap(),
                        day: Day::from_midnight_millis(u["keyDate"].as_u64().unwrap()).unwrap(),
                    });
                }
                let list = LowCostList {
                    release_time: release,
                    entries,
                };
                (200, list.encode().unwrap())
            }
            Scheme::Unlinkable => {
                let mut items = vec![[0x77; 32]];
                for u in &due {
                    for e in u["seeds"].as_array().unwrap() {
                        if !is_fake(&e["fake"]) {
                            let seed = EpochSeed::from_slice(&b64(&e["seed"])).unwrap();
                            let epoch = Epoch(e["epoch"].as_u64().unwrap() as u32);
                            items.push(HashedObservation::of_seed(&seed, epoch).0);
                        }
                    }
                }
                let filter = dp3t_core::cuckoo::FilterBuilder::new()
                    .build(&items)
                    .unwrap();
                (200, filter.to_bytes())
            }
            Scheme::Hybrid => {
                let mut entries = Vec::new();
                for u in &due {
                    for w in u["windows"].as_array().unwrap() {
                        if !is_fake(&w["fake"]) {
                            entries.push(HybridEntry {
                                window: Window::new(
                                    UnixTime::from_millis(w["windowStart"].as_u64().unwrap()),
                                    WindowMinutes::new(w["windowMinutes"].as_u64().unwrap() as u32)
                                        .unwrap(),
                                )
                                .unwrap(),
                                seed: WindowSeed::from_slice(&b64(&w["seed"])).unwrap(),
                            });
                        }
                    }
                }
                let list = HybridList {
                    release_time: release,
                    entries,
                };
                (200, list.encode().unwrap())
            }
        }
    }

    /// Let `phone` run from `from` to `until`, waking when it asks, doing its I/O.
    /// Returns the number of wake-ups.
    fn run(
        &mut self,
        phone: &mut TracingSession,
        from: UnixTime,
        until: UnixTime,
        rng: &mut ChaCha20Rng,
    ) -> usize {
        let mut now = from;
        let mut wakes = 0;
        while now <= until {
            let actions = phone.next_actions(now, rng).unwrap();
            for r in &actions.requests {
                let (status, headers, body) = self.serve(r, now);
                phone
                    .on_response(r.id, status, &headers, &body, now, rng)
                    .unwrap();
            }
            wakes += 1;
            assert!(wakes < 100_000, "runaway schedule");
            // Follow-ups (an upload after its token) come out of the next call.
            let next = phone.next_actions(now, rng).unwrap();
            if !next.requests.is_empty() {
                for r in &next.requests {
                    let (status, headers, body) = self.serve(r, now);
                    phone
                        .on_response(r.id, status, &headers, &body, now, rng)
                        .unwrap();
                }
                continue;
            }
            assert!(next.wake_at >= now);
            now = if next.wake_at == now {
                UnixTime(now.0 + 1)
            } else {
                next.wake_at
            };
        }
        wakes
    }
}

fn civil(day: Day) -> (i64, u32, u32) {
    let d = http_date(day.start());
    let parts: Vec<&str> = d.split(' ').collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == parts[2]).unwrap() as u32 + 1;
    (parts[3].parse().unwrap(), m, parts[1].parse().unwrap())
}

fn meet(from: &mut TracingSession, to: &mut TracingSession, start: UnixTime, minutes: u64) {
    let mut rng = ChaCha20Rng::seed_from_u64(start.0);
    for m in 0..minutes {
        let now = start.plus(m * 60);
        let beacon = from.current_beacon(now, &mut rng).unwrap();
        to.on_sighting(&beacon.payload, now, 45, 60).unwrap();
    }
}

#[test]
fn two_phones_one_report_for_every_scheme() {
    for scheme in SCHEMES {
        let mut world = World::new(scheme, 1 + scheme as u64);
        let mut rng = ChaCha20Rng::seed_from_u64(40 + scheme as u64);
        let start = at(DAY, 7, 0);
        let mut alice = TracingSession::new(world.config(), start, &mut rng).unwrap();
        let mut bob = TracingSession::new(world.config(), start, &mut rng).unwrap();
        world.run(&mut bob, start, start, &mut rng);
        assert_eq!(bob.status(start).last_sync, Some(start), "{scheme:?}");

        meet(&mut alice, &mut bob, at(DAY, 8, 0), 30);
        // One stored sighting per identifier heard (GAEN's RPI changes every 10 minutes).
        assert!(bob.status(at(DAY, 9, 0)).sightings >= 2, "{scheme:?}");

        // Alice tests positive at 10:00 and enters her code.
        let report_at = at(DAY, 10, 0);
        alice
            .report_infected("123456789012", Day(DAY), report_at)
            .unwrap();
        assert_eq!(alice.status(report_at).report, ReportPhase::ExchangingCode);
        assert!(matches!(
            alice.report_infected("123456789012", Day(DAY), report_at),
            Err(Error::InvalidState(_))
        ));
        world.run(&mut alice, report_at, report_at.plus(60), &mut rng);
        let status = alice.status(report_at.plus(60));
        assert_eq!(status.report, ReportPhase::Done, "{scheme:?} {status:?}");
        assert_eq!(status.infection, InfectionStatus::Infected);
        assert!(!status.tracing_active);
        assert!(alice.current_beacon(report_at.plus(60), &mut rng).is_err());
        assert_eq!(world.uploads.len(), 1);
        let (uploaded_at, _) = world.uploads[0];
        let delay = uploaded_at.0 - world.exchanges[0].0 .0;
        assert!(
            (2..=10).contains(&delay),
            "upload {delay} s after the token"
        );

        // Bob's phone syncs on its own schedule; a day later he is exposed.
        let later = at(DAY + 1, 12, 0);
        world.run(&mut bob, start, later, &mut rng);
        let status = bob.status(later);
        assert_eq!(
            status.infection,
            InfectionStatus::Exposed,
            "{scheme:?} {status:?}"
        );
        assert_eq!(status.exposure_days[0].day, Day(DAY));
        assert!(status.errors.is_empty(), "{:?}", status.errors);
        // Syncs ran every 2 hours plus at most 20 minutes of jitter.
        let last = status.last_sync.unwrap();
        assert!(status.next_sync.0 >= last.0 + 7_200 && status.next_sync.0 <= last.0 + 8_400);
    }
}

#[test]
fn sync_backs_off_on_errors_and_resumes_with_the_tag() {
    let mut world = World::new(Scheme::Gaen, 7);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let t0 = at(DAY, 9, 0);
    let mut phone = TracingSession::new(world.config(), t0, &mut rng).unwrap();

    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..7 {
        let actions = phone.next_actions(now, &mut rng).unwrap();
        assert_eq!(actions.requests.len(), 1);
        let r = &actions.requests[0];
        assert_eq!(r.path, "/v2/gaen/exposed");
        phone.on_network_error(r.id, now, &mut rng).unwrap();
        let status = phone.status(now);
        assert_eq!(status.errors, vec![SessionError::Network]);
        // Nothing to do before the retry.
        let quiet = phone.next_actions(now.plus(1), &mut rng).unwrap();
        assert!(quiet.requests.is_empty());
        assert_eq!(quiet.wake_at, status.next_sync);
        delays.push(status.next_sync.0 - now.0);
        now = status.next_sync;
    }
    // 5, 10, 20, 40, 80 minutes, then capped at 2 hours; each plus < 5 min of jitter.
    for (i, base) in [300u64, 600, 1200, 2400, 4800, 7200, 7200]
        .iter()
        .enumerate()
    {
        assert!(
            delays[i] >= *base && delays[i] <= base + 300,
            "retry {i}: {} s",
            delays[i]
        );
    }

    // A 5xx is an error too; then a good answer clears it and the tag is used.
    let actions = phone.next_actions(now, &mut rng).unwrap();
    let r = &actions.requests[0];
    phone
        .on_response(r.id, 503, &[], b"", now, &mut rng)
        .unwrap();
    assert_eq!(phone.status(now).errors, vec![SessionError::Server(503)]);
    now = phone.status(now).next_sync;
    let actions = phone.next_actions(now, &mut rng).unwrap();
    let r = actions.requests[0].clone();
    let (status, headers, body) = world.serve(&r, now);
    phone
        .on_response(r.id, status, &headers, &body, now, &mut rng)
        .unwrap();
    let s = phone.status(now);
    assert!(s.errors.is_empty());
    assert_eq!(s.last_sync, Some(now));
    assert!(s.next_sync.0 >= now.0 + 7_200 && s.next_sync.0 <= now.0 + 8_400);
    let tag = (now.0 - now.0 % BUCKET) * 1000;
    let next = phone.next_actions(s.next_sync, &mut rng).unwrap();
    assert_eq!(
        next.requests[0].path,
        format!("/v2/gaen/exposed?lastKeyBundleTag={tag}")
    );

    // Answering the same request twice, or one never sent, is refused.
    assert!(matches!(
        phone.on_response(r.id, 200, &[], b"", now, &mut rng),
        Err(Error::InvalidState(_))
    ));
}

#[test]
fn unanswered_requests_time_out() {
    let world = World::new(Scheme::LowCost, 9);
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let t0 = at(DAY, 9, 30);
    let mut phone = TracingSession::new(world.config(), t0, &mut rng).unwrap();
    let first = phone.next_actions(t0, &mut rng).unwrap();
    // The bucket that holds t0 has not ended: nothing to download yet, a success.
    assert!(first.requests.is_empty());
    let later = at(DAY, 12, 1);
    let actions = phone.next_actions(later, &mut rng).unwrap();
    let paths: Vec<&str> = actions.requests.iter().map(|r| r.path.as_str()).collect();
    let t1 = at(DAY, 10, 0).0 * 1000;
    let t2 = at(DAY, 12, 0).0 * 1000;
    assert_eq!(
        paths,
        [format!("/v1/exposed/{t1}"), format!("/v1/exposed/{t2}")]
    );
    assert!(actions.wake_at <= later.plus(120));
    let after = phone.next_actions(later.plus(120), &mut rng).unwrap();
    assert!(after.requests.is_empty());
    assert_eq!(phone.status(later).errors, vec![SessionError::Network]);
}

#[test]
fn responses_are_checked_before_use() {
    for (skew, forge, expect) in [
        (11 * 60, false, Some(SessionError::ClockSkew)),
        (-11 * 60, false, Some(SessionError::ClockSkew)),
        (9 * 60, false, None),
        (0, true, Some(SessionError::Signature)),
    ] {
        for scheme in [Scheme::Gaen, Scheme::Hybrid] {
            let mut world = World::new(scheme, 11);
            let mut rng = ChaCha20Rng::seed_from_u64(12);
            let t0 = at(DAY, 9, 0);
            let mut alice = TracingSession::new(world.config(), t0, &mut rng).unwrap();
            let mut bob = TracingSession::new(world.config(), t0, &mut rng).unwrap();
            meet(&mut alice, &mut bob, at(DAY, 9, 10), 30);
            alice
                .report_infected("000000000001", Day(DAY), at(DAY, 10, 0))
                .unwrap();
            world.run(&mut alice, at(DAY, 10, 0), at(DAY, 10, 1), &mut rng);
            world.skew = skew;
            world.forge = forge;
            let t = at(DAY + 1, 13, 0);
            world.run(&mut bob, t0, t, &mut rng);
            let status = bob.status(t);
            match expect {
                Some(e) => {
                    assert_eq!(status.errors, vec![e], "{scheme:?} skew {skew}");
                    assert_eq!(status.infection, InfectionStatus::Healthy);
                    assert!(status.last_sync.is_none_or(|t| t == t0));
                }
                None => {
                    assert!(status.errors.is_empty(), "{scheme:?} {:?}", status.errors);
                    assert_eq!(status.infection, InfectionStatus::Exposed);
                }
            }
        }
    }
}

#[test]
fn a_cached_response_counts_its_age() {
    let mut world = World::new(Scheme::Gaen, 13);
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let t0 = at(DAY, 9, 0);
    let mut phone = TracingSession::new(world.config(), t0, &mut rng).unwrap();
    let r = phone.next_actions(t0, &mut rng).unwrap().requests[0].clone();
    world.skew = -1_800; // a cache served a 30-minute-old answer ...
    let (status, mut headers, body) = world.serve(&r, t0);
    headers.push(("Age".into(), "1800".into())); // ... and said so
    phone
        .on_response(r.id, status, &headers, &body, t0, &mut rng)
        .unwrap();
    assert!(phone.status(t0).errors.is_empty());
}

#[test]
fn fake_reports_follow_the_schedule() {
    let mut world = World::new(Scheme::Gaen, 21);
    let mut rng = ChaCha20Rng::seed_from_u64(31);
    let mut config = world.config();
    config.fake_rate_per_day = 0.2;
    config.utc_offset_minutes = 120; // waking hours 06-22 local = 04-20 UTC
    config.sync_interval_seconds = 7 * 86_400; // few syncs: this test is about fakes
    let t0 = at(DAY, 12, 0);
    let mut phone = TracingSession::new(config, t0, &mut rng).unwrap();
    let days = 200;
    world.run(&mut phone, t0, at(DAY + days, 0, 0), &mut rng);

    let fakes: Vec<UnixTime> = world
        .exchanges
        .iter()
        .filter(|(_, fake)| *fake)
        .map(|(t, _)| *t)
        .collect();
    assert!(world.exchanges.iter().all(|(_, fake)| *fake));
    // Rate 0.2 a day: 40 expected in 200 days (this seed gives a count well inside).
    assert!((25..=60).contains(&fakes.len()), "{}", fakes.len());
    for t in &fakes {
        let hour = t.0 % 86_400 / 3600;
        assert!((4..20).contains(&hour), "fake at {hour} h UTC");
    }
    // Each exchange is followed by an upload 2 to 10 s later, with the fake token.
    assert_eq!(world.fake_uploads.len(), fakes.len());
    for (t, (u, _)) in fakes.iter().zip(&world.fake_uploads) {
        assert!((2..=10).contains(&(u.0 - t.0)));
    }
    assert!(world.uploads.is_empty());
    assert!(phone.status(at(DAY + days, 0, 0)).errors.is_empty());
}

#[test]
fn fake_uploads_have_the_size_of_real_ones() {
    for scheme in SCHEMES {
        let mut world = World::new(scheme, 20 + scheme as u64);
        let mut rng = ChaCha20Rng::seed_from_u64(30 + scheme as u64);
        let mut config = world.config();
        config.fake_rate_per_day = 24.0;
        let t0 = at(DAY, 8, 0);
        let mut phone = TracingSession::new(config, t0, &mut rng).unwrap();
        world.run(&mut phone, t0, at(DAY, 11, 0), &mut rng);
        assert!(!world.fake_uploads.is_empty(), "{scheme:?}");

        let mut alice = TracingSession::new(world.config(), t0, &mut rng).unwrap();
        alice.current_beacon(t0, &mut rng).unwrap();
        alice.report_infected("123456789012", Day(DAY), t0).unwrap();
        world.run(&mut alice, t0, t0.plus(60), &mut rng);
        let real = world.real_upload_sizes[0];
        assert!(
            world.fake_uploads.iter().all(|(_, size)| *size == real),
            "{scheme:?}"
        );
    }
}

#[test]
fn a_refused_code_fails_the_report_and_allows_another() {
    let mut world = World::new(Scheme::LowCost, 15);
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let t0 = at(DAY, 9, 0);
    let mut phone = TracingSession::new(world.config(), t0, &mut rng).unwrap();
    world.refuse_codes = Some(404);
    phone.report_infected("999999999999", Day(DAY), t0).unwrap();
    world.run(&mut phone, t0, t0.plus(10), &mut rng);
    let s = phone.status(t0.plus(10));
    assert_eq!(s.report, ReportPhase::Failed);
    assert_eq!(s.errors, vec![SessionError::ReportRejected(404)]);
    assert!(s.tracing_active);
    world.refuse_codes = None;
    phone
        .report_infected("123456789012", Day(DAY), t0.plus(20))
        .unwrap();
    world.run(&mut phone, t0.plus(20), t0.plus(60), &mut rng);
    assert_eq!(phone.status(t0.plus(60)).report, ReportPhase::Done);
    assert!(matches!(
        phone.report_infected("123456789012", Day(DAY), t0.plus(70)),
        Err(Error::InvalidState(_))
    ));
}

#[test]
fn a_dev_token_skips_the_exchange() {
    let mut world = World::new(Scheme::Gaen, 17);
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let t0 = at(DAY, 9, 0);
    let mut phone = TracingSession::new(world.config(), t0, &mut rng).unwrap();
    phone.current_beacon(t0, &mut rng).unwrap();
    let token = world.token(Day(DAY), false);
    phone
        .report_infected_with_token(&token, Day(DAY), t0)
        .unwrap();
    world.run(&mut phone, t0, t0.plus(10), &mut rng);
    assert!(world.exchanges.is_empty());
    assert_eq!(world.uploads.len(), 1);
    assert_eq!(phone.status(t0.plus(10)).report, ReportPhase::Done);
}

#[test]
fn the_state_is_saved_encrypted_with_the_flow_in_it() {
    let mut world = World::new(Scheme::Hybrid, 19);
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let t0 = at(DAY, 9, 0);
    let mut phone = TracingSession::new(world.config(), t0, &mut rng).unwrap();
    phone.current_beacon(t0, &mut rng).unwrap();
    phone.on_sighting(&[3; 16], t0, 50, 60).unwrap();
    phone.report_infected("123456789012", Day(DAY), t0).unwrap();
    // The exchange goes out and its token comes back; the upload is not due yet.
    let r = phone.next_actions(t0, &mut rng).unwrap().requests[0].clone();
    assert_eq!(r.purpose, Purpose::CodeExchange);
    let (status, headers, body) = world.serve(&r, t0);
    phone
        .on_response(r.id, status, &headers, &body, t0, &mut rng)
        .unwrap();
    assert_eq!(phone.status(t0).report, ReportPhase::Uploading);

    let saved = phone.save(&KEY, &mut rng).unwrap();
    assert!(!saved
        .windows(12)
        .any(|w| w == b"123456789012" || w == &body[..12]));
    for (key, expect) in [
        ([8u8; 32], StateError::Authentication),
        (KEY, StateError::Authentication),
    ] {
        let mut bytes = saved.clone();
        if key == KEY {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
        }
        assert_eq!(
            TracingSession::restore(&bytes, &key, world.config()).unwrap_err(),
            Error::State(expect)
        );
    }
    let mut other = world.config();
    other.engine.scheme = Scheme::LowCost;
    assert!(TracingSession::restore(&saved, &KEY, other).is_err());

    let mut phone = TracingSession::restore(&saved, &KEY, world.config()).unwrap();
    assert_eq!(phone.status(t0).sightings, 1);
    assert_eq!(phone.status(t0).report, ReportPhase::Uploading);
    world.run(&mut phone, t0, t0.plus(30), &mut rng);
    assert_eq!(world.uploads.len(), 1);
    assert_eq!(phone.status(t0.plus(30)).report, ReportPhase::Done);
}

#[test]
fn a_batch_not_released_yet_is_asked_again_without_an_error() {
    let mut world = World::new(Scheme::LowCost, 23);
    let mut rng = ChaCha20Rng::seed_from_u64(24);
    let t0 = at(DAY, 9, 30);
    let mut phone = TracingSession::new(world.config(), t0, &mut rng).unwrap();
    phone.next_actions(t0, &mut rng).unwrap();
    // 10:00:01: the 10:00 batch is due, but this server has not released it yet.
    let now = at(DAY, 10, 0).plus(1);
    phone.sync_now(now);
    let r = phone.next_actions(now, &mut rng).unwrap().requests[0].clone();
    let t = at(DAY, 10, 0).0 * 1000;
    assert_eq!(r.path, format!("/v1/exposed/{t}"));
    phone
        .on_response(r.id, 404, &[], b"", now, &mut rng)
        .unwrap();
    let s = phone.status(now);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    phone.sync_now(now.plus(5));
    let again = phone.next_actions(now.plus(5), &mut rng).unwrap();
    assert_eq!(again.requests[0].path, r.path);
    let (status, headers, body) = world.serve(&again.requests[0], now.plus(5));
    phone
        .on_response(
            again.requests[0].id,
            status,
            &headers,
            &body,
            now.plus(5),
            &mut rng,
        )
        .unwrap();
    phone.sync_now(now.plus(10));
    assert!(phone
        .next_actions(now.plus(10), &mut rng)
        .unwrap()
        .requests
        .is_empty());
}
