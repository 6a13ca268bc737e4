"""Activation ranges: the min/max of every float node output over the calibration set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.lowering.values import LoweringError, first_tensor


@dataclass(frozen=True)
class Ranges:
    lo: dict[str, float]
    hi: dict[str, float]

    def get(self, name: str) -> tuple[float, float]:
        if name not in self.lo:
            raise LoweringError(f"no calibration range for {name}")
        return self.lo[name], self.hi[name]


class RangeObserver:
    """Min/max of every float node output over the calibration set."""

    def __init__(self) -> None:
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}

    def __call__(self, node: torch.fx.Node, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and op_name(node) == "aten.split_with_sizes.default":
            for i, t in enumerate(value):
                self._see(f"{node.name}#{i}", t)
        self._see(node.name, first_tensor(value))
        return value

    def _see(self, key: str, t: torch.Tensor | None) -> None:
        if t is None or not t.is_floating_point() or t.numel() == 0:
            return
        finite = t[torch.isfinite(t)]
        if finite.numel() == 0:
            return
        lo, hi = float(finite.min()), float(finite.max())
        self.lo[key] = min(lo, self.lo.get(key, lo))
        self.hi[key] = max(hi, self.hi.get(key, hi))

    def ranges(self) -> Ranges:
        return Ranges(dict(self.lo), dict(self.hi))
