#!/usr/bin/env bash
# Glassbox's CPU forward pass beside PyTorch's on the same random GPT-2-small weights, with the
# same thread count, from one run. Needs a Python with torch + transformers (PYTHON, default the
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
printf "%-8s %-6s %-8s %14s %14s %8s\n" batch seq capture torch_tok/s glassbox_tok/s ratio
for shape in "1 128" "4 128" "1 512"; do
  set -- $shape
  for capture in "" "--capture-resid"; do
    torch=$("$python" bench/torch_cpu_forward.py --model-dir "$model_dir" --threads "$threads" \
              --batch "$1" --seq "$2" $capture | tail -n 1)
    ours=$("$build/bench/forward_bench" --model "$model_dir" --batch "$1" --seq "$2" \
              ${capture:+--capture_resid} | tail -n 1)
    "$python" - "$torch" "$ours" "$1" "$2" "${capture:+yes}" <<'PY'
import json, sys
torch, ours = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{sys.argv[3]:<8} {sys.argv[4]:<6} {sys.argv[5] or 'no':<8} {torch['tokens_per_s']:>14.1f} "
      f"{ours['tokens_per_s']:>14.1f} {ours['tokens_per_s'] / torch['tokens_per_s']:>7.2f}x")
PY
  done
done
