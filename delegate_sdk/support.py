"""Helpers for writing a plugin's support rules (the ``claim`` hook).

A plugin describes what it supports as one rule per op plus rules that apply
to every node; each rule returns ``None`` (fine) or a :class:`Reject` with a
reason code and a sentence. :meth:`SupportRules.claim` turns them into
:class:`~delegate_sdk.types.Claims` that name every candidate node once::

    rules = SupportRules()

    @rules.every
    def no_float64(node, ctx):
        if "float64" in dtypes_of(node):
            return Reject(ReasonCode.DTYPE, "float64 is not supported")

    @rules.op("aten.convolution.default")
    def conv(node, ctx):
        if not ctx.is_constant(node.args[1]):
            return Reject(ReasonCode.CONSTANT, "conv weight must be a constant")
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from delegate_sdk.types import Claims, ReasonCode, Refusal


@dataclass(frozen=True)
class Reject:
    code: ReasonCode
    message: str


@dataclass
class RuleContext:
    """What a rule may look at besides the node itself."""

    program: ExportedProgram
    options: dict[str, Any]

    @property
    def precision(self) -> str:
        return str(self.options.get("precision", ""))

    def is_constant(self, arg: Any) -> bool:
        """True if ``arg`` is a node holding a parameter, buffer or lifted constant."""
        return is_constant(self.program, arg)

    def constant_value(self, arg: Any) -> torch.Tensor | None:
        return constant_value(self.program, arg)


Rule = Callable[[torch.fx.Node, RuleContext], "Reject | None"]


class SupportRules:
    """A table of per-op rules plus rules for every node."""

    def __init__(self) -> None:
        self._ops: dict[str, list[Rule]] = {}
        self._every: list[Rule] = []

    def op(self, *names: str) -> Callable[[Rule], Rule]:
        """Register a rule for the given ops (``"aten.add.Tensor"``); an op with no rule is refused."""

        def deco(fn: Rule) -> Rule:
            for n in names:
                self._ops.setdefault(n, []).append(fn)
            return fn

        return deco

    def supported(self, *names: str) -> None:
        """Declare ops supported with no op-specific condition."""
        for n in names:
            self._ops.setdefault(n, [])

    def every(self, fn: Rule) -> Rule:
        """Register a rule run on every node before its op rules (dtype, rank, zero-size ...)."""
        self._every.append(fn)
        return fn

    @property
    def ops(self) -> list[str]:
        return sorted(self._ops)

    def check(self, node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
        name = op_name(node)
        if name not in self._ops:
            return Reject(ReasonCode.OP, f"{name} is not supported by this backend")
        for rule in (*self._every, *self._ops[name]):
            r = rule(node, ctx)
            if r is not None:
                return r
        return None

    def claim(self, program: ExportedProgram, nodes: Iterable[torch.fx.Node], options: dict[str, Any],
              extra: Rule | None = None) -> Claims:
        ctx = RuleContext(program, options)
        claimed: list[str] = []
        refused: list[Refusal] = []
        for node in nodes:
            r = self.check(node, ctx)
            if r is None and extra is not None:
                r = extra(node, ctx)
            if r is None:
                claimed.append(node.name)
            else:
                refused.append(Refusal(node.name, r.code, r.message))
        return Claims(tuple(claimed), tuple(refused))


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
