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
    from delegate_sdk_arm_ethos.rules import rules  # the claim table says which ops it keeps whole

    missing = _missing()
    return BackendInfo(
        name="arm_ethos",
        version=__version__,
        precisions=("int8", "a16w8"),
        default_precision="int8",
        blob_format=blobfmt.FORMAT,
        blob_format_version=blobfmt.FORMAT_VERSION,
        loadable_format_versions=blobfmt.LOADABLE_VERSIONS,
        keep_ops=rules.keep_ops,
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
def init(blob: bytes, meta: dict[str, Any], options: dict[str, Any], sections: dict[str, bytes]) -> Any:
    from delegate_sdk_arm_ethos.runtime import load

    return load(blob, meta, sections)


@hookimpl
def execute(handle: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    from delegate_sdk_arm_ethos.runtime import run

    return run(handle, inputs)


@hookimpl
def destroy(handle: Any) -> None:
    handle.tosa = b""


@hookimpl
def reference_execute(blob: bytes, meta: dict[str, Any], options: dict[str, Any], inputs: list[torch.Tensor],
                      sections: dict[str, bytes]) -> list[torch.Tensor] | None:
    """The partition's float graph with the blob's quantization applied (fake-quant), on eager PyTorch."""
    from delegate_sdk_arm_ethos import refgraph

    _, parts = blobfmt.read(blob, meta, sections)
    if blobfmt.REF_GRAPH not in parts or blobfmt.REF_CONSTS not in parts:
        return None
    return refgraph.run(parts[blobfmt.REF_GRAPH], parts[blobfmt.REF_CONSTS], inputs)


@hookimpl
def conformance_cases() -> list[Any]:
    """Cases for the ops this plugin claims that the built-in corpus never reaches."""
    from delegate_sdk_arm_ethos.conformance_cases import cases

    return cases()
