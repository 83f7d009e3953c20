"""Tiny sparse autoencoders built and saved by sae_lens itself, with sae_lens's outputs on them.

Writes, under tests/fixtures/saes/:
  <case>/                SAE directories exactly as sae_lens writes them (SAE.save_model: cfg.json in
                         the v6 layout + sae_weights.safetensors), a few rewritten into the older flat
                         cfg.json layout, and Gemma-Scope-style params.npz files (np.savez and
                         np.savez_compressed, keys as in google/gemma-scope-*)
  expected/<case>.safetensors
                         sae_lens's values for the committed input "x" (see EXPECTED below); the edits
                         of the spliced run are in the file's metadata ("edits", JSON)
  manifest.json          the cases: directory, loader options, what the reference did

Every architecture (standard, jumprelu, gated, topk with and without rescale_acts_by_decoder_norm)
and every normalize_activations mode (none, constant_norm_rescale, layer_norm,
expected_average_only_in with and without a scaling factor) appears, plus apply_b_dec_to_input
false, a hook_z SAE, bf16 weights, and legacy configs. Weights are random but not trivial (biases,
thresholds, decoder norms and r_mag all nonzero and varied), and each case is re-drawn until no
decision (ReLU gate, JumpReLU threshold, top-k boundary) lies within MARGIN of flipping, so fp32
rounding differences between implementations cannot change which features fire.

    python3 -m venv /work/venv-sae && /work/venv-sae/bin/pip install sae-lens==6.54.12
    /work/venv-sae/bin/python tests/reference/make_sae_fixtures.py

Versions used for the committed fixtures: sae-lens 6.54.12, torch 2.15.0, transformer-lens 3.9.0,
numpy 2.4.6, safetensors 0.8.0 (Python 3.11).
"""
from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import sae_lens
from sae_lens import (
    GatedSAE,
    GatedSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    SAE,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.evals import ExplainedVarianceCalculator
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.activation_scaler import ActivationScaler

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "saes"
D_IN = 32
D_SAE = 96
BATCH, POS = 2, 5
N_HEADS, D_HEAD = 4, 8  # hook_z cases: D_IN = N_HEADS * D_HEAD
MARGIN = 2e-4
HOOK = "blocks.1.hook_resid_pre"
HOOK_Z = "blocks.1.attn.hook_z"

# Names of the tensors in expected/<case>.safetensors.
EXPECTED = """
x              the input, [BATCH, POS, D_IN] (hook_z: [BATCH, POS, N_HEADS, D_HEAD])
sae_in         hook_sae_input (after hook_z flattening, before normalisation)
acts_pre       hook_sae_acts_pre
acts_post      sae.encode(x) == hook_sae_acts_post
recons         hook_sae_recons (before the output normalisation is undone)
reconstruct    sae.decode(sae.encode(x)) == sae(x) without the error term
output_error   sae(x) with use_error_term (no edits)
edited.*       the edits in metadata applied by a hook on hook_sae_acts_post, use_error_term:
               every hook_sae_* value from run_with_cache (hook_sae_input ... hook_sae_output)
edited_no_error.output   the same edits without the error term
decode_in, decode_out    sae.decode(decode_in) right after sae.encode(x) (random sparse acts;
               input-dependent normalisations use x's statistics)
stats          [explained_variance (sae_lens ExplainedVarianceCalculator, mean over all tokens),
                mean L0, MSE (mean over tokens and dims)] of reconstruct vs x
"""


def rand(gen, *shape, scale=1.0, mean=0.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float32) * scale + mean


def fill_weights(sae, gen):
    """Random, non-trivial weights for every parameter the architecture has."""
    with torch.no_grad():
        sae.W_enc.copy_(rand(gen, D_IN, D_SAE, scale=D_IN**-0.5 * 1.5))
        # Decoder rows with norms spread over [0.3, 2] so decoder-norm rescaling matters.
        w_dec = rand(gen, D_SAE, D_IN)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        w_dec *= 0.3 + 1.7 * torch.rand(D_SAE, 1, generator=gen)
        sae.W_dec.copy_(w_dec)
        sae.b_dec.copy_(rand(gen, D_IN, scale=0.5))
        for name in ("b_enc", "b_gate", "b_mag"):
            p = getattr(sae, name, None)
            if isinstance(p, torch.nn.Parameter):
                p.copy_(rand(gen, D_SAE, scale=0.4, mean=-0.2))
        if hasattr(sae, "r_mag") and isinstance(sae.r_mag, torch.nn.Parameter):
            sae.r_mag.copy_(rand(gen, D_SAE, scale=0.4))
        if hasattr(sae, "threshold") and isinstance(sae.threshold, torch.nn.Parameter):
            sae.threshold.copy_(0.05 + 0.6 * torch.rand(D_SAE, generator=gen))


def make_input(gen, hook_z: bool):
    offset = rand(gen, D_IN, scale=1.5)
    x = rand(gen, BATCH, POS, D_IN, scale=2.0) + offset
    if hook_z:
        x = x.reshape(BATCH, POS, N_HEADS, D_HEAD)
    return x


def decision_margin(sae, x) -> float:
    """Smallest distance of any firing decision from its boundary for input x."""
    cache = {}
    with torch.no_grad():
        _, cache = sae.run_with_cache(x)
    sae_in = cache["hook_sae_input"]
    sae_in = sae.run_time_activation_norm_fn_in(sae_in) - sae.b_dec * sae.cfg.apply_b_dec_to_input
    arch = sae.cfg.architecture()
    if arch == "jumprelu":
        pre = sae_in @ sae.W_enc + sae.b_enc
        return float((pre - sae.threshold).abs().min())
    if arch == "gated":
        return float((sae_in @ sae.W_enc + sae.b_gate).abs().min())
    if arch == "topk":
        pre = sae_in @ sae.W_enc + sae.b_enc
        if sae.cfg.rescale_acts_by_decoder_norm:
            pre = pre * sae.W_dec.norm(dim=-1)
        top = pre.sort(dim=-1, descending=True).values
        k = sae.cfg.k
        return float((top[..., k - 1] - top[..., k]).min())
    return float("inf")


def pick_edits(acts_post: torch.Tensor):
    """Edits on features that matter for this input: the most and second most active ones, one
    feature that is active somewhere, and one that is silent at token 7."""
    flat = acts_post.reshape(-1, D_SAE)
    total = flat.sum(0)
    order = total.argsort(descending=True).tolist()
    silent_at_7 = [f for f in order if flat[7, f] == 0 and f not in order[:3]]
    return [
        {"kind": "zero", "features": [order[0]], "value": 0.0, "tokens": []},
        {"kind": "clamp", "features": [order[2]], "value": 3.0, "tokens": [1, 4]},
        {"kind": "scale", "features": [order[1], order[3]], "value": 2.5, "tokens": []},
        {"kind": "add", "features": [silent_at_7[0]], "value": 1.5, "tokens": [7]},
    ]


def edit_hook(edits):
    def hook(acts, hook):  # noqa: ARG001
        flat = acts.reshape(-1, acts.shape[-1])
        for e in edits:
            rows = e["tokens"] or list(range(flat.shape[0]))
            for t in rows:
                for f in e["features"]:
                    if e["kind"] == "zero":
                        flat[t, f] = 0.0
                    elif e["kind"] == "clamp":
                        flat[t, f] = e["value"]
                    elif e["kind"] == "scale":
                        flat[t, f] = flat[t, f] * e["value"]
                    elif e["kind"] == "add":
                        flat[t, f] = flat[t, f] + e["value"]
        return flat.reshape(acts.shape)

    return hook


def reference(sae: SAE, x: torch.Tensor, gen) -> tuple[dict[str, torch.Tensor], list]:
    out: dict[str, torch.Tensor] = {"x": x}
    with torch.no_grad():
        sae.use_error_term = False
        _, cache = sae.run_with_cache(x)
        for hook in ("input", "acts_pre", "recons"):
            out[{"input": "sae_in"}.get(hook, hook)] = cache[f"hook_sae_{hook}"]
        out["acts_post"] = sae.encode(x)
        out["reconstruct"] = sae.decode(sae.encode(x))
        assert torch.equal(out["reconstruct"], sae(x))
        assert torch.equal(out["acts_post"], cache["hook_sae_acts_post"])

        sae.use_error_term = True
        out["output_error"] = sae(x)

        edits = pick_edits(out["acts_post"])
        # hooks() scopes the edit hook to the block (run_with_cache only resets its own level).
        with sae.hooks(fwd_hooks=[("hook_sae_acts_post", edit_hook(edits))]):
            _, cache = sae.run_with_cache(x)
        for name, value in cache.items():
            out["edited." + name] = value
        sae.use_error_term = False
        with sae.hooks(fwd_hooks=[("hook_sae_acts_post", edit_hook(edits))]):
            out["edited_no_error.output"] = sae(x)
        assert not sae.hook_sae_acts_post._forward_hooks, "edit hook leaked"
        # Self-checks: the edited run is decode(edited acts) (+ the clean error).
        sae.encode(x)  # input-dependent normalisations keep x's statistics for decode
        recon_edited = sae.decode(out["edited.hook_sae_acts_post"])
        assert torch.allclose(recon_edited, out["edited_no_error.output"], atol=1e-5)
        assert torch.allclose(recon_edited + x - out["reconstruct"], out["edited.hook_sae_output"],
                              atol=1e-4)
        assert not torch.equal(out["edited.hook_sae_acts_post"], out["acts_post"])

        # Random sparse non-negative acts; decode right after encode(x) so that input-dependent
        # normalisations (constant_norm_rescale, layer_norm) use x's statistics.
        acts = torch.rand(BATCH * POS, D_SAE, generator=gen) * 2
        acts[torch.rand(BATCH * POS, D_SAE, generator=gen) < 0.85] = 0
        acts = acts.reshape(BATCH, POS, D_SAE)
        sae.encode(x)
        out["decode_in"] = acts
        out["decode_out"] = sae.decode(acts)

        flat_x = x.reshape(-1, D_IN)
        flat_r = out["reconstruct"].reshape(-1, D_IN)
        ev = ExplainedVarianceCalculator()
        ev.add_batch(sae_output=flat_r, hidden_acts=flat_x)
        l0 = (out["acts_post"] != 0).sum(-1).float().mean()
        mse = (flat_x - flat_r).pow(2).mean()
        out["stats"] = torch.tensor([ev.compute(), float(l0), float(mse)], dtype=torch.float32)
    return {k: v.float().clone().contiguous() for k, v in out.items()}, edits


def build(arch: str, gen, *, normalize="none", apply_b_dec=True, hook_z=False, **kw) -> SAE:
    classes = {
        "standard": (StandardSAE, StandardSAEConfig),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
        "gated": (GatedSAE, GatedSAEConfig),
        "topk": (TopKSAE, TopKSAEConfig),
    }
    sae_cls, cfg_cls = classes[arch]
    cfg = cfg_cls(
        d_in=D_IN,
        d_sae=D_SAE,
        apply_b_dec_to_input=apply_b_dec,
        normalize_activations=normalize,
        reshape_activations="hook_z" if hook_z else "none",
        metadata=SAEMetadata(
            hook_name=HOOK_Z if hook_z else HOOK, model_name="tiny-gpt2", hook_head_index=None,
            context_size=128, prepend_bos=True),
        **kw,
    )
    sae = sae_cls(cfg)
    fill_weights(sae, gen)
    return sae


def draw(arch, seed, *, hook_z=False, transform=None, **kw):
    """Builds an SAE and input with every decision at least MARGIN from its boundary."""
    for attempt in range(200):
        gen = torch.Generator().manual_seed(seed * 1000 + attempt)
        sae = build(arch, gen, hook_z=hook_z, **kw)
        x = make_input(gen, hook_z)
        ref_sae = transform(sae) if transform else sae
        if decision_margin(ref_sae, x) > MARGIN:
            return sae, x, gen
    raise RuntimeError(f"no draw with margin {MARGIN} for {arch} {kw}")


def folded(factor):
    def f(sae):
        s = copy.deepcopy(sae)
        s.fold_activation_norm_scaling_factor(factor)
        return s
    return f


def legacy_cfg(cfg: dict, *, topk_style=False) -> dict:
    """The pre-6.0 flat cfg.json layout (hook_point, activation_fn_str, dtype 'torch.float32',
    no metadata, normalize_activations as a bool) of sae_lens 2.x-5.x."""
    md = cfg["metadata"]
    old = {
        "model_name": md["model_name"],
        "hook_point": md["hook_name"],
        "hook_point_layer": 1,
        "hook_point_head_index": None,
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "dtype": "torch.float32",
        "device": "cpu",
        "apply_b_dec_to_input": cfg["apply_b_dec_to_input"],
        "normalize_activations": False,
        "activation_fn_str": "relu",
        "activation_fn_kwargs": {},
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": "3.5.0",
        "context_size": 128,
        "prepend_bos": True,
    }
    if topk_style:
        # sae_lens 4.x/5.x: topk expressed as an activation function of a "standard" SAE.
        old.pop("activation_fn_str")
        old["activation_fn"] = "topk"
        old["activation_fn_kwargs"] = {"k": cfg["k"]}
        old["hook_name"] = old.pop("hook_point")
        old["normalize_activations"] = "none"
        old["sae_lens_version"] = "5.9.1"
    return old


def save_case(name: str, sae: SAE, x, gen, manifest, *, transform=None, options=None,
              note="", after_save=None, load_dtype=None):
    """Saves `sae` with sae_lens's save_model, reloads it with sae_lens's load_from_disk (so the
    reference is what sae_lens itself makes of the files), applies `transform` (e.g. folding a
    norm scaling factor, as from_pretrained does) and records the reference values."""
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    sae.save_model(d)
    if after_save:
        after_save(d)
    ref = SAE.load_from_disk(d, dtype=load_dtype)
    if transform:
        ref = transform(ref)
    if decision_margin(ref, x) <= MARGIN:
        raise RuntimeError(f"{name}: reloaded SAE is within {MARGIN} of a decision boundary")
    values, edits = reference(ref, x, gen)
    (OUT / "expected").mkdir(parents=True, exist_ok=True)
    save_file(values, OUT / "expected" / f"{name}.safetensors",
              metadata={"edits": json.dumps(edits), "note": note})
    manifest.append({"name": name, "path": name, "options": options or {},
                     "architecture": ref.cfg.architecture(),
                     "normalize_activations": sae.cfg.normalize_activations, "note": note})


def gemma_scope_case(name, seed, manifest, *, compressed, embedding=False):
    """params.npz as Gemma Scope ships it; the reference mirrors sae_lens's
    gemma_2_sae_huggingface_loader (jumprelu, apply_b_dec_to_input False, no normalisation,
    embedding SAEs rescaled by sqrt(d_in))."""
    sae, x, gen = draw("jumprelu", seed, apply_b_dec=False)
    params = {k: v.detach().numpy() for k, v in sae.state_dict().items()}
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (np.savez_compressed if compressed else np.savez)(d / "params.npz", **params)
    ref = copy.deepcopy(sae)
    if embedding:
        with torch.no_grad():
            ref.W_enc.data = ref.W_enc.data / np.sqrt(D_IN)
            ref.W_dec.data = ref.W_dec.data * np.sqrt(D_IN)
        if decision_margin(ref, x) <= MARGIN:
            raise RuntimeError("embedding rescale broke the margin; change the seed")
    values, edits = reference(ref, x, gen)
    save_file(values, OUT / "expected" / f"{name}.safetensors",
              metadata={"edits": json.dumps(edits), "note": "gemma scope npz"})
    options = {"hook_name": HOOK, "model_name": "tiny-gemma"}
    if embedding:
        options["gemma_scope_embedding"] = True
    manifest.append({"name": name, "path": f"{name}/params.npz", "options": options,
                     "architecture": "jumprelu", "normalize_activations": "none",
                     "note": "np.savez_compressed" if compressed else "np.savez"})


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    manifest: list = []

    # One case per architecture with no normalisation.
    for seed, arch, kw in [
        (1, "standard", {}),
        (2, "jumprelu", {}),
        (3, "gated", {}),
        (4, "topk", {"k": 8}),
        (5, "topk", {"k": 8, "rescale_acts_by_decoder_norm": True}),
    ]:
        name = f"{arch}" + ("_rescale" if kw.get("rescale_acts_by_decoder_norm") else "")
        sae, x, gen = draw(arch, seed, **kw)
        save_case(name, sae, x, gen, manifest)

    # Every normalisation mode, spread over the architectures.
    for seed, arch, norm, kw in [
        (11, "standard", "constant_norm_rescale", {}),
        (12, "standard", "layer_norm", {}),
        (13, "jumprelu", "constant_norm_rescale", {}),
        (14, "gated", "layer_norm", {}),
        (15, "topk", "layer_norm", {"k": 8, "rescale_acts_by_decoder_norm": True}),
        (16, "topk", "constant_norm_rescale", {"k": 5}),
        (17, "jumprelu", "layer_norm", {}),
    ]:
        sae, x, gen = draw(arch, seed, normalize=norm, **kw)
        save_case(f"{arch}_{norm}", sae, x, gen, manifest)

    # expected_average_only_in: the scaling factor from activation_scaler.json (what the sae_lens
    # trainer writes beside a checkpoint), from the loader's options, or absent (sae_lens then
    # runs the SAE unscaled, as load_from_disk does).
    factor = 0.37
    sae, x, gen = draw("standard", 21, normalize="expected_average_only_in",
                            transform=folded(factor))
    save_case("standard_expected_average_scaler_json", sae, x, gen, manifest,
              transform=folded(factor),
              after_save=lambda d: ActivationScaler(scaling_factor=factor).save(
                  str(d / "activation_scaler.json")),
              note="folded with activation_scaler.json's factor, as from_pretrained folds")
    factor2 = 2.6
    sae, x, gen = draw("gated", 22, normalize="expected_average_only_in",
                            transform=folded(factor2))
    save_case("gated_expected_average_option", sae, x, gen, manifest,
              transform=folded(factor2),
              options={"norm_scaling_factor": factor2},
              note="folded with the factor given as a load option")
    sae, x, gen = draw("jumprelu", 23, normalize="expected_average_only_in")
    save_case("jumprelu_expected_average_no_factor", sae, x, gen, manifest,
              note="no factor anywhere: sae_lens runs it unscaled")
    sae, x, gen = draw("topk", 24, normalize="expected_average_only_in", k=6,
                            rescale_acts_by_decoder_norm=True, transform=folded(factor))
    save_case("topk_expected_average_scaler_json", sae, x, gen, manifest,
              transform=folded(factor),
              after_save=lambda d: ActivationScaler(scaling_factor=factor).save(
                  str(d / "activation_scaler.json")))

    # apply_b_dec_to_input false; hook_z.
    sae, x, gen = draw("standard", 31, apply_b_dec=False)
    save_case("standard_no_b_dec_in", sae, x, gen, manifest)
    sae, x, gen = draw("standard", 32, hook_z=True)
    save_case("standard_hook_z", sae, x, gen, manifest)
    sae, x, gen = draw("jumprelu", 33, hook_z=True, normalize="layer_norm")
    save_case("jumprelu_hook_z_layer_norm", sae, x, gen, manifest)

    # bf16 weights: the reference is sae_lens loading them as float32.
    sae, x, gen = draw("jumprelu", 41, transform=lambda s: s.to(torch.bfloat16).to(torch.float32))
    sae = sae.to(torch.bfloat16)
    save_case("jumprelu_bf16", sae, x, gen, manifest, load_dtype="float32",
              note="weights stored as bf16; computed in float32")

    # Legacy flat cfg.json layouts, loaded by sae_lens's handle_pre_6_0_config.
    def rewrite(topk_style):
        def f(d):
            cfg = json.loads((d / "cfg.json").read_text())
            (d / "cfg.json").write_text(json.dumps(legacy_cfg(cfg, topk_style=topk_style)))
        return f

    sae, x, gen = draw("standard", 51)
    save_case("legacy_standard", sae, x, gen, manifest, after_save=rewrite(False),
              note="sae_lens 3.x flat cfg.json")
    sae, x, gen = draw("topk", 52, k=7)
    save_case("legacy_topk", sae, x, gen, manifest, after_save=rewrite(True),
              note="sae_lens 5.x cfg.json with activation_fn topk")

    gemma_scope_case("gemma_scope_npz", 61, manifest, compressed=False)
    gemma_scope_case("gemma_scope_npz_deflate", 62, manifest, compressed=True)
    gemma_scope_case("gemma_scope_embedding_npz", 63, manifest, compressed=False, embedding=True)

    (OUT / "manifest.json").write_text(json.dumps({
        "versions": {"sae_lens": sae_lens.__version__, "torch": torch.__version__,
                     "numpy": np.__version__},
        "d_in": D_IN, "d_sae": D_SAE, "expected_tensors": EXPECTED.strip(),
        "cases": manifest}, indent=1) + "\n")
    print(f"wrote {len(manifest)} cases to {OUT}")


if __name__ == "__main__":
    main()
