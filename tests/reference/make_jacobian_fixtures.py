"""Reference Jacobians between two TransformerLens hook points, one position per row on each side.

For tiny-gpt2 (tests/fixtures/models/tiny-gpt2; 2 layers, d_model 64, 4 heads of 16; the demo
model's file would be 0.8 MB for no new code path, so it is left out), loads the HF model in
float64, builds a HookedTransformer from the same weights without processing
(`make_fixtures.tl_model`, as make_gradient_fixtures.py does), and builds two rows of 7 random
token ids (no padding):

  gen = torch.Generator().manual_seed(17)
  tokens = randint(0, d_vocab, (2, 7), gen)

Definition. A case names an input hook A with a position p[b] per row and an output hook B with a
position q[b] per row. Row b's Jacobian is

  J_b = d B[b, q[b], ...] / d A[b, p[b], ...]

with both sides flattened over their trailing axes in row-major (C) order, so J_b has shape
[numel(B[b, q[b]]), numel(A[b, p[b]])]: e.g. A = blocks.0.attn.hook_z ([batch, pos, n_heads,
d_head]) flattens to the index h * d_head + d, and J_b is [d_model, n_heads * d_head].

Replacement (what "derivative with respect to A's output" means here). The model is run on tokens
with a TransformerLens forward hook on A that REPLACES A's output by a tensor equal to A's clean
activation (run_with_cache on tokens, detached) everywhere except at [b, p[b], ...] of each row,
which holds a variable v_b (= the clean value A[b, p[b]] at the evaluation point). Everything
downstream of A is a function of the variables; nothing upstream of A is (the hook output is not
x + something but a new tensor). A second forward hook on B, registered after the first, records
B's output (when A == B the recording hook sees the replaced output, so `same_hook` is the
identity). Both hooks fire exactly once (asserted). The forward pass runs with return_type=None.

Computation. torch.autograd.functional.jacobian of v -> (B[b, q[b]] flattened, b = 0, 1), in
float64, on both rows at once: a [2, out, 2, in] Jacobian whose off-diagonal row blocks are
asserted to be exactly zero (rows do not interact); J_b is the block [b, :, b, :].

Cases (L = n_layers - 1, the last block: tiny-gpt2 L = 1, demo L = 3):

  resid             A = blocks.0.hook_resid_pre  p = [2, 4]  B = blocks.L.hook_resid_post q = [6, 6]
  embed_to_mid      A = hook_embed               p = [4, 1]  B = blocks.1.hook_resid_mid  q = [4, 5]
  z_to_pre          A = blocks.0.attn.hook_z     p = [3, 0]  B = blocks.1.hook_resid_pre  q = [5, 6]
  z_to_mid          A = blocks.0.attn.hook_z     p = [3, 0]  B = blocks.1.hook_resid_mid  q = [5, 6]
  same_hook         A = blocks.1.hook_resid_pre  p = [6, 2]  B = blocks.1.hook_resid_pre  q = [6, 2]
  earlier_position  A = blocks.0.hook_resid_post p = [5, 5]  B = blocks.1.hook_resid_post q = [3, 3]
  embed_to_mlp_out  A = hook_embed               p = [4, 1]  B = blocks.1.hook_mlp_out    q = [4, 5]
  mid_to_z          A = blocks.0.hook_resid_mid  p = [2, 3]  B = blocks.1.attn.hook_z     q = [6, 5]
  v_to_z            A = blocks.1.attn.hook_v     p = [2, 4]  B = blocks.1.attn.hook_z     q = [6, 5]

Exactly known cases (asserted, exact equality in float64):
  - same_hook is the identity: J_b = eye(d_model).
  - earlier_position is 0 (q < p; causal attention: the masked pattern entries are exactly 0).
  - z_to_pre is 0 as well: block 0's z at position t only enters the residual stream at position
    t (through W_O), and between hook_z of block 0 and hook_resid_pre of block 1 there is no
    attention, so resid_pre[1][q] does not depend on z[0][p] for p != q. z_to_mid (not exactly
    known; it goes through block 1's attention, q attends to p) is the non-trivial hook_z case.

Writes tests/fixtures/expected/<model>.jacobians.safetensors (every float tensor float32,
computed in float64; integer tensors int32):

  tokens               int32 [2, 7]
  <case>.p             int32 [2]: A's position per row
  <case>.q             int32 [2]: B's position per row
  <case>.jacobian      float32 [2, out, in]: J_b for b = 0, 1 (out = numel of B at one position,
                       in = numel of A at one position; here d_model or n_heads * d_head)
  <case>.f32_error     float32 [1]: ||J_f32 - J_f64|| / ||J_f64|| over both rows, where J_f32 is
                       the same computation (clean cache, replacement, jacobian) by torch on the
                       model converted to float32 (as make_gradient_fixtures.py builds it): the
                       precision an f32 engine can be held to. 0 for the exactly known cases
                       (same_hook, earlier_position, z_to_pre), whose f32 Jacobians are asserted
                       to be exactly eye / 0 as well.

One header metadata entry, "cases": json.dumps of the definition (seed, replacement, flattening,
case list with hooks and positions per model), sort_keys=True (a single entry because safetensors
writes several in a random order and the files should be byte-identical from run to run).

Self-checks (float64, printed, asserted): replacing A by its own clean value reproduces B's clean
activation exactly; the cross-row blocks of the Jacobian are exactly zero; the exactly known
cases above; and, independently of autograd, for `resid` a central finite difference in float64
with step h = 1e-6 along 4 random unit directions v (seed 18) per row:
||J_b v - (B(x + h v) - B(x - h v)) / 2h|| / ||J_b v|| < 1e-6.

The output is deterministic (fixed seed, single-threaded torch): re-running gives byte-identical
files with the same library versions (torch 2.15.0, transformers 5.23.0, transformer_lens 3.9.0,
safetensors 0.8.0).

    /work/venv-ref/bin/python tests/reference/make_jacobian_fixtures.py
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
BATCH, SEQ, SEED = 2, 7, 17
FD_SEED, FD_STEP, FD_DIRECTIONS, FD_TOL = 18, 1e-6, 4, 1e-6
MODELS = {
    "tiny-gpt2": FIXTURES / "models" / "tiny-gpt2",
}
# name: (A, p, B, q, exact); "{L}" is the last block. exact: "eye", "zero" or None.
CASES = {
    "resid": ("blocks.0.hook_resid_pre", [2, 4], "blocks.{L}.hook_resid_post", [6, 6], None),
    "embed_to_mid": ("hook_embed", [4, 1], "blocks.1.hook_resid_mid", [4, 5], None),
    "z_to_pre": ("blocks.0.attn.hook_z", [3, 0], "blocks.1.hook_resid_pre", [5, 6], "zero"),
    "z_to_mid": ("blocks.0.attn.hook_z", [3, 0], "blocks.1.hook_resid_mid", [5, 6], None),
    "same_hook": ("blocks.1.hook_resid_pre", [6, 2], "blocks.1.hook_resid_pre", [6, 2], "eye"),
    "earlier_position": ("blocks.0.hook_resid_post", [5, 5], "blocks.1.hook_resid_post", [3, 3], "zero"),
    "embed_to_mlp_out": ("hook_embed", [4, 1], "blocks.1.hook_mlp_out", [4, 5], None),
    "mid_to_z": ("blocks.0.hook_resid_mid", [2, 3], "blocks.1.attn.hook_z", [6, 5], None),
    "v_to_z": ("blocks.1.attn.hook_v", [2, 4], "blocks.1.attn.hook_z", [6, 5], None),
}


def resolve(case: tuple, n_layers: int) -> tuple:
    a, p, b, q, exact = case
    return a, p, b.format(L=n_layers - 1), q, exact


def definition(name: str, n_layers: int) -> dict:
    cases = {}
    for c, case in CASES.items():
        a, p, b, q, exact = resolve(case, n_layers)
        cases[c] = {"input_hook": a, "p": p, "output_hook": b, "q": q, "exact": exact}
    return {
        "method": "jacobian",
        "model": name,
        "seed": SEED,
        "tokens_shape": [BATCH, SEQ],
        "jacobian": "J_b = d B[b, q[b], ...] / d A[b, p[b], ...], both sides flattened row-major "
                    "over their trailing axes; stored [batch, out, in]",
        "replace": "A's output replaced by its clean activation (detached) with [b, p[b], ...] "
                   "replaced by the variable; B recorded by a hook registered after it",
        "f32_error": "||J_f32 - J_f64|| / ||J_f64|| over both rows; 0 for exact cases",
        "cases": cases,
    }


def make_fn(tl, tokens: torch.Tensor, a: str, p: list, b: str, q: list, x_clean: torch.Tensor):
    """v [2, in] -> B[b, q[b]] flattened [2, out], with A[b, p[b]] replaced by v[b]."""
    rows = torch.arange(BATCH)
    trailing = tuple(x_clean.shape[2:])
    p_t, q_t = torch.tensor(p), torch.tensor(q)

    def fn(v: torch.Tensor) -> torch.Tensor:
        fired, seen = [], []

        def replace(x, hook):
            assert x.shape == x_clean.shape, (x.shape, x_clean.shape)
            fired.append(hook.name)
            out = x_clean.detach().clone()
            out[rows, p_t] = v.reshape(BATCH, *trailing)
            return out

        def record(x, hook):
            seen.append(x)

        tl.reset_hooks()
        with torch.enable_grad(), tl.hooks(fwd_hooks=[(a, replace), (b, record)]):
            tl(tokens, return_type=None)
        tl.reset_hooks()
        assert fired == [a] and len(seen) == 1, (fired, len(seen))
        return seen[0][rows, q_t].reshape(BATCH, -1)

    return fn


def jacobian(tl, tokens, a, p, b, q):
    """(J [2, out, in], fn, v0 [2, in], clean B rows [2, out]) in the model's dtype."""
    with torch.no_grad():
        _, cache = tl.run_with_cache(tokens, return_type=None)
    x_clean = cache[a].detach()
    rows = torch.arange(BATCH)
    v0 = x_clean[rows, torch.tensor(p)].reshape(BATCH, -1).clone()
    fn = make_fn(tl, tokens, a, p, b, q, x_clean)
    clean_b = cache[b][rows, torch.tensor(q)].reshape(BATCH, -1)
    # Replacing A by its own clean value changes nothing downstream.
    assert torch.equal(fn(v0).detach(), clean_b), (a, b)
    full = torch.autograd.functional.jacobian(fn, v0)  # [2, out, 2, in]
    for r in range(BATCH):
        for s in range(BATCH):
            if r != s:
                assert not full[r, :, s, :].any(), ("rows interact", a, b, r, s)
    j = torch.stack([full[r, :, r, :] for r in range(BATCH)])
    return j, fn, v0, clean_b


def finite_difference_check(j, fn, v0) -> list[float]:
    """Per direction: max over rows of ||J_b v - central FD|| / ||J_b v||."""
    gen = torch.Generator().manual_seed(FD_SEED)
    errs = []
    with torch.no_grad():
        for _ in range(FD_DIRECTIONS):
            v = torch.randn(v0.shape, generator=gen, dtype=torch.float64)
            v = v / v.norm(dim=1, keepdim=True)
            fd = (fn(v0 + FD_STEP * v) - fn(v0 - FD_STEP * v)) / (2 * FD_STEP)
            jv = torch.einsum("boi,bi->bo", j, v)
            errs.append(max(((jv[r] - fd[r]).norm() / jv[r].norm()).item() for r in range(BATCH)))
    return errs


def main() -> None:
    print("versions:", {p: md.version(p) for p in ("torch", "transformers", "transformer_lens", "safetensors")})
    for name, path in MODELS.items():
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
        tl = tl_model(hf)
        # The same model in float32 (as make_gradient_fixtures.py builds it).
        tl32 = tl_model(hf).to(torch.float32)
        tl32.cfg.dtype = torch.float32
        cfg = tl.cfg
        # One metadata entry only: safetensors writes several in a random order, and the output
        # should be byte-identical from run to run.
        metadata = {"cases": json.dumps(definition(name, cfg.n_layers), sort_keys=True)}
        print(f"{name}: n_layers {cfg.n_layers}, d_model {cfg.d_model}, n_heads {cfg.n_heads}, "
              f"d_head {cfg.d_head}, d_mlp {cfg.d_mlp}, d_vocab {cfg.d_vocab}")
        gen = torch.Generator().manual_seed(SEED)
        tokens = torch.randint(0, cfg.d_vocab, (BATCH, SEQ), generator=gen)
        print(f"  tokens {tokens.tolist()}")

        out = {"tokens": tokens.to(torch.int32)}
        worst32 = (0.0, "")
        for case_name, case in CASES.items():
            a, p, b, q, exact = resolve(case, cfg.n_layers)
            j, fn, v0, _ = jacobian(tl, tokens, a, p, b, q)
            j32, _, _, _ = jacobian(tl32, tokens, a, p, b, q)
            if exact == "eye":
                want = torch.eye(j.shape[1], dtype=j.dtype).expand(BATCH, -1, -1)
                assert torch.equal(j, want) and torch.equal(j32, want.float()), case_name
                err32 = 0.0
            elif exact == "zero":
                assert not j.any() and not j32.any(), case_name
                err32 = 0.0
            else:
                assert j.norm() > 0, case_name
                err32 = ((j32.double() - j).norm() / j.norm()).item()
                worst32 = max(worst32, (err32, case_name))
            out[f"{case_name}.p"] = torch.tensor(p, dtype=torch.int32)
            out[f"{case_name}.q"] = torch.tensor(q, dtype=torch.int32)
            out[f"{case_name}.jacobian"] = j.float()
            out[f"{case_name}.f32_error"] = torch.tensor([err32], dtype=torch.float32)
            norms = [f"{j[r].norm().item():.4e}" for r in range(BATCH)]
            print(f"  {case_name}: {a} p={p} -> {b} q={q}: J {tuple(j.shape)}, row norms {norms}"
                  f"{', exactly ' + exact if exact else ''}; f32 error {err32:.2e}")
            if case_name == "resid":
                errs = finite_difference_check(j, fn, v0)
                print(f"    central finite difference (h = {FD_STEP:g}, {FD_DIRECTIONS} random unit "
                      f"directions, worst row): rel error {[f'{e:.2e}' for e in errs]}")
                assert max(errs) < FD_TOL, errs
        print(f"  worst f32 error: {worst32[0]:.2e} at {worst32[1]}")

        dest = FIXTURES / "expected" / f"{name}.jacobians.safetensors"
        save_file({k: v.contiguous() for k, v in out.items()}, str(dest), metadata=metadata)
        print(f"wrote {dest.relative_to(ROOT)} ({len(out)} tensors, {dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
