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

@dataclass(frozen=True)
class Precision:
    """What a precision name means. Conformance tolerances, calibration and the quantization reference all
    follow this declaration, never the spelling of the name.

    ``kind="float"``: the delegate computes in the float ``dtype`` (``"float32"``, ``"float16"``,
    ``"bfloat16"``); no calibration. ``kind="quantized"``: activations are integers of ``activation_bits``
    and weights of ``weight_bits``; the core captures calibration inputs for ``preprocess`` and judges
    outputs in quantization steps.
    """

    name: str
    kind: str
    dtype: str = ""
    activation_bits: int = 0
    weight_bits: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind == "float":
            if self.dtype not in FLOAT_DTYPES:
                raise ValueError(f"precision {self.name!r}: a float precision needs dtype one of "
                                 f"{', '.join(FLOAT_DTYPES)}, not {self.dtype!r}")
            if self.activation_bits or self.weight_bits:
                raise ValueError(f"precision {self.name!r}: a float precision has no integer bit widths")
        elif self.kind == "quantized":
            for what, bits in (("activation_bits", self.activation_bits), ("weight_bits", self.weight_bits)):
                if not isinstance(bits, int) or not 2 <= bits <= 32:
                    raise ValueError(f"precision {self.name!r}: {what} must be an integer in [2, 32], not {bits!r}")
            if self.dtype:
                raise ValueError(f"precision {self.name!r}: a quantized precision has bit widths, not a dtype")
        else:
            raise ValueError(f"precision {self.name!r}: kind must be 'float' or 'quantized', not {self.kind!r}")

    @property
    def quantized(self) -> bool:
        """True when the core must capture calibration data and judge in quantization steps."""
        return self.kind == "quantized"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Precision:
        return cls(d["name"], d["kind"], d.get("dtype", ""), int(d.get("activation_bits", 0)),
                   int(d.get("weight_bits", 0)), d.get("description", ""))


#: float dtypes a float precision may compute in
FLOAT_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")

#: The core's precision vocabulary. A plugin lists names from here in ``BackendInfo.precisions``; a name
#: outside it must be declared in ``BackendInfo.precision_specs`` (with what it means), or the plugin is refused.
PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", "float", "float32", description="IEEE-754 single precision"),
    Precision("fp16", "float", "float16", description="IEEE-754 half precision"),
    Precision("bf16", "float", "bfloat16", description="bfloat16 (8-bit exponent, 7-bit mantissa)"),
    Precision("int8", "quantized", activation_bits=8, weight_bits=8, description="8-bit activations and weights"),
    Precision("a16w8", "quantized", activation_bits=16, weight_bits=8,
              description="16-bit activations, 8-bit weights"),
    Precision("int16", "quantized", activation_bits=16, weight_bits=16,
              description="16-bit activations and weights"),
    Precision("a8w4", "quantized", activation_bits=8, weight_bits=4, description="8-bit activations, 4-bit weights"),
    Precision("int4", "quantized", activation_bits=4, weight_bits=4, description="4-bit activations and weights"),
)}

#: spellings people use for a vocabulary name (only to suggest the right one in an error)
_PRECISION_ALIASES = {
    "float32": "fp32", "float": "fp32", "f32": "fp32", "single": "fp32", "float16": "fp16", "half": "fp16",
    "f16": "fp16", "bfloat16": "bf16", "qint8": "int8", "uint8": "int8", "w8a8": "int8", "a8w8": "int8",
    "qint16": "int16", "a16w16": "int16", "w16a16": "int16", "w8a16": "a16w8", "w4a8": "a8w4", "a4w4": "int4",
}


def resolve_precision(name: str, declared: tuple[Precision, ...] = ()) -> Precision:
    """The meaning of precision ``name``: a plugin's own declaration, else the core vocabulary.

    Raises ValueError naming the unknown name (with the vocabulary name it probably means).
    """
    for p in declared:
        if p.name == name:
            return p
    if name in PRECISIONS:
        return PRECISIONS[name]
    hint = f" (did you mean {_PRECISION_ALIASES[name.lower()]!r}?)" if name.lower() in _PRECISION_ALIASES else ""
    raise ValueError(f"precision {name!r} is not in the core's vocabulary{hint}; use one of "
                     f"{', '.join(PRECISIONS)}, or declare what it means in BackendInfo.precision_specs "
                     "(delegate_sdk.Precision)")


def is_quantized(precision: str | Precision) -> bool:
    """True for quantized precisions (they need calibration inputs). A name must be in the vocabulary."""
    if isinstance(precision, Precision):
        return precision.quantized
    return resolve_precision(precision).quantized


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
    HOSTED_ALONE = "hosted_alone"  # the backend could host it on its CPU, but no accelerated node was next to it
    TRIVIAL = "trivial"  # claimed, but its partition would compute only a constant or move a few views' data
    COMPILE_FAILED = "compile_failed"  # claimed, but the backend failed to compile its partition (fallback mode)
    HOST = "host"  # shape arithmetic / assertion that always runs on the host
    UNAVAILABLE = "unavailable"  # the backend is installed but cannot run here
    #: kept so that artifacts written by delegate-sdk 0.1 load; the core now refuses such a claim outright
    UNSPECIFIED = "unspecified"


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

    Every candidate node handed to ``claim`` must appear in exactly one of them.
    """

    claimed: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()
    #: nodes the backend's runtime runs on its host CPU inside its partitions (only when the lowering asked for
    #: hosted ops: ``options["hosted_ops"]``); counted apart from the accelerated ``claimed`` ones
    hosted: tuple[str, ...] = ()


#: ``node.meta`` key set on the nodes of a partition program that the backend claimed as hosted
HOSTED_META = "delegate_sdk_hosted"


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
    #: True if the runtime can also run ops the accelerator cannot on its host CPU, inside a partition (ExecuTorch
    #: portable kernels, a CPU provider in the same session), so that neighbouring partitions merge; used only
    #: when a lowering asks for hosted ops
    hosts_ops: bool = False
    description: str = ""
    #: what each precision name outside the core vocabulary (:data:`PRECISIONS`) means
    precision_specs: tuple[Precision, ...] = ()

    def precision(self, name: str) -> Precision:
        """The meaning of one of this plugin's precisions (ValueError if it is not one of them)."""
        if name not in self.precisions:
            raise ValueError(f"backend {self.name!r} does not support precision {name!r}; it supports "
                             f"{', '.join(self.precisions)}")
        return resolve_precision(name, self.precision_specs)

    def check(self) -> None:
        """ValueError naming the first thing in this record the core cannot work with."""
        if not self.precisions:
            raise ValueError("BackendInfo.precisions is empty")
        for spec in self.precision_specs:
            if not isinstance(spec, Precision):
                raise ValueError(f"BackendInfo.precision_specs holds a {type(spec).__name__}, not a Precision")
            if spec.name in PRECISIONS and spec != PRECISIONS[spec.name]:
                raise ValueError(f"BackendInfo.precision_specs redefines the core precision {spec.name!r}; "
                                 "give your variant its own name")
        for name in self.precisions:
            resolve_precision(name, self.precision_specs)
        if self.default_precision not in self.precisions:
            raise ValueError(f"default_precision {self.default_precision!r} is not one of the precisions "
                             f"{', '.join(self.precisions)}")

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["options"] = [dataclasses.asdict(o) for o in self.options]
        d["precision_specs"] = [self.precision(p).to_json() for p in self.precisions
                                if _resolvable(p, self.precision_specs)]
        return d


def _resolvable(name: str, declared: tuple[Precision, ...]) -> bool:
    try:
        resolve_precision(name, declared)
    except ValueError:
        return False
    return True


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
    #: named byte sections stored beside the blob and handed to ``init`` as they were (weights, a data map,
    #: ...). The artifact stores each distinct content once, so partitions holding the same constants (the
    #: steps of an unrolled RNN, a weight used twice) pay for them once; no container format of your own.
    sections: dict[str, bytes] = field(default_factory=dict)


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
