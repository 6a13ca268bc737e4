"""Support rules: which core-ATen nodes the QNN HTP backend runs, and why not the others.

Every claimed op goes torch.onnx -> ONNX op(s) -> a QNN EP HTP op builder; the op set is the
intersection of what the exporter emits for it and the builders QNN EP registers
(onnxruntime-qnn 2.7.0). Each constraint below was seen on the HTP backend (x86-64
emulator, QNN 2.51) with CPU fallback disabled, at int8, a16w8 and fp16; the sentence of
each refusal says which constraint, so ``delegate-sdk inspect`` can show it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from delegate_sdk.support import (
    ClaimTable,
    NodeLimits,
    Reject,
    RuleContext,
    arguments,
    dtype_name,
    op_name,
    output_tensors,
    output_used,
)
from delegate_sdk.types import ReasonCode

QUANTIZED = ("int8", "a16w8")
FLOAT_ONLY = ("float32",)
#: ops whose int64 operands/results are indices: QNN narrows int64 to int32, which cannot
#: change an index into a tensor that fits in memory.
WITH_INDICES = ("float32", "int32", "int64", "bool")

#: QNN HTP is a 4-d machine: most op validators reject rank 5 (tanh, log, sqrt, neg, sin, elu,
#: floor, rsqrt, maximum, argmax, topk, layer norm, log_softmax, cumsum, ... were seen failing);
#: rows marked RANK5 were seen compiling and matching eager at rank 5 at int8, a16w8 and fp16.
DEFAULT_MAX_RANK = 4
RANK5 = {"max_rank": 5}

rules = ClaimTable(
    "QNN HTP",
    NodeLimits(dtypes=("float32", "int32", "bool"), max_rank=DEFAULT_MAX_RANK, rank_of_constants=False,
               static_shapes=True, zero_size=False, scalar_results=False,
               dtype_reasons={
                   "float64": "float64 is not supported by QNN HTP",
                   "int64": "int64 is only taken as indices: QNN narrows int64 to int32, which can overflow in "
                            "arithmetic",
                   "float16": "float16 tensors are not supported by this plugin (QNN HTP takes float32 models; "
                              "fp16 precision runs them in HTP fp16)",
               }),
)


def _val(x: Any) -> torch.Tensor | None:
    v = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    return v if isinstance(v, torch.Tensor) else None


def _rank(x: Any) -> int:
    v = _val(x)
    return v.dim() if v is not None else 0


def _is_finite_number(x: Any) -> bool:
    return not isinstance(x, (int, float)) or isinstance(x, bool) or math.isfinite(x)


_FILL_OPS = {"aten.full.default": "fill_value", "aten.scalar_tensor.default": "s",
             "aten.full_like.default": "fill_value", "aten.fill.Scalar": "value", "aten.new_full.default": "fill_value"}


def _nonfinite_operand(node: torch.fx.Node, ctx: RuleContext) -> bool:
    """A -inf/inf/nan scalar or constant among the operands (attention masks, masked_fill)."""
    for a in (*node.args, *node.kwargs.values()):
        items = a if isinstance(a, (list, tuple)) else (a,)
        for x in items:
            if not _is_finite_number(x):
                return True
            if isinstance(x, torch.fx.Node):
                if op_name(x) in _FILL_OPS and not _is_finite_number(arguments(x).get(_FILL_OPS[op_name(x)])):
                    return True
                c = ctx.constant_value(x)
                if c is not None and c.is_floating_point() and c.numel() and not torch.isfinite(c).all():
                    return True
    return False


@rules.every
def _quantizable(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if ctx.precision in QUANTIZED and _nonfinite_operand(node, ctx):
        return Reject(ReasonCode.QUANT, "a non-finite constant (e.g. a -inf mask) has no representation in "
                                        f"a quantized ({ctx.precision}) tensor")
    return None


def _last_dim(node: torch.fx.Node, dim: Any) -> bool:
    r = _rank(arguments(node)["self"])
    return dim in (-1, r - 1)


# --------------------------------------------------------------------------- elementwise (QNN ElementWise*)

_RANK5_ELEMENTWISE = (
    "aten.add.Tensor", "aten.add.Scalar", "aten.sub.Tensor", "aten.sub.Scalar",
    "aten.mul.Tensor", "aten.mul.Scalar", "aten.div.Tensor", "aten.div.Scalar", "aten.pow.Tensor_Scalar",
    "aten.relu.default", "aten.sigmoid.default", "aten.exp.default", "aten.abs.default",
    "aten.reciprocal.default", "aten.clamp.default", "aten.hardtanh.default", "aten.leaky_relu.default",
)
rules.ops(*_RANK5_ELEMENTWISE, dtypes=FLOAT_ONLY, **RANK5)
rules.ops("aten.maximum.default", "aten.minimum.default", "aten.tanh.default", "aten.expm1.default",
          "aten.sqrt.default", "aten.rsqrt.default", "aten.neg.default", "aten.sin.default", "aten.cos.default",
          "aten.tan.default", "aten.atan.default", "aten.floor.default", "aten.round.default",
          "aten.sign.default", "aten.gelu.default", dtypes=FLOAT_ONLY)

#: ops whose quantized HTP kernels disagree with the fake-quant reference beyond a step, seen in
#: conformance at int8: ceil/trunc (systematic one-step offset), cumsum (error grows along the
#: scan, 21 steps on 1024 elements), pow with a tensor exponent (wrong values on broadcast)
_FP16_ONLY = {
    "aten.ceil.default": "HTP's quantized Ceil is offset by about one step from float ceil of the same input",
    "aten.trunc.default": "trunc (Abs/Floor/Sign/Mul on HTP) is offset by a step or more when quantized",
    "aten.pow.Tensor_Tensor": "HTP's quantized Pow with a tensor exponent gave wrong values (broadcast case)",
}
for _op, _why in _FP16_ONLY.items():
    rules.ops(_op, dtypes=FLOAT_ONLY, precisions=("fp16",), precision_reasons={"int8": _why, "a16w8": _why})

#: ops whose 16-bit HTP kernels are wrong (not just imprecise) at a16w8
_NOT_A16 = {
    "aten.log.default": "HTP's 16-bit Log wraps around near the top of its output range (1.29 came back as -2.58)",
    "aten.log1p.default": "log1p runs as HTP's 16-bit Log, which wraps around near the top of its output range",
}
for _op, _why in _NOT_A16.items():
    rules.ops(_op, dtypes=FLOAT_ONLY, precisions=("int8", "fp16"), precision_reasons={"a16w8": _why})
rules.ops("aten.asin.default", dtypes=FLOAT_ONLY, precisions=QUANTIZED,
          precision_reasons={"fp16": "QNN HTP has no fp16 Asin (quantized only)"})
rules.ops("aten.elu.default", dtypes=FLOAT_ONLY, values={"scale": (1,), "input_scale": (1,)})

rules.refuse("aten.erf.default", code=ReasonCode.OP, message="QNN EP has no Erf op builder (GELU itself is supported)")
rules.refuse("aten.prod.dim_int", "aten.prod.default", code=ReasonCode.OP, message="QNN HTP rejects ReduceProd")

# --------------------------------------------------------------------------- comparisons and logic

_EQUALITY = "equality of quantized values holds only on the quantization grid"
_COMPARE_RANK5 = ("aten.gt.Scalar", "aten.gt.Tensor")
rules.ops(*_COMPARE_RANK5, **RANK5)
rules.ops("aten.lt.Tensor", "aten.lt.Scalar", "aten.le.Tensor", "aten.le.Scalar", "aten.ge.Tensor", "aten.ge.Scalar")
rules.ops("aten.eq.Tensor", "aten.eq.Scalar", "aten.ne.Tensor", "aten.ne.Scalar", precisions=("fp16",),
          precision_reasons={"int8": _EQUALITY, "a16w8": _EQUALITY})


@rules.check("aten.eq.Tensor", "aten.eq.Scalar", "aten.ne.Tensor", "aten.ne.Scalar", "aten.lt.Tensor",
             "aten.lt.Scalar", "aten.le.Tensor", "aten.le.Scalar", "aten.gt.Tensor", "aten.gt.Scalar",
             "aten.ge.Tensor", "aten.ge.Scalar")
def _compare(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    dts = {dtype_name(t.dtype) for a in node.all_input_nodes if not ctx.is_constant(a) for t in output_tensors(a)}
    if dts - set(FLOAT_ONLY):
        return Reject(ReasonCode.DTYPE, "comparisons are taken on float32 operands only")
    return None


rules.ops("aten.logical_not.default", "aten.logical_and.default", "aten.logical_or.default",
          "aten.logical_xor.default", "aten.bitwise_not.default", "aten.bitwise_and.Tensor",
          "aten.bitwise_or.Tensor", "aten.bitwise_xor.Tensor", dtypes=("bool",))
rules.ops("aten.where.self", **RANK5)


@rules.check("aten.where.self")
def _where(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    if _val(a["condition"]) is None or _val(a["condition"]).dtype != torch.bool:
        return Reject(ReasonCode.DTYPE, "where needs a bool condition")
    if output_tensors(node)[0].dtype != torch.float32:
        return Reject(ReasonCode.DTYPE, "where is taken on float32 values only")
    return None


# --------------------------------------------------------------------------- reductions

rules.ops("aten.mean.dim", "aten.amax.default", "aten.amin.default", dtypes=FLOAT_ONLY, **RANK5)
rules.ops("aten.sum.dim_IntList", dtypes=FLOAT_ONLY, values={"dtype": (None, torch.float32)}, **RANK5)
rules.ops("aten.var.correction", dtypes=FLOAT_ONLY, **RANK5)
rules.ops("aten.linalg_vector_norm.default", dtypes=FLOAT_ONLY, values={"ord": (2,)})
rules.ops("aten.argmax.default", "aten.argmin.default", "aten.max.dim", "aten.min.dim", "aten.topk.default",
          "aten.sort.default", dtypes=WITH_INDICES)
_CUMSUM = "HTP's quantized CumSum rounds at every step; the error grows with the scan length"
rules.ops("aten.cumsum.default", dtypes=FLOAT_ONLY, values={"dtype": (None, torch.float32)}, precisions=("fp16",),
          precision_reasons={"int8": _CUMSUM, "a16w8": _CUMSUM})


@rules.check("aten.var.correction", "aten.linalg_vector_norm.default")
def _needs_dims(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if arguments(node)["dim"] is None:
        return Reject(ReasonCode.ATTR, "a reduction over all dims gives a 0-d result; left to the host")
    return None


@rules.check("aten.argmax.default", "aten.argmin.default")
def _argmax(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if arguments(node)["dim"] is None:
        return Reject(ReasonCode.ATTR, "argmax/argmin over the flattened tensor is not taken (QNN needs an axis)")
    return None


@rules.check("aten.cumsum.default", "aten.topk.default", "aten.sort.default")
def _scan_last_dim(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if not _last_dim(node, arguments(node)["dim"]):
        return Reject(ReasonCode.ATTR, f"{op_name(node).split('.')[1]} is taken over the last dim only (QNN TopK/"
                                       "CumSum; other dims gave wrong results on QNN HTP)")
    return None


@rules.check("aten.sort.default")
def _sort_values_only(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if output_used(node, 1):
        return Reject(ReasonCode.ATTR, "sort indices are not taken: QNN's TopK order of equal values "
                                       "differs from torch's")
    return None


rules.ops("aten._softmax.default", dtypes=FLOAT_ONLY, values={"half_to_float": (False,)}, **RANK5)
rules.ops("aten._log_softmax.default", dtypes=FLOAT_ONLY, values={"half_to_float": (False,)})


@rules.check("aten._softmax.default", "aten._log_softmax.default")
def _softmax(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    dim = arguments(node)["dim"]
    if not _last_dim(node, dim):
        return Reject(ReasonCode.ATTR, f"softmax over dim {dim} of a rank-{_rank(node.args[0])} tensor: QNN HTP "
                                       "takes the last dim only")
    return None


# --------------------------------------------------------------------------- data movement

rules.ops("aten.permute.default", "aten.cat.default", "aten.slice.Tensor", "aten.select.int", "aten.squeeze.dims",
          "aten.split_with_sizes.default", "aten.expand.default", "aten.flip.default", "aten.repeat.default",
          "aten.constant_pad_nd.default", dtypes=FLOAT_ONLY, **RANK5)
rules.ops("aten.view.default", "aten.unsqueeze.default", "aten.clone.default", "aten.alias.default",
          dtypes=FLOAT_ONLY)
rules.ops("aten._to_copy.default", dtypes=WITH_INDICES)


@rules.check("aten.constant_pad_nd.default")
def _pad(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if any(p < 0 for p in arguments(node)["pad"]):
        return Reject(ReasonCode.ATTR, "negative padding (cropping) is not taken")
    return None


@rules.check("aten._to_copy.default")
def _to_copy(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    src = _val(node.args[0])
    dst = output_tensors(node)[0]
    if src is None:
        return Reject(ReasonCode.DTYPE, "cast of a non-tensor")
    if src.is_floating_point() and not dst.is_floating_point():
        return Reject(ReasonCode.DTYPE, "float -> integer casts are not taken: QNN folds a float->int->float "
                                        "Cast pair away, losing torch's truncation")
    if src.dtype == torch.int64 and dst.dtype not in (torch.int32, torch.float32):
        return Reject(ReasonCode.DTYPE, "int64 is only cast to int32 or float32")
    return None


# --------------------------------------------------------------------------- gathers (int64 indices narrowed)

rules.ops("aten.embedding.default", dtypes=WITH_INDICES, constant=("weight",))
rules.ops("aten.index_select.default", "aten.gather.default", dtypes=WITH_INDICES, values={"sparse_grad": (False,)},
          **RANK5)
rules.refuse("aten.index.Tensor", code=ReasonCode.OP,
             message="advanced indexing exports to GatherND, which gave wrong results on QNN HTP")


@rules.check("aten.index_select.default", "aten.gather.default")
def _gather_float(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if output_tensors(node)[0].dtype != torch.float32:
        return Reject(ReasonCode.DTYPE, "gathers are taken on float32 data only")
    return None


# --------------------------------------------------------------------------- matmul, attention, convolution

rules.ops("aten.mm.default", dtypes=FLOAT_ONLY)
rules.ops("aten.bmm.default", dtypes=FLOAT_ONLY, **RANK5)
rules.ops("aten.addmm.default", dtypes=FLOAT_ONLY, values={"beta": (1,), "alpha": (1,)})
rules.ops("aten.scaled_dot_product_attention.default", dtypes=("float32", "bool"), keep_whole=True,
          ranks={"query": (4, 4)}, values={"dropout_p": (0.0,), "enable_gqa": (False,)})


@rules.check("aten.scaled_dot_product_attention.default")
def _sdpa_masks(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    mask = _val(a["attn_mask"])
    if ctx.precision in QUANTIZED and (a["is_causal"] or (mask is not None and mask.dtype == torch.bool)):
        return Reject(ReasonCode.QUANT, "causal/boolean masks are applied as -inf, which has no "
                                        f"quantized ({ctx.precision}) representation")
    return None


rules.ops("aten.convolution.default", dtypes=FLOAT_ONLY, constant=("weight", "bias"), ranks={"input": (3, 5)},
          **RANK5)


@rules.check("aten.convolution.default")
def _conv(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    spatial = _rank(a["input"]) - 2
    depthwise = a["groups"] > 1 and a["groups"] == _val(a["input"]).shape[1]
    if depthwise and spatial > 2:
        return Reject(ReasonCode.ATTR, "QNN HTP has depthwise convolution in 2-d only (1-d runs as 2-d)")
    if a["transposed"]:
        if spatial > 2:
            return Reject(ReasonCode.ATTR, "transposed convolution is taken in 1-d and 2-d only")
        if a["groups"] != 1:
            return Reject(ReasonCode.ATTR, "grouped transposed convolution is not taken")
        if any(d != 1 for d in a["dilation"]):
            return Reject(ReasonCode.ATTR, "dilated transposed convolution is not taken")
    return None


# --------------------------------------------------------------------------- normalisation

rules.ops("aten.native_layer_norm.default", dtypes=FLOAT_ONLY, constant=("weight", "bias"))
rules.ops("aten._native_batch_norm_legit_no_training.default", dtypes=FLOAT_ONLY, ranks={"input": (3, 4)},
          constant=("weight", "bias", "running_mean", "running_var"))
rules.ops("aten.native_group_norm.default", dtypes=FLOAT_ONLY, ranks={"input": (4, 4)}, constant=("weight", "bias"))
rules.refuse("aten._native_batch_norm_legit.no_stats", "aten._native_batch_norm_legit.default", code=ReasonCode.OP,
             message="batch statistics normalisation (instance norm / training-mode batch norm) exports to a form "
                     "QNN HTP rejects")


@rules.check("aten.native_layer_norm.default")
def _layer_norm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    shape = arguments(node)["normalized_shape"]
    if len(shape) != 1:
        return Reject(ReasonCode.ATTR, f"layer norm over the last {len(shape)} dims: QNN HTP normalises the "
                                       "last dim only")
    return None


# --------------------------------------------------------------------------- pooling and resize (4-d, no dilation)

rules.ops("aten.max_pool2d_with_indices.default", dtypes=WITH_INDICES, ranks={"self": (4, 4)})
rules.ops("aten.adaptive_max_pool2d.default", dtypes=WITH_INDICES, ranks={"self": (4, 4)},
          values={"output_size": ([1, 1],)})
rules.ops("aten.avg_pool2d.default", dtypes=FLOAT_ONLY, ranks={"self": (4, 4)},
          values={"ceil_mode": (False,), "divisor_override": (None,)})
rules.ops("aten._adaptive_avg_pool2d.default", dtypes=FLOAT_ONLY, ranks={"self": (4, 4)})
rules.ops("aten.upsample_nearest2d.vec", "aten.upsample_bilinear2d.vec", dtypes=FLOAT_ONLY,
          ranks={"input": (4, 4)})


@rules.before  # before the limits: the int64 indices would otherwise be the reason, which says less
def _values_only(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if op_name(node) in ("aten.max_pool2d_with_indices.default", "aten.adaptive_max_pool2d.default") \
            and output_used(node, 1):
        return Reject(ReasonCode.ATTR, "max-pool indices are not produced by QNN")
    return None


@rules.check("aten.max_pool2d_with_indices.default", "aten.adaptive_max_pool2d.default")
def _float_input(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    v = _val(node.args[0])
    if v is None or v.dtype != torch.float32:
        return Reject(ReasonCode.DTYPE, f"{op_name(node)} is taken on float32 input only")
    return None


@rules.check("aten.max_pool2d_with_indices.default")
def _no_dilation(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    d = arguments(node)["dilation"]
    if any(x != 1 for x in ([d] if isinstance(d, int) else d)):
        return Reject(ReasonCode.ATTR, "QNN HTP pooling has no dilation")
    return None


@rules.check("aten._adaptive_avg_pool2d.default")
def _adaptive_avg(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    x = _val(node.args[0])
    oh, ow = node.args[1]
    if x.shape[2] % oh or x.shape[3] % ow:
        return Reject(ReasonCode.SHAPE, "adaptive pooling with uneven windows has no QNN equivalent")
    return None


# --------------------------------------------------------------------------- what stays on the host

rules.refuse("aten.full.default", "aten.scalar_tensor.default", "aten.full_like.default", "aten.arange.start_step",
             "aten.arange.default", "aten.arange.start", "aten.zeros.default", "aten.ones.default",
             "aten.zeros_like.default", "aten.ones_like.default", "aten.empty.memory_format", code=ReasonCode.OP,
             message="constant-producing op: left to the host so that no partition is a graph without inputs")
rules.refuse("aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
             "aten.sym_constrain_range_for_size.default", code=ReasonCode.OP,
             message="runtime assertion: nothing to compute on the HTP")

#: ops the default decomposition always splits: a program captured for QNN alone never holds them, so QNN's
#: conformance cannot certify them whole; one kept whole for another backend (xnnpack and arm_ethos keep
#: hardswish) is refused, and the core then decomposes it for QNN when that gives fewer partitions.
#: ``reshape`` is missing: export itself traces it to ``view``, so no program holds it.
DECOMPOSED_BY_DEFAULT = ("aten.hardswish.default", "aten.hardsigmoid.default", "aten.silu.default",
                         "aten.rsub.Scalar", "aten.split.Tensor", "aten.squeeze.dim", "aten._unsafe_view.default")
rules.refuse(*DECOMPOSED_BY_DEFAULT, code=ReasonCode.OP,
             message="QNN takes this op decomposed (as the default decomposition spells it), not whole")

#: what the core keeps whole for QNN (BackendInfo.keep_ops), from the table's keep_whole rows
KEEP_OPS = rules.keep_ops


def claim(program: Any, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Any:
    """The ``claim`` hook: every candidate node claimed or refused with a reason."""
    return rules.claim(program, nodes, options)
