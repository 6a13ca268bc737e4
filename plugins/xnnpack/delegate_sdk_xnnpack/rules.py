"""What the XNNPACK delegate runs: one rule per core-ATen op, each vendor limit a refusal with a reason.

The limits are the ones ExecuTorch 1.5.1's XNNPACK partitioner and serializer
enforce (checked op by op against the real lowering in this plugin's tests);
where the partitioner would silently leave a node to ExecuTorch's portable
kernels, the rule refuses it instead, so nothing claimed runs outside XNNPACK.

Some ops are claimed in a spelling XNNPACK does not match directly and
``rewrites.py`` respells them before lowering (``squeeze`` -> ``view``,
``max_pool2d_with_indices`` -> ``max_pool2d``, ``addmm(permute(w))`` -> ``linear``).
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
    has_dynamic_shape,
    op_name,
)
from delegate_sdk.types import ReasonCode

rules = SupportRules()

#: XNN_MAX_TENSOR_DIMS: XNNPACK refuses to define a tensor of higher rank
MAX_RANK = 6
FLOAT_DTYPES = (torch.float32, torch.float16)

#: ops XNNPACK runs on int8 data (ExecuTorch's STATIC_QUANT partitioner configs) and the quantizer covers
INT8_OPS = frozenset({
    "aten.convolution.default", "aten.linear.default", "aten.addmm.default", "aten.mm.default",
    "aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor", "aten.cat.default",
    "aten.relu.default", "aten.hardtanh.default", "aten.clamp.default",
    "aten.max_pool2d.default", "aten.max_pool2d_with_indices.default", "aten.mean.dim",
    "aten.permute.default", "aten.view.default", "aten.slice.Tensor",
    "aten.squeeze.dims", "aten.squeeze.dim", "aten.squeeze.default", "aten.unsqueeze.default",
    "aten._native_batch_norm_legit_no_training.default",
})

#: multi-output ops of which XNNPACK produces the first output only (indices, batch-norm statistics)
_FIRST_OUTPUT_ONLY_OPS = ("aten.max_pool2d_with_indices.default", "aten.max.dim",
                          "aten._native_batch_norm_legit_no_training.default")


# ----------------------------------------------------------------------------- helpers


def arguments(node: torch.fx.Node) -> dict[str, Any]:
    """The node's arguments by schema name, defaults filled in."""
    schema = node.target._schema  # type: ignore[union-attr]
    out: dict[str, Any] = {}
    for i, a in enumerate(schema.arguments):
        if i < len(node.args):
            out[a.name] = node.args[i]
        elif a.name in node.kwargs:
            out[a.name] = node.kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
        else:
            out[a.name] = None
    return out


def _val(x: Any) -> Any:
    return x.meta.get("val") if isinstance(x, torch.fx.Node) else None


def _tensor_inputs(node: torch.fx.Node) -> list[torch.Tensor]:
    out = []
    for a in node.all_input_nodes:
        v = _val(a)
        if isinstance(v, torch.Tensor):
            out.append(v)
    return out


def _value_outputs(node: torch.fx.Node) -> list[torch.Tensor]:
    v = node.meta.get("val")
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (tuple, list)):
        vs = [x for x in v if isinstance(x, torch.Tensor)]
        return vs[:1] if op_name(node) in _FIRST_OUTPUT_ONLY_OPS else vs
    return []


def _only_first_output_used(node: torch.fx.Node) -> bool:
    return all(u.target is operator.getitem and u.args[1] == 0 for u in node.users)


def _rank(node_or_arg: Any) -> int:
    v = _val(node_or_arg)
    return v.dim() if isinstance(v, torch.Tensor) else -1


def _pair(x: Any, default: int | None = None) -> list[int]:
    if x is None or (isinstance(x, (list, tuple)) and len(x) == 0):
        return [] if default is None else [default, default]
    if isinstance(x, int):
        return [x, x]
    return [int(v) for v in x] * (2 if len(x) == 1 else 1)


def _constant_weight(ctx: RuleContext, arg: Any) -> bool:
    return ctx.is_constant(arg)


def _transposed_constant(ctx: RuleContext, arg: Any) -> bool:
    """``permute(w, [1, 0])`` of a constant: core ATen's spelling of ``linear``'s weight."""
    return (isinstance(arg, torch.fx.Node) and arg.op == "call_function"
            and arg.target is torch.ops.aten.permute.default
            and [d % 2 for d in arg.args[1]] == [1, 0] and ctx.is_constant(arg.args[0]))


# ----------------------------------------------------------------------------- rules for every node


@rules.every
def float_dtypes_only(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    ins, outs = _tensor_inputs(node), _value_outputs(node)
    for t in (*ins, *outs):
        if t.dtype == torch.bfloat16:
            return Reject(ReasonCode.DTYPE, "bfloat16 is not delegated: XNNPACK here runs float32 and float16 only")
        if t.dtype not in FLOAT_DTYPES:
            return Reject(ReasonCode.DTYPE,
                          f"{dtype_name(t.dtype)} tensors are not supported; XNNPACK runs float32/float16 only")
    if ctx.precision == "int8" and any(t.dtype != torch.float32 for t in (*ins, *outs)):
        return Reject(ReasonCode.DTYPE, "int8 quantization starts from float32 tensors; this node has float16")
    return None


@rules.every
def same_input_dtypes(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    kinds = {t.dtype for t in _tensor_inputs(node)}
    if len(kinds) > 1:
        names = ", ".join(sorted(dtype_name(d) for d in kinds))
        return Reject(ReasonCode.DTYPE, f"mixed input dtypes ({names}) are not supported")
    return None


@rules.every
def static_shapes(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if has_dynamic_shape(node):
        return Reject(ReasonCode.DYNAMIC, "dynamic shapes are not delegated: the XNNPACK graph is built for static shapes")
    return None


@rules.every
def no_zero_size(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    for t in (*_tensor_inputs(node), *_value_outputs(node)):
        if any(d == 0 for d in t.shape):
            return Reject(ReasonCode.SHAPE, f"zero-size tensor {list(t.shape)}: XNNPACK does not take empty tensors")
    return None


@rules.every
def rank_limit(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    for t in (*_tensor_inputs(node), *_value_outputs(node)):
        if t.dim() > MAX_RANK:
            return Reject(ReasonCode.RANK, f"rank {t.dim()} exceeds XNNPACK's limit of {MAX_RANK} dimensions")
    return None


@rules.every
def int8_capable(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if ctx.precision == "int8" and op_name(node) not in INT8_OPS:
        return Reject(ReasonCode.PRECISION,
                      f"XNNPACK has no int8 kernel for {op_name(node)} here (float only); use precision fp32")
    return None


# ----------------------------------------------------------------------------- elementwise

rules.supported(
    "aten.abs.default", "aten.neg.default", "aten.exp.default", "aten.log.default", "aten.sqrt.default",
    "aten.rsqrt.default", "aten.ceil.default", "aten.floor.default", "aten.sin.default", "aten.cos.default",
    "aten.tanh.default", "aten.sigmoid.default", "aten.relu.default", "aten.hardswish.default",
    "aten.leaky_relu.default", "aten.hardtanh.default", "aten.clamp.default",
    "aten.maximum.default", "aten.minimum.default", "aten.mul.Tensor", "aten.div.Tensor",
)


@rules.op("aten.gelu.default")
def gelu(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    approx = arguments(node)["approximate"]
    if approx != "none":
        return Reject(ReasonCode.ATTR, f"gelu approximate={approx!r}: XNNPACK computes the exact (erf) gelu only")
    if _val(node).dtype == torch.float16:
        return Reject(ReasonCode.DTYPE, "XNNPACK has no float16 gelu")
    return None


@rules.op("aten.add.Tensor", "aten.sub.Tensor")
def add_sub_alpha(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    alpha = arguments(node)["alpha"]
    if alpha is not None and not math.isclose(float(alpha), 1.0):
        return Reject(ReasonCode.ATTR, f"alpha={alpha}: XNNPACK add/sub support alpha 1 only")
    return None


@rules.op("aten.sub.Tensor")
def int8_sub_operands(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if ctx.precision == "int8" and not isinstance(arguments(node)["self"], torch.fx.Node):
        return Reject(ReasonCode.QUANT, "int8 scalar-minus-tensor is not supported (quantize x - c, not c - x)")
    return None


@rules.op("aten.pow.Tensor_Scalar")
def pow_square(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    e = arguments(node)["exponent"]
    if isinstance(e, bool) or not isinstance(e, (int, float)) or float(e) != 2.0:
        return Reject(ReasonCode.ATTR, f"pow exponent {e}: XNNPACK lowers pow with exponent 2 (square) only")
    return None


# ----------------------------------------------------------------------------- conv / gemm


@rules.op("aten.convolution.default")
def convolution(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    if not _constant_weight(ctx, a["weight"]):
        return Reject(ReasonCode.CONSTANT, "conv weight must be a constant (parameter or buffer)")
    if a["bias"] is not None and not _constant_weight(ctx, a["bias"]):
        return Reject(ReasonCode.CONSTANT, "conv bias must be a constant (parameter or buffer)")
    nd = _rank(a["weight"]) - 2
    if nd not in (1, 2):
        return Reject(ReasonCode.RANK, f"{nd}-D convolution: XNNPACK runs 1-D and 2-D convolutions only")
    if ctx.precision == "int8" and a["transposed"] and a["groups"] != 1:
        return Reject(ReasonCode.QUANT, "int8 transposed convolution needs groups == 1 (per-channel weights)")
    return None


@rules.op("aten.linear.default")
def linear(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    if not _constant_weight(ctx, a["weight"]):
        return Reject(ReasonCode.CONSTANT, "linear weight must be a constant (parameter or buffer)")
    if a["bias"] is not None and not _constant_weight(ctx, a["bias"]):
        return Reject(ReasonCode.CONSTANT, "linear bias must be a constant (parameter or buffer)")
    return None


@rules.op("aten.addmm.default")
def addmm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    if a["beta"] != 1 or a["alpha"] != 1:
        return Reject(ReasonCode.ATTR, f"addmm with beta={a['beta']}, alpha={a['alpha']}: only 1 and 1 (a linear layer)")
    if not _transposed_constant(ctx, a["mat2"]):
        return Reject(ReasonCode.CONSTANT, "addmm weight must be a transposed constant (an nn.Linear weight)")
    if not _constant_weight(ctx, a["self"]) or _rank(a["self"]) != 1:
        return Reject(ReasonCode.CONSTANT, "addmm bias must be a constant vector (an nn.Linear bias)")
    return None


@rules.op("aten.mm.default")
def mm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if not _transposed_constant(ctx, arguments(node)["mat2"]):
        return Reject(ReasonCode.CONSTANT,
                      "mm weight must be a transposed constant (an nn.Linear weight); use bmm for two activations")
    return None


rules.supported("aten.bmm.default")


# ----------------------------------------------------------------------------- normalization / activation


@rules.op("aten._native_batch_norm_legit_no_training.default")
def batch_norm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    if _rank(a["input"]) not in (2, 3, 4):
        return Reject(ReasonCode.RANK, f"batch norm on a rank-{_rank(a['input'])} tensor: XNNPACK takes NC, NCL, NCHW")
    for k in ("weight", "bias", "running_mean", "running_var"):
        if a[k] is not None and not ctx.is_constant(a[k]):
            return Reject(ReasonCode.CONSTANT, f"batch norm {k} must be a constant")
    if not _only_first_output_used(node):
        return Reject(ReasonCode.ATTR, "batch norm's saved mean/invstd outputs are used; XNNPACK computes the output only")
    if ctx.precision == "int8":
        src = a["input"]
        if not (isinstance(src, torch.fx.Node) and src.op == "call_function"
                and src.target is torch.ops.aten.convolution.default and len(src.users) == 1):
            return Reject(ReasonCode.QUANT, "int8 batch norm must directly follow a convolution (it is folded into it)")
    return None


@rules.op("aten.prelu.default")
def prelu(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    if not ctx.is_constant(a["weight"]):
        return Reject(ReasonCode.CONSTANT, "prelu weight must be a constant")
    if _rank(a["self"]) != 4:
        return Reject(ReasonCode.RANK, f"prelu on a rank-{_rank(a['self'])} tensor: XNNPACK's prelu takes NCHW only")
    return None


@rules.op("aten._softmax.default")
def softmax(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    rank = _rank(a["self"])
    if a["dim"] not in (-1, rank - 1):
        return Reject(ReasonCode.ATTR, f"softmax over dim {a['dim']} of a rank-{rank} tensor: XNNPACK does the last dim only")
    if a["half_to_float"]:
        return Reject(ReasonCode.DTYPE, "softmax with half_to_float is not supported")
    return None


# ----------------------------------------------------------------------------- pooling / reduction


@rules.op("aten.mean.dim")
def mean_dim(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    rank = _rank(a["self"])
    dims = sorted(d % rank for d in (a["dim"] or [])) if rank > 0 else []
    if rank != 4 or dims != [2, 3]:
        return Reject(ReasonCode.ATTR, f"mean over dims {a['dim']} of a rank-{rank} tensor: XNNPACK averages "
                                       "the two innermost dims of a 4-D tensor only")
    if not a["keepdim"]:
        return Reject(ReasonCode.ATTR, "mean without keepdim: XNNPACK's global average pooling keeps the dims")
    if a["dtype"] is not None:
        return Reject(ReasonCode.DTYPE, "mean with an explicit dtype is not supported")
    return None


@rules.op("aten.avg_pool2d.default")
def avg_pool2d(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    kernel = _pair(a["kernel_size"])
    padding = _pair(a["padding"], 0)
    if a["ceil_mode"]:
        return Reject(ReasonCode.ATTR, "avg pool with ceil_mode is not supported by XNNPACK")
    if a["count_include_pad"] and any(p != 0 for p in padding):
        return Reject(ReasonCode.ATTR, "avg pool counting zero padding in the average (count_include_pad) is not supported")
    if a["divisor_override"] is not None and a["divisor_override"] != kernel[0] * kernel[1]:
        return Reject(ReasonCode.ATTR, f"avg pool divisor_override={a['divisor_override']} is not supported")
    return None


@rules.op("aten.max_pool2d_with_indices.default", "aten.max_pool2d.default")
def max_pool2d(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    kernel = _pair(a["kernel_size"])
    stride = _pair(a["stride"]) or kernel
    if stride[0] > kernel[0] or stride[1] > kernel[1]:
        return Reject(ReasonCode.ATTR, f"max pool stride {stride} larger than kernel {kernel}: XNNPACK needs stride <= kernel")
    if op_name(node) == "aten.max_pool2d_with_indices.default" and not _only_first_output_used(node):
        return Reject(ReasonCode.ATTR, "max pool indices are used: XNNPACK computes the values only")
    return None


@rules.op("aten.max.dim")
def max_dim(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    rank = _rank(a["self"])
    if rank != 4 or a["dim"] % 4 not in (2, 3):
        return Reject(ReasonCode.ATTR, f"max over dim {a['dim']} of a rank-{rank} tensor: XNNPACK reduces dim 2 or 3 "
                                       "of a 4-D tensor only")
    if not a["keepdim"]:
        return Reject(ReasonCode.ATTR, "max without keepdim is not supported by XNNPACK")
    if not _only_first_output_used(node):
        return Reject(ReasonCode.ATTR, "max indices are used: XNNPACK computes the values only")
    return None


@rules.op("aten.upsample_bilinear2d.vec")
def upsample_bilinear(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    if _rank(a["input"]) != 4:
        return Reject(ReasonCode.RANK, "bilinear upsampling takes NCHW tensors")
    scales = a["scale_factors"]
    if scales and not a["align_corners"]:
        in_hw = _val(a["input"]).shape[2:]
        if any(float(n) * float(f) != int(float(n) * float(f)) for n, f in zip(in_hw, scales)):
            return Reject(ReasonCode.ATTR, f"bilinear scale {list(scales)} on size {list(in_hw)} gives a fractional "
                                           "size: PyTorch samples at 1/scale, XNNPACK at in/out size")
    return None


# ----------------------------------------------------------------------------- data movement


@rules.op("aten.cat.default")
def cat(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    tensors = arguments(node)["tensors"]
    if len(tensors) < 2:
        return Reject(ReasonCode.SHAPE, f"concatenation of {len(tensors)} tensor: XNNPACK needs at least 2")
    return None


@rules.op("aten.constant_pad_nd.default")
def constant_pad(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    pad = arguments(node)["pad"]
    if any(p < 0 for p in pad):
        return Reject(ReasonCode.ATTR, f"negative padding {list(pad)} (cropping) is not supported by XNNPACK")
    return None


rules.supported("aten.permute.default", "aten.squeeze.dims", "aten.squeeze.dim", "aten.squeeze.default",
                "aten.unsqueeze.default")


@rules.op("aten.view.default")
def view(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    size = list(arguments(node)["size"])
    if sum(1 for d in size if d == -1) > 1:
        return Reject(ReasonCode.SHAPE, f"view {size} infers more than one dim")
    return None


@rules.op("aten.slice.Tensor")
def slice_(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    step = arguments(node)["step"]
    if step != 1:
        return Reject(ReasonCode.ATTR, f"slice with step {step}: XNNPACK slices with step 1 only")
    return None


@rules.op("aten.clone.default")
def clone(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    fmt = arguments(node)["memory_format"]
    if fmt not in (None, torch.preserve_format, torch.contiguous_format):
        return Reject(ReasonCode.ATTR, f"clone to {fmt} changes the dim order; XNNPACK copies keep it")
    return None


@rules.op("aten._to_copy.default")
def to_copy(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    src, dst = _val(node.args[0]), _val(node)
    if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and src.dtype != dst.dtype:
        return Reject(ReasonCode.DTYPE, f"{dtype_name(src.dtype)} -> {dtype_name(dst.dtype)} conversion: "
                                        "the XNNPACK delegate does not convert dtypes")
    return Reject(ReasonCode.ATTR, "memory-format/device copies are not delegated")


def supported_ops(precision: str = "fp32") -> list[str]:
    """Op names the rules may claim (for docs/tests); at int8 the subset with int8 kernels."""
    return [o for o in rules.ops if o != "aten._to_copy.default" and (precision != "int8" or o in INT8_OPS)]
