"""Scheduling conformance work on workers, so that every sample gets exactly one result.

A *unit* (the samples of one case that share a lowering, :func:`delegate_sdk.conformance.runner.plan`) is
what is scheduled. A *worker* is a ``python -m delegate_sdk.conformance.worker`` process: it runs one unit at a
time and reports each step it starts (``lower``, ``fresh``, ``init``, ``threads``, ``execute`` of a sample) and
each result. The :class:`Scheduler` hands units to idle workers and times every step; when a worker dies (a
segfault or ``abort()`` in a vendor runtime) its current step is reported CRASH, and when a step runs past
the timeout the worker's Python stack is taken (faulthandler) and the step reported TIMEOUT; either way the
worker is replaced and the samples of the unit it had not reached are requeued.

Where the workers run is a :class:`WorkerPool`, the one thing that differs between executors:

- :class:`LocalPool` (``--executor local``, the default): ``--jobs`` worker processes on this machine, forked
  warm from a template process that outlives the run (:mod:`delegate_sdk.conformance.forkserver`);
- :class:`delegate_sdk.conformance.ray_pool.RayPool` (``--executor ray``): the same worker processes, each
  started on a node of a Ray cluster by a small actor that relays its messages.

Same units, same seeds, same workers, same scheduler: the outcomes per sample and the report are the same
whichever pool ran them, apart from timings.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from delegate_sdk.conformance.forkserver import ForkedWorker, Template, TemplateUnavailable, template_for, worker_env
from delegate_sdk.conformance.report import CaseResult

if TYPE_CHECKING:
    from delegate_sdk.conformance.runner import Case, RunConfig, Unit


class RunAborted(Exception):
    """The run could not go on (a worker could not start, a bad option): message for the user."""


#: what the worker was doing in each stage, for CRASH / TIMEOUT details
STAGE_WORDS = {"lower": "lowering (capture, claim, compile, save)",
               "fresh": "loading and running the artifact in a fresh process",
               "init": "loading the artifact (init)", "threads": "calling the program from several threads",
               "execute": "running the sample"}


# --------------------------------------------------------------------------- worker logs


def signal_name(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_tail(path: Path, offset: int = 0, n: int = 3) -> str:
    """The last ``n`` non-empty lines the worker wrote after ``offset`` (its output during the failed step)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " / ".join(lines[-n:])[-400:]


_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+) in (.+)$')


def python_stack(path: Path, offset: int = 0, limit: int = 15) -> list[str]:
    """The innermost frames (most recent first) of the last faulthandler dump in a worker log after
    ``offset``: the thread that crashed or, for a dump on request, the main thread."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if "(most recent call first):" in line:
            blocks.append((line.strip(), []))
        elif blocks and (m := _FRAME.match(line)):
            blocks[-1][1].append(f"{Path(m.group(1)).name}:{m.group(2)} in {m.group(3).strip()}")
    if not blocks:
        return []
    current = [b for b in blocks if b[0].startswith("Current thread")]
    frames = (current[-1] if current else blocks[-1])[1]
    return frames[:limit]


# --------------------------------------------------------------------------- workers and pools


class WorkerProcess:
    """A worker process on this machine and its connection (used by both pools: a Ray actor runs one too).

    Forked by ``template`` when one is given (:mod:`delegate_sdk.conformance.forkserver`: torch and the engine
    already imported), else started with ``subprocess`` rather than ``multiprocessing`` so that it never
    re-imports the caller's ``__main__``. Either way it has the caller's environment, with the caller's
    ``sys.path`` prepended to its ``PYTHONPATH`` (as multiprocessing would do), so test plugins importable here
    are importable there.
    """

    def __init__(self, cfg: dict[str, Any], log_path: Path, template: Template | None = None):
        ours, theirs = socket.socketpair()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | ForkedWorker | None = None
        if template is not None:
            try:
                self.proc = template.spawn(theirs, log_path)
            except TemplateUnavailable:
                self.proc = None
        if self.proc is None:
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "delegate_sdk.conformance.worker", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=worker_env(), close_fds=True)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send(("config", {**cfg, "log_path": str(log_path)}))
        self.log_offset = 0

    def messages(self) -> tuple[list[Any], bool]:
        """Everything the worker has sent so far (without blocking), and whether it is gone."""
        out: list[Any] = []
        try:
            while self.conn.poll():
                out.append(self.conn.recv())
                self.on_message(out[-1])
        except (EOFError, OSError):
            return out, True
        return out, False

    def mark_step(self, offset: int | None = None) -> None:
        self.log_offset = offset if offset is not None and offset >= 0 else file_size(self.log_path)

    def on_message(self, msg: Any) -> None:
        """Track where the current step's output starts (the worker reports its log size with each step)."""
        if msg[0] == "step":
            self.mark_step(msg[3] if len(msg) > 3 else None)

    def death(self) -> str:
        try:
            code = self.proc.wait(2)
        except subprocess.TimeoutExpired:
            code = None
        why = f"the worker process died ({signal_name(code)})"
        tail = log_tail(self.log_path, self.log_offset)
        return why + (f"; its last output: {tail}" if tail else "")

    def stack(self) -> list[str]:
        return python_stack(self.log_path, self.log_offset)

    def startup_output(self) -> str:
        return log_tail(self.log_path)

    def dump_stack(self, wait_s: float = 1.5) -> None:
        """Ask the worker's faulthandler for its Python stack (it goes to the log) before it is killed."""
        if self.proc.poll() is not None:
            return
        size = file_size(self.log_path)
        try:
            os.kill(self.proc.pid, signal.SIGUSR1)
        except OSError:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait_s:
            time.sleep(0.05)
            if file_size(self.log_path) > size and time.monotonic() - t0 > 0.3:  # written, with time to finish
                break

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.conn.send(("stop",))
        except OSError:
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.conn.close()
        except OSError:
            pass


@dataclass
class WorkerStats:
    """Where the time went: per place (this machine, or a Ray node), workers started, units and busy seconds."""

    workers: int = 0
    units: int = 0
    busy_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"workers": self.workers, "units": self.units, "busy_s": round(self.busy_s, 1)}


class Worker(ABC):
    """One worker as the scheduler sees it; a pool makes them."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.units_done = 0
        self.busy_s = 0.0
        self.ready = False
        self.unit: Unit | None = None
        self.done_ids: set[str] = set()
        self.stage = "lower"
        self.step: str | None = None
        self.started = self.step_started = self.unit_started = time.monotonic()

    def assign(self, unit: Unit) -> None:
        self.unit = unit
        self.done_ids = set()
        self.stage, self.step = "lower", None
        self.step_started = self.unit_started = time.monotonic()
        self.mark_step()
        self.send(("unit", unit.case_id, unit.labels))

    def on_step(self, stage: str, sample_id: str | None) -> None:
        self.stage, self.step = stage, sample_id
        self.step_started = time.monotonic()

    @abstractmethod
    def send(self, msg: Any) -> None: ...

    @abstractmethod
    def mark_step(self) -> None:
        """Remember where the worker's output of the current step starts."""

    @abstractmethod
    def death(self) -> str:
        """Why the worker is gone (exit status, its last output), one line."""

    @abstractmethod
    def stack(self) -> list[str]:
        """The worker's Python stack of the current step, if faulthandler wrote one."""

    @abstractmethod
    def startup_output(self) -> str: ...

    @abstractmethod
    def dump_stack(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def kill(self) -> None: ...


class WorkerPool(ABC):
    """Where workers run."""

    #: "local" or "ray"
    kind: str = ""

    @abstractmethod
    def slots(self, requested: int | None) -> int:
        """How many workers to keep busy."""

    @abstractmethod
    def spawn(self, cfg: dict[str, Any]) -> Worker: ...

    @abstractmethod
    def wait(self, workers: Sequence[Worker], timeout: float) -> list[tuple[Worker, list[Any], bool]]:
        """Block up to ``timeout`` s; return (worker, messages, gone) for each worker that has news."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def close(self) -> None:
        pass


class _LocalWorker(Worker):
    def __init__(self, cfg: dict[str, Any], log_path: Path, template: Template | None = None):
        super().__init__("local")
        self.process = WorkerProcess(cfg, log_path, template)

    def send(self, msg: Any) -> None:
        self.process.conn.send(msg)

    def mark_step(self) -> None:
        self.process.mark_step()

    def death(self) -> str:
        return self.process.death()

    def stack(self) -> list[str]:
        return self.process.stack()

    def startup_output(self) -> str:
        return self.process.startup_output()

    def dump_stack(self) -> None:
        self.process.dump_stack()

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()


class LocalPool(WorkerPool):
    """Worker processes on this machine (``--jobs`` of them; default: the core count)."""

    kind = "local"

    def __init__(self, tmpdir: str, warm: bool = True):
        self.tmpdir = Path(tmpdir)
        self._spawned = 0
        self._warm = warm and hasattr(os, "fork")

    def slots(self, requested: int | None) -> int:
        return max(1, requested or os.cpu_count() or 1)

    def _template(self) -> Template | None:
        if not self._warm:
            return None
        try:
            return template_for(worker_env())
        except TemplateUnavailable as e:
            logging.getLogger(__name__).info("workers start as new processes: %s", e)
            self._warm = False
            return None

    def spawn(self, cfg: dict[str, Any]) -> Worker:
        self._spawned += 1
        return _LocalWorker(cfg, self.tmpdir / f"worker{self._spawned}.log", self._template())

    def wait(self, workers: Sequence[Worker], timeout: float) -> list[tuple[Worker, list[Any], bool]]:
        local = [w for w in workers if isinstance(w, _LocalWorker)]
        ready = wait([w.process.conn for w in local], timeout=timeout)
        out = []
        for w in local:
            if w.process.conn in ready:
                msgs, gone = w.process.messages()
                out.append((w, msgs, gone))
        return out


# --------------------------------------------------------------------------- the scheduler


def _blank_result(case: Case, sid: str, outcome: str, detail: str, duration: float = 0.0, stage: str = "",
                  stack: list[str] | None = None) -> CaseResult:
    return CaseResult(sid, case.id, case.kind, case.op, outcome, detail,
                      tolerance={"kind": "none", "note": f"not compared ({outcome})"}, duration_s=duration,
                      stage=stage, stack=list(stack or []))


@dataclass
class Scheduler:
    """Hands units to a pool's workers and turns worker deaths and hangs into CRASH / TIMEOUT results."""

    pool: WorkerPool
    startup_timeout: float = 300.0
    stats: dict[str, WorkerStats] = field(default_factory=dict)

    def run(self, cfg: RunConfig, cases: Sequence[Case], units: Sequence[Unit], tmpdir: str,
            on_result: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
        """One CaseResult per planned sample, in plan order."""
        by_id = {c.id: c for c in cases}
        order = [sid for u in units for sid in u.sample_ids]
        results: dict[str, CaseResult] = {}
        queue: deque[Unit] = deque(units)
        wcfg = cfg.worker_dict(tmpdir)
        n_workers = max(1, min(self.pool.slots(cfg.jobs), len(units)))
        workers: list[Worker] = []
        startup_failures = 0

        def record(res: CaseResult) -> None:
            if res.id not in results:
                results[res.id] = res
                if on_result:
                    on_result(res)

        every: list[Worker] = []

        def spawn() -> Worker:
            w = self.pool.spawn(wcfg)
            every.append(w)
            return w

        def unit_done(w: Worker) -> None:
            w.units_done += 1
            w.busy_s += time.monotonic() - w.unit_started

        def fail_current(w: Worker, outcome: str, why: str) -> None:
            """The worker is gone: its current step gets ``outcome``; the unit's untouched samples are retried."""
            u = w.unit
            if u is None:
                return
            unit_done(w)
            w.unit = None
            case = by_id[u.case_id]
            spent = time.monotonic() - w.step_started
            left = [(lab, sid) for lab, sid in zip(u.labels, u.sample_ids) if sid not in w.done_ids]
            if not left:
                return
            stack = w.stack()
            if w.stage != "execute" or w.step is None:
                what = STAGE_WORDS.get(w.stage, w.stage)
                for _, sid in left:
                    record(_blank_result(case, sid, outcome, f"{why} while {what} ({u.case_id})",
                                         spent / len(left), stage=w.stage, stack=stack))
                return
            for _, sid in left:
                if sid == w.step:
                    record(_blank_result(case, sid, outcome, f"{why} while {STAGE_WORDS['execute']}", spent,
                                         stage="execute", stack=stack))
            rest = [(lab, sid) for lab, sid in left if sid != w.step]
            if rest:
                queue.appendleft(type(u)(u.case_id, [lab for lab, _ in rest], [sid for _, sid in rest]))

        def handle(w: Worker, msg: Any) -> None:
            kind = msg[0]
            if kind == "ready":
                w.ready = True
            elif kind == "step":
                w.on_step(msg[1], msg[2])
            elif kind == "result":
                res = CaseResult.from_worker(msg[1])
                w.done_ids.add(res.id)
                record(res)
            elif kind == "error":
                u = w.unit
                if u is not None:
                    case = by_id[u.case_id]
                    for sid in u.sample_ids:
                        if sid not in w.done_ids:
                            record(_blank_result(case, sid, "FAIL_RUN", f"conformance engine error: {msg[1]}"))
            elif kind == "done":
                if w.unit is not None:
                    unit_done(w)
                w.unit, w.step = None, None
            elif kind == "fatal":
                raise RunAborted(msg[1])

        def absorb(news: list[tuple[Worker, list[Any], bool]], replace: list[Worker]) -> None:
            """Handle what workers said; a worker that is gone gets CRASH for its step and joins ``replace``."""
            nonlocal startup_failures
            for w, msgs, gone in news:
                for msg in msgs:
                    handle(w, msg)
                if gone and w not in replace:
                    why = w.death()
                    if not w.ready:
                        startup_failures += 1
                        if startup_failures >= 2:
                            raise RunAborted(f"conformance workers cannot start: {why}")
                    fail_current(w, "CRASH", why)
                    w.kill()
                    replace.append(w)

        def overdue(w: Worker) -> bool:
            return bool(w.ready and w.unit is not None and cfg.timeout
                        and time.monotonic() - w.step_started > cfg.timeout)

        try:
            for _ in range(n_workers):
                workers.append(spawn())
            while queue or any(w.unit is not None for w in workers):
                for w in workers:
                    if w.ready and w.unit is None and queue:
                        w.assign(queue.popleft())
                now = time.monotonic()
                deadlines = [w.started + self.startup_timeout if not w.ready else w.step_started + cfg.timeout
                             for w in workers if not w.ready or (w.unit is not None and cfg.timeout)]
                wait_for = max(0.05, min(deadlines) - now) if deadlines else 1.0
                replace: list[Worker] = []

                absorb(self.pool.wait(workers, min(wait_for, 5.0)), replace)
                # Messages can be waiting that this loop has not read (a Ray poll in flight, or seconds spent
                # killing another worker): read them before calling a step hung.
                late = [w for w in workers if w not in replace and overdue(w)]
                if late:
                    absorb(self.pool.wait(late, 2.0), replace)
                now = time.monotonic()
                for w in workers:
                    if w in replace:
                        continue
                    if not w.ready and now - w.started > self.startup_timeout:
                        raise RunAborted(f"a conformance worker did not start within {self.startup_timeout:.0f} s: "
                                         f"{w.startup_output()}")
                    if w in late and overdue(w):
                        w.dump_stack()
                        fail_current(w, "TIMEOUT", f"took longer than --timeout {cfg.timeout:g} s")
                        w.kill()
                        replace.append(w)
                for w in replace:
                    workers.remove(w)
                    if (queue or any(x.unit is not None for x in workers)) and len(workers) < n_workers:
                        workers.append(spawn())
                if not workers and queue:
                    workers.append(spawn())
        finally:
            for w in every:  # where the time went (a Ray worker knows its node only once it runs)
                st = self.stats.setdefault(w.where, WorkerStats())
                st.workers += 1
                st.units += w.units_done
                st.busy_s += w.busy_s
            for w in workers:
                if w.ready and w.unit is None:
                    w.stop()
            for w in workers:
                w.kill()
        out = []
        for sid in order:
            if sid in results:
                out.append(results[sid])
            else:  # cannot happen unless a worker protocol error: never drop a case silently
                cid = "/".join(sid.split("/")[:2])
                out.append(_blank_result(by_id[cid], sid, "FAIL_RUN", "no result was reported for this sample"))
        return out
