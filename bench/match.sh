#!/usr/bin/env bash
# Matching at national scale, side by side with the yardsticks, in one run:
#   1. the instruction-throughput limit of GAEN matching (shared/bench/gaen-limit-isa.sh:
#      SHA-256 on SHA-NI in 4 interleaved lanes + AES-128 expansion and 144 blocks on VAES,
#      per key, best of 5 repetitions), the yardstick of the GAEN figures; it is probed
#      before and after the GAEN runs and the higher of the two is used,
#   2. the older bound from openssl's AES and SHA-256 bulk speeds (shared/bench/
#      gaen-limit.sh), kept as a second column, and the bound of low-cost and hybrid,
#   3. Google's reference matching algorithm on OpenSSL (shared/bench/gaen_match_anchor.c),
#   4. `dp3t bench match` for the four schemes, all cores and one thread, with peak memory.
#      GAEN runs in GAEN_RUNS processes (default 5) on all cores and on one thread, each
#      matching GAEN_REPEAT times (default 5) in the process. The ratios use the fastest
#      match (the limit is the best of 5 repetitions in one process too, warm); the range
#      of each process's fastest is shown, and the first match of each process (cold:
#      nothing of the matcher in the caches yet, and on the VMs of BENCHMARKS.md the
#      second vCPU just woken from idle, worth 8-25 ms) is reported beside it as its own
#      figure.
# The load average is printed before, between and after, since the machine may be shared.
# Usage: bench/match.sh [SHARED_BENCH_DIR]   (default ../shared/bench, relative to the
# repository root; without it the bound is computed here by the same formula, and the
# ISA limit and the anchor are skipped). Honours CARGO_TARGET_DIR.
# Needs: gcc, libssl-dev, /usr/bin/time (Debian: time), python3.
# DROP_CACHES=1 (root only) drops the page cache after the builds: on the 2-vCPU VMs of
# BENCHMARKS.md the same binary ran up to 35% slower depending on where its pages had
# been placed in memory, and a fresh read of every binary made the runs agree.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${1:-../shared/bench}"
target="${CARGO_TARGET_DIR:-target}"
out="$target/bench"
mkdir -p "$out"
runs="${GAEN_RUNS:-5}"
repeat="${GAEN_REPEAT:-5}"

cargo build --release -q -p dp3t-cli
dp3t="$target/release/dp3t"

if [ "${DROP_CACHES:-0}" = 1 ]; then
  sync
  if echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; then
    echo "# page cache dropped after the build (DROP_CACHES=1)"
  else
    echo "# DROP_CACHES=1 needs root: page cache kept"
  fi
fi
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# The bound: the yardstick script when it is there, otherwise the same formula here
# (per key: 6 SHA-256 compressions + 2304 bytes of AES-128 at openssl's bulk speeds).
bound_here() {
  local sha aes
  sha=$(openssl speed -elapsed -seconds 2 -evp sha256 2>/dev/null | awk '/^sha256/ {print $NF}')
  aes=$(openssl speed -elapsed -seconds 2 -evp aes-128-ecb 2>/dev/null | awk '/^AES-128-ECB/ {print $NF}')
  python3 - "$sha" "$aes" "$(nproc)" <<'PY'
import json, sys
sha = float(sys.argv[1].rstrip("k")) * 1000
aes = float(sys.argv[2].rstrip("k")) * 1000
cores = int(sys.argv[3])
per_key = 6 * 64 / sha + 2304 / aes
print(json.dumps({"sha256_bytes_per_s": round(sha), "aes128_ecb_bytes_per_s": round(aes),
                  "bound_us_per_key_one_core": round(per_key * 1e6, 3),
                  "bound_keys_per_s_all_cores": round(cores / per_key), "cores": cores}))
PY
}
if [ -r "$shared/gaen-limit.sh" ]; then
  bound=$(bash "$shared/gaen-limit.sh")
else
  echo "# $shared/gaen-limit.sh not found: computing the same bound here"
  bound=$(bound_here)
fi
echo "bound: $bound"
if [ -r "$shared/gaen-limit-isa.sh" ]; then
  isa=$(bash "$shared/gaen-limit-isa.sh")
  echo "isa-limit: $isa"
else
  echo "# $shared/gaen-limit-isa.sh not found: GAEN against the openssl bound only"
fi

if [ -f "$shared/gaen_match_anchor.c" ]; then
  cc -O2 -o "$out/gaen_match_anchor" "$shared/gaen_match_anchor.c" -lcrypto
  anchor=$("$out/gaen_match_anchor" 1000000 100000 50)
  echo "anchor: $anchor"
fi

run() {
  # Prints the JSON line with the peak resident memory (MB) added.
  local log="$out/time.txt"
  local line
  line=$(/usr/bin/time -f '%M' -o "$log" "$dp3t" bench match "$@")
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["peak_mb"]=round(int(open(sys.argv[2]).read().split()[-1])/1024,1); print(json.dumps(d))' "$line" "$log"
}

gaen_all_runs=()
gaen_one_runs=()
for _ in $(seq "$runs"); do
  gaen_all_runs+=("$(run --scheme gaen --keys 1000000 --sightings 100000 --planted 50 --seed 1 --repeat "$repeat")")
  echo "gaen: ${gaen_all_runs[-1]}"
  echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
  gaen_one_runs+=("$(run --scheme gaen --keys 1000000 --sightings 100000 --planted 50 --seed 1 --threads 1 --repeat "$repeat")")
  echo "gaen-1-thread: ${gaen_one_runs[-1]}"
  echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
done
# The best run of each (the JSON line with the most keys/s) for the lines below.
best() { printf '%s\n' "$@" | python3 -c 'import json,sys; print(max(sys.stdin.read().split("\n")[:-1], key=lambda l: json.loads(l)["keys_per_sec"]))'; }
# The limit again after the GAEN runs; the higher of the two is the yardstick (a probe
# slowed by the machine's other work would flatter every ratio).
if [ -n "${isa:-}" ]; then
  isa_after=$(bash "$shared/gaen-limit-isa.sh")
  echo "isa-limit-after: $isa_after"
  isa=$(printf '%s\n%s\n' "$isa" "$isa_after" | python3 -c 'import json,sys; print(max(sys.stdin.read().split("\n")[:-1], key=lambda l: json.loads(l)["limit_keys_per_s_all_cores"]))')
fi
gaen_all=$(best "${gaen_all_runs[@]}")
gaen_one=$(best "${gaen_one_runs[@]}")
aes256=$(openssl speed -elapsed -seconds 2 -evp aes-256-ecb 2>/dev/null | awk '/^AES-256-ECB/ {print $NF}')
echo "aes256_ecb_bytes_per_s: $aes256"
lowcost_all=$(run --scheme lowcost --keys 100000 --sightings 100000 --planted 50 --seed 1)
hybrid_all=$(run --scheme hybrid --keys 1000000 --sightings 100000 --planted 50 --seed 1)
echo "lowcost: $lowcost_all"
echo "hybrid: $hybrid_all"
echo "lowcost-1-thread: $(run --scheme lowcost --keys 100000 --sightings 100000 --planted 50 --seed 1 --threads 1)"
echo "unlinkable: $(run --scheme unlinkable --keys 1000000 --sightings 100000 --planted 50 --seed 1)"
echo "unlinkable-1-thread: $(run --scheme unlinkable --keys 1000000 --sightings 100000 --planted 50 --seed 1 --threads 1)"
echo "hybrid-1-thread: $(run --scheme hybrid --keys 1000000 --sightings 100000 --planted 50 --seed 1 --threads 1)"

python3 - "$bound" "$gaen_all" "$gaen_one" "${anchor:-{\}}" "$aes256" "$lowcost_all" "$hybrid_all" "${isa:-{\}}" "$(printf '%s\n' "${gaen_all_runs[@]}")" "$(printf '%s\n' "${gaen_one_runs[@]}")" <<'PY'
import json, sys
b, a, o, anc = (json.loads(x) for x in sys.argv[1:5])
aes256 = float(sys.argv[5].rstrip("k")) * 1000
lc, hy = json.loads(sys.argv[6]), json.loads(sys.argv[7])
isa = json.loads(sys.argv[8])
all_runs = [json.loads(l)["keys_per_sec"] for l in sys.argv[9].split("\n") if l]
one_runs = [json.loads(l)["keys_per_sec"] for l in sys.argv[10].split("\n") if l]
all_first = [json.loads(l)["first_keys_per_sec"] for l in sys.argv[9].split("\n") if l]
one_first = [json.loads(l)["first_keys_per_sec"] for l in sys.argv[10].split("\n") if l]
sha = b["sha256_bytes_per_s"]
cores = b["cores"]
# Low-cost: per day step SHA-256 (1 compression) + HMAC (4) + 96 AES-256 blocks. The
# synthetic published keys are spread over 14 days, so they walk 7.5 days on average.
step = 5 * 64 / sha + 96 * 16 / aes256
steps = lc["keys"] * 7.5
lc_bound = cores / step
print(f"lowcost: {steps / lc['seconds']:.0f} day-steps/s = {100 * steps / lc['seconds'] / lc_bound:.1f}% of the bound ({lc_bound:.0f} day-steps/s: 5 SHA-256 blocks + 1536 B AES-256 per step)")
# Hybrid (W = 120): HMAC (4 compressions) + 8 AES-256 blocks per window.
win = 4 * 64 / sha + 8 * 16 / aes256
hy_bound = cores / win
print(f"hybrid: {hy['keys_per_sec']:.0f} windows/s = {100 * hy['keys_per_sec'] / hy_bound:.1f}% of the bound ({hy_bound:.0f} windows/s)")
one_bound = 1e6 / b['bound_us_per_key_one_core']
def rng(runs, lim):
    return f"runs {min(runs):.0f}-{max(runs):.0f} keys/s = {100*min(runs)/lim:.1f}-{100*max(runs)/lim:.1f}%"
if isa:
    isa_all = isa['limit_keys_per_s_all_cores']
    isa_one = 1e6 / isa['limit_us_per_key_one_core']
    print(f"gaen all cores: best {a['keys_per_sec']:.0f} keys/s = {100*a['keys_per_sec']/isa_all:.1f}% of the ISA limit ({isa_all} keys/s; {rng(all_runs, isa_all)}) | {100*a['keys_per_sec']/b['bound_keys_per_s_all_cores']:.1f}% of the openssl bound ({b['bound_keys_per_s_all_cores']} keys/s)")
    print(f"gaen one thread: best {o['keys_per_sec']:.0f} keys/s = {100*o['keys_per_sec']/isa_one:.1f}% of the one-core ISA limit ({isa_one:.0f} keys/s; {rng(one_runs, isa_one)}) | {100*o['keys_per_sec']/one_bound:.1f}% of the one-core openssl bound ({one_bound:.0f} keys/s)")
    print(f"gaen all cores, first match of each process: best {max(all_first):.0f} keys/s = {100*max(all_first)/isa_all:.1f}% of the ISA limit ({rng(all_first, isa_all)})")
    print(f"gaen one thread, first match of each process: best {max(one_first):.0f} keys/s = {100*max(one_first)/isa_one:.1f}% of the one-core ISA limit ({rng(one_first, isa_one)})")
else:
    print(f"gaen all cores: best {a['keys_per_sec']:.0f} keys/s = {100*a['keys_per_sec']/b['bound_keys_per_s_all_cores']:.1f}% of the bound ({b['bound_keys_per_s_all_cores']} keys/s; {rng(all_runs, b['bound_keys_per_s_all_cores'])})")
    print(f"gaen one thread: best {o['keys_per_sec']:.0f} keys/s = {100*o['keys_per_sec']/one_bound:.1f}% of the one-core bound ({one_bound:.0f} keys/s; {rng(one_runs, one_bound)})")
    print(f"gaen all cores, first match of each process: best {max(all_first):.0f} keys/s = {100*max(all_first)/b['bound_keys_per_s_all_cores']:.1f}% of the bound ({rng(all_first, b['bound_keys_per_s_all_cores'])})")
    print(f"gaen one thread, first match of each process: best {max(one_first):.0f} keys/s = {100*max(one_first)/one_bound:.1f}% of the one-core bound ({rng(one_first, one_bound)})")
if anc:
    print(f"vs Google's algorithm on OpenSSL (1 thread, {anc['keys_per_sec']:.0f} keys/s): x{o['keys_per_sec']/anc['keys_per_sec']:.2f} on one thread, x{a['keys_per_sec']/anc['keys_per_sec']:.2f} on all cores")
PY
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
