"""Two phones driven through `TracingSession` only, against the real key server.

The test does what an app does and nothing more: it moves bytes. Alice's phone advertises
(through the BLE advertisement format), Bob's hears her; Alice reports her positive test
with an authorization code; both phones sync on their own schedule; Bob's status turns
"exposed". All HTTP goes to a real `dp3t-backend` (started by run-bindings.sh on
127.0.0.1 with 2-second release buckets, SQLite); the health authority's code exchange
(`POST /v1/onset`, the CovidCode API) goes to the real `dp3t-authority` when
DP3T_TEST_AUTHORITY is set (run-bindings.sh starts it and creates the code there, as a
lab system does, with DP3T_TEST_AUTHORITY_KEY); without it, a stand-in answers by minting
tokens with `dp3t-backend token`. The phones'
fake reports (a fake exchange, then a fake upload with the fake token) run on their
schedule during the same run, and go to the same servers.

Also: the padded GAEN upload of OS keys (`gaen_upload_from_os_keys`), uploaded to the real
server, and the BLE advertisement vectors.

Needs DP3T_TEST_BACKEND (base URL), DP3T_TEST_DATA_DIR (the server's data directory) and
DP3T_BACKEND_BIN (the server binary); run-bindings.sh sets them. Without them the
server-backed tests are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from email.utils import formatdate
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BINDINGS = Path(os.environ.get("DP3T_PYTHON_BINDINGS", REPO / "target" / "bindings" / "python"))
sys.path.insert(0, str(BINDINGS))

import dp3t_mobile_ffi as ffi  # noqa: E402

BACKEND = os.environ.get("DP3T_TEST_BACKEND")
DATA_DIR = os.environ.get("DP3T_TEST_DATA_DIR")
BACKEND_BIN = os.environ.get("DP3T_BACKEND_BIN")
BUCKET = int(os.environ.get("DP3T_TEST_BUCKET_SECONDS", "2"))
needs_server = pytest.mark.skipif(
    not (BACKEND and DATA_DIR and BACKEND_BIN), reason="no test backend (run run-bindings.sh)"
)
CODE = "123456789012"
AUTHORITY = os.environ.get("DP3T_TEST_AUTHORITY")
AUTHORITY_KEY = os.environ.get("DP3T_TEST_AUTHORITY_KEY")
STORAGE_KEY = bytes(range(32))


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def mint_token(fake: bool) -> str:
    args = [BACKEND_BIN, "token", "--data-dir", DATA_DIR, "--onset", today()]
    if fake:
        args.append("--fake")
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def new_code() -> str:
    """A code for today's onset: from the real authority (`POST /v1/authcode` with an API
    key, as a lab system creates one), or the stand-in's fixed one."""
    if not AUTHORITY:
        return CODE
    request = urllib.request.Request(
        AUTHORITY + "/v1/authcode",
        data=json.dumps({"onsetDate": today()}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + AUTHORITY_KEY},
    )
    with urllib.request.urlopen(request, timeout=20) as resp:
        return json.load(resp)["authorizationCode"]


class Servers:
    """The app's I/O: the real backend over HTTP, and the health authority (the real
    `dp3t-authority` when DP3T_TEST_AUTHORITY is set, else a stand-in)."""

    def __init__(self, code: str = CODE) -> None:
        self.codes = {code}
        self.exchanges: list[bool] = []  # fake flag of each code exchange
        self.fake_tokens: set[str] = set()
        self.uploads: list[tuple[bool, int, int]] = []  # (fake, status, body length)
        self.lock = threading.Lock()

    def authority(self, req) -> tuple[int, list[tuple[str, str]], bytes]:
        assert req.method == ffi.HttpMethod.POST and req.path == "/v1/onset"
        body = json.loads(bytes(req.body))
        assert set(body) == {"authorizationCode", "fake"}
        fake = body["fake"] == "1"
        assert len(body["authorizationCode"]) == 12
        self.exchanges.append(fake)
        if AUTHORITY:
            request = urllib.request.Request(
                AUTHORITY + req.path,
                data=bytes(req.body),
                method="POST",
                headers={h.name: h.value for h in req.headers},
            )
            try:
                with urllib.request.urlopen(request, timeout=20) as resp:
                    result = resp.status, list(resp.headers.items()), resp.read()
            except urllib.error.HTTPError as e:
                result = e.code, list(e.headers.items()), e.read()
            if fake and result[0] == 200:
                self.fake_tokens.add(json.loads(result[2])["accessToken"])
            return result
        headers = [("Date", formatdate(usegmt=True)), ("Content-Type", "application/json")]
        if not fake:
            if body["authorizationCode"] not in self.codes:
                return 404, headers, b""
            self.codes.remove(body["authorizationCode"])  # codes are single use
        token = mint_token(fake)
        if fake:
            self.fake_tokens.add(token)
        return 200, headers, json.dumps({"accessToken": token}).encode()

    def backend(self, req) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {h.name: h.value for h in req.headers}
        method = "POST" if req.method == ffi.HttpMethod.POST else "GET"
        request = urllib.request.Request(
            BACKEND + req.path,
            data=bytes(req.body) if method == "POST" else None,
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as resp:
                result = resp.status, list(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            result = e.code, list(e.headers.items()), e.read()
        if req.purpose == ffi.RequestPurpose.UPLOAD:
            token = headers["Authorization"].removeprefix("Bearer ")
            self.uploads.append((token in self.fake_tokens, result[0], len(req.body)))
        return result

    def drive(self, phone: ffi.TracingSession) -> int:
        """One wake-up of `phone`: send what it asks for, hand back the answers."""
        actions = phone.next_actions(int(time.time()))
        for req in actions.requests:
            if req.server == ffi.Server.AUTHORITY:
                status, headers, body = self.authority(req)
            else:
                status, headers, body = self.backend(req)
            phone.on_response(
                req.id,
                status,
                [ffi.HttpHeader(name=k, value=v) for k, v in headers],
                body,
                int(time.time()),
            )
        return actions.wake_at_unix


class Listener(ffi.StatusListener):
    def __init__(self) -> None:
        self.seen: list[ffi.TracingStatus] = []

    def on_status_changed(self, status: ffi.TracingStatus) -> None:
        self.seen.append(status)


def session_config(scheme: ffi.Scheme) -> ffi.SessionConfig:
    pem = (Path(DATA_DIR) / "signing-key.pub.pem").read_text()
    # Put the phone's local time at about noon, so that fake reports (placed in waking
    # hours) happen during the test whatever time CI runs at.
    hour = time.gmtime().tm_hour
    return ffi.SessionConfig(
        engine=ffi.EngineConfig(scheme=scheme, backend_public_key_pem=pem),
        utc_offset_minutes=(12 - hour) * 60,
        sync_interval_seconds=BUCKET,
        release_bucket_seconds=BUCKET,
        fake_rate_per_day=86_400 / 6,  # a fake report every 6 s on average
        sync_jitter_seconds=0,
        retry_min_seconds=1,
    )


@needs_server
def test_two_phones_through_the_session_against_the_real_backend():
    code = new_code()
    servers = Servers(code)
    if time.time() % 86_400 < 120:  # keep the contact on one UTC day
        time.sleep(121 - time.time() % 86_400)
    now = int(time.time())
    alice = ffi.TracingSession(session_config(ffi.Scheme.LOW_COST), now)
    bob = ffi.TracingSession(session_config(ffi.Scheme.LOW_COST), now)
    listener = Listener()
    bob.set_status_listener(listener)

    # The radio: Alice advertises her EphID as 0xFD68 service data; Bob's scanner gets
    # the raw advertising data and the library finds the EphID in it.
    beacon = alice.current_beacon(now)
    adv = ffi.advertisement(beacon.payload)
    assert adv.service_uuid == "0000FD68-0000-1000-8000-00805F9B34FB"
    heard = ffi.parse_advertisement(b"\x02\x01\x06" + adv.ad_bytes + b"\x02\x0a\xf4")
    assert heard == beacon.payload
    # 30 minutes close by, heard in the minute before now (a sighting must end before the
    # batch that publishes the key is released: anything later would be a replay).
    for _ in range(30):
        bob.on_sighting(heard, now - 60, 45, 60)
    assert bob.status(now).sightings == 1
    assert listener.seen, "a sighting changes the status"

    alice.report_infected(code, now, now)
    assert alice.status(now).report == ffi.ReportPhase.EXCHANGING_CODE
    with pytest.raises(ffi.Dp3tError.InvalidState):
        alice.report_infected(code, now, now)

    deadline = time.time() + 120
    while time.time() < deadline:
        wake = min(servers.drive(alice), servers.drive(bob))
        t = int(time.time())
        done = (
            bob.status(t).infection == ffi.InfectionStatus.EXPOSED
            and alice.status(t).report == ffi.ReportPhase.DONE
            and any(fake for fake, _, _ in servers.uploads)
        )
        if done:
            break
        time.sleep(max(0.05, min(0.5, wake - time.time())))
    t = int(time.time())
    a, b = alice.status(t), bob.status(t)
    assert a.report == ffi.ReportPhase.DONE, a
    assert a.infection == ffi.InfectionStatus.INFECTED and not a.tracing_active
    with pytest.raises(ffi.Dp3tError.InvalidState):
        alice.current_beacon(t)
    assert b.infection == ffi.InfectionStatus.EXPOSED, (b, servers.uploads, servers.exchanges)
    assert [d.day for d in b.exposure_days] == [now // 86_400]
    assert b.last_sync_unix is not None and b.last_sync_unix >= now
    assert any(s.infection == ffi.InfectionStatus.EXPOSED for s in listener.seen)

    # One real exchange and upload; fake ones alongside, accepted the same way, with
    # bodies of the same size.
    assert servers.exchanges.count(False) == 1
    assert servers.exchanges.count(True) >= 1
    real = [u for u in servers.uploads if not u[0]]
    fakes = [u for u in servers.uploads if u[0]]
    assert len(real) == 1 and real[0][1] == 200
    assert fakes and all(status == 200 for _, status, _ in fakes)
    assert {size for _, _, size in servers.uploads} == {real[0][2]}

    # The state survives a restart of the app.
    saved = bob.save(STORAGE_KEY)
    again = ffi.TracingSession.restore(saved, STORAGE_KEY, session_config(ffi.Scheme.LOW_COST))
    assert again.status(t).exposure_days == b.exposure_days
    with pytest.raises(ffi.Dp3tError.WrongStorageKey):
        ffi.TracingSession.restore(saved, bytes(32), session_config(ffi.Scheme.LOW_COST))


@needs_server
def test_a_gaen_session_syncs_with_the_key_bundle_tag():
    servers = Servers()
    now = int(time.time())
    phone = ffi.TracingSession(session_config(ffi.Scheme.GAEN), now)
    first = phone.next_actions(now)
    assert [r.path for r in first.requests if r.purpose == ffi.RequestPurpose.SYNC] == [
        "/v2/gaen/exposed"
    ]
    for req in first.requests:
        handler = servers.authority if req.server == ffi.Server.AUTHORITY else servers.backend
        status, headers, body = handler(req)
        phone.on_response(
            req.id, status, [ffi.HttpHeader(name=k, value=v) for k, v in headers], body, now
        )
    status = phone.status(now)
    assert status.errors == [] and status.last_sync_unix == now
    phone.sync_now(now)
    nxt = phone.next_actions(now)
    sync = [r.path for r in nxt.requests if r.purpose == ffi.RequestPurpose.SYNC]
    assert len(sync) == 1 and sync[0].startswith("/v2/gaen/exposed?lastKeyBundleTag=")


def test_responses_with_a_wrong_clock_are_refused():
    # No server needed: the answer is made up here, the check is the session's.
    pem_key = (Path(DATA_DIR) / "signing-key.pub.pem").read_text() if DATA_DIR else None
    if pem_key is None:
        pytest.skip("no test backend")
    now = int(time.time())
    phone = ffi.TracingSession(session_config(ffi.Scheme.GAEN), now)
    req = [r for r in phone.next_actions(now).requests if r.purpose == ffi.RequestPurpose.SYNC][0]
    skewed = formatdate(now + 11 * 60, usegmt=True)
    phone.on_response(req.id, 204, [ffi.HttpHeader(name="Date", value=skewed)], b"", now)
    assert phone.status(now).errors == [ffi.TracingError.CLOCK_SKEW()]
    with pytest.raises(ffi.Dp3tError.InvalidState):
        phone.on_network_error(req.id, now)


@needs_server
def test_os_keys_make_a_padded_upload_the_server_accepts():
    now = int(time.time())
    day = now // 86_400
    keys = [
        ffi.OsExposureKey(key_data=os.urandom(16), rolling_start_number=(day - d) * 144, rolling_period=144)
        for d in range(5)
    ]
    upload = ffi.gaen_upload_from_os_keys(keys, (day - 2) * 86_400, now)
    assert upload.path == "/v2/gaen/exposed"
    body = json.loads(upload.json)
    assert len(body["gaenKeys"]) == 30
    real = [k for k in body["gaenKeys"] if k["fake"] == 0]
    assert sorted(k["rollingStartNumber"] for k in real) == [(day - d) * 144 for d in (2, 1, 0)]
    fake = ffi.gaen_upload_from_os_keys([], now, now)
    assert len(fake.json) == len(upload.json)
    with pytest.raises(ffi.Dp3tError.InvalidInput):
        ffi.gaen_upload_from_os_keys(
            [ffi.OsExposureKey(key_data=b"short", rolling_start_number=day * 144, rolling_period=144)],
            now,
            now,
        )
    req = urllib.request.Request(
        BACKEND + upload.path,
        data=upload.json.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + mint_token(False)},
    )
    with urllib.request.urlopen(req, timeout=20) as resp:
        assert resp.status == 200


def test_ble_advertisement_vectors():
    vectors = json.loads((REPO / "spec-vectors" / "ble" / "advertisement.json").read_text())
    assert ffi.dp3t_service_uuid() == vectors["serviceUuid"]
    for case in vectors["valid"]:
        ad = bytes.fromhex(case["adBytes"])
        assert ffi.parse_advertisement(ad).hex() == case["ephid"], case["name"]
        if case["encoded"]:
            assert ffi.advertisement(bytes.fromhex(case["ephid"])).ad_bytes == ad
    for case in vectors["invalid"]:
        with pytest.raises(ffi.Dp3tError.InvalidInput):
            ffi.parse_advertisement(bytes.fromhex(case["adBytes"]))
    with pytest.raises(ffi.Dp3tError.InvalidInput):
        ffi.advertisement(bytes(20))  # GAEN beacons are advertised by the OS


@needs_server
def test_a_sealed_upload_from_the_bindings_reaches_the_export():
    """Issue 12 item 11: Alice seals her report to the key the server publishes (signed),
    so nothing between her and the server reads the token or the keys; the server opens
    it, publishes her key, and Bob, who met her two days ago, finds the exposure. (Two days,
    not one: yesterday's key is embargoed until 02:00 UTC today, 2 h after it expired, so
    a contact yesterday cannot be published between 00:00 and 02:00 UTC.)"""
    now = int(time.time())
    contact_day = (now // 86_400 - 2) * 86_400  # its key is out of embargo at any hour
    pem = (Path(DATA_DIR) / "signing-key.pub.pem").read_text()
    config = ffi.EngineConfig(scheme=ffi.Scheme.GAEN, backend_public_key_pem=pem)
    alice, bob = ffi.TracingEngine(config), ffi.TracingEngine(config)
    met = contact_day + 12 * 3600
    for m in range(20):
        t = met + 60 * m
        bob.record_sighting(alice.current_beacon(t).payload, t, 50, 60)

    with urllib.request.urlopen(BACKEND + "/v2/sealed/key", timeout=20) as resp:
        key_list, signature = resp.read(), resp.headers["Signature"]
    onset = time.strftime("%Y-%m-%d", time.gmtime(contact_day))
    token = subprocess.run(
        [BACKEND_BIN, "token", "--data-dir", DATA_DIR, "--onset", onset],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    real = alice.build_sealed_upload(contact_day, token, key_list, signature, now)
    fake = bob.build_sealed_upload(None, mint_token(True), key_list, signature, now)
    assert len(real) == len(fake) == 8256  # PROTOCOL.md §16: every GAEN envelope
    assert token.encode() not in real
    with pytest.raises(ffi.Dp3tError.BadSignature):
        alice.build_sealed_upload(None, token, key_list + b" ", signature, now)
    for envelope in (real, fake):
        req = urllib.request.Request(
            BACKEND + "/v2/sealed",
            data=envelope,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(req, timeout=20) as resp:
            assert resp.status == 200

    deadline = time.time() + 30
    while True:
        with urllib.request.urlopen(BACKEND + "/v2/gaen/exposed", timeout=20) as resp:
            status, body = resp.status, resp.read()
            sig, tag = resp.headers.get("Signature"), int(resp.headers["x-key-bundle-tag"])
        if status == 200:
            batch = ffi.PublishedBatch(
                kind=ffi.BatchKind.GAEN_EXPORT_ZIP,
                body=body,
                release_time_unix=tag // 1000,
                signature_header=sig,
            )
            if bob.ingest_at(batch, int(time.time())) > 0:
                break
        assert time.time() < deadline, "Alice's sealed upload never reached the export"
        time.sleep(1)
    days = bob.exposure_status(int(time.time())).exposed_days
    assert [d.day for d in days] == [contact_day // 86_400]
