"""delegate-sdk hooks of the QNN plugin: thin wrappers over rules, compiler and runtime."""

from __future__ import annotations

from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk import BackendInfo, Claims, CompiledDelegate, hookimpl
from delegate_sdk_qnn import __version__, rules, runtime
from delegate_sdk_qnn.blob_format import (
    BLOB_FORMAT,
    BLOB_FORMAT_VERSION,
    LOADABLE_FORMAT_VERSIONS,
)
from delegate_sdk_qnn.options import DEFAULT_PRECISION, OPTIONS, PRECISIONS
from delegate_sdk_qnn.qnn_env import probe, versions

#: kept whole so that torch.onnx exports it as MatMul/Softmax/MatMul; the core-ATen
#: decomposition adds a -inf equality check that cannot be quantized.
KEEP_OPS = rules.KEEP_OPS


@hookimpl
def describe() -> BackendInfo:
    available, reason = probe()
    v = versions()
    toolchain = ", ".join(f"{k} {val}" for k, val in v.items())
    return BackendInfo(
        name="qnn",
        version=__version__,
        precisions=PRECISIONS,
        default_precision=DEFAULT_PRECISION,
        blob_format=BLOB_FORMAT,
        blob_format_version=BLOB_FORMAT_VERSION,
        loadable_format_versions=LOADABLE_FORMAT_VERSIONS,
        keep_ops=KEEP_OPS,
        options=OPTIONS,
        available=available,
        unavailable_reason=reason,
        thread_safe=False,
        hosts_ops=True,
        description=f"Qualcomm Hexagon HTP via the ONNX Runtime QNN execution provider ({toolchain}); "
                    "on x86-64 Linux the HTP backend is an emulator",
    )


@hookimpl
def claim(program: ExportedProgram, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Claims:
    claims = rules.claim(program, nodes, options)
    if options.get("hosted_ops"):
        from delegate_sdk_qnn.hosting import with_hosting

        claims = with_hosting(claims, nodes)
    return claims


@hookimpl
def preprocess(program: ExportedProgram, options: dict[str, Any],
               calibration: list[tuple[torch.Tensor, ...]] | None) -> CompiledDelegate:
    # the compiler (torch.onnx, the quantization tooling) is imported only when compiling:
    # loading an artifact needs the runtime alone
    from delegate_sdk_qnn.compiler import compile_partition

    return compile_partition(program, options, calibration)


@hookimpl
def init(blob: bytes, meta: dict[str, Any], options: dict[str, Any],
         sections: dict[str, bytes]) -> runtime.QnnHandle:
    return runtime.init(blob, meta, options, sections)


@hookimpl
def execute(handle: runtime.QnnHandle, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return runtime.execute(handle, inputs)


@hookimpl
def destroy(handle: runtime.QnnHandle) -> None:
    runtime.destroy(handle)


@hookimpl
def reference_execute(blob: bytes, meta: dict[str, Any], options: dict[str, Any],
                      inputs: list[torch.Tensor], sections: dict[str, bytes]) -> list[torch.Tensor] | None:
    return runtime.reference_execute(blob, meta, options, inputs, sections)


@hookimpl
def conformance_cases() -> list[Any]:
    from delegate_sdk_qnn.conformance_cases import cases

    return cases()
