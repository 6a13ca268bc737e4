"""Helpers for this plugin's tests that the plugin kit (``delegate_sdk.testing``) has no counterpart for.

The kit captures and lowers; these call the hooks directly on one partition so that a test sees what a
lowering hides: the ``CompiledDelegate`` (output quantization, meta, sections) and the fake-quant
reference's outputs beside the delegate's, to judge the HTP in output quantization steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk import testing as kit
from delegate_sdk.types import CompiledDelegate, QuantParams
from delegate_sdk_qnn import plugin

QUANTIZED = ("int8", "a16w8")


def capture(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> ExportedProgram:
    """What ``claim`` and, for a model that is one partition, ``preprocess`` receive (the kit's capture)."""
    return kit.capture("qnn", model, args)


def calibration_for(args: tuple[torch.Tensor, ...], n: int = 16, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """``n`` random input tuples shaped and scaled like ``args``, then ``args`` itself, so that the ranges the
    quantizer picks cover the inputs a test runs."""
    g = torch.Generator().manual_seed(seed)
    out = [tuple(torch.randn(a.shape, generator=g) * a.std() + a.mean() if a.is_floating_point() else a
                 for a in args) for _ in range(n)]
    return [*out, tuple(args)]


@dataclass
class Run:
    """One compiled-and-run partition: delegate outputs, eager outputs, fake-quant reference outputs."""

    outputs: list[torch.Tensor]
    eager: list[torch.Tensor]
    reference: list[torch.Tensor] | None
    compiled: CompiledDelegate
    handle: Any
    options: dict[str, Any]

    def quant(self, i: int = 0) -> QuantParams:
        q = self.compiled.output_quant[i]
        assert q is not None, f"output {i} has no quantization parameters"
        return q

    def lsb(self, i: int = 0, against: str = "eager") -> float:
        """Max error of output i in output quantization steps, against eager or the reference."""
        other = self.eager[i] if against == "eager" else self.reference[i]  # type: ignore[index]
        return float((self.outputs[i] - other).abs().max()) / self.quant(i).scale

    def ref_lsb(self, i: int = 0) -> float:
        """The fake-quant reference's own error against eager, in output steps."""
        assert self.reference is not None
        return float((self.reference[i] - self.eager[i]).abs().max()) / self.quant(i).scale

    def rel(self, i: int = 0) -> float:
        """Max abs error relative to the largest eager magnitude (float precisions)."""
        e = self.eager[i].float()
        return float((self.outputs[i].float() - e).abs().max()) / max(float(e.abs().max()), 1e-6)


def compile_and_run(model: torch.nn.Module, args: tuple[torch.Tensor, ...], precision: str,
                    options: dict[str, Any] | None = None, calibration: Any = None) -> Run:
    """``model`` as one partition: every node must be claimed, then preprocess, init, execute and
    reference_execute on ``args``, checked for output count, dtype and shape against eager."""
    model = model.eval()
    ep = capture(model, args)
    opts = {"precision": precision, **(options or {})}
    claims = plugin.claim(ep, kit.candidates(ep), opts)
    assert not claims.refused, f"refused: {[(r.node, r.code.value, r.message) for r in claims.refused]}"
    calib = (calibration if calibration is not None else calibration_for(args)) if precision in QUANTIZED else None
    cd = plugin.preprocess(ep, opts, calib)
    handle = plugin.init(cd.blob, cd.meta, opts, cd.sections)
    outs = plugin.execute(handle, list(args))
    ref = plugin.reference_execute(cd.blob, cd.meta, opts, list(args), cd.sections)
    with torch.no_grad():
        eager = model(*args)
    eager_list = list(eager) if isinstance(eager, (tuple, list)) else [eager]
    assert len(outs) == len(eager_list)
    for o, e in zip(outs, eager_list):
        assert o.dtype == e.dtype and o.shape == e.shape, (o.dtype, o.shape, e.dtype, e.shape)
    return Run(outs, eager_list, ref, cd, handle, opts)


class Fn(torch.nn.Module):
    """A module around ``fn(self, *inputs)``, for one-op test cases; ``mods`` become its submodules."""

    def __init__(self, fn: Any, **mods: torch.nn.Module):
        super().__init__()
        self.fn = fn
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, *args: torch.Tensor) -> Any:
        return self.fn(self, *args)
