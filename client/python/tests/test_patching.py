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


ATP_KINDS = KINDS + ("mlp_post_all_pos",)
ATP_METRICS = {"logit_diff": LogitDiff(17, 42), "log_prob": LogProb(17), "loss": Loss()}


@pytest.mark.parametrize("metric_name", ATP_METRICS)
def test_attribution_patching_equals_torch(gpt2, metric_name):
    """(clean - corrupted) . grad on the corrupted run, from torch in float64
    (tests/reference/make_attribution_fixtures.py), for every sweep kind."""
    ref = reference("tiny-gpt2", "attribution")
    for kind in ATP_KINDS:
        result = gpt2.attribution_patching(ref["clean"], ref["corrupted"], kind, ATP_METRICS[metric_name])
        want = ref[f"{metric_name}.{kind}.atp"]
        assert result.method == "attribution" and result.kind == kind
        assert result.forward_passes == 2 and result.backward_passes == 1
        assert result.values.shape == want.shape
        assert result.corrupted_metric == pytest.approx(float(ref[f"{metric_name}.corrupted_metric"][0]), abs=1e-4)
        # The estimate from `normalized` (values = m_corrupted + estimate rounds it to float32
        # near m_corrupted, which for the loss is ~1e3 times the smallest estimates).
        estimate = result.normalized.astype(np.float64) * (result.clean_metric - result.corrupted_metric)
        assert rel_error(estimate, want) < max(1e-5, 2 * float(ref[f"{metric_name}.{kind}.f32_error"][0]))
        np.testing.assert_allclose(result.values, result.corrupted_metric + estimate, rtol=1e-6)
        assert "(attribution)" in repr(result)


def test_attribution_patching_tracks_the_exact_sweep(gpt2):
    """The estimate is first-order: on the tiny model its heads map ranks cells as the exact
    sweep does (Spearman 0.98 in the reference script); here the sign of the largest cells."""
    ref = reference("tiny-gpt2", "patching")
    a, b = (int(t) for t in ref["tokens"])
    exact = gpt2.patching_sweep(ref["clean"], ref["corrupted"], "head_out_all_pos", LogitDiff(a, b), normalized=True)
    atp = gpt2.patching_sweep(ref["clean"], ref["corrupted"], "head_out_all_pos", LogitDiff(a, b),
                              normalized=True, method="attribution")
    assert atp.method == "attribution" and exact.method == "exact" and exact.backward_passes == 0
    biggest = np.argsort(-np.abs(exact.values), axis=None)[:3]
    assert np.all(np.sign(exact.values.flat[biggest]) == np.sign(atp.values.flat[biggest]))
    neurons = gpt2.patching_sweep(ref["clean"], ref["corrupted"], "mlp_post", LogitDiff(a, b), method="attribution")
    assert neurons.dim_names == ("layer", "neuron") and neurons.kind == "mlp_post_all_pos"


def test_attribution_patching_on_a_rotary_model(llama):
    """Gradients cover every architecture. Layer 0's resid_pre is the token embedding on a rotary
    model, so where clean and corrupted share a token the estimate is exactly 0 (the value is
    the corrupted metric), and at the one that differs it is not."""
    ref = reference("tiny-gpt2", "patching")
    clean, corrupted = ref["clean"], ref["corrupted"].copy()
    corrupted[:, :] = clean
    corrupted[:, 2] = (clean[:, 2] + 7) % 300
    atp = llama.attribution_patching(clean, corrupted, "resid_pre", LogitDiff(1, 2))
    assert atp.values.shape == (2, clean.shape[1]) and atp.backward_passes == 1
    layer0 = atp.values[0]
    same = [p for p in range(clean.shape[1]) if p != 2]
    np.testing.assert_allclose(layer0[same], atp.corrupted_metric, rtol=0, atol=1e-6)
    assert abs(layer0[2] - atp.corrupted_metric) > 1e-4


def test_attribution_patching_errors(gpt2):
    ref = reference("tiny-gpt2", "patching")
    with pytest.raises(ValueError, match="method must be one of exact, attribution"):
        gpt2.patching_sweep(ref["clean"], ref["corrupted"], "resid_pre", Loss(), method="linear")


def test_attribution_patching_over_sae_features(gpt2):
    """res1's features as cells: (f_clean - f_corrupted) . d metric / d f at the corrupted run,
    equal to torch through sae_lens (tests/reference/make_splice_gradient_fixtures.py)."""
    ref = reference("tiny-gpt2", "splice_gradients")
    a, b = (int(t) for t in ref["atp.tokens"])
    atp = gpt2.attribution_patching(ref["atp.clean"], ref["atp.corrupted"], "sae_features",
                                    LogitDiff(a, b), sae="res1")
    assert atp.dim_names == ("pos", "feature") and atp.kind == "sae_features"
    estimate = atp.raw.astype(np.float64) - atp.corrupted_metric
    # The last column is the SAE's error term, a node of its own.
    assert estimate.shape == (ref["atp.estimate"].shape[0], ref["atp.estimate"].shape[1] + 1)
    assert rel_error(estimate[:, :-1], ref["atp.estimate"]) <= 1e-5
    assert rel_error(estimate[:, -1], ref["atp.error_estimate"]) <= 1e-5
    with pytest.raises(glassbox.InvalidArgument, match="attribution patching only"):
        gpt2.patching_sweep(ref["atp.clean"], ref["atp.corrupted"], "sae_features", LogitDiff(a, b), sae="res1")
