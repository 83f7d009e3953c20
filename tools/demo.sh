#!/usr/bin/env bash
# The README's main-job command: builds glassboxd and the glassbox CLI, starts the server on a
# model the repository ships, and runs client analyses against it over gRPC on loopback.
# MODEL_DIR overrides the model directory.
set -euo pipefail
cd "$(dirname "$0")/.."
model_dir="${MODEL_DIR:-tests/fixtures/models/tiny-gpt2}"

bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build glassboxd glassbox >/dev/null

log=$(mktemp)
build/server/service/glassboxd --model "demo=$model_dir" --listen 127.0.0.1:0 --device auto 2>"$log" &
server_pid=$!
trap 'kill -TERM $server_pid 2>/dev/null; wait $server_pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$log" && break
  kill -0 $server_pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
address=$(sed -n 's/^glassboxd: listening on //p' "$log")
cat "$log"
glassbox() { build/client/cpp/glassbox --server "$address" "$@"; }

echo; echo "\$ glassbox models"
glassbox models
echo; echo "\$ glassbox run: capture the residual stream and layer 0's attention pattern"
glassbox run --model demo --tokens 17,42,99,5,17,42,99 \
  --capture 'blocks.*.hook_resid_post' --capture blocks.0.attn.hook_pattern \
  --logits last --loss --out build/demo-captures.safetensors
