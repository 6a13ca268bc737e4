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

from typing import Any

import torch

from delegate_sdk.support import (ClaimTable, NodeLimits, Reject, RuleContext, arguments, dtype_name, node_tensors, op_name,
                                  output_used)
from delegate_sdk.types import ReasonCode

#: XNN_MAX_TENSOR_DIMS: XNNPACK refuses to define a tensor of higher rank
MAX_RANK = 6
FP32, BOTH = ("fp32",), ("fp32", "int8")

rules = ClaimTable(
    "XNNPACK",
    NodeLimits(dtypes=("float32", "float16"), max_rank=MAX_RANK, static_shapes=True, same_input_dtypes=True,
               dtype_reasons={"bfloat16": "bfloat16 is not delegated: XNNPACK here runs float32 and float16 only"}),
    # an op row without precisions runs at fp32 only; the int8 rows are ExecuTorch's STATIC_QUANT configs
    precisions=FP32,
)


def _val(x: Any) -> Any:
    return x.meta.get("val") if isinstance(x, torch.fx.Node) else None


def _rank(node_or_arg: Any) -> int:
    v = _val(node_or_arg)
    return v.dim() if isinstance(v, torch.Tensor) else -1


def _pair(x: Any, default: int | None = None) -> list[int]:
    if x is None or (isinstance(x, (list, tuple)) and len(x) == 0):
        return [] if default is None else [default, default]
    if isinstance(x, int):
        return [x, x]
    return [int(v) for v in x] * (2 if len(x) == 1 else 1)


def _transposed_constant(ctx: RuleContext, arg: Any) -> bool:
    """``permute(w, [1, 0])`` of a constant: core ATen's spelling of ``linear``'s weight."""
    return (isinstance(arg, torch.fx.Node) and arg.op == "call_function"
            and arg.target is torch.ops.aten.permute.default
            and [d % 2 for d in arg.args[1]] == [1, 0] and ctx.is_constant(arg.args[0]))


def _extra_outputs_used(node: torch.fx.Node) -> bool:
    return any(output_used(node, i) for i in range(1, len(node.meta.get("val") or ())))


@rules.every
def int8_from_float32(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if ctx.precision == "int8" and any(t.dtype != torch.float32 for t in node_tensors(node)):
        return Reject(ReasonCode.DTYPE, "int8 quantization starts from float32 tensors; this node has float16")
    return None


# ----------------------------------------------------------------------------- elementwise

rules.ops(
    "aten.abs.default", "aten.neg.default", "aten.exp.default", "aten.log.default", "aten.sqrt.default",
    "aten.rsqrt.default", "aten.ceil.default", "aten.floor.default", "aten.sin.default", "aten.cos.default",
    "aten.tanh.default", "aten.sigmoid.default", "aten.leaky_relu.default", "aten.maximum.default",
    "aten.minimum.default", "aten.div.Tensor",
)
rules.ops("aten.relu.default", "aten.hardtanh.default", "aten.clamp.default", "aten.mul.Tensor", precisions=BOTH)
rules.ops("aten.hardswish.default", keep_whole=True)
rules.ops("aten.gelu.default", values={"approximate": ("none",)}, dtypes=("float32",))
rules.ops("aten.add.Tensor", "aten.sub.Tensor", values={"alpha": (1,)}, precisions=BOTH)
rules.ops("aten.pow.Tensor_Scalar", values={"exponent": (2,)})


@rules.check("aten.sub.Tensor")
def int8_sub_operands(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if ctx.precision == "int8" and not isinstance(arguments(node)["self"], torch.fx.Node):
        return Reject(ReasonCode.QUANT, "int8 scalar-minus-tensor is not supported (quantize x - c, not c - x)")
    return None


# ----------------------------------------------------------------------------- conv / gemm

rules.ops("aten.convolution.default", constant=("weight", "bias"), ranks={"weight": (3, 4)}, precisions=BOTH)
rules.ops("aten.linear.default", constant=("weight", "bias"), keep_whole=True, precisions=BOTH)
rules.ops("aten.addmm.default", values={"beta": (1,), "alpha": (1,)}, constant=("self",), ranks={"self": (1, 1)},
          precisions=BOTH)
rules.ops("aten.mm.default", precisions=BOTH)
rules.ops("aten.bmm.default")


@rules.check("aten.convolution.default")
def int8_transposed_groups(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    if ctx.precision == "int8" and a["transposed"] and a["groups"] != 1:
        return Reject(ReasonCode.QUANT, "int8 transposed convolution needs groups == 1 (per-channel weights)")
    return None


@rules.check("aten.addmm.default", "aten.mm.default")
def transposed_weight(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if not _transposed_constant(ctx, arguments(node)["mat2"]):
        return Reject(ReasonCode.CONSTANT, f"{op_name(node).split('.')[1]} weight must be a transposed constant "
                                           "(an nn.Linear weight); use bmm for two activations")
    return None


# ----------------------------------------------------------------------------- normalization / activation

BATCH_NORM = "aten._native_batch_norm_legit_no_training.default"
rules.ops(BATCH_NORM, ranks={"input": (2, 4)}, constant=("weight", "bias", "running_mean", "running_var"),
          precisions=BOTH)
# XNNPACK's int8 flow has no standalone batch norm: it only exists folded into the convolution before it
rules.requires(BATCH_NORM, producers=("aten.convolution.default",), arg="input", precisions=("int8",),
               code=ReasonCode.QUANT, message="int8 batch norm must directly follow a convolution this backend takes "
                                              "(it is folded into it)")
rules.ops("aten.prelu.default", constant=("weight",), ranks={"self": (4, 4)}, keep_whole=True)
rules.ops("aten._softmax.default", values={"half_to_float": (False,)})


@rules.check(BATCH_NORM)
def batch_norm_statistics(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _extra_outputs_used(node):
        return Reject(ReasonCode.ATTR, "batch norm's saved mean/invstd outputs are used; XNNPACK computes the output only")
    return None


@rules.check("aten._softmax.default")
def softmax_last_dim(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    rank = _rank(a["self"])
    if a["dim"] not in (-1, rank - 1):
        return Reject(ReasonCode.ATTR, f"softmax over dim {a['dim']} of a rank-{rank} tensor: XNNPACK does the last dim only")
    return None


# ----------------------------------------------------------------------------- pooling / reduction

rules.ops("aten.mean.dim", values={"keepdim": (True,), "dtype": (None,)}, ranks={"self": (4, 4)}, precisions=BOTH)
rules.ops("aten.avg_pool2d.default", values={"ceil_mode": (False,)})
rules.ops("aten.max_pool2d_with_indices.default", precisions=BOTH)
rules.ops("aten.max_pool2d.default", keep_whole=True, precisions=BOTH)
rules.ops("aten.max.dim", values={"keepdim": (True,)}, ranks={"self": (4, 4)})
rules.ops("aten.upsample_bilinear2d.vec", ranks={"input": (4, 4)})


@rules.check("aten.mean.dim")
def mean_spatial(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    if sorted(d % 4 for d in (a["dim"] or [])) != [2, 3]:
        return Reject(ReasonCode.ATTR, f"mean over dims {a['dim']} of a rank-4 tensor: XNNPACK averages the two "
                                       "innermost dims only (global average pooling)")
    return None


@rules.check("aten.avg_pool2d.default")
def avg_pool_divisor(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    kernel = _pair(a["kernel_size"])
    if a["count_include_pad"] and any(p != 0 for p in _pair(a["padding"], 0)):
        return Reject(ReasonCode.ATTR, "avg pool counting zero padding in the average (count_include_pad) is not supported")
    if a["divisor_override"] is not None and a["divisor_override"] != kernel[0] * kernel[1]:
        return Reject(ReasonCode.ATTR, f"avg pool divisor_override={a['divisor_override']} is not supported")
    return None


@rules.check("aten.max_pool2d_with_indices.default", "aten.max_pool2d.default")
def max_pool_stride(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    kernel = _pair(a["kernel_size"])
    stride = _pair(a["stride"]) or kernel
    if stride[0] > kernel[0] or stride[1] > kernel[1]:
        return Reject(ReasonCode.ATTR, f"max pool stride {stride} larger than kernel {kernel}: XNNPACK needs stride <= kernel")
    return None


@rules.before  # before the limits: the int64 indices would otherwise be refused as a dtype, which says less
def values_only(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if op_name(node) in ("aten.max_pool2d_with_indices.default", "aten.max.dim") and _extra_outputs_used(node):
        return Reject(ReasonCode.ATTR, f"{op_name(node).split('.')[1]} indices are used: XNNPACK computes the values only")
    return None


@rules.check("aten.max.dim")
def max_spatial(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if arguments(node)["dim"] % 4 not in (2, 3):
        return Reject(ReasonCode.ATTR, f"max over dim {arguments(node)['dim']} of a rank-4 tensor: XNNPACK reduces "
                                       "dim 2 or 3 only")
    return None


@rules.check("aten.upsample_bilinear2d.vec")
def bilinear_integral_size(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    a = arguments(node)
    scales = a["scale_factors"]
    if scales and not a["align_corners"]:
        in_hw = _val(a["input"]).shape[2:]
        if any(float(n) * float(f) != int(float(n) * float(f)) for n, f in zip(in_hw, scales)):
            return Reject(ReasonCode.ATTR, f"bilinear scale {list(scales)} on size {list(in_hw)} gives a fractional "
                                           "size: PyTorch samples at 1/scale, XNNPACK at in/out size")
    return None


# ----------------------------------------------------------------------------- data movement

rules.ops("aten.cat.default", precisions=BOTH)
# the XNNPACK quantizer has no pad config, but ExecuTorch's partitioner takes a pad between a dequantize and a
# quantize (exact), so claiming it at int8 is what ExecuTorch does: without it, a TF-padded CNN (transformers'
# MobileNetV2) is cut into a partition per pad. quantize.py gives pad its input's quantization, so that a pad
# at a partition's edge is int8 too
rules.ops("aten.constant_pad_nd.default", precisions=BOTH)
# (squeeze.dim and squeeze.default never reach claim: core ATen spells every squeeze squeeze.dims)
rules.ops("aten.permute.default", "aten.squeeze.dims", "aten.unsqueeze.default", "aten.view.default",
          precisions=BOTH)
rules.ops("aten.slice.Tensor", values={"step": (1,)}, precisions=BOTH)
rules.ops("aten.clone.default", values={"memory_format": (None, torch.preserve_format, torch.contiguous_format)})
# known, never delegated: the reasons say why
rules.ops("aten._to_copy.default")


@rules.check("aten.cat.default")
def cat_two_or_more(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    tensors = arguments(node)["tensors"]
    if len(tensors) < 2:
        return Reject(ReasonCode.SHAPE, f"concatenation of {len(tensors)} tensor: XNNPACK needs at least 2")
    return None


@rules.check("aten.constant_pad_nd.default")
def no_cropping(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    pad = arguments(node)["pad"]
    if any(p < 0 for p in pad):
        return Reject(ReasonCode.ATTR, f"negative padding {list(pad)} (cropping) is not supported by XNNPACK")
    return None


@rules.check("aten.view.default")
def view_one_inferred(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    size = list(arguments(node)["size"])
    if sum(1 for d in size if d == -1) > 1:
        return Reject(ReasonCode.SHAPE, f"view {size} infers more than one dim")
    return None


@rules.check("aten._to_copy.default")
def to_copy(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    src, dst = _val(node.args[0]), _val(node)
    if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and src.dtype != dst.dtype:
        return Reject(ReasonCode.DTYPE, f"{dtype_name(src.dtype)} -> {dtype_name(dst.dtype)} conversion: "
                                        "the XNNPACK delegate does not convert dtypes")
    return Reject(ReasonCode.ATTR, "memory-format/device copies are not delegated")


#: what the core keeps whole for XNNPACK (BackendInfo.keep_ops): derived from the table
KEEP_OPS = rules.keep_ops


def supported_ops(precision: str = "fp32") -> list[str]:
    """Op names the rules may claim (for docs/tests); at int8 the subset with int8 kernels."""
    return [o for o in rules.ops_at(precision) if o != "aten._to_copy.default"]
