"""The peer side of bench/scan.sh, on the same CPU, model, SAE and corpus:

- SAE features: SAEDashboard's SaeVisRunner (sae-dashboard 0.8, the tool behind Neuronpedia's
  dashboards) over the first --features features of the SAE, in its default batches of features.
  It runs the model again for every batch of features, so its cost grows with the number of
  features; the figure to compare is target-tokens/s (features x corpus tokens / second).
- MLP neurons: what one writes with TransformerLens for a neuron scan (SAEDashboard has no neuron
  mode): run_with_cache up to the layer, then per neuron the running top contexts (torch.topk over
  each context's max) and the moments; one pass, fewer outputs than Glassbox's two passes give.

Prints one JSON line per measurement. Needs a Python with torch, transformer_lens 2.x, sae_lens and
sae-dashboard (bench/scan.sh says how to make one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def load_model(model_dir: str):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import AutoModelForCausalLM, GPT2TokenizerFast

    hf = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new",
        normalization_type="LN", eps=c.layer_norm_epsilon, positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", tokenizer_prepends_bos=False, default_prepend_bos=False,
    )
    from sae_lens import HookedSAETransformer

    tokenizer = GPT2TokenizerFast.from_pretrained(model_dir)  # vocab.json + merges.txt, put there by scan.sh
    model = HookedSAETransformer(cfg, tokenizer=tokenizer)
    model.load_state_dict(convert_gpt2_weights(hf, cfg), strict=False)
    model.eval()
    return model


def sae_features(model, sae_dir: str, tokens: torch.Tensor, features: int) -> dict:
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner
    from sae_lens import SAE

    sae = SAE.load_from_disk(sae_dir, device="cpu")
    config = SaeVisConfig(hook_point=sae.cfg.metadata.hook_name, features=list(range(features)),
                          minibatch_size_features=128, minibatch_size_tokens=64, device="cpu",
                          dtype="float32", verbose=False)
    start = time.perf_counter()
    data = SaeVisRunner(config).run(encoder=sae, model=model, tokens=tokens)
    seconds = time.perf_counter() - start
    assert len(data.feature_data_dict) == features
    n = tokens.numel()
    return {"side": "sae-dashboard", "targets": features, "tokens": n, "seconds": seconds,
            "tokens_per_s": n / seconds, "target_tokens_per_s": n * features / seconds}


@torch.no_grad()
def neurons(model, tokens: torch.Tensor, layer: int, count: int, top_k: int, batch: int) -> dict:
    hook = f"blocks.{layer}.mlp.hook_post"
    start = time.perf_counter()
    best = torch.full((count, top_k), -float("inf"))
    best_ctx = torch.zeros((count, top_k), dtype=torch.long)
    s1 = torch.zeros(count, dtype=torch.float64)
    s2 = torch.zeros(count, dtype=torch.float64)
    for b0 in range(0, tokens.shape[0], batch):
        _, cache = model.run_with_cache(tokens[b0:b0 + batch], names_filter=hook, stop_at_layer=layer + 1)
        acts = cache[hook][:, 1:, :count]  # BOS left out, as Glassbox does
        s1 += acts.sum((0, 1)).double()
        s2 += (acts.double() ** 2).sum((0, 1))
        maxima = acts.max(1).values.T  # [count, contexts]
        ctx = torch.arange(b0, b0 + maxima.shape[1]).expand(count, -1)
        merged = torch.cat([best, maxima], 1)
        order = merged.topk(top_k, dim=1)
        best = order.values
        best_ctx = torch.cat([best_ctx, ctx], 1).gather(1, order.indices)
    seconds = time.perf_counter() - start
    n = tokens.numel()
    return {"side": "transformer_lens", "targets": count, "tokens": n, "seconds": seconds,
            "tokens_per_s": n / seconds, "target_tokens_per_s": n * count / seconds}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--sae", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--neurons", type=int, default=1000)
    p.add_argument("--layer", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    tokens = torch.from_numpy(np.load(args.tokens).astype(np.int64))
    print(json.dumps({"kind": "neurons", **neurons(model, tokens, args.layer, args.neurons, 20, 16)}), flush=True)
    print(json.dumps({"kind": "sae_features", **sae_features(model, args.sae, tokens, args.features)}), flush=True)


if __name__ == "__main__":
    main()
