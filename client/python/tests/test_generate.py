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


def test_stop_strings_end_a_row_in_its_text(client: glassbox.Client) -> None:
    demo = client.model("demo")
    prompt = "Once upon a time"
    free = demo.generate(prompt, max_new_tokens=16, do_sample=False, stop_at_eos=False,
                         return_type="sequences")[0]
    assert len(free.text) > 4
    stop = free.text[2:4]  # two characters inside the continuation, perhaps across tokens
    (stopped,) = demo.generate(prompt, max_new_tokens=16, do_sample=False, stop_at_eos=False,
                               stop_strings=[stop], return_type="sequences")
    assert stopped.finish_reason == "stop_string"
    assert stop in stopped.text and free.text.startswith(stopped.text)
    # It stopped at the first token whose text completes the stop string, not later.
    assert stop not in demo.to_string(stopped.tokens[:-1].tolist())
    llama = client.model("tiny-llama")
    with pytest.raises(glassbox.FailedPrecondition, match="stop_strings need a tokenizer"):
        llama.generate([1, 2], max_new_tokens=2, stop_strings=["x"])


def test_per_step_captures_equal_a_run_over_the_sequence(client: glassbox.Client) -> None:
    demo = client.model("demo")
    hook = "blocks.1.hook_resid_post"
    steer = glassbox.Add("blocks.0.hook_resid_post", np.sin(np.arange(demo.info.d_model)).astype(np.float32))
    prompts = [[5, 6, 7, 8], [9, 10]]
    with demo.generate_stream(prompts, max_new_tokens=5, do_sample=False, stop_at_eos=False,
                              captures=[hook], capture_prompt=True, interventions=steer) as stream:
        steps = list(stream)
    assert stream.sequences is not None
    for r, sequence in enumerate(stream.sequences):
        _, cache = demo.run_with_cache([sequence.all_tokens.tolist()], names_filter=hook, interventions=steer)
        full = cache[hook][0]  # [pos, d_model]
        n = len(prompts[r])
        np.testing.assert_allclose(steps[0].captures[hook][r, :n], full[:n], rtol=1e-4, atol=1e-4)
        assert not steps[0].captures[hook][r, n:].any()  # right-padded
        for s, step in enumerate(steps[1:], start=1):
            assert step.captures[hook].shape == (2, 1, demo.info.d_model)
            np.testing.assert_allclose(step.captures[hook][r, 0], full[n + s - 1], rtol=1e-4, atol=1e-4)
    with demo.generate_stream(prompts, max_new_tokens=5, do_sample=False, stop_at_eos=False,
                              captures=[hook], capture_at_end=True, interventions=steer) as stream:
        assert all(not step.captures for step in stream)
    assert stream.sequences is not None
    at_end = stream.final_captures[hook]  # [batch, longest sequence, d_model], right-padded
    for r, sequence in enumerate(stream.sequences):
        _, cache = demo.run_with_cache([sequence.all_tokens.tolist()], names_filter=hook, interventions=steer)
        n = len(sequence.all_tokens)
        np.testing.assert_allclose(at_end[r, :n], cache[hook][0], rtol=1e-4, atol=1e-4)
    with pytest.raises(glassbox.InvalidArgument, match="positions are not available in Generate"):
        demo.generate([5, 6], max_new_tokens=2, captures=[glassbox.Capture(hook, positions=[0])])


def test_steered_and_unsteered_side_by_side(client: glassbox.Client) -> None:
    demo = client.model("demo")
    direction = np.cos(np.arange(demo.info.d_model) * 0.7).astype(np.float32)
    steer = glassbox.Add("blocks.1.hook_resid_pre", direction, coef=20.0)
    kwargs = dict(max_new_tokens=8, temperature=0.8, seed=3, stop_at_eos=False)
    steered, unsteered = demo.generate("Once upon a time", interventions=steer, include_unsteered=True, **kwargs)
    assert steered == demo.generate("Once upon a time", interventions=steer, **kwargs)
    assert unsteered == demo.generate("Once upon a time", **kwargs)
    assert steered != unsteered


@pytest.mark.parametrize("method", ["orthogonal_decomp", "projection_cap"])
def test_neuronpedia_steering_methods_follow_their_formulas(client: glassbox.Client, method: str) -> None:
    demo = client.model("demo")
    hook = "blocks.1.hook_resid_pre"
    direction = np.sin(np.arange(demo.info.d_model) * 0.4 + 0.3).astype(np.float32)
    unit = direction.astype(np.float64) / np.linalg.norm(direction)
    _, clean = demo.run_with_cache([[5, 6, 7, 8, 9]], names_filter=hook)
    x = clean[hook].astype(np.float64)
    p = x @ unit
    if method == "orthogonal_decomp":
        edit = glassbox.OrthogonalDecomp(hook, direction, coef=3.0)
        q = 3.0 * p
    else:
        cap = float(np.median(p))
        edit = glassbox.ProjectionCap(hook, direction, max=cap)
        q = np.minimum(p, cap)
    _, edited = demo.run_with_cache([[5, 6, 7, 8, 9]], names_filter=hook, interventions=edit)
    expected = x + (q - p)[..., None] * unit
    np.testing.assert_allclose(edited[hook], expected, rtol=1e-5, atol=1e-5)
    # They are position-local, so generation runs them over the KV cache at every step.
    out = demo.generate([5, 6, 7], max_new_tokens=4, do_sample=False, stop_at_eos=False, interventions=edit)
    assert out.shape == (1, 7)
    with pytest.raises(ValueError, match="needs projection_min, projection_max or both"):
        glassbox.ProjectionCap(hook, direction)
