#!/usr/bin/env bash
# CI's check of the GPU bundle on a machine without a GPU (issue 20): build it from an existing
# tree, check its size (gpu_bundle.sh fails over 60 MiB), check that run.sh refuses with its one
# line, then run it once more behind a fake nvidia-smi so everything but the device is exercised:
# the payload unpacks, every library resolves, the suites run in parallel and, with
# GLASSBOX_REQUIRE_GPU, fail instead of skipping; the CPU server of the service smoke answers.
#
#   bash tools/gpu_bundle/ci_check.sh [BUILD_DIR]   (default build)
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
bundle=$(mktemp -d)
trap 'rm -rf "$bundle"' EXIT

bash tools/gpu_bundle.sh --build-dir "$build" --out "$bundle/gpu-bundle" | tail -n 4

set +e
OUT="$bundle/out-nogpu" bash "$bundle/gpu-bundle/run.sh" 2>/dev/null
rc=$?
set -e
line=$(cat "$bundle/out-nogpu/summary.txt")
if [ "$rc" -ne 3 ] || [[ "$line" != "run.sh: no NVIDIA GPU on this machine"* ]]; then
  echo "ci_check: run.sh without a GPU exited $rc saying: $line (want 3, 'no NVIDIA GPU')" >&2
  exit 1
fi
echo "ci_check: without a GPU, run.sh exits 3: $line"

mkdir -p "$bundle/fake"
cat > "$bundle/fake/nvidia-smi" <<'SMI'
#!/usr/bin/env bash
case "$1" in
  -L) echo "GPU 0: CI stand-in (UUID: GPU-00000000)" ;;
  --query-gpu=*) echo "CI stand-in, 0, 0 MiB, 0 MHz" ;;
  *) echo "CI stand-in for nvidia-smi" ;;
esac
SMI
chmod +x "$bundle/fake/nvidia-smi"
set +e
PATH="$bundle/fake:$PATH" OUT="$bundle/out-fake" bash "$bundle/gpu-bundle/run.sh" > "$bundle/fake.log" 2>&1
rc=$?
set -e
summary="$bundle/out-fake/summary.txt"
fail() { echo "ci_check: $*" >&2; cat "$bundle/fake.log" >&2; exit 1; }
[ "$rc" -ne 0 ] || fail "run.sh passed with no device behind the fake nvidia-smi"
grep -q "^tests: [01] passed, [1-9][0-9]* failed" "$summary" || fail "the GPU tests did not all fail under GLASSBOX_REQUIRE_GPU"
grep -q "GLASSBOX_REQUIRE_GPU is set, but: no CUDA device" "$bundle/out-fake/tests.log" ||
  fail "tests.log does not say why the GPU tests failed"
grep -q "^service smoke: 1 of 2" "$summary" || fail "the CPU server of the service smoke did not answer"
files=$(ls "$bundle/out-fake" | wc -l)
[ "$files" -le 8 ] || fail "run.sh wrote $files files to \$OUT (a device call returns 8)"
echo "ci_check: behind a fake nvidia-smi, run.sh unpacks, resolves every library and runs" \
     "$(grep -c . "$bundle/out-fake/summary.txt") summary lines into $files files; the GPU tests fail as they must:"
grep "^tests:" "$summary"
