#!/usr/bin/env bash
# Publication benchmark of the DP-3T designs (issue 5): reproducible, local only, bounded.
#
#   bash bench/designs.sh         # everything; the PostgreSQL part needs root (or BENCH_DATABASE_URL)
#
# 1. Build and sign, in memory, with the server's code (dp3t-publish-bench), each under
#    /usr/bin/time -f %M for the peak resident memory:
#    an unlinkable filter of UPLOADS (10000) x ENTRIES (480) = 4.8 M entries,
#    a low-cost list of KEYS (100000) keys, a hybrid list of SEEDS (100000) window seeds.
# 2. The whole release of that unlinkable bucket through SQLite, then PostgreSQL: the uploads
#    are inserted, then the bucket is claimed, loaded, built, signed, stored and installed,
#    then served from memory (ns per lookup).
# 3. HTTP: a server with the default padding serves a released low-cost batch and an
#    unlinkable filter; dp3t-load measures requests/s of each from the cache.
#
# Knobs (environment): UPLOADS, ENTRIES, KEYS, SEEDS, CONNS (64), DURATION (5 s),
# THREADS (2), PORT (18090), BENCH_DATABASE_URL, SKIP_POSTGRES=1.
# Prints a Markdown table at the end (also saved to $WORK/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."

UPLOADS=${UPLOADS:-10000}
ENTRIES=${ENTRIES:-480}
KEYS=${KEYS:-100000}
SEEDS=${SEEDS:-100000}
CONNS=${CONNS:-64}
DURATION=${DURATION:-5}
THREADS=${THREADS:-2}
PORT=${PORT:-18090}

log() { echo "designs.sh: $*" >&2; }

cargo build --release -p backend --bins >&2
BENCH=$PWD/target/release/dp3t-publish-bench
BIN=$PWD/target/release/dp3t-backend
LOAD=$PWD/target/release/dp3t-load

WORK=$(mktemp -d /tmp/dp3t-designs-bench.XXXXXX)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
json() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(d['$1'])"; }

# measure NAME ARGS... : run the bench under /usr/bin/time; print "json|peak KiB".
measure() {
  local name=$1
  shift
  log "$name"
  /usr/bin/time -f %M -o "$WORK/$name.mem" "$BENCH" "$@" >"$WORK/$name.json" 2>"$WORK/$name.err" ||
    { cat "$WORK/$name.err" >&2; exit 1; }
  grep -v 'uploads stored' "$WORK/$name.err" >&2 || true
}

# --- 1. build and sign in memory ----------------------------------------------------------
measure unlinkable unlinkable --uploads "$UPLOADS" --entries "$ENTRIES"
measure lowcost lowcost --keys "$KEYS"
measure hybrid hybrid --seeds "$SEEDS"

# --- 2. the whole release through a database ----------------------------------------------
measure release-sqlite release --uploads "$UPLOADS" --entries "$ENTRIES"
PG=0
if [ "${SKIP_POSTGRES:-0}" != 1 ]; then
  ADMIN_URL=${BENCH_DATABASE_URL:-}
  if [ -z "$ADMIN_URL" ] && [ "$(id -u)" -eq 0 ]; then ADMIN_URL=$(bash .ci/postgres.sh); fi
  if [ -n "$ADMIN_URL" ]; then
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp3t_designs_bench" -c "CREATE DATABASE dp3t_designs_bench" >&2
    measure release-postgres release --uploads "$UPLOADS" --entries "$ENTRIES" \
      --database-url "${ADMIN_URL%/*}/dp3t_designs_bench"
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS dp3t_designs_bench" >&2
    PG=1
  else
    log "no PostgreSQL URL (set BENCH_DATABASE_URL or run as root); skipping"
  fi
fi

# --- 3. HTTP downloads from the cache -----------------------------------------------------
DATA=$WORK/data
"$BIN" keygen --data-dir "$DATA" >/dev/null
env DP3T_DATA_DIR="$DATA" DP3T_BIND="127.0.0.1:$PORT" DP3T_METRICS_BIND="127.0.0.1:0" DP3T_RELEASE_BUCKET_SECONDS=7200 RUST_LOG=warn \
  "$BIN" serve >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
NOW=$(date +%s)
MS=$(( (NOW - NOW % 7200) * 1000 ))
http() { # NAME PATH
  local url="http://127.0.0.1:$PORT$2"
  curl -fsS -o "$WORK/$1.body" "$url"
  log "download $1 ($(stat -c %s "$WORK/$1.body") bytes, $CONNS connections, ${DURATION}s)"
  "$LOAD" --threads "$THREADS" --connections "$CONNS" download --url "$url" --duration "$DURATION" \
    >"$WORK/http-$1.json"
}
http lowcost "/v1/exposed/$MS"
http unlinkable "/v1/unlinkable/filter/$MS"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""

mib() { python3 -c "print('%.0f' % ($(cat "$WORK/$1.mem") / 1024))"; }
build_row() { # label name
  local j
  j=$(cat "$WORK/$2.json")
  printf '| %s | %s | %.3f | %s | %.2f | %s |\n' "$1" "$(echo "$j" | json entries)" \
    "$(echo "$j" | json build_and_sign_seconds)" "$(echo "$j" | json body_bytes)" \
    "$(echo "$j" | json bytes_per_entry)" "$(mib "$2")"
}
release_row() { # label name
  local j
  j=$(cat "$WORK/$2.json")
  printf '| %s | %s | %.1f | %.3f | %s | %s | %s |\n' "$1" "$(echo "$j" | json entries)" \
    "$(echo "$j" | json insert_seconds)" "$(echo "$j" | json release_seconds)" \
    "$(echo "$j" | json body_bytes)" "$(echo "$j" | json cached_lookup_ns)" "$(mib "$2")"
}
http_row() { # label name
  local j
  j=$(cat "$WORK/http-$2.json")
  printf '| %s | %s | %.0f | %.2f | %.2f | %s |\n' "$1" "$(stat -c %s "$WORK/$2.body")" \
    "$(echo "$j" | json rps)" "$(echo "$j" | json p50_ms)" "$(echo "$j" | json p99_ms)" \
    "$(echo "$j" | json errors)"
}
{
  echo "Machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1); $(date -u +%Y-%m-%d)."
  echo
  echo "Build and sign one bucket in memory (\`dp3t-publish-bench\`, f = 48, no padding):"
  echo
  echo "| body | entries | build + sign, s | body bytes | bytes/entry | peak RSS, MiB |"
  echo "|---|---|---|---|---|---|"
  build_row "unlinkable filter ($UPLOADS uploads x $ENTRIES)" unlinkable
  build_row "low-cost list" lowcost
  build_row "hybrid list (2-hour windows)" hybrid
  echo
  echo "Whole release of the unlinkable bucket through the database (claim, load, build, sign, store, install), then serving it from memory:"
  echo
  echo "| database | entries | insert uploads, s | release, s | body bytes | cached lookup, ns | peak RSS, MiB |"
  echo "|---|---|---|---|---|---|---|"
  release_row "SQLite" release-sqlite
  [ "$PG" = 1 ] && release_row "PostgreSQL" release-postgres
  echo
  echo "HTTP download of a released batch from the cache (default padding; $CONNS keep-alive connections, ${DURATION} s, generator threads: $THREADS):"
  echo
  echo "| batch | body bytes | req/s | p50 ms | p99 ms | errors |"
  echo "|---|---|---|---|---|---|"
  http_row "GET /v1/exposed/{t} (low-cost, 100 keys)" lowcost
  http_row "GET /v1/unlinkable/filter/{t} (9,600 entries)" unlinkable
} | tee "$WORK/results.md"
