#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything (the CUDA backend too
# when nvcc is present, even without a GPU), runs every test, runs them again in a sanitizer
# build, then runs each fuzz target for a bounded time. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${GLASSBOX_JOBS:-$(nproc)}"
fuzz_seconds="${GLASSBOX_FUZZ_SECONDS:-60}"

bash tools/setup.sh

echo "== build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j "$jobs"

echo "== tests"
ctest --test-dir build --output-on-failure -j "$jobs"

echo "== python client tests (against a live glassboxd)"
export GLASSBOX_REQUIRE_BROWSER=1  # the dashboard test must find chromium (tools/setup.sh installs it)
GLASSBOX_SERVER_BIN="$PWD/build/server/service/glassboxd" bash client/python/run_tests.sh

echo "== GPU bundle (issue 20): built from build/, its size, run.sh without a GPU and behind a fake one"
bash tools/gpu_bundle/ci_check.sh build

echo "== sanitizers (ASan + UBSan + LSan build of every test; tools/sanitize.sh)"
bash tools/sanitize.sh

echo "== container image and deploy/ (issue 10)"
bash tools/container_smoke.sh

echo "== fuzz (${fuzz_seconds}s per target)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DGLASSBOX_CUDA=OFF -DGLASSBOX_BUILD_TESTS=OFF -DGLASSBOX_BUILD_FUZZERS=ON \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" >/dev/null
ninja -C build-fuzz -j "$jobs" $(ninja -C build-fuzz -t targets all | grep -o '^[a-z_]*_fuzz:' | tr -d ':' | sort -u)
for fuzzer in build-fuzz/fuzz/*_fuzz; do
  name=$(basename "$fuzzer")
  corpus="build-fuzz/corpus/$name"
  mkdir -p "$corpus"
  seeds="fuzz/seeds/${name%_fuzz}"
  log="build-fuzz/$name.log"
  echo "-- $name (log: $log)"
  # UBSan halts too: undefined behaviour is a finding, not a warning.
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$fuzzer" -max_total_time="$fuzz_seconds" \
      -print_final_stats=1 "$corpus" $( [ -d "$seeds" ] && echo "$seeds" ) >"$log" 2>&1; then
    # The report (with its stack) first, then the crashing input libFuzzer wrote.
    grep -m1 -A60 -E '==ERROR|runtime error|deadly signal|request_fuzz: ' "$log" || true
    tail -n 12 "$log"
    exit 1
  fi
  tail -n 12 "$log"
done
echo "fuzz: all targets ran ${fuzz_seconds}s without a crash"
