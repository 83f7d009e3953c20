"""HF transformers' greedy generate on the same prompts, steering and threads as
bench/generate_bench.cc; prints one JSON line.

    python bench/hf_generate.py --model-dir DIR --batch 1 --prompt 16 --new 64 [--steer]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steer", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32).eval()
    vocab, d_model = model.config.vocab_size, model.config.hidden_size
    ids = torch.tensor([[1 + (17 * r + 31 * s) % (vocab - 1) for s in range(a.prompt)]
                        for r in range(a.batch)])
    if a.steer:
        direction = torch.tensor([math.sin(0.1 * i) for i in range(d_model)])
        layers = model.base_model.h if hasattr(model.base_model, "h") else model.base_model.layers
        layers[1].register_forward_pre_hook(
            lambda _m, args, kwargs: ((args[0] + 2.0 * direction, *args[1:]), kwargs), with_kwargs=True)
    best = math.inf
    with torch.inference_mode():
        for i in range(a.repeats + 1):  # the first run warms up
            start = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=a.new,
                           min_new_tokens=a.new, do_sample=False, pad_token_id=0)
            if i > 0:
                best = min(best, time.perf_counter() - start)
    print(json.dumps({"impl": "hf", "tokens_per_s": a.batch * a.new / best, "batch": a.batch}))


if __name__ == "__main__":
    main()
