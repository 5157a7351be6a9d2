#!/usr/bin/env bash
# The mobile binding tests, end to end, on a fresh Debian machine or a developer's:
#
#   bash mobile-ffi/tests/run-bindings.sh
#
#   1. installs what is missing (idempotent; everything but Debian packages goes under
#      target/tools/): Python's `cryptography` and `pytest`, a JDK, npm, `kotlinc` from the
#      npm package `kotlin-compiler`, and the JNA jar from Maven Central;
#   2. builds the library and generates the Kotlin, Swift and Python bindings
#      (mobile-ffi/generate-bindings.sh, debug build);
#   3. runs the Python story for all four schemes (tests/bindings/test_story.py, pytest);
#   4. compiles and runs the Kotlin story for GAEN and low-cost on the JVM
#      (tests/bindings/TestStory.kt), with the Kotlin example of docs/MOBILE.md compiled
#      in and its offline steps run;
#   5. checks that the Swift bindings exist and declare the API. Swift is not compiled
#      here: there is no Swift toolchain on these machines.
#
# Needs the network for the first run only (PyPI, npm, Maven Central, Debian), and root
# only if Debian packages are missing. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

KOTLIN_VERSION=2.4.20
JNA_VERSION=5.19.1
JNA_SHA256=4fb141dd8ef6b0585ffceea4bc49602fbc6312fa977e2c488794ea3e6aafecae

target_dir="${CARGO_TARGET_DIR:-target}"
tools="$target_dir/tools"
bindings="$target_dir/bindings"
export PYTHONDONTWRITEBYTECODE=1

step() { printf '\n--> %s\n' "$*"; }
started=$SECONDS

apt_updated=no
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing $*, and no apt-get to install it with" >&2
    return 1
  fi
  if [ "$apt_updated" = no ]; then
    apt-get update -qq
    apt_updated=yes
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ------------------------------------------------------------------------------ tools
step "tools"

if ! python3 -c 'import cryptography, pytest' 2>/dev/null; then
  python3 -m pip install -q "cryptography>=41" "pytest>=7" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "cryptography>=41" "pytest>=7" 2>/dev/null ||
    apt_install python3-cryptography python3-pytest
fi
python3 -c 'import cryptography, pytest; print("python", __import__("sys").version.split()[0], "cryptography", cryptography.__version__, "pytest", pytest.__version__)'

if ! command -v java >/dev/null 2>&1; then
  apt_install default-jdk-headless
fi
java -version 2>&1 | head -1

kotlinc="$tools/kotlin/node_modules/kotlin-compiler/bin/kotlinc"
if ! [ -x "$kotlinc" ] || ! grep -q "\"version\": \"$KOTLIN_VERSION\"" "$tools/kotlin/node_modules/kotlin-compiler/package.json"; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  mkdir -p "$tools/kotlin"
  timeout 600 npm install --prefix "$tools/kotlin" --no-audit --no-fund --no-save --loglevel=error \
    "kotlin-compiler@$KOTLIN_VERSION" >/dev/null
fi
"$kotlinc" -version 2>&1 | grep -i kotlinc

jna="$tools/jna/jna-$JNA_VERSION.jar"
if ! [ -f "$jna" ] || ! echo "$JNA_SHA256  $jna" | sha256sum -c --status; then
  mkdir -p "$tools/jna"
  rm -f "$jna"
  if command -v mvn >/dev/null 2>&1; then
    timeout 600 mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      -Dartifact="net.java.dev.jna:jna:$JNA_VERSION" -DoutputDirectory="$tools/jna" >/dev/null 2>&1 || true
  fi
  if ! [ -f "$jna" ]; then
    command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
    curl -fsSL --retry 3 -o "$jna" \
      "https://repo1.maven.org/maven2/net/java/dev/jna/jna/$JNA_VERSION/jna-$JNA_VERSION.jar"
  fi
  echo "$JNA_SHA256  $jna" | sha256sum -c --status || {
    echo "JNA jar checksum mismatch: $jna" >&2
    exit 1
  }
fi
echo "jna $JNA_VERSION"
echo "tools ready after $((SECONDS - started)) s"

# ------------------------------------------------------------------------------ bindings
step "build the library and generate bindings"
bash mobile-ffi/generate-bindings.sh
echo "generated after $((SECONDS - started)) s"

# ------------------------------------------------------------------------------ Python
step "Python: the story for all four schemes"
DP3T_PYTHON_BINDINGS="$bindings/python" timeout 600 \
  python3 -m pytest -q -p no:cacheprovider mobile-ffi/tests/bindings/test_story.py

# ------------------------------------------------------------------------------ Kotlin
step "Kotlin (JVM, JNA): the story for GAEN and low-cost"
out="$target_dir/kotlin-story"
rm -rf "$out"
mkdir -p "$out"
# The guide's Kotlin example is compiled (and partly run) with the story.
python3 - docs/MOBILE.md "$out/MobileGuideExample.kt" <<'PY'
import sys
text = open(sys.argv[1]).read()
section = text.split("## The app flow in Kotlin", 1)[1]
code = section.split("```kotlin\n", 1)[1].split("```", 1)[0]
open(sys.argv[2], "w").write("// Extracted from docs/MOBILE.md by run-bindings.sh.\n" + code)
PY
timeout 900 "$kotlinc" -nowarn -include-runtime -cp "$jna" -d "$out/story.jar" \
  mobile-ffi/tests/bindings/TestStory.kt "$out/MobileGuideExample.kt" \
  "$bindings/kotlin/uniffi/dp3t_mobile_ffi/dp3t_mobile_ffi.kt"
timeout 300 java -Djna.library.path="$bindings/kotlin" -cp "$out/story.jar:$jna" TestStoryKt

# ------------------------------------------------------------------------------ Swift
step "Swift: generated (not compiled: no Swift toolchain here)"
swift="$bindings/swift"
for f in dp3t_mobile_ffi.swift dp3t_mobile_ffiFFI.h dp3t_mobile_ffiFFI.modulemap; do
  [ -s "$swift/$f" ] || { echo "missing $swift/$f" >&2; exit 1; }
done
for decl in 'open class TracingEngine' 'public struct EngineConfig' 'public struct PublishedBatch' \
  'enum Dp3tError: Swift.Error' 'case BadSignature(message: String)' 'public enum Scheme' 'public enum BatchKind' \
  'public func verifyResponseSignature' 'public func exposureDaysFromWindows' \
  'func ingest(batch: PublishedBatch)' 'func currentBeacon(nowUnix: UInt64)'; do
  grep -q "$decl" "$swift/dp3t_mobile_ffi.swift" || { echo "Swift bindings lack: $decl" >&2; exit 1; }
done
grep -q 'module dp3t_mobile_ffiFFI' "$swift/dp3t_mobile_ffiFFI.modulemap"
echo "swift: 3 files, API declared"

step "mobile bindings passed in $((SECONDS - started)) s"
