//! In-process stories for every scheme: two phones meet, one reports positive, the batch
//! is published with the core's own encoders, and the other phone finds exactly the
//! expected exposure days. Plus the negative cases.

#![allow(clippy::unwrap_used)]

use dp3t_core::engine::{Engine, EngineConfig, Scheme};
use dp3t_core::error::{Error, StateError};
use dp3t_core::signing::SigningKey;
use dp3t_core::time::{Day, UnixTime};
use dp3t_testkit::publish::{publish, Published};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const SCHEMES: [Scheme; 4] = [
    Scheme::Gaen,
    Scheme::LowCost,
    Scheme::Unlinkable,
    Scheme::Hybrid,
];
/// Contact day: 2024-10-01.
const DAY: Day = Day(20_000);

fn at(day: Day, hour: u64, minute: u64) -> UnixTime {
    UnixTime(day.start().0 + hour * 3600 + minute * 60)
}

struct World {
    rng: ChaCha20Rng,
    server: SigningKey,
    config: EngineConfig,
}

impl World {
    fn new(scheme: Scheme) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(scheme as u64 + 11);
        let server = SigningKey::generate(&mut rng);
        let config = EngineConfig::new(scheme, server.public_key());
        World {
            rng,
            server,
            config,
        }
    }
    fn phone(&self) -> Engine {
        Engine::new(self.config.clone()).unwrap()
    }
    /// `from` broadcasts to `to` every minute for `minutes` from `start`.
    fn meet(
        &mut self,
        from: &mut Engine,
        to: &mut Engine,
        start: UnixTime,
        minutes: u64,
        attenuation: i32,
    ) {
        for m in 0..minutes {
            let now = start.plus(m * 60);
            let b = from.current_beacon(now, &mut self.rng).unwrap();
            to.record_sighting(&b.payload, now, attenuation, 60)
                .unwrap();
        }
    }
    fn report(
        &mut self,
        patient: &mut Engine,
        onset: Day,
        now: UnixTime,
        release: UnixTime,
    ) -> Published {
        let upload = patient.build_upload(onset, now, &mut self.rng).unwrap();
        publish(self.config.scheme, &upload, release, &self.server).unwrap()
    }
}

#[test]
fn close_contact_is_an_exposure_day_in_every_scheme() {
    for scheme in SCHEMES {
        let mut w = World::new(scheme);
        let (mut alice, mut bob, mut carol, mut dave) =
            (w.phone(), w.phone(), w.phone(), w.phone());
        // Alice broadcasts on the day before too, so she has keys from the onset day on.
        w.meet(&mut alice, &mut dave, at(Day(DAY.0 - 1), 9, 0), 1, 80);
        w.meet(&mut alice, &mut bob, at(DAY, 10, 0), 30, 45); // close, 30 min
        w.meet(&mut alice, &mut carol, at(DAY, 11, 0), 60, 75); // far
        w.meet(&mut alice, &mut dave, at(DAY, 13, 0), 5, 45); // too short
        let release = at(DAY.next(), 12, 0);
        let batch = w.report(&mut alice, Day(DAY.0 - 1), at(DAY.next(), 10, 0), release);
        let now = at(DAY.next(), 12, 5);

        assert!(
            bob.ingest(&batch.as_batch(), now).unwrap() > 0,
            "{scheme:?}"
        );
        let days = bob.exposure_days(now);
        assert_eq!(days.len(), 1, "{scheme:?}: {days:?}");
        assert_eq!(days[0].day, DAY);
        assert_eq!(days[0].weighted_minutes, 30.0, "{scheme:?}");
        // Ingesting the same batch again adds nothing.
        assert_eq!(bob.ingest(&batch.as_batch(), now).unwrap(), 0);

        // Too far: matched, but not an exposure.
        assert!(
            carol.ingest(&batch.as_batch(), now).unwrap() > 0,
            "{scheme:?}"
        );
        assert!(carol.exposure_days(now).is_empty(), "{scheme:?} far");
        // Too short.
        assert!(
            dave.ingest(&batch.as_batch(), now).unwrap() > 0,
            "{scheme:?}"
        );
        assert!(dave.exposure_days(now).is_empty(), "{scheme:?} short");
        // Only the last 10 days count.
        assert!(bob.exposure_days(at(Day(DAY.0 + 10), 1, 0)).is_empty());
    }
}

#[test]
fn sightings_at_or_after_release_never_match() {
    for scheme in SCHEMES {
        let mut w = World::new(scheme);
        let (mut alice, mut eve) = (w.phone(), w.phone());
        // Alice broadcasts on the reporting day; an attacker replays what it heard to Eve
        // from the release time on. The release falls inside an epoch so that, for the
        // unlinkable design too, some replays carry the very same hashed observation.
        let release = at(DAY, 11, 20);
        let mut beacons = Vec::new();
        for m in 0..20 {
            let t = at(DAY, 11, m);
            beacons.push((alice.current_beacon(t, &mut w.rng).unwrap().payload, t));
        }
        let batch = w.report(&mut alice, DAY, at(DAY, 11, 19), release);
        for (p, t) in &beacons {
            eve.record_sighting(p, (*t).max(release), 45, 60).unwrap();
        }
        // The same replays one second earlier would have matched: the rule is what stops them.
        let mut control = w.phone();
        for (p, t) in &beacons {
            control
                .record_sighting(p, (*t).max(release).minus(61), 45, 60)
                .unwrap();
        }
        assert!(
            control.ingest(&batch.as_batch(), at(DAY, 15, 0)).unwrap() > 0,
            "{scheme:?}"
        );
        assert_eq!(
            eve.ingest(&batch.as_batch(), at(DAY, 15, 0)).unwrap(),
            0,
            "{scheme:?}"
        );
        assert!(eve.exposure_days(at(DAY, 15, 0)).is_empty());
    }
}

#[test]
fn identifiers_heard_on_another_day_do_not_match() {
    for scheme in SCHEMES {
        let mut w = World::new(scheme);
        let (mut alice, mut bob) = (w.phone(), w.phone());
        let mut heard = Vec::new();
        for m in 0..30 {
            let t = at(DAY, 10, m);
            heard.push(alice.current_beacon(t, &mut w.rng).unwrap().payload);
        }
        // Bob's record of them is two days later (a replay, or a broken clock).
        for (m, p) in heard.iter().enumerate() {
            bob.record_sighting(p, at(Day(DAY.0 + 2), 10, m as u64), 45, 60)
                .unwrap();
        }
        let batch = w.report(
            &mut alice,
            DAY,
            at(Day(DAY.0 + 3), 9, 0),
            at(Day(DAY.0 + 3), 12, 0),
        );
        assert_eq!(
            bob.ingest(&batch.as_batch(), at(Day(DAY.0 + 3), 12, 5))
                .unwrap(),
            0,
            "{scheme:?}"
        );
    }
}

#[test]
fn a_batch_with_a_bad_signature_is_rejected() {
    for scheme in SCHEMES {
        let mut w = World::new(scheme);
        let (mut alice, mut bob) = (w.phone(), w.phone());
        w.meet(&mut alice, &mut bob, at(DAY, 10, 0), 30, 45);
        let upload = alice
            .build_upload(DAY, at(DAY.next(), 9, 0), &mut w.rng)
            .unwrap();
        let forger = SigningKey::generate(&mut w.rng);
        let forged = publish(scheme, &upload, at(DAY.next(), 12, 0), &forger).unwrap();
        let err = bob
            .ingest(&forged.as_batch(), at(DAY.next(), 12, 5))
            .unwrap_err();
        assert!(matches!(err, Error::Signature(_)), "{scheme:?}: {err}");

        // A genuine signature over a body that was then altered.
        let mut tampered = publish(scheme, &upload, at(DAY.next(), 12, 0), &w.server).unwrap();
        let n = tampered.body.len();
        tampered.body[n - 1] ^= 1;
        assert!(
            bob.ingest(&tampered.as_batch(), at(DAY.next(), 12, 5))
                .is_err(),
            "{scheme:?}"
        );
        assert!(bob.exposure_days(at(DAY.next(), 12, 5)).is_empty());
    }
}

#[test]
fn state_survives_save_and_restore_and_refuses_a_wrong_key() {
    for scheme in SCHEMES {
        let mut w = World::new(scheme);
        let (mut alice, mut bob) = (w.phone(), w.phone());
        w.meet(&mut alice, &mut bob, at(DAY, 10, 0), 30, 45);
        let key = [7u8; 32];
        let saved = bob.save(&key, &mut w.rng).unwrap();
        let mut bob2 = Engine::restore(&saved, &key, w.config.clone()).unwrap();
        assert_eq!(bob2.sightings().sightings(), bob.sightings().sightings());
        let batch = w.report(&mut alice, DAY, at(DAY.next(), 9, 0), at(DAY.next(), 12, 0));
        bob2.ingest(&batch.as_batch(), at(DAY.next(), 12, 5))
            .unwrap();
        assert_eq!(bob2.exposure_days(at(DAY.next(), 13, 0)).len(), 1);
        // Exposure survives a second round trip.
        let again = Engine::restore(
            &bob2.save(&key, &mut w.rng).unwrap(),
            &key,
            w.config.clone(),
        )
        .unwrap();
        assert_eq!(
            again.exposure_days(at(DAY.next(), 13, 0)),
            bob2.exposure_days(at(DAY.next(), 13, 0))
        );

        let wrong = Engine::restore(&saved, &[8u8; 32], w.config.clone()).unwrap_err();
        assert_eq!(wrong, Error::State(StateError::Authentication));
        let mut flipped = saved.clone();
        flipped[40] ^= 0x10;
        assert_eq!(
            Engine::restore(&flipped, &key, w.config.clone()).unwrap_err(),
            Error::State(StateError::Authentication)
        );
        assert_eq!(
            Engine::restore(&saved[..20], &key, w.config.clone()).unwrap_err(),
            Error::State(StateError::Truncated)
        );
        let mut version = saved.clone();
        version[4] = 9;
        assert_eq!(
            Engine::restore(&version, &key, w.config.clone()).unwrap_err(),
            Error::State(StateError::Version(9))
        );
    }
}

#[test]
fn keys_rotate_at_their_boundaries_and_expire() {
    let mut w = World::new(Scheme::Gaen);
    let mut p = w.phone();
    let a = p.current_beacon(at(DAY, 10, 0), &mut w.rng).unwrap();
    let b = p.current_beacon(at(DAY, 10, 5), &mut w.rng).unwrap();
    assert_eq!(a, b, "same 10-minute interval");
    assert_eq!(a.valid_until, at(DAY, 10, 10));
    let c = p.current_beacon(at(DAY, 10, 10), &mut w.rng).unwrap();
    assert_ne!(a.payload, c.payload);
    assert_eq!(a.payload.len(), 20);

    for scheme in [Scheme::LowCost, Scheme::Unlinkable, Scheme::Hybrid] {
        let mut w = World::new(scheme);
        let mut p = w.phone();
        let a = p.current_beacon(at(DAY, 10, 0), &mut w.rng).unwrap();
        assert_eq!(a.payload.len(), 16);
        assert_eq!(a.valid_until, at(DAY, 10, 15), "{scheme:?}");
        assert_eq!(p.current_beacon(at(DAY, 10, 14), &mut w.rng).unwrap(), a);
        assert_ne!(p.current_beacon(at(DAY, 10, 15), &mut w.rng).unwrap(), a);
    }

    // After 14 days the old keys are gone: an upload then carries only padding.
    for scheme in SCHEMES {
        let mut w = World::new(scheme);
        let mut p = w.phone();
        p.current_beacon(at(DAY, 10, 0), &mut w.rng).unwrap();
        let later = at(Day(DAY.0 + 14), 10, 0);
        let real = p.build_upload(DAY, later, &mut w.rng).unwrap();
        assert!(
            !real.json.contains("\"fake\":0"),
            "{scheme:?}: {}",
            &real.json[..80.min(real.json.len())]
        );
    }
}

#[test]
fn lowcost_starts_a_fresh_chain_after_a_real_upload() {
    let mut w = World::new(Scheme::LowCost);
    let mut p = w.phone();
    let before = p.current_beacon(at(DAY, 10, 0), &mut w.rng).unwrap();
    let upload = p.build_upload(DAY, at(DAY, 10, 1), &mut w.rng).unwrap();
    assert!(upload.json.contains("\"fake\":0"));
    let after = p.current_beacon(at(DAY, 10, 2), &mut w.rng).unwrap();
    assert_ne!(before.payload, after.payload);
    // The published key no longer generates the new broadcasts.
    let published = publish(Scheme::LowCost, &upload, at(DAY.next(), 0, 0), &w.server).unwrap();
    let mut bob = w.phone();
    bob.record_sighting(&after.payload, at(DAY, 10, 2), 40, 3600)
        .unwrap();
    assert_eq!(
        bob.ingest(&published.as_batch(), at(DAY.next(), 1, 0))
            .unwrap(),
        0
    );
}

#[test]
fn real_and_fake_uploads_look_alike() {
    for scheme in SCHEMES {
        let mut w = World::new(scheme);
        let mut p = w.phone();
        for h in 0..24 {
            p.current_beacon(at(DAY, h, 0), &mut w.rng).unwrap();
        }
        let fake = p.build_fake_upload(at(DAY, 23, 30), &mut w.rng).unwrap();
        let real = p.build_upload(DAY, at(DAY, 23, 30), &mut w.rng).unwrap();
        assert_eq!(real.path, fake.path);
        assert_eq!(real.json.len(), fake.json.len(), "{scheme:?}");
        assert!(!fake.json.contains("\"fake\":0"));
    }
}

#[test]
fn a_batch_of_another_scheme_is_refused_and_changes_nothing() {
    let mut w = World::new(Scheme::LowCost);
    let mut alice = w.phone();
    alice.current_beacon(at(DAY, 10, 0), &mut w.rng).unwrap();
    let upload = alice.build_upload(DAY, at(DAY, 11, 0), &mut w.rng).unwrap();
    let batch = publish(Scheme::LowCost, &upload, at(DAY, 12, 0), &w.server).unwrap();
    // A GAEN phone reads any batch as an export zip: a low-cost list is not one.
    let mut gaen = World::new(Scheme::Gaen).phone();
    assert!(matches!(
        gaen.ingest(&batch.as_batch(), at(DAY, 13, 0)),
        Err(Error::Export(_))
    ));
    // A hybrid phone reads it as a hybrid list, under the same server key: the signature
    // verifies, the body does not decode as a hybrid list, or matches nothing.
    let mut w = World::new(Scheme::Hybrid);
    let mut hybrid = w.phone();
    hybrid.current_beacon(at(DAY, 10, 0), &mut w.rng).unwrap();
    let before = hybrid.exposure_days(at(DAY, 13, 0));
    let _ = hybrid.ingest(&batch.as_batch(), at(DAY, 13, 0));
    assert_eq!(hybrid.exposure_days(at(DAY, 13, 0)), before);
}

#[test]
fn stored_sightings_are_compact() {
    // 10,000 distinct sightings over 14 days: the encrypted state grows by at most 40 bytes
    // per sighting (36 bytes of data, varint-encoded, plus framing).
    let mut w = World::new(Scheme::Gaen);
    let mut p = w.phone();
    let key = [1u8; 32];
    let empty = p.save(&key, &mut w.rng).unwrap().len();
    for i in 0..10_000u32 {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        id[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
        let t = at(Day(DAY.0 + i % 14), u64::from(i % 24), u64::from(i % 60));
        p.record_sighting(&id, t, 40 + (i % 40) as i32, 60 + i % 600)
            .unwrap();
    }
    assert_eq!(p.sightings().len(), 10_000);
    let full = p.save(&key, &mut w.rng).unwrap().len();
    let per = (full - empty) as f64 / 10_000.0;
    println!("bytes per stored sighting (saved state): {per:.2}");
    assert!(per <= 40.0, "{per} bytes per sighting");
    assert_eq!(std::mem::size_of::<dp3t_core::store::Sighting>(), 36);
}
