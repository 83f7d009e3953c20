"""Tiny reference models of the architectures beyond GPT-2 and Llama, with their expected values.

The same recipe as make_fixtures.py (whose helpers this imports: seeded O(1) weights, the inputs,
the HF references unpadded / right- / left-padded, the float64 computation and the storage
format), for one model per architecture trait the engine must get right:

  models/tiny-pythia/      GPTNeoXForCausalLM, 2 layers, d_model 64, 4 heads (d_head 16),
                           d_mlp 160, exact GELU, parallel attention + MLP
                           (use_parallel_residual), rotary on 4 of 16 features per head
                           (partial_rotary_factor 0.25, base 10000), biases, untied embed_out.
  models/tiny-pythia-seq/  GPTNeoXForCausalLM with use_parallel_residual=False (sequential
                           block, hook_resid_mid present), 2 heads (d_head 32), rotary on 16 of 32
                           features, no attention biases (attention_bias=False), rope base 5e4.
  models/tiny-qwen3/       Qwen3ForCausalLM, 2 layers, d_model 64, 4 query heads, 2 kv heads,
                           head_dim 24 (not d_model / heads), per-head q/k RMSNorm, SiLU-gated
                           MLP, no biases, tied embeddings, rope_theta 1e6.
  models/tiny-phi3/        Phi3ForCausalLM, 2 layers, d_model 64, 4 query heads, 2 kv heads,
                           fused qkv_proj and gate_up_proj, d_mlp 96, no biases, untied lm_head,
                           no sliding window (TransformerLens would emulate one differently).
  models/tiny-olmo2/       Olmo2ForCausalLM, 2 layers, d_model 64, 4 heads, norms after attention
                           and the MLP (no input norm), q/k RMSNorm over the whole projection,
                           SiLU-gated MLP d_mlp 96, no biases, untied lm_head, rope_theta 5e5.
  models/tiny-mistral/     MistralForCausalLM, 2 layers, d_model 64, 4 query heads, 1 kv head,
                           sliding_window 4 (shorter than the 11-token inputs), rope_theta 1e4.
  models/tiny-gemma2/      Gemma2ForCausalLM, 2 layers (sliding window 4, then global), d_model
                           64, 4 heads of 24, 2 kv heads, (1 + w) RMSNorms before and after
                           attention and the MLP, tanh-GELU gated MLP d_mlp 96, embedding scaled
                           by sqrt(64), query_pre_attn_scalar 20, attention and final soft caps 2
                           and 3, tied embeddings.
  models/tiny-qwen2/       Qwen2ForCausalLM, 2 layers, d_model 64, 4 query heads, 2 kv heads,
                           q/k/v biases (no o_proj or MLP bias), SiLU-gated MLP d_mlp 96, untied
                           lm_head, rope_theta 1e6, no sliding window.
  models/tiny-gptj/        GPTJForCausalLM, 2 layers, d_model 64, 4 heads (d_head 16), rotary on
                           the first 8 features of each head in adjacent pairs (rotate_every_two),
                           one ln_1 feeding attention and the MLP in parallel, no attention
                           biases, gelu_new MLP d_mlp 96 with biases, untied lm_head with a bias.
  models/tiny-gemma3/       Gemma3ForCausalLM (text), 2 layers (sliding window 4, then global:
                           sliding_window_pattern 2), d_model 64, 4 heads of 24, 2 kv
                           heads, (1 + w) RMSNorms before and after attention and the MLP and on
                           each head's q and k, rope base 1e4 in the sliding layers and 1e6 in
                           the global one, query_pre_attn_scalar 20, no soft caps, tied embeddings.
  expected/<name>.safetensors  HF (eager and sdpa) logits / hidden states / attentions and
                           TransformerLens's value at every hook point (unpadded.tl.*), stored as
                           make_fixtures.py stores them.

Re-run from the repository root with the reference venv (tests/reference/requirements.txt):

    /work/venv-ref/bin/python tests/reference/make_arch_fixtures.py

Deterministic: fixed seeds, single-threaded torch; byte-identical output with the same versions.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

from transformers import (  # noqa: E402
    GPTJConfig,
    GPTJForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPTNeoXConfig,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    GPTNeoXForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)


def seeded(model_class, cfg, seed: int):
    """model_class(cfg) built under `seed`, its weights then redrawn by mf.reinit_."""
    torch.manual_seed(seed)
    model = model_class(cfg)
    mf.reinit_(model, seed=seed + 1000)
    return model


# The shape the Llama-like reference models share; each adds what its family varies.
LLAMA_LIKE = dict(
    hidden_size=64,
    num_attention_heads=4,
    intermediate_size=96,
    num_hidden_layers=2,
    vocab_size=mf.VOCAB,
    max_position_embeddings=64,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
)


def make_pythia(parallel: bool, heads: int, rotary_pct: float, bias: bool, base: float, seed: int):
    cfg = GPTNeoXConfig(
        hidden_size=64,
        num_attention_heads=heads,
        intermediate_size=160,
        num_hidden_layers=2,
        vocab_size=mf.VOCAB,
        max_position_embeddings=64,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        use_parallel_residual=parallel,
        attention_bias=bias,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": base, "partial_rotary_factor": rotary_pct},
        bos_token_id=0,
        eos_token_id=0,
    )
    return seeded(GPTNeoXForCausalLM, cfg, seed)


def make_qwen3(seed: int):
    cfg = Qwen3Config(
        **LLAMA_LIKE,
        num_key_value_heads=2,
        head_dim=24,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_bias=False,
        use_sliding_window=False,
    )
    return seeded(Qwen3ForCausalLM, cfg, seed)


def make_qwen2(seed: int):
    cfg = Qwen2Config(
        **LLAMA_LIKE,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
    )
    return seeded(Qwen2ForCausalLM, cfg, seed)


def tl_qwen2(hf_model):
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_qwen2_weights

    c = hf_model.config
    cfg = mf.tl_llama_like_config(c, c.hidden_size // c.num_attention_heads, "Qwen2ForCausalLM")
    return mf.load_converted(HookedTransformer(cfg), convert_qwen2_weights(hf_model, cfg))


def make_gptj(seed: int):
    cfg = GPTJConfig(
        vocab_size=mf.VOCAB,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=4,
        rotary_dim=8,
        n_inner=96,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return seeded(GPTJForCausalLM, cfg, seed)


def tl_gptj(hf_model):
    """TransformerLens's HookedTransformer for the HF model, from TL's own GPT-J conversion (which
    ties ln2 to ln1: GPT-J's one ln_1 feeds both attention and the MLP)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gptj_weights

    c = hf_model.config
    cfg = HookedTransformerConfig(
        d_model=c.n_embd,
        d_head=c.n_embd // c.n_head,
        n_heads=c.n_head,
        d_mlp=c.n_inner,
        n_layers=c.n_layer,
        n_ctx=c.n_positions,
        eps=c.layer_norm_epsilon,
        d_vocab=c.vocab_size,
        act_fn=c.activation_function,
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=True,
        rotary_dim=c.rotary_dim,
        parallel_attn_mlp=True,
        original_architecture="GPTJForCausalLM",
        **mf.TL_COMMON,
    )
    return mf.load_converted(HookedTransformer(cfg), convert_gptj_weights(hf_model, cfg))


def make_phi3(seed: int):
    cfg = Phi3Config(
        **LLAMA_LIKE,
        num_key_value_heads=2,
        original_max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        sliding_window=None,
        pad_token_id=0,
    )
    return seeded(Phi3ForCausalLM, cfg, seed)


def tl_phi3(hf_model):
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_phi3_weights

    c = hf_model.config
    cfg = mf.tl_llama_like_config(c, c.hidden_size // c.num_attention_heads, "Phi3ForCausalLM")
    state = convert_phi3_weights(hf_model, cfg)
    # TL 3.9's converter also writes zero LayerNorm biases (sized d_vocab) that its RMSNorm does
    # not have; they carry nothing.
    for k in [k for k in state if k.endswith((".ln1.b", ".ln2.b", "ln_final.b"))]:
        assert torch.count_nonzero(state.pop(k)) == 0, k
    return mf.load_converted(HookedTransformer(cfg), state)


def make_olmo2(seed: int):
    cfg = Olmo2Config(
        **LLAMA_LIKE,
        num_key_value_heads=4,  # TL 3.9's OLMo-2 conversion assumes no GQA, as OLMo-2 has none
        rope_parameters={"rope_type": "default", "rope_theta": 5e5},
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        attention_bias=False,
        pad_token_id=0,
    )
    return seeded(Olmo2ForCausalLM, cfg, seed)


def tl_olmo2(hf_model):
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_olmo2_weights

    c = hf_model.config
    cfg = mf.tl_llama_like_config(c, c.hidden_size // c.num_attention_heads, "Olmo2ForCausalLM")
    return mf.load_converted(HookedTransformer(cfg), convert_olmo2_weights(hf_model, cfg))


def make_mistral(seed: int):
    cfg = MistralConfig(
        **LLAMA_LIKE,
        num_key_value_heads=1,
        sliding_window=4,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    return seeded(MistralForCausalLM, cfg, seed)


def tl_mistral(hf_model):
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_mistral_weights

    c = hf_model.config
    cfg = mf.tl_llama_like_config(c, c.hidden_size // c.num_attention_heads, "MistralForCausalLM",
                                  use_local_attn=True, window_size=c.sliding_window,
                                  attn_types=["local"] * c.num_hidden_layers)
    return mf.load_converted(HookedTransformer(cfg), convert_mistral_weights(hf_model, cfg))


# The shape the Gemma reference models share: head_dim and query_pre_attn_scalar both differ
# from d_model / n_heads; layer 0 slides (window 4), layer 1 is global.
GEMMA_LIKE = dict(
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=24,
    intermediate_size=96,
    num_hidden_layers=2,
    vocab_size=mf.VOCAB,
    max_position_embeddings=64,
    hidden_activation="gelu_pytorch_tanh",
    query_pre_attn_scalar=20,
    sliding_window=4,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def make_gemma2(seed: int):
    # Soft caps small enough to bend these random models' scores and logits.
    cfg = Gemma2Config(
        **GEMMA_LIKE,
        attn_logit_softcapping=2.0,
        final_logit_softcapping=15.0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    return seeded(Gemma2ForCausalLM, cfg, seed)


def make_gemma3(seed: int):
    # The sliding layer rotates with base 1e4, the global one with 1e6.
    cfg = Gemma3TextConfig(
        **GEMMA_LIKE,
        sliding_window_pattern=2,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
    )
    return seeded(Gemma3ForCausalLM, cfg, seed)


def tl_gemma(hf_model):
    """TransformerLens's HookedTransformer for a Gemma-2 or Gemma-3 model, from TL's own
    conversion (Gemma-3 adds per-head q/k norms and a second rope base)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_gemma_weights

    c = hf_model.config
    if c.model_type == "gemma2":
        extra = dict(attn_scores_soft_cap=c.attn_logit_softcapping,
                     output_logits_soft_cap=c.final_logit_softcapping)
        architecture = "Gemma2ForCausalLM"
    else:
        rp = c.rope_parameters
        extra = dict(use_qk_norm=True, rotary_base=rp["full_attention"]["rope_theta"],
                     rotary_base_local=rp["sliding_attention"]["rope_theta"])
        architecture = "Gemma3ForCausalLM"
    cfg = mf.tl_llama_like_config(
        c, c.head_dim, architecture,
        use_local_attn=True, window_size=c.sliding_window,
        attn_types=["local" if t == "sliding_attention" else "global" for t in c.layer_types],
        attn_scale=c.query_pre_attn_scalar ** 0.5,
        use_normalization_before_and_after=True,
        **extra)
    return mf.load_converted(HookedTransformer(cfg), convert_gemma_weights(hf_model, cfg))


def tl_qwen3(hf_model):
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_qwen3_weights

    cfg = mf.tl_llama_like_config(hf_model.config, hf_model.config.head_dim, "Qwen3ForCausalLM",
                                  use_qk_norm=True)
    return mf.load_converted(HookedTransformer(cfg), convert_qwen3_weights(hf_model, cfg))


def tl_pythia(hf_model):
    """TransformerLens's HookedTransformer for the HF model, from TL's own GPT-NeoX conversion."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_neox_weights

    c = hf_model.config
    d_head = c.hidden_size // c.num_attention_heads
    rp = c.rope_parameters
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size,
        d_head=d_head,
        n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        n_ctx=c.max_position_embeddings,
        eps=c.layer_norm_eps,
        d_vocab=c.vocab_size,
        act_fn=c.hidden_act,
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=int(d_head * rp["partial_rotary_factor"]),
        rotary_base=rp["rope_theta"],
        parallel_attn_mlp=c.use_parallel_residual,
        original_architecture="GPTNeoXForCausalLM",
        **mf.TL_COMMON,
    )
    tl = HookedTransformer(cfg)
    if not c.attention_bias:
        # TL's converter reads every bias; zero ones on a copy change nothing numerically.
        hf_model = copy.deepcopy(hf_model)
        for layer in hf_model.gpt_neox.layers:
            for lin in (layer.attention.query_key_value, layer.attention.dense):
                assert lin.bias is None
                lin.bias = torch.nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype))
    return mf.load_converted(tl, convert_neox_weights(hf_model, cfg))


@torch.inference_mode()
def tl_references(name: str, hf_model, inputs: dict, hf_out: dict) -> dict[str, torch.Tensor]:
    tl = {"gpt_neox": tl_pythia, "gptj": tl_gptj, "qwen2": tl_qwen2, "qwen3": tl_qwen3, "phi3": tl_phi3, "olmo2": tl_olmo2,
          "mistral": tl_mistral, "gemma2": tl_gemma, "gemma3_text": tl_gemma}[hf_model.config.model_type](hf_model)
    ids = inputs["unpadded.input_ids"]
    logits, cache = tl.run_with_cache(ids)
    e = mf.check(f"{name} TL logits vs HF", logits, hf_out["unpadded.hf.logits"], mf.FP32_INTERNAL)
    print(f"  {name}: TL vs HF logits norm-relative error {e:.2e}")
    out = {"unpadded.tl.logits": logits}
    B, S = ids.shape
    for k, v in cache.items():
        if (".attn.q_norm." in k or ".attn.k_norm." in k) and v.dim() == 2:
            # TL runs the per-head norms on [batch * pos * heads, d_head]; the values are stored
            # in the [batch, pos, heads, ...] shape the engine (and the rest of TL) uses.
            v = v.reshape(B, S, -1, v.shape[-1])
        out[f"unpadded.tl.{k}"] = v
    # The semantics the engine's parallel block relies on.
    for l in range(tl.cfg.n_layers):
        p = f"blocks.{l}."
        mf.check(f"{name} HF hidden_states.{l} == resid_pre", cache[p + "hook_resid_pre"],
                 hf_out[f"unpadded.hf.hidden_states.{l}"], mf.FP32_INTERNAL)
        if hf_model.config.model_type == "olmo2":
            # Post-norm: ln1 normalises attention's output before hook_attn_out (no input norm).
            a = cache[p + "attn.hook_result"].sum(2)
            scale = (a.pow(2).mean(-1, keepdim=True) + tl.cfg.eps).sqrt()
            mf.check(f"{name} post-norm ln1.hook_scale", cache[p + "ln1.hook_scale"], scale, mf.TIGHT)
            assert cache[p + "attn.q_norm.hook_scale"].shape == (B, S, 1)
        if tl.cfg.use_qk_norm:
            # hook_q is the raw projection; q_norm's hooks follow, then rotary.
            q = cache[p + "attn.hook_q"]
            scale = (q.pow(2).mean(-1, keepdim=True) + tl.cfg.eps).sqrt()
            mf.check(f"{name} q_norm.hook_scale", out[f"unpadded.tl.{p}attn.q_norm.hook_scale"], scale, mf.TIGHT)
        if tl.cfg.parallel_attn_mlp:
            assert p + "hook_resid_mid" not in cache, "a parallel block has no resid_mid"
            mf.check(f"{name} resid_post (parallel)", cache[p + "hook_resid_post"],
                     cache[p + "hook_resid_pre"] + cache[p + "hook_attn_out"] + cache[p + "hook_mlp_out"],
                     mf.TIGHT)
        else:
            mf.check(f"{name} resid_mid", cache[p + "hook_resid_mid"],
                     cache[p + "hook_resid_pre"] + cache[p + "hook_attn_out"], mf.TIGHT)
        # Partial rotary: the features past rotary_dim pass through unrotated.
        r = tl.cfg.rotary_dim
        assert torch.equal(cache[p + "attn.hook_rot_q"][..., r:], cache[p + "attn.hook_q"][..., r:])
        assert not torch.equal(cache[p + "attn.hook_rot_q"][..., :r], cache[p + "attn.hook_q"][..., :r])
    return out


def build(name: str, model, seed_inputs: int, meta: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    print(f"[{name}]")
    model = model.eval()
    d = mf.save_model(model, name, None)
    loaded = {}
    # Gemma-2's soft cap has no sdpa path in HF, and GPT-J has none at all: their eager runs are
    # the reference for everything.
    impls = ("eager",) if model.config.model_type in ("gemma2", "gptj") else ("sdpa", "eager")
    for impl in impls:
        m = type(model).from_pretrained(d, attn_implementation=impl, dtype=torch.float32).eval()
        for (n1, p1), (n2, p2) in zip(model.state_dict().items(), m.state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2), f"reload changed {n1}"
        loaded[impl] = m.double()
    ref, eager = loaded.get("sdpa", loaded["eager"]), loaded["eager"]
    inputs = mf.make_inputs(seed_inputs)
    tensors = dict(inputs)
    # These models compute rotary angles (and RMSNorm) in float32 even in a float64 model.
    hf_out = mf.hf_references(name, ref, eager, inputs, mf.FP32_INTERNAL)
    tensors.update(hf_out)
    tensors.update(tl_references(name, ref, inputs, hf_out))
    if model.config.model_type == "gemma3_text":
        # One inverse-frequency buffer per layer type.
        for kind in ("sliding_attention", "full_attention"):
            tensors[f"hf.rope.{kind}.inv_freq"] = getattr(ref.model.rotary_emb, f"{kind}_inv_freq")
    elif model.config.model_type == "gptj":
        # GPT-J keeps a sin|cos table per attention layer instead of a rotary_emb module.
        half = model.config.rotary_dim // 2
        tensors["hf.rope.sin"] = ref.transformer.h[0].attn.embed_positions[:, :half]
        tensors["hf.rope.cos"] = ref.transformer.h[0].attn.embed_positions[:, half:]
    else:
        tensors["hf.rope.inv_freq"] = ref.base_model.rotary_emb.inv_freq
    tensors = {k: mf.to_store(v) for k, v in sorted(tensors.items())}
    path = mf.EXPECTED_DIR / f"{name}.safetensors"
    save_file(tensors, str(path),
              metadata={"glassbox.reference": json.dumps({"model": name, **meta}, sort_keys=True)})
    print(f"  wrote {path.relative_to(mf.REPO)} ({len(tensors)} tensors, {path.stat().st_size} bytes)")
    return tensors


def main() -> None:
    meta = {"versions": mf.versions()}
    build("tiny-pythia", make_pythia(True, 4, 0.25, True, 10000.0, 1101), 3101, meta)
    build("tiny-pythia-seq", make_pythia(False, 2, 0.5, False, 50000.0, 1102), 3102, meta)
    build("tiny-qwen3", make_qwen3(1103), 3103, meta)
    build("tiny-phi3", make_phi3(1104), 3104, meta)
    build("tiny-olmo2", make_olmo2(1105), 3105, meta)
    build("tiny-mistral", make_mistral(1106), 3106, meta)
    build("tiny-gemma2", make_gemma2(1107), 3107, meta)
    build("tiny-qwen2", make_qwen2(1108), 3108, meta)
    build("tiny-gptj", make_gptj(1109), 3109, meta)
    build("tiny-gemma3", make_gemma3(1110), 3110, meta)
    total = sum(f.stat().st_size for f in mf.FIXTURES.rglob("*") if f.is_file())
    print(f"total size of tests/fixtures: {total} bytes")


if __name__ == "__main__":
    main()
