"""Helpers for this plugin's tests: the plugin kit's capture and candidates, then the hooks called directly (to
look at a partition's CompiledDelegate, which a lowering hides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk import testing as kit
from delegate_sdk.types import Claims, CompiledDelegate
from delegate_sdk_xnnpack import plugin


def capture(module: torch.nn.Module, args: tuple[torch.Tensor, ...], *,
            keep_ops: tuple[str, ...] = plugin.KEEP_OPS, dynamic_shapes: Any = None) -> ExportedProgram:
    """What ``claim``/``preprocess`` receive: the plugin kit's capture (the core's) with ``keep_ops`` whole."""
    return kit.capture(None, module, args, keep_ops=keep_ops, dynamic_shapes=dynamic_shapes)


def candidates(ep: ExportedProgram) -> list[torch.fx.Node]:
    """The exact node list the core hands to ``claim`` (the plugin kit's)."""
    return kit.candidates(ep)


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
    handle = plugin.init(cd.blob, cd.meta, opts, cd.sections)
    try:
        outs = plugin.execute(handle, list(inputs if inputs is not None else args))
    finally:
        plugin.destroy(handle)
    return Run(outs, cd, claims)


def eager(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module.eval()(*args)
    return list(out) if isinstance(out, (tuple, list)) else [out]
