"""Fold eval batch norm into the convolution before it, before calibration.

Unfolded, a convolution's output is quantized per tensor on its own range and
only then normalised. Batch norm exists to even out the channels' scales, so
before it they differ by up to 100x, and the narrow channels lose most of
their int8 codes: on torchvision's mobilenet_v3_small (random weights, batch
norm statistics estimated) conv + bn + relu blocks lost ~6 dB each against
the folded form that other int8 toolchains (PT2E's prepare, ONNX Runtime's
quantizer) use, and the model fell to 6.5 dB.

The fold rewrites a copy of the partition, so calibration, the TOSA graph and
the fake-quant reference all see the same folded convolution.
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.graph_eval import graph_inputs

CONV = "aten.convolution.default"
BATCH_NORM = "aten._native_batch_norm_legit_no_training.default"


def fold_batch_norms(program: ExportedProgram) -> tuple[ExportedProgram, dict[str, list[str]]]:
    """``program`` with every foldable conv -> batch norm pair as one convolution.

    Returns the program (a copy when anything was folded, else ``program``) and,
    per folded convolution, the names of the nodes folded into it (for the
    debug map).
    """
    if not _pairs(program, graph_inputs(program).constants):
        return program, {}
    with warnings.catch_warnings():
        # torch 2.13 warns about its own LeafSpec while copying the program's tree specs
        warnings.simplefilter("ignore", FutureWarning)
        program = copy.deepcopy(program)
    values = graph_inputs(program).constants
    folded: dict[str, list[str]] = {}
    graph = program.graph
    for conv, bn in _pairs(program, values):
        w, b = _folded_params(conv, bn, values)
        with graph.inserting_before(conv):
            w_node = _constant_node(program, f"{conv.name}_bn_folded_weight", w)
            b_node = _constant_node(program, f"{conv.name}_bn_folded_bias", b)
        args = list(conv.args)
        args[1], args[2] = w_node, b_node
        conv.args = tuple(args)
        names = [bn.name]
        for user in list(bn.users):
            names.append(user.name)
            user.replace_all_uses_with(conv)
            graph.erase_node(user)
        graph.erase_node(bn)
        folded[conv.name] = names
    graph.eliminate_dead_code()
    program.graph_module.recompile()
    return program, folded


def _pairs(program: ExportedProgram, const: Mapping[str, torch.Tensor]) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
    """(conv, bn) where the batch norm is the convolution's only user, only its output 0 is used, and the
    weights and statistics are constant inputs of the partition (a weight computed inside it stays unfolded)."""
    pairs = []
    for conv in program.graph.nodes:
        if conv.op != "call_function" or op_name(conv) != CONV or len(conv.users) != 1:
            continue
        # any grouping folds (the weight's output channels are its first axis); transposed ones are rare
        if conv.args[6] or not _is_const(conv.args[1], const) or not _is_const(conv.args[2], const, optional=True):
            continue
        (bn,) = conv.users
        if op_name(bn) != BATCH_NORM or bn.args[0] is not conv:
            continue
        if not all(_is_const(a, const, optional=True) for a in bn.args[1:3]):
            continue
        if not all(_is_const(a, const) for a in bn.args[3:5]):
            continue
        if any(u.target is not operator.getitem or u.args[1] != 0 for u in bn.users):
            continue
        pairs.append((conv, bn))
    return pairs


def _is_const(arg: Any, const: Mapping[str, torch.Tensor], optional: bool = False) -> bool:
    if arg is None:
        return optional
    return isinstance(arg, torch.fx.Node) and arg.name in const


def _folded_params(conv: torch.fx.Node, bn: torch.fx.Node, values: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    def get(a: Any) -> torch.Tensor | None:
        return None if a is None else values[a.name].detach().to(torch.float64)

    w, b = get(conv.args[1]), get(conv.args[2])
    gamma, beta, mean, var = (get(a) for a in bn.args[1:5])
    eps = float(bn.args[6])
    assert w is not None and mean is not None and var is not None
    scale = torch.rsqrt(var + eps) * (gamma if gamma is not None else 1.0)
    shift = (beta if beta is not None else 0.0) - mean * scale
    w_f = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    b_f = (b if b is not None else torch.zeros_like(mean)) * scale + shift
    dtype = values[conv.args[1].name].dtype
    return w_f.to(dtype), b_f.to(dtype)


def _constant_node(program: ExportedProgram, name: str, value: torch.Tensor) -> torch.fx.Node:
    program.graph_module.register_buffer(name, value, persistent=False)
    node = program.graph.get_attr(name)
    node.meta["val"] = value
    return node
