#!/usr/bin/env bash
# Run deploy/nginx-dp3t.conf, unchanged but for addresses and paths, in front of a real
# dp3t-backend on 127.0.0.1, and check what the example promises:
#   - an upload through nginx (TLS) is accepted, a replay of its token is refused (POST is
#     never answered from the cache);
#   - a download through nginx has the same bytes, Signature and x-key-bundle-tag as the
#     same download from the server itself, and the second one is a cache HIT with the
#     same bytes and headers;
#   - /metrics is 404 through nginx.
# Needs nginx, openssl, curl and python3 (Debian: apt-get install nginx-light openssl curl
# python3); .ci/run installs them. Bounded: every wait has a limit. Only 127.0.0.1.
#
#   bash deploy/test-nginx.sh [path/to/dp3t-backend]
set -euo pipefail
cd "$(dirname "$0")/.."

PASSED=0
fail() { echo "test-nginx: FAIL: $*" >&2; echo "test-nginx: $PASSED passed, 1 failed"; exit 1; }
pass() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
for tool in nginx openssl curl python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done
BIN="${1:-}"
if [ -z "$BIN" ]; then
  cargo build -q -p backend --bin dp3t-backend
  BIN="${CARGO_TARGET_DIR:-target}/debug/dp3t-backend"
fi

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  [ -f "$WORK/nginx.pid" ] && kill -QUIT "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
BACKEND_PORT="$(free_port)"
HTTPS_PORT="$(free_port)"
HTTP_PORT="$(free_port)"

# --- the key server -------------------------------------------------------------------
DATA="$WORK/data"
"$BIN" keygen --data-dir "$DATA" >/dev/null
DP3T_DATA_DIR="$DATA" DP3T_BIND="127.0.0.1:$BACKEND_PORT" DP3T_METRICS_BIND="127.0.0.1:0" \
  DP3T_RELEASE_BUCKET_SECONDS=4 DP3T_UPLOAD_DELAY_MS=50 DP3T_EXPORT_MIN_KEYS=0 \
  RUST_LOG=warn "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 150); do
  curl -fsS -o /dev/null "http://127.0.0.1:$BACKEND_PORT/healthz" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; fail "server exited"; }
  sleep 0.2
done
curl -fsS -o /dev/null "http://127.0.0.1:$BACKEND_PORT/healthz" || fail "server did not start"

# --- nginx with the example, addresses and paths replaced -----------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=keys.example.org" -keyout "$WORK/tls.key" -out "$WORK/tls.pem" 2>/dev/null
mkdir -p "$WORK/cache" "$WORK/nginx"
sed -e "s#server 127.0.0.1:8080;#server 127.0.0.1:$BACKEND_PORT;#" \
    -e "s#/var/cache/nginx/dp3t#$WORK/cache#" \
    -e "s#listen 443 ssl http2;#listen 127.0.0.1:$HTTPS_PORT ssl http2;#" \
    -e "s#listen 80;#listen 127.0.0.1:$HTTP_PORT;#" \
    -e "/listen \[::\]/d" \
    -e "s#/etc/ssl/certs/keys.example.org.pem#$WORK/tls.pem#" \
    -e "s#/etc/ssl/private/keys.example.org.key#$WORK/tls.key#" \
    deploy/nginx-dp3t.conf >"$WORK/nginx/dp3t.conf"
for from in "server 127.0.0.1:$BACKEND_PORT;" "$WORK/cache" "listen 127.0.0.1:$HTTPS_PORT ssl http2;" \
  "listen 127.0.0.1:$HTTP_PORT;" "$WORK/tls.pem" "$WORK/tls.key"; do
  grep -qF "$from" "$WORK/nginx/dp3t.conf" || fail "the example no longer has the line this test rewrites to: $from"
done
cat >"$WORK/nginx/nginx.conf" <<CONF
$( [ "$(id -u)" -eq 0 ] && echo "user root;" )
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 256; }
http {
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    include $WORK/nginx/dp3t.conf;
}
CONF
nginx -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" || fail "nginx -t"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
NGINX="https://127.0.0.1:$HTTPS_PORT"
for _ in $(seq 1 50); do
  curl -ksS -o /dev/null "$NGINX/healthz" 2>/dev/null && break
  sleep 0.1
done

# --- an upload through nginx ----------------------------------------------------------
TOKEN="$("$BIN" token --data-dir "$DATA" --onset "$(date -u -d '5 days ago' +%F)")"
python3 -c '
import base64, json, os, time
d = int(time.time()) // 86400
keys = [{"keyData": base64.b64encode(os.urandom(16)).decode(), "rollingStartNumber": (d - 3) * 144,
         "rollingPeriod": 144, "transmissionRiskLevel": 0, "fake": int(i >= 3)} for i in range(30)]
print(json.dumps({"gaenKeys": keys, "withFederationGateway": False}))' >"$WORK/upload.json"
upload() { # upload BODY_FILE
  curl -ksS -o /dev/null -w '%{http_code}' -X POST "$NGINX/v2/gaen/exposed" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' --data-binary @"$1"
}
[ "$(upload "$WORK/upload.json")" = 200 ] || fail "upload through nginx was not accepted"
pass "upload through nginx accepted"
# The same token with another body: refused by the server (a retry of the same body would
# get the first answer again, by design), so POSTs reach the server, not a cache.
sed 's/"transmissionRiskLevel": 0/"transmissionRiskLevel": 1/' "$WORK/upload.json" >"$WORK/other.json"
[ "$(upload "$WORK/other.json")" = 409 ] || fail "the token was accepted twice (answered from a cache?)"
pass "spent token refused for another body (POST not cached)"

# --- downloads: same bytes and headers as the server's, then from the cache ------------
header() { tr -d '\r' <"$1" | awk -v k="$(echo "$2" | tr 'A-Z' 'a-z')" 'BEGIN{FS=": "} tolower($1)==k {print $2}'; }
fetch() { # fetch NAME URL
  curl -ksS -D "$WORK/$1.h" -o "$WORK/$1.b" "$2"
}
ok=""
for _ in $(seq 1 60); do
  fetch direct "http://127.0.0.1:$BACKEND_PORT/v2/gaen/exposed?lastKeyBundleTag=0"
  if [ "$(head -1 "$WORK/direct.h" | awk '{print $2}')" = 200 ]; then
    fetch miss "$NGINX/v2/gaen/exposed?lastKeyBundleTag=0"
    fetch hit "$NGINX/v2/gaen/exposed?lastKeyBundleTag=0"
    if [ "$(header "$WORK/direct.h" x-key-bundle-tag)" = "$(header "$WORK/miss.h" x-key-bundle-tag)" ]; then
      ok=1
      break
    fi
  fi
  sleep 0.5
done
[ -n "$ok" ] || fail "no released bucket within 30 s"
[ -s "$WORK/direct.b" ] || fail "the released download is empty"
for f in miss hit; do
  cmp -s "$WORK/direct.b" "$WORK/$f.b" || fail "$f: body differs from the server's"
  [ -n "$(header "$WORK/$f.h" signature)" ] || fail "$f: no Signature header"
  [ "$(header "$WORK/direct.h" signature)" = "$(header "$WORK/$f.h" signature)" ] || fail "$f: Signature differs"
  [ "$(header "$WORK/direct.h" x-key-bundle-tag)" = "$(header "$WORK/$f.h" x-key-bundle-tag)" ] || fail "$f: x-key-bundle-tag differs"
  pass "download ($f): same bytes, Signature and x-key-bundle-tag as the server's"
done
[ "$(header "$WORK/miss.h" x-cache-status)" = MISS ] || fail "first download: X-Cache-Status $(header "$WORK/miss.h" x-cache-status), not MISS"
[ "$(header "$WORK/hit.h" x-cache-status)" = HIT ] || fail "second download: X-Cache-Status $(header "$WORK/hit.h" x-cache-status), not HIT"
pass "second download answered from the cache"
# --- metrics are not reachable through nginx ------------------------------------------
[ "$(curl -ksS -o /dev/null -w '%{http_code}' "$NGINX/metrics")" = 404 ] || fail "/metrics is reachable through nginx"
pass "/metrics not reachable"
# --- and port 80 only redirects ---------------------------------------------------------
[ "$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/v2/gaen/exposed")" = 301 ] || fail "port 80 does not redirect"
pass "plain HTTP redirects to HTTPS"

echo "test-nginx: $PASSED passed, 0 failed"
