#!/usr/bin/env python3
"""Zero-ablate each attention head of one layer and print how much the loss changes.

The input is a random token sequence repeated twice (the standard probe for induction heads:
on the second half a model that copies can predict every token). All heads are ablated in ONE
forward pass: the batch holds the clean sequence in row 0 and one copy per head, and row h+1
carries ``Zero("blocks.{layer}.attn.hook_z", heads=h, rows=h+1)``.

From the repository root, with glassboxd built (`ninja -C build glassboxd`) and serving the
fixture models (they have no tokenizer, so the sequence is random token ids):

    build/server/service/glassboxd --model tiny-gpt2=tests/fixtures/models/tiny-gpt2 \
        --model tiny-llama=tests/fixtures/models/tiny-llama --listen 127.0.0.1:50051 --device cpu &
    pip install ./client/python
    python examples/head_ablation.py 127.0.0.1:50051 --model tiny-gpt2 --layer 1
    python examples/head_ablation.py 127.0.0.1:50051 --model tiny-llama --layer 0 --half-length 12

On the fixture models (random weights) the changes are what random heads give; on GPT-2 small,
layer 5's induction heads show large losses on the repeated half.
"""

from __future__ import annotations

import argparse
import sys
from typing import List

import numpy as np

import glassbox
from glassbox import Zero


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="glassboxd address, host:port")
    parser.add_argument("--model", help="model name (default: the server's first model)")
    parser.add_argument("--layer", type=int, default=0, help="the layer whose heads are ablated")
    parser.add_argument("--half-length", type=int, default=10, help="length n of the sequence repeated (2n tokens)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", help="API key, if the server wants one")
    return parser.parse_args(argv)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    with glassbox.connect(args.address, api_key=args.api_key, timeout=300) as client:
        model = client.model(args.model or client.models()[0].name)
        cfg = model.cfg
        print(model)
        if not 0 <= args.layer < cfg.n_layers:
            sys.exit(f"--layer must be in [0, {cfg.n_layers})")

        n = args.half_length
        half = np.random.default_rng(args.seed).integers(0, cfg.d_vocab, size=n)
        sequence = np.concatenate([half, half])  # [2n]
        batch = np.tile(sequence, (cfg.n_heads + 1, 1))  # row 0 clean, row h+1 without head h
        hook = f"blocks.{args.layer}.attn.hook_z"
        ablations = [Zero(hook, heads=h, rows=h + 1) for h in range(cfg.n_heads)]
        result = model.run(batch, interventions=ablations, logits="none", loss_per_token=True)

    loss = result.loss_per_token.astype(np.float64)  # [rows, 2n - 1]: loss of token t+1 at t
    whole = loss.mean(1)
    # Predictions of tokens n+1 .. 2n-1, each of which already appeared n tokens earlier.
    repeated = loss[:, n:].mean(1)
    print(f"\nsequence of {2 * n} tokens (a random half repeated), layer {args.layer}, "
          f"{cfg.n_heads} heads ablated in one forward pass of {len(batch)} rows "
          f"({result.timings.forward_seconds * 1e3:.1f} ms on the server)")
    print(f"clean loss: {whole[0]:.4f} (repeated half: {repeated[0]:.4f})\n")
    print(f"{'head':<6} {'loss':>9} {'change':>9} {'change on repeated half':>24}")
    for h in range(cfg.n_heads):
        label = f"L{args.layer}H{h}"
        print(f"{label:<6} {whole[h + 1]:9.4f} {whole[h + 1] - whole[0]:+9.4f} "
              f"{repeated[h + 1] - repeated[0]:+24.4f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except glassbox.GlassboxError as error:  # carries the gRPC status code and the server's message
        sys.exit(f"error: {error}")
