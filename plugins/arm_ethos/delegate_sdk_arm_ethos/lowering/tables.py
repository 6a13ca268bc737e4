"""Lowerings through TOSA TABLE: unary elementwise functions and softmax.

A function's table is computed by calling the torch op itself on every input
code (int8: 256 entries; int16: 513 points, linearly interpolated by TOSA).
Softmax is integer fixed point built on exp tables.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import torch

from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.lowering.registry import lowers
from delegate_sdk_arm_ethos.lowering.values import NHWC, Val, first_tensor, norm_dim
from delegate_sdk_arm_ethos.quant import QParams, fixed_qparams

if TYPE_CHECKING:
    from delegate_sdk_arm_ethos.lowering.driver import Lowerer

# Unary elementwise ops lowered to TABLE; the table is computed by calling the op itself.
TABLE_OPS = {
    "aten.sigmoid.default", "aten.tanh.default", "aten.gelu.default", "aten.silu.default",
    "aten.hardswish.default", "aten.hardsigmoid.default", "aten.leaky_relu.default", "aten.elu.default",
    "aten.exp.default", "aten.log.default", "aten.sqrt.default", "aten.rsqrt.default",
    "aten.reciprocal.default", "aten.abs.default", "aten.neg.default", "aten.erf.default",
    "aten.sin.default", "aten.cos.default", "aten.softplus.default", "aten.mish.default",
    "aten.pow.Tensor_Scalar", "aten.expm1.default", "aten.log1p.default",
    "aten.celu.default", "aten.selu.default", "aten.hardshrink.default", "aten.softshrink.default",
    "aten.sign.default", "aten.floor.default", "aten.ceil.default", "aten.round.default",
    "aten.trunc.default", "aten.exp2.default", "aten.log2.default", "aten.tan.default",
    "aten.atan.default", "aten.asinh.default", "aten.sinh.default", "aten.cosh.default",
    "aten.asin.default", "aten.acos.default", "aten.acosh.default", "aten.atanh.default", "aten.log10.default",
    "aten.erfinv.default", "aten.erfc.default", "aten.lgamma.default", "aten.digamma.default",
    "aten.square.default",
}
# int16 TABLE is 513 points linearly interpolated by TOSA: fine for smooth functions, wrong near jumps
# and where the derivative is unbounded, so these run at int8 only.
NOT_INT16_TABLE = {
    "aten.floor.default", "aten.ceil.default", "aten.round.default", "aten.trunc.default", "aten.sign.default",
    "aten.hardshrink.default", "aten.softshrink.default", "aten.log.default", "aten.log2.default",
    "aten.log10.default", "aten.log1p.default", "aten.reciprocal.default", "aten.rsqrt.default",
    "aten.sqrt.default", "aten.acos.default", "aten.asin.default", "aten.atanh.default", "aten.acosh.default",
    "aten.erfinv.default", "aten.tan.default", "aten.lgamma.default", "aten.digamma.default",
}
# Output ranges known a priori: a fixed scale spends the int8 codes on the whole range, like TFLite.
FIXED_RANGES = {
    "aten.sigmoid.default": (0.0, 1.0),
    "aten.hardsigmoid.default": (0.0, 1.0),
    "aten.tanh.default": (-1.0, 1.0),
}


@lowers(*sorted(TABLE_OPS))
def table_op(lw: Lowerer, node: torch.fx.Node) -> Val:
    x = lw.val(node.args[0])
    name = op_name(node)
    xq = x.q
    assert xq is not None
    if name in FIXED_RANGES:
        out_q = fixed_qparams(*FIXED_RANGES[name], dtype=lw.act)
    else:
        out_q = lw.out_q(node)
    layout = lw.layout_of(x)
    if lw.act == "int8":
        codes = np.arange(-128, 128)
        real = torch.tensor(xq.dequantize(codes.astype(np.int8)).astype(np.float32))
        args = (real, *node.args[1:])
        with torch.no_grad():
            f = node.target(*args, **node.kwargs)
        f = first_tensor(f)
        assert f is not None
        table = out_q.quantize(f.to(torch.float64).numpy())
        y = lw.b.table(lw.get(x, layout), table)
    else:
        y, out_q = _table16(lw, node, x, xq, out_q, layout)
    return lw.new_val(x.shape, out_q, layout, y)


def _table16(lw: Lowerer, node: torch.fx.Node, x: Val, xq: QParams, out_q: QParams, layout: str,
             ) -> tuple[str, QParams]:
    """int16 TABLE: 513 int16 entries at every 128th input code, linearly interpolated by TOSA.

    Entry i is f at code -32768 + 128 i; the last segment ends at code 32767, the
    largest input, so entry 512 extrapolates that segment to code 32768. The output
    range is widened to hold f at every grid point: a clipped entry would bend the
    segment below it. TABLE returns int32 with 7 fraction bits; a RESCALE by 2**-7
    takes it to int16.
    """
    codes = np.concatenate([np.arange(-32768, 32767, 128, dtype=np.int64), [32767]])
    real = torch.tensor(((codes - xq.zero_point) * xq.scale).astype(np.float32))
    lw.interpolated[node.name] = [float(v) for v in real]
    with torch.no_grad():
        f = first_tensor(node.target(real, *node.args[1:], **node.kwargs))
    assert f is not None
    fv = f.to(torch.float64).numpy()
    finite = fv[np.isfinite(fv)]
    if finite.size:
        amax = max(float(np.abs(finite).max()), out_q.scale * 32767)
        out_q = QParams(amax / 32767, 0, "int16")
    y = np.nan_to_num(fv / out_q.scale, posinf=32767.0, neginf=-32768.0)
    y = np.clip(y, -32768.0, 32767.0)
    entries = np.empty(513)
    entries[:512] = np.round(y[:512])
    entries[512] = np.round(entries[511] + (y[512] - entries[511]) * 128 / 127)
    table = np.clip(entries, -32768, 32767).astype(np.int16)
    t32 = lw.b.table(lw.get(x, layout), table)
    return lw.rescale(t32, [Fraction(1, 128)], 0, 0, "int16"), out_q


@lowers("aten._softmax.default")
def softmax(lw: Lowerer, node: torch.fx.Node) -> Val:
    """Integer softmax (TFLite-style fixed point; every op runs on Ethos-U55 and U85).

    d = x - max(x) is looked up in exp tables (two int8 TABLEs give a 15-bit
    exp for int8; one interpolated int16 TABLE for int16), summed in int32;
    1/sum comes from CLZ normalisation plus three Newton-Raphson steps in
    Q29 (MUL with shift), and p = e * (1/sum) is shifted back per row.
    """
    x = lw.val(node.args[0])
    xq = x.q
    assert xq is not None
    out_q = fixed_qparams(0.0, 1.0, lw.act)
    layout = lw.layout_of(x) if x.rank == 4 else "std"
    dim = norm_dim(node.args[1], x.rank)
    ax = NHWC.index(dim) if layout == "nhwc" else dim
    t = lw.get(x, layout)
    lshape = list(lw.b.info[t].shape)
    rshape = list(lshape)
    rshape[ax] = 1
    m = lw.b.reduce("REDUCE_MAX", t, ax)
    x32 = lw.to_int32(t, xq, Fraction(1))
    m32 = lw.to_int32(m, xq, Fraction(1))
    d = lw.b.elementwise("SUB", x32, m32, lshape, "int32")  # (q - max) <= 0
    e32 = _exp_table(lw, d, xq.scale)  # round(exp(d * s) * 32767)
    s = lw.b.reduce("REDUCE_SUM", e32, ax)
    k = lw.b.unary("CLZ", s)
    one = lw.b.const(np.ones([1] * len(lshape)), "int32")
    sn = lw.b.shift("LOGICAL_LEFT_SHIFT", s, lw.b.elementwise("SUB", k, one, rshape, "int32"), rshape)
    # sn / 2**31 in [0.5, 1); r ~ 2**29 / (sn / 2**31)
    c = lambda v: lw.b.const(np.full([1] * len(lshape), v), "int32")
    r = lw.b.elementwise("SUB", c(round(48 / 17 * 2**29)),
                         lw.b.mul(sn, c(round(32 / 17 * 2**29)), 31, rshape), rshape, "int32")
    for _ in range(3):
        xr = lw.b.mul(sn, r, 31, rshape)
        r = lw.b.mul(r, lw.b.elementwise("SUB", c(2**30), xr, rshape, "int32"), 29, rshape)
    # p * 2**bits = e * r * 2**(k - 61 + bits): MUL >> 22, then >> (39 + ... ) per row
    bits = 8 if lw.act == "int8" else 15
    prod = lw.b.mul(e32, r, 22, lshape)
    amount = lw.b.elementwise("SUB", c(61 - 22 - bits), k, rshape, "int32")
    p = lw.b.shift("ARITHMETIC_RIGHT_SHIFT", prod, amount, lshape)
    y = lw.rescale(p, [Fraction(1)], 0, out_q.zero_point, out_q.dtype)
    return lw.new_val(x.shape, out_q, layout, y)


def _exp_table(lw: Lowerer, d: str, scale: float) -> str:
    """int32 round(exp(d * scale) * 32767) for int32 d <= 0 (d in input quantization steps)."""
    shape = lw.b.info[d].shape
    if lw.act == "int8":
        # d in [-255, 0] -> index d + 127; the 15-bit result is split over two int8 tables
        idx = lw.rescale(d, [Fraction(1)], 0, 127, "int8")
        dd = np.arange(-128, 128) - 127
        e = np.round(np.exp(dd.astype(np.float64) * scale) * 32767).astype(np.int64)
        hi = lw.b.table(idx, (e >> 8).astype(np.int8))
        lo = lw.b.table(idx, ((e & 255) - 128).astype(np.int8))
        hi32 = lw.rescale(hi, [Fraction(256)], 0, 0, "int32")
        lo32 = lw.rescale(lo, [Fraction(1)], -128, 0, "int32")
        return lw.b.elementwise("ADD", hi32, lo32, shape, "int32")
    # int16: d in [-65535, 0] -> index d + 32767; interpolated table, 7 fraction bits dropped
    # (int16 RESCALE outputs need zero point 0: add the offset in int32 first)
    off = lw.b.const(np.full([1] * len(shape), 32767), "int32")
    idx = lw.rescale(lw.b.elementwise("ADD", d, off, shape, "int32"), [Fraction(1)], 0, 0, "int16")
    codes = np.arange(-32768, 32769, 128, dtype=np.int64) - 32767
    e = np.round(np.exp(np.minimum(codes, 0).astype(np.float64) * scale) * 32767)
    t32 = lw.b.table(idx, np.clip(e, 0, 32767).astype(np.int16))
    return lw.rescale(t32, [Fraction(1, 128)], 0, 0, "int32")
