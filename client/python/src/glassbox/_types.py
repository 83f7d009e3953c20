"""Plain, typed descriptions of models, hook points, captures and tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, Literal, Optional, Tuple, Union, cast

import numpy as np

from ._proto.glassbox.v1 import glassbox_pb2 as pb

#: Wire dtype of captured float values. "bf16" arrives as float32 arrays (numpy has no bfloat16).
DTypeName = Literal["f32", "f16", "bf16"]
#: "mean_pos": mean over (query) positions of real tokens; "top_k": k largest along the last
#: axis (values, plus "<hook>.indices"); "norm": L2 norm along the last axis (axis dropped).
ReductionName = Literal["mean_pos", "top_k", "norm"]

_DTYPE_NAMES: Dict[int, str] = {
    pb.DTYPE_UNSPECIFIED: "f32",
    pb.DTYPE_F32: "f32",
    pb.DTYPE_F16: "f16",
    pb.DTYPE_BF16: "bf16",
    pb.DTYPE_I32: "i32",
}
_DTYPE_ENUMS = {"f32": pb.DTYPE_F32, "f16": pb.DTYPE_F16, "bf16": pb.DTYPE_BF16}
_REDUCTION_ENUMS = {
    None: pb.REDUCTION_NONE,
    "mean_pos": pb.REDUCTION_MEAN_POS,
    "top_k": pb.REDUCTION_TOP_K,
    "norm": pb.REDUCTION_NORM,
}


def dtype_name(dtype: int) -> str:
    return _DTYPE_NAMES.get(dtype, f"unknown({dtype})")


@dataclass(frozen=True)
class HookDim:
    """One axis of a hook point. ``size`` is None for per-request axes (batch, pos, ...)."""

    name: str
    size: Optional[int]


@dataclass(frozen=True)
class HookPoint:
    """A TransformerLens hook point: name, layer (None for model-level hooks) and axes."""

    name: str
    layer: Optional[int]
    dims: Tuple[HookDim, ...]

    @property
    def dim_names(self) -> Tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    @property
    def shape(self) -> Tuple[Optional[int], ...]:
        """Axis sizes; None where the size depends on the request."""
        return tuple(d.size for d in self.dims)

    @classmethod
    def from_proto(cls, hp: "pb.HookPoint") -> "HookPoint":
        return cls(
            name=hp.name,
            layer=hp.layer if hp.layer >= 0 else None,
            dims=tuple(HookDim(d.name, d.size if d.size > 0 else None) for d in hp.dims),
        )


@dataclass(frozen=True)
class ModelInfo:
    """What a server says about a model; field names follow TransformerLens's ``cfg``."""

    name: str
    architecture: str  # config.json model_type: "gpt2", "llama", ...
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    dtype: str  # dtype of weights and activations on the server's device
    device: str  # "cpu" or "cuda:0"
    has_tokenizer: bool
    #: Attention and MLP both read ``hook_resid_pre`` (GPT-NeoX); there is no ``hook_resid_mid``.
    parallel_attn_mlp: bool = False
    #: Features of each head that rotate: 0 with learned positions, ``d_head`` unless partial.
    rotary_dim: int = 0
    #: Per layer, how many recent keys (the query included) a query attends to; 0 means all
    #: earlier keys. Empty when no layer has a sliding window.
    attention_windows: Tuple[int, ...] = ()
    #: Gemma-2's tanh soft caps ``cap * tanh(x / cap)`` of the attention scores (before the mask,
    #: so ``hook_attn_scores`` holds capped scores) and of the logits; 0 means none.
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    #: Rotary models: features (2j, 2j + 1) rotate together (GPT-J; TransformerLens's
    #: ``rotary_adjacent_pairs``) instead of (j, j + rotary_dim / 2).
    rotary_adjacent_pairs: bool = False
    #: The rotary base, and Gemma-3's second base of its sliding-window layers (0: one base).
    rope_theta: float = 0.0
    rope_local_theta: float = 0.0
    #: The unembedding adds a bias (GPT-J's ``lm_head``; TransformerLens's ``b_U``).
    unembed_bias: bool = False
    #: Every hook point, in forward order. Empty in ``Client.models()``; ``Client.model(name)``
    #: and ``Client.model_info(name)`` fill it.
    hook_points: Tuple[HookPoint, ...] = ()

    @property
    def hook_names(self) -> Tuple[str, ...]:
        return tuple(h.name for h in self.hook_points)

    def hook_point(self, name: str) -> HookPoint:
        for hook in self.hook_points:
            if hook.name == name:
                return hook
        raise KeyError(name)

    @classmethod
    def from_proto(cls, m: "pb.ModelInfo") -> "ModelInfo":
        return cls(
            name=m.name,
            architecture=m.architecture,
            n_layers=m.n_layers,
            d_model=m.d_model,
            n_heads=m.n_heads,
            n_kv_heads=m.n_kv_heads,
            d_head=m.d_head,
            d_mlp=m.d_mlp,
            d_vocab=m.vocab_size,
            n_ctx=m.n_ctx,
            dtype=dtype_name(m.dtype),
            device=m.device,
            has_tokenizer=m.has_tokenizer,
            parallel_attn_mlp=m.parallel_attn_mlp,
            rotary_dim=m.rotary_dim,
            attention_windows=tuple(m.attention_windows),
            attn_softcap=m.attn_softcap,
            final_softcap=m.final_softcap,
            rotary_adjacent_pairs=m.rotary_adjacent_pairs,
            rope_theta=m.rope_theta,
            rope_local_theta=m.rope_local_theta,
            unembed_bias=m.unembed_bias,
            hook_points=tuple(HookPoint.from_proto(h) for h in m.hook_points),
        )


IndexSpec = Union[None, int, Iterable[int]]


def indices(value: IndexSpec, what: str) -> Tuple[int, ...]:
    """An IndexSpec as a tuple of ints (None: the empty tuple, meaning all); ``what`` names it in errors."""
    if value is None:
        return ()
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{what} must be an int or a sequence of ints, not {type(value).__name__}")
    out = []
    for v in value:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{what} must hold ints, got {v!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class Capture:
    """What to capture at a hook point (a name or a glob such as ``"blocks.*.hook_resid_post"``).

    Args:
        hook: hook name or glob.
        positions: (query) positions to keep; negative counts back from each row's last real
            token (-1 = last real token). None keeps all.
        heads: heads to keep (kv heads for hook_k / hook_v / hook_rot_k). None keeps all.
        layers: layers a glob may match. None keeps all.
        dtype: wire dtype, "f32" (default), "f16" (numpy float16 arrays) or "bf16" (decoded to
            float32 arrays holding the bf16 values exactly).
        reduction: None, "mean_pos", "top_k" (needs ``k``; adds "<hook>.indices") or "norm".
        k: for reduction="top_k".
    """

    hook: str
    positions: IndexSpec = None
    heads: IndexSpec = None
    layers: IndexSpec = None
    dtype: DTypeName = "f32"
    reduction: Optional[ReductionName] = None
    k: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.hook, str) or not self.hook:
            raise TypeError(f"Capture.hook must be a non-empty string, got {self.hook!r}")
        for name in ("positions", "heads", "layers"):
            object.__setattr__(self, name, indices(getattr(self, name), f"Capture.{name}"))
        if self.dtype not in _DTYPE_ENUMS:
            raise ValueError(f"Capture.dtype must be one of {sorted(_DTYPE_ENUMS)}, got {self.dtype!r}")
        if self.reduction not in _REDUCTION_ENUMS:
            raise ValueError(
                "Capture.reduction must be None, 'mean_pos', 'top_k' or 'norm', "
                f"got {self.reduction!r}"
            )
        if self.reduction == "top_k":
            if not isinstance(self.k, (int, np.integer)) or self.k < 1:
                raise ValueError(f"Capture.k must be a positive int for reduction='top_k', got {self.k!r}")
        elif self.k is not None:
            raise ValueError("Capture.k is only meaningful with reduction='top_k'")

    def to_proto(self) -> "pb.Capture":
        return pb.Capture(
            hook=self.hook,
            # __post_init__ made these tuples of ints.
            positions=cast(Tuple[int, ...], self.positions),
            heads=cast(Tuple[int, ...], self.heads),
            layers=cast(Tuple[int, ...], self.layers),
            dtype=_DTYPE_ENUMS[self.dtype],
            reduction=_REDUCTION_ENUMS[self.reduction],
            k=int(self.k or 0),
        )


@dataclass(frozen=True)
class TensorInfo:
    """A tensor announced in a Run stream's header."""

    name: str
    shape: Tuple[int, ...]
    dim_names: Tuple[str, ...]
    dtype: str  # wire dtype: "f32", "f16", "bf16" or "i32"
    nbytes: int


@dataclass(frozen=True)
class RunHeader:
    """The start of a Run stream: the tokens that ran and every tensor that will follow."""

    model: str
    tokens: Tuple[np.ndarray, ...]  # per row, unpadded, int64
    sequence_lengths: np.ndarray  # [batch] real tokens per row
    tensors: Tuple[TensorInfo, ...]  # in stream order (forward order, then outputs)
    #: Requests queued ahead of this one on the device when it arrived (0: it ran next).
    queue_position: int = 0


@dataclass(frozen=True)
class Timings:
    queue_seconds: float = 0.0
    forward_seconds: float = 0.0
    total_seconds: float = 0.0
    #: Requests that shared the forward pass (the server's dynamic batching); 1 when alone.
    batch_requests: int = 1


@dataclass(frozen=True)
class QueuedRequest:
    """A request the device is running or has queued (``Client.queue()``)."""

    owner: str  # the API key's name ("" on a server without keys)
    rpc: str
    model: str
    tokens: int  # padded tokens: the fair-share cost
    estimated_bytes: int
    waited_seconds: float  # 0 for running requests
    batchable: bool  # may share a forward pass with others

    @classmethod
    def from_proto(cls, r: "pb.QueuedRequest") -> "QueuedRequest":
        return cls(owner=r.owner, rpc=r.rpc, model=r.model, tokens=int(r.tokens),
                   estimated_bytes=int(r.estimated_bytes), waited_seconds=r.waited_seconds,
                   batchable=r.batchable)


@dataclass(frozen=True)
class KeyUsage:
    """What one API key has used (``Client.queue()``)."""

    name: str
    runs_in_flight: int
    tokens_last_day: int
    queued: int
    cached_bytes: int


@dataclass(frozen=True)
class QueueStatus:
    """The server's device queue and per-key usage: ``Client.queue()``."""

    running: Tuple[QueuedRequest, ...]  # the pass on the device (several when merged)
    queued: Tuple[QueuedRequest, ...]  # in the order fair share considers them
    passes: int  # forward passes since the server started
    requests_run: int
    largest_batch: int  # the most requests one pass has held
    usage: Tuple[KeyUsage, ...]  # every key the server has seen, by name

    @classmethod
    def from_proto(cls, r: "pb.GetQueueResponse") -> "QueueStatus":
        return cls(
            running=tuple(QueuedRequest.from_proto(q) for q in r.running),
            queued=tuple(QueuedRequest.from_proto(q) for q in r.queued),
            passes=int(r.passes), requests_run=int(r.requests_run),
            largest_batch=int(r.largest_batch),
            usage=tuple(KeyUsage(name=u.name, runs_in_flight=int(u.runs_in_flight),
                                 tokens_last_day=int(u.tokens_last_day), queued=int(u.queued),
                                 cached_bytes=int(u.cached_bytes)) for u in r.usage),
        )


@dataclass(frozen=True)
class CachedRun:
    """A run kept on the server (``Model.run(..., cache_as=NAME)``) for later runs to patch
    from with ``PatchFromCache``. Times are Unix seconds. ``owner`` is the name of the API key
    that kept it ("" on a server without keys); an admin key lists every key's runs and names
    another key's as "OWNER/NAME"."""

    name: str
    model: str
    hooks: Tuple[str, ...]
    sequence_lengths: Tuple[int, ...]
    nbytes: int
    created: float
    expires: float
    owner: str = ""

    @classmethod
    def from_proto(cls, info: "pb.CachedRunInfo") -> "CachedRun":
        return cls(name=info.name, model=info.model, hooks=tuple(info.hooks),
                   sequence_lengths=tuple(info.sequence_lengths), nbytes=int(info.nbytes),
                   created=info.created_unix_ms / 1000.0, expires=info.expires_unix_ms / 1000.0,
                   owner=info.owner)


@dataclass(frozen=True)
class RunSummary:
    timings: Timings = field(default_factory=Timings)
    bytes_sent: int = 0
    kept: Optional[CachedRun] = None  # when the run had cache_as
