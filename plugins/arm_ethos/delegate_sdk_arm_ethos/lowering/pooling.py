"""Lowerings of pooling and reductions.

Max / average / uniform adaptive pooling and a mean over H, W become
MAX_POOL2D / AVG_POOL2D; other means and sums REDUCE_SUM + RESCALE; amax, amin
and max/min values REDUCE_MAX / REDUCE_MIN.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.limits import POOL_MAX_KAREA, POOL_MAX_KH
from delegate_sdk_arm_ethos.lowering.registry import lowers
from delegate_sdk_arm_ethos.lowering.values import (
    NHWC,
    LoweringError,
    Val,
    norm_dim,
    pair,
    shape_of,
)
from delegate_sdk_arm_ethos.quant import to_fraction

if TYPE_CHECKING:
    from delegate_sdk_arm_ethos.lowering.driver import Lowerer


def mean_hw_as_pool(xs: Sequence[int], dims: Sequence[int]) -> bool:
    """True when mean over H, W of a 4-D tensor lowers to one unpadded AVG_POOL2D (else REDUCE_SUM).

    Within Vela's AVG_POOL2D limits (:mod:`delegate_sdk_arm_ethos.limits`): batch 1, kernel height <= 256, area <= 65536.
    """
    return (len(xs) == 4 and sorted(dims) == [2, 3] and xs[0] == 1 and xs[2] * xs[3] > 1
            and xs[2] <= POOL_MAX_KH and xs[2] * xs[3] <= POOL_MAX_KAREA)


def adaptive_stride(kernel: Sequence[int], out_hw: Sequence[int]) -> list[int]:
    """Stride of the pooling that implements uniform adaptive pooling (1 along an axis with one window)."""
    return [k if o > 1 else 1 for k, o in zip(kernel, out_hw)]


@lowers("aten.max_pool2d_with_indices.default", "aten.max_pool2d.default")
def max_pool(lw: Lowerer, node: torch.fx.Node) -> Any:
    x = lw.val(node.args[0])
    kernel = list(node.args[1])
    stride = list(node.args[2]) if len(node.args) > 2 and node.args[2] else kernel
    padding = list(node.args[3]) if len(node.args) > 3 else [0, 0]
    kernel, stride, padding = (pair(kernel), pair(stride), pair(padding))
    out_shape = shape_of(node)
    xn = lw.nhwc(x)
    pad = [padding[0], padding[0], padding[1], padding[1]]
    xn, pad = lw.fit_window(xn, x.shape[2], x.shape[3], kernel, stride, (1, 1), pad, out_shape[2:])
    y = lw.b.max_pool2d(xn, kernel, stride, pad, [out_shape[0], out_shape[2], out_shape[3], out_shape[1]])
    v = lw.new_val(out_shape, x.q, "nhwc", y)
    if op_name(node) == "aten.max_pool2d_with_indices.default":
        return (v, None)
    return v


@lowers("aten.avg_pool2d.default")
def avg_pool(lw: Lowerer, node: torch.fx.Node) -> Val:
    args = list(node.args) + [None] * 7
    x = lw.val(args[0])
    kernel = pair(args[1])
    stride = pair(args[2]) if args[2] else kernel
    padding = pair(args[3] if args[3] is not None else 0)
    count_include_pad = node.kwargs.get("count_include_pad", args[5] if args[5] is not None else True)
    out_shape = shape_of(node)
    q = x.q
    assert q is not None
    xn = lw.nhwc(x)
    h, w = x.shape[2], x.shape[3]
    pad = [padding[0], padding[0], padding[1], padding[1]]
    if count_include_pad and any(padding):
        # torch divides by the full window here; TOSA by the valid part: pad explicitly with zero.
        xn = lw.b.pad(xn, [0, 0, padding[0], padding[0], padding[1], padding[1], 0, 0], q.zero_point)
        h, w = h + 2 * padding[0], w + 2 * padding[1]
        pad = [0, 0, 0, 0]
    xn, pad = lw.fit_window(xn, h, w, kernel, stride, (1, 1), pad, out_shape[2:])
    y = lw.b.avg_pool2d(xn, kernel, stride, pad, q.zero_point, q.zero_point,
                        [out_shape[0], out_shape[2], out_shape[3], out_shape[1]])
    return lw.new_val(out_shape, q, "nhwc", y)


def _reduce_dims(lw: Lowerer, node: torch.fx.Node, x: Val) -> tuple[list[int], bool]:
    if op_name(node) in ("aten.mean.default", "aten.sum.default"):
        return list(range(x.rank)), False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(x.rank))
    if isinstance(dims, int):
        dims = [dims]
    keep = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
    return sorted({norm_dim(d, x.rank) for d in dims}), keep


@lowers("aten.mean.dim", "aten.mean.default", "aten.sum.default", "aten.sum.dim_IntList")
def mean_sum(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    dims, keep = _reduce_dims(lw, node, x)
    out_shape = shape_of(node)
    is_mean = op_name(node) in ("aten.mean.dim", "aten.mean.default")
    q = x.q
    assert q is not None
    if is_mean and mean_hw_as_pool(x.shape, dims):
        h, w = x.shape[2], x.shape[3]
        y = lw.b.avg_pool2d(lw.nhwc(x), [h, w], [1, 1], [0, 0, 0, 0], q.zero_point, q.zero_point,
                            [x.shape[0], 1, 1, x.shape[1]])
        v = lw.new_val((x.shape[0], x.shape[1], 1, 1), q, "nhwc", y)
        if keep:
            return v
        return lw.new_val(out_shape, q, "std", lw.b.reshape(lw.std(v), out_shape))
    out_q = lw.out_q(node)
    count = int(np.prod([x.shape[d] for d in dims]))
    layout = lw.layout_of(x) if x.rank == 4 else "std"
    axes = [NHWC.index(d) for d in dims] if layout == "nhwc" else dims
    t = lw.to_int32(lw.get(x, layout), q, Fraction(1))
    for ax in axes:
        t = lw.b.reduce("REDUCE_SUM", t, ax)
    scale = to_fraction(q.scale) / to_fraction(out_q.scale)
    if is_mean:
        scale /= count
    y = lw.rescale(t, [scale], 0, out_q.zero_point, out_q.dtype)
    kshape = [1 if i in dims else d for i, d in enumerate(x.shape)]
    v = lw.new_val(kshape, out_q, layout, y)
    if keep:
        return v
    return lw.new_val(out_shape, out_q, "std", lw.b.reshape(lw.std(v), out_shape))


@lowers("aten.amax.default", "aten.amin.default")
def amax(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    dims, keep = _reduce_dims(lw, node, x)
    opname = "REDUCE_MAX" if op_name(node) == "aten.amax.default" else "REDUCE_MIN"
    layout = lw.layout_of(x) if x.rank == 4 else "std"
    axes = [NHWC.index(d) for d in dims] if layout == "nhwc" else dims
    t = lw.get(x, layout)
    for ax in axes:
        t = lw.b.reduce(opname, t, ax)
    kshape = [1 if i in dims else d for i, d in enumerate(x.shape)]
    v = lw.new_val(kshape, x.q, layout, t)
    if keep:
        return v
    out_shape = shape_of(node)
    return lw.new_val(out_shape, x.q, "std", lw.b.reshape(lw.std(v), out_shape))


@lowers("aten._adaptive_avg_pool2d.default", "aten.adaptive_max_pool2d.default")
def adaptive_pool(lw: Lowerer, node: torch.fx.Node) -> Any:
    """Adaptive pooling whose windows are uniform (input divisible by output) is plain pooling."""
    x = lw.val(node.args[0])
    out_shape = shape_of(node)
    k = [x.shape[2] // out_shape[2], x.shape[3] // out_shape[3]]
    if x.shape[2] % out_shape[2] or x.shape[3] % out_shape[3]:
        raise LoweringError("adaptive pooling needs the input size divisible by the output size")
    xn = lw.nhwc(x)
    o = [out_shape[0], out_shape[2], out_shape[3], out_shape[1]]
    stride = adaptive_stride(k, out_shape[2:])
    if op_name(node) == "aten.adaptive_max_pool2d.default":
        return (lw.new_val(out_shape, x.q, "nhwc", lw.b.max_pool2d(xn, k, stride, [0, 0, 0, 0], o)), None)
    assert x.q is not None
    y = lw.b.avg_pool2d(xn, k, stride, [0, 0, 0, 0], x.q.zero_point, x.q.zero_point, o)
    return lw.new_val(out_shape, x.q, "nhwc", y)


@lowers("aten.max.dim", "aten.min.dim")
def max_dim(lw: Lowerer, node: torch.fx.Node) -> tuple[Val, None]:
    """max.dim / min.dim values (their indices are int64, which the rules require unused)."""
    x = lw.val(node.args[0])
    dim = norm_dim(node.args[1], x.rank)
    keep = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
    opname = "REDUCE_MAX" if op_name(node) == "aten.max.dim" else "REDUCE_MIN"
    layout = lw.layout_of(x) if x.rank == 4 else "std"
    t = lw.b.reduce(opname, lw.get(x, layout), NHWC.index(dim) if layout == "nhwc" else dim)
    kshape = [1 if i == dim else d for i, d in enumerate(x.shape)]
    v = lw.new_val(kshape, x.q, layout, t)
    if not keep:
        shape = [d for i, d in enumerate(x.shape) if i != dim]
        v = lw.new_val(shape, x.q, "std", lw.b.reshape(lw.std(v), shape))
    return (v, None)
