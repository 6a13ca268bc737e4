"""Load and run an artifact in a process that never compiled it, as on the machine it ships to.

A conformance worker compiles a case, saves the artifact and removes the compile-time temp area; then a
*fresh* process loads that artifact and runs it. A plugin whose blob is not self-contained (``init`` reads a
side file ``preprocess`` wrote, or state ``preprocess`` left in memory) fails here, where a reload in the
compiling process would not notice.

Starting Python with torch and a vendor runtime costs seconds, so each worker starts one *zygote* process in
a new, empty working directory with ``TMPDIR`` pointing at a new, empty directory. The worker forks it from
itself at start-up, after importing torch and the plugin and before compiling anything
(:meth:`FreshProcess.forked`), which saves a second Python start and torch import per worker; where that is
not safe (a Python thread is running) or the zygote died, it is started as ``python -m
delegate_sdk.conformance.fresh FD``. The zygote imports torch and the plugin (``describe`` only: it never
compiles) and forks one child per artifact. Each child gets its own new, empty working and temp
directories, loads the artifact, runs the given inputs and records every file it opens outside the Python
installation, the system directories and its own directories (an audit hook on ``open``): reading a file the
compiler left behind shows up by name even when that file still exists.

The zygote and its children die with the worker (``PR_SET_PDEATHSIG`` on Linux), so a killed worker leaves
no process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from delegate_sdk.conformance.forkserver import ForkedProcess, exit_forked_child, fork_safe, worker_env

#: where reading a file is part of running Python and a vendor runtime, not a leftover of compilation
_SYSTEM_ROOTS = ("/proc", "/sys", "/dev", "/etc", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/opt", "/run")


@dataclass
class FreshResult:
    """What the fresh process did with one artifact."""

    #: flat outputs per input set, when everything ran
    outputs: list[list[Any]] | None = None
    #: "" on success; otherwise what failed, one line
    error: str = ""
    #: "load", "execute", "crash", "timeout" or "start" when ``error`` is set
    stage: str = ""
    #: files opened outside the installation, system and fresh directories (absolute paths)
    foreign_files: list[str] = field(default_factory=list)


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it exits."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _allowed_roots(extra: list[str]) -> tuple[str, ...]:
    import site
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *_SYSTEM_ROOTS, *extra}
    roots.update(p for p in sysconfig.get_paths().values() if p)
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:
        pass
    roots.update(p for p in sys.path if p and os.path.isabs(p))
    for mod in list(sys.modules.values()):  # code an editable install maps from a source checkout
        paths = getattr(mod, "__path__", None)
        if paths is not None:
            try:
                roots.update(str(p) for p in paths)
            except TypeError:
                pass
        elif isinstance(getattr(mod, "__file__", None), str):
            roots.add(os.path.dirname(mod.__file__))
    return tuple(sorted({os.path.realpath(r) for r in roots if r}))


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _child(job: Path, artifact: str, inputs_path: str, out_path: str) -> None:
    """Body of one forked child: never returns."""
    code = 0
    try:
        die_with_parent()
        import torch
        import torch.utils._pytree as pytree

        work, tmp = job / "cwd", job / "tmp"
        work.mkdir(parents=True)
        tmp.mkdir()
        os.chdir(work)
        os.environ["TMPDIR"] = str(tmp)
        tempfile.tempdir = None
        inputs = torch.load(inputs_path, weights_only=True)
        roots = _allowed_roots([str(work), str(tmp), os.path.realpath(artifact)])
        opened: list[str] = []
        recording = [True]

        def audit(event: str, args: tuple[Any, ...]) -> None:
            if event != "open" or not recording[0] or not args or not isinstance(args[0], (str, bytes)):
                return
            p = os.fsdecode(args[0])
            p = os.path.realpath(p if os.path.isabs(p) else os.path.join(os.getcwd(), p))
            if not _under(p, roots) and p not in opened:
                opened.append(p)

        sys.addaudithook(audit)
        from delegate_sdk.program import load

        modules_before = set(sys.modules)

        stage = "load"
        result: dict[str, Any]
        try:
            prog = load(artifact)
            stage = "execute"
            outs = []
            with torch.no_grad():
                for xs in inputs:
                    outs.append([t for t in pytree.tree_leaves(prog(*xs))])
            stage = "close"
            prog.close()
            result = {"outputs": outs}
        except Exception as e:  # the plugin's failure is the result, not a crash of this process
            result = {"error": " ".join(f"{type(e).__name__}: {e}".split())[:600], "stage": stage}
        recording[0] = False
        result["opened"] = opened
        result["imported"] = sorted(m for m in set(sys.modules) - modules_before if not m.startswith("__"))
        torch.save(result, out_path)
    except BaseException as e:  # noqa: BLE001 - nothing may escape a forked child
        try:
            sys.stderr.write(f"fresh-process child failed: {type(e).__name__}: {e}\n")
        except Exception:
            pass
        code = 3
    finally:
        exit_forked_child(code)


def _wait(pid: int, timeout: float) -> tuple[str, int]:
    """("exit", code) | ("signal", signum) | ("timeout", 0) for a child of this process."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return "signal", os.WTERMSIG(status)
            return "exit", os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            try:  # the child's faulthandler writes where it hangs to the worker's log, then it is killed
                os.kill(pid, signal.SIGUSR1)
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return "timeout", 0
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _zygote(conn: Connection) -> None:
    import faulthandler

    die_with_parent()
    faulthandler.enable(file=sys.stderr, all_threads=True)  # inherited by every child
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    msg = conn.recv()
    cfg: dict[str, Any] = msg[1]
    import torch

    torch.set_num_threads(int(cfg.get("threads") or 1))
    try:
        import delegate_sdk.program  # noqa: F401 - imported once here, inherited by every child
        from delegate_sdk.registry import default_registry

        info = default_registry().get(cfg["plugin"]).info()
        if not info.available:
            raise RuntimeError(info.unavailable_reason)
    except Exception as e:
        conn.send(("fatal", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "stop":
            return
        _, job, artifact, inputs_path, out_path, deadline = msg
        pid = os.fork()
        if pid == 0:
            conn.close()
            _child(Path(job), artifact, inputs_path, out_path)
        # the deadline is the worker's (CLOCK_MONOTONIC is one clock for every process of this machine): time the
        # zygote spent finishing the previous job's imports is not the artifact's, but it is the worker's step
        how, code = _wait(pid, max(0.5, float(deadline) - time.monotonic()))
        conn.send(("done", how, code))
        learned = conn.recv()
        _preload(learned[1])


def _preload(modules: list[str]) -> None:
    """Import what the last child imported while loading and running, so that later children start warm.

    These are the plugin's runtime modules (the child never compiles), imported before any fork.
    """
    import importlib

    for name in modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # a module that only imports in some context: the children import it themselves
            pass


def log_start_failure(e: BaseException) -> None:
    import logging

    logging.getLogger(__name__).warning("the fresh-process loader did not start: %s", e)


class _ForkedChild(ForkedProcess):
    """A zygote forked from this process (its parent): ``waitpid`` gives its exit status."""

    def _exit_code(self) -> int | None:
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        return os.waitstatus_to_exitcode(status) if done else None


class FreshProcess:
    """The worker's handle on its zygote; started on first use, restarted if it dies."""

    def __init__(self, plugin: str, root: Path, threads: int = 1, startup_timeout: float = 120.0):
        self.plugin = plugin
        self.root = root
        self.threads = threads
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | _ForkedChild | None = None
        self._conn: Connection | None = None

    @classmethod
    def forked(cls, plugin: str, root: Path, threads: int = 1, close: Sequence[Any] = ()) -> FreshProcess:
        """A handle whose zygote is forked from this process now, when that is safe; else one that starts it as
        a new Python process on first use.

        Call it before this process compiles anything (the zygote must never have compiled) and after importing
        torch and the plugin (the zygote then starts warm). ``close``: connections of this process the zygote
        must not hold (the worker's line to its scheduler).
        """
        fresh = cls(plugin, root, threads)
        if not fork_safe():
            return fresh
        home = fresh._home()
        ours, theirs = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the zygote: never returns
            code = 0
            try:
                ours.close()
                for c in close:
                    c.close()
                os.chdir(home / "cwd")
                os.environ["TMPDIR"] = str(home / "tmp")
                tempfile.tempdir = None
                conn = Connection(theirs.detach())
                _zygote(conn)
            except BaseException:  # noqa: BLE001 - nothing may escape a forked child
                code = 3
            finally:
                exit_forked_child(code)
        theirs.close()
        fresh._proc = _ForkedChild(pid)
        fresh._conn = Connection(ours.detach())
        try:
            fresh._handshake()
        except (OSError, EOFError, RuntimeError) as e:
            log_start_failure(e)
            fresh.close()  # started as a new process on first use
        return fresh

    def _home(self) -> Path:
        home = self.root / f"zygote-{uuid.uuid4().hex[:8]}"
        (home / "cwd").mkdir(parents=True)
        (home / "tmp").mkdir()
        return home

    def _start(self) -> None:
        home = self._home()
        ours, theirs = socket.socketpair()
        env = worker_env()
        env["TMPDIR"] = str(home / "tmp")
        self._proc = subprocess.Popen([sys.executable, "-m", "delegate_sdk.conformance.fresh", str(theirs.fileno())],
                                      pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd=home / "cwd",
                                      env=env, close_fds=True)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._handshake()

    def _handshake(self) -> None:
        assert self._conn is not None
        self._conn.send(("config", {"plugin": self.plugin, "threads": self.threads}))
        if not self._conn.poll(self.startup_timeout):
            self.close()
            raise RuntimeError(f"the fresh-process loader did not start within {self.startup_timeout:.0f} s")
        msg = self._conn.recv()
        if msg[0] != "ready":
            self.close()
            raise RuntimeError(f"the fresh-process loader could not start: {msg[1] if len(msg) > 1 else msg}")

    def start(self) -> None:
        """Start the zygote now if it is not running (its startup is not the artifact's time)."""
        if self._proc is None or self._proc.poll() is not None:
            try:
                self._start()
            except (OSError, EOFError, RuntimeError) as e:  # run() reports it
                log_start_failure(e)
                self.close()

    def run(self, artifact: Path, inputs: list[tuple[Any, ...]], timeout: float) -> FreshResult:
        """Load ``artifact`` in a fresh child and run each input tuple through it."""
        import torch

        deadline = time.monotonic() + timeout
        job = self.root / f"job-{uuid.uuid4().hex[:12]}"
        job.mkdir(parents=True)
        inputs_path, out_path = job / "inputs.pt", job / "result.pt"
        try:
            torch.save([tuple(x) for x in inputs], inputs_path)
            try:
                if self._proc is None or self._proc.poll() is not None:
                    self._start()
                assert self._conn is not None
                self._conn.send(("job", str(job / "child"), str(artifact), str(inputs_path), str(out_path),
                                 deadline))
                if not self._conn.poll(timeout + 30):
                    raise RuntimeError("the fresh-process loader stopped answering")
                _, how, code = self._conn.recv()
            except (OSError, EOFError, RuntimeError) as e:
                self.close()
                return FreshResult(error=f"the fresh-process loader failed: {e}", stage="start")
            res: dict[str, Any] = {}
            if out_path.exists():
                try:
                    res = torch.load(out_path, weights_only=True)
                except Exception as e:
                    res = {"error": f"its result could not be read: {type(e).__name__}: {e}", "stage": "crash"}
            self._learn(list(res.get("imported", [])))
            if how == "timeout":
                return FreshResult(error=f"did not finish within {timeout:g} s", stage="timeout")
            if how == "signal":
                try:
                    name = signal.Signals(code).name
                except ValueError:
                    name = f"signal {code}"
                return FreshResult(error=f"the process died ({name})", stage="crash")
            if not res:
                return FreshResult(error=f"the process exited with code {code} and no result", stage="crash")
            return FreshResult(res.get("outputs"), res.get("error", ""), res.get("stage", ""),
                               list(res.get("opened", [])))
        finally:
            shutil.rmtree(job, ignore_errors=True)

    def _learn(self, imported: list[str]) -> None:
        """Tell the zygote which modules the child imported (it waits for this after every job)."""
        if self._conn is None:
            return
        try:
            self._conn.send(("learn", imported))
        except OSError:
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(("stop",))
            except OSError:
                pass
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None


def main(argv: list[str] | None = None) -> None:
    from delegate_sdk.conformance.worker import serve_inherited

    serve_inherited(_zygote, argv)


if __name__ == "__main__":
    main()
