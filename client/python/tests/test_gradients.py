"""Model.gradients against TransformerLens's backward hooks in float64 (torch autograd), from
tests/fixtures/expected/tiny-gpt2.gradients.safetensors (tests/reference/make_gradient_fixtures.py)."""
from __future__ import annotations

import numpy as np
import pytest

from _helpers import reference, rel_error

import glassbox
from glassbox._gradients import metric_proto


def test_gradients_equal_transformer_lens_autograd(gpt2: glassbox.Model) -> None:
    ref = reference("tiny-gpt2", "gradients")
    tokens = ref["tokens"].tolist()
    for metric, position, name in [
        (glassbox.LogitDiff(17, 42), 6, "logit_diff"),
        (glassbox.LogProb(29), 3, "log_prob"),
        (glassbox.Logit(8), -2, "logit"),
    ]:
        result = gpt2.gradients(tokens, metric, ["blocks.*.hook_resid_pre", "blocks.1.attn.hook_z",
                                                 "hook_embed"], position=position)
        np.testing.assert_allclose(result.metric, ref[f"{name}.value"], rtol=1e-5, atol=1e-5)
        assert list(result) == ["hook_embed", "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre",
                                "blocks.1.attn.hook_z"]  # forward order
        for hook, grad in result.items():
            assert rel_error(grad, ref[f"{name}.grad.{hook}"]) <= 1e-5, (name, hook)
        assert result["blocks.1.attn.hook_z"].shape == (2, 7, 4, 16)


def test_ragged_rows_equal_their_own_gradients(gpt2: glassbox.Model) -> None:
    """Rows of different lengths run right-padded: each row's metric and gradients at its real
    positions are those of the row alone, and 0 at its padding."""
    rows = [[5, 9, 14, 3, 8, 2, 7], [11, 4, 6]]
    for metric in (glassbox.LogitDiff(17, 42), glassbox.Loss()):
        both = gpt2.gradients(rows, metric, ["hook_embed", "blocks.1.attn.hook_z"])
        for b, row in enumerate(rows):
            alone = gpt2.gradients([row], metric, ["hook_embed", "blocks.1.attn.hook_z"])
            assert both.metric[b] == pytest.approx(alone.metric[0], rel=1e-5, abs=1e-5)
            for hook in alone:
                assert rel_error(both[hook][b, :len(row)], alone[hook][0]) <= 1e-5, (metric, hook, b)
                assert np.all(both[hook][b, len(row):] == 0)
    j = gpt2.jacobian(rows, "hook_embed", "blocks.1.hook_resid_post", in_positions=[-3, 0], out_positions=-1)
    alone = gpt2.jacobian([rows[1]], "hook_embed", "blocks.1.hook_resid_post", in_positions=0, out_positions=-1)
    assert rel_error(j.jacobian[1], alone.jacobian[0]) <= 1e-5
    ig = gpt2.integrated_gradients(rows, glassbox.Logit(3), steps=4)
    ig_alone = gpt2.integrated_gradients([rows[1]], glassbox.Logit(3), steps=4)
    assert rel_error(ig.attributions[1, :3], ig_alone.attributions[0]) <= 1e-5


def test_loss_gradient_gives_attribution_patching(gpt2: glassbox.Model) -> None:
    """The loss metric: its value is the mean next-token loss of a plain run, and (clean -
    corrupted) . its gradient at the corrupted run summed over the model dimension is attribution
    patching's resid_pre map (torch float64, make_attribution_fixtures.py)."""
    ref = reference("tiny-gpt2", "attribution")
    clean, corrupted = ref["clean"].tolist(), ref["corrupted"].tolist()
    result = gpt2.gradients(corrupted, glassbox.Loss(), "blocks.*.hook_resid_pre")
    losses = gpt2.run(corrupted, logits="none", loss_per_token=True).loss_per_token.astype(np.float64)
    np.testing.assert_allclose(result.metric, losses.mean(1), rtol=1e-5)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    act_clean = gpt2.run(clean, captures=hooks, logits="none").cache
    act_corrupted = gpt2.run(corrupted, captures=hooks, logits="none").cache
    atp = np.stack([((act_clean[h] - act_corrupted[h]) * result[h]).sum(-1).mean(0) for h in hooks])
    assert rel_error(atp, ref["loss.resid_pre.atp"]) < 2e-5


def test_gradient_requests_are_checked(gpt2: glassbox.Model) -> None:
    assert metric_proto(glassbox.LogitDiff(3, 4), -1, int).position == -1
    with pytest.raises(TypeError, match="metric must be"):
        gpt2.gradients([[1, 2, 3]], lambda logits: logits, "hook_embed")
    with pytest.raises(glassbox.InvalidArgument, match="at least 2 tokens"):
        gpt2.gradients([[1]], glassbox.Loss(), "hook_embed")
    with pytest.raises(ValueError, match="hooks must be"):
        gpt2.gradients([[1, 2, 3]], glassbox.Logit(3), [])
    with pytest.raises(glassbox.InvalidArgument, match="position 2 is outside rows of 2 tokens \\(row 1\\)"):
        gpt2.gradients([[1, 2, 3], [4, 5]], glassbox.Logit(3), "hook_embed", position=2)
    with pytest.raises(glassbox.InvalidArgument, match="position 3 is outside rows of 3 tokens"):
        gpt2.gradients([[1, 2, 3]], glassbox.Logit(3), "hook_embed", position=3)


@pytest.mark.parametrize("hook", ["hook_embed", "blocks.1.hook_resid_pre", "blocks.0.attn.hook_z",
                                  "blocks.0.mlp.hook_post"])
def test_integrated_gradients_equal_torch(gpt2: glassbox.Model, hook: str) -> None:
    """The midpoint rule over 16 points from a zero baseline, and input x gradient, against torch
    in float64 (tests/reference/make_integrated_gradients_fixtures.py)."""
    ref = reference("tiny-gpt2", "integrated_gradients")
    tokens = ref["tokens"].tolist()
    ig = gpt2.integrated_gradients(tokens, glassbox.LogitDiff(17, 42), hook, steps=16)
    assert ig.attributions.shape == ref[f"{hook}.ig16"].shape
    assert rel_error(ig.attributions, ref[f"{hook}.ig16"]) <= 2e-5
    np.testing.assert_allclose(ig.metric, ref[f"{hook}.metric"], atol=1e-4)
    np.testing.assert_allclose(ig.baseline_metric, ref[f"{hook}.baseline_metric"], atol=1e-4)
    assert ig.per_position().shape == (2, 7)
    np.testing.assert_allclose(ig.per_position().sum(-1), ig.attributions.reshape(2, -1).astype(np.float64).sum(-1), rtol=1e-9)
    ixg = gpt2.input_x_gradient(tokens, glassbox.LogitDiff(17, 42), hook)
    assert ixg.method == "input_x_gradient" and ixg.backward_passes == 1
    assert rel_error(np.asarray(ixg), ref[f"{hook}.input_x_grad"]) <= 2e-5


def test_integrated_gradients_completeness_and_baselines(gpt2: glassbox.Model) -> None:
    tokens = [[5, 9, 14, 3, 8]]
    ig = gpt2.integrated_gradients(tokens, glassbox.LogProb(3), "hook_embed", steps=256)
    assert abs(ig.completeness_gap[0]) < 1e-3 * max(1.0, abs(ig.metric[0] - ig.baseline_metric[0]))
    # A baseline equal to the input: nothing to attribute.
    x = gpt2.run(tokens, captures="hook_embed", logits="none").cache["hook_embed"]
    same = gpt2.integrated_gradients(tokens, glassbox.LogProb(3), "hook_embed", steps=2, baseline=x)
    assert np.all(same.attributions == 0)
    with pytest.raises(glassbox.InvalidArgument, match="hook_embed takes \\[64\\]"):
        gpt2.integrated_gradients(tokens, glassbox.LogProb(3), "hook_embed", baseline=np.ones(3))
    with pytest.raises(glassbox.InvalidArgument, match="can be captured but not edited"):
        gpt2.integrated_gradients(tokens, glassbox.LogProb(3), "blocks.0.ln1.hook_scale")
    with pytest.raises(ValueError, match="steps must be"):
        gpt2.integrated_gradients(tokens, glassbox.LogProb(3), steps=0)
    with pytest.raises(ValueError, match="one hook name"):
        gpt2.integrated_gradients(tokens, glassbox.LogProb(3), ["hook_embed"])


def test_jacobian_equals_torch(gpt2: glassbox.Model) -> None:
    """d blocks.L.hook_resid_post / d blocks.0.hook_resid_pre, through a head's z, and of a
    block's z, against torch.autograd.functional.jacobian in float64
    (tests/reference/make_jacobian_fixtures.py)."""
    ref = reference("tiny-gpt2", "jacobians")
    tokens = ref["tokens"].tolist()
    for case, in_hook, out_hook in [("resid", "blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"),
                                    ("z_to_mid", "blocks.0.attn.hook_z", "blocks.1.hook_resid_mid"),
                                    ("mid_to_z", "blocks.0.hook_resid_mid", "blocks.1.attn.hook_z")]:
        j = gpt2.jacobian(tokens, in_hook, out_hook, in_positions=ref[f"{case}.p"].tolist(),
                          out_positions=ref[f"{case}.q"].tolist())
        assert j.jacobian.shape == ref[f"{case}.jacobian"].shape
        assert rel_error(j.jacobian, ref[f"{case}.jacobian"]) <= 1e-5
        assert j.in_value.shape == (2, j.jacobian.shape[2]) and j.out_value.shape == (2, j.jacobian.shape[1])
    # One position for every row; the same hook on both sides is the identity.
    same = gpt2.jacobian(tokens, "blocks.1.hook_resid_pre", "blocks.1.hook_resid_pre", in_positions=-1, out_positions=-1)
    np.testing.assert_array_equal(same.jacobian[0], np.eye(64, dtype=np.float32))
    cached = gpt2.run(tokens, captures="blocks.1.hook_resid_pre", logits="none").cache["blocks.1.hook_resid_pre"]
    # A pass over other batch shapes (rows repeated): equal to float32 rounding.
    np.testing.assert_allclose(same.out_value, cached[:, -1], rtol=1e-5, atol=1e-5)
    with pytest.raises(glassbox.InvalidArgument, match="comes after"):
        gpt2.jacobian(tokens, "blocks.1.hook_resid_post", "blocks.0.hook_resid_post")
    with pytest.raises(TypeError, match="in_positions must be"):
        gpt2.jacobian(tokens, "hook_embed", "blocks.0.hook_resid_post", in_positions="last")


def test_gradients_through_interventions(gpt2: glassbox.Model) -> None:
    """The backward goes through the run's edits as torch autograd does through the same edits in
    TransformerLens hooks (tests/reference/make_edit_gradient_fixtures.py, cases "linear",
    "cap" and "attention")."""
    ref = reference("tiny-gpt2", "edit_gradients")
    edits = [
        glassbox.Zero("blocks.0.attn.hook_z", heads=1, positions=[2, 3]),
        glassbox.Scale("blocks.0.mlp.hook_post", 0.5, dims=list(range(10))),
        glassbox.Add("blocks.0.hook_resid_mid", ref["edit.u1"], coef=2.0, positions=-1),
        glassbox.Set("blocks.1.hook_resid_pre", ref["edit.w"], positions=1),
        glassbox.ProjectOut("blocks.1.hook_resid_pre", ref["edit.u2"]),
        glassbox.OrthogonalDecomp("blocks.1.hook_mlp_out", ref["edit.u3"], 0.3, positions=[4, 5, 6]),
    ]
    hooks = ["hook_embed", "blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"]
    result = gpt2.gradients(ref["tokens"].tolist(), glassbox.LogitDiff(17, 42), hooks, position=6,
                            interventions=edits)
    np.testing.assert_allclose(result.metric, ref["linear.value"], rtol=1e-5, atol=1e-5)
    for hook in hooks:
        assert rel_error(result[hook], ref[f"linear.grad.{hook}"]) <= 1e-5, hook
    # Position 1 of blocks.1.hook_resid_pre is set: nothing flows back through it.
    assert np.all(result["hook_embed"][:, 1] != 0)  # other paths (attention) still reach it
    # Case "cap": projection caps pass the gradient where they did not clamp and project it off
    # their direction where they did (the second reads the value the Add before it made).
    caps = [
        glassbox.ProjectionCap("blocks.0.hook_resid_mid", ref["edit.u1"], max=0.0),
        glassbox.Add("blocks.1.hook_resid_pre", ref["edit.u2"], coef=2.0, positions=-1),
        glassbox.ProjectionCap("blocks.1.hook_resid_pre", ref["edit.u3"], min=-1.0, max=1.0),
    ]
    capped = gpt2.gradients(ref["tokens"].tolist(), glassbox.LogitDiff(17, 42), hooks, position=6,
                            interventions=caps)
    np.testing.assert_allclose(capped.metric, ref["cap.value"], rtol=1e-5, atol=1e-5)
    for hook in hooks:
        assert rel_error(capped[hook], ref[f"cap.grad.{hook}"]) <= 1e-5, hook
    # Case "attention": edits of scores and patterns ([batch, head, query, key]; dims are keys).
    attention = [
        glassbox.Scale("blocks.0.attn.hook_attn_scores", 0.5, heads=2),
        glassbox.Zero("blocks.1.attn.hook_pattern", heads=1, dims=0),
        glassbox.Scale("blocks.1.attn.hook_pattern", 2.0, heads=0, positions=[5, 6]),
    ]
    attended = hooks + ["blocks.0.attn.hook_attn_scores", "blocks.1.attn.hook_pattern"]
    edited = gpt2.gradients(ref["tokens"].tolist(), glassbox.LogitDiff(17, 42), attended,
                            position=6, interventions=attention)
    np.testing.assert_allclose(edited.metric, ref["attention.value"], rtol=1e-5, atol=1e-5)
    for hook in attended:
        assert rel_error(edited[hook], ref[f"attention.grad.{hook}"]) <= 1e-5, hook
    # Case "attention_coupling": edits that read other elements of scores and patterns.
    coupling = [
        glassbox.MeanAblate("blocks.0.attn.hook_pattern", heads=3),
        glassbox.PatchRows("blocks.1.attn.hook_attn_scores", [1, 0], positions=4, dims=[1, 2]),
        glassbox.MeanAblate("blocks.1.attn.hook_pattern", over="pos", rows=1, heads=2),
    ]
    coupled_hooks = hooks + ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_attn_scores",
                             "blocks.1.attn.hook_pattern"]
    coupled = gpt2.gradients(ref["tokens"].tolist(), glassbox.LogitDiff(17, 42), coupled_hooks,
                             position=6, interventions=coupling)
    np.testing.assert_allclose(coupled.metric, ref["attention_coupling.value"], rtol=1e-5, atol=1e-5)
    for hook in coupled_hooks:
        assert rel_error(coupled[hook], ref[f"attention_coupling.grad.{hook}"]) <= 1e-5, hook


def test_metrics_of_an_activation(gpt2: glassbox.Model) -> None:
    """Direction and SaeFeature read an activation instead of the logits: the value is the
    captured activation's, and the gradient at the hook is the direction (or the feature's
    encoder direction where it fires) at the metric's position only."""
    tokens = [[5, 17, 42, 9, 100, 3]]
    hook = "blocks.1.hook_resid_mid"
    v = np.sin(0.7 * np.arange(64) + 0.3)
    result = gpt2.gradients(tokens, glassbox.Direction(hook, v), [hook, "hook_embed"], position=3)
    x = gpt2.run(tokens, captures=hook).cache[hook].astype(np.float64)
    assert result.metric[0] == pytest.approx(float(x[0, 3] @ v), rel=1e-5)
    np.testing.assert_allclose(result[hook][0, 3], v, rtol=1e-6)
    assert np.all(result[hook][0, 4:] == 0) and np.all(result[hook][0, :3] == 0)
    assert np.abs(result["hook_embed"][0, :4]).sum() > 0 and np.all(result["hook_embed"][0, 4:] == 0)

    sae = gpt2.run(tokens, captures="blocks.1.hook_resid_pre.hook_sae_acts_post",
                   saes=glassbox.SaeSplice("res1")).cache["blocks.1.hook_resid_pre.hook_sae_acts_post"]
    feature = int(np.argmax(sae[0, -1]))
    g = gpt2.gradients(tokens, glassbox.SaeFeature("res1", feature), "blocks.1.hook_resid_pre")
    assert g.metric[0] == pytest.approx(float(sae[0, -1, feature]), rel=1e-5)
    assert np.abs(g["blocks.1.hook_resid_pre"][0, -1]).sum() > 0
    with pytest.raises(glassbox.InvalidArgument, match="direction has 3 values"):
        gpt2.gradients(tokens, glassbox.Direction(hook, [1, 2, 3]), hook)


def test_gradients_through_an_sae_splice(gpt2: glassbox.Model) -> None:
    """Through res1 spliced in with the error term and feature edits, as torch autograd through
    sae_lens's HookedSAETransformer (tests/reference/make_splice_gradient_fixtures.py)."""
    ref = reference("tiny-gpt2", "splice_gradients")
    splice = glassbox.SaeSplice("res1", use_error_term=True, edits=[
        glassbox.FeatureEdit("zero", 89), glassbox.FeatureEdit("clamp", 83, 4.0, positions=2),
        glassbox.FeatureEdit("scale", 115, 3.0)])
    points = [f"blocks.1.hook_resid_pre.hook_sae_{p}" for p in ("input", "acts_pre", "acts_post", "recons")]
    hooks = ["hook_embed", "blocks.1.hook_resid_pre"] + points
    result = gpt2.gradients(ref["tokens"].tolist(), glassbox.LogitDiff(17, 42), hooks, saes=splice)
    np.testing.assert_allclose(result.metric, ref["res1_edit.value"], rtol=1e-5, atol=1e-5)
    for hook in hooks:
        assert rel_error(result[hook], ref[f"res1_edit.grad.{hook}"]) <= 1e-5, hook
    # The error term is added to the output: its gradient is the hook's own (torch leaves it
    # unset, as sae_lens computes the error under no_grad).
    error = gpt2.gradients(ref["tokens"].tolist(), glassbox.LogitDiff(17, 42),
                           "blocks.1.hook_resid_pre.hook_sae_*", saes=splice)
    assert list(error.gradients) == [f"blocks.1.hook_resid_pre.hook_sae_{p}" for p in
                                     ("input", "acts_pre", "acts_post", "recons", "error", "output")]
    np.testing.assert_array_equal(error["blocks.1.hook_resid_pre.hook_sae_error"],
                                  result["blocks.1.hook_resid_pre"])
    with pytest.raises(glassbox.InvalidArgument, match="matches no hook_sae_"):
        gpt2.gradients(ref["tokens"].tolist(), glassbox.LogitDiff(17, 42),
                       "blocks.0.hook_resid_pre.hook_sae_acts_post", saes=splice)
