"""Helpers for the QNN plugin tests: build a partition program, compile it on the real QNN
HTP backend (x86-64 emulator) through the plugin's hooks, run it, measure the error."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from delegate_sdk.types import CompiledDelegate, QuantParams
from delegate_sdk_qnn import plugin


def partition_program(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """What preprocess receives when the whole model is one partition (keep_ops honoured)."""
    table = torch.export.default_decompositions()
    for name in plugin.describe().keep_ops:
        ns, op, overload = name.split(".")
        table.pop(getattr(getattr(getattr(torch.ops, ns), op), overload), None)
    return torch.export.export(model.eval(), args).run_decompositions(table)


def candidates(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    return [n for n in ep.graph.nodes if n.op == "call_function" and n.target is not operator.getitem]


def calibration_for(args: tuple[torch.Tensor, ...], n: int = 16, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append(tuple(torch.randn(a.shape, generator=g) * a.std() + a.mean() if a.is_floating_point() else a
                         for a in args))
    return [*out, tuple(args)]


@dataclass
class Run:
    """One compiled-and-run case: delegate outputs, eager outputs, fake-quant reference outputs."""

    outputs: list[torch.Tensor]
    eager: list[torch.Tensor]
    reference: list[torch.Tensor] | None
    compiled: CompiledDelegate
    handle: Any

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
                    options: dict[str, Any] | None = None, calibration: Any = None,
                    require_all_claimed: bool = True) -> Run:
    model = model.eval()
    ep = partition_program(model, args)
    opts = {"precision": precision, **(options or {})}
    if require_all_claimed:
        claims = plugin.claim(ep, candidates(ep), opts)
        assert not claims.refused, f"refused: {[(r.node, r.code.value, r.message) for r in claims.refused]}"
    quantized = precision in ("int8", "a16w8")
    calib = (calibration if calibration is not None else calibration_for(args)) if quantized else None
    cd = plugin.preprocess(ep, opts, calib)
    handle = plugin.init(cd.blob, cd.meta, opts)
    outs = plugin.execute(handle, list(args))
    ref = plugin.reference_execute(cd.blob, cd.meta, opts, list(args))
    with torch.no_grad():
        eager = model(*args)
    eager_list = list(eager) if isinstance(eager, (tuple, list)) else [eager]
    assert len(outs) == len(eager_list)
    for o, e in zip(outs, eager_list):
        assert o.dtype == e.dtype and o.shape == e.shape, (o.dtype, o.shape, e.dtype, e.shape)
    return Run(outs, eager_list, ref, cd, handle)


@pytest.fixture(scope="session")
def qnn_available() -> None:
    info = plugin.describe()
    assert info.available, f"QNN HTP backend unavailable: {info.unavailable_reason}"


class Helpers:
    """Exposed to test modules as the ``qnn`` fixture (test modules cannot import conftest
    under pytest's importlib import mode)."""

    partition_program = staticmethod(partition_program)
    candidates = staticmethod(candidates)
    calibration_for = staticmethod(calibration_for)
    compile_and_run = staticmethod(compile_and_run)


@pytest.fixture(scope="session")
def qnn(qnn_available: None) -> type[Helpers]:
    return Helpers
