"""The one registry of MIL op implementations: ``@kernel("op")`` adds a kernel, :func:`lookup` finds it.

A kernel takes the resolved inputs of one op call (:class:`Args`) and returns
its result (a list for ops with several outputs); the interpreter rounds each
result to the dtype the program declares. The family modules of this package
register their kernels when imported, so this registry is the only list of the
MIL ops the host runtime can execute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_reader import TensorType


class Args:
    """The resolved inputs of one op call, plus what the program declares about its outputs."""

    __slots__ = ("values", "out", "ios")

    def __init__(self, values: dict[str, Any], out: tuple[TensorType, ...], ios: int):
        self.values = values
        self.out = out
        self.ios = ios

    def __getitem__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise MILError(f"required input {key!r} is missing") from None

    def get(self, key: str, default: Any = None) -> Any:
        v = self.values.get(key)
        return default if v is None else v

    def int(self, key: str, default: int | None = None) -> int:
        v = self.values.get(key)
        if v is None:
            if default is None:
                raise MILError(f"required input {key!r} is missing")
            return default
        return int(np.asarray(v).reshape(()))

    def ints(self, key: str, default: Sequence[int] | None = None) -> list[int]:
        v = self.values.get(key)
        if v is None:
            if default is None:
                raise MILError(f"required input {key!r} is missing")
            return list(default)
        return [int(i) for i in np.asarray(v).reshape(-1)]

    def bool(self, key: str, default: bool) -> bool:
        v = self.values.get(key)
        return default if v is None else bool(np.asarray(v).reshape(()))

    def float(self, key: str, default: float) -> float:
        v = self.values.get(key)
        return default if v is None else float(np.asarray(v).reshape(()))

    def str(self, key: str, default: str) -> str:
        v = self.values.get(key)
        return default if v is None else str(v)


Kernel = Callable[[Args], Any]


@dataclass(frozen=True)
class Registered:
    """A kernel and the names of its inputs that always take a list of values (one binding is still a list)."""

    fn: Kernel
    tuple_inputs: frozenset[str]


_REGISTRY: dict[str, Registered] = {}


def kernel(*names: str, tuple_inputs: Sequence[str] = ()) -> Callable[[Kernel], Kernel]:
    """Decorator: register the function as the kernel of the MIL ops ``names``."""

    def deco(fn: Kernel) -> Kernel:
        for n in names:
            if n in _REGISTRY:
                raise ValueError(f"MIL op {n!r} has two kernels")
            _REGISTRY[n] = Registered(fn, frozenset(tuple_inputs))
        return fn

    return deco


def lookup(op_type: str) -> Registered | None:
    return _REGISTRY.get(op_type)


def implemented_ops() -> frozenset[str]:
    """MIL op types the interpreter can run (``const`` is read with the program, not executed)."""
    return frozenset(_REGISTRY) | {"const"}
