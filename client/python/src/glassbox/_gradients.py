"""Gradients of a metric of the logits at hook points (``Model.gradients``; docs/gradients.md).

The request's metric reuses the patching metrics (``LogitDiff``, ``LogProb``, ``Loss``) and adds
``Logit``, and two metrics of an activation instead of the logits: ``Direction`` and
``SaeFeature``;
the result holds each row's metric value and one gradient array per hook, in the hook's
TransformerLens shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Tuple, Union

import numpy as np

from ._analyses import LogitDiff, LogProb, Loss, TokenSpec, decode_array
from ._proto.glassbox.v1 import glassbox_pb2 as pb


@dataclass(frozen=True)
class Logit:
    """logit[token] at the metric's position."""

    token: TokenSpec


@dataclass(frozen=True)
class Direction:
    """direction . the activation at ``hook`` (a token activation: the residual stream,
    attn_out, mlp_out, hook_q/k/v/z, the MLP's pre/post, the embeddings) at the metric's
    position; ``direction`` has the hook's elements at one position ([d], or [heads, d]
    flattened). Needs no logits: the backward starts at the hook's block."""

    hook: str
    direction: Any


@dataclass(frozen=True)
class SaeFeature:
    """The activation (hook_sae_acts_post) of ``feature`` of a loaded SAE (``client.saes()``)
    at its hook and the metric's position. Its gradient at the hook is the feature's encoder
    direction where it fires and 0 where it does not."""

    sae: str
    feature: int


GradientMetric = Union[LogitDiff, LogProb, Logit, Loss, Direction, SaeFeature]


@dataclass(frozen=True)
class GradientResult(Mapping[str, np.ndarray]):
    """``Model.gradients``: ``metric`` [batch] (each row's value) and, by hook name in forward
    order, d(row's metric) / d(hook value) with the hook's shape. Rows do not interact, so row b
    of a gradient is the gradient of row b's own metric. Indexing by hook name gives the array."""

    metric: np.ndarray
    gradients: Dict[str, np.ndarray]

    def __getitem__(self, hook: str) -> np.ndarray:
        return self.gradients[hook]

    def __iter__(self) -> Iterator[str]:
        return iter(self.gradients)

    def __len__(self) -> int:
        return len(self.gradients)

    @classmethod
    def from_proto(cls, response: "pb.GradientsResponse") -> "GradientResult":
        gradients: Dict[str, np.ndarray] = {}
        for g in response.gradients:
            array = decode_array(g.gradient)
            assert array is not None
            gradients[g.hook] = array
        return cls(metric=np.asarray(response.metric, dtype=np.float64), gradients=gradients)


@dataclass(frozen=True)
class IntegratedGradientsResult:
    """``Model.integrated_gradients`` / ``Model.input_x_gradient``: ``attributions`` in the hook's
    shape (``dim_names``), and per row the metric at the input (``metric``) and at the baseline
    (``baseline_metric``). Completeness: a row's attributions sum to about ``metric -
    baseline_metric`` (exactly in the limit of many steps; ``completeness_gap`` is the
    difference). ``np.asarray(result)`` is ``attributions``."""

    hook: str
    method: str  # "integrated_gradients" or "input_x_gradient"
    attributions: np.ndarray
    dim_names: Tuple[str, ...]
    metric: np.ndarray
    baseline_metric: np.ndarray
    forward_passes: int
    backward_passes: int

    def __array__(self, dtype=None, copy=None):  # noqa: ANN001 - numpy protocol
        return self.attributions if dtype is None else self.attributions.astype(dtype)

    def per_position(self) -> np.ndarray:
        """[batch, pos]: each position's attribution summed over the hook's other axes (for
        attention patterns and scores, over heads and keys: per query position)."""
        a = self.attributions.astype(np.float64)
        if len(self.dim_names) == 4 and self.dim_names[1] == "head_index":
            return a.sum(axis=(1, 3))
        return a.reshape(a.shape[0], a.shape[1], -1).sum(-1)

    @property
    def completeness_gap(self) -> np.ndarray:
        """[batch]: sum of each row's attributions minus (metric - baseline_metric)."""
        sums = self.attributions.reshape(self.attributions.shape[0], -1).astype(np.float64).sum(-1)
        return sums - (self.metric - self.baseline_metric)

    @classmethod
    def from_proto(cls, hook: str, method: str,
                   response: "pb.IntegratedGradientsResponse") -> "IntegratedGradientsResult":
        attributions = decode_array(response.attributions)
        assert attributions is not None
        return cls(hook=hook, method=method, attributions=attributions,
                   dim_names=tuple(response.attributions.dim_names),
                   metric=np.asarray(response.metric, dtype=np.float64),
                   baseline_metric=np.asarray(response.baseline_metric, dtype=np.float64),
                   forward_passes=int(response.forward_passes),
                   backward_passes=int(response.backward_passes))


@dataclass(frozen=True)
class JacobianResult:
    """``Model.jacobian``: ``jacobian[b]`` = d out_hook[b, q_b] / d in_hook[b, p_b], [batch, out,
    in] (both sides flattened over their trailing axes), with the values there: ``out_value``
    [batch, out] and ``in_value`` [batch, in]. ``np.asarray(result)`` is ``jacobian``."""

    in_hook: str
    out_hook: str
    jacobian: np.ndarray
    in_value: np.ndarray
    out_value: np.ndarray
    passes: int

    def __array__(self, dtype=None, copy=None):  # noqa: ANN001 - numpy protocol
        return self.jacobian if dtype is None else self.jacobian.astype(dtype)

    @classmethod
    def from_proto(cls, in_hook: str, out_hook: str, response: "pb.JacobianResponse") -> "JacobianResult":
        arrays = [decode_array(a) for a in (response.jacobian, response.in_value, response.out_value)]
        assert all(a is not None for a in arrays)
        return cls(in_hook=in_hook, out_hook=out_hook, jacobian=arrays[0], in_value=arrays[1],
                   out_value=arrays[2], passes=int(response.passes))


def positions_per_row(positions, name: str) -> list:  # noqa: ANN001 - int or sequence of ints
    """One position for every row (an int) or one per row (a sequence), as the wire wants them."""
    values = [positions] if isinstance(positions, (int, np.integer)) else list(positions)
    if not values or not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in values):
        raise TypeError(f"{name} must be an int or a sequence of ints (one per row), got {positions!r}")
    return [int(p) for p in values]


def baseline_array(baseline) -> "pb.Array":  # noqa: ANN001 - array-like or None
    """The wire baseline: None is zeros (an empty Array); else float32 values with their shape."""
    if baseline is None:
        return pb.Array()
    values = np.asarray(baseline, dtype=np.float32)
    if values.ndim == 0:
        raise ValueError("baseline must be an array: [d] (the hook's last axis) or the hook's full shape")
    return pb.Array(shape=list(values.shape), values=values.ravel().tolist())


def metric_proto(metric: GradientMetric, position: int, token_id) -> "pb.GradientMetric":
    """The wire metric; ``token_id`` turns a token spec (id or one-token string) into an id."""
    if isinstance(metric, LogitDiff):
        out = pb.GradientMetric(kind=pb.GradientMetric.LOGIT_DIFF, token_a=token_id(metric.token_a),
                                token_b=token_id(metric.token_b))
    elif isinstance(metric, LogProb):
        out = pb.GradientMetric(kind=pb.GradientMetric.LOG_PROB, token_a=token_id(metric.token))
    elif isinstance(metric, Logit):
        out = pb.GradientMetric(kind=pb.GradientMetric.LOGIT, token_a=token_id(metric.token))
    elif isinstance(metric, Loss) or metric is Loss:
        out = pb.GradientMetric(kind=pb.GradientMetric.LOSS)  # the row's mean next-token loss
    elif isinstance(metric, Direction):
        vector = np.asarray(metric.direction, dtype=np.float32).reshape(-1)
        out = pb.GradientMetric(kind=pb.GradientMetric.DIRECTION, hook=metric.hook,
                                direction=vector.tolist())
    elif isinstance(metric, SaeFeature):
        out = pb.GradientMetric(kind=pb.GradientMetric.SAE_FEATURE, sae=metric.sae,
                                feature=int(metric.feature))
    else:
        raise TypeError(
            "metric must be LogitDiff(a, b), LogProb(token), Logit(token), Loss(), "
            f"Direction(hook, vector) or SaeFeature(sae, feature), got {metric!r}")
    if not isinstance(position, (int, np.integer)) or isinstance(position, bool):
        raise TypeError(f"position must be an int (negative counts from the end), got {position!r}")
    out.position = int(position)
    return out


def hook_names(hooks: Union[str, Tuple[str, ...], list]) -> list:
    names = [hooks] if isinstance(hooks, str) else list(hooks)
    if not names or not all(isinstance(h, str) and h for h in names):
        raise ValueError(f"hooks must be hook names or globs (e.g. 'blocks.*.hook_resid_pre'), got {hooks!r}")
    return names
