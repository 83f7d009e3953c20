"""Server-side analyses: patching-sweep metrics and the typed results of the analysis RPCs.

Definitions are in the repository's docs/methods.md; each result equals TransformerLens's on the
same weights (transformer_lens.patching, accumulated_resid + unembed, logit_attrs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Optional, Tuple, Union

import numpy as np

from ._errors import MalformedStream
from ._proto.glassbox.v1 import glassbox_pb2 as pb

#: A token: an id, or (for a model with a tokenizer) a string that is exactly one token.
TokenSpec = Union[int, str]


# ---- patching metrics ----


@dataclass(frozen=True)
class LogitDiff:
    """logit[token_a] - logit[token_b] at the last position, averaged over the prompt pairs."""

    token_a: TokenSpec
    token_b: TokenSpec


@dataclass(frozen=True)
class LogProb:
    """log p(token) at the last position, averaged over the prompt pairs."""

    token: TokenSpec


@dataclass(frozen=True)
class Loss:
    """Mean next-token loss of a row, averaged over the prompt pairs."""


Metric = Union[LogitDiff, LogProb, Loss]

#: Sweep kinds, named as transformer_lens.patching's get_act_patch_* functions.
SWEEP_KINDS = {
    "resid_pre": pb.SWEEP_RESID_PRE,
    "resid_mid": pb.SWEEP_RESID_MID,
    "resid_post": pb.SWEEP_RESID_POST,
    "attn_out": pb.SWEEP_ATTN_OUT,
    "mlp_out": pb.SWEEP_MLP_OUT,
    "head_out_all_pos": pb.SWEEP_HEAD_OUT_ALL_POS,
    "head_out_by_pos": pb.SWEEP_HEAD_OUT_BY_POS,
    "q_all_pos": pb.SWEEP_Q_ALL_POS,
    "k_all_pos": pb.SWEEP_K_ALL_POS,
    "v_all_pos": pb.SWEEP_V_ALL_POS,
    "pattern_all_pos": pb.SWEEP_ATTN_HEAD_PATTERN_ALL_POS,
    "mlp_post_all_pos": pb.SWEEP_MLP_POST_ALL_POS,  # one neuron at every position
    "sae_features": pb.SWEEP_SAE_FEATURES,  # [pos, feature] of an SAE; attribution only
}
#: How a sweep is computed: one patched pass per cell, or attribution patching's estimate.
PATCHING_METHODS = {"exact": pb.PATCHING_EXACT, "attribution": pb.PATCHING_ATTRIBUTION}
# transformer_lens.patching's function names: get_act_patch_attn_head_out_all_pos,
# get_act_patch_attn_head_q_all_pos, ...
_SWEEP_ALIASES = {
    **{f"attn_{k}": k for k in ("head_out_all_pos", "head_out_by_pos")},
    **{f"attn_head_{k}": k for k in ("q_all_pos", "k_all_pos", "v_all_pos", "pattern_all_pos")},
    "mlp_post": "mlp_post_all_pos",
}


def sweep_kind(kind: str) -> Tuple[str, "pb.SweepKind"]:
    name = _SWEEP_ALIASES.get(kind, kind)
    if name not in SWEEP_KINDS:
        raise ValueError(f"kind must be one of {', '.join(SWEEP_KINDS)}; got {kind!r}")
    return name, SWEEP_KINDS[name]


# ---- arrays ----


def decode_array(array: "pb.Array") -> Optional[np.ndarray]:
    """A response Array as numpy (float32 values or int32 indices); None when it is unset."""
    shape = tuple(int(d) for d in array.shape)
    if not shape and not array.values and not array.indices:
        return None
    if array.indices:
        out = np.asarray(array.indices, dtype=np.int32)
    else:
        out = np.asarray(array.values, dtype=np.float32)
    expected = int(np.prod(shape)) if shape else 1
    if out.size != expected:
        raise MalformedStream(f"an array of shape {list(shape)} arrived with {out.size} values")
    return out.reshape(shape)


# ---- results ----


@dataclass(frozen=True)
class PatchingResult:
    """An activation-patching sweep (``Model.patching_sweep``) or its attribution-patching
    estimate (``Model.attribution_patching``; ``method`` says which).

    ``values`` is what transformer_lens.patching returns for the same metric (``raw``), or the
    normalised effect (m - m_corrupted) / (m_clean - m_corrupted) when the sweep was asked for
    ``normalized=True``; both are kept. ``np.asarray(result)`` is ``values``.
    """

    kind: str
    values: np.ndarray  # [layer, pos], [layer, head], [layer, pos, head] or [layer, neuron]
    dim_names: Tuple[str, ...]
    raw: np.ndarray
    normalized: np.ndarray
    clean_metric: float
    corrupted_metric: float
    forward_passes: int
    seconds: float  # server wall time
    method: str = "exact"
    backward_passes: int = 0

    def __array__(self, dtype=None, copy=None):  # noqa: ANN001 - numpy protocol
        return self.values if dtype is None else self.values.astype(dtype)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.values.shape)

    def __repr__(self) -> str:
        dims = ", ".join(f"{n}={s}" for n, s in zip(self.dim_names, self.values.shape))
        return (
            f"PatchingResult({self.kind}{' (attribution)' if self.method == 'attribution' else ''}: "
            f"[{dims}], clean {self.clean_metric:.4g}, corrupted {self.corrupted_metric:.4g}, "
            f"{self.forward_passes} passes, {self.seconds:.3f}s)"
        )


@dataclass(frozen=True)
class LogitLensResult:
    """The logit lens (``Model.logit_lens``): the residual stream before each block and after
    the last (TransformerLens accumulated_resid labels "0_pre" .. "final_post"), each through a
    freshly computed final norm and the unembedding."""

    labels: Tuple[str, ...]  # L + 1
    top_log_probs: np.ndarray  # [layer, batch, pos, k] float32
    top_tokens: np.ndarray  # [layer, batch, pos, k] int32
    target_tokens: Tuple[int, ...]
    target_log_probs: Optional[np.ndarray]  # [layer, batch, pos, target], None without targets

    def __repr__(self) -> str:
        t = "" if self.target_log_probs is None else f", targets {list(self.target_tokens)}"
        return f"LogitLensResult(labels {list(self.labels)}, top_tokens {list(self.top_tokens.shape)}{t})"


_HEAD_LABEL = re.compile(r"^L(\d+)H(\d+)$")


@dataclass(frozen=True)
class DirectLogitAttributionResult:
    """Direct logit attribution (``Model.direct_logit_attribution``).

    ``attributions[c, b]`` is component ``labels[c]``'s direct contribution to the logit (or
    logit difference) of row b at the chosen position, through the cached final-norm scale
    (TransformerLens ``cache.logit_attrs``). ``attributions.sum(0) + constant == logit``.
    Labels: "embed", "pos_embed", "L{l}H{h}" (each head), "L{l}.attn_bias", "L{l}.mlp_out".
    """

    labels: Tuple[str, ...]
    attributions: np.ndarray  # [component, batch]
    logit: np.ndarray  # [batch]
    constant: np.ndarray  # [batch]
    token: int
    minus_token: Optional[int]
    position: int

    def __getitem__(self, label: str) -> np.ndarray:
        """One component's attributions, [batch]."""
        try:
            return self.attributions[self.labels.index(label)]
        except ValueError:
            raise KeyError(f"{label!r} is not a component; labels are {list(self.labels)}") from None

    def as_dict(self) -> Dict[str, np.ndarray]:
        return {label: self.attributions[i] for i, label in enumerate(self.labels)}

    @property
    def heads(self) -> np.ndarray:
        """The per-head attributions as [layer, head, batch]."""
        cells = {}
        for i, label in enumerate(self.labels):
            m = _HEAD_LABEL.match(label)
            if m:
                cells[int(m.group(1)), int(m.group(2))] = self.attributions[i]
        if not cells:
            return np.zeros((0, 0, self.attributions.shape[1]), np.float32)
        layers = 1 + max(l for l, _ in cells)
        heads = 1 + max(h for _, h in cells)
        out = np.zeros((layers, heads, self.attributions.shape[1]), np.float32)
        for (l, h), v in cells.items():
            out[l, h] = v
        return out

    def __repr__(self) -> str:
        what = f"{self.token}" if self.minus_token is None else f"{self.token} - {self.minus_token}"
        return (
            f"DirectLogitAttributionResult(logit[{what}] at position {self.position}: "
            f"{len(self.labels)} components x {self.attributions.shape[1]} rows)"
        )


@dataclass(frozen=True)
class AttentionNormsLayer:
    """One layer of ``Model.attention_norms`` (Kobayashi et al., 2020)."""

    layer: int
    weights: np.ndarray  # [batch, head, query_pos, key_pos]: the attention pattern alpha
    head_norms: np.ndarray  # [batch, head, query_pos, key_pos]: ||alpha f_h(u_j)||
    layer_norms: np.ndarray  # [batch, query_pos, key_pos]: ||sum_h alpha f_h(u_j)||


class AttentionNormsResult(Mapping[int, AttentionNormsLayer]):
    """Attention weights beside attention norms, keyed by layer index."""

    def __init__(self, layers: Mapping[int, AttentionNormsLayer]) -> None:
        self._layers = dict(layers)

    def __getitem__(self, layer: int) -> AttentionNormsLayer:
        try:
            return self._layers[layer]
        except KeyError:
            raise KeyError(f"layer {layer} was not computed; this result has layers {sorted(self._layers)}") from None

    def __iter__(self) -> Iterator[int]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        return f"AttentionNormsResult(layers {list(self._layers)})"
