"""Interventions: typed edits applied at hook points during a server-side forward pass.

Semantics are TransformerLens ``run_with_hooks``'s: the hook's value is replaced by the edited
one, everything downstream sees the edit, and a capture at the same hook sees the edited value.
Several edits at one hook apply in the order given.

A hook's value is viewed as ``[batch, pos, M, D]``: D is the last axis (d_model, d_mlp, d_head)
and M the head axis where there is one (hook_q / hook_k / hook_v / hook_z), else 1. Each edit
touches the selection S = rows x positions x heads x dims; a selector left as None selects
everything along its axis. Positions may be negative: -1 is each row's last real token.

``attn.hook_attn_scores`` and ``attn.hook_pattern`` are ``[batch, head, query_pos, key_pos]``:
``positions`` select queries and ``dims`` keys, both real-token positions (negative from the
end). As in TransformerLens, edited scores go through the softmax, and an edited pattern is
multiplied by v as it is (not renormalised).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._cache import get_act_name
from ._proto.glassbox.v1 import glassbox_pb2 as pb
from ._types import IndexSpec, indices

#: A hook: a name ("blocks.0.attn.hook_z"), a glob ("blocks.*.hook_resid_pre": the edit applies at
#: every match), or a get_act_name tuple (("z", 0) -> "blocks.0.attn.hook_z").
HookSpec = Union[str, Tuple[Any, ...]]

_KINDS = {
    "zero": pb.INTERVENTION_ZERO,
    "scale": pb.INTERVENTION_SCALE,
    "add": pb.INTERVENTION_ADD,
    "set": pb.INTERVENTION_SET,
    "mean_batch": pb.INTERVENTION_MEAN_BATCH,
    "mean_pos": pb.INTERVENTION_MEAN_POS,
    "patch_rows": pb.INTERVENTION_PATCH_ROW,
    "patch_cached": pb.INTERVENTION_PATCH_CACHED,
    "project_out": pb.INTERVENTION_PROJECT_OUT,
    "orthogonal_decomp": pb.INTERVENTION_ORTHOGONAL_DECOMP,
    "projection_cap": pb.INTERVENTION_PROJECTION_CAP,
}
_DIRECTIONAL = ("project_out", "orthogonal_decomp", "projection_cap")


def _hook_name(hook: HookSpec) -> str:
    if isinstance(hook, tuple):
        return get_act_name(*hook)
    if not isinstance(hook, str) or not hook:
        raise TypeError(f"an intervention's hook must be a hook name, a glob or a get_act_name tuple, got {hook!r}")
    return hook


def _float_array(value: Any, what: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):  # torch
        value = value.detach().cpu().float().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{what} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if array.size == 0:
        raise ValueError(f"{what} is empty")
    return array


class Intervention:
    """One edit at a hook point. Usually built through a subclass: ``Zero``, ``Scale``, ``Add``,
    ``Set``, ``MeanAblate`` or ``PatchRows``.

    Args:
        kind: "zero", "scale", "add", "set", "mean_batch", "mean_pos", "patch_rows",
            "patch_cached", "project_out", "orthogonal_decomp" or "projection_cap".
        hook: hook name, glob, or get_act_name tuple such as ``("z", 0)``.
        rows, positions, heads, dims: the selection (None = all along that axis). ``dims`` are
            last-axis indices: neurons of mlp.hook_post, d_model features, d_head features;
            for hook_pattern / hook_attn_scores, key positions.
        coef: "scale": the factor; "add": the value's multiplier (default 1).
        value: "add" / "set": floats broadcast over the selection, shaped [D], [M, D],
            [pos, M, D] (one row, used for every row) or the hook's full shape (for patterns and
            scores: [key_pos], [head, key_pos], [head, query_pos, key_pos] or the full shape).
            numpy, a list, or a torch tensor.
        source_rows: "patch_rows": the source row of each batch row (one per row), or a mapping
            {row: source row} that patches only those rows. "patch_cached": the cached row of
            each batch row (None: row b, or row 0 of a one-row cached run).
        cached_run: "patch_cached": the name the source run was kept under (``cache_as``).
        projection_min, projection_max: "projection_cap": the bounds of ``x . u``.
    """

    kind: str

    def __init__(
        self,
        kind: str,
        hook: HookSpec,
        *,
        rows: IndexSpec = None,
        positions: IndexSpec = None,
        heads: IndexSpec = None,
        dims: IndexSpec = None,
        coef: Optional[float] = None,
        value: Any = None,
        source_rows: Union[None, Sequence[int], Mapping[int, int]] = None,
        cached_run: Optional[str] = None,
        projection_min: Optional[float] = None,
        projection_max: Optional[float] = None,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"intervention kind must be one of {sorted(_KINDS)}, got {kind!r}")
        name = type(self).__name__
        self.kind = kind
        self.hook = _hook_name(hook)
        self.rows = indices(rows, f"{name}.rows")
        self.positions = indices(positions, f"{name}.positions")
        self.heads = indices(heads, f"{name}.heads")
        self.dims = indices(dims, f"{name}.dims")
        if coef is not None:
            if isinstance(coef, bool) or not isinstance(coef, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name}.coef must be a number, got {coef!r}")
            coef = float(coef)
        self.coef: Optional[float] = coef
        if kind in ("add", "set") + _DIRECTIONAL:
            if value is None:
                raise ValueError(f"{name} needs a value")
            self.value: Optional[np.ndarray] = _float_array(value, f"{name}.value")
        elif value is not None:
            raise ValueError(f"a {kind!r} intervention takes no value")
        else:
            self.value = None
        if kind == "scale" and coef is None:
            raise ValueError(f"{name} needs coef")
        if kind == "orthogonal_decomp" and coef is None:
            raise ValueError(f"{name} needs coef")
        if kind not in ("scale", "add", "project_out", "orthogonal_decomp") and coef is not None:
            raise ValueError(f"a {kind!r} intervention takes no coef")
        bounds = []
        for bound, what in ((projection_min, "projection_min"), (projection_max, "projection_max")):
            if bound is not None:
                if kind != "projection_cap":
                    raise ValueError(f"a {kind!r} intervention takes no {what}")
                if isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer, np.floating)):
                    raise TypeError(f"{name}.{what} must be a number, got {bound!r}")
                bound = float(bound)
            bounds.append(bound)
        if kind == "projection_cap" and bounds == [None, None]:
            raise ValueError(f"{name} needs projection_min, projection_max or both")
        self.projection_min: Optional[float] = bounds[0]
        self.projection_max: Optional[float] = bounds[1]
        self.source_rows: Union[None, Tuple[int, ...], Dict[int, int]] = None
        if kind == "patch_rows":
            if source_rows is None:
                raise ValueError(f"{name} needs source_rows")
            if isinstance(source_rows, Mapping):
                if self.rows:
                    raise ValueError(f"{name}: give rows either as the keys of source_rows or as rows=, not both")
                mapping = {}
                for dest, src in source_rows.items():
                    (d,) = indices(dest, f"{name}.source_rows keys")
                    (s,) = indices(src, f"{name}.source_rows values")
                    mapping[d] = s
                if not mapping:
                    raise ValueError(f"{name}.source_rows is empty")
                self.source_rows = mapping
                self.rows = tuple(sorted(mapping))
            else:
                self.source_rows = indices(source_rows, f"{name}.source_rows")
                if not self.source_rows:
                    raise ValueError(f"{name}.source_rows is empty")
        elif kind == "patch_cached" and source_rows is not None:
            if isinstance(source_rows, Mapping):
                raise TypeError(f"{name}.source_rows must be one cached row per batch row, not a mapping")
            self.source_rows = indices(source_rows, f"{name}.source_rows")
        elif source_rows is not None:
            raise ValueError(f"a {kind!r} intervention takes no source_rows")
        if kind == "patch_cached":
            if not isinstance(cached_run, str) or not cached_run:
                raise ValueError(f"{name} needs the name of a cached run (Model.run(..., cache_as=NAME))")
        elif cached_run is not None:
            raise ValueError(f"a {kind!r} intervention takes no cached_run")
        self.cached_run: Optional[str] = cached_run

    def _to_proto(self, batch: Optional[int] = None) -> "pb.Intervention":
        """The proto message; ``batch`` (rows in the request) resolves a source_rows mapping."""
        source_rows: Tuple[int, ...] = ()
        if isinstance(self.source_rows, dict):
            if batch is None:
                raise ValueError("PatchRows with a {row: source} mapping needs the batch size")
            for dest in self.source_rows:
                if not 0 <= dest < batch:
                    raise ValueError(f"PatchRows: row {dest} is outside the batch [0, {batch})")
            source_rows = tuple(self.source_rows.get(r, r) for r in range(batch))
        elif self.source_rows is not None:
            source_rows = self.source_rows
        message = pb.Intervention(
            hook=self.hook,
            kind=_KINDS[self.kind],
            rows=self.rows,
            positions=self.positions,
            heads=self.heads,
            dims=self.dims,
            source_rows=source_rows,
            cached_run=self.cached_run or "",
        )
        if self.coef is not None:
            message.coefficient = self.coef
        if self.value is not None:
            message.value.extend(self.value.ravel().tolist())
        if self.projection_min is not None:
            message.projection_min = self.projection_min
        if self.projection_max is not None:
            message.projection_max = self.projection_max
        return message

    def _fields(self) -> Tuple[Any, ...]:
        value = None if self.value is None else (self.value.shape, self.value.tobytes())
        source = tuple(sorted(self.source_rows.items())) if isinstance(self.source_rows, dict) else self.source_rows
        return (self.kind, self.hook, self.rows, self.positions, self.heads, self.dims, self.coef, value, source,
                self.cached_run, self.projection_min, self.projection_max)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Intervention):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        parts = [repr(self.hook)]
        if type(self) is Intervention:
            parts.insert(0, repr(self.kind))
        if self.kind == "mean_batch" or self.kind == "mean_pos":
            parts.append(f"over={self.kind[5:]!r}")
        if self.value is not None:
            parts.append(f"value=<{list(self.value.shape)} float32>")
        if self.coef is not None:
            parts.append(f"coef={self.coef!r}")
        if self.projection_min is not None:
            parts.append(f"min={self.projection_min!r}")
        if self.projection_max is not None:
            parts.append(f"max={self.projection_max!r}")
        if self.cached_run is not None:
            parts.insert(parts.index(repr(self.hook)) + 1, repr(self.cached_run))
        if self.source_rows is not None:
            parts.append(f"source_rows={self.source_rows!r}")
        for name in ("rows", "positions", "heads", "dims"):
            chosen = getattr(self, name)
            if chosen and not (name == "rows" and isinstance(self.source_rows, dict)):
                parts.append(f"{name}={list(chosen)}")
        return f"{type(self).__name__}({', '.join(parts)})"


class Zero(Intervention):
    """Zero-ablation: ``x[S] = 0``. E.g. head 1 of layer 0: ``Zero("blocks.0.attn.hook_z", heads=1)``."""

    def __init__(self, hook: HookSpec, *, rows: IndexSpec = None, positions: IndexSpec = None,
                 heads: IndexSpec = None, dims: IndexSpec = None) -> None:
        super().__init__("zero", hook, rows=rows, positions=positions, heads=heads, dims=dims)


def zero_heads(heads: Sequence[Tuple[int, ...]]) -> List[Zero]:
    """Zero-ablate attention heads given as (layer, head) pairs (or ``HeadDetection.top`` /
    ``above`` triples): one ``Zero`` on each layer's ``hook_z``, e.g.
    ``zero_heads([(2, 0), (2, 1)])`` or ``zero_heads(detection.above(0.4))``."""
    by_layer: Dict[int, List[int]] = {}
    for layer, head, *_ in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    return [Zero(f"blocks.{layer}.attn.hook_z", heads=hs) for layer, hs in sorted(by_layer.items())]


class Scale(Intervention):
    """``x[S] *= coef``."""

    def __init__(self, hook: HookSpec, coef: float, *, rows: IndexSpec = None, positions: IndexSpec = None,
                 heads: IndexSpec = None, dims: IndexSpec = None) -> None:
        super().__init__("scale", hook, coef=coef, rows=rows, positions=positions, heads=heads, dims=dims)


class Add(Intervention):
    """Steering: ``x[S] += coef * value``. ``value`` is [D] (a direction), [M, D], one row
    [pos, M, D], or the hook's full shape; numpy, a list or a torch tensor."""

    def __init__(self, hook: HookSpec, value: Any, coef: float = 1.0, *, rows: IndexSpec = None,
                 positions: IndexSpec = None, heads: IndexSpec = None, dims: IndexSpec = None) -> None:
        super().__init__("add", hook, value=value, coef=coef, rows=rows, positions=positions, heads=heads,
                         dims=dims)


class Set(Intervention):
    """``x[S] = value`` (shapes as for ``Add``). A precomputed mean (mean-ablation over a
    reference distribution) is a ``Set`` with that mean as the value."""

    def __init__(self, hook: HookSpec, value: Any, *, rows: IndexSpec = None, positions: IndexSpec = None,
                 heads: IndexSpec = None, dims: IndexSpec = None) -> None:
        super().__init__("set", hook, value=value, rows=rows, positions=positions, heads=heads, dims=dims)


class ProjectOut(Intervention):
    """Directional ablation (Arditi et al., 2024): ``x -= coef * (x . u) u`` for every selected
    token (and head), ``u = direction / |direction|`` along the whole last axis. ``direction``
    is [D] or one per head [M, D]. ``coef=1`` removes the component; on
    ``"blocks.*.hook_resid_pre"`` (every layer) it is the refusal-direction ablation, and it
    works during ``generate``."""

    def __init__(self, hook: HookSpec, direction: Any, coef: float = 1.0, *, rows: IndexSpec = None,
                 positions: IndexSpec = None, heads: IndexSpec = None) -> None:
        super().__init__("project_out", hook, value=direction, coef=coef, rows=rows, positions=positions,
                         heads=heads)


class OrthogonalDecomp(Intervention):
    """Neuronpedia's ``ORTHOGONAL_DECOMP`` steering: ``x = (I - P) x + coef * P x`` per selected
    token (and head), ``P = u u^T``, ``u = direction / |direction|``: the component along the
    direction is scaled by ``coef`` and the rest is kept (``coef=0`` is ``ProjectOut``)."""

    def __init__(self, hook: HookSpec, direction: Any, coef: float, *, rows: IndexSpec = None,
                 positions: IndexSpec = None, heads: IndexSpec = None) -> None:
        super().__init__("orthogonal_decomp", hook, value=direction, coef=coef, rows=rows, positions=positions,
                         heads=heads)


class ProjectionCap(Intervention):
    """Neuronpedia's ``PROJECTION_CAP`` steering: the projection ``p = x . u`` of each selected
    token (and head) onto ``u = direction / |direction|`` is clamped into ``[min, max]``:
    ``x += (clamp(p, min, max) - p) u``. Give ``min``, ``max`` or both."""

    def __init__(self, hook: HookSpec, direction: Any, *, min: Optional[float] = None,
                 max: Optional[float] = None, rows: IndexSpec = None, positions: IndexSpec = None,
                 heads: IndexSpec = None) -> None:
        super().__init__("projection_cap", hook, value=direction, projection_min=min, projection_max=max,
                         rows=rows, positions=positions, heads=heads)


class MeanAblate(Intervention):
    """Mean-ablation computed in the same run.

    ``over="batch"``: ``x[S]`` = the mean of x over all batch rows, per position (rows should
    have equal lengths). ``over="pos"``: the mean of x over each row's real positions.
    """

    def __init__(self, hook: HookSpec, over: str = "batch", *, rows: IndexSpec = None,
                 positions: IndexSpec = None, heads: IndexSpec = None, dims: IndexSpec = None) -> None:
        if over not in ("batch", "pos"):
            raise ValueError(f"MeanAblate.over must be 'batch' or 'pos', got {over!r}")
        super().__init__(f"mean_{over}", hook, rows=rows, positions=positions, heads=heads, dims=dims)

    @property
    def over(self) -> str:
        return self.kind[len("mean_"):]


class PatchRows(Intervention):
    """Resample ablation / patching between items of one batch: ``x[b, S] = x[source_rows[b], S]``
    (the sources read before any write).

    ``source_rows`` is one source row per batch row (``[2, 0, 1]``; a row that is its own
    source is unchanged), or a mapping ``{row: source}`` that edits only those rows (e.g. put a
    clean row 0 and a corrupted row 1 in one batch and patch with ``{1: 0}``).
    """

    def __init__(self, hook: HookSpec, source_rows: Union[Sequence[int], Mapping[int, int]], *,
                 rows: IndexSpec = None, positions: IndexSpec = None, heads: IndexSpec = None,
                 dims: IndexSpec = None) -> None:
        super().__init__("patch_rows", hook, source_rows=source_rows, rows=rows, positions=positions,
                         heads=heads, dims=dims)


class PatchFromCache(Intervention):
    """Activation patching from a run kept on the server: ``x[b, S] = c[source_rows[b], S]``,
    ``c`` the same hook in the run kept as ``cached_run`` (``Model.run(..., cache_as=NAME)``).

    ``source_rows`` names a cached row per batch row; None: row b when the batches are equal,
    row 0 when the cached run has one row. Positions count real tokens from 0 in both runs
    (negative ones from each run's own row end) and must be real in both; the cached value must
    have this run's shape but for the batch (the same padded length). E.g. keep the clean run,
    then ``PatchFromCache("blocks.3.hook_resid_pre", "clean", positions=[4])`` on the corrupted
    one. Errors: ``glassbox.NotFound`` (expired or never cached), ``glassbox.FailedPrecondition`` (another
    model), ``glassbox.InvalidArgument`` (hook not kept, shapes differ).
    """

    def __init__(self, hook: HookSpec, cached_run: str, *, source_rows: Optional[Sequence[int]] = None,
                 rows: IndexSpec = None, positions: IndexSpec = None, heads: IndexSpec = None,
                 dims: IndexSpec = None) -> None:
        super().__init__("patch_cached", hook, cached_run=cached_run, source_rows=source_rows, rows=rows,
                         positions=positions, heads=heads, dims=dims)


#: What ``interventions=`` accepts: one Intervention or a sequence of them (applied in order).
Interventions = Union[None, Intervention, Sequence[Intervention]]


def intervention_protos(spec: Interventions, batch: int) -> list:
    if spec is None:
        return []
    items = [spec] if isinstance(spec, Intervention) else list(spec)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Intervention):
            raise TypeError(
                f"interventions[{i}] must be an Intervention (Zero, Scale, Add, Set, MeanAblate, "
                f"PatchRows, PatchFromCache), not {type(item).__name__}"
            )
        out.append(item._to_proto(batch))
    return out
