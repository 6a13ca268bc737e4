"""A program's input signature, and the checks that turn bad inputs into one clear error."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
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


#: Python values an exported program may be specialised on (``torch.export`` bakes them in)
_CONSTANT_TYPES = (int, float, bool, str, type(None))


@dataclass(frozen=True)
class InputSpec:
    """One leaf of a program's inputs: a tensor (dtype and dims), or a Python constant the export was
    specialised on (``constant=True``, ``value``). ``path`` says where the leaf sits in what the caller passes:
    ``args[0]``, ``args[1]['b']``, ``kwargs['attention_mask']``."""

    name: str
    dtype: str
    dims: tuple[Dim, ...]
    path: str = ""
    constant: bool = False
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "dims": [x.to_json() for x in self.dims],
                             "path": self.path}
        if self.constant:
            d.update(constant=True, value=self.value)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InputSpec:
        return cls(d["name"], d["dtype"], tuple(Dim.from_json(x) for x in d["dims"]), d.get("path", ""),
                   bool(d.get("constant", False)), d.get("value"))

    @property
    def where(self) -> str:
        return self.path or self.name

    def describe(self) -> str:
        if self.constant:
            return f"the constant {self.value!r}"
        return f"{self.dtype}[{', '.join(str(d) for d in self.dims)}]"

    def example(self, gen: torch.Generator) -> Any:
        if self.constant:
            return self.value
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


def leaf_paths(spec: pytree.TreeSpec) -> list[str]:
    """``args[0]``, ``args[1]['b']``, ``kwargs['mask']``: where each leaf of an ``(args, kwargs)`` tree sits."""
    dummy = pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
    out = []
    for path, _ in pytree.tree_flatten_with_path(dummy)[0]:
        if len(path) >= 2 and isinstance(path[0], pytree.SequenceKey) and path[0].idx in (0, 1):
            head = "args" if path[0].idx == 0 else "kwargs"
            out.append(head + pytree.keystr(path[1:]))
        else:
            out.append("inputs" + pytree.keystr(path))
    return out


def input_signature(ep: ExportedProgram) -> list[InputSpec]:
    """The user inputs of ``ep`` in call order (the leaves of its ``(args, kwargs)`` input tree)."""
    by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    in_spec = ep.call_spec.in_spec
    paths = leaf_paths(in_spec) if in_spec is not None else []
    out = []
    user = [s for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    for k, spec in enumerate(user):
        path = paths[k] if k < len(paths) else ""
        node = by_name.get(spec.arg.name)
        val = node.meta.get("val") if node is not None else getattr(spec.arg, "value", None)
        if isinstance(val, torch.Tensor):
            out.append(InputSpec(spec.arg.name, str(val.dtype).removeprefix("torch."), tensor_dims(ep, val), path))
            continue
        value = getattr(spec.arg, "value", val)
        if not isinstance(value, _CONSTANT_TYPES):
            raise InputError(f"input {path or spec.arg.name} is a {type(value).__name__}; inputs must be tensors, "
                             "or Python numbers, strings, booleans or None (in tuples, lists and dicts)")
        out.append(InputSpec(spec.arg.name, type(value).__name__, (), path, True, value))
    return out


class InputValidator:
    """``validate_inputs`` with a fast path: static signatures compare dtype and shape in one go."""

    def __init__(self, specs: list[InputSpec]):
        self.specs = specs
        self._static = all(d.symbol is None for s in specs for d in s.dims) and not any(s.constant for s in specs)
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
        where = f"input {spec.path} ({spec.name!r})" if spec.path else f"input #{k} {spec.name!r}"
        if spec.constant:
            if type(x) is not type(spec.value) or x != spec.value:
                raise InputError(f"{where}: the program was exported with {spec.value!r} here and is specialised "
                                 f"on it; got {x!r} (re-lower the model with the value you need)")
            continue
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


# ---------------------------------------------------------------- calling a program as the model is called


def flat_spec(n: int) -> pytree.TreeSpec:
    """The input tree of a program called with ``n`` positional leaves and no keywords (artifacts before v2)."""
    return pytree.tree_flatten((tuple(range(n)), {}))[1]


def _ordered(kwargs: dict[str, Any], spec: pytree.TreeSpec) -> dict[str, Any]:
    """``kwargs`` in the key order of the exported tree (callers may pass keywords in any order)."""
    try:
        kw_spec = spec.child(1)
    except (IndexError, AttributeError):
        return kwargs
    keys = list(kw_spec.context or []) if kw_spec.type is dict else []
    if set(keys) == set(kwargs):
        return {k: kwargs[k] for k in keys}
    return kwargs


def flatten_call(args: tuple[Any, ...], kwargs: dict[str, Any], spec: pytree.TreeSpec) -> list[Any]:
    """The leaves of a call ``program(*args, **kwargs)`` in the order the program takes them; InputError naming
    the first place where the call's structure differs from the exported one."""
    leaves, got = pytree.tree_flatten((tuple(args), _ordered(dict(kwargs), spec)))
    if got != spec:
        raise InputError(structure_error(spec, got))
    return leaves


def structure_error(want: pytree.TreeSpec, got: pytree.TreeSpec) -> str:
    expected, actual = leaf_paths(want), leaf_paths(got)
    missing = [p for p in expected if p not in actual]
    extra = [p for p in actual if p not in expected]
    shown = ", ".join(expected[:8]) + (" ..." if len(expected) > 8 else "")
    if missing:
        return f"input {missing[0]} is missing (the program takes {shown})"
    if extra:
        return f"unexpected input {extra[0]} (the program takes {shown})"
    return (f"the inputs have the program's leaves ({shown}) in other containers than at export (a list for a "
            "tuple, say); pass them as the model was exported with")


def unflatten_call(leaves: list[Any], spec: pytree.TreeSpec) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args, kwargs = pytree.tree_unflatten(list(leaves), spec)
    return tuple(args), dict(kwargs)


def random_call(specs: list[InputSpec], spec: pytree.TreeSpec, seed: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Seeded inputs that fit the program: (args, kwargs) for ``program(*args, **kwargs)``."""
    gen = torch.Generator().manual_seed(seed)
    return unflatten_call([s.example(gen) for s in specs], spec)
