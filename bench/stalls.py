#!/usr/bin/env python3
"""Real uploads while hostile clients hold stalled connections (issue 11 item 1).

    python3 bench/stalls.py [--stalled 2000] [--uploads 300] [--threads 8]

Builds nothing: run `cargo build --release -p backend` first. Starts
target/release/dp3t-backend on 127.0.0.1 (SQLite in a temporary directory, upload delay
0, so that latency is the server's own work), then:

1. baseline: real uploads (ES256 token + 30 keys) from N threads, latency p50/p99;
2. opens --stalled connections that each declare a 256 KiB body, send 255 KiB of it with
   `Authorization: Bearer not-a-token`, and stall; the server's resident memory (VmRSS)
   before and while they are held;
3. the same real uploads again while the stalled connections are held.

Prints a Markdown table. Local only (127.0.0.1) and bounded in time.
"""

import argparse
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import base64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "dp3t-backend")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def body():
    today = int(time.time()) // 86400
    keys = []
    for i in range(30):
        keys.append({
            "keyData": base64.b64encode(os.urandom(16)).decode(),
            "rollingStartNumber": (today - 3) * 144,
            "rollingPeriod": 144,
            "transmissionRiskLevel": 0,
            "fake": 0 if i == 0 else 1,
        })
    return json.dumps({"gaenKeys": keys, "withFederationGateway": False}).encode()


def post(port, token, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    req = (f"POST /v2/gaen/exposed HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
           f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
           f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    t = time.perf_counter()
    s.sendall(req)
    answer = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
    s.close()
    return answer[9:12].decode(), time.perf_counter() - t


def run_uploads(port, tokens, threads):
    latencies, statuses, lock = [], [], threading.Lock()
    work = list(tokens)

    def worker():
        while True:
            with lock:
                if not work:
                    return
                tok = work.pop()
            status, dt = post(port, tok, body())
            with lock:
                latencies.append(dt)
                statuses.append(status)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    return p(0.5), p(0.99), statuses.count("200"), len(statuses)


def stall(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setblocking(True)
    s.sendall((f"POST /v1/unlinkable/exposed HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: application/json\r\nAuthorization: Bearer not-a-token\r\n"
               f"Content-Length: {256 * 1024 - 1}\r\n\r\n").encode())
    s.settimeout(0.05)
    try:
        s.sendall(b" " * (255 * 1024))
    except (socket.timeout, BlockingIOError, OSError):
        pass  # the kernel buffers are full: the server is not reading it
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stalled", type=int, default=2000)
    ap.add_argument("--uploads", type=int, default=300)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--port", type=int, default=18090)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, a.stalled + 512)), hard))
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release -p backend")
    data = tempfile.mkdtemp(prefix="dp3t-stalls-")
    env = dict(os.environ, DP3T_DATA_DIR=data, DP3T_BIND=f"127.0.0.1:{a.port}",
               DP3T_METRICS_BIND="127.0.0.1:0", DP3T_UPLOAD_DELAY_MS="0",
               DP3T_REQUEST_TIMEOUT_MS="10000", DP3T_MAX_UPLOADS_IN_FLIGHT="1024",
               DP3T_WORKERS="2")
    for k in ("DP3T_DATABASE_URL", "DP3T_CONFIG"):
        env.pop(k, None)
    server = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    server.stdout.readline()
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    try:
        onset = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 5 * 86400))

        def tokens(n):
            return [subprocess.run([BIN, "token", "--data-dir", data, "--onset", onset],
                                   capture_output=True, text=True, check=True).stdout.strip()
                    for _ in range(n)]

        run_uploads(a.port, tokens(20), a.threads)  # warm up
        base = run_uploads(a.port, tokens(a.uploads), a.threads)
        rss_before = rss_mib(server.pid)
        held = [stall(a.port) for _ in range(a.stalled)]
        time.sleep(1.0)
        rss_held = rss_mib(server.pid)
        during = run_uploads(a.port, tokens(a.uploads), a.threads)
        rss_after_uploads = rss_mib(server.pid)
        for s in held:
            s.close()
        rows = [
            ("real uploads, no stalled connection", base, rss_before),
            (f"real uploads, {a.stalled} stalled connections held", during, rss_after_uploads),
        ]
        print(f"| run | p50 ms | p99 ms | 200s | server RSS MiB |")
        print("|---|---|---|---|---|")
        for name, (p50, p99, ok, n), rss in rows:
            print(f"| {name} | {p50:.1f} | {p99:.1f} | {ok}/{n} | {rss:.0f} |")
        print(f"\nserver RSS: {rss_before:.0f} MiB before, {rss_held:.0f} MiB with "
              f"{a.stalled} stalled connections (each 255 KiB into a 256 KiB body)")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
