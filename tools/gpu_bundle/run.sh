#!/usr/bin/env bash
# The GPU bundle's runner (tools/gpu_bundle.sh puts it beside payload.tar.xz). Runs on the lent GPU
# machine as one command, within 8 minutes: prints the GPU, unpacks the payload, sets the library
# path, runs the GPU test suites as separate processes in parallel (per-suite timeouts, XML
# output), a service smoke on the CUDA backend, and the forward benchmark beside HF; writes
# summary.txt plus logs to $OUT (7 files). Exits 0 only if every suite passed.
# Without a GPU it exits 3 with one line saying so.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="${OUT:-$here/out}"
mkdir -p "$out"
summary="$out/summary.txt"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
  echo "run.sh: no NVIDIA GPU on this machine (nvidia-smi lists none); the GPU bundle runs only where one is" |
    tee "$summary" >&2
  exit 3
fi
started=$(date +%s)
say() { echo "$*" | tee -a "$summary"; }
elapsed() { echo "$(( $(date +%s) - started ))s"; }

root=/tmp/glassbox-bundle
rm -rf "$root" && mkdir -p "$root"
if ! tar -C "$root" -xJf "$here/payload.tar.xz" 2>/dev/null; then
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
    "$here/payload.tar.xz" "$root" || { say "run.sh: cannot unpack the payload"; exit 4; }
fi
say "glassbox GPU bundle, commit $(cat "$root/COMMIT"), $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader |
  sed 's/^/gpu: /' | tee -a "$summary"

# CUDA's runtime and cuBLAS are the machine's: the toolkit's, else the pip wheels torch uses.
cuda_dirs=""
for lib in libcudart.so.13 libcublasLt.so.13 libcublas.so.13; do
  found=$( { ls -d /usr/local/cuda/lib64/$lib /usr/local/cuda/targets/x86_64-linux/lib/$lib 2>/dev/null;
             find /usr/local /opt /usr/lib -name "$lib" 2>/dev/null; } | head -n 1)
  [ -n "$found" ] && cuda_dirs="$cuda_dirs:$(dirname "$found")"
done
export LD_LIBRARY_PATH="$root/lib$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! "$root/bin/forward_bench" --helpshort >/dev/null 2>&1 &&
   "$root/bin/forward_bench" --helpshort 2>&1 | grep -q "GLIBCXX\|CXXABI\|GCC_"; then
  export LD_LIBRARY_PATH="$root/lib-compat:$LD_LIBRARY_PATH"
  say "libstdc++: the machine's is older than the build's; using the bundled one"
fi
{
  echo "== nvidia-smi"; nvidia-smi
  echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  for b in "$root"/bin/*; do echo "== ldd $(basename "$b")"; ldd "$b"; done
} > "$out/env.txt" 2>&1
if grep -q "not found" "$out/env.txt"; then
  say "run.sh: shared libraries not found (env.txt):"
  grep "not found" "$out/env.txt" | sort -u | tee -a "$summary"
  exit 4
fi

# ---- GPU tests: one process per suite, 8 at a time, each under a timeout, so one device fault
# costs its suite only.
# A skip would hide a device the backend cannot use: here every GPU test must run.
export GLASSBOX_FIXTURES_DIR="$root/fixtures" GLASSBOX_REQUIRE_GPU=1
logs=/tmp/glassbox-logs
rm -rf "$logs" && mkdir -p "$logs/xml"
suite_timeout=150
jobs_file="$logs/jobs"
"$root/bin/cuda_backend_test" --gtest_list_tests | awk '/^[A-Za-z].*\.$/ {print "cuda_backend_test " $1 "*"}' > "$jobs_file"
echo "op_contract_test *_cuda*" >> "$jobs_file"
say "tests: $(wc -l < "$jobs_file") suites in parallel, ${suite_timeout}s each at most"
run_suite() {  # binary filter
  local name="${1}_$(echo "$2" | tr -c 'A-Za-z0-9_\n' '_')"
  local t0=$(date +%s)
  timeout -k 5 "$suite_timeout" "$root/bin/$1" --gtest_filter="$2" \
    --gtest_output="xml:$logs/xml/$name.xml" > "$logs/$name.log" 2>&1
  echo "$? $(( $(date +%s) - t0 )) $name" > "$logs/$name.rc"
}
export -f run_suite
export root logs suite_timeout
xargs -P 8 -L 1 bash -c 'run_suite "$0" "$1"' < "$jobs_file"

failed=0 passed_tests=0 failed_tests=0
: > "$out/tests.log"
for rc_file in "$logs"/*.rc; do
  read -r rc seconds name < "$rc_file"
  xml="$logs/xml/$name.xml"
  counts="no XML"
  if [ -f "$xml" ]; then
    tests=$(grep -o '<testsuites tests="[0-9]*" failures="[0-9]*" disabled="[0-9]*" errors="[0-9]*"' "$xml" | head -n 1)
    n=$(echo "$tests" | sed 's/.*tests="\([0-9]*\)".*/\1/')
    f=$(echo "$tests" | sed 's/.*failures="\([0-9]*\)".*/\1/')
    skipped=$(grep -c '<skipped' "$xml")
    counts="$n tests, $f failed, $skipped skipped"
    passed_tests=$(( passed_tests + n - f - skipped ))
    failed_tests=$(( failed_tests + f ))
  fi
  case "$rc" in
    0) verdict=ok ;;
    124|137) verdict="TIMEOUT after ${suite_timeout}s" ;;
    1) verdict=FAILED ;;
    *) verdict="CRASHED (exit $rc)" ;;
  esac
  if [ "$rc" != 0 ]; then
    failed=$(( failed + 1 ))
    { echo "==== $name: $verdict ($counts, ${seconds}s)"; cat "$logs/$name.log"; } >> "$out/tests.log"
  fi
  printf "  %-70s %-28s %s, %ss\n" "$name" "$verdict" "$counts" "$seconds" >> "$logs/table"
done
sort -k2 "$logs/table" | tee -a "$summary" > /dev/null
grep -v " ok " "$logs/table" | head -n 40
say "tests: $passed_tests passed, $failed_tests failed; $failed of $(wc -l < "$jobs_file") suites not ok ($(elapsed))"
{ echo "==== passing suites, last lines"; for f in "$logs"/*.log; do tail -n 3 "$f"; done; } >> "$out/tests.log"
tar -C "$logs" -czf "$out/tests_xml.tar.gz" xml

# ---- Service smoke: glassboxd on the CUDA backend (f32, so its numbers can be read beside the
# CPU server's) and on the CPU, the same logit-lens request to each.
{
  prompt="When Mary and John went to the store, John gave a drink to"
  for device in cuda cpu; do
    log="$logs/glassboxd-$device.log"
    timeout 60 "$root/bin/glassboxd" --model "demo=$root/demo-model" --listen 127.0.0.1:0 \
      --device "$device" --dtype f32 2> "$log" &
    pid=$!
    for _ in $(seq 200); do grep -q "listening on" "$log" && break; sleep 0.1; done
    address=$(sed -n 's/^glassboxd: listening on //p' "$log")
    echo "== glassboxd --device $device ($address)"
    cat "$log"
    echo "== glassbox logit-lens on $device"
    if [ -n "$address" ]; then
      timeout 30 "$root/bin/glassbox" --server "$address" logit-lens --model demo --text "$prompt" --top_k 3
      echo "exit $?"
    else
      echo "glassboxd did not start"
    fi
    kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
} > "$out/service.log" 2>&1
say "service smoke: $(grep -c '^exit 0' "$out/service.log") of 2 logit-lens requests answered (service.log)"

# ---- Benchmark: forward_bench on the CUDA backend beside HF transformers (sdpa), same weights.
say "bench: bench/torch_gpu_forward.py ($(elapsed) so far)"
PYTHONUNBUFFERED=1 timeout -k 5 240 python3 "$root/bench/torch_gpu_forward.py" \
  --bench-bin "$root/bin/forward_bench" --work-dir /tmp/glassbox-bench-models \
  --json-out "$out/bench.json" > "$out/bench.txt" 2>&1
bench_rc=$?
cat "$out/bench.txt" >> "$summary"
tail -n 20 "$out/bench.txt"
say "bench: exit $bench_rc; done in $(elapsed)"
[ "$failed" -eq 0 ] && [ "$passed_tests" -gt 0 ]
