"""Reference activation-patching sweeps from transformer_lens.patching.

For the tiny GPT-2 and Llama fixtures, builds two prompt pairs (clean / corrupted token ids,
seeded) and runs TransformerLens's patching functions (one forward pass per cell) with the metric
"logit difference between token_a and token_b at the last position, averaged over the pairs", on
a HookedTransformer built from the same weights without processing, in float64. Writes
tests/fixtures/expected/<model>.patching.safetensors; tests/engine/patching_test.cc compares
Glassbox's batched sweeps with it.

    /work/venv-ref/bin/python tests/reference/make_patching_fixtures.py
"""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
import transformer_lens.patching as patching

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import tl_model  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"

SWEEPS_GPT2 = {
    "resid_pre": patching.get_act_patch_resid_pre,
    "resid_mid": patching.get_act_patch_resid_mid,
    "resid_post": partial(patching.generic_activation_patch, patch_setter=patching.layer_pos_patch_setter,
                          activation_name="resid_post", index_axis_names=("layer", "pos")),
    "attn_out": patching.get_act_patch_attn_out,
    "mlp_out": patching.get_act_patch_mlp_out,
    "head_out_all_pos": patching.get_act_patch_attn_head_out_all_pos,
    "head_out_by_pos": patching.get_act_patch_attn_head_out_by_pos,
    "q_all_pos": patching.get_act_patch_attn_head_q_all_pos,
    "k_all_pos": patching.get_act_patch_attn_head_k_all_pos,
    "v_all_pos": patching.get_act_patch_attn_head_v_all_pos,
    "pattern_all_pos": patching.get_act_patch_attn_head_pattern_all_pos,
}
# TransformerLens indexes k/v heads by query head, which does not fit GQA; for Llama only the
# sweeps whose semantics are unambiguous are compared (patterns are per query head in both).
SWEEPS_LLAMA = {k: SWEEPS_GPT2[k] for k in ("resid_pre", "attn_out", "mlp_out", "head_out_all_pos",
                                              "head_out_by_pos", "q_all_pos", "pattern_all_pos")}


def main() -> None:
    for name, sweeps in (("tiny-gpt2", SWEEPS_GPT2), ("tiny-llama", SWEEPS_LLAMA)):
        hf = AutoModelForCausalLM.from_pretrained(FIXTURES / "models" / name, dtype=torch.float64)
        tl = tl_model(hf)
        gen = torch.Generator().manual_seed(7)
        clean = torch.randint(0, tl.cfg.d_vocab, (2, 7), generator=gen)
        corrupted = clean.clone()
        corrupted[:, 2] = torch.randint(0, tl.cfg.d_vocab, (2,), generator=gen)
        corrupted[:, 5] = torch.randint(0, tl.cfg.d_vocab, (2,), generator=gen)
        token_a, token_b = 17, 42

        def metric(logits: torch.Tensor) -> torch.Tensor:
            return (logits[:, -1, token_a] - logits[:, -1, token_b]).mean()

        with torch.no_grad():
            clean_logits, clean_cache = tl.run_with_cache(clean)
            out = {
                "clean": clean, "corrupted": corrupted,
                "tokens": torch.tensor([token_a, token_b]),
                "clean_metric": metric(clean_logits).reshape(1).float(),
                "corrupted_metric": metric(tl(corrupted)).reshape(1).float(),
            }
            for sweep, fn in sweeps.items():
                out[f"{sweep}.values"] = fn(tl, corrupted, clean_cache, metric).float().contiguous()
                print(name, sweep, tuple(out[f"{sweep}.values"].shape))
        path = FIXTURES / "expected" / f"{name}.patching.safetensors"
        save_file({k: v.contiguous() for k, v in out.items()}, path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
