"""Lowerings of data movement: reshapes, transposes, slices, concatenation, padding, tiling, reversal, resize.

Values stay in the layout they arrive in where the op allows (a slice of an
NHWC tensor slices the NHWC tensor), so they do not force transposes.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import torch

from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.lowering.elementwise import bool_to_float
from delegate_sdk_arm_ethos.lowering.registry import lowers
from delegate_sdk_arm_ethos.lowering.values import (
    NHWC,
    LoweringError,
    Val,
    first_tensor,
    inv,
    norm_dim,
    shape_of,
)

if TYPE_CHECKING:
    from delegate_sdk_arm_ethos.lowering.driver import Lowerer

# values that pass through unchanged (a bool -> float32 copy aside)
IDENTITY_OPS = {
    "aten.clone.default", "aten.alias.default", "aten.detach.default", "aten.contiguous.default",
    "aten.lift_fresh_copy.default", "aten._to_copy.default",
}
RESHAPE_OPS = {
    "aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.unsqueeze.default",
    "aten.squeeze.default", "aten.squeeze.dim", "aten.squeeze.dims", "aten.flatten.using_ints",
    "aten.view_copy.default",
}


@lowers(*sorted(IDENTITY_OPS))
def identity(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    if x.dtype == "bool" and first_tensor(node.meta.get("val")).dtype != torch.bool:
        return bool_to_float(lw, node)
    return Val(x.shape, x.dtype, x.q, dict(x.names), x.const)


@lowers(*sorted(RESHAPE_OPS))
def reshape(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    out_shape = shape_of(node)
    if tuple(out_shape) == x.shape:
        return Val(x.shape, x.dtype, x.q, dict(x.names), x.const)
    return Val(tuple(out_shape), x.dtype, x.q, {"std": lw.b.reshape(lw.std(x), out_shape)})


@lowers("aten.permute.default", "aten.transpose.int", "aten.t.default")
def permute(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    name = op_name(node)
    if name == "aten.permute.default":
        perm = [norm_dim(d, x.rank) for d in node.args[1]]
    elif name == "aten.t.default":
        perm = [1, 0] if x.rank == 2 else [0]
    else:
        d0, d1 = norm_dim(node.args[1], x.rank), norm_dim(node.args[2], x.rank)
        perm = list(range(x.rank))
        perm[d0], perm[d1] = perm[d1], perm[d0]
    out_shape = tuple(x.shape[p] for p in perm)
    if "nhwc" in x.names and "std" not in x.names:
        from_nhwc = inv(NHWC)
        y = lw.b.transpose(x.names["nhwc"], [from_nhwc[p] for p in perm])
    else:
        y = lw.b.transpose(lw.std(x), perm)
    return Val(out_shape, x.dtype, x.q, {"std": y})


@lowers("aten.slice.Tensor")
def take_slice(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    dim = norm_dim(node.args[1] if len(node.args) > 1 else 0, x.rank)
    start = node.args[2] if len(node.args) > 2 else None
    end = node.args[3] if len(node.args) > 3 else None
    step = node.args[4] if len(node.args) > 4 else 1
    n = x.shape[dim]
    start, end, _ = slice(start, end, 1).indices(n)
    end = max(end, start)
    out_shape = shape_of(node)
    layout = lw.layout_of(x) if x.rank == 4 else "std"
    ax = NHWC.index(dim) if layout == "nhwc" else dim
    t = lw.get(x, layout)
    lshape = list(lw.b.info[t].shape)
    count = out_shape[dim]
    begin = [0] * x.rank
    begin[ax] = start
    if step == 1:
        size = list(lshape)
        size[ax] = count
        y = lw.b.slice(t, begin, size)
        return lw.new_val(out_shape, x.q, layout, y, x.dtype)
    # strided: take count*step elements (padding the tail), fold the step into a new axis, keep index 0
    span = count * step
    avail = n - start
    size = list(lshape)
    size[ax] = min(span, avail)
    t = lw.b.slice(t, begin, size)
    if span > avail:
        pads = [0] * (2 * x.rank)
        pads[2 * ax + 1] = span - avail
        t = lw.b.pad(t, pads, x.q.zero_point if x.q else 0)
    folded = lshape[:ax] + [count, step] + lshape[ax + 1:]
    t = lw.b.reshape(t, folded)
    size = list(folded)
    size[ax + 1] = 1
    t = lw.b.slice(t, [0] * len(folded), size)
    res = list(lshape)
    res[ax] = count
    y = lw.b.reshape(t, res)
    return lw.new_val(out_shape, x.q, layout, y, x.dtype)


@lowers("aten.select.int")
def select(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    dim = norm_dim(node.args[1], x.rank)
    idx = node.args[2]
    idx = idx + x.shape[dim] if idx < 0 else idx
    begin = [0] * x.rank
    begin[dim] = idx
    size = list(x.shape)
    size[dim] = 1
    t = lw.b.slice(lw.std(x), begin, size)
    out_shape = shape_of(node)
    return Val(tuple(out_shape), x.dtype, x.q, {"std": lw.b.reshape(t, out_shape)})


@lowers("aten.cat.default")
def cat(lw: Lowerer, node: torch.fx.Node) -> Val:
    tensors = [lw.val(a) for a in node.args[0]]
    out_shape = shape_of(node)
    dim = norm_dim(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0), len(out_shape))
    tensors = [t for t in tensors if int(np.prod(t.shape)) > 0 and t.rank == len(out_shape)]
    if all(t.dtype == "bool" for t in tensors):
        names = [lw.std(t) for t in tensors]
        return Val(tuple(out_shape), "bool", None, {"std": lw.b.concat(names, dim)})
    out_q = lw.out_q(node)
    layout = lw.pick_layout(out_shape, tensors) if all(t.rank == 4 for t in tensors) else "std"
    ax = NHWC.index(dim) if layout == "nhwc" else dim
    parts = []
    for t in tensors:
        if t.const is not None:
            t = Val(t.shape, t.dtype, out_q, {}, t.const)
        assert t.q is not None
        parts.append(lw.requant(lw.get(t, layout), t.q, out_q))
    y = parts[0] if len(parts) == 1 else lw.b.concat(parts, ax)
    return lw.new_val(out_shape, out_q, layout, y)


@lowers("aten.split_with_sizes.default", "aten.split.Tensor")
def split(lw: Lowerer, node: torch.fx.Node) -> tuple[Val, ...]:
    x = lw.val(node.args[0])
    dim = norm_dim(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0), x.rank)
    vals = node.meta["val"]
    layout = lw.layout_of(x) if x.rank == 4 else "std"
    ax = NHWC.index(dim) if layout == "nhwc" else dim
    t = lw.get(x, layout)
    lshape = list(lw.b.info[t].shape)
    outs = []
    off = 0
    for v in vals:
        shape = tuple(int(d) for d in v.shape)
        begin = [0] * x.rank
        begin[ax] = off
        size = list(lshape)
        size[ax] = shape[dim]
        outs.append(lw.new_val(shape, x.q, layout, lw.b.slice(t, begin, size), x.dtype))
        off += shape[dim]
    return tuple(outs)


@lowers("aten.constant_pad_nd.default")
def pad(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    pad = list(node.args[1])
    value = float(node.args[2]) if len(node.args) > 2 else float(node.kwargs.get("value", 0.0))
    q = x.q
    assert q is not None
    pads = [0] * (2 * x.rank)
    for i in range(len(pad) // 2):
        d = x.rank - 1 - i
        pads[2 * d], pads[2 * d + 1] = pad[2 * i], pad[2 * i + 1]
    layout = lw.layout_of(x) if x.rank == 4 else "std"
    if layout == "nhwc":
        pads = [v for p in NHWC for v in (pads[2 * p], pads[2 * p + 1])]
    t = lw.get(x, layout)
    if any(p < 0 for p in pads):
        info = lw.b.info[t]
        begin = [max(0, -pads[2 * i]) for i in range(x.rank)]
        size = [info.shape[i] - begin[i] - max(0, -pads[2 * i + 1]) for i in range(x.rank)]
        t = lw.b.slice(t, begin, size)
        pads = [max(0, p) for p in pads]
    pv = int(q.quantize(np.array([value]))[0])
    y = lw.b.pad(t, pads, pv)
    return lw.new_val(shape_of(node), q, layout, y)


@lowers("aten.expand.default")
def expand(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    out_shape = shape_of(node)
    if tuple(out_shape) == x.shape:
        return identity(lw, node)
    src = (1,) * (len(out_shape) - x.rank) + x.shape
    t = lw.b.reshape(lw.std(x), src)
    mult = [o // s if s != o else 1 for s, o in zip(src, out_shape)]
    return Val(tuple(out_shape), x.dtype, x.q, {"std": lw.b.tile(t, mult)})


@lowers("aten.repeat.default")
def repeat(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    reps = list(node.args[1])
    src = (1,) * (len(reps) - x.rank) + x.shape
    t = lw.b.reshape(lw.std(x), src)
    return Val(shape_of(node), x.dtype, x.q, {"std": lw.b.tile(t, reps)})


@lowers("aten.flip.default")
def flip(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    dims = sorted({norm_dim(d, x.rank) for d in node.args[1] if x.shape[norm_dim(d, x.rank)] > 1})
    t = lw.std(x) if dims else None
    for d in dims:
        # Ethos-U55 reverses only along H and W: view the tensor as [pre, n, 1, post] so the
        # flipped axis is H of Vela's 4-D (N, H, W, C) view, whatever the rank.
        pre, n, post = int(np.prod(x.shape[:d])), x.shape[d], int(np.prod(x.shape[d + 1:]))
        t = lw.b.reshape(lw.b.reverse(lw.b.reshape(t, (pre, n, 1, post)), 1), x.shape)
    if t is None:
        return identity(lw, node)
    return Val(x.shape, x.dtype, x.q, {"std": t})


@lowers("aten.upsample_nearest2d.vec")
def upsample_nearest(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    out_shape = shape_of(node)
    ih, iw = x.shape[2], x.shape[3]
    oh, ow = out_shape[2], out_shape[3]
    if oh % ih or ow % iw:
        raise LoweringError("nearest upsampling needs integer scale factors")
    fy, fx = oh // ih, ow // iw
    # torch nearest: src = floor(dst / f). TOSA nearest rounds to the closest source position,
    # so shift the sampling grid by -(f-1)/2 source steps (offset in 1/(2f) units) to make it floor.
    scale = [2 * fy, 2, 2 * fx, 2]
    offset = [-(fy - 1), -(fx - 1)]
    # TOSA: OH - 1 = ((IH - 1) * scale_n - offset + border) / scale_d
    border = [(oh - 1) * scale[1] - (ih - 1) * scale[0] + offset[0],
              (ow - 1) * scale[3] - (iw - 1) * scale[2] + offset[1]]
    y = lw.b.resize(lw.nhwc(x), scale, offset, border, "nearest",
                    [out_shape[0], oh, ow, out_shape[1]], x.dtype)
    return lw.new_val(out_shape, x.q, "nhwc", y)


@lowers("aten.upsample_bilinear2d.vec")
def upsample_bilinear(lw: Lowerer, node: torch.fx.Node) -> Val:
    """RESIZE BILINEAR: int32 result in units of 1/(scale_y_n * scale_x_n), then RESCALE."""
    x = lw.val(node.args[0])
    align = bool(node.args[2]) if len(node.args) > 2 else False
    out_shape = shape_of(node)
    q = x.q
    assert q is not None
    params = [bilinear_params(i, o, align) for i, o in zip(x.shape[2:], out_shape[2:])]
    scale = [params[0][0], params[0][1], params[1][0], params[1][1]]
    offset = [params[0][2], params[1][2]]
    border = [params[0][3], params[1][3]]
    acc_dtype = "int32" if lw.act == "int8" else "int48"
    y = lw.b.resize(lw.nhwc(x), scale, offset, border, "bilinear",
                    [out_shape[0], out_shape[2], out_shape[3], out_shape[1]], acc_dtype)
    # RESIZE interpolates raw codes with weights summing to N = scale_y_n * scale_x_n, so the
    # zero point comes out as zp * N too: code / N is already the output code (output q = input q).
    out = lw.rescale(y, [Fraction(1, scale[0] * scale[2])], 0, 0, q.dtype)
    return lw.new_val(out_shape, q, "nhwc", out)


def bilinear_params(n_in: int, n_out: int, align_corners: bool) -> tuple[int, int, int, int]:
    """TOSA RESIZE (scale_n, scale_d, offset, border) along one axis matching torch's bilinear sampling.

    TOSA samples input position (o * scale_d + offset) / scale_n; torch samples
    (o + 0.5) * in / out - 0.5 (half-pixel) or o * (in - 1) / (out - 1) (align_corners).
    """
    if align_corners and n_out > 1:
        n, d, off = max(n_out - 1, 1), max(n_in - 1, 1) if n_in > 1 else 1, 0
        if n_in == 1:
            n, d = 1, 1
    else:
        n, d, off = 2 * n_out, 2 * n_in, n_in - n_out
    border = (n_out - 1) * d - (n_in - 1) * n + off
    g = math.gcd(math.gcd(n, d), math.gcd(off, border))
    return n // g, d // g, off // g, border // g
