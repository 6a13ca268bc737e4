"""Helpers for this plugin's tests: capture a module the way the core does, then run it through the hooks."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk.types import Claims, CompiledDelegate

from delegate_sdk_xnnpack import plugin


def capture(module: torch.nn.Module, args: tuple[torch.Tensor, ...], *,
            keep_ops: tuple[str, ...] = plugin.KEEP_OPS, dynamic_shapes: Any = None) -> ExportedProgram:
    """``torch.export`` + core-ATen decomposition minus ``keep_ops``: what ``claim``/``preprocess`` receive."""
    ep = torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes, strict=False)
    table = torch.export.default_decompositions()
    for name in keep_ops:
        ns, op, overload = name.split(".")
        table.pop(getattr(getattr(getattr(torch.ops, ns), op), overload), None)
    return ep.run_decompositions(table)


def candidates(ep: ExportedProgram) -> list[torch.fx.Node]:
    """The nodes the core would hand to ``claim`` (getitems follow their producer)."""
    return [n for n in ep.graph.nodes if n.op == "call_function" and n.target is not operator.getitem]


def claim_all(ep: ExportedProgram, precision: str = "fp32") -> Claims:
    return plugin.claim(ep, candidates(ep), {"precision": precision, "num_threads": 0})


@dataclass
class Run:
    outputs: list[torch.Tensor]
    compiled: CompiledDelegate
    claims: Claims


def lower_and_run(module: torch.nn.Module, args: tuple[torch.Tensor, ...], *, precision: str = "fp32",
                  calibration: list[tuple[torch.Tensor, ...]] | None = None,
                  inputs: tuple[torch.Tensor, ...] | None = None,
                  keep_ops: tuple[str, ...] = plugin.KEEP_OPS) -> Run:
    """Capture, claim (everything must be claimed), preprocess, init, execute on ``inputs`` (default ``args``)."""
    ep = capture(module, args, keep_ops=keep_ops)
    claims = claim_all(ep, precision)
    if claims.refused:
        raise AssertionError(f"expected every node claimed, refused: {claims.refused}")
    opts = {"precision": precision, "num_threads": 0}
    cd = plugin.preprocess(ep, opts, calibration)
    handle = plugin.init(cd.blob, cd.meta, opts)
    try:
        outs = plugin.execute(handle, list(inputs if inputs is not None else args))
    finally:
        plugin.destroy(handle)
    return Run(outs, cd, claims)


def eager(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module.eval()(*args)
    return list(out) if isinstance(out, (tuple, list)) else [out]


class Fn(torch.nn.Module):
    """A module around a function, for one-op test cases."""

    def __init__(self, fn: Any):
        super().__init__()
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> Any:
        return self.fn(*args)
