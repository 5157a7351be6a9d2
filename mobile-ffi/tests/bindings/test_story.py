"""The whole phone story, driven through the generated Python bindings of the real cdylib.

For each of the four schemes: Alice broadcasts, Bob hears her for 30 minutes at close
range, Carol for an hour far away, Dave for 5 minutes. Alice tests positive and builds her
upload; `publisher.py` (an independent encoder written from PROTOCOL.md, with its own
P-256 key) publishes the upload's keys the way the backend would; the other phones ingest
the batch. Bob has one exposure day, Carol and Dave none. Plus the negative cases: forged,
tampered and unsigned batches, batches of another scheme, wrong storage keys, and the
free functions.

Run with `bash mobile-ffi/tests/run-bindings.sh`, or after `mobile-ffi/generate-bindings.sh`:
`python3 -m pytest mobile-ffi/tests/bindings/test_story.py`. The bindings are imported
from `$DP3T_PYTHON_BINDINGS` (default `target/bindings/python`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

import publisher
from publisher import SCHEME_PATHS, ServerKey, publish, signature_header

REPO = Path(__file__).resolve().parents[3]
BINDINGS = Path(os.environ.get("DP3T_PYTHON_BINDINGS", REPO / "target" / "bindings" / "python"))
if not (BINDINGS / "dp3t_mobile_ffi.py").exists():
    raise RuntimeError(f"no bindings in {BINDINGS}: run mobile-ffi/generate-bindings.sh first")
sys.path.insert(0, str(BINDINGS))

import dp3t_mobile_ffi as ffi  # noqa: E402

SCHEMES = ["GAEN", "LOW_COST", "UNLINKABLE", "HYBRID"]
KINDS = {
    "GAEN": ffi.BatchKind.GAEN_EXPORT_ZIP,
    "LOW_COST": ffi.BatchKind.LOW_COST_LIST,
    "UNLINKABLE": ffi.BatchKind.UNLINKABLE_FILTER,
    "HYBRID": ffi.BatchKind.HYBRID_LIST,
}
DAY = 20_000  # the contact day, 2024-10-04
STORAGE_KEY = bytes(range(32))


def at(day: int, hour: int, minute: int = 0) -> int:
    return day * 86_400 + hour * 3600 + minute * 60


class World:
    """A backend key and the config phones of one scheme share."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.key = ServerKey()
        self.config = ffi.EngineConfig(
            scheme=getattr(ffi.Scheme, scheme), backend_public_key_pem=self.key.public_pem
        )

    def phone(self) -> ffi.TracingEngine:
        return ffi.TracingEngine(self.config)

    @staticmethod
    def meet(sender, receiver, start: int, minutes: int, attenuation: int) -> None:
        """`sender` advertises, `receiver` hears it once a minute for `minutes`."""
        for m in range(minutes):
            now = start + 60 * m
            beacon = sender.current_beacon(now)
            assert beacon.valid_until_unix > now
            receiver.record_sighting(beacon.payload, now, attenuation, 60)

    def batch(self, upload: ffi.UploadPayload, release: int, key: ServerKey | None = None):
        p = publish(self.scheme, upload.json, release, key or self.key)
        return ffi.PublishedBatch(
            kind=KINDS[self.scheme],
            body=p.body,
            release_time_unix=p.release,
            signature_header=p.header,
        )


class Story:
    """The story of one scheme, played once and shared by the tests below."""

    def __init__(self, scheme: str) -> None:
        w = self.world = World(scheme)
        self.alice, self.bob, self.carol, self.dave = (w.phone() for _ in range(4))
        self.bob_before = self.bob.save(STORAGE_KEY)
        w.meet(self.alice, self.dave, at(DAY - 1, 9), 1, 80)  # onset day
        w.meet(self.alice, self.bob, at(DAY, 10), 30, 45)  # close, 30 minutes
        w.meet(self.alice, self.carol, at(DAY, 11), 60, 75)  # far
        w.meet(self.alice, self.dave, at(DAY, 13), 5, 45)  # short
        self.bob_saved = self.bob.save(STORAGE_KEY)
        self.upload = self.alice.build_upload(at(DAY - 1, 0), at(DAY + 1, 10))
        self.release = at(DAY + 1, 12)
        self.batch = w.batch(self.upload, self.release)
        self.now = at(DAY + 1, 12, 5)


_stories: dict[str, Story] = {}


@pytest.fixture(params=SCHEMES)
def story(request) -> Story:
    if request.param not in _stories:
        _stories[request.param] = Story(request.param)
    return _stories[request.param]


def status_days(engine, now: int) -> list[tuple[int, float]]:
    return [(d.day, d.weighted_minutes) for d in engine.exposure_status(now).exposed_days]


# ------------------------------------------------------------------------------ the story


def test_beacons_have_the_scheme_s_size_and_rotate(story: Story) -> None:
    p = story.world.phone()
    first = p.current_beacon(at(DAY, 10))
    assert len(first.payload) == (20 if story.world.scheme == "GAEN" else 16)
    assert p.current_beacon(at(DAY, 10, 1)) == first
    assert p.current_beacon(first.valid_until_unix).payload != first.payload
    assert p.scheme() == getattr(ffi.Scheme, story.world.scheme)


def test_upload_carries_real_keys_to_the_scheme_s_path(story: Story) -> None:
    assert story.upload.path == SCHEME_PATHS[story.world.scheme]
    assert publisher.real_entries(story.upload.json, story.world.scheme)


def test_close_contact_is_one_exposure_day(story: Story) -> None:
    assert story.bob.ingest(story.batch) > 0
    assert status_days(story.bob, story.now) == [(DAY, 30.0)]
    # The same batch again adds nothing.
    assert story.bob.ingest(story.batch) == 0
    assert status_days(story.bob, story.now) == [(DAY, 30.0)]
    # Ten days on, the contact no longer counts.
    assert status_days(story.bob, at(DAY + 10, 1)) == []


def test_ingest_async_matches_like_ingest(story: Story) -> None:
    # The async form (a coroutine here, `suspend` in Kotlin, `async` in Swift) runs the
    # match on a thread of its own, with the same result as the blocking call: two copies
    # of Bob before he ingested (his saved state), one ingesting each way.
    w = story.world
    erin, frank = (
        ffi.TracingEngine.restore(story.bob_saved, STORAGE_KEY, w.config) for _ in range(2)
    )
    new = asyncio.run(erin.ingest_async(story.batch))
    assert new > 0
    assert new == frank.ingest(story.batch)
    assert status_days(erin, story.now) == status_days(frank, story.now) == [(DAY, 30.0)]
    assert asyncio.run(erin.ingest_async(story.batch)) == 0


@pytest.mark.parametrize("who", ["carol", "dave"])
def test_far_or_short_contact_matches_but_is_no_exposure(story: Story, who: str) -> None:
    phone = getattr(story, who)
    assert phone.ingest(story.batch) > 0
    assert status_days(phone, story.now) == []


def test_a_phone_that_never_met_alice_has_no_match(story: Story) -> None:
    stranger = story.world.phone()
    story.world.meet(story.world.phone(), stranger, at(DAY, 10), 30, 45)
    assert stranger.ingest(story.batch) == 0
    assert status_days(stranger, story.now) == []


# ------------------------------------------------------------------------------ rejections


def test_a_batch_signed_with_another_key_is_rejected(story: Story) -> None:
    phone = ffi.TracingEngine.restore(story.bob_saved, STORAGE_KEY, story.world.config)
    forged = story.world.batch(story.upload, story.release, key=ServerKey())
    with pytest.raises(ffi.Dp3tError.BadSignature):
        phone.ingest(forged)
    assert status_days(phone, story.now) == []
    assert phone.ingest(story.batch) > 0  # the genuine one still works


def test_a_tampered_batch_is_rejected(story: Story) -> None:
    phone = ffi.TracingEngine.restore(story.bob_saved, STORAGE_KEY, story.world.config)
    body = bytearray(story.batch.body)
    body[-1] ^= 1
    tampered = ffi.PublishedBatch(
        kind=story.batch.kind,
        body=bytes(body),
        release_time_unix=story.batch.release_time_unix,
        signature_header=story.batch.signature_header,
    )
    with pytest.raises((ffi.Dp3tError.BadSignature, ffi.Dp3tError.MalformedBatch)):
        phone.ingest(tampered)
    assert status_days(phone, story.now) == []


def test_only_a_gaen_export_goes_without_a_signature_header(story: Story) -> None:
    phone = ffi.TracingEngine.restore(story.bob_saved, STORAGE_KEY, story.world.config)
    unsigned = ffi.PublishedBatch(
        kind=story.batch.kind,
        body=story.batch.body,
        release_time_unix=story.batch.release_time_unix,
    )
    if story.world.scheme == "GAEN":
        # The export is signed inside the zip.
        assert phone.ingest(unsigned) > 0
    else:
        with pytest.raises(ffi.Dp3tError.BadSignature, match="Signature header"):
            phone.ingest(unsigned)


def test_a_batch_of_another_scheme_is_refused(story: Story) -> None:
    other = "LOW_COST" if story.world.scheme == "GAEN" else "GAEN"
    batch = ffi.PublishedBatch(
        kind=KINDS[other],
        body=story.batch.body,
        release_time_unix=story.release,
        signature_header=story.batch.signature_header,
    )
    with pytest.raises(ffi.Dp3tError.WrongScheme):
        story.world.phone().ingest(batch)


def test_ingest_at_checks_expiry_with_the_app_clock() -> None:
    s = _stories.get("LOW_COST") or Story("LOW_COST")
    phone = ffi.TracingEngine.restore(s.bob_saved, STORAGE_KEY, s.world.config)
    with pytest.raises(ffi.Dp3tError.BadSignature, match="expired"):
        phone.ingest_at(s.batch, s.release + 15 * 86_400)
    assert phone.ingest_at(s.batch, s.release + 86_400) > 0


# ------------------------------------------------------------------------------ state


def test_state_survives_save_and_restore(story: Story) -> None:
    phone = ffi.TracingEngine.restore(story.bob_saved, STORAGE_KEY, story.world.config)
    assert phone.ingest(story.batch) > 0
    assert status_days(phone, story.now) == [(DAY, 30.0)]
    again = ffi.TracingEngine.restore(phone.save(STORAGE_KEY), STORAGE_KEY, story.world.config)
    assert status_days(again, story.now) == [(DAY, 30.0)]
    assert again.ingest(story.batch) == 0  # matches are remembered too
    # A state saved before the contact knows nothing of it.
    empty = ffi.TracingEngine.restore(story.bob_before, STORAGE_KEY, story.world.config)
    assert empty.ingest(story.batch) == 0


def test_state_refuses_wrong_keys_and_bytes(story: Story) -> None:
    saved, config = story.bob_saved, story.world.config
    with pytest.raises(ffi.Dp3tError.WrongStorageKey):
        ffi.TracingEngine.restore(saved, bytes(32), config)
    with pytest.raises(ffi.Dp3tError.InvalidInput, match="32 bytes"):
        ffi.TracingEngine.restore(saved, STORAGE_KEY[:31], config)
    with pytest.raises(ffi.Dp3tError.InvalidInput):
        story.bob.save(b"short")
    flipped = bytearray(saved)
    flipped[40] ^= 0x10
    with pytest.raises(ffi.Dp3tError.WrongStorageKey):
        ffi.TracingEngine.restore(bytes(flipped), STORAGE_KEY, config)
    with pytest.raises(ffi.Dp3tError.CorruptState):
        ffi.TracingEngine.restore(saved[:10], STORAGE_KEY, config)
    other = ffi.EngineConfig(
        scheme=ffi.Scheme.HYBRID if story.world.scheme != "HYBRID" else ffi.Scheme.GAEN,
        backend_public_key_pem=story.world.key.public_pem,
    )
    with pytest.raises(ffi.Dp3tError.WrongScheme):
        ffi.TracingEngine.restore(saved, STORAGE_KEY, other)


# ------------------------------------------------------------------------------ uploads


def test_fake_uploads_look_like_real_ones(story: Story) -> None:
    fake = story.alice.build_fake_upload(at(DAY + 1, 10))
    assert fake.path == story.upload.path
    assert len(fake.json) == len(story.upload.json)
    assert publisher.real_entries(fake.json, story.world.scheme) == []
    now = at(DAY + 1, 10)
    times = [story.alice.next_fake_upload_time(now) for _ in range(20)]
    assert all(t >= now for t in times) and len(set(times)) > 1


def test_an_onset_after_now_is_invalid_input() -> None:
    phone = World("GAEN").phone()
    with pytest.raises(ffi.Dp3tError.InvalidInput, match="onset"):
        phone.build_upload(at(DAY, 12), at(DAY, 11))


# ------------------------------------------------------------------------------ config and input


def test_bad_inputs_raise_invalid_input() -> None:
    w = World("LOW_COST")
    phone = w.phone()
    with pytest.raises(ffi.Dp3tError.InvalidInput):
        phone.record_sighting(b"\x01" * 15, at(DAY, 10), 40, 60)
    with pytest.raises(ffi.Dp3tError.InvalidInput, match="backend_public_key_pem"):
        ffi.TracingEngine(
            ffi.EngineConfig(scheme=ffi.Scheme.GAEN, backend_public_key_pem="not a key")
        )
    with pytest.raises(ffi.Dp3tError.InvalidInput):
        ffi.TracingEngine(
            ffi.EngineConfig(
                scheme=ffi.Scheme.GAEN, backend_public_key_pem=w.key.public_pem, retention_days=0
            )
        )
    # Python ints beyond u64 never reach Rust.
    with pytest.raises((ValueError, OverflowError, TypeError)):
        phone.current_beacon(-1)


def test_scoring_overrides_change_what_counts() -> None:
    s = _stories.get("GAEN") or Story("GAEN")
    strict = ffi.EngineConfig(
        scheme=ffi.Scheme.GAEN,
        backend_public_key_pem=s.world.key.public_pem,
        scoring=ffi.ScoringConfig(min_minutes=31.0),
    )
    phone = ffi.TracingEngine.restore(s.bob_saved, STORAGE_KEY, strict)
    assert phone.ingest(s.batch) > 0
    assert status_days(phone, s.now) == []
    # Sightings are put in attenuation buckets when they are recorded: with the near
    # threshold at 40 dB, Alice's 45 dB is "medium" and 30 minutes weigh 15.
    halved = ffi.TracingEngine(
        ffi.EngineConfig(
            scheme=ffi.Scheme.GAEN,
            backend_public_key_pem=s.world.key.public_pem,
            scoring=ffi.ScoringConfig(attenuation_low=40),
        )
    )
    s.world.meet(s.alice, halved, at(DAY, 10), 30, 45)
    assert halved.ingest(s.batch) > 0
    assert status_days(halved, s.now) == [(DAY, 15.0)]


def test_record_defaults_are_the_protocol_defaults() -> None:
    assert ffi.ScoringConfig() == ffi.default_scoring_config()
    c = ffi.default_scoring_config()
    assert (c.attenuation_low, c.attenuation_medium) == (55, 63)
    assert (c.factor_low, c.factor_medium, c.min_minutes) == (1.0, 0.5, 15.0)


def test_exposure_days_from_os_windows() -> None:
    def window(day: int, attenuation: int, minutes: int) -> ffi.ExposureWindow:
        scans = [
            ffi.ScanInstance(typical_attenuation_db=attenuation, seconds_since_last_scan=60)
        ] * minutes
        return ffi.ExposureWindow(day=day, scan_instances=scans)

    windows = [
        window(DAY, 50, 10),
        window(DAY, 60, 12),  # 10 + 12 * 0.5 = 16 weighted minutes
        window(DAY - 1, 50, 14),  # 14 < 15
        window(DAY - 2, 70, 60),  # far
        window(DAY - 12, 40, 60),  # older than 10 days
    ]
    now = at(DAY, 20)
    days = ffi.exposure_days_from_windows(windows, ffi.ScoringConfig(), now)
    assert [(d.day, d.weighted_minutes) for d in days] == [(DAY, 16.0)]
    days = ffi.exposure_days_from_windows(windows, ffi.ScoringConfig(min_minutes=14.0), now)
    assert [d.day for d in days] == [DAY - 1, DAY]
    with pytest.raises(ffi.Dp3tError.InvalidInput):
        ffi.exposure_days_from_windows(windows, ffi.ScoringConfig(factor_low=-1.0), now)


def test_verify_response_signature_with_the_system_clock() -> None:
    key = ServerKey()
    body = json.dumps({"some": "response"}).encode()
    now = int(time.time())
    fresh = signature_header(body, key, now - 60, now + 3600, None)
    assert ffi.verify_response_signature(body, fresh, key.public_pem) is None
    with pytest.raises(ffi.Dp3tError.BadSignature):
        ffi.verify_response_signature(body + b" ", fresh, key.public_pem)
    with pytest.raises(ffi.Dp3tError.BadSignature):
        ffi.verify_response_signature(body, fresh, ServerKey().public_pem)
    stale = signature_header(body, key, now - 7200, now - 3600, None)
    with pytest.raises(ffi.Dp3tError.BadSignature, match="expired"):
        ffi.verify_response_signature(body, stale, key.public_pem)
    with pytest.raises(ffi.Dp3tError.BadSignature):
        ffi.verify_response_signature(body, "a.b", key.public_pem)
    with pytest.raises(ffi.Dp3tError.InvalidInput):
        ffi.verify_response_signature(body, fresh, "-----BEGIN PUBLIC KEY-----\nAAAA\n")


# ------------------------------------------------------------------------------ threads


def test_one_engine_is_safe_to_share_between_threads() -> None:
    w = World("HYBRID")
    alice, bob = w.phone(), w.phone()
    beacons = [alice.current_beacon(at(DAY, 10, 15 * i)) for i in range(4)]
    errors: list[BaseException] = []

    def hear(i: int) -> None:
        try:
            for s in range(100):
                bob.record_sighting(beacons[i].payload, at(DAY, 10, 15 * i) + s, 40, 6)
                bob.exposure_status(at(DAY, 12))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=hear, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # 4 beacons × 100 sightings × 6 s = 40 minutes, all near.
    upload = alice.build_upload(at(DAY, 0), at(DAY, 20))
    bob.ingest(w.batch(upload, at(DAY + 1, 0)))
    assert status_days(bob, at(DAY + 1, 1)) == [(DAY, 40.0)]
