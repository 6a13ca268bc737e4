"""Run a partition's core-ATen graph node by node in float (calibration, constant folding).

The compiler needs every intermediate value (to choose activation ranges) and
the values of nodes computed only from weights (constant folding, e.g. a
``permute`` of a weight feeding ``addmm``). ``ExportedProgram.module()`` hides
both, so this walks ``program.graph`` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

NodeHook = Callable[[torch.fx.Node, Any], Any]


@dataclass
class GraphInputs:
    """The placeholders of a partition: user inputs in order, and the constants."""

    user: list[torch.fx.Node] = field(default_factory=list)
    constants: dict[str, torch.Tensor] = field(default_factory=dict)


def graph_inputs(program: ExportedProgram) -> GraphInputs:
    gi = GraphInputs()
    specs = {s.arg.name: s for s in program.graph_signature.input_specs if hasattr(s.arg, "name")}
    for node in program.graph.nodes:
        if node.op != "placeholder":
            continue
        spec = specs.get(node.name)
        if spec is None or spec.kind == InputKind.USER_INPUT:
            gi.user.append(node)
            continue
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            value = program.state_dict.get(spec.target)
            if value is None:
                value = program.constants.get(spec.target)
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            value = program.constants.get(spec.target)
        else:
            raise ValueError(f"unsupported partition input kind {spec.kind} for {node.name}")
        if value is None:
            raise ValueError(f"no value for constant input {node.name} ({spec.target})")
        gi.constants[node.name] = value.detach()
    return gi


def output_nodes(program: ExportedProgram) -> list[Any]:
    out = program.graph.output_node()
    args = out.args[0]
    return list(args) if isinstance(args, (list, tuple)) else [args]


def _map(arg: Any, env: dict[str, Any]) -> Any:
    return torch.fx.node.map_arg(arg, lambda n: env[n.name])


def constant_nodes(program: ExportedProgram, gi: GraphInputs) -> set[str]:
    """Names of nodes whose value does not depend on user inputs."""
    const = set(gi.constants)
    for node in program.graph.nodes:
        if node.op == "get_attr":
            const.add(node.name)
        elif node.op == "call_function" and all(a.name in const for a in node.all_input_nodes):
            const.add(node.name)
    return const


def evaluate(program: ExportedProgram, gi: GraphInputs, inputs: tuple[torch.Tensor, ...] | list[torch.Tensor],
             hook: NodeHook | None = None, arg_hook: Callable[[torch.fx.Node, tuple, dict], tuple] | None = None,
             ) -> dict[str, Any]:
    """Every node's value for one set of user inputs. ``hook`` may replace a node's output."""
    if len(inputs) != len(gi.user):
        raise ValueError(f"expected {len(gi.user)} inputs, got {len(inputs)}")
    env: dict[str, Any] = dict(gi.constants)
    for node, value in zip(gi.user, inputs):
        env[node.name] = value
        if hook is not None:
            env[node.name] = hook(node, value)
    with torch.no_grad():
        for node in program.graph.nodes:
            if node.op == "call_function":
                args = _map(node.args, env)
                kwargs = _map(node.kwargs, env)
                if arg_hook is not None:
                    args, kwargs = arg_hook(node, args, kwargs)
                value = node.target(*args, **kwargs)
                if hook is not None:
                    value = hook(node, value)
                env[node.name] = value
            elif node.op == "get_attr":
                env[node.name] = getattr(program.graph_module, node.target)
    return env
