"""The records a conformance case is made of.

A case is a small PyTorch module plus a list of *samples*: input specifications
that the seeded sampler (:mod:`delegate_sdk.conformance.sampling`) turns into
tensors. Cases hold no tensors, so they are cheap to build in every worker
process and contain nothing machine-dependent; the inputs follow only from the
case id, the sample id, ``--seed`` and the precision.

Ids: op cases are ``op/<name>``, model cases ``model/<name>``; a sample's id is
``<case id>/<sample name>`` (``op/add/broadcast``). Plugin-contributed cases
(the ``conformance_cases`` hook) should prefix their names with the backend name
(``op/qnn_layernorm_big``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

#: Sample kinds. Every op case has samples of at least three different kinds.
SAMPLE_KINDS = ("normal", "broadcast", "edge", "noncontig", "rank", "zero_size", "dynamic", "large")

#: Input distributions understood by the sampler.
DISTS = ("normal", "uniform", "positive", "unit", "int", "index", "bool", "grid")


@dataclass(frozen=True)
class In:
    """One tensor input of a sample.

    ``dist``: ``normal`` N(0, 1) scaled by ``high`` if given; ``uniform`` U(low, high);
    ``positive`` U(0.05, 4) (or U(low, high)); ``unit`` U(-0.95, 0.95) (inputs of asin, atanh, ...);
    ``int`` integers in [low, high); ``index`` int64 in [0, high) (indices into a dim of size high);
    ``bool``; ``grid`` multiples of 0.25 in [-4, 4] (exactly representable in fp16; gives ties for
    comparisons). ``noncontig``: handed to the program as a non-contiguous view of the same shape.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    dist: str = "normal"
    low: float | None = None
    high: float | None = None
    noncontig: bool = False

    def __post_init__(self) -> None:
        if self.dist not in DISTS:
            raise ValueError(f"unknown input distribution {self.dist!r}; one of {DISTS}")


@dataclass(frozen=True)
class Sample:
    """One set of inputs for a case.

    ``edges``: splice edge values into the float inputs: ``"all"`` (0, -0, ±inf, NaN, very large,
    very small), ``"finite"`` (0, -0, very large, very small), ``"nonneg"`` (0, +inf, large, tiny),
    or None. ``dynamic``: ``{input index: {dim: name}}``: the case is lowered with those dims
    dynamic (dims with the same name are one symbol), on example inputs whose dynamic dims differ
    from this sample's, then run on this sample's shapes.
    """

    kind: str
    inputs: tuple[In, ...]
    name: str = ""
    edges: str | None = None
    dynamic: dict[int, dict[int, str]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SAMPLE_KINDS:
            raise ValueError(f"unknown sample kind {self.kind!r}; one of {SAMPLE_KINDS}")
        if self.edges not in (None, "all", "finite", "nonneg"):
            raise ValueError(f"edges must be all|finite|nonneg|None, not {self.edges!r}")

    @property
    def label(self) -> str:
        return self.name or self.kind

    def group_key(self) -> tuple[Any, ...]:
        """Samples with equal keys share one export + lowering (same shapes and dtypes, same dynamism)."""
        dyn = tuple(sorted((i, tuple(sorted(d.items()))) for i, d in (self.dynamic or {}).items()))
        if self.dynamic:
            # dynamic groups are lowered on export-sized inputs: only static dims must agree
            shapes = tuple((tuple(-1 if d in (self.dynamic or {}).get(i, {}) else s
                                  for d, s in enumerate(x.shape)), x.dtype) for i, x in enumerate(self.inputs))
        else:
            shapes = tuple((x.shape, x.dtype) for x in self.inputs)
        return (shapes, dyn)


ReductionLen = int | Callable[[Sequence[Any]], int] | None


@dataclass
class OpCase:
    """A single-op conformance case.

    ``module`` builds a fresh ``torch.nn.Module`` (called with the torch RNG seeded from the case
    id, so weights are reproducible); ``op`` is the core ATen op the case is about
    (``"aten.add.Tensor"``), as it appears after ``run_decompositions()``. ``reduction`` is the
    number of terms accumulated into one output element (an int, or a function of the input tensors),
    used by the tolerance policy; None means 1 (elementwise). ``cond`` is a conditioning factor
    (>= 1) for ops whose result amplifies input rounding (pow, exp of large args, division by small
    values), applied by the policy to reduced precisions.
    """

    id: str
    op: str
    module: Callable[[], Any]
    samples: list[Sample]
    reduction: ReductionLen = None
    cond: float = 1.0
    tags: tuple[str, ...] = ()
    kind: str = field(default="op", init=False)

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass
class ModelCase:
    """A whole-model case, judged by SQNR (and bisected when it fails)."""

    id: str
    module: Callable[[], Any]
    samples: list[Sample]
    description: str = ""
    tags: tuple[str, ...] = ()
    op: str | None = field(default=None, init=False)
    reduction: ReductionLen = field(default=None, init=False)
    cond: float = field(default=1.0, init=False)
    kind: str = field(default="model", init=False)

    def __post_init__(self) -> None:
        _check_ids(self)


Case = OpCase | ModelCase


class FunctionModule(torch.nn.Module):
    """A module whose forward is one function of its inputs: an op case with no weights."""

    def __init__(self, f: Callable[..., Any]) -> None:
        super().__init__()
        self.f = f

    def forward(self, *xs: Any) -> Any:
        return self.f(*xs)


def function_module(f: Callable[..., Any]) -> Callable[[], torch.nn.Module]:
    """A case's ``module`` for a function of the inputs:
    ``OpCase("op/mine_cos", "aten.cos.default", function_module(torch.cos), samples)``."""
    return lambda: FunctionModule(f)


def seeded(factory: Callable[[], torch.nn.Module], seed: int = 0) -> Callable[[], torch.nn.Module]:
    """A case's ``module`` built with the torch RNG at ``seed``, in eval mode: for a case whose weights (or
    batch-norm statistics) must not depend on the case id the engine otherwise seeds from."""
    def make() -> torch.nn.Module:
        torch.manual_seed(seed)
        return factory().eval()

    return make


def _check_ids(case: OpCase | ModelCase) -> None:
    prefix = "op/" if isinstance(case, OpCase) else "model/"
    if not case.id.startswith(prefix) or case.id.count("/") != 1:
        raise ValueError(f"case id {case.id!r} must look like {prefix}<name> (no further '/')")
    if not case.samples:
        raise ValueError(f"case {case.id} has no samples")
    labels = [s.label for s in case.samples]
    dupes = {lab for lab in labels if labels.count(lab) > 1}
    if dupes:
        raise ValueError(f"case {case.id}: duplicate sample names {sorted(dupes)}; give them distinct name=")


def sample_id(case: OpCase | ModelCase, sample: Sample) -> str:
    return f"{case.id}/{sample.label}"


def reduction_length(case: OpCase | ModelCase, inputs: Sequence[Any]) -> int:
    r = case.reduction
    if r is None:
        return 1
    if callable(r):
        try:
            return max(1, int(r(inputs)))
        except Exception:  # a reduction formula that does not fit a sample: treat as elementwise
            return 1
    return max(1, int(r))
