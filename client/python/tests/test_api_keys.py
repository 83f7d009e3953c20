"""A glassboxd started with --api_keys: the key given to ``glassbox.connect(api_key=...)`` is
sent on every call, a missing or unknown key is ``Unauthenticated`` with a message that says how
to send one, and cached runs are per key (docs/service.md, "API keys, quotas and isolation")."""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np
import pytest

from _helpers import FIXTURES
from conftest import Server, start_glassboxd, stop_glassboxd

import glassbox


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    keys = tmp_path_factory.mktemp("api_keys") / "keys.json"
    keys.write_text(json.dumps({"keys": [
        {"name": "alice", "key": "alice-key"},
        {"name": "bob", "key": "bob-key", "quota": {"requests_per_minute": 600}},
    ]}))
    server = start_glassboxd([
        "--model", f"tiny-gpt2={FIXTURES / 'models' / 'tiny-gpt2'}", "--api_keys", str(keys),
    ])
    yield server
    stop_glassboxd(server)


def test_a_key_is_needed(keyed_server: Server) -> None:
    for api_key in (None, "not-a-key"):
        with glassbox.connect(keyed_server.address, api_key=api_key, timeout=30) as client:
            with pytest.raises(glassbox.Unauthenticated, match="api_key=KEY"):
                client.models()


def test_cached_runs_belong_to_their_key(keyed_server: Server) -> None:
    with glassbox.connect(keyed_server.address, api_key="alice-key", timeout=60) as alice, \
            glassbox.connect(keyed_server.address, api_key="bob-key", timeout=60) as bob:
        assert [m.name for m in alice.models()] == ["tiny-gpt2"]
        tokens = np.array([[1, 2, 3]], dtype=np.int32)
        kept = alice.model("tiny-gpt2").run(tokens, cache_as="clean", cache_hooks="hook_embed",
                                            logits="none").kept
        assert kept is not None and kept.owner == "alice"
        assert [(r.owner, r.name) for r in alice.cached_runs()] == [("alice", "clean")]
        assert bob.cached_runs() == []
        with pytest.raises(glassbox.NotFound, match='no cached run "clean"'):
            bob.release_cached_run("clean")
        assert alice.release_cached_run("clean") > 0


def test_the_queue_is_for_admin_keys(tmp_path_factory: pytest.TempPathFactory) -> None:
    keys = tmp_path_factory.mktemp("queue_keys") / "keys.json"
    keys.write_text(json.dumps({"keys": [
        {"name": "alice", "key": "alice-key"},
        {"name": "ops", "key": "ops-key", "admin": True},
    ]}))
    server = start_glassboxd([
        "--model", f"tiny-gpt2={FIXTURES / 'models' / 'tiny-gpt2'}", "--api_keys", str(keys),
    ])
    try:
        with glassbox.connect(server.address, api_key="alice-key", timeout=60) as alice, \
                glassbox.connect(server.address, api_key="ops-key", timeout=60) as ops:
            result = alice.model("tiny-gpt2").run(np.array([[1, 2, 3, 4]], dtype=np.int32))
            assert result.timings.batch_requests == 1
            with pytest.raises(glassbox.PermissionDenied, match="admin key"):
                alice.queue()
            status = ops.queue()
            assert status.queued == () and status.running == ()
            assert status.passes >= 1 and status.requests_run >= 1 and status.largest_batch >= 1
            usage = {u.name: u for u in status.usage}
            assert usage["alice"].tokens_last_day == 4
            assert usage["alice"].runs_in_flight == 0
    finally:
        stop_glassboxd(server)
