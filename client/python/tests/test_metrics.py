"""glassboxd --metrics_listen: the Prometheus exposition, read by prometheus_client's own
text-format parser, counts what the test did (requests by RPC and code, per-key tokens and
bytes, batch sizes, queue gauges); the request log has one JSON line per request, keys by name
only (docs/service.md, "Metrics and request logs")."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Dict, Iterator, Tuple

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from _helpers import FIXTURES
from conftest import Server, start_glassboxd, stop_glassboxd

import glassbox


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Server, str]]:
    keys = tmp_path_factory.mktemp("metrics_keys") / "keys.json"
    keys.write_text(json.dumps({"keys": [{"name": "alice", "key": "alice-secret-key"}]}))
    server = start_glassboxd([
        "--model", f"tiny-gpt2={FIXTURES / 'models' / 'tiny-gpt2'}", "--api_keys", str(keys),
        "--metrics_listen", "127.0.0.1:0",
    ])
    urls = [m.group(1) for line in server.log
            for m in [re.search(r"glassboxd: metrics on (\S+)", line)] if m]
    assert urls, "".join(server.log)
    yield server, urls[0]
    stop_glassboxd(server)


def scrape(url: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_the_exposition_counts_what_happened(metered: Tuple[Server, str]) -> None:
    server, url = metered
    with glassbox.connect(server.address, api_key="alice-secret-key", timeout=60) as alice:
        model = alice.model("tiny-gpt2")
        for _ in range(3):
            model.run(np.array([[1, 2, 3, 4, 5]], dtype=np.int32), captures="blocks.0.hook_resid_post", logits="none")
        with pytest.raises(glassbox.InvalidArgument):
            model.run(np.array([[1, 2, 3]], dtype=np.int32), captures="blocks.99.hook_resid_post")
    with glassbox.connect(server.address, timeout=60) as anonymous:
        with pytest.raises(glassbox.Unauthenticated):
            anonymous.models()

    samples = scrape(url)
    assert samples[("glassbox_requests_total", (("code", "OK"), ("rpc", "Run")))] == 3
    assert samples[("glassbox_requests_total", (("code", "INVALID_ARGUMENT"), ("rpc", "Run")))] == 1
    assert samples[("glassbox_requests_total", (("code", "UNAUTHENTICATED"), ("rpc", "ListModels")))] == 1
    assert samples[("glassbox_key_tokens_total", (("key", "alice"),))] == 15
    # Each run streamed its capture: 5 tokens x 64 features x 4 bytes.
    assert samples[("glassbox_key_stream_bytes_total", (("key", "alice"),))] == 3 * 5 * 64 * 4
    assert samples[("glassbox_batch_requests_count", ())] == 3
    assert samples[("glassbox_batch_requests_bucket", (("le", "1"),))] == 3
    assert samples[("glassbox_queue_length", ())] == 0
    assert samples[("glassbox_forward_passes_total", ())] == 3
    assert samples[("glassbox_request_duration_seconds_count", (("rpc", "Run"),))] == 4

    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=10)
    assert missing.value.code == 404


def test_one_json_line_per_request_and_no_secret(metered: Tuple[Server, str]) -> None:
    server, _ = metered
    with glassbox.connect(server.address, api_key="alice-secret-key", timeout=60) as alice:
        alice.model("tiny-gpt2").run(np.array([[7, 8, 9]], dtype=np.int32))
    lines = [json.loads(line) for line in server.log if line.startswith("{")]
    runs = [r for r in lines if r["rpc"] == "Run" and r["code"] == "OK" and r["tokens"] == 3]
    assert runs, lines
    record = runs[-1]
    assert record["key"] == "alice" and record["model"] == "tiny-gpt2"
    assert record["batch_requests"] == 1 and record["total_s"] >= record["run_s"] > 0
    assert not any("alice-secret-key" in line for line in server.log)
