"""ATen op cases for the Core ML plugin: each a tiny model, its inputs, and the ATen ops it verifies.

Inputs are chosen so that fp16 rounding of the inputs cannot change a discrete
result (comparisons, floor/round, sort order, argmax): values on a 1/8 grid or
well separated, divisors that are powers of two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from delegate_sdk.conformance.cases import FunctionModule as Fn


@dataclass(frozen=True)
class OpCase:
    id: str
    make: Callable[[], torch.nn.Module]
    inputs: Callable[[torch.Generator], tuple[torch.Tensor, ...]]
    #: ATen ops (as ``op_name`` spells them) this case verifies; each must appear in the captured graph
    ops: tuple[str, ...]


CASES: list[OpCase] = []


def case(id: str, model: Callable[..., Any] | Callable[[], torch.nn.Module], inputs: Callable[..., Any],
         *ops: str, module: bool = False) -> None:
    make = model if module else (lambda m=model: Fn(m))
    CASES.append(OpCase(id, make, inputs, tuple(f"aten.{o}" for o in ops)))


def rn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def grid(g: torch.Generator, *shape: int, scale: float = 4.0) -> torch.Tensor:
    """Values on a 1/8 grid (exact in fp16), so discrete ops give the same answer at both precisions."""
    return (torch.randn(*shape, generator=g) * scale * 8).round() / 8


def pos(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g) * 2 + 0.25


def distinct(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Distinct values at least 0.25 apart in random order (no ties, also after fp16 rounding)."""
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n, generator=g).float() * 0.25 - n / 8).reshape(shape)


def ints(g: torch.Generator, lo: int, hi: int, *shape: int) -> torch.Tensor:
    return torch.randint(lo, hi, shape, generator=g)


def pow2(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Non-zero powers of two with random signs: division by them is exact."""
    e = torch.randint(-1, 3, shape, generator=g).float()
    s = torch.randint(0, 2, shape, generator=g).float() * 2 - 1
    return s * torch.pow(2.0, e)


X4 = (2, 3, 6, 6)

# --- element-wise arithmetic
case("add", lambda a, b: a + b, lambda g: (rn(g, 2, 3), rn(g, 2, 3)), "add.Tensor")
case("add_broadcast_scalar", lambda a: a + 2.5, lambda g: (rn(g, 2, 3),), "add.Tensor")
case("add_bool", lambda a, b: (a > 0) + (b > 0), lambda g: (rn(g, 2, 3), rn(g, 2, 3)), "add.Tensor", "gt.Scalar")
case("add_int", lambda a, b: a + b, lambda g: (ints(g, -9, 9, 2, 3), ints(g, -9, 9, 2, 3)), "add.Tensor")
case("sub", lambda a, b: a - b, lambda g: (rn(g, 2, 3), rn(g, 3)), "sub.Tensor")
case("rsub", lambda a: 1 - a, lambda g: (rn(g, 2, 3),), "sub.Tensor")
case("mul", lambda a, b: a * b, lambda g: (rn(g, 2, 3), rn(g, 2, 1)), "mul.Tensor")
case("mul_bool", lambda a, b: ((a > 0) * (b > 0)).float(), lambda g: (rn(g, 2, 3), rn(g, 2, 3)), "mul.Tensor",
     "_to_copy.default")
case("div", lambda a, b: a / b, lambda g: (rn(g, 2, 3), pos(g, 2, 3)), "div.Tensor")
case("div_floor", lambda a, b: torch.div(a, b, rounding_mode="floor"), lambda g: (grid(g, 2, 5), pow2(g, 2, 5)),
     "div.Tensor_mode")
case("div_trunc", lambda a, b: torch.div(a, b, rounding_mode="trunc"), lambda g: (grid(g, 2, 5), pow2(g, 2, 5)),
     "div.Tensor_mode")
case("floor_div_int", lambda a, b: a // b, lambda g: (ints(g, -20, 20, 2, 5), ints(g, 1, 5, 2, 5)),
     "div.Tensor_mode")
case("remainder", lambda a, b: torch.remainder(a, b), lambda g: (grid(g, 2, 5), pow2(g, 2, 5)), "remainder.Tensor")
case("remainder_scalar", lambda a: a % 1.5, lambda g: (grid(g, 2, 5),), "remainder.Scalar")
case("neg", lambda a: -a, lambda g: (rn(g, 2, 3),), "neg.default")
case("abs", torch.abs, lambda g: (rn(g, 2, 3),), "abs.default")
case("sign", torch.sign, lambda g: (grid(g, 2, 5),), "sign.default")
case("pow_scalar", lambda a: a ** 3, lambda g: (rn(g, 2, 3),), "pow.Tensor_Scalar")
case("pow_tensor", lambda a, b: a ** b, lambda g: (pos(g, 2, 3), rn(g, 2, 3)), "pow.Tensor_Tensor")
case("pow_scalar_base", lambda a: 2 ** a, lambda g: (rn(g, 2, 3),), "pow.Scalar")
case("maximum", torch.maximum, lambda g: (rn(g, 2, 3), rn(g, 2, 3)), "maximum.default")
case("minimum", torch.minimum, lambda g: (rn(g, 2, 3), rn(g, 2, 3)), "minimum.default")
case("clamp", lambda a: torch.clamp(a, -0.5, 0.75), lambda g: (rn(g, 2, 3),), "clamp.default")
case("clamp_int_bounds", lambda a: torch.clamp(a, 0, 6), lambda g: (rn(g, 2, 3) * 5,), "clamp.default")
case("clamp_tensor", lambda a, b, c: torch.clamp(a, b, c), lambda g: (rn(g, 2, 3), -pos(g, 2, 3), pos(g, 2, 3)),
     "clamp.Tensor")
case("floor", torch.floor, lambda g: (grid(g, 2, 5),), "floor.default")
case("ceil", torch.ceil, lambda g: (grid(g, 2, 5),), "ceil.default")
case("round", torch.round, lambda g: (grid(g, 2, 5),), "round.default")
# --- transcendental
case("exp", torch.exp, lambda g: (rn(g, 2, 3),), "exp.default")
case("exp2", torch.exp2, lambda g: (rn(g, 2, 3),), "exp2.default")
case("expm1", torch.expm1, lambda g: (rn(g, 2, 3),), "expm1.default")
case("log", torch.log, lambda g: (pos(g, 2, 3),), "log.default")
case("log2", torch.log2, lambda g: (pos(g, 2, 3),), "log2.default")
case("log10", torch.log10, lambda g: (pos(g, 2, 3),), "log10.default")
case("log1p", torch.log1p, lambda g: (pos(g, 2, 3),), "log1p.default")
case("sqrt", torch.sqrt, lambda g: (pos(g, 2, 3),), "sqrt.default")
case("rsqrt", torch.rsqrt, lambda g: (pos(g, 2, 3),), "rsqrt.default")
case("sin", torch.sin, lambda g: (rn(g, 2, 3),), "sin.default")
case("cos", torch.cos, lambda g: (rn(g, 2, 3),), "cos.default")
case("tan", torch.tan, lambda g: (torch.rand(2, 3, generator=g) * 2 - 1,), "tan.default")
case("asin", torch.asin, lambda g: (torch.rand(2, 3, generator=g) * 1.6 - 0.8,), "asin.default")
case("acos", torch.acos, lambda g: (torch.rand(2, 3, generator=g) * 1.6 - 0.8,), "acos.default")
case("atan", torch.atan, lambda g: (rn(g, 2, 3),), "atan.default")
case("sinh", torch.sinh, lambda g: (rn(g, 2, 3),), "sinh.default")
case("cosh", torch.cosh, lambda g: (rn(g, 2, 3),), "cosh.default")
case("tanh", torch.tanh, lambda g: (rn(g, 2, 3),), "tanh.default")
case("atanh", torch.atanh, lambda g: (torch.rand(2, 3, generator=g) * 1.6 - 0.8,), "atanh.default")
case("atan2", torch.atan2, lambda g: (rn(g, 3, 4), rn(g, 3, 4)), "atan2.default")
case("erf", torch.erf, lambda g: (rn(g, 2, 3),), "erf.default")
# --- activations
case("relu", torch.relu, lambda g: (rn(g, 2, 3),), "relu.default")
case("relu6", F.relu6, lambda g: (rn(g, 2, 3) * 5,), "hardtanh.default")
case("hardtanh_default", F.hardtanh, lambda g: (rn(g, 2, 3) * 2,), "hardtanh.default")
case("sigmoid", torch.sigmoid, lambda g: (rn(g, 2, 3),), "sigmoid.default")
case("silu", F.silu, lambda g: (rn(g, 2, 3),), "sigmoid.default", "mul.Tensor")
case("gelu", F.gelu, lambda g: (rn(g, 2, 3),), "gelu.default")
case("leaky_relu", lambda a: F.leaky_relu(a, 0.1), lambda g: (rn(g, 2, 3),), "leaky_relu.default")
case("leaky_relu_int_slope", lambda a: F.leaky_relu(a, 0), lambda g: (rn(g, 2, 3),), "leaky_relu.default")
case("elu", F.elu, lambda g: (rn(g, 2, 3),), "elu.default")
case("softmax", lambda a: torch.softmax(a, -1), lambda g: (rn(g, 2, 5),), "_softmax.default")
case("log_softmax", lambda a: torch.log_softmax(a, 1), lambda g: (rn(g, 2, 5, 3),), "_log_softmax.default")
case("hardswish", F.hardswish, lambda g: (rn(g, 2, 3) * 4,), "clamp.default", "div.Tensor")
# --- comparison and logic
case("eq", lambda a, b: a == b, lambda g: (grid(g, 2, 5, scale=0.5), grid(g, 2, 5, scale=0.5)), "eq.Tensor")
case("eq_scalar", lambda a: a == 0.5, lambda g: (grid(g, 2, 5, scale=0.5),), "eq.Scalar")
case("ne", lambda a, b: a != b, lambda g: (grid(g, 2, 5, scale=0.5), grid(g, 2, 5, scale=0.5)), "ne.Tensor")
case("ne_scalar", lambda a: a != 0, lambda g: (grid(g, 2, 5, scale=0.5),), "ne.Scalar")
case("lt", lambda a, b: a < b, lambda g: (grid(g, 2, 5), grid(g, 2, 5)), "lt.Tensor")
case("lt_scalar", lambda a: a < 0.25, lambda g: (grid(g, 2, 5),), "lt.Scalar")
case("le", lambda a, b: a <= b, lambda g: (grid(g, 2, 5), grid(g, 2, 5)), "le.Tensor")
case("le_scalar", lambda a: a <= 0.25, lambda g: (grid(g, 2, 5),), "le.Scalar")
case("gt", lambda a, b: a > b, lambda g: (grid(g, 2, 5), grid(g, 2, 5)), "gt.Tensor")
case("ge", lambda a, b: a >= b, lambda g: (grid(g, 2, 5), grid(g, 2, 5)), "ge.Tensor")
case("ge_scalar", lambda a: a >= 0.25, lambda g: (grid(g, 2, 5),), "ge.Scalar")
case("where", lambda c, a, b: torch.where(c > 0, a, b), lambda g: (grid(g, 2, 3), rn(g, 2, 3), rn(g, 2, 3)),
     "where.self")
case("logical_and", lambda a, b: torch.logical_and(a > 0, b > 0), lambda g: (grid(g, 2, 5), grid(g, 2, 5)),
     "logical_and.default")
case("logical_or", lambda a, b: torch.logical_or(a > 0, b > 0), lambda g: (grid(g, 2, 5), grid(g, 2, 5)),
     "logical_or.default")
case("logical_xor", lambda a, b: torch.logical_xor(a > 0, b > 0), lambda g: (grid(g, 2, 5), grid(g, 2, 5)),
     "logical_xor.default")
case("logical_not", lambda a: torch.logical_not(a > 0), lambda g: (grid(g, 2, 5),), "logical_not.default")
case("bitwise_not_bool", lambda a: ~(a > 0), lambda g: (grid(g, 2, 5),), "bitwise_not.default")
case("bitwise_and_bool", lambda a, b: (a > 0) & (b > 0), lambda g: (grid(g, 2, 5), grid(g, 2, 5)),
     "bitwise_and.Tensor")
case("isnan", lambda a: torch.isnan(torch.log(a)), lambda g: (grid(g, 2, 5),), "isnan.default")
# --- convolution, linear algebra, normalization
case("conv2d", lambda: torch.nn.Conv2d(3, 8, 3, padding=1), lambda g: (rn(g, *X4),), "convolution.default",
     module=True)
case("conv2d_stride_groups", lambda: torch.nn.Conv2d(4, 8, 3, stride=2, groups=2, bias=False),
     lambda g: (rn(g, 1, 4, 9, 9),), "convolution.default", module=True)
case("conv2d_dilation", lambda: torch.nn.Conv2d(3, 4, 3, dilation=2, padding=2), lambda g: (rn(g, *X4),),
     "convolution.default", module=True)
case("conv2d_depthwise", lambda: torch.nn.Conv2d(4, 4, 3, groups=4, padding=1), lambda g: (rn(g, 1, 4, 6, 6),),
     "convolution.default", module=True)
case("conv1d", lambda: torch.nn.Conv1d(3, 5, 3, padding=1), lambda g: (rn(g, 2, 3, 10),), "convolution.default",
     module=True)
case("conv3d", lambda: torch.nn.Conv3d(2, 3, 3, padding=1), lambda g: (rn(g, 1, 2, 4, 5, 5),),
     "convolution.default", module=True)
case("conv_transpose2d", lambda: torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
     lambda g: (rn(g, *X4),), "convolution.default", module=True)
case("conv_transpose2d_groups", lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dilation=2),
     lambda g: (rn(g, 1, 4, 5, 5),), "convolution.default", module=True)
case("conv_transpose1d", lambda: torch.nn.ConvTranspose1d(3, 4, 3, stride=2), lambda g: (rn(g, 2, 3, 7),),
     "convolution.default", module=True)
case("linear", lambda: torch.nn.Linear(8, 4), lambda g: (rn(g, 3, 8),), "addmm.default", "permute.default",
     module=True)
case("linear_3d", lambda: torch.nn.Linear(8, 4, bias=False), lambda g: (rn(g, 2, 3, 8),), "mm.default",
     "view.default", module=True)
case("addmm_scaled", lambda b, x, w: torch.addmm(b, x, w, beta=0.5, alpha=2.0),
     lambda g: (rn(g, 4), rn(g, 3, 5), rn(g, 5, 4)), "addmm.default")
case("mm", torch.mm, lambda g: (rn(g, 3, 4), rn(g, 4, 5)), "mm.default")
case("bmm", torch.bmm, lambda g: (rn(g, 2, 3, 4), rn(g, 2, 4, 5)), "bmm.default")
case("matmul_bcast", torch.matmul, lambda g: (rn(g, 2, 3, 4), rn(g, 4, 5)), "mm.default")
case("baddbmm", torch.baddbmm, lambda g: (rn(g, 2, 3, 4), rn(g, 2, 3, 5), rn(g, 2, 5, 4)), "bmm.default")
case("batch_norm", lambda: _eval_bn(torch.nn.BatchNorm2d(3)), lambda g: (rn(g, *X4),),
     "_native_batch_norm_legit_no_training.default", module=True)
case("batch_norm_1d", lambda: _eval_bn(torch.nn.BatchNorm1d(5)), lambda g: (rn(g, 3, 5),),
     "_native_batch_norm_legit_no_training.default", module=True)
case("layer_norm", lambda: torch.nn.LayerNorm(8), lambda g: (rn(g, 2, 5, 8),), "native_layer_norm.default",
     module=True)
case("layer_norm_2d_noaffine", lambda: torch.nn.LayerNorm([4, 5], elementwise_affine=False),
     lambda g: (rn(g, 2, 4, 5),), "native_layer_norm.default", module=True)
case("group_norm", lambda: torch.nn.GroupNorm(2, 4), lambda g: (rn(g, 2, 4, 5, 5),), "native_group_norm.default",
     module=True)
case("instance_norm", lambda: torch.nn.InstanceNorm2d(3), lambda g: (rn(g, *X4),),
     "_native_batch_norm_legit.no_stats", module=True)
# --- pooling and resampling
case("max_pool2d", lambda: torch.nn.MaxPool2d(2), lambda g: (rn(g, *X4),), "max_pool2d_with_indices.default",
     module=True)
case("max_pool2d_pad_ceil", lambda: torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True), lambda g: (rn(g, 2, 3, 8, 8),),
     "max_pool2d_with_indices.default", module=True)
case("max_pool2d_no_stride", lambda a: F.max_pool2d(a, 2), lambda g: (rn(g, *X4),),
     "max_pool2d_with_indices.default")
case("max_pool3d", lambda: torch.nn.MaxPool3d(2), lambda g: (rn(g, 1, 2, 4, 4, 4),),
     "max_pool3d_with_indices.default", module=True)
case("avg_pool2d", lambda: torch.nn.AvgPool2d(3, 2, 1), lambda g: (rn(g, 2, 3, 8, 8),), "avg_pool2d.default",
     module=True)
case("avg_pool2d_exclude_pad_ceil", lambda: torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
     lambda g: (rn(g, 2, 3, 8, 8),), "avg_pool2d.default", module=True)
case("avg_pool3d", lambda: torch.nn.AvgPool3d(2), lambda g: (rn(g, 1, 2, 4, 4, 4),), "avg_pool3d.default",
     module=True)
case("adaptive_avg_pool2d", lambda: torch.nn.AdaptiveAvgPool2d((2, 3)), lambda g: (rn(g, 2, 3, 6, 6),),
     "_adaptive_avg_pool2d.default", module=True)
case("adaptive_avg_pool2d_uneven", lambda: torch.nn.AdaptiveAvgPool2d(3), lambda g: (rn(g, 1, 2, 8, 8),),
     "_adaptive_avg_pool2d.default", module=True)
case("adaptive_max_pool2d", lambda: torch.nn.AdaptiveMaxPool2d((2, 3)), lambda g: (rn(g, 1, 2, 6, 6),),
     "adaptive_max_pool2d.default", module=True)
case("adaptive_max_pool2d_uneven", lambda: torch.nn.AdaptiveMaxPool2d(3), lambda g: (rn(g, 1, 2, 8, 8),),
     "adaptive_max_pool2d.default", module=True)
case("upsample_nearest", lambda: torch.nn.Upsample(scale_factor=2), lambda g: (rn(g, *X4),),
     "upsample_nearest2d.vec", module=True)
case("upsample_nearest_size", lambda a: F.interpolate(a, size=(5, 9)), lambda g: (rn(g, 1, 2, 4, 6),),
     "upsample_nearest2d.vec")
case("upsample_bilinear", lambda: torch.nn.Upsample(scale_factor=2, mode="bilinear"), lambda g: (rn(g, *X4),),
     "upsample_bilinear2d.vec", module=True)
case("upsample_bilinear_align", lambda a: F.interpolate(a, size=(5, 7), mode="bilinear", align_corners=True),
     lambda g: (rn(g, 1, 2, 4, 4),), "upsample_bilinear2d.vec")
# --- reductions
case("mean_dim", lambda a: a.mean((2, 3), keepdim=True), lambda g: (rn(g, *X4),), "mean.dim")
case("mean_all", lambda a: a.mean(), lambda g: (rn(g, 2, 3),), "mean.default")
case("sum_dim", lambda a: a.sum(1), lambda g: (rn(g, 2, 3, 4),), "sum.dim_IntList")
case("sum_bool", lambda a: (a > 0).sum(1), lambda g: (grid(g, 2, 5),), "sum.dim_IntList")
case("amax", lambda a: a.amax(1), lambda g: (rn(g, 2, 3, 4),), "amax.default")
case("amin", lambda a: a.amin((0, 2)), lambda g: (rn(g, 2, 3, 4),), "amin.default")
case("max_dim", lambda a: a.max(1), lambda g: (distinct(g, 2, 3, 4),), "max.dim")
case("min_dim", lambda a: a.min(2, keepdim=True), lambda g: (distinct(g, 2, 3, 4),), "min.dim")
case("argmax", lambda a: a.argmax(1), lambda g: (distinct(g, 2, 3, 4),), "argmax.default")
case("argmin", lambda a: a.argmin(-1, keepdim=True), lambda g: (distinct(g, 2, 3, 4),), "argmin.default")
case("var", lambda a: a.var(1), lambda g: (rn(g, 2, 5),), "var.correction")
case("std_biased", lambda a: a.std(1, unbiased=False), lambda g: (rn(g, 2, 5),), "var.correction", "sqrt.default")
case("any_dim", lambda a: (a > 0).any(1), lambda g: (grid(g, 2, 5),), "any.dim")
case("all", lambda a: (a > -1).all(), lambda g: (grid(g, 2, 5),), "any.dims")
case("any", lambda a: (a > 3).any(), lambda g: (grid(g, 2, 5),), "any.default")
case("cumsum", lambda a: a.cumsum(1), lambda g: (rn(g, 2, 5),), "cumsum.default")
case("cumprod", lambda a: a.cumprod(1), lambda g: (rn(g, 2, 5),), "cumprod.default")
case("cumsum_int", lambda a: a.cumsum(0), lambda g: (ints(g, -5, 5, 4, 3),), "cumsum.default")
case("vector_norm", lambda a: torch.linalg.vector_norm(a, dim=1), lambda g: (rn(g, 2, 5),),
     "linalg_vector_norm.default")
case("vector_norm_l1", lambda a: torch.linalg.vector_norm(a, ord=1, dim=-1), lambda g: (rn(g, 2, 5),),
     "linalg_vector_norm.default")
# --- layout
case("view", lambda a: a.view(2, -1) * 2, lambda g: (rn(g, 2, 3, 4),), "view.default")
case("permute", lambda a: a.permute(2, 0, 1) + 1, lambda g: (rn(g, 2, 3, 4),), "permute.default")
case("expand", lambda a: a.expand(3, 4, 5) * 2, lambda g: (rn(g, 4, 1),), "expand.default")
case("cat", lambda a, b: torch.cat([a, b], 1), lambda g: (rn(g, 2, 3), rn(g, 2, 4)), "cat.default")
case("cat_int", lambda a, b: torch.cat([a, b]), lambda g: (ints(g, 0, 9, 2, 3), ints(g, 0, 9, 1, 3)),
     "cat.default")
case("stack", lambda a, b: torch.stack([a, b], 1), lambda g: (rn(g, 2, 3), rn(g, 2, 3)), "cat.default")
case("slice", lambda a: a[:, 1:4] * 2, lambda g: (rn(g, 2, 5),), "slice.Tensor")
case("slice_step", lambda a: a[:, ::2] * 2, lambda g: (rn(g, 2, 5),), "slice.Tensor")
case("slice_negative", lambda a: a[..., -3:-1] * 2, lambda g: (rn(g, 2, 5),), "slice.Tensor")
case("select", lambda a: a[:, 1] * 2, lambda g: (rn(g, 2, 5, 3),), "select.int")
case("select_negative", lambda a: a.select(2, -1) * 2, lambda g: (rn(g, 2, 3, 4),), "select.int")
case("squeeze", lambda a: a.squeeze(1) * 2, lambda g: (rn(g, 2, 1, 3),), "squeeze.dims")
case("unsqueeze", lambda a: a.unsqueeze(0) * 2, lambda g: (rn(g, 2, 3),), "unsqueeze.default")
case("split", lambda a: a.split([2, 3], 1), lambda g: (rn(g, 2, 5),), "split_with_sizes.default")
case("chunk", lambda a: a.chunk(2, 0), lambda g: (rn(g, 4, 3),), "split_with_sizes.default")
case("flip", lambda a: a.flip(1), lambda g: (rn(g, 2, 3, 4),), "flip.default")
case("repeat", lambda a: a.repeat(2, 1, 3), lambda g: (rn(g, 2, 3, 4),), "repeat.default")
case("constant_pad", lambda a: F.pad(a, (1, 2, 0, 1), value=0.5), lambda g: (rn(g, *X4),),
     "constant_pad_nd.default")
case("clone", lambda a: a.clone() + 1, lambda g: (rn(g, 2, 3),), "clone.default")
case("to_int", lambda a: a.to(torch.int32), lambda g: (grid(g, 2, 5),), "_to_copy.default")
case("to_float", lambda a: a.float() * 2, lambda g: (ints(g, 0, 9, 2, 3),), "_to_copy.default")
case("pixel_shuffle", lambda: torch.nn.PixelShuffle(2), lambda g: (rn(g, 1, 8, 3, 3),), "pixel_shuffle.default",
     module=True)
case("pixel_unshuffle", lambda: torch.nn.PixelUnshuffle(2), lambda g: (rn(g, 2, 3, 4, 6),),
     "pixel_unshuffle.default", module=True)
# --- indexing and scatter
case("index_select", lambda a, i: a.index_select(1, i), lambda g: (rn(g, 3, 5), torch.tensor([0, 2, 2, 4])),
     "index_select.default")
case("index", lambda a, i: a[i], lambda g: (rn(g, 5, 3), torch.tensor([0, -1, 4])), "index.Tensor")
case("index_inner", lambda a, i: a[:, i], lambda g: (rn(g, 5, 3), torch.tensor([0, 2, 1])), "index.Tensor")
case("index_two", lambda a, i, j: a[i, j], lambda g: (rn(g, 4, 5), torch.tensor([0, 1, 3]), torch.tensor([4, 0, 2])),
     "index.Tensor")
case("embedding", lambda: torch.nn.Embedding(10, 4), lambda g: (torch.tensor([[1, 2, 9], [0, 0, 3]]),),
     "embedding.default", module=True)
case("gather", lambda a, i: torch.gather(a, 1, i), lambda g: (rn(g, 3, 5), ints(g, 0, 5, 3, 4)), "gather.default")
case("scatter", lambda a, i, s: a.scatter(1, i, s),
     lambda g: (rn(g, 3, 5), torch.tensor([[0, 1], [2, 3], [4, 0]]), rn(g, 3, 2)), "scatter.src")
case("scatter_value", lambda a, i: a.scatter(1, i, 2.5),
     lambda g: (rn(g, 3, 5), torch.tensor([[0, 1], [2, 3], [4, 0]])), "scatter.value")
case("slice_scatter", lambda a, b: torch.slice_scatter(a, b, 1, 1, 3), lambda g: (rn(g, 3, 5), rn(g, 3, 2)),
     "slice_scatter.default")
case("index_put", lambda a, i, v: a.index_put((i,), v), lambda g: (rn(g, 5, 3), torch.tensor([0, 2]), rn(g, 2, 3)),
     "index_put.default")
case("topk", lambda a: a.topk(2, 1), lambda g: (distinct(g, 2, 5),), "topk.default")
case("topk_smallest", lambda a: a.topk(3, 1, largest=False), lambda g: (distinct(g, 2, 5),), "topk.default")
case("sort", lambda a: a.sort(1), lambda g: (distinct(g, 2, 5),), "sort.default")
case("sort_descending", lambda a: a.sort(1, descending=True), lambda g: (distinct(g, 2, 5),), "sort.default")
# --- constants and misc
case("full", lambda a: a + torch.full((2, 3), 1.5), lambda g: (rn(g, 2, 3),), "full.default")
case("zeros_like", lambda a: torch.zeros_like(a) + a * 2, lambda g: (rn(g, 2, 3),), "full_like.default")
case("arange", lambda a: a + torch.arange(3), lambda g: (rn(g, 2, 3),), "arange.start_step")
case("tril", lambda a: a.tril(), lambda g: (rn(g, 4, 4),), "scalar_tensor.default", "where.self")
case("dropout_eval", lambda a: F.dropout(a, 0.5, training=False) * 2, lambda g: (rn(g, 2, 3),), "mul.Tensor")
case("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
     lambda g: (rn(g, 1, 2, 4, 8), rn(g, 1, 2, 4, 8), rn(g, 1, 2, 4, 8)), "bmm.default", "_softmax.default",
     "mul.Scalar")


def _eval_bn(m: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        m.running_mean.uniform_(-0.5, 0.5)  # type: ignore[operator]
        m.running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
        m.weight.uniform_(0.5, 1.5)  # type: ignore[union-attr]
        m.bias.uniform_(-0.5, 0.5)  # type: ignore[union-attr]
    return m.eval()


#: cases whose nodes the plugin must refuse, with the reason code it must give for the named op
REFUSALS: list[tuple[str, Callable[[], torch.nn.Module], Callable[[torch.Generator], tuple[torch.Tensor, ...]],
                     str, str]] = [
    ("add_alpha", lambda: Fn(lambda a, b: torch.add(a, b, alpha=2)), lambda g: (rn(g, 2, 3), rn(g, 2, 3)),
     "aten.add.Tensor", "attr"),
    ("sub_alpha", lambda: Fn(lambda a, b: torch.sub(a, b, alpha=0.5)), lambda g: (rn(g, 2, 3), rn(g, 2, 3)),
     "aten.sub.Tensor", "attr"),
    ("argmax_flat", lambda: Fn(lambda a: a.argmax()), lambda g: (rn(g, 2, 3),), "aten.argmax.default", "attr"),
    ("argmin_flat", lambda: Fn(lambda a: a.argmin()), lambda g: (rn(g, 2, 3),), "aten.argmin.default", "attr"),
    ("diagonal", lambda: Fn(lambda a: torch.diagonal(a) * 2), lambda g: (rn(g, 4, 4),), "aten.diagonal.default",
     "op"),
    ("acosh", lambda: Fn(torch.acosh), lambda g: (pos(g, 2, 3) + 1,), "aten.acosh.default", "op"),
    ("asinh", lambda: Fn(torch.asinh), lambda g: (rn(g, 2, 3),), "aten.asinh.default", "op"),
    ("randn_like", lambda: Fn(lambda a: a + torch.randn_like(a)), lambda g: (rn(g, 2, 3),),
     "aten.randn_like.default", "op"),
    ("rand", lambda: Fn(lambda a: a + torch.rand(2, 3)), lambda g: (rn(g, 2, 3),), "aten.rand.default", "op"),
    ("dropout_train", lambda: Fn(lambda a: F.dropout(a, 0.5, training=True)), lambda g: (rn(g, 2, 3),),
     "aten.native_dropout.default", "attr"),
    ("gelu_tanh", lambda: Fn(lambda a: F.gelu(a, approximate="tanh")), lambda g: (rn(g, 2, 3),),
     "aten.gelu.default", "attr"),
    ("selu", lambda: Fn(F.selu), lambda g: (rn(g, 2, 3),), "aten.elu.default", "attr"),
    ("reciprocal", lambda: Fn(torch.reciprocal), lambda g: (pos(g, 2, 3),), "aten.reciprocal.default", "op"),
    ("trunc", lambda: Fn(torch.trunc), lambda g: (rn(g, 2, 3),), "aten.trunc.default", "op"),
    ("fmod", lambda: Fn(torch.fmod), lambda g: (rn(g, 2, 3), pos(g, 2, 3)), "aten.fmod.Tensor", "op"),
    ("max_pool_dilation", lambda: torch.nn.MaxPool2d(3, 1, dilation=2), lambda g: (rn(g, 1, 2, 8, 8),),
     "aten.max_pool2d_with_indices.default", "attr"),
    ("max_pool_indices", lambda: Fn(lambda a: F.max_pool2d(a, 2, return_indices=True)),
     lambda g: (rn(g, 1, 2, 4, 4),), "aten.max_pool2d_with_indices.default", "attr"),
    ("avg_pool_divisor", lambda: Fn(lambda a: F.avg_pool2d(a, 2, divisor_override=3)),
     lambda g: (rn(g, 1, 2, 4, 4),), "aten.avg_pool2d.default", "attr"),
    ("rank6", lambda: Fn(lambda a, b: a + b), lambda g: (rn(g, 1, 2, 1, 2, 1, 2), rn(g, 1, 2, 1, 2, 1, 2)),
     "aten.add.Tensor", "rank"),
    ("float64", lambda: Fn(lambda a: a * 2), lambda g: (rn(g, 2, 3).double(),), "aten.mul.Tensor", "dtype"),
    ("bitwise_and_int", lambda: Fn(lambda a, b: a & b), lambda g: (ints(g, 0, 9, 2, 3), ints(g, 0, 9, 2, 3)),
     "aten.bitwise_and.Tensor", "dtype"),
    ("crop_pad", lambda: Fn(lambda a: F.pad(a, (-1, 1))), lambda g: (rn(g, 2, 5),),
     "aten.constant_pad_nd.default", "attr"),
]
