"""Claim rules: what the lowering can express *and* Vela 5.2 compiles for the chosen target.

Vela has no CPU fallback for TOSA input, so a claimed node Vela then refuses
would fail the whole partition. Each limit below is one Vela documents for its
TOSA input (``vela --supported-ops-report``) or one found by compiling the
lowered op for ethos-u55-128 and ethos-u85-256 (see tests/test_arm_ethos_vela.py).
The U55 and U65 share one rule set (same NPU generation); the U85 runs the wider
TOSA PRO-INT set.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch

from delegate_sdk.support import (
    ClaimTable,
    NodeLimits,
    Reject,
    RuleContext,
    input_tensors,
    op_name,
    output_tensors,
)
from delegate_sdk.types import Claims, ReasonCode
from delegate_sdk_arm_ethos.limits import (
    AXIS_MAX,
    CONV_MAX_KAREA,
    CONV_MAX_KH,
    CONV_MAX_WEIGHTS_PER_CHANNEL,
    MAX_CHANNELS,
    MAX_RANK,
    MAX_STRIDE,
    POOL_MAX_KAREA,
    POOL_MAX_KH,
    POOL_MAX_PADDED_KERNEL,
    REDUCE_MAX_ELEMENTS,
    RESIZE_MAX_FACTOR,
    RESIZE_U55_FACTORS,
)
from delegate_sdk_arm_ethos.lowering import LOWERABLE_OPS
from delegate_sdk_arm_ethos.lowering.data_movement import bilinear_params
from delegate_sdk_arm_ethos.lowering.elementwise import COMPARISONS, LOGICAL
from delegate_sdk_arm_ethos.lowering.pooling import adaptive_stride, mean_hw_as_pool
from delegate_sdk_arm_ethos.lowering.tables import NOT_INT16_TABLE, TABLE_OPS
from delegate_sdk_arm_ethos.options import Target, resolve

_QUANTIZES_ITSELF = "tensors are not supported: the plugin quantizes float32 activations itself"
U55 = "Ethos-U55/U65"

# the compiler evaluates nodes computed from constants only (a transposed weight, an arange bias) with
# PyTorch and bakes the result in: such nodes are taken whatever their op (claim_folded_constants)
rules = ClaimTable(
    "Ethos-U",
    NodeLimits(dtypes=("float32", "bool"), max_rank=MAX_RANK, static_shapes=True, zero_size=False,
               dtype_reasons={
                   "int64": "int64 tensors are not supported (TOSA INT has no 64-bit types)",
                   "float64": "float64 tensors are not supported (TOSA INT has no 64-bit types)",
                   **{d: f"{d} {_QUANTIZES_ITSELF}" for d in ("float16", "bfloat16", "int8", "uint8", "int16",
                                                              "int32")},
               }),
    claim_folded_constants=True,
)


@dataclass(frozen=True)
class ClaimState:
    """Resolved once per claim from the options: the target, or why the options name none."""

    target: Target | None
    target_error: str = ""


@rules.state
def _resolve_target(program: Any, options: dict[str, Any]) -> ClaimState:
    try:
        return ClaimState(resolve(options))
    except ValueError as e:
        return ClaimState(None, str(e))


# ------------------------------------------------------------------ context
def target(ctx: RuleContext) -> Target | None:
    return ctx.state.target


def is_const(ctx: RuleContext, arg: Any) -> bool:
    return ctx.is_folded_constant(arg)


def u55(ctx: RuleContext) -> bool:
    t = target(ctx)
    return t is not None and not t.is_u85


def int16(ctx: RuleContext) -> bool:
    return ctx.precision == "a16w8"


def shape(arg: Any) -> tuple[int, ...]:
    if isinstance(arg, torch.fx.Node):
        v = arg.meta.get("val")
        if isinstance(v, (list, tuple)):
            v = v[0]
        if isinstance(v, torch.Tensor):
            return tuple(int(d) for d in v.shape)
    return ()


def out_shape(node: torch.fx.Node) -> tuple[int, ...]:
    ts = output_tensors(node)
    return tuple(int(d) for d in ts[0].shape) if ts else ()


def arg(node: torch.fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def pair(v: Any) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    return v * 2 if len(v) == 1 else v[:2]


# --------------------------------------------------------------- every node
FLOAT_OK = {"float32"}


@rules.every
def _options(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if target(ctx) is None:
        return Reject(ReasonCode.ATTR, ctx.state.target_error)
    if ctx.precision not in ("int8", "a16w8"):
        return Reject(ReasonCode.PRECISION, f"precision {ctx.precision!r} is not supported (int8, a16w8)")
    return None


def _extra_outputs_used(node: torch.fx.Node) -> bool:
    return any(u.target is operator.getitem and u.args[1] != 0 and u.users for u in node.users)


@rules.every
def _bool_on_u55(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    from delegate_sdk.support import node_tensors

    if u55(ctx) and any(t.dtype == torch.bool for t in node_tensors(node)):
        return Reject(ReasonCode.DTYPE, f"bool tensors are not supported on {U55}")
    return None


# ------------------------------------------------------------- convolution
def _weight_limits(cin_g: int, kh: int, kw: int, cout: int, cin: int) -> Reject | None:
    if cin > MAX_CHANNELS or cout > MAX_CHANNELS:
        return Reject(ReasonCode.SHAPE, f"channels {max(cin, cout)} exceed {MAX_CHANNELS}")
    if kh > CONV_MAX_KH:
        return Reject(ReasonCode.SHAPE, f"kernel height {kh} exceeds {CONV_MAX_KH}")
    if kh * kw > CONV_MAX_KAREA:
        return Reject(ReasonCode.SHAPE, f"kernel area {kh}x{kw} exceeds {CONV_MAX_KAREA}")
    if cin_g * kh * kw > CONV_MAX_WEIGHTS_PER_CHANNEL:
        return Reject(ReasonCode.SHAPE, f"{cin_g * kh * kw} weights per output channel exceed "
                                        f"{CONV_MAX_WEIGHTS_PER_CHANNEL} "
                                        "(Vela: sum of absolute weights <= 127*65536)")
    return None


def _strides(stride: list[int]) -> Reject | None:
    if any(s < 1 or s > MAX_STRIDE for s in stride):
        return Reject(ReasonCode.ATTR, f"stride {tuple(stride)} is outside 1..{MAX_STRIDE}")
    return None


@rules.op("aten.convolution.default")
def _conv(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    x, w, b = node.args[0], node.args[1], node.args[2]
    stride, padding, dilation, transposed, out_pad, groups = node.args[3:9]
    if not is_const(ctx, w):
        return Reject(ReasonCode.CONSTANT, "convolution weight must be a constant")
    if b is not None and not is_const(ctx, b):
        return Reject(ReasonCode.CONSTANT, "convolution bias must be a constant")
    xs, ws = shape(x), shape(w)
    if len(xs) == 5:
        return Reject(ReasonCode.OP, "3-D convolution is not supported")
    if len(xs) not in (3, 4):
        return Reject(ReasonCode.RANK, f"convolution input must be batched 1-D or 2-D (rank 3 or 4), got {len(xs)}")
    if len(xs) == 3:
        ws = (ws[0], ws[1], 1, ws[2])
        stride, padding, dilation, out_pad = [1, *stride], [0, *padding], [1, *dilation], [0, *out_pad]
    if transposed:
        if len(xs) != 4:
            return Reject(ReasonCode.RANK, "only 2-D transposed convolution is supported")
        if groups != 1:
            return Reject(ReasonCode.ATTR, "grouped transposed convolution is not supported")
        if any(d != 1 for d in dilation):
            return Reject(ReasonCode.ATTR, "dilated transposed convolution is not supported")
        if u55(ctx) and int16(ctx):
            return Reject(ReasonCode.PRECISION, f"transposed convolution is int8 only on {U55}")
        if tuple(stride) not in ((1, 1), (2, 2)):
            return Reject(ReasonCode.ATTR, f"transposed convolution stride {tuple(stride)} is not supported "
                                           "(Vela: (1,1) or (2,2))")
        cin, cout, kh, kw = ws
        if any(p >= k for p, k in zip(padding, (kh, kw))):
            return Reject(ReasonCode.ATTR, "transposed convolution padding must be smaller than the kernel")
        return _weight_limits(cin, kh, kw, cout, cin)
    cout, cin_g, kh, kw = ws
    cin = xs[1]
    r = _weight_limits(cin_g, kh, kw, cout, cin) or _strides(list(stride))
    if r:
        return r
    if any(d < 1 for d in dilation):
        return Reject(ReasonCode.ATTR, f"dilation {tuple(dilation)} is not supported")
    return None


@rules.op("aten.linear.default", keep_whole=True)  # one CONV2D instead of permute + addmm
def _linear(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    w = node.args[1]
    b = arg(node, 2, "bias")
    if not is_const(ctx, w):
        return Reject(ReasonCode.CONSTANT, "linear weight must be a constant")
    if b is not None and not is_const(ctx, b):
        return Reject(ReasonCode.CONSTANT, "linear bias must be a constant")
    oc, k = shape(w)
    return _weight_limits(k, 1, 1, oc, k)


@rules.op("aten.addmm.default", values={"beta": (1,), "alpha": (1,)})
def _addmm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    bias, a, w = node.args[:3]
    if not is_const(ctx, bias):
        return Reject(ReasonCode.CONSTANT, "addmm needs a constant bias")
    if not is_const(ctx, w) or is_const(ctx, a):
        if int16(ctx):
            return Reject(ReasonCode.PRECISION, "addmm of two activations is int8 only")
        return _matmul_precision(ctx) or _matmul_dims(shape(a), shape(w))
    bs = shape(bias)
    k, oc = shape(w)
    if len(bs) > 1 and bs[0] != 1:
        return Reject(ReasonCode.SHAPE, "addmm bias must broadcast along rows (shape [N] or [1, N])")
    return _weight_limits(k, 1, 1, oc, k)


def _matmul_precision(ctx: RuleContext) -> Reject | None:
    if u55(ctx) and int16(ctx):
        return Reject(ReasonCode.PRECISION, f"matrix multiplication of two activations is int8 only on {U55}")
    return None


@rules.op("aten.mm.default")
def _mm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a, b = node.args[:2]
    if is_const(ctx, b) and not is_const(ctx, a):
        k, oc = shape(b)
        return _weight_limits(k, 1, 1, oc, k)
    return _matmul_precision(ctx) or _matmul_dims(shape(a), shape(b))


@rules.op("aten.bmm.default")
def _bmm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return _matmul_precision(ctx) or _matmul_dims(shape(node.args[0]), shape(node.args[1]))


def _matmul_dims(a: tuple[int, ...], b: tuple[int, ...]) -> Reject | None:
    if max(a[-1], b[-1]) > AXIS_MAX:
        return Reject(ReasonCode.SHAPE, f"matmul inner/outer dimensions above {AXIS_MAX} are not supported")
    return None


# ------------------------------------------------------------- elementwise
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _has_activation(ctx: RuleContext, *args: Any) -> bool:
    return any(isinstance(a, torch.fx.Node) and not is_const(ctx, a) for a in args)


@rules.op("aten.add.Tensor", "aten.sub.Tensor", "aten.add.Scalar", "aten.sub.Scalar", "aten.rsub.Scalar")
def _add(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    alpha = node.kwargs.get("alpha", node.args[2] if len(node.args) > 2 else 1)
    if not _is_number(alpha):
        return Reject(ReasonCode.ATTR, "alpha must be a number")
    return None


rules.ops("aten.mul.Tensor", "aten.mul.Scalar")


# div.Tensor_mode (a rounding mode) is another overload, not in the table
@rules.op("aten.div.Tensor", "aten.div.Scalar")
def _div(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    d = node.args[1]
    if isinstance(d, torch.fx.Node) and not is_const(ctx, d):
        return Reject(ReasonCode.CONSTANT, "division is supported by a constant only (TOSA INT has no "
                                           "reciprocal)")
    if _is_number(d) and d == 0:
        return Reject(ReasonCode.ATTR, "division by zero")
    return None


@rules.op("aten.maximum.default", "aten.minimum.default")
def _minmax(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if any(is_const(ctx, a) for a in node.args[:2]):
        return Reject(ReasonCode.CONSTANT, "maximum/minimum with a constant operand is not supported "
                                           "(use clamp)")
    return None


rules.ops("aten.relu.default", "aten.relu6.default")


@rules.op("aten.hardtanh.default", "aten.clamp.default")
def _clamp(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    for i, name in ((1, "min"), (2, "max")):
        v = arg(node, i, name if op_name(node) == "aten.clamp.default" else f"{name}_val")
        if v is not None and not _is_number(v):
            return Reject(ReasonCode.ATTR, f"{name} must be a number")
    return None


# one TABLE instead of the decomposition's several ops
_KEPT_WHOLE_TABLES = ("aten.hardswish.default", "aten.silu.default", "aten.hardsigmoid.default",
                      "aten.mish.default", "aten.softplus.default", "aten.celu.default", "aten.selu.default",
                      "aten.hardshrink.default", "aten.softshrink.default")
for _op in sorted(TABLE_OPS):
    _fn = _op.split(".")[1]
    rules.ops(_op, keep_whole=_op in _KEPT_WHOLE_TABLES, **({} if _op not in NOT_INT16_TABLE else {
        "precisions": ("int8",),
        "precision_reasons": {"a16w8": f"{_fn} has jumps or an unbounded slope, which the interpolated int16 "
                                       "TABLE cannot follow; use int8"}}))


@rules.check(*sorted(TABLE_OPS))
def _table(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if u55(ctx) and int16(ctx):
        return Reject(ReasonCode.PRECISION, f"{op_name(node).split('.')[1]} needs an int16 TABLE, which "
                                            f"{U55} does not support; use int8")
    for a in (*node.args[1:], *node.kwargs.values()):
        if isinstance(a, torch.fx.Node):
            return Reject(ReasonCode.ATTR, "only elementwise functions with scalar parameters are supported")
    if op_name(node) == "aten.pow.Tensor_Scalar":
        e = node.args[1]
        if not _is_number(e):
            return Reject(ReasonCode.ATTR, "exponent must be a number")
        if int16(ctx) and not (float(e).is_integer() and e >= 0):
            return Reject(ReasonCode.PRECISION, "fractional or negative powers have an unbounded slope, which the "
                                                "interpolated int16 TABLE cannot follow; use int8")
    return None


# ------------------------------------------------------------------ pooling
def _pool_window(kernel: list[int], stride: list[int], padded: bool, batch: int) -> Reject | None:
    if batch != 1:
        return Reject(ReasonCode.SHAPE, f"pooling needs batch 1 on the Ethos-U, got {batch}")
    r = _strides(stride)
    if r:
        return r
    kh, kw = kernel
    if padded and (kh > POOL_MAX_PADDED_KERNEL or kw > POOL_MAX_PADDED_KERNEL):
        return Reject(ReasonCode.SHAPE, f"padded pooling kernel {kh}x{kw} exceeds "
                                        f"{POOL_MAX_PADDED_KERNEL}x{POOL_MAX_PADDED_KERNEL}")
    if kh > POOL_MAX_KH or kh * kw > POOL_MAX_KAREA:
        return Reject(ReasonCode.SHAPE, f"pooling kernel {kh}x{kw} exceeds height {POOL_MAX_KH} / "
                                        f"area {POOL_MAX_KAREA}")
    return None


def _pool_geometry(node: torch.fx.Node, kernel: list[int], stride: list[int], padding: list[int]) -> tuple[
        bool, Reject | None]:
    xs, os_ = shape(node.args[0]), out_shape(node)
    # padding actually applied: torch's, plus what ceil_mode adds at the bottom/right
    extra = [max(0, (o - 1) * s + k - i - p) for o, s, k, i, p in zip(os_[2:], stride, kernel, xs[2:], padding)]
    padded = any(padding) or any(extra)
    if any(e >= k for e, k in zip(extra, kernel)):
        return padded, Reject(ReasonCode.ATTR, "ceil_mode windows starting in the padding are not supported")
    return padded, _pool_window(kernel, stride, padded, xs[0])


@rules.op("aten.max_pool2d_with_indices.default", "aten.max_pool2d.default",
          values={"dilation": (1, [1], [1, 1])}, ranks={"self": (4, 4)})
def _max_pool(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if op_name(node) == "aten.max_pool2d_with_indices.default" and _extra_outputs_used(node):
        return Reject(ReasonCode.ATTR, "max pooling indices are not supported")
    kernel = pair(node.args[1])
    stride = pair(arg(node, 2, "stride") or kernel)
    padding = pair(arg(node, 3, "padding", 0))
    return _pool_geometry(node, kernel, stride, padding)[1]


@rules.op("aten.avg_pool2d.default", values={"divisor_override": (None,)}, ranks={"self": (4, 4)})
def _avg_pool(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    kernel = pair(node.args[1])
    stride = pair(arg(node, 2, "stride") or kernel)
    padding = pair(arg(node, 3, "padding", 0))
    ceil_mode = arg(node, 4, "ceil_mode", False)
    count_include_pad = arg(node, 5, "count_include_pad", True)
    xs, os_ = shape(node.args[0]), out_shape(node)
    if ceil_mode:
        floor_out = [(i + 2 * p - k) // s + 1 for i, p, k, s in zip(xs[2:], padding, kernel, stride)]
        if list(os_[2:]) != floor_out:
            return Reject(ReasonCode.ATTR, "avg_pool2d ceil_mode with partial windows is not supported")
    if count_include_pad and any(padding):
        # lowered as PAD + unpadded AVG_POOL2D
        return _pool_window(kernel, stride, False, xs[0])
    return _pool_geometry(node, kernel, stride, padding)[1]


def _reduce_dims(node: torch.fx.Node) -> list[int]:
    xs = shape(node.args[0])
    if op_name(node) in ("aten.mean.default", "aten.sum.default"):
        return list(range(len(xs)))
    dims = arg(node, 1, "dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(len(xs)))
    if isinstance(dims, int):
        dims = [dims]
    return sorted({d + len(xs) if d < 0 else d for d in dims})


def _reduce_limits(xs: tuple[int, ...], dims: list[int]) -> Reject | None:
    for d in dims:
        before = math.prod(xs[:d])
        after = math.prod(xs[d + 1:])
        if xs[d] > AXIS_MAX or before > AXIS_MAX or after > AXIS_MAX:
            return Reject(ReasonCode.SHAPE, f"reduction over a {xs[d]}-long axis of {xs} exceeds the "
                                            f"{AXIS_MAX} axis limit")
    return None


@rules.op("aten.mean.dim", "aten.sum.dim_IntList", "aten.mean.default", "aten.sum.default",
          values={"dtype": (None,)})
def _mean(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    xs = shape(node.args[0])
    dims = _reduce_dims(node)
    if op_name(node) == "aten.mean.dim" and mean_hw_as_pool(xs, dims):
        return None
    if math.prod(xs[d] for d in dims) > REDUCE_MAX_ELEMENTS:
        return Reject(ReasonCode.SHAPE, "reduction over more than 2**23 elements may overflow int32")
    return _reduce_limits(xs, dims)


@rules.op("aten.amax.default", "aten.amin.default")
def _amax(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return _reduce_limits(shape(node.args[0]), _reduce_dims(node))


@rules.op("aten.max.dim", "aten.min.dim")
def _max_dim(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _extra_outputs_used(node):
        return Reject(ReasonCode.DTYPE, "the int64 indices of max/min are not supported (use amax/amin)")
    xs = shape(node.args[0])
    d = node.args[1] + len(xs) if node.args[1] < 0 else node.args[1]
    return _reduce_limits(xs, [d])


@rules.op("aten._adaptive_avg_pool2d.default", "aten.adaptive_max_pool2d.default", ranks={"self": (4, 4)})
def _adaptive_pool(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _extra_outputs_used(node):
        return Reject(ReasonCode.ATTR, "adaptive max pooling indices are not supported")
    xs, os_ = shape(node.args[0]), out_shape(node)
    if xs[2] % os_[2] or xs[3] % os_[3]:
        return Reject(ReasonCode.SHAPE, f"adaptive pooling {xs[2:]} -> {os_[2:]} needs uniform windows "
                                        "(input divisible by output)")
    k = [xs[2] // os_[2], xs[3] // os_[3]]
    return _pool_window(k, adaptive_stride(k, os_[2:]), False, xs[0])


# ------------------------------------------------------------ data movement
@rules.op("aten._to_copy.default")
def _to_copy(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    ins, outs = input_tensors(node), output_tensors(node)
    if ins and ins[0].dtype == torch.bool and outs[0].dtype == torch.float32 and not u55(ctx):
        return None  # SELECT between the codes of 1.0 and 0.0
    if not ins or ins[0].dtype != outs[0].dtype:
        return Reject(ReasonCode.DTYPE, "dtype conversions are not supported (except bool to float32 on "
                                        "Ethos-U85)")
    return None


@rules.op("aten.permute.default", "aten.transpose.int", "aten.t.default")
def _permute(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    xs = shape(node.args[0])
    if u55(ctx) and len(xs) >= 3:
        # Vela's general TRANSPOSE on U55/U65: any N-2 axes multiply to at most 2**16.
        biggest = sorted(xs, reverse=True)[:len(xs) - 2]
        if math.prod(biggest) > AXIS_MAX:
            return Reject(ReasonCode.SHAPE, f"permute of {xs}: product of {len(xs) - 2} axes exceeds "
                                            f"{AXIS_MAX} on {U55}")
    return None


@rules.op("aten.slice.Tensor")
def _slice(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    step = arg(node, 4, "step", 1)
    if not isinstance(step, int) or step < 1:
        return Reject(ReasonCode.ATTR, f"slice step {step!r} is not supported")
    return None


@rules.op("aten.cat.default")
def _cat(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    rank = len(out_shape(node))
    for a in node.args[0]:
        s = shape(a)
        if len(s) != rank and math.prod(s) != 0:
            return Reject(ReasonCode.RANK, "cat of tensors of different rank is not supported")
    return None


@rules.op("aten.constant_pad_nd.default")
def _pad(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    value = arg(node, 2, "value", 0.0)
    if not _is_number(value):
        return Reject(ReasonCode.ATTR, "pad value must be a number")
    return None


@rules.op("aten.upsample_nearest2d.vec", ranks={"input": (4, 4)})
def _upsample_nearest(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    xs, os_ = shape(node.args[0]), out_shape(node)
    if u55(ctx) and xs[0] != 1:
        return Reject(ReasonCode.SHAPE, f"resize needs batch 1 on {U55} (Vela lowers it through pooling)")
    factors = []
    for i, o in zip(xs[2:], os_[2:]):
        if o % i or o < i:
            return Reject(ReasonCode.ATTR, f"nearest resize {xs[2:]} -> {os_[2:]} needs integer upscale factors")
        factors.append(o // i)
    if u55(ctx) and any(f not in RESIZE_U55_FACTORS for f in factors):
        return Reject(ReasonCode.ATTR, f"nearest upscale {tuple(factors)} is not supported on {U55} "
                                       f"(each factor 2, 4 or 8)")
    if any(f > RESIZE_MAX_FACTOR for f in factors):
        return Reject(ReasonCode.ATTR, f"nearest upscale {tuple(factors)} is too large")
    return None


@rules.op("aten._native_batch_norm_legit_no_training.default", ranks={"input": (2, MAX_RANK)})
def _batch_norm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    for a in node.args[1:5]:
        if a is not None and not is_const(ctx, a):
            return Reject(ReasonCode.CONSTANT, "batch norm parameters must be constants")
    for user in node.users:
        if user.target is operator.getitem and user.args[1] != 0 and user.users:
            return Reject(ReasonCode.ATTR, "batch norm statistics outputs are not supported")
    return None


# ------------------------------------- U85 only: comparisons, where, bool logic
@rules.op(*COMPARISONS)
def _compare(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if u55(ctx):
        return Reject(ReasonCode.OP, f"comparison operators cannot run on {U55}")
    if any(t.dtype != torch.float32 for t in input_tensors(node)):
        return Reject(ReasonCode.DTYPE, "comparisons are supported between float tensors only")
    return None


@rules.op(*LOGICAL, dtypes=("bool",))
def _logical(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if u55(ctx):
        return Reject(ReasonCode.OP, f"logical and bitwise operators cannot run on {U55}")
    return None


@rules.op("aten.where.self")
def _where(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if u55(ctx):
        return Reject(ReasonCode.OP, f"where cannot run on {U55}")
    return None


@rules.op("aten.upsample_bilinear2d.vec", ranks={"input": (4, 4)})
def _upsample_bilinear(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if u55(ctx):
        return Reject(ReasonCode.OP, f"bilinear resize cannot run on {U55}")
    xs, os_ = shape(node.args[0]), out_shape(node)
    align = bool(node.args[2]) if len(node.args) > 2 else False
    for i, o in zip(xs[2:], os_[2:]):
        n, d, off, border = bilinear_params(i, o, align)
        # TOSA level 8K: scale_n <= 2**11, upscale <= 256, downscale < 16; offsets/border within a step
        if n > 2048 or n > 256 * d or d >= 16 * n or not (-n <= off < 16 * n) or not (-n <= border < n):
            return Reject(ReasonCode.ATTR, f"bilinear resize {xs[2:]} -> {os_[2:]} is outside TOSA's resize limits")
    return None


# gather / index / scatter take int64 indices; the U85 could run them, the U55/U65 never
for _op in ("aten.gather.default", "aten.index.Tensor", "aten.index_select.default", "aten.embedding.default",
            "aten.scatter.src", "aten.scatter.value", "aten.index_put.default"):
    rules.refuse(_op, code=ReasonCode.OP, message=f"{_op} is not lowered by this plugin yet (gather/index/scatter "
                                                  f"operators cannot run on {U55} at all)")


@rules.op("aten._softmax.default", values={"half_to_float": (False,)}, precisions=("int8",),
          precision_reasons={"a16w8": "softmax is int8 only (an interpolated int16 exp table is off by several "
                                      "int16 steps)"})
def _softmax(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    xs = shape(node.args[0])
    d = node.args[1] + len(xs) if node.args[1] < 0 else node.args[1]
    if xs and xs[d] > AXIS_MAX:
        return Reject(ReasonCode.SHAPE, f"softmax over {xs[d]} elements exceeds {AXIS_MAX}")
    return None


# Every other op the lowering registers (reshapes, clones, select, expand, repeat, split, flip: any dim, as
# REVERSE along H of a [pre, n, 1, post] view) needs nothing beyond the limits.
rules.supported(*(op for op in LOWERABLE_OPS if rules.spec(op) is None))


def unlowerable_claims() -> list[str]:
    """Ops the table can take that have no lowering (a claim preprocess could not honour): must be empty."""
    return sorted(op for op in rules.op_names if rules.spec(op).refusal is None and op not in LOWERABLE_OPS)


def claim(program: Any, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Claims:
    """The ``claim`` hook: the table above, nodes computed from constants taken whatever their op."""
    return rules.claim(program, nodes, options)
