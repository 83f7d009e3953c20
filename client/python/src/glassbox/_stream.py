"""Reassembles a Run response stream (header, tensor chunks, summary) into numpy arrays."""

from __future__ import annotations

import math
from typing import Any, Dict, FrozenSet, Iterator, Optional, Tuple

import numpy as np

from ._errors import GlassboxError, MalformedStream
from ._proto.glassbox.v1 import glassbox_pb2 as pb
from ._transport import ServerStream
from ._types import CachedRun, RunHeader, RunSummary, TensorInfo, Timings, dtype_name

# Little-endian wire layouts. bf16 travels as the top 16 bits of a float32.
_WIRE_DTYPES: Dict[int, np.dtype] = {
    pb.DTYPE_F32: np.dtype("<f4"),
    pb.DTYPE_F16: np.dtype("<f2"),
    pb.DTYPE_BF16: np.dtype("<u2"),
    pb.DTYPE_I32: np.dtype("<i4"),
}

# nbytes comes from the server: preallocate up to this much, grow past it as data arrives.
_MAX_PREALLOCATE = 1 << 30


def decode_tensor(dtype: int, data: Any, shape: Tuple[int, ...]) -> np.ndarray:
    """Decodes little-endian wire bytes into an array of ``shape``.

    f32 -> float32, f16 -> float16, i32 -> int32, and bf16 -> float32: each bf16 value is
    widened exactly by shifting its 16 bits into the top of a float32.
    The result is writable when ``data`` is a bytearray.
    """
    wire = _WIRE_DTYPES.get(dtype)
    if wire is None:
        raise ValueError(f"unknown wire dtype {dtype}")
    raw = np.frombuffer(data, dtype=wire)
    if dtype == pb.DTYPE_BF16:
        values = (raw.astype(np.uint32) << 16).view(np.float32)
    else:
        values = raw.astype(wire.newbyteorder("="), copy=False)
    return values.reshape(shape)


class _Slot:
    __slots__ = ("info", "dtype", "buffer", "received", "complete")

    def __init__(self, info: TensorInfo, dtype: int) -> None:
        self.info = info
        self.dtype = dtype
        self.buffer = bytearray(info.nbytes if info.nbytes <= _MAX_PREALLOCATE else 0)
        self.received = 0
        self.complete = False


class RunStreamDecoder:
    """Checks a Run stream against the contract and assembles its tensors.

    Feed it RunResponse messages in order; ``feed`` returns ``(info, array)`` whenever a tensor
    completes. Any violation raises MalformedStream.
    """

    def __init__(self) -> None:
        self.header: Optional[RunHeader] = None
        self.summary: Optional[RunSummary] = None
        self._slots: Dict[int, _Slot] = {}
        self._incomplete = 0

    def feed(self, response: "pb.RunResponse") -> Optional[Tuple[TensorInfo, np.ndarray]]:
        if self.summary is not None:
            raise MalformedStream("a message arrived after the summary")
        kind = response.WhichOneof("kind")
        if kind == "header":
            self._add_header(response.header)
            return None
        if kind == "chunk":
            return self._add_chunk(response.chunk)
        if kind == "summary":
            self._add_summary(response.summary)
            return None
        raise MalformedStream("a RunResponse with no header, chunk or summary")

    def finish(self) -> None:
        """Called when the server ends the stream with OK."""
        if self.header is None:
            raise MalformedStream("the stream ended before its header")
        if self.summary is None:
            raise MalformedStream("the stream ended without a summary")

    def _add_header(self, header: "pb.Header") -> None:
        if self.header is not None:
            raise MalformedStream("a second header")
        if len(header.tokens) != len(header.sequence_lengths):
            raise MalformedStream(
                f"header: {len(header.tokens)} token rows but {len(header.sequence_lengths)} "
                "sequence lengths"
            )
        for row, (tokens, length) in enumerate(zip(header.tokens, header.sequence_lengths)):
            if len(tokens.ids) != length:
                raise MalformedStream(
                    f"header: row {row} has {len(tokens.ids)} tokens but sequence length {length}"
                )
        infos = []
        for t in header.tensors:
            where = f'header: tensor "{t.name}" (id {t.id})'
            if t.id in self._slots:
                raise MalformedStream(f"{where}: the id is listed twice")
            wire = _WIRE_DTYPES.get(t.dtype)
            if wire is None:
                raise MalformedStream(f"{where}: unknown dtype {t.dtype}")
            if any(d < 0 for d in t.shape):
                raise MalformedStream(f"{where}: negative dimension in shape {list(t.shape)}")
            expected = math.prod(t.shape) * wire.itemsize
            if t.nbytes != expected:
                raise MalformedStream(
                    f"{where}: nbytes {t.nbytes}, but shape {list(t.shape)} of "
                    f"{dtype_name(t.dtype)} needs {expected}"
                )
            if t.dim_names and len(t.dim_names) != len(t.shape):
                raise MalformedStream(
                    f"{where}: {len(t.dim_names)} dim names for {len(t.shape)} dimensions"
                )
            info = TensorInfo(
                name=t.name,
                shape=tuple(int(d) for d in t.shape),
                dim_names=tuple(t.dim_names),
                dtype=dtype_name(t.dtype),
                nbytes=int(t.nbytes),
            )
            self._slots[t.id] = _Slot(info, t.dtype)
            infos.append(info)
        self._incomplete = len(infos)
        self.header = RunHeader(
            model=header.model,
            tokens=tuple(np.asarray(row.ids, dtype=np.int64) for row in header.tokens),
            sequence_lengths=np.asarray(header.sequence_lengths, dtype=np.int64),
            tensors=tuple(infos),
            queue_position=int(header.queue_position),
        )

    def _add_chunk(self, chunk: "pb.TensorChunk") -> Optional[Tuple[TensorInfo, np.ndarray]]:
        if self.header is None:
            raise MalformedStream("a tensor chunk arrived before the header")
        slot = self._slots.get(chunk.capture_id)
        if slot is None:
            raise MalformedStream(
                f"a chunk for capture id {chunk.capture_id}, which the header does not list"
            )
        where = f'tensor "{slot.info.name}" (id {chunk.capture_id})'
        if slot.complete:
            raise MalformedStream(f"{where}: a chunk after its last chunk")
        if chunk.offset != slot.received:
            raise MalformedStream(
                f"{where}: a chunk at byte offset {chunk.offset}, but {slot.received} bytes had arrived"
            )
        size = len(chunk.data)
        end = slot.received + size
        if end > slot.info.nbytes:
            raise MalformedStream(
                f"{where}: a chunk of {size} bytes at offset {slot.received} runs past its "
                f"{slot.info.nbytes} bytes"
            )
        if chunk.last and end != slot.info.nbytes:
            raise MalformedStream(f"{where}: the last chunk ends at byte {end} of {slot.info.nbytes}")
        if len(slot.buffer) >= end:
            slot.buffer[slot.received:end] = chunk.data
        else:
            slot.buffer += chunk.data
        slot.received = end
        if not chunk.last:
            return None
        slot.complete = True
        self._incomplete -= 1
        array = decode_tensor(slot.dtype, slot.buffer, slot.info.shape)
        slot.buffer = bytearray()  # the array owns the bytes now
        return slot.info, array

    def _add_summary(self, summary: "pb.Summary") -> None:
        if self.header is None:
            raise MalformedStream("the summary arrived before the header")
        if self._incomplete:
            missing = [s.info.name for s in self._slots.values() if not s.complete]
            raise MalformedStream(f"the summary arrived before tensors {missing} were complete")
        t = summary.timings
        self.summary = RunSummary(
            timings=Timings(t.queue_seconds, t.forward_seconds, t.total_seconds,
                            batch_requests=int(t.batch_requests) or 1),
            bytes_sent=int(summary.bytes_sent),
            kept=CachedRun.from_proto(summary.kept) if summary.HasField("kept") else None,
        )


class RunStream(Iterator[Tuple[str, np.ndarray]]):
    """The tensors of one Run, yielded as ``(name, array)`` as each one completes.

    Tensors come in forward order (captures as the forward pass produces them), then the
    requested outputs ("logits", "logits.indices", "loss_per_token", "target_log_probs").
    ``header`` (tokens, sequence lengths, every tensor's shape) is available before the first
    tensor; ``summary`` (timings) once the stream is exhausted. Leaving the iteration early
    (``break``, ``close()``, or the ``with`` block) cancels the run on the server.
    """

    def __init__(self, call: "ServerStream[pb.RunResponse]", output_names: FrozenSet[str] = frozenset()) -> None:
        self._call = call
        #: Names of the requested outputs ("logits", ...), which follow the captures.
        self.output_names = output_names
        self._decoder = RunStreamDecoder()
        self._done = False

    @property
    def header(self) -> RunHeader:
        while self._decoder.header is None:
            try:
                self._feed(self._next_response())
            except StopIteration:
                raise RuntimeError("the stream was closed before its header arrived") from None
        return self._decoder.header

    @property
    def summary(self) -> Optional[RunSummary]:
        """Timings and bytes sent; None until the stream has been read to the end."""
        return self._decoder.summary

    @property
    def tensors(self) -> Tuple[TensorInfo, ...]:
        return self.header.tensors

    def __iter__(self) -> "RunStream":
        return self

    def __next__(self) -> Tuple[str, np.ndarray]:
        while True:
            item = self._feed(self._next_response())
            if item is not None:
                return item[0].name, item[1]

    def iter_tensors(self) -> Iterator[Tuple[TensorInfo, np.ndarray]]:
        """Like iterating the stream, but yields each tensor's full TensorInfo (dims, dtype)."""
        while True:
            try:
                response = self._next_response()
            except StopIteration:
                return
            item = self._feed(response)
            if item is not None:
                yield item

    def close(self) -> None:
        """Cancels the run if it is still streaming."""
        if not self._done:
            self._done = True
            self._call.cancel()

    def __enter__(self) -> "RunStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing useful to do
            pass

    def _feed(self, response: "pb.RunResponse") -> Optional[Tuple[TensorInfo, np.ndarray]]:
        try:
            return self._decoder.feed(response)
        except MalformedStream:
            self.close()
            raise

    def _next_response(self) -> "pb.RunResponse":
        if self._done:
            raise StopIteration
        try:
            return next(self._call)
        except StopIteration:
            self._done = True
            self._decoder.finish()
            raise
        except GlassboxError:  # the server failed the call (ServerStream converted the RpcError)
            self._done = True
            raise
