"""SAEs over the Python client equal sae_lens / HookedSAETransformer on the tiny GPT-2 fixture
(tests/reference/make_sae_service_fixtures.py): a standard SAE "res1" at blocks.1.hook_resid_pre
and a jumprelu hook_z SAE "z0" at blocks.0.attn.hook_z."""

import json
from pathlib import Path

import numpy as np
import pytest

import glassbox
from glassbox import FeatureEdit, SaeSplice, SaeSteer

from _helpers import FIXTURES, reference, rel_error

TOLERANCE = 1e-5
SAES = {"res1": "res1_standard", "z0": "z0_jumprelu"}
POINTS = ("input", "acts_pre", "acts_post", "recons", "error", "output")


def _cases():
    path = FIXTURES / "expected" / "tiny-gpt2.saes.safetensors"
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return json.loads(header["__metadata__"]["cases"])


CASES = _cases()


def _ids():
    return reference("tiny-gpt2")["unpadded.input_ids"]


def _expected(name):
    return reference("tiny-gpt2", "saes")[name]


def _edits(fixture):
    return [FeatureEdit(e["kind"], e["features"], e["value"], positions=e["position"])
            for e in CASES[fixture]["edits"]]


def test_saes_lists_metadata(gpt2, llama, client):
    saes = {s.name: s for s in gpt2.saes()}
    assert sorted(saes) == ["res1", "z0"]
    z0 = saes["z0"]
    assert (z0.model, z0.hook, z0.architecture, z0.d_in, z0.d_sae) == ("tiny-gpt2", "blocks.0.attn.hook_z", "jumprelu", 64, 128)
    assert z0.reshape_hook_z and z0.normalization == "none" and z0.sae_lens_version == "6.54.12"
    assert z0.metadata["hook_name"] == "blocks.0.attn.hook_z"
    assert z0.hook_point("acts_post") == "blocks.0.attn.hook_z.hook_sae_acts_post"
    assert z0.resident_bytes > 0
    assert llama.saes() == []
    assert len(client.saes()) == 2


@pytest.mark.parametrize("name", sorted(SAES))
def test_sae_encode_equals_sae_lens(gpt2, name):
    fixture = SAES[name]
    enc = gpt2.sae_encode(_ids(), name, dense=True)
    expected = _expected(f"{fixture}.acts")
    assert rel_error(enc.dense, expected) < TOLERANCE
    np.testing.assert_array_equal(enc.to_dense(), enc.dense)
    assert enc.stats.tokens == 33 and enc.stats.mse > 0 and 0 < enc.stats.mean_l0 <= 128
    assert enc.stats.mean_l0 == pytest.approx(np.count_nonzero(expected) / 33, abs=1e-9)

    top = gpt2.sae_encode(_ids(), name, top_k=3)
    assert top.dense is None
    features, values = top.features(1, -1)
    order = np.argsort(-expected[1, -1], kind="stable")[:3]
    np.testing.assert_array_equal(features, order)
    np.testing.assert_allclose(values, expected[1, -1][order], rtol=1e-5)


def test_sae_decode_equals_reconstruction(gpt2):
    enc = gpt2.sae_encode(_ids(), "res1", dense=True)
    recons = _expected("res1_standard.splice.blocks.1.hook_resid_pre.hook_sae_recons")
    assert rel_error(gpt2.sae_decode("res1", enc.dense), recons) < TOLERANCE
    assert rel_error(gpt2.sae_decode("res1", enc).reshape(recons.shape), recons) < TOLERANCE


@pytest.mark.parametrize("name", sorted(SAES))
@pytest.mark.parametrize("case", ["splice", "error", "edit"])
def test_spliced_run_equals_hooked_sae_transformer(gpt2, name, case):
    fixture = SAES[name]
    hook = CASES[fixture]["hook"]
    splice = SaeSplice(name, use_error_term=case != "splice", edits=_edits(fixture) if case == "edit" else ())
    logits, cache = gpt2.run_with_cache(_ids(), f"{hook}.hook_sae_*", saes=[splice])
    assert rel_error(logits, _expected(f"{fixture}.{case}.logits")) < TOLERANCE
    for point in POINTS:
        key = f"{hook}.hook_sae_{point}"
        if point == "error" and case == "splice":
            assert key not in cache
            continue
        assert rel_error(cache[key], _expected(f"{fixture}.{case}.{key}")) < TOLERANCE, key


def test_edits_without_error_term_and_steering(gpt2):
    logits = gpt2.run_with_hooks(_ids(), saes=SaeSplice("z0", edits=_edits("z0_jumprelu")))
    assert rel_error(logits, _expected("z0_jumprelu.edit_no_error.logits")) < TOLERANCE
    for name, fixture in SAES.items():
        steer = CASES[fixture]["steer"]
        logits = gpt2.run_with_hooks(
            _ids(), sae_steering=SaeSteer(name, steer["feature"], steer["coefficient"], positions=steer["position"])
        )
        assert rel_error(logits, _expected(f"{fixture}.steer.logits")) < TOLERANCE


def test_sae_errors(gpt2, llama):
    with pytest.raises(glassbox.NotFound, match='no SAE named "nope"'):
        gpt2.sae_encode([1, 2], "nope")
    with pytest.raises(glassbox.InvalidArgument, match='attached to model "tiny-gpt2", not "tiny-llama"'):
        llama.sae_encode([1, 2], "res1")
    with pytest.raises(glassbox.InvalidArgument, match='attached to model "tiny-gpt2"'):
        llama.run([1, 2], saes="res1")
    with pytest.raises(glassbox.InvalidArgument, match=r"feature 128 is outside \[0, 128\)"):
        gpt2.run([1, 2], saes=SaeSplice("res1", edits=[FeatureEdit("zero", 128)]))
    with pytest.raises(glassbox.InvalidArgument, match="only with use_error_term"):
        gpt2.run([1, 2], saes="res1", captures="blocks.1.hook_resid_pre.hook_sae_error")
    with pytest.raises(glassbox.InvalidArgument, match=r"top_k must be in \[0, 128\]"):
        gpt2.sae_encode([1, 2], "res1", top_k=500)
    with pytest.raises(ValueError, match="FeatureEdit kind"):
        gpt2.run([1, 2], saes=SaeSplice("res1", edits=[FeatureEdit("mute", 1)]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 coefficients for 3 features"):
        gpt2.run([1, 2], sae_steering=SaeSteer("res1", [1, 2, 3], [1.0, 2.0]))
