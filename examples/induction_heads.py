#!/usr/bin/env python3
"""Find the induction heads of the shipped demo model, look at them, and knock them out.

1. Score every head on random tokens repeated twice (``Model.detect_heads``: induction,
   previous-token and duplicate-token scores from the captured ``hook_pattern``s).
2. Draw the best induction head's attention pattern: the stripe one step right of the
   diagonal of the earlier copy is induction (attend to the token after the last time the
   current token appeared).
3. Zero the induction heads' ``hook_z`` and compare the loss on each copy with a control that
   zeroes as many other heads, and with zeroing layer 0 (whose previous-token heads build the
   induction heads' keys: K-composition).
4. Show the model's next-token guesses on an IOI sentence, a sequence and a fact.

From the repository root (tools/demo.sh does all of this):

    build/server/service/glassboxd --model demo=models/demo --listen 127.0.0.1:50051 &
    pip install ./client/python
    python examples/induction_heads.py 127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Sequence

import numpy as np

import glassbox
from glassbox import zero_heads

SHADES = " .:-=+*#%@"


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="glassboxd address, host:port")
    parser.add_argument("--model", default="demo", help="model name (default: demo)")
    parser.add_argument("--half-length", type=int, default=20, help="n: random tokens repeated once")
    parser.add_argument("--threshold", type=float, default=0.4, help="induction score of an induction head")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def print_scores(title: str, scores: np.ndarray) -> None:
    n_layers, n_heads = scores.shape
    print(f"{title} (rows: layers, columns: heads)")
    print("       " + "".join(f"   H{h}" for h in range(n_heads)))
    for layer in range(n_layers):
        print(f"  L{layer}   " + "".join(f"{scores[layer, h]:5.2f} " for h in range(n_heads)))


def draw_pattern(pattern: np.ndarray, labels: Sequence[str]) -> None:
    """One row per query, one character per key: darker = more attention."""
    for query, row in enumerate(pattern):
        cells = "".join(SHADES[min(int(w * len(SHADES)), len(SHADES) - 1)] for w in row[: query + 1])
        print(f"  {labels[query]!r:>14} |{cells}")


def show_completions(model: glassbox.Model, prompts: Sequence[str]) -> None:
    result = model.run(list(prompts), logits="last")
    for prompt, logits in zip(prompts, result.logits):
        log_probs = logits - np.logaddexp.reduce(logits)
        best = np.argsort(-log_probs)[:3]
        guesses = ", ".join(f"{model.to_string([int(t)])!r} {np.exp(log_probs[t]):.2f}" for t in best)
        print(f"  {prompt!r}\n      -> {guesses}")


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    with glassbox.connect(args.address, timeout=300) as client:
        model = client.model(args.model)
        cfg = model.cfg
        n = args.half_length
        print(f"{model.name}: {cfg.architecture}, {cfg.n_layers} layers x {cfg.n_heads} heads, "
              f"d_model {cfg.d_model}, vocabulary {cfg.d_vocab}\n")

        clean = model.detect_heads(n=n, batch=16, seed=args.seed)
        print(f"1. Head scores on BOS + {n} random tokens + the same {n} again (16 draws)\n")
        print_scores("induction score: attention from i to i-n+1 in the second copy", clean.induction)
        print()
        print_scores("previous-token score: attention from i to i-1", clean.previous_token)
        (layer, head, score), = clean.top("induction", k=1)

        print(f"\n2. L{layer}H{head}'s attention on one draw (induction score {score:.2f}); "
              f"rows are queries, columns keys\n")
        p = clean.prefix_length
        half = clean.tokens[0, p:p + 10]  # 10 + 10 tokens keep the picture small
        tokens = np.concatenate([clean.tokens[0, :p], half, half])[None, :]
        run = model.run(tokens, captures=f"blocks.{layer}.attn.hook_pattern", logits="none")
        labels = model.to_str_tokens(tokens[0])
        draw_pattern(run.cache[f"blocks.{layer}.attn.hook_pattern"][0, head], labels)

        induction = [(l, h) for l, h, _ in clean.above(args.threshold)]
        others = [(l, h) for l, h, _ in reversed(clean.top("induction", k=None)) if l > 0][: len(induction)]
        print(f"\n3. Loss per token (nats) on tokens 2..{n} of each copy, the share of the gap between"
              f"\n   them that an ablation takes away, and the best induction score left\n")
        print(f"  {'':44} {'first copy':>10} {'second copy':>12} {'gap gone':>9} {'best score':>10}")
        print(f"  {'clean':44} {clean.loss_first:10.3f} {clean.loss_second:12.3f} {'':9} "
              f"{clean.induction.max():10.2f}")
        layer0 = [(0, h) for h in range(cfg.n_heads)]
        for title, heads in (("induction heads " + " ".join(f"L{l}H{h}" for l, h in induction), induction),
                             ("control: " + " ".join(f"L{l}H{h}" for l, h in others), others),
                             ("layer 0, which the induction heads read", layer0)):
            ablated = model.detect_heads(n=n, batch=16, seed=args.seed, interventions=zero_heads(heads))
            closed = (ablated.loss_second - clean.loss_second) / (clean.loss_first - clean.loss_second)
            print(f"  zero {title:39} {ablated.loss_first:10.3f} {ablated.loss_second:12.3f}"
                  f" {closed:9.0%} {ablated.induction.max():10.2f}")
        print("\n  (zeroing a head's hook_z leaves its own attention pattern as it was; zeroing"
              "\n  layer 0 changes where the induction heads look)")

        print("\n4. Next-token guesses\n")
        show_completions(model, [
            "When Mary and John went to the store, John gave a drink to",
            "After Tom and Lisa went to the park, Lisa handed a book to",
            "Count the months: October November December",
            "10 15 20 25",
            "The opposite of big is",
            "The capital of France is",  # a sentence form never trained for France
        ])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except glassbox.GlassboxError as error:  # carries the gRPC status code and the server's message
        sys.exit(f"error: {error}")
