"""Reference logits for interventions, computed with TransformerLens run_with_hooks.

For the tiny GPT-2 and Llama fixtures (tests/fixtures/models), runs the committed unpadded input
batch with each intervention below as a TransformerLens forward hook on a HookedTransformer
built from the same weights without processing (make_fixtures.tl_model), in float64, and writes
tests/fixtures/expected/<model>.interventions.safetensors with "<case>.logits" and the value
vectors the cases add or set. tests/engine/intervention_test.cc encodes the same cases.

The *_pattern and *_scores cases edit attn.hook_pattern / attn.hook_attn_scores
([batch, head, query_pos, key_pos]); TransformerLens then takes the softmax of edited scores
and multiplies the (edited, unrenormalised) pattern by v. Their random values are drawn after
the older cases' so that those stay byte-identical.

    /work/venv-ref/bin/python tests/reference/make_intervention_fixtures.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import tl_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def cases(d_model: int, n_heads: int, seq: int, gen: torch.Generator):
    v_steer = torch.randn(d_model, generator=gen, dtype=torch.float64)
    v_set = torch.randn(d_model, generator=gen, dtype=torch.float64)
    v_chain = torch.randn(d_model, generator=gen, dtype=torch.float64)
    v_scores = torch.randn(seq, generator=gen, dtype=torch.float64)
    # Each query spreads its attention evenly over the keys it may see, [head, query, key].
    uniform = torch.tril(torch.ones(seq, seq, dtype=torch.float64))
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(n_heads, seq, seq).contiguous()
    bos_only = torch.zeros(seq, dtype=torch.float64)
    bos_only[0] = 1

    def zero_head(x, hook):
        x[:, :, 1, :] = 0
        return x

    def steer_last(x, hook):
        x[:, -1, :] += 2.5 * v_steer
        return x

    def mean_neurons(x, hook):
        idx = [3, 7, 11]
        x[:, :, idx] = x[:, :, idx].mean(0, keepdim=True)
        return x

    def resample_attn_out(x, hook):
        src = x.clone()
        x[:, 4, :] = src[[2, 0, 1], 4, :]
        return x

    def scale_v(x, hook):
        x[:, :, 0, :] *= 0.5
        return x

    def set_mlp_out(x, hook):
        x[1, :, :] = v_set
        return x

    def chain_add(x, hook):
        x[:, [0, 2], :] += 1.0 * v_chain
        return x

    def chain_scale(x, hook):
        x[:, [0, 2], :] *= 0.5
        return x

    def mean_pos(x, hook):
        x[0, :, :] = x[0].mean(0, keepdim=True)
        return x

    # hook_pattern / hook_attn_scores: x is [batch, head, query_pos, key_pos].
    def zero_pattern(x, hook):
        x[:, 1, [3, -1], :] = 0
        return x

    def uniform_pattern(x, hook):
        x[:, 0] = uniform[0]
        return x

    def bos_pattern(x, hook):
        x[:, 2] = bos_only
        return x

    def add_scores(x, hook):  # masked (-inf) scores stay masked
        keys = [0, 2, 5]
        x[:, 3, :, keys] += 1.5 * v_scores[keys]
        return x

    def scale_scores(x, hook):
        x[[0, 2]] *= 0.3
        return x

    return {
        "zero_head": [("blocks.0.attn.hook_z", zero_head)],
        "steer_last": [("blocks.1.hook_resid_pre", steer_last)],
        "mean_neurons": [("blocks.0.mlp.hook_post", mean_neurons)],
        "resample_attn_out": [("blocks.1.hook_attn_out", resample_attn_out)],
        "scale_v": [("blocks.1.attn.hook_v", scale_v)],
        "set_mlp_out": [("blocks.0.hook_mlp_out", set_mlp_out)],
        "chain": [("blocks.0.hook_resid_mid", chain_add), ("blocks.0.hook_resid_mid", chain_scale)],
        "mean_pos": [("blocks.1.hook_mlp_out", mean_pos)],
        "zero_pattern": [("blocks.0.attn.hook_pattern", zero_pattern)],
        "uniform_bos_pattern": [("blocks.0.attn.hook_pattern", uniform_pattern),
                                ("blocks.1.attn.hook_pattern", bos_pattern)],
        "add_scores": [("blocks.0.attn.hook_attn_scores", add_scores)],
        "scale_scores": [("blocks.1.attn.hook_attn_scores", scale_scores)],
    }, {"steer_last.value": v_steer, "set_mlp_out.value": v_set, "chain.value": v_chain,
        "add_scores.value": v_scores, "uniform_bos_pattern.uniform": uniform,
        "uniform_bos_pattern.bos": bos_only}


def main() -> None:
    torch.manual_seed(0)
    for name in ("tiny-gpt2", "tiny-llama"):
        hf = AutoModelForCausalLM.from_pretrained(FIXTURES / "models" / name, dtype=torch.float64)
        tl = tl_model(hf)
        ids = load_file(FIXTURES / "expected" / f"{name}.safetensors")["unpadded.input_ids"]
        gen = torch.Generator().manual_seed(1234)
        table, values = cases(tl.cfg.d_model, tl.cfg.n_heads, ids.shape[1], gen)
        out = {k: v.to(torch.float32).contiguous() for k, v in values.items()}
        with torch.no_grad():
            base = tl(ids)
            for case, hooks in table.items():
                logits = tl.run_with_hooks(ids, fwd_hooks=hooks)
                assert (logits - base).abs().max() > 1e-6, f"{case} changed nothing"
                out[f"{case}.logits"] = logits.to(torch.float32).contiguous()
        path = FIXTURES / "expected" / f"{name}.interventions.safetensors"
        save_file(out, path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
