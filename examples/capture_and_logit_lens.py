#!/usr/bin/env python3
"""Capture the residual stream at every layer and watch it turn into the next-token prediction.

Runs against the repository's fixture models (they have no tokenizer, so the prompt is token
ids). From the repository root, with glassboxd built (`ninja -C build glassboxd`):

    build/server/service/glassboxd --model tiny-gpt2=tests/fixtures/models/tiny-gpt2 \
        --model tiny-llama=tests/fixtures/models/tiny-llama --listen 127.0.0.1:50051 --device cpu &
    pip install ./client/python
    python examples/capture_and_logit_lens.py 127.0.0.1:50051 --model tiny-llama
    python examples/capture_and_logit_lens.py 127.0.0.1:50051 --model tiny-gpt2 --tokens 5,17,42,7

With a model that has a tokenizer, pass --text "The Eiffel Tower is in the city of".

For the last token of the prompt it prints, per layer, the norm of blocks.{l}.hook_resid_post,
how much that layer changed the residual, and the cosine similarity with the final residual
(what ln_final normalizes); then ln_final's scale and the model's top-k next tokens.

Then the logit lens proper, computed on the server next to the weights (``model.logit_lens``):
the residual before each block and after the last, each through a freshly computed ln_final and
the unembedding W_U, with each layer's top tokens and the log-prob it gives the model's final
prediction.
"""

from __future__ import annotations

import argparse
import sys
from typing import List

import numpy as np

import glassbox
from glassbox import Capture


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="glassboxd address, host:port")
    parser.add_argument("--model", help="model name (default: the server's first model)")
    parser.add_argument("--text", help="prompt text (needs a model with a tokenizer)")
    parser.add_argument("--tokens", help="prompt as comma-separated token ids")
    parser.add_argument("--top-k", type=int, default=5, help="how many next tokens to show")
    parser.add_argument("--api-key", help="API key, if the server wants one")
    return parser.parse_args(argv)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    with glassbox.connect(args.address, api_key=args.api_key, timeout=300) as client:
        name = args.model or client.models()[0].name
        model = client.model(name)
        print(model)

        if args.tokens:
            prompt = [int(t) for t in args.tokens.split(",")]
        elif args.text or model.info.has_tokenizer:
            prompt = args.text or "The Eiffel Tower is in the city of"
        else:  # a fixed, arbitrary prompt for models without a tokenizer
            prompt = np.random.default_rng(0).integers(0, model.info.d_vocab, size=8).tolist()

        # Only the last position matters here: select it on the server, so each layer sends
        # d_model floats instead of pos * d_model.
        result = model.run(
            [prompt] if isinstance(prompt, list) else prompt,
            captures=[
                Capture("blocks.*.hook_resid_post", positions=-1),
                Capture("ln_final.hook_scale", positions=-1),
            ],
            logits="last",
        )
        final_top = int(np.argmax(result.logits[0]))
        lens = model.logit_lens(
            [prompt] if isinstance(prompt, list) else prompt, top_k=3, target_tokens=[final_top]
        )

    tokens = result.tokens[0]
    if model.info.has_tokenizer:
        print("prompt:", model.to_str_tokens(tokens))
    print(f"prompt: {len(tokens)} tokens, ids {tokens.tolist()}")

    resid = [result.cache["resid_post", layer][0, 0] for layer in range(model.info.n_layers)]
    final = resid[-1]
    print(f"\n{'layer':>5} {'|resid_post|':>13} {'|change|/|prev|':>16} {'cos(final)':>11}")
    previous = None
    for layer, r in enumerate(resid):
        change = "" if previous is None else f"{np.linalg.norm(r - previous) / np.linalg.norm(previous):16.3f}"
        print(f"{layer:>5} {np.linalg.norm(r):13.3f} {change:>16} {cosine(r, final):11.3f}")
        previous = r
    print(f"ln_final.hook_scale at the last token: {result.cache['ln_final.hook_scale'][0, 0, 0]:.4f}")

    logits = result.logits[0]  # [vocab], at the last real token
    log_probs = logits - logits.max()
    log_probs = log_probs - np.log(np.exp(log_probs).sum())
    top = np.argsort(-logits)[: args.top_k]
    labels = model.to_str_tokens(top) if model.info.has_tokenizer else [str(t) for t in top]
    print(f"\ntop {args.top_k} next tokens:")
    for token, label in zip(top, labels):
        print(f"  {label!r:>12}  id {token:>6}  logit {logits[token]:8.3f}  p {np.exp(log_probs[token]):.4f}")
    # lens.top_tokens: [layer, batch, pos, k]; the last position of the one row.
    last = len(tokens) - 1
    print(f"\nlogit lens at the last token (log p of the final top token {final_top}):")
    for i, label in enumerate(lens.labels):
        top = lens.top_tokens[i, 0, last].tolist()
        shown = model.to_str_tokens(np.asarray(top)) if model.info.has_tokenizer else top
        print(f"  {label:>10}  top {str(shown):<28} log p(final) {lens.target_log_probs[i, 0, last, 0]:8.3f}")
    print(f"\nserver: forward {result.timings.forward_seconds * 1e3:.1f} ms, {result.bytes_sent} bytes streamed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except glassbox.GlassboxError as error:  # carries the gRPC status code and the server's message
        sys.exit(f"error: {error}")
