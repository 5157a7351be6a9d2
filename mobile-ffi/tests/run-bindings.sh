#!/usr/bin/env bash
# The mobile binding tests, end to end, on a fresh Debian machine or a developer's:
#
#   bash mobile-ffi/tests/run-bindings.sh
#
#   1. installs what is missing (idempotent): Python's `cryptography` and `pytest` (pip, or
#      Debian), a JDK and Maven (Debian); Maven
#      fetches the Kotlin compiler plugin, JNA, kotlinx-coroutines and JUnit from Maven
#      Central (strict checksums) into ~/.m2;
#   2. builds the library and generates the Kotlin, Swift and Python bindings
#      (mobile-ffi/generate-bindings.sh, debug build);
#   3. starts a test key server (the real dp3t-backend, SQLite, 2-second release buckets,
#      on a free 127.0.0.1 port; stopped on exit) and runs the Python stories: the engine
#      for all four schemes (tests/bindings/test_story.py) and two phones driven through
#      the TracingSession against that server (tests/bindings/test_session.py), and the
#      one-call TracingClient through a Python HttpTransport under asyncio
#      (tests/bindings/test_transport.py), pytest;
#   4. builds the Kotlin bindings as a Maven module (mobile-ffi/kotlin/pom.xml: a jar with
#      the linux-x86_64 library as its JNA resource) and runs, by `mvn package` (its test
#      phase: tests/bindings/StoriesTest.kt), the Kotlin stories: the engine for GAEN and low-cost
#      (tests/bindings/TestStory.kt), with the Kotlin example of docs/MOBILE.md compiled
#      in and its offline steps run, and two phones through the TracingSession against
#      the test key server (tests/bindings/SessionStory.kt), and TracingClient's suspend
#      calls through a Kotlin HttpTransport (tests/bindings/TransportStory.kt);
#   5. checks that the Swift bindings exist and declare the API. Swift is not compiled
#      here: there is no Swift toolchain on these machines.
#
# Needs the network for the first run only (PyPI, Maven Central, Debian), and root
# only if Debian packages are missing. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."


target_dir="${CARGO_TARGET_DIR:-target}"
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

if ! command -v mvn >/dev/null 2>&1; then
  apt_install maven
fi
mvn -v 2>&1 | sed -n 1p
echo "tools ready after $((SECONDS - started)) s"

# ------------------------------------------------------------------------------ bindings
step "build the library and generate bindings"
bash mobile-ffi/generate-bindings.sh
echo "generated after $((SECONDS - started)) s"

# ------------------------------------------------------------------------------ test server
step "a test key server on 127.0.0.1 (dp3t-backend, SQLite, 2-second buckets)"
cargo build -q -p backend --bin dp3t-backend
backend_bin="$(cd "$target_dir" && pwd)/debug/dp3t-backend"
server_dir="$(mkdir -p "$target_dir/test-backend" && cd "$target_dir/test-backend" && pwd)"
rm -rf "$server_dir"/*
"$backend_bin" keygen --data-dir "$server_dir" >/dev/null
# The health authority's service (authority/): its key pair first, so that the key server
# trusts its public key (besides the dev key the engine stories mint tokens with).
cargo build -q -p authority --bin dp3t-authority
authority_bin="$(cd "$target_dir" && pwd)/debug/dp3t-authority"
authority_dir="$(mkdir -p "$target_dir/test-authority" && cd "$target_dir/test-authority" && pwd)"
rm -rf "$authority_dir"/*
DP3T_AUTHORITY_DATA_DIR="$authority_dir" "$authority_bin" public-key >/dev/null 2>&1
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DP3T_DATA_DIR="$server_dir" DP3T_BIND="127.0.0.1:$port" DP3T_METRICS_BIND="127.0.0.1:0" \
  DP3T_RELEASE_BUCKET_SECONDS=2 \
  DP3T_HA_PUBLIC_KEYS="$authority_dir/ha-signing-key.pub.pem" \
  DP3T_UPLOAD_DELAY_MS=200 "$backend_bin" serve >"$server_dir/server.log" 2>&1 &
backend_pid=$!
trap 'kill "$backend_pid" 2>/dev/null || true' EXIT
auth_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DP3T_AUTHORITY_DATA_DIR="$authority_dir" DP3T_AUTHORITY_BIND="127.0.0.1:$auth_port" \
  DP3T_AUTHORITY_ONSET_DELAY_MS=200 "$authority_bin" serve >"$authority_dir/server.log" 2>&1 &
authority_pid=$!
trap 'kill "$backend_pid" "$authority_pid" 2>/dev/null || true' EXIT
for p in "$port" "$auth_port"; do
python3 - "$p" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/healthz"
for _ in range(150):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(f"the test server on port {sys.argv[1]} did not start")
PY
done
DP3T_TEST_AUTHORITY_KEY="$(DP3T_AUTHORITY_DATA_DIR="$authority_dir" "$authority_bin" apikey add stories 2>/dev/null)"
export DP3T_TEST_AUTHORITY="http://127.0.0.1:$auth_port" DP3T_TEST_AUTHORITY_KEY
echo "health authority on $DP3T_TEST_AUTHORITY (log: $authority_dir/server.log)"
export DP3T_TEST_BACKEND="http://127.0.0.1:$port" DP3T_TEST_DATA_DIR="$server_dir" \
  DP3T_BACKEND_BIN="$backend_bin" DP3T_TEST_BUCKET_SECONDS=2
echo "key server on $DP3T_TEST_BACKEND (log: $server_dir/server.log)"

# ------------------------------------------------------------------------------ Python
step "Python: the engine story for all four schemes; two phones through the session"
DP3T_PYTHON_BINDINGS="$bindings/python" timeout 600 \
  python3 -m pytest -q -p no:cacheprovider mobile-ffi/tests/bindings/test_story.py \
  mobile-ffi/tests/bindings/test_session.py mobile-ffi/tests/bindings/test_transport.py

# ------------------------------------------------------------------------------ Kotlin
step "Kotlin (JVM, JNA, coroutines): the stories by mvn package (StoriesTest.kt)"
out="$target_dir/kotlin-story"
rm -rf "$out"
mkdir -p "$out"
# The guide's Kotlin example is compiled (and partly run) with the story.
python3 - docs/MOBILE.md "$out/MobileGuideExample.kt" "$out/SessionGuideExample.kt" \
  "$out/TransportGuideExample.kt" <<'PY'
import sys
text = open(sys.argv[1]).read()
section = text.split("## The app flow in Kotlin", 1)[1]
code = section.split("```kotlin\n", 1)[1].split("```", 1)[0]
open(sys.argv[2], "w").write("// Extracted from docs/MOBILE.md by run-bindings.sh.\n" + code)
# The session example is compiled too (it needs the test key server to run).
section = text.split("## The tracing session in Kotlin", 1)[1]
code = section.split("```kotlin\n", 1)[1].split("```", 1)[0]
open(sys.argv[3], "w").write("// Extracted from docs/MOBILE.md by run-bindings.sh.\n" + code)
# And the TracingClient example (suspend functions over an HttpTransport).
section = text.split("## One call: `TracingClient` and an `HttpTransport`", 1)[1]
code = section.split("```kotlin\n", 1)[1].split("```", 1)[0]
open(sys.argv[4], "w").write("// Extracted from docs/MOBILE.md by run-bindings.sh.\n" + code)
PY
abs() { (cd "$1" && pwd); }
# The stories run in the test phase; the jar comes after, with the native library in it.
timeout 900 mvn -B -C --no-transfer-progress package -f mobile-ffi/kotlin/pom.xml \
  -Dbindings.dir="$(abs "$bindings")" -Dexamples.dir="$(abs "$out")" -Dbuild.dir="$(abs "$target_dir")/maven"
python3 - "$target_dir/maven/dp3t-mobile-0.1.0.jar" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for want in ("linux-x86-64/libdp3t_mobile_ffi.so", "org/dp3t/mobile/TracingClient.class"):
    assert want in names, f"{sys.argv[1]} lacks {want}"
print("jar:", sys.argv[1], len(names), "entries, the native library included")
PY

# ------------------------------------------------------------------------------ Swift
step "Swift: generated (not compiled: no Swift toolchain here)"
swift="$bindings/swift"
for f in Dp3tMobile.swift Dp3tMobileFFI.h Dp3tMobileFFI.modulemap; do
  [ -s "$swift/$f" ] || { echo "missing $swift/$f" >&2; exit 1; }
done
for decl in 'open class TracingEngine' 'public struct EngineConfig' 'public struct PublishedBatch' \
  'enum Dp3tError: Swift.Error' 'case BadSignature(message: String)' 'public enum Scheme' 'public enum BatchKind' \
  'public func verifyResponseSignature' 'public func exposureDaysFromWindows' \
  'func ingest(batch: PublishedBatch)' 'func currentBeacon(nowUnix: UInt64)' \
  'open class TracingSession' 'func nextActions(nowUnix: UInt64)' 'public protocol StatusListener' \
  'public enum TracingError' 'public func advertisement' 'public func gaenUploadFromOsKeys' \
  'public protocol HttpTransport' 'func send(request: HttpRequest) async throws' 'open class TracingClient' \
  'func sync() async throws' 'func reportInfected(code: String, onsetUnix: UInt64) async throws'; do
  grep -q "$decl" "$swift/Dp3tMobile.swift" || { echo "Swift bindings lack: $decl" >&2; exit 1; }
done
grep -q 'module Dp3tMobileFFI' "$swift/Dp3tMobileFFI.modulemap"
echo "swift: 3 files, API declared"

step "mobile bindings passed in $((SECONDS - started)) s"
