"""sae_lens encode throughput (tokens/s) on the CPU, the counterpart of sae_encode_bench.cc.

Same shapes and weight distribution as the C++ benchmark (uniform weights giving unit-variance
pre-activations, b_enc around -0.5); times SAE.encode(x) under torch.inference_mode after one
warm-up call. Prints one JSON line. Inputs are uniform with unit variance.

    /work/venv-sae/bin/python bench/sae/sae_lens_encode_bench.py --d_in 768 --d_sae 24576
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def build(arch: str, d_in: int, d_sae: int, k: int):
    import sae_lens
    from sae_lens import (GatedSAE, GatedSAEConfig, JumpReLUSAE, JumpReLUSAEConfig, StandardSAE,
                          StandardSAEConfig, TopKSAE, TopKSAEConfig)
    classes = {"standard": (StandardSAE, StandardSAEConfig), "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
               "gated": (GatedSAE, GatedSAEConfig), "topk": (TopKSAE, TopKSAEConfig)}
    sae_cls, cfg_cls = classes[arch]
    kw = {"k": k} if arch == "topk" else {}
    sae = sae_cls(cfg_cls(d_in=d_in, d_sae=d_sae, **kw))
    scale = (3.0 / d_in) ** 0.5
    with torch.no_grad():
        sae.W_enc.uniform_(-scale, scale)
        sae.W_dec.uniform_(-scale, scale)
        sae.b_dec.uniform_(-0.1, 0.1)
        for name in ("b_enc", "b_gate"):
            if isinstance(getattr(sae, name, None), torch.nn.Parameter):
                getattr(sae, name).uniform_(-0.6, -0.4)
        if arch == "jumprelu":
            sae.threshold.uniform_(1.3, 1.7)
    return sae, sae_lens.__version__


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d_in", type=int, default=768)
    ap.add_argument("--d_sae", type=int, default=24576)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--architecture", default="standard")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--min_seconds", type=float, default=3.0)
    ap.add_argument("--min_iters", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sae, version = build(args.architecture, args.d_in, args.d_sae, args.k)
    x = (torch.rand(args.tokens, args.d_in) * 2 - 1) * 3.0**0.5  # unit variance, as the C++ side
    with torch.inference_mode():
        acts = sae.encode(x)  # warm-up
        features = float((acts != 0).sum()) / args.tokens
        del acts
        iters, seconds = 0, 0.0
        cpu_start = time.process_time()
        while iters < args.min_iters or seconds < args.min_seconds:
            start = time.perf_counter()
            sae.encode(x)
            seconds += time.perf_counter() - start
            iters += 1
        cpu = time.process_time() - cpu_start
    print(json.dumps({
        "impl": "sae_lens", "mode": "dense", "architecture": args.architecture, "d_in": args.d_in,
        "d_sae": args.d_sae, "tokens": args.tokens, "iters": iters,
        "seconds_per_call": round(seconds / iters, 4), "tokens_per_s": round(args.tokens * iters / seconds, 1),
        "tokens_per_cpu_s": round(args.tokens * iters / cpu, 1),
        "features_per_token": round(features, 1), "threads": torch.get_num_threads(),
        "sae_lens": version, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
