#!/usr/bin/env bash
# Upload throughput of every scheme through the one upload pipeline (issue 10 item 1,
# issue 16): real uploads (ES256 token each, real entries) on SQLite, then PostgreSQL.
#
#   bash bench/uploads.sh        # PostgreSQL part needs root (or BENCH_DATABASE_URL)
#
# For each database and scheme: a fresh data directory (and database), the release
# `dp3t-backend serve` on 127.0.0.1 with upload delay 0, then `dp3t-load upload` with
# UPLOAD_CONNS connections. Bodies (dp3t-load --scheme): GAEN v2 30 real keys; low-cost
# the onset day's key; unlinkable 960 real epochs padded to 1,344 entries; hybrid 120
# real 2-hour windows padded to 168. Knobs: COUNT_GAEN (20000), COUNT_LOWCOST (20000),
# COUNT_UNLINKABLE (2000), COUNT_HYBRID (5000), UPLOAD_CONNS (32), THREADS (2),
# PORT (18090), SKIP_POSTGRES=1, BENCH_DATABASE_URL.
# Prints a Markdown table (also saved to $WORK/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."

UPLOAD_CONNS=${UPLOAD_CONNS:-32}
THREADS=${THREADS:-2}
PORT=${PORT:-18090}
declare -A COUNT=(
  [gaen]=${COUNT_GAEN:-20000}
  [lowcost]=${COUNT_LOWCOST:-20000}
  [unlinkable]=${COUNT_UNLINKABLE:-2000}
  [hybrid]=${COUNT_HYBRID:-5000}
)
SCHEMES="gaen lowcost unlinkable hybrid"

log() { echo "uploads.sh: $*" >&2; }

cargo build --release -p backend --bins >&2
BIN=$PWD/target/release/dp3t-backend
LOAD=$PWD/target/release/dp3t-load
WORK=$(mktemp -d /tmp/dp3t-uploads.XXXXXX)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

start_server() { # NAME VAR=VALUE...
  local name=$1
  shift
  env "$@" DP3T_BIND="127.0.0.1:$PORT" DP3T_METRICS_BIND="127.0.0.1:0" DP3T_UPLOAD_DELAY_MS=0 RUST_LOG=warn \
    DP3T_RELEASE_BUCKET_SECONDS=7200 "$BIN" serve >"$WORK/$name.out" 2>"$WORK/$name.err" &
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

ADMIN_URL=""
if [ "${SKIP_POSTGRES:-0}" != 1 ]; then
  ADMIN_URL=${BENCH_DATABASE_URL:-}
  if [ -z "$ADMIN_URL" ] && [ "$(id -u)" -eq 0 ]; then ADMIN_URL=$(bash .ci/postgres.sh); fi
  [ -n "$ADMIN_URL" ] || log "no PostgreSQL URL (set BENCH_DATABASE_URL or run as root); skipping it"
fi

ROWS=()
for db in sqlite postgres; do
  [ "$db" = postgres ] && [ -z "$ADMIN_URL" ] && continue
  for scheme in $SCHEMES; do
    data=$WORK/data-$db-$scheme
    "$BIN" keygen --data-dir "$data" >&2
    env_db=()
    if [ "$db" = postgres ]; then
      psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp3t_bench_up" -c "CREATE DATABASE dp3t_bench_up" >&2
      env_db=(DP3T_DATABASE_URL="${ADMIN_URL%/*}/dp3t_bench_up")
    fi
    start_server "$db-$scheme" DP3T_DATA_DIR="$data" "${env_db[@]}"
    n=${COUNT[$scheme]}
    log "$db, $scheme: $n uploads, $UPLOAD_CONNS connections"
    out=$("$LOAD" --threads "$THREADS" --connections "$UPLOAD_CONNS" upload \
      --url "http://127.0.0.1:$PORT/v2/gaen/exposed" --ha-key "$data/ha-dev-key.pem" \
      --count "$n" --scheme "$scheme")
    stop_server
    [ "$db" = postgres ] && psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp3t_bench_up" >&2
    rm -rf "$data"
    ROWS+=("$(printf '| %s | %s | %s | %.0f | %.1f | %.1f | %s |' "$db" "$scheme" "$n" \
      "$(echo "$out" | json rps)" "$(echo "$out" | json p50_ms)" "$(echo "$out" | json p99_ms)" \
      "$(echo "$out" | json errors)")")
  done
done

{
  echo "Machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1); $(date -u +%Y-%m-%d); load average $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| database | scheme | uploads | uploads/s | p50 ms | p99 ms | errors |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$WORK/results.md"
