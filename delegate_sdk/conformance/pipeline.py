"""One lowering of one case, run on each of its samples: the work a conformance worker does.

eager reference -> capture + claim + preprocess (``delegate_sdk.lower``, once per group of samples that
share shapes) -> save -> load -> run each sample -> compare (:mod:`tolerance`) -> bisect failing models.
Runs inside a worker process (:mod:`runner`); everything it returns is plain data.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from delegate_sdk.conformance import contract, sampling, tolerance
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
from delegate_sdk.types import Precision, resolve_precision

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
    if isinstance(e, ContractError) and e.stage == "claim":
        return "FAIL_CLAIM", _short(e)
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
    prec = kw.pop("precision", None)
    quant = prec is not None and tolerance.is_quantized(prec)
    metrics = {"max_abs_err": None, ("max_lsb" if quant else "max_ulp"): None, "sqnr_db": None}
    d = {"id": sample_id(case, s), "case_id": case.id, "kind": case.kind, "op": case.op, "outcome": outcome,
         "detail": detail, "nodes_total": None, "nodes_delegated": None, "metrics": metrics,
         "tolerance": {"kind": "none", "note": f"not compared ({outcome})"},
         "duration_s": 0.0, "stage": "", "checks": []}
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


@contextlib.contextmanager
def _temp_area(path: Path) -> Iterator[Path]:
    """Point ``tempfile`` and ``TMPDIR`` (for native toolchains and their subprocesses) at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    old_dir, old_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(path)
    os.environ["TMPDIR"] = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = old_dir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env


#: threads, and calls per thread, of the thread-safety check
THREADS, CALLS_PER_THREAD = 4, 3


@dataclass
class _Unit:
    """What the samples of one lowering share: the lowered and the loaded program, and unit-wide findings."""

    case: OpCase | ModelCase
    module: torch.nn.Module
    lowered: Any
    loaded: Any
    summary: Any
    totals: dict[str, int]
    problems: list[str] = field(default_factory=list)
    fresh_outputs: dict[str, list[Any]] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)


class GroupRunner:
    """Runs one unit: a case and the samples of it that share one lowering.

    compile (in a temp area of its own) -> save -> remove the temp area -> load and run in a fresh process
    -> load here -> thread-safety (plugins that declare it) -> per sample: run twice (inputs unchanged,
    outputs not reused), more sizes for dynamic samples, compare with eager and with the fresh process.
    """

    def __init__(self, cfg: dict[str, Any], step: Callable[..., None], emit: Callable[[dict[str, Any]], None]):
        self.cfg = cfg
        self.plugin = cfg["plugin"]
        spec = cfg.get("precision_spec")
        self.precision: Precision = Precision.from_json(spec) if spec else resolve_precision(cfg["precision"])
        self.seed = int(cfg["seed"])
        self.step = step
        self.emit = emit
        self.quantized = self.precision.quantized
        self.runtime_checks = bool(cfg.get("runtime_checks", True))
        self.timeout = float(cfg.get("timeout") or 300.0)
        self.tmp = Path(cfg.get("tmpdir") or tempfile.gettempdir())
        self._fresh: Any = None
        self._thread_safe: bool | None = None

    def prefork_fresh(self, close: Sequence[Any] = ()) -> None:
        """Fork the fresh-process zygote from this process now, before it compiles anything (see
        :meth:`delegate_sdk.conformance.fresh.FreshProcess.forked`); ``close``: connections it must not hold."""
        from delegate_sdk.conformance.fresh import FreshProcess

        if self.runtime_checks and self._fresh is None:
            self._fresh = FreshProcess.forked(self.plugin, self.tmp / "fresh",
                                              threads=int(self.cfg.get("threads") or 1), close=close)

    def close(self) -> None:
        if self._fresh is not None:
            self._fresh.close()
            self._fresh = None

    @property
    def thread_safe(self) -> bool:
        if self._thread_safe is None:
            from delegate_sdk.registry import default_registry

            self._thread_safe = bool(default_registry().get(self.plugin).info().thread_safe)
        return self._thread_safe

    def _emit(self, case: OpCase | ModelCase, s: Sample, outcome: str, detail: str = "", **kw: Any) -> None:
        self.emit(_result(case, s, outcome, detail, precision=self.precision, **kw))

    # ------------------------------------------------------------------ public
    def run(self, case: OpCase | ModelCase, samples: list[Sample]) -> None:
        self.step("lower")
        t0 = time.perf_counter()
        todo: list[Sample] = []
        for s in samples:
            if self.quantized and s.edges:
                self._emit(case, s, "SKIP", f"edge-value sample ({s.edges}): non-finite and extreme inputs are "
                           f"outside a calibrated {self.precision.name} range")
            else:
                todo.append(s)
        if not todo:
            return
        first = todo[0]
        try:
            module = sampling.build_module(case, self.seed)
        except Exception as e:
            for s in todo:
                self._emit(case, s, "SKIP", f"the case's module cannot be built: {_short(e)}")
            return
        example = sampling.example_inputs(first, sample_id(case, first), self.seed, self.precision)
        try:
            with torch.no_grad():
                module(*_clone_inputs(example))
        except Exception as e:
            for s in todo:
                self._emit(case, s, "SKIP", f"eager PyTorch fails on this case: {_short(e)}")
            return
        dyn = sampling.dynamic_shapes_spec(first, module, example)
        calib = sampling.calibration_inputs(case, todo, self.seed, self.precision) if self.quantized else None
        area = self.tmp / f"compile-{uuid.uuid4().hex[:12]}"
        artifact = self.tmp / f"{uuid.uuid4().hex}.dsdk"
        lowered = None
        try:
            with _temp_area(area):
                lowered, err = self._lower(module, example, calib, dyn)
            if err is not None:
                share = (time.perf_counter() - t0) / len(todo)
                for s in todo:
                    self._emit(case, s, err[0], err[1], duration_s=share, stage="lower")
                return
            assert lowered is not None
            summary = lowered.summary()
            totals = {"nodes_total": int(summary.nodes_total), "nodes_delegated": int(summary.nodes_delegated),
                      "nodes_hosted": int(summary.nodes_hosted)}
            if summary.nodes_delegated == 0:
                share = (time.perf_counter() - t0) / len(todo)
                for s in todo:
                    self._emit(case, s, "NOT_CLAIMED", "no node delegated: " + _fallback_text(summary),
                               duration_s=share, **totals)
                return
            err = self._save(lowered, artifact)
            if err is not None:
                for s in todo:
                    self._emit(case, s, err[0], err[1], stage="lower", **totals)
                return
            shutil.rmtree(area, ignore_errors=True)  # the compile-time temp area is gone from here on
            unit = _Unit(case, module, lowered, None, summary, totals)
            if self.runtime_checks and not self._fresh_check(unit, todo, artifact):
                return
            self.step("init")
            loaded, err = self._load(artifact)
            if err is not None:
                outcome, detail = err
                if unit.problems:  # the fresh process already said why: the artifact is not self-contained
                    outcome, detail = "FAIL_CONTRACT", "; ".join(unit.problems) + f" | here: {detail}"
                for s in todo:
                    self._emit(case, s, outcome, detail, stage="init", **totals)
                return
            unit.loaded = loaded
            try:
                if self.runtime_checks and self.thread_safe:
                    self.step("threads")
                    self._thread_check(unit, first)
                lower_share = (time.perf_counter() - t0) / len(todo)
                self._run_samples(unit, todo, lower_share)
            finally:
                loaded.close()
        finally:
            if lowered is not None:
                lowered.close()
            shutil.rmtree(area, ignore_errors=True)
            artifact.unlink(missing_ok=True)

    def _run_samples(self, unit: _Unit, todo: list[Sample], lower_share: float) -> None:
        for s in todo:
            self.step("execute", sample_id(unit.case, s))
            t1 = time.perf_counter()
            try:
                res = self._run_sample(unit, s)
            except FatalRunError:
                raise
            except Exception as e:  # an engine bug must not take the run down
                res = _result(unit.case, s, "FAIL_RUN", f"conformance engine error: {_short(e)}{_where(e)}",
                              precision=self.precision, **unit.totals)
            res["duration_s"] = lower_share + (time.perf_counter() - t1)
            if res["outcome"] not in ("PASS", "PASS_PARTIAL", "SKIP") and not res.get("stage"):
                res["stage"] = "execute"
            self.emit(res)

    # ------------------------------------------------------------------ steps
    def _options(self) -> dict[str, dict[str, Any]]:
        return {self.plugin: {**self.cfg.get("options", {}), "precision": self.precision.name}}

    def _lower(self, module: torch.nn.Module, example: tuple[torch.Tensor, ...], calib: Any,
               dyn: Any) -> tuple[Any, tuple[str, str] | None]:
        from delegate_sdk.lowering import lower

        try:
            prog = lower(copy.deepcopy(module), example, [self.plugin], options=self._options(),
                         calibration=calib, dynamic_shapes=dyn, hosted_ops=bool(self.cfg.get("hosted_ops")),
                         min_benefit=False)  # the single op (a view too) is what conformance tests
        except FatalRunError:
            raise
        except Exception as e:
            return None, classify_lower_error(e)
        return prog, None

    def _save(self, program: Any, path: Path) -> tuple[str, str] | None:
        try:
            program.save(path)
        except ContractError as e:
            return "FAIL_CONTRACT", f"saving the program failed: {_short(e)}"
        except Exception as e:
            return "FAIL_LOAD", f"saving the program failed: {_short(e)}{_where(e)}"
        return None

    def _load(self, path: Path) -> tuple[Any, tuple[str, str] | None]:
        from delegate_sdk.program import load

        try:
            return load(path), None
        except ContractError as e:
            return None, ("FAIL_CONTRACT", f"loading the saved program failed: {_short(e)}")
        except (ArtifactError, PluginError) as e:
            return None, ("FAIL_LOAD", f"loading the saved program failed: {_short(e)}")
        except Exception as e:
            return None, ("FAIL_LOAD", f"loading the saved program failed: {_short(e)}{_where(e)}")

    def _inputs(self, case: OpCase | ModelCase, s: Sample, purpose: str = "run",
                shapes: Sequence[tuple[int, ...]] | None = None) -> tuple[torch.Tensor, ...]:
        return sampling.make_inputs(s, sample_id(case, s), self.seed, self.precision, purpose=purpose,
                                    shapes=shapes)

    def _fresh_check(self, unit: _Unit, todo: list[Sample], artifact: Path) -> bool:
        """Run the unit's samples from the artifact in a fresh process; False when it hung (all reported)."""
        from delegate_sdk.conformance.fresh import FreshProcess

        if self._fresh is None:
            self._fresh = FreshProcess(self.plugin, self.tmp / "fresh", threads=int(self.cfg.get("threads") or 1))
        self._fresh.start()  # still in the lowering step: the fresh step times only the artifact
        self.step("fresh")
        inputs = [self._inputs(unit.case, s) for s in todo]
        log_path = Path(self.cfg["log_path"]) if self.cfg.get("log_path") else None
        offset = log_path.stat().st_size if log_path is not None and log_path.exists() else 0
        res = self._fresh.run(artifact, inputs, timeout=0.85 * self.timeout)  # reports before the scheduler kills
        where = ("in a fresh process (new, empty working and temp directories; the compile-time temp area "
                 "removed)")
        if res.stage == "timeout":
            from delegate_sdk.conformance.scheduler import python_stack

            stack = python_stack(log_path, offset) if log_path is not None else []
            for s in todo:
                self._emit(unit.case, s, "TIMEOUT", f"running the artifact {where} {res.error}", stage="fresh",
                           stack=stack, **unit.totals)
            return False
        if res.stage == "start":  # the engine's own loader failed: not the plugin's fault, say so and go on
            log.warning("fresh-process check not run: %s", res.error)
            unit.checks.append("fresh_process:not_run")
            return True
        unit.checks.append("fresh_process")
        if res.error:
            what = {"load": "the artifact does not load", "execute": "the artifact loads but does not run",
                    "close": "the program's handles cannot be released", "crash": "running the artifact crashed"}
            unit.problems.append(f"not self-contained: {what.get(res.stage, 'the artifact fails')} {where}: "
                                 f"{res.error}")
        if res.foreign_files:
            files = ", ".join(res.foreign_files[:3]) + (" ..." if len(res.foreign_files) > 3 else "")
            unit.problems.append(f"not self-contained: in the fresh process, init/execute read files that are not "
                                 f"part of the artifact: {files}")
        if res.outputs is not None:
            for s, outs in zip(todo, res.outputs):
                unit.fresh_outputs[sample_id(unit.case, s)] = outs
        return True

    def _thread_check(self, unit: _Unit, s: Sample) -> None:
        """thread_safe=True: several threads on one loaded program must get the single-threaded results."""
        n = THREADS * CALLS_PER_THREAD
        inputs = [self._inputs(unit.case, s, purpose=f"thread{k}") for k in range(n)]

        def call(xs: tuple[Any, ...]) -> list[Any]:
            with torch.no_grad():
                return [t.clone() if isinstance(t, torch.Tensor) else t for t in _flat(unit.loaded(*xs))]

        try:
            single = [call(xs) for xs in inputs]
        except Exception as e:  # the per-sample runs report this failure
            log.debug("single-threaded reference of the thread check failed: %s", e)
            return
        unit.checks.append("threads")
        results, errors = contract.threaded_results(call, inputs, THREADS, timeout=0.5 * self.timeout)
        bad = [(k, contract.differences(single[k], r) if r is not None else "raised")
               for k, r in enumerate(results)]
        bad = [(k, why) for k, why in bad if why]
        if bad or errors:
            first = f"; first: call {bad[0][0]}: {bad[0][1]}" if bad else ""
            unit.problems.append(
                f"thread_safe=True, but {len(bad)}/{n} calls made from {THREADS} threads at once on one loaded "
                f"program differ from the same calls made one at a time{first}"
                + (f"; errors: {errors[0]}" if errors else "")
                + " (declare thread_safe=False, and the core serialises calls to a handle)")

    def _run_sample(self, unit: _Unit, s: Sample) -> dict[str, Any]:
        case, loaded, totals = unit.case, unit.loaded, unit.totals
        sid = sample_id(case, s)
        inputs = self._inputs(case, s)
        try:
            with torch.no_grad():
                expected = unit.module(*_clone_inputs(inputs))
        except Exception as e:
            return _result(case, s, "SKIP", f"eager PyTorch fails on this sample: {_short(e)}",
                           precision=self.precision, **totals)
        before = contract.snapshot(inputs)
        try:
            with torch.no_grad():
                actual, calls = loaded.trace_calls(*inputs)
        except FatalRunError:
            raise
        except Exception as e:
            outcome, detail = classify_run_error(e)
            return _result(case, s, outcome, detail, precision=self.precision, **totals)
        flat_e, flat_d = _flat(expected), list(actual)
        problem = check_structure(flat_e, flat_d)
        if problem:
            return _result(case, s, "FAIL_CONTRACT", problem, precision=self.precision, **totals)
        verdict, problem = self._judge(unit, inputs, flat_e, flat_d, calls)
        if problem:
            return _result(case, s, "FAIL_CONTRACT", problem, precision=self.precision, **totals)
        problems = list(unit.problems)
        checks = list(unit.checks)
        if self.runtime_checks:
            checks += ["inputs_unchanged", "outputs_not_reused"]
            problems += contract.modified_program_inputs(inputs, before) + contract.modified_delegate_inputs(calls)
            fresh = unit.fresh_outputs.get(sid)
            if fresh is not None:  # before the second call, which a plugin that reuses buffers overwrites
                diff = contract.differences(flat_d, fresh)
                if diff:
                    problems.append(f"a fresh process gets other results from the artifact than the compiling "
                                    f"process: {diff}")
            problems += self._second_call(unit, s, calls, flat_d)
            if s.dynamic:
                n, found = self._more_sizes(unit, s, verdict.ok)
                checks.append(f"sizes:{n + 1}")
                problems += found
        common = {"metrics": verdict.metrics, "tolerance": verdict.tolerance, "precision": self.precision,
                  "checks": checks, **totals}
        if problems:
            detail = "; ".join(dict.fromkeys(problems))
            if not verdict.ok:
                detail += f" | numerics: {verdict.detail}"
            return _result(case, s, "FAIL_CONTRACT", f"plugin {self.plugin!r}: {detail}", **common)
        if not verdict.ok:
            detail = verdict.detail
            if case.kind == "model" and self.cfg.get("bisect", True):
                from delegate_sdk.conformance.bisect import bisect_model

                try:
                    detail += " | " + bisect_model(unit.lowered, inputs, self.plugin, self._options(),
                                                   self.precision)
                except Exception as e:  # bisection is a diagnosis; its failure must not change the outcome
                    detail += f" | bisection failed: {_short(e, 200)}"
            return _result(case, s, "FAIL_MISMATCH", detail, **common)
        if unit.summary.nodes_delegated < unit.summary.nodes_total:
            return _result(case, s, "PASS_PARTIAL", "fell back to eager: " + _fallback_text(unit.summary), **common)
        if unit.summary.nodes_hosted:  # right, but not all of it on the accelerator: never a full pass
            hosted = [n for p in unit.summary.partitions for n in p.hosted]
            return _result(case, s, "PASS_PARTIAL", f"{len(hosted)} of {unit.summary.nodes_total} node(s) ran hosted "
                           f"on the backend's CPU, not accelerated: {', '.join(hosted[:6])}", **common)
        return _result(case, s, "PASS", "", **common)

    def _second_call(self, unit: _Unit, s: Sample, calls: list[Any], flat_d: list[Any]) -> list[str]:
        """Call again with other inputs: call 1's results must survive it and share no memory with its own."""
        kept = contract.outputs_by_partition(calls)
        kept_program = [t.clone() if isinstance(t, torch.Tensor) else t for t in flat_d]
        inputs2 = self._inputs(unit.case, s, purpose="run2")
        before2 = contract.snapshot(inputs2)
        try:
            with torch.no_grad():
                _, calls2 = unit.loaded.trace_calls(*inputs2)
        except Exception as e:
            return [f"a second call through the same loaded program (other inputs, same shapes) failed: "
                    f"{_short(e, 300)}"]
        found = contract.reused_outputs(calls, kept, calls2)
        found += contract.modified_program_inputs(inputs2, before2) + contract.modified_delegate_inputs(calls2)
        if not found:
            changed = [k for k, (o, c) in enumerate(zip(flat_d, kept_program)) if not contract.bit_equal(o, c)]
            if changed:
                found.append(f"program output(s) {changed} of one call changed when the program was called again")
        return found

    def _more_sizes(self, unit: _Unit, s: Sample, first_ok: bool) -> tuple[int, list[str]]:
        """A dynamic sample also runs at other sizes its program was exported for, through the same program."""
        sizes = sampling.other_sizes(s)
        fails: list[str] = []
        for k, shapes in enumerate(sizes):
            xs = self._inputs(unit.case, s, purpose=f"run_size{k}", shapes=shapes)
            try:
                with torch.no_grad():
                    exp = _flat(unit.module(*_clone_inputs(xs)))
            except Exception:  # eager itself cannot run this size: not the plugin's problem
                continue
            try:
                with torch.no_grad():
                    act, calls = unit.loaded.trace_calls(*xs)
            except Exception as e:
                fails.append(f"at input shapes {[list(x.shape) for x in xs]} the call failed: {_short(e, 300)}")
                continue
            act = list(act)
            problem = check_structure(exp, act)
            if problem:
                fails.append(f"at input shapes {[list(x.shape) for x in xs]}: {problem}")
                continue
            verdict, problem = self._judge(unit, xs, exp, act, calls)
            if problem or not verdict.ok:
                fails.append(f"at input shapes {[list(x.shape) for x in xs]}: {problem or verdict.detail}")
        if fails and first_ok:
            own = [list(x.shape) for x in sampling.make_inputs(s, sample_id(unit.case, s), self.seed, self.precision)]
            return len(sizes), [f"dynamic shapes: right at input shapes {own} but wrong at another size the program "
                                f"was exported for, through the same loaded program (shape-specialised?): "
                                + "; ".join(fails)]
        return len(sizes), []

    def _judge(self, unit: _Unit, inputs: tuple[torch.Tensor, ...], flat_e: list[Any], flat_d: list[Any],
               calls: list[Any]) -> tuple[tolerance.Verdict, str]:
        case = unit.case
        te = [t for t in flat_e if isinstance(t, torch.Tensor)]
        td = [t for t in flat_d if isinstance(t, torch.Tensor)]
        if case.kind == "model":
            return tolerance.judge_model(self.precision, te, td), ""
        quant = None
        if self.quantized:
            quant, problem = self._output_quant(unit, calls, td)
            if problem:
                return tolerance.Verdict(False, problem), problem
        return tolerance.judge_op(self.precision, te, td, reduction=reduction_length(case, inputs), cond=case.cond,
                                  quant=quant), ""

    def _output_quant(self, unit: _Unit, calls: list[Any],
                      flat_d: list[torch.Tensor]) -> tuple[list[tolerance.OutputQuant | None], str]:
        """Scale and reference result for each program output that is a partition output (for bool and index
        outputs only the reference: they are judged against it when the plugin has one)."""
        parts = {p.id: p for p in unit.summary.partitions}
        refs: dict[str, list[torch.Tensor] | None] = {}
        out: list[tolerance.OutputQuant | None] = []
        for o in flat_d:
            found = None
            for c in calls:
                for j, t in enumerate(c.outputs):
                    if t is o or (isinstance(t, torch.Tensor) and t.shape == o.shape and t.dtype == o.dtype
                                  and torch.equal(torch.nan_to_num(t), torch.nan_to_num(o))):
                        found = (c.partition, j, c.inputs_before or c.inputs)
                        break
                if found:
                    break
            if found is None:
                out.append(None)
                continue
            pid, j, b_in = found
            qp = None
            if o.dtype.is_floating_point:
                oq = list(getattr(parts.get(pid), "output_quant", None) or [])
                qp = oq[j] if j < len(oq) else None
                if qp is None:
                    return [], (f"partition {pid} was compiled at {self.precision.name} but reports no quantization "
                                f"for its output {j} (CompiledDelegate.output_quant)")
            if pid not in refs:
                try:
                    with torch.no_grad():
                        r = unit.loaded.reference(pid, list(b_in))
                    refs[pid] = list(r) if r is not None else None
                except Exception as e:
                    log.warning("reference_execute failed for %s: %s", pid, e)
                    refs[pid] = None
            ref_list = refs[pid]
            ref = ref_list[j] if ref_list is not None and j < len(ref_list) else None
            if qp is None:
                out.append(tolerance.OutputQuant(None, 0, ref) if ref is not None else None)
            else:
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
