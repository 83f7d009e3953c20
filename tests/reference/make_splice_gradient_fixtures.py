"""Reference gradients through SAEs spliced into the tiny GPT-2: torch autograd through
sae_lens's HookedSAETransformer.

The SAEs are the committed tests/fixtures/saes/service/{res1_standard, z0_jumprelu}
(make_sae_service_fixtures.py), read by sae_lens and widened to float64; the model is the
committed tiny-gpt2 as the HookedSAETransformer make_sae_service_fixtures.py builds (raw
weights, float64); the input is the committed "unpadded.input_ids" of tiny-gpt2.safetensors.

Cases (the edits are the ones tiny-gpt2.saes.safetensors's "cases" metadata names for res1):

  res1_edit   res1_standard at blocks.1.hook_resid_pre, use_error_term True, with the feature
              edits (zero, clamp at position 2, scale) as a hook on hook_sae_acts_post
  z0_splice   z0_jumprelu at blocks.0.attn.hook_z, use_error_term False, no edits

For each, one forward pass with the SAE spliced in and a forward hook keeping each listed hook's
output (for the spliced hook: its hook_sae_output, the value that replaces it), then
torch.autograd.grad of the sum over rows of logits[b, -1, 17] - logits[b, -1, 42]. sae_lens
computes the error term under torch.no_grad, so the gradient flows through the features only;
these files hold what that gives. The spliced hook's hook_sae_input, acts_pre, acts_post
(after the edits) and recons are kept too (<case>.grad.<hook>.hook_sae_*).

And each SAE alone (splice_backward below), for every architecture: sae_lens's SAE.forward with
use_error_term and the EDITS below on hook_sae_acts_post, on a random input x [2, 3, d_in]
(hook_z: [2, 3, heads, d_head]); the gradients of sum(output · r), r random, at hook_sae_input,
acts_pre, acts_post and recons (backward.<sae>.x, .r, .grad.<point>). The SAEs that normalise
each token (constant_norm_rescale, layer_norm) are among them: the gradient goes through the
norm's statistics too, as torch's does.

And attribution patching over res1's features (feature_attribution below): atp.clean,
atp.corrupted, atp.tokens (the metric's), atp.estimate [pos, d_sae], atp.metrics (clean and
corrupted mean metric), atp.error_estimate [pos] (the error term's node: (e_clean − e_corrupted) ·
the gradient at the SAE's output, which the error is added to).

Writes tests/fixtures/expected/tiny-gpt2.splice_gradients.safetensors: tokens, <case>.value [3],
<case>.grad.<hook>, atp.*, backward.* (float32 from float64). Deterministic.

    /work/venv-ref/bin/python tests/reference/make_splice_gradient_fixtures.py
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from sae_lens import SAE, HookedSAETransformer

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import tl_model  # noqa: E402
from make_sae_service_fixtures import edit_hook  # noqa: E402

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SAE_POINTS = ["hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons"]
# splice_backward's SAEs and feature edits (tests/sae/feature_gradient_test.cc makes the same):
# zero feature 3 everywhere, scale features 0-2 by 0.5 at position 1, clamp 7 to 1.5 at 2.
BACKWARD_SAES = ["standard", "jumprelu", "gated", "topk", "topk_rescale", "standard_hook_z",
                 "standard_constant_norm_rescale", "standard_layer_norm", "gated_layer_norm",
                 "topk_layer_norm", "jumprelu_hook_z_layer_norm"]
EDITS = [{"kind": "zero", "features": [3], "position": None, "value": 0.0},
         {"kind": "scale", "features": [0, 1, 2], "position": 1, "value": 0.5},
         {"kind": "clamp", "features": [7], "position": 2, "value": 1.5}]
HOOKS = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_v", "blocks.0.attn.hook_z",
         "blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]


def keeper(kept: dict[str, torch.Tensor]):
    """keep(name): a forward hook that stores its input in kept[name] and passes it on."""
    def keep(name):
        def hook(x, hook):  # noqa: ARG001
            kept[name] = x
            return x
        return hook
    return keep


def gradients(model, ids, sae, spliced_hook, use_error_term, edits):
    kept: dict[str, torch.Tensor] = {}
    keep = keeper(kept)
    fwd = []
    if edits:
        fwd.append((f"{spliced_hook}.hook_sae_acts_post", edit_hook(edits)))
    for name in HOOKS:
        fwd.append((f"{name}.hook_sae_output" if name == spliced_hook else name, keep(name)))
    points = [f"{spliced_hook}.{p}" for p in SAE_POINTS]
    fwd += [(p, keep(p)) for p in points]
    with model.saes(saes=[sae], use_error_term=use_error_term):
        with model.hooks(fwd_hooks=fwd):
            logits = model(ids)
    values = logits[:, -1, 17] - logits[:, -1, 42]
    grads = torch.autograd.grad(values.sum(), [kept[h] for h in HOOKS + points])
    return values.detach(), dict(zip(HOOKS + points, grads))


def splice_backward() -> dict[str, torch.Tensor]:
    """Each SAE alone, as the docstring says."""
    gen = torch.Generator().manual_seed(23)
    out = {}
    for name in BACKWARD_SAES:
        sae = SAE.load_from_disk(FIXTURES / "saes" / name, device="cpu").to(torch.float64)
        sae.use_error_term = True
        hook_z = sae.cfg.reshape_activations == "hook_z"
        shape = (2, 3, 4, sae.cfg.d_in // 4) if hook_z else (2, 3, sae.cfg.d_in)
        x = torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(True)
        r = torch.randn(*shape, generator=gen, dtype=torch.float64)
        kept: dict[str, torch.Tensor] = {}
        keep = keeper(kept)
        fwd = [("hook_sae_acts_post", edit_hook(EDITS))] + [(p, keep(p)) for p in SAE_POINTS]
        with sae.hooks(fwd_hooks=fwd):
            y = sae(x)
        grads = torch.autograd.grad((y * r).sum(), [kept[p] for p in SAE_POINTS])
        out[f"backward.{name}.x"] = x.detach().float()
        out[f"backward.{name}.r"] = r.float()
        for p, g in zip(SAE_POINTS, grads):
            out[f"backward.{name}.grad.{p}"] = g.float()
        fired = int((kept["hook_sae_acts_post"] != 0).sum())
        print(f"splice backward {name}: {fired} activations nonzero after the edits")
    return out


def feature_attribution(model) -> dict[str, torch.Tensor]:
    """Attribution patching over res1's features: the clean and corrupted prompts and metric of
    tiny-gpt2.patching.safetensors, res1 spliced in with the error term; estimate[p, i] =
    sum over pairs of (f_clean - f_corrupted)[b, p, i] * d mean_b(metric) / d f[b, p, i] at the
    corrupted run, and the same for the error term at each position."""
    ref = load_file(FIXTURES / "expected" / "tiny-gpt2.patching.safetensors")
    clean, corrupted = ref["clean"].long(), ref["corrupted"].long()
    a, b = (int(t) for t in ref["tokens"])
    sae = SAE.load_from_disk(FIXTURES / "saes" / "service" / "res1_standard", device="cpu").to(torch.float64)
    base = "blocks.1.hook_resid_pre"
    points = [f"{base}.hook_sae_acts_post", f"{base}.hook_sae_error", f"{base}.hook_sae_output"]
    kept: dict[str, torch.Tensor] = {}
    keep = keeper(kept)
    hooks = [(p, keep(p)) for p in points]

    with model.saes(saes=[sae], use_error_term=True):
        with model.hooks(fwd_hooks=hooks):
            clean_logits = model(clean)
        f_clean, e_clean = (kept[p].detach() for p in points[:2])
        with model.hooks(fwd_hooks=hooks):
            logits = model(corrupted)
    metric = (logits[:, -1, a] - logits[:, -1, b]).mean()
    # The error is added to the SAE's output, so its gradient is the output's.
    grad, grad_out = torch.autograd.grad(metric, [kept[points[0]], kept[points[2]]])
    estimate = ((f_clean - kept[points[0]].detach()) * grad).sum(0)
    error_estimate = ((e_clean - kept[points[1]].detach()) * grad_out).sum((0, 2))
    clean_metric = (clean_logits[:, -1, a] - clean_logits[:, -1, b]).mean()
    top = estimate.abs().flatten().argsort(descending=True)[:3].tolist()
    print(f"feature attribution: metric clean {clean_metric.item():.4f}, corrupted {metric.item():.4f}; "
          f"largest cells (pos, feature): {[divmod(i, estimate.shape[1]) for i in top]}")
    return {"atp.clean": clean.to(torch.int32), "atp.corrupted": corrupted.to(torch.int32),
            "atp.tokens": torch.tensor([a, b], dtype=torch.int32),
            "atp.estimate": estimate.float(), "atp.error_estimate": error_estimate.float(),
            "atp.metrics": torch.tensor([clean_metric.item(), metric.item()], dtype=torch.float32)}


def main() -> None:
    hf = AutoModelForCausalLM.from_pretrained(FIXTURES / "models" / "tiny-gpt2", dtype=torch.float64)
    plain = tl_model(hf)
    model = HookedSAETransformer(plain.cfg)
    model.load_state_dict(plain.state_dict(), strict=False)
    model.eval()
    ids = load_file(FIXTURES / "expected" / "tiny-gpt2.safetensors")["unpadded.input_ids"]
    with safe_open(FIXTURES / "expected" / "tiny-gpt2.saes.safetensors", "pt") as f:
        cases = json.loads(f.metadata()["cases"])
    out = {"tokens": ids.to(torch.int32)}
    for case, name, use_error_term, edits in (
            ("res1_edit", "res1_standard", True, cases["res1_standard"]["edits"]),
            ("z0_splice", "z0_jumprelu", False, [])):
        sae = SAE.load_from_disk(FIXTURES / "saes" / "service" / name, device="cpu").to(torch.float64)
        hook = cases[name]["hook"]
        values, grads = gradients(model, ids, sae, hook, use_error_term, edits)
        _, plain_grads = gradients(model, ids, sae, hook, use_error_term, []) if edits else (None, grads)
        out[f"{case}.value"] = values.float()
        for h, g in grads.items():
            assert g.norm() > 0, (case, h)
            out[f"{case}.grad.{h}"] = g.float()
        changed = [h for h in grads if not torch.allclose(grads[h], plain_grads[h])]
        print(f"{case}: {name} at {hook}, error term {use_error_term}, edits {edits}; "
              f"values {values.tolist()}; gradients the edits change: {changed}")
    out.update(feature_attribution(model))
    out.update(splice_backward())
    dest = FIXTURES / "expected" / "tiny-gpt2.splice_gradients.safetensors"
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, str(dest))
    print(f"wrote {dest.relative_to(ROOT)} ({len(out)} tensors, {dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
