"""Support rules (the ``claim`` hook) of the Core ML backend.

Three sources decide whether a node is claimed:

1. coremltools' own converter registry: an ATen op with no converter is refused
   (``op``), named the way coremltools looks it up.
2. The table :data:`ATEN_TO_MIL` of ATen ops this plugin has verified against
   eager PyTorch, each with the MIL ops its conversion can produce, plus rules
   for arguments coremltools converts wrongly or not at all (``attr``).
3. The host runtime: off macOS the numpy MIL interpreter runs the program, so
   an op whose conversion needs a MIL op the interpreter lacks is refused
   (``runtime``) instead of failing when the model runs.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections.abc import Iterable
from typing import Any

import torch

from delegate_sdk import Claims, ReasonCode
from delegate_sdk.support import (
    ClaimTable,
    NodeLimits,
    Reject,
    RuleContext,
    input_tensors,
    op_name,
    output_tensors,
)

log = logging.getLogger(__name__)

MAX_RANK = 5

#: ops the core should keep whole: decomposed, pixel (un)shuffle goes through a rank-6 view Core ML cannot hold,
#: while coremltools converts the whole op to MIL pixel_shuffle / pixel_unshuffle
KEEP_OPS = ("aten.pixel_shuffle.default", "aten.pixel_unshuffle.default")
SUPPORTED_DTYPES = frozenset({"float32", "float16", "int32", "int64", "bool"})

_CMP = ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")
_NEG_INDEX = ("add", "greater_equal", "select")  # coremltools guards negative indices with these

#: ATen op -> MIL ops its coremltools conversion may produce (besides const and cast, which any op may get).
#: Every entry is verified numerically against eager PyTorch by tests/test_coreml_ops.py, which also checks
#: that each compiled program uses only MIL ops listed here for its nodes.
ATEN_TO_MIL: dict[str, tuple[str, ...]] = {
    # element-wise arithmetic
    "aten.add.Tensor": ("add", "logical_or"),
    "aten.sub.Tensor": ("sub",),
    "aten.mul.Tensor": ("mul", "logical_and"),
    "aten.mul.Scalar": ("mul", "logical_and"),
    "aten.div.Tensor": ("real_div",),
    "aten.div.Tensor_mode": ("floor_div", "real_div", "floor", "mul", "sign"),
    "aten.remainder.Tensor": ("floor_div", "mul", "sub", "mod"),
    "aten.remainder.Scalar": ("floor_div", "mul", "sub", "mod"),
    "aten.neg.default": ("mul",),
    "aten.abs.default": ("abs",),
    "aten.sign.default": ("sign",),
    "aten.pow.Tensor_Scalar": ("pow", "mul", "square", "sqrt"),
    "aten.pow.Tensor_Tensor": ("pow",),
    "aten.pow.Scalar": ("pow",),
    "aten.maximum.default": ("maximum",),
    "aten.minimum.default": ("minimum",),
    "aten.clamp.default": ("clip", "maximum", "minimum"),
    "aten.clamp.Tensor": ("maximum", "minimum"),
    "aten.floor.default": ("floor",),
    "aten.ceil.default": ("ceil",),
    "aten.round.default": ("round",),
    # transcendental
    "aten.exp.default": ("exp",),
    "aten.exp2.default": ("exp2",),
    "aten.expm1.default": ("exp", "sub"),
    "aten.log.default": ("log",),
    "aten.log2.default": ("log", "mul"),
    "aten.log10.default": ("log", "mul"),
    "aten.log1p.default": ("log", "add"),
    "aten.sqrt.default": ("sqrt",),
    "aten.rsqrt.default": ("rsqrt",),
    "aten.sin.default": ("sin",),
    "aten.cos.default": ("cos",),
    "aten.tan.default": ("tan",),
    "aten.asin.default": ("asin",),
    "aten.acos.default": ("acos",),
    "aten.atan.default": ("atan",),
    "aten.sinh.default": ("sinh",),
    "aten.cosh.default": ("cosh",),
    "aten.tanh.default": ("tanh",),
    "aten.atanh.default": ("atanh",),
    "aten.atan2.default": ("add", "atan", "equal", "greater", "greater_equal", "less", "logical_and", "logical_not",
                           "mul", "real_div", "select", "sign", "sub"),
    "aten.erf.default": ("erf",),
    # activations
    "aten.relu.default": ("relu",),
    "aten.sigmoid.default": ("sigmoid",),
    "aten.gelu.default": ("gelu",),
    "aten.hardtanh.default": ("clip", "relu6"),
    "aten.leaky_relu.default": ("leaky_relu",),
    "aten.elu.default": ("elu",),
    "aten._softmax.default": ("softmax",),
    "aten._log_softmax.default": ("softmax", "log", "sub", "reduce_log_sum_exp"),
    # comparison and logic
    "aten.eq.Tensor": ("equal",), "aten.eq.Scalar": ("equal",),
    "aten.ne.Tensor": ("not_equal",), "aten.ne.Scalar": ("not_equal",),
    "aten.lt.Tensor": ("less",), "aten.lt.Scalar": ("less",),
    "aten.le.Tensor": ("less_equal",), "aten.le.Scalar": ("less_equal",),
    "aten.gt.Tensor": ("greater",), "aten.gt.Scalar": ("greater",),
    "aten.ge.Tensor": ("greater_equal",), "aten.ge.Scalar": ("greater_equal",),
    "aten.where.self": ("select",),
    "aten.logical_and.default": ("logical_and",),
    "aten.logical_or.default": ("logical_or",),
    "aten.logical_xor.default": ("logical_xor",),
    "aten.logical_not.default": ("logical_not",),
    "aten.bitwise_not.default": ("logical_not",),
    "aten.bitwise_and.Tensor": ("logical_and",),
    "aten.isnan.default": ("not_equal",),
    # linear algebra, convolution, normalization
    "aten.convolution.default": ("conv", "conv_transpose", "crop", "expand_dims", "squeeze"),
    "aten.addmm.default": ("linear", "matmul", "add", "mul"),
    "aten.mm.default": ("matmul", "linear"),
    "aten.bmm.default": ("matmul",),
    "aten._native_batch_norm_legit_no_training.default": ("batch_norm", "expand_dims", "squeeze"),
    "aten._native_batch_norm_legit.no_stats": ("add", "mul", "real_div", "reduce_mean", "reshape", "sqrt", "square",
                                                "sub", "instance_norm"),
    "aten.native_layer_norm.default": ("layer_norm", "add", "mul", "real_div", "reduce_mean", "sqrt", "square",
                                       "sub"),
    "aten.native_group_norm.default": ("add", "mul", "real_div", "reduce_mean", "reshape", "sqrt", "square", "sub",
                                       "instance_norm"),
    # pooling and resampling
    "aten.max_pool2d_with_indices.default": ("max_pool",),
    "aten.max_pool3d_with_indices.default": ("max_pool",),
    "aten.avg_pool2d.default": ("avg_pool",),
    "aten.avg_pool3d.default": ("avg_pool",),
    "aten._adaptive_avg_pool2d.default": ("avg_pool", "reduce_mean", "concat", "reshape", "slice_by_index"),
    "aten.adaptive_max_pool2d.default": ("max_pool", "reduce_max", "concat", "reshape", "slice_by_index"),
    "aten.upsample_nearest2d.vec": ("upsample_nearest_neighbor", "resize_nearest_neighbor"),
    "aten.upsample_bilinear2d.vec": ("upsample_bilinear", "resize_bilinear"),
    # reductions
    "aten.mean.dim": ("reduce_mean",),
    "aten.mean.default": ("reduce_mean",),
    "aten.sum.dim_IntList": ("reduce_sum",),
    "aten.amax.default": ("reduce_max",),
    "aten.amin.default": ("reduce_min",),
    "aten.max.dim": ("reduce_max", "reduce_argmax"),
    "aten.min.dim": ("reduce_min", "reduce_argmin"),
    "aten.argmax.default": ("reduce_argmax",),
    "aten.argmin.default": ("reduce_argmin",),
    "aten.var.correction": ("mul", "reduce_mean", "square", "sub", "real_div"),
    "aten.any.dim": ("reduce_max",),
    "aten.any.dims": ("reduce_max",),
    "aten.any.default": ("reduce_max",),
    "aten.cumsum.default": ("cumsum",),
    "aten.cumprod.default": ("gather", "scatter", "mul", "slice_by_index", "concat"),
    "aten.linalg_vector_norm.default": ("reduce_l2_norm", "reduce_l1_norm", "reduce_max", "reduce_min", "reduce_sum",
                                        "abs", "pow"),
    # layout
    "aten.view.default": ("reshape",),
    "aten.permute.default": ("transpose",),
    "aten.expand.default": ("expand_dims", "tile", "reshape"),
    "aten.cat.default": ("concat",),
    "aten.slice.Tensor": ("slice_by_index",),
    "aten.select.int": ("slice_by_index", "squeeze"),
    "aten.squeeze.dims": ("squeeze",),
    "aten.unsqueeze.default": ("expand_dims",),
    "aten.split_with_sizes.default": ("split", "slice_by_index"),
    "aten.clone.default": ("identity",),
    "aten._to_copy.default": ("identity",),
    "aten.flip.default": ("reverse",),
    "aten.repeat.default": ("tile", "reshape"),
    "aten.constant_pad_nd.default": ("pad",),
    "aten.pixel_shuffle.default": ("pixel_shuffle", "reshape", "transpose"),
    "aten.pixel_unshuffle.default": ("pixel_unshuffle", "reshape", "transpose"),
    # indexing
    "aten.index_select.default": ("gather",) + _NEG_INDEX,
    "aten.index.Tensor": ("gather", "gather_nd", "stack", "transpose", "concat", "expand_dims", "reshape",
                          *_NEG_INDEX),
    "aten.embedding.default": ("gather",) + _NEG_INDEX,
    "aten.gather.default": ("gather_along_axis",),
    "aten.scatter.src": ("scatter_along_axis",),
    "aten.scatter.value": ("scatter_along_axis", "fill"),
    "aten.slice_scatter.default": ("scatter", "reshape", "slice_update", "scatter_nd"),
    "aten.index_put.default": ("scatter_nd", "expand_dims", "stack", "concat", "reshape", *_NEG_INDEX),
    "aten.topk.default": ("topk",),
    "aten.sort.default": ("argsort", "gather_along_axis"),
    # constants
    "aten.full.default": ("fill",),
    "aten.full_like.default": ("fill_like",),
    "aten.scalar_tensor.default": (),
    "aten.arange.start_step": ("range_1d",),
}

#: MIL ops coremltools' graph passes may create from several ATen ops together (fusions, canonicalizations):
#: the host runtime must implement all of them, whatever is claimed.
PASS_PRODUCED_MIL = frozenset({
    "silu", "gelu", "layer_norm", "instance_norm", "batch_norm", "prelu", "leaky_relu", "linear", "conv",
    "conv_transpose", "matmul", "pixel_shuffle", "pixel_unshuffle", "gather", "gather_nd", "reduce_mean", "pad",
    "range_1d", "fill", "shape", "slice_by_size", "select", "identity", "squeeze", "expand_dims", "floor_div",
    "relu", "sqrt", "pow", "cast", "clamped_relu", "reshape", "transpose", "concat", "mul", "add", "sub",
    "real_div", "square", "tanh", "sin", "cos", "log", "logical_not", "greater_equal", "softmax", "less",
    "reduce_argmax", "sigmoid", "const",
})

#: random sampling cannot reproduce eager PyTorch's generator (and coremltools drops dropout's randomness)
RANDOM_OPS = frozenset({
    "aten.rand.default", "aten.randn.default", "aten.rand_like.default", "aten.randn_like.default",
    "aten.randint.default", "aten.randint.low", "aten.randint_like.default", "aten.bernoulli.default",
    "aten.bernoulli.p", "aten.normal.Tensor_Tensor", "aten.normal.float_Tensor", "aten.normal.Tensor_float",
    "aten.uniform.default", "aten.multinomial.default", "aten.randperm.default", "aten.rrelu_with_noise.default",
})

#: ops coremltools has a converter for that produce wrong results or crash (found by conformance runs)
KNOWN_WRONG: dict[str, str] = {
    "aten.reciprocal.default": "coremltools converts reciprocal to MIL inverse with epsilon=1e-4, i.e. "
                               "1/(x+1e-4): wrong for small |x| and at 0",
    "aten.diagonal.default": "coremltools converts diagonal to band_part, which keeps the full matrix shape",
    "aten.diagonal_copy.default": "coremltools converts diagonal to band_part, which keeps the full matrix shape",
    "aten.acosh.default": "coremltools' acosh converter calls a MIL op that does not exist (conversion fails)",
    "aten.asinh.default": "coremltools' asinh converter calls a MIL op that does not exist (conversion fails)",
}

rules = ClaimTable("Core ML", NodeLimits(dtypes=tuple(sorted(SUPPORTED_DTYPES)), max_rank=MAX_RANK,
                                        static_shapes=True, zero_size=False))


# --- per-op rules (conversions coremltools gets wrong or fails on)


def _arg(node: torch.fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


@rules.op("aten.add.Tensor", "aten.sub.Tensor")
def _alpha(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    alpha = _arg(node, 2, "alpha", 1)
    if alpha != 1:
        sign = "+" if node.target == torch.ops.aten.add.Tensor else "-"
        return Reject(ReasonCode.ATTR, f"alpha={alpha}: coremltools ignores alpha (computes x {sign} y)")
    return None


@rules.op("aten.argmax.default", "aten.argmin.default")
def _arg_dim(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _arg(node, 1, "dim") is None:
        return Reject(ReasonCode.ATTR, "argmax/argmin without dim (over the flattened tensor) is converted along the "
                                       "last axis by coremltools")
    return None


@rules.op("aten.gelu.default")
def _gelu(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    approx = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
    if approx != "none":
        return Reject(ReasonCode.ATTR, f"gelu approximate={approx!r} is converted as exact gelu by coremltools")
    return None


@rules.op("aten.elu.default")
def _elu(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    scale, input_scale = _arg(node, 2, "scale", 1), _arg(node, 3, "input_scale", 1)
    if scale != 1 or input_scale != 1:
        return Reject(ReasonCode.ATTR, f"elu with scale={scale}, input_scale={input_scale} (selu/celu): coremltools "
                                       "ignores the scales")
    return None


@rules.op("aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default",
          "aten.adaptive_max_pool2d.default")
def _max_pool(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    dilation = _arg(node, 4, "dilation", [1]) if "adaptive" not in str(node.target) else [1]
    if any(int(d) != 1 for d in (dilation or [1])):
        return Reject(ReasonCode.ATTR, f"max pool dilation {list(dilation)}: Core ML max_pool has no dilation")
    for user in node.users:
        if user.target is operator.getitem and user.args[1] != 0:
            return Reject(ReasonCode.ATTR, "max pool indices are used: Core ML max_pool does not return indices")
    return None


@rules.op("aten.bitwise_and.Tensor", "aten.bitwise_not.default")
def _bitwise(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if any(t.dtype != torch.bool for t in input_tensors(node)):
        return Reject(ReasonCode.DTYPE, "coremltools converts bitwise ops on bool tensors only (as logical ops)")
    return None


@rules.op("aten.avg_pool2d.default", "aten.avg_pool3d.default")
def _avg_pool(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if _arg(node, 6, "divisor_override") is not None:
        return Reject(ReasonCode.ATTR, "avg pool divisor_override is not supported by coremltools")
    return None


@rules.op("aten.constant_pad_nd.default")
def _pad(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    pads = _arg(node, 1, "pad", [])
    if any(int(p) < 0 for p in pads):
        return Reject(ReasonCode.ATTR, f"negative padding {list(pads)} (cropping) is not supported by Core ML pad")
    return None


@rules.op("aten.where.self")
def _where(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    ts = input_tensors(node)
    if ts and all(t.dim() == 0 for t in ts):
        return Reject(ReasonCode.SHAPE, "where on rank-0 tensors only fails in coremltools (no broadcast shape)")
    return None


@rules.op("aten.linalg_vector_norm.default")
def _norm(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    ord_ = _arg(node, 1, "ord", 2)
    if ord_ not in (1, 2, math.inf, -math.inf) or _arg(node, 2, "dim") is None:
        return Reject(ReasonCode.ATTR, f"vector norm ord={ord_} or without dim is not verified for Core ML")
    return None


@rules.op("aten.index.Tensor", "aten.index_put.default")
def _index(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    indices = _arg(node, 1, "indices", [])
    for i in indices:
        if isinstance(i, torch.fx.Node):
            vals = output_tensors(i)
            if vals and vals[0].dtype == torch.bool:
                return Reject(ReasonCode.DYNAMIC, "boolean-mask indexing has a data-dependent shape")
    if "index_put" in str(node.target) and _arg(node, 3, "accumulate", False):
        return Reject(ReasonCode.ATTR, "index_put with accumulate=True is not verified for Core ML")
    return None


for _name in ATEN_TO_MIL:
    rules.supported(_name)


# --- claim


@functools.lru_cache(maxsize=1)
def _converter_registry() -> Any:
    from delegate_sdk_coreml._quiet import import_coremltools

    import_coremltools()
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    return _TORCH_OPS_REGISTRY


def coremltools_kind(node: torch.fx.Node) -> str:
    """The name coremltools looks the node's op up by (``aten::add.Tensor`` -> ``add``)."""
    _converter_registry()
    from coremltools.converters.mil.frontend.torch.utils import sanitize_op_kind

    target = node.target
    try:
        name = target.name()  # type: ignore[union-attr]
    except AttributeError:
        name = getattr(target, "__name__", str(target))
    return sanitize_op_kind(name)


def has_converter(node: torch.fx.Node) -> bool:
    return _converter_registry().get_func(coremltools_kind(node)) is not None


def mil_ops_for(name: str) -> frozenset[str]:
    """MIL ops a claimed ATen op may need from the runtime (its own conversion plus casts and constants)."""
    return frozenset(ATEN_TO_MIL.get(name, ())) | {"const", "cast"}


def claim(program: torch.export.ExportedProgram, nodes: Iterable[torch.fx.Node], options: dict[str, Any],
          runtime_ops: frozenset[str] | None, runtime_name: str) -> Claims:
    """Claim ``nodes``; ``runtime_ops`` is the set of MIL ops the host runtime executes (None: all of them)."""
    missing_pass_ops = sorted(PASS_PRODUCED_MIL - runtime_ops) if runtime_ops is not None else []

    def host_runtime(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
        if runtime_ops is None:
            return None
        name = op_name(node)
        if missing_pass_ops:
            return Reject(ReasonCode.RUNTIME, f"the {runtime_name} on this host lacks MIL ops coremltools' graph "
                                              f"passes may produce: {', '.join(missing_pass_ops)}")
        lacking = sorted(mil_ops_for(name) - runtime_ops)
        if lacking:
            return Reject(ReasonCode.RUNTIME, f"{name} converts to MIL {', '.join(lacking)}, which the "
                                              f"{runtime_name} on this host cannot execute (Core ML on macOS can)")
        return None

    return rules.claim(program, nodes, options, extra=host_runtime)


@rules.before
def _before_rules(node: torch.fx.Node, ctx: RuleContext | None = None) -> Reject | None:
    """Refusals that do not depend on arguments: random ops, ops coremltools lacks, ops not verified here."""
    name = op_name(node)
    if name in RANDOM_OPS:
        return Reject(ReasonCode.OP, f"{name} samples random numbers; Core ML cannot reproduce PyTorch's generator")
    if name == "aten.native_dropout.default":
        # export drops dropout in eval mode, so a captured native_dropout is training-mode (random)
        return Reject(ReasonCode.ATTR, "dropout in training mode is random; coremltools converts it to identity")
    if name == "aten._assert_tensor_metadata.default":
        return Reject(ReasonCode.OP, "a metadata assertion has no output to compute; it stays on the host")
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return Reject(ReasonCode.OP, f"{name} is not an ATen operator; coremltools converts ATen ops only")
    if name in KNOWN_WRONG:
        return Reject(ReasonCode.OP, KNOWN_WRONG[name])
    if not has_converter(node):
        return Reject(ReasonCode.OP, f"coremltools has no converter for {coremltools_kind(node)!r} ({name})")
    if name not in ATEN_TO_MIL:
        return Reject(ReasonCode.OP, f"coremltools converts {coremltools_kind(node)!r} but the Core ML plugin has not "
                                     f"verified {name} against eager PyTorch")
    return None
