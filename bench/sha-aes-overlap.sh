#!/usr/bin/env bash
# Builds bench/sha-aes-overlap.c against the shared ISA probe and prints its JSON line:
# the probe's SHA lanes without the store before each call, and whether AES blocks and
# pre-filter tests hide under SHA rounds on this CPU, together and each alone
# (BENCHMARKS.md, fifth and sixth sessions).
# Usage: bench/sha-aes-overlap.sh [SHARED_BENCH_DIR]   (default ../shared/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${1:-../shared/bench}"
out="${CARGO_TARGET_DIR:-target}/bench"
mkdir -p "$out"
# Four builds (the unit as the kernel runs it, its AES blocks only, its tests only, its
# tests done in the integer unit instead),
# each run twice.
for v in "" -DAES_ONLY -DFILTER_ONLY "-DFILTER_ONLY -DSCALAR_FILTER"; do
  cc -O3 -march=native $v -I "$shared" bench/sha-aes-overlap.c -o "$out/sha-aes-overlap"
  "$out/sha-aes-overlap"
  "$out/sha-aes-overlap"
done
