"""Model: a handle on one served model, with TransformerLens-shaped methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from ._analyses import (
    AttentionNormsLayer,
    AttentionNormsResult,
    DirectLogitAttributionResult,
    LogitDiff,
    LogitLensResult,
    LogProb,
    Loss,
    Metric,
    PATCHING_METHODS,
    PatchingResult,
    TokenSpec,
    decode_array,
    sweep_kind,
)
from ._cache import ActivationCache
from ._generate import GeneratedSequence, GenerationStream, generation_request, sampling_proto
from ._gradients import (
    GradientMetric,
    GradientResult,
    IntegratedGradientsResult,
    JacobianResult,
    baseline_array,
    hook_names,
    positions_per_row,
)
from ._gradients import metric_proto as gradient_metric_proto
from ._heads import HeadDetection, repeated_random_tokens, score_heads
from ._interventions import Interventions, intervention_protos
from ._proto.glassbox.v1 import glassbox_pb2 as pb
from ._saes import (
    SaeEncoding,
    SaeInfo,
    Splices,
    Steering,
    decode_request,
    splice_protos,
    steering_protos,
)
from ._scans import (
    Corpus,
    DirectionSpec,
    ExplanationScore,
    Heads,
    HeadSpec,
    NeuronSpec,
    SaeFeatureSpec,
    ScanJob,
    ScoredExcerpt,
    scan_request,
    score_request,
)
from ._stream import RunStream
from ._transport import HasTransport
from ._types import CachedRun, Capture, IndexSpec, ModelInfo, RunHeader, Timings, indices

#: A run's inputs: one text, a list of texts, a token array ([pos] or [batch, pos]), or a list
#: of token lists (rows may differ in length; the server right-pads them). torch tensors work too.
Inputs = Union[str, Sequence[str], np.ndarray, Sequence[int], Sequence[Sequence[int]], Any]
#: What to capture: a hook name or glob, a Capture, or a sequence of them.
Captures = Union[None, str, Capture, Sequence[Union[str, Capture]]]
#: What a names_filter may be: as Captures, or a predicate on hook names (TransformerLens style).
NamesFilter = Union[Captures, Callable[[str], bool]]
#: Which logits to return: "all" [batch, pos, vocab], "last" [batch, vocab] (each row's last
#: real token), "none"/None, ("top_k", k) [batch, pos, k] plus RunResult.logits_indices, or
#: "auto": "all", or "none" when stop_at_layer is given (the server cannot produce logits then).
LogitsSpec = Union[Literal["all", "last", "none", "auto"], None, Tuple[str, int]]

_INT32_MAX = 2**31 - 1


@dataclass
class RunResult:
    """Everything one ``Model.run`` returned.

    Batched inputs are right-padded to the longest row; ``sequence_lengths`` (and ``mask``) say
    where each row's real tokens end. Values at padding positions are meaningless.
    """

    model: str
    tokens: Tuple[np.ndarray, ...]  # the ids that ran, per row, unpadded (int64)
    sequence_lengths: np.ndarray  # [batch] int64
    cache: ActivationCache
    logits: Optional[np.ndarray] = None  # [batch, pos, vocab], [batch, vocab] or [batch, pos, k]
    logits_indices: Optional[np.ndarray] = None  # [batch, pos, k] int32, for ("top_k", k)
    loss_per_token: Optional[np.ndarray] = None  # [batch, pos - 1]; 0 at padding
    target_log_probs: Optional[np.ndarray] = None  # [batch, pos, len(target_tokens)]
    timings: Timings = field(default_factory=Timings)
    bytes_sent: int = 0
    kept: Optional[CachedRun] = None  # what cache_as kept on the server

    @property
    def mask(self) -> np.ndarray:
        """[batch, pos] bool: True at real tokens, False at padding."""
        width = int(self.sequence_lengths.max()) if len(self.sequence_lengths) else 0
        return np.arange(width)[None, :] < self.sequence_lengths[:, None]


def _keep_proto(cache_as: Optional[str], hooks: NamesFilter, ttl_s: Optional[int]) -> "Optional[pb.KeepActivations]":
    if cache_as is None:
        if hooks is not None or ttl_s is not None:
            raise ValueError("cache_hooks and ttl_s apply to a run kept with cache_as=NAME")
        return None
    if not isinstance(cache_as, str) or not cache_as:
        raise TypeError(f"cache_as must be a non-empty name, got {cache_as!r}")
    if hooks is None:
        names: List[str] = []
    elif isinstance(hooks, str):
        names = [hooks]
    elif callable(hooks):
        raise TypeError("cache_hooks takes hook names or globs, not a predicate")
    else:
        names = [str(h) for h in hooks]
    if ttl_s is not None and (not _is_int(ttl_s) or ttl_s <= 0):
        raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    return pb.KeepActivations(name=cache_as, hooks=names, ttl_seconds=int(ttl_s or 0))


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(verbose: bool, total: int) -> Any:
    """A tqdm bar when ``verbose`` and tqdm is installed; otherwise nothing is shown."""
    if not verbose:
        return _NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, desc="generating", unit="tok")


def _to_numpy(value: Any) -> Any:
    """torch tensors (without importing torch) become numpy arrays; other values pass through."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return value


def _token_row(row: Any, where: str) -> List[int]:
    array = np.asarray(_to_numpy(row))
    if array.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D sequence of token ids, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"{where}: token ids must be integers, got dtype {array.dtype}")
    ids = array.astype(np.int64).tolist()
    for i in ids:
        if not 0 <= i <= _INT32_MAX:
            raise ValueError(f"{where}: token id {i} is not a valid id")
    return ids


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def build_inputs(inputs: Inputs, prepend_bos: Optional[bool] = None) -> "pb.Inputs":
    """Translates the accepted input forms into a proto Inputs."""
    inputs = _to_numpy(inputs)
    texts: Optional[List[str]] = None
    rows: Optional[List[List[int]]] = None
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, np.ndarray):
        if inputs.ndim == 1:
            rows = [_token_row(inputs, "inputs")]
        elif inputs.ndim == 2:
            rows = [_token_row(r, f"inputs[{i}]") for i, r in enumerate(inputs)]
        else:
            raise ValueError(f"a token array must be [pos] or [batch, pos], got shape {inputs.shape}")
    elif isinstance(inputs, Sequence):
        items = list(inputs)
        if not items:
            raise ValueError("inputs is empty")
        if all(isinstance(x, str) for x in items):
            texts = items
        elif all(_is_int(x) for x in items):
            rows = [_token_row(items, "inputs")]
        elif not any(isinstance(x, str) for x in items):
            rows = [_token_row(r, f"inputs[{i}]") for i, r in enumerate(items)]
        else:
            raise TypeError("inputs mixes texts and token ids")
    else:
        raise TypeError(
            "inputs must be a string, a list of strings, a token array or a list of token lists, "
            f"not {type(inputs).__name__}"
        )
    if texts is not None:
        return pb.Inputs(texts=texts, prepend_bos=prepend_bos)
    if prepend_bos is not None:
        raise ValueError("prepend_bos applies to text inputs; token ids run exactly as given")
    assert rows is not None
    return pb.Inputs(token_ids=[pb.TokenSequence(ids=r) for r in rows])


def build_outputs(
    logits: LogitsSpec,
    loss_per_token: bool,
    target_tokens: Optional[Sequence[int]],
) -> "pb.Outputs":
    out = pb.Outputs(loss_per_token=bool(loss_per_token))
    if logits is None or logits == "none":
        out.logits = pb.LOGITS_NONE
    elif logits == "all":
        out.logits = pb.LOGITS_ALL
    elif logits == "last":
        out.logits = pb.LOGITS_LAST
    elif isinstance(logits, tuple) and len(logits) == 2 and logits[0] == "top_k":
        k = logits[1]
        if not _is_int(k) or k < 1:
            raise ValueError(f"logits=('top_k', k) needs a positive int k, got {k!r}")
        out.logits = pb.LOGITS_TOP_K
        out.logits_k = int(k)
    else:
        raise ValueError(f"logits must be 'all', 'last', 'none', None or ('top_k', k), got {logits!r}")
    if target_tokens is not None:
        out.target_tokens.extend(_token_row(target_tokens, "target_tokens"))
    return out


def _as_capture(item: Union[str, Capture]) -> Capture:
    if isinstance(item, Capture):
        return item
    if isinstance(item, str):
        return Capture(item)
    raise TypeError(f"a capture must be a hook name, a glob or a Capture, not {type(item).__name__}")


class Model:
    """A model served by a Glassbox server (``client.model(name)``).

    ``info`` (also ``cfg``) holds its dimensions and hook points. Tokenization needs a model
    with a tokenizer; otherwise pass token ids to ``run``.
    """

    def __init__(self, client: HasTransport, info: ModelInfo) -> None:
        self._client = client  # a Client; the server is called through its transport
        self._transport = client.transport
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def cfg(self) -> ModelInfo:
        """TransformerLens spelling of ``info``."""
        return self.info

    def __repr__(self) -> str:
        i = self.info
        return (
            f"Model({i.name!r}: {i.architecture}, {i.n_layers} layers, d_model {i.d_model}, "
            f"{i.n_heads} heads, on {i.device})"
        )

    # ---- tokens ----

    def to_tokens(self, text: str, prepend_bos: Optional[bool] = None) -> np.ndarray:
        """Token ids of ``text`` as an int64 array of shape [1, pos].

        ``prepend_bos``: add BOS/EOS as the tokenizer's post-processor says; None = its default.
        """
        if not isinstance(text, str):
            raise TypeError("to_tokens takes one string; pass a list of strings to run() for a batch")
        response = self._transport.tokenize(pb.TokenizeRequest(model=self.name, text=text, prepend_bos=prepend_bos))
        return np.asarray(response.ids, dtype=np.int64)[None, :]

    def to_string(self, tokens: Any) -> Union[str, List[str]]:
        """Decodes token ids: [pos] -> str, [batch, pos] -> list of str."""
        array = np.asarray(_to_numpy(tokens))
        if array.ndim == 2:
            return [self._detokenize(row).text for row in array]
        return self._detokenize(array).text

    def to_str_tokens(
        self, input: Any, prepend_bos: Optional[bool] = None
    ) -> Union[List[str], List[List[str]]]:
        """Each token as a string: of a text (tokenized), or of token ids ([pos] or [1, pos]).

        A list of texts or a [batch, pos] array with batch > 1 gives a list per row.
        """
        input = _to_numpy(input)
        if isinstance(input, str):
            response = self._transport.tokenize(
                pb.TokenizeRequest(model=self.name, text=input, prepend_bos=prepend_bos)
            )
            return list(response.str_tokens)
        if isinstance(input, Sequence) and input and all(isinstance(x, str) for x in input):
            return [self.to_str_tokens(text, prepend_bos) for text in input]  # type: ignore[misc,return-value]
        array = np.asarray(input)
        if array.ndim == 2:
            if array.shape[0] == 1:
                array = array[0]
            else:
                return [list(self._detokenize(row).str_tokens) for row in array]
        return list(self._detokenize(array).str_tokens)

    def _detokenize(self, ids: Any) -> "pb.DetokenizeResponse":
        return self._transport.detokenize(pb.DetokenizeRequest(model=self.name, ids=_token_row(ids, "tokens")))

    # ---- runs ----

    def run(
        self,
        inputs: Inputs,
        *,
        captures: NamesFilter = None,
        interventions: Interventions = None,
        saes: Splices = None,
        sae_steering: Steering = None,
        logits: LogitsSpec = "auto",
        loss_per_token: bool = False,
        target_tokens: Optional[Sequence[int]] = None,
        stop_at_layer: Optional[int] = None,
        prepend_bos: Optional[bool] = None,
        chunk_bytes: int = 0,
        timeout: Optional[float] = None,
        cache_as: Optional[str] = None,
        cache_hooks: NamesFilter = None,
        ttl_s: Optional[int] = None,
    ) -> RunResult:
        """One hooked forward pass over a batch.

        Args:
            inputs: a text, a list of texts, a token array ([pos] / [batch, pos]) or a list of
                token lists (ragged rows are right-padded by the server).
            captures: hook names, globs (``"blocks.*.hook_resid_post"``) or Capture objects
                (with selections, reductions, dtypes), or a predicate on hook names.
            interventions: an Intervention (``Zero``, ``Scale``, ``Add``, ``Set``,
                ``MeanAblate``, ``PatchRows``) or a list of them, applied in order at their hooks
                (TransformerLens run_with_hooks semantics; captures see the edited values).
            saes: SAEs to splice in at their hooks: names, or ``SaeSplice(name,
                use_error_term, edits=[FeatureEdit(...)])`` (SAELens HookedSAETransformer
                semantics); capture their points as "<hook>.hook_sae_*" (``SaeInfo.hook_point``).
            sae_steering: ``SaeSteer(name, features, coefficients, positions=...)``: add
                c * W_dec[feature] at the SAE's hook (after interventions there).
            logits: "all", "last", "none"/None, ("top_k", k), or "auto" ("all", or "none" with
                stop_at_layer).
            loss_per_token: also return -log p(token[t+1] | ..t), [batch, pos - 1].
            target_tokens: also return the log-probs of these ids at every position.
            stop_at_layer: run blocks [0, stop_at_layer) only (TransformerLens semantics;
                negative counts from the end). Outputs must then be empty.
            prepend_bos: for texts: add BOS as the tokenizer says (None = its default).
            chunk_bytes: largest chunk the server sends (0 = its default).
            timeout: seconds; defaults to the client's timeout.
            cache_as: keep this run's activations on the server under this name (replacing a
                run kept under it), for later runs' ``PatchFromCache(hook, name)``; what was kept
                is ``RunResult.kept``. Kept values are what a capture sees (after this run's
                interventions), in host memory, within the server's budget (--cache_max_bytes,
                --cache_max_entries; ``RESOURCE_EXHAUSTED`` beyond it).
            cache_hooks: the hooks to keep (names or globs; a predicate is not allowed); None:
                every hook this run captures.
            ttl_s: seconds the server keeps it (None: the server's default, 600 s).
        """
        with self.stream(
            inputs,
            captures=captures,
            interventions=interventions,
            saes=saes,
            sae_steering=sae_steering,
            logits=logits,
            loss_per_token=loss_per_token,
            target_tokens=target_tokens,
            stop_at_layer=stop_at_layer,
            prepend_bos=prepend_bos,
            chunk_bytes=chunk_bytes,
            timeout=timeout,
            cache_as=cache_as,
            cache_hooks=cache_hooks,
            ttl_s=ttl_s,
        ) as stream:
            header = stream.header
            _check_unique_names(header)
            outputs: Dict[str, np.ndarray] = {}
            tensors: Dict[str, np.ndarray] = {}
            for info, array in stream.iter_tensors():
                (outputs if info.name in stream.output_names else tensors)[info.name] = array
            summary = stream.summary
        assert summary is not None
        return RunResult(
            model=header.model,
            tokens=header.tokens,
            sequence_lengths=header.sequence_lengths,
            cache=ActivationCache(
                tensors,
                {t.name: t.dim_names for t in header.tensors if t.name in tensors},
                header.sequence_lengths,
            ),
            logits=outputs.get("logits"),
            logits_indices=outputs.get("logits.indices"),
            loss_per_token=outputs.get("loss_per_token"),
            target_log_probs=outputs.get("target_log_probs"),
            timings=summary.timings,
            bytes_sent=summary.bytes_sent,
            kept=summary.kept,
        )

    def run_with_cache(
        self,
        input: Inputs,
        names_filter: NamesFilter = None,
        **kwargs: Any,
    ) -> Tuple[Optional[np.ndarray], ActivationCache]:
        """TransformerLens's ``run_with_cache``: returns ``(logits, cache)``.

        ``names_filter`` is None (every hook point the run reaches), a hook name or glob, a
        Capture, a list of those, or a predicate on hook names. Other keyword arguments are
        ``run``'s (``interventions=`` among them); logits default to "all" ([batch, pos,
        vocab]), or None with stop_at_layer.
        """
        if names_filter is None:
            names_filter = _all_hooks
        result = self.run(input, captures=names_filter, **kwargs)
        return result.logits, result.cache

    def run_with_hooks(
        self,
        input: Inputs,
        interventions: Interventions = None,
        *,
        return_type: Optional[Literal["logits", "loss", "both"]] = "logits",
        loss_per_token: bool = False,
        **kwargs: Any,
    ) -> Any:
        """TransformerLens's ``run_with_hooks``, with typed interventions for ``fwd_hooks``.

        Returns the logits [batch, pos, vocab] (``return_type="logits"``), the loss
        (``"loss"``: the mean next-token loss over every real token of the batch, a float; with
        ``loss_per_token=True`` the [batch, pos - 1] array, 0 at padding), ``(logits, loss)``
        (``"both"``) or None. Other keyword arguments are ``run``'s (``logits=`` picks another
        logits form).
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        want_loss = return_type in ("loss", "both")
        if return_type in ("loss", None):
            kwargs.setdefault("logits", "none")
        result = self.run(input, interventions=interventions, loss_per_token=want_loss, **kwargs)
        loss: Any = None
        if want_loss:
            per_token = result.loss_per_token
            assert per_token is not None
            if loss_per_token:
                loss = per_token
            else:
                targets = int(np.maximum(result.sequence_lengths - 1, 0).sum())
                loss = float(per_token.sum(dtype=np.float64) / targets) if targets else float("nan")
        if return_type == "logits":
            return result.logits
        if return_type == "loss":
            return loss
        if return_type == "both":
            return result.logits, loss
        return None

    def stream(
        self,
        inputs: Inputs,
        *,
        captures: NamesFilter = None,
        interventions: Interventions = None,
        saes: Splices = None,
        sae_steering: Steering = None,
        logits: LogitsSpec = "none",
        loss_per_token: bool = False,
        target_tokens: Optional[Sequence[int]] = None,
        stop_at_layer: Optional[int] = None,
        prepend_bos: Optional[bool] = None,
        chunk_bytes: int = 0,
        timeout: Optional[float] = None,
        cache_as: Optional[str] = None,
        cache_hooks: NamesFilter = None,
        ttl_s: Optional[int] = None,
    ) -> RunStream:
        """Like ``run``, but yields ``(name, array)`` as each tensor completes, in forward order.

        For captures too large to hold at once: each array can be reduced or written away
        before the next arrives (the server waits for a slow reader). Requested outputs come
        last. Logits default to "none" here. Use as an iterator, ideally in a ``with`` block;
        leaving early cancels the run.
        """
        if stop_at_layer is not None:
            if not _is_int(stop_at_layer):
                raise TypeError(f"stop_at_layer must be an int, got {stop_at_layer!r}")
            if stop_at_layer < 0:  # TransformerLens: negative counts from the end
                stop_at_layer += self.info.n_layers
        if logits == "auto":
            logits = "none" if stop_at_layer is not None else "all"
        proto_inputs = build_inputs(inputs, prepend_bos)
        request = pb.RunRequest(
            model=self.name,
            inputs=proto_inputs,
            captures=[c.to_proto() for c in self._captures(captures, stop_at_layer)],
            interventions=intervention_protos(interventions, _batch_size(proto_inputs)),
            sae_splices=splice_protos(saes),
            sae_steering=steering_protos(sae_steering),
            outputs=build_outputs(logits, loss_per_token, target_tokens),
            stop_at_layer=stop_at_layer,
            chunk_bytes=int(chunk_bytes),
            keep=_keep_proto(cache_as, cache_hooks, ttl_s),
        )
        return RunStream(self._transport.run(request, timeout=timeout), _output_names(request.outputs))

    # ---- generation (docs/generation.md) ----

    def generate_stream(
        self,
        input: Inputs,
        max_new_tokens: int = 10,
        *,
        stop_at_eos: bool = True,
        stop_tokens: Sequence[int] = (),
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        min_p: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        freq_penalty: float = 0.0,
        seed: Optional[int] = None,
        interventions: Interventions = None,
        saes: Splices = None,
        sae_steering: Steering = None,
        top_logprobs: int = 0,
        stop_strings: Sequence[str] = (),
        captures: NamesFilter = None,
        capture_prompt: bool = False,
        include_unsteered: bool = False,
        capture_at_end: bool = False,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> GenerationStream:
        """Generation as an iterator of ``GenerationStep`` (one per step, as the server
        produces them); the finished ``sequences`` are on the stream afterwards. Arguments are
        ``generate``'s, and:

        - ``top_logprobs``: the most likely alternatives of every step.
        - ``captures``: hooks (names, globs, ``Capture`` objects without positions, or a
          predicate) reported with every step in ``GenerationStep.captures``: the position
          that chose the step's token; ``capture_prompt`` makes step 0 report every prompt
          position (what the KV cache was filled with). ``capture_at_end`` reports them once
          instead, over each finished sequence (every position, the last token included) in
          the stream's ``final_captures``: a ``run_with_cache`` of the output, in one request.
        - ``include_unsteered``: after the steered continuation, the one without any
          intervention, splice or steering from the same prompts and seed; its steps have
          ``unsteered=True`` and the stream's ``unsteered_sequences`` holds it.
        """
        proto_inputs = build_inputs(input, prepend_bos)
        request = generation_request(
            self.name, proto_inputs, max_new_tokens,
            sampling_proto(do_sample, temperature, top_k, top_p, min_p, repetition_penalty, freq_penalty, seed),
            stop_at_eos, stop_tokens, top_logprobs, stop_strings, capture_prompt, include_unsteered,
            capture_at_end,
        )
        request.captures.extend(c.to_proto() for c in self._captures(captures, None))
        request.interventions.extend(intervention_protos(interventions, _batch_size(proto_inputs)))
        request.sae_splices.extend(splice_protos(saes))
        request.sae_steering.extend(steering_protos(sae_steering))
        return GenerationStream(self._transport.generate(request, timeout=timeout))

    def generate(
        self,
        input: Inputs,
        max_new_tokens: int = 10,
        *,
        verbose: bool = False,
        return_type: Literal["input", "str", "tokens", "sequences"] = "input",
        **kwargs: Any,
    ) -> Any:
        """TransformerLens's ``generate``, run on the server, with ``Run``'s interventions,
        SAE splices and SAE steering applied at every step.

        ``input`` is a text, a list of texts, or token ids ([pos], [batch, pos] or a list of
        rows; ragged rows are fine). Returns what ``return_type`` says: "input" (the default)
        answers in the input's form: prompt and continuation as a string (a list for a list of
        texts), or as token ids (an int64 [1, pos] array for one row, a list of arrays for
        several); "str" and "tokens" force one form; "sequences" gives the
        ``GeneratedSequence`` objects (prompt, new tokens, new text, finish reason).

        Sampling follows TransformerLens's defaults (``do_sample=True``, ``temperature=1``);
        ``do_sample=False`` is greedy, equal token for token to HF ``generate``. ``seed`` makes
        sampling reproducible (row r uses seed + r). ``stop_at_eos`` stops a row at
        config.json's EOS; ``stop_tokens`` adds more; ``stop_strings`` stops a row once its
        text contains one (HF ``stop_strings``; the completing token is kept). Positions of
        interventions index real tokens from 0 (prompt, then generated); negative positions are refused. ``verbose``
        shows a progress bar (tqdm when installed). With ``include_unsteered=True`` it returns
        a pair (steered, unsteered), each in the form above: the second continuation runs
        without any edit from the same prompts and seed (Neuronpedia's steered vs default).
        """
        unsteered = bool(kwargs.get("include_unsteered", False))
        with self.generate_stream(input, max_new_tokens, **kwargs) as stream:
            bar = _progress(verbose, max_new_tokens * (2 if unsteered else 1))
            for _ in stream:
                bar.update(1)
            bar.close()
            sequences = stream.sequences
        assert sequences is not None
        if unsteered:
            assert stream.unsteered_sequences is not None
            return (self._generated_as(input, return_type, sequences),
                    self._generated_as(input, return_type, stream.unsteered_sequences))
        return self._generated_as(input, return_type, sequences)

    def _generated_as(self, input: Inputs, return_type: str, sequences: List[GeneratedSequence]) -> Any:
        """``generate``'s answer in the form ``return_type`` asks for."""
        if return_type == "sequences":
            return sequences
        texts_in = isinstance(input, str) or (
            isinstance(input, Sequence) and bool(input) and all(isinstance(x, str) for x in input)
        )
        if return_type == "str" or (return_type == "input" and texts_in):
            # A text prompt answers with itself plus the new text (no BOS the tokenizer added);
            # token prompts are decoded whole.
            prompts = [input] if isinstance(input, str) else list(input) if texts_in else None
            if prompts is not None:
                texts = [p + s.text for p, s in zip(prompts, sequences)]
            else:
                texts = [self.to_string(s.all_tokens) for s in sequences]
            return texts[0] if len(texts) == 1 and (isinstance(input, str) or not texts_in) else texts
        if return_type not in ("input", "tokens"):
            raise ValueError(f"return_type must be 'input', 'str', 'tokens' or 'sequences', got {return_type!r}")
        rows = [s.all_tokens for s in sequences]
        return rows[0][None, :] if len(rows) == 1 else rows

    # ---- analyses (server-side; definitions in docs/methods.md) ----

    def to_single_token(self, token: TokenSpec) -> int:
        """A token id: an int passes through; a string must tokenize to exactly one token."""
        if isinstance(token, str):
            response = self._transport.tokenize(pb.TokenizeRequest(model=self.name, text=token, prepend_bos=False))
            if len(response.ids) != 1:
                raise ValueError(f"{token!r} is {len(response.ids)} tokens {list(response.str_tokens)}, not one")
            return int(response.ids[0])
        if not _is_int(token):
            raise TypeError(f"a token must be an int id or a one-token string, got {token!r}")
        (token,) = _token_row([token], "token")
        return int(token)

    def _metric_proto(self, metric: Metric) -> "pb.PatchingMetric":
        if isinstance(metric, LogitDiff):
            return pb.PatchingMetric(kind=pb.PatchingMetric.LOGIT_DIFF,
                                     token_a=self.to_single_token(metric.token_a),
                                     token_b=self.to_single_token(metric.token_b))
        if isinstance(metric, LogProb):
            return pb.PatchingMetric(kind=pb.PatchingMetric.LOG_PROB, token_a=self.to_single_token(metric.token))
        if isinstance(metric, Loss) or metric is Loss:
            return pb.PatchingMetric(kind=pb.PatchingMetric.LOSS)
        raise TypeError(f"metric must be LogitDiff(a, b), LogProb(token) or Loss(), got {metric!r}")

    def patching_sweep(
        self,
        clean: Inputs,
        corrupted: Inputs,
        kind: str = "resid_pre",
        metric: Metric = Loss(),
        *,
        normalized: bool = False,
        max_rows_per_pass: int = 0,
        method: str = "exact",
        sae: Optional[str] = None,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> PatchingResult:
        """Activation patching over every cell of a sweep, as transformer_lens.patching
        defines it, run on the server as a few batched forward passes (or, with
        ``method="attribution"``, estimated: see ``attribution_patching``).

        For each cell, the corrupted input runs with that one activation replaced by its value
        in the clean run, and the metric is read from the patched logits (averaged over the
        prompt pairs). Clean and corrupted rows pair up and must all have the same length.

        Args:
            clean, corrupted: inputs as for ``run`` (same shape).
            kind: "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out" ([layer, pos]);
                "head_out_all_pos" ([layer, head]), "head_out_by_pos" ([layer, pos, head]) at
                hook_z; "q_all_pos" ([layer, head]), "k_all_pos", "v_all_pos" ([layer, kv_head]);
                "pattern_all_pos" ([layer, head]: the head's whole hook_pattern);
                "mlp_post_all_pos" ([layer, neuron]: one neuron of mlp.hook_post everywhere);
                "sae_features" ([pos, feature] of the SAE ``sae``, spliced in at its hook with
                the error term, whose node is the last feature index, d_sae;
                ``method="attribution"`` only).
            metric: ``LogitDiff(a, b)``, ``LogProb(token)`` or ``Loss()``; tokens as ids or
                one-token strings.
            normalized: make ``values`` (m - m_corrupted) / (m_clean - m_corrupted).
            max_rows_per_pass: rows per forward pass (0: the server's default).
            method: "exact" or "attribution".
        """
        name, kind_enum = sweep_kind(kind)
        if method not in PATCHING_METHODS:
            raise ValueError(f"method must be one of {', '.join(PATCHING_METHODS)}; got {method!r}")
        request = pb.PatchingSweepRequest(
            model=self.name,
            clean=build_inputs(clean, prepend_bos),
            corrupted=build_inputs(corrupted, prepend_bos),
            kind=kind_enum,
            metric=self._metric_proto(metric),
            max_rows_per_pass=int(max_rows_per_pass),
            method=PATCHING_METHODS[method],
            sae=sae or "",
        )
        response = self._transport.patching_sweep(request, timeout=timeout)
        raw = decode_array(response.values)
        norm = decode_array(response.normalized)
        assert raw is not None and norm is not None
        return PatchingResult(
            kind=name,
            values=norm if normalized else raw,
            dim_names=tuple(response.values.dim_names),
            raw=raw,
            normalized=norm,
            clean_metric=float(response.clean_metric),
            corrupted_metric=float(response.corrupted_metric),
            forward_passes=int(response.forward_passes),
            seconds=float(response.seconds),
            method=method,
            backward_passes=int(response.backward_passes),
        )

    def attribution_patching(
        self,
        clean: Inputs,
        corrupted: Inputs,
        kind: str = "resid_pre",
        metric: Metric = Loss(),
        *,
        normalized: bool = False,
        sae: Optional[str] = None,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> PatchingResult:
        """Attribution patching (Nanda; Kramár et al., AtP): the whole ``patching_sweep`` of
        ``kind`` estimated from two forward passes and one backward pass. Each cell's effect is
        the first-order estimate sum over its elements of (clean - corrupted) * d metric / d
        activation, the gradient taken on the corrupted run; ``values`` is m_corrupted plus it
        (or, ``normalized``, it over m_clean - m_corrupted), so the result compares cell by
        cell with the exact sweep. ``kind="sae_features"`` with ``sae=NAME`` estimates patching
        each feature of that SAE at each position ([pos, d_sae + 1]; Marks et al.'s sparse
        feature circuits), the SAE spliced in with the error term, and the error term itself
        as a node: column d_sae, (e_clean - e_corrupted) . d metric / d e.
        """
        return self.patching_sweep(clean, corrupted, kind, metric, normalized=normalized,
                                   method="attribution", sae=sae, prepend_bos=prepend_bos,
                                   timeout=timeout)

    def logit_lens(
        self,
        input: Inputs,
        top_k: int = 5,
        target_tokens: Optional[Sequence[TokenSpec]] = None,
        *,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> LogitLensResult:
        """The logit lens at every layer and position: TransformerLens
        ``cache.accumulated_resid(apply_ln=True)`` through the unembedding, log-softmaxed.

        Returns the top ``top_k`` tokens and their log-probs, and the log-probs of
        ``target_tokens`` (ids or one-token strings), each [layer, batch, pos, .].
        """
        if not _is_int(top_k) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        targets = [self.to_single_token(t) for t in (target_tokens or [])]
        response = self._transport.logit_lens(
            pb.LogitLensRequest(model=self.name, inputs=build_inputs(input, prepend_bos), top_k=int(top_k),
                                target_tokens=targets),
            timeout=timeout,
        )
        top_log_probs = decode_array(response.top_log_probs)
        top_tokens = decode_array(response.top_tokens)
        assert top_log_probs is not None and top_tokens is not None
        return LogitLensResult(
            labels=tuple(response.labels),
            top_log_probs=top_log_probs,
            top_tokens=top_tokens,
            target_tokens=tuple(targets),
            target_log_probs=decode_array(response.target_log_probs) if targets else None,
        )

    def gradients(
        self,
        input: Inputs,
        metric: GradientMetric,
        hooks: Union[str, Sequence[str]],
        *,
        position: int = -1,
        interventions: Interventions = None,
        saes: Splices = None,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> GradientResult:
        """Gradients of ``metric`` of each row's logits at ``position`` with respect to the
        activations at ``hooks`` (names or globs such as ``"blocks.*.hook_resid_pre"``), as
        TransformerLens's backward hooks give them (torch autograd); docs/gradients.md.
        ``interventions`` (as ``run``'s) edit the forward pass and the backward goes through
        them: a hook's gradient is the one at its edited value, an element an edit zeroes,
        sets or patches passes nothing upstream, and a ``ProjectionCap`` passes it where it did
        not clamp and projects it off its direction where it did; edits of attention scores and
        patterns are differentiated the same way. ``saes`` (as ``run``'s) splice SAEs in, with their
        feature edits: the gradient goes through each as torch autograd goes through sae_lens's
        SAE (through the features only; its error term carries none). A splice's points are
        hooks too: ``"blocks.1.hook_resid_pre.hook_sae_acts_post"`` (or ``.hook_sae_*``) gives
        the gradient at its feature activations (after its edits), ``hook_sae_input``,
        ``acts_pre`` and ``recons`` likewise; ``hook_sae_error`` and ``hook_sae_output`` have
        the hook's own gradient.

        ``metric``: ``LogitDiff(a, b)``, ``LogProb(token)`` or ``Logit(token)``, tokens as ids or
        one-token strings, or ``Loss()``; or an activation: ``Direction(hook, vector)`` (a dot
        product at a hook) or ``SaeFeature(sae, feature)``. ``position`` counts from 0, negative
        from the end (-1: the last token of each row). Rows may differ in length (right-padded; 0 gradient at the padding).
        Returns a ``GradientResult``:
        ``result.metric`` [batch] and ``result["blocks.0.hook_resid_pre"]`` in the hook's
        shape; row b's gradient is that of row b's own metric.
        """
        proto_inputs = build_inputs(input, prepend_bos)
        request = pb.GradientsRequest(
            model=self.name, inputs=proto_inputs,
            metric=gradient_metric_proto(metric, position, self.to_single_token),
            hooks=hook_names(hooks),
            interventions=intervention_protos(interventions, _batch_size(proto_inputs)),
            sae_splices=splice_protos(saes))
        return GradientResult.from_proto(self._transport.gradients(request, timeout=timeout))

    def integrated_gradients(
        self,
        input: Inputs,
        metric: GradientMetric,
        hook: str = "hook_embed",
        *,
        steps: int = 20,
        baseline=None,  # noqa: ANN001 - array-like
        position: int = -1,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> IntegratedGradientsResult:
        """Integrated gradients (Sundararajan et al. 2017) of ``metric`` at one editable
        ``hook`` (default: the token embeddings): (x - x') * the mean of d metric / d hook over
        ``steps`` midpoints of the straight path from the baseline x' to the input's value x,
        the hook's output replaced along it. ``baseline``: None (zeros), a [d] vector for every
        row and position, or an array of the hook's full shape. Rows and metrics as for
        ``gradients``. ``result.completeness_gap`` checks the sum against m(x) - m(x')."""
        return self._integrated_gradients(input, metric, hook, "integrated_gradients", steps,
                                          baseline, position, prepend_bos, timeout)

    def input_x_gradient(
        self,
        input: Inputs,
        metric: GradientMetric,
        hook: str = "hook_embed",
        *,
        baseline=None,  # noqa: ANN001 - array-like
        position: int = -1,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> IntegratedGradientsResult:
        """Input x gradient: (x - x') * d metric / d hook at the input (one backward pass);
        arguments as ``integrated_gradients``."""
        return self._integrated_gradients(input, metric, hook, "input_x_gradient", 0, baseline,
                                          position, prepend_bos, timeout)

    def jacobian(
        self,
        input: Inputs,
        in_hook: str,
        out_hook: str,
        *,
        in_positions: Union[int, Sequence[int]] = -1,
        out_positions: Union[int, Sequence[int]] = -1,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> JacobianResult:
        """The Jacobian of ``out_hook`` (a token activation: the residual stream, attn_out,
        mlp_out, hook_q/k/v/z, the MLP's pre/post, the embeddings) at ``out_positions`` with
        respect to ``in_hook`` (any per-token hook at or below it) at
        ``in_positions``, per row: ``result.jacobian`` [batch, out, in], torch's
        ``jacrev`` of the forward pass from one hook to the other. Positions: one int for every
        row or one per row; negative counts from each row's last real token. Rows may differ in
        length. What linear relational embeddings fit (``glassbox.lre``)."""
        request = pb.JacobianRequest(
            model=self.name, inputs=build_inputs(input, prepend_bos), in_hook=in_hook,
            in_positions=positions_per_row(in_positions, "in_positions"), out_hook=out_hook,
            out_positions=positions_per_row(out_positions, "out_positions"))
        return JacobianResult.from_proto(in_hook, out_hook, self._transport.jacobian(request, timeout=timeout))

    def _integrated_gradients(self, input: Inputs, metric: GradientMetric, hook: str, method: str,
                              steps: int, baseline, position: int,  # noqa: ANN001
                              prepend_bos: Optional[bool],
                              timeout: Optional[float]) -> IntegratedGradientsResult:
        if not isinstance(hook, str) or not hook:
            raise ValueError(f"hook must be one hook name, e.g. 'hook_embed', got {hook!r}")
        if not _is_int(steps) or (method == "integrated_gradients" and not 1 <= steps <= 1024):
            raise ValueError(f"steps must be an int in [1, 1024], got {steps!r}")
        request = pb.IntegratedGradientsRequest(
            model=self.name, inputs=build_inputs(input, prepend_bos),
            metric=gradient_metric_proto(metric, position, self.to_single_token), hook=hook,
            method=(pb.IntegratedGradientsRequest.INTEGRATED_GRADIENTS
                    if method == "integrated_gradients"
                    else pb.IntegratedGradientsRequest.INPUT_X_GRADIENT),
            steps=int(steps), baseline=baseline_array(baseline))
        response = self._transport.integrated_gradients(request, timeout=timeout)
        return IntegratedGradientsResult.from_proto(hook, method, response)

    def direct_logit_attribution(
        self,
        input: Inputs,
        token: TokenSpec,
        minus_token: Optional[TokenSpec] = None,
        position: int = -1,
        *,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> DirectLogitAttributionResult:
        """Direct logit attribution of the final residual at ``position`` (negative counts from
        each row's last real token) to ``token``'s logit, or to the logit difference
        ``token - minus_token``: TransformerLens ``cache.logit_attrs`` with the cached
        final-norm scale, per component (embeddings, each head, attention biases, each MLP).
        """
        if not _is_int(position):
            raise TypeError(f"position must be an int, got {position!r}")
        token_id = self.to_single_token(token)
        minus_id = None if minus_token is None else self.to_single_token(minus_token)
        request = pb.DirectLogitAttributionRequest(
            model=self.name, inputs=build_inputs(input, prepend_bos), position=int(position), token=token_id
        )
        if minus_id is not None:
            request.minus_token = minus_id
        response = self._transport.direct_logit_attribution(request, timeout=timeout)
        attributions = decode_array(response.attributions)
        logit = decode_array(response.logit)
        constant = decode_array(response.constant)
        assert attributions is not None and logit is not None and constant is not None
        return DirectLogitAttributionResult(
            labels=tuple(response.labels),
            attributions=attributions,
            logit=logit,
            constant=constant,
            token=token_id,
            minus_token=minus_id,
            position=int(position),
        )

    def attention_norms(
        self,
        input: Inputs,
        layers: IndexSpec = None,
        *,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> AttentionNormsResult:
        """Attention weights beside attention norms (Kobayashi et al., 2020) for ``layers``
        (None: all): per layer, alpha [batch, head, q, k], ||alpha f_h(u_j)|| per head and
        ||sum_h alpha f_h(u_j)|| [batch, q, k]. Keyed by layer index."""
        chosen = list(indices(layers, "layers"))
        response = self._transport.attention_norms(
            pb.AttentionNormsRequest(model=self.name, inputs=build_inputs(input, prepend_bos), layers=chosen),
            timeout=timeout,
        )
        out = {}
        for layer in response.layers:
            weights = decode_array(layer.weights)
            head_norms = decode_array(layer.head_norms)
            layer_norms = decode_array(layer.layer_norms)
            assert weights is not None and head_norms is not None and layer_norms is not None
            out[int(layer.layer)] = AttentionNormsLayer(int(layer.layer), weights, head_norms, layer_norms)
        return AttentionNormsResult(out)

    def detect_heads(
        self,
        n: int = 20,
        batch: int = 16,
        seed: int = 0,
        prefix: Optional[Sequence[int]] = None,
        interventions: Interventions = None,
    ) -> HeadDetection:
        """Induction, duplicate-token and previous-token scores of every head (docs/methods.md).

        One run over ``batch`` rows of ``prefix`` + n random tokens + the same n again
        (``prefix``: by default what the tokenizer puts before a text, e.g. BOS), capturing each
        layer's hook_pattern; also the mean loss on each copy. ``interventions`` apply to that
        run (``glassbox.zero_heads(...)`` ablates heads). See ``HeadDetection``.
        """
        if prefix is None:
            prefix = self._bos_prefix()
        tokens = repeated_random_tokens(self.cfg.d_vocab, n, batch, seed, prefix)
        result = self.run(tokens, captures="blocks.*.attn.hook_pattern", interventions=interventions,
                          logits="none", loss_per_token=True)
        patterns = [result.cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(self.cfg.n_layers)]
        assert result.loss_per_token is not None
        return score_heads(tokens, patterns, result.loss_per_token, n, len(prefix))

    def _bos_prefix(self) -> List[int]:
        """What the tokenizer's post-processor puts in front of a text (HF add_special_tokens)."""
        if not self.cfg.has_tokenizer:
            return []
        return [int(i) for i in self.to_tokens("", prepend_bos=True).reshape(-1)]

    # ---- sparse autoencoders ----

    def saes(self) -> List[SaeInfo]:
        """The SAEs the server attached to this model (``glassboxd --sae NAME=PATH@MODEL``)."""
        response = self._transport.list_saes(pb.ListSaesRequest(model=self.name))
        return [SaeInfo.from_proto(s) for s in response.saes]

    def sae_encode(
        self,
        input: Inputs,
        sae: str,
        top_k: int = 0,
        *,
        dense: bool = False,
        prepend_bos: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> SaeEncoding:
        """Runs the model up to SAE ``sae``'s hook and encodes every real token there.

        ``top_k``: 0 keeps every nonzero feature (feature order), k > 0 the k largest per token
        (descending). ``dense``: also return [batch, pos, d_sae]. ``stats`` (MSE, explained
        variance, L0) describe the full encoding's reconstruction over the real tokens.
        """
        if not _is_int(top_k) or top_k < 0:
            raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
        request = pb.SaeEncodeRequest(sae=sae, model=self.name, inputs=build_inputs(input, prepend_bos),
                                      top_k=int(top_k), dense=bool(dense))
        return SaeEncoding.from_proto(sae, self._transport.sae_encode(request, timeout=timeout))

    def sae_decode(self, sae: str, acts: Any, *, timeout: Optional[float] = None) -> np.ndarray:
        """acts W_dec + b_dec: of an SaeEncoding ([tokens, d_in], one per real token) or of
        dense activations [..., d_sae] ([..., d_in]). SAEs whose normalisation depends on the
        input cannot decode bare activations (FailedPrecondition)."""
        dense = not isinstance(acts, SaeEncoding)
        leading = np.shape(_to_numpy(acts))[:-1] if dense else None
        response = self._transport.sae_decode(decode_request(sae, _to_numpy(acts)), timeout=timeout)
        vectors = decode_array(response.vectors)
        assert vectors is not None
        return vectors.reshape(*leading, vectors.shape[-1]) if leading is not None else vectors

    # ---- dataset scans (server-side jobs; definitions in docs/scans.md) ----

    def start_scan(
        self,
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
        timeout: Optional[float] = None,
    ) -> ScanJob:
        """Starts a dataset scan: a job on the server that runs ``corpus`` through the model at
        a lower priority than interactive requests and keeps, for every target, its top
        contexts, sampled contexts, quantile samples, statistics and a histogram. Returns at
        once with a ``ScanJob``; ``job.wait()`` follows it, ``job.all_results()`` reads it.

        Args:
            corpus: a path (str) relative to the server's ``--corpus_dir`` (.jsonl: a JSON
                object per line, its ``text_field``; .txt: a document per line; .npy: int32 or
                int64 token ids, 1-D a stream, 2-D contexts of ``context_length``); or
                documents uploaded with the request: a list of texts, or token ids (a list of
                ints is one document; a list of token lists or a 2-D array, one per row).
                Documents are tokenized without special tokens and joined by BOS; each context
                is BOS + the next ``context_length - 1`` tokens; a partial last context is
                dropped. With ``no_bos`` contexts are plain runs of ``context_length`` tokens
                (so 2-D rows of that length are scanned exactly as given).
            neurons: ``{hook: indices}`` (an int, a list, or None for every index of the
                hook's last axes), a hook name or a list of them (every neuron), e.g.
                ``{"blocks.1.mlp.hook_post": [0, 5]}``.
            sae_features: ``{sae: features or None}``, an SAE name or names (``Model.saes()``).
            directions: ``{name: (hook, vector)}``: the activation is the hook's value · vector.
            heads: ``Heads(layer, heads=None)``, or a list of them: each head's output norm, or
                with ``key_position`` / ``key_offset`` the attention it pays to that key (e.g.
                ``Heads(1, key_offset=1)``: every head of layer 1, attention to the previous
                token). No logit effects.
            context_length: tokens per context, BOS included (at most ``cfg.n_ctx``).
            max_contexts: scan only the first contexts (None: all, up to the server's
                ``--scan_max_contexts``).
            no_bos: no BOS: position 0 is counted like the others.
            top_k, random_k: top records (value descending, ties to the lower context) and
                uniformly sampled records per target; 0: none.
            quantile_bins, per_quantile_k: equal-width bins over (0, max] of the contexts'
                max activation, and the records sampled in each; 0 bins: none.
            histogram_bins: bins over the nonzero activations; 0: none. Quantiles and the
                histogram cost a second pass over the corpus.
            window_before, window_after: tokens a record keeps before and after its max (None:
                to the context's edge).
            logit_k: the tokens each target's output direction promotes and suppresses most
                (``ScanTargetResult.top_logits`` / ``bottom_logits``); 0: none.
            seed: the sampled records' seed.
            batch_contexts: contexts per forward pass (None: the server's choice).

        Targets are numbered neurons first, then SAE features, then directions, then heads, each
        in the order given; ``ScanTargetResult.index`` is that number. Errors come at once:
        ``NotFound`` (a corpus file, an SAE), ``InvalidArgument`` (a path outside the corpus
        directory, a corpus that gives no whole context, a line that is not UTF-8, a bad hook
        or index), ``FailedPrecondition`` (a path on a server without ``--corpus_dir``),
        ``ResourceExhausted`` (the server's scan limits).
        """
        request = scan_request(
            self.name, corpus, neurons=neurons, sae_features=sae_features, directions=directions,
            heads=heads, context_length=context_length, max_contexts=max_contexts, text_field=text_field,
            no_bos=no_bos, top_k=top_k, random_k=random_k, quantile_bins=quantile_bins,
            per_quantile_k=per_quantile_k, histogram_bins=histogram_bins,
            window_before=window_before, window_after=window_after, logit_k=logit_k, seed=seed,
            batch_contexts=batch_contexts,
        )
        info = self._transport.start_scan(request, timeout=timeout)
        return ScanJob(self._transport, info.job_id)

    def score_explanation(
        self,
        excerpts: Sequence[ScoredExcerpt],
        *,
        neuron: Optional[Tuple[str, int]] = None,
        sae_feature: Optional[Tuple[str, int]] = None,
        direction: Optional[Tuple[str, Any]] = None,
        head: Optional[Heads] = None,
        ablation: bool = False,
        mean_activation: Optional[float] = None,
        timeout: Optional[float] = None,
    ) -> ExplanationScore:
        """Scores an explanation of one target by its simulated activations on ``excerpts``
        (Bills et al. 2023; docs/methods.md): the correlation of the simulation with the true
        activations, and with ``ablation`` (a neuron, SAE feature or direction) the ablation
        score (the unit set to the calibrated simulation against set to ``mean_activation``, by
        default the true activations' mean). Name one target: ``neuron=(hook, index)``,
        ``sae_feature=(sae, feature)``, ``direction=(hook, vector)`` or ``head=Heads(layer, head, ...)``
        (one head)."""
        request = score_request(self.name, excerpts, neuron=neuron, sae_feature=sae_feature,
                                direction=direction, head=head, ablation=ablation,
                                mean_activation=mean_activation)
        return ExplanationScore.from_proto(self._transport.score_explanation(request, timeout=timeout), bool(ablation))

    def _captures(self, spec: NamesFilter, stop_at_layer: Optional[int]) -> List[Capture]:
        if spec is None:
            return []
        if isinstance(spec, (str, Capture)):
            return [_as_capture(spec)]
        if callable(spec):
            return [Capture(name) for name in self._reachable_hooks(stop_at_layer) if spec(name)]
        return [_as_capture(item) for item in spec]

    def _reachable_hooks(self, stop_at_layer: Optional[int]) -> List[str]:
        """Hook names in forward order that a run stopping before ``stop_at_layer`` reaches."""
        hooks = self.info.hook_points
        if stop_at_layer is None:
            return [h.name for h in hooks]
        names = []
        for hook in hooks:
            if hook.layer is None:
                # Model-level hooks before the first block (embeddings) are reached; those after
                # the last block (ln_final) are not.
                if any(h.layer is not None for h in hooks[: hooks.index(hook)]):
                    continue
            elif hook.layer >= stop_at_layer:
                continue
            names.append(hook.name)
        return names


def _all_hooks(name: str) -> bool:
    return True


def _check_unique_names(header: RunHeader) -> None:
    seen = set()
    for t in header.tensors:
        if t.name in seen:
            raise ValueError(
                f"two captures produced {t.name!r}; run() keys the cache by hook name, so capture "
                "each hook once per run (or use stream(), which yields every tensor in order)"
            )
        seen.add(t.name)


def _batch_size(inputs: "pb.Inputs") -> int:
    return len(inputs.texts) if inputs.texts else len(inputs.token_ids)


def _output_names(outputs: "pb.Outputs") -> frozenset:
    """Names of the output tensors a request asks for (they stream after the captures)."""
    names = set()
    if outputs.logits != pb.LOGITS_NONE:
        names.add("logits")
    if outputs.logits == pb.LOGITS_TOP_K:
        names.add("logits.indices")
    if outputs.loss_per_token:
        names.add("loss_per_token")
    if outputs.target_tokens:
        names.add("target_log_probs")
    return frozenset(names)
