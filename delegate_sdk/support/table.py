"""The declarative claim engine: a plugin's support as a table of ops, answered by one ``claim`` loop.

A plugin declares what its backend takes::

    table = ClaimTable("ACME NPU", NodeLimits(dtypes=("float32",), max_rank=4), precisions=("fp32", "int8"))
    table.ops("aten.relu.default", "aten.sigmoid.default")
    table.ops("aten.add.Tensor", values={"alpha": (1,)})
    table.ops("aten.linear.default", constant=("weight", "bias"), keep_whole=True)
    table.ops("aten.tanh.default", precisions=("fp32",))         # no int8 kernel

    @table.check("aten.convolution.default")
    def kernel_limit(node, ctx):                                   # what no parameter can say
        if max(ctx.shape(arguments(node)["weight"])[2:]) > 8:
            return Reject(ReasonCode.SHAPE, "conv kernels above 8x8 are not supported")

and its ``claim`` hook is ``return table.claim(program, nodes, options)``. Every candidate gets exactly one
answer, and every refusal a reason code and a sentence.

How one node is judged (the first refusal wins, so the order is part of the contract):

1. ``before`` rules (the backend cannot read this node at all: a random op, an op its converter lacks);
2. the op must be in the table (else ``ReasonCode.OP``), except that with ``claim_folded_constants`` a node
   computed from constants only is taken whatever its op (the compiler folds it);
3. the :class:`NodeLimits` every node obeys (dtypes, rank, static shapes, empty tensors, 0-d results), checked
   on the node's tensor inputs and used outputs (:func:`delegate_sdk.support.nodes.node_tensors`);
4. ``every`` rules, functions for what every node must satisfy beyond the limits;
5. the op's row: precision, dtypes, constant arguments, argument values and ranks;
6. the op's ``check`` functions.

Then, over all candidates together: ``requires`` (a node is taken only with the producer it fuses into) and
``group`` (a chain of ops taken together or not at all) refuse, with a reason naming the other node, what
the compiler could not honour alone. ``state`` gives the rules per-claim derived data (a resolved target,
a table of constants) as ``ctx.state``, so that no plugin needs a loop of its own.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk.support.nodes import (
    arguments,
    constant_value,
    dtype_name,
    input_tensors,
    is_constant,
    node_tensors,
    op_name,
    used_outputs,
)
from delegate_sdk.types import Claims, ReasonCode, Refusal, resolve_precision


@dataclass(frozen=True)
class Reject:
    """A refusal: a reason code and a sentence the user reads in ``delegate-sdk inspect``."""

    code: ReasonCode
    message: str


@dataclass
class RuleContext:
    """What a rule may look at besides the node itself."""

    program: ExportedProgram
    options: dict[str, Any]
    backend: str = ""
    #: what the table's ``state`` function returned for this claim (``None`` without one)
    state: Any = None
    _folded: set[str] | None = field(default=None, repr=False)

    @property
    def precision(self) -> str:
        return str(self.options.get("precision", ""))

    def is_constant(self, arg: Any) -> bool:
        """True if ``arg`` is a node holding a parameter, buffer or lifted constant."""
        return is_constant(self.program, arg)

    def constant_value(self, arg: Any) -> torch.Tensor | None:
        return constant_value(self.program, arg)

    def is_folded_constant(self, arg: Any) -> bool:
        """True if ``arg`` is a constant or computed, deterministically, from constants only (a transposed
        weight, an ``arange``): a compiler can evaluate it at compile time."""
        return isinstance(arg, torch.fx.Node) and arg.name in self.folded_constants()

    def folded_constants(self) -> set[str]:
        if self._folded is None:
            self._folded = folded_constants(self.program)
        return self._folded

    @staticmethod
    def shape(arg: Any) -> tuple[int, ...]:
        """The static shape of a node's (first) tensor value; ``()`` for anything else."""
        v = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
        if isinstance(v, (tuple, list)):
            v = v[0] if v else None
        return tuple(v.shape) if isinstance(v, torch.Tensor) else ()


Rule = Callable[[torch.fx.Node, RuleContext], "Reject | None"]


@dataclass(frozen=True)
class NodeLimits:
    """What every node must satisfy, as parameters: each broken limit is a refusal with a standard reason.

    ``dtypes``: the tensor dtypes the backend handles (``None``: any); ``dtype_reasons`` replaces the
    standard sentence for one dtype (``{"float64": "..."}``). ``max_rank``: the highest tensor rank;
    ``rank_of_constants=False`` exempts weights from it. ``static_shapes``: refuse symbolic sizes.
    ``zero_size``: allow empty tensors. ``scalar_results``: allow 0-d outputs. ``same_input_dtypes``:
    refuse a node whose tensor inputs mix dtypes.
    """

    dtypes: tuple[str, ...] | None = None
    dtype_reasons: Mapping[str, str] = field(default_factory=dict)
    max_rank: int | None = None
    rank_of_constants: bool = True
    static_shapes: bool = True
    zero_size: bool = False
    scalar_results: bool = True
    same_input_dtypes: bool = False


@dataclass
class OpSpec:
    """One row of the table: an op and the conditions the backend takes it under."""

    name: str
    precisions: tuple[str, ...] | None = None
    precision_reasons: Mapping[str, str] = field(default_factory=dict)
    dtypes: tuple[str, ...] | None = None
    max_rank: int | None = None
    constant: tuple[str, ...] = ()
    values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    ranks: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    keep_whole: bool = False
    dynamic: bool | None = None
    refusal: Reject | None = None
    checks: list[Rule] = field(default_factory=list)


@dataclass(frozen=True)
class _Requires:
    op: str
    producers: tuple[str, ...]
    arg: str
    code: ReasonCode
    message: str
    precisions: tuple[str, ...] | None
    sole_user: bool


@dataclass(frozen=True)
class _Group:
    name: str
    ops: tuple[str, ...]
    precisions: tuple[str, ...] | None


class ClaimTable:
    """A backend's supported ops as a table, plus the rules no table can say (see the module docstring)."""

    def __init__(self, backend: str = "this backend", limits: NodeLimits | None = None, *,
                 precisions: tuple[str, ...] | None = None, claim_folded_constants: bool = False) -> None:
        self.backend = backend
        self.limits = limits or NodeLimits(static_shapes=False, zero_size=True)
        #: the precisions an op row is taken at unless it says otherwise (``None``: all)
        self.precisions = precisions
        self.claim_folded_constants = claim_folded_constants
        self._specs: dict[str, OpSpec] = {}
        self._before: list[Rule] = []
        self._every: list[Rule] = []
        self._requires: list[_Requires] = []
        self._groups: list[_Group] = []
        self._state: Callable[[ExportedProgram, dict[str, Any]], Any] | None = None

    # ------------------------------------------------------------------ declaring

    def ops(self, *names: str, precisions: tuple[str, ...] | None = None,
            precision_reasons: Mapping[str, str] | None = None, dtypes: tuple[str, ...] | None = None,
            max_rank: int | None = None, constant: tuple[str, ...] = (),
            values: Mapping[str, tuple[Any, ...]] | None = None, ranks: Mapping[str, tuple[int, int]] | None = None,
            keep_whole: bool = False, dynamic: bool | None = None) -> None:
        """Declare ops the backend takes, with the conditions shared by all of ``names``.

        ``precisions``: only at these (default: the table's); ``precision_reasons``: why not at one of the
        others (``{"int8": "no quantized kernel"}``). ``dtypes`` / ``max_rank`` / ``dynamic``: override the
        table's limits for these ops. ``constant``: argument names (schema names, ``"weight"``) that must
        be weights or buffers. ``values``: argument name -> the values allowed (``{"alpha": (1,)}``).
        ``ranks``: argument name (or ``"out"``) -> (lowest, highest) rank. ``keep_whole``: the core keeps
        the op in the graph instead of decomposing it (it appears in :attr:`keep_ops`).
        """
        for name in names:
            if name in self._specs:
                raise ValueError(f"{name} is declared twice in {self.backend}'s claim table")
            self._specs[name] = OpSpec(name, precisions, dict(precision_reasons or {}), dtypes, max_rank,
                                       tuple(constant), dict(values or {}), dict(ranks or {}), keep_whole, dynamic)

    def refuse(self, *names: str, code: ReasonCode, message: str) -> None:
        """Ops the backend knows and always refuses with this reason (``"erf is not lowered yet"``): better
        than the generic "not supported"."""
        for name in names:
            self.ops(name)
            self._specs[name].refusal = Reject(code, message)

    def check(self, *names: str) -> Callable[[Rule], Rule]:
        """Decorator: a condition for declared ops that no parameter expresses; returns a Reject or None."""

        def deco(fn: Rule) -> Rule:
            for name in names:
                if name not in self._specs:
                    raise ValueError(f"{fn.__name__}: {name} is not declared in {self.backend}'s claim table; "
                                     "declare it with table.ops() first")
                self._specs[name].checks.append(fn)
            return fn

        return deco

    def op(self, *names: str, **row: Any) -> Callable[[Rule], Rule]:
        """Decorator: declare ``names`` (with ``row`` as in :meth:`ops`) if not declared yet, and add the
        function as their check."""
        new = [n for n in names if n not in self._specs]
        if new:
            self.ops(*new, **row)
        return self.check(*names)

    def supported(self, *names: str) -> None:
        """Declare ops taken with no condition beyond the limits (same as ``ops(*names)``)."""
        self.ops(*[n for n in names if n not in self._specs])

    def every(self, fn: Rule) -> Rule:
        """Decorator: a rule run on every node after the limits, before the op's row."""
        self._every.append(fn)
        return fn

    def before(self, fn: Rule) -> Rule:
        """Decorator: a rule run first on every candidate, before the op is even looked up."""
        self._before.append(fn)
        return fn

    def state(self, fn: Callable[[ExportedProgram, dict[str, Any]], Any]) -> Callable[..., Any]:
        """Decorator: ``fn(program, options)`` computes per-claim data once; rules read it as ``ctx.state``."""
        self._state = fn
        return fn

    def requires(self, op: str, *, producers: tuple[str, ...], arg: str, message: str,
                 code: ReasonCode = ReasonCode.ATTR, precisions: tuple[str, ...] | None = None,
                 sole_user: bool = True) -> None:
        """``op`` is taken only when its argument ``arg`` comes from one of ``producers`` that this backend
        takes in the same claim (and, with ``sole_user``, feeds nothing else): e.g. an int8 batch norm that
        only exists folded into the convolution before it."""
        if op not in self._specs:
            raise ValueError(f"requires: {op} is not declared in {self.backend}'s claim table")
        self._requires.append(_Requires(op, tuple(producers), arg, code, message, precisions, sole_user))

    def group(self, name: str, *ops: str, precisions: tuple[str, ...] | None = None) -> None:
        """A chain of ops (each the sole user of the previous one's first output) that the backend takes
        together or not at all, e.g. ``group("conv+bn+relu", conv, bn, relu)``: when any member is refused,
        the others are refused with a reason naming it."""
        if len(ops) < 2:
            raise ValueError(f"group {name!r} needs at least two ops")
        self._groups.append(_Group(name, tuple(ops), precisions))

    # ------------------------------------------------------------------ reading the table

    @property
    def keep_ops(self) -> tuple[str, ...]:
        """The ops declared ``keep_whole``: what ``BackendInfo.keep_ops`` should say."""
        return tuple(sorted(n for n, s in self._specs.items() if s.keep_whole))

    @property
    def op_names(self) -> list[str]:
        return sorted(self._specs)

    def spec(self, name: str) -> OpSpec | None:
        return self._specs.get(name)

    def ops_at(self, precision: str) -> list[str]:
        """The ops the backend can take at ``precision`` (declared, not always refused)."""
        return sorted(n for n, s in self._specs.items() if s.refusal is None and self._at(s, precision))

    def _at(self, spec: OpSpec, precision: str) -> bool:
        allowed = spec.precisions if spec.precisions is not None else self.precisions
        return allowed is None or precision in allowed

    # ------------------------------------------------------------------ answering claim

    def claim(self, program: ExportedProgram, nodes: Iterable[torch.fx.Node], options: dict[str, Any],
              extra: Rule | None = None) -> Claims:
        """Answer every candidate: claimed, or refused with a reason. ``extra`` is one more rule run last on
        nodes the table would take (a host-dependent limit)."""
        nodes = list(nodes)
        ctx = self.context(program, options)
        decisions: dict[str, Reject | None] = {}
        for node in nodes:
            r = self.judge(node, ctx)
            if r is None and extra is not None:
                r = extra(node, ctx)
            decisions[node.name] = r
        self._resolve_together(nodes, decisions, ctx)
        claimed = tuple(n.name for n in nodes if decisions[n.name] is None)
        refused = tuple(Refusal(n.name, r.code, r.message) for n in nodes if (r := decisions[n.name]) is not None)
        return Claims(claimed, refused)

    def context(self, program: ExportedProgram, options: dict[str, Any]) -> RuleContext:
        ctx = RuleContext(program, options, self.backend)
        if self._state is not None:
            ctx.state = self._state(program, options)
        return ctx

    def judge(self, node: torch.fx.Node, ctx: RuleContext) -> Reject | None:
        """The table's answer for one node on its own (steps 1-6 of the module docstring)."""
        for rule in self._before:
            if (r := rule(node, ctx)) is not None:
                return r
        name = op_name(node)
        spec = self._specs.get(name)
        folded = self.claim_folded_constants and ctx.is_folded_constant(node)
        if spec is None and not folded:
            return Reject(ReasonCode.OP, f"{name} is not supported by {self.backend}")
        r = self._limits(node, ctx, spec)
        if r is not None:
            return r
        for rule in self._every:
            if (r := rule(node, ctx)) is not None:
                return r
        if folded:
            return None
        assert spec is not None
        return self._row(node, ctx, spec)

    def _limits(self, node: torch.fx.Node, ctx: RuleContext, spec: OpSpec | None) -> Reject | None:
        lim = self.limits
        ins = input_tensors(node)
        tensors = node_tensors(node)
        dynamic_ok = spec.dynamic if spec is not None and spec.dynamic is not None else not lim.static_shapes
        if not dynamic_ok and any(not isinstance(d, int) for t in tensors for d in t.shape):
            return Reject(ReasonCode.DYNAMIC, f"dynamic shapes are not delegated: {self.backend} compiles static "
                                              "shapes only")
        dtypes = spec.dtypes if spec is not None and spec.dtypes is not None else lim.dtypes
        if dtypes is not None:
            for t in tensors:
                d = dtype_name(t.dtype)
                if d not in dtypes:
                    return Reject(ReasonCode.DTYPE, lim.dtype_reasons.get(d) or (
                        f"{d} tensors are not supported by {self.backend} (it takes {', '.join(dtypes)})"))
        if lim.same_input_dtypes and len({t.dtype for t in ins}) > 1:
            names = ", ".join(sorted({dtype_name(t.dtype) for t in ins}))
            return Reject(ReasonCode.DTYPE, f"mixed input dtypes ({names}) are not supported")
        if not lim.zero_size:
            for t in tensors:
                if any(isinstance(d, int) and d == 0 for d in t.shape):
                    return Reject(ReasonCode.SHAPE, f"zero-size tensor {list(t.shape)}: {self.backend} does not "
                                                    "take empty tensors")
        max_rank = spec.max_rank if spec is not None and spec.max_rank is not None else lim.max_rank
        if max_rank is not None:
            ranked = tensors if lim.rank_of_constants else [
                *(t for a in node.all_input_nodes if not ctx.is_constant(a) for t in _tensors_of(a)),
                *used_outputs(node)]
            top = max((t.dim() for t in ranked), default=0)
            if top > max_rank:
                return Reject(ReasonCode.RANK, f"rank {top} exceeds {self.backend}'s limit of {max_rank} dimensions")
        if not lim.scalar_results and any(t.dim() == 0 for t in used_outputs(node)):
            return Reject(ReasonCode.RANK, "0-d (scalar) results are left to the host")
        return None

    def _row(self, node: torch.fx.Node, ctx: RuleContext, spec: OpSpec) -> Reject | None:
        if spec.refusal is not None:
            return spec.refusal
        if not self._at(spec, ctx.precision):
            why = spec.precision_reasons.get(ctx.precision)
            if why:  # a reason given at a quantized precision says the op does not survive quantization
                code = ReasonCode.QUANT if _quantized(ctx.precision) else ReasonCode.PRECISION
                return Reject(code, f"not taken at {ctx.precision}: {why}")
            allowed = spec.precisions if spec.precisions is not None else self.precisions or ()
            return Reject(ReasonCode.PRECISION, f"{self.backend} has no {ctx.precision} kernel for {spec.name} "
                                                f"(it runs at {', '.join(allowed)})")
        if spec.constant or spec.values or spec.ranks:
            args = arguments(node)
            for a in spec.constant:
                if args.get(a) is not None and not ctx.is_constant(args[a]):
                    return Reject(ReasonCode.CONSTANT, f"{a} of {_short(spec.name)} must be a constant (a weight or "
                                                       f"buffer), not a tensor computed at run time")
            for a, allowed_values in spec.values.items():
                if a not in args:  # a row shared by ops of different schemas: only those that have it
                    continue
                v = args[a]
                if not any(_same(v, ok) for ok in allowed_values):
                    shown = " or ".join(repr(x) for x in allowed_values)
                    return Reject(ReasonCode.ATTR, f"{a}={v!r} is not supported by {self.backend} (only {shown})")
            for a, (lo, hi) in spec.ranks.items():
                t = (used_outputs(node) or [None])[0] if a == "out" else _tensor(args.get(a))
                if t is not None and not lo <= t.dim() <= hi:
                    want = f"rank {lo}" if lo == hi else f"rank {lo} to {hi}"
                    return Reject(ReasonCode.RANK, f"{a} of {_short(spec.name)} has rank {t.dim()}; {self.backend} "
                                                   f"takes {want}")
        for rule in spec.checks:
            if (r := rule(node, ctx)) is not None:
                return r
        return None

    def _resolve_together(self, nodes: list[torch.fx.Node], decisions: dict[str, Reject | None],
                          ctx: RuleContext) -> None:
        if not self._requires and not self._groups:
            return
        groups = [(g, chain) for g in self._groups if _applies(g.precisions, ctx.precision)
                  for chain in _chains(nodes, g.ops, decisions)]
        changed = True
        while changed:  # a refusal can break another requirement: repeat until nothing changes
            changed = False
            for node in nodes:
                if decisions[node.name] is not None:
                    continue
                for req in self._requires:
                    if req.op != op_name(node) or not _applies(req.precisions, ctx.precision):
                        continue
                    why = self._requirement_broken(node, req, decisions)
                    if why is not None:
                        decisions[node.name] = Reject(req.code, f"{req.message} ({why})")
                        changed = True
                        break
            for g, chain in groups:
                bad = next((n for n in chain if decisions[n.name] is not None), None)
                if bad is None:
                    continue
                for n in chain:
                    if decisions[n.name] is None:
                        decisions[n.name] = Reject(decisions[bad.name].code,  # type: ignore[union-attr]
                                                   f"{g.name} is taken together or not at all, and {bad.name} "
                                                   f"is refused: {decisions[bad.name].message}")  # type: ignore
                        changed = True

    def _requirement_broken(self, node: torch.fx.Node, req: _Requires,
                            decisions: dict[str, Reject | None]) -> str | None:
        src = arguments(node).get(req.arg)
        while isinstance(src, torch.fx.Node) and src.target is operator.getitem:
            src = src.args[0]
        if not isinstance(src, torch.fx.Node) or op_name(src) not in req.producers:
            return f"its {req.arg} comes from {op_name(src) if isinstance(src, torch.fx.Node) else 'no node'}"
        if src.name not in decisions:
            return f"{src.name} is not a candidate for {self.backend}"
        if decisions[src.name] is not None:
            return f"{src.name} is refused: {decisions[src.name].message}"  # type: ignore[union-attr]
        if req.sole_user and len(src.users) != 1:
            return f"{src.name} has {len(src.users)} users"
        return None


#: the earlier name of :class:`ClaimTable`
SupportRules = ClaimTable


def folded_constants(program: ExportedProgram) -> set[str]:
    """Names of the nodes that are constants or computed, deterministically, from constants only."""
    const: set[str] = set()
    for n in program.graph.nodes:
        if n.op == "get_attr" or (n.op == "placeholder" and is_constant(program, n)):
            const.add(n.name)
        elif (n.op == "call_function"
              and torch.Tag.nondeterministic_seeded not in getattr(n.target, "tags", ())
              and all(a.name in const for a in n.all_input_nodes)):
            const.add(n.name)
    return const


def _quantized(precision: str) -> bool:
    try:
        return resolve_precision(precision).quantized
    except ValueError:  # a plugin's own precision name: the generic code
        return False


def _applies(precisions: tuple[str, ...] | None, precision: str) -> bool:
    return precisions is None or precision in precisions


def _chains(nodes: list[torch.fx.Node], ops: tuple[str, ...],
            decisions: dict[str, Reject | None]) -> list[list[torch.fx.Node]]:
    out = []
    for node in nodes:
        if op_name(node) != ops[0]:
            continue
        chain = [node]
        for want in ops[1:]:
            nxt = _sole_consumer(chain[-1])
            if nxt is None or op_name(nxt) != want or nxt.name not in decisions:
                break
            chain.append(nxt)
        if len(chain) == len(ops):
            out.append(chain)
    return out


def _sole_consumer(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    if len(users) == 1 and users[0].target is operator.getitem:
        if users[0].args[1] != 0:
            return None
        node, users = users[0], list(users[0].users)
    return users[0] if len(users) == 1 else None


def _tensors_of(node: torch.fx.Node) -> list[torch.Tensor]:
    v = node.meta.get("val")
    vs = v if isinstance(v, (tuple, list)) else [v]
    return [t for t in vs if isinstance(t, torch.Tensor)]


def _tensor(arg: Any) -> torch.Tensor | None:
    v = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
    return v if isinstance(v, torch.Tensor) else None


def _same(value: Any, allowed: Any) -> bool:
    if isinstance(value, bool) or isinstance(allowed, bool):
        return value is allowed or (type(value) is type(allowed) and value == allowed)
    if isinstance(value, (int, float)) and isinstance(allowed, (int, float)):
        return math.isclose(value, allowed, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(value, (list, tuple)) and isinstance(allowed, (list, tuple)):
        return len(value) == len(allowed) and all(_same(a, b) for a, b in zip(value, allowed))
    return value == allowed


def _short(op: str) -> str:
    return op.split(".")[1] if op.count(".") == 2 else op
