"""SAEs that fit the tiny GPT-2 fixture, and HookedSAETransformer's values with them spliced in.

Writes
  tests/fixtures/saes/service/res1_standard/   a standard SAE on blocks.1.hook_resid_pre
                                               (d_in 64 = d_model), saved by sae_lens
  tests/fixtures/saes/service/z0_jumprelu/     a jumprelu hook_z SAE on blocks.0.attn.hook_z
                                               (d_in 64 = 4 heads x 16), saved by sae_lens
  tests/fixtures/expected/tiny-gpt2.saes.safetensors, for each SAE S (prefix "S."):
    x                    the hook's value in a plain run (no SAE)
    acts                 sae.encode(x), [batch, pos, d_sae]
    splice.logits        logits with the SAE spliced in (use_error_term False) and
    splice.<hook>.hook_sae_*        every hook_sae_* value of that run (run_with_cache)
    error.logits         use_error_term True, no edits (equal to the plain run up to rounding)
    edit.logits          use_error_term True with EDITS (a hook on hook_sae_acts_post) and
    edit.<hook>.hook_sae_*          every hook_sae_* value of that run
    edit_no_error.logits the same edits without the error term
    steer.logits         no SAE; x[:, STEER_POSITION] += STEER_COEF * W_dec[STEER_FEATURE]
  The edits, steering and feature choices are in the file's metadata ("cases", JSON).
  tests/fixtures/saes/service/gemma_scope_res0/params.npz
                                               a Gemma Scope SAE (jumprelu, the npz keys and
                                               float32 layout of google/gemma-scope-*) on
                                               blocks.0.hook_resid_post of tiny-gemma2
  tests/fixtures/expected/tiny-gemma2.saes.safetensors
                                               the same values for it on tiny-gemma2, the SAE
                                               read by sae_lens's own Gemma Scope loader
                                               (gemma_2_sae_huggingface_loader, with the hub
                                               download pointed at the committed file)

The models are the committed tiny-gpt2 and tiny-gemma2 as HookedSAETransformers built like
make_fixtures.tl_model and make_arch_fixtures.tl_gemma (raw weights, float64); the SAEs' float32 weights are widened to float64 for the reference, and
values are stored as float32. Inputs: the committed "unpadded.input_ids" of each model. Weights are
redrawn until no firing decision (ReLU gate, JumpReLU threshold) is within MARGIN of flipping.

    /work/venv-ref/bin/python tests/reference/make_sae_service_fixtures.py  (+ pip install sae-lens==6.54.12)

Versions used for the committed fixtures: sae-lens 6.54.12, transformer-lens 3.9, torch 2.15.0.
"""
from __future__ import annotations

import json
import shutil
from unittest import mock
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from sae_lens import SAE, HookedSAETransformer, JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig
from sae_lens.loading import pretrained_sae_loaders
from sae_lens.saes.sae import SAEMetadata

sys.path.insert(0, str(Path(__file__).parent))
from make_arch_fixtures import tl_gemma  # noqa: E402
from make_fixtures import tl_model  # noqa: E402

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "saes" / "service"
D_SAE = 128
MARGIN = 1e-3
HOOK_POINTS = ("input", "acts_pre", "acts_post", "recons", "error", "output")


def make_sae(kind: str, hook: str, gen: torch.Generator):
    meta = SAEMetadata(hook_name=hook, model_name="tiny-gpt2", hook_head_index=None)
    common = dict(d_in=64, d_sae=D_SAE, dtype="float32", device="cpu", metadata=meta)
    if kind == "standard":
        sae = StandardSAE(StandardSAEConfig(**common))
    else:
        reshape = "hook_z" if hook.endswith("hook_z") else "none"
        sae = JumpReLUSAE(JumpReLUSAEConfig(**common, reshape_activations=reshape))
    with torch.no_grad():
        d_in = 64
        sae.W_enc.copy_(torch.randn(d_in, D_SAE, generator=gen) * d_in**-0.5 * 1.5)
        w_dec = torch.randn(D_SAE, d_in, generator=gen)
        w_dec *= (0.3 + 1.7 * torch.rand(D_SAE, 1, generator=gen)) / w_dec.norm(dim=-1, keepdim=True)
        sae.W_dec.copy_(w_dec)
        sae.b_dec.copy_(torch.randn(d_in, generator=gen) * 0.2)
        sae.b_enc.copy_(torch.randn(D_SAE, generator=gen) * 0.4 - 0.2)
        if kind == "jumprelu":
            sae.threshold.copy_(0.02 + 0.3 * torch.rand(D_SAE, generator=gen))
    return sae


def margin(sae, x: torch.Tensor) -> float:
    sae_in = x.reshape(*x.shape[:2], -1) - sae.b_dec
    pre = sae_in @ sae.W_enc + sae.b_enc
    if hasattr(sae, "threshold"):
        return float((pre - sae.threshold).abs().min())
    return float(pre.abs().min())


def edit_hook(edits):
    """A hook on hook_sae_acts_post applying `edits`, on a copy (autograd may need the original)."""
    def hook(acts, hook):  # noqa: ARG001
        acts = acts.clone()
        for e in edits:
            pos = slice(None) if e["position"] is None else e["position"]
            for f in e["features"]:
                if e["kind"] == "zero":
                    acts[:, pos, f] = 0.0
                elif e["kind"] == "clamp":
                    acts[:, pos, f] = e["value"]
                elif e["kind"] == "scale":
                    acts[:, pos, f] = acts[:, pos, f] * e["value"]
                elif e["kind"] == "add":
                    acts[:, pos, f] = acts[:, pos, f] + e["value"]
        return acts

    return hook


def hooked_sae_transformer(plain):
    model = HookedSAETransformer(plain.cfg)
    model.load_state_dict(plain.state_dict(), strict=False)
    return model.eval()


def draw(kind: str, hook: str, x: torch.Tensor, gen: torch.Generator, name: str):
    for _ in range(200):
        sae = make_sae(kind, hook, gen)
        if margin(sae.to(torch.float64), x) > MARGIN:
            return sae.to(torch.float32)
    raise RuntimeError(f"{name}: no draw without near-boundary decisions")


def record(model, ids, name: str, sae, hook: str, x, base_logits, out: dict, cases: dict) -> None:
    """HookedSAETransformer's values with `sae` (float64) spliced at `hook`, under prefix name."""
    acts = sae.encode(x)
    # Features that matter for this input: the most active ones, and one silent at
    # position 2 of row 0 (so that clamping it changes something).
    order = acts.reshape(-1, D_SAE).sum(0).argsort(descending=True).tolist()
    silent = next(f for f in order[3:] if acts[0, 2, f] == 0)
    edits = [
        {"kind": "zero", "features": [order[0]], "value": 0.0, "position": None},
        {"kind": "clamp", "features": [silent], "value": 4.0, "position": 2},
        {"kind": "scale", "features": [order[1]], "value": 3.0, "position": None},
    ]
    steer = {"feature": order[2], "coefficient": 3.0, "position": -1}
    cases[name] = {"hook": hook, "edits": edits, "steer": steer, "d_sae": D_SAE}
    p = f"{name}."
    out[p + "x"] = x
    out[p + "acts"] = acts

    def spliced(prefix, use_error_term, hooks):
        # use_error_term belongs to the wrapper HookedSAETransformer puts at the hook.
        with model.saes(saes=[sae], use_error_term=use_error_term):
            with model.hooks(fwd_hooks=hooks):
                logits, cache = model.run_with_cache(ids)
        out[prefix + "logits"] = logits
        for point in HOOK_POINTS:
            key = f"{hook}.hook_sae_{point}"
            if key in cache:
                out[prefix + key] = cache[key]

    spliced(p + "splice.", False, [])
    spliced(p + "error.", True, [])
    edit = [(f"{hook}.hook_sae_acts_post", edit_hook(edits))]
    spliced(p + "edit.", True, edit)
    with model.saes(saes=[sae], use_error_term=False):
        out[p + "edit_no_error.logits"] = model.run_with_hooks(ids, fwd_hooks=edit)
    direction = (steer["coefficient"] * sae.W_dec[steer["feature"]]).reshape(x.shape[2:])

    def steer_hook(value, hook):  # noqa: ARG001
        value[:, steer["position"]] += direction
        return value

    out[p + "steer.logits"] = model.run_with_hooks(ids, fwd_hooks=[(hook, steer_hook)])
    assert (out[p + "error.logits"] - base_logits).abs().max() < 1e-9, "error term is not exact"
    assert f"{p}edit.{hook}.hook_sae_error" in out, "the edit case lacks the error term"
    for case in ("splice", "edit", "edit_no_error", "steer"):
        assert (out[p + case + ".logits"] - base_logits).abs().max() > 1e-4, f"{name} {case} changed nothing"


def save(out: dict, cases: dict, model_name: str) -> None:
    path = FIXTURES / "expected" / f"{model_name}.saes.safetensors"
    save_file({k: v.to(torch.float32).contiguous() for k, v in out.items()}, path,
              metadata={"cases": json.dumps(cases)})
    print(f"wrote {path} ({path.stat().st_size} bytes): {json.dumps(cases)}")


def gpt2_saes(gen: torch.Generator) -> None:
    hf = AutoModelForCausalLM.from_pretrained(FIXTURES / "models" / "tiny-gpt2", dtype=torch.float64)
    model = hooked_sae_transformer(tl_model(hf))
    ids = load_file(FIXTURES / "expected" / "tiny-gpt2.safetensors")["unpadded.input_ids"]
    out: dict[str, torch.Tensor] = {}
    cases = {}
    with torch.no_grad():
        base_logits, base_cache = model.run_with_cache(ids)
        for name, kind, hook in (("res1_standard", "standard", "blocks.1.hook_resid_pre"),
                                 ("z0_jumprelu", "jumprelu", "blocks.0.attn.hook_z")):
            x = base_cache[hook]
            sae = draw(kind, hook, x, gen, name)
            sae.save_model(OUT / name)
            sae = SAE.load_from_disk(OUT / name, device="cpu").to(torch.float64)
            record(model, ids, name, sae, hook, x, base_logits, out, cases)
    save(out, cases, "tiny-gpt2")


def load_gemma_scope(path: Path, d_in: int):
    """The SAE exactly as sae_lens reads a Gemma Scope release: from_pretrained with its
    gemma_2_sae_huggingface_loader, the hub download answered by the local params.npz and the
    width/model the folder name would imply overridden to the tiny model's."""
    def converter(repo_id, folder_name, device, force_download, cfg_overrides):
        overrides = dict(cfg_overrides, d_in=d_in, d_sae=D_SAE, model_name="tiny-gemma2")
        with mock.patch.object(pretrained_sae_loaders, "hf_hub_download", return_value=str(path)):
            return pretrained_sae_loaders.gemma_2_sae_huggingface_loader(
                repo_id, folder_name, device, force_download, overrides)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = SAE.from_pretrained("google/gemma-scope-2b-pt-res", "layer_0/width_16k/average_l0_71",
                                  converter=converter)
    assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post", sae.cfg.metadata.hook_name
    assert not sae.cfg.apply_b_dec_to_input
    return sae


def gemma2_saes(gen: torch.Generator) -> None:
    hf = AutoModelForCausalLM.from_pretrained(FIXTURES / "models" / "tiny-gemma2",
                                              dtype=torch.float64, attn_implementation="eager")
    model = hooked_sae_transformer(tl_gemma(hf))
    ids = load_file(FIXTURES / "expected" / "tiny-gemma2.safetensors")["unpadded.input_ids"]
    out: dict[str, torch.Tensor] = {}
    cases = {}
    name, hook = "gemma_scope_res0", "blocks.0.hook_resid_post"
    with torch.no_grad():
        base_logits, base_cache = model.run_with_cache(ids)
        x = base_cache[hook]
        sae = draw("jumprelu", hook, x, gen, name)
        (OUT / name).mkdir(parents=True)
        # Gemma Scope's params.npz: float32 W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc,
        # b_dec, threshold.
        np.savez(OUT / name / "params.npz",
                 **{k: getattr(sae, k).detach().numpy() for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")})
        sae = load_gemma_scope(OUT / name / "params.npz", x.shape[-1]).to(torch.float64)
        if margin(sae, x) <= MARGIN:
            raise RuntimeError(f"{name}: the Gemma Scope SAE as sae_lens reads it is near a boundary")
        record(model, ids, name, sae, hook, x, base_logits, out, cases)
    save(out, cases, "tiny-gemma2")


def main() -> None:
    gen = torch.Generator().manual_seed(77)
    if OUT.exists():
        shutil.rmtree(OUT)
    gpt2_saes(gen)
    gemma2_saes(torch.Generator().manual_seed(78))


if __name__ == "__main__":
    main()
