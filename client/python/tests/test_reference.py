"""run_with_cache equals the committed reference activations (TransformerLens hooks, HF logits)."""

import numpy as np
import pytest

from _helpers import reference, rel_error

TOLERANCE = 1e-5


def test_run_with_cache_matches_transformer_lens_and_hf(model):
    ref = reference(model.name)
    tokens = ref["unpadded.input_ids"]
    logits, cache = model.run_with_cache(tokens)

    assert rel_error(logits, ref["unpadded.hf.logits"]) < TOLERANCE
    assert rel_error(logits, ref["unpadded.tl.logits"]) < TOLERANCE

    tl_hooks = [k[len("unpadded.tl."):] for k in ref if k.startswith("unpadded.tl.") and k != "unpadded.tl.logits"]
    # The server has no unembed hooks (their values are ln_final's output and the logits).
    served = [h for h in tl_hooks if not h.startswith("unembed.")]
    assert len(served) >= 40
    assert set(cache) == set(served), set(cache) ^ set(served)
    errors = {hook: rel_error(cache[hook], ref[f"unpadded.tl.{hook}"]) for hook in served}
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"{worst}: {errors[worst]}"


def test_names_filter_forms_and_short_keys(gpt2):
    ref = reference("tiny-gpt2")
    tokens = ref["unpadded.input_ids"]

    _, by_glob = gpt2.run_with_cache(tokens, names_filter="blocks.*.hook_resid_post", logits="none")
    assert list(by_glob) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert by_glob.dims("blocks.0.hook_resid_post") == ("batch", "pos", "d_model")

    _, by_predicate = gpt2.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert list(by_predicate) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    # TransformerLens-style short keys.
    np.testing.assert_array_equal(by_predicate["pattern", 1], by_predicate["blocks.1.attn.hook_pattern"])
    assert ("pattern", 0) in by_predicate
    assert rel_error(by_predicate["pattern", 0], ref["unpadded.tl.blocks.0.attn.hook_pattern"]) < TOLERANCE

    _, by_list = gpt2.run_with_cache(tokens, names_filter=["hook_embed", "ln_final.hook_scale"])
    assert rel_error(by_list["embed",], ref["unpadded.tl.hook_embed"]) < TOLERANCE
    assert rel_error(by_list["scale",], ref["unpadded.tl.ln_final.hook_scale"]) < TOLERANCE
    with pytest.raises(KeyError, match="blocks.0.hook_resid_pre"):
        by_list["resid_pre", 0]


def test_loss_per_token_matches_hf(model):
    ref = reference(model.name)
    result = model.run(ref["unpadded.input_ids"], logits="none", loss_per_token=True)
    assert result.logits is None
    assert rel_error(result.loss_per_token, ref["unpadded.hf.loss_per_token"]) < TOLERANCE


def test_to_torch(gpt2):
    torch = pytest.importorskip("torch")
    ref = reference("tiny-gpt2")
    _, cache = gpt2.run_with_cache(ref["unpadded.input_ids"], names_filter="blocks.0.hook_resid_post")
    tensors = cache.to_torch()
    assert isinstance(tensors["blocks.0.hook_resid_post"], torch.Tensor)
    np.testing.assert_array_equal(tensors["blocks.0.hook_resid_post"].numpy(), cache["blocks.0.hook_resid_post"])
