"""Read a saved Core ML ML Program (``.mlpackage``) into a typed :class:`MILProgram`.

The MIL program that coremltools writes is the ``mlProgram`` of the package's
``Model.mlmodel`` protobuf, with large constants in ``weights/weight.bin``.
This module decodes both into plain structures (functions, operations, their
input bindings and declared output types, constants as numpy arrays) that
:mod:`delegate_sdk_coreml.mil_interpreter` executes.

Only the proto definitions of coremltools are needed here: importing the whole
of coremltools takes seconds (it pulls in its converters), so the protobuf
modules are loaded on their own unless coremltools is already imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import struct
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError

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
