"""Single-op conformance cases.

Each case is a tiny module around one core ATen op plus samples of several kinds
(normal values, broadcasting, edge values, non-contiguous inputs, rank variants,
zero-size, dynamic shapes, long reductions). The ``op`` of a case is the core
ATen op that must appear after ``run_decompositions()`` (tests check it).
Shapes are small: the suite runs in minutes on two cores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from delegate_sdk.conformance.cases import In, OpCase, Sample
from delegate_sdk.conformance.cases import function_module as fn

F32 = "float32"


def _in(shape: tuple[int, ...], dist: str = "normal", dtype: str = F32, **kw: Any) -> In:
    return In(tuple(shape), dtype, dist, **kw)


# ---------------------------------------------------------------- sample sets


def unary_samples(dist: str = "normal", *, edges: str | None = "all", dtype: str = F32,
                  low: float | None = None, high: float | None = None, zero: bool = True,
                  dynamic: bool = True) -> list[Sample]:
    def i(shape: tuple[int, ...], **kw: Any) -> In:
        return In(shape, dtype, dist, low, high, **kw)

    s = [
        Sample("normal", (i((4, 16)),)),
        Sample("noncontig", (i((4, 16), noncontig=True),)),
        Sample("rank", (i((37,)),), name="rank1"),
    ]
    if edges and dtype.startswith(("float", "bfloat")):
        s.append(Sample("edge", (i((4, 16)),), edges=edges))
    if zero:
        s.append(Sample("zero_size", (i((0, 16)),)))
    if dynamic:
        s.append(Sample("dynamic", (i((5, 16)),), dynamic={0: {0: "batch"}}))
    return s


def binary_samples(dist: str = "normal", dist2: str | None = None, *, edges: str | None = "all",
                   dtype: str = F32, dtype2: str | None = None, low: float | None = None,
                   high: float | None = None, low2: float | None = None, high2: float | None = None,
                   zero: bool = True, dynamic: bool = True) -> list[Sample]:
    dist2 = dist2 or dist
    dtype2 = dtype2 or dtype
    lo2 = low2 if low2 is not None else low
    hi2 = high2 if high2 is not None else high

    def a(shape: tuple[int, ...], **kw: Any) -> In:
        return In(shape, dtype, dist, low, high, **kw)

    def b(shape: tuple[int, ...], **kw: Any) -> In:
        return In(shape, dtype2, dist2, lo2, hi2, **kw)

    s = [
        Sample("normal", (a((4, 16)), b((4, 16)))),
        Sample("broadcast", (a((3, 1, 16)), b((4, 1)))),
        Sample("broadcast", (a((2, 3, 4, 5)), b((5,))), name="broadcast_rank4"),
        Sample("noncontig", (a((4, 16), noncontig=True), b((4, 16), noncontig=True))),
    ]
    if edges and dtype.startswith(("float", "bfloat")):
        s.append(Sample("edge", (a((4, 16)), b((4, 16))), edges=edges))
    if zero:
        s.append(Sample("zero_size", (a((0, 16)), b((16,)))))
    if dynamic:
        s.append(Sample("dynamic", (a((5, 16)), b((5, 16))), dynamic={0: {0: "batch"}, 1: {0: "batch"}}))
    return s


def scalar_samples(dist: str = "normal", **kw: Any) -> list[Sample]:
    """Samples for an op of one tensor and a Python scalar (same shapes as unary)."""
    return unary_samples(dist, **kw)


def reduce_samples(dist: str = "normal", *, edges: str | None = "all", dtype: str = F32,
                   zero: bool = True, long: bool = True) -> list[Sample]:
    def i(shape: tuple[int, ...], **kw: Any) -> In:
        return In(shape, dtype, dist, **kw)

    s = [
        Sample("normal", (i((4, 16)),)),
        Sample("noncontig", (i((4, 16), noncontig=True),)),
        Sample("rank", (i((2, 3, 5, 7)),), name="rank4"),
        Sample("dynamic", (i((5, 16)),), dynamic={0: {0: "batch"}}),
    ]
    if long:
        s.append(Sample("large", (i((4, 1024)),), name="long"))
    if edges and dtype.startswith("float"):
        s.append(Sample("edge", (i((4, 16)),), edges=edges))
    if zero:
        s.append(Sample("zero_size", (i((0, 16)),)))
    return s


def last_dim(xs: Any) -> int:
    return int(xs[0].shape[-1])


# ---------------------------------------------------------------- op tables

UNARY: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = [
    # name, core ATen op, function, sample options (+ "cond")
    ("abs", "aten.abs.default", torch.abs, {}),
    ("neg", "aten.neg.default", torch.neg, {}),
    ("exp", "aten.exp.default", torch.exp, {"cond": 4.0}),
    ("exp2", "aten.exp2.default", torch.exp2, {"cond": 4.0}),
    ("expm1", "aten.expm1.default", torch.expm1, {"cond": 4.0}),
    ("log", "aten.log.default", torch.log, {"dist": "positive"}),
    ("log2", "aten.log2.default", torch.log2, {"dist": "positive"}),
    ("log10", "aten.log10.default", torch.log10, {"dist": "positive"}),
    ("log1p", "aten.log1p.default", torch.log1p, {"dist": "uniform", "low": -0.9, "high": 4.0}),
    ("sqrt", "aten.sqrt.default", torch.sqrt, {"dist": "positive"}),
    ("rsqrt", "aten.rsqrt.default", torch.rsqrt, {"dist": "positive"}),
    ("reciprocal", "aten.reciprocal.default", torch.reciprocal, {"dist": "positive", "cond": 2.0}),
    ("sin", "aten.sin.default", torch.sin, {"dist": "uniform", "low": -3.0, "high": 3.0}),
    ("cos", "aten.cos.default", torch.cos, {"dist": "uniform", "low": -3.0, "high": 3.0}),
    ("tan", "aten.tan.default", torch.tan, {"dist": "uniform", "low": -1.2, "high": 1.2, "cond": 4.0}),
    ("asin", "aten.asin.default", torch.asin, {"dist": "unit", "cond": 4.0}),
    ("acos", "aten.acos.default", torch.acos, {"dist": "unit", "cond": 4.0}),
    ("atan", "aten.atan.default", torch.atan, {}),
    ("sinh", "aten.sinh.default", torch.sinh, {"cond": 4.0}),
    ("cosh", "aten.cosh.default", torch.cosh, {"cond": 4.0}),
    ("asinh", "aten.asinh.default", torch.asinh, {}),
    ("tanh", "aten.tanh.default", torch.tanh, {}),
    ("sigmoid", "aten.sigmoid.default", torch.sigmoid, {}),
    ("erf", "aten.erf.default", torch.erf, {}),
    ("erfinv", "aten.erfinv.default", torch.erfinv, {"dist": "unit", "cond": 8.0}),
    ("floor", "aten.floor.default", torch.floor, {"dist": "grid"}),
    ("ceil", "aten.ceil.default", torch.ceil, {"dist": "grid"}),
    ("round", "aten.round.default", torch.round, {"dist": "uniform", "low": -4.0, "high": 4.0}),
    ("trunc", "aten.trunc.default", torch.trunc, {"dist": "grid"}),
    ("sign", "aten.sign.default", torch.sign, {}),
    ("relu", "aten.relu.default", torch.relu, {}),
    ("gelu", "aten.gelu.default", F.gelu, {}),
    ("gelu_tanh", "aten.gelu.default", lambda x: F.gelu(x, approximate="tanh"), {}),
    ("leaky_relu", "aten.leaky_relu.default", lambda x: F.leaky_relu(x, 0.1), {}),
    ("hardtanh", "aten.hardtanh.default", lambda x: F.hardtanh(x, -1.0, 1.0), {}),
    ("relu6", "aten.hardtanh.default", F.relu6, {"high": 4.0}),
    ("elu", "aten.elu.default", F.elu, {}),
    ("clamp", "aten.clamp.default", lambda x: torch.clamp(x, -0.5, 0.75), {}),
    ("clamp_min", "aten.clamp.default", lambda x: torch.clamp_min(x, 0.1), {}),
    ("pow_scalar", "aten.pow.Tensor_Scalar", lambda x: x ** 2, {"cond": 2.0}),
    ("pow_scalar_frac", "aten.pow.Tensor_Scalar", lambda x: x ** 1.5, {"dist": "positive", "cond": 2.0}),
    ("add_scalar", "aten.add.Tensor", lambda x: x + 2.5, {}),
    ("mul_scalar", "aten.mul.Tensor", lambda x: x * -1.5, {}),
    ("remainder_scalar", "aten.remainder.Scalar", lambda x: torch.remainder(x, 0.75), {"dist": "grid"}),
    ("fmod_scalar", "aten.fmod.Scalar", lambda x: torch.fmod(x, 0.75), {"dist": "grid"}),
    ("eq_scalar", "aten.eq.Scalar", lambda x: x == 0.5, {"dist": "grid"}),
    ("ne_scalar", "aten.ne.Scalar", lambda x: x != 0.5, {"dist": "grid"}),
    ("gt_scalar", "aten.gt.Scalar", lambda x: x > 0.25, {"dist": "grid"}),
    ("lt_scalar", "aten.lt.Scalar", lambda x: x < 0.25, {"dist": "grid"}),
    ("ge_scalar", "aten.ge.Scalar", lambda x: x >= 0.25, {"dist": "grid"}),
    ("le_scalar", "aten.le.Scalar", lambda x: x <= 0.25, {"dist": "grid"}),
    ("isnan", "aten.isnan.default", torch.isnan, {}),
    ("isinf", "aten.isinf.default", torch.isinf, {}),
    ("logical_not", "aten.logical_not.default", torch.logical_not, {"dist": "bool", "dtype": "bool"}),
    ("bitwise_not", "aten.bitwise_not.default", torch.bitwise_not, {"dist": "int", "dtype": "int32"}),
    ("abs_int", "aten.abs.default", torch.abs, {"dist": "int", "dtype": "int32"}),
    ("clone", "aten.clone.default", torch.clone, {}),
]

BINARY: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = [
    ("add", "aten.add.Tensor", torch.add, {}),
    ("add_alpha", "aten.add.Tensor", lambda a, b: torch.add(a, b, alpha=2.0), {}),
    ("sub", "aten.sub.Tensor", torch.sub, {}),
    ("mul", "aten.mul.Tensor", torch.mul, {}),
    ("div", "aten.div.Tensor", torch.div, {"dist2": "positive", "cond": 2.0}),
    ("div_floor", "aten.div.Tensor_mode", lambda a, b: torch.div(a, b, rounding_mode="floor"),
     {"dist": "grid", "dist2": "uniform", "low2": 0.5, "high2": 3.0}),
    ("div_trunc", "aten.div.Tensor_mode", lambda a, b: torch.div(a, b, rounding_mode="trunc"),
     {"dist": "grid", "dist2": "uniform", "low2": 0.5, "high2": 3.0}),
    ("pow", "aten.pow.Tensor_Tensor", torch.pow,
     {"dist": "positive", "dist2": "uniform", "low2": -2.0, "high2": 2.0, "cond": 4.0}),
    ("maximum", "aten.maximum.default", torch.maximum, {}),
    ("minimum", "aten.minimum.default", torch.minimum, {}),
    ("remainder", "aten.remainder.Tensor", torch.remainder,
     {"dist": "grid", "dist2": "uniform", "low2": 0.5, "high2": 3.0}),
    ("fmod", "aten.fmod.Tensor", torch.fmod, {"dist": "grid", "dist2": "uniform", "low2": 0.5, "high2": 3.0}),
    ("atan2", "aten.atan2.default", torch.atan2, {}),
    ("hypot", "aten.hypot.default", torch.hypot, {}),
    ("copysign", "aten.copysign.Tensor", torch.copysign, {}),
    ("eq", "aten.eq.Tensor", torch.eq, {"dist": "grid"}),
    ("ne", "aten.ne.Tensor", torch.ne, {"dist": "grid"}),
    ("lt", "aten.lt.Tensor", torch.lt, {"dist": "grid"}),
    ("le", "aten.le.Tensor", torch.le, {"dist": "grid"}),
    ("gt", "aten.gt.Tensor", torch.gt, {"dist": "grid"}),
    ("ge", "aten.ge.Tensor", torch.ge, {"dist": "grid"}),
    ("logical_and", "aten.logical_and.default", torch.logical_and, {"dist": "bool", "dtype": "bool"}),
    ("logical_or", "aten.logical_or.default", torch.logical_or, {"dist": "bool", "dtype": "bool"}),
    ("logical_xor", "aten.logical_xor.default", torch.logical_xor, {"dist": "bool", "dtype": "bool"}),
    ("bitwise_and", "aten.bitwise_and.Tensor", torch.bitwise_and, {"dist": "int", "dtype": "int32"}),
    ("bitwise_or", "aten.bitwise_or.Tensor", torch.bitwise_or, {"dist": "int", "dtype": "int32"}),
    ("bitwise_xor", "aten.bitwise_xor.Tensor", torch.bitwise_xor, {"dist": "int", "dtype": "int32"}),
    ("add_int", "aten.add.Tensor", torch.add, {"dist": "int", "dtype": "int32"}),
    ("mul_int", "aten.mul.Tensor", torch.mul, {"dist": "int", "dtype": "int64"}),
]


def _opts(kw: dict[str, Any]) -> tuple[dict[str, Any], float]:
    kw = dict(kw)
    cond = float(kw.pop("cond", 1.0))
    return kw, cond


def elementwise_cases() -> list[OpCase]:
    cases = []
    for name, op, f, kw in UNARY:
        kw, cond = _opts(kw)
        cases.append(OpCase(f"op/{name}", op, fn(f), unary_samples(**kw), cond=cond, tags=("unary",)))
    for name, op, f, kw in BINARY:
        kw, cond = _opts(kw)
        cases.append(OpCase(f"op/{name}", op, fn(f), binary_samples(**kw), cond=cond, tags=("binary",)))
    cases += [
        OpCase("op/where", "aten.where.self", fn(torch.where), [
            Sample("normal", (_in((4, 16), "bool", "bool"), _in((4, 16)), _in((4, 16)))),
            Sample("broadcast", (_in((4, 1), "bool", "bool"), _in((3, 4, 16)), _in((16,)))),
            Sample("edge", (_in((4, 16), "bool", "bool"), _in((4, 16)), _in((4, 16))), edges="all"),
            Sample("noncontig", (_in((4, 16), "bool", "bool", noncontig=True), _in((4, 16), noncontig=True),
                                 _in((4, 16)))),
            Sample("zero_size", (_in((0, 16), "bool", "bool"), _in((0, 16)), _in((16,)))),
            Sample("dynamic", (_in((5, 16), "bool", "bool"), _in((5, 16)), _in((5, 16))),
                   dynamic={0: {0: "b"}, 1: {0: "b"}, 2: {0: "b"}}),
        ], tags=("select",)),
        OpCase("op/where_scalar", "aten.where.self", fn(lambda x: torch.where(x > 0, x, 0.5)),
               unary_samples(), tags=("select",)),
        OpCase("op/masked_fill", "aten.where.self", fn(lambda x, m: x.masked_fill(m, -2.0)), [
            Sample("normal", (_in((4, 16)), _in((4, 16), "bool", "bool"))),
            Sample("broadcast", (_in((3, 4, 16)), _in((4, 1), "bool", "bool"))),
            Sample("edge", (_in((4, 16)), _in((4, 16), "bool", "bool")), edges="all"),
            Sample("noncontig", (_in((4, 16), noncontig=True), _in((4, 16), "bool", "bool"))),
            Sample("dynamic", (_in((5, 16)), _in((5, 16), "bool", "bool")), dynamic={0: {0: "b"}, 1: {0: "b"}}),
        ], tags=("select",)),
        OpCase("op/clamp_tensor", "aten.clamp.Tensor",
               fn(lambda x, lo, hi: torch.clamp(x, lo, lo + hi.abs())),
               [Sample("normal", (_in((4, 16)), _in((4, 16)), _in((4, 16)))),
                Sample("broadcast", (_in((4, 16)), _in((16,)), _in((4, 1)))),
                Sample("edge", (_in((4, 16)), _in((4, 16)), _in((4, 16))), edges="finite"),
                Sample("noncontig", (_in((4, 16), noncontig=True), _in((4, 16)), _in((4, 16))))],
               tags=("clamp",)),
    ]
    return cases


def reduction_cases() -> list[OpCase]:
    r = last_dim
    return [
        OpCase("op/sum", "aten.sum.dim_IntList", fn(lambda x: x.sum(-1)), reduce_samples(), reduction=r),
        OpCase("op/sum_keepdim", "aten.sum.dim_IntList", fn(lambda x: x.sum((0, -1), keepdim=True)),
               reduce_samples(zero=False), reduction=lambda xs: xs[0].shape[0] * xs[0].shape[-1]),
        OpCase("op/mean", "aten.mean.dim", fn(lambda x: x.mean(-1)), reduce_samples(), reduction=r),
        OpCase("op/mean_all", "aten.mean.default", fn(lambda x: x.mean()), reduce_samples(zero=False),
               reduction=lambda xs: xs[0].numel()),
        OpCase("op/amax", "aten.amax.default", fn(lambda x: x.amax(-1)), reduce_samples(zero=False)),
        OpCase("op/amin", "aten.amin.default", fn(lambda x: x.amin(-1, keepdim=True)), reduce_samples(zero=False)),
        OpCase("op/argmax", "aten.argmax.default", fn(lambda x: x.argmax(-1)),
               reduce_samples(edges="finite", zero=False)),
        OpCase("op/argmin", "aten.argmin.default", fn(lambda x: x.argmin(-1)),
               reduce_samples(edges="finite", zero=False)),
        OpCase("op/max_dim", "aten.max.dim", fn(lambda x: tuple(x.max(-1))),
               reduce_samples(edges="finite", zero=False)),
        OpCase("op/var", "aten.var.correction", fn(lambda x: x.var(-1)), reduce_samples(zero=False),
               reduction=r, cond=2.0),
        OpCase("op/var_unbiased0", "aten.var.correction", fn(lambda x: x.var(-1, unbiased=False, keepdim=True)),
               reduce_samples(zero=False), reduction=r, cond=2.0),
        OpCase("op/prod", "aten.prod.dim_int", fn(lambda x: x.prod(-1)),
               reduce_samples("uniform", long=False), reduction=r, cond=2.0),
        OpCase("op/any", "aten.any.dim", fn(lambda x: x.any(-1)), reduce_samples("bool", dtype="bool")),
        OpCase("op/norm", "aten.linalg_vector_norm.default", fn(lambda x: torch.linalg.vector_norm(x, dim=-1)),
               reduce_samples(), reduction=r),
        OpCase("op/cumsum", "aten.cumsum.default", fn(lambda x: x.cumsum(-1)), reduce_samples(), reduction=r),
        OpCase("op/cumprod", "aten.cumprod.default", fn(lambda x: x.cumprod(-1)),
               reduce_samples("uniform", long=False), reduction=r, cond=2.0),
        OpCase("op/softmax", "aten._softmax.default", fn(lambda x: x.softmax(-1)), reduce_samples(),
               reduction=r, cond=2.0),
        OpCase("op/softmax_dim1", "aten._softmax.default", fn(lambda x: x.softmax(1)),
               [Sample("normal", (_in((2, 8, 4, 4)),)), Sample("noncontig", (_in((2, 8, 4, 4), noncontig=True),)),
                Sample("edge", (_in((2, 8, 4, 4)),), edges="finite")],
               reduction=lambda xs: xs[0].shape[1], cond=2.0),
        OpCase("op/log_softmax", "aten._log_softmax.default", fn(lambda x: x.log_softmax(-1)), reduce_samples(),
               reduction=r, cond=2.0),
        OpCase("op/topk", "aten.topk.default", fn(lambda x: tuple(x.topk(3, -1))),
               reduce_samples(edges="finite", zero=False)),
        OpCase("op/sort", "aten.sort.default", fn(lambda x: x.sort(-1)[0]), reduce_samples(zero=False)),
    ]


def _mm_samples(m: int = 8, k: int = 16, n: int = 12) -> list[Sample]:
    return [
        Sample("normal", (_in((m, k)), _in((k, n)))),
        Sample("noncontig", (_in((m, k), noncontig=True), _in((k, n), noncontig=True))),
        Sample("large", (_in((16, 512)), _in((512, 8))), name="long_k"),
        Sample("edge", (_in((m, k)), _in((k, n))), edges="finite"),
        Sample("zero_size", (_in((0, k)), _in((k, n)))),
        Sample("dynamic", (_in((m, k)), _in((k, n))), dynamic={0: {0: "m"}}),
    ]


class Linear(nn.Module):
    def __init__(self, i: int, o: int, bias: bool = True):
        super().__init__()
        self.lin = nn.Linear(i, o, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def matmul_cases() -> list[OpCase]:
    kdim = lambda xs: xs[0].shape[-1]  # noqa: E731
    lin_samples = [
        Sample("normal", (_in((8, 32)),)),
        Sample("rank", (_in((2, 5, 32)),), name="rank3"),
        Sample("noncontig", (_in((8, 32), noncontig=True),)),
        Sample("edge", (_in((8, 32)),), edges="finite"),
        Sample("dynamic", (_in((6, 32)),), dynamic={0: {0: "batch"}}),
        Sample("zero_size", (_in((0, 32)),)),
    ]
    return [
        OpCase("op/mm", "aten.mm.default", fn(torch.mm), _mm_samples(), reduction=kdim),
        OpCase("op/bmm", "aten.bmm.default", fn(torch.bmm), [
            Sample("normal", (_in((3, 8, 16)), _in((3, 16, 4)))),
            Sample("noncontig", (_in((3, 8, 16), noncontig=True), _in((3, 16, 4)))),
            Sample("large", (_in((2, 8, 512)), _in((2, 512, 8))), name="long_k"),
            Sample("edge", (_in((3, 8, 16)), _in((3, 16, 4))), edges="finite"),
            Sample("dynamic", (_in((3, 8, 16)), _in((3, 16, 4))), dynamic={0: {0: "b"}, 1: {0: "b"}}),
        ], reduction=kdim),
        OpCase("op/matmul_4d", "aten.bmm.default", fn(torch.matmul), [
            Sample("normal", (_in((2, 3, 8, 16)), _in((2, 3, 16, 4)))),
            Sample("broadcast", (_in((2, 3, 8, 16)), _in((16, 4)))),
            Sample("noncontig", (_in((2, 3, 8, 16), noncontig=True), _in((2, 3, 16, 4)))),
        ], reduction=kdim),
        OpCase("op/addmm", "aten.addmm.default", fn(lambda b, x, w: torch.addmm(b, x, w)), [
            Sample("normal", (_in((12,)), _in((8, 16)), _in((16, 12)))),
            Sample("broadcast", (_in((8, 1)), _in((8, 16)), _in((16, 12)))),
            Sample("noncontig", (_in((12,)), _in((8, 16), noncontig=True), _in((16, 12)))),
            Sample("edge", (_in((12,)), _in((8, 16)), _in((16, 12))), edges="finite"),
        ], reduction=lambda xs: xs[1].shape[-1]),
        OpCase("op/linear", "aten.addmm.default", lambda: Linear(32, 24), lin_samples, reduction=32),
        OpCase("op/linear_nobias", "aten.mm.default", lambda: Linear(32, 24, bias=False),
               lin_samples[:5], reduction=32),
    ]


class Conv(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _conv_samples(c: int, hw: tuple[int, ...], *, zero: bool = False) -> list[Sample]:
    s = [
        Sample("normal", (_in((1, c, *hw)),)),
        Sample("noncontig", (_in((1, c, *hw), noncontig=True),)),
        Sample("edge", (_in((1, c, *hw)),), edges="finite"),
        Sample("rank", (_in((3, c, *hw)),), name="batch3"),
        Sample("dynamic", (_in((2, c, *hw)),), dynamic={0: {0: "batch"}}),
    ]
    if zero:
        s.append(Sample("zero_size", (_in((0, c, *hw)),)))
    return s


def _conv_k(m: nn.Module) -> int:
    w = m.weight
    return int(w.shape[1] * torch.tensor(w.shape[2:]).prod()) if m.__class__.__name__.startswith("Conv") else 1


def conv_cases() -> list[OpCase]:
    C = "aten.convolution.default"
    return [
        OpCase("op/conv1d", C, lambda: Conv(nn.Conv1d(4, 8, 3, padding=1)), _conv_samples(4, (20,)),
               reduction=4 * 3),
        OpCase("op/conv2d", C, lambda: Conv(nn.Conv2d(8, 16, 3, padding=1)), _conv_samples(8, (10, 10), zero=True),
               reduction=8 * 9),
        OpCase("op/conv2d_stride_nobias", C, lambda: Conv(nn.Conv2d(8, 8, 3, stride=2, bias=False)),
               _conv_samples(8, (11, 11)), reduction=8 * 9),
        OpCase("op/conv2d_dilated", C, lambda: Conv(nn.Conv2d(4, 8, 3, dilation=2, padding=2)),
               _conv_samples(4, (12, 12)), reduction=4 * 9),
        OpCase("op/conv2d_1x1", C, lambda: Conv(nn.Conv2d(16, 8, 1)), _conv_samples(16, (7, 7)), reduction=16),
        OpCase("op/conv2d_depthwise", C, lambda: Conv(nn.Conv2d(16, 16, 3, padding=1, groups=16)),
               _conv_samples(16, (9, 9)), reduction=9),
        OpCase("op/conv2d_grouped", C, lambda: Conv(nn.Conv2d(8, 8, 3, padding=1, groups=2)),
               _conv_samples(8, (9, 9)), reduction=4 * 9),
        OpCase("op/conv_transpose2d", C, lambda: Conv(nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1,
                                                                           output_padding=1)),
               _conv_samples(8, (6, 6)), reduction=8 * 9),
        OpCase("op/conv_transpose1d", C, lambda: Conv(nn.ConvTranspose1d(4, 4, 4, stride=2)),
               _conv_samples(4, (10,)), reduction=4 * 4),
    ]


def pool_cases() -> list[OpCase]:
    return [
        OpCase("op/max_pool2d", "aten.max_pool2d_with_indices.default",
               fn(lambda x: F.max_pool2d(x, 2)), _conv_samples(4, (8, 8))),
        OpCase("op/max_pool2d_3s2p1", "aten.max_pool2d_with_indices.default",
               fn(lambda x: F.max_pool2d(x, 3, 2, 1)), _conv_samples(4, (9, 9))),
        OpCase("op/avg_pool2d", "aten.avg_pool2d.default", fn(lambda x: F.avg_pool2d(x, 2)),
               _conv_samples(4, (8, 8)), reduction=4),
        OpCase("op/avg_pool2d_pad", "aten.avg_pool2d.default",
               fn(lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)), _conv_samples(4, (9, 9)),
               reduction=9),
        OpCase("op/adaptive_avg_pool2d", "aten._adaptive_avg_pool2d.default",
               fn(lambda x: F.adaptive_avg_pool2d(x, (2, 3))), _conv_samples(4, (8, 9)), reduction=16),
        OpCase("op/adaptive_avg_pool2d_global", "aten.mean.dim",
               fn(lambda x: F.adaptive_avg_pool2d(x, 1)), _conv_samples(8, (7, 7)), reduction=49),
        OpCase("op/adaptive_max_pool2d", "aten.adaptive_max_pool2d.default",
               fn(lambda x: F.adaptive_max_pool2d(x, (2, 2))), _conv_samples(4, (8, 8))),
        OpCase("op/max_pool1d", "aten.max_pool2d_with_indices.default", fn(lambda x: F.max_pool1d(x, 2)),
               _conv_samples(4, (16,))),
        OpCase("op/avg_pool1d", "aten.avg_pool2d.default", fn(lambda x: F.avg_pool1d(x, 2)),
               _conv_samples(4, (16,)), reduction=2),
    ]


class Norm(nn.Module):
    def __init__(self, norm: nn.Module, randomize: bool = True):
        super().__init__()
        self.norm = norm
        if randomize:
            with torch.no_grad():
                for name, p in list(norm.named_parameters()):
                    p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name == "weight" else 0.0))
                if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                    norm.running_mean.copy_(torch.randn_like(norm.running_mean) * 0.3)
                    norm.running_var.copy_(torch.rand_like(norm.running_var) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def norm_cases() -> list[OpCase]:
    return [
        OpCase("op/batch_norm2d", "aten._native_batch_norm_legit_no_training.default",
               lambda: Norm(nn.BatchNorm2d(8)), _conv_samples(8, (5, 5), zero=True)),
        OpCase("op/batch_norm1d", "aten._native_batch_norm_legit_no_training.default",
               lambda: Norm(nn.BatchNorm1d(8)), [
                   Sample("normal", (_in((4, 8)),)), Sample("rank", (_in((2, 8, 10)),), name="rank3"),
                   Sample("noncontig", (_in((4, 8), noncontig=True),)),
                   Sample("edge", (_in((4, 8)),), edges="finite"),
                   Sample("dynamic", (_in((5, 8)),), dynamic={0: {0: "batch"}})]),
        OpCase("op/layer_norm", "aten.native_layer_norm.default", lambda: Norm(nn.LayerNorm(32)), [
            Sample("normal", (_in((4, 32)),)), Sample("rank", (_in((2, 5, 32)),), name="rank3"),
            Sample("noncontig", (_in((4, 32), noncontig=True),)),
            Sample("edge", (_in((4, 32)),), edges="finite"),
            Sample("large", (_in((4, 32), high=100.0, low=50.0),), name="offset"),
            Sample("dynamic", (_in((2, 6, 32)),), dynamic={0: {1: "seq"}}),
        ], reduction=32, cond=2.0),
        OpCase("op/layer_norm_2d", "aten.native_layer_norm.default", lambda: Norm(nn.LayerNorm([4, 8])), [
            Sample("normal", (_in((3, 4, 8)),)), Sample("noncontig", (_in((3, 4, 8), noncontig=True),)),
            Sample("rank", (_in((2, 2, 4, 8)),), name="rank4"),
        ], reduction=32, cond=2.0),
        OpCase("op/group_norm", "aten.native_group_norm.default", lambda: Norm(nn.GroupNorm(4, 8)),
               _conv_samples(8, (6, 6)), reduction=2 * 36, cond=2.0),
    ]


def shape_cases() -> list[OpCase]:
    def std(shape: tuple[int, ...] = (4, 6, 8), dyn_dim: int = 0, zero: bool = True,
            dtype: str = F32) -> list[Sample]:
        s = [Sample("normal", (_in(shape, dtype=dtype, dist="normal" if dtype == F32 else "int"),)),
             Sample("noncontig", (_in(shape, noncontig=True, dtype=dtype,
                                      dist="normal" if dtype == F32 else "int"),)),
             Sample("edge", (_in(shape),), edges="all")]
        if zero:
            s.append(Sample("zero_size", (_in((0, *shape[1:])),)))
        s.append(Sample("dynamic", (_in((5, *shape[1:])),), dynamic={0: {dyn_dim: "d"}}))
        return s

    return [
        OpCase("op/view", "aten.view.default", fn(lambda x: x.view(-1, 48) * 1.0), std()),
        OpCase("op/reshape", "aten.view.default", fn(lambda x: x.reshape(-1, 4, 2)), std(zero=False)),
        OpCase("op/permute", "aten.permute.default", fn(lambda x: x.permute(2, 0, 1) + 0.0), std()),
        OpCase("op/transpose", "aten.permute.default", fn(lambda x: x.transpose(0, 1) * 2.0), std()),
        OpCase("op/slice", "aten.slice.Tensor", fn(lambda x: x[:, 1:5:2, 2:] * 1.5), std()),
        OpCase("op/select", "aten.select.int", fn(lambda x: x[:, 2] + 1.0), std()),
        OpCase("op/cat", "aten.cat.default", fn(lambda a, b: torch.cat([a, b], 1)), [
            Sample("normal", (_in((4, 6, 8)), _in((4, 3, 8)))),
            Sample("noncontig", (_in((4, 6, 8), noncontig=True), _in((4, 3, 8)))),
            Sample("edge", (_in((4, 6, 8)), _in((4, 3, 8))), edges="all"),
            Sample("zero_size", (_in((4, 0, 8)), _in((4, 3, 8)))),
            Sample("dynamic", (_in((5, 6, 8)), _in((5, 3, 8))), dynamic={0: {0: "b"}, 1: {0: "b"}}),
        ]),
        OpCase("op/stack", "aten.cat.default", fn(lambda a, b: torch.stack([a, b], 1)), [
            Sample("normal", (_in((4, 8)), _in((4, 8)))),
            Sample("noncontig", (_in((4, 8), noncontig=True), _in((4, 8)))),
            Sample("rank", (_in((2, 3, 4)), _in((2, 3, 4))), name="rank3"),
            Sample("dynamic", (_in((5, 8)), _in((5, 8))), dynamic={0: {0: "b"}, 1: {0: "b"}}),
        ]),
        OpCase("op/split", "aten.split_with_sizes.default", fn(lambda x: [t * 1.0 for t in x.split([2, 6], -1)]),
               std()),
        OpCase("op/chunk", "aten.split_with_sizes.default", fn(lambda x: [t + 1.0 for t in x.chunk(2, 1)]),
               std()),
        OpCase("op/squeeze", "aten.squeeze.dims", fn(lambda x: x.squeeze(1) * 1.0), [
            Sample("normal", (_in((4, 1, 8)),)), Sample("noncontig", (_in((4, 1, 8), noncontig=True),)),
            Sample("rank", (_in((3, 1, 2, 5)),), name="rank4"), Sample("edge", (_in((4, 1, 8)),), edges="all"),
            Sample("dynamic", (_in((5, 1, 8)),), dynamic={0: {0: "b"}}),
        ]),
        OpCase("op/unsqueeze", "aten.unsqueeze.default", fn(lambda x: x.unsqueeze(1) * 1.0), std()),
        OpCase("op/expand", "aten.expand.default", fn(lambda x: x.expand(3, 4, 8) * 1.0), [
            Sample("normal", (_in((4, 1)),)), Sample("broadcast", (_in((1, 8)),)),
            Sample("edge", (_in((4, 1)),), edges="all"), Sample("rank", (_in((8,)),), name="rank1"),
        ]),
        OpCase("op/repeat", "aten.repeat.default", fn(lambda x: x.repeat(2, 1, 3)), std(zero=False)),
        OpCase("op/flip", "aten.flip.default", fn(lambda x: x.flip(-1)), std()),
        OpCase("op/pad", "aten.constant_pad_nd.default", fn(lambda x: F.pad(x, (1, 2, 0, 1), value=0.5)),
               std()),
        OpCase("op/pad_negative", "aten.constant_pad_nd.default", fn(lambda x: F.pad(x, (-1, 2))),
               std(zero=False)),
        OpCase("op/contiguous_int", "aten.clone.default", fn(lambda x: x.transpose(0, 1).contiguous()),
               std(dtype="int64", zero=False)[:2] + [Sample("rank", (_in((3, 4), "int", "int64"),),
                                                           name="rank2")]),
    ]


class Embedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.emb(idx)


def index_cases() -> list[OpCase]:
    def idx(shape: tuple[int, ...], n: int, **kw: Any) -> In:
        return In(shape, "int64", "index", high=n, **kw)

    return [
        OpCase("op/index_select", "aten.index_select.default", fn(lambda x, i: x.index_select(1, i)), [
            Sample("normal", (_in((4, 16)), idx((5,), 16))),
            Sample("noncontig", (_in((4, 16), noncontig=True), idx((5,), 16))),
            Sample("edge", (_in((4, 16)), idx((5,), 16)), edges="all"),
            Sample("zero_size", (_in((4, 16)), idx((0,), 16))),
            Sample("rank", (_in((2, 16, 3)), idx((7,), 16)), name="rank3"),
        ]),
        OpCase("op/gather", "aten.gather.default", fn(lambda x, i: torch.gather(x, 1, i)), [
            Sample("normal", (_in((4, 16)), idx((4, 5), 16))),
            Sample("noncontig", (_in((4, 16), noncontig=True), idx((4, 5), 16))),
            Sample("edge", (_in((4, 16)), idx((4, 5), 16)), edges="all"),
            Sample("rank", (_in((2, 16, 3)), idx((2, 4, 3), 16)), name="rank3"),
        ]),
        OpCase("op/embedding", "aten.embedding.default", Embedding, [
            Sample("normal", (idx((4, 7), 50),)),
            Sample("rank", (idx((9,), 50),), name="rank1"),
            Sample("noncontig", (idx((4, 7), 50, noncontig=True),)),
            Sample("zero_size", (idx((0, 7), 50),)),
            Sample("dynamic", (idx((3, 7), 50),), dynamic={0: {1: "seq"}}),
        ]),
        OpCase("op/index_tensor", "aten.index.Tensor", fn(lambda x, i: x[i]), [
            Sample("normal", (_in((10, 8)), idx((4,), 10))),
            Sample("rank", (_in((10, 2, 3)), idx((2, 3), 10)), name="rank3"),
            Sample("edge", (_in((10, 8)), idx((4,), 10)), edges="all"),
            Sample("noncontig", (_in((10, 8), noncontig=True), idx((4,), 10))),
        ]),
        OpCase("op/scatter", "aten.scatter.src", fn(lambda x, i, s: x.scatter(1, i, s)), [
            Sample("normal", (_in((4, 8)), idx((4, 1), 8), _in((4, 1)))),
            Sample("noncontig", (_in((4, 8), noncontig=True), idx((4, 1), 8), _in((4, 1)))),
            Sample("edge", (_in((4, 8)), idx((4, 1), 8), _in((4, 1))), edges="all"),
        ]),
        OpCase("op/index_put", "aten.index_put.default",
               fn(lambda x, i, v: torch.index_put(x, (i,), v)), [
                   Sample("normal", (_in((6, 8)), idx((2,), 6), _in((2, 8)))),
                   Sample("broadcast", (_in((6, 8)), idx((2,), 6), _in((8,)))),
                   Sample("edge", (_in((6, 8)), idx((2,), 6), _in((2, 8))), edges="all"),
               ]),
    ]


def upsample_cases() -> list[OpCase]:
    s = lambda c=4, hw=(5, 6): [  # noqa: E731
        Sample("normal", (_in((1, c, *hw)),)),
        Sample("noncontig", (_in((1, c, *hw), noncontig=True),)),
        Sample("edge", (_in((1, c, *hw)),), edges="finite"),
        Sample("rank", (_in((2, c, *hw)),), name="batch2"),
        Sample("dynamic", (_in((2, c, *hw)),), dynamic={0: {0: "batch"}}),
    ]
    return [
        OpCase("op/upsample_nearest2d", "aten.upsample_nearest2d.vec",
               fn(lambda x: F.interpolate(x, scale_factor=2, mode="nearest")), s()),
        OpCase("op/upsample_nearest2d_size", "aten.upsample_nearest2d.vec",
               fn(lambda x: F.interpolate(x, size=(7, 9), mode="nearest")), s()),
        OpCase("op/upsample_bilinear2d", "aten.upsample_bilinear2d.vec",
               fn(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)), s(),
               reduction=4),
        OpCase("op/upsample_bilinear2d_align", "aten.upsample_bilinear2d.vec",
               fn(lambda x: F.interpolate(x, size=(9, 11), mode="bilinear", align_corners=True)), s(),
               reduction=4),
    ]


def op_cases() -> list[OpCase]:
    """Every built-in op case, ids unique."""
    cases = (elementwise_cases() + reduction_cases() + matmul_cases() + conv_cases() + pool_cases()
             + norm_cases() + shape_cases() + index_cases() + upsample_cases())
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    return cases
