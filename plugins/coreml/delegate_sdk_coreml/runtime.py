"""init / execute / destroy: run a packed ML Program.

On macOS with Core ML available, coremltools' ``MLModel`` (Core ML itself) runs
the package on the chosen compute units. Elsewhere Core ML does not exist and
coremltools cannot predict, so the saved MIL program is executed by
:mod:`delegate_sdk_coreml.mil_interpreter` in the precision the program declares.
The original torch graph is never used.
"""

from __future__ import annotations

import functools
import logging
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from delegate_sdk_coreml import package
from delegate_sdk_coreml.compiler import OutputInfo, TensorInfo
from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_interpreter import Interpreter
from delegate_sdk_coreml.mil_kernels import implemented_ops
from delegate_sdk_coreml.mil_reader import MILProgram, TensorType

log = logging.getLogger(__name__)

_NP_OF_TORCH = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32, "int64": torch.int64,
                 "bool": torch.bool}


@functools.lru_cache(maxsize=1)
def core_ml_available() -> bool:
    """True when this host can run Core ML (macOS with coremltools' native predict library)."""
    if sys.platform != "darwin":
        return False
    try:
        import importlib

        importlib.import_module("coremltools.libcoremlpython")
    except ImportError:
        return False
    return True


def host_runtime() -> str:
    """"coreml" on macOS, "mil-interpreter" elsewhere."""
    return "coreml" if core_ml_available() else "mil-interpreter"


def host_runtime_ops() -> frozenset[str] | None:
    """MIL ops the host runtime executes; None when Core ML itself runs (it executes every op)."""
    return None if core_ml_available() else implemented_ops()


@dataclass
class Handle:
    inputs: list[TensorInfo]
    outputs: list[OutputInfo]
    runtime: str
    interpreter: Interpreter | None = None
    mlmodel: Any = None
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def load(blob: bytes, meta: dict[str, Any], options: dict[str, Any]) -> Handle:
    try:
        inputs = [TensorInfo.from_json(d) for d in meta["inputs"]]
        outputs = [OutputInfo.from_json(d) for d in meta["outputs"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"Core ML delegate meta is missing its input/output description ({e})") from None
    if core_ml_available():
        return _load_coreml(blob, meta, options, inputs, outputs)
    with tempfile.TemporaryDirectory(prefix="dsdk-coreml-") as tmp:
        pkg = package.unpack(blob, Path(tmp))
        program = MILProgram.from_package(pkg)
    # the interpreter holds every weight in memory: the unpacked files are not needed any more
    interp = Interpreter(program)
    mil_inputs = [n for n, _ in interp.inputs]
    if mil_inputs != [i.name for i in inputs]:
        raise MILError(f"the ML Program's inputs {mil_inputs} do not match the delegate meta "
                       f"{[i.name for i in inputs]}")
    missing = [o.name for o in outputs if o.source == "program" and o.name not in interp.outputs]
    if missing:
        raise MILError(f"the ML Program has no output(s) {missing}")
    return Handle(inputs, outputs, "mil-interpreter", interpreter=interp)


def _load_coreml(blob: bytes, meta: dict[str, Any], options: dict[str, Any], inputs: list[TensorInfo],
                 outputs: list[OutputInfo]) -> Handle:
    from delegate_sdk_coreml._quiet import import_coremltools, quiet

    ct = import_coremltools()
    tmp = tempfile.TemporaryDirectory(prefix="dsdk-coreml-")
    try:
        pkg = package.unpack(blob, Path(tmp.name))
        units = options.get("compute_units", meta.get("compute_units", "all"))
        with quiet():
            model = ct.models.MLModel(str(pkg), compute_units=getattr(ct.ComputeUnit, units.upper()))
    except Exception:
        tmp.cleanup()
        raise
    return Handle(inputs, outputs, "coreml", mlmodel=model, tmpdir=tmp)


def _to_numpy(t: torch.Tensor, mil_type: TensorType) -> np.ndarray:
    arr = t.detach().cpu().contiguous().numpy()
    if mil_type.dtype is not str and arr.dtype != mil_type.dtype:
        # coremltools makes int64 and bool inputs int32 (Core ML has neither)
        arr = arr.astype(mil_type.dtype)
    if mil_type.static and arr.shape != mil_type.shape and arr.size == int(np.prod(mil_type.shape, dtype=np.int64)):
        # a rank-0 input becomes shape [1] in the ML Program
        arr = arr.reshape(mil_type.shape)
    return arr


def execute(handle: Handle, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    if len(inputs) != len(handle.inputs):
        raise ValueError(f"the Core ML delegate takes {len(handle.inputs)} inputs, got {len(inputs)}")
    if handle.interpreter is not None:
        types = dict(handle.interpreter.inputs)
        feeds = {info.name: _to_numpy(t, types[info.name]) for t, info in zip(inputs, handle.inputs)}
        results = handle.interpreter.run(feeds)
    else:
        feeds = {info.name: _coreml_input(t, info) for t, info in zip(inputs, handle.inputs)}
        with handle.lock:
            results = handle.mlmodel.predict(feeds)
    out = []
    for o in handle.outputs:
        if o.source == "input":
            out.append(inputs[o.input_index].detach().clone())
            continue
        arr = np.asarray(results[o.name])
        if arr.size != int(np.prod(o.shape, dtype=np.int64)):
            raise RuntimeError(f"Core ML output {o.name!r} has shape {list(arr.shape)}, expected {list(o.shape)}")
        out.append(_to_torch(arr.reshape(o.shape), o))
    return out


def _coreml_input(t: torch.Tensor, info: TensorInfo) -> np.ndarray:
    arr = t.detach().cpu().contiguous().numpy()
    # Core ML takes fp32, fp16 and int32 arrays; int64 and bool inputs were converted to int32 by coremltools
    if arr.dtype in (np.int64, np.bool_):
        arr = arr.astype(np.int32)
    # coremltools turns a rank-0 input into shape [1]
    return arr.reshape(1) if arr.ndim == 0 else arr


def _to_torch(arr: np.ndarray, o: OutputInfo) -> torch.Tensor:
    if o.dtype == "bool":
        # Core ML has no bool outputs: coremltools casts them to a number
        arr = arr != 0
    else:
        arr = arr.astype(_NP_OF_TORCH[o.dtype], copy=False)
    return torch.from_numpy(np.array(arr, copy=True))


def close(handle: Handle) -> None:
    handle.interpreter = None
    handle.mlmodel = None
    if handle.tmpdir is not None:
        handle.tmpdir.cleanup()
        handle.tmpdir = None


__all__ = ["Handle", "close", "core_ml_available", "execute", "host_runtime", "host_runtime_ops", "load"]
