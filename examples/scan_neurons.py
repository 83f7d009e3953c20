#!/usr/bin/env python3
"""Scan a corpus for what the demo model's MLP neurons respond to (a dataset scan on the server).

``Model.start_scan`` starts a job on the server that runs the corpus through the model, in
contexts of BOS + 31 tokens, and keeps for every neuron of one layer's ``mlp.hook_post`` its
top-activating contexts, random and quantile samples, statistics and a histogram. ``wait()``
shows its progress; the results then print as, for the neurons that fire most selectively,
their top contexts with the max token in [brackets], and a histogram.

The corpus is the demo model's own synthetic text (tools/demo_model/corpus.py: stories, IOI
sentences, sequences, facts), uploaded with the request; or, with ``--corpus PATH``, a .jsonl,
.txt or .npy file under the server's ``--corpus_dir``. From the repository root:

    build/server/service/glassboxd --model demo=models/demo --listen 127.0.0.1:50051 &
    pip install ./client/python
    python examples/scan_neurons.py 127.0.0.1:50051 --layer 2
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import List

import numpy as np

import glassbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "demo_model"))
import corpus as demo_corpus  # noqa: E402  (the demo model's corpus generators; no torch)

BARS = " ▁▂▃▄▅▆▇█"


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="glassboxd address, host:port")
    parser.add_argument("--model", default="demo", help="model name (default: demo)")
    parser.add_argument("--layer", type=int, default=1, help="the layer whose mlp.hook_post neurons are scanned")
    parser.add_argument("--documents", type=int, default=3000, help="synthetic documents to upload")
    parser.add_argument("--corpus", help="instead: a file under the server's --corpus_dir")
    parser.add_argument("--context-length", type=int, default=32)
    parser.add_argument("--show", type=int, default=5, help="neurons to print")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", help="API key, if the server wants one")
    return parser.parse_args(argv)


def texts(count: int, seed: int) -> List[str]:
    sample = demo_corpus.documents(random.Random(seed), {name: 1.0 for name in demo_corpus.GENERATORS})
    return [sample() for _ in range(count)]


def highlight(record: glassbox.ScanRecord) -> str:
    """The record's window as text, its max token in [brackets], BOS and newlines made visible."""
    shown = [s.replace("<|endoftext|>", "⏎").replace("\n", "\\n") for s in record.token_strings]
    shown[record.max_index] = f"[{shown[record.max_index]}]"
    return "".join(shown)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    with glassbox.connect(args.address, api_key=args.api_key, timeout=300) as client:
        model = client.model(args.model)
        hook = f"blocks.{args.layer}.mlp.hook_post"
        corpus = args.corpus if args.corpus else texts(args.documents, args.seed)
        job = model.start_scan(corpus, neurons={hook: None}, context_length=args.context_length,
                               top_k=5, random_k=5, window_before=12, window_after=3, seed=args.seed)
        print(f"{job}: {model.cfg.d_mlp} neurons of {hook}")
        info = job.wait()  # a progress bar; raises glassbox.JobFailed if the scan fails
        print(f"{info.contexts_total} contexts of {args.context_length} tokens, "
              f"{info.tokens_total} tokens over {info.passes} passes in {info.elapsed_seconds:.1f} s")
        results = job.all_results(page_size=128)

    # Selective neurons: a high max, and firing on few tokens.
    score = np.array([r.stats.max * (1 - r.stats.firing_frequency) for r in results])
    for r in (results[i] for i in np.argsort(-score)[: args.show]):
        s = r.stats
        print(f"\n{r.name}: max {s.max:.3f}, mean {s.mean:+.3f}, std {s.std:.3f}, "
              f"fires on {100 * s.firing_frequency:.1f}% of tokens")
        for record in r.top:
            print(f"  {record.value:7.3f}  {highlight(record)}")
        counts = r.histogram_counts
        if counts.size:
            levels = np.ceil(counts / counts.max() * (len(BARS) - 1)).astype(int)
            print(f"  nonzero activations {r.histogram_edges[0]:+.2f} "
                  f"{''.join(BARS[level] for level in levels)} {r.histogram_edges[-1]:+.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except glassbox.GlassboxError as error:  # carries the gRPC status code and the server's message
        sys.exit(f"error: {error}")
