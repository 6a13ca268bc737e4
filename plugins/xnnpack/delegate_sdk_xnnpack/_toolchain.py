"""Lazy, quiet access to ExecuTorch.

ExecuTorch and the torchao it pulls in write to the terminal from C++ (cpuinfo
probing, failed optional kernel libraries) and from Python (warnings, a
``logging.basicConfig`` at import time). The SDK promises a silent plugin, so
every toolchain call that may print runs inside :func:`quiet`, which captures
file descriptors 1 and 2 and hands what it caught to this module's logger.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from delegate_sdk.support.quiet import quiet as core_quiet

log = logging.getLogger(__name__)

@contextlib.contextmanager
def quiet(what: str) -> Iterator[None]:
    """Run a toolchain call with everything it prints captured (fds 1/2 too), re-logged at DEBUG."""
    with core_quiet(log, loggers=("executorch", "torchao")) as out:
        yield
    if out.text:
        log.debug("%s wrote:\n%s", what, out.text)


@functools.lru_cache(maxsize=1)
def runtime_module() -> ModuleType:
    """The ExecuTorch runtime extension (``executorch.extension.pybindings._C``).

    ``executorch.runtime`` wraps this same module but imports it through
    ``portable_lib``, which first imports the whole ``executorch.exir`` compiler
    stack (several seconds of CPU) for a warnings decorator. A process that only
    loads and runs blobs needs none of that, so the runtime goes to the extension
    module directly.
    """
    import torch  # noqa: F401  (the extension links against libtorch: load it first)

    with quiet("executorch runtime import"):
        import executorch.extension.pybindings._C as c

        # the first use creates the threadpool, which probes the CPU and prints
        c._threadpool_get_thread_count()
    return c


@functools.lru_cache(maxsize=1)
def executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return ""


@dataclass(frozen=True)
class Compiler:
    """The ExecuTorch compile-side entry points, imported once."""

    to_edge_transform_and_lower: Any
    EdgeCompileConfig: Any
    ExecutorchBackendConfig: Any
    XnnpackPartitioner: Any
    ConfigPrecisionType: Any
    XNNPACKQuantizer: Any
    get_symmetric_quantization_config: Any
    prepare_pt2e: Any
    convert_pt2e: Any
    QuantizationAnnotation: Any
    SharedQuantizationSpec: Any
    executorch_call_delegate: Any


@functools.lru_cache(maxsize=1)
def compiler() -> Compiler:
    with quiet("executorch compiler import"):
        from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.delegate import executorch_call_delegate
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    class PreservingXnnpackPartitioner(XnnpackPartitioner):
        """The XNNPACK partitioner, keeping its whole ops (linear, max_pool2d, ...) without a per-node check.

        With a per-node check, ``to_edge_transform_and_lower`` re-traces the
        program three times (mark, decompose, restore); without one, once. The
        check only decides whether an op XNNPACK cannot take should be
        decomposed for the portable kernels instead; this plugin's claim rules
        already refused such nodes, and a preserved node left outside the
        delegate is caught as a contract error after lowering.
        """

        def ops_to_not_decompose(self, ep: Any) -> tuple[list[Any], None]:
            ops, _check = super().ops_to_not_decompose(ep)
            return ops, None

    return Compiler(
        to_edge_transform_and_lower=to_edge_transform_and_lower,
        EdgeCompileConfig=EdgeCompileConfig,
        ExecutorchBackendConfig=ExecutorchBackendConfig,
        XnnpackPartitioner=PreservingXnnpackPartitioner,
        ConfigPrecisionType=ConfigPrecisionType,
        XNNPACKQuantizer=XNNPACKQuantizer,
        get_symmetric_quantization_config=get_symmetric_quantization_config,
        prepare_pt2e=prepare_pt2e,
        convert_pt2e=convert_pt2e,
        QuantizationAnnotation=QuantizationAnnotation,
        SharedQuantizationSpec=SharedQuantizationSpec,
        executorch_call_delegate=executorch_call_delegate,
    )
