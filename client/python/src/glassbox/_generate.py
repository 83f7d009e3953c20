"""Generation: the Generate RPC's stream as Python objects (``Model.generate_stream``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ._proto.glassbox.v1 import glassbox_pb2 as pb
from ._stream import decode_tensor
from ._transport import ServerStream

_FINISH = {
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_STOP_TOKEN: "stop_token",
    pb.FINISH_REASON_CONTEXT: "context",
    pb.FINISH_REASON_STOP_STRING: "stop_string",
}


@dataclass(frozen=True)
class GenerationStep:
    """One step: the new token of each row (-1 for rows that already finished)."""

    step: int
    tokens: Tuple[int, ...]
    #: log p(token) under the model's own distribution (raw logits), per row.
    logprobs: Tuple[float, ...]
    #: The text each token adds (empty without a tokenizer, or while a character is incomplete).
    texts: Tuple[str, ...]
    #: Per row, the ``top_logprobs`` most likely (token, log-prob) pairs, most likely first.
    top: Tuple[Tuple[Tuple[int, float], ...], ...] = ()
    #: The captures of this step by hook name (``"<hook>.indices"`` for top-k indices):
    #: [batch, 1, ...] at the position that chose this step's token ([batch, head, 1, key_pos]
    #: for patterns and scores); at step 0 with ``capture_prompt`` every prompt position,
    #: right-padded. Rows that already finished hold zeros.
    captures: Dict[str, np.ndarray] = field(default_factory=dict)
    #: True for the steps of the continuation without edits (``include_unsteered``).
    unsteered: bool = False


@dataclass(frozen=True)
class GeneratedSequence:
    prompt: np.ndarray  # int64 prompt ids, as they ran
    tokens: np.ndarray  # int64 new ids only
    text: str  # the new text ("" without a tokenizer)
    finish_reason: str  # "length", "stop_token", "stop_string" or "context"

    @property
    def all_tokens(self) -> np.ndarray:
        """The prompt followed by the continuation."""
        return np.concatenate([self.prompt, self.tokens])


def sampling_proto(
    do_sample: bool,
    temperature: float,
    top_k: Optional[int],
    top_p: Optional[float],
    min_p: Optional[float],
    repetition_penalty: Optional[float],
    freq_penalty: float,
    seed: Optional[int],
) -> "pb.Sampling":
    """TransformerLens's keyword arguments as a Sampling message (greedy unless do_sample)."""
    if not do_sample:
        temperature = 0.0
    elif not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature!r}")
    message = pb.Sampling(
        temperature=float(temperature),
        top_k=int(top_k or 0),
        min_p=float(min_p or 0.0),
        frequency_penalty=float(freq_penalty),
        seed=int(seed or 0),
    )
    if top_p is not None:
        message.top_p = float(top_p)
    if repetition_penalty is not None:
        message.repetition_penalty = float(repetition_penalty)
    return message


class GenerationStream(Iterator[GenerationStep]):
    """The steps of one generation as they arrive; ``sequences`` once it is exhausted.

    Leaving a ``with`` block early (or calling ``cancel()``) stops the generation on the server.
    """

    def __init__(self, responses: ServerStream["pb.GenerateResponse"]) -> None:
        self._responses = responses
        first = next(responses)
        if first.WhichOneof("kind") != "header":
            raise RuntimeError("malformed Generate stream: it must start with a header")
        self.model: str = first.header.model
        self.prompts: List[np.ndarray] = [np.asarray(t.ids, dtype=np.int64) for t in first.header.tokens]
        self.sequences: Optional[List[GeneratedSequence]] = None
        #: With ``include_unsteered``: the continuations without edits, from the same seed.
        self.unsteered_sequences: Optional[List[GeneratedSequence]] = None
        #: With ``capture_at_end``: the captures over each finished sequence (prompt and
        #: continuation, right-padded), by hook name; ``unsteered_captures`` for the other one.
        self.final_captures: Dict[str, np.ndarray] = {}
        self.unsteered_captures: Dict[str, np.ndarray] = {}
        self.seconds: float = 0.0

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> GenerationStep:
        for message in self._responses:
            kind = message.WhichOneof("kind")
            if kind == "step":
                s = message.step
                top = tuple(tuple(zip(t.tokens, t.logprobs)) for t in s.top)
                captures = {t.name: decode_tensor(t.dtype, t.data, tuple(t.shape)) for t in s.captures}
                return GenerationStep(s.step, tuple(s.tokens), tuple(s.logprobs), tuple(s.texts), top,
                                      captures, s.unsteered)
            if kind == "final_captures":
                f = message.final_captures
                captures = {t.name: decode_tensor(t.dtype, t.data, tuple(t.shape)) for t in f.captures}
                if f.unsteered:
                    self.unsteered_captures = captures
                else:
                    self.final_captures = captures
                continue
            if kind == "summary":
                self.sequences = self._sequences(message.summary.sequences)
                if message.summary.unsteered_sequences:
                    self.unsteered_sequences = self._sequences(message.summary.unsteered_sequences)
                self.seconds = message.summary.timings.total_seconds
            else:
                raise RuntimeError(f"malformed Generate stream: unexpected {kind}")
        raise StopIteration

    def _sequences(self, sequences: Sequence["pb.GeneratedSequence"]) -> List[GeneratedSequence]:
        return [
            GeneratedSequence(
                prompt=prompt,
                tokens=np.asarray(seq.tokens, dtype=np.int64),
                text=seq.text,
                finish_reason=_FINISH.get(seq.finish_reason, "unspecified"),
            )
            for prompt, seq in zip(self.prompts, sequences)
        ]

    def cancel(self) -> None:
        self._responses.cancel()

    def __enter__(self) -> "GenerationStream":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sequences is None:
            self.cancel()


def generation_request(
    model: str,
    inputs: "pb.Inputs",
    max_new_tokens: int,
    sampling: "pb.Sampling",
    stop_at_eos: bool,
    stop_tokens: Sequence[int],
    top_logprobs: int,
    stop_strings: Sequence[str] = (),
    capture_prompt: bool = False,
    include_unsteered: bool = False,
    capture_at_end: bool = False,
) -> "pb.GenerateRequest":
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    return pb.GenerateRequest(
        model=model,
        inputs=inputs,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        stop_at_eos=bool(stop_at_eos),
        stop_token_ids=[int(t) for t in stop_tokens],
        top_logprobs=int(top_logprobs),
        stop_strings=[str(x) for x in ([stop_strings] if isinstance(stop_strings, str) else stop_strings)],
        capture_prompt=bool(capture_prompt),
        include_unsteered=bool(include_unsteered),
        capture_at_end=bool(capture_at_end),
    )
