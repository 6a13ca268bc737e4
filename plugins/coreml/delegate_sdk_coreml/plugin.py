"""The delegate-sdk hooks of the Core ML backend: thin wrappers over rules, compiler and runtime."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch
from torch.export import ExportedProgram

from delegate_sdk import BackendInfo, Claims, CompiledDelegate, hookimpl
from delegate_sdk_coreml import __version__, rules, runtime
from delegate_sdk_coreml.compiler import (
    BLOB_FORMAT,
    BLOB_FORMAT_VERSION,
    compile_program,
)
from delegate_sdk_coreml.options import DEFAULT_PRECISION, OPTIONS, PRECISIONS

log = logging.getLogger(__name__)

NAME = "coreml"


def _toolchain_version() -> str | None:
    if importlib.util.find_spec("coremltools") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("coremltools")
    except PackageNotFoundError:
        return None


@hookimpl
def describe() -> BackendInfo:
    ct_version = _toolchain_version()
    where_runs = runtime.host_runtime()
    where = ("Core ML" if where_runs == "coreml"
             else "the numpy MIL interpreter (Core ML needs macOS; the converted ML Program is executed as saved)")
    return BackendInfo(
        name=NAME,
        version=__version__,
        precisions=PRECISIONS,
        default_precision=DEFAULT_PRECISION,
        blob_format=BLOB_FORMAT,
        blob_format_version=BLOB_FORMAT_VERSION,
        loadable_format_versions=(1, 1),
        keep_ops=rules.KEEP_OPS,
        options=OPTIONS,
        available=ct_version is not None,
        unavailable_reason="" if ct_version else "coremltools is not installed: pip install coremltools==9.0",
        thread_safe=where_runs != "coreml",
        description=f"Apple Core ML via coremltools {ct_version or '(missing)'}; runs on {where}",
    )


@hookimpl
def claim(program: ExportedProgram, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Claims:
    return rules.table.claim(program, nodes, options)


@hookimpl
def preprocess(program: ExportedProgram, options: dict[str, Any],
               calibration: list[tuple[torch.Tensor, ...]] | None) -> CompiledDelegate:
    return compile_program(program, options, check_interpreter=not runtime.core_ml_available())


@hookimpl
def init(blob: bytes, meta: dict[str, Any], options: dict[str, Any]) -> Any:
    return runtime.load(blob, meta, options)


@hookimpl
def execute(handle: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return runtime.execute(handle, inputs)


@hookimpl
def destroy(handle: Any) -> None:
    runtime.close(handle)


@hookimpl
def conformance_cases() -> list[Any]:
    from delegate_sdk_coreml.conformance_cases import cases

    return cases()
