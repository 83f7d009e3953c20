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


def test_gradient_requests_are_checked(gpt2: glassbox.Model) -> None:
    assert metric_proto(glassbox.LogitDiff(3, 4), -1, int).position == -1
    with pytest.raises(TypeError, match="metric must be"):
        gpt2.gradients([[1, 2, 3]], glassbox.Loss(), "hook_embed")
    with pytest.raises(ValueError, match="hooks must be"):
        gpt2.gradients([[1, 2, 3]], glassbox.Logit(3), [])
    with pytest.raises(glassbox.InvalidArgument, match="rows of one length"):
        gpt2.gradients([[1, 2, 3], [4, 5]], glassbox.Logit(3), "hook_embed")
    with pytest.raises(glassbox.InvalidArgument, match="position 3 is outside rows of 3 tokens"):
        gpt2.gradients([[1, 2, 3]], glassbox.Logit(3), "hook_embed", position=3)
