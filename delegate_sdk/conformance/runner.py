"""Planning and running conformance cases in isolated worker processes.

The plan: every selected sample of every selected case, grouped into *units*: the samples of one case
that share shapes (``Sample.group_key``) are lowered once and run one after the other. Units are spread
over ``jobs`` worker processes (fresh interpreters started with ``subprocess``; a worker is reused for many
units). A worker reports each step it starts (lowering a unit, running a sample) and each result; so when
a worker dies (``os.abort()``, a segfault in a vendor runtime) the step it was on is reported CRASH, and when a step
runs past ``timeout`` seconds the worker is killed and the step reported TIMEOUT. The remaining samples of
that unit are retried in a fresh worker; the run goes on. A crash while lowering marks every sample of
the unit (they share that lowering).

Worker stdout/stderr go to a log file per worker (the terminal keeps its progress bar); the tail of it
is quoted in CRASH details.
"""

from __future__ import annotations

import faulthandler
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from delegate_sdk.conformance.cases import ModelCase, OpCase, sample_id
from delegate_sdk.conformance.report import CaseResult

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
    jobs: int = 1
    timeout: float | None = 300.0
    bisect: bool = True
    suite: str = "all"
    threads_per_worker: int | None = None
    #: what the precision means (``Precision.to_json()``); the worker judges by it, never by the name
    precision_spec: dict[str, Any] | None = None
    runtime_checks: bool = True

    def worker_dict(self, tmpdir: str) -> dict[str, Any]:
        return {"plugin": self.plugin, "precision": self.precision, "precision_spec": self.precision_spec,
                "options": dict(self.options), "seed": self.seed, "bisect": self.bisect, "suite": self.suite,
                "tmpdir": tmpdir, "timeout": self.timeout, "runtime_checks": self.runtime_checks,
                "threads": self.threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, self.jobs))}


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


def collect_cases(plugin: str | None, suite: str = "all", extra: Sequence[Case] = ()) -> list[Case]:
    from delegate_sdk.conformance.corpus import builtin_cases

    cases = builtin_cases(suite)
    contributed = list(extra) + (plugin_cases(plugin) if plugin else [])
    for c in contributed:
        if suite == "ops" and c.kind != "op" or suite == "models" and c.kind != "model":
            continue
        cases.append(c)
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
        _CASES = {c.id: c for c in collect_cases(cfg["plugin"], "all")}
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
    conn.send(("ready",))
    runner = GroupRunner(cfg, step=lambda stage, sid=None: conn.send(("step", stage, sid)),
                         emit=lambda res: conn.send(("result", res)))
    try:
        _serve(conn, runner, cases)
    finally:
        runner.close()


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


class RunAborted(Exception):
    """The run could not go on (a worker could not start, a bad option): message for the user."""


def _signal_name(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, offset: int = 0, n: int = 3) -> str:
    """The last ``n`` non-empty lines the worker wrote after ``offset`` (its output during the failed step)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " / ".join(lines[-n:])[-400:]


class _Worker:
    """A worker process (``python -m delegate_sdk.conformance.worker``) and its connection.

    Started with ``subprocess`` rather than ``multiprocessing`` so that it never re-imports the caller's
    ``__main__``; it inherits the environment, and the parent's ``sys.path`` is prepended to its
    ``PYTHONPATH`` (as multiprocessing would do), so test plugins importable here are importable there.
    """

    def __init__(self, cfg: dict[str, Any], log_path: Path):
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        paths = [p for p in sys.path if p] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "delegate_sdk.conformance.worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, close_fds=True)
        theirs.close()
        self.parent_conn = Connection(ours.detach())
        self.parent_conn.send(("config", {**cfg, "log_path": str(log_path)}))
        self.ready = False
        self.unit: Unit | None = None
        self.done_ids: set[str] = set()
        self.stage = "lower"
        self.step: str | None = None
        self.step_started = time.monotonic()
        self.started = time.monotonic()
        self.log_offset = 0

    @property
    def exitcode(self) -> int | None:
        try:
            return self.proc.wait(2)
        except subprocess.TimeoutExpired:
            return None

    def assign(self, unit: Unit) -> None:
        self.unit = unit
        self.done_ids = set()
        self.stage = "lower"
        self.step = None
        self.step_started = time.monotonic()
        self.log_offset = _size(self.log_path)
        self.parent_conn.send(("unit", unit.case_id, unit.labels))

    def dump_stack(self, wait: float = 1.5) -> None:
        """Ask the worker's faulthandler for its Python stack (it goes to the log) before it is killed."""
        if self.proc.poll() is not None:
            return
        size = _size(self.log_path)
        try:
            os.kill(self.proc.pid, signal.SIGUSR1)
        except OSError:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait:
            time.sleep(0.05)
            if _size(self.log_path) > size and time.monotonic() - t0 > 0.3:  # written, with time to finish
                break

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.parent_conn.close()
        except OSError:
            pass


def _blank_result(case: Case, sid: str, outcome: str, detail: str, duration: float = 0.0, stage: str = "",
                  stack: list[str] | None = None) -> CaseResult:
    return CaseResult(sid, case.id, case.kind, case.op, outcome, detail,
                      tolerance={"kind": "none", "note": f"not compared ({outcome})"}, duration_s=duration,
                      stage=stage, stack=list(stack or []))


#: what the worker was doing in each stage, for CRASH / TIMEOUT details
STAGE_WORDS = {"lower": "lowering (capture, claim, compile, save)",
               "fresh": "loading and running the artifact in a fresh process",
               "init": "loading the artifact (init)", "threads": "calling the program from several threads",
               "execute": "running the sample"}

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


def run_units(cfg: RunConfig, cases: Sequence[Case], units: Sequence[Unit],
              on_result: Callable[[CaseResult], None] | None = None,
              startup_timeout: float = 300.0) -> list[CaseResult]:
    """Run ``units`` on ``cfg.jobs`` worker processes; return one CaseResult per planned sample, in plan order."""
    by_id = {c.id: c for c in cases}
    order = [sid for u in units for sid in u.sample_ids]
    results: dict[str, CaseResult] = {}
    queue: deque[Unit] = deque(units)
    tmpdir = tempfile.mkdtemp(prefix="dsdk-conform-")
    wcfg = cfg.worker_dict(tmpdir)
    n_workers = max(1, min(cfg.jobs, len(units)))
    workers: list[_Worker] = []
    spawned = 0
    startup_failures = 0

    def record(res: CaseResult) -> None:
        if res.id in results:
            return
        results[res.id] = res
        if on_result:
            on_result(res)

    def spawn() -> _Worker:
        nonlocal spawned
        spawned += 1
        return _Worker(wcfg, Path(tmpdir) / f"worker{spawned}.log")

    def fail_current(w: _Worker, outcome: str, why: str) -> None:
        """The worker is gone: its current step gets ``outcome``; the unit's untouched samples are retried."""
        u = w.unit
        w.unit = None
        if u is None:
            return
        case = by_id[u.case_id]
        spent = time.monotonic() - w.step_started
        left = [(lab, sid) for lab, sid in zip(u.labels, u.sample_ids) if sid not in w.done_ids]
        if not left:
            return
        stack = python_stack(w.log_path, w.log_offset)
        if w.stage != "execute" or w.step is None:
            what = STAGE_WORDS.get(w.stage, w.stage)
            for _, sid in left:
                record(_blank_result(case, sid, outcome, f"{why} while {what} ({u.case_id})", spent / len(left),
                                     stage=w.stage, stack=stack))
            return
        cur = [(lab, sid) for lab, sid in left if sid == w.step]
        for _, sid in cur:
            record(_blank_result(case, sid, outcome, f"{why} while {STAGE_WORDS['execute']}", spent,
                                 stage="execute", stack=stack))
        rest = [(lab, sid) for lab, sid in left if sid != w.step]
        if rest:
            queue.appendleft(Unit(u.case_id, [lab for lab, _ in rest], [sid for _, sid in rest]))

    try:
        for _ in range(n_workers):
            workers.append(spawn())
        while queue or any(w.unit is not None for w in workers):
            # hand out work
            for w in workers:
                if w.ready and w.unit is None and queue:
                    w.assign(queue.popleft())
            now = time.monotonic()
            deadlines = []
            for w in workers:
                if not w.ready:
                    deadlines.append(w.started + startup_timeout)
                elif w.unit is not None and cfg.timeout:
                    deadlines.append(w.step_started + cfg.timeout)
            wait_for = max(0.05, min(deadlines) - now) if deadlines else 1.0
            ready = wait([w.parent_conn for w in workers], timeout=min(wait_for, 5.0))
            replace: list[_Worker] = []
            for w in workers:
                dead = False
                while w.parent_conn in ready:
                    try:
                        if not w.parent_conn.poll():
                            break
                        msg = w.parent_conn.recv()
                    except (EOFError, OSError):
                        dead = True
                        break
                    kind = msg[0]
                    if kind == "ready":
                        w.ready = True
                    elif kind == "step":
                        w.stage, w.step = msg[1], msg[2]
                        w.step_started = time.monotonic()
                        w.log_offset = _size(w.log_path)
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
                        w.unit = None
                        w.step = None
                    elif kind == "fatal":
                        raise RunAborted(msg[1])
                if dead:
                    why = f"the worker process died ({_signal_name(w.exitcode)})"
                    tail = _tail(w.log_path, w.log_offset)
                    if tail:
                        why += f"; its last output: {tail}"
                    if not w.ready:
                        startup_failures += 1
                        if startup_failures >= 2:
                            raise RunAborted(f"conformance workers cannot start: {why}")
                    fail_current(w, "CRASH", why)
                    w.kill()
                    replace.append(w)
            now = time.monotonic()
            for w in workers:
                if w in replace:
                    continue
                if not w.ready and now - w.started > startup_timeout:
                    raise RunAborted(f"a conformance worker did not start within {startup_timeout:.0f} s: "
                                     f"{_tail(w.log_path)}")
                if w.ready and w.unit is not None and cfg.timeout and now - w.step_started > cfg.timeout:
                    w.dump_stack()
                    fail_current(w, "TIMEOUT", f"took longer than --timeout {cfg.timeout:g} s")
                    w.kill()
                    replace.append(w)
            for w in replace:
                workers.remove(w)
                if queue or any(x.unit is not None for x in workers):
                    if len(workers) < n_workers:
                        workers.append(spawn())
            if not workers and queue:
                workers.append(spawn())
    finally:
        for w in workers:
            try:
                if w.proc.poll() is None and w.ready and w.unit is None:
                    w.parent_conn.send(("stop",))
            except OSError:
                pass
        for w in workers:
            w.kill()
        shutil.rmtree(tmpdir, ignore_errors=True)
    out = []
    for sid in order:
        if sid in results:
            out.append(results[sid])
        else:  # cannot happen unless a worker protocol error: never drop a case silently
            cid = "/".join(sid.split("/")[:2])
            out.append(_blank_result(by_id[cid], sid, "FAIL_RUN", "no result was reported for this sample"))
    return out
