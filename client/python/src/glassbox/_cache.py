"""ActivationCache: captured activations keyed by TransformerLens hook name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterator, Mapping, Optional, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

_ATTN_ACTS = {"q", "k", "v", "z", "rot_q", "rot_k", "result", "pattern", "attn_scores"}
_MLP_ACTS = {"pre", "post", "mid", "pre_linear"}
_ACT_ALIASES = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "key": "k",
    "query": "q",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_mid": "mid",
    "mlp_post": "post",
}
_LAYER_TYPE_ALIASES = {"a": "attn", "m": "mlp", "b": "", "block": "", "blocks": "", "attention": "attn"}


def get_act_name(name: str, layer: Optional[int] = None, layer_type: Optional[str] = None) -> str:
    """TransformerLens's ``utils.get_act_name``: ``("resid_post", 3)`` -> ``"blocks.3.hook_resid_post"``.

    Examples: ``("pattern", 0)`` -> ``"blocks.0.attn.hook_pattern"``; ``("post", 1)`` ->
    ``"blocks.1.mlp.hook_post"``; ``("scale", 0, "ln1")`` -> ``"blocks.0.ln1.hook_scale"``;
    ``("scale",)`` -> ``"ln_final.hook_scale"``; ``("embed",)`` -> ``"hook_embed"``.
    """
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    name = _ACT_ALIASES.get(name, name)
    full = f"blocks.{layer}." if layer is not None else ""
    if name in _ATTN_ACTS:
        layer_type = "attn"
    elif name in _MLP_ACTS:
        layer_type = "mlp"
    elif layer_type in _LAYER_TYPE_ALIASES:
        layer_type = _LAYER_TYPE_ALIASES[layer_type]
    if layer_type:
        full += f"{layer_type}."
    full += f"hook_{name}"
    if name in ("scale", "normalized") and layer is None:
        full = f"ln_final.{full}"
    return full


CacheKey = Union[str, Tuple[str, int], Tuple[str, int, str], Tuple[str]]


class ActivationCache(Mapping[str, np.ndarray]):
    """Captured activations: a read-only mapping from hook name to numpy array.

    Keys are TransformerLens hook names (``"blocks.0.attn.hook_pattern"``; top-k reductions add
    ``"<hook>.indices"``). As in TransformerLens, ``cache["pattern", 0]`` is short for
    ``cache["blocks.0.attn.hook_pattern"]`` (see ``get_act_name``).

    Arrays are float32, float16 (captures sent as "f16") or int32 (top-k indices); "bf16"
    captures arrive as float32 arrays holding the bf16 values. Batched inputs are right-padded:
    values at positions past ``sequence_lengths[b]`` are meaningless.
    """

    def __init__(
        self,
        tensors: Mapping[str, np.ndarray],
        dim_names: Optional[Mapping[str, Tuple[str, ...]]] = None,
        sequence_lengths: Optional[np.ndarray] = None,
    ) -> None:
        self._tensors: Dict[str, np.ndarray] = dict(tensors)
        self._dim_names: Dict[str, Tuple[str, ...]] = dict(dim_names or {})
        self.sequence_lengths = sequence_lengths

    def _resolve(self, key: CacheKey) -> str:
        if isinstance(key, tuple):
            return get_act_name(*key)
        return key

    def __getitem__(self, key: CacheKey) -> np.ndarray:  # type: ignore[override]
        name = self._resolve(key)
        try:
            return self._tensors[name]
        except KeyError:
            hint = f" (from {key!r})" if name != key else ""
            raise KeyError(
                f"{name!r}{hint} is not in this cache; it holds {sorted(self._tensors)}"
            ) from None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, tuple)):
            return False
        return self._resolve(key) in self._tensors  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def dims(self, key: CacheKey) -> Tuple[str, ...]:
        """Axis names of a cached tensor, e.g. ("batch", "pos", "d_model")."""
        name = self._resolve(key)
        if name not in self._tensors:
            raise KeyError(name)
        return self._dim_names.get(name, ())

    def to_torch(self, device: Optional[Union[str, "torch.device"]] = None) -> Dict[str, "torch.Tensor"]:
        """The cache as a dict of torch tensors (needs torch: ``pip install glassbox[torch]``).

        Tensors share memory with the numpy arrays when ``device`` is None or "cpu".
        """
        try:
            import torch
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "ActivationCache.to_torch() needs torch; install it (pip install 'glassbox[torch]')"
            ) from error
        out = {}
        for name, array in self._tensors.items():
            tensor = torch.from_numpy(array)
            out[name] = tensor.to(device) if device is not None else tensor
        return out

    def __repr__(self) -> str:
        body = ", ".join(f"{name}: {list(a.shape)} {a.dtype}" for name, a in self._tensors.items())
        return f"ActivationCache({{{body}}})"
