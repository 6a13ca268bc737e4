"""preprocess: calibrate, quantize and lower a partition to TOSA 1.0 INT, then compile it with Vela."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram

from delegate_sdk import CompiledDelegate, PerfEstimate, QuantParams
from delegate_sdk_arm_ethos import blob as blobfmt
from delegate_sdk_arm_ethos import refgraph
from delegate_sdk_arm_ethos.runtime import _relabel_for_reference_model, _to_tosa_input
from delegate_sdk_arm_ethos.graph_eval import constant_nodes, evaluate, graph_inputs
from delegate_sdk_arm_ethos.lowering import Lowered, LoweringError, RangeObserver, lower_program
from delegate_sdk_arm_ethos.lowering.batch_norm_folding import fold_batch_norms
from delegate_sdk_arm_ethos.options import Target, resolve
from delegate_sdk_arm_ethos.vela import ReferenceModelError, VelaError, VelaResult, compile_tosa

log = logging.getLogger(__name__)

ACT_DTYPE = {"int8": "int8", "a16w8": "int16"}


@dataclass
class Quantized:
    lowered: Lowered
    ref_graph: bytes  # fake-quant reference (refgraph.py)
    ref_consts: bytes
    selfcheck_lsb: float = 0.0  # TOSA graph vs fake-quant reference on one calibration sample


def quantize_and_lower(program: ExportedProgram, precision: str,
                       calibration: list[tuple[torch.Tensor, ...]] | None) -> Quantized:
    """The TOSA graph of a partition and its fake-quant reference (no Vela). Raises ValueError."""
    if precision not in ACT_DTYPE:
        raise ValueError(f"precision {precision!r} is not supported; use one of {', '.join(ACT_DTYPE)}")
    program, folded = fold_batch_norms(program)
    gi = graph_inputs(program)
    if not calibration:
        if gi.user:
            raise ValueError(f"precision {precision} needs calibration inputs to choose activation ranges "
                             "(pass calibration=[...] to lower)")
        calibration = [()]
    obs = RangeObserver()
    env: dict[str, Any] = {}
    try:
        for sample in calibration:
            sample = tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in sample)
            env = evaluate(program, gi, sample, hook=obs)
    except Exception as e:
        raise ValueError(f"running the partition on the calibration inputs failed: {type(e).__name__}: {e}") \
            from None
    const_env = {n: env[n] for n in constant_nodes(program, gi) if n in env}
    try:
        lowered = lower_program(program, gi, const_env, obs.ranges(), ACT_DTYPE[precision], folded)
    except LoweringError as e:
        raise ValueError(f"TOSA lowering failed: {e}") from None
    graph, consts = refgraph.build(program, gi, const_env, lowered.node_q, lowered.weights, lowered.interpolated)
    return Quantized(lowered, graph, consts)


def selfcheck_lsb(q: Quantized, sample: list[torch.Tensor], got: list[np.ndarray]) -> float:
    """Largest distance (output LSB) between the reference model's result and the fake-quant reference."""
    from delegate_sdk_arm_ethos.runtime import _from_tosa_output

    ref = refgraph.run(q.ref_graph, q.ref_consts, sample)
    worst = 0.0
    for a, b, io in zip(got, ref, q.lowered.outputs):
        if io.q is not None:
            worst = max(worst, float((_from_tosa_output(a, io) - b).abs().max()) / io.q.scale)
    return worst


def perf_from_vela(v: VelaResult, target: Target) -> PerfEstimate:
    return PerfEstimate(cycles=v.cycles, inference_time_s=v.inference_time_s, sram_bytes=v.sram_bytes,
                        flash_bytes=v.flash_bytes, macs=v.macs,
                        source=f"vela {v.version} {target.accelerator} {target.system_config} {target.memory_mode}")


def compile_partition(program: ExportedProgram, options: dict[str, Any],
                      calibration: list[tuple[torch.Tensor, ...]] | None) -> CompiledDelegate:
    target = resolve(options)
    precision = str(options.get("precision", "int8"))
    t0 = time.perf_counter()
    quantized = quantize_and_lower(program, precision, calibration)
    lowered = quantized.lowered
    t1 = time.perf_counter()
    # The reference model runs the graph once on a calibration sample (in the compiler's child
    # process): a graph it rejects fails here, at compile time, not in execute.
    sample = list(calibration[-1]) if calibration else []
    check_inputs = [_to_tosa_input(t, io) for t, io in zip(sample, lowered.inputs)]
    try:
        v = compile_tosa(lowered.tosa, target.accelerator, target.system_config, target.memory_mode,
                         check=(_relabel_for_reference_model(lowered.tosa), check_inputs))
    except ReferenceModelError as e:
        raise RuntimeError(f"the lowered TOSA graph is invalid: {e}") from None
    except VelaError as e:
        ops = ", ".join(f"{k}x{n}" for k, n in sorted(lowered.op_counts.items()))
        raise RuntimeError(f"Vela could not compile the TOSA graph for {target.accelerator} ({ops}): {e}") \
            from None
    quantized.selfcheck_lsb = selfcheck_lsb(quantized, sample, v.check_outputs or [])
    log.debug("lowered in %.3f s (TOSA vs fake-quant reference: %.2f LSB), Vela %.3f s", t1 - t0,
              quantized.selfcheck_lsb, v.compile_s)
    perf = perf_from_vela(v, target)
    vela_meta = {
        "version": v.version, "cycles": v.cycles, "inference_time_s": v.inference_time_s,
        "sram_bytes": v.sram_bytes, "dram_bytes": v.dram_bytes, "flash_bytes": v.flash_bytes, "macs": v.macs,
        "npu_ops": v.npu_ops, "cpu_ops": v.cpu_ops, "command_stream_bytes": v.cmd_bytes,
        "weight_bytes": v.weight_bytes, "scratch_bytes": v.scratch_bytes, "compile_s": round(v.compile_s, 3),
    }
    info = {"target": target.accelerator, "system_config": target.system_config,
            "memory_mode": target.memory_mode, "precision": precision, "tosa_version": "1.0.0"}
    sections = {blobfmt.VELA: v.npz, blobfmt.REF_GRAPH: quantized.ref_graph,
                blobfmt.REF_CONSTS: quantized.ref_consts}
    meta = {
        **info,
        "sections": sorted(sections),
        "inputs": [io.to_json() for io in lowered.inputs],
        "outputs": [io.to_json() for io in lowered.outputs],
        "vela": vela_meta,
        "tosa_op_counts": lowered.op_counts,
        "selfcheck_lsb": round(quantized.selfcheck_lsb, 3),
    }
    output_quant = [QuantParams(io.q.scale, io.q.zero_point, io.q.dtype) if io.q else None
                    for io in lowered.outputs]
    return CompiledDelegate(blob=lowered.tosa, format=blobfmt.FORMAT, format_version=blobfmt.FORMAT_VERSION,
                            meta=meta, output_quant=output_quant, perf=perf, debug_map=lowered.debug_map,
                            op_counts=lowered.op_counts, sections=sections)
