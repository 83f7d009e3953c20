"""Build the tiny reference models and the expected activations the C++ tests compare against.

What it writes (all under tests/fixtures/, paths relative to the repository root):

  models/tiny-gpt2/            GPT2LMHeadModel, 2 layers, d_model 64, 4 heads, vocab 300, gelu_new,
                               tied embeddings; one model.safetensors.
  models/tiny-llama/           LlamaForCausalLM, 2 layers, d_model 64, 4 query heads, 2 kv heads
                               (GQA), d_mlp 96, SiLU-gated MLP, untied lm_head; one model.safetensors.
  models/tiny-llama-variant/   LlamaForCausalLM with q/k/v/o and MLP biases, tied embeddings,
                               1 kv head (MQA), llama3 rope scaling, rope_theta 5e5; saved SHARDED
                               (model-0000k-of-0000n.safetensors + model.safetensors.index.json).
  expected/<name>.safetensors  expected values (float32, computed in float64) for each model.
  expected/manifest.json       name, dtype and shape of every expected tensor; library versions.
  configs/tiny-llama-variant.legacy-rope.config.json
                               the variant's config.json in the pre-transformers-5 key layout
                               (top-level rope_theta / rope_scaling), as most hub checkpoints have.

expected/README.md (written by hand, not by this script) documents the tensors, the library
versions and the activation semantics the engine must match; keep it in step with this script.

Each model directory is exactly what `save_pretrained(..., safe_serialization=True)` writes
(config.json, generation_config.json, safetensors) so loaders are tested on HF's own format.
The expected files live outside the model directories so HF loading of a directory never sees them.

Weights: HF's default init (std 0.02) gives tiny activations and near-identity norms, which hides
bugs, so every parameter is overwritten (seeded) after construction: Linear/Conv1D weights
N(0,1)/sqrt(fan_in), embeddings N(0,1), norm weights 1+0.1*N(0,1), every bias 0.1*N(0,1).

References come from the real libraries: HF transformers (eager attention) for logits, hidden
states and attentions; TransformerLens HookedTransformer (raw weights, no folding/centring) for
the hook cache of tiny-gpt2 and tiny-llama. Both run in float64; values are stored as float32.

Re-run (from the repository root; needs the reference venv, see expected/README.md):

    /work/venv-ref/bin/python tests/reference/make_fixtures.py

The output is deterministic: fixed seeds, single-threaded torch. Running it twice gives
byte-identical files with the same library versions.
"""

from __future__ import annotations

import copy
import importlib.metadata as md
import json
import math
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
MODELS_DIR = FIXTURES / "models"
EXPECTED_DIR = FIXTURES / "expected"

torch.set_num_threads(1)  # reduction order independent of the machine
torch.use_deterministic_algorithms(True)

import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.pytorch_utils import Conv1D  # noqa: E402

transformers.logging.set_verbosity_error()

VOCAB = 300
BATCH, SEQ = 3, 11
PADDED_LENGTHS = (11, 7, 4)
PAD_ID = 0

# Tolerances for the self-checks (norm-relative error ||a-b|| / ||b||, all in float64).
TIGHT = 1e-10
# HF Llama upcasts to float32 inside RMSNorm, RoPE and the eager softmax even when the model is
# float64 (see README), so comparisons that involve those steps agree only to float32 rounding.
FP32_INTERNAL = 1e-6


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "transformers", "transformer_lens", "safetensors", "numpy"):
        out[pkg] = md.version(pkg)
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.double()
    b = b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def check(name: str, a: torch.Tensor, b: torch.Tensor, tol: float) -> float:
    assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    e = rel_err(a, b)
    assert e < tol, f"{name}: norm-relative error {e:.3e} >= {tol:.0e}"
    return e


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def reinit_(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with O(1)-activation random values, deterministically."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # named_parameters() drops tied duplicates, so a tied lm_head keeps the embedding's values.
        for name, p in model.named_parameters():
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if leaf == "bias":
                val = 0.1 * noise
            elif isinstance(owner, torch.nn.Embedding):
                val = noise
            elif isinstance(owner, torch.nn.Linear):
                val = noise / math.sqrt(owner.in_features)
            elif isinstance(owner, Conv1D):  # GPT-2 stores [in, out]
                val = noise / math.sqrt(p.shape[0])
            elif "norm" in type(owner).__name__.lower() or isinstance(owner, torch.nn.LayerNorm):
                val = 1.0 + 0.1 * noise
            else:
                raise RuntimeError(f"no init rule for parameter {name} of {type(owner).__name__}")
            p.copy_(val.to(p.dtype))


def make_gpt2() -> GPT2LMHeadModel:
    cfg = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_positions=32,
        vocab_size=VOCAB,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        bos_token_id=VOCAB - 1,  # as in real GPT-2: <|endoftext|> is the last id
        eos_token_id=VOCAB - 1,
    )
    torch.manual_seed(1001)
    model = GPT2LMHeadModel(cfg)
    reinit_(model, seed=2001)
    return model


def make_llama() -> LlamaForCausalLM:
    cfg = LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        num_hidden_layers=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(1002)
    model = LlamaForCausalLM(cfg)
    reinit_(model, seed=2002)
    return model


def make_llama_variant() -> LlamaForCausalLM:
    cfg = LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=1,
        intermediate_size=96,
        num_hidden_layers=2,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        rope_theta=500000.0,
        # original_max_position_embeddings 64 (not smaller) so that the 8 frequencies of d_head 16
        # fall in all three llama3 regimes: wavelengths 6.3 (< 64/4: kept), 32.4 (between 64/4
        # and 64/1: interpolated) and >= 167 (> 64: divided by factor).
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        rms_norm_eps=1e-5,
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=True,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(1003)
    model = LlamaForCausalLM(cfg)
    reinit_(model, seed=2003)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def make_inputs(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    unpadded = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen, dtype=torch.int64)
    rows = [torch.randint(0, VOCAB, (n,), generator=gen, dtype=torch.int64) for n in PADDED_LENGTHS]
    width = max(PADDED_LENGTHS)
    out = {"unpadded.input_ids": unpadded}
    for side in ("right", "left"):
        ids = torch.full((len(rows), width), PAD_ID, dtype=torch.int64)
        mask = torch.zeros((len(rows), width), dtype=torch.int64)
        for b, r in enumerate(rows):
            n = r.numel()
            sl = slice(0, n) if side == "right" else slice(width - n, width)
            ids[b, sl] = r
            mask[b, sl] = 1
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        out[f"{side}.input_ids"] = ids
        out[f"{side}.attention_mask"] = mask
        out[f"{side}.position_ids"] = pos
    return out


# --------------------------------------------------------------------------------------------
# HF references
# --------------------------------------------------------------------------------------------


def hf_forward(model, ids, mask=None, pos=None, attentions=False):
    with torch.inference_mode():
        return model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            output_hidden_states=True,
            output_attentions=attentions,
            use_cache=False,
        )


@torch.inference_mode()
def hf_references(name: str, model, eager, inputs: dict, tol_internal: float) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    n_layer = model.config.num_hidden_layers

    ids = inputs["unpadded.input_ids"]
    r = hf_forward(model, ids)
    assert len(r.hidden_states) == n_layer + 1
    out["unpadded.hf.logits"] = r.logits
    for i, h in enumerate(r.hidden_states):
        out[f"unpadded.hf.hidden_states.{i}"] = h
    # Attention probabilities exist only in eager attention; its logits must agree with SDPA's.
    re = hf_forward(eager, ids, attentions=True)
    assert len(re.attentions) == n_layer
    upper = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).triu(1)
    assert all((a[..., upper] == 0).all() for a in re.attentions), "future attention must be exactly 0"
    for l, a in enumerate(re.attentions):
        out[f"unpadded.hf.attentions.{l}"] = a
    check(f"{name} eager logits vs sdpa", re.logits, r.logits, tol_internal)
    V = r.logits.shape[-1]
    out["unpadded.hf.loss_per_token"] = F.cross_entropy(
        r.logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), reduction="none"
    ).view(ids.shape[0], ids.shape[1] - 1)
    # HF's last hidden state is after the final norm; logits are exactly lm_head of it (soft-capped
    # where the model caps them).
    unembedded = model.get_output_embeddings()(r.hidden_states[-1])
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        print(f"  {name}: |logits| before the soft cap {cap}: mean {unembedded.abs().mean():.2f}")
        unembedded = cap * torch.tanh(unembedded / cap)
    check(f"{name} logits==lm_head(hidden_states[-1])", unembedded, r.logits, TIGHT)

    for side in ("right", "left"):
        ids_p = inputs[f"{side}.input_ids"]
        mask = inputs[f"{side}.attention_mask"]
        pos = inputs[f"{side}.position_ids"]
        rp = hf_forward(model, ids_p, mask, pos)
        logits, hidden = rp.logits.clone(), [h.clone() for h in rp.hidden_states]
        # Each real token must equal a run of its sequence alone, unpadded, default positions.
        for b in range(ids_p.shape[0]):
            real = mask[b].bool()
            alone = hf_forward(model, ids_p[b, real][None])
            if not torch.isfinite(rp.logits[b, real]).all():
                # HF eager gives a padding query whose sliding window holds only padding a NaN
                # row, and the next global layer spreads it to real tokens through NaN · 0 in
                # pattern · v (Gemma-2). The reference for the real tokens is then the row alone;
                # the engine compares real tokens only.
                print(f"  {name} {side}[{b}]: HF's padded run is NaN at real tokens; using the row alone")
                logits[b, real] = alone.logits[0]
                for i in range(n_layer + 1):
                    hidden[i][b, real] = alone.hidden_states[0 + i][0]
                continue
            check(f"{name} {side}[{b}] logits vs alone", rp.logits[b, real], alone.logits[0], tol_internal)
            for i in range(n_layer + 1):
                check(
                    f"{name} {side}[{b}] hidden_states.{i} vs alone",
                    rp.hidden_states[i][b, real],
                    alone.hidden_states[i][0],
                    tol_internal,
                )
        out[f"{side}.hf.logits"] = logits
        for i, h in enumerate(hidden):
            out[f"{side}.hf.hidden_states.{i}"] = h
    return out


# --------------------------------------------------------------------------------------------
# TransformerLens references
# --------------------------------------------------------------------------------------------


# The HookedTransformerConfig fields every reference model shares: float64 on the CPU, per-head
# results, no processing.
TL_COMMON = dict(
    dtype=torch.float64,
    device="cpu",
    use_attn_result=True,
    use_split_qkv_input=False,
    use_hook_mlp_in=False,
    default_prepend_bos=False,
    init_weights=False,
)


def load_converted(tl, state: dict):
    """Loads TL's converted state dict into `tl` as it is, in float64, and returns `tl` in eval mode.

    (TL's load_and_process_state_dict with every processing flag off would be equivalent, except
    that TL 3.9's ProcessWeights casts every non-float32 tensor to float32 and back, which rounds
    the float64 rotary sin/cos buffers.)"""
    own = tl.state_dict()
    for k in sorted(set(own) - set(state)):
        leaf = k.rsplit(".", 1)[-1]
        if leaf in ("rotary_sin", "rotary_cos", "mask", "IGNORE"):
            state[k] = own[k]  # buffers TL computes itself
        elif leaf in ("b_U", "b_in", "b_out", "b_O", "b_Q", "b_K", "b_V", "_b_K", "_b_V"):
            assert torch.count_nonzero(own[k]) == 0, k
            state[k] = own[k]  # biases absent from the HF model: zero
        else:
            raise RuntimeError(f"TL parameter {k} has no value in the converted state dict")
    tl.load_state_dict({k: v.to(torch.float64) for k, v in state.items()}, strict=True)
    return tl.eval()


def tl_llama_like_config(c, d_head: int, architecture: str, **extra):
    """The HookedTransformerConfig of a Llama-shaped HF config `c`: RMSNorm, rotate-half rotary
    on all of d_head, a gated MLP, GQA when the config has fewer kv heads."""
    from transformer_lens import HookedTransformerConfig

    # Gemma-3 keeps one rope base per layer type; the others one at the top of rope_parameters.
    rotary_base = extra.pop("rotary_base") if "rotary_base" in extra else c.rope_parameters["rope_theta"]
    return HookedTransformerConfig(
        d_model=c.hidden_size,
        d_head=d_head,
        n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        n_ctx=c.max_position_embeddings,
        eps=c.rms_norm_eps,
        d_vocab=c.vocab_size,
        act_fn=getattr(c, "hidden_activation", None) or c.hidden_act,
        n_key_value_heads=(
            c.num_key_value_heads if c.num_key_value_heads != c.num_attention_heads else None
        ),
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=d_head,
        rotary_base=rotary_base,
        final_rms=True,
        gated_mlp=True,
        original_architecture=architecture,
        **TL_COMMON,
        **extra,
    )


def tl_model(hf_model):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import (
        convert_gpt2_weights,
        convert_llama_weights,
    )

    c = hf_model.config
    common = TL_COMMON
    if c.model_type == "gpt2":
        cfg = HookedTransformerConfig(
            d_model=c.n_embd,
            d_head=c.n_embd // c.n_head,
            n_heads=c.n_head,
            d_mlp=c.n_inner or 4 * c.n_embd,
            n_layers=c.n_layer,
            n_ctx=c.n_positions,
            eps=c.layer_norm_epsilon,
            d_vocab=c.vocab_size,
            act_fn=c.activation_function,
            use_attn_scale=c.scale_attn_weights,
            scale_attn_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx,
            normalization_type="LN",
            positional_embedding_type="standard",
            original_architecture="GPT2LMHeadModel",
            **common,
        )
        convert = convert_gpt2_weights
    elif c.model_type == "llama":
        assert c.rope_parameters["rope_type"] == "default"
        cfg = tl_llama_like_config(c, c.hidden_size // c.num_attention_heads, "LlamaForCausalLM")
        convert = convert_llama_weights
    else:
        raise ValueError(c.model_type)
    tl = HookedTransformer(cfg)
    return load_converted(tl, convert(hf_model, cfg))


def hf_llama_all_float64(model):
    """Diagnostic only (never stored): a copy of an HF Llama whose RMSNorm and default RoPE stay in
    float64 instead of HF's internal float32 upcast."""
    m = copy.deepcopy(model)

    def rms_forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    for mod in m.modules():
        if type(mod).__name__ == "LlamaRMSNorm":
            mod.forward = types.MethodType(rms_forward, mod)
    rot = m.model.rotary_emb
    assert rot.rope_type == "default" and rot.attention_scaling == 1.0
    c = m.config
    dim = c.head_dim
    inv_freq = 1.0 / (c.rope_parameters["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))

    def rope_forward(self, x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    rot.forward = types.MethodType(rope_forward, rot)
    return m


@torch.inference_mode()
def tl_references(name: str, hf_model, inputs: dict, hf_out: dict, tol_vs_hf: float):
    tl = tl_model(hf_model)
    cfg = tl.cfg
    ids = inputs["unpadded.input_ids"]
    with torch.inference_mode():
        logits, cache = tl.run_with_cache(ids)
    out = {"unpadded.tl.logits": logits}
    for k, v in cache.items():
        out[f"unpadded.tl.{k}"] = v
    e = check(f"{name} TL logits vs HF", logits, hf_out["unpadded.hf.logits"], tol_vs_hf)
    print(f"  {name}: TL vs HF logits norm-relative error {e:.2e}")
    if hf_model.config.model_type == "llama":
        # The ~1e-7 above is HF's float32 RMSNorm/RoPE. With those two steps kept in float64 the
        # conversion must be exact, which shows the TL config and weight mapping are faithful.
        exact = hf_llama_all_float64(hf_model)(input_ids=ids, use_cache=False).logits
        e = check(f"{name} TL logits vs HF(all float64)", logits, exact, TIGHT)
        print(f"  {name}: TL vs HF with float64 RMSNorm/RoPE: norm-relative error {e:.2e}")

    # Self-checks of the semantics documented in README.md.
    n_layers, H = cfg.n_layers, cfg.n_heads
    n_kv = cfg.n_key_value_heads or H
    for l in range(n_layers):
        p = f"blocks.{l}."
        check(f"{name} HF hidden_states.{l} == resid_pre", cache[p + "hook_resid_pre"],
              hf_out[f"unpadded.hf.hidden_states.{l}"], tol_vs_hf)
        check(f"{name} HF attentions.{l} == pattern", cache[p + "attn.hook_pattern"],
              hf_out[f"unpadded.hf.attentions.{l}"], tol_vs_hf)
        for ln, src in (("ln1", "hook_resid_pre"), ("ln2", "hook_resid_mid")):
            x = cache[p + src]
            if cfg.normalization_type == "LN":
                x = x - x.mean(-1, keepdim=True)
            scale = (x.pow(2).mean(-1, keepdim=True) + cfg.eps).sqrt()
            check(f"{name} {ln}.hook_scale", cache[p + ln + ".hook_scale"], scale, TIGHT)
            check(f"{name} {ln}.hook_normalized", cache[p + ln + ".hook_normalized"], x / scale, TIGHT)
        a = tl.blocks[l].attn
        q = cache[p + "attn.hook_q"]
        k = cache[p + "attn.hook_k"]
        assert q.shape[2] == H and k.shape[2] == n_kv and cache[p + "attn.hook_v"].shape[2] == n_kv
        if cfg.positional_embedding_type == "rotary":
            cos, sin = hf_model.model.rotary_emb(q, torch.arange(q.shape[1])[None])
            def rope(t):
                half = t.shape[-1] // 2
                rot = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
                return t * cos[:, :, None, :] + rot * sin[:, :, None, :]
            check(f"{name} hook_rot_q (rotate-half)", cache[p + "attn.hook_rot_q"], rope(q), FP32_INTERNAL)
            check(f"{name} hook_rot_k (rotate-half)", cache[p + "attn.hook_rot_k"], rope(k), FP32_INTERNAL)
            q, k = cache[p + "attn.hook_rot_q"], cache[p + "attn.hook_rot_k"]
        k_full = k.repeat_interleave(H // n_kv, dim=2)  # query head h uses kv head h // (H/n_kv)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k_full) / math.sqrt(cfg.d_head)
        S = q.shape[1]
        causal = torch.ones(S, S, dtype=torch.bool).tril()
        got = cache[p + "attn.hook_attn_scores"]
        assert torch.isneginf(got[..., ~causal]).all(), "masked scores are -inf"
        check(f"{name} hook_attn_scores", got[..., causal], scores[..., causal], TIGHT)
        check(f"{name} hook_pattern", cache[p + "attn.hook_pattern"], got.softmax(-1), TIGHT)
        v_full = cache[p + "attn.hook_v"].repeat_interleave(H // n_kv, dim=2)
        check(f"{name} hook_z", cache[p + "attn.hook_z"],
              torch.einsum("bhqk,bkhd->bqhd", cache[p + "attn.hook_pattern"], v_full), TIGHT)
        result = torch.einsum("bqhd,hdm->bqhm", cache[p + "attn.hook_z"], a.W_O)
        check(f"{name} hook_result", cache[p + "attn.hook_result"], result, TIGHT)
        check(f"{name} attn_out = sum(result)+b_O", cache[p + "hook_attn_out"],
              cache[p + "attn.hook_result"].sum(2) + a.b_O, TIGHT)
    hf_last = hf_out[f"unpadded.hf.hidden_states.{n_layers}"]
    lnf = tl.ln_final
    lnf_out = cache["ln_final.hook_normalized"] * lnf.w + (lnf.b if hasattr(lnf, "b") else 0)
    check(f"{name} HF last hidden state == ln_final output", lnf_out, hf_last, tol_vs_hf)
    check(f"{name} unembed.hook_in == ln_final output", cache["unembed.hook_in"], lnf_out, TIGHT)
    check(f"{name} unembed.hook_out == logits", cache["unembed.hook_out"], logits, TIGHT)
    embed = cache["hook_embed"] + (cache["hook_pos_embed"] if "hook_pos_embed" in cache else 0)
    check(f"{name} resid_pre.0 == embed (+ pos_embed)", cache["blocks.0.hook_resid_pre"], embed, TIGHT)
    check(f"{name} hook_embed == W_E[ids]", cache["hook_embed"], tl.embed.W_E[ids], TIGHT)
    if "hook_pos_embed" in cache:
        check(f"{name} hook_pos_embed == W_pos[pos]", cache["hook_pos_embed"],
              tl.pos_embed.W_pos[: ids.shape[1]][None].expand_as(cache["hook_pos_embed"]), TIGHT)
    # The same hooks expressed through the HF modules and HF weight layouts.
    B, S = ids.shape
    dh = cfg.d_head
    for l in range(n_layers):
        p = f"blocks.{l}."
        blk = tl.blocks[l]
        ln1_out = cache[p + "ln1.hook_normalized"] * blk.ln1.w + (blk.ln1.b if hasattr(blk.ln1, "b") else 0)
        ln2_out = cache[p + "ln2.hook_normalized"] * blk.ln2.w + (blk.ln2.b if hasattr(blk.ln2, "b") else 0)
        z = cache[p + "attn.hook_z"]
        if hf_model.config.model_type == "gpt2":
            h = hf_model.transformer.h[l]
            qkv = h.attn.c_attn(ln1_out)
            q_hf, k_hf, v_hf = (t.view(B, S, -1, dh) for t in qkv.split(cfg.d_model, dim=-1))
            w_o = h.attn.c_proj.weight  # [in, out]
            res_hf = torch.stack([z[:, :, i] @ w_o[i * dh:(i + 1) * dh] for i in range(H)], dim=2)
            check(f"{name} mlp.hook_pre == c_fc(ln2_out)", cache[p + "mlp.hook_pre"], h.mlp.c_fc(ln2_out), TIGHT)
        else:
            h = hf_model.model.layers[l]
            a_hf = h.self_attn
            q_hf = a_hf.q_proj(ln1_out).view(B, S, -1, dh)
            k_hf = a_hf.k_proj(ln1_out).view(B, S, -1, dh)
            v_hf = a_hf.v_proj(ln1_out).view(B, S, -1, dh)
            w_o = a_hf.o_proj.weight  # [out, in]
            res_hf = torch.stack([z[:, :, i] @ w_o[:, i * dh:(i + 1) * dh].T for i in range(H)], dim=2)
            check(f"{name} mlp.hook_pre == gate_proj(ln2_out)", cache[p + "mlp.hook_pre"], h.mlp.gate_proj(ln2_out), TIGHT)
            check(f"{name} mlp.hook_pre_linear == up_proj(ln2_out)", cache[p + "mlp.hook_pre_linear"], h.mlp.up_proj(ln2_out), TIGHT)
        check(f"{name} hook_q == HF q projection", cache[p + "attn.hook_q"], q_hf, TIGHT)
        check(f"{name} hook_k == HF k projection", cache[p + "attn.hook_k"], k_hf, TIGHT)
        check(f"{name} hook_v == HF v projection", cache[p + "attn.hook_v"], v_hf, TIGHT)
        check(f"{name} hook_result == per-head HF out projection", cache[p + "attn.hook_result"], res_hf, TIGHT)
    for l in range(n_layers):
        p = f"blocks.{l}."
        check(f"{name} resid_mid", cache[p + "hook_resid_mid"], cache[p + "hook_resid_pre"] + cache[p + "hook_attn_out"], TIGHT)
        check(f"{name} resid_post", cache[p + "hook_resid_post"], cache[p + "hook_resid_mid"] + cache[p + "hook_mlp_out"], TIGHT)
        mlp = tl.blocks[l].mlp
        if cfg.gated_mlp:
            check(f"{name} mlp.hook_post (gated)", cache[p + "mlp.hook_post"],
                  F.silu(cache[p + "mlp.hook_pre"]) * cache[p + "mlp.hook_pre_linear"], TIGHT)
        else:
            x = cache[p + "mlp.hook_pre"]
            gelu_new = 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
            check(f"{name} mlp.hook_post (gelu_new)", cache[p + "mlp.hook_post"], gelu_new, TIGHT)
        check(f"{name} mlp_out", cache[p + "hook_mlp_out"], cache[p + "mlp.hook_post"] @ mlp.W_out + mlp.b_out, TIGHT)
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def to_store(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.to(torch.float32)
    return t.contiguous().clone()


def readme_inv_freq(config) -> torch.Tensor:
    """RoPE inverse frequencies as README.md states them, in float64 (HF computes them in float32)."""
    rp = config.rope_parameters
    d = config.head_dim
    inv = 1.0 / rp["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    if rp["rope_type"] == "default":
        return inv
    assert rp["rope_type"] == "llama3"
    factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    old_ctx = rp["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = (old_ctx / wavelen - lo) / (hi - lo)
    out = torch.where(
        wavelen < old_ctx / hi,
        inv,  # high frequency: unchanged
        torch.where(
            wavelen > old_ctx / lo,
            inv / factor,  # low frequency: divided by factor
            (1 - smooth) * inv / factor + smooth * inv,  # in between: interpolated
        ),
    )
    if rp["rope_type"] == "llama3":  # the fixture must exercise every branch
        high = wavelen < old_ctx / hi
        low = wavelen > old_ctx / lo
        assert high.any() and low.any() and (~high & ~low).any(), "llama3 regimes not all covered"
    return out


def write_legacy_config(name: str) -> None:
    """Write the model's config.json in the pre-5.x layout used by most hub checkpoints
    (top-level rope_theta + rope_scaling instead of rope_parameters) and check that HF reads
    it as the same config."""
    from transformers import AutoConfig

    d = json.loads((MODELS_DIR / name / "config.json").read_text())
    rope = d.pop("rope_parameters")
    d["rope_theta"] = rope.pop("rope_theta")
    d["rope_scaling"] = rope
    current = AutoConfig.from_pretrained(MODELS_DIR / name)
    legacy = type(current).from_dict(copy.deepcopy(d)).to_dict()  # HF mutates nested dicts
    current = current.to_dict()
    diff = {k for k in set(legacy) | set(current) if legacy.get(k) != current.get(k)}
    assert diff <= {"transformers_version", "_name_or_path"}, f"legacy config reads differently: {diff}"
    out = FIXTURES / "configs" / f"{name}.legacy-rope.config.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def save_model(model, name: str, shard: str | None) -> Path:
    d = MODELS_DIR / name
    if d.exists():
        shutil.rmtree(d)
    kwargs = {"safe_serialization": True}
    if shard:
        kwargs["max_shard_size"] = shard
    model.save_pretrained(d, **kwargs)
    return d


def build(name: str, make, seed_inputs: int, with_tl: bool, shard: str | None, meta: dict):
    from safetensors.torch import save_file

    print(f"[{name}]")
    model = make().eval()
    d = save_model(model, name, shard)
    # Reload from disk exactly as a user would; compute in float64 with eager attention.
    # SDPA is the reference path: in float64 it stays float64 throughout attention, and it handles
    # the fully-masked query rows of left padding; eager is used only to obtain attention
    # probabilities (HF's eager softmax runs in float32 and turns a fully-masked row into NaN).
    loaded = {}
    for impl in ("sdpa", "eager"):
        m = type(model).from_pretrained(d, attn_implementation=impl, dtype=torch.float32).eval()
        for (n1, p1), (n2, p2) in zip(model.state_dict().items(), m.state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2), f"reload changed {n1}"
        loaded[impl] = m.double()
    ref, eager = loaded["sdpa"], loaded["eager"]
    if shard:
        index = json.loads((d / "model.safetensors.index.json").read_text())
        n_shards = len(set(index["weight_map"].values()))
        assert n_shards >= 2, f"expected >= 2 shards, got {n_shards}"

    inputs = make_inputs(seed_inputs)
    llama_like = ref.config.model_type == "llama"
    tol_internal = FP32_INTERNAL if llama_like else TIGHT
    tensors = dict(inputs)
    hf_out = hf_references(name, ref, eager, inputs, tol_internal)
    tensors.update(hf_out)
    if with_tl:
        tensors.update(tl_references(name, ref, inputs, hf_out, tol_internal))
    if llama_like:
        inv_freq = ref.model.rotary_emb.inv_freq
        check(f"{name} inv_freq matches the README formula", inv_freq, readme_inv_freq(ref.config), 1e-6)
        tensors["hf.rope.inv_freq"] = inv_freq
    tensors = {k: to_store(v) for k, v in sorted(tensors.items())}
    EXPECTED_DIR.mkdir(parents=True, exist_ok=True)
    path = EXPECTED_DIR / f"{name}.safetensors"
    # One metadata entry: safetensors writes the metadata map in hash order, so several entries
    # would make the file bytes differ from run to run.
    save_file(tensors, str(path), metadata={"glassbox.reference": json.dumps({"model": name, **meta}, sort_keys=True)})
    print(f"  wrote {path.relative_to(REPO)} ({len(tensors)} tensors, {path.stat().st_size} bytes)")
    return tensors


def main() -> None:
    v = versions()
    meta = {"versions": v}
    print("versions:", json.dumps(v))
    built = {
        "tiny-gpt2": build("tiny-gpt2", make_gpt2, 3001, True, None, meta),
        "tiny-llama": build("tiny-llama", make_llama, 3002, True, None, meta),
        "tiny-llama-variant": build("tiny-llama-variant", make_llama_variant, 3003, False, "100KB", meta),
    }
    write_legacy_config("tiny-llama-variant")
    # Machine-readable listing, handy when writing the C++ tests.
    listing = {
        name: {k: {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)} for k, t in ts.items()}
        for name, ts in built.items()
    }
    (EXPECTED_DIR / "manifest.json").write_text(
        json.dumps({"versions": v, "tensors": listing}, indent=1, sort_keys=True) + "\n"
    )
    # The other make_*_fixtures.py scripts add their own files; this budget is this script's.
    written = [EXPECTED_DIR / "manifest.json", *FIXTURES.glob("configs/*")]
    for name in built:
        written += [EXPECTED_DIR / f"{name}.safetensors", *(MODELS_DIR / name).iterdir()]
    total = sum(f.stat().st_size for f in written)
    print(f"size of this script's fixtures: {total} bytes")
    assert total < 3_500_000, "fixtures grew past ~3 MB"


if __name__ == "__main__":
    main()
