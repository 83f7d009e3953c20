"""Reference values for the server-side analyses (docs/methods.md), from TransformerLens.

- Logit lens: cache.accumulated_resid(apply_ln=True) (final LN recomputed per layer) through the
  unembedding, then log_softmax: "logit_lens.log_probs" [L+1, batch, pos, vocab].
- Direct logit attribution: TransformerLens's cache.logit_attrs on a model processed with
  fold_ln=True only (so w_f sits in W_U, as docs/methods.md's definition has it; value biases are not
  folded, so each head's output is the raw model's hook_result), for the components
  embed, pos_embed, each head's hook_result, each layer's b_O and each hook_mlp_out, at the last
  position, for token_a and for token_a - token_b: "dla.token", "dla.diff" [components, batch].
- Attention norms (Kobayashi et al. 2020), computed directly from the cached pattern, hook_v and
  W_O: "attn_norms.{l}.head" [batch, head, q, k] and "attn_norms.{l}.layer" [batch, q, k].

    /work/venv-ref/bin/python tests/reference/make_analysis_fixtures.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import tl_model  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
TOKEN_A, TOKEN_B = 17, 42


def main() -> None:
    for name in ("tiny-gpt2", "tiny-llama"):
        hf = AutoModelForCausalLM.from_pretrained(FIXTURES / "models" / name, dtype=torch.float64)
        ids = load_file(FIXTURES / "expected" / f"{name}.safetensors")["unpadded.input_ids"]
        out = {}
        tl = tl_model(hf)
        cfg = tl.cfg
        with torch.no_grad():
            _, cache = tl.run_with_cache(ids)
            acc = cache.accumulated_resid(apply_ln=True)
            logits = acc @ tl.W_U + tl.b_U
            out["logit_lens.log_probs"] = logits.log_softmax(-1).float()

            for l in range(cfg.n_layers):
                pattern = cache[f"blocks.{l}.attn.hook_pattern"]  # [b, h, q, k]
                v = cache[f"blocks.{l}.attn.hook_v"]  # [b, k, kvh, dh]
                v = v.repeat_interleave(cfg.n_heads // v.shape[2], dim=2)
                f = torch.einsum("bkhd,hdm->bkhm", v, tl.blocks[l].attn.W_O)  # [b, k, h, d_model]
                weighted = pattern[..., None] * f.permute(0, 2, 1, 3)[:, :, None]  # [b, h, q, k, d]
                out[f"attn_norms.{l}.head"] = weighted.norm(dim=-1).float()
                out[f"attn_norms.{l}.layer"] = weighted.sum(1).norm(dim=-1).float()

            folded = tl_model(hf)
            # Fold only the final-LN weight into W_U (and ln1/ln2 into the next layers): value
            # biases stay in the heads, whose outputs are then exactly hook_result of the raw model.
            folded.load_and_process_state_dict(folded.state_dict(), fold_ln=True, center_writing_weights=False,
                                               center_unembed=False, fold_value_biases=False)
            _, fcache = folded.run_with_cache(ids)
            comps = [fcache["hook_embed"]]
            if "hook_pos_embed" in fcache:
                comps.append(fcache["hook_pos_embed"])
            for l in range(cfg.n_layers):
                result = fcache[f"blocks.{l}.attn.hook_result"]
                comps += [result[:, :, h] for h in range(cfg.n_heads)]
                if name == "tiny-gpt2":
                    comps.append(folded.blocks[l].attn.b_O.expand_as(comps[0]))
                comps.append(fcache[f"blocks.{l}.hook_mlp_out"])
            stack = torch.stack(comps)[:, :, -1, :]  # [components, batch, d_model] at the last position
            batch = ids.shape[0]
            token = torch.full((batch,), TOKEN_A)
            minus = torch.full((batch,), TOKEN_B)
            out["dla.token"] = fcache.logit_attrs(stack, token, pos_slice=-1).float()
            out["dla.diff"] = fcache.logit_attrs(stack, token, incorrect_tokens=minus, pos_slice=-1).float()
            out["dla.tokens"] = torch.tensor([TOKEN_A, TOKEN_B])
        path = FIXTURES / "expected" / f"{name}.analyses.safetensors"
        save_file({k: v.contiguous() for k, v in out.items()}, path)
        print(f"wrote {path} ({path.stat().st_size} bytes)", {k: tuple(v.shape) for k, v in out.items() if 'dla' in k})


if __name__ == "__main__":
    main()
