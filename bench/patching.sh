#!/usr/bin/env bash
# Full patching sweeps on a GPT-2-small-shaped random model: Glassbox's batched engine beside
# transformer_lens.patching (one pass per cell) on the same CPU, weights, tokens and threads, in
# one run. Needs the reference venv (PYTHON) with torch, transformers and transformer_lens.
#
#   bash bench/patching.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-/work/venv-ref/bin/python}"
build="${BUILD:-build}"
threads="${1:-$(nproc)}"
model_dir="${MODEL_DIR:-$build/bench-gpt2-small}"
export OMP_NUM_THREADS="$threads"
ninja -C "$build" patching_bench >/dev/null
if [ ! -f "$model_dir/model.safetensors" ]; then
  "$python" bench/torch_cpu_forward.py --save-model "$model_dir" --repeats 1 --warmup 0 >/dev/null
fi
printf "%-18s %8s %14s %14s %8s %12s\n" sweep cells tl_seconds glassbox_s speedup "first cell"
for kind in resid_pre head_out_all_pos; do
  tl=$("$python" bench/tl_patching.py --model-dir "$model_dir" --kind "$kind" --threads "$threads" | tail -n 1)
  ours=$("$build/bench/patching_bench" --model "$model_dir" --kind "$kind" | tail -n 1)
  "$python" - "$tl" "$ours" <<'PY'
import json, sys
tl, ours = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{ours['kind']:<18} {ours['cells']:>8} {tl['seconds']:>14.2f} {ours['seconds']:>14.2f} "
      f"{tl['seconds'] / ours['seconds']:>7.1f}x  {tl['first']:.4f} vs {ours['first']:.4f}")
PY
done
