"""Warm conformance workers: one template process imports torch, ``torch.export`` and the conformance engine
once, then forks every local worker, instead of each worker starting Python and importing them again.

A worker spends its first seconds importing (torch 1.5 s, the export machinery 2.3 s here); a run of a few
samples is mostly that. The template is started on the first local run and kept for later runs of the same
process (a vendor's test session runs conform many times), one per environment: a run whose environment or
``sys.path`` differs gets a template of its own. It never loads a plugin or compiles, so every worker starts
as a fresh ``python -m delegate_sdk.conformance.worker`` would, minus the imports.

The template forks; the scheduler is not the worker's parent, so the template reports each worker's exit
status (:class:`ForkedWorker` is the ``Popen``-like handle). Workers die with the template and the template
with the process that started it (``PR_SET_PDEATHSIG``). Where forking is not possible or not safe (no
``fork``, or a Python thread running in the template), the pool starts workers as new processes as before.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from pathlib import Path
from typing import Any, NoReturn

#: what every worker imports before its first step (the rest comes with the plugin)
_WARM_MODULES = ("torch", "torch.export", "torch._dynamo", "delegate_sdk.conformance.pipeline",
                 "delegate_sdk.conformance.runner", "delegate_sdk.lowering", "delegate_sdk.program")


class TemplateUnavailable(Exception):
    """The template could not start or fork: the pool starts workers as new processes instead."""


def worker_env() -> dict[str, str]:
    """The environment a worker runs in: this process's, with ``sys.path`` prepended to ``PYTHONPATH`` (as
    multiprocessing would do), so that modules importable here are importable there."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def fork_safe() -> bool:
    """Whether this process may fork a child that goes on running Python: ``fork`` exists and no Python thread
    besides this one is running (it could hold a lock the child would inherit held).

    Native thread pools that importing numpy, torch or a vendor runtime starts (OpenBLAS's, for one) are
    there too, idle; the fresh-process zygote has always forked every artifact's child in that state.
    """
    return hasattr(os, "fork") and threading.active_count() == 1


def exit_forked_child(code: int) -> NoReturn:
    """End a forked child with its output flushed and without the parent's ``atexit`` handlers and finalizers
    (they belong to the process it was forked from)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


class ForkedProcess:
    """The parts of ``subprocess.Popen`` the conformance engine uses (``pid``, ``poll``, ``wait``, ``kill``), for
    a process that was forked rather than started; a subclass says how its exit status is learned."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _exit_code(self) -> int | None:
        raise NotImplementedError

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._exit_code()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"process {self.pid}", timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class ForkedWorker(ForkedProcess):
    """A worker the template forked: the template, its parent, reports its exit status."""

    def __init__(self, template: Template, pid: int) -> None:
        super().__init__(pid)
        self._template = template

    def _exit_code(self) -> int | None:
        return self._template.exit_code(self.pid)


class Template:
    """The scheduler's handle on one template process."""

    def __init__(self, env: dict[str, str], startup_timeout: float = 120.0) -> None:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen([sys.executable, "-m", "delegate_sdk.conformance.forkserver",
                                       str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env,
                                      stdin=subprocess.DEVNULL, close_fds=True)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        if not self._conn.poll(startup_timeout):
            self.close()
            raise TemplateUnavailable(f"the worker template did not start within {startup_timeout:.0f} s")
        msg = self._receive()
        if msg[0] != "ready":
            self.close()
            raise TemplateUnavailable(f"the worker template could not start: {msg[1]}")

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _receive(self) -> Any:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as e:
            raise TemplateUnavailable(f"the worker template is gone ({type(e).__name__})") from None

    def _drain(self) -> None:
        """Read the exit notices that have arrived (under the lock)."""
        try:
            while self._conn.poll():
                msg = self._receive()
                if msg[0] == "exit":
                    self._exits[msg[1]] = msg[2]
        except (TemplateUnavailable, OSError):
            pass

    def spawn(self, worker_end: socket.socket, log_path: Path) -> ForkedWorker:
        """Fork a worker that speaks on ``worker_end`` and writes its output to ``log_path``."""
        with self._lock:
            try:
                self._conn.send(("spawn", str(log_path), os.getcwd()))
                send_handle(self._conn, worker_end.fileno(), self._proc.pid)
            except OSError as e:
                raise TemplateUnavailable(f"the worker template is gone ({e})") from None
            while True:
                if not self._conn.poll(60):
                    raise TemplateUnavailable("the worker template did not answer within 60 s")
                msg = self._receive()
                if msg[0] == "exit":
                    self._exits[msg[1]] = msg[2]
                elif msg[0] == "pid":
                    return ForkedWorker(self, msg[1])
                else:
                    raise TemplateUnavailable(f"the worker template could not fork: {msg[1]}")

    def exit_code(self, pid: int) -> int | None:
        with self._lock:
            self._drain()
            if pid in self._exits:
                return self._exits[pid]
        if not self.alive():
            return -signal.SIGKILL  # its workers died with it
        return None

    def close(self) -> None:
        try:
            self._conn.send(("stop",))
        except OSError:
            pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        try:
            self._conn.close()
        except OSError:
            pass


_templates: dict[tuple[Any, ...], Template] = {}
_templates_lock = threading.Lock()


#: set per test by pytest: not part of what a worker needs to see
_VOLATILE_ENV = ("PYTEST_CURRENT_TEST",)


def template_for(env: dict[str, str]) -> Template:
    """The template of this environment, started on first use; earlier templates of other environments stop."""
    key = (sys.executable, tuple(sorted((k, v) for k, v in env.items() if k not in _VOLATILE_ENV)))
    with _templates_lock:
        t = _templates.get(key)
        if t is not None and t.alive():
            return t
        for other in list(_templates.values()):
            other.close()
        _templates.clear()
        t = Template(env)
        _templates[key] = t
        return t


@atexit.register
def _stop_templates() -> None:
    for t in list(_templates.values()):
        t.close()
    _templates.clear()


# --------------------------------------------------------------------------- the template process


def _fork_worker(conn: Connection, log_path: str, cwd: str) -> int:
    """Fork one worker: in the child, its output goes to ``log_path`` and it serves the scheduler on the
    socket received; never returns in the child."""
    fd = recv_handle(conn)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(fd)
        return pid
    code = 0
    try:
        conn.close()
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.chdir(cwd)
        from delegate_sdk.conformance.worker import main

        main([str(fd)])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        exit_forked_child(code)


def _serve(conn: Connection) -> None:
    import importlib

    from delegate_sdk.conformance.fresh import die_with_parent

    die_with_parent()
    try:
        for name in _WARM_MODULES:
            importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - reported; the pool falls back to new processes
        conn.send(("fatal", f"{type(e).__name__}: {e}"))
        return
    if not fork_safe():
        conn.send(("fatal", "forking is not possible or not safe here"))
        return
    conn.send(("ready",))
    while True:
        if conn.poll(0.05):
            try:
                msg = conn.recv()
            except EOFError:
                return
            if msg[0] == "stop":
                return
            try:
                conn.send(("pid", _fork_worker(conn, msg[1], msg[2])))
            except OSError as e:
                conn.send(("error", f"{type(e).__name__}: {e}"))
        try:
            while True:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if not pid:
                    break
                conn.send(("exit", pid, os.waitstatus_to_exitcode(status)))
        except ChildProcessError:
            pass


def main(argv: list[str] | None = None) -> None:
    from delegate_sdk.conformance.worker import serve_inherited

    serve_inherited(_serve, argv)


if __name__ == "__main__":
    main()
