"""The op -> lowering registry: the one list of ATen ops this plugin can lower to TOSA.

Each op-family module registers its functions with :func:`lowers`; the claim
rules check their table against :data:`LOWERINGS` instead of keeping a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from delegate_sdk_arm_ethos.lowering.driver import Lowerer

Lowering = Callable[["Lowerer", torch.fx.Node], Any]

#: ATen op name -> the function that lowers one node of it
LOWERINGS: dict[str, Lowering] = {}


def lowers(*ops: str) -> Callable[[Lowering], Lowering]:
    """Decorator: ``fn(lowerer, node)`` lowers every op in ``ops``."""

    def register(fn: Lowering) -> Lowering:
        for op in ops:
            if op in LOWERINGS:
                raise ValueError(f"{op} is lowered twice: by {LOWERINGS[op].__name__} and {fn.__name__}")
            LOWERINGS[op] = fn
        return fn

    return register
