#!/usr/bin/env bash
# Attribution patching beside the exact batched patching sweep (time ratio, Spearman correlation
# of the two normalised maps) over all heads and over all residual positions, and one forward +
# backward pass beside torch's on the same CPU, weights, tokens and threads, in one run: on a
# GPT-2-small-shaped random model and on the demo model. Needs the reference venv (PYTHON) with
# torch and transformers.
#
#   bash bench/attribution.sh [threads] [pairs] [seq]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-/work/venv-ref/bin/python}"
build="${BUILD:-build}"
threads="${1:-$(nproc)}"
pairs="${2:-2}"
seq="${3:-16}"
gpt2_dir="${MODEL_DIR:-$build/bench-gpt2-small}"
export OMP_NUM_THREADS="$threads"
ninja -C "$build" attribution_bench >/dev/null
if [ ! -f "$gpt2_dir/model.safetensors" ]; then
  "$python" bench/torch_cpu_forward.py --save-model "$gpt2_dir" --repeats 1 --warmup 0 >/dev/null
fi
echo "threads $threads, $pairs prompt pairs of $seq tokens, metric logit[17] - logit[42] at the last position"
for model in "$gpt2_dir" models/demo; do
  ours=$("$build/bench/attribution_bench" --model "$model" --pairs "$pairs" --seq "$seq")
  torch=$("$python" bench/torch_backward.py --model-dir "$model" --threads "$threads" \
          --batch "$pairs" --seq "$seq" 2>/dev/null | tail -n 1)
  "$python" - "$model" "$ours" "$torch" <<'PY'
import json, sys
model, ours, torch = sys.argv[1], [json.loads(l) for l in sys.argv[2].splitlines()], json.loads(sys.argv[3])
print(f"\n{model}")
print(f"  {'sweep':<18} {'cells':>6} {'exact s':>9} {'AtP s':>8} {'speedup':>8} {'Spearman':>9}")
for r in ours:
    if r["what"] == "sweep":
        print(f"  {r['kind']:<18} {r['cells']:>6} {r['exact_seconds']:>9.3f} {r['atp_seconds']:>8.3f} "
              f"{r['exact_seconds'] / r['atp_seconds']:>7.1f}x {r['spearman']:>9.3f}")
b = next(r for r in ours if r["what"] == "backward")
print(f"  forward + backward (gradients at every block input): torch {torch['forward_backward_seconds'] * 1e3:.1f} ms, "
      f"glassbox {b['forward_backward_seconds'] * 1e3:.1f} ms: "
      f"{torch['forward_backward_seconds'] / b['forward_backward_seconds']:.2f}x torch")
print(f"  forward alone: torch {torch['forward_seconds'] * 1e3:.1f} ms, glassbox {b['forward_seconds'] * 1e3:.1f} ms")
PY
done
