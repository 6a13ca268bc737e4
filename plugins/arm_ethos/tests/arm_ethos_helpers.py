"""What the arm_ethos tests need beyond the plugin kit (``delegate_sdk.testing``): hook options, calibration
samples, and whole-module runs on the TOSA reference model compared with eager and the fake-quant reference.
(A uniquely named module: ``conftest`` is ambiguous when several plugins' tests run in one pytest session.)"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from delegate_sdk import testing

BACKEND = "arm_ethos"
TARGET_DEFAULTS = {"system_config": "auto", "memory_mode": "auto"}


def options(target: str = "ethos-u55-128", precision: str = "int8", **kw: Any) -> dict[str, Any]:
    """Options as a hook receives them, for calling the plugin's hooks directly."""
    return {"precision": precision, "target": target, **TARGET_DEFAULTS, **kw}


def calibration(args: tuple[Any, ...], n: int = 6, seed: int = 0) -> list[tuple[Any, ...]]:
    g = torch.Generator().manual_seed(seed)
    out = [tuple(torch.randn(a.shape, generator=g) * a.std() + a.mean() if a.is_floating_point() else a
                 for a in args) for _ in range(n)]
    return out + [args]


@dataclass
class OpResult:
    lsb_eager: float  # max |delegate - eager| in output quantization steps
    lsb_ref: float  # max |delegate - fake-quant reference| in steps
    lsb_ref_eager: float  # max |reference - eager| in steps (the quantization error itself)
    op_counts: dict[str, int]
    tosa: bytes
    refused: tuple[Any, ...]  # what the claim rules refused in this module (u55-128 unless told)
    sqnr_db: float = float("inf")  # the worst float output's SQNR against eager


def run_on_reference_model(module: torch.nn.Module, args: tuple[Any, ...], precision: str = "int8",
                           calib: list[tuple[Any, ...]] | None = None, target: str = "ethos-u55-128") -> OpResult:
    """Claim, quantize + lower the whole module, run it on the TOSA reference model, compare with eager."""
    from delegate_sdk_arm_ethos import refgraph, runtime
    from delegate_sdk_arm_ethos.compiler import quantize_and_lower

    claimed = testing.claim(BACKEND, module, args, target=target, precision=precision)
    qz = quantize_and_lower(claimed.program, precision, calib or calibration(args))
    low = qz.lowered
    handle = runtime.Handle(runtime._relabel_for_reference_model(low.tosa), low.inputs, low.outputs, "")
    outs = runtime.run(handle, list(args))
    fq = refgraph.run(qz.ref_graph, qz.ref_consts, list(args))
    with torch.no_grad():
        ref = module(*args)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    e1 = e2 = e3 = 0.0
    sqnr = float("inf")
    for o, r, f, io in zip(outs, ref, fq, low.outputs):
        assert o.shape == r.shape and o.dtype == r.dtype
        if io.q is None:  # bool: must equal the reference exactly, eager may differ near thresholds
            assert torch.equal(o, f)
            continue
        e1 = max(e1, float((o - r).abs().max()) / io.q.scale)
        e2 = max(e2, float((o - f).abs().max()) / io.q.scale)
        e3 = max(e3, float((f - r).abs().max()) / io.q.scale)
        noise = float((o - r).pow(2).sum())
        if noise > 0:
            sqnr = min(sqnr, 10 * math.log10(float(r.pow(2).sum()) / noise))
    return OpResult(e1, e2, e3, dict(low.op_counts), low.tosa, claimed.claims.refused, sqnr)
