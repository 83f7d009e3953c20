"""Reference gradients through interventions: torch autograd through the same edits in
TransformerLens forward hooks.

For tiny-gpt2 and tiny-llama (tests/fixtures/models), builds the HookedTransformer of the same
weights in float64 (`make_fixtures.tl_model`), two rows of 7 random token ids (seed 11, as
make_gradient_fixtures.py), and for each case below runs the model with the case's edits as
forward hooks (in the order listed; edits at one hook apply in that order), then a forward hook
that keeps each listed hook's (edited) output, and takes torch.autograd.grad of the sum over rows
of logit_diff = logits[b, 6, 17] - logits[b, 6, 42] with respect to the kept outputs: the
gradient at an edited hook is the one at its edited value, and upstream of it autograd goes
through the edit.

Edits (positions and dims as Glassbox's Intervention selects them; u1, w, u2, u3 are seeded
normal vectors [d_model], stored in the file):

  linear:
    blocks.0.attn.hook_z      ZERO      heads [1], positions [2, 3]
    blocks.0.mlp.hook_post    SCALE     0.5 at dims [0, 10)
    blocks.0.hook_resid_mid   ADD       2 * u1 at position -1
    blocks.1.hook_resid_pre   SET       w at position 1
    blocks.1.hook_resid_pre   PROJECT_OUT  u2 (coefficient 1), every position
    blocks.1.hook_mlp_out     ORTHOGONAL_DECOMP  u3, coefficient 0.3, positions [4, 5, 6]
  coupling:
    blocks.0.attn.hook_v      MEAN_BATCH  head 0 (kv head 0 on tiny-llama)
    blocks.0.hook_attn_out    MEAN_POS    row 1
    blocks.1.hook_resid_pre   PATCH_ROW   source rows [1, 0], position 3
  cap (torch.clamp's gradient: 1 inside the closed bounds, 0 outside):
    blocks.0.hook_resid_mid   PROJECTION_CAP  u1, x . u1 <= 0, every position
    blocks.1.hook_resid_pre   ADD       2 * u2 at position -1
    blocks.1.hook_resid_pre   PROJECTION_CAP  u3 within [-1, 1] (reading the added value)
  attention ([batch, head, query, key]; the gradients at the two edited hooks are kept too):
    blocks.0.attn.hook_attn_scores  SCALE 0.5  head 2
    blocks.1.attn.hook_pattern      ZERO       head 1, key 0 (no attention to the first token)
    blocks.1.attn.hook_pattern      SCALE 2.0  head 0, queries [5, 6]
  attention_coupling (the same, with edits that read other elements):
    blocks.0.attn.hook_pattern      MEAN_BATCH  head 3
    blocks.1.attn.hook_attn_scores  PATCH_ROW   source rows [1, 0], query 4, keys [1, 2]
    blocks.1.attn.hook_pattern      MEAN_POS    row 1, head 2 (the mean over the queries)

Writes tests/fixtures/expected/<model>.edit_gradients.safetensors (float32 values computed in
float64): tokens, edit.{u1,w,u2,u3}, <case>.value [2], <case>.grad.<hook> (the hook's TL shape),
<case>.f32_error.<hook> [1] (torch's own float32 error there, against float64). Deterministic.

    /work/venv-ref/bin/python tests/reference/make_edit_gradient_fixtures.py
"""
from __future__ import annotations

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
HOOKS = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_v", "blocks.0.attn.hook_z",
         "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid", "blocks.0.mlp.hook_post",
         "blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]


def unit(u: torch.Tensor) -> torch.Tensor:
    return u / u.norm()


def cases(vec: dict[str, torch.Tensor]):
    """Each case: a list of (hook, edit function on a clone)."""
    def zero(x):
        x = x.clone(); x[:, [2, 3], 1, :] = 0; return x

    def scale(x):
        x = x.clone(); x[..., :10] = x[..., :10] * 0.5; return x

    def add(x):
        x = x.clone(); x[:, -1, :] = x[:, -1, :] + 2 * vec["u1"].to(x.dtype); return x

    def set_(x):
        x = x.clone(); x[:, 1, :] = vec["w"].to(x.dtype); return x

    def project_out(x):
        u = unit(vec["u2"].to(x.dtype))
        return x - (x @ u)[..., None] * u

    def orthogonal_decomp(x):
        u = unit(vec["u3"].to(x.dtype))
        x = x.clone()
        sel = x[:, 4:7, :]
        x[:, 4:7, :] = sel + (0.3 - 1.0) * (sel @ u)[..., None] * u
        return x

    def mean_batch(x):
        x = x.clone(); x[:, :, 0, :] = x[:, :, 0, :].mean(0, keepdim=True).expand_as(x[:, :, 0, :]); return x

    def mean_pos(x):
        x = x.clone(); x[1] = x[1].mean(0, keepdim=True).expand_as(x[1]); return x

    def patch_row(x):
        y = x.clone(); y[:, 3] = x[[1, 0], 3]; return y

    def cap(key, low, high):
        def f(x):
            u = unit(vec[key].to(x.dtype))
            dot = x @ u
            clamped = (dot < low) | (dot > high)
            print(f"    cap along {key}: {int(clamped.sum())} of {clamped.numel()} tokens clamped")
            return x + (dot.clamp(low, high) - dot)[..., None] * u
        return f

    def scale_scores(x):
        x = x.clone(); x[:, 2] = x[:, 2] * 0.5; return x

    def zero_first_key(x):
        x = x.clone(); x[:, 1, :, 0] = 0; return x

    def scale_queries(x):
        x = x.clone(); x[:, 0, [5, 6], :] = x[:, 0, [5, 6], :] * 2.0; return x

    def mean_batch_head3(x):
        x = x.clone(); x[:, 3] = x[:, 3].mean(0, keepdim=True).expand_as(x[:, 3]); return x

    def patch_scores(x):
        y = x.clone(); y[:, :, 4, 1:3] = x[[1, 0], :, 4, 1:3]; return y

    def mean_pos_row1_head2(x):
        x = x.clone(); x[1, 2] = x[1, 2].mean(0, keepdim=True).expand_as(x[1, 2]); return x

    def add_u2(x):
        x = x.clone(); x[:, -1, :] = x[:, -1, :] + 2 * vec["u2"].to(x.dtype); return x

    return {
        "linear": [("blocks.0.attn.hook_z", zero), ("blocks.0.mlp.hook_post", scale),
                   ("blocks.0.hook_resid_mid", add), ("blocks.1.hook_resid_pre", set_),
                   ("blocks.1.hook_resid_pre", project_out),
                   ("blocks.1.hook_mlp_out", orthogonal_decomp)],
        "coupling": [("blocks.0.attn.hook_v", mean_batch), ("blocks.0.hook_attn_out", mean_pos),
                     ("blocks.1.hook_resid_pre", patch_row)],
        "cap": [("blocks.0.hook_resid_mid", cap("u1", -float("inf"), 0.0)),
                ("blocks.1.hook_resid_pre", add_u2),
                ("blocks.1.hook_resid_pre", cap("u3", -1.0, 1.0))],
        "attention": [("blocks.0.attn.hook_attn_scores", scale_scores),
                      ("blocks.1.attn.hook_pattern", zero_first_key),
                      ("blocks.1.attn.hook_pattern", scale_queries)],
        "attention_coupling": [("blocks.0.attn.hook_pattern", mean_batch_head3),
                               ("blocks.1.attn.hook_attn_scores", patch_scores),
                               ("blocks.1.attn.hook_pattern", mean_pos_row1_head2)],
    }


# Hooks whose gradients a case keeps besides HOOKS.
EXTRA_HOOKS = {"attention": ["blocks.0.attn.hook_attn_scores", "blocks.1.attn.hook_pattern"],
               "attention_coupling": ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_attn_scores",
                                      "blocks.1.attn.hook_pattern"]}


def gradients(tl, tokens, edits, extra=()):
    hook_names = HOOKS + list(extra)
    kept: dict[str, torch.Tensor] = {}

    def keep(x, hook):
        assert hook.name not in kept
        kept[hook.name] = x
        return x

    hooks = [(name, (lambda f: lambda x, hook: f(x))(f)) for name, f in edits]
    hooks += [(name, keep) for name in hook_names]
    tl.reset_hooks()
    with tl.hooks(fwd_hooks=hooks):
        logits = tl(tokens)
    tl.reset_hooks()
    values = logits[:, 6, 17] - logits[:, 6, 42]
    grads = torch.autograd.grad(values.sum(), [kept[h] for h in hook_names])
    return values.detach(), dict(zip(hook_names, grads))


def main() -> None:
    for name in ("tiny-gpt2", "tiny-llama"):
        hf = AutoModelForCausalLM.from_pretrained(FIXTURES / "models" / name, dtype=torch.float64).eval()
        tl = tl_model(hf)
        tl32 = tl_model(hf).to(torch.float32)
        tl32.cfg.dtype = torch.float32
        d = tl.cfg.d_model
        gen = torch.Generator().manual_seed(23)
        vec = {k: torch.randn(d, generator=gen, dtype=torch.float64) for k in ("u1", "w", "u2", "u3")}
        tokens = torch.randint(0, tl.cfg.d_vocab, (BATCH, SEQ), generator=torch.Generator().manual_seed(SEED))
        out = {"tokens": tokens.to(torch.int32)}
        out.update({f"edit.{k}": v.float() for k, v in vec.items()})
        for case, edits in cases(vec).items():
            extra = EXTRA_HOOKS.get(case, [])
            values, grads = gradients(tl, tokens, edits, extra)
            _, grads32 = gradients(tl32, tokens, edits, extra)
            _, plain = gradients(tl, tokens, [], extra)
            out[f"{case}.value"] = values.float()
            worst = (0.0, "")
            for hook, g in grads.items():
                assert g.norm() > 0, (case, hook)
                err = ((grads32[hook].double() - g).norm() / g.norm()).item()
                worst = max(worst, (err, hook))
                out[f"{case}.grad.{hook}"] = g.float()
                out[f"{case}.f32_error.{hook}"] = torch.tensor([err], dtype=torch.float32)
            changed = [h for h in grads if not torch.allclose(grads[h], plain[h])]
            print(f"{name} {case}: values {values.tolist()}; gradients the edits change: {changed}; "
                  f"torch f32 worst {worst[0]:.2e} at {worst[1]}")
        dest = FIXTURES / "expected" / f"{name}.edit_gradients.safetensors"
        save_file({k: v.contiguous() for k, v in sorted(out.items())}, str(dest))
        print(f"  wrote {dest.relative_to(ROOT)} ({len(out)} tensors, {dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
