"""Graph rewrites that put a claimed core-ATen subgraph into the form ExecuTorch's XNNPACK flow lowers.

The core hands ``preprocess`` core ATen (``addmm`` + ``permute`` for a
linear, ``max_pool2d_with_indices`` + ``getitem``, ...). The XNNPACK
partitioner and quantizer match other spellings of the same computation
(``linear``, ``max_pool2d``, ``conv2d``). Each rewrite below preserves
semantics and only changes the spelling, so that a node the rules claim really
lands inside the delegate.

They work on a ``torch.fx.Graph`` whose weights are either placeholders (an
ExportedProgram's graph) or ``get_attr`` nodes (``ExportedProgram.module()``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch.fx import Graph, Node

aten = torch.ops.aten

_SQUEEZES = (aten.squeeze.dims, aten.squeeze.dim, aten.squeeze.default, aten.unsqueeze.default)


def _replace(graph: Graph, old: Node, target: Callable, args: tuple, kwargs: dict | None = None) -> Node:
    with graph.inserting_before(old):
        new = graph.call_function(target, args, kwargs or {})
    new.meta = dict(old.meta)
    old.replace_all_uses_with(new)
    graph.erase_node(old)
    return new


def max_pool_without_indices(graph: Graph) -> int:
    """``max_pool2d_with_indices`` whose indices nobody reads -> ``max_pool2d`` (XNNPACK has no indices)."""
    n_changed = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.max_pool2d_with_indices.default:
            continue
        users = list(node.users)
        if not all(u.target is operator.getitem and u.args[1] == 0 for u in users):
            continue
        with graph.inserting_before(node):
            new = graph.call_function(aten.max_pool2d.default, node.args, dict(node.kwargs))
        val = node.meta.get("val")
        new.meta = dict(node.meta)
        if isinstance(val, (tuple, list)):
            new.meta["val"] = val[0]
        for u in users:
            u.replace_all_uses_with(new)
            graph.erase_node(u)
        graph.erase_node(node)
        n_changed += 1
    return n_changed


def squeeze_to_view(graph: Graph) -> int:
    """``squeeze``/``unsqueeze`` with a static result -> ``view``.

    XNNPACK only lowers an unsqueeze of the trailing dim and no squeeze, while
    both are plain reshapes of a contiguous tensor, which XNNPACK runs.
    """
    n_changed = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _SQUEEZES:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or not all(isinstance(d, int) for d in val.shape):
            continue
        _replace(graph, node, aten.view.default, (node.args[0], [int(d) for d in val.shape]))
        n_changed += 1
    return n_changed


def _transposed_weight(arg: object) -> Node | None:
    """``w`` if ``arg`` is ``permute(w, [1, 0])`` (how core ATen spells ``linear``'s weight)."""
    if (isinstance(arg, Node) and arg.op == "call_function" and arg.target is aten.permute.default
            and list(arg.args[1]) in ([1, 0], [-1, -2], [1, -2], [-1, 0])):
        return arg.args[0]
    return None


def addmm_to_linear(graph: Graph, is_weight: Callable[[Node], bool]) -> int:
    """``addmm(b, x, permute(w))`` / ``mm(x, permute(w))`` with a constant ``w`` -> ``linear(x, w, b)``.

    ``linear`` is what XNNPACK's partitioner and quantizer match as a fully
    connected layer; matching the decomposed form instead depends on source
    metadata that a partition cut out of a bigger graph may not carry.
    """
    n_changed = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is aten.addmm.default:
            bias, x, wt = node.args[:3]
            if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
                continue
        elif node.target is aten.mm.default:
            x, wt = node.args[:2]
            bias = None
        else:
            continue
        w = _transposed_weight(wt)
        if w is None or not is_weight(w):
            continue
        if bias is not None and not (isinstance(bias, Node) and is_weight(bias)
                                     and bias.meta.get("val") is not None and bias.meta["val"].dim() == 1):
            continue
        _replace(graph, node, aten.linear.default, (x, w, bias) if bias is not None else (x, w))
        if not wt.users:
            graph.erase_node(wt)
        n_changed += 1
    return n_changed


def exponent_two(graph: Graph) -> int:
    """``pow(x, 2.0)`` -> ``pow(x, 2)``: XNNPACK's square is matched on an integer exponent only."""
    n_changed = 0
    for node in graph.nodes:
        if (node.op == "call_function" and node.target is aten.pow.Tensor_Scalar
                and isinstance(node.args[1], float) and node.args[1] == 2.0):
            node.args = (node.args[0], 2)
            n_changed += 1
    return n_changed


def nonnegative_max_dim(graph: Graph) -> int:
    """``max.dim(x, -1)`` -> ``max.dim(x, 3)``: ExecuTorch's XNNPACK serializer compares the dim literally."""
    n_changed = 0
    for node in graph.nodes:
        if node.op == "call_function" and node.target is aten.max.dim and node.args[1] < 0:
            rank = node.args[0].meta["val"].dim()
            node.args = (node.args[0], node.args[1] % rank, *node.args[2:])
            n_changed += 1
    return n_changed


def convolution_to_convnd(graph: Graph) -> int:
    """``convolution`` -> ``conv1d``/``conv2d``/``conv_transpose{1,2}d``: the spellings the XNNPACK quantizer annotates."""
    n_changed = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.convolution.default:
            continue
        x, w, b, stride, padding, dilation, transposed, output_padding, groups = node.args[:9]
        wval = w.meta.get("val") if isinstance(w, Node) else None
        if wval is None:
            continue
        nd = wval.dim() - 2
        if nd not in (1, 2):
            continue
        if transposed:
            target = aten.conv_transpose1d.default if nd == 1 else aten.conv_transpose2d.input
            args = (x, w, b, stride, padding, output_padding, groups, dilation)
        else:
            target = aten.conv1d.default if nd == 1 else aten.conv2d.default
            args = (x, w, b, stride, padding, dilation, groups)
        _replace(graph, node, target, args)
        n_changed += 1
    return n_changed


def for_lowering(graph: Graph, is_weight: Callable[[Node], bool]) -> dict[str, int]:
    """The spelling rewrites of the float flow; returns how often each fired (for logs).

    Python-scalar operands are handled separately (``compiler._lift_scalar_operands``):
    they need new constants in the program, not just a new spelling.
    """
    counts = {
        "max_pool_without_indices": max_pool_without_indices(graph),
        "squeeze_to_view": squeeze_to_view(graph),
        "addmm_to_linear": addmm_to_linear(graph, is_weight),
        "exponent_two": exponent_two(graph),
        "nonnegative_max_dim": nonnegative_max_dim(graph),
    }
    graph.lint()
    return counts
