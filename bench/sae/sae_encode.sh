#!/usr/bin/env bash
# SAE encode throughput, Glassbox (CPU backend) beside sae_lens on the same CPU in one run:
# d_in 768 and 4096 x d_sae 24576 and 65536, random weights made in each process, one
# configuration at a time (a 4096 x 65536 f32 matrix is 1 GiB; each process holds W_enc and W_dec).
# Each configuration alternates the two implementations for ROUNDS rounds and reports medians, so
# that load from other processes on a shared machine hits both alike.
#
#   bash bench/sae/sae_encode.sh [path/to/sae_encode_bench] [python with sae_lens]
#
# Env: THREADS (default: nproc) for OpenMP (Glassbox's loops and oneDNN) and torch alike; TOKENS
# per call (512);
# ARCH (standard); ROUNDS (3); MIN_SECONDS / MIN_ITERS per measurement (2 / 2); CONFIGS to
# override the list ("768x24576 4096x65536 ...").
set -euo pipefail
cd "$(dirname "$0")/../.."
bench="${1:-build/bench/sae/sae_encode_bench}"
python="${2:-/work/venv-sae/bin/python}"
threads="${THREADS:-$(nproc)}"
tokens="${TOKENS:-512}"
arch="${ARCH:-standard}"
rounds="${ROUNDS:-3}"
min_seconds="${MIN_SECONDS:-2}"
min_iters="${MIN_ITERS:-2}"
configs="${CONFIGS:-768x24576 768x65536 4096x24576 4096x65536}"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $threads threads, $tokens tokens per call," \
     "$arch, $rounds rounds, OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-default}, load $(cut -d' ' -f1-3 /proc/loadavg)"
for config in $configs; do
  d_in=${config%x*}
  d_sae=${config#*x}
  for ((round = 1; round <= rounds; round++)); do
    "$bench" --d_in="$d_in" --d_sae="$d_sae" --tokens="$tokens" --architecture="$arch" \
      --modes=dense,sparse --min_seconds="$min_seconds" --min_iters="$min_iters" | tee -a "$out"
    "$python" bench/sae/sae_lens_encode_bench.py --d_in "$d_in" --d_sae "$d_sae" \
      --tokens "$tokens" --architecture "$arch" --threads "$threads" \
      --min_seconds "$min_seconds" --min_iters "$min_iters" | tee -a "$out"
  done
done

python3 - "$out" <<'PY'
import json, statistics, sys
from collections import defaultdict
wall, cpu = defaultdict(list), defaultdict(list)
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        key = (r["impl"], r["mode"], r["d_in"], r["d_sae"])
        wall[key].append(r["tokens_per_s"])
        cpu[key].append(r["tokens_per_cpu_s"])
print()
print("medians over rounds; ratio = Glassbox / sae_lens; top-k = Glassbox EncodeSparse, 64 features/token")
for title, runs in (("tokens/s (wall clock)", wall), ("tokens per CPU-second (all threads)", cpu)):
    med = {key: statistics.median(v) for key, v in runs.items()}
    print(f"\n{title}")
    print(f"{'d_in':>5} {'d_sae':>6} | {'sae_lens':>9} | {'glassbox dense':>14} {'ratio':>6} | {'glassbox top-k':>14} {'ratio':>6}")
    for (impl, mode, d_in, d_sae), base in med.items():
        if impl != "sae_lens":
            continue
        dense = med.get(("glassbox", "dense", d_in, d_sae), float("nan"))
        sparse = med.get(("glassbox", "sparse", d_in, d_sae), float("nan"))
        print(f"{d_in:>5} {d_sae:>6} | {base:>9.1f} | {dense:>14.1f} {dense / base:>5.2f}x | {sparse:>14.1f} {sparse / base:>5.2f}x")
PY
