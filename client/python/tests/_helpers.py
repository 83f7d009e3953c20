"""Helpers shared by the tests: reference fixtures and comparisons."""

from __future__ import annotations

import json
import struct
from functools import lru_cache
from pathlib import Path
from typing import Dict

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
DEMO_MODEL = REPO_ROOT / "models" / "demo"  # the shipped trained model (models/demo/README.md)
MODELS = ("tiny-gpt2", "tiny-llama")

_SAFETENSORS_DTYPES = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "F16": "<f2"}


@lru_cache(maxsize=None)
def reference(model: str, part: str = "") -> Dict[str, np.ndarray]:
    """tests/fixtures/expected/<model>[.<part>].safetensors, read without the safetensors package.

    ``part``: "" (activations), "interventions", "patching" or "analyses".
    """
    path = FIXTURES / "expected" / (f"{model}.{part}.safetensors" if part else f"{model}.safetensors")
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = memoryview(data)[8 + header_len :]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(entry["shape"])
    return out


def rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Norm-relative error ||a - e|| / ||e||, over finite entries (which must coincide)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    # Non-finite entries (masked attention scores are -inf) must match exactly.
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    diff = np.linalg.norm(actual[finite] - expected[finite])
    scale = np.linalg.norm(expected[finite])
    return float(diff / scale) if scale > 0 else float(diff)


def ragged_rows(model: str):
    """The fixture's three rows of lengths 11, 7, 4 (right-padded batch), unpadded."""
    ref = reference(model)
    ids, mask = ref["right.input_ids"], ref["right.attention_mask"]
    return [row[m.astype(bool)].tolist() for row, m in zip(ids, mask)]
