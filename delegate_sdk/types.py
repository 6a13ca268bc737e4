"""Typed records exchanged between the core and plugins.

Everything here is a small dataclass. Records that end up in an artifact or a
report (``QuantParams``, ``PerfEstimate``, ``Refusal``, ...) round-trip through
JSON via :func:`to_json` / ``from_json`` so that loading an artifact never needs
pickle.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

#: Precisions whose compilation needs calibration data captured by the core.
QUANTIZED_PRECISIONS: frozenset[str] = frozenset({"int8", "a16w8", "int16", "a8w4", "int4"})


def is_quantized(precision: str) -> bool:
    """True for integer precisions (they need calibration inputs)."""
    return precision in QUANTIZED_PRECISIONS or precision.startswith(("int", "a8", "a16", "w8"))


class ReasonCode(str, enum.Enum):
    """Why a node was not delegated. Plugins use the first group; the core the second."""

    # --- given by plugins
    OP = "op"  # the backend has no implementation of this operator
    DTYPE = "dtype"  # an input/output dtype the backend cannot handle
    RANK = "rank"  # tensor rank outside the backend's limits
    SHAPE = "shape"  # a static shape/size limit (channels, kernel size, zero-size, ...)
    ATTR = "attr"  # an argument value the backend does not support (stride, dim, alpha, ...)
    QUANT = "quant"  # cannot be quantized / run at the requested precision
    DYNAMIC = "dynamic"  # dynamic shapes the backend cannot handle
    CONSTANT = "constant"  # an operand must be a compile-time constant (weights) and is not
    RUNTIME = "runtime"  # converts, but this host's runtime cannot execute the result
    PRECISION = "precision"  # not supported at the requested precision
    # --- given by the core
    SKIPPED = "skipped"  # the user asked to skip this op or node
    MIN_SIZE = "min_size"  # claimed, but its partition was smaller than the minimum size
    HOST = "host"  # shape arithmetic / assertion that always runs on the host
    UNAVAILABLE = "unavailable"  # the backend is installed but cannot run here
    UNSPECIFIED = "unspecified"  # the plugin neither claimed nor refused the node (a plugin bug)


@dataclass(frozen=True)
class Refusal:
    """One backend's reason for not taking one node."""

    node: str
    code: ReasonCode
    message: str
    backend: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "code": self.code.value, "message": self.message, "backend": self.backend}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Refusal:
        return cls(d["node"], ReasonCode(d["code"]), d["message"], d.get("backend", ""))


@dataclass(frozen=True)
class Claims:
    """A plugin's answer to ``claim``: nodes it takes, and a reason for each one it refuses.

    Every candidate node handed to ``claim`` must appear in exactly one of the two.
    """

    claimed: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()


@dataclass(frozen=True)
class OptionSpec:
    """One compile/runtime option a plugin accepts. The core validates user values against it."""

    name: str
    type: str  # "str" | "int" | "float" | "bool"
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class BackendInfo:
    """What a plugin says about itself (the ``describe`` hook)."""

    name: str
    version: str
    precisions: tuple[str, ...]
    default_precision: str
    blob_format: str
    blob_format_version: int
    #: inclusive range of blob format versions this plugin's runtime can load
    loadable_format_versions: tuple[int, int]
    #: core ATen ops (e.g. ``"aten.linear.default"``) to keep whole during decomposition
    keep_ops: tuple[str, ...] = ()
    options: tuple[OptionSpec, ...] = ()
    available: bool = True
    #: when not available: a sentence the user can act on ("pip install ...", "needs macOS")
    unavailable_reason: str = ""
    #: True if ``execute`` may be called on one handle from several threads at once
    thread_safe: bool = False
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["options"] = [dataclasses.asdict(o) for o in self.options]
        return d


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of one tensor: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int
    dtype: str  # "uint8", "int8", "uint16", "int16"
    #: per-channel scales (then ``scale`` is their max) and the channel axis
    scales: tuple[float, ...] | None = None
    axis: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QuantParams:
        scales = d.get("scales")
        return cls(float(d["scale"]), int(d["zero_point"]), d["dtype"],
                   tuple(scales) if scales is not None else None, d.get("axis"))


@dataclass(frozen=True)
class PerfEstimate:
    """A toolchain's own performance/memory estimate for a compiled delegate."""

    cycles: int | None = None
    inference_time_s: float | None = None
    sram_bytes: int | None = None
    flash_bytes: int | None = None
    macs: int | None = None
    source: str = ""  # which tool produced it, e.g. "vela 5.2.0 ethos-u55-128"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PerfEstimate:
        return cls(**d)


@dataclass
class CompiledDelegate:
    """What ``preprocess`` returns: an opaque blob plus JSON-able facts about it."""

    blob: bytes
    format: str
    format_version: int
    #: plugin-private, JSON-serialisable data handed back to ``init``
    meta: dict[str, Any] = field(default_factory=dict)
    #: per subgraph output, its quantization at the boundary (None for float outputs)
    output_quant: list[QuantParams | None] = field(default_factory=list)
    perf: PerfEstimate | None = None
    #: delegate-internal op name -> original node names it came from
    debug_map: dict[str, list[str]] = field(default_factory=dict)
    #: op name -> count inside the compiled blob (e.g. MIL ops, TOSA ops)
    op_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorSpec:
    """dtype and shape of one tensor at a graph boundary. A dim is an int or a symbol name."""

    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["dtype"], tuple(d["shape"]))


def to_json(obj: Any) -> Any:
    """JSON form of any record in this module (enums by value)."""
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj
