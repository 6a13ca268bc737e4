"""Planning conformance work, and the worker process that does it.

The plan: every selected sample of every selected case, grouped into *units*: the samples of one case
that share shapes (``Sample.group_key``) are lowered once and run one after the other. Units go to worker
processes (fresh interpreters started with ``subprocess``; a worker is reused for many units), on this
machine or on a Ray cluster: :mod:`delegate_sdk.conformance.scheduler` hands them out and turns a worker that
dies or hangs into CRASH / TIMEOUT results. A worker reports each step it starts and each result.

Worker stdout/stderr go to a log file per worker (the terminal keeps its progress bar); the tail of it
is quoted in CRASH details, and faulthandler writes the Python stack there on a crash or a hang.
"""

from __future__ import annotations

import faulthandler
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from delegate_sdk.conformance.cases import ModelCase, OpCase, sample_id
from delegate_sdk.conformance.report import CaseResult
from delegate_sdk.conformance.scheduler import LocalPool, RunAborted, Scheduler, WorkerPool, python_stack

__all__ = ["RunAborted", "RunConfig", "Unit", "collect_cases", "parse_shard", "plan", "python_stack", "run_units"]

Case = OpCase | ModelCase


@dataclass
class Unit:
    case_id: str
    labels: list[str]  # sample labels, in run order
    sample_ids: list[str]


@dataclass
class RunConfig:
    plugin: str
    precision: str
    options: dict[str, Any]
    seed: int = 0
    jobs: int | None = 1
    timeout: float | None = 300.0
    bisect: bool = True
    suite: str = "all"
    threads_per_worker: int | None = None
    #: what the precision means (``Precision.to_json()``); the worker judges by it, never by the name
    precision_spec: dict[str, Any] | None = None
    runtime_checks: bool = True
    #: where the workers run: "local" processes, or "ray" (a cluster at ``address``, or a local Ray instance)
    executor: str = "local"
    address: str | None = None
    #: let the plugin host ops on its CPU inside partitions (off: conformance of the accelerator itself)
    hosted_ops: bool = False
    #: absolute paths of .pt2 programs that are model cases too (``conform --model``)
    model_files: tuple[str, ...] = ()

    def worker_dict(self, tmpdir: str) -> dict[str, Any]:
        return {"plugin": self.plugin, "precision": self.precision, "precision_spec": self.precision_spec,
                "options": dict(self.options), "seed": self.seed, "bisect": self.bisect, "suite": self.suite,
                "tmpdir": tmpdir, "timeout": self.timeout, "runtime_checks": self.runtime_checks,
                "hosted_ops": self.hosted_ops, "model_files": list(self.model_files),
                "threads": self.threads_per_worker or self._threads()}

    def _threads(self) -> int:
        """torch threads per worker: the cores shared among the local workers; one per (one-CPU) Ray worker."""
        if self.executor == "ray":
            return 1
        return max(1, (os.cpu_count() or 1) // max(1, self.jobs or 1))


# --------------------------------------------------------------------------- case sources


def plugin_cases(plugin: str) -> list[Case]:
    """Cases the plugin under test contributes through the ``conformance_cases`` hook."""
    from delegate_sdk.registry import default_registry

    backend = default_registry().get(plugin)
    if not backend.implements("conformance_cases"):
        return []
    out: list[Case] = []
    for chunk in backend.hook.call("conformance_cases") or []:
        for c in (chunk if isinstance(chunk, (list, tuple)) else [chunk]):
            if not isinstance(c, (OpCase, ModelCase)):
                raise TypeError(f"plugin {plugin!r}: conformance_cases returned a {type(c).__name__}, "
                                "expected delegate_sdk.conformance.cases.OpCase or ModelCase")
            out.append(c)
    return out


def collect_cases(plugin: str | None, suite: str = "all", extra: Sequence[Case] = (),
                  model_files: Sequence[str] = ()) -> list[Case]:
    """The cases of ``suite``, the plugin's own (not in the zoo), and one model case per ``model_files`` entry
    (in every suite: the user asked for them by name)."""
    from delegate_sdk.conformance.corpus import builtin_cases
    from delegate_sdk.conformance.model_files import file_cases

    cases = builtin_cases(suite)
    # the zoo is the corpus's real architectures only; a plugin's own cases run in the other suites
    contributed = [] if suite == "zoo" else list(extra) + (plugin_cases(plugin) if plugin else [])
    for c in contributed:
        if suite == "ops" and c.kind != "op" or suite == "models" and c.kind != "model":
            continue
        cases.append(c)
    cases += file_cases(model_files)
    seen: dict[str, Case] = {}
    for c in cases:
        if c.id in seen:
            raise ValueError(f"duplicate conformance case id {c.id!r} (plugin cases must prefix names with the "
                             "backend name)")
        seen[c.id] = c
    return cases


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (1 <= I <= N) -> (I, N)."""
    if not spec:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m:
        raise ValueError(f"--shard must look like I/N (e.g. 2/4), not {spec!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard {spec}: need 1 <= I <= N")
    return i, n


def plan(cases: Sequence[Case], *, pattern: str | None = None, shard: tuple[int, int] | None = None) -> list[Unit]:
    """Units to run, in a deterministic order.

    ``pattern`` (a regular expression, searched in the sample id) selects samples; ``shard`` (I, N) keeps
    the cases whose position in the id-sorted case list is I-1 modulo N, so N machines given the same
    command with I = 1..N run every case exactly once.
    """
    rx = re.compile(pattern) if pattern else None
    ordered = sorted(cases, key=lambda c: c.id)
    if shard:
        i, n = shard
        ordered = [c for k, c in enumerate(ordered) if k % n == i - 1]
    units: list[Unit] = []
    for c in ordered:
        groups: dict[Any, list[str]] = {}
        for s in c.samples:
            sid = sample_id(c, s)
            if rx and not rx.search(sid):
                continue
            groups.setdefault(s.group_key(), []).append(s.label)
        for labels in groups.values():
            units.append(Unit(c.id, labels, [f"{c.id}/{lab}" for lab in labels]))
    return units


# --------------------------------------------------------------------------- worker side

_CASES: dict[str, Case] | None = None


def _worker_cases(cfg: dict[str, Any]) -> dict[str, Case]:
    global _CASES
    if _CASES is None:
        suite = "zoo" if cfg.get("suite") == "zoo" else "all"  # the zoo is not part of "all"
        files = cfg.get("model_files") or []
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"--model {missing[0]} is not on this worker's machine: on a cluster, give "
                                    "every node the file at the same path (a shared filesystem)")
        _CASES = {c.id: c for c in collect_cases(cfg["plugin"], suite, model_files=files)}
    return _CASES


def _worker_main(conn: Connection) -> None:
    """Body of a worker process (``python -m delegate_sdk.conformance.worker FD``)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    # a native crash, or the parent's SIGUSR1 before it kills a hung step, writes the Python stack to the log
    faulthandler.enable(file=sys.stderr, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    msg = conn.recv()
    assert msg[0] == "config", msg
    cfg: dict[str, Any] = msg[1]
    if cfg.get("die_with_parent", True):
        from delegate_sdk.conformance.fresh import die_with_parent

        die_with_parent()  # a worker never outlives the scheduler that started it
    import torch

    torch.set_num_threads(int(cfg.get("threads") or 1))
    from delegate_sdk.conformance.pipeline import GroupRunner

    try:
        from delegate_sdk.registry import default_registry

        default_registry().get(cfg["plugin"])
        cases = _worker_cases(cfg)
    except Exception as e:
        conn.send(("fatal", f"worker could not start: {type(e).__name__}: {e}"))
        return
    def step(stage: str, sid: str | None = None) -> None:
        # where this step's output (and a crash's stack) starts in the log: only the worker knows it exactly
        conn.send(("step", stage, sid, _log_size()))

    runner = GroupRunner(cfg, step=step, emit=lambda res: conn.send(("result", res)))
    runner.prefork_fresh(close=[conn])  # torch and the plugin are imported, nothing is compiled yet
    conn.send(("ready",))
    try:
        _serve(conn, runner, cases)
    finally:
        runner.close()


def _log_size() -> int:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        return os.fstat(2).st_size
    except (OSError, ValueError):
        return -1


def _serve(conn: Connection, runner: Any, cases: dict[str, Case]) -> None:
    from delegate_sdk.conformance.pipeline import FatalRunError

    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "stop":
            return
        _, case_id, labels = msg
        case = cases[case_id]
        by_label = {s.label: s for s in case.samples}
        try:
            runner.run(case, [by_label[lab] for lab in labels])
        except FatalRunError as e:
            conn.send(("fatal", str(e)))
            return
        except Exception as e:  # engine bug: report, keep serving
            import traceback

            traceback.print_exc()
            conn.send(("error", f"{type(e).__name__}: {e}"))
        conn.send(("done",))


# --------------------------------------------------------------------------- parent side


def make_pool(cfg: RunConfig, tmpdir: str) -> WorkerPool:
    """The worker pool of ``cfg.executor``: local processes, or a Ray cluster."""
    if cfg.executor == "local":
        return LocalPool(tmpdir)
    if cfg.executor == "ray":
        from delegate_sdk.conformance.ray_pool import RayPool

        return RayPool(cfg.address)
    raise ValueError(f"unknown executor {cfg.executor!r}; use local or ray")


def run_units(cfg: RunConfig, cases: Sequence[Case], units: Sequence[Unit],
              on_result: Callable[[CaseResult], None] | None = None,
              startup_timeout: float = 300.0, stats: dict[str, Any] | None = None) -> list[CaseResult]:
    """Run ``units`` on the workers of ``cfg.executor``; return one CaseResult per planned sample, in plan order.

    ``stats``, when given, receives the executor's description and where the time went (per machine or node).
    """
    tmpdir = tempfile.mkdtemp(prefix="dsdk-conform-")
    pool = make_pool(cfg, tmpdir)
    scheduler = Scheduler(pool, startup_timeout=startup_timeout)
    try:
        return scheduler.run(cfg, cases, units, tmpdir, on_result=on_result)
    finally:
        if stats is not None:
            stats.update(pool.describe())
            stats["where"] = {k: v.to_json() for k, v in scheduler.stats.items()}
        pool.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
