"""Patching from a run kept on the server (cache_as / PatchFromCache) equals
transformer_lens.patching (tests/reference/make_patching_fixtures.py) and PatchRows in one batch."""

import numpy as np
import pytest

import glassbox
from glassbox import PatchFromCache, PatchRows

from _helpers import reference


def _metric(logits, a, b):
    return float(np.mean(logits[:, -1, a] - logits[:, -1, b]))


def test_patch_from_cache_equals_transformer_lens_patching(client, gpt2):
    ref = reference("tiny-gpt2", "patching")
    a, b = (int(t) for t in ref["tokens"])
    kept = gpt2.run(ref["clean"], cache_as="py-clean", cache_hooks="blocks.*.hook_resid_pre", ttl_s=120,
                    logits="none").kept
    assert kept is not None and kept.name == "py-clean" and kept.model == "tiny-gpt2"
    assert kept.hooks == ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre")
    assert kept.nbytes == 2 * 2 * 7 * 64 * 4
    assert kept.expires - kept.created == pytest.approx(120)
    assert "py-clean" in [r.name for r in client.cached_runs()]
    got = np.zeros((2, 7))
    for layer in range(2):
        for pos in range(7):
            edit = PatchFromCache(f"blocks.{layer}.hook_resid_pre", "py-clean", positions=pos)
            got[layer, pos] = _metric(gpt2.run(ref["corrupted"], interventions=edit).logits, a, b)
    assert np.max(np.abs(got - ref["resid_pre.values"])) < 1e-4
    assert client.release_cached_run("py-clean") == kept.nbytes
    with pytest.raises(glassbox.NotFound, match="never existed or was released"):
        gpt2.run(ref["corrupted"], interventions=PatchFromCache("blocks.0.hook_resid_pre", "py-clean"))


def test_patch_from_cache_equals_patch_rows(client, gpt2):
    ref = reference("tiny-gpt2", "patching")
    clean, corrupted = ref["clean"], ref["corrupted"]
    gpt2.run(clean, captures="blocks.0.attn.hook_z", cache_as="py-z", logits="none")  # keeps the capture
    cached = gpt2.run(corrupted, interventions=PatchFromCache("blocks.0.attn.hook_z", "py-z", heads=2,
                                                              source_rows=[1, 0]))
    batch = np.concatenate([clean, corrupted])
    in_batch = gpt2.run(batch, interventions=PatchRows("blocks.0.attn.hook_z", {2: 1, 3: 0}, heads=2))
    # Logits are ~30 in size; a batch of another size sums in another order (float32).
    assert np.max(np.abs(cached.logits - in_batch.logits[2:])) < 1e-4
    client.release_cached_run("py-z")


def test_cache_errors(client, gpt2, llama):
    ref = reference("tiny-gpt2", "patching")
    gpt2.run(ref["clean"], cache_as="py-err", cache_hooks=["blocks.0.hook_resid_pre"], logits="none")
    with pytest.raises(glassbox.FailedPrecondition, match="tiny-gpt2"):
        llama.run(ref["corrupted"], interventions=PatchFromCache("blocks.0.hook_resid_pre", "py-err"))
    with pytest.raises(glassbox.InvalidArgument, match=r"\[2,7,64\].*\[2,6,64\]"):
        gpt2.run(ref["corrupted"][:, :6], interventions=PatchFromCache("blocks.0.hook_resid_pre", "py-err"))
    with pytest.raises(glassbox.InvalidArgument, match="not blocks.1.hook_resid_pre"):
        gpt2.run(ref["corrupted"], interventions=PatchFromCache("blocks.1.hook_resid_pre", "py-err"))
    with pytest.raises(ValueError, match="cache_as"):
        gpt2.run(ref["clean"], ttl_s=5)
    with pytest.raises(ValueError, match="needs the name"):
        PatchFromCache("blocks.0.hook_resid_pre", "")
    assert repr(PatchFromCache("blocks.0.hook_resid_pre", "x", positions=2)) == \
        "PatchFromCache('blocks.0.hook_resid_pre', 'x', positions=[2])"
    client.release_cached_run("py-err")
