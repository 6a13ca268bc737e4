"""Execute a saved Core ML ML Program (MIL) with numpy, for hosts where Core ML itself is absent.

Core ML only runs on Apple platforms. Everywhere else this module reads the MIL
program that coremltools wrote into a ``.mlpackage`` (the ``mlProgram`` of the
package's ``Model.mlmodel`` protobuf, with weights in ``weights/weight.bin``)
and runs its operations one by one, following the MIL op definitions
(``coremltools.converters.mil.mil.ops.defs``): the same inputs, defaults and
formulas, including their quirks (``inverse`` adds ``epsilon``, ``log`` adds
``epsilon`` ...).

Precision: every op computes in float32 from its (possibly fp16) inputs and
rounds its result to the dtype the program declares for that output. For an
fp16 program this is fp16 arithmetic with one rounding per op, which is what the
Neural Engine and GPU do (they accumulate reductions and dot products in wider
registers and store fp16 activations). fp32 programs compute in float32
throughout, overflow included (an edge value squared in a norm is inf, as in
eager PyTorch).

Only the proto definitions of coremltools are needed here: importing the whole
of coremltools takes seconds (it pulls in its converters), so the protobuf
modules are loaded on their own unless coremltools is already imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import math
import os
import struct
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class MILError(RuntimeError):
    """The program cannot be read or an op failed while running."""


class UnsupportedMILOpError(MILError):
    """The program uses MIL ops this interpreter does not implement."""

    def __init__(self, ops: Sequence[str]):
        self.ops = tuple(sorted(set(ops)))
        super().__init__(f"MIL op(s) not implemented by the numpy interpreter: {', '.join(self.ops)}")


# --------------------------------------------------------------------------------------------- protobuf

_PRIVATE_PROTO_PACKAGE = "_delegate_sdk_coreml_proto"


def proto_module(name: str = "Model_pb2") -> Any:
    """coremltools' generated protobuf module ``name`` (``Model_pb2``, ``MIL_pb2``)."""
    if "coremltools.proto" in sys.modules or "coremltools" in sys.modules:
        return importlib.import_module(f"coremltools.proto.{name}")
    if _PRIVATE_PROTO_PACKAGE not in sys.modules:
        spec = importlib.util.find_spec("coremltools")
        if spec is None or spec.origin is None:
            raise MILError("coremltools is not installed: pip install coremltools==9.0")
        proto_dir = os.path.join(os.path.dirname(spec.origin), "proto")
        pkg_spec = importlib.util.spec_from_file_location(
            _PRIVATE_PROTO_PACKAGE, os.path.join(proto_dir, "__init__.py"), submodule_search_locations=[proto_dir])
        assert pkg_spec is not None and pkg_spec.loader is not None
        pkg = importlib.util.module_from_spec(pkg_spec)
        sys.modules[_PRIVATE_PROTO_PACKAGE] = pkg
        try:
            pkg_spec.loader.exec_module(pkg)
        except Exception:
            del sys.modules[_PRIVATE_PROTO_PACKAGE]
            raise
    return importlib.import_module(f"{_PRIVATE_PROTO_PACKAGE}.{name}")


# MIL DataType enum values (MIL.proto) -> numpy dtypes. STRING values become Python str.
_DTYPES: dict[int, Any] = {
    1: np.bool_, 2: str, 10: np.float16, 11: np.float32, 12: np.float64,
    21: np.int8, 22: np.int16, 23: np.int32, 24: np.int64,
    31: np.uint8, 32: np.uint16, 33: np.uint32, 34: np.uint64,
}
_DTYPE_NAMES = {1: "bool", 2: "string", 10: "fp16", 11: "fp32", 12: "fp64", 13: "bf16", 21: "int8", 22: "int16",
                23: "int32", 24: "int64", 25: "int4", 31: "uint8", 32: "uint16", 33: "uint32", 34: "uint64"}

#: the dtype strings of MIL ``cast`` (and ``output_dtype`` inputs)
_CAST_DTYPES: dict[str, Any] = {
    "fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
    "bool": np.bool_,
}


@dataclass(frozen=True)
class TensorType:
    """Declared type of one value: numpy dtype (``str`` for strings) and shape (None entries: unknown dims)."""

    dtype: Any
    shape: tuple[int | None, ...] | None

    @property
    def static(self) -> bool:
        return self.shape is not None and all(d is not None for d in self.shape)


def _tensor_type(value_type: Any) -> TensorType:
    which = value_type.WhichOneof("type")
    if which != "tensorType":
        raise MILError(f"values of kind {which!r} are not supported (only tensors)")
    tt = value_type.tensorType
    if tt.dataType not in _DTYPES:
        raise MILError(f"MIL data type {_DTYPE_NAMES.get(tt.dataType, tt.dataType)} is not supported")
    if tt.rank < 0:
        shape = None
    else:
        dims: list[int | None] = []
        for d in tt.dimensions:
            dims.append(int(d.constant.size) if d.WhichOneof("dimension") == "constant" else None)
        shape = tuple(dims)
    return TensorType(_DTYPES[tt.dataType], shape)


class BlobFile:
    """Reader of a MIL weight blob file (``weights/weight.bin``).

    Layout (coremltools' MILBlob storage, version 2): a 64-byte file header,
    then per blob a 64-byte metadata record (sentinel ``0xDEADBEEF``, data type,
    size in bytes, offset of the data) followed by the data. A ``BlobFileValue``
    points at the metadata record.
    """

    SENTINEL = 0xDEADBEEF

    def __init__(self, path: Path):
        self.path = path
        self._data = path.read_bytes()

    def read(self, offset: int, ttype: TensorType) -> np.ndarray:
        if offset + 24 > len(self._data):
            raise MILError(f"{self.path.name}: blob offset {offset} beyond the end of the file")
        sentinel, _mil_dtype, size, data_offset = struct.unpack_from("<IIQQ", self._data, offset)
        if sentinel != self.SENTINEL:
            raise MILError(f"{self.path.name}: no blob at offset {offset} (bad sentinel {sentinel:#x})")
        if data_offset + size > len(self._data):
            raise MILError(f"{self.path.name}: blob at {offset} is truncated")
        if ttype.shape is None or not ttype.static:
            raise MILError("a blob value needs a static shape")
        dtype = np.dtype(ttype.dtype)
        count = int(np.prod(ttype.shape, dtype=np.int64))
        if count * dtype.itemsize != size:
            raise MILError(f"{self.path.name}: blob at {offset} has {size} bytes, expected "
                           f"{count * dtype.itemsize} for {dtype}{list(ttype.shape)}")
        arr = np.frombuffer(self._data, dtype=dtype.newbyteorder("<"), count=count, offset=data_offset)
        return arr.reshape(ttype.shape).astype(dtype, copy=True)


def _decode_value(value: Any, blobs: Callable[[str], BlobFile]) -> Any:
    """A MIL ``Value`` (immediate or in a blob file) as a numpy array, or a str for strings."""
    ttype = _tensor_type(value.type)
    which = value.WhichOneof("value")
    if which == "blobFileValue":
        return blobs(value.blobFileValue.fileName).read(int(value.blobFileValue.offset), ttype)
    if which != "immediateValue":
        raise MILError(f"unsupported value kind {which!r}")
    imm = value.immediateValue
    if imm.WhichOneof("value") != "tensor":
        raise MILError(f"unsupported immediate value kind {imm.WhichOneof('value')!r}")
    tv = imm.tensor
    kind = tv.WhichOneof("value")
    shape = ttype.shape if ttype.shape is not None else ()
    if ttype.dtype is str:
        strings = list(tv.strings.values)
        return strings[0] if len(shape) == 0 else np.array(strings, dtype=object).reshape(shape)
    dtype = np.dtype(ttype.dtype)
    if kind == "bytes":
        raw = tv.bytes.values
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    elif kind is None:
        arr = np.zeros(0, dtype=dtype)
    else:
        arr = np.asarray(list(getattr(tv, kind).values)).astype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if arr.size != count:
        raise MILError(f"immediate value has {arr.size} elements, its type says {count}")
    return arr.reshape(shape)


# --------------------------------------------------------------------------------------------- program


@dataclass(frozen=True)
class Ref:
    """A reference to a named value in the program."""

    name: str


@dataclass
class Operation:
    type: str
    name: str
    #: input name -> bindings (a Ref or a decoded immediate value); more than one for tuple inputs (concat values)
    inputs: dict[str, tuple[Any, ...]]
    outputs: tuple[tuple[str, TensorType], ...]
    has_blocks: bool = False


@dataclass
class Function:
    name: str
    opset: str
    inputs: tuple[tuple[str, TensorType], ...]
    outputs: tuple[str, ...]
    operations: list[Operation]

    @property
    def ios_version(self) -> int:
        """16 for opset CoreML6 (iOS16), 17 for CoreML7 ..., 26 for CoreML9 (iOS26)."""
        digits = "".join(c for c in self.opset if c.isdigit())
        n = int(digits) if digits else 6
        return n + 10 if n <= 8 else 26


@dataclass
class MILProgram:
    """The functions of one ML Program, as read from its protobuf."""

    functions: dict[str, Function]
    spec_version: int = 0
    output_types: dict[str, TensorType] = field(default_factory=dict)

    @classmethod
    def from_package(cls, package: str | os.PathLike[str]) -> MILProgram:
        """Read ``<package>.mlpackage`` (a directory): its root model spec and the weight files it names."""
        root = Path(package)
        manifest_path = root / "Manifest.json"
        if not manifest_path.is_file():
            raise MILError(f"{root} is not an .mlpackage (no Manifest.json)")
        try:
            manifest = json.loads(manifest_path.read_text())
            item = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
            model_path = root / "Data" / item["path"]
        except (ValueError, KeyError) as e:
            raise MILError(f"{manifest_path}: cannot find the root model ({e})") from None
        model_pb2 = proto_module("Model_pb2")
        spec = model_pb2.Model()
        try:
            spec.ParseFromString(model_path.read_bytes())
        except Exception as e:  # protobuf raises DecodeError subclasses of varying names
            raise MILError(f"{model_path.name} is not a Core ML model spec: {e}") from None
        return cls.from_spec(spec, model_path.parent)

    @classmethod
    def from_spec(cls, spec: Any, model_dir: Path) -> MILProgram:
        if spec.WhichOneof("Type") != "mlProgram":
            raise MILError(f"the model is a {spec.WhichOneof('Type')!r}, not an ML Program")
        files: dict[str, BlobFile] = {}

        def blobs(name: str) -> BlobFile:
            if name not in files:
                rel = name.removeprefix("@model_path/")
                path = (model_dir / rel).resolve()
                if model_dir.resolve() not in path.parents:
                    raise MILError(f"blob file {name!r} points outside the package")
                if not path.is_file():
                    raise MILError(f"blob file {name!r} is missing from the package")
                files[name] = BlobFile(path)
            return files[name]

        functions = {}
        for fname, fn in spec.mlProgram.functions.items():
            functions[fname] = _read_function(fname, fn, blobs)
        out_types = {}
        for o in spec.description.output:
            ma = o.type.multiArrayType
            out_types[o.name] = TensorType({65552: np.float16, 65568: np.float32, 65600: np.float64,
                                            131104: np.int32}.get(ma.dataType, np.float32),
                                           tuple(int(d) for d in ma.shape))
        return cls(functions, int(spec.specificationVersion), out_types)

    def function(self, name: str = "main") -> Function:
        if name not in self.functions:
            raise MILError(f"the program has no function {name!r} (has {', '.join(self.functions)})")
        return self.functions[name]

    def op_counts(self, function: str = "main") -> dict[str, int]:
        return dict(sorted(Counter(op.type for op in self.function(function).operations).items()))


def _read_function(name: str, fn: Any, blobs: Callable[[str], BlobFile]) -> Function:
    opset = fn.opset
    if opset not in fn.block_specializations:
        raise MILError(f"function {name!r} has no block for its opset {opset!r}")
    block = fn.block_specializations[opset]
    inputs = tuple((i.name, _tensor_type(i.type)) for i in fn.inputs)
    ops = []
    for op in block.operations:
        outs = tuple((o.name, _tensor_type(o.type)) for o in op.outputs)
        ins: dict[str, tuple[Any, ...]] = {}
        if op.type == "const":
            ins["val"] = (_decode_value(op.attributes["val"], blobs),)
        else:
            for key, arg in op.inputs.items():
                bindings: list[Any] = []
                for b in arg.arguments:
                    if b.WhichOneof("binding") == "name":
                        bindings.append(Ref(b.name))
                    else:
                        bindings.append(_decode_value(b.value, blobs))
                ins[key] = tuple(bindings)
        op_name = outs[0][0] if outs else op.type
        ops.append(Operation(op.type, op_name, ins, outs, has_blocks=len(op.blocks) > 0))
    return Function(name, opset, inputs, tuple(block.outputs), ops)


# --------------------------------------------------------------------------------------------- kernels


class Args:
    """The resolved inputs of one op call, plus what the program declares about its outputs."""

    __slots__ = ("values", "out", "ios")

    def __init__(self, values: dict[str, Any], out: tuple[TensorType, ...], ios: int):
        self.values = values
        self.out = out
        self.ios = ios

    def __getitem__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise MILError(f"required input {key!r} is missing") from None

    def get(self, key: str, default: Any = None) -> Any:
        v = self.values.get(key)
        return default if v is None else v

    def int(self, key: str, default: int | None = None) -> int:
        v = self.values.get(key)
        if v is None:
            if default is None:
                raise MILError(f"required input {key!r} is missing")
            return default
        return int(np.asarray(v).reshape(()))

    def ints(self, key: str, default: Sequence[int] | None = None) -> list[int]:
        v = self.values.get(key)
        if v is None:
            if default is None:
                raise MILError(f"required input {key!r} is missing")
            return list(default)
        return [int(i) for i in np.asarray(v).reshape(-1)]

    def bool(self, key: str, default: bool) -> bool:
        v = self.values.get(key)
        return default if v is None else bool(np.asarray(v).reshape(()))

    def float(self, key: str, default: float) -> float:
        v = self.values.get(key)
        return default if v is None else float(np.asarray(v).reshape(()))

    def str(self, key: str, default: str) -> str:
        v = self.values.get(key)
        return default if v is None else str(v)


Kernel = Callable[[Args], Any]
KERNELS: dict[str, Kernel] = {}


def kernel(*names: str) -> Callable[[Kernel], Kernel]:
    def deco(fn: Kernel) -> Kernel:
        for n in names:
            KERNELS[n] = fn
        return fn

    return deco


def implemented_ops() -> frozenset[str]:
    """MIL op types this interpreter can run."""
    return frozenset(KERNELS) | {"const"}


def _f(a: Any) -> np.ndarray:
    """Float arrays in the precision kernels compute in (fp16 is widened to fp32, fp64 kept)."""
    a = np.asarray(a)
    if a.dtype == np.float16:
        return a.astype(np.float32)
    return a


def _axis(axis: int, rank: int) -> int:
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise MILError(f"axis {axis} out of range for rank {rank}")
    return axis % max(rank, 1)


def _axes(a: Args, key: str, rank: int) -> tuple[int, ...] | None:
    v = a.values.get(key)
    if v is None:
        return None
    return tuple(sorted({_axis(int(i), rank) for i in np.asarray(v).reshape(-1)}))


# --- element-wise binary ops: numpy broadcasting, as in MIL


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Kernel:
    def run(a: Args) -> np.ndarray:
        x, y = np.asarray(a["x"]), np.asarray(a["y"])
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            return fn(_f(x), _f(y))
        return fn(x, y)

    return run


def _floor_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iu" and y.dtype.kind in "iu" and np.any(y == 0):
        raise MILError("integer floor_div by zero")
    # the op definition's value inference is Python's //: floor of the exact quotient, inf // y is NaN
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.floor_divide(x, y)


def _mod(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iu" and y.dtype.kind in "iu" and np.any(y == 0):
        raise MILError("integer mod by zero")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mod(x, y)


def _real_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if x.dtype.kind in "iu" and y.dtype.kind in "iu":
            # MIL real_div on integers keeps the integer type: rounds toward zero like C
            return np.trunc(x.astype(np.float64) / y.astype(np.float64))
        return np.true_divide(x, y)


def _pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if x.dtype.kind in "iu" and y.dtype.kind in "iu":
            return np.power(x.astype(np.float64), y.astype(np.float64))
        return np.power(x, y)


def _errstate(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def run(*args: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(*args)

    return run


KERNELS.update({
    "add": _binary(np.add), "sub": _binary(np.subtract), "mul": _binary(np.multiply),
    "real_div": _binary(_real_div), "floor_div": _binary(_floor_div), "mod": _binary(_mod),
    "pow": _binary(_pow), "maximum": _binary(np.maximum), "minimum": _binary(np.minimum),
    "equal": _binary(np.equal), "not_equal": _binary(np.not_equal), "less": _binary(np.less),
    "less_equal": _binary(np.less_equal), "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "logical_and": _binary(np.logical_and), "logical_or": _binary(np.logical_or),
    "logical_xor": _binary(np.logical_xor),
})


# --- element-wise unary ops


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Kernel:
    safe = _errstate(fn)

    def run(a: Args) -> np.ndarray:
        return safe(_f(a["x"]))

    return run


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)) if x.size else x.astype(np.float64)


def _gelu(a: Args) -> np.ndarray:
    x = _f(a["x"]).astype(np.float64)
    mode = a.str("mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1.0 + np.exp(-1.702 * x))
    raise MILError(f"gelu mode {mode!r} is not one of EXACT, TANH_APPROXIMATION, SIGMOID_APPROXIMATION")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _round_half_even(x: np.ndarray) -> np.ndarray:
    return np.round(x)


KERNELS.update({
    "abs": _unary(np.abs), "acos": _unary(np.arccos), "asin": _unary(np.arcsin), "atan": _unary(np.arctan),
    "atanh": _unary(np.arctanh), "ceil": _unary(np.ceil), "cos": _unary(np.cos), "cosh": _unary(np.cosh),
    "erf": _unary(_erf), "exp": _unary(np.exp), "exp2": _unary(np.exp2), "floor": _unary(np.floor),
    "round": _unary(_round_half_even), "sign": _unary(np.sign), "sin": _unary(np.sin), "sinh": _unary(np.sinh),
    "sqrt": _unary(np.sqrt), "square": _unary(np.square), "tan": _unary(np.tan), "tanh": _unary(np.tanh),
    "relu": _unary(lambda x: np.maximum(x, 0).astype(x.dtype)),
    "relu6": _unary(lambda x: np.clip(x, 0, 6).astype(x.dtype)),
    "sigmoid": _unary(_sigmoid), "silu": _unary(lambda x: x * _sigmoid(x)),
    "softplus": _unary(lambda x: np.logaddexp(0, x)),
    "softsign": _unary(lambda x: x / (1 + np.abs(x))),
    "logical_not": _unary(np.logical_not), "identity": lambda a: np.array(a["x"], copy=True),
    "gelu": _gelu,
})


@kernel("inverse")
def _inverse(a: Args) -> np.ndarray:
    x = _f(a["x"])
    with np.errstate(divide="ignore"):
        return 1.0 / (x + np.asarray(a.float("epsilon", 1e-4), dtype=x.dtype))


@kernel("log")
def _log(a: Args) -> np.ndarray:
    x = _f(a["x"])
    # the epsilon is a value of the op's dtype: 1e-45 becomes 0 in an fp16 program
    eps = np.asarray(a.get("epsilon", np.float32(1e-45))).astype(np.asarray(a["x"]).dtype).astype(x.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x + eps)


@kernel("rsqrt")
def _rsqrt(a: Args) -> np.ndarray:
    x = _f(a["x"])
    eps = np.asarray(a.get("epsilon", np.float32(1e-12))).astype(np.asarray(a["x"]).dtype).astype(x.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(x + eps)


@kernel("clip")
def _clip(a: Args) -> np.ndarray:
    return np.minimum(np.maximum(_f(a["x"]), _f(a["alpha"])), _f(a["beta"]))


@kernel("threshold")
def _threshold(a: Args) -> np.ndarray:
    return np.maximum(_f(a["x"]), _f(a["alpha"]))


@kernel("leaky_relu")
def _leaky_relu(a: Args) -> np.ndarray:
    x = _f(a["x"])
    return np.where(x >= 0, x, x * a.float("alpha", 0.01))


@kernel("elu")
def _elu(a: Args) -> np.ndarray:
    x = _f(a["x"])
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, a.float("alpha", 1.0) * np.expm1(np.minimum(x, 0)))


@kernel("clamped_relu")
def _clamped_relu(a: Args) -> np.ndarray:
    x = _f(a["x"])
    return np.minimum(np.where(x >= 0, x, x * a.float("alpha", 0.0)), a.float("beta", 6.0))


@kernel("sigmoid_hard")
def _sigmoid_hard(a: Args) -> np.ndarray:
    x = _f(a["x"])
    return np.clip(a.float("alpha", 0.2) * x + a.float("beta", 0.5), 0.0, 1.0)


@kernel("linear_activation")
def _linear_activation(a: Args) -> np.ndarray:
    return a.float("alpha", 1.0) * _f(a["x"]) + a.float("beta", 0.0)


@kernel("scaled_tanh")
def _scaled_tanh(a: Args) -> np.ndarray:
    return a.float("alpha", 1.0) * np.tanh(a.float("beta", 1.0) * _f(a["x"]))


@kernel("thresholded_relu")
def _thresholded_relu(a: Args) -> np.ndarray:
    x = _f(a["x"])
    return np.where(x > a.float("alpha", 1.0), x, 0).astype(x.dtype)


@kernel("softplus_parametric")
def _softplus_parametric(a: Args) -> np.ndarray:
    x = _f(a["x"])
    alpha, beta = _channel_param(_f(a["alpha"]), x), _channel_param(_f(a["beta"]), x)
    return alpha * np.logaddexp(0, beta * x)


def _channel_param(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A per-channel (axis 1) parameter, shaped to broadcast against ``x``."""
    p = np.asarray(p).reshape(-1)
    if p.size == 1:
        return p.reshape(())
    return p.reshape((1, -1) + (1,) * (x.ndim - 2))


@kernel("prelu")
def _prelu(a: Args) -> np.ndarray:
    x = _f(a["x"])
    alpha = _channel_param(_f(a["alpha"]), x)
    return np.where(x >= 0, x, x * alpha)


@kernel("softmax")
def _softmax(a: Args) -> np.ndarray:
    x = _f(a["x"])
    axis = _axis(a.int("axis", -1), x.ndim)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


@kernel("cast")
def _cast(a: Args) -> np.ndarray:
    dtype = a.str("dtype", "fp32")
    if dtype not in _CAST_DTYPES:
        raise MILError(f"cast to {dtype!r} is not supported")
    x = np.asarray(a["x"])
    target = np.dtype(_CAST_DTYPES[dtype])
    with np.errstate(invalid="ignore", over="ignore"):
        if target.kind in "iu" and x.dtype.kind == "f":
            # float -> int rounds toward zero; out-of-range values saturate rather than wrap
            info = np.iinfo(target)
            x = np.clip(np.nan_to_num(np.trunc(x.astype(np.float64))), info.min, info.max)
        return x.astype(target)


@kernel("select")
def _select(a: Args) -> np.ndarray:
    cond = np.asarray(a["cond"]).astype(bool)
    x, y = np.asarray(a["a"]), np.asarray(a["b"])
    return np.where(cond, x, y)


# --- linear algebra


@kernel("matmul")
def _matmul(a: Args) -> np.ndarray:
    x, y = _f(a["x"]), _f(a["y"])
    if a.bool("transpose_x", False):
        x = np.swapaxes(x, -1, -2) if x.ndim > 1 else x
    if a.bool("transpose_y", False):
        y = np.swapaxes(y, -1, -2) if y.ndim > 1 else y
    return np.matmul(x, y)


@kernel("linear")
def _linear(a: Args) -> np.ndarray:
    x, w = _f(a["x"]), _f(a["weight"])
    out = np.matmul(x, w.T)
    b = a.get("bias")
    return out if b is None else out + _f(b)


@kernel("einsum")
def _einsum(a: Args) -> np.ndarray:
    values = a["values"]
    values = values if isinstance(values, list) else [values]
    return np.einsum(a.str("equation", ""), *[_f(v) for v in values])


# --- convolution


def _conv_pads(pad_type: str, spatial: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], custom: Sequence[int]) -> list[tuple[int, int]]:
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        if len(custom) != 2 * n:
            raise MILError(f"custom pad has {len(custom)} entries, expected {2 * n}")
        return [(int(custom[2 * i]), int(custom[2 * i + 1])) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for i in range(n):
            eff = (kernel_shape[i] - 1) * dilations[i] + 1
            total = max(0, (math.ceil(spatial[i] / strides[i]) - 1) * strides[i] + eff - spatial[i])
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
        return pads
    raise MILError(f"pad_type {pad_type!r} is not one of valid, same, same_lower, custom")


def _window(xp: np.ndarray, offsets: Sequence[int], out: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """The strided view of the spatial dims of ``xp`` (N, C, *S) starting at ``offsets``."""
    idx = [slice(None), slice(None)]
    for o, n, s in zip(offsets, out, strides):
        idx.append(slice(o, o + (n - 1) * s + 1, s))
    return xp[tuple(idx)]


@kernel("conv")
def _conv(a: Args) -> np.ndarray:
    x, w = _f(a["x"]), _f(a["weight"])
    nsp = x.ndim - 2
    if nsp < 1 or w.ndim != x.ndim:
        raise MILError(f"conv needs x of rank >= 3 and a weight of the same rank, got {x.shape} and {w.shape}")
    strides = a.ints("strides", [1] * nsp)
    dil = a.ints("dilations", [1] * nsp)
    groups = a.int("groups", 1)
    ksz = w.shape[2:]
    pads = _conv_pads(a.str("pad_type", "valid"), x.shape[2:], ksz, strides, dil, a.ints("pad", [0] * 2 * nsp))
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    out_sp = [(xp.shape[2 + i] - ((ksz[i] - 1) * dil[i] + 1)) // strides[i] + 1 for i in range(nsp)]
    if any(o <= 0 for o in out_sp):
        raise MILError(f"conv output would be empty: {out_sp}")
    n, c_in = x.shape[:2]
    c_out = w.shape[0]
    if c_in % groups or c_out % groups or w.shape[1] != c_in // groups:
        raise MILError(f"conv weight {w.shape} does not fit input channels {c_in} with groups={groups}")
    cg, og = c_in // groups, c_out // groups
    # im2col: (N, C, *O, *K) windows of the padded input, then one matrix product per group
    eff = [(ksz[i] - 1) * dil[i] + 1 for i in range(nsp)]
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nsp)))
    win = win[(slice(None), slice(None), *[slice(0, (o - 1) * st + 1, st) for o, st in zip(out_sp, strides)],
               *[slice(None, None, d) for d in dil])]
    n_pos = int(np.prod(out_sp))
    k_size = int(np.prod(ksz))
    # (N, G, Cg, *O, *K) -> (G, N * O, Cg * K)
    cols = win.reshape(n, groups, cg, n_pos, k_size).transpose(1, 0, 3, 2, 4).reshape(groups, n * n_pos, cg * k_size)
    wm = w.reshape(groups, og, cg * k_size).transpose(0, 2, 1)
    out = np.matmul(cols, wm)  # (G, N * O, Og)
    out = out.reshape(groups, n, n_pos, og).transpose(1, 0, 3, 2).reshape(n, c_out, *out_sp)
    b = a.get("bias")
    if b is not None:
        out = out + _f(b).reshape((1, -1) + (1,) * nsp)
    return out


@kernel("conv_transpose")
def _conv_transpose(a: Args) -> np.ndarray:
    x, w = _f(a["x"]), _f(a["weight"])
    nsp = x.ndim - 2
    strides = a.ints("strides", [1] * nsp)
    dil = a.ints("dilations", [1] * nsp)
    groups = a.int("groups", 1)
    ksz = w.shape[2:]
    n, c_in = x.shape[:2]
    if w.shape[0] != c_in or c_in % groups:
        raise MILError(f"conv_transpose weight {w.shape} does not fit input channels {c_in} with groups={groups}")
    og = w.shape[1]
    cg = c_in // groups
    c_out = og * groups
    in_sp = x.shape[2:]
    full = [(in_sp[i] - 1) * strides[i] + (ksz[i] - 1) * dil[i] + 1 for i in range(nsp)]
    acc = np.zeros((n, groups, og, *full), dtype=np.result_type(x.dtype, np.float32))
    xg = x.reshape(n, groups, cg, *in_sp)
    wg = w.reshape(groups, cg, og, *ksz)
    for k in np.ndindex(*ksz):
        contrib = np.einsum("ngc...,gco->ngo...", xg, wg[(slice(None), slice(None), slice(None), *k)])
        idx = [slice(None)] * 3 + [slice(k[i] * dil[i], k[i] * dil[i] + (in_sp[i] - 1) * strides[i] + 1, strides[i])
                                   for i in range(nsp)]
        acc[tuple(idx)] += contrib
    out = acc.reshape(n, c_out, *full)
    pad_type = a.str("pad_type", "valid")
    out_shape = a.get("output_shape")
    if pad_type == "custom":
        pad = a.ints("pad", [0] * 2 * nsp)
        pads = [(pad[2 * i], pad[2 * i + 1]) for i in range(nsp)]
    elif pad_type == "valid":
        pads = [(0, 0)] * nsp
    elif pad_type in ("same", "same_lower"):
        pads = []
        for i in range(nsp):
            total = max(0, full[i] - in_sp[i] * strides[i])
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
    else:
        raise MILError(f"pad_type {pad_type!r} is not one of valid, same, same_lower, custom")
    if out_shape is not None:
        # an explicit output size (torch's output_padding) counts from the leading pad; past the computed
        # full size the output is zero (plus bias)
        target = [int(d) for d in np.asarray(out_shape).reshape(-1)][-nsp:]
        grow = [(0, max(0, p0 + t - f)) for (p0, _), t, f in zip(pads, target, full)]
        out = np.pad(out, [(0, 0), (0, 0), *grow])
        idx = [slice(None), slice(None)] + [slice(p0, p0 + t) for (p0, _), t in zip(pads, target)]
    else:
        idx = [slice(None), slice(None)] + [slice(p0, full[i] - p1) for i, (p0, p1) in enumerate(pads)]
    out = out[tuple(idx)]
    b = a.get("bias")
    if b is not None:
        out = out + _f(b).reshape((1, -1) + (1,) * nsp)
    return out


@kernel("crop")
def _crop(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    ch, cw = a.ints("crop_height"), a.ints("crop_width")
    h, w = x.shape[-2:]
    return x[..., ch[0]:h - ch[1], cw[0]:w - cw[1]]


# --- pooling


def _pool(a: Args, kind: str) -> np.ndarray:
    x = _f(a["x"])
    nsp = x.ndim - 2
    ksz = a.ints("kernel_sizes")
    strides = a.ints("strides", [1] * nsp)
    ceil_mode = a.bool("ceil_mode", False)
    pads = _conv_pads(a.str("pad_type", "valid"), x.shape[2:], ksz, strides, [1] * nsp, a.ints("pad", [0] * 2 * nsp))
    out_sp = []
    extra = []
    for i in range(nsp):
        size = x.shape[2 + i] + pads[i][0] + pads[i][1]
        if ceil_mode:
            o = (size - ksz[i] + strides[i] - 1) // strides[i] + 1
            # as in MIL's shape inference: a last window that starts in the right padding is dropped
            if (o - 1) * strides[i] >= x.shape[2 + i] + pads[i][0] and (pads[i][0] + pads[i][1]) > 0:
                o -= 1
        else:
            o = (size - ksz[i]) // strides[i] + 1
        out_sp.append(o)
        extra.append(max(0, (o - 1) * strides[i] + ksz[i] - size))
    if any(o <= 0 for o in out_sp):
        raise MILError(f"{kind} pool output would be empty: {out_sp}")
    full_pad = [(0, 0), (0, 0)] + [(p0, p1 + e) for (p0, p1), e in zip(pads, extra)]
    if kind == "max":
        xp = np.pad(x, full_pad, constant_values=-np.inf)
        acc = np.full((*x.shape[:2], *out_sp), -np.inf, dtype=x.dtype)
        for k in np.ndindex(*ksz):
            acc = np.maximum(acc, _window(xp, k, out_sp, strides))
        return acc
    if kind == "l2":
        xp = np.pad(x, full_pad)
        acc = np.zeros((*x.shape[:2], *out_sp), dtype=x.dtype)
        for k in np.ndindex(*ksz):
            acc += np.square(_window(xp, k, out_sp, strides))
        return np.sqrt(acc)
    xp = np.pad(x, full_pad)
    acc = np.zeros((*x.shape[:2], *out_sp), dtype=x.dtype)
    # divisor per output position: the real elements, or real + explicit padding (never the ceil overflow)
    real = np.pad(np.ones(x.shape[2:], dtype=x.dtype), [(p0, p1 + e) for (p0, p1), e in zip(pads, extra)])
    inside = np.pad(np.ones([s + p0 + p1 for s, (p0, p1) in zip(x.shape[2:], pads)], dtype=x.dtype),
                    [(0, e) for e in extra])
    weight = real if a.bool("exclude_padding_from_average", False) else inside
    count = np.zeros(out_sp, dtype=x.dtype)
    for k in np.ndindex(*ksz):
        acc += _window(xp, k, out_sp, strides)
        count += _window(weight[None, None], k, out_sp, strides)[0, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return acc / count


KERNELS["max_pool"] = lambda a: _pool(a, "max")
KERNELS["avg_pool"] = lambda a: _pool(a, "avg")
KERNELS["l2_pool"] = lambda a: _pool(a, "l2")


# --- normalization


@kernel("batch_norm")
def _batch_norm(a: Args) -> np.ndarray:
    x = _f(a["x"])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = _f(a["mean"]).reshape(shape), _f(a["variance"]).reshape(shape)
    out = (x - mean) / np.sqrt(var + a.float("epsilon", 1e-5))
    g, b = a.get("gamma"), a.get("beta")
    if g is not None:
        out = out * _f(g).reshape(shape)
    if b is not None:
        out = out + _f(b).reshape(shape)
    return out


@kernel("instance_norm")
def _instance_norm(a: Args) -> np.ndarray:
    x = _f(a["x"])
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + a.float("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    g, b = a.get("gamma"), a.get("beta")
    if g is not None:
        out = out * _f(g).reshape(shape)
    if b is not None:
        out = out + _f(b).reshape(shape)
    return out


@kernel("layer_norm")
def _layer_norm(a: Args) -> np.ndarray:
    x = _f(a["x"])
    axes = _axes(a, "axes", x.ndim)
    if axes is None:
        axes = tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + a.float("epsilon", 1e-5))
    # gamma/beta have the shape of x over the normalized axes
    gshape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    g, b = a.get("gamma"), a.get("beta")
    if g is not None:
        out = out * _f(g).reshape(gshape)
    if b is not None:
        out = out + _f(b).reshape(gshape)
    return out


@kernel("l2_norm")
def _l2_norm(a: Args) -> np.ndarray:
    x = _f(a["x"])
    axes = tuple(range(1, x.ndim)) if x.ndim > 1 else (0,)
    norm = np.sqrt(np.sum(np.square(x), axis=axes, keepdims=True))
    return x / np.maximum(norm, a.float("epsilon", 1e-6))


@kernel("local_response_norm")
def _lrn(a: Args) -> np.ndarray:
    x = _f(a["x"])
    size = a.int("size")
    alpha, beta, k = a.float("alpha", 1e-4), a.float("beta", 0.75), a.float("k", 1.0)
    sq = np.square(x)
    c = x.shape[1]
    acc = np.zeros_like(x)
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c, i + size // 2 + 1)
        acc[:, i] = sq[:, lo:hi].sum(axis=1)
    return x / np.power(k + alpha / size * acc, beta)


# --- reductions


def _reduce(fn: Callable[..., np.ndarray]) -> Kernel:
    def run(a: Args) -> np.ndarray:
        x = _f(a["x"])
        axes = _axes(a, "axes", x.ndim)
        with np.errstate(all="ignore"):
            return fn(x, axis=axes, keepdims=a.bool("keep_dims", False))

    return run


def _log_sum_exp(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis if axis is not None else None)


KERNELS.update({
    "reduce_sum": _reduce(np.sum), "reduce_mean": _reduce(np.mean), "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min), "reduce_prod": _reduce(np.prod),
    "reduce_sum_square": _reduce(lambda x, axis, keepdims: np.sum(np.square(x), axis=axis, keepdims=keepdims)),
    "reduce_l1_norm": _reduce(lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims)),
    "reduce_l2_norm": _reduce(lambda x, axis, keepdims: np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))),
    "reduce_log_sum": _reduce(lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims))),
    "reduce_log_sum_exp": _reduce(_log_sum_exp),
})


def _arg_reduce(fn: Callable[..., np.ndarray]) -> Kernel:
    def run(a: Args) -> np.ndarray:
        x = _f(a["x"])
        axis = _axis(a.int("axis", -1), x.ndim)
        # NaN wins like in a max/min that propagates NaN; ties go to the first index
        out = fn(x, axis=axis)
        if a.bool("keep_dims", False):
            out = np.expand_dims(out, axis)
        return out.astype(_CAST_DTYPES[a.str("output_dtype", "int32")])

    return run


KERNELS["reduce_argmax"] = _arg_reduce(np.argmax)
KERNELS["reduce_argmin"] = _arg_reduce(np.argmin)


@kernel("cumsum")
def _cumsum(a: Args) -> np.ndarray:
    x = _f(a["x"])
    axis = _axis(a.int("axis", 0), x.ndim)
    if a.bool("reverse", False):
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis)
    if a.bool("exclusive", False):
        out = out - x
    if a.bool("reverse", False):
        out = np.flip(out, axis)
    return out


# --- shape and layout


@kernel("reshape")
def _reshape(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    shape = [int(s) for s in np.asarray(a["shape"]).reshape(-1)]
    shape = [x.shape[i] if s == 0 and i < x.ndim else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@kernel("transpose")
def _transpose(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    return np.transpose(x, [_axis(p, x.ndim) for p in a.ints("perm")])


@kernel("expand_dims")
def _expand_dims(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    out_rank = x.ndim + len(a.ints("axes"))
    return np.expand_dims(x, tuple(sorted(_axis(i, out_rank) for i in a.ints("axes"))))


@kernel("squeeze")
def _squeeze(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axes = _axes(a, "axes", x.ndim)
    return np.squeeze(x, axis=axes) if axes is not None else np.squeeze(x)


@kernel("tile")
def _tile(a: Args) -> np.ndarray:
    return np.tile(np.asarray(a["x"]), a.ints("reps"))


@kernel("reverse")
def _reverse(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axes = _axes(a, "axes", x.ndim)
    return np.flip(x, axis=axes if axes is not None else tuple(range(x.ndim)))


def _value_list(v: Any) -> list[np.ndarray]:
    return [np.asarray(i) for i in v] if isinstance(v, list) else [np.asarray(v)]


@kernel("concat")
def _concat(a: Args) -> np.ndarray:
    values = _value_list(a["values"])
    axis = _axis(a.int("axis"), values[0].ndim)
    if a.bool("interleave", False):
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] = shape[axis] * len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@kernel("stack")
def _stack(a: Args) -> np.ndarray:
    values = _value_list(a["values"])
    return np.stack(values, axis=_axis(a.int("axis"), values[0].ndim + 1))


@kernel("split")
def _split(a: Args) -> list[np.ndarray]:
    x = np.asarray(a["x"])
    axis = _axis(a.int("axis"), x.ndim)
    sizes = a.get("split_sizes")
    if sizes is not None:
        bounds = np.cumsum([int(s) for s in np.asarray(sizes).reshape(-1)])[:-1]
        return np.split(x, bounds, axis=axis)
    return np.split(x, a.int("num_splits"), axis=axis)


@kernel("slice_by_index")
def _slice_by_index(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    r = x.ndim
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride", [1] * r)
    bmask = [bool(b) for b in np.asarray(a.get("begin_mask", [False] * r)).reshape(-1)]
    emask = [bool(b) for b in np.asarray(a.get("end_mask", [False] * r)).reshape(-1)]
    smask = [bool(b) for b in np.asarray(a.get("squeeze_mask", [False] * r)).reshape(-1)]
    idx: list[Any] = []
    for i in range(r):
        if smask[i]:
            idx.append(begin[i])
            continue
        b = None if bmask[i] else begin[i]
        e = None if emask[i] else end[i]
        idx.append(slice(b, e, stride[i]))
    return x[tuple(idx)]


@kernel("slice_by_size")
def _slice_by_size(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    begin, size = a.ints("begin"), a.ints("size")
    idx = []
    for i, (b, s) in enumerate(zip(begin, size)):
        b = b % x.shape[i] if b < 0 else b
        idx.append(slice(b, x.shape[i] if s == -1 else b + s))
    return x[tuple(idx)]


@kernel("slice_update")
def _slice_update(a: Args) -> np.ndarray:
    x = np.array(a["x"], copy=True)
    r = x.ndim
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride", [1] * r)
    bmask = [bool(b) for b in np.asarray(a.get("begin_mask", [False] * r)).reshape(-1)]
    emask = [bool(b) for b in np.asarray(a.get("end_mask", [False] * r)).reshape(-1)]
    smask = [bool(b) for b in np.asarray(a.get("squeeze_mask", [False] * r)).reshape(-1)]
    idx: list[Any] = []
    for i in range(r):
        if smask[i]:
            idx.append(begin[i])
        else:
            idx.append(slice(None if bmask[i] else begin[i], None if emask[i] else end[i], stride[i]))
    x[tuple(idx)] = np.asarray(a["update"]).reshape(x[tuple(idx)].shape)
    return x


@kernel("pad")
def _pad(a: Args) -> np.ndarray:
    x = _f(a["x"])
    pad = a.ints("pad")
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = a.str("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, constant_values=a.float("constant_val", 0.0))
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    if mode == "symmetric":
        return np.pad(x, widths, mode="symmetric")
    raise MILError(f"pad mode {mode!r} is not one of constant, reflect, replicate, symmetric")


@kernel("band_part")
def _band_part(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    lower, upper = a.int("lower", -1), a.int("upper", -1)
    m, n = x.shape[-2:]
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return np.where(keep, x, np.zeros((), dtype=x.dtype))


@kernel("shape")
def _shape(a: Args) -> np.ndarray:
    return np.asarray(np.asarray(a["x"]).shape, dtype=np.int32)


@kernel("fill")
def _fill(a: Args) -> np.ndarray:
    return np.full(a.ints("shape"), a.get("value", 0.0))


@kernel("fill_like")
def _fill_like(a: Args) -> np.ndarray:
    return np.full(np.asarray(a["ref_tensor"]).shape, a.get("value", 0.0))


@kernel("range_1d")
def _range_1d(a: Args) -> np.ndarray:
    start, end, step = (np.asarray(a[k]).reshape(()) for k in ("start", "end", "step"))
    return np.arange(start, end, step)


@kernel("pixel_shuffle")
def _pixel_shuffle(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    f = a.int("upscale_factor")
    n, c, h, w = x.shape
    return x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (f * f), h * f, w * f)


@kernel("pixel_unshuffle")
def _pixel_unshuffle(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    f = a.int("downscale_factor")
    n, c, h, w = x.shape
    return x.reshape(n, c, h // f, f, w // f, f).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * f * f, h // f, w // f)


@kernel("space_to_depth")
def _space_to_depth(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    f = a.int("block_size")
    n, c, h, w = x.shape
    return x.reshape(n, c, h // f, f, w // f, f).transpose(0, 3, 5, 1, 2, 4).reshape(n, c * f * f, h // f, w // f)


@kernel("depth_to_space")
def _depth_to_space(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    f = a.int("block_size")
    n, c, h, w = x.shape
    return x.reshape(n, f, f, c // (f * f), h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, c // (f * f), h * f, w * f)


# --- gather / scatter


def _check_indices(idx: np.ndarray, size: int, ios: int, op: str) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64)
    # before iOS17 negative indices count from the end; from iOS17 on they are out of bounds
    low = -size if ios < 17 else 0
    if idx.size and (idx.min() < low or idx.max() >= size):
        raise MILError(f"{op}: index out of bounds for a dimension of size {size} "
                       f"(got {int(idx.min())}..{int(idx.max())})")
    return np.where(idx < 0, idx + size, idx)


@kernel("gather")
def _gather(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axis = _axis(a.int("axis", 0), x.ndim)
    batch_dims = a.int("batch_dims", 0)
    idx = _check_indices(a["indices"], x.shape[axis], a.ios, "gather")
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    # batch_dims: leading dims shared by x and indices, gathered per batch element
    lead = x.shape[:batch_dims]
    outs = [np.take(x[b], idx[b], axis=axis - batch_dims) for b in np.ndindex(*lead)]
    return np.stack(outs).reshape(*lead, *outs[0].shape)


@kernel("gather_along_axis")
def _gather_along_axis(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axis = _axis(a.int("axis", 0), x.ndim)
    idx = _check_indices(a["indices"], x.shape[axis], a.ios, "gather_along_axis")
    return np.take_along_axis(x, idx, axis=axis)


@kernel("gather_nd")
def _gather_nd(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    idx = np.asarray(a["indices"]).astype(np.int64)
    batch_dims = a.int("batch_dims", 0)
    k = idx.shape[-1]
    lead = x.shape[:batch_dims]
    outs = []
    for b in np.ndindex(*lead) if batch_dims else [()]:
        xb, ib = x[b], idx[b]
        for d in range(k):
            ib[..., d] = _check_indices(ib[..., d], xb.shape[d], a.ios, "gather_nd")
        outs.append(xb[tuple(ib[..., d] for d in range(k))])
    return np.stack(outs).reshape(*lead, *outs[0].shape) if batch_dims else outs[0]


def _scatter_apply(out: np.ndarray, index: tuple[Any, ...], upd: np.ndarray, mode: str) -> None:
    ufuncs = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
              "max": np.maximum, "min": np.minimum}
    if mode == "update":
        out[index] = upd
    elif mode in ufuncs:
        ufuncs[mode].at(out, index, upd)
    else:
        raise MILError(f"scatter mode {mode!r} is not one of update, {', '.join(ufuncs)}")


@kernel("scatter")
def _scatter(a: Args) -> np.ndarray:
    data = np.array(_f(a["data"]), copy=True)
    axis = _axis(a.int("axis", 0), data.ndim)
    idx = _check_indices(a["indices"], data.shape[axis], a.ios, "scatter").reshape(-1)
    upd = _f(a["updates"])
    moved = np.moveaxis(data, axis, 0)
    upd_m = np.moveaxis(upd, axis, 0).reshape(len(idx), *moved.shape[1:])
    _scatter_apply(moved, (idx,), upd_m, a.str("mode", "add"))
    return data


@kernel("scatter_along_axis")
def _scatter_along_axis(a: Args) -> np.ndarray:
    data = np.array(_f(a["data"]), copy=True)
    axis = _axis(a.int("axis", 0), data.ndim)
    idx = _check_indices(a["indices"], data.shape[axis], a.ios, "scatter_along_axis")
    upd = _f(a["updates"])
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = idx
    _scatter_apply(data, tuple(np.broadcast_arrays(*grids)), upd, a.str("mode", "add"))
    return data


@kernel("scatter_nd")
def _scatter_nd(a: Args) -> np.ndarray:
    data = np.array(_f(a["data"]), copy=True)
    idx = np.asarray(a["indices"]).astype(np.int64)
    k = idx.shape[-1]
    cols = tuple(_check_indices(idx[..., d], data.shape[d], a.ios, "scatter_nd") for d in range(k))
    _scatter_apply(data, cols, _f(a["updates"]), a.str("mode", "add"))
    return data


@kernel("one_hot")
def _one_hot(a: Args) -> np.ndarray:
    idx = np.asarray(a["indices"]).astype(np.int64)
    depth = a.int("one_hot_vector_size")
    axis = a.int("axis", -1)
    on, off = a.float("on_value", 1.0), a.float("off_value", 0.0)
    hot = np.where(idx[..., None] == np.arange(depth), on, off)
    return np.moveaxis(hot, -1, _axis(axis, idx.ndim + 1))


# --- sorting


def _stable_order(x: np.ndarray, axis: int, ascending: bool) -> np.ndarray:
    # ties keep their original order in both directions, as torch.sort(stable=True) does
    key = x if ascending else -x.astype(np.float64) if x.dtype.kind == "f" else -x.astype(np.int64)
    return np.argsort(key, axis=axis, kind="stable")


@kernel("argsort")
def _argsort(a: Args) -> np.ndarray:
    x = _f(a["x"])
    axis = _axis(a.int("axis", -1), x.ndim)
    return _stable_order(x, axis, a.bool("ascending", False)).astype(np.int32)


@kernel("topk")
def _topk(a: Args) -> list[np.ndarray]:
    x = _f(a["x"])
    axis = _axis(a.int("axis", -1), x.ndim)
    k = a.int("k", 1)
    ascending = a.bool("ascending", False)
    order = np.take(_stable_order(x, axis, ascending), np.arange(k), axis=axis)
    if not a.bool("sort", True):
        order = np.sort(order, axis=axis)
    values = np.take_along_axis(x, order, axis=axis)
    if not a.bool("return_indices", True):
        return [values]
    return [values, order.astype(_CAST_DTYPES[a.str("output_indices_dtype", "int32")])]


# --- resampling


def _linear_coords(out_size: int, in_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        spacing = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        pos = i * spacing
    elif half_pixel:
        spacing = in_size / out_size
        pos = (i + 0.5) * spacing - 0.5
    else:
        pos = i * (in_size / out_size)
    return np.clip(pos, 0, in_size - 1)


def _interp_axis(x: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (pos - lo).astype(x.dtype)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


@kernel("upsample_bilinear")
def _upsample_bilinear(a: Args) -> np.ndarray:
    x = _f(a["x"])
    sh, sw = a.float("scale_factor_height", 1.0), a.float("scale_factor_width", 1.0)
    align = a.bool("align_corners", True)
    half = a.bool("half_pixel_centers", not align)
    h, w = x.shape[-2:]
    oh, ow = math.floor(h * sh), math.floor(w * sw)
    out = _interp_axis(x, x.ndim - 2, _linear_coords(oh, h, align, half))
    return _interp_axis(out, x.ndim - 1, _linear_coords(ow, w, align, half))


_SAMPLING = {"STRICT_ALIGN_CORNERS": (True, False), "ALIGN_CORNERS": (True, False),
             "DEFAULT": (False, False), "OFFSET_CORNERS": (False, True), "UNALIGN_CORNERS": (False, True)}


@kernel("resize_bilinear")
def _resize_bilinear(a: Args) -> np.ndarray:
    x = _f(a["x"])
    h, w = x.shape[-2:]
    oh, ow = a.int("target_size_height", 1), a.int("target_size_width", 1)
    mode = a.str("sampling_mode", "DEFAULT")
    if mode not in _SAMPLING:
        raise MILError(f"resize_bilinear sampling_mode {mode!r} is not supported")
    align, half = _SAMPLING[mode]
    out = _interp_axis(x, x.ndim - 2, _linear_coords(oh, h, align, half))
    return _interp_axis(out, x.ndim - 1, _linear_coords(ow, w, align, half))


def _nearest_index(out_size: int, in_size: int) -> np.ndarray:
    # the source pixel follows the input/output size ratio (coremltools nudges fractional scale factors up
    # so that floor(size * scale) hits the intended output size; dividing by that nudged scale would be off)
    src = np.floor(np.arange(out_size, dtype=np.float64) * (in_size / out_size)).astype(np.int64)
    return np.minimum(src, in_size - 1)


@kernel("upsample_nearest_neighbor")
def _upsample_nearest(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    sh, sw = a.float("scale_factor_height", 1.0), a.float("scale_factor_width", 1.0)
    h, w = x.shape[-2:]
    oh, ow = math.floor(h * sh), math.floor(w * sw)
    out = np.take(x, _nearest_index(oh, h), axis=x.ndim - 2)
    return np.take(out, _nearest_index(ow, w), axis=x.ndim - 1)


@kernel("resize_nearest_neighbor")
def _resize_nearest(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    h, w = x.shape[-2:]
    oh, ow = a.int("target_size_height"), a.int("target_size_width")
    out = np.take(x, _nearest_index(oh, h), axis=x.ndim - 2)
    return np.take(out, _nearest_index(ow, w), axis=x.ndim - 1)


# --- attention


@kernel("scaled_dot_product_attention")
def _sdpa(a: Args) -> np.ndarray:
    q, k, v = _f(a["query"]), _f(a["key"]), _f(a["value"])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    mask = a.get("attn_mask")
    if mask is not None:
        mask = np.asarray(mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + _f(mask)
    with np.errstate(invalid="ignore"):
        m = np.max(scores, axis=-1, keepdims=True)
        e = np.exp(scores - m)
        return np.matmul(e / np.sum(e, axis=-1, keepdims=True), v)


# --------------------------------------------------------------------------------------------- execution


@dataclass
class _Step:
    op: Operation
    fn: Kernel
    inputs: tuple[tuple[str, tuple[Any, ...], bool], ...]  # (input name, bindings, is a tuple input)
    out_types: tuple[TensorType, ...]


#: MIL inputs that always take a list of values (a single binding is still a list)
_TUPLE_INPUTS = {("concat", "values"), ("stack", "values"), ("einsum", "values")}


class Interpreter:
    """Runs one function of a :class:`MILProgram`; construct once, call :meth:`run` many times."""

    def __init__(self, program: MILProgram, function: str = "main"):
        fn = program.function(function)
        self.function = fn
        self.ios = fn.ios_version
        missing = sorted({op.type for op in fn.operations if op.type != "const" and op.type not in KERNELS})
        if missing:
            raise UnsupportedMILOpError(missing)
        nested = [op.name for op in fn.operations if op.has_blocks]
        if nested:
            raise MILError(f"control flow ops with nested blocks are not supported: {', '.join(nested)}")
        self.inputs = fn.inputs
        self.outputs = fn.outputs
        self.consts: dict[str, Any] = {}
        self._steps: list[_Step] = []
        for op in fn.operations:
            if op.type == "const":
                self.consts[op.outputs[0][0]] = self._conform(op, 0, op.inputs["val"][0])
                continue
            ins = tuple((k, v, (op.type, k) in _TUPLE_INPUTS or len(v) > 1) for k, v in op.inputs.items())
            self._steps.append(_Step(op, KERNELS[op.type], ins, tuple(t for _, t in op.outputs)))
        self._out_names = [[n for n, _ in s.op.outputs] for s in self._steps]

    @staticmethod
    def _conform(op: Operation, i: int, value: Any) -> Any:
        name, ttype = op.outputs[i]
        if ttype.dtype is str:
            return value
        arr = np.asarray(value)
        if arr.dtype != ttype.dtype:
            arr = arr.astype(ttype.dtype)
        if ttype.shape is not None:
            if len(ttype.shape) != arr.ndim or any(d is not None and d != s for d, s in zip(ttype.shape, arr.shape)):
                raise MILError(f"op {op.type} {op.name!r}: output {name!r} has shape {list(arr.shape)}, "
                               f"the program declares {list(ttype.shape)}")
        return arr

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the function on named inputs; returns the named outputs (dtypes as the program declares)."""
        env: dict[str, Any] = dict(self.consts)
        for name, ttype in self.inputs:
            if name not in feeds:
                raise MILError(f"missing input {name!r}")
            arr = np.asarray(feeds[name])
            if ttype.dtype is not str and arr.dtype != ttype.dtype:
                arr = arr.astype(ttype.dtype)
            if ttype.shape is not None and tuple(arr.shape) != tuple(ttype.shape) and ttype.static:
                raise MILError(f"input {name!r} has shape {list(arr.shape)}, the program expects {list(ttype.shape)}")
            env[name] = arr
        for step, out_names in zip(self._steps, self._out_names):
            values: dict[str, Any] = {}
            for key, bindings, is_tuple in step.inputs:
                resolved = [env[b.name] if isinstance(b, Ref) else b for b in bindings]
                values[key] = resolved if is_tuple else resolved[0]
            try:
                result = step.fn(Args(values, step.out_types, self.ios))
            except MILError as e:
                raise MILError(f"op {step.op.type} {step.op.name!r}: {e}") from None
            except (ValueError, IndexError, TypeError) as e:
                raise MILError(f"op {step.op.type} {step.op.name!r} failed: {type(e).__name__}: {e}") from None
            results = result if isinstance(result, list) else [result]
            if len(results) != len(out_names):
                raise MILError(f"op {step.op.type} {step.op.name!r} produced {len(results)} outputs, "
                               f"the program declares {len(out_names)}")
            for i, (n, r) in enumerate(zip(out_names, results)):
                env[n] = self._conform(step.op, i, r)
        return {n: env[n] for n in self.outputs}
