"""Linear algebra MIL ops: matmul, linear, einsum and scaled dot-product attention."""

from __future__ import annotations

import math

import numpy as np

from delegate_sdk_coreml.mil_kernels.common import widen
from delegate_sdk_coreml.mil_kernels.registry import Args, kernel


@kernel("matmul")
def _matmul(a: Args) -> np.ndarray:
    x, y = widen(a["x"]), widen(a["y"])
    if a.bool("transpose_x", False):
        x = np.swapaxes(x, -1, -2) if x.ndim > 1 else x
    if a.bool("transpose_y", False):
        y = np.swapaxes(y, -1, -2) if y.ndim > 1 else y
    return np.matmul(x, y)


@kernel("linear")
def _linear(a: Args) -> np.ndarray:
    x, w = widen(a["x"]), widen(a["weight"])
    out = np.matmul(x, w.T)
    b = a.get("bias")
    return out if b is None else out + widen(b)


@kernel("einsum", tuple_inputs=("values",))
def _einsum(a: Args) -> np.ndarray:
    values = a["values"]
    values = values if isinstance(values, list) else [values]
    return np.einsum(a.str("equation", ""), *[widen(v) for v in values])


# --- attention


@kernel("scaled_dot_product_attention")
def _sdpa(a: Args) -> np.ndarray:
    q, k, v = widen(a["query"]), widen(a["key"]), widen(a["value"])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    mask = a.get("attn_mask")
    if mask is not None:
        mask = np.asarray(mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + widen(mask)
    with np.errstate(invalid="ignore"):
        m = np.max(scores, axis=-1, keepdims=True)
        e = np.exp(scores - m)
        return np.matmul(e / np.sum(e, axis=-1, keepdims=True), v)
