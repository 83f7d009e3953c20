"""Logit lens, direct logit attribution and attention norms equal TransformerLens
(tests/reference/make_analysis_fixtures.py)."""

import numpy as np
import pytest

import glassbox

from _helpers import reference, rel_error

TOLERANCE = 1e-5


def test_logit_lens_equals_accumulated_resid_through_the_unembedding(model):
    ref = reference(model.name, "analyses")
    tokens = reference(model.name)["unpadded.input_ids"]
    expected = ref["logit_lens.log_probs"].astype(np.float64)  # [L+1, batch, pos, vocab]
    lens = model.logit_lens(tokens, top_k=3, target_tokens=[17, 42])

    n_layers = model.cfg.n_layers
    assert lens.labels == tuple(f"{l}_pre" for l in range(n_layers)) + ("final_post",)
    assert lens.top_tokens.shape == expected.shape[:3] + (3,) and lens.top_tokens.dtype == np.int32
    assert rel_error(lens.target_log_probs, expected[..., [17, 42]]) < TOLERANCE
    assert lens.target_tokens == (17, 42)
    top_expected = -np.sort(-expected, axis=-1)[..., :3]
    assert rel_error(lens.top_log_probs, top_expected) < TOLERANCE
    # The tokens named are the ones with those log-probs.
    picked = np.take_along_axis(expected, lens.top_tokens.astype(np.int64), axis=-1)
    np.testing.assert_allclose(picked, lens.top_log_probs, atol=1e-4)
    # The last label is the model's own prediction.
    logits = reference(model.name)["unpadded.hf.logits"]
    np.testing.assert_array_equal(lens.top_tokens[-1, :, :, 0], logits.argmax(-1))


def test_logit_lens_defaults(gpt2):
    lens = gpt2.logit_lens([[1, 2, 3, 4], [5, 6]])
    assert lens.top_tokens.shape == (3, 2, 4, 5)
    assert lens.target_log_probs is None and lens.target_tokens == ()
    assert "final_post" in repr(lens)


def test_direct_logit_attribution_equals_logit_attrs(model):
    ref = reference(model.name, "analyses")
    tokens = reference(model.name)["unpadded.input_ids"]
    a, b = (int(t) for t in ref["dla.tokens"])
    single = model.direct_logit_attribution(tokens, a)
    diff = model.direct_logit_attribution(tokens, a, minus_token=b, position=-1)

    assert single.attributions.shape == ref["dla.token"].shape
    assert rel_error(single.attributions, ref["dla.token"]) < TOLERANCE
    assert rel_error(diff.attributions, ref["dla.diff"]) < TOLERANCE
    assert (single.token, single.minus_token, diff.minus_token, diff.position) == (a, None, b, -1)

    cfg = model.cfg
    assert single.labels[0] == "embed"
    assert single.heads.shape == (cfg.n_layers, cfg.n_heads, tokens.shape[0])
    np.testing.assert_array_equal(single.heads[1, 2], single["L1H2"])
    assert set(single.as_dict()) == set(single.labels)
    with pytest.raises(KeyError, match="L9H9"):
        single["L9H9"]

    # The components and the constant add up to the model's logit difference at the last token.
    logits = reference(model.name)["unpadded.hf.logits"][:, -1].astype(np.float64)
    want = logits[:, a] - logits[:, b]
    total = diff.attributions.astype(np.float64).sum(0) + diff.constant
    np.testing.assert_allclose(total, want, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(diff.logit, want, rtol=1e-3, atol=1e-3)


def test_direct_logit_attribution_position_selects_a_token(gpt2):
    tokens = reference("tiny-gpt2")["unpadded.input_ids"]
    last = gpt2.direct_logit_attribution(tokens[:, :5], 17)
    at_four = gpt2.direct_logit_attribution(tokens, 17, position=4)
    np.testing.assert_allclose(at_four.attributions, last.attributions, rtol=1e-5, atol=1e-5)
    assert "17" in repr(last)


def test_attention_norms_equal_the_definition(model):
    ref = reference(model.name, "analyses")
    acts = reference(model.name)
    result = model.attention_norms(acts["unpadded.input_ids"])
    assert sorted(result) == list(range(model.cfg.n_layers))
    for layer, norms in result.items():
        assert norms.layer == layer
        assert rel_error(norms.head_norms, ref[f"attn_norms.{layer}.head"]) < TOLERANCE
        assert rel_error(norms.layer_norms, ref[f"attn_norms.{layer}.layer"]) < TOLERANCE
        assert rel_error(norms.weights, acts[f"unpadded.tl.blocks.{layer}.attn.hook_pattern"]) < TOLERANCE

    only_one = model.attention_norms(acts["unpadded.input_ids"], layers=1)
    assert list(only_one) == [1]
    np.testing.assert_array_equal(only_one[1].head_norms, result[1].head_norms)
    with pytest.raises(KeyError, match="layer 0"):
        only_one[0]


def test_analysis_errors(gpt2):
    with pytest.raises(glassbox.InvalidArgument):
        gpt2.attention_norms([[1, 2, 3]], layers=[7])
    with pytest.raises(glassbox.InvalidArgument):
        gpt2.logit_lens([[1, 2, 3]], target_tokens=[300])
    with pytest.raises(glassbox.InvalidArgument):
        gpt2.direct_logit_attribution([[1, 2, 3]], 300)
    with pytest.raises(glassbox.NotFound):
        glassbox.Model(gpt2._client, gpt2.info.__class__(**{**gpt2.info.__dict__, "name": "nope"})).logit_lens([[1]])
    with pytest.raises(ValueError, match="top_k"):
        gpt2.logit_lens([[1, 2]], top_k=0)
    with pytest.raises(TypeError, match="token"):
        gpt2.direct_logit_attribution([[1, 2]], 1.5)
    with pytest.raises(glassbox.FailedPrecondition):  # one-token strings need a tokenizer
        gpt2.direct_logit_attribution([[1, 2]], " the")
