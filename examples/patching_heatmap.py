#!/usr/bin/env python3
"""Run an activation-patching sweep on the server and draw it as a heatmap PNG.

The clean prompt is a random token sequence; the corrupted prompt is the same sequence with one
token replaced. The metric is the logit difference, at the last position, between the clean
run's top prediction and the corrupted run's (transformer_lens.patching's usual setup). The
server runs the whole sweep as a few batched forward passes; each cell says how much patching
that one clean activation into the corrupted run restores the clean answer (normalised: 0 =
corrupted, 1 = clean).

From the repository root, with glassboxd built (`ninja -C build glassboxd`) and serving the
fixture models:

    build/server/service/glassboxd --model tiny-gpt2=tests/fixtures/models/tiny-gpt2 \
        --model tiny-llama=tests/fixtures/models/tiny-llama --listen 127.0.0.1:50051 --device cpu &
    pip install ./client/python          # plus `pip install matplotlib` for the PNG
    python examples/patching_heatmap.py 127.0.0.1:50051 --model tiny-gpt2 --kind resid_pre --out resid_pre.png
    python examples/patching_heatmap.py 127.0.0.1:50051 --model tiny-llama --kind head_out_by_pos --out heads.png

Without matplotlib the matrix is printed instead. Kinds: resid_pre, resid_mid, resid_post,
attn_out, mlp_out ([layer, pos]); head_out_all_pos, q_all_pos, k_all_pos, v_all_pos,
pattern_all_pos ([layer, head]); head_out_by_pos ([layer, pos, head]: one panel per layer).
"""

from __future__ import annotations

import argparse
import sys
from typing import List

import numpy as np

import glassbox
from glassbox import LogitDiff


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="glassboxd address, host:port")
    parser.add_argument("--model", help="model name (default: the server's first model)")
    parser.add_argument("--kind", default="resid_pre", help="sweep kind (default resid_pre)")
    parser.add_argument("--length", type=int, default=8, help="prompt length in tokens")
    parser.add_argument("--corrupt", type=int, default=2, help="position of the token replaced")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true", help="plot the raw metric, not the normalised effect")
    parser.add_argument("--out", default="patching.png", help="PNG to write (needs matplotlib)")
    parser.add_argument("--api-key", help="API key, if the server wants one")
    return parser.parse_args(argv)


def print_matrix(values: np.ndarray, dims: List[str]) -> None:
    if values.ndim == 3:  # [layer, pos, head]
        for layer, panel in enumerate(values):
            print(f"layer {layer}:")
            print_matrix(panel, dims[1:])
        return
    rows, cols = dims[0], dims[1]
    print(f"{rows} \\ {cols}: " + " ".join(f"{c:>7}" for c in range(values.shape[1])))
    for r, row in enumerate(values):
        print(f"{r:>{len(rows) + len(cols) + 4}}: " + " ".join(f"{v:7.3f}" for v in row))


def draw(values: np.ndarray, dims: List[str], title: str, labels: List[str], out: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = list(values) if values.ndim == 3 else [values]
    fig, axes = plt.subplots(1, len(panels), figsize=(1 + 4 * len(panels), 3.5), squeeze=False)
    limit = float(np.abs(values).max()) or 1.0
    for i, (ax, panel) in enumerate(zip(axes[0], panels)):
        image = ax.imshow(panel, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        row_dim, col_dim = dims[-2], dims[-1]
        ax.set_xlabel(col_dim)
        ax.set_ylabel(row_dim)
        ax.set_yticks(range(panel.shape[0]))
        ax.set_yticklabels(labels if row_dim == "pos" else range(panel.shape[0]), fontsize=7)
        ax.set_xticks(range(panel.shape[1]))
        if col_dim == "pos":
            ax.set_xticklabels(labels, rotation=90, fontsize=7)
        if values.ndim == 3:
            ax.set_title(f"layer {i}")
    fig.colorbar(image, ax=axes[0].tolist())
    fig.suptitle(title, fontsize=9)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return True


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    with glassbox.connect(args.address, api_key=args.api_key, timeout=300) as client:
        model = client.model(args.model or client.models()[0].name)
        cfg = model.cfg
        print(model)
        if not 0 <= args.corrupt < args.length:
            sys.exit("--corrupt must be a position inside the prompt")
        rng = np.random.default_rng(args.seed)
        clean = rng.integers(0, cfg.d_vocab, size=(1, args.length))
        corrupted = clean.copy()
        while corrupted[0, args.corrupt] == clean[0, args.corrupt]:
            corrupted[0, args.corrupt] = rng.integers(0, cfg.d_vocab)

        # The answer tokens: what each run predicts next (the runner-up if they agree).
        clean_logits = model.run(clean, logits="last").logits[0]
        corrupted_logits = model.run(corrupted, logits="last").logits[0]
        answer = int(clean_logits.argmax())
        wrong = int(corrupted_logits.argmax())
        if wrong == answer:
            wrong = int(np.argsort(-corrupted_logits)[1])

        result = model.patching_sweep(clean, corrupted, args.kind, metric=LogitDiff(answer, wrong),
                                      normalized=not args.raw)

    print(result)
    what = "logit diff" if args.raw else "normalised effect"
    print(f"clean prompt {clean[0].tolist()}; position {args.corrupt} corrupted to {corrupted[0, args.corrupt]}")
    print(f"metric: logit[{answer}] - logit[{wrong}] at the last position; clean {result.clean_metric:.3f}, "
          f"corrupted {result.corrupted_metric:.3f}; {result.forward_passes} batched forward passes "
          f"in {result.seconds:.3f} s on the server\n")
    labels = [f"{p}:{t}" + ("*" if p == args.corrupt else "") for p, t in enumerate(clean[0].tolist())]
    title = f"{model.name}: {result.kind} patching ({what})"
    if draw(result.values, list(result.dim_names), title, labels, args.out):
        print(f"wrote {args.out}")
    else:
        print(f"matplotlib is not installed; {title}:")
        print_matrix(result.values, list(result.dim_names))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except glassbox.GlassboxError as error:  # carries the gRPC status code and the server's message
        sys.exit(f"error: {error}")
