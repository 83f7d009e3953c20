"""Patching sweeps equal transformer_lens.patching (tests/reference/make_patching_fixtures.py)."""

import numpy as np
import pytest

import glassbox
from glassbox import LogitDiff, LogProb, Loss

from _helpers import reference, rel_error

TOLERANCE = 1e-5
KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out_all_pos",
         "head_out_by_pos", "q_all_pos", "k_all_pos", "v_all_pos", "pattern_all_pos")
DIMS = {"head_out_all_pos": ("layer", "head"), "head_out_by_pos": ("layer", "pos", "head"),
        "q_all_pos": ("layer", "head"), "k_all_pos": ("layer", "head"), "v_all_pos": ("layer", "head"),
        "pattern_all_pos": ("layer", "head")}


def _swept(model_name):
    ref = reference(model_name, "patching")
    return [k for k in KINDS if f"{k}.values" in ref]


PARAMS = [(m, k) for m in ("tiny-gpt2", "tiny-llama") for k in _swept(m)]


@pytest.mark.parametrize("model_name, kind", PARAMS)
def test_sweep_equals_transformer_lens_patching(client, model_name, kind):
    model = client.model(model_name)
    ref = reference(model_name, "patching")
    a, b = (int(t) for t in ref["tokens"])
    result = model.patching_sweep(ref["clean"], ref["corrupted"], kind, metric=LogitDiff(a, b))
    expected = ref[f"{kind}.values"]
    assert result.kind == kind
    assert result.values.shape == expected.shape
    assert rel_error(result.values, expected) < TOLERANCE
    assert result.dim_names[0] == "layer" and len(result.dim_names) == expected.ndim
    if kind in DIMS:
        assert result.dim_names[-1] in ("head", "kv_head")
    else:
        assert result.dim_names == ("layer", "pos")
    assert result.clean_metric == pytest.approx(float(ref["clean_metric"][0]), abs=1e-4)
    assert result.corrupted_metric == pytest.approx(float(ref["corrupted_metric"][0]), abs=1e-4)
    want = (expected - result.corrupted_metric) / (result.clean_metric - result.corrupted_metric)
    np.testing.assert_allclose(result.normalized, want, atol=1e-4)
    np.testing.assert_array_equal(result.raw, result.values)
    assert result.forward_passes >= 1 and result.seconds > 0
    np.testing.assert_array_equal(np.asarray(result), result.values)


def test_fixtures_cover_the_sweeps():
    assert len(_swept("tiny-gpt2")) == len(KINDS)
    assert len(_swept("tiny-llama")) >= 7


def test_pattern_sweep_by_transformer_lens_name(llama):
    """get_act_patch_attn_head_pattern_all_pos's name selects the same sweep."""
    ref = reference("tiny-llama", "patching")
    a, b = (int(t) for t in ref["tokens"])
    result = llama.patching_sweep(ref["clean"], ref["corrupted"], "attn_head_pattern_all_pos", LogitDiff(a, b))
    assert result.kind == "pattern_all_pos" and result.dim_names == ("layer", "head")
    assert rel_error(result.values, ref["pattern_all_pos.values"]) < TOLERANCE


def test_normalized_small_passes_and_aliases(gpt2):
    ref = reference("tiny-gpt2", "patching")
    a, b = (int(t) for t in ref["tokens"])
    big = gpt2.patching_sweep(ref["clean"], ref["corrupted"], "head_out_all_pos", LogitDiff(a, b))
    small = gpt2.patching_sweep(ref["clean"], ref["corrupted"], "attn_head_out_all_pos", LogitDiff(a, b),
                                normalized=True, max_rows_per_pass=4)
    assert small.kind == "head_out_all_pos"
    assert small.forward_passes > big.forward_passes
    np.testing.assert_array_equal(small.values, small.normalized)
    np.testing.assert_allclose(small.raw, big.raw, rtol=1e-5, atol=1e-5)
    assert "head_out_all_pos" in repr(small) and "passes" in repr(small)


def test_log_prob_and_loss_metrics_match_plain_runs(llama):
    ref = reference("tiny-llama", "patching")
    clean, corrupted = ref["clean"], ref["corrupted"]
    token = int(ref["tokens"][0])

    logits = llama.run(clean, logits="last").logits.astype(np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    by_log_prob = llama.patching_sweep(clean, corrupted, "resid_pre", LogProb(token))
    assert by_log_prob.clean_metric == pytest.approx(log_probs[:, token].mean(), abs=1e-4)

    losses = llama.run(corrupted, logits="none", loss_per_token=True).loss_per_token.astype(np.float64)
    by_loss = llama.patching_sweep(clean, corrupted, "resid_pre", Loss())
    assert by_loss.corrupted_metric == pytest.approx(losses.mean(1).mean(), abs=1e-4)
    # Patching every position of resid_pre at layer 0 cell by cell leaves the rest corrupted;
    # patching where the prompts agree changes nothing.
    same = np.all(clean == corrupted, axis=0)
    np.testing.assert_allclose(by_loss.values[0, same], by_loss.corrupted_metric, atol=1e-4)


def test_sweep_errors(gpt2):
    ref = reference("tiny-gpt2", "patching")
    clean, corrupted = ref["clean"], ref["corrupted"]
    with pytest.raises(glassbox.InvalidArgument, match="same shape"):
        gpt2.patching_sweep(clean, corrupted[:, :5], "resid_pre", LogitDiff(1, 2))
    with pytest.raises(glassbox.InvalidArgument):
        gpt2.patching_sweep(clean, corrupted, "resid_pre", LogitDiff(1, 300))
    with pytest.raises(glassbox.InvalidArgument, match="same number of tokens"):
        gpt2.patching_sweep([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 6]], "resid_pre", Loss())
    with pytest.raises(ValueError, match="kind must be one of"):
        gpt2.patching_sweep(clean, corrupted, "resid_middle", Loss())
    with pytest.raises(TypeError, match="metric"):
        gpt2.patching_sweep(clean, corrupted, "resid_pre", metric=lambda logits: logits)
    with pytest.raises(glassbox.FailedPrecondition):  # a string token needs a tokenizer
        gpt2.patching_sweep(clean, corrupted, "resid_pre", LogProb(" Paris"))
