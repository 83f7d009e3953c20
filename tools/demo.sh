#!/usr/bin/env bash
# The README's main-job command: builds glassboxd and the glassbox CLI, starts the server on the
# demo model the repository ships (models/demo, a 4-layer GPT-2 trained on a synthetic corpus:
# models/demo/README.md), and runs client analyses against it over gRPC on loopback: the CLI's
# logit lens on an IOI sentence, then examples/induction_heads.py with the Python client (its
# induction heads, their attention pattern, and what ablating them does).
# MODEL_DIR overrides the model directory.
set -euo pipefail
cd "$(dirname "$0")/.."
model_dir="${MODEL_DIR:-models/demo}"

bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build glassboxd glassbox >/dev/null

# The Python client, in a virtualenv of its own (pip fetches grpcio, protobuf and numpy).
venv=build/demo-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pip>=21.3"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ./client/python

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
prompt="When Mary and John went to the store, John gave a drink to"
echo; echo "\$ glassbox tokenize demo '$prompt'"
glassbox tokenize demo "$prompt"
echo; echo "\$ glassbox logit-lens --model demo --text '$prompt' --top_k 3"
glassbox logit-lens --model demo --text "$prompt" --top_k 3

echo; echo "\$ python examples/induction_heads.py $address"
"$venv/bin/python" examples/induction_heads.py "$address"
