"""A program's input signature, and the checks that turn bad inputs into one clear error."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from delegate_sdk.errors import InputError


@dataclass(frozen=True)
class Dim:
    """One dimension: a fixed size, or a named dynamic size with an inclusive range."""

    size: int | None = None
    symbol: str | None = None
    min: int = 0
    max: int | None = None

    def to_json(self) -> Any:
        if self.symbol is None:
            return self.size
        return {"symbol": self.symbol, "min": self.min, "max": self.max}

    @classmethod
    def from_json(cls, d: Any) -> Dim:
        if isinstance(d, int):
            return cls(size=d)
        return cls(symbol=d["symbol"], min=int(d["min"]), max=None if d["max"] is None else int(d["max"]))

    def __str__(self) -> str:
        if self.symbol is None:
            return str(self.size)
        hi = "inf" if self.max is None else str(self.max)
        return f"{self.symbol}∈[{self.min},{hi}]"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    dims: tuple[Dim, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": [d.to_json() for d in self.dims]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InputSpec:
        return cls(d["name"], d["dtype"], tuple(Dim.from_json(x) for x in d["dims"]))

    def describe(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.dims)}]"

    def example(self, gen: torch.Generator) -> torch.Tensor:
        shape = [d.size if d.symbol is None else max(d.min, 2) for d in self.dims]
        dtype = getattr(torch, self.dtype)
        if dtype.is_floating_point:
            return torch.randn(shape, generator=gen).to(dtype)
        if dtype == torch.bool:
            return torch.randint(0, 2, shape, generator=gen).bool()
        return torch.randint(0, 4, shape, generator=gen).to(dtype)


def _range_of(ep: ExportedProgram, sym: Any) -> tuple[int, int | None]:
    vr = ep.range_constraints.get(sym)
    if vr is None:
        return 0, None
    lo = int(vr.lower) if math.isfinite(float(vr.lower)) else 0
    up = float(vr.upper)
    return lo, (int(vr.upper) if math.isfinite(up) and up < 2**62 else None)


def tensor_dims(ep: ExportedProgram, val: torch.Tensor) -> tuple[Dim, ...]:
    dims = []
    for d in val.shape:
        if isinstance(d, int):
            dims.append(Dim(size=d))
            continue
        expr = d.node.expr
        if getattr(expr, "is_number", False):
            dims.append(Dim(size=int(expr)))
            continue
        lo, hi = _range_of(ep, expr)
        dims.append(Dim(symbol=str(expr), min=lo, max=hi))
    return tuple(dims)


def input_signature(ep: ExportedProgram) -> list[InputSpec]:
    """The user inputs of ``ep`` in call order."""
    by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    out = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        node = by_name[spec.arg.name]
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise InputError(f"input {spec.arg.name!r} is a {type(val).__name__}; only tensor inputs are supported")
        out.append(InputSpec(spec.arg.name, str(val.dtype).removeprefix("torch."), tensor_dims(ep, val)))
    return out


class InputValidator:
    """``validate_inputs`` with a fast path: static signatures compare dtype and shape in one go."""

    def __init__(self, specs: list[InputSpec]):
        self.specs = specs
        self._static = all(d.symbol is None for s in specs for d in s.dims)
        self._want = [(getattr(torch, s.dtype), torch.Size(d.size for d in s.dims)) for s in specs] \
            if self._static else []

    def __call__(self, inputs: tuple[Any, ...]) -> None:
        if self._static and len(inputs) == len(self._want):
            for x, (dtype, shape) in zip(inputs, self._want):
                if not isinstance(x, torch.Tensor) or x.dtype != dtype or x.shape != shape:
                    break
            else:
                return
        validate_inputs(self.specs, inputs)


def validate_inputs(specs: list[InputSpec], inputs: tuple[Any, ...]) -> None:
    """Raise InputError naming the first input that does not fit ``specs``."""
    if len(inputs) != len(specs):
        names = ", ".join(f"{s.name}: {s.describe()}" for s in specs)
        raise InputError(f"expected {len(specs)} input(s) ({names}), got {len(inputs)}")
    bound: dict[str, tuple[int, str]] = {}
    for k, (spec, x) in enumerate(zip(specs, inputs)):
        where = f"input #{k} {spec.name!r}"
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{where}: expected a tensor {spec.describe()}, got {type(x).__name__}")
        dt = str(x.dtype).removeprefix("torch.")
        if dt != spec.dtype:
            raise InputError(f"{where}: expected dtype {spec.dtype}, got {dt}")
        if x.dim() != len(spec.dims):
            raise InputError(f"{where}: expected rank {len(spec.dims)} {spec.describe()}, got rank {x.dim()} "
                             f"{list(x.shape)}")
        for i, (d, size) in enumerate(zip(spec.dims, x.shape)):
            if d.symbol is None:
                if size != d.size:
                    raise InputError(f"{where}: dim {i} must be {d.size}, got {size} (shape {list(x.shape)}; "
                                     f"expected {spec.describe()})")
                continue
            if size < d.min or (d.max is not None and size > d.max):
                raise InputError(f"{where}: dim {i} ({d.symbol}) must be in [{d.min}, "
                                 f"{'inf' if d.max is None else d.max}], got {size}")
            if d.symbol in bound and bound[d.symbol][0] != size:
                raise InputError(f"{where}: dim {i} is {size} but {d.symbol} was {bound[d.symbol][0]} in "
                                 f"{bound[d.symbol][1]}; they must be equal")
            bound.setdefault(d.symbol, (size, where))
