"""Keeping a vendor toolchain's chatter off the user's terminal, without losing it.

Compilers print progress bars, banners and warnings: through Python (``print``, ``warnings``, their own
loggers, a ``logging.basicConfig()`` at import) and from C/C++ straight to file descriptors 1 and 2. Inside
:func:`quiet` all of it is captured; afterwards it is re-logged at DEBUG on the logger you pass (so
``delegate-sdk -vv`` shows it) and kept on the returned :class:`Captured`, so that an error message can quote
the toolchain's own last words::

    from delegate_sdk.support.quiet import quiet

    with quiet(log, loggers=("coremltools",)) as out:
        model = coremltools.convert(...)
    # out.text: everything the toolchain printed
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# fd redirection is process-wide: nested or concurrent quiet() blocks would restore each other's descriptors
# in the wrong order
_lock = threading.RLock()


@dataclass
class Captured:
    """What the toolchain printed inside one :func:`quiet` block (filled in when the block ends)."""

    text: str = ""
    warnings: list[str] = field(default_factory=list)

    def last_line(self) -> str:
        lines = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


class _ToDebug(logging.Handler):
    def __init__(self, log: logging.Logger) -> None:
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.debug("[%s] %s", record.name, record.getMessage())
        except Exception:  # a malformed third-party record must not break compilation
            pass


def _flush_c_streams() -> None:
    # C code may hold output in stdio buffers; flushed after the fds are restored it would reach the terminal
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def quiet(log: logging.Logger, *, loggers: Iterable[str] = (), native: bool = True) -> Iterator[Captured]:
    """Capture stdout/stderr (Python's and, with ``native``, file descriptors 1 and 2), warnings, the named
    toolchain ``loggers`` and any root log handler the block installs; re-log them on ``log`` at DEBUG."""
    out = Captured()
    with _lock:
        root = logging.getLogger()
        root_handlers = list(root.handlers)
        handler = _ToDebug(log)
        saved_loggers = []
        for name in loggers:
            lg = logging.getLogger(name)
            saved_loggers.append((lg, lg.level, lg.propagate, list(lg.handlers)))
            lg.handlers = [handler]
            lg.propagate = False
            lg.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR + 1)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved_fds: list[int] = []
        py_sink = io.StringIO()
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(py_sink), contextlib.redirect_stderr(py_sink):
            warnings.simplefilter("always")
            if native:
                _flush_c_streams()
                try:
                    for fd in (1, 2):
                        saved_fds.append(os.dup(fd))
                        os.dup2(sink.fileno(), fd)
                except OSError:  # no usable fds (an embedded interpreter): capture Python output only
                    for fd, old in zip((1, 2), saved_fds):
                        os.dup2(old, fd)
                        os.close(old)
                    saved_fds.clear()
            try:
                yield out
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                if saved_fds:
                    _flush_c_streams()
                    for fd, old in zip((1, 2), saved_fds):
                        os.dup2(old, fd)
                        os.close(old)
                for lg, level, propagate, handlers in saved_loggers:
                    lg.setLevel(level)
                    lg.propagate = propagate
                    lg.handlers = handlers
                # a toolchain calling logging.basicConfig() at import must not change the host's logging
                for h in list(root.handlers):
                    if h not in root_handlers:
                        root.removeHandler(h)
                sink.seek(0)
                native_text = sink.read().decode("utf-8", "replace")
                out.text = (py_sink.getvalue() + native_text).strip()
                out.warnings = [str(w.message) for w in caught]
                for w in out.warnings:
                    log.debug("warning: %s", w)
                if out.text:
                    log.debug("toolchain output: %s", out.text[-4000:])
