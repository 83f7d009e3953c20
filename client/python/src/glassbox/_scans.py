"""Dataset scans: server-side jobs that run a corpus through a model and keep, for each target
(a neuron, an SAE feature, a direction), its top-activating contexts, sampled contexts,
quantile samples, statistics and a histogram.

``Model.start_scan`` builds the request (``scan_request``) and returns a ``ScanJob``, a handle
on the job by id: ``wait()`` follows its progress (a tqdm bar), ``results()`` /
``all_results()`` read its ``ScanTargetResult``s, ``cancel()`` stops it. ``Client.jobs()``
lists the caller's jobs and ``Client.job(id)`` reattaches to one, also after a server restart
(jobs are checkpointed under the server's ``--jobs_dir`` and resume).

Definitions (server/engine/scan_accumulator.h, docs/scans.md): contexts are ``context_length``
tokens, each opening with BOS unless ``no_bos``; BOS (position 0) is in no statistic or record.
A record is one context summarised by its largest counted activation (its first position when
tied); top records are by that value (ties: the lower context), random and quantile records
are drawn by a seeded hash.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._dashboard import DashboardWriter
from ._errors import Aborted, Cancelled, DeadlineExceeded, Internal
from ._proto.glassbox.v1 import glassbox_pb2 as pb
from ._transport import Transport
from ._types import IndexSpec, indices

#: What a scan reads: a str (or path) names a file relative to the server's ``--corpus_dir``
#: (.jsonl, .txt: a document per line; .npy: token ids); a list of texts (tokenized on the
#: server without special tokens); token ids: a list of ints (one document), a list of token
#: lists or a 2-D array (a document per row).
Corpus = Union[str, "os.PathLike[str]", Sequence[str], Sequence[int], Sequence[Sequence[int]], np.ndarray]
#: Neurons: a hook name (every neuron of its last axis), a list of hook names, or
#: ``{hook: indices}`` with indices an int, a list of ints or None (all).
NeuronSpec = Union[None, str, Sequence[str], Mapping[str, IndexSpec]]
#: SAE features: an SAE name (all its features), a list of names, or ``{sae: features or None}``.
SaeFeatureSpec = Union[None, str, Sequence[str], Mapping[str, IndexSpec]]
#: Directions: ``{name: (hook, vector)}``, the vector as wide as the hook's last axes; the
#: target's activation is hook_value · vector.
DirectionSpec = Optional[Mapping[str, Tuple[str, Any]]]
JobState = Literal["unspecified", "queued", "running", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class Heads:
    """Attention heads of one layer as scan targets (TransformerLens's ``L{layer}H{head}``).

    By default each head's output norm: the L2 norm of its write into the residual stream
    (``blocks.{layer}.attn.hook_result``) at every token. With ``key_position``, the attention
    each query pays to that key position (0: BOS); with ``key_offset``, to the key that many
    tokens before it (1: the previous token). A key the query cannot see gives 0, as the pattern
    does. ``heads``: an int, a list of ints or None (every head).
    """

    layer: int
    heads: IndexSpec = None
    key_position: Optional[int] = None
    key_offset: Optional[int] = None

    def __post_init__(self) -> None:
        if not _is_int(self.layer) or self.layer < 0:
            raise ValueError(f"Heads.layer must be an int >= 0, got {self.layer!r}")
        if self.key_position is not None and self.key_offset is not None:
            raise ValueError("Heads takes key_position or key_offset, not both")
        for name in ("key_position", "key_offset"):
            key = getattr(self, name)
            if key is not None and (not _is_int(key) or key < 0):
                raise ValueError(f"Heads.{name} must be an int >= 0, got {key!r}")

    def to_proto(self) -> "pb.HeadTargets":
        heads = _units(self.heads, f"Heads(layer={self.layer}).heads")
        if self.key_position is not None:
            return pb.HeadTargets(layer=int(self.layer), heads=heads, key=int(self.key_position),
                                  measure=pb.HeadTargets.ATTENTION_TO_POSITION)
        if self.key_offset is not None:
            return pb.HeadTargets(layer=int(self.layer), heads=heads, key=int(self.key_offset),
                                  measure=pb.HeadTargets.ATTENTION_TO_OFFSET)
        return pb.HeadTargets(layer=int(self.layer), heads=heads, measure=pb.HeadTargets.OUTPUT_NORM)


#: Heads: one ``Heads`` or a list of them.
HeadSpec = Union[None, Heads, Sequence[Heads]]

_STATES: Dict[int, JobState] = {
    pb.JOB_STATE_UNSPECIFIED: "unspecified",
    pb.JOB_QUEUED: "queued",
    pb.JOB_RUNNING: "running",
    pb.JOB_SUCCEEDED: "succeeded",
    pb.JOB_FAILED: "failed",
    pb.JOB_CANCELLED: "cancelled",
}
_ENDED = ("succeeded", "failed", "cancelled")
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class JobInfo:
    """A job's state and progress. Times are seconds (``created``: Unix time)."""

    job_id: str
    owner: str  # the API key's name ("" on a server without keys)
    model: str
    state: JobState
    current_pass: int  # 1, or 2: the pass that fills histograms and quantile bins
    passes: int
    contexts_done: int  # in the current pass
    contexts_total: int
    tokens_done: int  # over both passes
    tokens_total: int
    tokens_per_second: float
    eta_seconds: float
    targets: int
    error: str  # why it failed
    created: float
    elapsed_seconds: float
    resumed: int  # times it restarted from a checkpoint (after a server restart)

    @property
    def ended(self) -> bool:
        """Succeeded, failed or cancelled: nothing about it changes any more."""
        return self.state in _ENDED

    @classmethod
    def from_proto(cls, p: "pb.JobInfo") -> "JobInfo":
        return cls(
            job_id=p.job_id, owner=p.owner, model=p.model, state=_STATES.get(p.state, "unspecified"),
            current_pass=int(p.current_pass), passes=int(p.passes), contexts_done=int(p.contexts_done),
            contexts_total=int(p.contexts_total), tokens_done=int(p.tokens_done),
            tokens_total=int(p.tokens_total), tokens_per_second=p.tokens_per_second,
            eta_seconds=p.eta_seconds, targets=int(p.targets), error=p.error,
            created=p.created_unix_seconds, elapsed_seconds=p.elapsed_seconds, resumed=int(p.resumed),
        )


class JobFailed(Aborted):
    """``ScanJob.wait()``: the job ended without succeeding. ``info`` is its final state
    (``info.error`` says why)."""

    def __init__(self, message: str, info: JobInfo) -> None:
        super().__init__(message)
        self.info = info


class JobCancelled(JobFailed, Cancelled):
    """``ScanJob.wait()``: the job was cancelled (also a ``glassbox.Cancelled``)."""

    default_code = Cancelled.default_code


@dataclass(frozen=True)
class ScanStats:
    """One target's statistics over every counted token of the corpus (moments in float64)."""

    count: int
    mean: float
    variance: float  # population (numpy's ddof=0)
    skewness: float
    kurtosis: float  # excess (Fisher's)
    max: float
    min: float
    firing_frequency: float  # fraction of counted tokens > 0
    nonzero: int

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)


@dataclass(frozen=True, eq=False)
class ScanRecord:
    """A context, as the window around its largest activation.

    ``tokens``, ``token_strings`` and ``activations`` cover positions ``window_start`` ..
    of context ``context``; the max ``value`` is at ``position`` (in the context), which is
    ``activations[max_index]``.
    """

    context: int
    position: int
    value: float
    window_start: int
    tokens: np.ndarray  # int64
    token_strings: Tuple[str, ...]  # empty for a model without a tokenizer
    activations: np.ndarray  # float32

    @property
    def max_index(self) -> int:
        """Where the max is in the window."""
        return self.position - self.window_start

    @property
    def text(self) -> str:
        return "".join(self.token_strings)

    @classmethod
    def from_proto(cls, r: "pb.ScanRecord") -> "ScanRecord":
        return cls(
            context=int(r.context), position=int(r.position), value=float(r.value),
            window_start=int(r.window_start), tokens=np.asarray(r.tokens, dtype=np.int64),
            token_strings=tuple(r.token_strings), activations=np.asarray(r.activations, dtype=np.float32),
        )


@dataclass(frozen=True, eq=False)
class ScanQuantile:
    """Records sampled among the contexts whose max lies in (lower, upper]."""

    lower: float
    upper: float
    records: Tuple[ScanRecord, ...]


@dataclass(frozen=True)
class ScanLogit:
    """A token the target's output direction promotes (top) or suppresses (bottom)."""

    token: int
    token_string: str
    value: float


@dataclass(frozen=True, eq=False)
class ScanTargetResult:
    """Everything a scan kept about one target.

    ``kind`` is "neuron", "sae_feature" or "direction"; ``unit`` the neuron or feature index
    (a direction's number); ``name`` e.g. "blocks.1.mlp.hook_post[5]", "res6[1234]" or the
    direction's name. ``top``: by value, descending; ``random``: sampled uniformly among the
    contexts; ``quantiles``: equal-width bins over (0, stats.max] of the records' values, each
    with records sampled in it (none when the max is <= 0). ``histogram_counts`` count the
    nonzero activations in bins between ``histogram_edges`` (equal width over [min, max] of
    them; empty when every activation is 0). ``top_logits`` / ``bottom_logits``: the target's
    output direction read through the unembedding (empty where the server gives none).
    """

    index: int  # in the job's targets
    kind: str
    hook: str
    sae: Optional[str]
    unit: int
    name: str
    stats: ScanStats
    top: Tuple[ScanRecord, ...]
    random: Tuple[ScanRecord, ...]
    quantiles: Tuple[ScanQuantile, ...]
    histogram_edges: np.ndarray  # [bins + 1] float32
    histogram_counts: np.ndarray  # [bins] int64
    top_logits: Tuple[ScanLogit, ...] = ()
    bottom_logits: Tuple[ScanLogit, ...] = ()

    def __repr__(self) -> str:
        s = self.stats
        return (f"ScanTargetResult({self.name!r}: max {s.max:.4g}, mean {s.mean:.4g}, "
                f"firing {s.firing_frequency:.3g}, {len(self.top)} top records)")

    @classmethod
    def from_proto(cls, t: "pb.ScanTargetResult") -> "ScanTargetResult":
        s = t.stats
        return cls(
            index=int(t.index), kind=t.kind, hook=t.hook, sae=t.sae or None, unit=int(t.unit), name=t.name,
            stats=ScanStats(count=int(s.count), mean=s.mean, variance=s.variance, skewness=s.skewness,
                            kurtosis=s.kurtosis, max=s.max, min=s.min, firing_frequency=s.firing_frequency,
                            nonzero=int(s.nonzero)),
            top=tuple(ScanRecord.from_proto(r) for r in t.top),
            random=tuple(ScanRecord.from_proto(r) for r in t.random),
            quantiles=tuple(ScanQuantile(q.lower, q.upper, tuple(ScanRecord.from_proto(r) for r in q.records))
                            for q in t.quantiles),
            histogram_edges=np.asarray(t.histogram_edges, dtype=np.float32),
            histogram_counts=np.asarray(t.histogram_counts, dtype=np.int64),
            top_logits=tuple(ScanLogit(int(x.token), x.token_string, x.value) for x in t.top_logits),
            bottom_logits=tuple(ScanLogit(int(x.token), x.token_string, x.value) for x in t.bottom_logits),
        )


class ScanJob:
    """A dataset scan on the server, by id: ``Model.start_scan`` returns one, ``Client.job(id)``
    reattaches to one.

        job = model.start_scan(texts, neurons={"blocks.1.mlp.hook_post": None})
        job.wait()                      # a progress bar; raises JobFailed / JobCancelled
        for target in job.all_results():
            print(target.name, target.stats.max, target.top[0].text)
    """

    def __init__(self, transport: Transport, job_id: str) -> None:
        self._transport = transport
        self.id = job_id

    def __repr__(self) -> str:
        return f"ScanJob({self.id!r})"

    def info(self) -> JobInfo:
        """The job's current state and progress."""
        stream = self._transport.watch_job(pb.WatchJobRequest(job_id=self.id))
        try:
            return JobInfo.from_proto(next(stream))  # the server sends the current state first
        except StopIteration:
            raise Internal(f"WatchJob for {self.id!r} ended without a state") from None
        finally:
            stream.cancel()

    def watch(self, timeout: Optional[float] = None) -> Iterator[JobInfo]:
        """Yields the job's state at each change (the latest, never a backlog) until it has
        ended; the last one yielded is the final state.

        ``timeout``: seconds in all (None: until the job ends; a client's default deadline
        only makes the watch reconnect). Past it: ``glassbox.DeadlineExceeded``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(f"job {self.id!r} did not end within {timeout} s")
            stream = self._transport.watch_job(pb.WatchJobRequest(job_id=self.id), timeout=remaining)
            try:
                for message in stream:
                    info = JobInfo.from_proto(message)
                    yield info
                    if info.ended:
                        return
            except DeadlineExceeded:
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeadlineExceeded(f"job {self.id!r} did not end within {timeout} s") from None
                continue  # the client's default deadline ended this watch: open another
            finally:
                stream.cancel()
            raise Internal(f"WatchJob for {self.id!r} ended before the job did")

    def wait(self, progress: bool = True, timeout: Optional[float] = None) -> JobInfo:
        """Waits for the job to end and returns its final state.

        ``progress``: show a tqdm bar (tokens done of both passes, the rate, the pass).
        Raises ``JobCancelled`` (also a ``glassbox.Cancelled``) when the job was cancelled,
        ``JobFailed`` when it failed (``.info.error`` says why), ``DeadlineExceeded`` after
        ``timeout`` seconds (the job goes on; wait again). A server restart breaks the wait
        (``Unavailable``); the job resumes from its checkpoint: call ``wait()`` again once the
        server is back.
        """
        bar: Any = None
        info: Optional[JobInfo] = None
        try:
            for info in self.watch(timeout):
                if not progress:
                    continue
                if bar is None:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=info.tokens_total, initial=info.tokens_done, unit="tok",
                               unit_scale=True, desc=self.id, dynamic_ncols=True)
                bar.total = info.tokens_total
                bar.set_postfix_str(f"pass {max(info.current_pass, 1)}/{info.passes}", refresh=False)
                bar.update(info.tokens_done - bar.n)
        finally:
            if bar is not None:
                bar.close()
        assert info is not None
        if info.state == "cancelled":
            raise JobCancelled(f"scan {self.id} was cancelled", info)
        if info.state == "failed":
            raise JobFailed(f"scan {self.id} failed: {info.error}", info)
        return info

    def cancel(self) -> JobInfo:
        """Cancels the job: a queued one ends now, a running one within its current batch
        (``info().state`` becomes "cancelled"). An ended job is left as it is."""
        return JobInfo.from_proto(self._transport.cancel_job(pb.CancelJobRequest(job_id=self.id)))

    def results(self, offset: int = 0, limit: int = 64) -> List[ScanTargetResult]:
        """Targets ``offset`` .. ``offset + limit`` (at most 1024 a page) of a succeeded job,
        in target order: neurons, then SAE features, then directions, each in the order
        given. ``glassbox.FailedPrecondition`` until the job has succeeded."""
        return self._page(offset, limit)[1]

    def all_results(self, page_size: int = 64) -> List[ScanTargetResult]:
        """Every target's results, read in pages of ``page_size``."""
        total, out = self._page(0, page_size)
        while len(out) < total:
            _, page = self._page(len(out), page_size)
            if not page:
                raise Internal(f"GetScanResults gave {len(out)} of {total} targets of {self.id!r}")
            out.extend(page)
        return out

    def write_dashboards(self, directory: Union[str, "os.PathLike[str]"], *, limit: Optional[int] = None,
                         page_size: int = 64, progress: bool = True) -> Path:
        """Writes a static HTML dashboard per target (``glassbox.dashboard_html``) and an
        index.html linking them into ``directory``; returns the index's path.

        Results are read a page of ``page_size`` targets at a time and written as they come,
        so a scan of many targets is never all in memory. ``limit``: only the first ``limit``
        targets (None: all). ``progress``: a tqdm bar over the targets.
        ``glassbox.FailedPrecondition`` until the job has succeeded.
        """
        if limit is not None and (not _is_int(limit) or limit < 1):
            raise ValueError(f"limit must be a positive int or None (all), got {limit!r}")
        writer = DashboardWriter(directory, title=f"Scan {self.id}")
        total, page = self._page(0, page_size if limit is None else min(page_size, int(limit)))
        wanted = total if limit is None else min(total, int(limit))
        bar: Any = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=wanted, unit="target", desc=f"{self.id} dashboards", dynamic_ncols=True)
        try:
            done = 0
            while True:
                for result in page[: wanted - done]:
                    writer.add(result)
                    done += 1
                    if bar is not None:
                        bar.update(1)
                if done >= wanted:
                    break
                if not page:
                    raise Internal(f"GetScanResults gave {done} of {total} targets of {self.id!r}")
                _, page = self._page(done, min(page_size, wanted - done))
        finally:
            if bar is not None:
                bar.close()
        return writer.finish()

    def _page(self, offset: int, limit: int) -> Tuple[int, List[ScanTargetResult]]:
        if not _is_int(offset) or offset < 0:
            raise ValueError(f"offset must be an int >= 0, got {offset!r}")
        if not _is_int(limit) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        response = self._transport.get_scan_results(
            pb.GetScanResultsRequest(job_id=self.id, target_offset=int(offset), target_limit=int(limit))
        )
        return int(response.targets_total), [ScanTargetResult.from_proto(t) for t in response.targets]


# ---- requests ----


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _token_ids(row: Any, where: str) -> List[int]:
    array = np.asarray(row)
    if array.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D sequence of token ids, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"{where}: token ids must be integers, got dtype {array.dtype}")
    ids: List[int] = array.astype(np.int64).tolist()
    for i in ids:
        if not 0 <= i <= _INT32_MAX:
            raise ValueError(f"{where}: token id {i} is not a valid id")
    return ids


def corpus_proto(corpus: Corpus, max_contexts: Optional[int] = None, text_field: str = "text") -> "pb.ScanCorpus":
    """A ScanCorpus from the forms ``Corpus`` lists."""
    if max_contexts is not None and (not _is_int(max_contexts) or max_contexts < 1):
        raise ValueError(f"max_contexts must be a positive int or None (all), got {max_contexts!r}")
    out = pb.ScanCorpus(max_contexts=int(max_contexts or 0), text_field=text_field)
    if hasattr(corpus, "detach") and hasattr(corpus, "numpy"):  # a torch tensor
        corpus = corpus.detach().cpu().numpy()
    if isinstance(corpus, (str, os.PathLike)):
        path = os.fspath(corpus)
        if not path:
            raise ValueError("the corpus path is empty")
        out.path = path
        return out
    if isinstance(corpus, np.ndarray):
        if corpus.ndim == 1:
            rows = [_token_ids(corpus, "corpus")]
        elif corpus.ndim == 2:
            rows = [_token_ids(r, f"corpus[{i}]") for i, r in enumerate(corpus)]
        else:
            raise ValueError(f"a token array corpus must be 1-D or 2-D, got shape {corpus.shape}")
        out.documents.token_sequences.extend(pb.TokenSequence(ids=r) for r in rows)
        return out
    if not isinstance(corpus, Sequence):
        raise TypeError("corpus must be a path under the server's --corpus_dir, a list of texts or "
                        f"token ids, not {type(corpus).__name__}")
    items = list(corpus)
    if not items:
        raise ValueError("the corpus is empty")
    if all(isinstance(x, str) for x in items):
        out.documents.texts.extend(str(x) for x in items)
    elif all(_is_int(x) for x in items):
        out.documents.token_sequences.append(pb.TokenSequence(ids=_token_ids(items, "corpus")))
    elif not any(isinstance(x, str) for x in items):
        out.documents.token_sequences.extend(
            pb.TokenSequence(ids=_token_ids(r, f"corpus[{i}]")) for i, r in enumerate(items))
    else:
        raise TypeError("the corpus mixes texts and token ids")
    return out


def _units(value: IndexSpec, where: str) -> List[int]:
    """Indices of a target group; None: all (the empty list on the wire)."""
    if value is None:
        return []
    chosen = list(indices(value, where))
    if not chosen:
        raise ValueError(f"{where} selects nothing; None selects every index")
    return chosen


def _groups(spec: Union[NeuronSpec, SaeFeatureSpec], what: str) -> List[Tuple[str, List[int]]]:
    if spec is None:
        return []
    if isinstance(spec, str):
        return [(spec, [])]
    if isinstance(spec, Mapping):
        return [(str(name), _units(units, f"{what}[{name!r}]")) for name, units in spec.items()]
    if isinstance(spec, Sequence) and all(isinstance(name, str) for name in spec):
        return [(name, []) for name in spec]
    raise TypeError(f"{what} must be a name, a list of names or {{name: indices or None}}, got {spec!r}")


def _vector(value: Any, where: str) -> List[float]:
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{where} must be a non-empty 1-D vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where} has a non-finite value")
    values: List[float] = array.tolist()
    return values


def target_protos(neurons: NeuronSpec = None, sae_features: SaeFeatureSpec = None,
                  directions: DirectionSpec = None, heads: HeadSpec = None) -> List["pb.ScanTarget"]:
    """The targets in job order: neurons, SAE features, directions, heads, each in the order
    given."""
    out = [pb.ScanTarget(neurons=pb.NeuronTargets(hook=hook, indices=units))
           for hook, units in _groups(neurons, "neurons")]
    out += [pb.ScanTarget(sae_features=pb.SaeFeatureTargets(sae=sae, features=units))
            for sae, units in _groups(sae_features, "sae_features")]
    if directions is not None:
        if not isinstance(directions, Mapping):
            raise TypeError(f"directions must be {{name: (hook, vector)}}, got {directions!r}")
        for name, spec in directions.items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)):
                raise TypeError(f"directions[{name!r}] must be (hook, vector), got {spec!r}")
            out.append(pb.ScanTarget(direction=pb.DirectionTarget(
                name=str(name), hook=spec[0], vector=_vector(spec[1], f"directions[{name!r}]"))))
    if heads is not None:
        groups = [heads] if isinstance(heads, Heads) else list(heads)
        for group in groups:
            if not isinstance(group, Heads):
                raise TypeError(f"heads must be a Heads or a list of them, got {group!r}")
            out.append(pb.ScanTarget(heads=group.to_proto()))
    if not out:
        raise ValueError("a scan needs targets: neurons=, sae_features=, directions= or heads=")
    return out


def _count(value: int, name: str, most: int) -> int:
    """A record or bin count: 0 turns the item off (-1 on the wire, where 0 is the default)."""
    if not _is_int(value) or not 0 <= value <= most:
        raise ValueError(f"{name} must be an int in [0, {most}], got {value!r}")
    return int(value) if value > 0 else -1


def _window(value: Optional[int], name: str) -> int:
    # The wire's 0 means "to the context's edge", so a window of 0 tokens cannot be asked for.
    if value is None:
        return 0
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, or None (to the context's edge), got {value!r}")
    return int(value)


def scan_request(
    model: str,
    corpus: Corpus,
    *,
    neurons: NeuronSpec = None,
    sae_features: SaeFeatureSpec = None,
    directions: DirectionSpec = None,
    heads: HeadSpec = None,
    context_length: int = 64,
    max_contexts: Optional[int] = None,
    text_field: str = "text",
    no_bos: bool = False,
    top_k: int = 20,
    random_k: int = 20,
    quantile_bins: int = 10,
    per_quantile_k: int = 5,
    histogram_bins: int = 50,
    window_before: Optional[int] = None,
    window_after: Optional[int] = None,
    logit_k: int = 10,
    seed: int = 0,
    batch_contexts: Optional[int] = None,
) -> "pb.StartScanRequest":
    """The StartScanRequest of ``Model.start_scan`` (which documents the arguments)."""
    if not _is_int(context_length) or context_length < 1:
        raise ValueError(f"context_length must be a positive int, got {context_length!r}")
    if not _is_int(per_quantile_k) or not 1 <= per_quantile_k <= 1000:
        raise ValueError(f"per_quantile_k must be an int in [1, 1000], got {per_quantile_k!r}")
    if not _is_int(seed) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    if batch_contexts is not None and (not _is_int(batch_contexts) or not 1 <= batch_contexts <= _INT32_MAX):
        raise ValueError(f"batch_contexts must be a positive int or None (the server's choice), got {batch_contexts!r}")
    return pb.StartScanRequest(
        model=model,
        corpus=corpus_proto(corpus, max_contexts, text_field),
        targets=target_protos(neurons, sae_features, directions, heads),
        context_length=int(context_length),
        no_bos=bool(no_bos),
        top_k=_count(top_k, "top_k", 1000),
        random_k=_count(random_k, "random_k", 1000),
        quantile_bins=_count(quantile_bins, "quantile_bins", 100),
        per_quantile_k=int(per_quantile_k),
        histogram_bins=_count(histogram_bins, "histogram_bins", 10000),
        window_before=_window(window_before, "window_before"),
        window_after=_window(window_after, "window_after"),
        seed=int(seed),
        batch_contexts=int(batch_contexts or 0),
        logit_k=_count(logit_k, "logit_k", 1000),
    )


# ---- scoring explanations ----


@dataclass(frozen=True)
class ScoredExcerpt:
    """An excerpt and an explanation's simulated activation of each of its tokens (as a
    simulator such as Bills et al.'s gives them). ``tokens`` run as given (with BOS when the
    excerpt had one); ``random``: drawn at random rather than among the top-activating ones."""

    tokens: Sequence[int]
    simulated: Sequence[float]
    random: bool = False


@dataclass(frozen=True, eq=False)
class ExplanationScore:
    """``Model.score_explanation``: correlation scores (Pearson, over every token of the
    excerpts) and, when asked for (neurons), the ablation score and its parts (else None)."""

    correlation_top_and_random: float
    correlation_random_only: float  # NaN without random excerpts
    true_activations: Tuple[np.ndarray, ...]  # per excerpt, float32
    calibration_slope: Optional[float] = None
    calibration_intercept: Optional[float] = None
    jsd_simulation: Optional[float] = None
    jsd_mean: Optional[float] = None
    ablation_score: Optional[float] = None

    @classmethod
    def from_proto(cls, r: "pb.ScoreExplanationResponse", ablation: bool) -> "ExplanationScore":
        def part(value: float) -> Optional[float]:
            return value if ablation else None

        return cls(
            correlation_top_and_random=r.correlation_top_and_random,
            correlation_random_only=r.correlation_random_only,
            true_activations=tuple(np.asarray(a.values, dtype=np.float32) for a in r.true_activations),
            calibration_slope=part(r.calibration_slope), calibration_intercept=part(r.calibration_intercept),
            jsd_simulation=part(r.jsd_simulation), jsd_mean=part(r.jsd_mean),
            ablation_score=part(r.ablation_score),
        )


def score_request(
    model: str,
    excerpts: Sequence[ScoredExcerpt],
    *,
    neuron: Optional[Tuple[str, int]] = None,
    sae_feature: Optional[Tuple[str, int]] = None,
    direction: Optional[Tuple[str, Any]] = None,
    head: Optional[Heads] = None,
    ablation: bool = False,
    mean_activation: Optional[float] = None,
) -> "pb.ScoreExplanationRequest":
    """The ScoreExplanationRequest of ``Model.score_explanation``."""
    given = [t for t in (neuron, sae_feature, direction, head) if t is not None]
    if len(given) != 1:
        raise ValueError("name exactly one target: neuron=(hook, index), sae_feature=(sae, feature), "
                         "direction=(hook, vector) or head=Heads(layer, head)")
    for spec, what in ((neuron, "neuron"), (sae_feature, "sae_feature"), (direction, "direction")):
        if spec is not None and not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)):
            raise TypeError(f"{what} must be a (name, {'vector' if what == 'direction' else 'index'}) tuple, got {spec!r}")
    if neuron is not None:
        if not _is_int(neuron[1]):
            raise TypeError(f"neuron=(hook, index) takes one int index, got {neuron[1]!r}")
        target = pb.ScanTarget(neurons=pb.NeuronTargets(hook=neuron[0], indices=[int(neuron[1])]))
    elif sae_feature is not None:
        if not _is_int(sae_feature[1]):
            raise TypeError(f"sae_feature=(sae, feature) takes one int feature, got {sae_feature[1]!r}")
        target = pb.ScanTarget(sae_features=pb.SaeFeatureTargets(sae=sae_feature[0], features=[int(sae_feature[1])]))
    elif direction is not None:
        target = pb.ScanTarget(direction=pb.DirectionTarget(hook=direction[0], vector=_vector(direction[1], "direction")))
    else:
        if not isinstance(head, Heads) or not _is_int(head.heads):
            raise TypeError(f"head must be Heads(layer, head) with one int head, got {head!r}")
        target = pb.ScanTarget(heads=head.to_proto())
    protos = []
    for i, excerpt in enumerate(excerpts):
        if not isinstance(excerpt, ScoredExcerpt):
            raise TypeError(f"excerpts[{i}] must be a ScoredExcerpt, not {type(excerpt).__name__}")
        tokens = _token_ids(excerpt.tokens, f"excerpts[{i}].tokens")
        simulated = np.asarray(excerpt.simulated, dtype=np.float32).reshape(-1).tolist()
        if len(simulated) != len(tokens):
            raise ValueError(f"excerpts[{i}] has {len(tokens)} tokens and {len(simulated)} simulated activations")
        protos.append(pb.ScoredExcerpt(tokens=tokens, simulated=simulated, random=bool(excerpt.random)))
    if not protos:
        raise ValueError("score_explanation needs excerpts")
    request = pb.ScoreExplanationRequest(model=model, target=target, excerpts=protos, ablation=bool(ablation))
    if mean_activation is not None:
        request.mean_activation = float(mean_activation)
    return request
