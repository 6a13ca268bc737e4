"""The canary plugins. Each is an instance of :class:`Canary` with one fault switched on.

| instance     | backend name         | fault                                                      | conform must say |
| ------------ | -------------------- | ---------------------------------------------------------- | ---------------- |
| GOOD         | canary_good          | none (control; also the fast plugin of the benchmark)      | PASS             |
| GOOD_INT8    | canary_good_int8     | none, int8 fake-quant outputs with a reference             | PASS             |
| LSB          | canary_lsb           | int8 outputs one quantization step too high                | FAIL_MISMATCH    |
| LAYOUT       | canary_layout        | rank-4 outputs returned in NHWC order (same shape)         | FAIL_MISMATCH    |
| NAN_TO_ZERO  | canary_nan_to_zero   | NaN replaced by 0                                          | FAIL_MISMATCH    |
| CLAIM_FAIL   | canary_claim_fail    | claims aten.sin, then fails to compile it                  | FAIL_CONTRACT    |
| ABORT        | canary_abort         | os.abort() when executing aten.cos                         | CRASH            |
| WRONG_DTYPE  | canary_wrong_dtype   | float64 outputs from aten.tanh                             | FAIL_CONTRACT    |
| WRONG_COUNT  | canary_wrong_count   | one output too many from aten.sigmoid                      | FAIL_CONTRACT    |
| HANG         | canary_hang          | sleeps 120 s when executing aten.exp                       | TIMEOUT          |
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

from delegate_sdk import BackendInfo, Claims, CompiledDelegate, OptionSpec, QuantParams, ReasonCode, Refusal, hookimpl
from delegate_sdk.support import op_name, output_tensors

#: ops no canary implements (the corpus's fallback model uses them)
UNSUPPORTED = {"aten.special_bessel_j0.default", "aten.digamma.default"}


def _fake_quant(x: torch.Tensor, scale: float, zp: int, offset: int = 0) -> torch.Tensor:
    q = torch.clamp(torch.round(x / scale) + zp + offset, -128, 127)
    return ((q - zp) * scale).to(x.dtype)


class Canary:
    def __init__(self, name: str, fault: str | None = None, precisions: tuple[str, ...] = ("fp32",),
                 fault_op: str | None = None):
        self.name = name
        self.fault = fault
        self.precisions = precisions
        self.fault_op = fault_op
        self._programs: dict[str, Any] = {}

    # ------------------------------------------------------------------ contract
    @hookimpl
    def describe(self) -> BackendInfo:
        return BackendInfo(name=self.name, version="0.1-canary", precisions=self.precisions,
                           default_precision=self.precisions[0], blob_format="canary-pt2", blob_format_version=1,
                           loadable_format_versions=(1, 1),
                           options=(OptionSpec("lsb_offset", "int", 1 if self.fault == "lsb" else 0,
                                               "quantization steps added to every int8 output", minimum=-4,
                                               maximum=4),),
                           description=f"conformance canary: {self.fault or 'faithful'}")

    @hookimpl
    def claim(self, program: ExportedProgram, nodes: list[torch.fx.Node], options: dict[str, Any]) -> Claims:
        claimed, refused = [], []
        for n in nodes:
            name = op_name(n)
            if name in UNSUPPORTED:
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
        if options["precision"] == "int8":
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
        return CompiledDelegate(blob=buf.getvalue(), format="canary-pt2", format_version=1, meta=meta,
                                output_quant=quant)

    def _load(self, blob: bytes) -> Any:
        key = hashlib.sha256(blob).hexdigest()
        mod = self._programs.get(key)
        if mod is None:
            mod = torch.export.load(io.BytesIO(blob)).module()
            self._programs[key] = mod
        return mod

    @hookimpl
    def init(self, blob: bytes, meta: dict[str, Any], options: dict[str, Any]) -> Any:
        return {"module": self._load(blob), "meta": json.loads(json.dumps(meta)), "options": dict(options)}

    def _run(self, handle: dict[str, Any], inputs: list[torch.Tensor], offset: int) -> list[torch.Tensor]:
        with torch.no_grad():  # inputs may be non-contiguous (the contract); some ATen kernels need contiguous
            out = handle["module"](*[x.contiguous() for x in inputs])
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
        outs = self._run(handle, inputs, int(handle["options"].get("lsb_offset", 0)))
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
        return self._run({"module": self._load(blob), "meta": meta}, inputs, 0)

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
LSB = Canary("canary_lsb", "lsb", precisions=("int8",))
LAYOUT = Canary("canary_layout", "layout")
NAN_TO_ZERO = Canary("canary_nan_to_zero", "nan_to_zero")
CLAIM_FAIL = Canary("canary_claim_fail", "claim_fail", fault_op="aten.sin.default")
ABORT = Canary("canary_abort", "abort", fault_op="aten.cos.default")
WRONG_DTYPE = Canary("canary_wrong_dtype", "wrong_dtype", fault_op="aten.tanh.default")
WRONG_COUNT = Canary("canary_wrong_count", "wrong_count", fault_op="aten.sigmoid.default")
HANG = Canary("canary_hang", "hang", fault_op="aten.exp.default")

ALL = {c.name: c for c in (GOOD, GOOD_INT8, LSB, LAYOUT, NAN_TO_ZERO, CLAIM_FAIL, ABORT, WRONG_DTYPE, WRONG_COUNT,
                           HANG)}
ENV = ",".join(f"{name}=dsdk_canaries.plugins:{attr}" for name, attr in (
    ("canary_good", "GOOD"), ("canary_good_int8", "GOOD_INT8"), ("canary_lsb", "LSB"), ("canary_layout", "LAYOUT"),
    ("canary_nan_to_zero", "NAN_TO_ZERO"), ("canary_claim_fail", "CLAIM_FAIL"), ("canary_abort", "ABORT"),
    ("canary_wrong_dtype", "WRONG_DTYPE"), ("canary_wrong_count", "WRONG_COUNT"), ("canary_hang", "HANG")))
