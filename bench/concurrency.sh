#!/usr/bin/env bash
# 64 concurrent clients of small Runs (24 tokens, four resid captures, last-position logits)
# against glassboxd with the scheduler's dynamic batching, beside the same server running every
# request alone (--max_batch_tokens 0), from one run; then one client alone, whose p50 overhead
# is what the service adds to the forward pass. forward_ms is the server's own forward time per
# pass at p50 (Timings.forward_seconds); compare it with forward_bench at the same rows. On the
# demo model and, when PYTHON has torch and transformers to write it, a random GPT-2-small.
#
#   bash bench/concurrency.sh [clients] [requests per client]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
python="${PYTHON:-/work/venv-ref/bin/python}"
clients="${1:-64}"
requests="${2:-20}"
gpt2_dir="${GPT2_DIR:-$build/bench-gpt2-small}"
ninja -C "$build" glassboxd concurrency_bench >/dev/null

models=("demo=models/demo")
if [ -f "$gpt2_dir/model.safetensors" ] || "$python" -c "import torch, transformers" 2>/dev/null; then
  [ -f "$gpt2_dir/model.safetensors" ] ||
    "$python" bench/torch_cpu_forward.py --save-model "$gpt2_dir" --repeats 1 --warmup 0 >/dev/null
  models+=("gpt2-small=$gpt2_dir")
else
  echo "(no GPT-2-small: $python lacks torch/transformers to write one)"
fi

serve() {  # serve MODEL=DIR FLAGS...: starts glassboxd, sets $address and $server_pid
  log=$(mktemp)
  "$build/server/service/glassboxd" --model "$1" --listen 127.0.0.1:0 --device cpu "${@:2}" 2>"$log" &
  server_pid=$!
  for _ in $(seq 300); do
    grep -q "listening on" "$log" && break
    kill -0 $server_pid 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
  done
  address=$(sed -n 's/^glassboxd: listening on //p' "$log")
  rm -f "$log"
}
stop() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; }

printf "%-11s %-8s %7s %10s %9s %9s %10s %12s %12s\n" model mode clients req/s p50_ms p99_ms mean_batch forward_ms overhead_ms
for spec in "${models[@]}"; do
  name="${spec%%=*}"
  declare -A rps=()
  for mode in batched alone single; do
    flags=(); n="$clients"
    [ "$mode" = alone ] && flags=(--max_batch_tokens 0)
    [ "$mode" = single ] && n=1
    serve "$spec" "${flags[@]}"
    result=$("$build/bench/concurrency_bench" --target "$address" --model "$name" --clients "$n" \
               --requests "$([ "$mode" = single ] && echo 200 || echo "$requests")")
    stop
    rps[$mode]=$(echo "$result" | sed -n 's/.*"requests_per_s": \([0-9.]*\).*/\1/p')
    echo "$result" | sed 's/[{}",]//g' | awk -v m="$name" -v mode="$mode" '{
      for (i = 1; i < NF; i += 2) v[$i] = $(i + 1)
      printf "%-11s %-8s %7s %10s %9s %9s %10s %12s %12s\n", m, mode, v["clients:"], v["requests_per_s:"],
             v["p50_ms:"], v["p99_ms:"], v["mean_batch:"], v["forward_p50_ms:"], v["overhead_p50_ms:"] }'
  done
  awk -v a="${rps[batched]}" -v b="${rps[alone]}" -v m="$name" \
    'BEGIN { printf "%-11s batched / alone throughput: %.2fx\n", m, a / b }'
done
