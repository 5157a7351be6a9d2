"""The optional transport: `TracingClient` drives a `TracingSession` through an
`HttpTransport` that the app implements (here in Python on urllib, run off the event loop
with `asyncio.to_thread`), against the real key server and health authority that
run-bindings.sh starts. `sync()` and `report_infected()` are coroutines (`async` in
Swift, `suspend` in Kotlin): one call each, the loop of `next_actions`/`on_response` is
the library's.

Needs the same environment as test_session.py; without a server the tests are skipped.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import pytest

from test_session import AUTHORITY, BACKEND, ffi, needs_server, new_code, session_config


def config(scheme: ffi.Scheme) -> ffi.SessionConfig:
    c = session_config(scheme)
    c.fake_rate_per_day = 0.0  # only the calls of the test
    return c


class UrllibTransport(ffi.HttpTransport):
    """What an app writes with OkHttp or URLSession: base URL by server, then send."""

    def __init__(self) -> None:
        self.sent: list[ffi.HttpRequest] = []

    def _send(self, req: ffi.HttpRequest) -> ffi.HttpResponse:
        base = AUTHORITY if req.server == ffi.Server.AUTHORITY else BACKEND
        post = req.method == ffi.HttpMethod.POST
        request = urllib.request.Request(
            base + req.path,
            data=bytes(req.body) if post else None,
            method="POST" if post else "GET",
            headers={h.name: h.value for h in req.headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as resp:
                status, headers, body = resp.status, list(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, list(e.headers.items()), e.read()
        except OSError as e:
            raise ffi.TransportError.Network(reason=str(e)) from e
        return ffi.HttpResponse(
            status=status,
            headers=[ffi.HttpHeader(name=k, value=v) for k, v in headers],
            body=body,
        )

    async def send(self, request: ffi.HttpRequest) -> ffi.HttpResponse:
        self.sent.append(request)
        return await asyncio.to_thread(self._send, request)


class Offline(ffi.HttpTransport):
    def __init__(self, unexpected: bool = False) -> None:
        self.unexpected = unexpected
        self.calls = 0

    async def send(self, request: ffi.HttpRequest) -> ffi.HttpResponse:
        self.calls += 1
        if self.unexpected:
            raise RuntimeError("a bug in the app's transport")
        raise ffi.TransportError.Network(reason="offline")


needs_authority = pytest.mark.skipif(not AUTHORITY, reason="no test health authority")


@needs_server
@needs_authority
def test_report_and_sync_through_the_transport_in_one_call_each():
    async def story() -> None:
        if time.time() % 86_400 < 120:  # keep the contact on one UTC day
            await asyncio.sleep(121 - time.time() % 86_400)
        now = int(time.time())
        alice = ffi.TracingClient(ffi.TracingSession(config(ffi.Scheme.LOW_COST), now), UrllibTransport())
        bob_http = UrllibTransport()
        bob = ffi.TracingClient(ffi.TracingSession(config(ffi.Scheme.LOW_COST), now), bob_http)
        payload = alice.session().current_beacon(now).payload
        for _ in range(30):
            bob.session().on_sighting(payload, now - 60, 45, 60)

        # The first sync: one call (its round is empty: the start bucket has not ended).
        status = await bob.sync()
        assert status.errors == [] and status.last_sync_unix is not None, status

        # "I am infected": exchange, the upload 2 to 10 s later, in one call.
        status = await alice.report_infected(new_code(), now)
        assert status.report == ffi.ReportPhase.DONE, status
        assert status.infection == ffi.InfectionStatus.INFECTED and not status.tracing_active

        # Bob syncs until the batch holding Alice's keys is released (2-second buckets).
        deadline = time.time() + 60
        while time.time() < deadline:
            status = await bob.sync()
            if status.infection == ffi.InfectionStatus.EXPOSED:
                break
            await asyncio.sleep(1)
        assert status.infection == ffi.InfectionStatus.EXPOSED, status
        assert [d.day for d in status.exposure_days] == [now // 86_400]
        # Every request of the rounds was sent through the transport and answered.
        assert bob_http.sent and all(r.purpose == ffi.RequestPurpose.SYNC for r in bob_http.sent)
        assert status.errors == [] and status.last_sync_unix >= now, status
        assert await bob.run_due() > int(time.time())

    asyncio.run(story())


@needs_server
def test_a_transport_without_network_shows_in_the_status():
    async def story() -> None:
        now = int(time.time())
        for unexpected in (False, True):
            transport = Offline(unexpected)
            client = ffi.TracingClient(ffi.TracingSession(config(ffi.Scheme.GAEN), now), transport)
            status = await client.sync()
            assert transport.calls == 1
            assert status.errors == [ffi.TracingError.NETWORK()], status
            assert status.last_sync_unix is None
            # A refused call of the session is an error of the coroutine.
            with pytest.raises(ffi.Dp3tError.InvalidInput):
                await client.report_infected("not a code!", now)

    asyncio.run(story())
