"""The canary plugins. Each is an instance of :class:`Canary` with one fault switched on.

| instance        | backend name            | fault                                                       | conform must say |
| --------------- | ----------------------- | ----------------------------------------------------------- | ---------------- |
| GOOD            | canary_good             | none (control; also the fast plugin of the benchmark)       | PASS             |
| GOOD_INT8       | canary_good_int8        | none, int8 fake-quant outputs with a reference              | PASS             |
| GOOD_THREADS    | canary_good_threads     | none, and it declares (truthfully) thread_safe=True         | PASS             |
| GOOD_INT8_QIN   | canary_good_int8_qin    | none; quantizes its inputs too (comparisons flip vs eager)  | PASS             |
| BOOL_FLIP       | canary_bool_flip        | as GOOD_INT8_QIN, with one bool output element inverted     | FAIL_MISMATCH    |
| CUSTOM_PREC     | canary_custom_precision | none; its own precision "q8" declared as 8-bit quantized    | PASS (as quant)  |
| LSB             | canary_lsb              | int8 outputs one quantization step too high                 | FAIL_MISMATCH    |
| LAYOUT          | canary_layout           | rank-4 outputs returned in NHWC order (same shape)          | FAIL_MISMATCH    |
| NAN_TO_ZERO     | canary_nan_to_zero      | NaN replaced by 0                                           | FAIL_MISMATCH    |
| CLAIM_FAIL      | canary_claim_fail       | claims aten.sin, then fails to compile it                   | FAIL_CONTRACT    |
| ABORT           | canary_abort            | os.abort() when executing aten.cos                          | CRASH            |
| WRONG_DTYPE     | canary_wrong_dtype      | float64 outputs from aten.tanh                              | FAIL_CONTRACT    |
| WRONG_COUNT     | canary_wrong_count      | one output too many from aten.sigmoid                       | FAIL_CONTRACT    |
| HANG            | canary_hang             | sleeps 120 s when executing aten.exp                        | TIMEOUT          |
| ALIAS           | canary_alias            | execute returns the same output buffers on every call       | FAIL_CONTRACT    |
| MUTATE          | canary_mutate           | execute halves its first input in place                     | FAIL_CONTRACT    |
| THREADS         | canary_threads          | thread_safe=True, but execute shares a scratch buffer       | FAIL_CONTRACT    |
| SIDE_FILE       | canary_side_file        | preprocess writes the program to a temp file; init reads it | FAIL_CONTRACT    |
| SILENT_CLAIM    | canary_silent_claim     | claim neither claims nor refuses aten.relu nodes            | FAIL_CLAIM       |
| FIRST_SHAPE     | canary_first_shape      | execute is right only at the first input shapes it sees     | FAIL_CONTRACT    |
| CLAIMS_NOTHING  | canary_claims_nothing   | refuses every node (with a reason)                          | exit 1           |
| HALF            | canary_half             | lists precision "half", which is not in the vocabulary      | refused at load  |
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from typing import Any

import torch
from torch.export import ExportedProgram

import tempfile
import threading
from pathlib import Path

from delegate_sdk import BackendInfo, Claims, CompiledDelegate, OptionSpec, QuantParams, ReasonCode, Refusal, hookimpl
from delegate_sdk.types import Precision
from delegate_sdk.support import op_name, output_tensors

#: ops no canary implements (the corpus's fallback model uses them)
UNSUPPORTED = {"aten.special_bessel_j0.default", "aten.digamma.default"}


def _fake_quant(x: torch.Tensor, scale: float, zp: int, offset: int = 0) -> torch.Tensor:
    q = torch.clamp(torch.round(x / scale) + zp + offset, -128, 127)
    return ((q - zp) * scale).to(x.dtype)


class Canary:
    def __init__(self, name: str, fault: str | None = None, precisions: tuple[str, ...] = ("fp32",),
                 fault_op: str | None = None, precision_specs: tuple[Precision, ...] = (),
                 thread_safe: bool = False, quantize_inputs: bool = False):
        self.name = name
        self.fault = fault
        self.precisions = precisions
        self.precision_specs = precision_specs
        self.fault_op = fault_op
        self.thread_safe = thread_safe or fault == "threads"
        self.quantize_inputs = quantize_inputs
        self._programs: dict[str, Any] = {}
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------------ contract
    @hookimpl
    def describe(self) -> BackendInfo:
        return BackendInfo(name=self.name, version="0.1-canary", precisions=self.precisions,
                           default_precision=self.precisions[0], blob_format="canary-pt2", blob_format_version=1,
                           loadable_format_versions=(1, 1), precision_specs=self.precision_specs,
                           options=(OptionSpec("lsb_offset", "int", 1 if self.fault == "lsb" else 0,
                                               "quantization steps added to every int8 output", minimum=-4,
                                               maximum=4),),
                           thread_safe=self.thread_safe,
                           description=f"conformance canary: {self.fault or 'faithful'}")

    def _quantized(self, options: dict[str, Any]) -> bool:
        from delegate_sdk.types import resolve_precision

        return resolve_precision(options["precision"], self.precision_specs).quantized

    @hookimpl
    def claim(self, program: ExportedProgram, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Claims:
        claimed, refused = [], []
        for n in nodes:
            name = op_name(n)
            if self.fault == "claims_nothing":
                refused.append(Refusal(n.name, ReasonCode.OP, f"{self.name} takes no node"))
            elif self.fault == "silent_claim" and name == "aten.relu.default":
                continue  # neither claimed nor refused: the contract violation under test
            elif name in UNSUPPORTED:
                refused.append(Refusal(n.name, ReasonCode.OP, f"{name} is not implemented by {self.name}"))
            elif not output_tensors(n):
                refused.append(Refusal(n.name, ReasonCode.OP, "no tensor output"))
            else:
                claimed.append(n.name)
        return Claims(tuple(claimed), tuple(refused))

    @hookimpl
    def preprocess(self, program: ExportedProgram, options: dict[str, Any],
                   calibration: list[tuple[torch.Tensor, ...]] | None) -> CompiledDelegate:
        ops = sorted({op_name(n) for n in program.graph.nodes if n.op == "call_function"})
        if self.fault == "claim_fail" and self.fault_op in ops:
            raise RuntimeError(f"{self.fault_op} cannot be compiled (deliberate canary fault)")
        buf = io.BytesIO()
        torch.export.save(program, buf)
        meta: dict[str, Any] = {"ops": ops}
        quant: list[QuantParams | None] = []
        if self._quantized(options) and not calibration:
            raise RuntimeError(f"precision {options['precision']} is quantized but no calibration data came")
        if self._quantized(options):
            module = program.module()
            lo: list[float] = []
            hi: list[float] = []
            for sample in calibration or []:
                with torch.no_grad():
                    outs = module(*sample)
                outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
                for k, o in enumerate(outs):
                    if len(lo) <= k:
                        lo.append(0.0)
                        hi.append(0.0)
                    if o.dtype.is_floating_point and o.numel():
                        lo[k] = min(lo[k], float(o.min()))
                        hi[k] = max(hi[k], float(o.max()))
            out_vals = [n.meta.get("val") for n in program.graph.output_node().args[0]]
            for k, v in enumerate(out_vals):
                if isinstance(v, torch.Tensor) and v.dtype.is_floating_point and k < len(lo):
                    scale = max(hi[k] - lo[k], 1e-8) / 255.0
                    zp = int(round(-128 - lo[k] / scale))
                    quant.append(QuantParams(scale, max(-128, min(127, zp)), "int8"))
                else:
                    quant.append(None)
            meta["quant"] = [q.to_json() if q else None for q in quant]
            if self.quantize_inputs:  # as int8 hardware does: float inputs are quantized on the way in
                meta["in_quant"] = []
                for k in range(len(calibration[0])):
                    xs = [c[k] for c in calibration if c[k].numel()]
                    if not xs or not xs[0].dtype.is_floating_point:
                        meta["in_quant"].append(None)
                        continue
                    lo_k = min(0.0, min(float(x.min()) for x in xs))
                    hi_k = max(0.0, max(float(x.max()) for x in xs))
                    scale = max(hi_k - lo_k, 1e-8) / 255.0
                    meta["in_quant"].append({"scale": scale, "zero_point": max(-128, min(127, int(round(
                        -128 - lo_k / scale))))})
        blob = buf.getvalue()
        if self.fault == "side_file":  # the blob only names a file the compiler wrote: useless elsewhere
            side = Path(tempfile.mkdtemp(prefix="canary-side-")) / "program.pt2"
            side.write_bytes(blob)
            blob, meta["side_file"] = str(side).encode(), str(side)
        return CompiledDelegate(blob=blob, format="canary-pt2", format_version=1, meta=meta,
                                output_quant=quant)

    def _load(self, blob: bytes, meta: dict[str, Any]) -> Any:
        if self.fault == "side_file":
            blob = Path(meta["side_file"]).read_bytes()
        key = hashlib.sha256(blob).hexdigest()
        with self._cache_lock:
            mod = self._programs.get(key)
            if mod is None:
                mod = torch.export.load(io.BytesIO(blob)).module()
                self._programs[key] = mod
        return mod

    @hookimpl
    def init(self, blob: bytes, meta: dict[str, Any], options: dict[str, Any]) -> Any:
        return {"module": self._load(blob, meta), "meta": json.loads(json.dumps(meta)), "options": dict(options)}

    def _run(self, handle: dict[str, Any], inputs: list[torch.Tensor], offset: int) -> list[torch.Tensor]:
        in_quant = handle["meta"].get("in_quant") or [None] * len(inputs)
        xs = [_fake_quant(x, q["scale"], q["zero_point"]) if q else x for x, q in zip(inputs, in_quant)]
        with torch.no_grad():  # inputs may be non-contiguous (the contract); some ATen kernels need contiguous
            out = handle["module"](*[x.contiguous() for x in xs])
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        quant = handle["meta"].get("quant")
        if quant:
            outs = [_fake_quant(o, q["scale"], q["zero_point"], offset) if q else o for o, q in zip(outs, quant)]
        return outs

    @hookimpl
    def execute(self, handle: dict[str, Any], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        ops = handle["meta"]["ops"]
        hit = self.fault_op is None or self.fault_op in ops
        if self.fault == "abort" and hit:
            os.abort()
        if self.fault == "hang" and hit:
            time.sleep(120)
        if self.fault == "threads":  # one scratch copy of the inputs per handle, not per call
            handle["scratch"] = [x.clone() for x in inputs]
            time.sleep(0.002)
            inputs = handle["scratch"]
        outs = self._run(handle, inputs, int(handle["options"].get("lsb_offset", 0)))
        if self.fault == "first_shape":
            shapes = [tuple(x.shape) for x in inputs]
            handle.setdefault("first_shapes", shapes)
            if shapes != handle["first_shapes"]:  # "compiled" for the first shapes only
                outs = [torch.zeros_like(o) for o in outs]
        if self.fault == "bool_flip":  # one comparison result wrong, as a buggy kernel would give
            outs = [o.clone() for o in outs]
            for o in outs:
                if o.dtype == torch.bool and o.numel():
                    o.view(-1)[0] = ~o.view(-1)[0]
        if self.fault == "mutate" and inputs and inputs[0].is_floating_point():
            inputs[0].mul_(0.5)
        if self.fault == "alias":  # copies into buffers it keeps, and hands those out on every call
            bufs = handle.setdefault("bufs", [torch.empty_like(o) for o in outs])
            if [b.shape for b in bufs] != [o.shape for o in outs]:
                bufs[:] = [torch.empty_like(o) for o in outs]
            for b, o in zip(bufs, outs):
                b.copy_(o)
            outs = list(bufs)
        if self.fault == "layout" and hit:
            outs = [o.permute(0, 2, 3, 1).contiguous().view(o.shape) if o.dim() == 4 else o for o in outs]
        elif self.fault == "nan_to_zero":
            outs = [torch.nan_to_num(o, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
                    if o.dtype.is_floating_point else o for o in outs]
        elif self.fault == "wrong_dtype" and hit:
            outs = [o.double() if o.dtype == torch.float32 else o for o in outs]
        elif self.fault == "wrong_count" and hit:
            outs = outs + [outs[0].clone()]
        return outs

    @hookimpl
    def reference_execute(self, blob: bytes, meta: dict[str, Any], options: dict[str, Any],
                          inputs: list[torch.Tensor]) -> list[torch.Tensor] | None:
        if not meta.get("quant"):
            return None
        return self._run({"module": self._load(blob, meta), "meta": meta}, inputs, 0)

    @hookimpl
    def destroy(self, handle: Any) -> None:
        handle.clear()

    @hookimpl
    def conformance_cases(self) -> list[Any]:
        """The faithful canary contributes one case of its own (the hook's contract, exercised)."""
        if self.name != "canary_good":
            return []
        from delegate_sdk.conformance.cases import In, OpCase, Sample

        class Hardswish(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.nn.functional.hardswish(x)

        return [OpCase("op/canary_good_hardswish", "aten.clamp.default", Hardswish, [
            Sample("normal", (In((4, 16)),)), Sample("edge", (In((4, 16)),), edges="all"),
            Sample("rank", (In((2, 3, 5)),), name="rank3")])]


GOOD = Canary("canary_good")
GOOD_INT8 = Canary("canary_good_int8", precisions=("int8",))
GOOD_THREADS = Canary("canary_good_threads", thread_safe=True)
GOOD_INT8_QIN = Canary("canary_good_int8_qin", precisions=("int8",), quantize_inputs=True)
BOOL_FLIP = Canary("canary_bool_flip", "bool_flip", precisions=("int8",), quantize_inputs=True)
CUSTOM_PREC = Canary("canary_custom_precision", precisions=("q8",),
                     precision_specs=(Precision("q8", "quantized", activation_bits=8, weight_bits=8),))
LSB = Canary("canary_lsb", "lsb", precisions=("int8",))
LAYOUT = Canary("canary_layout", "layout")
NAN_TO_ZERO = Canary("canary_nan_to_zero", "nan_to_zero")
CLAIM_FAIL = Canary("canary_claim_fail", "claim_fail", fault_op="aten.sin.default")
ABORT = Canary("canary_abort", "abort", fault_op="aten.cos.default")
WRONG_DTYPE = Canary("canary_wrong_dtype", "wrong_dtype", fault_op="aten.tanh.default")
WRONG_COUNT = Canary("canary_wrong_count", "wrong_count", fault_op="aten.sigmoid.default")
HANG = Canary("canary_hang", "hang", fault_op="aten.exp.default")
ALIAS = Canary("canary_alias", "alias")
MUTATE = Canary("canary_mutate", "mutate")
THREADS = Canary("canary_threads", "threads")
SIDE_FILE = Canary("canary_side_file", "side_file")
SILENT_CLAIM = Canary("canary_silent_claim", "silent_claim")
FIRST_SHAPE = Canary("canary_first_shape", "first_shape")
CLAIMS_NOTHING = Canary("canary_claims_nothing", "claims_nothing")
HALF = Canary("canary_half", precisions=("half",))

_ATTRS = {c.name: attr for attr, c in list(globals().items()) if isinstance(c, Canary)}
ALL = {name: globals()[attr] for name, attr in _ATTRS.items()}
ENV = ",".join(f"{name}=dsdk_canaries.plugins:{attr}" for name, attr in _ATTRS.items())
