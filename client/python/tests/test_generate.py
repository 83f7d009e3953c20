"""Model.generate / generate_stream (the Generate RPC) against HF transformers' generate
(tests/fixtures/expected/generation.safetensors, from tests/reference/make_generation_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest

import glassbox

from _helpers import reference

ROWS = 3


def _expected(model: str, kind: str):
    ref = reference("generation")
    prompts = [ref[f"{model}.prompt.{r}"].tolist() for r in range(ROWS)]
    continuations = [ref[f"{model}.{kind}.{r}"].tolist() for r in range(ROWS)]
    return prompts, continuations, ref[f"{model}.steer"]


@pytest.mark.parametrize("name", ["tiny-llama", "demo"])
def test_greedy_batch_equals_hf_generate_row_by_row(client: glassbox.Client, name: str) -> None:
    prompts, expected, _ = _expected(name, "greedy")
    out = client.model(name).generate(prompts, max_new_tokens=12, do_sample=False)
    assert [row.tolist() for row in out] == [p + e for p, e in zip(prompts, expected)]


def test_steering_applies_at_every_step(client: glassbox.Client) -> None:
    prompts, expected, steer = _expected("tiny-llama", "steered")
    model = client.model("tiny-llama")
    out = model.generate(prompts, max_new_tokens=12, do_sample=False, return_type="sequences",
                         interventions=glassbox.Add("blocks.1.hook_resid_pre", steer, coef=4.0))
    assert [s.tokens.tolist() for s in out] == expected
    unsteered = model.generate(prompts, max_new_tokens=12, do_sample=False, return_type="sequences")
    assert [s.tokens.tolist() for s in unsteered] != expected


def test_text_in_text_out_and_the_stream_adds_up(client: glassbox.Client) -> None:
    demo = client.model("demo")
    prompt = "Once upon a time"
    text = demo.generate(prompt, max_new_tokens=8, do_sample=False)
    assert isinstance(text, str) and text.startswith(prompt) and len(text) > len(prompt)
    with demo.generate_stream(prompt, max_new_tokens=8, do_sample=False, top_logprobs=2) as stream:
        steps = list(stream)
    (sequence,) = stream.sequences
    assert len(steps) == len(sequence.tokens) <= 8
    assert "".join(s.texts[0] for s in steps) == sequence.text
    assert [s.tokens[0] for s in steps] == sequence.tokens.tolist()
    for s in steps:
        assert s.top[0][0][0] == s.tokens[0]  # greedy takes the most likely token
        assert s.logprobs[0] == pytest.approx(s.top[0][0][1])
    assert sequence.finish_reason in ("length", "stop_token")
    assert prompt + sequence.text == text
    assert demo.generate([prompt, "The"], max_new_tokens=3, do_sample=False)[0].startswith(prompt)


def test_seeded_sampling_reproduces(client: glassbox.Client) -> None:
    llama = client.model("tiny-llama")
    kwargs = dict(max_new_tokens=10, temperature=1.3, top_k=40, top_p=0.9, seed=11, stop_at_eos=False)
    a = llama.generate([5, 6, 7], **kwargs)
    b = llama.generate([5, 6, 7], **kwargs)
    c = llama.generate([5, 6, 7], **{**kwargs, "seed": 12})
    assert a.shape == (1, 13)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_requests_are_precise(client: glassbox.Client) -> None:
    llama = client.model("tiny-llama")
    with pytest.raises(glassbox.InvalidArgument, match="top_p is 1.5"):
        llama.generate([1, 2], max_new_tokens=2, top_p=1.5)
    with pytest.raises(glassbox.InvalidArgument, match="leaving no room|context"):
        llama.generate([1] * 64, max_new_tokens=2)
    with pytest.raises(glassbox.InvalidArgument, match="position -1 is negative"):
        llama.generate([1, 2], max_new_tokens=2,
                       interventions=glassbox.Zero("blocks.0.hook_resid_pre", positions=[-1]))
    with pytest.raises(glassbox.InvalidArgument, match="stop token 999"):
        llama.generate([1, 2], max_new_tokens=2, stop_tokens=[999])
    with pytest.raises(ValueError, match="temperature"):
        llama.generate([1, 2], max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        llama.generate([1, 2], max_new_tokens=0)


def test_project_out_during_generation(client: glassbox.Client) -> None:
    demo = client.model("demo")
    direction = np.cos(np.arange(demo.info.d_model) * 0.3).astype(np.float32)
    ablate = glassbox.ProjectOut("blocks.*.hook_resid_pre", direction)
    _, cache = demo.run_with_cache([[5, 6, 7, 8]], names_filter="blocks.2.hook_resid_pre",
                                   interventions=ablate)
    unit = direction / np.linalg.norm(direction)
    assert np.abs(cache["blocks.2.hook_resid_pre"] @ unit).max() < 1e-4
    plain = demo.generate([5, 6, 7, 8], max_new_tokens=10, do_sample=False, stop_at_eos=False)
    ablated = demo.generate([5, 6, 7, 8], max_new_tokens=10, do_sample=False, stop_at_eos=False,
                            interventions=ablate)
    assert ablated.shape == plain.shape == (1, 14)
    with pytest.raises(glassbox.InvalidArgument, match="non-zero"):
        demo.generate([5, 6], max_new_tokens=2,
                      interventions=glassbox.ProjectOut("blocks.0.hook_resid_pre", np.zeros(128)))
