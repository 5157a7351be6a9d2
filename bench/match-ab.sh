#!/usr/bin/env bash
# Two (or more) builds of `dp3t` side by side on the same matching run, alternating, so
# that the machine's drift hits them alike; prints the best keys/s of each.
#
#   bash bench/match-ab.sh THREADS DP3T_A DP3T_B [...]
#
# Build an older revision with, for example:
#   git worktree add /tmp/dp3t-old 1508b0c && (cd /tmp/dp3t-old && cargo build --release -p dp3t-cli)
# Knobs (environment): N (7 rounds), SCHEME (gaen), KEYS (1000000), SIGHTINGS (100000).
set -euo pipefail
threads=${1:?usage: bench/match-ab.sh THREADS DP3T_A DP3T_B [...]}
shift
[ "$#" -ge 2 ] || { echo "usage: bench/match-ab.sh THREADS DP3T_A DP3T_B [...]" >&2; exit 2; }
declare -a best
for _ in $(seq "${N:-7}"); do
  i=0
  for bin in "$@"; do
    rate=$("$bin" bench match --scheme "${SCHEME:-gaen}" --keys "${KEYS:-1000000}" \
      --sightings "${SIGHTINGS:-100000}" --planted 50 --seed 1 --threads "$threads" |
      python3 -c 'import json,sys; print(int(json.load(sys.stdin)["keys_per_sec"]))')
    if [ "$rate" -gt "${best[$i]:-0}" ]; then best[$i]=$rate; fi
    i=$((i + 1))
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
i=0
for bin in "$@"; do
  echo "$bin: best ${best[$i]} keys/s of ${N:-7} runs, ${threads} thread(s), ${SCHEME:-gaen}"
  i=$((i + 1))
done
