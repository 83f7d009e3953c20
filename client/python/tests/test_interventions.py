"""Interventions equal TransformerLens run_with_hooks (tests/reference/make_intervention_fixtures.py)."""

import numpy as np
import pytest

import glassbox
from glassbox import Add, Intervention, MeanAblate, PatchRows, Scale, Set, Zero

from _helpers import reference, rel_error

TOLERANCE = 1e-5


def cases(ref):
    """The fixture's cases, in the client's vocabulary (the script's hook functions in comments)."""
    return {
        # x[:, :, 1, :] = 0 at blocks.0.attn.hook_z
        "zero_head": [Zero("blocks.0.attn.hook_z", heads=1)],
        # x[:, -1, :] += 2.5 * v at blocks.1.hook_resid_pre
        "steer_last": [Add("blocks.1.hook_resid_pre", ref["steer_last.value"], coef=2.5, positions=-1)],
        # x[:, :, [3, 7, 11]] = x[:, :, [3, 7, 11]].mean(0)
        "mean_neurons": [MeanAblate("blocks.0.mlp.hook_post", over="batch", dims=[3, 7, 11])],
        # x[:, 4, :] = x[[2, 0, 1], 4, :]
        "resample_attn_out": [PatchRows("blocks.1.hook_attn_out", [2, 0, 1], positions=4)],
        # x[:, :, 0, :] *= 0.5
        "scale_v": [Scale("blocks.1.attn.hook_v", 0.5, heads=0)],
        # x[1] = v
        "set_mlp_out": [Set("blocks.0.hook_mlp_out", ref["set_mlp_out.value"], rows=1)],
        # two edits at one hook, in order: x[:, [0, 2]] += v, then *= 0.5
        "chain": [
            Add("blocks.0.hook_resid_mid", ref["chain.value"], positions=[0, 2]),
            Scale("blocks.0.hook_resid_mid", 0.5, positions=[0, 2]),
        ],
        # x[0] = x[0].mean(0) (over positions)
        "mean_pos": [MeanAblate("blocks.1.hook_mlp_out", over="pos", rows=0)],
        # Patterns and scores are [batch, head, query_pos, key_pos]: positions pick queries,
        # dims keys. x[:, 1, [3, -1], :] = 0
        "zero_pattern": [Zero("blocks.0.attn.hook_pattern", heads=1, positions=[3, -1])],
        # x[:, 0] = uniform causal attention at layer 0; x[:, 2] = attend to the first token at 1
        "uniform_bos_pattern": [
            Set("blocks.0.attn.hook_pattern", ref["uniform_bos_pattern.uniform"], heads=0),
            Set("blocks.1.attn.hook_pattern", ref["uniform_bos_pattern.bos"], heads=2),
        ],
        # x[:, 3, :, [0, 2, 5]] += 1.5 * v[[0, 2, 5]] (key -6 is key 5 of 11)
        "add_scores": [Add("blocks.0.attn.hook_attn_scores", ref["add_scores.value"], coef=1.5,
                           heads=3, dims=[0, 2, -6])],
        # x[[0, 2]] *= 0.3
        "scale_scores": [Scale("blocks.1.attn.hook_attn_scores", 0.3, rows=[0, 2])],
    }


CASES = list(cases(reference("tiny-gpt2", "interventions")))


@pytest.mark.parametrize("case", CASES)
def test_interventions_equal_transformer_lens_run_with_hooks(model, case):
    ref = reference(model.name, "interventions")
    tokens = reference(model.name)["unpadded.input_ids"]
    logits = model.run_with_hooks(tokens, interventions=cases(ref)[case])
    assert rel_error(logits, ref[f"{case}.logits"]) < TOLERANCE


def test_every_fixture_case_is_covered():
    ref = reference("tiny-llama", "interventions")
    assert {k[: -len(".logits")] for k in ref if k.endswith(".logits")} == set(CASES)


def test_run_run_with_cache_and_stream_take_interventions(gpt2):
    ref = reference("tiny-gpt2", "interventions")
    tokens = reference("tiny-gpt2")["unpadded.input_ids"]
    edit = Zero("blocks.0.attn.hook_z", heads=1)

    result = gpt2.run(tokens, interventions=edit, captures="blocks.0.attn.hook_z")
    assert rel_error(result.logits, ref["zero_head.logits"]) < TOLERANCE
    z = result.cache["z", 0]  # captures at the edited hook see the edited value
    assert np.all(z[:, :, 1] == 0) and np.any(z[:, :, 0] != 0)

    logits, cache = gpt2.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z", interventions=[edit])
    assert rel_error(logits, ref["zero_head.logits"]) < TOLERANCE
    np.testing.assert_array_equal(cache["z", 0], z)

    with gpt2.stream(tokens, captures="blocks.0.attn.hook_z", interventions=[edit], logits="all") as stream:
        streamed = dict(stream)
    np.testing.assert_array_equal(streamed["blocks.0.attn.hook_z"], z)
    assert rel_error(streamed["logits"], ref["zero_head.logits"]) < TOLERANCE


def test_hook_forms_globs_and_row_mappings(llama):
    tokens = reference("tiny-llama")["unpadded.input_ids"]
    explicit = llama.run_with_hooks(tokens, [Zero("blocks.0.attn.hook_z", heads=2), Zero("blocks.1.attn.hook_z", heads=2)])
    by_glob = llama.run_with_hooks(tokens, [Zero("blocks.*.attn.hook_z", heads=2)])
    by_tuple = llama.run_with_hooks(tokens, [Zero(("z", 0), heads=2), Zero(("z", 1), heads=2)])
    np.testing.assert_array_equal(by_glob, explicit)
    np.testing.assert_array_equal(by_tuple, explicit)

    # {row: source} patches only the rows named; the list form names a source for every row.
    mapped = llama.run_with_hooks(tokens, PatchRows("blocks.0.hook_resid_post", {1: 0}, positions=[0, 1]))
    listed = llama.run_with_hooks(tokens, PatchRows("blocks.0.hook_resid_post", [0, 0, 2], positions=[0, 1]))
    np.testing.assert_array_equal(mapped, listed)
    # Same ids at positions 0-1 after the patch as row 0 -> same logits there, for row 1.
    np.testing.assert_allclose(mapped[1, :2], mapped[0, :2], rtol=1e-5, atol=1e-5)

    # The generic Intervention spelling is the same edit.
    generic = llama.run_with_hooks(tokens, Intervention("zero", "blocks.*.attn.hook_z", heads=2))
    np.testing.assert_array_equal(generic, explicit)


def test_steering_value_forms(gpt2):
    tokens = reference("tiny-gpt2")["unpadded.input_ids"]
    ref = reference("tiny-gpt2", "interventions")
    v = ref["steer_last.value"]
    as_list = gpt2.run_with_hooks(tokens, Add("blocks.1.hook_resid_pre", v.tolist(), coef=2.5, positions=-1))
    assert rel_error(as_list, ref["steer_last.logits"]) < TOLERANCE
    # A full-shape value [batch, pos, d_model] that is zero except at the last position.
    full = np.zeros(tokens.shape + (v.shape[0],), np.float32)
    full[:, -1] = 2.5 * v
    as_full = gpt2.run_with_hooks(tokens, Add("blocks.1.hook_resid_pre", full))
    assert rel_error(as_full, ref["steer_last.logits"]) < TOLERANCE


def test_steering_value_from_torch(gpt2):
    torch = pytest.importorskip("torch")
    tokens = reference("tiny-gpt2")["unpadded.input_ids"]
    ref = reference("tiny-gpt2", "interventions")
    v = torch.from_numpy(ref["steer_last.value"].copy())
    logits = gpt2.run_with_hooks(tokens, Add("blocks.1.hook_resid_pre", v, coef=2.5, positions=-1))
    assert rel_error(logits, ref["steer_last.logits"]) < TOLERANCE


def test_run_with_hooks_return_types(gpt2):
    tokens = reference("tiny-gpt2")["unpadded.input_ids"]
    edit = Zero("blocks.0.attn.hook_z", heads=1)
    plain = gpt2.run(tokens, interventions=edit, loss_per_token=True)
    loss = gpt2.run_with_hooks(tokens, edit, return_type="loss")
    assert isinstance(loss, float)
    assert loss == pytest.approx(float(plain.loss_per_token.astype(np.float64).mean()), rel=1e-6)
    per_token = gpt2.run_with_hooks(tokens, edit, return_type="loss", loss_per_token=True)
    np.testing.assert_array_equal(per_token, plain.loss_per_token)
    logits, both_loss = gpt2.run_with_hooks(tokens, edit, return_type="both")
    np.testing.assert_array_equal(logits, plain.logits)
    assert both_loss == loss
    assert gpt2.run_with_hooks(tokens, edit, return_type=None) is None
    # Without interventions it is a plain forward pass.
    np.testing.assert_array_equal(gpt2.run_with_hooks(tokens), gpt2.run(tokens).logits)


def test_ragged_batch_loss_counts_real_tokens_only(gpt2):
    rows = [[1, 2, 3, 4], [5, 6]]
    per_token = gpt2.run(rows, logits="none", loss_per_token=True).loss_per_token
    loss = gpt2.run_with_hooks(rows, return_type="loss")
    assert loss == pytest.approx(float(per_token.astype(np.float64).sum() / 4), rel=1e-6)


def test_intervention_errors_are_invalid_argument(gpt2):
    tokens = [[1, 2, 3]]
    with pytest.raises(glassbox.InvalidArgument, match="not edited yet"):
        gpt2.run_with_hooks(tokens, Zero("blocks.0.attn.hook_result"))
    with pytest.raises(glassbox.InvalidArgument, match="key position 3 is outside row 0"):
        gpt2.run_with_hooks(tokens, Zero("blocks.0.attn.hook_pattern", dims=3))
    with pytest.raises(glassbox.InvalidArgument, match="query position -4"):
        gpt2.run_with_hooks(tokens, Zero("blocks.0.attn.hook_attn_scores", positions=-4))
    with pytest.raises(glassbox.InvalidArgument, match="head 4 is outside"):
        gpt2.run_with_hooks(tokens, Zero("blocks.0.attn.hook_pattern", heads=4))
    with pytest.raises(glassbox.InvalidArgument, match=r"it must be \[key_pos\] \[3\]"):
        gpt2.run_with_hooks(tokens, Set("blocks.0.attn.hook_pattern", [1.0, 0.0]))
    with pytest.raises(glassbox.InvalidArgument, match="the value has 2 elements"):
        gpt2.run_with_hooks(tokens, Add("hook_embed", [1.0, 2.0]))
    with pytest.raises(glassbox.InvalidArgument, match="head 9"):
        gpt2.run_with_hooks(tokens, Zero("blocks.0.attn.hook_z", heads=9))
    with pytest.raises(glassbox.InvalidArgument, match="position 5"):
        gpt2.run_with_hooks(tokens, Zero("blocks.0.hook_resid_pre", positions=5))
    with pytest.raises(glassbox.InvalidArgument, match="blocks.9.hook_z"):
        gpt2.run_with_hooks(tokens, Zero("blocks.9.hook_z"))
    with pytest.raises(glassbox.InvalidArgument, match="source row 3"):
        gpt2.run_with_hooks(tokens, PatchRows("hook_embed", [3]))
    with pytest.raises(glassbox.InvalidArgument, match="a source row for each"):
        gpt2.run_with_hooks([[1, 2], [3, 4]], PatchRows("hook_embed", [1]))


def test_edited_scores_give_the_captured_pattern(gpt2):
    """A capture at hook_pattern sees softmax of the edited scores; at hook_attn_scores, the
    edited scores (masked keys stay -inf under add)."""
    tokens = reference("tiny-gpt2")["unpadded.input_ids"]
    ref = reference("tiny-gpt2", "interventions")
    edit = Add("blocks.0.attn.hook_attn_scores", ref["add_scores.value"], coef=1.5, heads=3, dims=[0, 2, 5])
    plain = gpt2.run(tokens, captures=["blocks.0.attn.hook_attn_scores"])
    result = gpt2.run(tokens, interventions=edit, logits="all",
                      captures=["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"])
    assert rel_error(result.logits, ref["add_scores.logits"]) < TOLERANCE
    scores = result.cache["attn_scores", 0].astype(np.float64)
    want = plain.cache["attn_scores", 0].astype(np.float64).copy()
    want[:, 3, :, [0, 2, 5]] += 1.5 * ref["add_scores.value"][[0, 2, 5]][:, None, None]
    assert rel_error(scores, want) < TOLERANCE  # -inf entries (future keys) equal exactly
    softmax = np.exp(scores - scores.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    np.testing.assert_allclose(result.cache["pattern", 0], softmax, atol=1e-6)


def test_client_side_intervention_validation(gpt2):
    with pytest.raises(ValueError, match="over"):
        MeanAblate("blocks.0.hook_resid_pre", over="layer")
    with pytest.raises(ValueError, match="kind"):
        Intervention("ablate", "hook_embed")
    with pytest.raises(ValueError, match="needs coef"):
        Intervention("scale", "hook_embed")
    with pytest.raises(ValueError, match="takes no value"):
        Intervention("zero", "hook_embed", value=[1.0])
    with pytest.raises(ValueError, match="empty"):
        Add("hook_embed", [])
    with pytest.raises(TypeError, match="heads"):
        Zero("blocks.0.attn.hook_z", heads=["a"])
    with pytest.raises(TypeError, match="hook"):
        Zero(3)
    with pytest.raises(TypeError, match="Intervention"):
        gpt2.run_with_hooks([[1, 2]], ["blocks.0.hook_resid_pre"])
    with pytest.raises(ValueError, match="outside the batch"):
        gpt2.run_with_hooks([[1, 2]], PatchRows("hook_embed", {1: 0}))
    with pytest.raises(ValueError, match="return_type"):
        gpt2.run_with_hooks([[1, 2]], return_type="probs")


def test_intervention_values_compare_and_print():
    v = np.arange(4, dtype=np.float32)
    assert Add("hook_embed", v, 2.0) == Add("hook_embed", v.tolist(), 2.0)
    assert Add("hook_embed", v, 2.0) != Add("hook_embed", v, 3.0)
    assert Zero(("z", 0), heads=1) == Zero("blocks.0.attn.hook_z", heads=[1])
    assert repr(Zero("blocks.0.attn.hook_z", heads=1)) == "Zero('blocks.0.attn.hook_z', heads=[1])"
    assert repr(MeanAblate("hook_embed", over="pos")) == "MeanAblate('hook_embed', over='pos')"
    assert MeanAblate("hook_embed", over="pos").over == "pos"
    proto = Scale("blocks.0.hook_resid_pre", 0.5, rows=[0], positions=[-1], dims=[3])._to_proto(2)
    assert (proto.coefficient, list(proto.rows), list(proto.positions), list(proto.dims)) == (0.5, [0], [-1], [3])
    assert len({Zero("hook_embed"), Zero("hook_embed")}) == 1
