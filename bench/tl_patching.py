"""transformer_lens.patching on the same weights and tokens as bench/patching_bench.cc.

Loads a HF GPT-2 directory into a HookedTransformer without weight processing (float32, CPU,
torch.set_num_threads(--threads)) and times get_act_patch_resid_pre or
get_act_patch_attn_head_out_all_pos (one forward pass per cell). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--kind", default="resid_pre", choices=["resid_pre", "head_out_all_pos"])
    p.add_argument("--pairs", type=int, default=1)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM
    import transformer_lens.patching as patching
    from make_fixtures import tl_model

    hf = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float64)
    tl = tl_model(hf).to(torch.float32)
    tl.cfg.dtype = torch.float32
    n = a.pairs * a.seq
    clean = torch.tensor([(i * 7919 + 13) % 50000 for i in range(n)]).reshape(a.pairs, a.seq)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 1) % 50000

    def metric(logits):
        return (logits[:, -1, 17] - logits[:, -1, 42]).mean()

    fn = patching.get_act_patch_resid_pre if a.kind == "resid_pre" else patching.get_act_patch_attn_head_out_all_pos
    with torch.inference_mode():
        start = time.perf_counter()
        _, cache = tl.run_with_cache(clean)
        values = fn(tl, corrupted, cache, metric)
        seconds = time.perf_counter() - start
    print(json.dumps({"impl": "transformer_lens", "kind": a.kind, "seconds": round(seconds, 3),
                      "cells": values.numel(), "first": float(values.flatten()[0]),
                      "transformer_lens": importlib.metadata.version("transformer_lens")}))


if __name__ == "__main__":
    main()
