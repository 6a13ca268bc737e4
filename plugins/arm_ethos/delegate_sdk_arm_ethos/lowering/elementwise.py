"""Lowerings of elementwise arithmetic, clamps, comparisons, boolean logic and where.

add / sub / maximum / minimum rescale every operand to one shared int32 unit
and combine there; mul multiplies int32 codes and rescales once; clamps are a
CLAMP in the input's own quantization. Comparisons and logic (U85 only) give
bool tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import torch

from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.lowering.registry import lowers
from delegate_sdk_arm_ethos.lowering.values import NHWC, LoweringError, Val, shape_of
from delegate_sdk_arm_ethos.quant import QParams, to_fraction

if TYPE_CHECKING:
    from delegate_sdk_arm_ethos.lowering.driver import Lowerer

COMPARISONS = tuple(f"aten.{k}.{o}" for k in ("gt", "ge", "lt", "le", "eq", "ne") for o in ("Tensor", "Scalar"))
# bool logic; bitwise ops on bool tensors are the same ops
LOGICAL = ("aten.logical_and.default", "aten.logical_or.default", "aten.logical_xor.default",
           "aten.logical_not.default", "aten.bitwise_and.Tensor", "aten.bitwise_or.Tensor",
           "aten.bitwise_xor.Tensor", "aten.bitwise_not.default")


def _binary_operands(lw: Lowerer, node: torch.fx.Node) -> tuple[Val, Val]:
    return lw.val(node.args[0]), lw.val(node.args[1])


@lowers("aten.add.Tensor", "aten.add.Scalar", "aten.sub.Tensor", "aten.sub.Scalar", "aten.rsub.Scalar")
def add(lw: Lowerer, node: torch.fx.Node) -> Val:
    name = op_name(node)
    a, b = _binary_operands(lw, node)
    alpha = float(node.kwargs.get("alpha", node.args[2] if len(node.args) > 2 else 1))
    sign_a, sign_b = 1.0, alpha
    if name.startswith("aten.sub"):
        sign_b = -alpha
    elif name == "aten.rsub.Scalar":
        sign_a, sign_b = -alpha, 1.0
    out_shape = shape_of(node)
    out_q = lw.out_q(node)
    return _linear_combination(lw, out_shape, out_q, [(a, sign_a), (b, sign_b)], "ADD")


def _common_int32(lw: Lowerer, out_shape: Sequence[int], terms: list[tuple[Val, float]]) -> tuple[
        str, list[str], Fraction]:
    """Each coef * term as int32 in one shared unit, broadcast to the output rank.

    The unit is 2**-20 (int8) / 2**-15 (int16) of twice the largest scaled
    term scale, so sums carry ~20 extra bits and cannot overflow; constant
    terms are quantized straight to that unit.
    """
    extra = 20 if lw.act == "int8" else 15
    act_terms = [(v, c) for v, c in terms if v.const is None]
    scales = [abs(c) * v.q.scale for v, c in act_terms if v.q is not None and c != 0]
    if not scales:
        raise LoweringError("elementwise op with no activation operand")
    unit = 2 * to_fraction(max(scales)) / (1 << extra)
    layout = lw.pick_layout(out_shape, [v for v, _ in act_terms])
    rank = len(out_shape)
    names: list[str] = []
    for v, c in terms:
        if v.const is not None:
            c32 = np.clip(np.round(np.nan_to_num(c * np.asarray(v.const, dtype=np.float64) / float(unit))),
                          -(2**31), 2**31 - 1)
            c32 = c32.reshape((1,) * (rank - c32.ndim) + c32.shape)
            if layout == "nhwc":
                c32 = c32.transpose(NHWC)
            names.append(lw.b.const(c32, "int32"))
            continue
        assert v.q is not None
        scale = to_fraction(abs(c)) * to_fraction(v.q.scale) / unit
        t = lw.to_int32(lw.broadcast_operand(v, out_shape, layout), v.q, scale)
        if c < 0:
            zero = lw.b.const(np.zeros((1,) * rank), "int32")
            t = lw.b.elementwise("SUB", zero, t, lw.b.info[t].shape, "int32")
        names.append(t)
    return layout, names, unit


def _full_size(lw: Lowerer, t: str, lshape: Sequence[int]) -> str:
    """Broadcast ``t`` to ``lshape`` (only needed when every operand of an op was broadcast)."""
    info = lw.b.info[t]
    if list(info.shape) == list(lshape):
        return t
    if info.dtype == "int32":
        zero = lw.b.const(np.zeros((1,) * len(lshape)), "int32")
        return lw.b.elementwise("ADD", t, zero, lshape, "int32")
    if info.dtype == "bool":
        true = lw.b.const(np.ones((1,) * len(lshape), dtype=np.bool_), "bool")
        return lw.b.elementwise("LOGICAL_AND", t, true, lshape, "bool")
    return lw.b.tile(t, [o if i == 1 else 1 for i, o in zip(info.shape, lshape)])


def _bshape(lw: Lowerer, a: str, b: str) -> list[int]:
    return list(np.broadcast_shapes(lw.b.info[a].shape, lw.b.info[b].shape))


def _linear_combination(lw: Lowerer, out_shape: Sequence[int], out_q: QParams, terms: list[tuple[Val, float]],
                        combine: str) -> Val:
    """sum(coef * term) (combine="ADD") or MAXIMUM/MINIMUM of the terms, then requantize."""
    layout, names, unit = _common_int32(lw, out_shape, terms)
    acc = names[0]
    for t in names[1:]:
        acc = lw.b.elementwise(combine, acc, t, _bshape(lw, acc, t), "int32")
    acc = _full_size(lw, acc, lw.lshape(out_shape, layout))
    y = lw.rescale(acc, [unit / to_fraction(out_q.scale)], 0, out_q.zero_point, out_q.dtype)
    return lw.new_val(out_shape, out_q, layout, y)


@lowers(*COMPARISONS)
def compare(lw: Lowerer, node: torch.fx.Node) -> Val:
    kind = op_name(node).split(".")[1]
    a, b = _binary_operands(lw, node)
    out_shape = shape_of(node)
    layout, (ta, tb), _ = _common_int32(lw, out_shape, [(a, 1.0), (b, 1.0)])
    if kind in ("lt", "le"):
        ta, tb = tb, ta
    opname = {"gt": "GREATER", "lt": "GREATER", "ge": "GREATER_EQUAL", "le": "GREATER_EQUAL",
              "eq": "EQUAL", "ne": "EQUAL"}[kind]
    y = lw.b.elementwise(opname, ta, tb, _bshape(lw, ta, tb), "bool")
    if kind == "ne":
        y = lw.b.unary("LOGICAL_NOT", y)
    y = _full_size(lw, y, lw.lshape(out_shape, layout))
    return lw.new_val(out_shape, None, layout, y, "bool")


@lowers(*LOGICAL)
def logical(lw: Lowerer, node: torch.fx.Node) -> Val:
    kind = op_name(node).split(".")[1].replace("bitwise_", "logical_")
    out_shape = shape_of(node)
    vals = [lw.val(a) for a in node.args[:2] if isinstance(a, torch.fx.Node)]
    layout = lw.pick_layout(out_shape, vals)
    names = [lw.broadcast_operand(v, out_shape, layout) for v in vals]
    if kind == "logical_not":
        y = lw.b.unary("LOGICAL_NOT", names[0])
    else:
        y = lw.b.elementwise(kind.upper(), names[0], names[1], _bshape(lw, *names), "bool")
    return lw.new_val(out_shape, None, layout, _full_size(lw, y, lw.lshape(out_shape, layout)), "bool")


@lowers("aten.where.self")
def where(lw: Lowerer, node: torch.fx.Node) -> Val:
    cond, a, b = (lw.val(x) for x in node.args[:3])
    out_shape = shape_of(node)
    out_q = lw.out_q(node)
    layout = lw.pick_layout(out_shape, [v for v in (a, b, cond) if v.dtype != "bool"] or [cond])
    branches = []
    for v in (a, b):
        if v.const is not None:
            v = Val(v.shape, v.dtype, out_q, {}, v.const)
        assert v.q is not None
        t = lw.broadcast_operand(v, out_shape, layout)
        branches.append(lw.requant(t, v.q, out_q))
    c = lw.broadcast_operand(cond, out_shape, layout)
    lshape = lw.lshape(out_shape, layout)
    # SELECT broadcasts; torch's output shape is the broadcast of the three operands
    y = lw.b.select(c, branches[0], branches[1], lshape)
    return lw.new_val(out_shape, out_q, layout, y)


def bool_to_float(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    out_q = lw.out_q(node)
    layout = lw.layout_of(x)
    t = lw.get(x, layout)
    lshape = lw.b.info[t].shape
    one = int(out_q.quantize(np.array([1.0]))[0])
    y = lw.b.select(t, lw.b.const(np.full(lshape, one), out_q.dtype),
                    lw.b.const(np.full(lshape, out_q.zero_point), out_q.dtype), lshape)
    return lw.new_val(x.shape, out_q, layout, y)


@lowers("aten.maximum.default", "aten.minimum.default")
def minmax(lw: Lowerer, node: torch.fx.Node) -> Val:
    a, b = _binary_operands(lw, node)
    combine = "MAXIMUM" if op_name(node) == "aten.maximum.default" else "MINIMUM"
    return _linear_combination(lw, shape_of(node), lw.out_q(node), [(a, 1.0), (b, 1.0)], combine)


@lowers("aten.mul.Tensor", "aten.mul.Scalar", "aten.div.Tensor", "aten.div.Scalar")
def mul(lw: Lowerer, node: torch.fx.Node) -> Val:
    name = op_name(node)
    a, b = _binary_operands(lw, node)
    out_shape = shape_of(node)
    out_q = lw.out_q(node)
    if name.startswith("aten.div"):
        if b.const is None:
            raise LoweringError("division by a tensor")
        if node.kwargs.get("rounding_mode") is not None:
            raise LoweringError("division with rounding_mode")
        with np.errstate(divide="ignore"):
            b = Val(b.shape, b.dtype, None, {}, 1.0 / b.const)
    if a.const is not None and b.const is None:
        a, b = b, a
    assert a.q is not None
    layout = lw.pick_layout(out_shape, [a, b])
    lshape = lw.lshape(out_shape, layout)
    a32 = lw.to_int32(lw.broadcast_operand(a, out_shape, layout), a.q, Fraction(1))
    if b.const is not None:
        c = np.asarray(b.const, dtype=np.float64)
        amax = float(np.abs(c[np.isfinite(c)]).max()) if np.isfinite(c).any() else 0.0
        # 15 bits for the constant keeps |product| < 2**23, far from int32 overflow.
        cscale = amax / 32767 if amax > 0 else 1.0
        cq = np.clip(np.round(np.nan_to_num(c, posinf=amax, neginf=-amax) / cscale), -32767, 32767)
        cq = cq.reshape((1,) * (len(out_shape) - cq.ndim) + cq.shape)
        if layout == "nhwc" and cq.ndim == 4:
            cq = cq.transpose(NHWC)
        b32 = lw.b.const(cq, "int32")
        bscale = to_fraction(cscale)
    else:
        assert b.q is not None
        b32 = lw.to_int32(lw.broadcast_operand(b, out_shape, layout), b.q, Fraction(1))
        bscale = to_fraction(b.q.scale)
    prod = lw.b.elementwise("MUL", a32, b32, list(np.broadcast_shapes(lw.b.info[a32].shape,
                                                                       lw.b.info[b32].shape)), "int32")
    prod = _full_size(lw, prod, lshape)
    scale = to_fraction(a.q.scale) * bscale / to_fraction(out_q.scale)
    y = lw.rescale(prod, [scale], 0, out_q.zero_point, out_q.dtype)
    return lw.new_val(out_shape, out_q, layout, y)


@lowers("aten.relu.default", "aten.relu6.default", "aten.hardtanh.default", "aten.clamp.default")
def clamp(lw: Lowerer, node: torch.fx.Node) -> Val:
    name = op_name(node)
    x = lw.val(node.args[0])
    if name == "aten.relu.default":
        lo, hi = 0.0, None
    elif name == "aten.relu6.default":
        lo, hi = 0.0, 6.0
    elif name == "aten.hardtanh.default":
        lo = float(node.args[1]) if len(node.args) > 1 else float(node.kwargs.get("min_val", -1.0))
        hi = float(node.args[2]) if len(node.args) > 2 else float(node.kwargs.get("max_val", 1.0))
    else:
        lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
        hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max")
    q = x.q
    assert q is not None
    qlo = q.qmin if lo is None else int(q.quantize(np.array([float(lo)]))[0])
    qhi = q.qmax if hi is None else int(q.quantize(np.array([float(hi)]))[0])
    qlo = min(qlo, qhi)  # torch: max wins when min > max
    layout = lw.layout_of(x)
    y = lw.b.clamp(lw.get(x, layout), qlo, qhi)
    return lw.new_val(x.shape, q, layout, y)
