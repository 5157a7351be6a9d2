#!/usr/bin/env bash
# GAEN upload rate and the server's own CPU per upload (issue 16 item 3), on a fresh
# database each run, local only (127.0.0.1):
#
#   bash bench/upload-rate.sh sqlite [COUNT]     # default COUNT 20000
#   bash bench/upload-rate.sh postgres [COUNT]   # needs root (or BENCH_DATABASE_URL)
#
# dp3t-load sends COUNT uploads (ES256 tokens, 30 keys each, 32 connections, 2 generator
# threads) to a release build with DP3T_UPLOAD_DELAY_MS=0. Prints the load generator's
# JSON line, then the server's CPU time per upload (utime + stime of /proc/<pid>/stat
# around the run) and the CPU seconds of each server thread that used more than 0.05 s
# (the SQLite writer shows as `sqlx-sqlite-wor`).
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:?usage: bench/upload-rate.sh sqlite|postgres [COUNT]}
COUNT=${2:-20000}
PORT=${PORT:-18092}
cargo build --release -q -p backend --bins
BIN=$PWD/target/release/dp3t-backend
LOAD=$PWD/target/release/dp3t-load
WORK=$(mktemp -d /tmp/dp3t-upload-rate.XXXXXX)
PID=""
ADMIN_URL=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [ -n "$ADMIN_URL" ] && psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp3t_rate" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"$BIN" keygen --data-dir "$WORK/data" >/dev/null
ENV=()
case "$DB" in
  sqlite) ;;
  postgres)
    ADMIN_URL=${BENCH_DATABASE_URL:-$(bash .ci/postgres.sh)}
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp3t_rate" -c "CREATE DATABASE dp3t_rate" >/dev/null
    ENV=(DP3T_DATABASE_URL="${ADMIN_URL%/*}/dp3t_rate")
    ;;
  *) echo "unknown database $DB" >&2; exit 2 ;;
esac
env "${ENV[@]}" DP3T_DATA_DIR="$WORK/data" DP3T_BIND="127.0.0.1:$PORT" DP3T_METRICS_BIND=127.0.0.1:0 \
  DP3T_UPLOAD_DELAY_MS=0 DP3T_RELEASE_BUCKET_SECONDS=7200 RUST_LOG=warn "$BIN" serve >"$WORK/out" 2>"$WORK/err" &
PID=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
threads() { for t in /proc/$PID/task/*; do echo "$(basename "$t") $(awk '{print $14+$15}' "$t/stat") $(tr ' ' '_' <"$t/comm")"; done | sort; }
threads >"$WORK/before"
"$LOAD" --threads 2 --connections 32 upload --url "http://127.0.0.1:$PORT/v2/gaen/exposed" \
  --ha-key "$WORK/data/ha-dev-key.pem" --count "$COUNT" 2>/dev/null
threads >"$WORK/after"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
join "$WORK/before" "$WORK/after" | awk -v n="$COUNT" -v hz="$(getconf CLK_TCK)" '
  { d = $4 - $2; total += d; if (d > 0.05 * hz) printf "# thread %s: %.2f s CPU\n", $3, d / hz }
  END { printf "# server CPU per upload: %.3f ms\n", total / hz * 1000 / n }'
