"""Baseline: HF transformers + PyTorch forward pass on the CPU, fp32.

The comparison point for Glassbox's CPU backend: the same model, batch and sequence length run
through `transformers` the way a researcher would, optionally with forward hooks that capture
every block's output (the residual stream) into a Python list.

By default the model is a GPT-2-small-shaped random model built from GPT2Config() (12 layers,
d_model 768, 12 heads, vocab 50257, n_positions 1024); no download. --model-dir loads any HF
causal-LM directory instead. --save-model DIR writes the random model with
save_pretrained(safe_serialization=True) first, so a C++ benchmark can load identical weights.

Each forward is the full causal LM (all blocks + final norm + logits for every position),
use_cache=False, under torch.inference_mode(). Prints one JSON line, e.g.

  {"impl": "torch", "tokens_per_s": 1234.5, "batch": 1, "seq": 128, "threads": 2, "torch": "2.x", ...}

Usage (needs torch + transformers, e.g. the reference venv):

  /work/venv-ref/bin/python bench/torch_cpu_forward.py --threads 2 --batch 1 --seq 128
  /work/venv-ref/bin/python bench/torch_cpu_forward.py --capture-resid
  /work/venv-ref/bin/python bench/torch_cpu_forward.py --save-model /tmp/gpt2-random
  /work/venv-ref/bin/python bench/torch_cpu_forward.py --model-dir /tmp/gpt2-random
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", help="HF model directory to load (default: random GPT-2 small)")
    p.add_argument("--save-model", metavar="DIR", help="write the random model here (safetensors), then benchmark it")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads (default: all cores)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3, help="untimed forward passes")
    p.add_argument("--repeats", type=int, default=10, help="timed forward passes")
    p.add_argument("--capture-resid", action="store_true", help="forward hooks keep every block output in a list")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def block_list(model):
    """The ModuleList of transformer blocks (GPT-2 .h, Llama .layers, NeoX .layers, ...)."""
    import torch

    base = model.base_model
    for name in ("h", "layers", "blocks"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    for m in base.children():
        if isinstance(m, torch.nn.ModuleList):
            return m
    raise RuntimeError(f"cannot find the block list of {type(model).__name__}")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    if args.model_dir:
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
        model_name = os.path.basename(os.path.normpath(args.model_dir))
    else:
        model = GPT2LMHeadModel(GPT2Config())
        model_name = "gpt2-small-random"
        if args.save_model:
            model.save_pretrained(args.save_model, safe_serialization=True)
            print(f"saved random model to {args.save_model}", file=sys.stderr)
    model = model.float().eval()
    if args.seq > getattr(model.config, "max_position_embeddings", args.seq):
        print(f"--seq {args.seq} exceeds the model's context", file=sys.stderr)
        return 2

    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=gen)

    captured: list = []
    handles = []
    if args.capture_resid:
        def keep(_module, _inputs, output):
            captured.append(output[0] if isinstance(output, tuple) else output)

        handles = [b.register_forward_hook(keep) for b in block_list(model)]

    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            captured.clear()
            t0 = time.perf_counter()
            logits = model(input_ids=ids, use_cache=False).logits
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)
    for h in handles:
        h.remove()
    assert logits.shape == (args.batch, args.seq, model.config.vocab_size)
    if args.capture_resid:
        assert len(captured) == len(block_list(model))

    total = sum(times)
    print(
        json.dumps(
            {
                "impl": "torch",
                "tokens_per_s": round(args.batch * args.seq * len(times) / total, 2),
                "batch": args.batch,
                "seq": args.seq,
                "threads": args.threads,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "model": model_name,
                "capture_resid": args.capture_resid,
                "repeats": args.repeats,
                "ms_per_forward_median": round(1000 * statistics.median(times), 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
