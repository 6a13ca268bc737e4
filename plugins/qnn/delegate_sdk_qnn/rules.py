"""Support rules: which core-ATen nodes the QNN HTP backend runs, and why not the others.

Every claimed op goes torch.onnx -> ONNX op(s) -> a QNN EP HTP op builder; the op set is the
intersection of what the exporter emits for it and the builders QNN EP registers
(onnxruntime-qnn 2.7.0). Each constraint below was seen on the HTP backend (x86-64
emulator, QNN 2.51) with CPU fallback disabled, at int8, a16w8 and fp16; the sentence of
each refusal says which constraint, so ``delegate-sdk inspect`` can show it.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch

from delegate_sdk.support import (
    Reject,
    RuleContext,
    SupportRules,
    dtype_name,
    input_tensors,
    op_name,
    output_tensors,
)
from delegate_sdk.types import ReasonCode

rules = SupportRules()

QUANTIZED = ("int8", "a16w8")

#: QNN HTP is a 4-d machine: most op validators reject rank 5 (tanh, log, sqrt, neg, sin, elu,
#: floor, rsqrt, maximum, argmax, topk, layer norm, log_softmax, cumsum, ... were seen failing).
DEFAULT_MAX_RANK = 4
#: ops seen compiling and matching eager at rank 5 at int8, a16w8's activations aside, and fp16
RANK5_OPS = frozenset({
    "aten.add.Tensor", "aten.add.Scalar", "aten.sub.Tensor", "aten.sub.Scalar", "aten.rsub.Scalar",
    "aten.mul.Tensor", "aten.mul.Scalar", "aten.div.Tensor", "aten.div.Scalar", "aten.pow.Tensor_Scalar",
    "aten.relu.default", "aten.sigmoid.default", "aten.exp.default", "aten.abs.default",
    "aten.reciprocal.default", "aten.clamp.default", "aten.hardtanh.default", "aten.leaky_relu.default",
    "aten.gt.Scalar", "aten.gt.Tensor", "aten.where.self", "aten.mean.dim", "aten.sum.dim_IntList",
    "aten.amax.default", "aten.amin.default", "aten.var.correction", "aten._softmax.default",
    "aten.permute.default", "aten.cat.default", "aten.slice.Tensor", "aten.select.int", "aten.squeeze.dims",
    "aten.squeeze.dim", "aten.split_with_sizes.default", "aten.split.Tensor", "aten.expand.default",
    "aten.gather.default", "aten.index_select.default", "aten.constant_pad_nd.default", "aten.flip.default",
    "aten.repeat.default", "aten.bmm.default", "aten.convolution.default",  # 3-d convolution
})

#: ops whose int64 operands/results are indices: QNN narrows int64 to int32, which cannot
#: change an index into a tensor that fits in memory.
INT64_INDEX_OPS = frozenset({
    "aten.embedding.default", "aten.index_select.default", "aten.gather.default",
    "aten.argmax.default", "aten.argmin.default", "aten.topk.default", "aten.sort.default",
    "aten.max.dim", "aten.min.dim", "aten.max_pool2d_with_indices.default",
    "aten.adaptive_max_pool2d.default", "aten._to_copy.default",
})

_FLOAT_OK = {"float32"}
_ALLOWED_DTYPES = {"float32", "int32", "int64", "bool"}


# --------------------------------------------------------------------------- helpers

def _arg(node: torch.fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _val(x: Any) -> torch.Tensor | None:
    v = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    return v if isinstance(v, torch.Tensor) else None


def _rank(x: Any) -> int:
    v = _val(x)
    return v.dim() if v is not None else 0


def _used_outputs(node: torch.fx.Node) -> list[torch.Tensor]:
    """Outputs that something consumes: a multi-output op's unused results (batch norm's empty
    saved stats, max-pool indices) never reach the QNN graph."""
    v = node.meta.get("val")
    if not isinstance(v, (tuple, list)):
        return output_tensors(node)
    used = {u.args[1] for u in node.users if u.target is operator.getitem and len(u.users) > 0}
    return [t for i, t in enumerate(v) if i in used and isinstance(t, torch.Tensor)]


def _activation_tensors(node: torch.fx.Node, ctx: RuleContext) -> list[torch.Tensor]:
    """Non-constant inputs and the used outputs of ``node`` (constants become initializers)."""
    ts = [t for a in node.all_input_nodes if not ctx.is_constant(a) for t in output_tensors(a)]
    return ts + _used_outputs(node)


def _is_finite_number(x: Any) -> bool:
    return not isinstance(x, (int, float)) or isinstance(x, bool) or math.isfinite(x)


_FILL_OPS = {"aten.full.default": 1, "aten.scalar_tensor.default": 0, "aten.full_like.default": 1,
             "aten.fill.Scalar": 1, "aten.new_full.default": 2}


def _nonfinite_operand(node: torch.fx.Node, ctx: RuleContext) -> bool:
    """A -inf/inf/nan scalar or constant among the operands (attention masks, masked_fill)."""
    for a in (*node.args, *node.kwargs.values()):
        items = a if isinstance(a, (list, tuple)) else (a,)
        for x in items:
            if not _is_finite_number(x):
                return True
            if isinstance(x, torch.fx.Node):
                if op_name(x) in _FILL_OPS:
                    fill = _arg(x, _FILL_OPS[op_name(x)], "fill_value")
                    if not _is_finite_number(fill):
                        return True
                c = ctx.constant_value(x)
                if c is not None and c.is_floating_point() and c.numel() and not torch.isfinite(c).all():
                    return True
    return False


def _getitem_used(node: torch.fx.Node, index: int) -> bool:
    return any(u.target is operator.getitem and u.args[1] == index and len(u.users) > 0 for u in node.users)


# --------------------------------------------------------------------------- rules for every node

@rules.every
def _static(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    ts = [*input_tensors(node), *_used_outputs(node)]
    if any(not isinstance(d, int) for t in ts for d in t.shape):
        return Reject(ReasonCode.DYNAMIC, "QNN HTP graphs need static shapes; this node has a dynamic dimension")
    if any(t.numel() == 0 for t in ts):
        return Reject(ReasonCode.SHAPE, "zero-size tensors cannot be represented in a QNN graph")
    return None


@rules.every
def _dtypes(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    name = op_name(node)
    ts = _activation_tensors(node, ctx)
    dts = {dtype_name(t.dtype) for t in (*ts, *input_tensors(node), *_used_outputs(node))}
    if "float64" in dts:
        return Reject(ReasonCode.DTYPE, "float64 is not supported by QNN HTP")
    bad = sorted(dts - _ALLOWED_DTYPES)
    if bad:
        return Reject(ReasonCode.DTYPE, f"{', '.join(bad)} tensors are not supported by this plugin "
                                        "(QNN HTP takes float32 models; fp16 precision runs them in HTP fp16)")
    if "int64" in dts and name not in INT64_INDEX_OPS:
        return Reject(ReasonCode.DTYPE, "int64 is only taken as indices: QNN narrows int64 to int32, which "
                                        "can overflow in arithmetic")
    return None


@rules.every
def _ranks(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    limit = 5 if op_name(node) in RANK5_OPS else DEFAULT_MAX_RANK
    ts = _activation_tensors(node, ctx)
    top = max((t.dim() for t in ts), default=0)
    if top > limit:
        return Reject(ReasonCode.RANK, f"rank {top} exceeds QNN HTP's limit of {limit} for {op_name(node)}")
    if any(t.dim() == 0 for t in _used_outputs(node)):
        return Reject(ReasonCode.RANK, "0-d (scalar) results are left to the host")
    return None


@rules.every
def _quantizable(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if ctx.precision in QUANTIZED and _nonfinite_operand(node, ctx):
        return Reject(ReasonCode.QUANT, "a non-finite constant (e.g. a -inf mask) has no representation in "
                                        f"a quantized ({ctx.precision}) tensor")
    return None


# --------------------------------------------------------------------------- per-op rules

def _float_only(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    dts = {dtype_name(t.dtype) for t in _activation_tensors(node, ctx)}
    if dts - _FLOAT_OK:
        return Reject(ReasonCode.DTYPE, f"{op_name(node)} is taken on float32 tensors only "
                                        f"(got {', '.join(sorted(dts))})")
    return None


# elementwise float ops: Add/Sub/Mul/Div/Pow/Max/Min, activations, math (QNN ElementWise*)
_ELEMENTWISE = (
    "aten.add.Tensor", "aten.add.Scalar", "aten.sub.Tensor", "aten.sub.Scalar", "aten.rsub.Scalar",
    "aten.mul.Tensor", "aten.mul.Scalar", "aten.div.Tensor", "aten.div.Scalar",
    "aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.maximum.default", "aten.minimum.default",
    "aten.relu.default", "aten.sigmoid.default", "aten.tanh.default", "aten.exp.default", "aten.expm1.default",
    "aten.log.default", "aten.log1p.default", "aten.sqrt.default", "aten.rsqrt.default", "aten.abs.default",
    "aten.neg.default", "aten.sin.default", "aten.cos.default", "aten.tan.default", "aten.atan.default",
    "aten.floor.default", "aten.ceil.default", "aten.round.default", "aten.trunc.default", "aten.sign.default",
    "aten.reciprocal.default", "aten.leaky_relu.default", "aten.hardtanh.default", "aten.clamp.default",
    "aten.hardswish.default", "aten.hardsigmoid.default", "aten.silu.default",
)
rules.op(*_ELEMENTWISE)(_float_only)


#: ops whose quantized HTP kernels disagree with the fake-quant reference beyond a step, seen in
#: conformance at int8: ceil/trunc (systematic one-step offset), cumsum (error grows along the
#: scan, 21 steps on 1024 elements), pow with a tensor exponent (wrong values on broadcast)
_NOT_QUANTIZED = {
    "aten.ceil.default": "HTP's quantized Ceil is offset by about one step from float ceil of the same input",
    "aten.trunc.default": "trunc (Abs/Floor/Sign/Mul on HTP) is offset by a step or more when quantized",
    "aten.cumsum.default": "HTP's quantized CumSum rounds at every step; the error grows with the scan length",
    "aten.pow.Tensor_Tensor": "HTP's quantized Pow with a tensor exponent gave wrong values (broadcast case)",
    "aten.eq.Tensor": "equality of quantized values holds only on the quantization grid",
    "aten.eq.Scalar": "equality of quantized values holds only on the quantization grid",
    "aten.ne.Tensor": "inequality of quantized values holds only on the quantization grid",
    "aten.ne.Scalar": "inequality of quantized values holds only on the quantization grid",
}


#: ops whose 16-bit HTP kernels are wrong (not just imprecise) at a16w8
_NOT_A16 = {
    "aten.log.default": "HTP's 16-bit Log wraps around near the top of its output range (1.29 came back as -2.58)",
    "aten.log1p.default": "log1p runs as HTP's 16-bit Log, which wraps around near the top of its output range",
}


@rules.every
def _quantized_kernels(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    why = _NOT_QUANTIZED.get(op_name(node))
    if why is None and ctx.precision == "a16w8":
        why = _NOT_A16.get(op_name(node))
    if why is not None and ctx.precision in QUANTIZED:
        return Reject(ReasonCode.QUANT, f"not taken at {ctx.precision}: {why}")
    return None


@rules.op("aten.asin.default")
def _asin(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if ctx.precision == "fp16":
        return Reject(ReasonCode.PRECISION, "QNN HTP has no fp16 Asin (quantized only)")
    return _float_only(node, ctx)


@rules.op("aten.gelu.default")
def _gelu(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return _float_only(node, ctx)


@rules.op("aten.elu.default")
def _elu(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _arg(node, 2, "scale", 1) != 1 or _arg(node, 3, "input_scale", 1) != 1:
        return Reject(ReasonCode.ATTR, "ELU with scale/input_scale other than 1 (SELU-like) is not QNN's Elu")
    return _float_only(node, ctx)


@rules.op("aten.erf.default")
def _erf(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return Reject(ReasonCode.OP, "QNN EP has no Erf op builder (GELU itself is supported)")


@rules.op("aten.prod.dim_int", "aten.prod.default")
def _prod(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return Reject(ReasonCode.OP, "QNN HTP rejects ReduceProd")


# comparisons -> bool; logical ops on bool
@rules.op("aten.eq.Tensor", "aten.eq.Scalar", "aten.ne.Tensor", "aten.ne.Scalar", "aten.lt.Tensor",
          "aten.lt.Scalar", "aten.le.Tensor", "aten.le.Scalar", "aten.gt.Tensor", "aten.gt.Scalar",
          "aten.ge.Tensor", "aten.ge.Scalar")
def _compare(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    dts = {dtype_name(t.dtype) for a in node.all_input_nodes if not ctx.is_constant(a) for t in output_tensors(a)}
    if dts - _FLOAT_OK:
        return Reject(ReasonCode.DTYPE, "comparisons are taken on float32 operands only")
    return None


@rules.op("aten.logical_not.default", "aten.logical_and.default", "aten.logical_or.default",
          "aten.logical_xor.default", "aten.bitwise_not.default", "aten.bitwise_and.Tensor",
          "aten.bitwise_or.Tensor", "aten.bitwise_xor.Tensor")
def _logical(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if any(t.dtype != torch.bool for t in (*input_tensors(node), *output_tensors(node))):
        return Reject(ReasonCode.DTYPE, "logical/bitwise ops are taken on bool tensors only (QNN And/Or/Not/Xor)")
    return None


@rules.op("aten.where.self")
def _where(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _val(node.args[0]) is None or _val(node.args[0]).dtype != torch.bool:
        return Reject(ReasonCode.DTYPE, "where needs a bool condition")
    if output_tensors(node)[0].dtype != torch.float32:
        return Reject(ReasonCode.DTYPE, "where is taken on float32 values only")
    return None


# reductions
@rules.op("aten.mean.dim", "aten.sum.dim_IntList", "aten.amax.default", "aten.amin.default")
def _reduce(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if op_name(node) == "aten.sum.dim_IntList" and node.kwargs.get("dtype") not in (None, torch.float32):
        return Reject(ReasonCode.DTYPE, "sum with a dtype conversion is not taken")
    return _float_only(node, ctx)


@rules.op("aten.var.correction")
def _var(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _arg(node, 1, "dim") is None:
        return Reject(ReasonCode.ATTR, "variance over all dims gives a 0-d result; left to the host")
    return _float_only(node, ctx)


@rules.op("aten.linalg_vector_norm.default")
def _norm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _arg(node, 1, "ord", 2) != 2:
        return Reject(ReasonCode.ATTR, "only the L2 vector norm maps to QNN (ReduceL2)")
    if _arg(node, 2, "dim") is None:
        return Reject(ReasonCode.ATTR, "a norm over all dims gives a 0-d result; left to the host")
    return _float_only(node, ctx)


@rules.op("aten.argmax.default", "aten.argmin.default")
def _argmax(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _arg(node, 1, "dim") is None:
        return Reject(ReasonCode.ATTR, "argmax/argmin over the flattened tensor is not taken (QNN needs an axis)")
    return None


@rules.op("aten.max.dim", "aten.min.dim")
def _max_dim(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return None


@rules.op("aten.cumsum.default")
def _cumsum(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if node.kwargs.get("dtype") not in (None, torch.float32):
        return Reject(ReasonCode.DTYPE, "cumsum with a dtype conversion is not taken")
    dim, r = node.args[1], _rank(node.args[0])
    if dim not in (-1, r - 1):
        return Reject(ReasonCode.ATTR, "cumsum is taken over the last dim only (other dims gave wrong "
                                       "results on QNN HTP)")
    return _float_only(node, ctx)


@rules.op("aten.topk.default")
def _topk(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    dim = _arg(node, 2, "dim", -1)
    if dim not in (-1, _rank(node.args[0]) - 1):
        return Reject(ReasonCode.ATTR, "QNN TopK works on the last dim only")
    return None


@rules.op("aten.sort.default")
def _sort(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    dim = _arg(node, 1, "dim", -1)
    if dim not in (-1, _rank(node.args[0]) - 1):
        return Reject(ReasonCode.ATTR, "sort runs as QNN TopK, which works on the last dim only")
    if _getitem_used(node, 1):
        return Reject(ReasonCode.ATTR, "sort indices are not taken: QNN's TopK order of equal values "
                                       "differs from torch's")
    return None


# softmax / log_softmax: last dim only
@rules.op("aten._softmax.default", "aten._log_softmax.default")
def _softmax(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    dim = node.args[1]
    r = _rank(node.args[0])
    if dim not in (-1, r - 1):
        return Reject(ReasonCode.ATTR, f"softmax over dim {dim} of a rank-{r} tensor: QNN HTP takes the "
                                       "last dim only")
    if node.args[2]:
        return Reject(ReasonCode.DTYPE, "half_to_float softmax is not taken")
    return _float_only(node, ctx)


# data movement
rules.op("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.permute.default",
         "aten.unsqueeze.default", "aten.squeeze.dims", "aten.squeeze.dim", "aten.expand.default",
         "aten.cat.default", "aten.slice.Tensor", "aten.select.int", "aten.split_with_sizes.default",
         "aten.split.Tensor", "aten.flip.default", "aten.repeat.default", "aten.clone.default",
         "aten.alias.default")(_float_only)


@rules.op("aten.constant_pad_nd.default")
def _pad(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if any(p < 0 for p in node.args[1]):
        return Reject(ReasonCode.ATTR, "negative padding (cropping) is not taken")
    return _float_only(node, ctx)


@rules.op("aten._to_copy.default")
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


# gather family (int64 indices narrowed to int32)
@rules.op("aten.embedding.default")
def _embedding(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if not ctx.is_constant(node.args[0]):
        return Reject(ReasonCode.CONSTANT, "the embedding table must be a weight")
    return None


@rules.op("aten.index_select.default", "aten.gather.default")
def _gather(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if output_tensors(node)[0].dtype != torch.float32:
        return Reject(ReasonCode.DTYPE, "gathers are taken on float32 data only")
    if op_name(node) == "aten.gather.default" and node.kwargs.get("sparse_grad"):
        return Reject(ReasonCode.ATTR, "sparse_grad gather is not taken")
    return None


@rules.op("aten.index.Tensor")
def _index(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return Reject(ReasonCode.OP, "advanced indexing exports to GatherND, which gave wrong results on QNN HTP")


# matmul family
rules.op("aten.mm.default", "aten.bmm.default")(_float_only)


@rules.op("aten.addmm.default")
def _addmm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        return Reject(ReasonCode.ATTR, "addmm with alpha/beta other than 1 is not taken")
    return _float_only(node, ctx)


@rules.op("aten.scaled_dot_product_attention.default")
def _sdpa(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _rank(node.args[0]) != 4:
        return Reject(ReasonCode.RANK, "attention is taken on 4-d (batch, heads, seq, dim) tensors only")
    mask = _arg(node, 3, "attn_mask")
    if _arg(node, 4, "dropout_p", 0.0) != 0.0:
        return Reject(ReasonCode.ATTR, "attention dropout is not taken")
    if _arg(node, 7, "enable_gqa", False):
        return Reject(ReasonCode.ATTR, "grouped-query attention (enable_gqa) is not taken")
    if ctx.precision in QUANTIZED:
        if _arg(node, 5, "is_causal", False) or (mask is not None and _val(mask) is not None
                                                 and _val(mask).dtype == torch.bool):
            return Reject(ReasonCode.QUANT, "causal/boolean masks are applied as -inf, which has no "
                                            f"quantized ({ctx.precision}) representation")
    return _float_only(node, ctx)


# convolution
@rules.op("aten.convolution.default")
def _conv(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    x, w, b, stride, padding, dilation, transposed, output_padding, groups = node.args[:9]
    if not ctx.is_constant(w):
        return Reject(ReasonCode.CONSTANT, "convolution weights must be constants")
    if b is not None and not ctx.is_constant(b):
        return Reject(ReasonCode.CONSTANT, "convolution bias must be a constant")
    spatial = _rank(x) - 2
    if spatial not in (1, 2, 3):
        return Reject(ReasonCode.RANK, f"{spatial}-d convolution is not supported (1-d, 2-d, 3-d are)")
    cin = _val(x).shape[1]
    depthwise = groups > 1 and groups == cin
    if depthwise and spatial > 2:
        return Reject(ReasonCode.ATTR, "QNN HTP has depthwise convolution in 2-d only (1-d runs as 2-d)")
    if transposed:
        if spatial > 2:
            return Reject(ReasonCode.ATTR, "transposed convolution is taken in 1-d and 2-d only")
        if groups != 1:
            return Reject(ReasonCode.ATTR, "grouped transposed convolution is not taken")
        if any(d != 1 for d in dilation):
            return Reject(ReasonCode.ATTR, "dilated transposed convolution is not taken")
    return _float_only(node, ctx)


# normalisation
@rules.op("aten.native_layer_norm.default")
def _layer_norm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    shape = node.args[1]
    if len(shape) != 1:
        return Reject(ReasonCode.ATTR, f"layer norm over the last {len(shape)} dims: QNN HTP normalises the "
                                       "last dim only")
    for p in node.args[2:4]:
        if p is not None and not ctx.is_constant(p):
            return Reject(ReasonCode.CONSTANT, "layer norm weight and bias must be constants")
    return _float_only(node, ctx)


@rules.op("aten._native_batch_norm_legit_no_training.default")
def _batch_norm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    for p in node.args[1:5]:
        if p is not None and not ctx.is_constant(p):
            return Reject(ReasonCode.CONSTANT, "batch norm parameters and running stats must be constants")
    if _rank(node.args[0]) not in (3, 4):
        return Reject(ReasonCode.RANK, "batch norm is taken on 3-d and 4-d inputs")
    return _float_only(node, ctx)


@rules.op("aten.native_group_norm.default")
def _group_norm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    for p in node.args[1:3]:
        if p is not None and not ctx.is_constant(p):
            return Reject(ReasonCode.CONSTANT, "group norm weight and bias must be constants")
    if _rank(node.args[0]) != 4:
        return Reject(ReasonCode.RANK, "group norm is taken on 4-d inputs")
    return _float_only(node, ctx)


@rules.op("aten._native_batch_norm_legit.no_stats", "aten._native_batch_norm_legit.default")
def _instance_norm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return Reject(ReasonCode.OP, "batch statistics normalisation (instance norm / training-mode batch norm) "
                                 "exports to a form QNN HTP rejects")


# pooling: no dilation, 4-d
@rules.op("aten.max_pool2d_with_indices.default")
def _max_pool(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _rank(node.args[0]) != 4:
        return Reject(ReasonCode.RANK, "max pooling is taken on 4-d (N, C, H, W) inputs")
    dilation = _arg(node, 4, "dilation", [1, 1])
    if any(d != 1 for d in dilation):
        return Reject(ReasonCode.ATTR, "QNN HTP pooling has no dilation")
    if _getitem_used(node, 1):
        return Reject(ReasonCode.ATTR, "max-pool indices are not produced by QNN")
    return _float_only_first(node, ctx)


def _float_only_first(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    v = _val(node.args[0])
    if v is None or v.dtype != torch.float32:
        return Reject(ReasonCode.DTYPE, f"{op_name(node)} is taken on float32 input only")
    return None


@rules.op("aten.avg_pool2d.default")
def _avg_pool(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _rank(node.args[0]) != 4:
        return Reject(ReasonCode.RANK, "average pooling is taken on 4-d (N, C, H, W) inputs")
    if _arg(node, 4, "ceil_mode", False):
        return Reject(ReasonCode.ATTR, "ceil_mode average pooling is not taken")
    if _arg(node, 6, "divisor_override") is not None:
        return Reject(ReasonCode.ATTR, "divisor_override has no QNN equivalent")
    return _float_only(node, ctx)


@rules.op("aten._adaptive_avg_pool2d.default")
def _adaptive_avg(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    x = _val(node.args[0])
    if x is None or x.dim() != 4:
        return Reject(ReasonCode.RANK, "adaptive average pooling is taken on 4-d inputs")
    oh, ow = node.args[1]
    if x.shape[2] % oh or x.shape[3] % ow:
        return Reject(ReasonCode.SHAPE, "adaptive pooling with uneven windows has no QNN equivalent")
    return _float_only(node, ctx)


@rules.op("aten.adaptive_max_pool2d.default")
def _adaptive_max(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _rank(node.args[0]) != 4 or list(node.args[1]) != [1, 1]:
        return Reject(ReasonCode.ATTR, "adaptive max pooling is taken to a 1x1 output (GlobalMaxPool) only")
    if _getitem_used(node, 1):
        return Reject(ReasonCode.ATTR, "max-pool indices are not produced by QNN")
    return _float_only_first(node, ctx)


@rules.op("aten.upsample_nearest2d.vec", "aten.upsample_bilinear2d.vec")
def _resize(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _rank(node.args[0]) != 4:
        return Reject(ReasonCode.RANK, "resize is taken on 4-d inputs")
    return _float_only(node, ctx)


@rules.op("operator.getitem")
def _getitem(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return None


# constant producers and host-only nodes
@rules.op("aten.full.default", "aten.scalar_tensor.default", "aten.full_like.default", "aten.arange.start_step",
          "aten.arange.default", "aten.arange.start", "aten.zeros.default", "aten.ones.default",
          "aten.zeros_like.default", "aten.ones_like.default", "aten.empty.memory_format")
def _constant(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return Reject(ReasonCode.OP, "constant-producing op: left to the host so that no partition is a "
                                 "graph without inputs")


@rules.op("aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
          "aten.sym_constrain_range_for_size.default")
def _assert(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    return Reject(ReasonCode.OP, "runtime assertion: nothing to compute on the HTP")


def claim(program: Any, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Any:
    """The ``claim`` hook: every candidate node claimed or refused with a reason."""
    return rules.claim(program, nodes, options)
