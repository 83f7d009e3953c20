#!/usr/bin/env bash
# Glassbox's CPU forward pass beside PyTorch's on the same random GPT-2-small weights and on the
# shipped demo model, with the same thread count, from one run. Needs a Python with torch + transformers (PYTHON, default the
# reference venv of tests/reference) and a built tree (BUILD, default build/).
#
#   bash bench/cpu_forward.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-/work/venv-ref/bin/python}"
build="${BUILD:-build}"
threads="${1:-$(nproc)}"
model_dir="${MODEL_DIR:-$build/bench-gpt2-small}"
export OMP_NUM_THREADS="$threads"

ninja -C "$build" forward_bench >/dev/null
if [ ! -f "$model_dir/model.safetensors" ]; then
  "$python" bench/torch_cpu_forward.py --save-model "$model_dir" --repeats 1 --warmup 0 >/dev/null
fi
# Each row alternates the two sides ROUNDS times (default 3) and compares medians, so that load
# from other processes on a shared machine hits both alike.
rounds="${ROUNDS:-3}"
row() {  # row MODEL_NAME MODEL_DIR THREADS BATCH SEQ CAPTURE
  local name=$1 dir=$2 t=$3 batch=$4 seq=$5 capture=$6 results=()
  for ((r = 0; r < rounds; r++)); do
    results+=("$(OMP_NUM_THREADS=$t "$python" bench/torch_cpu_forward.py --model-dir "$dir" \
                   --threads "$t" --batch "$batch" --seq "$seq" $capture | tail -n 1)")
    results+=("$(OMP_NUM_THREADS=$t "$build/bench/forward_bench" --model "$dir" --batch "$batch" \
                   --seq "$seq" ${capture:+--capture_resid} | tail -n 1)")
  done
  "$python" - "$name" "$t" "$batch" "$seq" "${capture:+yes}" "${results[@]}" <<'PY'
import json, statistics, sys
name, threads, batch, seq, capture = sys.argv[1:6]
runs = [json.loads(r) for r in sys.argv[6:]]
torch = statistics.median(r["tokens_per_s"] for r in runs[0::2])
ours = statistics.median(r["tokens_per_s"] for r in runs[1::2])
print(f"{name:<11} {threads:<7} {batch:<6} {seq:<5} {capture or 'no':<8} {torch:>12.1f} {ours:>15.1f} "
      f"{ours / torch:>6.2f}x")
PY
}
printf "%-11s %-7s %-6s %-5s %-8s %12s %15s %7s\n" model threads batch seq capture torch_tok/s glassbox_tok/s ratio
for shape in "1 128" "4 128" "1 512"; do
  for capture in "" "--capture-resid"; do
    row gpt2-small "$model_dir" "$threads" $shape "$capture"
  done
done
# The demo model, where per-op overhead decides; on one thread and on all of them.
for t in 1 "$threads"; do
  for capture in "" "--capture-resid"; do
    row demo models/demo "$t" 1 24 "$capture"
  done
done
