"""End to end on the shipped demo model (models/demo): its circuits, found through glassboxd.

These fail if the model, the server's forward pass, captures, ablations or the head detector
break: random sequences repeated are predicted by induction heads in a middle layer, zeroing
those heads (and not others) removes the benefit of the repeat, and the model completes
held-out IOI, sequence-continuation and fact prompts. Activations equal HF transformers'
(tests/reference/make_demo_fixtures.py), and the accuracies HF measured at training time
(models/demo/evaluation.json) are reproduced through the server on the same prompts. The
prompts come from tools/demo_model/prompts.py (no torch needed).
"""

from __future__ import annotations

import json
import sys
from typing import Sequence, Tuple

import numpy as np
import pytest

from _helpers import DEMO_MODEL, REPO_ROOT, reference, rel_error

import glassbox
from glassbox import Zero, zero_heads

sys.path.insert(0, str(REPO_ROOT / "tools" / "demo_model"))
import prompts  # noqa: E402

EVALUATION = json.loads((DEMO_MODEL / "evaluation.json").read_text())
INDUCTION_THRESHOLD = 0.4  # as tools/demo_model/evaluate.py


@pytest.fixture(scope="module")
def demo(client: glassbox.Client) -> glassbox.Model:
    return client.model("demo")


@pytest.fixture(scope="module")
def detection(demo: glassbox.Model) -> glassbox.HeadDetection:
    # A draw of its own (the model card's numbers use torch's generator).
    return demo.detect_heads(n=24, batch=16, seed=20261201)


def _gap_closed(clean: glassbox.HeadDetection, ablated: glassbox.HeadDetection) -> float:
    """Share of the first-vs-second copy loss gap that an ablation takes away."""
    return (ablated.loss_second - clean.loss_second) / (clean.loss_first - clean.loss_second)


def test_the_demo_model_has_a_tokenizer_that_adds_bos(demo):
    assert demo.cfg.has_tokenizer
    ids = demo.to_tokens("When Mary and John went to the store")
    bos = int(demo.to_tokens("", prepend_bos=True)[0, 0])
    assert ids[0, 0] == bos == 0
    assert demo.to_str_tokens("When Mary and John")[1:] == ["When", " Mary", " and", " John"]


def test_activations_equal_hf_transformers(demo):
    """The served model is the trained one: logits, patterns and residuals equal HF float64."""
    expected = reference("demo")
    names = [name for name in expected if name.startswith("blocks.")]
    logits, cache = demo.run_with_cache(expected["input_ids"], names_filter=names)
    assert rel_error(logits, expected["logits"]) < 1e-5
    for name in names:
        assert rel_error(cache[name], expected[name]) < 1e-5, name


def test_second_repeat_is_predicted_and_first_is_not(detection):
    # 1024 tokens: a uniform guess costs ln(1024) = 6.93 nats.
    assert detection.loss_first > 6.0
    assert detection.loss_second < 0.5


def test_induction_heads_attend_to_the_token_after_the_earlier_copy(detection, demo):
    top = detection.top("induction", k=2)
    assert all(score > 0.8 for _, _, score in top), top
    # Induction needs a head of an earlier layer to compose with: never in layer 0.
    assert all(layer > 0 for layer, _, _ in top)
    assert detection.induction[0].max() < 0.1
    # The same heads are not duplicate-token heads: they look one past the earlier copy.
    for layer, head, _ in top:
        assert detection.duplicate_token[layer, head] < 0.1


def test_ablating_the_induction_heads_removes_most_of_the_gap(detection, demo):
    heads = detection.above(INDUCTION_THRESHOLD)
    ablated = demo.detect_heads(n=24, batch=16, seed=20261201, interventions=zero_heads(heads))
    assert _gap_closed(detection, ablated) > 0.8, (heads, ablated.loss_second)
    # The first copy, which never used them, hardly changes.
    assert abs(ablated.loss_first - detection.loss_first) < 0.2
    # hook_z is after the pattern: up to the ablated heads' layer every pattern is unchanged.
    last = max(layer for layer, _, _ in heads)
    np.testing.assert_allclose(ablated.induction[: last + 1], detection.induction[: last + 1], atol=1e-5)


def test_ablating_as_many_other_heads_leaves_the_gap(detection, demo):
    count = len(detection.above(INDUCTION_THRESHOLD))
    # The heads with the lowest induction scores outside layer 0 (which feeds induction).
    others = [head for head in reversed(detection.top("induction", k=None)) if head[0] > 0][:count]
    ablated = demo.detect_heads(n=24, batch=16, seed=20261201, interventions=zero_heads(others))
    assert _gap_closed(detection, ablated) < 0.2, (others, ablated.loss_second)


def test_the_induction_heads_need_layer_0(detection, demo):
    """K-composition: their keys are built by layer 0's (previous-token) heads."""
    ablated = demo.detect_heads(n=24, batch=16, seed=20261201,
                                interventions=[Zero("blocks.0.attn.hook_z")])
    for layer, head, _ in detection.top("induction", k=2):
        assert ablated.induction[layer, head] < 0.3, ablated.induction
    assert _gap_closed(detection, ablated) > 0.8


def _top1(demo: glassbox.Model, cases: Sequence[Tuple[str, str]]) -> float:
    """Share of prompts whose most likely next token is the answer's first (as evaluate.py)."""
    result = demo.run([prompt for prompt, _ in cases], logits="last")
    predicted = result.logits.argmax(axis=-1)
    first = {a: int(demo.to_tokens(a, prepend_bos=False)[0, 0]) for a in {a for _, a in cases}}
    return float(np.mean(predicted == np.asarray([first[a] for _, a in cases])))


def _ioi(demo: glassbox.Model, seed: int, count: int, held_out: bool) -> Tuple[float, float]:
    cases = prompts.ioi(seed, count, held_out)
    result = demo.run([prompt for prompt, _, _ in cases], logits="last")
    ids = {name: demo.to_single_token(name) for name in {n for _, io, s in cases for n in (io, s)}}
    io = np.asarray([ids[io] for _, io, _ in cases])  # names are one token each
    s = np.asarray([ids[s] for _, _, s in cases])
    rows = np.arange(len(cases))
    top1 = float(np.mean(result.logits.argmax(axis=-1) == io))
    io_over_s = float(np.mean(result.logits[rows, io] > result.logits[rows, s]))
    return top1, io_over_s


def test_ioi_on_new_sentences_and_on_sentence_forms_never_trained(demo):
    top1, io_over_s = _ioi(demo, seed=5, count=200, held_out=False)
    assert top1 > 0.9 and io_over_s > 0.9, (top1, io_over_s)
    top1, io_over_s = _ioi(demo, seed=6, count=200, held_out=True)
    assert top1 > 0.8 and io_over_s > 0.8, (top1, io_over_s)


def test_sequence_continuation(demo):
    assert _top1(demo, prompts.sequences(seed=5, count=200)) > 0.9
    assert _top1(demo, prompts.counting(seed=5, count=200)) > 0.6


def test_facts(demo):
    assert _top1(demo, prompts.facts(held_out=False)) > 0.9


def test_accuracies_equal_the_model_cards(demo):
    """The same prompts as evaluate.py, through the server: HF's numbers within 1%."""
    measured = {
        "sequence_top1": _top1(demo, prompts.sequences(77, 400)),
        "counting_top1": _top1(demo, prompts.counting(76, 400)),
        "fact_top1": _top1(demo, prompts.facts(held_out=False)),
        "fact_held_out_top1": _top1(demo, prompts.facts(held_out=True)),
    }
    measured["ioi_top1"], measured["ioi_io_over_s"] = _ioi(demo, 99, 400, held_out=False)
    measured["ioi_held_out_top1"], measured["ioi_held_out_io_over_s"] = _ioi(demo, 99, 400, held_out=True)
    for key, value in measured.items():
        assert value == pytest.approx(EVALUATION[key], abs=0.01), key
