"""Sparse autoencoders served with a model: their metadata, encodings, splices and steering.

The server loads SAEs at start (``glassboxd --sae NAME=PATH@MODEL``); ``Model.saes()`` lists
those attached to a model, ``Model.sae_encode`` runs the model to the SAE's hook and encodes
each token, ``Model.sae_decode`` decodes activations, and ``run``/``run_with_cache`` take
``saes=`` (splices, with feature edits, SAELens ``HookedSAETransformer`` semantics) and
``sae_steering=`` (add c * W_dec[i] at the SAE's hook).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np

from ._proto.glassbox.v1 import glassbox_pb2 as pb
from ._types import IndexSpec, indices


@dataclass(frozen=True)
class SaeInfo:
    """An SAE the server holds, attached to ``model`` at ``hook``."""

    name: str
    model: str
    hook: str
    architecture: str  # standard, jumprelu, gated, topk
    d_in: int
    d_sae: int
    normalization: str  # none, constant_norm_rescale, layer_norm, expected_average_only_in
    dtype: str  # as saved; the server computes in f32
    apply_b_dec_to_input: bool
    reshape_hook_z: bool
    k: int  # topk
    rescale_acts_by_decoder_norm: bool
    path: str
    neuronpedia_id: str
    sae_lens_version: str
    metadata: Dict[str, Any]  # the cfg.json's metadata
    warnings: Tuple[str, ...]
    resident_bytes: int

    @classmethod
    def from_proto(cls, p: "pb.SaeInfo") -> "SaeInfo":
        return cls(
            name=p.name, model=p.model, hook=p.hook, architecture=p.architecture, d_in=int(p.d_in),
            d_sae=int(p.d_sae), normalization=p.normalization, dtype=p.dtype,
            apply_b_dec_to_input=p.apply_b_dec_to_input, reshape_hook_z=p.reshape_hook_z, k=int(p.k),
            rescale_acts_by_decoder_norm=p.rescale_acts_by_decoder_norm, path=p.path,
            neuronpedia_id=p.neuronpedia_id, sae_lens_version=p.sae_lens_version,
            metadata=json.loads(p.metadata_json or "{}"), warnings=tuple(p.warnings),
            resident_bytes=int(p.resident_bytes),
        )

    def hook_point(self, point: str) -> str:
        """The name of one of its points in a spliced run: ``hook_point("acts_post")`` ->
        "<hook>.hook_sae_acts_post" (input, acts_pre, acts_post, recons, error, output)."""
        return f"{self.hook}.hook_sae_{point}"


_EDIT_KINDS = {
    "zero": pb.FEATURE_EDIT_ZERO,
    "clamp": pb.FEATURE_EDIT_CLAMP,
    "scale": pb.FEATURE_EDIT_SCALE,
    "add": pb.FEATURE_EDIT_ADD,
}


@dataclass(frozen=True)
class FeatureEdit:
    """An edit of a spliced SAE's feature activations (a hook on hook_sae_acts_post).

    ``kind``: "zero" (a = 0), "clamp" (a = value), "scale" (a *= value), "add" (a += value);
    ``rows`` / ``positions`` select tokens (None: all; negative positions count from each row's
    last real token).
    """

    kind: Literal["zero", "clamp", "scale", "add"]
    features: IndexSpec
    value: float = 0.0
    rows: IndexSpec = None
    positions: IndexSpec = None

    def _to_proto(self) -> "pb.FeatureEdit":
        if self.kind not in _EDIT_KINDS:
            raise ValueError(f"FeatureEdit kind must be one of {sorted(_EDIT_KINDS)}, got {self.kind!r}")
        features = list(indices(self.features, "features"))
        if not features:
            raise ValueError("a FeatureEdit needs at least one feature")
        return pb.FeatureEdit(
            kind=_EDIT_KINDS[self.kind], features=features, value=float(self.value),
            rows=list(indices(self.rows, "rows")), positions=list(indices(self.positions, "positions")),
        )


@dataclass(frozen=True)
class SaeSplice:
    """Splice SAE ``sae`` in at its hook: the model sees its reconstruction (with
    ``use_error_term``, x + recon(edited) - recon(clean), so that edits act as deltas)."""

    sae: str
    use_error_term: bool = False
    edits: Sequence[FeatureEdit] = ()

    def _to_proto(self) -> "pb.SaeSplice":
        return pb.SaeSplice(sae=self.sae, use_error_term=bool(self.use_error_term),
                            edits=[e._to_proto() for e in self.edits])


@dataclass(frozen=True)
class SaeSteer:
    """Decoder-direction steering (Neuronpedia's): x += sum_i coefficient_i * W_dec[feature_i]
    at SAE ``sae``'s hook, at ``positions`` of ``rows`` (None: all). ``coefficients``: one per
    feature or one for all."""

    sae: str
    features: IndexSpec
    coefficients: Union[float, Sequence[float]] = 1.0
    rows: IndexSpec = None
    positions: IndexSpec = None

    def _to_proto(self) -> "pb.SaeSteering":
        features = list(indices(self.features, "features"))
        coefs = np.atleast_1d(np.asarray(self.coefficients, dtype=np.float64)).tolist()
        if len(coefs) == 1:
            coefs = coefs * len(features)
        if len(coefs) != len(features):
            raise ValueError(f"SaeSteer: {len(coefs)} coefficients for {len(features)} features")
        return pb.SaeSteering(sae=self.sae, features=features, coefficients=coefs,
                              rows=list(indices(self.rows, "rows")),
                              positions=list(indices(self.positions, "positions")))


#: What run(saes=...) accepts: an SAE name (spliced without the error term), a SaeSplice, or a
#: list of them.
Splices = Union[None, str, SaeSplice, Sequence[Union[str, SaeSplice]]]
#: What run(sae_steering=...) accepts.
Steering = Union[None, SaeSteer, Sequence[SaeSteer]]


def splice_protos(saes: Splices) -> List["pb.SaeSplice"]:
    if saes is None:
        return []
    if isinstance(saes, (str, SaeSplice)):
        saes = [saes]
    out = []
    for item in saes:
        if isinstance(item, str):
            item = SaeSplice(item)
        if not isinstance(item, SaeSplice):
            raise TypeError(f"saes= takes SAE names or SaeSplice objects, not {type(item).__name__}")
        out.append(item._to_proto())
    return out


def steering_protos(steering: Steering) -> List["pb.SaeSteering"]:
    if steering is None:
        return []
    if isinstance(steering, SaeSteer):
        steering = [steering]
    for item in steering:
        if not isinstance(item, SaeSteer):
            raise TypeError(f"sae_steering= takes SaeSteer objects, not {type(item).__name__}")
    return [item._to_proto() for item in steering]


@dataclass(frozen=True)
class SaeStats:
    """Reconstruction quality over the request's real tokens (of the full encoding)."""

    tokens: int
    mse: float  # mean over tokens and dims of (x - x_hat)^2
    mean_squared_error_norm: float  # mean over tokens of |x - x_hat|^2 (sae_lens evals' "mse")
    explained_variance: float
    mean_l0: float


@dataclass
class SaeEncoding:
    """Feature activations of every real token (rows after rows), sparse: token t's features
    are ``indices[offsets[t]:offsets[t+1]]`` with ``values`` (largest first for top_k).
    ``features(row, pos)`` picks one token; ``to_dense()`` gives [batch, pos, d_sae]."""

    sae: str
    d_sae: int
    tokens: Tuple[np.ndarray, ...]
    sequence_lengths: np.ndarray
    offsets: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    stats: SaeStats
    dense: Optional[np.ndarray] = None  # when asked for (dense=True)

    def _token(self, row: int, pos: int) -> int:
        length = int(self.sequence_lengths[row])
        p = pos + length if pos < 0 else pos
        if not 0 <= p < length:
            raise IndexError(f"position {pos} is outside row {row} ({length} tokens)")
        return int(self.sequence_lengths[:row].sum()) + p

    def features(self, row: int, pos: int) -> Tuple[np.ndarray, np.ndarray]:
        """(feature indices, activations) of one token; negative ``pos`` counts from the end."""
        t = self._token(row, pos)
        begin, end = self.offsets[t], self.offsets[t + 1]
        return self.indices[begin:end], self.values[begin:end]

    def to_dense(self) -> np.ndarray:
        """[batch, pos, d_sae] float32 from the sparse features (0 elsewhere and at padding)."""
        width = int(self.sequence_lengths.max()) if len(self.sequence_lengths) else 0
        out = np.zeros((len(self.sequence_lengths), width, self.d_sae), dtype=np.float32)
        t = 0
        for b, length in enumerate(self.sequence_lengths):
            for p in range(int(length)):
                begin, end = self.offsets[t], self.offsets[t + 1]
                out[b, p, self.indices[begin:end]] = self.values[begin:end]
                t += 1
        return out

    @classmethod
    def from_proto(cls, sae: str, r: "pb.SaeEncodeResponse") -> "SaeEncoding":
        dense = None
        if r.dense.shape:
            dense = np.asarray(r.dense.values, dtype=np.float32).reshape(tuple(r.dense.shape))
        s = r.stats
        return cls(
            sae=sae, d_sae=int(r.d_sae),
            tokens=tuple(np.asarray(t.ids, dtype=np.int64) for t in r.tokens),
            sequence_lengths=np.asarray(r.sequence_lengths, dtype=np.int64),
            offsets=np.asarray(r.offsets, dtype=np.int64),
            indices=np.asarray(r.indices, dtype=np.int32),
            values=np.asarray(r.values, dtype=np.float32),
            stats=SaeStats(int(s.tokens), s.mse, s.mean_squared_error_norm, s.explained_variance, s.mean_l0),
            dense=dense,
        )


def decode_request(sae: str, acts: Union[SaeEncoding, np.ndarray, Any]) -> "pb.SaeDecodeRequest":
    """Activations to decode: an SaeEncoding (its sparse features, one vector per real token)
    or a dense array [..., d_sae] (one vector per leading index)."""
    if isinstance(acts, SaeEncoding):
        return pb.SaeDecodeRequest(sae=sae, offsets=acts.offsets.tolist(), indices=acts.indices.tolist(),
                                   values=acts.values.tolist())
    array = np.asarray(acts, dtype=np.float32)
    if array.ndim == 0:
        raise ValueError("decode needs activations [..., d_sae]")
    return pb.SaeDecodeRequest(sae=sae, dense=array.reshape(-1).tolist())
