#!/usr/bin/env bash
# Build libdp3t_mobile_ffi and generate its Kotlin, Swift and Python bindings.
#
#   bash mobile-ffi/generate-bindings.sh            # debug build (what the tests use)
#   bash mobile-ffi/generate-bindings.sh --release  # optimized build (what an app ships)
#
# Writes, under the workspace target directory ($CARGO_TARGET_DIR or target/):
#   bindings/kotlin/org/dp3t/mobile/dp3t_mobile_ffi.kt          (package org.dp3t.mobile, JNA)
#   bindings/kotlin/libdp3t_mobile_ffi.so                       (host library, for JVM tests)
#   bindings/swift/Dp3tMobile.swift, Dp3tMobileFFI.h, Dp3tMobileFFI.modulemap
#   bindings/python/dp3t_mobile_ffi.py + libdp3t_mobile_ffi.so  (importable as is)
#
# The bindings are generated in uniffi's library mode from the built host library, with
# the `uniffi-bindgen` binary of this workspace (same uniffi version as the library).
# The generated code does not depend on the platform it was generated on: the Kotlin and
# Swift files go into Android and iOS projects unchanged, next to the libraries built for
# those targets (docs/MOBILE.md).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_profile=()
case "${1:-}" in
  "") ;;
  --release) profile=release; cargo_profile=(--release) ;;
  *) echo "usage: $0 [--release]" >&2; exit 2 ;;
esac

target_dir="${CARGO_TARGET_DIR:-target}"
case "$(uname -s)" in
  Darwin) lib_file=libdp3t_mobile_ffi.dylib ;;
  *) lib_file=libdp3t_mobile_ffi.so ;;
esac

# The generator first, then the library: the generator's build compiles the crate with
# the `bindgen` feature, and the library handed to apps and tests must not carry it.
cargo build -q -p dp3t-mobile-ffi --features bindgen --bin uniffi-bindgen
cargo build -q -p dp3t-mobile-ffi --lib "${cargo_profile[@]}"

bindgen="$target_dir/debug/uniffi-bindgen"
lib="$target_dir/$profile/$lib_file"
out="$target_dir/bindings"
rm -rf "$out"
for language in kotlin swift python; do
  "$bindgen" generate --library "$lib" --language "$language" --no-format \
    --out-dir "$out/$language" >/dev/null
done
cp "$lib" "$out/python/"
cp "$lib" "$out/kotlin/"

echo "bindings of $lib:"
find "$out" -type f | sort | sed 's/^/  /'
