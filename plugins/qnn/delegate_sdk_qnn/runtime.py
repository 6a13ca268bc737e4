"""init / execute / destroy: the EPContext model on an ORT session on the QNN EP (HTP backend).

Also the fake-quant reference: the blob's QDQ model (its ``qdq.onnx`` section) on the ORT CPU provider.
Needs onnxruntime + onnxruntime-qnn only (no torch.onnx, no quantization tooling).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from delegate_sdk.errors import brief
from delegate_sdk_qnn import blob_format, qnn_env

log = logging.getLogger(__name__)

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "int32": torch.int32,
                 "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
                 "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass(frozen=True)
class IOSpec:
    name: str
    torch_dtype: torch.dtype
    shape: tuple[int, ...]
    onnx_dtype: np.dtype

    @classmethod
    def from_meta(cls, d: dict[str, Any]) -> IOSpec:
        if d["dtype"] not in _TORCH_DTYPES:
            raise ValueError(f"qnn: unsupported boundary dtype {d['dtype']!r} in blob meta")
        return cls(d["name"], _TORCH_DTYPES[d["dtype"]], tuple(int(s) for s in d["shape"]), np.dtype(d["onnx_dtype"]))


@dataclass
class QnnHandle:
    """A loaded partition: the ORT session plus what execute needs to convert at the boundary.

    ``constants`` instead of a session for a weight-only partition folded at compile time."""

    session: Any
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    output_names: list[str]
    run_options: Any
    constants: list[torch.Tensor] | None = None


def _constants(payload: bytes, outs: tuple[IOSpec, ...]) -> list[torch.Tensor]:
    tensors, pos = [], 0
    for o in outs:
        n = int(np.prod(o.shape, dtype=np.int64)) * o.onnx_dtype.itemsize
        if pos + n > len(payload):
            raise ValueError("qnn: constant section shorter than its outputs")
        a = np.frombuffer(payload, dtype=o.onnx_dtype.newbyteorder("<"), count=n // o.onnx_dtype.itemsize,
                          offset=pos).reshape(o.shape)
        tensors.append(torch.from_numpy(a.astype(o.onnx_dtype, copy=True)).to(o.torch_dtype))
        pos += n
    if pos != len(payload):
        raise ValueError("qnn: constant section longer than its outputs")
    return tensors


def _io_specs(meta: dict[str, Any]) -> tuple[tuple[IOSpec, ...], tuple[IOSpec, ...]]:
    try:
        return (tuple(IOSpec.from_meta(d) for d in meta["inputs"]),
                tuple(IOSpec.from_meta(d) for d in meta["outputs"]))
    except (KeyError, TypeError) as e:
        raise ValueError(f"qnn: blob meta is missing its input/output table ({e})") from None


def _run_options() -> Any:
    import onnxruntime as ort

    ro = ort.RunOptions()
    ro.log_severity_level = 4  # run-time failures raise; nothing goes to stderr
    return ro


def _parts(blob: bytes, meta: dict[str, Any], sections: dict[str, bytes]) -> blob_format.BlobParts:
    try:
        return blob_format.read(blob, meta, sections)
    except blob_format.BlobFormatError as e:
        raise ValueError(f"qnn: {e}") from None


def init(blob: bytes, meta: dict[str, Any], options: dict[str, Any], sections: dict[str, bytes]) -> QnnHandle:
    """Open one ORT session on the QNN EP for the blob's EPContext model."""
    import onnxruntime as ort

    parts = _parts(blob, meta, sections)
    ins, outs = _io_specs(meta)
    if parts.constants is not None:
        return QnnHandle(None, ins, outs, [o.name for o in outs], None, constants=_constants(parts.constants, outs))
    provider_options = dict(meta.get("provider_options") or {"backend_type": "htp"})
    # the context binary was prepared for this SoC; the performance vote is a run-time choice
    if options and options.get("htp_performance_mode"):
        provider_options["htp_performance_mode"] = str(options["htp_performance_mode"])
    qnn_env.ensure_registered()
    so = qnn_env.session_options(provider_options, log_severity=3, cpu_nodes=bool(meta.get("cpu_nodes")))
    err: Exception | None = None
    with qnn_env.captured_native_output() as native:
        try:
            session = ort.InferenceSession(parts.context, so)
        except Exception as e:
            err = e
    if err is not None:
        raise RuntimeError(f"qnn: could not load the context binary on the HTP backend: "
                           f"{qnn_env.first_error(native, err)}")
    names = [o.name for o in session.get_outputs()]
    if names != [o.name for o in outs]:
        raise ValueError(f"qnn: EPContext outputs {names} do not match the blob meta")
    return QnnHandle(session, ins, outs, names, _run_options())


def _feeds(specs: tuple[IOSpec, ...], inputs: list[torch.Tensor]) -> dict[str, np.ndarray]:
    if len(inputs) != len(specs):
        raise ValueError(f"qnn: expected {len(specs)} inputs, got {len(inputs)}")
    feeds = {}
    for spec, t in zip(specs, inputs):
        a = t.detach()
        if a.device.type != "cpu":
            a = a.cpu()
        arr = a.numpy()
        if arr.dtype != spec.onnx_dtype:
            arr = arr.astype(spec.onnx_dtype)
        feeds[spec.name] = np.ascontiguousarray(arr)
    return feeds


def _outputs(specs: tuple[IOSpec, ...], arrays: list[np.ndarray]) -> list[torch.Tensor]:
    out = []
    for spec, arr in zip(specs, arrays):
        # ORT allocates fresh output arrays on every run, so wrapping without a copy is safe
        t = torch.from_numpy(np.asarray(arr))
        if t.dtype != spec.torch_dtype:
            t = t.to(spec.torch_dtype)
        if tuple(t.shape) != spec.shape:
            t = t.reshape(spec.shape)
        out.append(t)
    return out


def execute(handle: QnnHandle, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Run the context binary: float in, float out (the model's Q/DQ handle the edges)."""
    if handle.constants is not None:
        return [t.clone() for t in handle.constants]
    feeds = _feeds(handle.inputs, inputs)
    try:
        arrays = handle.session.run(handle.output_names, feeds, handle.run_options)
    except Exception as e:
        raise RuntimeError(f"qnn: HTP execution failed: {brief(e)}") from e
    return _outputs(handle.outputs, arrays)


def destroy(handle: QnnHandle) -> None:
    handle.session = None


# reference sessions are cached per blob: conformance calls reference_execute once per input set
_ref_cache: OrderedDict[str, Any] = OrderedDict()
_ref_lock = threading.Lock()
_REF_CACHE_SIZE = 8


def reference_execute(blob: bytes, meta: dict[str, Any], options: dict[str, Any],
                      inputs: list[torch.Tensor], sections: dict[str, bytes]) -> list[torch.Tensor] | None:
    """The blob's QDQ model on the ORT CPU provider with graph optimisations off.

    With no optimisation, ORT runs every QuantizeLinear/DequantizeLinear as written and the
    ops between them in float: exactly the fake-quant computation the HTP approximates.
    Float precisions carry no QDQ model: None.
    """
    import onnxruntime as ort

    parts = _parts(blob, meta, sections)
    ins, outs = _io_specs(meta)
    if parts.constants is not None:
        return _constants(parts.constants, outs)
    qdq = parts.qdq
    if qdq is None:
        return None
    key = hashlib.sha256(qdq).hexdigest()
    with _ref_lock:
        session = _ref_cache.get(key)
        if session is None:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            with qnn_env.captured_native_output():
                session = ort.InferenceSession(qdq, so, providers=["CPUExecutionProvider"])
            _ref_cache[key] = session
            while len(_ref_cache) > _REF_CACHE_SIZE:
                _ref_cache.popitem(last=False)
        else:
            _ref_cache.move_to_end(key)
    arrays = session.run([o.name for o in outs], _feeds(ins, inputs), _run_options())
    return _outputs(outs, arrays)
