"""The SDK's exceptions: one base class, a handful of kinds, messages a user can act on.

The CLI prints ``str(error)`` as one line and exits 1; nothing below this base
class should ever surface as a toolchain traceback.
"""

from __future__ import annotations

import re


class DelegateSDKError(Exception):
    """Base class of every error the SDK raises on purpose."""


class UsageError(DelegateSDKError):
    """The caller asked for something that cannot be done as asked (bad argument, unknown name)."""


class UnknownBackendError(UsageError):
    def __init__(self, name: str, installed: list[str]):
        self.name = name
        have = ", ".join(sorted(installed)) or "none"
        super().__init__(f"unknown backend {name!r}; installed backends: {have}")


class OptionError(UsageError):
    """An option name or value a plugin does not accept."""


class BackendUnavailableError(DelegateSDKError):
    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"backend {name!r} is installed but unavailable here: {reason}")


class PluginLoadError(DelegateSDKError):
    """A plugin could not be registered: import failure, misspelled hook, wrong argument names."""


def shorten(text: str, limit: int = 400) -> str:
    """First non-empty line of ``text``, cut to ``limit`` characters (toolchain errors can be huge)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[:limit - 3] + "..."


def brief(e: BaseException, limit: int = 400) -> str:
    """One line for an exception a toolchain raised: ``"TypeName: first line"`` (the SDK's own errors without
    the type), terminal colour codes removed, cut to ``limit``. Raise your own error ``from e`` with it, so
    that the full toolchain traceback stays available as the cause."""
    text = _ANSI.sub("", str(e))
    if not isinstance(e, DelegateSDKError):
        first = shorten(text, limit) or ""
        return shorten(f"{type(e).__name__}: {first}" if first else type(e).__name__, limit)
    return shorten(text, limit) or type(e).__name__


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PluginError(DelegateSDKError):
    """A plugin raised while claiming, compiling or running."""

    def __init__(self, backend: str, stage: str, detail: str, partition: str | None = None):
        detail = shorten(detail)
        self.backend = backend
        self.stage = stage
        self.partition = partition
        self.detail = detail
        where = f" on partition {partition}" if partition else ""
        super().__init__(f"plugin {backend!r} failed in {stage}{where}: {detail}")


class ContractError(PluginError):
    """A plugin broke the contract (wrong outputs, claimed what it cannot compile, ...)."""

    def __init__(self, backend: str, stage: str, detail: str, partition: str | None = None):
        super().__init__(backend, stage, detail, partition)
        self.args = (f"plugin {backend!r} broke the contract in {stage}"
                     f"{f' on partition {partition}' if partition else ''}: {detail}",)


class CaptureError(DelegateSDKError):
    """The model could not be captured with torch.export, or the model reference is wrong."""


class FallbackError(DelegateSDKError):
    """``strict=True`` and some nodes would run on eager PyTorch."""


class ArtifactError(DelegateSDKError):
    """An artifact cannot be loaded."""


class ArtifactCorruptError(ArtifactError):
    """Not an artifact, truncated, or a hash does not match."""


class ArtifactVersionError(ArtifactError):
    """Written by an incompatible SDK, or a blob format version the plugin cannot load."""


class MissingPluginError(ArtifactError):
    """An artifact needs a backend whose plugin is not installed."""


class InputError(DelegateSDKError):
    """Inputs to a program do not match its signature."""
