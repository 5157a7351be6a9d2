#!/usr/bin/env bash
# Backend load benchmark (issue 4): reproducible, local only (127.0.0.1), bounded in time.
#
#   bash bench/load.sh            # everything; PostgreSQL part needs root (or BENCH_DATABASE_URL)
#
# 1. Seeds a server (upload delay 0) with SEED_UPLOADS (10) real uploads of 30 keys, lets the bucket be released,
#    then restarts it with 2-hour buckets so the published answer stays put.
# 2. Download of the cached bucket: dp3t-load against the server, then against nginx
#    (Debian package) serving the same bytes, with the same headers, as a static file,
#    with the same load-generator settings.
# 3. Real uploads (JWT check + 30-key insert) on SQLite, then on PostgreSQL.
#
# Knobs (environment): CONNS (64), DURATION (10 s), THREADS (2, generator threads),
# UPLOADS (20000), WARMUP (2000 uploads sent and not counted before each timed upload
# run, so that a database just started, its caches cold, is not what is measured), UPLOAD_CONNS (32), PORT (18080), NGINX_PORT (18081),
# BENCH_DATABASE_URL (a PostgreSQL URL whose role may CREATE DATABASE; default: the one
# .ci/postgres.sh prints), SKIP_POSTGRES=1.
# Prints a Markdown table at the end (also saved to $WORK/results.md), with each server's
# CPU time per request from /proc (user + system, all threads; nginx: master and workers;
# PostgreSQL: all of the cluster's processes, a column of its own), which the generator
# on the same cores does not blur as it blurs requests per second.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
UPLOADS=${UPLOADS:-20000}
WARMUP=${WARMUP:-2000}
UPLOAD_CONNS=${UPLOAD_CONNS:-32}
PORT=${PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}

log() { echo "load.sh: $*" >&2; }

cargo build --release -p backend --bins >&2
BIN=$PWD/target/release/dp3t-backend
LOAD=$PWD/target/release/dp3t-load

WORK=$(mktemp -d /tmp/dp3t-bench.XXXXXX)
chmod 755 "$WORK"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -f "$WORK/nginx.pid" ]; then
    kill -QUIT "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" -eq 0 ]; then
    log "installing nginx-light from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2 ||
      { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2; }
  else
    log "nginx is missing and I am not root; install nginx-light"
    exit 1
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# start_server NAME VAR=VALUE... : run dp3t-backend serve with the given environment.
start_server() {
  local name=$1
  shift
  env "$@" DP3T_BIND="127.0.0.1:$PORT" DP3T_METRICS_BIND="127.0.0.1:0" DP3T_UPLOAD_DELAY_MS=0 RUST_LOG=warn \
    "$BIN" serve >"$WORK/$name.out" 2>"$WORK/$name.err" &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "server $name did not start"; cat "$WORK/$name.err" >&2; exit 1
}
stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""
}
json() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(d['$1'])"; }
# CPU time (user + system, clock ticks) of the given processes, all their threads.
ticks() {
  local t=0 p f
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    read -r -a f <"/proc/$p/stat"
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)
# measured SERVER_PIDS DB_PIDS -- COMMAND...: runs COMMAND (a dp3t-load run printing its
# JSON line) and prints that line with "cpu_us_per_req" added: the CPU time the processes
# SERVER_PIDS (a space-separated list) spent during the run, divided by the requests
# answered; with DB_PIDS (a command that lists them, run before and after, so that
# PostgreSQL's backends started meanwhile count too) also "db_cpu_us_per_req". Read from
# /proc, so it is what the server used, whatever the generator beside it got.
measured() {
  local pids=$1 db=$2 t0 t1 d0=0 d1=0 out
  shift 3
  # shellcheck disable=SC2086
  t0=$(ticks $pids)
  # shellcheck disable=SC2046
  [ -z "$db" ] || d0=$(ticks $($db))
  out=$("$@")
  # shellcheck disable=SC2086
  t1=$(ticks $pids)
  # shellcheck disable=SC2046
  [ -z "$db" ] || d1=$(ticks $($db))
  python3 -c 'import json,sys
d=json.loads(sys.argv[1]); t0,t1,d0,d1,hz=map(int,sys.argv[2:7]); n=max(d["requests"],1)
d["cpu_us_per_req"]=(t1-t0)/hz*1e6/n
if sys.argv[7]: d["db_cpu_us_per_req"]=(d1-d0)/hz*1e6/n
print(json.dumps(d))' "$out" "$t0" "$t1" "$d0" "$d1" "$CLK_TCK" "$db"
}

# --- 1. seed -----------------------------------------------------------------------------
DATA=$WORK/data
"$BIN" keygen --data-dir "$DATA" >&2
start_server seed DP3T_DATA_DIR="$DATA" DP3T_RELEASE_BUCKET_SECONDS=2
"$LOAD" upload --url "http://127.0.0.1:$PORT/v2/gaen/exposed" --ha-key "$DATA/ha-dev-key.pem" \
  --count "${SEED_UPLOADS:-10}" --connections 4 >/dev/null
sleep 3
stop_server
start_server sqlite DP3T_DATA_DIR="$DATA" DP3T_RELEASE_BUCKET_SECONDS=7200
URL_PATH="/v2/gaen/exposed?lastKeyBundleTag=0"
mkdir -p "$WORK/www/v2/gaen"
curl -fsS -D "$WORK/headers.txt" -o "$WORK/www/v2/gaen/exposed" "http://127.0.0.1:$PORT$URL_PATH"
chmod -R a+rX "$WORK/www"
SIZE=$(stat -c %s "$WORK/www/v2/gaen/exposed")
TAG=$(grep -i '^x-key-bundle-tag:' "$WORK/headers.txt" | tr -d '\r' | cut -d' ' -f2)
SIG=$(grep -i '^signature:' "$WORK/headers.txt" | tr -d '\r' | cut -d' ' -f2)
log "cached bucket: $SIZE bytes, tag $TAG"
[ "$SIZE" -gt 1000 ] || { log "bucket too small; seeding failed"; exit 1; }

# --- 2. downloads: server vs nginx ---------------------------------------------------------
mkdir -p "$WORK/nginx-tmp"
USER_LINE=""
[ "$(id -u)" -eq 0 ] && USER_LINE="user www-data;"
cat >"$WORK/nginx.conf" <<EOF
$USER_LINE
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 10000000; keepalive_timeout 65;
  open_file_cache max=16 inactive=60s;
  client_body_temp_path $WORK/nginx-tmp; proxy_temp_path $WORK/nginx-tmp;
  fastcgi_temp_path $WORK/nginx-tmp; uwsgi_temp_path $WORK/nginx-tmp; scgi_temp_path $WORK/nginx-tmp;
  types { } default_type application/zip;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
    location / {
      add_header Cache-Control "public, max-age=300";
      add_header x-key-bundle-tag "$TAG";
      add_header Signature "$SIG";
      add_header X-Content-Type-Options nosniff;
    }
  }
}
EOF
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" >&2
sleep 0.5
cmp <(curl -fsS "http://127.0.0.1:$NGINX_PORT$URL_PATH") "$WORK/www/v2/gaen/exposed"

log "download from the server ($CONNS connections, ${DURATION}s)"
SRV=$(measured "$SERVER_PID" "" -- "$LOAD" --threads "$THREADS" --connections "$CONNS" download \
  --url "http://127.0.0.1:$PORT$URL_PATH" --duration "$DURATION")
log "download from nginx ($CONNS connections, ${DURATION}s)"
NGINX_PIDS="$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')"
NGX=$(measured "$NGINX_PIDS" "" -- "$LOAD" --threads "$THREADS" --connections "$CONNS" download \
  --url "http://127.0.0.1:$NGINX_PORT$URL_PATH" --duration "$DURATION")
kill -QUIT "$(cat "$WORK/nginx.pid")"; rm -f "$WORK/nginx.pid"

# --- 3. uploads --------------------------------------------------------------------------
warmup() {
  [ "$WARMUP" -gt 0 ] || return 0
  log "warm-up: $WARMUP uploads, not counted"
  "$LOAD" --threads "$THREADS" --connections "$UPLOAD_CONNS" upload \
    --url "http://127.0.0.1:$PORT/v2/gaen/exposed" --ha-key "$DATA/ha-dev-key.pem" --count "$WARMUP" >/dev/null
}
warmup
log "uploads on SQLite ($UPLOADS, $UPLOAD_CONNS connections)"
UP_SQLITE=$(measured "$SERVER_PID" "" -- "$LOAD" --threads "$THREADS" --connections "$UPLOAD_CONNS" upload \
  --url "http://127.0.0.1:$PORT/v2/gaen/exposed" --ha-key "$DATA/ha-dev-key.pem" --count "$UPLOADS")
stop_server

UP_PG=""
if [ "${SKIP_POSTGRES:-0}" != 1 ]; then
  ADMIN_URL=${BENCH_DATABASE_URL:-}
  if [ -z "$ADMIN_URL" ] && [ "$(id -u)" -eq 0 ]; then ADMIN_URL=$(bash .ci/postgres.sh); fi
  if [ -n "$ADMIN_URL" ]; then
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp3t_bench" -c "CREATE DATABASE dp3t_bench" >&2
    PG_URL="${ADMIN_URL%/*}/dp3t_bench"
    start_server postgres DP3T_DATA_DIR="$DATA" DP3T_DATABASE_URL="$PG_URL" DP3T_RELEASE_BUCKET_SECONDS=7200
    warmup
    log "uploads on PostgreSQL ($UPLOADS, $UPLOAD_CONNS connections)"
    UP_PG=$(measured "$SERVER_PID" "pgrep -u postgres" -- "$LOAD" --threads "$THREADS" \
      --connections "$UPLOAD_CONNS" upload \
      --url "http://127.0.0.1:$PORT/v2/gaen/exposed" --ha-key "$DATA/ha-dev-key.pem" --count "$UPLOADS")
    stop_server
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp3t_bench" >&2
  else
    log "no PostgreSQL URL (set BENCH_DATABASE_URL or run as root); skipping"
  fi
fi

row() { # name json
  python3 -c 'import json,sys
d=json.loads(sys.argv[2]); db=d.get("db_cpu_us_per_req")
print("| %s | %.0f | %.2f | %.2f | %s | %.1f | %s |" % (sys.argv[1], d["rps"], d["p50_ms"], d["p99_ms"],
      d["errors"], d["cpu_us_per_req"], "–" if db is None else "%.1f" % db))' "$1" "$2"
}
{
  echo "Machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1); $(date -u +%Y-%m-%d)."
  echo "Download: ${SIZE}-byte cached bucket, $CONNS keep-alive connections, ${DURATION} s; uploads: $UPLOADS x 30 keys, $UPLOAD_CONNS connections; generator threads: $THREADS."
  echo
  echo "| test | req/s | p50 ms | p99 ms | errors | server CPU µs/req | PostgreSQL CPU µs/req |"
  echo "|---|---|---|---|---|---|---|"
  row "download, dp3t-backend (cached bucket)" "$SRV"
  row "download, nginx (same bytes, static file)" "$NGX"
  row "upload, SQLite (JWT + 30-key insert)" "$UP_SQLITE"
  [ -n "$UP_PG" ] && row "upload, PostgreSQL (JWT + 30-key insert)" "$UP_PG"
  RATIO=$(python3 -c "import json; print('%.2f' % (json.loads('''$SRV''')['rps'] / json.loads('''$NGX''')['rps']))")
  echo
  echo "dp3t-backend / nginx download throughput: $RATIO"
  CPU_RATIO=$(python3 -c 'import json,sys; print("%.2f" % (json.loads(sys.argv[1])["cpu_us_per_req"] / json.loads(sys.argv[2])["cpu_us_per_req"]))' "$NGX" "$SRV")
  echo "nginx / dp3t-backend CPU per download: $CPU_RATIO (above 1: the server spends less)"
} | tee "$WORK/results.md"
