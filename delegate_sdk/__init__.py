"""delegate-sdk: plug hardware compilers into PyTorch, pick which backend runs which part of a model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from delegate_sdk.errors import DelegateSDKError
from delegate_sdk.hookspecs import hookimpl
from delegate_sdk.types import (
    BackendInfo,
    Claims,
    CompiledDelegate,
    OptionSpec,
    PerfEstimate,
    Precision,
    QuantParams,
    ReasonCode,
    Refusal,
    TensorSpec,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from delegate_sdk.inspect_report import InspectReport
    from delegate_sdk.program import Program

__all__ = [
    "BackendInfo", "Claims", "CompiledDelegate", "DelegateSDKError", "OptionSpec", "PerfEstimate", "Precision",
    "QuantParams", "ReasonCode", "Refusal", "TensorSpec", "__version__", "backends", "hookimpl", "inspect",
    "load", "lower",
]


def lower(model: Any, example_inputs: Any, backends: list[str], *,
          options: dict[str, dict[str, Any]] | None = None, calibration: Any = None,
          dynamic_shapes: Any = None, strict: bool = False, example_kwargs: dict[str, Any] | None = None,
          **partition_options: Any) -> Program:
    """Capture ``model``, partition it over ``backends`` (priority order), compile, return a Program.

    ``example_inputs`` are the positional arguments (a tuple; one tensor alone is fine) and ``example_kwargs``
    the keyword arguments, each any pytree of tensors (tuples, lists, dicts, None), as ``torch.export`` takes
    them; the program is then called the same way. A ``calibration`` sample has the shape of the example
    inputs (or is a dict of keyword arguments, or an ``(args, kwargs)`` pair). Partitioning options:
    ``skip_ops``, ``skip_nodes``, ``min_partition_size``, ``hosted_ops``.
    """
    from delegate_sdk.lowering import lower as _lower

    return _lower(model, example_inputs, backends, options=options, calibration=calibration,
                  dynamic_shapes=dynamic_shapes, strict=strict, example_kwargs=example_kwargs, **partition_options)


def inspect(model: Any, example_inputs: Any, backends: list[str], *,
            options: dict[str, dict[str, Any]] | None = None, dynamic_shapes: Any = None,
            example_kwargs: dict[str, Any] | None = None, **partition_options: Any) -> InspectReport:
    """Who would take which node, and every backend's reason for each node left to eager. No compilation."""
    from delegate_sdk.lowering import inspect as _inspect

    return _inspect(model, example_inputs, backends, options=options, dynamic_shapes=dynamic_shapes,
                    example_kwargs=example_kwargs, **partition_options)


def load(path: Any) -> Program:
    """Load an artifact written by ``Program.save``; needs only the plugins' runtimes."""
    from delegate_sdk.program import load as _load

    return _load(path)


def backends() -> list[BackendInfo]:
    """Installed plugins: versions, precisions, available or not and why."""
    from delegate_sdk.registry import default_registry

    return [b.info() for b in default_registry().all()]
