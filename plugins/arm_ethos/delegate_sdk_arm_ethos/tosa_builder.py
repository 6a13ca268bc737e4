"""A thin typed layer over ``tosa_serializer`` that emits TOSA 1.0 INT operators.

Every method adds one operator (plus the constant operands TOSA 1.0 requires as
tensors: zero points, multipliers, shift and shape vectors) and returns the
name of its output tensor. It also keeps op counts and which torch nodes each
TOSA operator came from (the debug map).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tosa_serializer as ts

from delegate_sdk_arm_ethos.quant import Multiplier

DTYPES: dict[str, ts.DType] = {
    "bool": ts.DType.BOOL,
    "int8": ts.DType.INT8,
    "int16": ts.DType.INT16,
    "int32": ts.DType.INT32,
    "int48": ts.DType.INT48,
}
NP_DTYPES: dict[str, type] = {"bool": np.bool_, "int8": np.int8, "int16": np.int16, "int32": np.int32}

# Vela 5.2 reads TOSA 1.0 (PRO-INT); the serializer defaults to a 1.1 draft.
TOSA_VERSION = (1, 0, 0)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


class TosaBuilder:
    def __init__(self) -> None:
        major, minor, patch = TOSA_VERSION
        self.ser = ts.TosaSerializer("", targetMajor=major, targetMinor=minor, targetPatch=patch,
                                     targetDraft=False)
        self.tensors: dict[str, object] = {}
        self.info: dict[str, TensorInfo] = {}
        self.op_counts: Counter[str] = Counter()
        self.debug_map: dict[str, list[str]] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.source: list[str] = []  # torch node names the ops being emitted now come from
        self.bounds: dict[str, int] = {}  # accumulator tensor -> bound on its absolute values
        self._n_ops = 0

    # ----------------------------------------------------------------- tensors
    def _register(self, t: object, shape: Sequence[int], dtype: str) -> str:
        name = t.name  # type: ignore[attr-defined]
        self.tensors[name] = t
        self.info[name] = TensorInfo(tuple(int(d) for d in shape), dtype)
        return name

    def input(self, shape: Sequence[int], dtype: str) -> str:
        t = self.ser.addPlaceholder(list(shape), DTYPES[dtype])
        name = self._register(t, shape, dtype)
        self.inputs.append(name)
        return name

    def const(self, value: np.ndarray, dtype: str) -> str:
        arr = np.ascontiguousarray(np.asarray(value).astype(NP_DTYPES[dtype]))
        t = self.ser.addConst(list(arr.shape), DTYPES[dtype], arr)
        return self._register(t, arr.shape, dtype)

    def shape(self, values: Sequence[int]) -> str:
        vals = [int(v) for v in values]
        t = self.ser.addConst([len(vals)], ts.DType.SHAPE, vals)
        self.tensors[t.name] = t
        return t.name

    def zp(self, value: int, dtype: str) -> str:
        return self.const(np.array([value]), dtype)

    def _new(self, shape: Sequence[int], dtype: str) -> str:
        t = self.ser.addIntermediate([int(d) for d in shape], DTYPES[dtype])
        return self._register(t, shape, dtype)

    def mark_output(self, name: str) -> None:
        if name in self.inputs or name in self.outputs:
            # A graph input or an already exported tensor cannot be a second output: copy it.
            info = self.info[name]
            name = self._op(ts.Op.IDENTITY, "IDENTITY", [name], info.shape, info.dtype, _attr("IdentityAttribute"))
        self.ser.addOutputTensor(self.tensors[name])
        self.outputs.append(name)

    def serialize(self) -> bytes:
        return bytes(self.ser.serialize())

    # ---------------------------------------------------------------- operators
    def _op(self, op: ts.Op, opname: str, inputs: list[str], out_shape: Sequence[int], out_dtype: str,
            attr: ts.TosaSerializerAttribute) -> str:
        out = self._new(out_shape, out_dtype)
        self.ser.addOperator(op, inputs, [out], attr)
        self.op_counts[opname] += 1
        self.debug_map[f"{self._n_ops}:{opname}"] = list(self.source)
        self._n_ops += 1
        return out

    def conv2d(self, x: str, w: np.ndarray, bias: np.ndarray, x_zp: int, pad: Sequence[int],
               stride: Sequence[int], dilation: Sequence[int], out_shape: Sequence[int], acc: str) -> str:
        """x NHWC, w [OC,KH,KW,IC] int8, bias int32 [OC] (int48 for int16 inputs), pad [t,b,l,r]."""
        xd = self.info[x].dtype
        bias_dtype = "int48" if acc == "int48" else "int32"
        ins = [x, self.const(w, "int8"), self._bias(bias, bias_dtype), self.zp(x_zp, xd), self.zp(0, "int8")]
        attr = _attr("Conv2dAttribute", list(pad), list(stride), list(dilation), False, DTYPES[acc])
        out = self._op(ts.Op.CONV2D, "CONV2D", ins, out_shape, acc, attr)
        self._bound(out, x, np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(1), bias)
        return out

    def depthwise_conv2d(self, x: str, w: np.ndarray, bias: np.ndarray, x_zp: int, pad: Sequence[int],
                         stride: Sequence[int], dilation: Sequence[int], out_shape: Sequence[int],
                         acc: str) -> str:
        """w [KH,KW,C,M]."""
        xd = self.info[x].dtype
        bias_dtype = "int48" if acc == "int48" else "int32"
        ins = [x, self.const(w, "int8"), self._bias(bias, bias_dtype), self.zp(x_zp, xd), self.zp(0, "int8")]
        attr = _attr("DepthwiseConv2dAttribute", list(pad), list(stride), list(dilation), False, DTYPES[acc])
        out = self._op(ts.Op.DEPTHWISE_CONV2D, "DEPTHWISE_CONV2D", ins, out_shape, acc, attr)
        kh, kw, c, m = w.shape
        self._bound(out, x, np.abs(w.astype(np.int64)).reshape(kh * kw, c * m).sum(0), bias)
        return out

    def transpose_conv2d(self, x: str, w: np.ndarray, bias: np.ndarray, x_zp: int, out_pad: Sequence[int],
                         stride: Sequence[int], out_shape: Sequence[int], acc: str) -> str:
        """w [OC,KH,KW,IC]; out_pad [t,b,l,r] (may be negative to crop)."""
        xd = self.info[x].dtype
        bias_dtype = "int48" if acc == "int48" else "int32"
        ins = [x, self.const(w, "int8"), self._bias(bias, bias_dtype), self.zp(x_zp, xd), self.zp(0, "int8")]
        attr = _attr("TransposeConv2dAttribute", list(out_pad), list(stride), False, DTYPES[acc])
        out = self._op(ts.Op.TRANSPOSE_CONV2D, "TRANSPOSE_CONV2D", ins, out_shape, acc, attr)
        self._bound(out, x, np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(1), bias)
        return out

    def _bound(self, out: str, x: str, abs_weight_sums: np.ndarray, bias: np.ndarray) -> None:
        """|acc| <= sum|w| * max|x - zp| + |bias|, per output channel; keep the largest."""
        xmax = 1 << (8 if self.info[x].dtype == "int8" else 16)
        per_channel = abs_weight_sums * xmax + np.abs(np.asarray(bias, dtype=np.int64)).reshape(-1)
        self.bounds[out] = int(per_channel.max()) if per_channel.size else 0

    def _bias(self, bias: np.ndarray, dtype: str) -> str:
        if dtype == "int48":
            arr = np.ascontiguousarray(bias.astype(np.int64))
            t = self.ser.addConst(list(arr.shape), ts.DType.INT48, arr)
            return self._register(t, arr.shape, "int48")
        return self.const(bias, "int32")

    def matmul(self, a: str, b: str, a_zp: int, b_zp: int, out_shape: Sequence[int], acc: str) -> str:
        ins = [a, b, self.zp(a_zp, self.info[a].dtype), self.zp(b_zp, self.info[b].dtype)]
        out = self._op(ts.Op.MATMUL, "MATMUL", ins, out_shape, acc, _attr("MatMulAttribute"))
        bits = 8 if self.info[a].dtype == "int8" else 16
        self.bounds[out] = self.info[a].shape[-1] << (2 * bits)
        return out

    def rescale(self, x: str, mults: Sequence[Multiplier], in_zp: int, out_zp: int, out_dtype: str,
                per_channel: bool = False) -> str:
        info = self.info[x]
        scale32 = info.dtype != "int48"
        m = np.array([mm.multiplier for mm in mults], dtype=np.int64)
        s = np.array([mm.shift for mm in mults], dtype=np.int64)
        ins = [x, self.const(m, "int32" if scale32 else "int16"), self.const(s, "int8"),
               self.zp(in_zp, info.dtype if info.dtype != "int48" else "int48") if info.dtype != "int48"
               else self._bias(np.array([in_zp]), "int48"),
               self.zp(out_zp, out_dtype)]
        attr = _attr("RescaleAttribute", scale32, ts.RoundingMode.SINGLE_ROUND, per_channel, False, False)
        return self._op(ts.Op.RESCALE, "RESCALE", ins, info.shape, out_dtype, attr)

    def elementwise(self, opname: str, a: str, b: str, out_shape: Sequence[int], out_dtype: str) -> str:
        op = getattr(ts.Op, opname)
        ins = [a, b]
        if opname == "MUL":
            ins.append(self.const(np.array([0]), "int8"))
            attr = _attr("MulAttribute")
        elif opname in ("MAXIMUM", "MINIMUM"):
            attr = _attr(f"{opname.capitalize()}Attribute", ts.NanPropagationMode.PROPAGATE)
        else:
            attr = _attr(_ATTR_NAMES[opname])
        return self._op(op, opname, ins, out_shape, out_dtype, attr)

    def mul(self, a: str, b: str, shift: int, out_shape: Sequence[int]) -> str:
        """int32 a * b with a rounding right shift (TOSA MUL's shift operand)."""
        return self._op(ts.Op.MUL, "MUL", [a, b, self.const(np.array([shift]), "int8")], out_shape, "int32",
                        _attr("MulAttribute"))

    def shift(self, opname: str, x: str, amount: str, out_shape: Sequence[int]) -> str:
        """LOGICAL_LEFT_SHIFT or (rounding) ARITHMETIC_RIGHT_SHIFT of int32 by a per-element amount."""
        if opname == "LOGICAL_LEFT_SHIFT":
            attr = _attr("LogicalLeftShiftAttribute")
        else:
            attr = _attr("ArithmeticRightShiftAttribute", True)
        return self._op(getattr(ts.Op, opname), opname, [x, amount], out_shape, "int32", attr)

    def unary(self, opname: str, x: str, out_dtype: str | None = None) -> str:
        info = self.info[x]
        return self._op(getattr(ts.Op, opname), opname, [x], info.shape, out_dtype or info.dtype,
                        _attr(_ATTR_NAMES[opname]))

    def select(self, cond: str, a: str, b: str, out_shape: Sequence[int]) -> str:
        return self._op(ts.Op.SELECT, "SELECT", [cond, a, b], out_shape, self.info[a].dtype,
                        _attr("SelectAttribute"))

    def clamp(self, x: str, lo: int, hi: int) -> str:
        info = self.info[x]
        dt = np.dtype(NP_DTYPES[info.dtype])
        attr = _attr("ClampAttribute", list(np.array([lo], dt).view(np.uint8)),
                     list(np.array([hi], dt).view(np.uint8)), ts.NanPropagationMode.PROPAGATE)
        return self._op(ts.Op.CLAMP, "CLAMP", [x], info.shape, info.dtype, attr)

    def table(self, x: str, table: np.ndarray) -> str:
        info = self.info[x]
        tdt = "int8" if info.dtype == "int8" else "int16"
        out_dtype = "int8" if info.dtype == "int8" else "int32"
        return self._op(ts.Op.TABLE, "TABLE", [x, self.const(table, tdt)], info.shape, out_dtype,
                        _attr("TableAttribute"))

    def max_pool2d(self, x: str, kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int],
                   out_shape: Sequence[int]) -> str:
        attr = _attr("MaxPool2dAttribute", list(kernel), list(stride), list(pad), ts.NanPropagationMode.PROPAGATE)
        return self._op(ts.Op.MAX_POOL2D, "MAX_POOL2D", [x], out_shape, self.info[x].dtype, attr)

    def avg_pool2d(self, x: str, kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int],
                   in_zp: int, out_zp: int, out_shape: Sequence[int]) -> str:
        dt = self.info[x].dtype
        attr = _attr("AvgPool2dAttribute", list(kernel), list(stride), list(pad), ts.DType.INT32)
        return self._op(ts.Op.AVG_POOL2D, "AVG_POOL2D", [x, self.zp(in_zp, dt), self.zp(out_zp, dt)],
                        out_shape, dt, attr)

    def reduce(self, opname: str, x: str, axis: int) -> str:
        info = self.info[x]
        shape = list(info.shape)
        shape[axis] = 1
        if opname == "REDUCE_SUM":
            attr = _attr("ReduceSumAttribute", axis)
        else:
            attr = _attr(f"{'ReduceMax' if opname == 'REDUCE_MAX' else 'ReduceMin'}Attribute", axis,
                         ts.NanPropagationMode.PROPAGATE)
        return self._op(getattr(ts.Op, opname), opname, [x], shape, info.dtype, attr)

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        info = self.info[x]
        if tuple(shape) == info.shape:
            return x
        return self._op(ts.Op.RESHAPE, "RESHAPE", [x, self.shape(shape)], shape, info.dtype,
                        _attr("ReshapeAttribute"))

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        info = self.info[x]
        if list(perm) == list(range(len(perm))):
            return x
        shape = [info.shape[p] for p in perm]
        return self._op(ts.Op.TRANSPOSE, "TRANSPOSE", [x], shape, info.dtype,
                        _attr("TransposeAttribute", list(perm)))

    def slice(self, x: str, start: Sequence[int], size: Sequence[int]) -> str:
        info = self.info[x]
        if tuple(size) == info.shape:
            return x
        return self._op(ts.Op.SLICE, "SLICE", [x, self.shape(start), self.shape(size)], size, info.dtype,
                        _attr("SliceAttribute"))

    def concat(self, xs: list[str], axis: int) -> str:
        shapes = [self.info[x].shape for x in xs]
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return self._op(ts.Op.CONCAT, "CONCAT", xs, out, self.info[xs[0]].dtype, _attr("ConcatAttribute", axis))

    def pad(self, x: str, pads: Sequence[int], value: int) -> str:
        """pads: [before_0, after_0, before_1, after_1, ...]."""
        info = self.info[x]
        if not any(pads):
            return x
        shape = [d + pads[2 * i] + pads[2 * i + 1] for i, d in enumerate(info.shape)]
        return self._op(ts.Op.PAD, "PAD", [x, self.shape(pads), self.const(np.array([value]), info.dtype)],
                        shape, info.dtype, _attr("PadAttribute"))

    def tile(self, x: str, multiples: Sequence[int]) -> str:
        info = self.info[x]
        if all(m == 1 for m in multiples):
            return x
        shape = [d * m for d, m in zip(info.shape, multiples)]
        return self._op(ts.Op.TILE, "TILE", [x, self.shape(multiples)], shape, info.dtype, _attr("TileAttribute"))

    def reverse(self, x: str, axis: int) -> str:
        info = self.info[x]
        return self._op(ts.Op.REVERSE, "REVERSE", [x], info.shape, info.dtype, _attr("ReverseAttribute", axis))

    def resize(self, x: str, scale: Sequence[int], offset: Sequence[int], border: Sequence[int], mode: str,
               out_shape: Sequence[int], out_dtype: str) -> str:
        m = ts.ResizeMode.NEAREST if mode == "nearest" else ts.ResizeMode.BILINEAR
        ins = [x, self.shape(scale), self.shape(offset), self.shape(border)]
        out = self._op(ts.Op.RESIZE, "RESIZE", ins, out_shape, out_dtype, _attr("ResizeAttribute", m))
        if mode != "nearest":  # bilinear weights sum to scale_y_n * scale_x_n
            bits = 8 if self.info[x].dtype == "int8" else 16
            self.bounds[out] = (1 << bits) * scale[0] * scale[2]
        return out


_ATTR_NAMES = {
    "ADD": "AddAttribute", "SUB": "SubAttribute", "MUL": "MulAttribute",
    "GREATER": "GreaterAttribute", "GREATER_EQUAL": "GreaterEqualAttribute", "EQUAL": "EqualAttribute",
    "LOGICAL_AND": "LogicalAndAttribute", "LOGICAL_OR": "LogicalOrAttribute",
    "LOGICAL_XOR": "LogicalXorAttribute", "LOGICAL_NOT": "LogicalNotAttribute",
    "ABS": "AbsAttribute", "IDENTITY": "IdentityAttribute", "CLZ": "ClzAttribute",
}


def _attr(kind: str, *args: object) -> ts.TosaSerializerAttribute:
    a = ts.TosaSerializerAttribute()
    getattr(a, kind)(*args)
    return a
