"""Pieces that need no server: wire decoding, input translation, act names."""

import numpy as np
import pytest

import glassbox
from glassbox import get_act_name
from glassbox._model import build_inputs, build_outputs
from glassbox._proto.glassbox.v1 import glassbox_pb2 as pb
from glassbox._stream import decode_tensor


def test_decode_bf16_is_exact_float32():
    values = np.array([1.0, -2.5, 3.140625, 0.0, -np.inf, 65280.0], dtype=np.float32)
    bf16_bits = (values.view(np.uint32) >> 16).astype("<u2")  # all exactly representable
    decoded = decode_tensor(pb.DTYPE_BF16, bytearray(bf16_bits.tobytes()), (2, 3))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, values.reshape(2, 3))


def test_decode_f16_f32_i32():
    f16 = np.array([0.5, -1.25, 1000.0], dtype="<f2")
    out = decode_tensor(pb.DTYPE_F16, bytearray(f16.tobytes()), (3,))
    assert out.dtype == np.float16 and out.tolist() == [0.5, -1.25, 1000.0]
    out = decode_tensor(pb.DTYPE_F32, bytearray(np.array([1.5], "<f4").tobytes()), (1, 1))
    assert out.dtype == np.float32 and out.shape == (1, 1) and out.flags.writeable
    out = decode_tensor(pb.DTYPE_I32, bytearray(np.array([7, -1], "<i4").tobytes()), (2,))
    assert out.dtype == np.int32 and out.tolist() == [7, -1]


def test_build_inputs():
    assert list(build_inputs("hi").texts) == ["hi"]
    assert build_inputs(["a", "b"], prepend_bos=False).prepend_bos is False
    assert not build_inputs(["a"]).HasField("prepend_bos")
    ragged = build_inputs([[1, 2, 3], np.array([4])])
    assert [list(r.ids) for r in ragged.token_ids] == [[1, 2, 3], [4]]
    assert [list(r.ids) for r in build_inputs(np.array([[1, 2], [3, 4]])).token_ids] == [[1, 2], [3, 4]]
    with pytest.raises(ValueError):
        build_inputs([[-1]])
    with pytest.raises(TypeError):
        build_inputs(np.array([[0.5]]))
    with pytest.raises(ValueError):
        build_inputs([])


def test_build_outputs():
    assert build_outputs("all", False, None).logits == pb.LOGITS_ALL
    assert build_outputs(None, True, None).logits == pb.LOGITS_NONE
    top = build_outputs(("top_k", 4), False, [1, 2])
    assert (top.logits, top.logits_k, list(top.target_tokens)) == (pb.LOGITS_TOP_K, 4, [1, 2])
    with pytest.raises(ValueError):
        build_outputs(("top_k", 0), False, None)


def test_get_act_name_matches_transformer_lens():
    assert get_act_name("resid_post", 3) == "blocks.3.hook_resid_post"
    assert get_act_name("pattern", 0) == "blocks.0.attn.hook_pattern"
    assert get_act_name("attn", 0) == "blocks.0.attn.hook_pattern"
    assert get_act_name("post", 1) == "blocks.1.mlp.hook_post"
    assert get_act_name("scale", 0, "ln1") == "blocks.0.ln1.hook_scale"
    assert get_act_name("normalized") == "ln_final.hook_normalized"
    assert get_act_name("embed") == "hook_embed"
    assert get_act_name("blocks.0.hook_resid_pre") == "blocks.0.hook_resid_pre"


def test_activation_cache_mapping():
    cache = glassbox.ActivationCache({"blocks.0.hook_resid_post": np.zeros((1, 2, 3), np.float32)})
    assert len(cache) == 1 and list(cache) == ["blocks.0.hook_resid_post"]
    assert ("resid_post", 0) in cache and "x" not in cache
    assert cache.get("x") is None
    assert "blocks.0.hook_resid_post: [1, 2, 3] float32" in repr(cache)


def test_error_mapping():
    import grpc

    from glassbox._errors import error_for_status

    for code, cls in [
        (grpc.StatusCode.NOT_FOUND, glassbox.NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, glassbox.InvalidArgument),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, glassbox.ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, glassbox.Unavailable),
        (grpc.StatusCode.UNAUTHENTICATED, glassbox.Unauthenticated),
    ]:
        error = error_for_status(code, "why")
        assert type(error) is cls and error.code == code and error.message == "why"
        assert str(error) == f"{code.name}: why"


def test_decode_array():
    from glassbox._analyses import decode_array

    floats = decode_array(pb.Array(shape=[2, 3], dim_names=["layer", "pos"], values=range(6)))
    assert floats.dtype == np.float32 and floats.shape == (2, 3) and floats[1, 2] == 5
    ints = decode_array(pb.Array(shape=[2], indices=[7, 9]))
    assert ints.dtype == np.int32 and ints.tolist() == [7, 9]
    assert decode_array(pb.Array()) is None
    assert decode_array(pb.Array(shape=[0, 4])).shape == (0, 4)
    with pytest.raises(glassbox.MalformedStream, match="shape"):
        decode_array(pb.Array(shape=[2, 2], values=[1.0]))


def test_intervention_protos():
    from glassbox._interventions import intervention_protos

    protos = intervention_protos([glassbox.Zero("hook_embed"), glassbox.PatchRows("hook_embed", {2: 0})], batch=3)
    assert [p.kind for p in protos] == [pb.INTERVENTION_ZERO, pb.INTERVENTION_PATCH_ROW]
    assert not protos[0].HasField("coefficient")
    assert list(protos[1].rows) == [2] and list(protos[1].source_rows) == [0, 1, 0]
    add = intervention_protos(glassbox.Add("hook_embed", np.ones((2, 2)), coef=-1), batch=1)[0]
    assert add.coefficient == -1 and list(add.value) == [1.0] * 4
    mean = intervention_protos(glassbox.MeanAblate("hook_embed", over="pos"), batch=1)[0]
    assert mean.kind == pb.INTERVENTION_MEAN_POS
    assert intervention_protos(None, batch=1) == []


def test_repeated_random_tokens_repeat_after_the_prefix_and_avoid_it():
    tokens = glassbox.repeated_random_tokens(vocab_size=5, n=40, batch=3, seed=1, prefix=[0])
    assert tokens.shape == (3, 81) and tokens.dtype == np.int64
    assert (tokens[:, 0] == 0).all() and (tokens[:, 1:] != 0).all()
    np.testing.assert_array_equal(tokens[:, 1:41], tokens[:, 41:])
    assert set(np.unique(tokens[:, 1:])) == {1, 2, 3, 4}
    again = glassbox.repeated_random_tokens(5, 40, 3, seed=1, prefix=[0])
    np.testing.assert_array_equal(tokens, again)
    with pytest.raises(ValueError):
        glassbox.repeated_random_tokens(5, 1, 3)


def test_copy_losses_skip_each_copys_first_token():
    # prefix 1, n 3: tokens at 0 | 1 2 3 | 4 5 6; entry t is the loss of token t + 1.
    losses = np.array([[100.0, 1.0, 2.0, 100.0, 3.0, 5.0]])
    assert glassbox.copy_losses(losses, n=3, prefix_length=1) == (1.5, 4.0)


def test_head_detection_top_orders_by_score():
    scores = np.array([[0.1, 0.9], [0.5, 0.2]])
    detection = glassbox.HeadDetection(np.zeros((1, 5), np.int64), 2, 1, scores, scores.T,
                                       scores * 0, 1.0, 0.5)
    assert detection.top("induction", k=2) == [(0, 1, 0.9), (1, 0, 0.5)]
    assert detection.top("duplicate_token", k=1) == [(1, 0, 0.9)]
    with pytest.raises(ValueError):
        detection.top("successor")


def test_zero_heads_groups_heads_by_layer():
    edits = glassbox.zero_heads([(2, 1), (0, 3), (2, 0, 0.9)])
    assert [e.hook for e in edits] == ["blocks.0.attn.hook_z", "blocks.2.attn.hook_z"]
    assert all(isinstance(e, glassbox.Zero) for e in edits)
    assert [list(e.heads) for e in edits] == [[3], [1, 0]]


def test_head_detection_above_keeps_heads_over_the_threshold():
    scores = np.array([[0.1, 0.9], [0.5, 0.2]])
    detection = glassbox.HeadDetection(np.zeros((1, 5), np.int64), 2, 1, scores, scores,
                                       scores, 1.0, 0.5)
    assert detection.above(0.3) == [(0, 1, 0.9), (1, 0, 0.5)]
    assert detection.top(k=None)[-1] == (0, 0, 0.1)
