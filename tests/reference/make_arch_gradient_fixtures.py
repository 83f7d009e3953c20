"""Reference gradients at every hook point for each architecture beyond GPT-2.

make_gradient_fixtures.py's recipe (whose helpers this imports) on the tiny reference models of
make_fixtures.py and make_arch_fixtures.py, one per architecture trait the backward must get right:

  tiny-llama       RMSNorm, rotate-half rotary, SiLU-gated MLP, 2 kv heads of 4
  tiny-pythia      LayerNorm, parallel attention + MLP, partial rotary (4 of 16 features), biases
  tiny-pythia-seq  the sequential GPT-NeoX block, partial rotary (16 of 32)
  tiny-gptj        adjacent-pair rotary on 8 of 16 features, one ln_1 for both parallel branches
  tiny-qwen3       per-head q/k RMSNorm, head_dim 24 != d_model / heads, tied embeddings
  tiny-olmo2       norms after attention and the MLP (none before), q/k norm over the projection
  tiny-mistral     a sliding window of 4 (shorter than the 7 tokens), 1 kv head
  tiny-gemma2      (1 + w) norms before and after both branches, tanh-GELU gate, embedding
                   scaled by sqrt(d_model), attention and final soft caps, sliding then global
  tiny-gemma3      per-head q/k norms, a second rope base for the sliding layer

For one row of 7 random token ids (seed 11, no padding) it computes one metric,

  logit_diff  logits[0, 6, 17] - logits[0, 6, 42]   (the last position: every position matters)

with a TransformerLens backward hook on every hook point of the HookedTransformer built from the
same weights in float64 (the builders that make the forward fixtures, so the hook semantics are
the ones the forward parity tests hold Glassbox to), and checks the hook gradients against
torch.autograd.grad of the kept activations. TL runs the per-head q/k norms on
[batch * pos * heads, d_head]; those gradients are stored in the [batch, pos, heads, ...] shape
Glassbox's hooks have.

Writes tests/fixtures/expected/<model>.gradients.safetensors in make_gradient_fixtures.py's format
(tokens, logit_diff.value, logit_diff.grad.<hook>, logit_diff.f32_error.<hook>; float32 values
computed in float64; "metrics" metadata). Deterministic: byte-identical on re-runs with the same
library versions.

    /work/venv-ref/bin/python tests/reference/make_arch_gradient_fixtures.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
import make_arch_fixtures as arch  # noqa: E402
from make_fixtures import tl_model  # noqa: E402  (also sets single-threaded, deterministic torch)
from make_gradient_fixtures import (  # noqa: E402
    METRICS,
    SEED,
    SEQ,
    autograd_gradients,
    hook_gradients,
    max_abs,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
METRIC = "logit_diff"
# One row (make_gradient_fixtures.py's two show rows do not interact): 0.1 MB per model.
BATCH = 1
BUILDERS = {
    "tiny-llama": tl_model,
    "tiny-pythia": arch.tl_pythia,
    "tiny-pythia-seq": arch.tl_pythia,
    "tiny-gptj": arch.tl_gptj,
    "tiny-qwen3": arch.tl_qwen3,
    "tiny-olmo2": arch.tl_olmo2,
    "tiny-mistral": arch.tl_mistral,
    "tiny-gemma2": arch.tl_gemma,
    "tiny-gemma3": arch.tl_gemma,
}


def engine_shape(name: str, g: torch.Tensor, n_heads: int, n_kv_heads: int) -> torch.Tensor:
    """TL's [batch * pos * heads, ...] per-head q/k norm values in the engine's hook shape."""
    if (".attn.q_norm." in name or ".attn.k_norm." in name) and g.dim() == 2 and \
            g.shape[0] != BATCH * SEQ:
        return g.reshape(BATCH, SEQ, -1, g.shape[-1])
    return g


def main() -> None:
    spec = METRICS[METRIC]
    assert spec["position"] == SEQ - 1
    metadata = {"metrics": json.dumps({METRIC: spec}, sort_keys=True)}
    for name, build in BUILDERS.items():
        hf = AutoModelForCausalLM.from_pretrained(FIXTURES / "models" / name,
                                                  dtype=torch.float64).eval()
        tl = build(hf)
        tl32 = build(hf).to(torch.float32)
        tl32.cfg.dtype = torch.float32
        cfg = tl.cfg
        kv = cfg.n_key_value_heads or cfg.n_heads
        tokens = torch.randint(0, cfg.d_vocab, (BATCH, SEQ),
                               generator=torch.Generator().manual_seed(SEED))
        values, grads, shapes, calls = hook_gradients(tl, tokens, spec)
        ref = autograd_gradients(tl, tokens, spec)
        assert set(ref) == set(shapes), set(ref) ^ set(shapes)
        _, grads32, _, _ = hook_gradients(tl32, tokens, spec)
        out = {"tokens": tokens.to(torch.int32), f"{METRIC}.value": values.float()}
        worst_ref, worst32 = 0.0, (0.0, "")
        for hook, shape in sorted(shapes.items()):
            g = grads.get(hook, torch.zeros(shape, dtype=torch.float64))
            worst_ref = max(worst_ref, max_abs(g, ref[hook]))
            g32 = grads32.get(hook, torch.zeros(shape)).double()
            error32 = (g32 - g).norm().item() / g.norm().item() if g.norm() > 0 else 0.0
            worst32 = max(worst32, (error32, hook))
            out[f"{METRIC}.grad.{hook}"] = engine_shape(hook, g, cfg.n_heads, kv).float()
            out[f"{METRIC}.f32_error.{hook}"] = torch.tensor([error32], dtype=torch.float32)
        resid0 = grads["blocks.0.hook_resid_pre"]
        d_embed = max_abs(grads["hook_embed"], resid0)
        repeated = {n: c for n, c in sorted(calls.items()) if c > 1}
        print(f"{name}: values {values.tolist()}; {len(shapes)} hook points; bwd hook vs "
              f"autograd.grad max |diff| {worst_ref:.2e}; hook_embed vs resid_pre0 {d_embed:.2e}")
        print(f"  torch float32 vs float64: worst norm-relative error {worst32[0]:.2e} at "
              f"{worst32[1]}; several backward calls (summed): {sorted(repeated) or 'none'}")
        print(f"  never run (not stored): {sorted(set(tl.hook_dict) - set(shapes)) or 'none'}")
        assert worst_ref < 1e-10 and d_embed < 1e-12
        dest = FIXTURES / "expected" / f"{name}.gradients.safetensors"
        save_file({k: v.contiguous() for k, v in sorted(out.items())}, str(dest),
                  metadata=metadata)
        print(f"  wrote {dest.relative_to(ROOT)} ({len(out)} tensors, {dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
