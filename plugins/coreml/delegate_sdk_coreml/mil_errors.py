"""The errors of reading and running a saved ML Program off macOS."""

from __future__ import annotations

from collections.abc import Sequence


class MILError(RuntimeError):
    """The program cannot be read or an op failed while running."""


class UnsupportedMILOpError(MILError):
    """The program uses MIL ops this interpreter does not implement."""

    def __init__(self, ops: Sequence[str]):
        self.ops = tuple(sorted(set(ops)))
        super().__init__(f"MIL op(s) not implemented by the numpy interpreter: {', '.join(self.ops)}")
