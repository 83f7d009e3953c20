#!/usr/bin/env bash
# The README's main-job command. Until the gRPC service lands (issue 4) it runs the engine
# directly: builds glassbox-inspect and runs a hooked forward pass of the small GPT-2 checkpoint
# the repository ships (tests/fixtures/models/tiny-gpt2, random weights), capturing the residual
# stream and layer 0's attention pattern, and writing them to build/demo-captures.safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build glassbox-inspect >/dev/null
build/server/tools/glassbox-inspect \
  --model tests/fixtures/models/tiny-gpt2 \
  --tokens 17,42,99,5,17,42,99 \
  --capture 'blocks.*.hook_resid_post,blocks.0.attn.hook_pattern' \
  --out build/demo-captures.safetensors
