"""Sorting MIL ops: argsort and topk, stable like torch's sort."""

from __future__ import annotations

import numpy as np

from delegate_sdk_coreml.mil_kernels.common import CAST_DTYPES, resolve_axis, widen
from delegate_sdk_coreml.mil_kernels.registry import Args, kernel


def _stable_order(x: np.ndarray, axis: int, ascending: bool) -> np.ndarray:
    # ties keep their original order in both directions, as torch.sort(stable=True) does
    key = x if ascending else -x.astype(np.float64) if x.dtype.kind == "f" else -x.astype(np.int64)
    return np.argsort(key, axis=axis, kind="stable")


@kernel("argsort")
def _argsort(a: Args) -> np.ndarray:
    x = widen(a["x"])
    axis = resolve_axis(a.int("axis", -1), x.ndim)
    return _stable_order(x, axis, a.bool("ascending", False)).astype(np.int32)


@kernel("topk")
def _topk(a: Args) -> list[np.ndarray]:
    x = widen(a["x"])
    axis = resolve_axis(a.int("axis", -1), x.ndim)
    k = a.int("k", 1)
    ascending = a.bool("ascending", False)
    order = np.take(_stable_order(x, axis, ascending), np.arange(k), axis=axis)
    if not a.bool("sort", True):
        order = np.sort(order, axis=axis)
    values = np.take_along_axis(x, order, axis=axis)
    if not a.bool("return_indices", True):
        return [values]
    return [values, order.astype(CAST_DTYPES[a.str("output_indices_dtype", "int32")])]
