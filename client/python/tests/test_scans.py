"""Dataset scans through the Python client, against real glassboxd processes.

Every record, sample, quantile bin, histogram count and statistic a scan returns is recomputed
here by brute force from activations captured with ``Model.run`` on the same contexts, which
are cut in Python as the server documents (server/service/scan_corpus.cc): documents joined by
BOS, each context BOS + the next context_length - 1 tokens, a partial last one dropped; raw runs
with no_bos. Definitions: server/engine/scan_accumulator.{h,cc} (BOS at position 0 is never
counted; a record is a context's largest counted activation at its first position; top records
by value, ties to the lower context; samples by splitmix64 priority). Also: a scan killed with
SIGKILL resumes from its checkpoint and ends identical to an uninterrupted one; cancelling;
the precise errors of bad corpora.
"""

from __future__ import annotations

import json
import re
import time
from concurrent import futures
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import grpc
import numpy as np
import pytest

from _helpers import DEMO_MODEL, FIXTURES
from conftest import Server, start_glassboxd, stop_glassboxd

import glassbox
from glassbox import ScanRecord, ScanTargetResult
from glassbox._proto.glassbox.v1 import glassbox_pb2 as pb
from glassbox._proto.glassbox.v1 import glassbox_pb2_grpc as pb_grpc
from glassbox._scans import scan_request

BOS = 0  # the demo model's <|endoftext|>
HOOK = "blocks.1.mlp.hook_post"
NEURONS = [0, 3, 7, 100, 511]
RESID = "blocks.3.hook_resid_post"  # every unit (128): target numbers 5 .. 132
DIRECTION_HOOK = "blocks.2.hook_resid_post"
M64 = (1 << 64) - 1
RANDOM_SALT, QUANTILE_SALT = 1, 2

TEXTS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "Alice went to the market. Alice saw a red key at the market. She took the key home.",
    "The capital of Norway is Oslo.",
    "Count the months: November December January February",
    "15 20 25 30 35 40",
    "When Tom and Sarah went to the park, Sarah gave a ball to Tom.",
    "The capital of France is Paris. The capital of Japan is Tokyo.",
    "one two three four five six seven",
    "Bob went to the school. Bob saw a blue book at the school. He took the book home.",
    "Monday Tuesday Wednesday Thursday Friday",
]


# ---- the reference: contexts and every statistic, in numpy and Python ints ----


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def priority(seed: int, target: int, salt: int, context: int) -> int:
    return splitmix64(splitmix64(splitmix64(seed) ^ ((target * 4 + salt) & M64)) ^ context)


def cut_contexts(docs: Sequence[Sequence[int]], length: int, bos: Optional[int] = BOS) -> np.ndarray:
    """[contexts, length] as the server cuts documents: joined by BOS (but for a document that
    starts a context), each context BOS + the next length - 1 tokens (raw runs of length tokens
    when bos is None), partial last dropped."""
    stream: List[int] = []
    for i, doc in enumerate(docs):
        # No separator where a context opens: its own BOS separates (sae_lens's rule).
        if bos is not None and i > 0 and len(stream) % (length - 1) != 0:
            stream.append(bos)
        stream.extend(int(t) for t in doc)
    if bos is None:
        n = len(stream) // length
        return np.asarray(stream[: n * length], dtype=np.int64).reshape(n, length)
    width = length - 1
    n = len(stream) // width
    return np.asarray([[bos] + stream[i * width:(i + 1) * width] for i in range(n)], dtype=np.int64)


def direction_activations(x: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """x · vector as the server computes it: a float64 sum in feature order, then float32."""
    v = vector.astype(np.float32).astype(np.float64)
    acc = np.zeros(x.shape[:-1], dtype=np.float64)
    for i in range(x.shape[-1]):
        acc += x[..., i].astype(np.float64) * v[i]
    return acc.astype(np.float32)


def capture(model: glassbox.Model, contexts: np.ndarray, hooks: List[str], batch: int) -> Dict[str, np.ndarray]:
    """The hooks' values over the contexts, run in the scan's own batches."""
    parts: Dict[str, List[np.ndarray]] = {h: [] for h in hooks}
    for start in range(0, len(contexts), batch):
        cache = model.run(contexts[start:start + batch], captures=hooks, logits="none").cache
        for h in hooks:
            parts[h].append(cache[h])
    return {h: np.concatenate(v) for h, v in parts.items()}


def check_target(got: ScanTargetResult, acts: np.ndarray, contexts: np.ndarray, target: int,
                 options: dict, first: int = 1) -> None:
    """One target's results against a brute-force computation over acts [contexts, length]."""
    n, length = acts.shape
    counted = acts[:, first:]
    values = counted.astype(np.float64).ravel()
    # Statistics: float64 moments, population variance, Fisher's excess kurtosis.
    s = got.stats
    mean = values.mean()
    central = values - mean
    var = (central ** 2).mean()
    assert s.count == values.size
    assert s.mean == pytest.approx(mean, rel=1e-5, abs=1e-9)
    assert s.variance == pytest.approx(var, rel=1e-5, abs=1e-12)
    skew = (central ** 3).mean() / var ** 1.5 if var > 0 else 0.0
    kurt = (central ** 4).mean() / var ** 2 - 3 if var > 0 else 0.0
    assert s.skewness == pytest.approx(skew, rel=1e-5, abs=1e-9)
    assert s.kurtosis == pytest.approx(kurt, rel=1e-5, abs=1e-9)
    assert s.max == pytest.approx(float(counted.max()), rel=1e-5)
    assert s.min == pytest.approx(float(counted.min()), rel=1e-5)
    assert s.firing_frequency == pytest.approx(np.count_nonzero(counted > 0) / values.size, rel=1e-12)
    assert s.nonzero == np.count_nonzero(counted)

    # Each context's record: its largest counted activation, at the first position that holds it.
    best = counted.max(axis=1)
    position = first + counted.argmax(axis=1)

    def window(p: int) -> Tuple[int, int]:
        before, after = options.get("window_before"), options.get("window_after")
        return (0 if before is None else max(0, p - before),
                length if after is None else min(length, p + after + 1))

    def check_records(records: Sequence[ScanRecord], want: Sequence[int], what: str) -> None:
        assert [r.context for r in records] == [int(c) for c in want], f"{got.name} {what}"
        for r in records:
            c = r.context
            start, end = window(int(position[c]))
            assert (r.position, r.window_start) == (int(position[c]), start), f"{got.name} {what} context {c}"
            assert r.value == pytest.approx(float(best[c]), abs=1e-5)
            assert r.activations[r.max_index] == pytest.approx(r.value, abs=0)
            np.testing.assert_array_equal(r.tokens, contexts[c, start:end])
            np.testing.assert_allclose(r.activations, acts[c, start:end], rtol=0, atol=1e-5)

    order = np.lexsort((np.arange(n), -best.astype(np.float64)))  # value desc, then context
    check_records(got.top, order[: options["top_k"]], "top")
    drawn = sorted(range(n), key=lambda c: (priority(options["seed"], target, RANDOM_SALT, c), c))
    check_records(got.random, drawn[: options["random_k"]], "random")

    mx = float(counted.max())
    bins = options["quantile_bins"]
    if mx > 0:
        assert len(got.quantiles) == bins
        members: List[List[int]] = [[] for _ in range(bins)]
        for c in range(n):
            if best[c] > 0:
                members[min(int(float(best[c]) * (bins / mx)), bins - 1)].append(c)
        for b, (q, ids) in enumerate(zip(got.quantiles, members)):
            assert q.lower == np.float32(mx * b / bins) and q.upper == np.float32(mx * (b + 1) / bins)
            ids.sort(key=lambda c: (priority(options["seed"], target, QUANTILE_SALT, c), c))
            check_records(q.records, ids[: options["per_quantile_k"]], f"quantile {b}")
    else:
        assert got.quantiles == ()

    # Histogram over nonzero activations, bin = clamp(int((v - lo) * (B / (hi - lo))), 0, B - 1).
    nonzero = values[values != 0]
    hist_bins = options["histogram_bins"]
    if nonzero.size:
        lo, hi = float(np.float32(nonzero.min())), float(np.float32(nonzero.max()))
        scale = hist_bins / (hi - lo) if hi > lo else 0.0
        index = np.clip(((nonzero - lo) * scale).astype(np.int64), 0, hist_bins - 1)
        np.testing.assert_array_equal(got.histogram_counts, np.bincount(index, minlength=hist_bins))
        edges = np.asarray([lo + (hi - lo) * b / hist_bins for b in range(hist_bins + 1)], dtype=np.float32)
        np.testing.assert_array_equal(got.histogram_edges, edges)
    else:
        assert got.histogram_counts.size == 0 and got.histogram_edges.size == 0


def assert_identical(a: Sequence[ScanTargetResult], b: Sequence[ScanTargetResult]) -> None:
    assert len(a) == len(b)

    def same_records(x: Sequence[ScanRecord], y: Sequence[ScanRecord]) -> None:
        assert [(r.context, r.position, r.value, r.window_start, r.token_strings) for r in x] == \
               [(r.context, r.position, r.value, r.window_start, r.token_strings) for r in y]
        for r, s in zip(x, y):
            np.testing.assert_array_equal(r.tokens, s.tokens)
            np.testing.assert_array_equal(r.activations, s.activations)

    for x, y in zip(a, b):
        assert (x.index, x.kind, x.hook, x.sae, x.unit, x.name, x.stats) == \
               (y.index, y.kind, y.hook, y.sae, y.unit, y.name, y.stats)
        same_records(x.top, y.top)
        same_records(x.random, y.random)
        assert [(q.lower, q.upper) for q in x.quantiles] == [(q.lower, q.upper) for q in y.quantiles]
        for q, r in zip(x.quantiles, y.quantiles):
            same_records(q.records, r.records)
        np.testing.assert_array_equal(x.histogram_edges, y.histogram_edges)
        np.testing.assert_array_equal(x.histogram_counts, y.histogram_counts)
        assert (x.top_logits, x.bottom_logits) == (y.top_logits, y.bottom_logits)


def random_documents(seed: int, count: int, longest: int = 60) -> List[List[int]]:
    rng = np.random.default_rng(seed)
    docs = [rng.integers(1, 1024, size=int(n)).tolist() for n in rng.integers(3, longest, size=count)]
    docs.insert(count // 2, [])  # an empty document: two BOS in a row
    return docs


# ---- servers ----


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scans")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    (corpus / "texts.jsonl").write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(TEXTS)))
    (corpus / "empty.txt").write_text("")
    (corpus / "bad.txt").write_bytes(b"The capital of Norway is Oslo.\n\nOne two \xff\xfe three\n")
    (root / "outside.txt").write_text("\n".join(TEXTS))
    (corpus / "escape.txt").symlink_to(root / "outside.txt")
    (corpus / "sub").mkdir()
    (corpus / "sub" / "alias.txt").symlink_to(corpus / "texts.txt")  # inside: allowed
    return corpus


@pytest.fixture(scope="module")
def scan_server(corpus_dir: Path) -> Iterator[Server]:
    server = start_glassboxd([
        "--model", f"demo={DEMO_MODEL}",
        "--model", f"tiny-gpt2={FIXTURES / 'models' / 'tiny-gpt2'}",
        "--sae", f"res1={FIXTURES / 'saes' / 'service' / 'res1_standard'}@tiny-gpt2",
        "--jobs_dir", str(corpus_dir.parent / "jobs"),
        "--corpus_dir", str(corpus_dir),
    ])
    yield server
    stop_glassboxd(server)


@pytest.fixture(scope="module")
def scans(scan_server: Server) -> Iterator[glassbox.Client]:
    with glassbox.connect(scan_server.address, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def demo(scans: glassbox.Client) -> glassbox.Model:
    return scans.model("demo")


# ---- a. every statistic and record equals the brute force ----


def test_a_scan_equals_brute_force_over_captured_activations(demo, scans, capsys):
    length, batch = 24, 16
    docs = random_documents(seed=7, count=90)
    contexts = cut_contexts(docs, length)
    vector = np.random.default_rng(3).standard_normal(128).astype(np.float32)
    options = dict(top_k=5, random_k=4, quantile_bins=4, per_quantile_k=3, histogram_bins=16,
                   window_before=3, window_after=2, seed=12345)
    job = demo.start_scan(docs, neurons={HOOK: NEURONS, RESID: None},
                          directions={"probe": (DIRECTION_HOOK, vector)},
                          context_length=length, batch_contexts=batch, **options)
    info = job.wait()
    assert "pass 2/2" in capsys.readouterr().err  # the progress bar
    n = len(contexts)
    assert (info.state, info.passes, info.contexts_total, info.targets) == ("succeeded", 2, n, 134)
    assert info.tokens_done == info.tokens_total == 2 * n * length and info.resumed == 0
    assert job.id in [j.job_id for j in scans.jobs()]

    results = job.all_results(page_size=50)  # three pages
    assert [r.index for r in results] == list(range(134))
    assert job.results(offset=130, limit=10)[0].name == results[130].name
    captured = capture(demo, contexts, [HOOK, RESID, DIRECTION_HOOK], batch)
    columns = [captured[HOOK][..., i] for i in NEURONS] + [captured[RESID][..., i] for i in range(128)]
    columns.append(direction_activations(captured[DIRECTION_HOOK], vector))
    for target, (got, acts) in enumerate(zip(results, columns)):
        check_target(got, acts, contexts, target, options)

    first, resid, probe = results[0], results[5 + 17], results[133]
    assert (first.kind, first.hook, first.sae, first.unit, first.name) == ("neuron", HOOK, None, 0, f"{HOOK}[0]")
    assert (resid.kind, resid.hook, resid.unit, resid.name) == ("neuron", RESID, 17, f"{RESID}[17]")
    assert (probe.kind, probe.hook, probe.name) == ("direction", DIRECTION_HOOK, "probe")
    record = first.top[0]
    assert list(record.token_strings) == demo.to_str_tokens(record.tokens)
    assert record.text == "".join(record.token_strings)
    assert isinstance(first.top_logits, tuple) and isinstance(first.bottom_logits, tuple)


def head_norms(result: np.ndarray) -> np.ndarray:
    """||hook_result|| per head [.., head, d] -> [.., head], as the server computes it: a float64
    sum of squares in feature order, its square root, then float32."""
    acc = np.zeros(result.shape[:-1], dtype=np.float64)
    for i in range(result.shape[-1]):
        acc += result[..., i].astype(np.float64) ** 2
    return np.sqrt(acc).astype(np.float32)


def test_head_targets_equal_brute_force_over_captured_heads(demo):
    length, batch = 20, 16
    docs = random_documents(seed=21, count=50)
    contexts = cut_contexts(docs, length)
    options = dict(top_k=4, random_k=3, quantile_bins=3, per_quantile_k=2, histogram_bins=10, seed=9)
    job = demo.start_scan(docs, heads=[glassbox.Heads(2, heads=[3, 0]), glassbox.Heads(1, key_position=0),
                                       glassbox.Heads(0, heads=1, key_offset=1)],
                          context_length=length, batch_contexts=batch, **options)
    assert job.wait().state == "succeeded"
    results = job.all_results()
    assert [r.name for r in results] == (["L2H3 output norm", "L2H0 output norm"]
                                         + [f"L1H{h} attention to position 0" for h in range(4)]
                                         + ["L0H1 attention to 1 back"])
    assert {r.kind for r in results} == {"head_output_norm", "head_attention"}
    assert all(r.top_logits == () for r in results)

    hooks = ["blocks.2.attn.hook_result", "blocks.1.attn.hook_pattern", "blocks.0.attn.hook_pattern"]
    captured = capture(demo, contexts, hooks, batch)
    norms = head_norms(captured[hooks[0]])  # [n, pos, head]
    to_bos = captured[hooks[1]][:, :, :, 0]  # [n, head, query]
    previous = np.zeros(contexts.shape, np.float32)
    previous[:, 1:] = np.diagonal(captured[hooks[2]][:, 1], offset=-1, axis1=1, axis2=2)
    columns = [norms[..., 3], norms[..., 0]] + [to_bos[:, h] for h in range(4)] + [previous]
    for target, (got, acts) in enumerate(zip(results, columns)):
        check_target(got, acts, contexts, target, options)

    # The same unit scored: its true activations are the pattern's.
    excerpt = glassbox.ScoredExcerpt(list(contexts[0]), [0.5] * length)
    score = demo.score_explanation([excerpt], head=glassbox.Heads(1, heads=2, key_position=0))
    np.testing.assert_array_equal(score.true_activations[0], to_bos[0, 2])
    with pytest.raises(TypeError, match="one int head"):
        demo.score_explanation([excerpt], head=glassbox.Heads(1, key_position=0))
    with pytest.raises(glassbox.InvalidArgument, match="not a head's norm or attention"):
        demo.score_explanation([excerpt], head=glassbox.Heads(1, heads=2), ablation=True)


def test_sae_features_without_bos_equal_sae_encode(scans):
    gpt2 = scans.model("tiny-gpt2")  # no tokenizer, so no BOS: raw contexts, position 0 counted
    length, batch = 16, 8
    tokens = np.random.default_rng(11).integers(0, 300, size=(40, length))
    options = dict(top_k=20, random_k=20, quantile_bins=10, per_quantile_k=5, histogram_bins=50, seed=0)
    job = gpt2.start_scan(tokens, sae_features={"res1": [0, 5, 64, 127]}, context_length=length,
                          no_bos=True, batch_contexts=batch)  # the defaults, full windows
    job.wait(progress=False)
    results = job.all_results()
    contexts = cut_contexts(tokens, length, bos=None)
    np.testing.assert_array_equal(contexts, tokens)  # rows of context_length are scanned as given
    dense = np.concatenate([gpt2.sae_encode(contexts[s:s + batch], "res1", dense=True).dense
                            for s in range(0, len(contexts), batch)])
    for target, (got, feature) in enumerate(zip(results, [0, 5, 64, 127])):
        assert (got.kind, got.sae, got.unit, got.name) == ("sae_feature", "res1", feature, f"res1[{feature}]")
        assert got.hook == "blocks.1.hook_resid_pre"
        assert got.top[0].token_strings == ()  # no tokenizer
        check_target(got, dense[..., feature], contexts, target, options, first=0)


def test_texts_and_files_are_cut_as_documented(demo):
    length = 16
    docs = [demo.to_tokens(t, prepend_bos=False)[0].tolist() for t in TEXTS]
    contexts = cut_contexts(docs, length)
    one_pass = dict(neurons={HOOK: 0}, context_length=length, top_k=1000, random_k=0,
                    quantile_bins=0, histogram_bins=0)

    def scanned(corpus, **kwargs) -> np.ndarray:
        job = demo.start_scan(corpus, **{**one_pass, **kwargs})
        assert job.wait(progress=False).passes == 1
        (target,) = job.all_results()
        by_context = sorted(target.top, key=lambda r: r.context)
        assert [r.context for r in by_context] == list(range(len(by_context)))
        return np.asarray([r.tokens for r in by_context])

    np.testing.assert_array_equal(scanned(TEXTS), contexts)
    np.testing.assert_array_equal(scanned("texts.txt"), contexts)
    np.testing.assert_array_equal(scanned("sub/alias.txt"), contexts)
    np.testing.assert_array_equal(scanned("texts.jsonl", text_field="body"), contexts)
    np.testing.assert_array_equal(scanned(TEXTS, max_contexts=3), contexts[:3])


# ---- b. a killed server's scan resumes from its checkpoint ----


def test_a_killed_scan_resumes_identical(tmp_path):
    args = ["--model", f"demo={DEMO_MODEL}", "--jobs_dir", str(tmp_path / "jobs"),
            "--scan_checkpoint_seconds", "0"]
    docs = random_documents(seed=21, count=200)  # about 190 contexts of 32: 48 batches a pass
    scan = dict(neurons={HOOK: list(range(0, 512, 16))}, context_length=32, batch_contexts=4,
                top_k=8, random_k=8, quantile_bins=5, per_quantile_k=2, histogram_bins=20,
                window_before=4, window_after=4, seed=99)
    first = start_glassboxd(args)
    try:
        with glassbox.connect(first.address, timeout=60) as client:
            job = client.model("demo").start_scan(docs, **scan)
            for info in job.watch():
                if info.tokens_done >= 24 * 32:
                    break
            assert not info.ended, f"the scan ended before the kill: make it longer ({info})"
            first.process.kill()  # SIGKILL: no shutdown, only the checkpoints on disk
            first.process.wait()
    finally:
        if first.process.poll() is None:
            first.process.kill()
            first.process.wait()
    stored = pb.StoredScanJob.FromString((tmp_path / "jobs" / job.id / "job.pb").read_bytes())
    assert stored.info.state == pb.JOB_RUNNING, f"the scan ended before the kill: make it longer ({stored.info})"
    assert (tmp_path / "jobs" / job.id / "state.bin").is_file()

    second = start_glassboxd(args)
    try:
        with glassbox.connect(second.address, timeout=60) as client:
            resumed = client.job(job.id)
            assert resumed.info().resumed == 1
            final = resumed.wait(progress=False)
            assert (final.state, final.resumed) == ("succeeded", 1)
            assert [(j.job_id, j.resumed) for j in client.jobs()] == [(job.id, 1)]
            reference = client.model("demo").start_scan(docs, **scan)
            assert reference.wait(progress=False).resumed == 0
            assert_identical(resumed.all_results(), reference.all_results())
        assert not any("starts over" in line for line in second.log), "".join(second.log)
    finally:
        stop_glassboxd(second)


# ---- c. cancelling ----


def test_cancelling_queued_and_running_scans(demo, scans, scan_server):
    # About 3,700 contexts of 64 tokens: long enough to be running still after the checks
    # below even where a scan is fast (it is cancelled after about two seconds).
    docs = random_documents(seed=5, count=4000, longest=120)
    long_scan = dict(neurons={HOOK: None}, context_length=64, batch_contexts=4)
    running = demo.start_scan(docs, **long_scan)
    queued = demo.start_scan(docs, **long_scan)  # one job runs at a time
    info = queued.cancel()
    assert info.state == "cancelled"
    with pytest.raises(glassbox.JobCancelled) as raised:
        queued.wait(progress=False)
    assert raised.value.info.state == "cancelled" and isinstance(raised.value, glassbox.Cancelled)

    for info in running.watch():
        if info.state == "running" and info.contexts_done > 0:
            break
    with pytest.raises(glassbox.DeadlineExceeded, match="did not end within"):
        running.wait(progress=False, timeout=0.2)
    # A client whose default deadline is shorter than the wait: the watch reconnects.
    with glassbox.connect(scan_server.address, timeout=0.3) as short:
        started = time.monotonic()
        for info in short.job(running.id).watch():
            if time.monotonic() - started > 1.0:
                break
        assert not info.ended, f"the scan ended before the cancel: make it longer ({info})"
    running.cancel()
    with pytest.raises(glassbox.JobCancelled, match=f"scan {running.id} was cancelled"):
        running.wait(progress=False)
    assert running.info().state == "cancelled"
    assert running.cancel().state == "cancelled"  # an ended job stays as it is
    with pytest.raises(glassbox.FailedPrecondition, match="is JOB_CANCELLED"):
        running.results()
    states = {j.job_id: j.state for j in scans.jobs()}
    assert states[running.id] == states[queued.id] == "cancelled"


# ---- d. errors ----


def test_bad_corpora_get_precise_errors(demo, scans):
    neurons = {HOOK: [0]}
    cases = [
        ("missing.txt", glassbox.NotFound, 'no corpus file "missing.txt"'),
        ("../outside.txt", glassbox.InvalidArgument, 'may not contain ".."'),
        ("sub/../texts.txt", glassbox.InvalidArgument, 'may not contain ".."'),
        (str(FIXTURES / "models" / "tiny-gpt2" / "config.json"), glassbox.InvalidArgument,
         "must be relative to the server's corpus directory"),
        ("escape.txt", glassbox.InvalidArgument, "leads outside the corpus directory"),
        ("sub", glassbox.InvalidArgument, "is not a file"),
        ("empty.txt", glassbox.InvalidArgument, 'corpus "empty.txt" gives no whole context of 64 tokens'),
        ("bad.txt", glassbox.InvalidArgument, 'corpus "bad.txt" line 3: text is not valid UTF-8'),
        ("texts.jsonl", glassbox.InvalidArgument, 'line 1 has no string field "text"'),
    ]
    for path, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            demo.start_scan(path, neurons=neurons)
    with pytest.raises(glassbox.NotFound, match='no SAE named "nope"'):
        demo.start_scan(TEXTS, sae_features="nope")
    with pytest.raises(glassbox.InvalidArgument, match="attached to model \"tiny-gpt2\", not \"demo\""):
        demo.start_scan(TEXTS, sae_features="res1")
    with pytest.raises(glassbox.InvalidArgument, match="gives no whole context"):
        demo.start_scan(["a"], neurons=neurons)
    with pytest.raises(glassbox.InvalidArgument, match=r"target index 512 .* out of range \[0, 512\)"):
        demo.start_scan(TEXTS, neurons={HOOK: 512})
    with pytest.raises(glassbox.FailedPrecondition, match="no BOS token"):
        scans.model("tiny-gpt2").start_scan([[1, 2, 3] * 30], neurons={"blocks.0.hook_resid_post": 0},
                                           context_length=16)
    with pytest.raises(glassbox.NotFound, match='no job "scan-nope"'):
        scans.job("scan-nope")


def test_a_server_without_corpus_dir_reads_no_files(client):
    demo = client.model("demo")
    with pytest.raises(glassbox.FailedPrecondition, match="--corpus_dir"):
        demo.start_scan("texts.txt", neurons={HOOK: [0]})


# ---- the request the client builds (no server) ----


def test_scan_requests_are_built_as_documented():
    request = scan_request("m", [[1, 2], [3]], neurons="h0", sae_features={"s": [4, 5]},
                           directions={"d": ("h1", [0.5, 1.0])}, top_k=0, histogram_bins=7,
                           window_before=2, batch_contexts=3, seed=2**64 - 1)
    kinds = [t.WhichOneof("kind") for t in request.targets]
    assert kinds == ["neurons", "sae_features", "direction"]
    assert request.targets[0].neurons.hook == "h0" and not request.targets[0].neurons.indices
    assert list(request.targets[1].sae_features.features) == [4, 5]
    assert list(request.targets[2].direction.vector) == [0.5, 1.0]
    assert [list(s.ids) for s in request.corpus.documents.token_sequences] == [[1, 2], [3]]
    # 0 turns an item off (-1 on the wire, where 0 is the server's default).
    assert (request.top_k, request.random_k, request.histogram_bins) == (-1, 20, 7)
    assert (request.window_before, request.window_after, request.batch_contexts) == (2, 0, 3)
    assert scan_request("m", "dir/c.jsonl", neurons=["a", "b"], text_field="body").corpus.path == "dir/c.jsonl"
    assert scan_request("m", [5, 6, 7], neurons="a").corpus.documents.token_sequences[0].ids == [5, 6, 7]
    assert list(scan_request("m", ["x", "y"], neurons="a").corpus.documents.texts) == ["x", "y"]
    for kwargs, error, message in [
        (dict(), ValueError, "needs targets"),
        (dict(neurons={"h": []}), ValueError, "selects nothing"),
        (dict(neurons="h", window_after=0), ValueError, "window_after must be a positive int"),
        (dict(neurons="h", per_quantile_k=0), ValueError, "per_quantile_k"),
        (dict(neurons="h", top_k=-1), ValueError, "top_k"),
        (dict(neurons="h", max_contexts=0), ValueError, "max_contexts"),
        (dict(directions={"d": [1.0]}), TypeError, r"\(hook, vector\)"),
        (dict(neurons=3), TypeError, "neurons must be"),
        (dict(heads=[(1, 2)]), TypeError, "heads must be a Heads"),
    ]:
        with pytest.raises(error, match=message):
            scan_request("m", ["text"], **kwargs)
    heads = scan_request("m", ["t"], heads=[glassbox.Heads(1), glassbox.Heads(2, [0, 3], key_offset=1),
                                            glassbox.Heads(0, 1, key_position=0)]).targets
    assert [(h.heads.layer, list(h.heads.heads), h.heads.measure, h.heads.key) for h in heads] == [
        (1, [], pb.HeadTargets.OUTPUT_NORM, 0), (2, [0, 3], pb.HeadTargets.ATTENTION_TO_OFFSET, 1),
        (0, [1], pb.HeadTargets.ATTENTION_TO_POSITION, 0)]
    for kwargs, message in [(dict(layer=-1), "layer"), (dict(layer=0, key_position=0, key_offset=1), "not both"),
                            (dict(layer=0, key_offset=-2), "key_offset")]:
        with pytest.raises(ValueError, match=message):
            glassbox.Heads(**kwargs)
    with pytest.raises(TypeError, match="mixes texts and token ids"):
        scan_request("m", ["a", [1]], neurons="h")
    with pytest.raises(ValueError, match="empty"):
        scan_request("m", [], neurons="h")


class _Explainer(pb_grpc.GlassboxServicer):
    def __init__(self) -> None:
        self.requests: List[pb.ScoreExplanationRequest] = []

    def ScoreExplanation(self, request, context):
        self.requests.append(request)
        return pb.ScoreExplanationResponse(
            correlation_top_and_random=0.75, correlation_random_only=float("nan"),
            true_activations=[pb.ExcerptActivations(values=[0.5, 1.5])], calibration_slope=2.0,
            ablation_score=0.25)


def test_score_explanation_request_and_response():
    servicer = _Explainer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    pb_grpc.add_GlassboxServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with glassbox.connect(f"127.0.0.1:{port}", timeout=30) as client:
            model = glassbox.Model(client, glassbox.ModelInfo.from_proto(pb.ModelInfo(name="m")))
            excerpt = glassbox.ScoredExcerpt([0, 7], [0.0, 3.0], random=True)
            score = model.score_explanation([excerpt], neuron=("blocks.1.mlp.hook_post", 5), ablation=True,
                                            mean_activation=0.1)
            plain = model.score_explanation([excerpt], direction=("h", np.ones(4)))
            with pytest.raises(ValueError, match="exactly one target"):
                model.score_explanation([excerpt])
            with pytest.raises(ValueError, match="2 tokens and 1 simulated"):
                model.score_explanation([glassbox.ScoredExcerpt([1, 2], [0.0])], sae_feature=("s", 1))
    finally:
        server.stop(None)
    first, second = servicer.requests
    assert first.model == "m" and first.ablation and first.mean_activation == pytest.approx(0.1)
    assert (first.target.neurons.hook, list(first.target.neurons.indices)) == ("blocks.1.mlp.hook_post", [5])
    assert list(first.excerpts[0].tokens) == [0, 7] and first.excerpts[0].random
    assert not second.HasField("mean_activation") and list(second.target.direction.vector) == [1.0] * 4
    assert score.correlation_top_and_random == 0.75 and np.isnan(score.correlation_random_only)
    np.testing.assert_array_equal(score.true_activations[0], [0.5, 1.5])
    assert (score.calibration_slope, score.ablation_score) == (2.0, 0.25)
    assert plain.ablation_score is None


# ---- explanation scoring on the real server, against the paper's formulas in numpy ----


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _jsd(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    p, q = np.exp(log_p), np.exp(log_q)
    m = 0.5 * (p + q)
    return 0.5 * (p * (log_p - np.log(m))).sum(-1) + 0.5 * (q * (log_q - np.log(m))).sum(-1)


def test_score_explanation_equals_the_papers_formulas(demo):
    """Correlation scores, the least-squares calibration and the ablation score (Bills et al.
    2023) computed on the server from one padded batch equal numpy over runs of each excerpt
    alone: true activations from captures, the ablated distributions from Set interventions on
    the neuron at every position."""
    rng = np.random.default_rng(7)
    neuron = 7
    excerpts = []
    for i, length in enumerate([12, 9, 16, 5, 11]):
        tokens = [BOS] + [int(t) for t in rng.integers(1, demo.info.d_vocab, length - 1)]
        # A simulation that half-explains the neuron: its truth scaled, plus noise.
        _, cache = demo.run_with_cache([tokens], names_filter=HOOK)
        truth = cache[HOOK][0, :, neuron]
        simulated = 0.7 * truth + rng.normal(0, 0.2 * truth.std() + 1e-3, length)
        excerpts.append(glassbox.ScoredExcerpt(tokens, [float(v) for v in simulated], random=i >= 3))
    score = demo.score_explanation(excerpts, neuron=(HOOK, neuron), ablation=True)

    truths, sims, rand_truth, rand_sim = [], [], [], []
    for e, got in zip(excerpts, score.true_activations):
        _, cache = demo.run_with_cache([e.tokens], names_filter=HOOK)
        truth = cache[HOOK][0, :, neuron].astype(np.float64)
        np.testing.assert_allclose(got, truth, rtol=1e-5, atol=1e-6)
        # The formulas below read the server's own true activations (equal to the lone runs' to
        # rounding), so that the reference differs from the server only in the formulas.
        truth = np.asarray(got, np.float64)
        truths.append(truth)
        sims.append(np.asarray(e.simulated, np.float32).astype(np.float64))  # as sent
        if e.random:
            rand_truth.append(truth)
            rand_sim.append(sims[-1])
    t, s = np.concatenate(truths), np.concatenate(sims)
    assert score.correlation_top_and_random == pytest.approx(np.corrcoef(s, t)[0, 1], rel=1e-5)
    assert score.correlation_random_only == pytest.approx(
        np.corrcoef(np.concatenate(rand_sim), np.concatenate(rand_truth))[0, 1], rel=1e-5)
    slope = ((s - s.mean()) * (t - t.mean())).sum() / ((s - s.mean()) ** 2).sum()
    intercept = t.mean() - slope * s.mean()
    assert score.calibration_slope == pytest.approx(slope, rel=1e-5)
    assert score.calibration_intercept == pytest.approx(intercept, rel=1e-5, abs=1e-7)

    jsd_sim, jsd_mean = [], []
    width = demo.info.d_mlp
    for e, sim in zip(excerpts, sims):
        clean = _log_softmax(demo.run_with_hooks([e.tokens])[0])
        for replacement, out in ((slope * sim + intercept, jsd_sim), (np.full(len(sim), t.mean()), jsd_mean)):
            value = np.zeros((1, len(sim), width), np.float32)
            value[0, :, neuron] = replacement
            edited = demo.run_with_hooks([e.tokens], [glassbox.Set(HOOK, value, dims=[neuron])])[0]
            out.extend(_jsd(clean, _log_softmax(edited)))
    assert score.jsd_simulation == pytest.approx(np.mean(jsd_sim), rel=1e-4, abs=1e-9)
    assert score.jsd_mean == pytest.approx(np.mean(jsd_mean), rel=1e-4, abs=1e-9)
    assert score.ablation_score == pytest.approx(1 - np.mean(jsd_sim) / np.mean(jsd_mean), rel=1e-3)
    assert score.correlation_top_and_random > 0.5 and score.jsd_mean > 0
