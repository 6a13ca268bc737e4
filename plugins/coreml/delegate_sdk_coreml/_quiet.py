"""Keep coremltools quiet: it prints progress bars and warnings to the terminal.

coremltools logs warnings at import (untested torch version, missing native
libraries off macOS, scikit-learn), shows tqdm progress bars on stderr while
converting, and emits Python warnings. Inside :func:`quiet` all of that is
captured and re-logged at DEBUG on this module's logger, so nothing reaches the
terminal unless the application asks for debug logs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

#: third-party loggers that talk during import and conversion of coremltools
_NOISY_LOGGERS = ("coremltools", "torchao", "torchao.kernel.intmm", "torch.utils._pytree", "executorch",
                  "torch._export", "torch.export", "py.warnings")

_lock = threading.RLock()


class _ToDebug(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            log.debug("[%s] %s", record.name, record.getMessage())
        except Exception:  # a malformed third-party record must not break conversion
            pass


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout/stderr writes, warnings and the toolchain's loggers; re-log them at DEBUG."""
    with _lock:
        saved: list[tuple[logging.Logger, int, bool, list[logging.Handler]]] = []
        handler = _ToDebug()
        for name in _NOISY_LOGGERS:
            lg = logging.getLogger(name)
            saved.append((lg, lg.level, lg.propagate, list(lg.handlers)))
            lg.handlers = [handler]
            lg.propagate = False
            lg.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR + 1)
        out, err = io.StringIO(), io.StringIO()
        try:
            with warnings.catch_warnings(record=True) as caught, \
                    contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                warnings.simplefilter("always")
                yield
        finally:
            for lg, level, propagate, handlers in saved:
                lg.setLevel(level)
                lg.propagate = propagate
                lg.handlers = handlers
            for w in caught:
                log.debug("warning: %s", w.message)
            for stream, text in (("stdout", out.getvalue()), ("stderr", err.getvalue())):
                if text.strip():
                    log.debug("%s: %s", stream, text.strip()[-2000:])


def import_coremltools() -> Any:
    """Import coremltools without the messages it prints at import time."""
    if "coremltools" in sys.modules and hasattr(sys.modules["coremltools"], "convert"):
        return sys.modules["coremltools"]
    with quiet():
        import coremltools

    return coremltools
