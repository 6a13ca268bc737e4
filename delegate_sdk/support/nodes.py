"""Questions a support rule asks about one FX node: its op, arguments, tensors, and which inputs are constants.

"The tensors of a node" means the same thing everywhere in the SDK: its tensor inputs (flattened) and the
outputs it *produces for use*: all outputs of a single-output op, and of a multi-output op (max_pool2d with
indices, batch norm with its statistics, topk) those read through a ``getitem`` that has users. An unused
index or statistics output never causes a refusal.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind


def op_name(node: torch.fx.Node) -> str:
    """``"aten.add.Tensor"`` for an OpOverload target; ``"operator.getitem"`` for python operators."""
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return f"{t.namespace}.{t._opname}.{t._overloadname}"
    if getattr(t, "__module__", None) in ("_operator", "operator"):
        return f"operator.{t.__name__}"
    return getattr(t, "__qualname__", str(t))


def vals(x: Any) -> list[Any]:
    """Flatten a node's ``meta["val"]`` (tensor, tuple, list) to a list."""
    if isinstance(x, (list, tuple)):
        out: list[Any] = []
        for v in x:
            out.extend(vals(v))
        return out
    return [x]


def output_tensors(node: torch.fx.Node) -> list[torch.Tensor]:
    return [v for v in vals(node.meta.get("val")) if isinstance(v, torch.Tensor)]


def arguments(node: torch.fx.Node) -> dict[str, Any]:
    """The node's arguments by schema name (``{"input": x, "weight": w, "stride": [1, 1], ...}``): positional,
    then keyword, then the schema's default (``None`` where it has none)."""
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


def used_outputs(node: torch.fx.Node) -> list[torch.Tensor]:
    """The outputs the node produces for use (see the module docstring)."""
    v = node.meta.get("val")
    if not isinstance(v, (tuple, list)):
        return [v] if isinstance(v, torch.Tensor) else []
    used = {u.args[1] for u in node.users if u.target is operator.getitem and u.users}
    return [t for i, t in enumerate(v) if i in used and isinstance(t, torch.Tensor)]


def output_used(node: torch.fx.Node, index: int) -> bool:
    """True when output ``index`` of a multi-output node is read (by a getitem that has users)."""
    return any(u.target is operator.getitem and u.args[1] == index and u.users for u in node.users)


def node_tensors(node: torch.fx.Node) -> list[torch.Tensor]:
    """Tensor inputs and used outputs: what every-node limits (dtype, rank, shape) are checked on."""
    return [*input_tensors(node), *used_outputs(node)]


def input_nodes(node: torch.fx.Node) -> list[torch.fx.Node]:
    return list(node.all_input_nodes)


def input_tensors(node: torch.fx.Node) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for n in node.all_input_nodes:
        out.extend(output_tensors(n))
    return out


def dtypes_of(node: torch.fx.Node) -> set[str]:
    """Names (``"float32"``) of the dtypes of a node's tensor inputs and outputs."""
    return {dtype_name(t.dtype) for t in (*input_tensors(node), *output_tensors(node))}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def max_rank(node: torch.fx.Node) -> int:
    ts = (*input_tensors(node), *output_tensors(node))
    return max((t.dim() for t in ts), default=0)


def has_dynamic_shape(node: torch.fx.Node) -> bool:
    return any(not isinstance(d, int) for t in (*input_tensors(node), *output_tensors(node)) for d in t.shape)


def has_zero_size(node: torch.fx.Node) -> bool:
    return any(isinstance(d, int) and d == 0 for t in (*input_tensors(node), *output_tensors(node)) for d in t.shape)


def is_constant(program: ExportedProgram, arg: Any) -> bool:
    if not isinstance(arg, torch.fx.Node):
        return False
    if arg.op == "get_attr":
        return True
    if arg.op != "placeholder":
        return False
    for spec in program.graph_signature.input_specs:
        if spec.arg.name == arg.name:
            return spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
    return False


def constant_value(program: ExportedProgram, arg: Any) -> torch.Tensor | None:
    if not isinstance(arg, torch.fx.Node) or arg.op != "placeholder":
        return None
    for spec in program.graph_signature.input_specs:
        if spec.arg.name == arg.name and spec.target is not None:
            if spec.kind == InputKind.CONSTANT_TENSOR:
                return program.constants.get(spec.target)
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
                return program.state_dict.get(spec.target, program.constants.get(spec.target))
    return None


PYTHON_SCALAR_OPS = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
                     operator.mod, operator.neg, operator.eq, operator.ne, operator.lt, operator.le,
                     operator.gt, operator.ge, operator.pow, operator.and_, operator.or_}
