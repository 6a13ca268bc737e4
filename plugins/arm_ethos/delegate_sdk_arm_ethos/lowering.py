"""Quantize a core-ATen partition and lower it to a TOSA 1.0 INT graph.

Scheme: activations per-tensor (int8 asymmetric, or int16 symmetric for
``a16w8``) with ranges from calibration min/max; weights int8 symmetric per
output channel; biases int32 (int48 with int16 activations) in the
accumulator's scale. Every requantization is a TOSA RESCALE whose
multiplier/shift come from exact rationals (:mod:`quant`).

Layout: torch tensors are NCHW; TOSA convolutions and pools are NHWC. Each
value keeps its TOSA tensor per layout it has been materialised in, so a chain
of NHWC ops (conv -> relu -> pool -> conv) pays for one transpose at each end,
not one per op.

Ops per family:
- conv / linear / addmm / mm with constant weights -> CONV2D / DEPTHWISE_CONV2D (int32 acc) + RESCALE
- mm / bmm with two activations -> MATMUL + RESCALE
- add / sub / maximum / minimum -> RESCALE both to int32 at a shared scale, op, RESCALE
- mul (and div by a constant) -> RESCALE to int32, MUL, RESCALE
- relu / relu6 / hardtanh / clamp -> CLAMP in the input's quantization
- sigmoid, tanh, gelu, silu, hardswish, exp, ... -> TABLE (256 entries computed by the torch op itself)
- pools, mean over H,W -> MAX_POOL2D / AVG_POOL2D; other means/sums -> REDUCE_SUM + RESCALE
- reshape, permute, slice, cat, pad, expand, repeat, flip, nearest upsample -> data movement ops
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.export import ExportedProgram

from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.graph_eval import GraphInputs, output_nodes
from delegate_sdk_arm_ethos.quant import (
    Multiplier,
    QParams,
    fixed_qparams,
    multiplier_shift,
    qparams_from_range,
    quantize_bias,
    quantize_weights,
    symmetric_weight_scales,
    to_fraction,
)
from delegate_sdk_arm_ethos.refgraph import QuantWeight
from delegate_sdk_arm_ethos.tosa_builder import TosaBuilder

NHWC = (0, 2, 3, 1)  # std (NCHW) -> NHWC
NCHW = (0, 3, 1, 2)  # NHWC -> std

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
IDENTITY_OPS = {
    "aten.clone.default", "aten.alias.default", "aten.detach.default", "aten.contiguous.default",
    "aten.lift_fresh_copy.default", "aten._to_copy.default", "aten.dropout.default",
}
RESHAPE_OPS = {
    "aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.unsqueeze.default",
    "aten.squeeze.default", "aten.squeeze.dim", "aten.squeeze.dims", "aten.flatten.using_ints",
    "aten.view_copy.default",
}


class LoweringError(ValueError):
    """A node the lowering cannot express (claim rules should have refused it)."""


@dataclass
class Val:
    """One torch value inside the TOSA graph."""

    shape: tuple[int, ...]
    dtype: str  # "int8" | "int16" | "bool"
    q: QParams | None
    names: dict[str, str] = field(default_factory=dict)  # layout ("std" | "nhwc") -> TOSA tensor
    const: np.ndarray | None = None  # compile-time value (float or bool)

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class IOInfo:
    shape: tuple[int, ...]
    torch_dtype: str  # "float32" | "bool"
    q: QParams | None

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "torch_dtype": self.torch_dtype,
                "q": self.q.to_json() if self.q else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IOInfo:
        return cls(tuple(d["shape"]), d["torch_dtype"], QParams.from_json(d["q"]) if d["q"] else None)


@dataclass
class Lowered:
    tosa: bytes
    inputs: list[IOInfo]
    outputs: list[IOInfo]
    op_counts: dict[str, int]
    debug_map: dict[str, list[str]]
    node_q: dict[str, QParams]  # torch node -> quantization of its output
    weights: dict[str, QuantWeight]  # constant node -> its int8 per-channel quantization (torch layout)
    interpolated: dict[str, list[float]]  # int16 TABLE node -> input values of its 513 grid points


@dataclass(frozen=True)
class Ranges:
    lo: dict[str, float]
    hi: dict[str, float]

    def get(self, name: str) -> tuple[float, float]:
        if name not in self.lo:
            raise LoweringError(f"no calibration range for {name}")
        return self.lo[name], self.hi[name]


def _first_tensor(v: Any) -> torch.Tensor | None:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (list, tuple)):
        for x in v:
            t = _first_tensor(x)
            if t is not None:
                return t
    return None


class RangeObserver:
    """Min/max of every float node output over the calibration set."""

    def __init__(self) -> None:
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}

    def __call__(self, node: torch.fx.Node, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and op_name(node) == "aten.split_with_sizes.default":
            for i, t in enumerate(value):
                self._see(f"{node.name}#{i}", t)
        t = _first_tensor(value)
        self._see(node.name, t)
        return value

    def _see(self, key: str, t: torch.Tensor | None) -> None:
        if t is None or not t.is_floating_point() or t.numel() == 0:
            return
        finite = t[torch.isfinite(t)]
        if finite.numel() == 0:
            return
        lo, hi = float(finite.min()), float(finite.max())
        self.lo[key] = min(lo, self.lo.get(key, lo))
        self.hi[key] = max(hi, self.hi.get(key, hi))

    def ranges(self) -> Ranges:
        return Ranges(dict(self.lo), dict(self.hi))


def _inv(perm: Sequence[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def _np(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach()
        if t.dtype == torch.bool:
            return t.numpy().copy()
        return t.to(torch.float64).numpy().copy()
    return np.asarray(t, dtype=np.float64)


def _norm_dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _shape_of(node: torch.fx.Node) -> tuple[int, ...]:
    v = node.meta.get("val")
    t = _first_tensor(v)
    if t is None:
        raise LoweringError(f"{node.name} has no tensor value")
    return tuple(int(d) for d in t.shape)


def _per_dim(v: Sequence[int], n: int) -> list[int]:
    v = list(v)
    return v * n if len(v) == 1 and n > 1 else v


class Lowerer:
    def __init__(self, program: ExportedProgram, gi: GraphInputs, const_env: dict[str, Any], ranges: Ranges,
                 act_dtype: str = "int8") -> None:
        self.program = program
        self.gi = gi
        self.const_env = const_env
        self.ranges = ranges
        self.act = act_dtype
        self.acc = "int48" if act_dtype == "int16" else "int32"
        self.b = TosaBuilder()
        self.vals: dict[str, Any] = {}
        self.node_q: dict[str, QParams] = {}
        self.weights: dict[str, QuantWeight] = {}
        self.interpolated: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ driver
    def lower(self) -> Lowered:
        inputs: list[IOInfo] = []
        for node in self.gi.user:
            shape = _shape_of(node)
            t = _first_tensor(node.meta.get("val"))
            if t is not None and t.dtype == torch.bool:
                name = self.b.input(shape, "bool")
                self.vals[node.name] = Val(shape, "bool", None, {"std": name})
                inputs.append(IOInfo(shape, "bool", None))
                continue
            q = self._range_q(node.name)
            name = self.b.input(shape, self.act)
            self.vals[node.name] = Val(shape, self.act, q, {"std": name})
            self.node_q[node.name] = q
            inputs.append(IOInfo(shape, "float32", q))
        for name, value in self.const_env.items():
            if isinstance(value, torch.Tensor):
                self.vals[name] = self._const_val(value)
        for node in self.program.graph.nodes:
            if node.op != "call_function" or node.name in self.vals:
                continue
            self.b.source = [node.name]
            self.vals[node.name] = self._lower_node(node)
            v = self.vals[node.name]
            if isinstance(v, Val) and v.q is not None:
                self.node_q[node.name] = v.q
        outputs: list[IOInfo] = []
        self.b.source = []
        for out in output_nodes(self.program):
            if not isinstance(out, torch.fx.Node):
                raise LoweringError(f"partition output {out!r} is not a tensor")
            v = self.vals[out.name]
            if not isinstance(v, Val):
                raise LoweringError(f"partition output {out.name} is not a single tensor")
            self.b.mark_output(self.std(v))
            outputs.append(IOInfo(v.shape, "bool" if v.dtype == "bool" else "float32", v.q))
        return Lowered(self.b.serialize(), inputs, outputs, dict(self.b.op_counts), self.b.debug_map,
                       dict(self.node_q), dict(self.weights), dict(self.interpolated))

    def _lower_node(self, node: torch.fx.Node) -> Any:
        if node.meta.get("val") is None:
            return None  # host-side assertions (the core never puts them in a partition)
        if node.target is operator.getitem:
            src = self.vals[node.args[0].name]
            return src[node.args[1]]
        name = op_name(node)
        fn = self._dispatch(name)
        if fn is None:
            raise LoweringError(f"no TOSA lowering for {name} ({node.name})")
        return fn(node)

    def _dispatch(self, name: str) -> Callable[[torch.fx.Node], Any] | None:
        if name in TABLE_OPS:
            return self._table_op
        if name in IDENTITY_OPS:
            return self._identity
        if name in RESHAPE_OPS:
            return self._reshape
        return {
            "aten.convolution.default": self._convolution,
            "aten.linear.default": self._linear,
            "aten.addmm.default": self._addmm,
            "aten.mm.default": self._mm,
            "aten.bmm.default": self._bmm,
            "aten.matmul.default": self._bmm,
            "aten.add.Tensor": self._add,
            "aten.add.Scalar": self._add,
            "aten.sub.Tensor": self._add,
            "aten.sub.Scalar": self._add,
            "aten.rsub.Scalar": self._add,
            "aten.mul.Tensor": self._mul,
            "aten.mul.Scalar": self._mul,
            "aten.div.Tensor": self._mul,
            "aten.div.Scalar": self._mul,
            "aten.maximum.default": self._minmax,
            "aten.minimum.default": self._minmax,
            "aten.relu.default": self._clamp,
            "aten.relu6.default": self._clamp,
            "aten.hardtanh.default": self._clamp,
            "aten.clamp.default": self._clamp,
            "aten.max_pool2d_with_indices.default": self._max_pool,
            "aten.max_pool2d.default": self._max_pool,
            "aten.avg_pool2d.default": self._avg_pool,
            "aten.mean.dim": self._mean_sum,
            "aten.mean.default": self._mean_sum,
            "aten.sum.default": self._mean_sum,
            "aten._adaptive_avg_pool2d.default": self._adaptive_pool,
            "aten.adaptive_max_pool2d.default": self._adaptive_pool,
            "aten.max.dim": self._max_dim,
            "aten.min.dim": self._max_dim,
            "aten.sum.dim_IntList": self._mean_sum,
            "aten.amax.default": self._amax,
            "aten.amin.default": self._amax,
            "aten.permute.default": self._permute,
            "aten.transpose.int": self._permute,
            "aten.t.default": self._permute,
            "aten.slice.Tensor": self._slice,
            "aten.select.int": self._select,
            "aten.cat.default": self._cat,
            "aten.split_with_sizes.default": self._split,
            "aten.split.Tensor": self._split,
            "aten.constant_pad_nd.default": self._pad,
            "aten.expand.default": self._expand,
            "aten.repeat.default": self._repeat,
            "aten.flip.default": self._flip,
            "aten.upsample_nearest2d.vec": self._upsample_nearest,
            "aten.upsample_bilinear2d.vec": self._upsample_bilinear,
            "aten._native_batch_norm_legit_no_training.default": self._batch_norm,
            "aten._softmax.default": self._softmax,
            **{f"aten.{k}.{o}": self._compare for k in ("gt", "ge", "lt", "le", "eq", "ne")
               for o in ("Tensor", "Scalar")},
            "aten.where.self": self._where,
            "aten.logical_and.default": self._logical,
            "aten.logical_or.default": self._logical,
            "aten.logical_xor.default": self._logical,
            "aten.logical_not.default": self._logical,
            "aten.bitwise_and.Tensor": self._logical,
            "aten.bitwise_or.Tensor": self._logical,
            "aten.bitwise_xor.Tensor": self._logical,
            "aten.bitwise_not.default": self._logical,
        }.get(name)

    # --------------------------------------------------------------- helpers
    def _range_q(self, key: str) -> QParams:
        lo, hi = self.ranges.get(key)
        return qparams_from_range(lo, hi, self.act)

    def _const_val(self, t: torch.Tensor) -> Val:
        arr = _np(t)
        dtype = "bool" if arr.dtype == np.bool_ else self.act
        return Val(tuple(arr.shape), dtype, None, {}, arr)

    def val(self, arg: Any) -> Val:
        if isinstance(arg, torch.fx.Node):
            v = self.vals[arg.name]
            if not isinstance(v, Val):
                raise LoweringError(f"{arg.name} is not a single tensor")
            return v
        return Val((), self.act, None, {}, np.asarray(arg, dtype=np.float64))

    def _materialize(self, v: Val) -> None:
        """Give a compile-time constant a quantized TOSA tensor (std layout)."""
        assert v.const is not None
        if v.dtype == "bool":
            v.names["std"] = self.b.const(v.const.astype(np.bool_), "bool")
            return
        if v.q is None:
            finite = v.const[np.isfinite(v.const)] if v.const.size else v.const
            lo = float(finite.min()) if finite.size else 0.0
            hi = float(finite.max()) if finite.size else 0.0
            v.q = qparams_from_range(lo, hi, self.act)
        v.names["std"] = self.b.const(v.q.quantize(v.const), self.act)

    def std(self, v: Val) -> str:
        if "std" not in v.names:
            if "nhwc" in v.names:
                v.names["std"] = self.b.transpose(v.names["nhwc"], NCHW)
            else:
                self._materialize(v)
        return v.names["std"]

    def nhwc(self, v: Val) -> str:
        if v.rank != 4:
            raise LoweringError(f"NHWC needs a rank-4 tensor, got shape {v.shape}")
        if "nhwc" not in v.names:
            v.names["nhwc"] = self.b.transpose(self.std(v), NHWC)
        return v.names["nhwc"]

    def _layout_of(self, v: Val) -> str:
        return "nhwc" if "nhwc" in v.names and "std" not in v.names else "std"

    def _get(self, v: Val, layout: str) -> str:
        return self.nhwc(v) if layout == "nhwc" else self.std(v)

    def _new_val(self, shape: Sequence[int], q: QParams | None, layout: str, name: str,
                 dtype: str | None = None) -> Val:
        return Val(tuple(shape), dtype or self.act, q, {layout: name})

    @staticmethod
    def _lshape(shape: Sequence[int], layout: str) -> list[int]:
        return [shape[p] for p in NHWC] if layout == "nhwc" else list(shape)

    def _rescale(self, x: str, scales: Sequence[float | Fraction], in_zp: int, out_zp: int,
                 out_dtype: str) -> str:
        if self.b.info[x].dtype == "int48":
            # TOSA rescales int48 with 16-bit multipliers only (~1 LSB of int16 output error). Shift the
            # accumulator into int32 exactly (by its known bound) and rescale from there with 32 bits.
            if x not in self.b.bounds:
                raise LoweringError(f"no bound known for the int48 tensor {x}")
            p = max(0, self.b.bounds[x].bit_length() - 30)
            x = self.b.rescale(x, [Multiplier(1 << 14, 14 + p)], 0, 0, "int32")
            scales = [to_fraction(s) * (1 << p) for s in scales]
        mults = [multiplier_shift(s, 32) for s in scales]
        return self.b.rescale(x, mults, in_zp, out_zp, out_dtype, per_channel=len(mults) > 1)

    def _requant(self, x: str, src: QParams, dst: QParams) -> str:
        """int8/int16 tensor from ``src`` to ``dst`` quantization (no-op when equal)."""
        if src == dst:
            return x
        return self._rescale(x, [to_fraction(src.scale) / to_fraction(dst.scale)], src.zero_point,
                             dst.zero_point, dst.dtype)

    def _to_int32(self, x: str, q: QParams, scale: Fraction) -> str:
        """(q - zp) * scale as int32."""
        return self._rescale(x, [scale], q.zero_point, 0, "int32")

    def _out_q(self, node: torch.fx.Node) -> QParams:
        return self._range_q(node.name)

    def _broadcast_operand(self, v: Val, out_shape: Sequence[int], layout: str) -> str:
        """TOSA tensor of ``v`` with rank of the output (leading 1s), in ``layout``."""
        rank = len(out_shape)
        if v.rank == rank:
            return self._get(v, layout)
        shape = (1,) * (rank - v.rank) + tuple(v.shape)
        name = self.b.reshape(self.std(v), shape)
        if layout == "nhwc":
            name = self.b.transpose(name, NHWC)
        return name

    def _pick_layout(self, out_shape: Sequence[int], vals: Sequence[Val]) -> str:
        if len(out_shape) == 4:
            for v in vals:
                if v.const is None and v.rank == 4:
                    return self._layout_of(v)
        return "std"

    # -------------------------------------------------------- conv and matmul
    def _weight_quant(self, w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        scales = symmetric_weight_scales(w, axis)
        return quantize_weights(w, scales, axis), scales

    def _acc_rescale(self, acc: str, x_q: QParams, w_scales: np.ndarray, out_q: QParams) -> str:
        sx = to_fraction(x_q.scale)
        so = to_fraction(out_q.scale)
        scales = [sx * to_fraction(float(s)) / so for s in w_scales]
        if len(set(scales)) == 1:
            scales = scales[:1]
        return self._rescale(acc, scales, 0, out_q.zero_point, out_q.dtype)

    def _bias_q(self, bias: np.ndarray | None, oc: int, x_q: QParams, w_scales: np.ndarray) -> np.ndarray:
        b = np.zeros(oc) if bias is None else bias.astype(np.float64).reshape(-1)
        acc_scales = x_q.scale * w_scales
        q = np.round(b / acc_scales)
        if self.acc == "int32":
            return quantize_bias(b, acc_scales)
        return np.clip(q, -(2**47), 2**47 - 1).astype(np.int64)

    def _record_weight(self, arg: Any, axis: int) -> None:
        """Remember how a weight is quantized, in its torch layout (for the fake-quant reference)."""
        if isinstance(arg, torch.fx.Node):
            w = self.val(arg).const
            if w is not None:
                scales = symmetric_weight_scales(w, axis)
                self.weights[arg.name] = QuantWeight(quantize_weights(w, scales, axis), scales, axis)

    def _const_arg(self, arg: Any, what: str) -> np.ndarray | None:
        if arg is None:
            return None
        v = self.val(arg)
        if v.const is None:
            raise LoweringError(f"{what} must be a compile-time constant")
        return v.const

    def _convolution(self, node: torch.fx.Node) -> Val:
        x_arg, w_arg, b_arg, stride, padding, dilation, transposed, out_pad, groups = node.args[:9]
        x = self.val(x_arg)
        # ATen allows one value for every spatial dim ([1]: what F.conv2d(padding="valid") and some exporters
        # give); the TOSA emitters index each dim
        stride, padding, dilation, out_pad = (_per_dim(v, x.rank - 2) for v in (stride, padding, dilation, out_pad))
        w = self._const_arg(w_arg, "convolution weight")
        bias = self._const_arg(b_arg, "convolution bias")
        out_shape = _shape_of(node)
        out_q = self._out_q(node)
        self._record_weight(w_arg, 1 if transposed else 0)
        if transposed:
            return self._transpose_conv(node, x, w, bias, stride, padding, dilation, out_pad, groups, out_q)
        if x.rank == 3:  # conv1d as conv2d with H = 1
            x4 = Val((x.shape[0], x.shape[1], 1, x.shape[2]), x.dtype, x.q,
                     {"std": self.b.reshape(self.std(x), (x.shape[0], x.shape[1], 1, x.shape[2]))})
            w4 = w[:, :, None, :]
            stride, padding, dilation = [1, stride[0]], [0, padding[0]], [1, dilation[0]]
            o4 = (out_shape[0], out_shape[1], 1, out_shape[2])
            y4 = self._conv2d(x4, w4, bias, stride, padding, dilation, groups, o4, out_q)
            return self._new_val(out_shape, out_q, "std", self.b.reshape(self.std(y4), out_shape))
        return self._conv2d(x, w, bias, stride, padding, dilation, groups, out_shape, out_q)

    def _fit_window(self, xn: str, size_h: int, size_w: int, k: Sequence[int], s: Sequence[int],
                    d: Sequence[int], pad: list[int], out_hw: Sequence[int]) -> tuple[str, list[int]]:
        """Make (in + pads - eff_kernel) divisible by stride and match torch's output size.

        TOSA requires the output size to follow exactly from the padded input;
        torch floors. Trim the bottom/right padding, and the input itself when
        trimming padding is not enough.
        """
        crop = [0, 0]
        for i, (n_in, kk, ss, dd, n_out) in enumerate(zip((size_h, size_w), k, s, d, out_hw)):
            eff = (kk - 1) * dd + 1
            need = (n_out - 1) * ss + eff  # padded length actually read
            after = need - n_in - pad[2 * i]
            if after < 0:
                crop[i] = -after
                after = 0
            pad[2 * i + 1] = after
        if any(crop):
            info = self.b.info[xn]
            size = list(info.shape)
            size[1] -= crop[0]
            size[2] -= crop[1]
            xn = self.b.slice(xn, [0, 0, 0, 0], size)
        return xn, pad

    def _conv2d(self, x: Val, w: np.ndarray, bias: np.ndarray | None, stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], groups: int, out_shape: Sequence[int],
                out_q: QParams) -> Val:
        n, cin, h, wd = x.shape
        cout, cin_g, kh, kw = w.shape
        xq = x.q
        assert xq is not None
        xn = self.nhwc(x)
        pad = [padding[0], padding[0], padding[1], padding[1]]
        xn, pad = self._fit_window(xn, h, wd, (kh, kw), stride, dilation, pad, out_shape[2:])
        out_nhwc = [out_shape[0], out_shape[2], out_shape[3], out_shape[1]]
        if groups == 1:
            wq, ws = self._weight_quant(w, 0)
            acc = self.b.conv2d(xn, wq.transpose(0, 2, 3, 1), self._bias_q(bias, cout, xq, ws), xq.zero_point,
                                pad, stride, dilation, out_nhwc, self.acc)
            y = self._acc_rescale(acc, xq, ws, out_q)
        elif groups == cin and cin_g == 1:
            mult = cout // cin
            wq, ws = self._weight_quant(w, 0)
            wd_ = wq.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)  # [KH, KW, C, M]
            acc = self.b.depthwise_conv2d(xn, wd_, self._bias_q(bias, cout, xq, ws), xq.zero_point, pad,
                                          stride, dilation, out_nhwc, self.acc)
            y = self._acc_rescale(acc, xq, ws, out_q)
        else:
            parts = []
            cout_g = cout // groups
            info = self.b.info[xn]
            for g in range(groups):
                xs = self.b.slice(xn, [0, 0, 0, g * cin_g], [info.shape[0], info.shape[1], info.shape[2], cin_g])
                wg = w[g * cout_g:(g + 1) * cout_g]
                bg = None if bias is None else bias[g * cout_g:(g + 1) * cout_g]
                wq, ws = self._weight_quant(wg, 0)
                acc = self.b.conv2d(xs, wq.transpose(0, 2, 3, 1), self._bias_q(bg, cout_g, xq, ws),
                                    xq.zero_point, pad, stride, dilation, out_nhwc[:3] + [cout_g], self.acc)
                parts.append(self._acc_rescale(acc, xq, ws, out_q))
            y = self.b.concat(parts, 3)
        return self._new_val(out_shape, out_q, "nhwc", y)

    def _transpose_conv(self, node: torch.fx.Node, x: Val, w: np.ndarray, bias: np.ndarray | None,
                        stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                        out_pad: Sequence[int], groups: int, out_q: QParams) -> Val:
        if groups != 1 or any(d != 1 for d in dilation) or x.rank != 4:
            raise LoweringError("transposed convolution needs groups=1, dilation=1 and a 4-D input")
        out_shape = _shape_of(node)
        xq = x.q
        assert xq is not None
        cin, cout, kh, kw = w.shape  # torch: [IC, OC, KH, KW]
        wt = w.transpose(1, 2, 3, 0)  # [OC, KH, KW, IC]
        wq, ws = self._weight_quant(wt, 0)
        # TOSA out_pad adds to the full transposed-conv output; torch crops `padding` on each side
        # and appends `output_padding` at the end.
        tpad = [-padding[0], -padding[0] + out_pad[0], -padding[1], -padding[1] + out_pad[1]]
        out_nhwc = [out_shape[0], out_shape[2], out_shape[3], out_shape[1]]
        acc = self.b.transpose_conv2d(self.nhwc(x), wq, self._bias_q(bias, cout, xq, ws), xq.zero_point, tpad,
                                      stride, out_nhwc, self.acc)
        return self._new_val(out_shape, out_q, "nhwc", self._acc_rescale(acc, xq, ws, out_q))

    def _fully_connected(self, node: torch.fx.Node, x: Val, w: np.ndarray, bias: np.ndarray | None) -> Val:
        """x [..., K] @ w[OC, K].T + bias as a 1x1 CONV2D over a [1, M, 1, K] NHWC tensor."""
        out_shape = _shape_of(node)
        out_q = self._out_q(node)
        xq = x.q
        assert xq is not None
        k = x.shape[-1]
        m = int(np.prod(x.shape[:-1])) if x.rank > 1 else 1
        oc = w.shape[0]
        xr = self.b.reshape(self.std(x), (1, m, 1, k))
        wq, ws = self._weight_quant(w, 0)
        acc = self.b.conv2d(xr, wq.reshape(oc, 1, 1, k), self._bias_q(bias, oc, xq, ws), xq.zero_point,
                            [0, 0, 0, 0], [1, 1], [1, 1], [1, m, 1, oc], self.acc)
        y = self._acc_rescale(acc, xq, ws, out_q)
        return self._new_val(out_shape, out_q, "std", self.b.reshape(y, out_shape))

    def _linear(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        w = self._const_arg(node.args[1], "linear weight")
        bias = self._const_arg(node.args[2] if len(node.args) > 2 else node.kwargs.get("bias"), "linear bias")
        assert w is not None
        self._record_weight(node.args[1], 0)
        return self._fully_connected(node, x, w, bias)

    def _addmm(self, node: torch.fx.Node) -> Val:
        bias_arg, a_arg, b_arg = node.args[:3]
        beta = node.kwargs.get("beta", 1)
        alpha = node.kwargs.get("alpha", 1)
        b = self.val(b_arg)
        if beta != 1 or alpha != 1:
            raise LoweringError("addmm needs beta=1 and alpha=1")
        bias = self._const_arg(bias_arg, "addmm bias")
        assert bias is not None
        a = self.val(a_arg)
        if b.const is not None and a.const is None:
            oc = b.const.shape[1]
            self._record_weight(b_arg, 1)
            return self._fully_connected(node, a, b.const.T, np.broadcast_to(bias, (oc,)).reshape(-1))
        return self._matmul(node, a, b, bias)

    def _mm(self, node: torch.fx.Node) -> Val:
        a, b = self.val(node.args[0]), self.val(node.args[1])
        if b.const is not None and a.const is None:
            self._record_weight(node.args[1], 1)
            return self._fully_connected(node, a, b.const.T, None)
        return self._matmul(node, a, b)

    def _bmm(self, node: torch.fx.Node) -> Val:
        return self._matmul(node, self.val(node.args[0]), self.val(node.args[1]))

    def _matmul(self, node: torch.fx.Node, a: Val, b: Val, bias: np.ndarray | None = None) -> Val:
        out_shape = _shape_of(node)
        out_q = self._out_q(node)
        a3 = self.b.reshape(self.std(a), (1,) * (3 - a.rank) + a.shape if a.rank < 3 else a.shape)
        b3 = self.b.reshape(self.std(b), (1,) * (3 - b.rank) + b.shape if b.rank < 3 else b.shape)
        assert a.q is not None and b.q is not None
        n, h, _ = self.b.info[a3].shape
        w = self.b.info[b3].shape[2]
        acc = self.b.matmul(a3, b3, a.q.zero_point, b.q.zero_point, [n, h, w], self.acc)
        if bias is not None:
            if self.acc != "int32":
                raise LoweringError("matmul with bias needs int8 activations")
            bq = np.clip(np.round(np.broadcast_to(bias, (h, w)) / (a.q.scale * b.q.scale)), -(2**31), 2**31 - 1)
            acc = self.b.elementwise("ADD", acc, self.b.const(bq.reshape(1, h, w), "int32"), [n, h, w], "int32")
        scale = to_fraction(a.q.scale) * to_fraction(b.q.scale) / to_fraction(out_q.scale)
        y = self._rescale(acc, [scale], 0, out_q.zero_point, out_q.dtype)
        return self._new_val(out_shape, out_q, "std", self.b.reshape(y, out_shape))

    # ----------------------------------------------------------- elementwise
    def _binary_operands(self, node: torch.fx.Node) -> tuple[Val, Val]:
        return self.val(node.args[0]), self.val(node.args[1])

    def _add(self, node: torch.fx.Node) -> Val:
        name = op_name(node)
        a, b = self._binary_operands(node)
        alpha = float(node.kwargs.get("alpha", node.args[2] if len(node.args) > 2 else 1))
        sign_a, sign_b = 1.0, alpha
        if name.startswith("aten.sub"):
            sign_b = -alpha
        elif name == "aten.rsub.Scalar":
            sign_a, sign_b = -alpha, 1.0
        out_shape = _shape_of(node)
        out_q = self._out_q(node)
        return self._linear_combination(out_shape, out_q, [(a, sign_a), (b, sign_b)], "ADD")

    def _common_int32(self, out_shape: Sequence[int], terms: list[tuple[Val, float]]) -> tuple[
            str, list[str], Fraction]:
        """Each coef * term as int32 in one shared unit, broadcast to the output rank.

        The unit is 2**-20 (int8) / 2**-15 (int16) of twice the largest scaled
        term scale, so sums carry ~20 extra bits and cannot overflow; constant
        terms are quantized straight to that unit.
        """
        extra = 20 if self.act == "int8" else 15
        act_terms = [(v, c) for v, c in terms if v.const is None]
        scales = [abs(c) * v.q.scale for v, c in act_terms if v.q is not None and c != 0]
        if not scales:
            raise LoweringError("elementwise op with no activation operand")
        unit = 2 * to_fraction(max(scales)) / (1 << extra)
        layout = self._pick_layout(out_shape, [v for v, _ in act_terms])
        rank = len(out_shape)
        names: list[str] = []
        for v, c in terms:
            if v.const is not None:
                c32 = np.clip(np.round(np.nan_to_num(c * np.asarray(v.const, dtype=np.float64) / float(unit))),
                              -(2**31), 2**31 - 1)
                c32 = c32.reshape((1,) * (rank - c32.ndim) + c32.shape)
                if layout == "nhwc":
                    c32 = c32.transpose(NHWC)
                names.append(self.b.const(c32, "int32"))
                continue
            assert v.q is not None
            scale = to_fraction(abs(c)) * to_fraction(v.q.scale) / unit
            t = self._to_int32(self._broadcast_operand(v, out_shape, layout), v.q, scale)
            if c < 0:
                zero = self.b.const(np.zeros((1,) * rank), "int32")
                t = self.b.elementwise("SUB", zero, t, self.b.info[t].shape, "int32")
            names.append(t)
        return layout, names, unit

    def _full_size(self, t: str, lshape: Sequence[int]) -> str:
        """Broadcast ``t`` to ``lshape`` (only needed when every operand of an op was broadcast)."""
        info = self.b.info[t]
        if list(info.shape) == list(lshape):
            return t
        if info.dtype == "int32":
            zero = self.b.const(np.zeros((1,) * len(lshape)), "int32")
            return self.b.elementwise("ADD", t, zero, lshape, "int32")
        if info.dtype == "bool":
            true = self.b.const(np.ones((1,) * len(lshape), dtype=np.bool_), "bool")
            return self.b.elementwise("LOGICAL_AND", t, true, lshape, "bool")
        return self.b.tile(t, [o if i == 1 else 1 for i, o in zip(info.shape, lshape)])

    def _bshape(self, a: str, b: str) -> list[int]:
        return list(np.broadcast_shapes(self.b.info[a].shape, self.b.info[b].shape))

    def _linear_combination(self, out_shape: Sequence[int], out_q: QParams, terms: list[tuple[Val, float]],
                            combine: str) -> Val:
        """sum(coef * term) (combine="ADD") or MAXIMUM/MINIMUM of the terms, then requantize."""
        layout, names, unit = self._common_int32(out_shape, terms)
        acc = names[0]
        for t in names[1:]:
            acc = self.b.elementwise(combine, acc, t, self._bshape(acc, t), "int32")
        acc = self._full_size(acc, self._lshape(out_shape, layout))
        y = self._rescale(acc, [unit / to_fraction(out_q.scale)], 0, out_q.zero_point, out_q.dtype)
        return self._new_val(out_shape, out_q, layout, y)

    def _compare(self, node: torch.fx.Node) -> Val:
        kind = op_name(node).split(".")[1]
        a, b = self._binary_operands(node)
        out_shape = _shape_of(node)
        layout, (ta, tb), _ = self._common_int32(out_shape, [(a, 1.0), (b, 1.0)])
        if kind in ("lt", "le"):
            ta, tb = tb, ta
        opname = {"gt": "GREATER", "lt": "GREATER", "ge": "GREATER_EQUAL", "le": "GREATER_EQUAL",
                  "eq": "EQUAL", "ne": "EQUAL"}[kind]
        y = self.b.elementwise(opname, ta, tb, self._bshape(ta, tb), "bool")
        if kind == "ne":
            y = self.b.unary("LOGICAL_NOT", y)
        y = self._full_size(y, self._lshape(out_shape, layout))
        return self._new_val(out_shape, None, layout, y, "bool")

    def _logical(self, node: torch.fx.Node) -> Val:
        kind = op_name(node).split(".")[1].replace("bitwise_", "logical_")
        out_shape = _shape_of(node)
        vals = [self.val(a) for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        layout = self._pick_layout(out_shape, vals)
        names = [self._broadcast_operand(v, out_shape, layout) for v in vals]
        if kind == "logical_not":
            y = self.b.unary("LOGICAL_NOT", names[0])
        else:
            y = self.b.elementwise(kind.upper(), names[0], names[1], self._bshape(*names), "bool")
        return self._new_val(out_shape, None, layout, self._full_size(y, self._lshape(out_shape, layout)), "bool")

    def _where(self, node: torch.fx.Node) -> Val:
        cond, a, b = (self.val(x) for x in node.args[:3])
        out_shape = _shape_of(node)
        out_q = self._out_q(node)
        layout = self._pick_layout(out_shape, [v for v in (a, b, cond) if v.dtype != "bool"] or [cond])
        branches = []
        for v in (a, b):
            if v.const is not None:
                v = Val(v.shape, v.dtype, out_q, {}, v.const)
            assert v.q is not None
            t = self._broadcast_operand(v, out_shape, layout)
            branches.append(self._requant(t, v.q, out_q))
        c = self._broadcast_operand(cond, out_shape, layout)
        lshape = self._lshape(out_shape, layout)
        # SELECT broadcasts; torch's output shape is the broadcast of the three operands
        y = self.b.select(c, branches[0], branches[1], lshape)
        return self._new_val(out_shape, out_q, layout, y)

    def _bool_to_float(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        out_q = self._out_q(node)
        layout = self._layout_of(x)
        t = self._get(x, layout)
        lshape = self.b.info[t].shape
        one = int(out_q.quantize(np.array([1.0]))[0])
        y = self.b.select(t, self.b.const(np.full(lshape, one), out_q.dtype),
                          self.b.const(np.full(lshape, out_q.zero_point), out_q.dtype), lshape)
        return self._new_val(x.shape, out_q, layout, y)

    def _minmax(self, node: torch.fx.Node) -> Val:
        a, b = self._binary_operands(node)
        combine = "MAXIMUM" if op_name(node) == "aten.maximum.default" else "MINIMUM"
        return self._linear_combination(_shape_of(node), self._out_q(node), [(a, 1.0), (b, 1.0)], combine)

    def _mul(self, node: torch.fx.Node) -> Val:
        name = op_name(node)
        a, b = self._binary_operands(node)
        out_shape = _shape_of(node)
        out_q = self._out_q(node)
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
        layout = self._pick_layout(out_shape, [a, b])
        lshape = self._lshape(out_shape, layout)
        a32 = self._to_int32(self._broadcast_operand(a, out_shape, layout), a.q, Fraction(1))
        if b.const is not None:
            c = np.asarray(b.const, dtype=np.float64)
            amax = float(np.abs(c[np.isfinite(c)]).max()) if np.isfinite(c).any() else 0.0
            # 15 bits for the constant keeps |product| < 2**23, far from int32 overflow.
            cscale = amax / 32767 if amax > 0 else 1.0
            cq = np.clip(np.round(np.nan_to_num(c, posinf=amax, neginf=-amax) / cscale), -32767, 32767)
            cq = cq.reshape((1,) * (len(out_shape) - cq.ndim) + cq.shape)
            if layout == "nhwc" and cq.ndim == 4:
                cq = cq.transpose(NHWC)
            b32 = self.b.const(cq, "int32")
            bscale = to_fraction(cscale)
        else:
            assert b.q is not None
            b32 = self._to_int32(self._broadcast_operand(b, out_shape, layout), b.q, Fraction(1))
            bscale = to_fraction(b.q.scale)
        prod = self.b.elementwise("MUL", a32, b32, list(np.broadcast_shapes(self.b.info[a32].shape,
                                                                           self.b.info[b32].shape)), "int32")
        prod = self._full_size(prod, lshape)
        scale = to_fraction(a.q.scale) * bscale / to_fraction(out_q.scale)
        y = self._rescale(prod, [scale], 0, out_q.zero_point, out_q.dtype)
        return self._new_val(out_shape, out_q, layout, y)

    def _clamp(self, node: torch.fx.Node) -> Val:
        name = op_name(node)
        x = self.val(node.args[0])
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
        if qhi < qlo:
            qlo = qhi  # torch: max wins when min > max
        layout = self._layout_of(x)
        y = self.b.clamp(self._get(x, layout), qlo, qhi)
        return self._new_val(x.shape, q, layout, y)

    def _table_op(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        name = op_name(node)
        xq = x.q
        assert xq is not None
        if name in FIXED_RANGES:
            out_q = fixed_qparams(*FIXED_RANGES[name], dtype=self.act)
        else:
            out_q = self._out_q(node)
        layout = self._layout_of(x)
        if self.act == "int8":
            codes = np.arange(-128, 128)
            real = torch.tensor(xq.dequantize(codes.astype(np.int8)).astype(np.float32))
            args = (real, *node.args[1:])
            with torch.no_grad():
                f = node.target(*args, **node.kwargs)
            f = _first_tensor(f)
            assert f is not None
            table = out_q.quantize(f.to(torch.float64).numpy())
            y = self.b.table(self._get(x, layout), table)
        else:
            y, out_q = self._table16(node, x, xq, out_q, layout)
        return self._new_val(x.shape, out_q, layout, y)

    def _table16(self, node: torch.fx.Node, x: Val, xq: QParams, out_q: QParams, layout: str,
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
        self.interpolated[node.name] = [float(v) for v in real]
        with torch.no_grad():
            f = _first_tensor(node.target(real, *node.args[1:], **node.kwargs))
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
        t32 = self.b.table(self._get(x, layout), table)
        return self._rescale(t32, [Fraction(1, 128)], 0, 0, "int16"), out_q

    # ---------------------------------------------------------------- pooling
    def _max_pool(self, node: torch.fx.Node) -> Any:
        x = self.val(node.args[0])
        kernel = list(node.args[1])
        stride = list(node.args[2]) if len(node.args) > 2 and node.args[2] else kernel
        padding = list(node.args[3]) if len(node.args) > 3 else [0, 0]
        kernel, stride, padding = (_pair(kernel), _pair(stride), _pair(padding))
        out_shape = _shape_of(node)
        xn = self.nhwc(x)
        pad = [padding[0], padding[0], padding[1], padding[1]]
        xn, pad = self._fit_window(xn, x.shape[2], x.shape[3], kernel, stride, (1, 1), pad, out_shape[2:])
        y = self.b.max_pool2d(xn, kernel, stride, pad, [out_shape[0], out_shape[2], out_shape[3], out_shape[1]])
        v = self._new_val(out_shape, x.q, "nhwc", y)
        if op_name(node) == "aten.max_pool2d_with_indices.default":
            return (v, None)
        return v

    def _avg_pool(self, node: torch.fx.Node) -> Val:
        args = list(node.args) + [None] * 7
        x = self.val(args[0])
        kernel = _pair(args[1])
        stride = _pair(args[2]) if args[2] else kernel
        padding = _pair(args[3] if args[3] is not None else 0)
        count_include_pad = node.kwargs.get("count_include_pad", args[5] if args[5] is not None else True)
        out_shape = _shape_of(node)
        q = x.q
        assert q is not None
        xn = self.nhwc(x)
        h, w = x.shape[2], x.shape[3]
        pad = [padding[0], padding[0], padding[1], padding[1]]
        if count_include_pad and any(padding):
            # torch divides by the full window here; TOSA by the valid part: pad explicitly with zero.
            xn = self.b.pad(xn, [0, 0, padding[0], padding[0], padding[1], padding[1], 0, 0], q.zero_point)
            h, w = h + 2 * padding[0], w + 2 * padding[1]
            pad = [0, 0, 0, 0]
        xn, pad = self._fit_window(xn, h, w, kernel, stride, (1, 1), pad, out_shape[2:])
        y = self.b.avg_pool2d(xn, kernel, stride, pad, q.zero_point, q.zero_point,
                              [out_shape[0], out_shape[2], out_shape[3], out_shape[1]])
        return self._new_val(out_shape, q, "nhwc", y)

    def _reduce_dims(self, node: torch.fx.Node, x: Val) -> tuple[list[int], bool]:
        if op_name(node) in ("aten.mean.default", "aten.sum.default"):
            return list(range(x.rank)), False
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            dims = list(range(x.rank))
        if isinstance(dims, int):
            dims = [dims]
        keep = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
        return sorted({_norm_dim(d, x.rank) for d in dims}), keep

    def _mean_sum(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        dims, keep = self._reduce_dims(node, x)
        out_shape = _shape_of(node)
        is_mean = op_name(node) in ("aten.mean.dim", "aten.mean.default")
        q = x.q
        assert q is not None
        if is_mean and mean_hw_as_pool(x.shape, dims):
            h, w = x.shape[2], x.shape[3]
            y = self.b.avg_pool2d(self.nhwc(x), [h, w], [1, 1], [0, 0, 0, 0], q.zero_point, q.zero_point,
                                  [x.shape[0], 1, 1, x.shape[1]])
            v = self._new_val((x.shape[0], x.shape[1], 1, 1), q, "nhwc", y)
            if keep:
                return v
            return self._new_val(out_shape, q, "std", self.b.reshape(self.std(v), out_shape))
        out_q = self._out_q(node)
        count = int(np.prod([x.shape[d] for d in dims]))
        layout = self._layout_of(x) if x.rank == 4 else "std"
        axes = [NHWC.index(d) for d in dims] if layout == "nhwc" else dims
        t = self._to_int32(self._get(x, layout), q, Fraction(1))
        for ax in axes:
            t = self.b.reduce("REDUCE_SUM", t, ax)
        scale = to_fraction(q.scale) / to_fraction(out_q.scale)
        if is_mean:
            scale /= count
        y = self._rescale(t, [scale], 0, out_q.zero_point, out_q.dtype)
        kshape = [1 if i in dims else d for i, d in enumerate(x.shape)]
        v = self._new_val(kshape, out_q, layout, y)
        if keep:
            return v
        return self._new_val(out_shape, out_q, "std", self.b.reshape(self.std(v), out_shape))

    def _amax(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        dims, keep = self._reduce_dims(node, x)
        opname = "REDUCE_MAX" if op_name(node) == "aten.amax.default" else "REDUCE_MIN"
        layout = self._layout_of(x) if x.rank == 4 else "std"
        axes = [NHWC.index(d) for d in dims] if layout == "nhwc" else dims
        t = self._get(x, layout)
        for ax in axes:
            t = self.b.reduce(opname, t, ax)
        kshape = [1 if i in dims else d for i, d in enumerate(x.shape)]
        v = self._new_val(kshape, x.q, layout, t)
        if keep:
            return v
        out_shape = _shape_of(node)
        return self._new_val(out_shape, x.q, "std", self.b.reshape(self.std(v), out_shape))

    def _adaptive_pool(self, node: torch.fx.Node) -> Any:
        """Adaptive pooling whose windows are uniform (input divisible by output) is plain pooling."""
        x = self.val(node.args[0])
        out_shape = _shape_of(node)
        k = [x.shape[2] // out_shape[2], x.shape[3] // out_shape[3]]
        if x.shape[2] % out_shape[2] or x.shape[3] % out_shape[3]:
            raise LoweringError("adaptive pooling needs the input size divisible by the output size")
        xn = self.nhwc(x)
        o = [out_shape[0], out_shape[2], out_shape[3], out_shape[1]]
        stride = adaptive_stride(k, out_shape[2:])
        if op_name(node) == "aten.adaptive_max_pool2d.default":
            return (self._new_val(out_shape, x.q, "nhwc", self.b.max_pool2d(xn, k, stride, [0, 0, 0, 0], o)), None)
        assert x.q is not None
        y = self.b.avg_pool2d(xn, k, stride, [0, 0, 0, 0], x.q.zero_point, x.q.zero_point, o)
        return self._new_val(out_shape, x.q, "nhwc", y)

    def _max_dim(self, node: torch.fx.Node) -> tuple[Val, None]:
        """max.dim / min.dim values (their indices are int64, which the rules require unused)."""
        x = self.val(node.args[0])
        dim = _norm_dim(node.args[1], x.rank)
        keep = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
        opname = "REDUCE_MAX" if op_name(node) == "aten.max.dim" else "REDUCE_MIN"
        layout = self._layout_of(x) if x.rank == 4 else "std"
        t = self.b.reduce(opname, self._get(x, layout), NHWC.index(dim) if layout == "nhwc" else dim)
        kshape = [1 if i == dim else d for i, d in enumerate(x.shape)]
        v = self._new_val(kshape, x.q, layout, t)
        if not keep:
            shape = [d for i, d in enumerate(x.shape) if i != dim]
            v = self._new_val(shape, x.q, "std", self.b.reshape(self.std(v), shape))
        return (v, None)

    def _softmax(self, node: torch.fx.Node) -> Val:
        """Integer softmax (TFLite-style fixed point; every op runs on Ethos-U55 and U85).

        d = x - max(x) is looked up in exp tables (two int8 TABLEs give a 15-bit
        exp for int8; one interpolated int16 TABLE for int16), summed in int32;
        1/sum comes from CLZ normalisation plus three Newton-Raphson steps in
        Q29 (MUL with shift), and p = e * (1/sum) is shifted back per row.
        """
        x = self.val(node.args[0])
        xq = x.q
        assert xq is not None
        out_q = fixed_qparams(0.0, 1.0, self.act)
        layout = self._layout_of(x) if x.rank == 4 else "std"
        dim = _norm_dim(node.args[1], x.rank)
        ax = NHWC.index(dim) if layout == "nhwc" else dim
        t = self._get(x, layout)
        lshape = list(self.b.info[t].shape)
        rshape = list(lshape)
        rshape[ax] = 1
        m = self.b.reduce("REDUCE_MAX", t, ax)
        x32 = self._to_int32(t, xq, Fraction(1))
        m32 = self._to_int32(m, xq, Fraction(1))
        d = self.b.elementwise("SUB", x32, m32, lshape, "int32")  # (q - max) <= 0
        e32 = self._exp_table(d, xq.scale)  # round(exp(d * s) * 32767)
        s = self.b.reduce("REDUCE_SUM", e32, ax)
        k = self.b.unary("CLZ", s)
        one = self.b.const(np.ones([1] * len(lshape)), "int32")
        sn = self.b.shift("LOGICAL_LEFT_SHIFT", s, self.b.elementwise("SUB", k, one, rshape, "int32"), rshape)
        # sn / 2**31 in [0.5, 1); r ~ 2**29 / (sn / 2**31)
        c = lambda v: self.b.const(np.full([1] * len(lshape), v), "int32")  # noqa: E731
        r = self.b.elementwise("SUB", c(round(48 / 17 * 2**29)),
                               self.b.mul(sn, c(round(32 / 17 * 2**29)), 31, rshape), rshape, "int32")
        for _ in range(3):
            xr = self.b.mul(sn, r, 31, rshape)
            r = self.b.mul(r, self.b.elementwise("SUB", c(2**30), xr, rshape, "int32"), 29, rshape)
        # p * 2**bits = e * r * 2**(k - 61 + bits): MUL >> 22, then >> (39 + ... ) per row
        bits = 8 if self.act == "int8" else 15
        prod = self.b.mul(e32, r, 22, lshape)
        amount = self.b.elementwise("SUB", c(61 - 22 - bits), k, rshape, "int32")
        p = self.b.shift("ARITHMETIC_RIGHT_SHIFT", prod, amount, lshape)
        y = self._rescale(p, [Fraction(1)], 0, out_q.zero_point, out_q.dtype)
        return self._new_val(x.shape, out_q, layout, y)

    def _exp_table(self, d: str, scale: float) -> str:
        """int32 round(exp(d * scale) * 32767) for int32 d <= 0 (d in input quantization steps)."""
        shape = self.b.info[d].shape
        if self.act == "int8":
            # d in [-255, 0] -> index d + 127; the 15-bit result is split over two int8 tables
            idx = self._rescale(d, [Fraction(1)], 0, 127, "int8")
            dd = np.arange(-128, 128) - 127
            e = np.round(np.exp(dd.astype(np.float64) * scale) * 32767).astype(np.int64)
            hi = self.b.table(idx, (e >> 8).astype(np.int8))
            lo = self.b.table(idx, ((e & 255) - 128).astype(np.int8))
            hi32 = self._rescale(hi, [Fraction(256)], 0, 0, "int32")
            lo32 = self._rescale(lo, [Fraction(1)], -128, 0, "int32")
            return self.b.elementwise("ADD", hi32, lo32, shape, "int32")
        # int16: d in [-65535, 0] -> index d + 32767; interpolated table, 7 fraction bits dropped
        # (int16 RESCALE outputs need zero point 0: add the offset in int32 first)
        off = self.b.const(np.full([1] * len(shape), 32767), "int32")
        idx = self._rescale(self.b.elementwise("ADD", d, off, shape, "int32"), [Fraction(1)], 0, 0, "int16")
        codes = np.arange(-32768, 32769, 128, dtype=np.int64) - 32767
        e = np.round(np.exp(np.minimum(codes, 0).astype(np.float64) * scale) * 32767)
        t32 = self.b.table(idx, np.clip(e, 0, 32767).astype(np.int16))
        return self._rescale(t32, [Fraction(1, 128)], 0, 0, "int32")

    # ---------------------------------------------------------- data movement
    def _identity(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        if x.dtype == "bool" and _first_tensor(node.meta.get("val")).dtype != torch.bool:
            return self._bool_to_float(node)
        return Val(x.shape, x.dtype, x.q, dict(x.names), x.const)

    def _reshape(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        out_shape = _shape_of(node)
        if tuple(out_shape) == x.shape:
            return Val(x.shape, x.dtype, x.q, dict(x.names), x.const)
        return Val(tuple(out_shape), x.dtype, x.q, {"std": self.b.reshape(self.std(x), out_shape)})

    def _permute(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        name = op_name(node)
        if name == "aten.permute.default":
            perm = [_norm_dim(d, x.rank) for d in node.args[1]]
        elif name == "aten.t.default":
            perm = [1, 0] if x.rank == 2 else [0]
        else:
            d0, d1 = _norm_dim(node.args[1], x.rank), _norm_dim(node.args[2], x.rank)
            perm = list(range(x.rank))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        out_shape = tuple(x.shape[p] for p in perm)
        if "nhwc" in x.names and "std" not in x.names:
            inv = _inv(NHWC)
            y = self.b.transpose(x.names["nhwc"], [inv[p] for p in perm])
        else:
            y = self.b.transpose(self.std(x), perm)
        return Val(out_shape, x.dtype, x.q, {"std": y})

    def _slice(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        dim = _norm_dim(node.args[1] if len(node.args) > 1 else 0, x.rank)
        start = node.args[2] if len(node.args) > 2 else None
        end = node.args[3] if len(node.args) > 3 else None
        step = node.args[4] if len(node.args) > 4 else 1
        n = x.shape[dim]
        start, end, _ = slice(start, end, 1).indices(n)
        end = max(end, start)
        out_shape = _shape_of(node)
        layout = self._layout_of(x) if x.rank == 4 else "std"
        ax = NHWC.index(dim) if layout == "nhwc" else dim
        t = self._get(x, layout)
        lshape = list(self.b.info[t].shape)
        count = out_shape[dim]
        begin = [0] * x.rank
        begin[ax] = start
        if step == 1:
            size = list(lshape)
            size[ax] = count
            y = self.b.slice(t, begin, size)
            return self._new_val(out_shape, x.q, layout, y, x.dtype)
        # strided: take count*step elements (padding the tail), fold the step into a new axis, keep index 0
        span = count * step
        avail = n - start
        size = list(lshape)
        size[ax] = min(span, avail)
        t = self.b.slice(t, begin, size)
        if span > avail:
            pads = [0] * (2 * x.rank)
            pads[2 * ax + 1] = span - avail
            t = self.b.pad(t, pads, x.q.zero_point if x.q else 0)
        folded = lshape[:ax] + [count, step] + lshape[ax + 1:]
        t = self.b.reshape(t, folded)
        size = list(folded)
        size[ax + 1] = 1
        t = self.b.slice(t, [0] * len(folded), size)
        res = list(lshape)
        res[ax] = count
        y = self.b.reshape(t, res)
        return self._new_val(out_shape, x.q, layout, y, x.dtype)

    def _select(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        dim = _norm_dim(node.args[1], x.rank)
        idx = node.args[2]
        idx = idx + x.shape[dim] if idx < 0 else idx
        begin = [0] * x.rank
        begin[dim] = idx
        size = list(x.shape)
        size[dim] = 1
        t = self.b.slice(self.std(x), begin, size)
        out_shape = _shape_of(node)
        return Val(tuple(out_shape), x.dtype, x.q, {"std": self.b.reshape(t, out_shape)})

    def _cat(self, node: torch.fx.Node) -> Val:
        tensors = [self.val(a) for a in node.args[0]]
        out_shape = _shape_of(node)
        dim = _norm_dim(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0), len(out_shape))
        tensors = [t for t in tensors if int(np.prod(t.shape)) > 0 and t.rank == len(out_shape)]
        if all(t.dtype == "bool" for t in tensors):
            names = [self.std(t) for t in tensors]
            return Val(tuple(out_shape), "bool", None, {"std": self.b.concat(names, dim)})
        out_q = self._out_q(node)
        layout = self._pick_layout(out_shape, tensors) if all(t.rank == 4 for t in tensors) else "std"
        ax = NHWC.index(dim) if layout == "nhwc" else dim
        parts = []
        for t in tensors:
            if t.const is not None:
                t = Val(t.shape, t.dtype, out_q, {}, t.const)
            assert t.q is not None
            parts.append(self._requant(self._get(t, layout), t.q, out_q))
        y = parts[0] if len(parts) == 1 else self.b.concat(parts, ax)
        return self._new_val(out_shape, out_q, layout, y)

    def _split(self, node: torch.fx.Node) -> tuple[Val, ...]:
        x = self.val(node.args[0])
        dim = _norm_dim(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0), x.rank)
        vals = node.meta["val"]
        layout = self._layout_of(x) if x.rank == 4 else "std"
        ax = NHWC.index(dim) if layout == "nhwc" else dim
        t = self._get(x, layout)
        lshape = list(self.b.info[t].shape)
        outs = []
        off = 0
        for v in vals:
            shape = tuple(int(d) for d in v.shape)
            begin = [0] * x.rank
            begin[ax] = off
            size = list(lshape)
            size[ax] = shape[dim]
            outs.append(self._new_val(shape, x.q, layout, self.b.slice(t, begin, size), x.dtype))
            off += shape[dim]
        return tuple(outs)

    def _pad(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        pad = list(node.args[1])
        value = float(node.args[2]) if len(node.args) > 2 else float(node.kwargs.get("value", 0.0))
        q = x.q
        assert q is not None
        pads = [0] * (2 * x.rank)
        for i in range(len(pad) // 2):
            d = x.rank - 1 - i
            pads[2 * d], pads[2 * d + 1] = pad[2 * i], pad[2 * i + 1]
        layout = self._layout_of(x) if x.rank == 4 else "std"
        if layout == "nhwc":
            pads = [v for p in NHWC for v in (pads[2 * p], pads[2 * p + 1])]
        t = self._get(x, layout)
        if any(p < 0 for p in pads):
            info = self.b.info[t]
            begin = [max(0, -pads[2 * i]) for i in range(x.rank)]
            size = [info.shape[i] - begin[i] - max(0, -pads[2 * i + 1]) for i in range(x.rank)]
            t = self.b.slice(t, begin, size)
            pads = [max(0, p) for p in pads]
        pv = int(q.quantize(np.array([value]))[0])
        y = self.b.pad(t, pads, pv)
        return self._new_val(_shape_of(node), q, layout, y)

    def _expand(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        out_shape = _shape_of(node)
        if tuple(out_shape) == x.shape:
            return self._identity(node)
        src = (1,) * (len(out_shape) - x.rank) + x.shape
        t = self.b.reshape(self.std(x), src)
        mult = [o // s if s != o else 1 for s, o in zip(src, out_shape)]
        return Val(tuple(out_shape), x.dtype, x.q, {"std": self.b.tile(t, mult)})

    def _repeat(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        reps = list(node.args[1])
        src = (1,) * (len(reps) - x.rank) + x.shape
        t = self.b.reshape(self.std(x), src)
        return Val(_shape_of(node), x.dtype, x.q, {"std": self.b.tile(t, reps)})

    def _flip(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        dims = sorted({_norm_dim(d, x.rank) for d in node.args[1] if x.shape[_norm_dim(d, x.rank)] > 1})
        t = self.std(x) if dims else None
        for d in dims:
            # Ethos-U55 reverses only along H and W: view the tensor as [pre, n, 1, post] so the
            # flipped axis is H of Vela's 4-D (N, H, W, C) view, whatever the rank.
            pre, n, post = int(np.prod(x.shape[:d])), x.shape[d], int(np.prod(x.shape[d + 1:]))
            t = self.b.reshape(self.b.reverse(self.b.reshape(t, (pre, n, 1, post)), 1), x.shape)
        if t is None:
            return self._identity(node)
        return Val(x.shape, x.dtype, x.q, {"std": t})

    def _upsample_nearest(self, node: torch.fx.Node) -> Val:
        x = self.val(node.args[0])
        out_shape = _shape_of(node)
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
        y = self.b.resize(self.nhwc(x), scale, offset, border, "nearest",
                          [out_shape[0], oh, ow, out_shape[1]], x.dtype)
        return self._new_val(out_shape, x.q, "nhwc", y)

    def _upsample_bilinear(self, node: torch.fx.Node) -> Val:
        """RESIZE BILINEAR: int32 result in units of 1/(scale_y_n * scale_x_n), then RESCALE."""
        x = self.val(node.args[0])
        align = bool(node.args[2]) if len(node.args) > 2 else False
        out_shape = _shape_of(node)
        q = x.q
        assert q is not None
        params = [bilinear_params(i, o, align) for i, o in zip(x.shape[2:], out_shape[2:])]
        scale = [params[0][0], params[0][1], params[1][0], params[1][1]]
        offset = [params[0][2], params[1][2]]
        border = [params[0][3], params[1][3]]
        acc_dtype = "int32" if self.act == "int8" else "int48"
        y = self.b.resize(self.nhwc(x), scale, offset, border, "bilinear",
                          [out_shape[0], out_shape[2], out_shape[3], out_shape[1]], acc_dtype)
        # RESIZE interpolates raw codes with weights summing to N = scale_y_n * scale_x_n, so the
        # zero point comes out as zp * N too: code / N is already the output code (output q = input q).
        out = self._rescale(y, [Fraction(1, scale[0] * scale[2])], 0, 0, q.dtype)
        return self._new_val(out_shape, q, "nhwc", out)

    def _batch_norm(self, node: torch.fx.Node) -> tuple[Val, None, None]:
        x = self.val(node.args[0])
        w, b, mean, var = (self._const_arg(a, "batch norm parameter") for a in node.args[1:5])
        eps = float(node.args[6])
        c = x.shape[1]
        assert mean is not None and var is not None
        inv = 1.0 / np.sqrt(var.astype(np.float64) + eps)
        gamma = (w if w is not None else np.ones(c)) * inv
        beta = (b if b is not None else np.zeros(c)) - mean * gamma
        out_q = self._out_q(node)
        xq = x.q
        assert xq is not None
        shape4 = x.shape if x.rank == 4 else (x.shape[0], c, int(np.prod(x.shape[2:])) if x.rank > 2 else 1, 1)
        if x.rank == 4:
            xn = self.nhwc(x)
        else:
            xr = self.b.reshape(self.std(x), shape4)
            xn = self.b.transpose(xr, NHWC)
        wts = gamma.reshape(c, 1, 1, 1)
        wq, ws = self._weight_quant(wts, 0)
        out_nhwc = [shape4[0], shape4[2], shape4[3], c]
        acc = self.b.depthwise_conv2d(xn, wq.reshape(1, 1, c, 1), self._bias_q(beta, c, xq, ws), xq.zero_point,
                                      [0, 0, 0, 0], [1, 1], [1, 1], out_nhwc, self.acc)
        y = self._acc_rescale(acc, xq, ws, out_q)
        if x.rank == 4:
            return (self._new_val(x.shape, out_q, "nhwc", y), None, None)
        ys = self.b.reshape(self.b.transpose(y, NCHW), x.shape)
        return (Val(x.shape, self.act, out_q, {"std": ys}), None, None)


POOL_MAX_KH = 256
POOL_MAX_KAREA = 65536


def mean_hw_as_pool(xs: Sequence[int], dims: Sequence[int]) -> bool:
    """True when mean over H, W of a 4-D tensor lowers to one unpadded AVG_POOL2D (else REDUCE_SUM).

    Within Vela's AVG_POOL2D limits: batch 1, kernel height <= 256, area <= 65536.
    """
    return (len(xs) == 4 and sorted(dims) == [2, 3] and xs[0] == 1 and xs[2] * xs[3] > 1
            and xs[2] <= POOL_MAX_KH and xs[2] * xs[3] <= POOL_MAX_KAREA)


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


def adaptive_stride(kernel: Sequence[int], out_hw: Sequence[int]) -> list[int]:
    """Stride of the pooling that implements uniform adaptive pooling (1 along an axis with one window)."""
    return [k if o > 1 else 1 for k, o in zip(kernel, out_hw)]


def _pair(v: Any) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    return v * 2 if len(v) == 1 else v[:2]


def lower_program(program: ExportedProgram, gi: GraphInputs, const_env: dict[str, Any], ranges: Ranges,
                  act_dtype: str) -> Lowered:
    return Lowerer(program, gi, const_env, ranges, act_dtype).lower()


__all__ = ["FIXED_RANGES", "NOT_INT16_TABLE", "IOInfo", "Lowered", "LoweringError", "RangeObserver", "Ranges", "TABLE_OPS",
           "adaptive_stride", "bilinear_params", "lower_program", "mean_hw_as_pool"]
