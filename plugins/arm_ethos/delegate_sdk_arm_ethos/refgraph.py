"""A fake-quant float reference of a compiled partition (for ``reference_execute``).

It is the partition's own core-ATen graph, run with eager PyTorch kernels in
float32, with exactly the quantization the TOSA graph applies made explicit:
inputs and every node output are rounded to their int8/int16 grid (same scale
and zero point), and weights are the dequantized per-channel int8 weights.
The TOSA graph computes the same thing in integers, so the two differ only by
integer rounding inside ops (requantization, averaging) - the "backend error"
conformance measures - while both differ from eager float by the quantization
error.

Stored as JSON (graph, quantization) plus an ``.npz`` of constants, read with
``allow_pickle=False``; op targets are resolved only in the ``aten``
namespace, never imported by name.
"""

from __future__ import annotations

import io
import json
import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram

from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.graph_eval import GraphInputs, output_nodes
from delegate_sdk_arm_ethos.quant import QParams


@dataclass(frozen=True)
class QuantWeight:
    codes: np.ndarray  # int8
    scales: np.ndarray  # float64 per channel
    axis: int

    def dequantize(self) -> np.ndarray:
        shape = [1] * self.codes.ndim
        shape[self.axis] = -1
        return (self.codes.astype(np.float64) * self.scales.reshape(shape)).astype(np.float32)


def _enc(a: Any) -> Any:
    if isinstance(a, torch.fx.Node):
        return {"$node": a.name}
    if isinstance(a, (list, tuple)):
        return [_enc(x) for x in a]
    if isinstance(a, dict):
        return {"$dict": {k: _enc(v) for k, v in a.items()}}
    if isinstance(a, torch.dtype):
        return {"$dtype": str(a).removeprefix("torch.")}
    if isinstance(a, torch.device):
        return {"$device": str(a)}
    if isinstance(a, torch.memory_format):
        return {"$memory_format": str(a).removeprefix("torch.")}
    if isinstance(a, torch.layout):
        return {"$layout": str(a).removeprefix("torch.")}
    if isinstance(a, float) and not math.isfinite(a):
        return {"$float": repr(a)}
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    raise ValueError(f"cannot serialise argument {a!r} of type {type(a).__name__}")


def _dec(a: Any, env: dict[str, Any]) -> Any:
    if isinstance(a, list):
        return [_dec(x, env) for x in a]
    if isinstance(a, dict):
        if "$node" in a:
            return env[a["$node"]]
        if "$dict" in a:
            return {k: _dec(v, env) for k, v in a["$dict"].items()}
        if "$dtype" in a:
            return getattr(torch, a["$dtype"])
        if "$device" in a:
            return torch.device(a["$device"])
        if "$memory_format" in a:
            return getattr(torch, a["$memory_format"])
        if "$layout" in a:
            return getattr(torch, a["$layout"])
        if "$float" in a:
            return float(a["$float"])
        raise ValueError(f"unknown encoded argument {a}")
    return a


def _resolve(name: str) -> Any:
    if name == "operator.getitem":
        return operator.getitem
    ns, op, overload = name.split(".")
    if ns != "aten":
        raise ValueError(f"reference graph op {name} is outside the aten namespace")
    return getattr(getattr(torch.ops.aten, op), overload)


def _piecewise_linear(fn: Any, args: list[Any], kwargs: dict[str, Any], grid: list[float]) -> torch.Tensor:
    """fn(x) as the quantized model represents it: exact at the grid points, linear in between."""
    x = args[0]
    xs = torch.tensor(grid, dtype=torch.float64)
    ys = fn(xs.to(torch.float32), *args[1:], **kwargs).to(torch.float64)
    flat = x.detach().to(torch.float64).reshape(-1).clamp(xs[0], xs[-1])
    i = torch.searchsorted(xs, flat, right=True).clamp(1, len(grid) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    t = (flat - x0) / (x1 - x0)
    return (y0 + t * (y1 - y0)).reshape(x.shape).to(torch.float32)


def build(program: ExportedProgram, gi: GraphInputs, const_env: dict[str, Any], node_q: dict[str, QParams],
          weights: dict[str, QuantWeight], interpolated: dict[str, list[float]] | None = None,
          ) -> tuple[bytes, bytes]:
    """(graph JSON, constants npz) for the partition."""
    nodes = []
    used_consts: set[str] = set()
    for node in program.graph.nodes:
        if node.op != "call_function" or node.name in const_env:
            continue
        for a in node.all_input_nodes:
            if a.name in const_env:
                used_consts.add(a.name)
        nodes.append({"name": node.name, "op": op_name(node), "args": _enc(node.args),
                      "kwargs": _enc(dict(node.kwargs))})
    outputs = []
    for out in output_nodes(program):
        if out.name in const_env:
            used_consts.add(out.name)
        outputs.append(out.name)
    arrays: dict[str, np.ndarray] = {}
    quantized: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(sorted(used_consts)):
        key = f"c{i}"
        if name in weights:
            w = weights[name]
            arrays[key] = w.codes
            arrays[key + "_scales"] = w.scales
            quantized[name] = {"key": key, "axis": w.axis}
        else:
            t = const_env[name]
            arrays[key] = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            quantized[name] = {"key": key}
    graph = {
        "inputs": [n.name for n in gi.user],
        "consts": quantized,
        "nodes": nodes,
        "outputs": outputs,
        "q": {k: v.to_json() for k, v in node_q.items()},
        # int16 TABLE ops: the function is represented by its values at these inputs, linearly interpolated
        "interpolated": interpolated or {},
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return json.dumps(graph).encode(), buf.getvalue()


def run(graph_json: bytes, consts_npz: bytes, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    graph = json.loads(graph_json)
    q = {k: QParams.from_json(v) for k, v in graph["q"].items()}
    env: dict[str, Any] = {}
    with np.load(io.BytesIO(consts_npz), allow_pickle=False) as data:
        for name, c in graph["consts"].items():
            if "axis" in c:
                arr = QuantWeight(data[c["key"]], data[c["key"] + "_scales"], int(c["axis"])).dequantize()
            else:
                arr = np.array(data[c["key"]])
            env[name] = torch.from_numpy(arr)

    def fq(name: str, v: Any) -> Any:
        if name in q and isinstance(v, torch.Tensor) and v.is_floating_point():
            return torch.from_numpy(np.asarray(q[name].fake(v.detach().to(torch.float32).numpy())))
        return v

    for name, t in zip(graph["inputs"], inputs):
        env[name] = fq(name, t.detach().to(torch.float32) if t.is_floating_point() else t)
    interp = graph.get("interpolated", {})
    with torch.no_grad():
        for n in graph["nodes"]:
            fn = _resolve(n["op"])
            args, kwargs = _dec(n["args"], env), _dec(n["kwargs"], env)
            if n["name"] in interp:
                value = _piecewise_linear(fn, args, kwargs, interp[n["name"]])
            else:
                value = fn(*args, **kwargs)
            env[n["name"]] = fq(n["name"], value)
    return [env[name].clone() for name in graph["outputs"]]
