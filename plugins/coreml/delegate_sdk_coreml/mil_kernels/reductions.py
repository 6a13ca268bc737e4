"""Reduction MIL ops: reduce_* over axes, arg max/min, cumsum."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from delegate_sdk_coreml.mil_kernels.common import (
    CAST_DTYPES,
    resolve_axes,
    resolve_axis,
    widen,
)
from delegate_sdk_coreml.mil_kernels.registry import Args, Kernel, kernel


def _reduce(fn: Callable[..., np.ndarray]) -> Kernel:
    def run(a: Args) -> np.ndarray:
        x = widen(a["x"])
        axes = resolve_axes(a, "axes", x.ndim)
        with np.errstate(all="ignore"):
            return fn(x, axis=axes, keepdims=a.bool("keep_dims", False))

    return run


def _log_sum_exp(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis if axis is not None else None)


for _name, _fn in (("reduce_sum", np.sum), ("reduce_mean", np.mean), ("reduce_max", np.max),
                  ("reduce_min", np.min), ("reduce_prod", np.prod),
                  ("reduce_sum_square",
                   lambda x, axis, keepdims: np.sum(np.square(x), axis=axis, keepdims=keepdims)),
                  ("reduce_l1_norm", lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims)),
                  ("reduce_l2_norm",
                   lambda x, axis, keepdims: np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))),
                  ("reduce_log_sum", lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims))),
                  ("reduce_log_sum_exp", _log_sum_exp)):
    kernel(_name)(_reduce(_fn))


def _arg_reduce(fn: Callable[..., np.ndarray]) -> Kernel:
    def run(a: Args) -> np.ndarray:
        x = widen(a["x"])
        axis = resolve_axis(a.int("axis", -1), x.ndim)
        # NaN wins like in a max/min that propagates NaN; ties go to the first index
        out = fn(x, axis=axis)
        if a.bool("keep_dims", False):
            out = np.expand_dims(out, axis)
        return out.astype(CAST_DTYPES[a.str("output_dtype", "int32")])

    return run


kernel("reduce_argmax")(_arg_reduce(np.argmax))
kernel("reduce_argmin")(_arg_reduce(np.argmin))


@kernel("cumsum")
def _cumsum(a: Args) -> np.ndarray:
    x = widen(a["x"])
    axis = resolve_axis(a.int("axis", 0), x.ndim)
    if a.bool("reverse", False):
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis)
    if a.bool("exclusive", False):
        out = out - x
    if a.bool("reverse", False):
        out = np.flip(out, axis)
    return out
