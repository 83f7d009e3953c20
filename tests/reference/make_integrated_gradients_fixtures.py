"""Reference integrated gradients (Sundararajan et al. 2017) at four TransformerLens hook points.

For tiny-gpt2 (tests/fixtures/models/tiny-gpt2) and the shipped demo model (models/demo), loads
the HF model in float64, builds a HookedTransformer from the same weights without processing
(`make_fixtures.tl_model`, as make_gradient_fixtures.py does), and builds two rows of 7 random
token ids (no padding):

  gen = torch.Generator().manual_seed(13)
  tokens = randint(0, d_vocab, (2, 7), gen)

Metric. Per row b, m_b = logits[b, -1, 17] - logits[b, -1, 42]. Rows do not interact, so every
gradient below is of the SUM over rows, sum_b m_b, and row b's gradient is that of m_b alone.

Hook points H: hook_embed, blocks.1.hook_resid_pre, blocks.0.attn.hook_z, blocks.0.mlp.hook_post.
For each, x is H's activation on the clean run (run_with_cache on tokens) and the baseline is
x' = zeros_like(x) (every row, position and element).

Integrated gradients, midpoint Riemann rule with n steps: alpha_k = (k + 0.5) / n, k = 0..n-1.
For each alpha_k the model is run on tokens with a forward hook on H that REPLACES H's output
entirely (every row, position and element) by the fresh leaf tensor x' + alpha_k (x - x')
(requires_grad), so upstream activations do not matter, and

  g_k = torch.autograd.grad(sum_b m_b, that tensor)     (d metric / d H's output, H's shape)
  IG  = (x - x') * (1/n) sum_k g_k                       (H's shape; not summed over anything)

Completeness: sum of IG over all elements of row b ~= m_b(x) - m_b(x'), with an O(1/n^2) error
for a smooth integrand; see the LayerNorm caveat below.

LayerNorm caveat (blocks.1.hook_resid_pre). Replacing a residual stream by alpha * x feeds
alpha * x into LayerNorms (ln1 of block 1, ln_final), whose output (alpha xc) / sqrt(alpha^2
var(x) + eps) is constant once alpha >> sqrt(eps / var(x)) ~ 1e-3: with the zero baseline almost
all of m(x) - m(x') happens for alpha in [0, ~1e-3] (demo's m is not even monotone there). The
uniform midpoint rule does not resolve that, so at this hook ig16 and ig512 are NOT close to the
exact integral (row completeness errors from 7% to 280%, printed, not asserted); they are still exactly
the Riemann sums defined above, which is what an engine using the same rule must reproduce. The
other three hooks do not feed a LayerNorm directly (hook_embed's baseline still has the position
embedding), and there ig512's completeness is asserted.

Writes tests/fixtures/expected/<model>.integrated_gradients.safetensors (every float tensor
float32, computed in float64; tokens int32):

  tokens                     int32 [2, 7]
  <H>.ig16                   float32, H's shape: IG with n = 16
  <H>.ig512                  float32, H's shape: IG with n = 512 (close to the exact integral)
  <H>.input_x_grad           float32, H's shape: (x - x') * g at alpha = 1, i.e. the gradient on
                             the plain clean run (H replaced by x itself)
  <H>.metric                 float32 [2]: m_b on the plain run (the same for every H)
  <H>.baseline_metric        float32 [2]: m_b with H replaced by x' (alpha = 0)
  <H>.f32_error.ig16         float32 [1]: ||ig16_f32 - ig16_f64|| / ||ig16_f64||, where ig16_f32
                             is the whole computation (clean cache, baseline, interpolation,
                             gradients, mean) by torch on the model converted to float32: the
                             precision an f32 engine can be held to

H's TL shapes: hook_embed, blocks.1.hook_resid_pre [2, 7, d_model]; blocks.0.attn.hook_z
[2, 7, n_heads, d_head]; blocks.0.mlp.hook_post [2, 7, d_mlp] (tiny-gpt2: d_model 64, 4 heads,
d_mlp 256; demo: d_model 128, 4 heads, d_mlp 512). Both models store every key above (demo's file
is about 150 KB).

One header metadata entry, "definition": json.dumps of the definition (seed, metric, hooks,
baseline, rule, step counts), sort_keys=True (a single entry because safetensors writes several
in a random order and the files should be byte-identical from run to run).

Self-checks (float64, printed, asserted): the hook fires exactly once per forward pass; replacing
H by x itself reproduces the plain run's logits exactly; completeness of ig512 per row to 1e-4
relative to |m_b(x) - m_b(x')| at every hook but blocks.1.hook_resid_pre (ig16's completeness
error is printed); at every hook, an IG on a graded mesh (alpha = t^4, midpoint rule in t with
2048 steps, nodes crowded near alpha = 0; not stored) is complete to 1e-4, and ig16's and ig512's
norm-relative distances from it are printed; and an independent path at hook_embed: H replaced by
x' + alpha (x - x') with alpha a scalar leaf tensor requiring grad, d m_b / d alpha integrated by
the same midpoint rule (n = 16) equals row b's sum of ig16, to 1e-10.

The output is deterministic (fixed seed, single-threaded torch): re-running gives byte-identical
files with the same library versions (torch 2.15.0, transformers 5.23.0, transformer_lens 3.9.0,
safetensors 0.8.0).

    /work/venv-ref/bin/python tests/reference/make_integrated_gradients_fixtures.py
"""
from __future__ import annotations

import importlib.metadata as md
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import tl_model  # noqa: E402  (also sets single-threaded, deterministic torch)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
BATCH, SEQ, SEED = 2, 7, 13
TOKEN_A, TOKEN_B = 17, 42
HOOKS = ("hook_embed", "blocks.1.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.0.mlp.hook_post")
STEPS = (16, 512)
# Completeness of ig512 is asserted except at LN_INPUT_HOOKS, whose zero baseline is LayerNorm's
# singular point (see the docstring); there the graded mesh below is asserted instead.
LN_INPUT_HOOKS = ("blocks.1.hook_resid_pre",)
GRADED_POWER, GRADED_STEPS = 4, 2048
MODELS = {
    "tiny-gpt2": FIXTURES / "models" / "tiny-gpt2",
    "demo": ROOT / "models" / "demo",
}
DEFINITION = {
    "method": "integrated_gradients",
    "seed": SEED,
    "tokens_shape": [BATCH, SEQ],
    "metric": {"kind": "logit_diff", "position": -1, "token_a": TOKEN_A, "token_b": TOKEN_B,
               "rows": "independent; gradient of the sum over rows"},
    "hooks": list(HOOKS),
    "baseline": "zeros",
    "rule": "midpoint: alpha_k = (k + 0.5) / n, k = 0..n-1; IG = (x - baseline) * mean_k grad",
    "replace": "hook output replaced entirely by baseline + alpha * (x - baseline)",
    "steps": list(STEPS),
    "input_x_grad": "(x - baseline) * grad at alpha = 1",
}


def metric_rows(logits: torch.Tensor) -> torch.Tensor:
    """Per-row metric, shape [batch]."""
    return logits[:, -1, TOKEN_A] - logits[:, -1, TOKEN_B]


def replaced_run(tl, tokens: torch.Tensor, hook: str, value: torch.Tensor):
    """(logits, m [B], value): run with `hook`'s output replaced by `value` (returned as is)."""
    fired = []

    def replace(x, hook):
        assert x.shape == value.shape, (x.shape, value.shape)
        fired.append(hook.name)
        return value

    tl.reset_hooks()
    with torch.enable_grad(), tl.hooks(fwd_hooks=[(hook, replace)]):
        logits = tl(tokens)
    tl.reset_hooks()
    assert fired == [hook], fired
    return logits, metric_rows(logits)


def grad_at(tl, tokens: torch.Tensor, hook: str, value: torch.Tensor):
    """(m [B], d(sum_b m_b)/d value): H replaced by a fresh leaf copy of `value`."""
    leaf = value.detach().clone().requires_grad_(True)
    _, m = replaced_run(tl, tokens, hook, leaf)
    (g,) = torch.autograd.grad(m.sum(), leaf)
    return m.detach(), g


def integrated_gradients(tl, tokens, hook, x, base, n: int) -> torch.Tensor:
    """IG with the midpoint rule in n steps, H's shape, in the model's dtype."""
    total = torch.zeros_like(x)
    for k in range(n):
        alpha = (k + 0.5) / n
        _, g = grad_at(tl, tokens, hook, base + alpha * (x - base))
        total += g
    return (x - base) * (total / n)


def graded_integrated_gradients(tl, tokens, hook, x, base) -> torch.Tensor:
    """Check only (not stored): IG on a graded mesh, alpha = t^GRADED_POWER with the midpoint rule
    in t (GRADED_STEPS steps), i.e. IG = (x - x') * (1/N) sum_k g(t_k^p) p t_k^(p-1): nodes
    crowd near alpha = 0, where a zero baseline at a LayerNorm input puts the whole integrand."""
    p, n = GRADED_POWER, GRADED_STEPS
    total = torch.zeros_like(x)
    for k in range(n):
        t = (k + 0.5) / n
        _, g = grad_at(tl, tokens, hook, base + t ** p * (x - base))
        total += g * (p * t ** (p - 1))
    return (x - base) * (total / n)


def alpha_path_check(tl, tokens, hook, x, base, n: int) -> torch.Tensor:
    """[B]: midpoint-rule integral of d m_b / d alpha, with alpha a scalar leaf tensor."""
    out = torch.zeros(BATCH, dtype=x.dtype)
    direction = (x - base).detach()
    for k in range(n):
        alpha = torch.tensor((k + 0.5) / n, dtype=x.dtype, requires_grad=True)
        _, m = replaced_run(tl, tokens, hook, base + alpha * direction)
        for b in range(BATCH):
            (d,) = torch.autograd.grad(m[b], alpha, retain_graph=b + 1 < BATCH)
            out[b] += d
    return out / n


def main() -> None:
    print("versions:", {p: md.version(p) for p in ("torch", "transformers", "transformer_lens", "safetensors")})
    metadata = {"definition": json.dumps(DEFINITION, sort_keys=True)}
    for name, path in MODELS.items():
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
        tl = tl_model(hf)
        # The same model in float32 (as make_gradient_fixtures.py builds it).
        tl32 = tl_model(hf).to(torch.float32)
        tl32.cfg.dtype = torch.float32
        cfg = tl.cfg
        print(f"{name}: n_layers {cfg.n_layers}, d_model {cfg.d_model}, n_heads {cfg.n_heads}, "
              f"d_head {cfg.d_head}, d_mlp {cfg.d_mlp}, d_vocab {cfg.d_vocab}")
        gen = torch.Generator().manual_seed(SEED)
        tokens = torch.randint(0, cfg.d_vocab, (BATCH, SEQ), generator=gen)
        print(f"  tokens {tokens.tolist()}")

        out = {"tokens": tokens.to(torch.int32)}
        with torch.no_grad():
            plain_logits, cache = tl.run_with_cache(tokens)
            _, cache32 = tl32.run_with_cache(tokens)
        plain_m = metric_rows(plain_logits)
        worst32 = (0.0, "")
        for hook in HOOKS:
            x = cache[hook].detach()
            base = torch.zeros_like(x)
            # alpha = 1: the plain run (replacing H by x itself changes nothing).
            same_logits, _ = replaced_run(tl, tokens, hook, x.clone())
            assert torch.equal(same_logits.detach(), plain_logits), hook
            m, g1 = grad_at(tl, tokens, hook, x)
            assert torch.equal(m, plain_m), hook
            m0, _ = grad_at(tl, tokens, hook, base)
            delta = m - m0
            out[f"{hook}.metric"] = m.float()
            out[f"{hook}.baseline_metric"] = m0.float()
            out[f"{hook}.input_x_grad"] = ((x - base) * g1).float()

            errs = {}
            igs = {}
            for n in STEPS:
                ig = integrated_gradients(tl, tokens, hook, x, base, n)
                assert ig.shape == x.shape
                igs[n] = ig
                out[f"{hook}.ig{n}"] = ig.float()
                rows = ig.reshape(BATCH, -1).sum(1)
                errs[n] = ((rows - delta).abs() / delta.abs()).tolist()
            if hook not in LN_INPUT_HOOKS:
                assert max(errs[512]) < 1e-4, (hook, errs[512])
            graded = graded_integrated_gradients(tl, tokens, hook, x, base)
            graded_err = ((graded.reshape(BATCH, -1).sum(1) - delta).abs() / delta.abs()).tolist()
            assert max(graded_err) < 1e-4, (hook, graded_err)
            off512 = ((igs[512] - graded).norm() / graded.norm()).item()
            off16 = ((igs[16] - graded).norm() / graded.norm()).item()

            x32 = cache32[hook].detach()
            ig32 = integrated_gradients(tl32, tokens, hook, x32, torch.zeros_like(x32), 16)
            err32 = ((ig32.double() - igs[16]).norm() / igs[16].norm()).item()
            out[f"{hook}.f32_error.ig16"] = torch.tensor([err32], dtype=torch.float32)
            worst32 = max(worst32, (err32, hook))
            ixg_rows = out[f"{hook}.input_x_grad"].double().reshape(BATCH, -1).sum(1)
            print(f"  {hook} {tuple(x.shape)}: metric {[round(v, 6) for v in m.tolist()]}, baseline "
                  f"{[round(v, 6) for v in m0.tolist()]}; completeness rel error n=16 "
                  f"{[f'{e:.2e}' for e in errs[16]]}, n=512 {[f'{e:.2e}' for e in errs[512]]}; "
                  f"input_x_grad row sums {[round(v, 6) for v in ixg_rows.tolist()]}; "
                  f"f32 error ig16 {err32:.2e}")
            print(f"    graded mesh (alpha = t^{GRADED_POWER}, {GRADED_STEPS} steps): completeness rel "
                  f"error {[f'{e:.2e}' for e in graded_err]}; ||ig - graded|| / ||graded||: ig16 "
                  f"{off16:.2e}, ig512 {off512:.2e}")
            if hook == "hook_embed":
                direct = alpha_path_check(tl, tokens, hook, x, base, 16)
                rows16 = igs[16].reshape(BATCH, -1).sum(1)
                d = (direct - rows16).abs().max().item()
                print(f"    alpha-path check (n=16): integral of dm/dalpha {direct.tolist()} vs row "
                      f"sums of ig16 {rows16.tolist()} (max |diff| {d:.1e})")
                assert d < 1e-10, d
        print(f"  worst f32 error: {worst32[0]:.2e} at {worst32[1]}")

        dest = FIXTURES / "expected" / f"{name}.integrated_gradients.safetensors"
        save_file({k: v.contiguous() for k, v in out.items()}, str(dest), metadata=metadata)
        print(f"wrote {dest.relative_to(ROOT)} ({len(out)} tensors, {dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
