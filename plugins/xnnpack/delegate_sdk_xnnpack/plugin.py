"""The xnnpack plugin's hooks: thin wrappers over rules (claim), compiler (preprocess) and runtime.

Importing this module is cheap: ExecuTorch itself is imported on first use
(the runtime extension at ``describe``/``init``, the compiler at ``preprocess``).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk import hookimpl
from delegate_sdk.types import BackendInfo, Claims, CompiledDelegate

from delegate_sdk_xnnpack import __version__, runtime
from delegate_sdk_xnnpack._toolchain import executorch_version
from delegate_sdk_xnnpack.compiler import BLOB_FORMAT, BLOB_FORMAT_VERSION, compile_partition
from delegate_sdk_xnnpack.options import OPTIONS
from delegate_sdk_xnnpack import rules as _rules_module
from delegate_sdk_xnnpack.rules import rules

NAME = "xnnpack"
PRECISIONS = ("fp32", "int8")
#: ops kept whole by the core (the claim table's keep_whole rows): XNNPACK has a kernel for each
KEEP_OPS = _rules_module.KEEP_OPS


@functools.lru_cache(maxsize=1)
def _info() -> BackendInfo:
    available, reason = runtime.backend_status()
    et = executorch_version()
    return BackendInfo(
        name=NAME,
        version=__version__,
        precisions=PRECISIONS,
        default_precision="fp32",
        blob_format=BLOB_FORMAT,
        blob_format_version=BLOB_FORMAT_VERSION,
        loadable_format_versions=(1, 2),
        keep_ops=KEEP_OPS,
        options=OPTIONS,
        available=available,
        unavailable_reason=reason,
        thread_safe=False,
        hosts_ops=True,
        description=f"XNNPACK CPU kernels through ExecuTorch {et or '(not installed)'}'s XNNPACK delegate; "
                    "fp32, and int8 static (per-channel weights, per-tensor activations)",
    )


@hookimpl
def describe() -> BackendInfo:
    return _info()


@hookimpl
def claim(program: ExportedProgram, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Claims:
    claims = rules.claim(program, nodes, options)
    if options.get("hosted_ops") and options.get("precision") == "fp32":
        from delegate_sdk_xnnpack.hosting import with_hosting

        claims = with_hosting(claims, nodes)
    return claims


@hookimpl
def preprocess(program: ExportedProgram, options: dict[str, Any],
               calibration: list[tuple[torch.Tensor, ...]] | None) -> CompiledDelegate:
    return compile_partition(program, options, calibration)


@hookimpl
def init(blob: bytes, meta: dict[str, Any], options: dict[str, Any], sections: dict[str, bytes]) -> Any:
    return runtime.load(blob, meta, options, sections)


@hookimpl
def execute(handle: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return runtime.run(handle, inputs)


@hookimpl
def destroy(handle: Any) -> None:
    runtime.release(handle)


@hookimpl
def conformance_cases() -> list[Any]:
    from delegate_sdk_xnnpack.conformance_cases import cases

    return cases()
