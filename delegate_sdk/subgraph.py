"""Cut a partition out of an ExportedProgram as a self-contained ExportedProgram, and build the
dependency graph the partitioner sees."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.exported_program import ModuleCallEntry, ModuleCallSignature
from torch.export.graph_signature import (
    ExportGraphSignature,
    InputKind,
    InputSpec,
    OutputKind,
    OutputSpec,
    TensorArgument,
)

from delegate_sdk.partition import DepGraph
from delegate_sdk.support import op_name
from delegate_sdk.types import HOSTED_META, ReasonCode, Refusal

_WEIGHT_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


def is_tensor_node(node: torch.fx.Node) -> bool:
    """True if the node produces a tensor or a tuple/list of tensors (not a SymInt or None)."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return True
    if isinstance(val, (tuple, list)) and val:
        return all(isinstance(v, torch.Tensor) or v is None for v in val)
    return False


def compute_nodes(ep: ExportedProgram) -> list[torch.fx.Node]:
    return [n for n in ep.graph.nodes if n.op == "call_function"]


def build_dep_graph(ep: ExportedProgram, *, skip_ops: Iterable[str] = (),
                    skip_nodes: Iterable[str] = ()) -> tuple[DepGraph, list[torch.fx.Node]]:
    """The partitioner's view of ``ep``: call_function nodes, their producers, and core refusals."""
    nodes = compute_nodes(ep)
    index = {n: i for i, n in enumerate(nodes)}
    skip_ops = {s.removeprefix("torch.ops.") for s in skip_ops}
    skip_nodes = set(skip_nodes)
    inputs: list[list[int]] = []
    follows: list[int] = []
    fixed: list[Refusal | None] = []
    for n in nodes:
        inputs.append(sorted({index[a] for a in n.all_input_nodes if a in index}))
        producer = n.args[0] if n.target is operator.getitem and n.args else None
        follows.append(index[producer] if isinstance(producer, torch.fx.Node) and producer in index else -1)
        fixed.append(_core_refusal(n, skip_ops, skip_nodes) if follows[-1] < 0 else None)
    return DepGraph([n.name for n in nodes], inputs, follows, fixed), nodes


def _core_refusal(n: torch.fx.Node, skip_ops: set[str], skip_nodes: set[str]) -> Refusal | None:
    name = op_name(n)
    if not is_tensor_node(n):
        return Refusal(n.name, ReasonCode.HOST, f"{name} computes shapes or checks on the host", "core")
    if n.name in skip_nodes:
        return Refusal(n.name, ReasonCode.SKIPPED, "skipped by the user (skip_nodes)", "core")
    short = name.split(".")[1] if name.count(".") >= 1 else name
    if name in skip_ops or short in skip_ops or name.rsplit(".", 1)[0] in skip_ops:
        return Refusal(n.name, ReasonCode.SKIPPED, f"skipped by the user (skip_ops: {name})", "core")
    for a in n.all_input_nodes:
        if a.op == "call_function" and not is_tensor_node(a) and not _resolvable_size(a):
            return Refusal(n.name, ReasonCode.DYNAMIC,
                           f"takes a value computed on the host ({a.name}) that a partition cannot recompute", "core")
        if a.op == "get_attr":
            return Refusal(n.name, ReasonCode.OP, f"reads a submodule attribute ({a.name})", "core")
    return None


_SIZE_OPS = {"aten.sym_size.int"}


def _resolvable_size(a: torch.fx.Node, depth: int = 0) -> bool:
    """A SymInt computed from tensor sizes with python arithmetic: a partition can recompute it."""
    if depth > 32 or a.op != "call_function":
        return False
    if op_name(a) in _SIZE_OPS:
        return True
    from delegate_sdk.graph_ir import PY_OPS

    if op_name(a) not in PY_OPS and not (callable(a.target) and f"torch.{getattr(a.target, '__name__', '')}" in PY_OPS):
        return False
    return all(_resolvable_size(x, depth + 1) for x in a.all_input_nodes)


def _sym_expr(v: object) -> object:
    return v.node.expr if isinstance(v, torch.SymInt) else v


@dataclass
class Subgraph:
    program: ExportedProgram
    #: names (in the parent graph) of the nodes whose values feed the partition's user inputs, in order
    inputs: list[str]
    #: names (in the parent graph) of the nodes whose values the partition returns, in order
    outputs: list[str]
    #: parent placeholder names of weights/constants baked into the partition
    weights: list[str]


def extract(ep: ExportedProgram, names: list[str], hosted: Iterable[str] = ()) -> Subgraph:
    """A self-contained ExportedProgram computing the nodes ``names`` of ``ep``; the copies of the ``hosted``
    ones carry ``node.meta[HOSTED_META] = True`` (the backend runs them on its host CPU)."""
    wanted = set(names)
    hosted = set(hosted)
    part = [n for n in ep.graph.nodes if n.name in wanted]
    part_set = set(part)
    specs_by_arg = {s.arg.name: s for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}

    weights: list[torch.fx.Node] = []
    user_inputs: list[torch.fx.Node] = []
    hosts: list[torch.fx.Node] = []  # SymInt nodes the partition recomputes from tensor sizes
    seen: set[torch.fx.Node] = set()

    def visit_host(h: torch.fx.Node) -> None:
        if h in seen:
            return
        seen.add(h)
        for x in h.all_input_nodes:
            if op_name(h) not in _SIZE_OPS:
                visit_host(x)
        hosts.append(h)

    for n in part:
        for a in n.all_input_nodes:
            if a in part_set or a in seen:
                continue
            if a.op == "call_function" and not is_tensor_node(a):
                visit_host(a)
                continue
            seen.add(a)
            spec = specs_by_arg.get(a.name) if a.op == "placeholder" else None
            (weights if spec is not None and spec.kind in _WEIGHT_KINDS else user_inputs).append(a)
    # a size is read from a tensor the partition already receives; failing that, its source becomes an input
    size_source: dict[torch.fx.Node, tuple[torch.fx.Node, int]] = {}
    for h in hosts:
        if op_name(h) not in _SIZE_OPS:
            continue
        expr = _sym_expr(h.meta.get("val"))
        found = next(((u, d) for u in user_inputs if isinstance(u.meta.get("val"), torch.Tensor)
                      for d, size in enumerate(u.meta["val"].shape) if _sym_expr(size) == expr), None)
        if found is None:
            src = h.args[0]
            if src not in user_inputs:
                user_inputs.append(src)
            found = (src, int(h.args[1]))
        size_source[h] = found
    outputs = [n for n in part if any(u not in part_set for u in n.users)]

    order = {InputKind.PARAMETER: 0, InputKind.BUFFER: 1, InputKind.CONSTANT_TENSOR: 2}
    weights.sort(key=lambda a: order[specs_by_arg[a.name].kind])

    g = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    input_specs: list[InputSpec] = []
    state_dict: dict[str, torch.Tensor] = {}
    constants: dict[str, torch.Tensor] = {}
    for a in weights:
        spec = specs_by_arg[a.name]
        p = g.placeholder(a.name)
        p.meta = dict(a.meta)
        env[a] = p
        input_specs.append(InputSpec(spec.kind, TensorArgument(p.name), spec.target, spec.persistent))
        if spec.kind == InputKind.CONSTANT_TENSOR or (spec.kind == InputKind.BUFFER and not spec.persistent):
            constants[spec.target] = ep.constants[spec.target]
        else:
            state_dict[spec.target] = ep.state_dict[spec.target]
    for a in user_inputs:
        p = g.placeholder(a.name)
        p.meta = {k: v for k, v in a.meta.items() if k in ("val", "tensor_meta", "stack_trace")}
        env[a] = p
        input_specs.append(InputSpec(InputKind.USER_INPUT, TensorArgument(p.name), None))
    for h in hosts:
        if h in size_source:
            src, dim = size_source[h]
            env[h] = g.call_function(torch.ops.aten.sym_size.int, (env[src], dim))
            env[h].meta = dict(h.meta)
        else:
            env[h] = g.node_copy(h, lambda x: env[x])
    for n in part:
        env[n] = g.node_copy(n, lambda x: env[x])
        if n.name in hosted:
            env[n].meta[HOSTED_META] = True
    out_nodes = [env[o] for o in outputs]
    g.output(tuple(out_nodes))
    output_specs = [OutputSpec(OutputKind.USER_OUTPUT, TensorArgument(o.name), None) for o in out_nodes]

    gm = torch.fx.GraphModule(torch.nn.Module(), g)
    in_spec = pytree.tree_flatten((tuple(range(len(user_inputs))), {}))[1]
    out_spec = pytree.tree_flatten(tuple(range(len(out_nodes))))[1]
    sub = ExportedProgram(
        root=gm,
        graph=gm.graph,
        graph_signature=ExportGraphSignature(input_specs, output_specs),
        state_dict=state_dict,
        range_constraints=dict(ep.range_constraints),
        module_call_graph=[ModuleCallEntry("", ModuleCallSignature(inputs=[], outputs=[], in_spec=in_spec,
                                                                    out_spec=out_spec))],
        constants=constants,
    )
    return Subgraph(sub, [a.name for a in user_inputs], [o.name for o in outputs], [a.name for a in weights])
