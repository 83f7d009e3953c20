#!/usr/bin/env bash
# Peak memory of loading a sharded bf16 checkpoint of ~1.1B parameters (TinyLlama's shape,
# random weights written by transformers) into f32 on the CPU: Glassbox's load_bench beside
# transformers' AutoModelForCausalLM.from_pretrained(dtype=float32), each in a fresh process,
# from one run. Needs the reference venv (PYTHON, default /work/venv-ref/bin/python), a built
# tree (BUILD, default build/) and ~8 GB of memory; the checkpoint (2.2 GB) is written once
# under MODEL_DIR (default $BUILD/bench-llama-1b-bf16).
#
#   bash bench/load_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-/work/venv-ref/bin/python}"
build="${BUILD:-build}"
model_dir="${MODEL_DIR:-$build/bench-llama-1b-bf16}"

ninja -C "$build" load_bench >/dev/null
[ -f "$model_dir/model.safetensors.index.json" ] || "$python" bench/hf_load.py --write "$model_dir"
ours=$("$build/bench/load_bench" --model "$model_dir" | tail -n 1)
theirs=$("$python" bench/hf_load.py --load "$model_dir" 2>/dev/null | tail -n 1)
"$python" - "$ours" "$theirs" <<'PY'
import json, sys
rows = [("glassbox", json.loads(sys.argv[1])), ("transformers", json.loads(sys.argv[2]))]
gib = 1 << 30
print(f"{'':<14}{'weights GiB':>12}{'RSS before':>12}{'peak RSS':>10}{'after':>8}"
      f"{'peak/weights':>14}{'growth/weights':>16}{'seconds':>9}")
for name, r in rows:
    print(f"{name:<14}{r['weights_bytes'] / gib:>12.2f}{r['rss_before'] / gib:>12.2f}"
          f"{r['peak_rss'] / gib:>10.2f}{r['rss_after'] / gib:>8.2f}{r['peak_over_weights']:>14.3f}"
          f"{r['peak_growth_over_weights']:>16.3f}{r['load_seconds']:>9.2f}")
ours, theirs = rows[0][1], rows[1][1]
print(f"peak RSS glassbox / transformers: {ours['peak_rss'] / theirs['peak_rss']:.2f}x "
      f"(target: glassbox peak within 1.2x of its resident weights: "
      f"{'met' if ours['peak_over_weights'] <= 1.2 else 'NOT met'})")
PY
