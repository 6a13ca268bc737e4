"""Pooling MIL ops: max_pool, avg_pool, l2_pool (padding and ceil mode as MIL's shape inference)."""

from __future__ import annotations

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_kernels.common import widen
from delegate_sdk_coreml.mil_kernels.convolution import conv_pads, window
from delegate_sdk_coreml.mil_kernels.registry import Args, kernel


def _pool(a: Args, kind: str) -> np.ndarray:
    x = widen(a["x"])
    nsp = x.ndim - 2
    ksz = a.ints("kernel_sizes")
    strides = a.ints("strides", [1] * nsp)
    ceil_mode = a.bool("ceil_mode", False)
    pads = conv_pads(a.str("pad_type", "valid"), x.shape[2:], ksz, strides, [1] * nsp, a.ints("pad", [0] * 2 * nsp))
    out_sp = []
    extra = []
    for i in range(nsp):
        size = x.shape[2 + i] + pads[i][0] + pads[i][1]
        if ceil_mode:
            o = (size - ksz[i] + strides[i] - 1) // strides[i] + 1
            # as in MIL's shape inference: a last window that starts in the right padding is dropped
            if (o - 1) * strides[i] >= x.shape[2 + i] + pads[i][0] and (pads[i][0] + pads[i][1]) > 0:
                o -= 1
        else:
            o = (size - ksz[i]) // strides[i] + 1
        out_sp.append(o)
        extra.append(max(0, (o - 1) * strides[i] + ksz[i] - size))
    if any(o <= 0 for o in out_sp):
        raise MILError(f"{kind} pool output would be empty: {out_sp}")
    full_pad = [(0, 0), (0, 0)] + [(p0, p1 + e) for (p0, p1), e in zip(pads, extra)]
    if kind == "max":
        xp = np.pad(x, full_pad, constant_values=-np.inf)
        acc = np.full((*x.shape[:2], *out_sp), -np.inf, dtype=x.dtype)
        for k in np.ndindex(*ksz):
            acc = np.maximum(acc, window(xp, k, out_sp, strides))
        return acc
    if kind == "l2":
        xp = np.pad(x, full_pad)
        acc = np.zeros((*x.shape[:2], *out_sp), dtype=x.dtype)
        for k in np.ndindex(*ksz):
            acc += np.square(window(xp, k, out_sp, strides))
        return np.sqrt(acc)
    xp = np.pad(x, full_pad)
    acc = np.zeros((*x.shape[:2], *out_sp), dtype=x.dtype)
    # divisor per output position: the real elements, or real + explicit padding (never the ceil overflow)
    real = np.pad(np.ones(x.shape[2:], dtype=x.dtype), [(p0, p1 + e) for (p0, p1), e in zip(pads, extra)])
    inside = np.pad(np.ones([s + p0 + p1 for s, (p0, p1) in zip(x.shape[2:], pads)], dtype=x.dtype),
                    [(0, e) for e in extra])
    weight = real if a.bool("exclude_padding_from_average", False) else inside
    count = np.zeros(out_sp, dtype=x.dtype)
    for k in np.ndindex(*ksz):
        acc += window(xp, k, out_sp, strides)
        count += window(weight[None, None], k, out_sp, strides)[0, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return acc / count


@kernel("max_pool")
def _max_pool(a: Args) -> np.ndarray:
    return _pool(a, "max")


@kernel("avg_pool")
def _avg_pool(a: Args) -> np.ndarray:
    return _pool(a, "avg")


@kernel("l2_pool")
def _l2_pool(a: Args) -> np.ndarray:
    return _pool(a, "l2")
