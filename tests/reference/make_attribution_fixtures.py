"""Reference attribution patching (AtP: Nanda 2023; Kramar et al. 2024) for every sweep kind.

For tiny-gpt2 (tests/fixtures/models/tiny-gpt2) and the shipped demo model (models/demo), loads
the HF model in float64, builds a HookedTransformer from the same weights without processing
(`make_fixtures.tl_model`, as make_patching_fixtures.py does), and builds the same two prompt
pairs as make_patching_fixtures.py:

  gen = torch.Generator().manual_seed(7)
  clean = randint(0, d_vocab, (2, 7), gen); corrupted = clean.clone()
  corrupted[:, 2] = randint(0, d_vocab, (2,), gen); corrupted[:, 5] = randint(0, d_vocab, (2,), gen)

Metrics. Each is a per-row value m_b of the logits of a run (and, for `loss`, of the tokens that
run was given); the metric M of a run is the MEAN over the 2 rows (pairs):

  logit_diff  logits[b, -1, 17] - logits[b, -1, 42]
  log_prob    log_softmax(logits[b, -1, :])[17]
  loss        mean over t = 0..5 of -log_softmax(logits[b, t, :])[tokens[b, t + 1]], where tokens
              are the run's own input tokens (the corrupted tokens on the corrupted and on every
              patched run): TransformerLens's per-row mean next-token loss, then the mean over rows

AtP estimate of M(patched) - M(corrupted) for patching a cell (a set of activation elements) from
the clean run into the corrupted run:

  atp[cell] = sum over the cell's elements e, and over both rows, of
              (clean_act[e] - corrupted_act[e]) * dM/dact[e]   (gradient on the CORRUPTED run)

where clean_act / corrupted_act come from run_with_cache and the gradient is torch.autograd.grad
of M (which already holds the 1/2 of the mean over rows) with respect to the hook point's forward
activation on the corrupted run. Not normalized; positive = patching raises the metric. Kinds:

  resid_pre, resid_mid,     blocks.L.hook_resid_pre / hook_resid_mid / hook_resid_post /
  resid_post, attn_out,     hook_attn_out / hook_mlp_out [batch, pos, d_model]
  mlp_out                   -> [n_layers, pos], summed over d_model
  head_out_all_pos          blocks.L.attn.hook_z [batch, pos, head, d_head] -> [n_layers, n_heads]
  head_out_by_pos           blocks.L.attn.hook_z -> [n_layers, pos, n_heads]
  q_all_pos, k_all_pos,     blocks.L.attn.hook_q / hook_k / hook_v [batch, pos, head, d_head]
  v_all_pos                 -> [n_layers, n_heads], summed over pos and d_head
  pattern_all_pos           blocks.L.attn.hook_pattern [batch, head, q, k] -> [n_layers, n_heads],
                            summed over q and k
  mlp_post_all_pos          blocks.L.mlp.hook_post [batch, pos, d_mlp] -> [n_layers, d_mlp],
                            summed over pos

Exact patching for mlp_post_all_pos (logit_diff only; the exact values of the other kinds are in
tiny-gpt2.patching.safetensors): for each layer L and neuron n, the corrupted tokens are run with
a forward hook on blocks.L.mlp.hook_post that sets act[:, :, n] = clean_act[:, :, n] (every
position, both rows), and the patched metric M is recorded (not minus the corrupted metric: the
convention of the patching fixture's `.values`).

Writes tests/fixtures/expected/<model>.attribution.safetensors (every float tensor float32,
computed in float64; int tensors int32):

  clean, corrupted                    int32 [2, 7]
  <metric>.clean_metric               float32 [1], M on the clean run
  <metric>.corrupted_metric           float32 [1], M on the corrupted run
  <metric>.<kind>.atp                 float32, shape as listed above
  <metric>.<kind>.f32_error           float32 [1]: ||atp32 - atp64|| / ||atp64||, where atp32 is
                                      the same AtP map computed by torch on the model in float32:
                                      the precision an f32 engine can be held to
  logit_diff.mlp_post_all_pos.exact   float32 [n_layers, d_mlp], patched M

and one header metadata entry, "metrics": json.dumps(METRICS, sort_keys=True) (a single entry
because safetensors writes several in a random order and the files should be byte-identical from
run to run).

Self-checks (printed, asserted where exact): the layer-0 resid_pre AtP is exactly 0 at the
positions where clean and corrupted tokens agree in both rows; its sum over positions equals
dM/dalpha at alpha = 0 for hook_embed replaced by embed(corrupted) + alpha * (W_E[clean] -
W_E[corrupted]) (an independent path through the embedding matrix), to 1e-10; the corrupted
activations kept for the gradient equal run_with_cache's; `loss` equals TransformerLens's
return_type="loss" on the clean run; the Spearman correlation of
logit_diff AtP + corrupted metric with the exact patched metrics (tiny-gpt2.patching.safetensors
for the kinds it holds, and mlp_post_all_pos.exact for both models) is printed, not asserted
(tiny random models need not be close to linear).

The output is deterministic (fixed seed, single-threaded torch): re-running gives byte-identical
files with the same library versions (torch 2.15.0, transformers 5.23.0, transformer_lens 3.9.0,
safetensors 0.8.0).

    /work/venv-ref/bin/python tests/reference/make_attribution_fixtures.py
"""
from __future__ import annotations

import importlib.metadata as md
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import tl_model  # noqa: E402  (also sets single-threaded, deterministic torch)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = {
    "tiny-gpt2": FIXTURES / "models" / "tiny-gpt2",
    "demo": ROOT / "models" / "demo",
}
TOKEN_A, TOKEN_B = 17, 42
METRICS = {
    "logit_diff": {"kind": "logit_diff", "position": -1, "token_a": TOKEN_A, "token_b": TOKEN_B,
                   "reduce": "mean over rows"},
    "log_prob": {"kind": "log_prob", "position": -1, "token": TOKEN_A, "reduce": "mean over rows"},
    "loss": {"kind": "loss", "positions": "mean over t=0..5 of -log_softmax(logits[b,t])[tokens[b,t+1]]",
             "targets": "the run's own input tokens", "reduce": "mean over rows"},
}
# kind -> (hook name with {l}, function from the per-element product [batch, ...] to the cell map
# of one layer).
KINDS = {
    "resid_pre": ("blocks.{l}.hook_resid_pre", lambda p: p.sum((0, 2))),
    "resid_mid": ("blocks.{l}.hook_resid_mid", lambda p: p.sum((0, 2))),
    "resid_post": ("blocks.{l}.hook_resid_post", lambda p: p.sum((0, 2))),
    "attn_out": ("blocks.{l}.hook_attn_out", lambda p: p.sum((0, 2))),
    "mlp_out": ("blocks.{l}.hook_mlp_out", lambda p: p.sum((0, 2))),
    "head_out_all_pos": ("blocks.{l}.attn.hook_z", lambda p: p.sum((0, 1, 3))),
    "head_out_by_pos": ("blocks.{l}.attn.hook_z", lambda p: p.sum((0, 3))),
    "q_all_pos": ("blocks.{l}.attn.hook_q", lambda p: p.sum((0, 1, 3))),
    "k_all_pos": ("blocks.{l}.attn.hook_k", lambda p: p.sum((0, 1, 3))),
    "v_all_pos": ("blocks.{l}.attn.hook_v", lambda p: p.sum((0, 1, 3))),
    "pattern_all_pos": ("blocks.{l}.attn.hook_pattern", lambda p: p.sum((0, 2, 3))),
    "mlp_post_all_pos": ("blocks.{l}.mlp.hook_post", lambda p: p.sum((0, 1))),
}


def metric(logits: torch.Tensor, tokens: torch.Tensor, name: str) -> torch.Tensor:
    """M: the per-row metric averaged over the rows (a scalar)."""
    if name == "logit_diff":
        rows = logits[:, -1, TOKEN_A] - logits[:, -1, TOKEN_B]
    elif name == "log_prob":
        rows = torch.log_softmax(logits[:, -1, :], dim=-1)[:, TOKEN_A]
    elif name == "loss":
        logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
        rows = -logp.gather(-1, tokens[:, 1:, None])[..., 0].mean(1)
    else:
        raise ValueError(name)
    return rows.mean()


def hook_names(n_layers: int) -> list[str]:
    return sorted({h.format(l=l) for h, _ in KINDS.values() for l in range(n_layers)})


def corrupted_grads(tl, corrupted: torch.Tensor, name: str, names: list[str]):
    """(M, {hook: activation}, {hook: dM/dactivation}) on the corrupted run: the forward
    activations are kept by forward hooks, then torch.autograd.grad."""
    acts: dict[str, list[torch.Tensor]] = {}

    def keep(x, hook):
        acts.setdefault(hook.name, []).append(x)

    tl.reset_hooks()
    with torch.enable_grad(), tl.hooks(fwd_hooks=[(n, keep) for n in names]):
        m = metric(tl(corrupted), corrupted, name)
    tl.reset_hooks()
    assert all(len(acts[n]) == 1 for n in names), {n: len(v) for n, v in acts.items()}
    grads = torch.autograd.grad(m, [acts[n][0] for n in names])
    return m.detach(), {n: acts[n][0].detach() for n in names}, dict(zip(names, grads))


def atp_maps(tl, clean: torch.Tensor, corrupted: torch.Tensor, name: str):
    """({kind: AtP map}, M corrupted) for one metric, in the model's dtype."""
    n_layers = tl.cfg.n_layers
    names = hook_names(n_layers)
    with torch.no_grad():
        _, clean_cache = tl.run_with_cache(clean)
        _, corr_cache = tl.run_with_cache(corrupted)
    m, kept, grads = corrupted_grads(tl, corrupted, name, names)
    worst_kept = max((kept[n] - corr_cache[n]).abs().max().item() for n in names)
    maps = {}
    for kind, (hook, reduce) in KINDS.items():
        per_layer = []
        for l in range(n_layers):
            n = hook.format(l=l)
            per_layer.append(reduce((clean_cache[n] - corr_cache[n]) * grads[n]))
        maps[kind] = torch.stack(per_layer)
    return maps, m, worst_kept


def embed_path_check(tl, clean: torch.Tensor, corrupted: torch.Tensor, name: str) -> float:
    """dM/dalpha at alpha = 0 with hook_embed = embed(corrupted) + alpha * (W_E[clean] -
    W_E[corrupted]): the first-order change from patching the whole layer-0 residual stream."""
    alpha = torch.zeros((), dtype=tl.cfg.dtype, requires_grad=True)
    direction = (tl.W_E[clean] - tl.W_E[corrupted]).detach()

    def shift(x, hook):
        return x + alpha * direction

    tl.reset_hooks()
    with torch.enable_grad(), tl.hooks(fwd_hooks=[("hook_embed", shift)]):
        m = metric(tl(corrupted), corrupted, name)
    tl.reset_hooks()
    (g,) = torch.autograd.grad(m, alpha)
    return g.item()


def exact_mlp_post(tl, corrupted: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """[n_layers, d_mlp]: M (logit_diff) with neuron n of layer L patched clean at every position."""
    cfg = tl.cfg
    out = torch.zeros(cfg.n_layers, cfg.d_mlp, dtype=torch.float64)
    with torch.no_grad():
        _, clean_cache = tl.run_with_cache(clean)
        for l in range(cfg.n_layers):
            hook_name = f"blocks.{l}.mlp.hook_post"
            src = clean_cache[hook_name]
            for n in range(cfg.d_mlp):
                def patch(x, hook, n=n):
                    x[:, :, n] = src[:, :, n]
                    return x

                logits = tl.run_with_hooks(corrupted, fwd_hooks=[(hook_name, patch)])
                out[l, n] = metric(logits, corrupted, "logit_diff")
    tl.reset_hooks()
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.flatten().argsort().argsort().double()
    rb = b.flatten().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return (ra @ rb / (ra.norm() * rb.norm())).item()


def main() -> None:
    print("versions:", {p: md.version(p) for p in ("torch", "transformers", "transformer_lens", "safetensors")})
    metadata = {"metrics": json.dumps(METRICS, sort_keys=True)}
    for model_name, path in MODELS.items():
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
        tl = tl_model(hf)
        tl32 = tl_model(hf).to(torch.float32)
        tl32.cfg.dtype = torch.float32
        cfg = tl.cfg
        print(f"{model_name}: n_layers {cfg.n_layers}, d_model {cfg.d_model}, n_heads {cfg.n_heads}, "
              f"d_head {cfg.d_head}, d_mlp {cfg.d_mlp}, d_vocab {cfg.d_vocab}")

        gen = torch.Generator().manual_seed(7)
        clean = torch.randint(0, cfg.d_vocab, (2, 7), generator=gen)
        corrupted = clean.clone()
        corrupted[:, 2] = torch.randint(0, cfg.d_vocab, (2,), generator=gen)
        corrupted[:, 5] = torch.randint(0, cfg.d_vocab, (2,), generator=gen)
        same = (clean == corrupted).all(0)  # positions where both rows agree
        print(f"  clean {clean.tolist()}; corrupted {corrupted.tolist()}; "
              f"unchanged positions {same.nonzero().flatten().tolist()}")

        out = {"clean": clean.to(torch.int32), "corrupted": corrupted.to(torch.int32)}
        with torch.no_grad():
            clean_logits = tl(clean)
            # `loss` is TransformerLens's own next-token loss (rows of equal length, so the mean
            # over rows of per-row means is TL's mean over every predicted token).
            tl_loss = tl(clean, return_type="loss", loss_per_token=True).mean(1).mean()
        assert abs(tl_loss.item() - metric(clean_logits, clean, "loss").item()) < 1e-12
        worst32 = (0.0, "")
        for name in METRICS:
            maps, m_corr, worst_kept = atp_maps(tl, clean, corrupted, name)
            maps32, _, _ = atp_maps(tl32, clean, corrupted, name)
            m_clean = metric(clean_logits, clean, name)
            out[f"{name}.clean_metric"] = m_clean.reshape(1).float()
            out[f"{name}.corrupted_metric"] = m_corr.reshape(1).float()
            assert worst_kept == 0.0, worst_kept
            for kind, a in maps.items():
                err = ((maps32[kind].double() - a).norm() / a.norm()).item() if a.norm() > 0 else 0.0
                out[f"{name}.{kind}.atp"] = a.float()
                out[f"{name}.{kind}.f32_error"] = torch.tensor([err], dtype=torch.float32)
                worst32 = max(worst32, (err, f"{name}.{kind}"))
            r0 = maps["resid_pre"][0]
            zero_at_same = r0[same].abs().max().item()
            direct = embed_path_check(tl, clean, corrupted, name)
            d_direct = abs(r0.sum().item() - direct)
            # Causality (printed): residual-stream kinds at positions before the first change.
            first = int((~same).nonzero()[0])
            before = max(maps[k][:, :first].abs().max().item()
                         for k in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"))
            print(f"  {name}: M clean {m_clean.item():.6f}, corrupted {m_corr.item():.6f}; "
                  f"resid_pre L0 AtP {[round(v, 6) for v in r0.tolist()]}")
            print(f"    |resid_pre L0 AtP| at unchanged positions {zero_at_same:.1e}; sum {r0.sum().item():.12f} "
                  f"vs embedding-path autograd {direct:.12f} (|diff| {d_direct:.1e}); residual kinds "
                  f"max |AtP| at positions < {first}: {before:.1e}")
            assert zero_at_same == 0.0 and d_direct < 1e-10, (zero_at_same, d_direct)

        exact = exact_mlp_post(tl, corrupted, clean)
        out["logit_diff.mlp_post_all_pos.exact"] = exact.float()
        m_corr = out["logit_diff.corrupted_metric"].item()
        atp_mlp = out["logit_diff.mlp_post_all_pos.atp"].double()
        print(f"  spearman(logit_diff AtP + corrupted, exact): mlp_post_all_pos "
              f"{spearman(atp_mlp + m_corr, exact):+.3f} (max |exact - corrupted| "
              f"{(exact - m_corr).abs().max().item():.3e}, max |AtP| {atp_mlp.abs().max().item():.3e})")
        ref_path = FIXTURES / "expected" / f"{model_name}.patching.safetensors"
        if ref_path.exists():
            ref = load_file(str(ref_path))
            assert torch.equal(ref["clean"], clean) and torch.equal(ref["corrupted"], corrupted)
            assert torch.tensor([TOKEN_A, TOKEN_B]).equal(ref["tokens"])
            rhos = {k: spearman(out[f"logit_diff.{k}.atp"].double() + m_corr, ref[f"{k}.values"].double())
                    for k in KINDS if f"{k}.values" in ref}
            print("  spearman vs", ref_path.name + ":", ", ".join(f"{k} {v:+.3f}" for k, v in rhos.items()))
        else:
            print(f"  (no {ref_path.name}: no exact values for the other kinds)")
        print(f"  worst f32 error: {worst32[0]:.2e} at {worst32[1]}")

        dest = FIXTURES / "expected" / f"{model_name}.attribution.safetensors"
        save_file({k: v.contiguous() for k, v in out.items()}, str(dest), metadata=metadata)
        print(f"wrote {dest.relative_to(ROOT)} ({len(out)} tensors, {dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
