#!/usr/bin/env python3
"""Time POST /v1/onset of a running dp3t-authority per outcome (BENCHMARKS.md, "Authority").

Start the service with the constant delay off and the per-client limit out of the way,
create an API key, then run this script:

    DP3T_AUTHORITY_BIND=127.0.0.1:18082 DP3T_AUTHORITY_ONSET_DELAY_MS=0 \
    DP3T_AUTHORITY_CLIENT_FAILURES_PER_HOUR=1000000 dp3t-authority serve &
    python3 bench/authority_onset.py http://127.0.0.1:18082 "$(dp3t-authority apikey add bench)"

Sequential requests, one connection each; prints p50/p99/max per outcome.
"""
import datetime
import json
import sys
import time
import urllib.error
import urllib.request


def post(base, path, body, headers=None):
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req) as r:
            payload = r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        payload = e.read()
        code = e.code
    return code, (time.perf_counter() - t) * 1000, payload


def run(base, name, bodies):
    times, statuses = [], {}
    for b in bodies:
        code, ms, _ = post(base, "/v1/onset", b)
        times.append(ms)
        statuses[code] = statuses.get(code, 0) + 1
    times.sort()
    print("%-6s n=%d status=%s p50=%.2f ms p99=%.2f ms max=%.2f ms" % (
        name, len(times), statuses, times[len(times) // 2],
        times[int(len(times) * 0.99) - 1], times[-1]))


def main():
    base, key = sys.argv[1], sys.argv[2]
    onset = (datetime.datetime.now(datetime.timezone.utc)
             - datetime.timedelta(days=2)).strftime("%Y-%m-%d")
    codes = []
    for _ in range(2):
        code, ms, payload = post(base, "/v1/authcode", {"onsetDate": onset, "count": 100},
                                 {"authorization": "Bearer " + key})
        assert code == 200, code
        codes += json.loads(payload)["authorizationCodes"]
        print("bulk create 100 codes: %.1f ms" % ms)
    run(base, "real", [{"authorizationCode": c, "fake": "0"} for c in codes])
    run(base, "spent", [{"authorizationCode": c, "fake": "0"} for c in codes[:100]])
    run(base, "wrong", [{"authorizationCode": "%012d" % i, "fake": "0"} for i in range(200)])
    run(base, "fake", [{"authorizationCode": "", "fake": "1"} for _ in range(200)])


if __name__ == "__main__":
    main()
