"""Baseline: one forward + backward pass with PyTorch on the CPU, fp32, for bench/attribution.sh.

The same model directory, batch, sequence length and threads as bench/attribution_bench.cc: the
logit difference logits[:, -1, 17] - logits[:, -1, 42], summed over rows, differentiated with
respect to every block's input (HF `output_hidden_states`, each with retain_grad), with the
weights frozen (requires_grad False) so that torch, like Glassbox, computes activation gradients
only. Prints one JSON line: the median forward + backward time and the median no-grad forward
time over --repeats passes after one warm-up.

    /work/venv-ref/bin/python bench/torch_backward.py --model-dir DIR --threads 2 --batch 2 --seq 16
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    vocab = model.config.vocab_size
    # The tokens attribution_bench uses for its clean rows.
    ids = torch.tensor([(i * 7919 + 13) % vocab for i in range(args.batch * args.seq)])
    ids = ids.reshape(args.batch, args.seq)
    embed = model.get_input_embeddings()

    def forward_backward() -> None:
        inputs = embed(ids).detach().requires_grad_(True)
        out = model(inputs_embeds=inputs, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[:-1]  # each block's input (the last is after the final norm)
        for h in hidden:
            h.retain_grad()
        (out.logits[:, -1, 17] - out.logits[:, -1, 42]).sum().backward()
        assert all(h.grad is not None for h in hidden)

    def forward() -> None:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    times = {"forward_backward_seconds": [], "forward_seconds": []}
    for r in range(args.repeats + 1):  # the first is a warm-up
        for name, fn in (("forward_backward_seconds", forward_backward), ("forward_seconds", forward)):
            start = time.perf_counter()
            fn()
            if r > 0:
                times[name].append(time.perf_counter() - start)
    print(json.dumps({"impl": "torch", "torch": torch.__version__, "threads": args.threads,
                      "batch": args.batch, "seq": args.seq,
                      **{k: statistics.median(v) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
