"""delegate-sdk hooks for the Arm Ethos-U NPU (TOSA 1.0 INT + Vela; host numerics on the TOSA reference model)."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk import BackendInfo, Claims, CompiledDelegate, hookimpl
from delegate_sdk_arm_ethos import __version__
from delegate_sdk_arm_ethos import blob as blobfmt
from delegate_sdk_arm_ethos.options import OPTIONS

# Ops the lowering handles better whole than decomposed (one CONV2D / one TABLE instead of several ops).
KEEP_OPS = (
    "aten.linear.default", "aten.hardswish.default", "aten.silu.default", "aten.hardsigmoid.default",
    "aten.mish.default", "aten.softplus.default", "aten.celu.default", "aten.selu.default",
    "aten.hardshrink.default", "aten.softshrink.default",
)


def _missing() -> list[str]:
    need = {"tosa_serializer": "tosa-tools", "tosa_reference_model": "tosa-tools", "ethosu.vela": "ethos-u-vela"}
    missing = []
    for mod, dist in need.items():
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found and dist not in missing:
            missing.append(dist)
    return missing


@hookimpl
def describe() -> BackendInfo:
    missing = _missing()
    return BackendInfo(
        name="arm_ethos",
        version=__version__,
        precisions=("int8", "a16w8"),
        default_precision="int8",
        blob_format=blobfmt.FORMAT,
        blob_format_version=blobfmt.FORMAT_VERSION,
        loadable_format_versions=(1, 1),
        keep_ops=KEEP_OPS,
        options=OPTIONS,
        available=not missing,
        unavailable_reason=(f"{' and '.join(missing)} not installed: pip install delegate-sdk-arm-ethos"
                            if missing else ""),
        thread_safe=False,
        description="Arm Ethos-U55/U65/U85 NPU: TOSA 1.0 INT graph compiled by Vela; on a host without the NPU "
                    "the TOSA graph runs on the TOSA reference model",
    )


@hookimpl
def validate_options(options: dict[str, Any]) -> None:
    from delegate_sdk_arm_ethos.options import resolve

    resolve(options)  # ValueError names the inconsistent target / system_config / memory_mode


@hookimpl
def claim(program: ExportedProgram, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Claims:
    from delegate_sdk_arm_ethos.rules import claim as claim_nodes

    return claim_nodes(program, nodes, options)


@hookimpl
def preprocess(program: ExportedProgram, options: dict[str, Any],
               calibration: list[tuple[torch.Tensor, ...]] | None) -> CompiledDelegate:
    from delegate_sdk_arm_ethos.compiler import compile_partition

    return compile_partition(program, options, calibration)


@hookimpl
def init(blob: bytes, meta: dict[str, Any], options: dict[str, Any]) -> Any:
    from delegate_sdk_arm_ethos.runtime import load

    return load(blob, meta)


@hookimpl
def execute(handle: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    from delegate_sdk_arm_ethos.runtime import run

    return run(handle, inputs)


@hookimpl
def destroy(handle: Any) -> None:
    handle.tosa = b""


@hookimpl
def reference_execute(blob: bytes, meta: dict[str, Any], options: dict[str, Any],
                      inputs: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """The partition's float graph with the blob's quantization applied (fake-quant), on eager PyTorch."""
    from delegate_sdk_arm_ethos import refgraph

    sections, _ = blobfmt.unpack(blob)
    if "ref_graph" not in sections:
        return None
    return refgraph.run(sections["ref_graph"], sections["ref_consts"], inputs)
