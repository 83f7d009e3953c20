#!/usr/bin/env bash
# The sanitizer stage of tools/test.sh: builds every C++ target with AddressSanitizer,
# UndefinedBehaviorSanitizer and LeakSanitizer in a tree of its own (build-asan; CUDA off, no
# benchmarks, -O1), runs every GoogleTest suite there and the Python client's suite against the
# sanitized glassboxd, and fails on any sanitizer report. Reports go to files, so that one
# written by a subprocess (a glassboxd or glassbox CLI started by a test) fails the run even when
# the test that started it did not look at its exit status.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${GLASSBOX_JOBS:-$(nproc)}"
tree=build-asan
reports="$PWD/$tree/sanitizer-reports"

echo "== sanitizers: build ($tree: address, undefined, leak)"
cmake -S . -B "$tree" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DGLASSBOX_CUDA=OFF \
  -DGLASSBOX_BUILD_BENCHMARKS=OFF -DGLASSBOX_SANITIZE=address,undefined >/dev/null
ninja -C "$tree" -j "$jobs"

rm -rf "$reports"
mkdir -p "$reports"
# halt_on_error: the first report ends the process (non-zero), as UBSan's -fno-sanitize-recover
# does. log_path: one file per reporting process, checked below.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
export LSAN_OPTIONS="log_path=$reports/lsan"

# The load test (64 clients) sends fewer requests per client under the sanitizers (~10x slower).
export GLASSBOX_LOAD_REQUESTS="${GLASSBOX_LOAD_REQUESTS:-60}"

status=0
echo "== sanitizers: GoogleTest suites"
ctest --test-dir "$tree" --output-on-failure -j "$jobs" --timeout 900 || status=1

echo "== sanitizers: python client tests against the sanitized glassboxd"
GLASSBOX_SERVER_BIN="$PWD/$tree/server/service/glassboxd" \
  bash client/python/run_tests.sh -q || status=1

if compgen -G "$reports/*" >/dev/null; then
  echo "sanitizers: reports were written:" >&2
  for report in "$reports"/*; do
    echo "---- $report" >&2
    head -n 60 "$report" >&2
  done
  status=1
fi
if ((status)); then
  echo "sanitizers: FAILED" >&2
  exit 1
fi
echo "sanitizers: every suite passed with no report"
