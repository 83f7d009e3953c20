#!/usr/bin/env bash
# The measurement behind the CPU backend's GEMM library (kernels/cpu/gemm.h): the same f32 GEMMs
# (a forward pass's shapes) through OpenBLAS (pthread and OpenMP builds), BLIS and oneDNN, each
# from Debian, with the same threads, printed side by side in GFLOP/s. Installs the libraries it
# lacks with apt-get (they are not needed to build Glassbox).
#
#   bash bench/gemm/gemm_libraries.sh [threads]
set -euo pipefail
cd "$(dirname "$0")"
threads="${1:-$(nproc)}"
packages=(libopenblas-pthread-dev libopenblas-openmp-dev libblis-openmp-dev libdnnl-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lib=/usr/lib/x86_64-linux-gnu
g++ -O2 -std=c++17 gemm_libraries.cc -o "$out/openblas-pthread" -I/usr/include/x86_64-linux-gnu/openblas-pthread \
  -L$lib/openblas-pthread -Wl,-rpath,$lib/openblas-pthread -lopenblas
g++ -O2 -std=c++17 gemm_libraries.cc -o "$out/openblas-openmp" -I/usr/include/x86_64-linux-gnu/openblas-openmp \
  -L$lib/openblas-openmp -Wl,-rpath,$lib/openblas-openmp -lopenblas
g++ -O2 -std=c++17 gemm_libraries.cc -o "$out/blis" -I/usr/include/blis -L$lib/blis-openmp \
  -Wl,-rpath,$lib/blis-openmp -lblis
g++ -O2 -std=c++17 -DGEMM_DNNL gemm_libraries.cc -o "$out/onednn-sgemm" -ldnnl
g++ -O2 -std=c++17 -DGEMM_DNNL_MATMUL gemm_libraries.cc -o "$out/onednn-matmul" -ldnnl
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" BLIS_NUM_THREADS="$threads"
names=(openblas-pthread openblas-openmp blis onednn-sgemm onednn-matmul)
for n in "${names[@]}"; do "$out/$n" > "$out/$n.txt"; done
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $threads threads; GFLOP/s (f32, y = x · wᵀ)"
printf "%5s %6s %5s" M N K
for n in "${names[@]}"; do printf " %16s" "$n"; done
echo "  shape"
paste -d' ' "$out"/{openblas-pthread,openblas-openmp,blis,onednn-sgemm,onednn-matmul}.txt | awk '{
  printf "%5s %6s %5s", $1, $2, $3
  for (i = 0; i < 5; i++) printf " %16s", $(4 + i * (NF / 5))
  what = ""; for (j = 5; j <= NF / 5; j++) what = what " " $j
  printf " %s\n", what }'
