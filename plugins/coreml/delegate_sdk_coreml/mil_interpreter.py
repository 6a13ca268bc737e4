"""Execute a saved Core ML ML Program (MIL) with numpy, for hosts where Core ML itself is absent.

Core ML only runs on Apple platforms. Everywhere else the runtime reads the MIL
program of the ``.mlpackage`` (:mod:`delegate_sdk_coreml.mil_reader`) and this
module runs its operations one by one with the kernels of
:mod:`delegate_sdk_coreml.mil_kernels`, which follow the MIL op definitions
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError, UnsupportedMILOpError
from delegate_sdk_coreml.mil_kernels import Args, Kernel, lookup
from delegate_sdk_coreml.mil_reader import MILProgram, Operation, Ref, TensorType


@dataclass
class _Step:
    op: Operation
    fn: Kernel
    inputs: tuple[tuple[str, tuple[Any, ...], bool], ...]  # (input name, bindings, is a tuple input)
    out_types: tuple[TensorType, ...]


class Interpreter:
    """Runs one function of a :class:`MILProgram`; construct once, call :meth:`run` many times."""

    def __init__(self, program: MILProgram, function: str = "main"):
        fn = program.function(function)
        self.function = fn
        self.ios = fn.ios_version
        missing = sorted({op.type for op in fn.operations if op.type != "const" and lookup(op.type) is None})
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
            registered = lookup(op.type)
            assert registered is not None  # checked above
            ins = tuple((k, v, k in registered.tuple_inputs or len(v) > 1) for k, v in op.inputs.items())
            self._steps.append(_Step(op, registered.fn, ins, tuple(t for _, t in op.outputs)))
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
