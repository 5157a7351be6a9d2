#!/usr/bin/env bash
# One TEK -> its 144 RPIs (dp3t_core::gaen::derive_rpis_into), against the hardware bound
# of this machine (6 SHA-256 compressions + 2304 bytes of AES-128 at openssl's bulk speeds).
#
#   bash bench/core.sh            # the TEK benchmarks, the bound before and after, the ratio
#   bash bench/core.sh --all      # also every other benchmark of benches/core.rs
#
# The bound script is $GAEN_LIMIT, by default ../shared/bench/gaen-limit.sh (relative to
# the repository root, the yardstick scripts shared beside it); where it is absent the same
# formula is computed here. The ratio uses the lower (stricter) of the
# two bounds, measured just before and just after criterion. Numbers from a busy machine
# are noisy: check `uptime` and rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

limit() {
    local script="${GAEN_LIMIT:-../shared/bench/gaen-limit.sh}"
    if [[ -r "$script" ]]; then
        bash "$script"
        return
    fi
    local sha aes
    sha=$(openssl speed -elapsed -seconds 2 -evp sha256 2>/dev/null | awk '/^sha256/ {print $NF}')
    aes=$(openssl speed -elapsed -seconds 2 -evp aes-128-ecb 2>/dev/null | awk '/^AES-128-ECB/ {print $NF}')
    python3 -c 'import json,sys
sha=float(sys.argv[1].rstrip("k"))*1000; aes=float(sys.argv[2].rstrip("k"))*1000
print(json.dumps({"bound_us_per_key_one_core": round((6*64/sha+2304/aes)*1e6, 3)}))' "$sha" "$aes"
}

echo "# $(date -u +%FT%TZ)  $(nproc) cores  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
before=$(limit)
echo "gaen-limit (before): $before"
filter=tek/
[[ "${1:-}" == "--all" ]] && filter=
cargo bench -p dp3t-core --bench core -- $filter 2>&1 | grep -E '^[a-z_0-9]+/|time:|thrpt:' || true
after=$(limit)
echo "gaen-limit (after):  $after"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
python3 - "$before" "$after" "$target/criterion/tek/derive_rpis_into_144/new/estimates.json" <<'PY'
import json, sys
bound = min(json.loads(a)["bound_us_per_key_one_core"] for a in sys.argv[1:3])
est = json.load(open(sys.argv[3]))
med = est["median"]["point_estimate"] / 1000  # ns -> µs
lo = est["median"]["confidence_interval"]["lower_bound"] / 1000
hi = est["median"]["confidence_interval"]["upper_bound"] / 1000
print(f"TEK -> 144 RPIs: {med:.3f} µs/key (median, 95% CI {lo:.3f}-{hi:.3f}); "
      f"bound {bound:.3f} µs/key; ratio {med / bound:.2f}x (goal <= 1.5x, aim 1.2x)")
PY
