"""Per-layer error localisation: which partition, and which module of the model, an error comes from.

Two views, both measured against eager PyTorch on the same held-out inputs:

- **per partition**: each partition's outputs in the lowered run (the error it passes on, earlier
  partitions' included) and the partition run alone on eager PyTorch's values at its inputs (the error it
  adds by itself). The partition's nodes name the modules they come from (``nn_module_stack``).
- **per module**: the same, one level down the module tree (``encoder.layer.1``), from one more lowering
  whose partitions are cut where modules meet (``cut_at_modules``), so that a module's boundary is a
  partition boundary even when the real lowering is a single partition. Then, for a target SQNR, the fewest
  of the worst modules to keep off the backends (``skip_nodes`` by module path), each step re-lowered and
  measured.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

from delegate_sdk.errors import UsageError
from delegate_sdk.metrics import sqnr_db
from delegate_sdk.module_paths import module_stack

Call = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass
class PartitionError:
    partition: str
    backend: str
    nodes: int
    #: the modules its nodes come from, in order (at the level of the module tree that tells them apart)
    modules: list[str]
    #: its outputs in the lowered run against eager (None: exact); earlier partitions' errors included
    sqnr_db: float | None
    #: run alone on eager PyTorch's values at its inputs: the error it adds by itself
    local_sqnr_db: float | None

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "backend": self.backend, "nodes": self.nodes, "modules": self.modules,
                "sqnr_db": _finite(self.sqnr_db), "local_sqnr_db": _finite(self.local_sqnr_db)}


@dataclass
class ModuleError:
    module: str
    #: delegated nodes inside it
    nodes: int
    #: the error its own nodes add: with partitions cut at module boundaries, its partitions run alone on
    #: eager PyTorch's values at their inputs, against eager at their outputs (worst; None: exact)
    local_sqnr_db: float | None

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "nodes": self.nodes, "local_sqnr_db": _finite(self.local_sqnr_db)}


@dataclass
class LayerReport:
    backends: list[str]
    #: the model's output SQNR as lowered (worst output, worst input)
    sqnr_db: float | None
    partitions: list[PartitionError]
    #: one entry per module of the level examined, the worst first
    modules: list[ModuleError] = field(default_factory=list)
    target_db: float | None = None
    #: the fewest modules (worst first) to keep off the backends to meet ``target_db``
    skip: list[str] = field(default_factory=list)
    #: the SQNR with ``skip`` kept on eager PyTorch (None when no target was asked or none was needed)
    skip_sqnr_db: float | None = None

    def worst_partition(self) -> PartitionError | None:
        ranked = [p for p in self.partitions if p.local_sqnr_db is not None]
        return min(ranked, key=lambda p: p.local_sqnr_db) if ranked else None  # type: ignore[arg-type, return-value]

    @property
    def target_met(self) -> bool | None:
        if self.target_db is None:
            return None
        got = self.skip_sqnr_db if self.skip else self.sqnr_db
        return got is None or got >= self.target_db

    def to_json(self) -> dict[str, Any]:
        return {"backends": self.backends, "sqnr_db": _finite(self.sqnr_db),
                "partitions": [p.to_json() for p in self.partitions], "modules": [m.to_json() for m in self.modules],
                "target_db": self.target_db, "skip": self.skip, "skip_sqnr_db": _finite(self.skip_sqnr_db),
                "target_met": self.target_met}


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) and x > 0 else round(x, 2)


def _worst(values: Sequence[float | None]) -> float | None:
    """The lowest SQNR (None is exact, i.e. +inf)."""
    got = [v for v in values if v is not None]
    return min(got) if got else None


def _sqnr(actual: Sequence[Any], ref: Sequence[Any]) -> float | None:
    return _worst([sqnr_db(a.float(), r.float()) for a, r in zip(actual, ref)
                   if isinstance(a, torch.Tensor) and isinstance(r, torch.Tensor) and a.is_floating_point()
                   and a.shape == r.shape and a.numel()])


def localise(model: Any, example_inputs: Any, backends: Sequence[str] | str, *, eval_inputs: Sequence[Call],
             example_kwargs: dict[str, Any] | None = None, target_db: float | None = None,
             modules: Sequence[str] | None = None, max_modules: int = 12,
             lower_fn: Callable[..., Any] | None = None, **lower_kw: Any) -> LayerReport:
    """Where the error of ``model`` lowered onto ``backends`` comes from (see the module docstring).

    ``eval_inputs``: held-out calls ``(args, kwargs)``. ``modules``: the module paths to try keeping off the
    backends (default: the level of the model's module tree with several modules holding delegated nodes,
    at most ``max_modules`` of them, largest first); ``[]`` skips the per-module view. ``target_db``: also
    find the fewest modules whose removal meets it. ``lower_kw`` goes to :func:`delegate_sdk.lowering.lower`.
    """
    from delegate_sdk.lowering import lower

    lower_fn = lower_fn or lower
    if not eval_inputs:
        raise UsageError("per-layer localisation needs at least one held-out input")

    def lowered(skip: Sequence[str] = (), cut_at_modules: Sequence[str] = ()) -> Any:
        kw = dict(lower_kw)
        kw["skip_nodes"] = [*kw.get("skip_nodes", ()), *skip]
        return lower_fn(model, example_inputs, backends, example_kwargs=example_kwargs,
                        cut_at_modules=cut_at_modules, **kw)

    prog = lowered()
    if prog.source is None:
        raise UsageError("per-layer localisation needs a program lowered in this process")
    ep = prog.source
    refs = _eager_outputs(ep, eval_inputs)  # once, for every lowering below
    report = partition_errors(prog, ep, eval_inputs, refs)
    report.target_db = target_db
    report.backends = [backends] if isinstance(backends, str) else list(backends)

    def model_sqnr(p: Any) -> float | None:
        with torch.no_grad():
            return _worst([_sqnr(pytree.tree_leaves(p(*a, **kw)), r) for (a, kw), r in zip(eval_inputs, refs)])

    by_name = {n.name: n for n in ep.graph.nodes}
    records = prog.summary().partitions
    delegated = [by_name[n] for r in records for n in r.nodes if n in by_name and n not in set(r.hosted)]
    candidates = list(modules) if modules is not None else _candidate_modules(delegated, max_modules)
    if candidates:
        # one more lowering with partitions cut where the modules meet: their boundaries become partition
        # boundaries, so each module's own error is measured like a partition's
        cut_prog = lowered(cut_at_modules=candidates)
        cut = partition_errors(cut_prog, ep, eval_inputs, refs)
        inside = {m: sum(1 for n in delegated if m in module_stack(n)) for m in candidates}
        owner = {r.id: _owner(r.nodes, by_name, candidates) for r in cut_prog.summary().partitions}
        for m in candidates:
            own = [p.local_sqnr_db for p in cut.partitions if owner[p.partition] == m]
            report.modules.append(ModuleError(m, inside[m], _worst(own)))
        report.modules.sort(key=lambda e: math.inf if e.local_sqnr_db is None else e.local_sqnr_db)
    base = report.sqnr_db
    if target_db is not None and base is not None and base < target_db:
        chosen: list[str] = []
        for e in report.modules[:4]:
            if e.local_sqnr_db is None:
                break
            chosen.append(e.module)
            got = model_sqnr(lowered(chosen))
            report.skip, report.skip_sqnr_db = list(chosen), got
            if got is None or got >= target_db:
                break
    return report


def _eager_outputs(ep: Any, eval_inputs: Sequence[Call]) -> list[list[Any]]:
    eager = ep.module()
    with torch.no_grad():
        return [pytree.tree_leaves(eager(*a, **kw)) for a, kw in eval_inputs]


def partition_errors(prog: Any, ep: Any, eval_inputs: Sequence[Call],
                     refs: Sequence[list[Any]] | None = None) -> LayerReport:
    """The per-partition view of a lowered ``prog`` whose partitions were cut from ``ep`` (node names match).
    ``refs``: eager PyTorch's output leaves per input, when the caller already has them."""
    from delegate_sdk.lowering import capture_boundaries

    records = prog.summary().partitions
    by_name = {n.name: n for n in ep.graph.nodes}
    missing = sorted({n for r in records for n in [*r.input_nodes, *r.output_nodes] if n not in by_name})
    if missing or any(not r.output_nodes for r in records):
        raise UsageError("the model does not match the artifact's partitions (no node "
                         f"{', '.join(missing[:3]) or 'names recorded'}); re-lower it, or check it is the same model")
    # partitions are described at the level of the module tree that tells their nodes apart
    level = _candidate_modules([by_name[n] for r in records for n in r.nodes if n in by_name], 64)
    refs = _eager_outputs(ep, eval_inputs) if refs is None else refs
    flat = [tuple(prog.flatten_inputs(*a, **kw)) for a, kw in eval_inputs]
    at_eager = capture_boundaries(ep, flat, {r.id: [*r.input_nodes, *r.output_nodes] for r in records})
    whole, parts = [], []
    with torch.no_grad():
        traces = []
        for (a, kw), ref in zip(eval_inputs, refs):
            out, bounds = prog.trace(*a, **kw)
            traces.append(bounds)
            whole.append(_sqnr(out, ref))
        for r in records:
            n_in = len(r.input_nodes)
            passed, alone = [], []
            for k, values in enumerate(at_eager[r.id]):
                ins, outs = list(values[:n_in]), list(values[n_in:])
                passed.append(_sqnr(traces[k][r.id][1], outs))
                alone.append(_sqnr(prog.run_partition(r.id, ins), outs))
            owners = list(dict.fromkeys(_owner([n], by_name, level) or "(model)" for n in r.nodes if n in by_name))
            parts.append(PartitionError(r.id, r.backend, len(r.nodes),
                                        owners[:4] + ([f"+{len(owners) - 4} more"] if len(owners) > 4 else []),
                                        _worst(passed), _worst(alone)))
    return LayerReport(sorted({r.backend for r in records}), _worst(whole), parts)


def _owner(nodes: Sequence[str], by_name: dict[str, torch.fx.Node], modules: Sequence[str]) -> str:
    """The module of ``modules`` most of ``nodes`` lie in ("" when none)."""
    wanted = set(modules)
    votes = Counter(next((p for p in module_stack(by_name[n]) if p in wanted), "") for n in nodes if n in by_name)
    return votes.most_common(1)[0][0] if votes else ""


def _candidate_modules(nodes: list[torch.fx.Node], limit: int) -> list[str]:
    """The shallowest level of the module tree at which no one module holds most of the delegated nodes
    (a model's one body module, ``mobilenet_v2`` or ``encoder``, says nothing), largest modules first. A
    node whose modules end above that level counts in its innermost one (a classifier head stays in)."""
    stacks = [module_stack(n) for n in nodes]
    depth = max((len(s) for s in stacks), default=0)
    for d in range(depth):
        at = Counter(s[min(d, len(s) - 1)] for s in stacks if s)
        if at and (at.most_common(1)[0][1] * 2 <= len(nodes) or d == depth - 1):
            return [m for m, _ in at.most_common(limit)]
    return []
