"""Head detectors on a random token sequence repeated twice (docs/methods.md, "Head detectors").

On ``prefix + r + r`` with ``r`` uniformly random tokens of length n, second-copy positions i
(counted in the whole row) define

- induction score: mean attention from i to i - n + 1 (the token after i's earlier copy);
- duplicate-token score: mean attention from i to i - n (i's earlier copy);
- previous-token score: mean attention from every position after the first to the one before.

These are Olsson et al.'s scores as docs/methods.md defines them: averaged over the second copy
only, so a perfect head scores 1. (TransformerLens's ``detect_head`` divides by the attention of every
query, the first copy's included, so its scores on the same pattern are about half of ours.)

Losses are over the tokens a copying model can predict: tokens 2..n of the second copy (its
first token is as random as any), beside tokens 2..n of the first copy, n - 1 of each.

Everything here is numpy on arrays already captured; ``Model.detect_heads`` makes the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np


def repeated_random_tokens(
    vocab_size: int, n: int, batch: int, seed: int = 0, prefix: Sequence[int] = ()
) -> np.ndarray:
    """[batch, len(prefix) + 2n] int64: ``prefix``, then n random ids, then the same n again.

    Ids are uniform over the vocabulary except the prefix's own ids (BOS).
    """
    if n < 2 or batch < 1:
        raise ValueError(f"need n >= 2 and batch >= 1, got n={n}, batch={batch}")
    allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(prefix, dtype=np.int64))
    rng = np.random.default_rng(seed)
    half = allowed[rng.integers(0, len(allowed), size=(batch, n))]
    start = np.tile(np.asarray(prefix, dtype=np.int64), (batch, 1))
    return np.concatenate([start, half, half], axis=1)


@dataclass(frozen=True)
class HeadDetection:
    """Scores of every head ([n_layers, n_heads]) and copy losses on ``tokens``."""

    tokens: np.ndarray  # [batch, prefix + 2n]
    n: int
    prefix_length: int
    induction: np.ndarray
    duplicate_token: np.ndarray
    previous_token: np.ndarray
    loss_first: float  # mean loss of tokens 2..n of the first copy (nats)
    loss_second: float  # mean loss of tokens 2..n of the second copy

    def top(self, kind: str = "induction", k: Optional[int] = 3) -> List[Tuple[int, int, float]]:
        """The k highest-scoring heads (None: all) as (layer, head, score), best first."""
        scores = {"induction": self.induction, "duplicate_token": self.duplicate_token,
                  "previous_token": self.previous_token}.get(kind)
        if scores is None:
            raise ValueError(f"kind must be induction, duplicate_token or previous_token, got {kind!r}")
        order = np.argsort(-scores, axis=None, kind="stable")[:k]
        return [(int(i // scores.shape[1]), int(i % scores.shape[1]), float(scores.flat[i]))
                for i in order]

    def above(self, threshold: float, kind: str = "induction") -> List[Tuple[int, int, float]]:
        """The heads scoring above ``threshold``, best first (``glassbox.zero_heads`` takes them)."""
        return [head for head in self.top(kind, k=None) if head[2] > threshold]


def copy_losses(loss_per_token: np.ndarray, n: int, prefix_length: int) -> Tuple[float, float]:
    """(first-copy, second-copy) mean losses from Model.run's [batch, pos - 1] loss_per_token.

    Entry t is the loss of token t + 1: tokens p+1..p+n-1 of the first copy are entries
    p..p+n-2, tokens p+n+1..p+2n-1 of the second are entries p+n..p+2n-2.
    """
    p = prefix_length
    losses = np.asarray(loss_per_token, dtype=np.float64)
    return float(losses[:, p:p + n - 1].mean()), float(losses[:, p + n:p + 2 * n - 1].mean())


def score_heads(
    tokens: np.ndarray, patterns: Any, loss_per_token: np.ndarray, n: int, prefix_length: int
) -> HeadDetection:
    """Scores every head from one run over ``tokens`` (``repeated_random_tokens``).

    ``patterns``: each layer's hook_pattern, [layer, batch, head, query, key] (or a list of the
    per-layer [batch, head, query, key] arrays); ``loss_per_token``: that run's [batch, pos - 1].
    """
    p = prefix_length
    second = np.arange(p + n, p + 2 * n)
    later = np.arange(1, p + 2 * n)
    attention = np.asarray(patterns, dtype=np.float64)
    induction = attention[..., second, second - n + 1].mean(axis=(1, 3))
    duplicate = attention[..., second, second - n].mean(axis=(1, 3))
    previous = attention[..., later, later - 1].mean(axis=(1, 3))
    first_loss, second_loss = copy_losses(loss_per_token, n, p)
    return HeadDetection(tokens, n, p, induction, duplicate, previous, first_loss, second_loss)
