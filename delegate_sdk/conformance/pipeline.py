"""One lowering of one case, run on each of its samples: the work a conformance worker does.

eager reference -> capture + claim + preprocess (``delegate_sdk.lower``, once per group of samples that
share shapes) -> save -> load -> run each sample -> compare (:mod:`tolerance`) -> bisect failing models.
Runs inside a worker process (:mod:`runner`); everything it returns is plain data.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from delegate_sdk.conformance import sampling, tolerance
from delegate_sdk.conformance.cases import ModelCase, OpCase, Sample, reduction_length, sample_id
from delegate_sdk.errors import (
    ArtifactError,
    BackendUnavailableError,
    CaptureError,
    ContractError,
    FallbackError,
    InputError,
    PluginError,
    UsageError,
)

log = logging.getLogger(__name__)

STAGE_OUTCOME = {"claim": "FAIL_CLAIM", "preprocess": "FAIL_PREPROCESS", "init": "FAIL_LOAD", "execute": "FAIL_RUN"}


class FatalRunError(Exception):
    """A problem with the run itself (bad option, unknown plugin): stop everything, not a case outcome."""


def _short(e: BaseException, limit: int = 600) -> str:
    msg = f"{type(e).__name__}: {e}" if not isinstance(e, PluginError) else str(e)
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return ""
    f = tb[-1]
    return f" [at {Path(f.filename).name}:{f.lineno}]"


def classify_lower_error(e: BaseException) -> tuple[str, str]:
    """(outcome, detail) for an exception raised by ``delegate_sdk.lower``."""
    if isinstance(e, CaptureError):
        return "SKIP", f"capture failed (not the plugin's fault): {_short(e)}"
    if isinstance(e, ContractError):
        return "FAIL_CONTRACT", _short(e)
    if isinstance(e, PluginError) and e.stage == "preprocess":
        # the hookspec: claim only what preprocess compiles; a claimed partition that fails to compile is a
        # contract failure, not a fallback
        return "FAIL_CONTRACT", f"claimed nodes it then failed to compile: {_short(e)}"
    if isinstance(e, PluginError):
        return STAGE_OUTCOME.get(e.stage, "FAIL_PREPROCESS"), _short(e)
    if isinstance(e, BackendUnavailableError):
        return "SKIP", _short(e)
    if isinstance(e, FallbackError):
        return "NOT_CLAIMED", _short(e)
    if isinstance(e, UsageError):
        raise FatalRunError(str(e)) from e
    # the core wraps every plugin exception in PluginError: anything else is the SDK's own failure
    return "SKIP", f"delegate-sdk internal error while lowering (not the plugin's fault): {_short(e)}{_where(e)}"


def classify_run_error(e: BaseException) -> tuple[str, str]:
    if isinstance(e, ContractError):
        return "FAIL_CONTRACT", _short(e)
    if isinstance(e, PluginError):
        return STAGE_OUTCOME.get(e.stage, "FAIL_RUN"), _short(e)
    if isinstance(e, InputError):
        return "SKIP", f"the program rejected this sample's inputs (a corpus/core issue): {_short(e)}"
    return "SKIP", f"delegate-sdk internal error while running (not the plugin's fault): {_short(e)}{_where(e)}"


def _result(case: OpCase | ModelCase, s: Sample, outcome: str, detail: str = "", **kw: Any) -> dict[str, Any]:
    quant = tolerance.is_quantized(kw.pop("precision", "fp32"))
    metrics = {"max_abs_err": None, ("max_lsb" if quant else "max_ulp"): None, "sqnr_db": None}
    d = {"id": sample_id(case, s), "case_id": case.id, "kind": case.kind, "op": case.op, "outcome": outcome,
         "detail": detail, "nodes_total": None, "nodes_delegated": None, "metrics": metrics,
         "tolerance": {"kind": "none", "note": f"not compared ({outcome})"},
         "duration_s": 0.0}
    d.update(kw)
    return d


def _flat(x: Any) -> list[Any]:
    return pytree.tree_leaves(x)


def _clone_inputs(xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(x.clone() for x in xs)


def _fallback_text(summary: Any, limit: int = 4) -> str:
    parts = []
    for fb in list(getattr(summary, "fallback", []))[:limit]:
        reasons = "; ".join(f"{getattr(r.code, 'value', r.code)}: {r.message}" for r in getattr(fb, "reasons", []))
        parts.append(f"{fb.node} ({fb.op}){': ' + reasons if reasons else ''}")
    more = len(getattr(summary, "fallback", [])) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _bits(dtype: str) -> int:
    digits = "".join(ch for ch in str(dtype) if ch.isdigit())
    return int(digits) if digits else 8


class GroupRunner:
    """Runs one unit: a case and the samples of it that share one lowering."""

    def __init__(self, cfg: dict[str, Any], step: Callable[[str], None], emit: Callable[[dict[str, Any]], None]):
        self.cfg = cfg
        self.plugin = cfg["plugin"]
        self.precision = cfg["precision"]
        self.seed = int(cfg["seed"])
        self.step = step
        self.emit = emit
        self.quantized = tolerance.is_quantized(self.precision)
        self.tmp = Path(cfg.get("tmpdir") or tempfile.gettempdir())

    # ------------------------------------------------------------------ public
    def run(self, case: OpCase | ModelCase, samples: list[Sample]) -> None:
        self.step("lower")
        t0 = time.perf_counter()
        todo: list[Sample] = []
        for s in samples:
            if self.quantized and s.edges:
                self.emit(_result(case, s, "SKIP", f"edge-value sample ({s.edges}): non-finite and extreme inputs "
                                  f"are outside a calibrated {self.precision} range", precision=self.precision))
            else:
                todo.append(s)
        if not todo:
            return
        first = todo[0]
        try:
            module = sampling.build_module(case, self.seed)
        except Exception as e:
            for s in todo:
                self.emit(_result(case, s, "SKIP", f"the case's module cannot be built: {_short(e)}",
                                  precision=self.precision))
            return
        example = sampling.example_inputs(first, sample_id(case, first), self.seed, self.precision)
        try:
            with torch.no_grad():
                module(*_clone_inputs(example))
        except Exception as e:
            for s in todo:
                self.emit(_result(case, s, "SKIP", f"eager PyTorch fails on this case: {_short(e)}",
                                  precision=self.precision))
            return
        dyn = sampling.dynamic_shapes_spec(first, module, example)
        calib = sampling.calibration_inputs(case, todo, self.seed, self.precision) if self.quantized else None
        lowered, err = self._lower(module, example, calib, dyn)
        if err is not None:
            outcome, detail = err
            dt = (time.perf_counter() - t0) / len(todo)
            for s in todo:
                self.emit(_result(case, s, outcome, detail, duration_s=dt, precision=self.precision))
            return
        assert lowered is not None
        summary = lowered.summary()
        totals = {"nodes_total": int(summary.nodes_total), "nodes_delegated": int(summary.nodes_delegated)}
        if summary.nodes_delegated == 0:
            dt = (time.perf_counter() - t0) / len(todo)
            lowered.close()
            for s in todo:
                self.emit(_result(case, s, "NOT_CLAIMED", "no node delegated: " + _fallback_text(summary),
                                  duration_s=dt, precision=self.precision, **totals))
            return
        try:
            self._run_loaded(case, todo, module, lowered, summary, totals, t0)
        finally:
            lowered.close()

    def _run_loaded(self, case: OpCase | ModelCase, todo: list[Sample], module: torch.nn.Module, lowered: Any,
                    summary: Any, totals: dict[str, int], t0: float) -> None:
        loaded, err = self._save_load(lowered)
        lower_share = (time.perf_counter() - t0) / len(todo)
        if err is not None:
            for s in todo:
                self.emit(_result(case, s, err[0], err[1], duration_s=lower_share, precision=self.precision,
                                  **totals))
            return
        try:
            self._run_samples(case, todo, module, lowered, loaded, summary, totals, lower_share)
        finally:
            loaded.close()

    def _run_samples(self, case: OpCase | ModelCase, todo: list[Sample], module: torch.nn.Module, lowered: Any,
                     loaded: Any, summary: Any, totals: dict[str, int], lower_share: float) -> None:
        for s in todo:
            self.step(sample_id(case, s))
            t1 = time.perf_counter()
            try:
                res = self._run_sample(case, s, module, lowered, loaded, summary, totals)
            except FatalRunError:
                raise
            except Exception as e:  # an engine bug must not take the run down
                res = _result(case, s, "FAIL_RUN", f"conformance engine error: {_short(e)}{_where(e)}",
                              precision=self.precision, **totals)
            res["duration_s"] = lower_share + (time.perf_counter() - t1)
            self.emit(res)

    # ------------------------------------------------------------------ steps
    def _options(self) -> dict[str, dict[str, Any]]:
        return {self.plugin: {**self.cfg.get("options", {}), "precision": self.precision}}

    def _lower(self, module: torch.nn.Module, example: tuple[torch.Tensor, ...], calib: Any,
               dyn: Any) -> tuple[Any, tuple[str, str] | None]:
        from delegate_sdk.lowering import lower

        try:
            prog = lower(copy.deepcopy(module), example, [self.plugin], options=self._options(),
                                      calibration=calib, dynamic_shapes=dyn)
        except FatalRunError:
            raise
        except Exception as e:
            return None, classify_lower_error(e)
        return prog, None

    def _save_load(self, program: Any) -> tuple[Any, tuple[str, str] | None]:
        from delegate_sdk.program import load

        path = self.tmp / f"{uuid.uuid4().hex}.dsdk"
        try:
            try:
                program.save(path)
            except ContractError as e:
                return None, ("FAIL_CONTRACT", f"saving the program failed: {_short(e)}")
            except Exception as e:
                return None, ("FAIL_LOAD", f"saving the program failed: {_short(e)}{_where(e)}")
            try:
                return load(path), None
            except ContractError as e:
                return None, ("FAIL_CONTRACT", f"loading the saved program failed: {_short(e)}")
            except (ArtifactError, PluginError) as e:
                return None, ("FAIL_LOAD", f"loading the saved program failed: {_short(e)}")
            except Exception as e:
                return None, ("FAIL_LOAD", f"loading the saved program failed: {_short(e)}{_where(e)}")
        finally:
            path.unlink(missing_ok=True)

    def _run_sample(self, case: OpCase | ModelCase, s: Sample, module: torch.nn.Module, lowered: Any,
                    loaded: Any, summary: Any, totals: dict[str, int]) -> dict[str, Any]:
        sid = sample_id(case, s)
        inputs = sampling.make_inputs(s, sid, self.seed, self.precision)
        try:
            with torch.no_grad():
                expected = module(*_clone_inputs(inputs))
        except Exception as e:
            return _result(case, s, "SKIP", f"eager PyTorch fails on this sample: {_short(e)}",
                           precision=self.precision, **totals)
        try:
            with torch.no_grad():
                actual = loaded(*inputs)
        except FatalRunError:
            raise
        except Exception as e:
            outcome, detail = classify_run_error(e)
            return _result(case, s, outcome, detail, precision=self.precision, **totals)
        flat_e, flat_d = _flat(expected), _flat(actual)
        problem = check_structure(flat_e, flat_d)
        if problem:
            return _result(case, s, "FAIL_CONTRACT", problem, precision=self.precision, **totals)
        flat_e = [t for t in flat_e if isinstance(t, torch.Tensor)]
        flat_d = [t for t in flat_d if isinstance(t, torch.Tensor)]
        if case.kind == "model":
            verdict = tolerance.judge_model(self.precision, flat_e, flat_d)
        else:
            quant = None
            if self.quantized:
                quant, problem = self._output_quant(loaded, summary, inputs, flat_d)
                if problem:
                    return _result(case, s, "FAIL_CONTRACT", problem, precision=self.precision, **totals)
            verdict = tolerance.judge_op(self.precision, flat_e, flat_d, reduction=reduction_length(case, inputs),
                                         cond=case.cond, quant=quant)
        common = {"metrics": verdict.metrics, "tolerance": verdict.tolerance, "precision": self.precision, **totals}
        if not verdict.ok:
            detail = verdict.detail
            if case.kind == "model" and self.cfg.get("bisect", True):
                from delegate_sdk.conformance.bisect import bisect_model

                try:
                    detail += " | " + bisect_model(lowered, inputs, self.plugin, self._options(), self.precision)
                except Exception as e:  # bisection is a diagnosis; its failure must not change the outcome
                    detail += f" | bisection failed: {_short(e, 200)}"
            return _result(case, s, "FAIL_MISMATCH", detail, **common)
        if summary.nodes_delegated < summary.nodes_total:
            return _result(case, s, "PASS_PARTIAL", "fell back to eager: " + _fallback_text(summary), **common)
        return _result(case, s, "PASS", "", **common)

    def _output_quant(self, loaded: Any, summary: Any, inputs: tuple[torch.Tensor, ...],
                      flat_d: list[torch.Tensor]) -> tuple[list[tolerance.OutputQuant | None], str]:
        """Scale (and reference result) for each program output that is a partition output."""
        parts = {p.id: p for p in summary.partitions}
        with torch.no_grad():
            traced, boundaries = loaded.trace(*inputs)
        traced = [t for t in _flat(traced) if isinstance(t, torch.Tensor)]
        refs: dict[str, list[torch.Tensor] | None] = {}
        out: list[tolerance.OutputQuant | None] = []
        for k, o in enumerate(traced[: len(flat_d)]):
            found = None
            for pid, (b_in, b_out) in boundaries.items():
                for j, t in enumerate(b_out):
                    if t is o or (t.shape == o.shape and t.dtype == o.dtype and torch.equal(
                            torch.nan_to_num(t), torch.nan_to_num(o))):
                        found = (pid, j, b_in)
                        break
                if found:
                    break
            if found is None or not o.dtype.is_floating_point:
                out.append(None)
                continue
            pid, j, b_in = found
            part = parts.get(pid)
            oq = list(getattr(part, "output_quant", None) or [])
            qp = oq[j] if j < len(oq) else None
            if qp is None:
                return [], (f"partition {pid} was compiled at {self.precision} but reports no quantization for its "
                            f"output {j} (CompiledDelegate.output_quant)")
            if pid not in refs:
                try:
                    with torch.no_grad():
                        r = loaded.reference(pid, list(b_in))
                    refs[pid] = list(r) if r is not None else None
                except Exception as e:
                    log.warning("reference_execute failed for %s: %s", pid, e)
                    refs[pid] = None
            ref_list = refs[pid]
            ref = ref_list[j] if ref_list is not None and j < len(ref_list) else None
            out.append(tolerance.OutputQuant(float(qp.scale), _bits(qp.dtype), ref))
        return out, ""


def check_structure(flat_e: list[Any], flat_d: list[Any]) -> str:
    """A contract problem in the delegate's outputs (count, type, dtype, shape), or ''."""
    if len(flat_e) != len(flat_d):
        return f"the program returned {len(flat_d)} outputs, eager returns {len(flat_e)}"
    for k, (e, d) in enumerate(zip(flat_e, flat_d)):
        if isinstance(e, torch.Tensor) != isinstance(d, torch.Tensor):
            return f"output {k} is a {type(d).__name__}, eager gives a {type(e).__name__}"
        if not isinstance(e, torch.Tensor):
            continue
        if e.dtype != d.dtype:
            return f"output {k} has dtype {str(d.dtype).removeprefix('torch.')}, expected " \
                   f"{str(e.dtype).removeprefix('torch.')}"
        if tuple(e.shape) != tuple(d.shape):
            return f"output {k} has shape {tuple(d.shape)}, expected {tuple(e.shape)}"
    return ""
