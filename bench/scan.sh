#!/usr/bin/env bash
# Dataset-scan throughput, from one run on one CPU: Glassbox's scan jobs (glassboxd, both passes,
# every statistic and record) beside SAEDashboard for SAE features and a TransformerLens neuron
# scan, on the same GPT-2-small-shaped random model, random SAE (width 16,384 at
# blocks.5.hook_resid_post) and corpus of random contexts of 128 tokens.
#
#   bash bench/scan.sh [threads]
#
# Env: BUILD (build/), CONTEXTS (64), PEER_FEATURES (256: SAEDashboard runs the model once per
# 128 features, so all 16,384 would take hours on a CPU; compare target-tokens/s),
# PYTHON_REF (/work/venv-ref/bin/python, tests/reference/requirements.txt: writes the inputs),
# PYTHON_CLIENT (client/python/.venv/bin/python, the glassbox package), PYTHON_PEER
# (/work/venv-dash/bin/python). SAEDashboard 0.8 needs transformer_lens 2 and transformers 4, so
# its venv layers those over the reference venv:
#   python3 -m venv /work/venv-dash
#   echo /work/venv-ref/lib/python3.11/site-packages > /work/venv-dash/lib/python3.11/site-packages/zz_ref.pth
#   /work/venv-dash/bin/pip install sae-dashboard "transformer-lens<3" "transformers<5" "numpy<2" "pyarrow<17"
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"
build="${BUILD:-build}"
contexts="${CONTEXTS:-64}"
peer_features="${PEER_FEATURES:-256}"
python_ref="${PYTHON_REF:-/work/venv-ref/bin/python}"
python_client="${PYTHON_CLIENT:-client/python/.venv/bin/python}"
python_peer="${PYTHON_PEER:-/work/venv-dash/bin/python}"
model_dir="$build/bench-gpt2-small"
data="$build/bench-scan"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"

ninja -C "$build" glassboxd >/dev/null
if [ ! -f "$model_dir/model.safetensors" ]; then
  "$python_ref" bench/torch_cpu_forward.py --save-model "$model_dir" --repeats 1 --warmup 0 >/dev/null
fi
# GPT-2's tokenizer, so that records carry token strings and contexts a BOS id.
cp ../shared/data/tokenizers/gpt2/vocab.json ../shared/data/tokenizers/gpt2/merges.txt "$model_dir/"
echo '{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}' > "$model_dir/tokenizer_config.json"
"$python_ref" bench/scan/make_inputs.py --out "$data" --contexts "$contexts" >/dev/null

log=$(mktemp)
"$build/server/service/glassboxd" --model "gpt2-small=$model_dir" --sae "res5=$data/sae@gpt2-small" \
  --corpus_dir "$data/corpus" --listen 127.0.0.1:0 --device cpu --cpu_threads "$threads" \
  --request_log=false 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 120); do
  address=$(sed -n 's/^glassboxd: listening on //p' "$log")
  [ -n "$address" ] && break
  sleep 1
done
[ -n "$address" ] || { cat "$log"; exit 1; }
results=$("$python_client" bench/scan/glassbox_scan.py --address "$address")
kill "$server"; wait "$server" 2>/dev/null || true
results+=$'\n'$("$python_peer" bench/scan/peer_scan.py --model "$model_dir" --sae "$data/sae" \
  --tokens "$data/corpus/tokens.npy" --features "$peer_features" --threads "$threads" 2>/dev/null)

echo "# $(lscpu | sed -n 's/^Model name: *//p'), $threads threads, $contexts contexts x 128 tokens"
"$python_ref" - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in sys.argv[1].splitlines() if line.strip()]
print(f"{'targets':<28} {'side':<17} {'n':>6} {'seconds':>8} {'tokens/s':>9} {'target-tokens/s':>16} {'ratio':>7}")
for kind, label in (("neurons", "1000 MLP neurons, layer 5"), ("sae_features", "SAE features (d_sae 16384)")):
    ours = next(r for r in rows if r["kind"] == kind and r["side"] == "glassbox")
    peer = next(r for r in rows if r["kind"] == kind and r["side"] != "glassbox")
    for r in (peer, ours):
        ratio = r["target_tokens_per_s"] / peer["target_tokens_per_s"]
        print(f"{label:<28} {r['side']:<17} {r['targets']:>6} {r['seconds']:>8.2f} {r['tokens_per_s']:>9.0f} "
              f"{r['target_tokens_per_s']:>16.3g} {ratio:>6.1f}x")
PY
