"""Selections, reductions, wire dtypes, output modes, stop_at_layer and ragged batches."""

import numpy as np
import pytest

from glassbox import Capture

from _helpers import ragged_rows, reference, rel_error

TOLERANCE = 1e-5


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def ragged(llama):
    """A ragged batch (lengths 11, 7, 4) with full captures, to compare selections against."""
    rows = ragged_rows("tiny-llama")
    hooks = ["blocks.0.attn.hook_z", "blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern", "blocks.1.mlp.hook_post"]
    return rows, llama.run(rows, captures=hooks, logits="all")


def test_position_and_head_selection(llama, ragged):
    rows, full = ragged
    lengths = full.sequence_lengths
    assert lengths.tolist() == [11, 7, 4]
    assert full.mask.tolist()[2] == [True] * 4 + [False] * 7

    result = llama.run(
        rows,
        captures=[Capture("blocks.0.attn.hook_z", positions=[0, -1], heads=[1, 3])],
        logits="none",
    )
    z = result.cache["blocks.0.attn.hook_z"]
    assert z.shape == (3, 2, 2, 16)
    full_z = full.cache["blocks.0.attn.hook_z"]
    for b, length in enumerate(lengths):
        np.testing.assert_allclose(z[b, 0], full_z[b, 0][[1, 3]], rtol=1e-6, atol=1e-6)
        # -1 is each row's own last real token, not the padded last column.
        np.testing.assert_allclose(z[b, 1], full_z[b, length - 1][[1, 3]], rtol=1e-6, atol=1e-6)


def test_layers_filter_a_glob(llama, ragged):
    rows, full = ragged
    result = llama.run(rows, captures=Capture("blocks.*.hook_resid_post", layers=1), logits="none")
    assert list(result.cache) == ["blocks.1.hook_resid_post"]
    np.testing.assert_array_equal(result.cache["resid_post", 1], full.cache["resid_post", 1])


def test_reductions(llama, ragged):
    rows, full = ragged
    lengths = full.sequence_lengths
    result = llama.run(
        rows,
        captures=[
            Capture("blocks.1.hook_resid_post", reduction="norm"),
            Capture("blocks.1.mlp.hook_post", reduction="top_k", k=5),
            Capture("blocks.0.attn.hook_pattern", reduction="mean_pos"),
        ],
        logits="none",
    )
    cache = result.cache
    resid = full.cache["blocks.1.hook_resid_post"]
    np.testing.assert_allclose(cache["blocks.1.hook_resid_post"], np.linalg.norm(resid, axis=-1), rtol=1e-5)

    post = full.cache["blocks.1.mlp.hook_post"]
    values, indices = cache["blocks.1.mlp.hook_post"], cache["blocks.1.mlp.hook_post.indices"]
    assert values.shape == indices.shape == (3, 11, 5)
    assert indices.dtype == np.int32
    np.testing.assert_allclose(values, np.take_along_axis(post, indices, axis=-1), rtol=1e-6)
    np.testing.assert_allclose(values, -np.sort(-post, axis=-1)[..., :5], rtol=1e-6)
    for b, length in enumerate(lengths):  # the same indices as numpy's, at real tokens
        expected = np.argsort(-post[b, :length], axis=-1, kind="stable")[:, :5]
        np.testing.assert_array_equal(indices[b, :length], expected)

    pattern = full.cache["blocks.0.attn.hook_pattern"]  # [batch, head, q, k]
    mean = cache["blocks.0.attn.hook_pattern"]
    assert mean.shape == (3, 4, 11)
    for b, length in enumerate(lengths):  # mean over real query positions only
        np.testing.assert_allclose(mean[b, :, :length], pattern[b, :, :length, :length].mean(axis=1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype, numpy_dtype, tolerance", [("f16", np.float16, 1e-3), ("bf16", np.float32, 8e-3)])
def test_wire_dtypes(llama, ragged, dtype, numpy_dtype, tolerance):
    rows, full = ragged
    result = llama.run(rows, captures=Capture("blocks.1.hook_resid_post", dtype=dtype), logits="none")
    values = result.cache["blocks.1.hook_resid_post"]
    assert values.dtype == numpy_dtype
    exact = full.cache["blocks.1.hook_resid_post"]
    mask = full.mask
    assert rel_error(values[mask], exact[mask]) < tolerance
    if dtype == "bf16":  # bf16 values: the low 16 bits of each float32 are zero
        assert not np.any(values.view(np.uint32) & 0xFFFF)


def test_logits_modes_and_target_log_probs(llama, ragged):
    rows, full = ragged
    lengths = full.sequence_lengths
    all_logits = full.logits
    assert all_logits.shape == (3, 11, 300)

    last = llama.run(rows, logits="last").logits
    assert last.shape == (3, 300)
    for b, length in enumerate(lengths):
        np.testing.assert_allclose(last[b], all_logits[b, length - 1], rtol=1e-5, atol=1e-5)

    top = llama.run(rows, logits=("top_k", 3))
    assert top.logits.shape == top.logits_indices.shape == (3, 11, 3)
    np.testing.assert_allclose(top.logits, np.take_along_axis(all_logits, top.logits_indices, axis=-1), rtol=1e-6)
    np.testing.assert_allclose(top.logits, -np.sort(-all_logits, axis=-1)[..., :3], rtol=1e-6)

    targets = [0, 17, 299]
    result = llama.run(rows, logits="none", target_tokens=targets)
    assert result.logits is None
    expected = _log_softmax(all_logits)[..., targets]
    mask = full.mask
    np.testing.assert_allclose(result.target_log_probs[mask], expected[mask], rtol=1e-4, atol=1e-4)


def test_stop_at_layer(gpt2):
    ref = reference("tiny-gpt2")
    tokens = ref["unpadded.input_ids"]
    logits, cache = gpt2.run_with_cache(tokens, stop_at_layer=1)
    assert logits is None
    assert "blocks.0.hook_resid_post" in cache
    assert not any(name.startswith("blocks.1.") or name.startswith("ln_final") for name in cache)
    assert rel_error(cache["blocks.0.hook_resid_post"], ref["unpadded.tl.blocks.0.hook_resid_post"]) < TOLERANCE
    # Negative counts from the end, as in TransformerLens.
    _, same = gpt2.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post", stop_at_layer=-1)
    np.testing.assert_array_equal(same["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"])


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_ragged_batch_equals_single_runs(client, name):
    model = client.model(name)
    rows = ragged_rows(name)
    hooks = ["blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post", "ln_final.hook_normalized"]
    batch = model.run(rows, captures=hooks, loss_per_token=True)
    assert [t.tolist() for t in batch.tokens] == rows
    for b, row in enumerate(rows):
        single = model.run([row], captures=hooks, loss_per_token=True)
        n = len(row)
        assert rel_error(batch.logits[b, :n], single.logits[0]) < TOLERANCE
        assert rel_error(batch.loss_per_token[b, : n - 1], single.loss_per_token[0]) < TOLERANCE
        assert not np.any(batch.loss_per_token[b, n - 1 :])  # 0 at padding
        assert rel_error(batch.cache["blocks.0.attn.hook_pattern"][b, :, :n, :n], single.cache["blocks.0.attn.hook_pattern"][0]) < TOLERANCE
        for hook in hooks[1:]:
            assert rel_error(batch.cache[hook][b, :n], single.cache[hook][0]) < TOLERANCE
    # The same rows against the HF reference for the right-padded batch.
    ref = reference(name)
    mask = ref["right.attention_mask"].astype(bool)
    assert rel_error(batch.logits[mask], ref["right.hf.logits"][mask]) < TOLERANCE


def test_input_forms_agree(llama):
    row = ragged_rows("tiny-llama")[1]
    base = llama.run([row], logits="last").logits
    for form in (row, np.array(row), np.array([row], dtype=np.int64), [np.array(row, dtype=np.int32)], tuple(row)):
        np.testing.assert_array_equal(llama.run(form, logits="last").logits, base)
