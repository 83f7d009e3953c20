"""Reference gradients of scalar metrics with respect to every TransformerLens hook point.

For tiny-gpt2 (tests/fixtures/models/tiny-gpt2) and the shipped demo model (models/demo), loads
the HF model in float64, builds a HookedTransformer from the same weights without processing
(`make_fixtures.tl_model`, as make_patching_fixtures.py does), and for two rows of 7 random token
ids (seed 11, no padding) computes three per-row metrics of the logits:

  logit_diff  logits[b, 6, 17] - logits[b, 6, 42]
  log_prob    log_softmax(logits[b, 3, :])[29]
  logit       logits[b, 5, 8]

For each metric it runs one forward pass and one backward pass of the SUM of the metric over the
rows (rows do not interact, so row b's gradient is the gradient of row b's own metric), with a
TransformerLens backward hook (`dir="bwd"`) on every hook point of `model.hook_dict`, and records
the gradient each hook receives: d(sum_b metric_b) / d(hook output), in the hook's TL shape.
Hook points that run in the forward pass but receive no gradient are stored as zeros of their
forward shape; hook points that never run in the forward pass (unused by this configuration,
e.g. `hook_q_input`, `hook_mlp_in`) have no shape and are not stored.

Self-checks (all in float64, printed): the backward-hook gradients equal torch.autograd.grad of
the same sum with respect to the forward activations (an independent path); the gradient at
`hook_embed` (and at `hook_pos_embed`) equals the one at `blocks.0.hook_resid_pre`; gradients at
positions after the metric's position are exactly zero; masked (future) entries of
`hook_attn_scores` get exactly zero gradient; `hook_attn_scores` equals q·k/sqrt(d_head) with -inf
above the diagonal (scaled, after the causal mask); `ln*.hook_normalized` is (x - mean)/hook_scale,
before the LayerNorm weight and bias.

Writes tests/fixtures/expected/<model>.gradients.safetensors (every float tensor float32, computed
in float64):

  tokens                       int32 [2, 7]
  <metric>.value               float32 [2], per-row metric values
  <metric>.grad.<hook name>    float32, TL shape of the hook (e.g. blocks.0.attn.hook_z
                               [2, 7, n_heads, d_head]; hook_attn_scores / hook_pattern
                               [2, n_heads, 7, 7])
  <metric>.f32_error.<hook>    float32 [1]: the norm-relative error of the same gradient from
                               torch autograd on the model in float32, against the float64 one:
                               the precision an f32 engine can be held to at that hook

and in the header metadata, "metrics": JSON of the definitions (kind, position, tokens) of the
metrics the file holds (tiny-gpt2: all three; demo: logit_diff only, to stay under 1 MB).
The output is deterministic (fixed seed, single-threaded torch): re-running gives byte-identical
files with the same library versions (torch 2.15.0, transformers 5.23.0, transformer_lens 3.9.0,
safetensors 0.8.0).

TransformerLens details the stored gradients inherit (asserted or printed by the script):
  - TL 3.9 applies `ln1` three times per block (to the query, key and value inputs), so
    `blocks.{l}.ln1.hook_scale` / `ln1.hook_normalized` get three backward calls; the stored
    gradient is their sum, i.e. the gradient with respect to the one LayerNorm activation.
  - `hook_attn_scores` is after the 1/sqrt(d_head) scaling and after the causal mask (-inf
    above the diagonal); the gradient there is exactly 0. `hook_pattern`'s gradient above the
    diagonal is NOT zero (z = pattern @ v uses every entry: d/dpattern[q,k] = dz[q] . v[k]).
  - `hook_normalized` is (x - mean) / hook_scale, before the LayerNorm weight and bias.

tests/engine/gradients_test.cc compares Glassbox's gradients with these files.

    /work/venv-ref/bin/python tests/reference/make_gradient_fixtures.py
"""
from __future__ import annotations

import importlib.metadata as md
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import tl_model  # noqa: E402  (also sets single-threaded, deterministic torch)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
BATCH, SEQ, SEED = 2, 7, 11
METRICS = {
    "logit_diff": {"kind": "logit_diff", "position": 6, "token_a": 17, "token_b": 42},
    "log_prob": {"kind": "log_prob", "position": 3, "token": 29},
    "logit": {"kind": "logit", "position": 5, "token": 8},
}
# (HF directory, metrics stored). Every metric over every hook point costs about 0.2 MB per
# metric for tiny-gpt2 but 0.77 MB per metric for demo (4 layers, d_model 128, d_mlp 512,
# vocab 1024): all three would make demo.gradients.safetensors 2.3 MB, so demo stores only
# logit_diff (position 6 = the last, so every position gets a gradient). The "metrics" metadata
# entry lists exactly the metrics a file holds.
MODELS = {
    "tiny-gpt2": (FIXTURES / "models" / "tiny-gpt2", tuple(METRICS)),
    "demo": (ROOT / "models" / "demo", ("logit_diff",)),
}


def metric_values(logits: torch.Tensor, spec: dict) -> torch.Tensor:
    """Per-row metric, shape [batch]."""
    at = logits[:, spec["position"], :]
    if spec["kind"] == "logit_diff":
        return at[:, spec["token_a"]] - at[:, spec["token_b"]]
    if spec["kind"] == "log_prob":
        return torch.log_softmax(at, dim=-1)[:, spec["token"]]
    if spec["kind"] == "logit":
        return at[:, spec["token"]]
    raise ValueError(spec["kind"])


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def hook_gradients(tl, tokens: torch.Tensor, spec: dict):
    """One forward + backward with a TL backward hook on every hook point.

    Returns (values [B], grads {name: summed gradient} for the hook points whose backward hook
    ran, shapes {name: forward shape} for the hook points that ran in the forward pass,
    calls {name: number of backward calls})."""
    names = list(tl.hook_dict)
    shapes: dict[str, tuple] = {}
    grads: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}

    def fwd(x, hook):
        assert shapes.setdefault(hook.name, tuple(x.shape)) == tuple(x.shape), hook.name

    def bwd(g, hook):
        # A hook point that runs several times in one forward pass (TL 3.9 applies ln1 three
        # times, to the query, key and value inputs) gets one backward call per use; the
        # gradient with respect to the (single) activation is their sum.
        g = g.detach().clone()
        grads[hook.name] = grads[hook.name] + g if hook.name in grads else g
        calls[hook.name] = calls.get(hook.name, 0) + 1

    tl.reset_hooks()
    tl.zero_grad(set_to_none=True)
    # Backward hooks are removed when the context exits, so backward() runs inside it.
    with tl.hooks(fwd_hooks=[(n, fwd) for n in names], bwd_hooks=[(n, bwd) for n in names]):
        values = metric_values(tl(tokens), spec)
        values.sum().backward()
    tl.reset_hooks()
    tl.zero_grad(set_to_none=True)
    return values.detach(), grads, shapes, calls


def autograd_gradients(tl, tokens: torch.Tensor, spec: dict) -> dict[str, torch.Tensor]:
    """Independent path: keep every hook point's forward activation, then torch.autograd.grad."""
    acts: dict[str, list[torch.Tensor]] = {}

    def keep(x, hook):
        acts.setdefault(hook.name, []).append(x)

    tl.reset_hooks()
    with tl.hooks(fwd_hooks=[(n, keep) for n in tl.hook_dict]):
        total = metric_values(tl(tokens), spec).sum()
    tl.reset_hooks()
    flat = [(n, x) for n in sorted(acts) for x in acts[n]]
    got = torch.autograd.grad(total, [x for _, x in flat], allow_unused=True)
    out: dict[str, torch.Tensor] = {}
    for (n, x), g in zip(flat, got):  # a hook point run several times: sum over its uses
        g = torch.zeros_like(x) if g is None else g
        out[n] = out[n] + g if n in out else g
    return out


def check_forward_semantics(tl, tokens: torch.Tensor) -> None:
    """Asserts what hook_attn_scores and ln*.hook_normalized hold (printed for the report)."""
    with torch.no_grad():
        _, cache = tl.run_with_cache(tokens)
    causal = torch.triu(torch.ones(SEQ, SEQ, dtype=torch.bool), diagonal=1)
    worst_scores = worst_norm = 0.0
    for l in range(tl.cfg.n_layers):
        q, k = cache[f"blocks.{l}.attn.hook_q"], cache[f"blocks.{l}.attn.hook_k"]
        scores = cache[f"blocks.{l}.attn.hook_attn_scores"]
        assert torch.isneginf(scores[..., causal]).all(), "masked scores are not -inf"
        assert torch.isfinite(scores[..., ~causal]).all()
        want = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(tl.cfg.d_head)
        worst_scores = max(worst_scores, max_abs(scores[..., ~causal], want[..., ~causal]))
        for ln, src in (("ln1", f"blocks.{l}.hook_resid_pre"), ("ln2", f"blocks.{l}.hook_resid_mid")):
            x = cache[src]
            xc = x - x.mean(-1, keepdim=True)
            scale = cache[f"blocks.{l}.{ln}.hook_scale"]
            worst_norm = max(worst_norm, max_abs(cache[f"blocks.{l}.{ln}.hook_normalized"], xc / scale),
                             max_abs(scale, (xc.pow(2).mean(-1, keepdim=True) + tl.cfg.eps).sqrt()))
    assert worst_scores < 1e-12 and worst_norm < 1e-12, (worst_scores, worst_norm)
    print(f"  forward: hook_attn_scores = q.k/sqrt(d_head) with -inf above the diagonal "
          f"(max |diff| {worst_scores:.2e}); ln hook_normalized = (x-mean)/hook_scale, before "
          f"the weight (max |diff| {worst_norm:.2e})")


def main() -> None:
    print("versions:", {p: md.version(p) for p in ("torch", "transformers", "transformer_lens", "safetensors")})
    for name, (path, metrics) in MODELS.items():
        # One metadata entry only: safetensors writes several in a random order, and the output
        # should be byte-identical from run to run.
        metadata = {"metrics": json.dumps({m: METRICS[m] for m in metrics}, sort_keys=True)}
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
        tl = tl_model(hf)
        cfg = tl.cfg
        # The same model in float32: how far torch's own f32 autograd is from the float64
        # gradients, per hook, which is the precision an f32 engine can be held to.
        tl32 = tl_model(hf).to(torch.float32)
        tl32.cfg.dtype = torch.float32
        print(f"{name}: n_layers {cfg.n_layers}, d_model {cfg.d_model}, n_heads {cfg.n_heads}, "
              f"d_head {cfg.d_head}, d_mlp {cfg.d_mlp}, d_vocab {cfg.d_vocab}, act_fn {cfg.act_fn}, "
              f"normalization_type {cfg.normalization_type}, "
              f"positional_embedding_type {cfg.positional_embedding_type}")
        tokens = torch.randint(0, cfg.d_vocab, (BATCH, SEQ), generator=torch.Generator().manual_seed(SEED))
        check_forward_semantics(tl, tokens)

        out = {"tokens": tokens.to(torch.int32)}
        for metric in metrics:
            spec = METRICS[metric]
            values, grads, shapes, calls = hook_gradients(tl, tokens, spec)
            repeated = {n: c for n, c in sorted(calls.items()) if c > 1}
            unused = sorted(set(tl.hook_dict) - set(shapes))
            no_grad = sorted(set(shapes) - set(grads))
            ref = autograd_gradients(tl, tokens, spec)
            assert set(ref) == set(shapes), set(ref) ^ set(shapes)

            out[f"{metric}.value"] = values.float()
            _, grads32, _, _ = hook_gradients(tl32, tokens, spec)
            worst32 = (0.0, "")
            worst_ref, worst_future = 0.0, 0.0
            for hook, shape in shapes.items():
                g = grads.get(hook)
                if g is None:
                    g = torch.zeros(shape, dtype=torch.float64)
                assert tuple(g.shape) == shape, (hook, g.shape, shape)
                worst_ref = max(worst_ref, max_abs(g, ref[hook]))
                # Causality: nothing after the metric's position influences it.
                if not hook.endswith(("hook_attn_scores", "hook_pattern")):
                    worst_future = max(worst_future, g[:, spec["position"] + 1:].abs().max().item()
                                       if spec["position"] + 1 < SEQ else 0.0)
                out[f"{metric}.grad.{hook}"] = g.float()
                g32 = grads32.get(hook, torch.zeros(shape)).double()
                error32 = (g32 - g).norm().item() / g.norm().item() if g.norm() > 0 else 0.0
                out[f"{metric}.f32_error.{hook}"] = torch.tensor([error32], dtype=torch.float32)
                worst32 = max(worst32, (error32, hook))
            # Masked (future) key positions of the attention scores get exactly zero gradient.
            causal = torch.triu(torch.ones(SEQ, SEQ, dtype=torch.bool), diagonal=1)
            masked = max(grads[f"blocks.{l}.attn.hook_attn_scores"][..., causal].abs().max().item()
                         for l in range(cfg.n_layers))
            masked_pattern = max(grads[f"blocks.{l}.attn.hook_pattern"][..., causal].abs().max().item()
                                 for l in range(cfg.n_layers))
            embed = grads["hook_embed"]
            resid0 = grads["blocks.0.hook_resid_pre"]
            d_embed = max_abs(embed, resid0)
            d_pos = max_abs(grads["hook_pos_embed"], resid0) if "hook_pos_embed" in grads else float("nan")
            print(f"  {metric}: values {values.tolist()}; |grad resid_pre0| max {resid0.abs().max().item():.3e}")
            print(f"    bwd hook vs autograd.grad max |diff| {worst_ref:.2e}; hook_embed vs "
                  f"blocks.0.hook_resid_pre {d_embed:.2e}; hook_pos_embed vs resid_pre {d_pos:.2e}; "
                  f"max |grad| after position {spec['position']}: {worst_future:.2e}; "
                  f"max |grad attn_scores| at masked entries {masked:.2e} (hook_pattern: "
                  f"{masked_pattern:.2e})")
            print(f"    torch float32 autograd vs float64: worst norm-relative error {worst32[0]:.2e} at {worst32[1]}")
            print(f"    no gradient (stored as zeros): {no_grad or 'none'}")
            print(f"    hook points with several backward calls (summed): {repeated or 'none'}")
            assert worst_ref < 1e-10 and d_embed < 1e-12 and worst_future == 0.0 and masked == 0.0
        print(f"  hook points never run in the forward pass (not stored): {unused or 'none'}")

        dest = FIXTURES / "expected" / f"{name}.gradients.safetensors"
        save_file({k: v.contiguous() for k, v in out.items()}, str(dest), metadata=metadata)
        print(f"wrote {dest.relative_to(ROOT)} ({len(out)} tensors, {dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
