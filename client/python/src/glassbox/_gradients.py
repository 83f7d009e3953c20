"""Gradients of a metric of the logits at hook points (``Model.gradients``; docs/gradients.md).

The request's metric reuses the patching metrics (``LogitDiff``, ``LogProb``) and adds ``Logit``;
the result holds each row's metric value and one gradient array per hook, in the hook's
TransformerLens shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Tuple, Union

import numpy as np

from ._analyses import LogitDiff, LogProb, TokenSpec, decode_array
from ._proto.glassbox.v1 import glassbox_pb2 as pb


@dataclass(frozen=True)
class Logit:
    """logit[token] at the metric's position."""

    token: TokenSpec


GradientMetric = Union[LogitDiff, LogProb, Logit]


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


def metric_proto(metric: GradientMetric, position: int, token_id) -> "pb.GradientMetric":
    """The wire metric; ``token_id`` turns a token spec (id or one-token string) into an id."""
    if isinstance(metric, LogitDiff):
        out = pb.GradientMetric(kind=pb.GradientMetric.LOGIT_DIFF, token_a=token_id(metric.token_a),
                                token_b=token_id(metric.token_b))
    elif isinstance(metric, LogProb):
        out = pb.GradientMetric(kind=pb.GradientMetric.LOG_PROB, token_a=token_id(metric.token))
    elif isinstance(metric, Logit):
        out = pb.GradientMetric(kind=pb.GradientMetric.LOGIT, token_a=token_id(metric.token))
    else:
        raise TypeError(f"metric must be LogitDiff(a, b), LogProb(token) or Logit(token), got {metric!r}")
    if not isinstance(position, (int, np.integer)) or isinstance(position, bool):
        raise TypeError(f"position must be an int (negative counts from the end), got {position!r}")
    out.position = int(position)
    return out


def hook_names(hooks: Union[str, Tuple[str, ...], list]) -> list:
    names = [hooks] if isinstance(hooks, str) else list(hooks)
    if not names or not all(isinstance(h, str) and h for h in names):
        raise ValueError(f"hooks must be hook names or globs (e.g. 'blocks.*.hook_resid_pre'), got {hooks!r}")
    return names
