#!/usr/bin/env bash
# Greedy decode tokens/s: Glassbox's Generate (KV cache; and recomputing, for reference) beside
# HF transformers' generate, on the same CPU, threads, weights and prompts, from one run: the
# demo model and a random GPT-2-small shape, batch 1 and 8, plain and steered (a direction added
# to blocks.1.hook_resid_pre at every step). Needs a Python with torch + transformers (PYTHON,
# default the reference venv of tests/reference) and a built tree (BUILD, default build/).
#
#   bash bench/generate.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-/work/venv-ref/bin/python}"
build="${BUILD:-build}"
threads="${1:-$(nproc)}"
small_dir="$build/bench-gpt2-small"
export OMP_NUM_THREADS="$threads"

ninja -C "$build" generate_bench >/dev/null
if [ ! -f "$small_dir/model.safetensors" ]; then
  "$python" bench/torch_cpu_forward.py --save-model "$small_dir" --repeats 1 --warmup 0 >/dev/null
fi
printf "%-12s %-6s %-8s %12s %14s %16s %8s\n" model batch steered hf_tok/s glassbox_tok/s \
  no_cache_tok/s ratio
for model in "demo models/demo" "gpt2-small $small_dir"; do
  set -- $model
  name=$1 dir=$2
  for batch in 1 8; do
    for steer in "" "--steer"; do
      hf=$("$python" bench/hf_generate.py --model-dir "$dir" --threads "$threads" --batch "$batch" \
             --prompt 16 --new 64 $steer | tail -n 1)
      ours=$("$build/bench/generate_bench" --model "$dir" --batch "$batch" --prompt 16 \
               --new_tokens 64 $steer | tail -n 1)
      plain=$("$build/bench/generate_bench" --model "$dir" --batch "$batch" --prompt 16 \
                --new_tokens 64 --repeats 1 --no_cache $steer | tail -n 1)
      "$python" - "$hf" "$ours" "$plain" "$name" "$batch" "${steer:+yes}" <<'PY'
import json, sys
hf, ours, plain = (json.loads(x) for x in sys.argv[1:4])
print(f"{sys.argv[4]:<12} {sys.argv[5]:<6} {sys.argv[6] or 'no':<8} {hf['tokens_per_s']:>12.1f} "
      f"{ours['tokens_per_s']:>14.1f} {plain['tokens_per_s']:>16.1f} "
      f"{ours['tokens_per_s'] / hf['tokens_per_s']:>7.2f}x")
PY
    done
  done
done
