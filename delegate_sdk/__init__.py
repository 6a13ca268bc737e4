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
    "QuantParams", "ReasonCode", "Refusal", "TensorSpec", "__version__", "backends", "compare", "hookimpl",
    "inspect", "load", "lower",
]


def lower(model: Any, example_inputs: Any, backends: list[str] | str, *,
          options: dict[str, dict[str, Any]] | None = None, calibration: Any = None,
          dynamic_shapes: Any = None, strict: bool = False, example_kwargs: dict[str, Any] | None = None,
          **partition_options: Any) -> Program:
    """Capture ``model``, partition it over ``backends`` (priority order), compile, return a Program.

    ``example_inputs`` are the positional arguments (a tuple; one tensor alone is fine) and ``example_kwargs``
    the keyword arguments, each any pytree of tensors (tuples, lists, dicts, None), as ``torch.export`` takes
    them; the program is then called the same way. A ``calibration`` sample has the shape of the example
    inputs (or is a dict of keyword arguments, or an ``(args, kwargs)`` pair). Partitioning options:
    ``skip_ops``, ``skip_nodes``, ``min_partition_size``, ``hosted_ops``, ``on_compile_error`` (``"fallback"``,
    the default for several backends: a partition its backend fails to compile goes to the next backend or
    eager PyTorch, listed in ``summary().compile_failures``; ``"raise"``, the default for one backend).
    """
    if backends == "auto":
        return _lower_auto(model, example_inputs, options=options, calibration=calibration,
                           dynamic_shapes=dynamic_shapes, example_kwargs=example_kwargs, **partition_options)
    from delegate_sdk.lowering import lower as _lower

    return _lower(model, example_inputs, backends, options=options, calibration=calibration,
                  dynamic_shapes=dynamic_shapes, strict=strict, example_kwargs=example_kwargs, **partition_options)


def _lower_auto(model: Any, example_inputs: Any, *, options: Any, calibration: Any, dynamic_shapes: Any,
                example_kwargs: Any, policy: Any = None, **partition_options: Any) -> Program:
    """``backends="auto"``: compare every available backend at its default precision and keep the one the
    policy (:class:`delegate_sdk.comparison.Policy`; SQNR >= 30 dB, then MACs, then latency) recommends."""
    from delegate_sdk.comparison import compare
    from delegate_sdk.errors import UsageError

    if partition_options:
        raise UsageError(f"backends='auto' takes no partitioning options ({', '.join(partition_options)})")
    result = compare(model, example_inputs, example_kwargs=example_kwargs, dynamic_shapes=dynamic_shapes,
                     options=options, calibration=calibration if calibration is not None else 8, policy=policy)
    pick = result.recommended
    if pick is None:
        raise UsageError(f"backends='auto': {result.recommendation.reason}")
    return pick.program


def inspect(model: Any, example_inputs: Any, backends: list[str], *,
            options: dict[str, dict[str, Any]] | None = None, dynamic_shapes: Any = None,
            example_kwargs: dict[str, Any] | None = None, **partition_options: Any) -> InspectReport:
    """Who would take which node, and every backend's reason for each node left to eager. No compilation."""
    from delegate_sdk.lowering import inspect as _inspect

    return _inspect(model, example_inputs, backends, options=options, dynamic_shapes=dynamic_shapes,
                    example_kwargs=example_kwargs, **partition_options)


def compare(model: Any, example_inputs: Any, configs: Any = None, **kwargs: Any) -> Any:
    """Lower ``model`` every way in ``configs`` and compare coverage, accuracy and latency: see
    :func:`delegate_sdk.comparison.compare`; returns a :class:`delegate_sdk.comparison.Comparison`."""
    from delegate_sdk.comparison import compare as _compare

    return _compare(model, example_inputs, configs, **kwargs)


def load(path: Any) -> Program:
    """Load an artifact written by ``Program.save``; needs only the plugins' runtimes."""
    from delegate_sdk.program import load as _load

    return _load(path)


def backends() -> list[BackendInfo]:
    """Installed plugins: versions, precisions, available or not and why."""
    from delegate_sdk.registry import default_registry

    return [b.info() for b in default_registry().all()]
