"""Linear relational embeddings (Hernandez et al. 2023) and linear relational concepts (Chanin et
al. 2024), fitted from the server's Jacobians (``Model.jacobian``; docs/methods.md).

A relation (a country's capital) maps the subject's representation s (``subject_hook`` at the
subject's last token) to the object's o (``object_hook`` at the prompt's last token) about
linearly: o ≈ β W s + b, with W the mean Jacobian ∂o/∂s over a few examples and b the mean of
o − W s. ``fit`` fits one; ``LinearRelationalEmbedding.predict`` decodes β W s + b by setting
it at ``object_hook`` and reading the model's logits, and ``faithfulness`` is how often that
agrees with the model's own prediction. ``concepts`` turns an LRE into one direction per object
value (v_y from the low-rank pseudo-inverse W⁺), which classify subjects and steer.

    from glassbox import lre
    prompts = [f"The capital of {c} is" for c in countries]
    emb = lre.fit(model, prompts[:8], -2, "blocks.0.hook_resid_pre", "blocks.3.hook_resid_post")
    emb.faithfulness(model, prompts[8:], -2)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._interventions import Add, Set

if TYPE_CHECKING:
    from ._model import Model

Positions = Union[int, Sequence[int]]


def _per_prompt(positions: Positions, n: int, name: str) -> List[int]:
    values = [positions] * n if isinstance(positions, (int, np.integer)) else list(positions)
    if len(values) != n or not all(isinstance(p, (int, np.integer)) for p in values):
        raise ValueError(f"{name}: one int for every prompt or one per prompt ({n}), got {positions!r}")
    return [int(p) for p in values]


def _progress(items: Sequence[Any], show: bool, what: str):  # noqa: ANN202 - an iterable
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=what, unit="prompt")


def _value_at(model: "Model", prompt: Any, hook: str, position: int) -> np.ndarray:
    run = model.run([prompt] if isinstance(prompt, str) else prompt, captures=hook, logits="none")
    return run.cache[hook][0, position].astype(np.float64)


@dataclass(frozen=True)
class LinearRelationalEmbedding:
    """o ≈ beta · weight · s + bias, s at ``subject_hook``, o at ``object_hook``."""

    subject_hook: str
    object_hook: str
    weight: np.ndarray  # [d_object, d_subject]
    bias: np.ndarray  # [d_object]
    beta: float = 1.0
    object_position: int = -1

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """β W s + b for subject representations s [..., d_subject]."""
        return self.beta * np.asarray(s, dtype=np.float64) @ self.weight.T + self.bias

    def with_beta(self, beta: float) -> "LinearRelationalEmbedding":
        return LinearRelationalEmbedding(self.subject_hook, self.object_hook, self.weight, self.bias,
                                         float(beta), self.object_position)

    def predict(self, model: "Model", prompts: Sequence[Any], subject_positions: Positions, *,
                top_k: int = 1, progress: bool = False) -> np.ndarray:
        """[prompts, top_k] token ids: the model's top tokens at the last position when
        ``object_hook`` there holds β W s + b instead of its own value."""
        positions = _per_prompt(subject_positions, len(prompts), "subject_positions")
        out = []
        for prompt, p in zip(_progress(prompts, progress, "LRE predict"), positions):
            o_hat = self(_value_at(model, prompt, self.subject_hook, p)).astype(np.float32)
            run = model.run([prompt] if isinstance(prompt, str) else prompt, logits="last",
                            interventions=[Set(self.object_hook, o_hat, positions=self.object_position)])
            out.append(np.argsort(-run.logits[0])[:top_k])
        return np.asarray(out)

    def faithfulness(self, model: "Model", prompts: Sequence[Any], subject_positions: Positions, *,
                     progress: bool = False) -> float:
        """The fraction of prompts whose LRE prediction (top token) is the model's own top token
        at the last position (Hernandez et al.'s faithfulness)."""
        predicted = self.predict(model, prompts, subject_positions, progress=progress)[:, 0]
        own = [int(np.argmax(model.run([p] if isinstance(p, str) else p, logits="last").logits[0]))
               for p in prompts]
        return float(np.mean(predicted == np.asarray(own)))


def fit(model: "Model", prompts: Sequence[Any], subject_positions: Positions, subject_hook: str,
        object_hook: str, *, beta: float = 1.0, object_position: int = -1,
        progress: bool = False) -> LinearRelationalEmbedding:
    """Fits an LRE: W = the mean over the prompts of ∂ object_hook[object_position] /
    ∂ subject_hook[subject position] (``Model.jacobian``, one prompt per call, so prompts may
    differ in length), b = the mean of o − W s. ``subject_positions``: the subject's last token
    in each prompt (one int for all, or one per prompt; negative from the end)."""
    if not prompts:
        raise ValueError("fit needs at least one prompt")
    positions = _per_prompt(subject_positions, len(prompts), "subject_positions")
    jacobians, offsets = [], []
    for prompt, p in zip(_progress(prompts, progress, "LRE Jacobians"), positions):
        j = model.jacobian([prompt] if isinstance(prompt, str) else prompt, subject_hook, object_hook,
                           in_positions=p, out_positions=object_position)
        jacobians.append(j.jacobian[0].astype(np.float64))
        offsets.append((j.out_value[0].astype(np.float64), j.in_value[0].astype(np.float64)))
    weight = np.mean(jacobians, axis=0)
    bias = np.mean([o - weight @ s for o, s in offsets], axis=0)
    return LinearRelationalEmbedding(subject_hook, object_hook, weight, bias, float(beta), object_position)


def low_rank_pinv(weight: np.ndarray, rank: Optional[int] = None) -> np.ndarray:
    """W⁺ from W's top ``rank`` singular values (all when None): V_r Σ_r⁻¹ U_rᵀ."""
    u, sigma, vt = np.linalg.svd(weight, full_matrices=False)
    r = len(sigma) if rank is None else int(rank)
    if not 1 <= r <= len(sigma):
        raise ValueError(f"rank must be in [1, {len(sigma)}], got {rank!r}")
    return vt[:r].T @ np.diag(1.0 / sigma[:r]) @ u[:, :r].T


@dataclass(frozen=True)
class LinearRelationalConcepts:
    """One unit direction per object value at ``hook`` (the LRE's subject hook)."""

    hook: str
    objects: Tuple[Hashable, ...]
    directions: np.ndarray  # [objects, d_subject], unit rows

    def scores(self, s: np.ndarray) -> np.ndarray:
        """v_y · s for subject representations s [..., d]: [..., objects]."""
        return np.asarray(s, dtype=np.float64) @ self.directions.T

    def classify(self, s: np.ndarray) -> List[Hashable]:
        """argmax_y v_y · s for each subject representation (a [d] vector or [n, d] rows)."""
        scores = np.atleast_2d(self.scores(s))
        return [self.objects[i] for i in np.argmax(scores, axis=-1)]

    def steering(self, obj: Hashable, coefficient: float, *, positions: Any = None) -> Add:
        """An ``Add`` of coefficient · v_obj at the hook (at ``positions``, e.g. the subject's)."""
        return Add(self.hook, self.directions[self.objects.index(obj)].astype(np.float32),
                   coef=float(coefficient), positions=positions)


def concepts(lre: LinearRelationalEmbedding, model: "Model", prompts: Sequence[Any],
             objects: Sequence[Hashable], *, rank: Optional[int] = None,
             progress: bool = False) -> LinearRelationalConcepts:
    """Linear relational concepts (Chanin et al. 2024): for each object value y,
    v_y = normalise(mean over the prompts whose object is y of W⁺ (o − b)), with W⁺ the rank-
    ``rank`` pseudo-inverse of the LRE's W and o the object representation of each prompt (the
    LRE's object hook and position: fit the LRE to a non-final layer for concepts)."""
    if len(objects) != len(prompts):
        raise ValueError(f"objects: one per prompt ({len(prompts)}), got {len(objects)}")
    pinv = low_rank_pinv(lre.weight, rank)
    by_object: dict = {}
    for prompt, obj in zip(_progress(prompts, progress, "LRC objects"), objects):
        o = _value_at(model, prompt, lre.object_hook, lre.object_position)
        by_object.setdefault(obj, []).append(pinv @ (o - lre.bias))
    names = tuple(by_object)
    directions = np.stack([np.mean(by_object[y], axis=0) for y in names])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return LinearRelationalConcepts(lre.subject_hook, names, directions)
