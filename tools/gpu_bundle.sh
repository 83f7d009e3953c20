#!/usr/bin/env bash
# Builds the GPU bundle: everything a lent GPU machine (nvcc, torch, transformers, the CUDA
# runtime and cuBLAS, but none of our C++ libraries) needs to prove the CUDA backend in one call.
# Into gpu-bundle/ (git-ignored): run.sh, and payload.tar.xz holding stripped Release binaries
# (the GPU test suites, forward_bench, glassboxd, the glassbox CLI), every shared library they
# need beyond glibc, libstdc++ and CUDA's own, the fixtures the tests read, the demo model and the
# PyTorch side of the benchmark. Checked to be under 60 MiB (a device call carries 64 MiB).
#
#   bash tools/gpu_bundle.sh                  # its own Release tree, build-gpu/, for sm_90
#   bash tools/gpu_bundle.sh --build-dir build  # reuse a configured tree (CI: no second build)
#
# Then, on the GPU machine: bash gpu-bundle/run.sh (kernels/cuda/README.md gives the device call).
set -euo pipefail
cd "$(dirname "$0")/.."

build=""
out=gpu-bundle
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "gpu_bundle.sh: unknown argument $1 (--build-dir DIR, --out DIR)" >&2; exit 2 ;;
  esac
done
limit_mib=60

if [ -z "$build" ]; then
  build=build-gpu
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGLASSBOX_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
fi
# Captured first: under pipefail, grep -q quitting at its first match can kill ninja with SIGPIPE
# while it still lists targets, and the pipeline then fails although the target is there.
targets=$(ninja -C "$build" -t targets all)
if ! grep -q '^cuda_backend_test:' <<<"$targets"; then
  echo "gpu_bundle.sh: $build has no CUDA backend (configured without nvcc); the bundle needs one" >&2
  exit 1
fi
bins=(tests/gpu/cuda_backend_test tests/op_contract_test bench/forward_bench
      server/service/glassboxd client/cpp/glassbox)
ninja -C "$build" cuda_backend_test op_contract_test forward_bench glassboxd glassbox

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/lib-compat" "$stage/fixtures" "$stage/bench"
for b in "${bins[@]}"; do
  cp "$build/$b" "$stage/bin/"
  strip --strip-unneeded "$stage/bin/$(basename "$b")"
done

# Shared libraries: everything ldd resolves except what every Linux with a CUDA driver has
# (glibc's, the loader) and CUDA's runtime and cuBLAS (the GPU machine has its own, matching its
# driver). libstdc++ and libgcc_s go to lib-compat/, used only if the machine's are too old.
for b in "$stage"/bin/*; do ldd "$b"; done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
  while read -r lib; do
    name=$(basename "$lib")
    case "$name" in
      linux-vdso*|ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*) ;;
      libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*) ;;
      libstdc++.so*|libgcc_s.so*) cp -L "$lib" "$stage/lib-compat/$name" ;;
      *) cp -L "$lib" "$stage/lib/$name" ;;
    esac
  done
libraries=$(ldd "$build/tests/gpu/cuda_backend_test")
if grep -q "not found" <<<"$libraries"; then
  echo "gpu_bundle.sh: a library of the test binary is missing here:" >&2
  ldd "$build/tests/gpu/cuda_backend_test" | grep "not found" >&2
  exit 1
fi

# What the binaries read: the whole-model fixtures (tests/gpu reads models/ and expected/), the
# demo model (the service smoke), and the PyTorch half of the benchmark.
cp -r tests/fixtures/models tests/fixtures/expected "$stage/fixtures/"
cp -r models/demo "$stage/demo-model"
cp bench/torch_gpu_forward.py "$stage/bench/"
git rev-parse --short HEAD > "$stage/COMMIT" 2>/dev/null || echo unknown > "$stage/COMMIT"

rm -rf "$out"
mkdir -p "$out"
tar -C "$stage" -cJf "$out/payload.tar.xz" .
cp tools/gpu_bundle/run.sh "$out/run.sh"
chmod +x "$out/run.sh"

bytes=$(du -sb "$out" | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "gpu_bundle.sh: $out is $mib MiB ($(du -sh "$stage" | cut -f1) unpacked; limit ${limit_mib} MiB):"
ls -la "$out"
if [ "$bytes" -ge $(( limit_mib * 1048576 )) ]; then
  echo "gpu_bundle.sh: the bundle is over ${limit_mib} MiB" >&2
  exit 1
fi
