"""Support rules (the ``claim`` hook) of the Core ML backend: one core claim table, :data:`table`.

Three sources decide whether a node is claimed:

1. The table's rows: the ATen ops of :data:`ATEN_TO_MIL`, which this plugin has
   verified against eager PyTorch (each with the MIL ops its conversion can
   produce), with the argument values coremltools converts correctly; ops it
   converts wrongly, and random ops, are rows that always refuse, with the reason.
2. coremltools' own converter registry, for ops outside the table: with no
   converter the refusal says so (``op``), naming the op the way coremltools
   looks it up; with one it says the op is not verified here.
3. The host runtime: off macOS the numpy MIL interpreter runs the program, so
   an op whose conversion needs a MIL op the interpreter lacks is refused
   (``runtime``) instead of failing when the model runs.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk import ReasonCode
from delegate_sdk.support import (
    ClaimTable,
    NodeLimits,
    Reject,
    RuleContext,
    arguments,
    input_tensors,
    op_name,
    output_tensors,
)
from delegate_sdk_coreml import runtime

log = logging.getLogger(__name__)

MAX_RANK = 5

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

table = ClaimTable("Core ML", NodeLimits(dtypes=tuple(sorted(SUPPORTED_DTYPES)), max_rank=MAX_RANK,
                                        static_shapes=True, zero_size=False))

# --- rows whose arguments coremltools converts wrongly or not at all: only the values it gets right

table.ops("aten.add.Tensor", "aten.sub.Tensor", values={"alpha": (1,)})  # coremltools ignores alpha
table.ops("aten.gelu.default", values={"approximate": ("none",)})  # tanh is converted as exact gelu
table.ops("aten.elu.default", values={"scale": (1,), "input_scale": (1,)})  # selu/celu: the scales are ignored
table.ops("aten.max_pool2d_with_indices.default", values={"dilation": ([1, 1], [1])})  # MIL max_pool: no dilation
table.ops("aten.max_pool3d_with_indices.default", values={"dilation": ([1, 1, 1], [1])})
table.ops("aten.avg_pool2d.default", "aten.avg_pool3d.default", values={"divisor_override": (None,)})
table.ops("aten.linalg_vector_norm.default", values={"ord": (1, 2, math.inf, -math.inf)})
table.ops("aten.index_put.default", values={"accumulate": (False,)})
table.ops("aten.bitwise_and.Tensor", "aten.bitwise_not.default", dtypes=("bool",))  # converted as logical ops
# decomposed, pixel (un)shuffle goes through a rank-6 view Core ML cannot hold; whole, it is MIL pixel_shuffle
table.ops("aten.pixel_shuffle.default", "aten.pixel_unshuffle.default", keep_whole=True)
table.supported(*ATEN_TO_MIL)

KEEP_OPS = table.keep_ops

# --- rows that always refuse: ops whose conversion is wrong, or whose result is random

for _name in sorted(RANDOM_OPS):
    table.refuse(_name, code=ReasonCode.OP,
                 message=f"{_name} samples random numbers; Core ML cannot reproduce PyTorch's generator")
for _name, _why in KNOWN_WRONG.items():
    table.refuse(_name, code=ReasonCode.OP, message=_why)
# export drops dropout in eval mode, so a captured native_dropout is training-mode (random)
table.refuse("aten.native_dropout.default", code=ReasonCode.ATTR,
             message="dropout in training mode is random; coremltools converts it to identity")
table.refuse("aten._assert_tensor_metadata.default", code=ReasonCode.OP,
             message="a metadata assertion has no output to compute; it stays on the host")


# --- checks no row parameter expresses


_NEEDS_DIM = {
    "aten.argmax.default": "argmax/argmin without dim (over the flattened tensor) is converted along the last axis "
                           "by coremltools",
    "aten.argmin.default": "argmax/argmin without dim (over the flattened tensor) is converted along the last axis "
                           "by coremltools",
    "aten.linalg_vector_norm.default": "vector norm without dim (over the flattened tensor) is not verified for "
                                       "Core ML",
}


@table.check(*_NEEDS_DIM)
def _dim_given(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    if arguments(node)["dim"] is None:
        return Reject(ReasonCode.ATTR, _NEEDS_DIM[op_name(node)])
    return None


@table.check("aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default",
             "aten.adaptive_max_pool2d.default")
def _pool_indices_unused(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    # any reader of the indices, even an unused getitem: coremltools would have to produce them
    if any(user.target is operator.getitem and user.args[1] != 0 for user in node.users):
        return Reject(ReasonCode.ATTR, "max pool indices are used: Core ML max_pool does not return indices")
    return None


@table.check("aten.constant_pad_nd.default")
def _no_cropping(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    pads = arguments(node)["pad"]
    if any(int(p) < 0 for p in pads):
        return Reject(ReasonCode.ATTR, f"negative padding {list(pads)} (cropping) is not supported by Core ML pad")
    return None


@table.check("aten.where.self")
def _where_broadcasts(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    ts = input_tensors(node)
    if ts and all(t.dim() == 0 for t in ts):
        return Reject(ReasonCode.SHAPE, "where on rank-0 tensors only fails in coremltools (no broadcast shape)")
    return None


@table.check("aten.index.Tensor", "aten.index_put.default")
def _no_mask_indices(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    for i in arguments(node)["indices"]:
        if isinstance(i, torch.fx.Node):
            vals = output_tensors(i)
            if vals and vals[0].dtype == torch.bool:
                return Reject(ReasonCode.DYNAMIC, "boolean-mask indexing has a data-dependent shape")
    return None


# --- ops outside the table: why coremltools cannot take them


@functools.lru_cache(maxsize=1)
def _converter_registry() -> Any:
    from delegate_sdk_coreml._quiet import import_coremltools

    import_coremltools()
    from coremltools.converters.mil.frontend.torch.torch_op_registry import (
        _TORCH_OPS_REGISTRY,
    )

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


@table.before
def _unknown_op(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    """A better sentence than "not supported" for an op the table does not name (its rows answer the others)."""
    name = op_name(node)
    if table.spec(name) is not None:
        return None
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return Reject(ReasonCode.OP, f"{name} is not an ATen operator; coremltools converts ATen ops only")
    if not has_converter(node):
        return Reject(ReasonCode.OP, f"coremltools has no converter for {coremltools_kind(node)!r} ({name})")
    return Reject(ReasonCode.OP, f"coremltools converts {coremltools_kind(node)!r} but the Core ML plugin has not "
                                 f"verified {name} against eager PyTorch")


# --- the host runtime


def mil_ops_for(name: str) -> frozenset[str]:
    """MIL ops a claimed ATen op may need from the runtime (its own conversion plus casts and constants)."""
    return frozenset(ATEN_TO_MIL.get(name, ())) | {"const", "cast"}


@dataclass(frozen=True)
class HostRuntime:
    """What runs the compiled programs on this host, read once per claim."""

    name: str
    #: the MIL ops it executes; None when Core ML itself runs (it executes every op)
    ops: frozenset[str] | None
    #: MIL ops coremltools' graph passes may produce that it lacks (then nothing can be claimed safely)
    missing_pass_ops: tuple[str, ...]


@table.state
def _host_runtime(program: ExportedProgram, options: dict[str, Any]) -> HostRuntime:
    ops = runtime.host_runtime_ops()
    name = "Core ML" if runtime.host_runtime() == "coreml" else "numpy MIL interpreter"
    return HostRuntime(name, ops, tuple(sorted(PASS_PRODUCED_MIL - ops)) if ops is not None else ())


@table.every
def _host_runtime_runs_it(node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
    host: HostRuntime = ctx.state
    if host.ops is None:
        return None
    if host.missing_pass_ops:
        return Reject(ReasonCode.RUNTIME, f"the {host.name} on this host lacks MIL ops coremltools' graph passes "
                                          f"may produce: {', '.join(host.missing_pass_ops)}")
    name = op_name(node)
    lacking = sorted(mil_ops_for(name) - host.ops)
    if lacking:
        return Reject(ReasonCode.RUNTIME, f"{name} converts to MIL {', '.join(lacking)}, which the {host.name} on "
                                          "this host cannot execute (Core ML on macOS can)")
    return None
