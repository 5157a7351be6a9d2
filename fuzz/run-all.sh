#!/usr/bin/env bash
# Run every fuzz target for N seconds each (default 60), from the seed corpora.
#
#   bash fuzz/run-all.sh [SECONDS]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Seeds are
# regenerated first (fuzz/corpus/<target>/seed-*); whatever the fuzzer adds to the corpus
# stays there for the next run. A crash, a failed assertion, a timeout or running out of
# memory stops the script with a non-zero status and leaves the input in
# fuzz/artifacts/<target>/ (replay it with `cargo +nightly fuzz run <target> <file>`).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

cargo run -q --example seed_corpora
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^dp3t-fuzz$')
cargo +nightly fuzz build --target-dir "$target_dir"
mkdir -p logs
for t in $targets; do
  echo "==> fuzz $t for ${seconds}s"
  status=0
  cargo +nightly fuzz run --target-dir "$target_dir" "$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"logs/$t.log" 2>&1 || status=$?
  grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "logs/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "logs/$t.log" >&2
    echo "fuzz target $t failed (status $status): the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "all fuzz targets ran ${seconds}s each without a failure"
