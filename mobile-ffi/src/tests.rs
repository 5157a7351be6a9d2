//! Unit tests of the facade: the error mapping, the thread-safety guarantees, and the
//! story of every scheme driven through the exported API exactly as a foreign caller
//! would (the test kit's in-process publisher stands in for the backend).

use super::*;
use dp3t_core::error::{ExportError, FilterError};
use dp3t_core::signing::{sign_response, ResponseClaims, SigningKey};
use dp3t_testkit::publish::{publish, Published};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const SCHEMES: [Scheme; 4] = [
    Scheme::Gaen,
    Scheme::LowCost,
    Scheme::Unlinkable,
    Scheme::Hybrid,
];
/// The contact day (2024-10-04).
const DAY: u32 = 20_000;
const KEY: [u8; 32] = [7; 32];

fn at(day: u32, hour: u64, minute: u64) -> u64 {
    u64::from(day) * 86_400 + hour * 3600 + minute * 60
}

struct World {
    rng: ChaCha20Rng,
    server: SigningKey,
    config: EngineConfig,
}

impl World {
    fn new(scheme: Scheme) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(scheme as u64 + 3);
        let server = SigningKey::generate(&mut rng);
        let config = EngineConfig {
            scheme,
            backend_public_key_pem: server.public_key().to_pem().unwrap(),
            scoring: None,
            retention_days: None,
        };
        World {
            rng,
            server,
            config,
        }
    }
    fn phone(&self) -> Arc<TracingEngine> {
        TracingEngine::new(self.config.clone()).unwrap()
    }
    /// `from` broadcasts to `to` every minute for `minutes` from `start`.
    fn meet(from: &TracingEngine, to: &TracingEngine, start: u64, minutes: u64, attenuation: i32) {
        for m in 0..minutes {
            let now = start + m * 60;
            let beacon = from.current_beacon(now).unwrap();
            assert!(beacon.valid_until_unix > now);
            to.record_sighting(beacon.payload, now, attenuation, 60)
                .unwrap();
        }
    }
    /// The patient's real upload, published by `key` at `release`.
    fn publish(&self, upload: &UploadPayload, release: u64, key: &SigningKey) -> Published {
        let core_upload = dp3t_core::upload::UploadPayload {
            json: upload.json.clone(),
            path: "",
        };
        publish(
            self.config.scheme.into(),
            &core_upload,
            UnixTime(release),
            key,
        )
        .unwrap()
    }
}

fn kind_of(scheme: Scheme) -> BatchKind {
    match scheme {
        Scheme::Gaen => BatchKind::GaenExportZip,
        Scheme::LowCost => BatchKind::LowCostList,
        Scheme::Unlinkable => BatchKind::UnlinkableFilter,
        Scheme::Hybrid => BatchKind::HybridList,
    }
}

fn batch(scheme: Scheme, p: &Published) -> PublishedBatch {
    PublishedBatch {
        kind: kind_of(scheme),
        body: p.body.clone(),
        release_time_unix: p.release_time.0,
        signature_header: (scheme != Scheme::Gaen).then(|| p.signature.clone()),
    }
}

#[test]
fn every_exported_object_is_send_and_sync() {
    fn shared<T: Send + Sync>(_: &T) {}
    let w = World::new(Scheme::Gaen);
    let phone = w.phone();
    shared(&phone);
    // And used from several threads at once, every sighting is kept.
    let other = w.phone();
    let payloads: Vec<Vec<u8>> = (0..4)
        .map(|i| other.current_beacon(at(DAY, 10, i * 10)).unwrap().payload)
        .collect();
    std::thread::scope(|s| {
        for (i, p) in payloads.iter().enumerate() {
            let phone = &phone;
            s.spawn(move || {
                for m in 0..50 {
                    phone
                        .record_sighting(p.clone(), at(DAY, 10, i as u64 * 10) + m, 40, 1)
                        .unwrap();
                }
            });
        }
    });
    let saved = phone.save(KEY.to_vec()).unwrap();
    let restored = Engine::restore(&saved, &KEY, w.config.to_core().unwrap()).unwrap();
    assert_eq!(restored.sightings().len(), 4);
    for s in restored.sightings().sightings() {
        assert_eq!(s.seconds, [50, 0, 0]);
    }
}

#[test]
fn core_errors_map_to_the_variant_the_app_acts_on() {
    type Check = fn(&Dp3tError) -> bool;
    let cases: Vec<(CoreError, Check)> = vec![
        (
            CoreError::InvalidLength {
                what: "EphID",
                expected: 16,
                actual: 3,
            },
            |e| matches!(e, Dp3tError::InvalidInput(m) if m.contains("EphID")),
        ),
        (CoreError::out_of_range("ENIN", "past u32"), |e| {
            matches!(e, Dp3tError::InvalidInput(_))
        }),
        (
            CoreError::Signature(SignatureError::Key("no PEM".into())),
            |e| matches!(e, Dp3tError::InvalidInput(_)),
        ),
        (CoreError::Signature(SignatureError::Mismatch), |e| {
            matches!(e, Dp3tError::BadSignature(_))
        }),
        (
            CoreError::Signature(SignatureError::Expired),
            |e| matches!(e, Dp3tError::BadSignature(m) if m.contains("expired")),
        ),
        (CoreError::Signature(SignatureError::ContentHash), |e| {
            matches!(e, Dp3tError::BadSignature(_))
        }),
        (CoreError::Filter(FilterError::Magic), |e| {
            matches!(e, Dp3tError::MalformedBatch(_))
        }),
        (CoreError::Export(ExportError::Header), |e| {
            matches!(e, Dp3tError::MalformedBatch(_))
        }),
        (CoreError::PublishedList("bad".into()), |e| {
            matches!(e, Dp3tError::MalformedBatch(_))
        }),
        (CoreError::State(StateError::Authentication), |e| {
            matches!(e, Dp3tError::WrongStorageKey(_))
        }),
        (CoreError::State(StateError::Truncated), |e| {
            matches!(e, Dp3tError::CorruptState(_))
        }),
        (
            CoreError::State(StateError::Version(9)),
            |e| matches!(e, Dp3tError::CorruptState(m) if m.contains('9')),
        ),
        (
            CoreError::WrongScheme {
                expected: dp3t_core::engine::Scheme::Gaen,
                found: dp3t_core::engine::Scheme::Hybrid,
            },
            |e| matches!(e, Dp3tError::WrongScheme(m) if m.contains("Hybrid")),
        ),
        (CoreError::InvalidState("x"), |e| {
            matches!(e, Dp3tError::InvalidState(_))
        }),
        (
            CoreError::UploadTooLarge {
                what: "keys",
                count: 31,
                limit: 30,
            },
            |e| matches!(e, Dp3tError::InvalidInput(_)),
        ),
        (CoreError::Encode("x"), |e| {
            matches!(e, Dp3tError::Internal(_))
        }),
        (CoreError::Vectors("x".into()), |e| {
            matches!(e, Dp3tError::Internal(_))
        }),
    ];
    for (core, ok) in cases {
        let text = core.to_string();
        let mapped = Dp3tError::from(core);
        assert!(ok(&mapped), "{text} -> {mapped:?}");
        // The message keeps the core's explanation.
        assert!(mapped.to_string().contains(&text), "{mapped}");
    }
}

#[test]
fn close_contact_is_reported_in_every_scheme_and_far_or_short_is_not() {
    for scheme in SCHEMES {
        let w = World::new(scheme);
        let (alice, bob, carol, dave) = (w.phone(), w.phone(), w.phone(), w.phone());
        assert_eq!(alice.scheme(), scheme);
        // Alice also broadcasts the day before, her symptom onset.
        World::meet(&alice, &dave, at(DAY - 1, 9, 0), 1, 80);
        World::meet(&alice, &bob, at(DAY, 10, 0), 30, 45); // close, 30 minutes
        World::meet(&alice, &carol, at(DAY, 11, 0), 60, 75); // far
        World::meet(&alice, &dave, at(DAY, 13, 0), 5, 45); // short
        let upload = alice
            .build_upload(at(DAY - 1, 0, 0), at(DAY + 1, 10, 0))
            .unwrap();
        assert!(upload.path.starts_with("/v"), "{}", upload.path);
        let fake = alice.build_fake_upload(at(DAY + 1, 10, 0)).unwrap();
        assert_eq!(
            (fake.path.as_str(), fake.json.len()),
            (upload.path.as_str(), upload.json.len())
        );

        let server = w.server.clone();
        let published = w.publish(&upload, at(DAY + 1, 12, 0), &server);
        let b = batch(scheme, &published);
        assert!(bob.ingest(b.clone()).unwrap() > 0, "{scheme:?}");
        assert_eq!(
            bob.ingest(b.clone()).unwrap(),
            0,
            "{scheme:?}: re-ingest adds nothing"
        );
        let status = bob.exposure_status(at(DAY + 1, 13, 0));
        assert_eq!(
            status.exposed_days,
            vec![ExposureDay {
                day: DAY,
                weighted_minutes: 30.0
            }],
            "{scheme:?}"
        );
        for (who, phone) in [("far", &carol), ("short", &dave)] {
            assert!(phone.ingest(b.clone()).unwrap() > 0, "{scheme:?} {who}");
            assert!(
                phone
                    .exposure_status(at(DAY + 1, 13, 0))
                    .exposed_days
                    .is_empty(),
                "{scheme:?} {who}"
            );
        }
        // Ten days later the contact no longer counts; after the retention it is gone.
        assert!(bob
            .exposure_status(at(DAY + 10, 1, 0))
            .exposed_days
            .is_empty());
        bob.prune(at(DAY + 20, 0, 0));
        assert!(bob
            .exposure_status(at(DAY + 1, 13, 0))
            .exposed_days
            .is_empty());
    }
}

#[test]
fn a_forged_tampered_or_unsigned_batch_is_a_bad_signature_and_changes_nothing() {
    for scheme in SCHEMES {
        let mut w = World::new(scheme);
        let (alice, bob) = (w.phone(), w.phone());
        World::meet(&alice, &bob, at(DAY, 10, 0), 30, 45);
        let upload = alice
            .build_upload(at(DAY, 0, 0), at(DAY + 1, 9, 0))
            .unwrap();
        let forger = SigningKey::generate(&mut w.rng);
        let forged = batch(scheme, &w.publish(&upload, at(DAY + 1, 12, 0), &forger));
        let err = bob.ingest(forged).unwrap_err();
        assert!(
            matches!(err, Dp3tError::BadSignature(_)),
            "{scheme:?}: {err}"
        );

        let server = w.server.clone();
        let genuine = batch(scheme, &w.publish(&upload, at(DAY + 1, 12, 0), &server));
        let mut tampered = genuine.clone();
        let n = tampered.body.len();
        tampered.body[n - 1] ^= 1;
        let err = bob.ingest(tampered).unwrap_err();
        assert!(
            matches!(
                err,
                Dp3tError::BadSignature(_) | Dp3tError::MalformedBatch(_)
            ),
            "{scheme:?}: {err}"
        );
        if scheme != Scheme::Gaen {
            let unsigned = PublishedBatch {
                signature_header: None,
                ..genuine.clone()
            };
            let err = bob.ingest(unsigned).unwrap_err();
            assert!(
                matches!(&err, Dp3tError::BadSignature(m) if m.contains("Signature header")),
                "{scheme:?}: {err}"
            );
        }
        assert!(bob
            .exposure_status(at(DAY + 1, 13, 0))
            .exposed_days
            .is_empty());
        // The genuine batch still goes through afterwards.
        assert!(bob.ingest(genuine).unwrap() > 0);
    }
}

#[test]
fn a_batch_of_another_scheme_is_wrong_scheme() {
    let w = World::new(Scheme::LowCost);
    let alice = w.phone();
    alice.current_beacon(at(DAY, 10, 0)).unwrap();
    let upload = alice.build_upload(at(DAY, 0, 0), at(DAY, 11, 0)).unwrap();
    let server = w.server.clone();
    let published = w.publish(&upload, at(DAY, 12, 0), &server);
    let gaen = World::new(Scheme::Gaen).phone();
    let err = gaen.ingest(batch(Scheme::LowCost, &published)).unwrap_err();
    assert!(matches!(err, Dp3tError::WrongScheme(_)), "{err}");
}

#[test]
fn ingest_verifies_as_of_the_release_time_and_ingest_at_at_the_given_time() {
    let w = World::new(Scheme::Hybrid);
    let (alice, bob) = (w.phone(), w.phone());
    World::meet(&alice, &bob, at(DAY, 10, 0), 30, 45);
    let upload = alice
        .build_upload(at(DAY, 0, 0), at(DAY + 1, 9, 0))
        .unwrap();
    let server = w.server.clone();
    let b = batch(
        Scheme::Hybrid,
        &w.publish(&upload, at(DAY + 1, 12, 0), &server),
    );
    // The test publisher signs with exp = release + 14 days.
    let late = at(DAY + 16, 0, 0);
    let err = bob.ingest_at(b.clone(), late).unwrap_err();
    assert!(
        matches!(&err, Dp3tError::BadSignature(m) if m.contains("expired")),
        "{err}"
    );
    let early = at(DAY + 1, 11, 0);
    assert!(matches!(
        bob.ingest_at(b.clone(), early),
        Err(Dp3tError::BadSignature(_))
    ));
    assert!(bob.ingest_at(b.clone(), at(DAY + 2, 0, 0)).unwrap() > 0);
    // `ingest` doesn't care when it runs.
    let carol = w.phone();
    World::meet(&alice, &carol, at(DAY, 10, 0), 30, 45);
    assert!(carol.ingest(b).unwrap() > 0);
}

#[test]
fn state_round_trips_and_refuses_wrong_keys_bytes_and_schemes() {
    for scheme in SCHEMES {
        let w = World::new(scheme);
        let (alice, bob) = (w.phone(), w.phone());
        World::meet(&alice, &bob, at(DAY, 10, 0), 30, 45);
        let saved = bob.save(KEY.to_vec()).unwrap();
        let bob2 = TracingEngine::restore(saved.clone(), KEY.to_vec(), w.config.clone()).unwrap();
        let upload = alice
            .build_upload(at(DAY, 0, 0), at(DAY + 1, 9, 0))
            .unwrap();
        let server = w.server.clone();
        let b = batch(scheme, &w.publish(&upload, at(DAY + 1, 12, 0), &server));
        assert!(bob2.ingest(b).unwrap() > 0, "{scheme:?}");
        let status = bob2.exposure_status(at(DAY + 1, 13, 0));
        assert_eq!(status.exposed_days.len(), 1, "{scheme:?}");
        let bob3 = TracingEngine::restore(
            bob2.save(KEY.to_vec()).unwrap(),
            KEY.to_vec(),
            w.config.clone(),
        )
        .unwrap();
        assert_eq!(bob3.exposure_status(at(DAY + 1, 13, 0)), status);

        let err = TracingEngine::restore(saved.clone(), vec![8; 32], w.config.clone()).unwrap_err();
        assert!(matches!(err, Dp3tError::WrongStorageKey(_)), "{err}");
        let err = TracingEngine::restore(saved.clone(), vec![7; 31], w.config.clone()).unwrap_err();
        assert!(
            matches!(&err, Dp3tError::InvalidInput(m) if m.contains("32 bytes")),
            "{err}"
        );
        assert!(matches!(
            bob.save(vec![1; 16]),
            Err(Dp3tError::InvalidInput(_))
        ));
        let err = TracingEngine::restore(saved[..10].to_vec(), KEY.to_vec(), w.config.clone())
            .unwrap_err();
        assert!(matches!(err, Dp3tError::CorruptState(_)), "{err}");
        let other = if scheme == Scheme::Gaen {
            Scheme::LowCost
        } else {
            Scheme::Gaen
        };
        let config = EngineConfig {
            scheme: other,
            ..w.config.clone()
        };
        let err = TracingEngine::restore(saved, KEY.to_vec(), config).unwrap_err();
        assert!(matches!(err, Dp3tError::WrongScheme(_)), "{err}");
    }
}

#[test]
fn config_overrides_apply_and_bad_configs_are_invalid_input() {
    let w = World::new(Scheme::LowCost);
    let strict = EngineConfig {
        scoring: Some(ScoringConfig {
            min_minutes: 31.0,
            ..ScoringConfig::default()
        }),
        retention_days: Some(20),
        ..w.config.clone()
    };
    let (alice, bob, picky) = (w.phone(), w.phone(), TracingEngine::new(strict).unwrap());
    World::meet(&alice, &bob, at(DAY, 10, 0), 30, 45);
    World::meet(&alice, &picky, at(DAY, 10, 0), 30, 45);
    let upload = alice
        .build_upload(at(DAY, 0, 0), at(DAY + 1, 9, 0))
        .unwrap();
    let server = w.server.clone();
    let b = batch(
        Scheme::LowCost,
        &w.publish(&upload, at(DAY + 1, 12, 0), &server),
    );
    bob.ingest(b.clone()).unwrap();
    picky.ingest(b).unwrap();
    assert_eq!(
        bob.exposure_status(at(DAY + 1, 13, 0)).exposed_days.len(),
        1
    );
    assert!(picky
        .exposure_status(at(DAY + 1, 13, 0))
        .exposed_days
        .is_empty());
    // 20 days of retention: after 16 days the sighting is still there for Picky only.
    bob.prune(at(DAY + 16, 0, 0));
    picky.prune(at(DAY + 16, 0, 0));
    let sightings = |e: &TracingEngine, c: &EngineConfig| {
        Engine::restore(&e.save(KEY.to_vec()).unwrap(), &KEY, c.to_core().unwrap())
            .unwrap()
            .sightings()
            .len()
    };
    assert_eq!(sightings(&bob, &w.config), 0);
    let strict_config = EngineConfig {
        retention_days: Some(20),
        ..w.config.clone()
    };
    // 30 minutes from 10:00 are two 15-minute EphIDs.
    assert_eq!(sightings(&picky, &strict_config), 2);

    let bad = [
        EngineConfig {
            retention_days: Some(0),
            ..w.config.clone()
        },
        EngineConfig {
            scoring: Some(ScoringConfig {
                factor_low: f64::NAN,
                ..ScoringConfig::default()
            }),
            ..w.config.clone()
        },
        EngineConfig {
            backend_public_key_pem: "not a key".into(),
            ..w.config.clone()
        },
    ];
    for config in bad {
        let err = TracingEngine::new(config.clone()).unwrap_err();
        assert!(
            matches!(err, Dp3tError::InvalidInput(_)),
            "{config:?}: {err}"
        );
    }
    let err = TracingEngine::new(EngineConfig {
        backend_public_key_pem: "x".into(),
        ..w.config.clone()
    })
    .unwrap_err();
    assert!(err.to_string().contains("backend_public_key_pem"), "{err}");
}

#[test]
fn bad_arguments_are_invalid_input() {
    let w = World::new(Scheme::Gaen);
    let p = w.phone();
    let err = p
        .record_sighting(vec![1; 17], at(DAY, 1, 0), 40, 60)
        .unwrap_err();
    assert!(matches!(err, Dp3tError::InvalidInput(_)), "{err}");
    let err = p
        .record_sighting(vec![1; 20], u64::MAX, 40, 60)
        .unwrap_err();
    assert!(matches!(err, Dp3tError::InvalidInput(_)), "{err}");
    assert!(matches!(
        p.current_beacon(u64::MAX),
        Err(Dp3tError::InvalidInput(_))
    ));
    let err = p.build_upload(at(DAY, 12, 0), at(DAY, 11, 0)).unwrap_err();
    assert!(
        matches!(&err, Dp3tError::InvalidInput(m) if m.contains("onset")),
        "{err}"
    );
}

#[test]
fn a_panic_becomes_internal_and_a_poisoned_lock_is_recovered() {
    let err = guarded("test", || -> Result<(), Dp3tError> { panic!("boom {}", 1) }).unwrap_err();
    assert_eq!(err, Dp3tError::Internal("test: panicked: boom 1".into()));
    let err = guarded("test", || -> Result<(), Dp3tError> { panic!("static") }).unwrap_err();
    assert_eq!(err, Dp3tError::Internal("test: panicked: static".into()));

    let w = World::new(Scheme::LowCost);
    let phone = w.phone();
    let beacon = phone.current_beacon(at(DAY, 10, 0)).unwrap();
    let poisoner = std::thread::scope(|s| {
        s.spawn(|| {
            let _guard = phone.engine.lock().unwrap();
            panic!("poison the lock");
        })
        .join()
    });
    assert!(poisoner.is_err());
    assert!(phone.engine.is_poisoned());
    // Every call still works on the (intact) engine.
    assert_eq!(phone.current_beacon(at(DAY, 10, 1)).unwrap(), beacon);
    assert!(phone
        .exposure_status(at(DAY, 11, 0))
        .exposed_days
        .is_empty());
    assert!(phone.save(KEY.to_vec()).is_ok());
}

#[test]
fn fake_uploads_are_scheduled_in_the_future() {
    let w = World::new(Scheme::Unlinkable);
    let p = w.phone();
    let now = at(DAY, 12, 0);
    let times: Vec<u64> = (0..50)
        .map(|_| p.next_fake_upload_time(now).unwrap())
        .collect();
    assert!(times.iter().all(|t| *t >= now));
    assert!(times.iter().any(|t| *t != times[0]), "random delays");
}

#[test]
fn os_exposure_windows_are_scored_with_the_given_config() {
    let now = at(DAY, 20, 0);
    let window = |day: u32, attenuation: i32, minutes: u32| ExposureWindow {
        day,
        scan_instances: (0..minutes)
            .map(|_| ScanInstance {
                typical_attenuation_db: attenuation,
                seconds_since_last_scan: 60,
            })
            .collect(),
    };
    let windows = vec![
        window(DAY, 50, 10),
        window(DAY, 60, 12),      // + 6 weighted: 16 ≥ 15
        window(DAY - 1, 50, 14),  // 14 < 15
        window(DAY - 2, 70, 60),  // far
        window(DAY - 11, 40, 60), // too old
    ];
    let days = exposure_days_from_windows(windows.clone(), default_scoring_config(), now).unwrap();
    assert_eq!(
        days,
        vec![ExposureDay {
            day: DAY,
            weighted_minutes: 16.0
        }]
    );
    let lenient = ScoringConfig {
        min_minutes: 14.0,
        ..ScoringConfig::default()
    };
    let days = exposure_days_from_windows(windows.clone(), lenient, now).unwrap();
    assert_eq!(
        days.iter().map(|d| d.day).collect::<Vec<_>>(),
        vec![DAY - 1, DAY]
    );
    let bad = ScoringConfig {
        attenuation_low: 70,
        ..ScoringConfig::default()
    };
    assert!(matches!(
        exposure_days_from_windows(windows, bad, now),
        Err(Dp3tError::InvalidInput(_))
    ));
}

#[test]
fn default_scoring_config_is_the_protocol_default() {
    let c = default_scoring_config();
    assert_eq!(
        core_exposure::ScoringConfig::from(c),
        core_exposure::ScoringConfig::default()
    );
    assert_eq!((c.attenuation_low, c.attenuation_medium), (55, 63));
    assert_eq!(
        (c.factor_low, c.factor_medium, c.min_minutes),
        (1.0, 0.5, 15.0)
    );
}

#[test]
fn response_signatures_are_checked_against_the_system_clock() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let key = SigningKey::generate(&mut rng);
    let pem = key.public_key().to_pem().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = b"{\"ok\":true}".to_vec();
    let sign = |iat: u64, exp: u64| {
        sign_response(
            &body,
            &key,
            &ResponseClaims::for_body(&body, "dp3t", iat, exp, None),
        )
        .unwrap()
    };
    let fresh = sign(now - 60, now + 3600);
    verify_response_signature(body.clone(), fresh.clone(), pem.clone()).unwrap();
    let err = verify_response_signature(b"other".to_vec(), fresh.clone(), pem.clone()).unwrap_err();
    assert!(matches!(err, Dp3tError::BadSignature(_)), "{err}");
    let stale = sign(now - 7200, now - 3600);
    let err = verify_response_signature(body.clone(), stale, pem.clone()).unwrap_err();
    assert!(
        matches!(&err, Dp3tError::BadSignature(m) if m.contains("expired")),
        "{err}"
    );
    let other = SigningKey::generate(&mut rng)
        .public_key()
        .to_pem()
        .unwrap();
    assert!(matches!(
        verify_response_signature(body.clone(), fresh.clone(), other),
        Err(Dp3tError::BadSignature(_))
    ));
    assert!(matches!(
        verify_response_signature(body, fresh, "garbage".into()),
        Err(Dp3tError::InvalidInput(_))
    ));
}

/// Counts the status changes a session reports.
#[derive(Default)]
struct Counter(std::sync::Mutex<Vec<TracingStatus>>);

impl StatusListener for Counter {
    fn on_status_changed(&self, status: TracingStatus) {
        self.0.lock().unwrap().push(status);
    }
}

#[test]
fn the_session_facade_reports_changes_and_maps_its_errors() {
    let w = World::new(Scheme::LowCost);
    let config = SessionConfig {
        engine: w.config.clone(),
        utc_offset_minutes: 0,
        sync_interval_seconds: None,
        release_bucket_seconds: None,
        fake_rate_per_day: Some(0.0),
        sync_jitter_seconds: None,
        retry_min_seconds: None,
    };
    let now = at(DAY, 9, 30);
    let phone = TracingSession::new(config.clone(), now).unwrap();
    let counter = Arc::new(Counter::default());
    phone.set_status_listener(counter.clone());
    // The first sync round is empty (the start bucket has not ended): a success.
    let actions = phone.next_actions(now).unwrap();
    assert!(actions.requests.is_empty());
    assert_eq!(phone.status(now).last_sync_unix, Some(now));
    assert_eq!(phone.current_beacon(now).unwrap().payload.len(), 16);
    phone.on_sighting(vec![5; 16], now, 40, 60).unwrap();
    assert_eq!(counter.0.lock().unwrap().last().unwrap().sightings, 1);

    phone
        .report_infected("123456789012".into(), now, now)
        .unwrap();
    assert!(matches!(
        phone.report_infected("123456789012".into(), now, now),
        Err(Dp3tError::InvalidState(_))
    ));
    let exchange = phone.next_actions(now).unwrap().requests;
    assert_eq!(exchange.len(), 1);
    assert_eq!(exchange[0].server, Server::Authority);
    assert_eq!(exchange[0].path, "/v1/onset");
    assert!(matches!(
        phone.on_response(exchange[0].id + 100, 200, vec![], vec![], now),
        Err(Dp3tError::InvalidState(_))
    ));
    phone.on_network_error(exchange[0].id, now).unwrap();
    assert_eq!(
        phone.status(now).errors,
        vec![TracingError::Network],
        "a lost exchange is retried, and said"
    );
    assert_eq!(
        counter.0.lock().unwrap().last().unwrap().report,
        ReportPhase::ExchangingCode
    );

    // Saved and restored with the flow in it.
    let restored =
        TracingSession::restore(phone.save(KEY.to_vec()).unwrap(), KEY.to_vec(), config).unwrap();
    assert_eq!(restored.status(now).report, ReportPhase::ExchangingCode);
}

#[test]
fn os_keys_from_the_onset_on_make_one_padded_upload() {
    let now = at(DAY, 12, 0);
    let keys: Vec<OsExposureKey> = (0..40u32)
        .map(|d| OsExposureKey {
            key_data: vec![d as u8; 16],
            rolling_start_number: (DAY - d) * 144,
            rolling_period: 144,
        })
        .collect();
    // Onset 35 days ago: 36 keys qualify, the newest 30 are uploaded.
    let upload = gaen_upload_from_os_keys(keys.clone(), u64::from(DAY - 35) * 86_400, now).unwrap();
    let body: serde_json::Value = serde_json::from_str(&upload.json).unwrap();
    let starts: Vec<u64> = body["gaenKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["rollingStartNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(starts.len(), 30);
    assert_eq!(*starts.iter().min().unwrap(), u64::from(DAY - 29) * 144);
    // Onset 2 days ago: 3 real keys, 27 fake ones, the length of an all-fake upload.
    let upload = gaen_upload_from_os_keys(keys, u64::from(DAY - 2) * 86_400, now).unwrap();
    let fake = gaen_upload_from_os_keys(vec![], now, now).unwrap();
    assert_eq!(upload.json.len(), fake.json.len());
    assert_eq!(upload.json.matches("\"fake\":0").count(), 3);
    for bad in [
        OsExposureKey {
            key_data: vec![0; 15],
            rolling_start_number: DAY * 144,
            rolling_period: 144,
        },
        OsExposureKey {
            key_data: vec![0; 16],
            rolling_start_number: DAY * 144,
            rolling_period: 145,
        },
    ] {
        assert!(matches!(
            gaen_upload_from_os_keys(vec![bad], now, now),
            Err(Dp3tError::InvalidInput(_))
        ));
    }
    assert!(matches!(
        gaen_upload_from_os_keys(vec![], now + 1, now),
        Err(Dp3tError::InvalidInput(_))
    ));
}

#[test]
fn advertisements_round_trip_and_gaen_payloads_are_refused() {
    let ad = advertisement(vec![9; 16]).unwrap();
    assert_eq!(ad.service_uuid16, 0xFD68);
    assert_eq!(parse_advertisement(ad.ad_bytes).unwrap(), vec![9; 16]);
    assert!(matches!(
        advertisement(vec![0; 20]),
        Err(Dp3tError::InvalidInput(_))
    ));
    assert!(matches!(
        parse_advertisement(vec![3, 3, 0x68, 0xFD]),
        Err(Dp3tError::InvalidInput(m)) if m.contains("GATT")
    ));
}
