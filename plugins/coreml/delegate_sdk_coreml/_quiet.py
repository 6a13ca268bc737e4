"""Keep coremltools quiet: it prints progress bars and warnings to the terminal.

coremltools logs warnings at import (untested torch version, missing native
libraries off macOS, scikit-learn), shows tqdm progress bars on stderr while
converting, and emits Python warnings. Inside :func:`quiet` all of that is
captured and re-logged at DEBUG on this module's logger, so nothing reaches the
terminal unless the application asks for debug logs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from delegate_sdk.support.quiet import quiet as core_quiet

log = logging.getLogger(__name__)

#: third-party loggers that talk during import and conversion of coremltools
_NOISY_LOGGERS = ("coremltools", "torchao", "torchao.kernel.intmm", "torch.utils._pytree", "executorch",
                  "torch._export", "torch.export", "py.warnings")

@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout/stderr writes, warnings and the toolchain's loggers; re-log them at DEBUG."""
    # Python-level only: coremltools' output is Python's (tqdm, warnings, logging), not native
    with core_quiet(log, loggers=_NOISY_LOGGERS, native=False):
        yield


def import_coremltools() -> Any:
    """Import coremltools without the messages it prints at import time."""
    if "coremltools" in sys.modules and hasattr(sys.modules["coremltools"], "convert"):
        return sys.modules["coremltools"]
    with quiet():
        import coremltools

    return coremltools
