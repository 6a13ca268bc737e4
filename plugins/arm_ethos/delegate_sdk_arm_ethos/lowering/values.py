"""The values a lowering passes around, what it returns, and small shape helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from delegate_sdk_arm_ethos.quant import QParams
from delegate_sdk_arm_ethos.refgraph import QuantWeight

NHWC = (0, 2, 3, 1)  # std (NCHW) -> NHWC
NCHW = (0, 3, 1, 2)  # NHWC -> std


class LoweringError(ValueError):
    """A node the lowering cannot express (claim rules should have refused it)."""


@dataclass
class Val:
    """One torch value inside the TOSA graph."""

    shape: tuple[int, ...]
    dtype: str  # "int8" | "int16" | "bool"
    q: QParams | None
    names: dict[str, str] = field(default_factory=dict)  # layout ("std" | "nhwc") -> TOSA tensor
    const: np.ndarray | None = None  # compile-time value (float or bool)

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class IOInfo:
    shape: tuple[int, ...]
    torch_dtype: str  # "float32" | "bool"
    q: QParams | None

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "torch_dtype": self.torch_dtype,
                "q": self.q.to_json() if self.q else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IOInfo:
        return cls(tuple(d["shape"]), d["torch_dtype"], QParams.from_json(d["q"]) if d["q"] else None)


@dataclass
class Lowered:
    tosa: bytes
    inputs: list[IOInfo]
    outputs: list[IOInfo]
    op_counts: dict[str, int]
    debug_map: dict[str, list[str]]
    node_q: dict[str, QParams]  # torch node -> quantization of its output
    weights: dict[str, QuantWeight]  # constant node -> its int8 per-channel quantization (torch layout)
    interpolated: dict[str, list[float]]  # int16 TABLE node -> input values of its 513 grid points


def first_tensor(v: Any) -> torch.Tensor | None:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (list, tuple)):
        for x in v:
            t = first_tensor(x)
            if t is not None:
                return t
    return None


def inv(perm: Sequence[int]) -> list[int]:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return out


def to_numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach()
        if t.dtype == torch.bool:
            return t.numpy().copy()
        return t.to(torch.float64).numpy().copy()
    return np.asarray(t, dtype=np.float64)


def norm_dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def shape_of(node: torch.fx.Node) -> tuple[int, ...]:
    t = first_tensor(node.meta.get("val"))
    if t is None:
        raise LoweringError(f"{node.name} has no tensor value")
    return tuple(int(d) for d in t.shape)


def per_dim(v: Sequence[int], n: int) -> list[int]:
    v = list(v)
    return v * n if len(v) == 1 and n > 1 else v


def pair(v: Any) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    return v * 2 if len(v) == 1 else v[:2]
