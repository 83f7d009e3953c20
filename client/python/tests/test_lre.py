"""glassbox.lre: linear relational embeddings and concepts from the server's Jacobians.

The fit's W is the mean of Jacobians that equal torch's (tests/reference/make_jacobian_fixtures.py);
on the demo model, an LRE of the capital-of relation fitted on 8 countries predicts the model's
answer for the 8 others (docs/gradients.md)."""
from __future__ import annotations

import numpy as np
import pytest

from _helpers import reference, rel_error

import glassbox
from glassbox import lre

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
    "Canada": "Ottawa", "Greece": "Athens", "Norway": "Oslo", "Kenya": "Nairobi",
    "Peru": "Lima", "Cuba": "Havana", "Ireland": "Dublin", "Poland": "Warsaw",
}


@pytest.fixture(scope="module")
def demo(client: glassbox.Client) -> glassbox.Model:
    return client.model("demo")


def test_fit_is_the_mean_jacobian_and_offset(gpt2: glassbox.Model) -> None:
    ref = reference("tiny-gpt2", "jacobians")
    rows = ref["tokens"].tolist()
    p = ref["resid.p"].tolist()
    emb = lre.fit(gpt2, rows, p, "blocks.0.hook_resid_pre", "blocks.1.hook_resid_post")
    assert rel_error(emb.weight, ref["resid.jacobian"].astype(np.float64).mean(0)) <= 1e-5
    s = np.stack([gpt2.run([r], captures="blocks.0.hook_resid_pre", logits="none")
                  .cache["blocks.0.hook_resid_pre"][0, i] for r, i in zip(rows, p)]).astype(np.float64)
    o = np.stack([gpt2.run([r], captures="blocks.1.hook_resid_post", logits="none")
                  .cache["blocks.1.hook_resid_post"][0, -1] for r in rows]).astype(np.float64)
    np.testing.assert_allclose(emb.bias, (o - s @ emb.weight.T).mean(0), rtol=1e-4, atol=1e-4)
    # The fit reproduces its own examples on average: mean(W s + b) = mean(o).
    np.testing.assert_allclose(emb(s).mean(0), o.mean(0), rtol=1e-4, atol=1e-4)
    assert emb.with_beta(2.0).beta == 2.0
    with pytest.raises(ValueError, match="one int for every prompt or one per prompt"):
        lre.fit(gpt2, rows, [1, 2, 3], "blocks.0.hook_resid_pre", "blocks.1.hook_resid_post")


def test_capital_of_relation_on_the_demo_model(demo: glassbox.Model) -> None:
    prompts = [f"The capital of {country} is" for country in CAPITALS]
    train, held_out = prompts[:8], prompts[8:]
    # The country is the prompt's second-to-last token (" is" is the last).
    emb = lre.fit(demo, train, -2, "blocks.0.hook_resid_pre", "blocks.3.hook_resid_post")
    assert emb.weight.shape == (128, 128)
    assert emb.faithfulness(demo, held_out, -2) >= 0.75
    # Concepts (Chanin et al.): from an LRE to a non-final layer and a low-rank pseudo-inverse
    # (rank 8 of 128; the full inverse classifies nothing), built from this template, classify
    # the subjects as they appear in another template the model was trained on.
    mid = lre.fit(demo, train, -2, "blocks.0.hook_resid_pre", "blocks.2.hook_resid_post")
    capitals = list(CAPITALS.values())
    concepts = lre.concepts(mid, demo, prompts, capitals, rank=8)
    assert concepts.directions.shape == (16, 128) and concepts.objects == tuple(capitals)
    np.testing.assert_allclose(np.linalg.norm(concepts.directions, axis=1), 1.0, rtol=1e-9)
    other = [f"The capital city of {country} is" for country in CAPITALS]
    s = np.stack([demo.run(p, captures="blocks.0.hook_resid_pre", logits="none")
                  .cache["blocks.0.hook_resid_pre"][0, -2] for p in other])
    assert np.mean(np.asarray(concepts.classify(s)) == np.asarray(capitals)) >= 0.75
    steer = concepts.steering("Paris", 4.0, positions=-2)
    assert isinstance(steer, glassbox.Add)
    with pytest.raises(ValueError, match="rank must be in"):
        lre.low_rank_pinv(mid.weight, 0)
