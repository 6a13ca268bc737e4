"""Seeded input sampling: the same command gives the same inputs on every machine.

Every random tensor comes from a fresh ``torch.Generator`` (CPU Philox/MT stream,
identical across machines for one torch version) seeded with
``derive_seed(seed, sample_id, purpose)``: a SHA-256 of those strings, so adding
or reordering cases never changes another case's inputs. Module weights are drawn
the same way from the case id (``build_module``).

Edge values depend on the precision under test so that "very large" stays a
number the precision can represent as an input (1e30 for fp32/bf16, 3e4 for fp16);
a sample with edges at a quantized precision is not run (non-finite and huge
values are outside any calibrated range; the runner reports SKIP).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from delegate_sdk.conformance.cases import In, ModelCase, OpCase, Sample, sample_id

_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; one of {sorted(_DTYPES)}") from None


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from ``seed`` and any strings/ints: stable across machines and Python runs."""
    h = hashlib.sha256("\x1f".join([str(seed), *map(str, parts)]).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *parts: Any) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, *parts))
    return g


def edge_values(kind: str, precision: Any) -> list[float]:
    """The edge values spliced into ``edges=kind`` samples at ``precision`` (a Precision or a name)."""
    from delegate_sdk.conformance.tolerance import float_dtype

    if float_dtype(precision) == torch.float16:
        large, tiny, sub = 3.0e4, 1.0e-4, 2.0e-6  # 2e-6 is subnormal in fp16
    else:
        large, tiny, sub = 1.0e30, 1.0e-30, 1.0e-40  # 1e-40 is subnormal in fp32
    inf, nan = float("inf"), float("nan")
    if kind == "all":
        return [0.0, -0.0, inf, -inf, nan, large, -large, tiny, -sub]
    if kind == "finite":
        return [0.0, -0.0, large, -large, tiny, -sub]
    if kind == "nonneg":
        return [0.0, inf, large, tiny, sub]
    raise ValueError(f"unknown edge kind {kind!r}")


def _base(spec: In, g: torch.Generator) -> torch.Tensor:
    shape = tuple(spec.shape)
    dt = torch_dtype(spec.dtype)
    if spec.dist == "bool" or dt == torch.bool:
        return torch.rand(shape, generator=g) < 0.5
    if spec.dist in ("int", "index") or not dt.is_floating_point:
        if spec.dist == "index":
            lo, hi = 0, int(spec.high or 2)
        else:
            lo, hi = int(spec.low if spec.low is not None else -8), int(spec.high if spec.high is not None else 8)
        return torch.randint(lo, hi, shape, generator=g, dtype=torch.int64).to(dt)
    if spec.dist == "normal":
        x = torch.randn(shape, generator=g) * (spec.high if spec.high is not None else 1.0)
        if spec.low is not None:
            x = x + spec.low
    elif spec.dist == "uniform":
        lo, hi = (spec.low if spec.low is not None else -1.0), (spec.high if spec.high is not None else 1.0)
        x = torch.rand(shape, generator=g) * (hi - lo) + lo
    elif spec.dist == "positive":
        lo, hi = (spec.low if spec.low is not None else 0.05), (spec.high if spec.high is not None else 4.0)
        x = torch.rand(shape, generator=g) * (hi - lo) + lo
    elif spec.dist == "unit":
        x = torch.rand(shape, generator=g) * 1.9 - 0.95
    elif spec.dist == "grid":
        x = torch.randint(-16, 17, shape, generator=g).to(torch.float32) * 0.25
    else:  # pragma: no cover - guarded by In.__post_init__
        raise ValueError(spec.dist)
    return x.to(dt)


def _splice_edges(x: torch.Tensor, kind: str, precision: Any, g: torch.Generator) -> torch.Tensor:
    if not x.dtype.is_floating_point or x.numel() == 0:
        return x
    vals = edge_values(kind, precision)
    n = min(max(1, x.numel() // 2), 2 * len(vals))
    pos = torch.randperm(x.numel(), generator=g)[:n]
    flat = x.reshape(-1).clone()
    offset = int(torch.randint(0, len(vals), (1,), generator=g))
    for i, p in enumerate(pos.tolist()):
        flat[p] = vals[(i + offset) % len(vals)]
    return flat.reshape(x.shape)


def noncontiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as a non-contiguous view (every other element of a wider buffer)."""
    if x.dim() == 0 or x.numel() == 0:
        return x
    big = torch.zeros((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype)
    big[..., ::2] = x
    view = big[..., ::2]
    assert not view.is_contiguous() or x.shape[-1] <= 1
    return view


def make_inputs(sample: Sample, sid: str, seed: int, precision: Any, purpose: str = "run",
                shapes: Sequence[tuple[int, ...]] | None = None) -> tuple[torch.Tensor, ...]:
    """The sample's input tensors (non-contiguous where the spec says so)."""
    out = []
    for i, spec in enumerate(sample.inputs):
        g = generator(seed, sid, purpose, i)
        if shapes is not None:
            spec = In(tuple(shapes[i]), spec.dtype, spec.dist, spec.low, spec.high, spec.noncontig)
        x = _base(spec, g)
        if sample.edges:
            x = _splice_edges(x, sample.edges, precision, g)
        if spec.noncontig and purpose.startswith(("run", "thread")):  # what the program is called with
            x = noncontiguous(x)
        out.append(x)
    return tuple(out)


def export_shapes(sample: Sample) -> list[tuple[int, ...]]:
    """Shapes of the example inputs a dynamic sample is lowered on (each dynamic dim: run size + 3)."""
    shapes = []
    for i, spec in enumerate(sample.inputs):
        dyn = (sample.dynamic or {}).get(i, {})
        shapes.append(tuple(s + 3 if d in dyn else s for d, s in enumerate(spec.shape)))
    return shapes


def other_sizes(sample: Sample) -> list[list[tuple[int, ...]]]:
    """Two more sets of input shapes for a dynamic sample, run through the program loaded for it: the export
    sizes (each dynamic dim + 3) and each dynamic dim + 1. Static dims stay as they are."""
    if not sample.dynamic:
        return []
    out = [export_shapes(sample)]
    more = []
    for i, spec in enumerate(sample.inputs):
        dyn = sample.dynamic.get(i, {})
        more.append(tuple(d + 1 if k in dyn else d for k, d in enumerate(spec.shape)))
    out.append(more)
    return out


def dynamic_shapes_spec(sample: Sample, module: torch.nn.Module | None = None,
                        example: Sequence[torch.Tensor] | None = None) -> Any:
    """``dynamic_shapes`` for ``torch.export`` / ``delegate_sdk.lower``, or None for a static sample.

    With ``module`` and ``example`` given, the structure follows the module's forward signature
    (through ``torch.export.ShapesCollection``, so ``forward(self, *xs)`` works too); without them it
    is one dict (or None) per positional input.
    """
    if not sample.dynamic:
        return None
    dims: dict[str, Any] = {}
    per_input: list[Any] = []
    for i in range(len(sample.inputs)):
        d = sample.dynamic.get(i)
        if not d:
            per_input.append(None)
            continue
        entry = {}
        for dim, name in d.items():
            if name not in dims:
                dims[name] = torch.export.Dim(name, min=2, max=4096)
            entry[dim] = dims[name]
        per_input.append(entry)
    if module is None or example is None:
        return tuple(per_input)
    sc = torch.export.ShapesCollection()
    for x, entry in zip(example, per_input):
        if entry:
            sc[x] = entry
    return sc.dynamic_shapes(module, tuple(example))


def example_inputs(sample: Sample, sid: str, seed: int, precision: Any) -> tuple[torch.Tensor, ...]:
    """Contiguous inputs to export and lower a sample's group on."""
    if sample.dynamic:
        plain = Sample("normal", sample.inputs)
        return make_inputs(plain, sid, seed, precision, purpose="export", shapes=export_shapes(sample))
    return tuple(x.contiguous() for x in make_inputs(sample, sid, seed, precision, purpose="run"))


def calibration_inputs(case: OpCase | ModelCase, group: Sequence[Sample], seed: int, precision: Any,
                       extra: int = 4) -> list[tuple[torch.Tensor, ...]]:
    """Calibration set for a quantized lowering of one group: drawn from the same seeded sampler.

    The group's own edge-free samples (at the shapes the group was lowered on) plus ``extra`` further
    draws from the first of them, so that a test input rarely lies outside the calibrated range.
    """
    plain = [s for s in group if not s.edges] or list(group)
    first = plain[0]
    shapes = export_shapes(first) if first.dynamic else None
    calib: list[tuple[torch.Tensor, ...]] = []
    for s in plain:
        plain_s = Sample("normal", s.inputs)
        if s.dynamic:
            calib.append(make_inputs(plain_s, sample_id(case, s), seed, precision, purpose="export",
                                     shapes=export_shapes(s)))
        else:
            calib.append(tuple(x.contiguous() for x in make_inputs(plain_s, sample_id(case, s), seed, precision)))
    for i in range(extra):
        calib.append(make_inputs(Sample("normal", first.inputs), sample_id(case, first), seed, precision,
                                 purpose=f"calib{i}", shapes=shapes))
    return calib


def build_module(case: OpCase | ModelCase, seed: int) -> torch.nn.Module:
    """The case's module in eval mode, its weights drawn from the case id and seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, case.id, "weights"))
        m = case.module()
    if not isinstance(m, torch.nn.Module):
        raise TypeError(f"case {case.id}: module factory returned {type(m).__name__}, not torch.nn.Module")
    from delegate_sdk.capture import eager_module

    return eager_module(m)  # an ExportedProgram's module (a --model case) keeps the mode it was exported in


def describe(case: OpCase | ModelCase, sample: Sample, seed: int, precision: Any) -> dict[str, Any]:
    """What a sample's inputs are, for a failure report: each tensor's shape, dtype, strides, and the edge
    values spliced in and the dynamic dims, when there are."""
    xs = make_inputs(sample, sample_id(case, sample), seed, precision)
    out: dict[str, Any] = {"tensors": [{"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch."),
                                        "strides": list(x.stride()), "contiguous": x.is_contiguous()}
                                       for x in xs]}
    if sample.edges:
        out["edges"] = {"kind": sample.edges, "values": [repr(v) for v in edge_values(sample.edges, precision)]}
    if sample.dynamic:
        out["dynamic"] = {str(i): {str(d): n for d, n in dims.items()} for i, dims in sample.dynamic.items()}
        out["export_shapes"] = [list(s) for s in export_shapes(sample)]
    return out
