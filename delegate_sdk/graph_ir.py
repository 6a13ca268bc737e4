"""The outer graph of a lowered program as plain JSON, and its executor.

Stored instead of a pickled GraphModule so that loading an artifact never
executes code: an op is named by string ("aten.add.Tensor") and resolved only
inside ``torch.ops`` namespaces on an allow-list, or among a few Python
operators used for shape arithmetic.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from delegate_sdk.errors import ArtifactCorruptError
from delegate_sdk.support.nodes import vals as pytree_leaves

ALLOWED_NAMESPACES = ("aten", "prims", "quantized_decomposed")
PY_OPS: dict[str, Callable[..., Any]] = {
    f"operator.{f.__name__}": f
    for f in (operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
              operator.mod, operator.neg, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
              operator.ge, operator.pow, operator.and_, operator.or_)
}
PY_OPS["math.ceil"] = math.ceil
PY_OPS["math.floor"] = math.floor
PY_OPS["torch.sym_float"] = torch.sym_float
PY_OPS["torch.sym_int"] = torch.sym_int
PY_OPS["torch.sym_max"] = torch.sym_max
PY_OPS["torch.sym_min"] = torch.sym_min
PY_OPS["torch.sym_not"] = torch.sym_not

DELEGATE_OP = "delegate"


def target_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._opname}.{target._overloadname}"
    for name, f in PY_OPS.items():
        if f is target:
            return name
    raise ValueError(f"cannot store graph target {target!r}")


def resolve_target(name: str) -> Callable[..., Any]:
    if name in PY_OPS:
        return PY_OPS[name]
    parts = name.split(".")
    if len(parts) != 3 or parts[0] not in ALLOWED_NAMESPACES:
        raise ArtifactCorruptError(f"graph names op {name!r}, which is not an allowed torch op")
    try:
        return getattr(getattr(getattr(torch.ops, parts[0]), parts[1]), parts[2])
    except (AttributeError, RuntimeError):
        raise ArtifactCorruptError(f"graph names op {name!r}, which this torch does not have") from None


# ---------------------------------------------------------------- argument encoding

def encode_arg(a: Any, ref: Callable[[torch.fx.Node], Any]) -> Any:
    if isinstance(a, torch.fx.Node):
        return {"ref": ref(a)}
    if a is None or isinstance(a, (bool, str)):
        return a
    if isinstance(a, int):
        return a
    if isinstance(a, float):
        return a if math.isfinite(a) else {"float": repr(a)}
    if isinstance(a, tuple):
        return {"tuple": [encode_arg(x, ref) for x in a]}
    if isinstance(a, list):
        return [encode_arg(x, ref) for x in a]
    if isinstance(a, torch.dtype):
        return {"dtype": str(a).removeprefix("torch.")}
    if isinstance(a, torch.device):
        return {"device": str(a)}
    if isinstance(a, torch.layout):
        return {"layout": str(a).removeprefix("torch.")}
    if isinstance(a, torch.memory_format):
        return {"memory_format": str(a).removeprefix("torch.")}
    raise ValueError(f"cannot store argument {a!r} of type {type(a).__name__}")


_ENUMS = {"dtype": torch.dtype, "layout": torch.layout, "memory_format": torch.memory_format}


def decode_arg(a: Any) -> Any:
    """JSON -> a template: Ref(name) placeholders plus constants."""
    if isinstance(a, list):
        return [decode_arg(x) for x in a]
    if isinstance(a, dict):
        if len(a) != 1:
            raise ArtifactCorruptError(f"bad graph argument {a!r}")
        (k, v), = a.items()
        if k == "ref":
            return Ref(str(v))
        if k == "tuple":
            return tuple(decode_arg(x) for x in v)
        if k == "float":
            return float(v)
        if k == "device":
            return torch.device(v)
        if k in _ENUMS:
            obj = getattr(torch, str(v), None)
            if not isinstance(obj, _ENUMS[k]):
                raise ArtifactCorruptError(f"bad {k} {v!r} in graph")
            return obj
        raise ArtifactCorruptError(f"bad graph argument {a!r}")
    return a


@dataclass(frozen=True)
class Ref:
    name: str


# ---------------------------------------------------------------- the graph

@dataclass
class GNode:
    name: str
    op: str  # target name, or DELEGATE_OP
    args: list[Any]
    kwargs: dict[str, Any]
    delegate: int = -1  # index into the program's delegates for DELEGATE_OP nodes

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "op": self.op, "args": self.args, "kwargs": self.kwargs}
        if self.delegate >= 0:
            d["delegate"] = self.delegate
        return d


@dataclass
class OuterGraph:
    """Inputs are named values bound before execution: user inputs and weights."""

    user_inputs: list[str]
    weights: list[str]
    nodes: list[GNode]
    outputs: list[Any]  # encoded args (refs or constants), flat

    def to_json(self) -> dict[str, Any]:
        return {"user_inputs": self.user_inputs, "weights": self.weights,
                "nodes": [n.to_json() for n in self.nodes], "outputs": self.outputs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OuterGraph:
        try:
            nodes = [GNode(n["name"], n["op"], n["args"], n["kwargs"], int(n.get("delegate", -1)))
                     for n in d["nodes"]]
            return cls(list(d["user_inputs"]), list(d["weights"]), nodes, list(d["outputs"]))
        except (KeyError, TypeError) as e:
            raise ArtifactCorruptError(f"graph.json is malformed: {e}") from None


# ---------------------------------------------------------------- execution

Step = Callable[[dict[str, Any]], None]


def _binder(template: Any) -> Callable[[dict[str, Any]], Any]:
    """A function env -> concrete value for an argument template (Refs resolved)."""
    if isinstance(template, Ref):
        name = template.name
        return lambda env: env[name]
    if isinstance(template, (list, tuple)):
        if not any(_has_ref(x) for x in template):
            return lambda env: template
        parts = [_binder(x) for x in template]
        ctor = list if isinstance(template, list) else tuple
        return lambda env: ctor(p(env) for p in parts)
    return lambda env: template


def _has_ref(t: Any) -> bool:
    if isinstance(t, Ref):
        return True
    if isinstance(t, (list, tuple)):
        return any(_has_ref(x) for x in t)
    return False


class Executor:
    """Runs an OuterGraph; ``delegate_call(i, inputs) -> outputs`` runs delegate ``i``."""

    def __init__(self, graph: OuterGraph, delegate_call: Callable[[int, list[torch.Tensor]], list[torch.Tensor]]):
        self.graph = graph
        self._steps: list[Step] = []
        defined = set(graph.user_inputs) | set(graph.weights)
        for node in graph.nodes:
            args_t = [decode_arg(a) for a in node.args]
            kwargs_t = {k: decode_arg(v) for k, v in node.kwargs.items()}
            for r in _refs((args_t, list(kwargs_t.values()))):
                if r not in defined:
                    raise ArtifactCorruptError(f"graph node {node.name!r} uses {r!r} before it is defined")
            defined.add(node.name)
            if node.op == DELEGATE_OP:
                self._steps.append(self._delegate_step(node.name, node.delegate, args_t, delegate_call))
            else:
                self._steps.append(self._op_step(node.name, resolve_target(node.op), args_t, kwargs_t))
        out_t = [decode_arg(o) for o in graph.outputs]
        for r in _refs(out_t):
            if r not in defined:
                raise ArtifactCorruptError(f"graph output uses undefined value {r!r}")
        self._outputs = _binder(out_t)

    @staticmethod
    def _op_step(name: str, fn: Callable[..., Any], args_t: list[Any], kwargs_t: dict[str, Any]) -> Step:
        bind_args = _binder(tuple(args_t))
        if kwargs_t:
            bind_kwargs = {k: _binder(v) for k, v in kwargs_t.items()}

            def step(env: dict[str, Any]) -> None:
                env[name] = fn(*bind_args(env), **{k: b(env) for k, b in bind_kwargs.items()})
        else:
            def step(env: dict[str, Any]) -> None:
                env[name] = fn(*bind_args(env))
        return step

    @staticmethod
    def _delegate_step(name: str, idx: int, args_t: list[Any],
                       call: Callable[[int, list[torch.Tensor]], list[torch.Tensor]]) -> Step:
        bind = _binder(args_t[0])

        def step(env: dict[str, Any]) -> None:
            env[name] = call(idx, bind(env))
        return step

    def run(self, env: dict[str, Any]) -> list[Any]:
        for step in self._steps:
            step(env)
        return self._outputs(env)


class CompiledGraph:
    """An OuterGraph as one straight-line Python function (as ``torch.fx`` generates code for a graph), so that a
    call pays for the ops and the delegates, not for interpreting the graph step by step.

    The source is generated from the graph's *structure* only: every value gets a fresh identifier (``v12``),
    every op and constant is looked up in the function's own namespace (``_f3``, ``_c7``). No string from the
    artifact ever becomes source code, so a crafted ``graph.json`` can name values and ops as it likes.
    """

    def __init__(self, graph: OuterGraph, delegate_call: Callable[[int, list[torch.Tensor]], list[torch.Tensor]]):
        self.graph = graph
        names: dict[str, str] = {}
        ns: dict[str, Any] = {"_call": delegate_call}
        consts: dict[int, str] = {}

        def const(value: Any) -> str:
            key = id(value)
            if key not in consts:
                consts[key] = f"_c{len(consts)}"
                ns[consts[key]] = value
            return consts[key]

        def expr(t: Any) -> str:
            if isinstance(t, Ref):
                if t.name not in names:
                    raise ArtifactCorruptError(f"graph uses {t.name!r} before it is defined")
                return names[t.name]
            if isinstance(t, list):
                return "[" + ", ".join(expr(x) for x in t) + "]"
            if isinstance(t, tuple):
                return "(" + "".join(expr(x) + ", " for x in t) + ")"
            if t is None or isinstance(t, bool):
                return repr(t)
            if type(t) is int:
                return str(t)
            return const(t)

        params = []
        for n in (*graph.user_inputs, *graph.weights):
            names[n] = f"a{len(names)}"
            params.append(names[n])
        lines = []
        fns: dict[str, str] = {}
        for node in graph.nodes:
            args_t = [decode_arg(a) for a in node.args]
            kwargs_t = {k: decode_arg(v) for k, v in node.kwargs.items()}
            if node.op == DELEGATE_OP:
                rhs = f"_call({int(node.delegate)}, {expr(args_t[0])})"
            elif node.op == "operator.getitem" and len(args_t) == 2 and type(args_t[1]) is int and not kwargs_t:
                rhs = f"{expr(args_t[0])}[{args_t[1]}]"
            else:
                if node.op not in fns:
                    fns[node.op] = f"_f{len(fns)}"
                    ns[fns[node.op]] = resolve_target(node.op)
                parts = [expr(a) for a in args_t]
                for k, v in kwargs_t.items():
                    if not k.isidentifier() or k.startswith("_"):
                        raise ArtifactCorruptError(f"graph node has a keyword argument named {k!r}")
                    parts.append(f"{k}={expr(v)}")
                rhs = f"{fns[node.op]}({', '.join(parts)})"
            if node.name in names:
                raise ArtifactCorruptError(f"graph defines {node.name!r} twice")
            names[node.name] = f"v{len(names)}"
            lines.append(f"    {names[node.name]} = {rhs}")
        out = expr([decode_arg(o) for o in graph.outputs])
        self.source = f"def run({', '.join(params)}):\n" + "\n".join(lines) + f"\n    return {out}\n"
        code = compile(self.source, "<delegate-sdk outer graph>", "exec")
        exec(code, ns)  # noqa: S102 - the source above is built from generated identifiers only
        self.fn: Callable[..., list[Any]] = ns["run"]
        self.order = list(graph.user_inputs) + list(graph.weights)

    def run(self, env: dict[str, Any]) -> list[Any]:
        return self.fn(*(env[n] for n in self.order))


def _refs(t: Any) -> list[str]:
    if isinstance(t, Ref):
        return [t.name]
    if isinstance(t, (list, tuple)):
        out: list[str] = []
        for x in t:
            out.extend(_refs(x))
        return out
    return []


def build_outer_graph(gm_graph: torch.fx.Graph, user_inputs: Sequence[str], weights: Sequence[str],
                      partition_of: dict[str, str], partition_io: dict[str, tuple[list[str], list[str]]],
                      delegate_index: dict[str, int]) -> OuterGraph:
    """Replace each partition by one delegate node whose outputs are read with getitem."""
    nodes: list[GNode] = []
    # value name in the original graph -> how to refer to it in the outer graph
    alias: dict[str, Any] = {}

    def ref(n: torch.fx.Node) -> Any:
        return alias.get(n.name, n.name)

    def enc(a: Any) -> Any:
        return encode_arg(a, lambda n: _unwrap(ref(n)))

    # a partition runs as one unit: order units (fallback nodes and partitions) topologically,
    # since a partition's inputs may be produced after its first node in the original order
    units: list[list[torch.fx.Node]] = []
    unit_key: list[str | None] = []
    unit_of: dict[str, int] = {}
    unit_index: dict[str, int] = {}
    output_node = None
    for n in gm_graph.nodes:
        if n.op in ("placeholder", "get_attr"):
            continue
        if n.op == "output":
            output_node = n
            continue
        pid = partition_of.get(n.name)
        if pid is not None and pid in unit_index:
            u = unit_index[pid]
            units[u].append(n)
        else:
            u = len(units)
            units.append([n])
            unit_key.append(pid)
            if pid is not None:
                unit_index[pid] = u
        unit_of[n.name] = u
    deps: list[set[int]] = [set() for _ in units]
    users: list[set[int]] = [set() for _ in units]
    for u, members in enumerate(units):
        for n in members:
            for a in n.all_input_nodes:
                v = unit_of.get(a.name)
                if v is not None and v != u:
                    deps[u].add(v)
                    users[v].add(u)
    ready = [u for u in range(len(units)) if not deps[u]]
    heapq.heapify(ready)
    remaining = [len(d) for d in deps]
    order: list[int] = []
    while ready:
        u = heapq.heappop(ready)
        order.append(u)
        for v in users[u]:
            remaining[v] -= 1
            if remaining[v] == 0:
                heapq.heappush(ready, v)
    if len(order) != len(units):
        raise ValueError("partitions form a cycle; this is a partitioner bug")

    for u in order:
        pid = unit_key[u]
        if pid is None:
            (n,) = units[u]
            nodes.append(GNode(n.name, target_name(n.target), [enc(a) for a in n.args],
                               {k: enc(v) for k, v in n.kwargs.items()}))
            continue
        ins, outs = partition_io[pid]
        call_name = f"delegate_{pid}"
        nodes.append(GNode(call_name, DELEGATE_OP, [[{"ref": _unwrap(alias.get(i, i))} for i in ins]], {},
                           delegate_index[pid]))
        for k, o in enumerate(outs):
            item = f"{call_name}_out{k}"
            nodes.append(GNode(item, "operator.getitem", [{"ref": call_name}, k], {}))
            alias[o] = _Alias(item)
    output_args = [enc(a) for a in pytree_leaves(output_node.args[0])] if output_node is not None else []
    return OuterGraph(list(user_inputs), list(weights), nodes, output_args)


@dataclass(frozen=True)
class _Alias:
    name: str


def _unwrap(x: Any) -> str:
    return x.name if isinstance(x, _Alias) else x
