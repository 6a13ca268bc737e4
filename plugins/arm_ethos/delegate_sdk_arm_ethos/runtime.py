"""init/execute/destroy: run the blob's TOSA graph on the TOSA reference model.

The Vela command stream in the blob needs an Ethos-U NPU or Arm's Corstone FVP,
neither of which exists on a development host. The TOSA reference model
implements the same TOSA 1.0 INT semantics the NPU implements (Vela compiles
the very same graph), so host execution runs that graph bit-exactly as TOSA
defines it: inputs are quantized with the partition's input parameters,
outputs dequantized with the reported output parameters.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from delegate_sdk_arm_ethos import blob as blobfmt
from delegate_sdk_arm_ethos.lowering import IOInfo


@dataclass
class Handle:
    tosa: bytes  # as handed to the reference model
    inputs: list[IOInfo]
    outputs: list[IOInfo]
    target: str


def _relabel_for_reference_model(tosa: bytes) -> bytes:
    """The same graph with its version field set to the reference model's own TOSA version.

    The reference model prints a "backward compatible" notice to the C-level
    stdout on every run of an older (1.0) graph. Vela needs 1.0, the reference
    model runs 1.0 graphs unchanged; patching the 4-byte minor and the draft flag
    in place silences the notice without touching the operators.
    """
    try:
        import tosa_serializer as ts
        from tosa.TosaGraph import TosaGraph
    except ImportError:
        return tosa
    buf = bytearray(tosa)
    v = TosaGraph.GetRootAs(buf, 0).Version()
    if v is None:
        return tosa
    tab = v._tab
    off_minor, off_patch, off_draft = tab.Offset(6), tab.Offset(8), tab.Offset(10)
    if v._Major() != ts.TOSA_VERSION_MAJOR or not (off_minor and off_patch and off_draft):
        return tosa
    struct.pack_into("<i", buf, tab.Pos + off_minor, int(ts.TOSA_VERSION_MINOR))
    struct.pack_into("<i", buf, tab.Pos + off_patch, int(ts.TOSA_VERSION_PATCH))
    buf[tab.Pos + off_draft] = 1 if ts.TOSA_VERSION_DRAFT else 0
    return bytes(buf)


def load(blob: bytes, meta: dict[str, Any], sections: dict[str, bytes]) -> Handle:
    tosa, _ = blobfmt.read(blob, meta, sections)
    inputs = [IOInfo.from_json(d) for d in meta["inputs"]]
    outputs = [IOInfo.from_json(d) for d in meta["outputs"]]
    return Handle(_relabel_for_reference_model(tosa), inputs, outputs, str(meta.get("target", "")))


def _to_tosa_input(t: torch.Tensor, io: IOInfo) -> np.ndarray:
    if io.q is None:
        return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.bool_))
    x = t.detach().cpu().to(torch.float32).contiguous().numpy()
    return np.ascontiguousarray(io.q.quantize(x))


def _from_tosa_output(a: np.ndarray, io: IOInfo) -> torch.Tensor:
    a = np.asarray(a).reshape(io.shape)
    if io.q is None:
        return torch.from_numpy(np.array(a, dtype=np.bool_))
    return torch.from_numpy(np.array(io.q.dequantize(a), dtype=np.float32))


def run(handle: Handle, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    import tosa_reference_model as rm

    if len(inputs) != len(handle.inputs):
        raise ValueError(f"expected {len(handle.inputs)} inputs, got {len(inputs)}")
    arrays = [_to_tosa_input(t, io) for t, io in zip(inputs, handle.inputs)]
    outs, status = rm.run(handle.tosa, arrays)
    if status != rm.GraphStatus.TOSA_VALID:
        raise RuntimeError(f"the TOSA reference model reported {status.name} for this graph")
    if len(outs) != len(handle.outputs):
        raise RuntimeError(f"the TOSA graph produced {len(outs)} outputs, expected {len(handle.outputs)}")
    return [_from_tosa_output(a, io) for a, io in zip(outs, handle.outputs)]
