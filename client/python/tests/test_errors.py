"""Server errors arrive as GlassboxError subclasses carrying the status code and message."""

import grpc
import pytest

import glassbox
from glassbox import Capture


def test_unknown_model_is_not_found(client):
    with pytest.raises(glassbox.NotFound) as error:
        client.model("no-such-model")
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in error.value.message
    assert isinstance(error.value, glassbox.GlassboxError)


def test_unknown_hook_is_invalid_argument(gpt2):
    with pytest.raises(glassbox.InvalidArgument) as error:
        gpt2.run([[1, 2, 3]], captures=["blocks.0.hook_nope"])
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "blocks.0.hook_nope" in error.value.message
    assert "blocks.0.hook_resid_pre" in error.value.message  # names the valid ones


def test_text_without_tokenizer_is_failed_precondition(gpt2):
    with pytest.raises(glassbox.FailedPrecondition) as error:
        gpt2.run("Hello world")
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "tokenizer" in error.value.message
    with pytest.raises(glassbox.FailedPrecondition):
        gpt2.to_tokens("Hello world")
    with pytest.raises(glassbox.FailedPrecondition):
        gpt2.to_str_tokens("Hello world")
    with pytest.raises(glassbox.FailedPrecondition):
        gpt2.to_string([1, 2, 3])


def test_bad_requests_are_invalid_argument(gpt2):
    with pytest.raises(glassbox.InvalidArgument, match="vocabulary"):
        gpt2.run([[1, 2, 300]])
    with pytest.raises(glassbox.InvalidArgument, match="head 9"):
        gpt2.run([[1, 2]], captures=Capture("blocks.0.attn.hook_z", heads=[9]))
    with pytest.raises(glassbox.InvalidArgument, match="never reached"):
        gpt2.run([[1, 2]], captures="blocks.1.hook_resid_post", stop_at_layer=1)
    with pytest.raises(glassbox.InvalidArgument):
        gpt2.run([[1, 2]], logits="all", stop_at_layer=1)  # outputs must be empty


def test_over_a_limit_is_resource_exhausted(gpt2):
    with pytest.raises(glassbox.ResourceExhausted):
        gpt2.run([[1]] * 2000)  # glassboxd's default --max_batch is 1024


def test_unreachable_server_is_unavailable():
    with glassbox.connect("127.0.0.1:1", timeout=10) as client:
        with pytest.raises(glassbox.Unavailable) as error:
            client.models()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_client_side_validation():
    with pytest.raises(ValueError):
        Capture("blocks.0.hook_resid_post", reduction="top_k")  # needs k
    with pytest.raises(ValueError):
        Capture("blocks.0.hook_resid_post", dtype="f64")
    with pytest.raises(ValueError):
        Capture("blocks.0.hook_resid_post", k=3)
    with pytest.raises(TypeError):
        Capture("blocks.0.hook_resid_post", positions=["a"])


def test_client_side_input_errors(gpt2):
    with pytest.raises(ValueError, match="prepend_bos"):
        gpt2.run([[1, 2]], prepend_bos=True)
    with pytest.raises(TypeError, match="mixes"):
        gpt2.run(["a", [1, 2]])
    with pytest.raises(ValueError, match="logits"):
        gpt2.run([[1, 2]], logits="first")
    with pytest.raises(ValueError, match="twice|two captures"):
        gpt2.run([[1, 2]], captures=["blocks.0.hook_resid_post", Capture("blocks.0.hook_resid_post", positions=-1)])
