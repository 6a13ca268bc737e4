"""Bisection of a failing model case: which partition, and which node in it, diverges first.

1. Partition: run the lowered program once with ``Program.trace`` to capture every delegate's boundary
   tensors; run each partition's own program (``Program.subprogram``) eagerly on the *captured* inputs
   and compare with what the delegate returned (SQNR threshold of the precision). Because every partition
   is fed the real upstream values, the first one (in execution order) that diverges is to blame, not the
   ones downstream that merely inherit its error.
2. Node: inside that partition, binary search over its nodes in topological order: a prefix of the
   partition ending at node *m* (its only output) is lowered alone with the plugin and run on the captured
   inputs; the first node whose prefix diverges is named. About log2(n) lowerings. If a prefix cannot be
   lowered (refused, fails), the search stops and names the narrowest range found.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.utils._pytree as pytree

from delegate_sdk.conformance import tolerance

MAX_PROBES = 9


def _pid_key(pid: str) -> tuple[int, str]:
    digits = "".join(ch for ch in pid if ch.isdigit())
    return (int(digits) if digits else 1 << 30, pid)


def _tensors(x: Any) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(x) if isinstance(t, torch.Tensor)]


def _threshold(precision: tolerance.PrecisionLike) -> float:
    return tolerance.sqnr_floor(precision)


def _diverges(expected: list[torch.Tensor], actual: list[torch.Tensor],
              precision: tolerance.PrecisionLike) -> tuple[bool, str]:
    thr = _threshold(precision)
    for k, (e, a) in enumerate(zip(expected, actual)):
        if e.shape != a.shape:
            return True, f"output {k} shape {tuple(a.shape)} != {tuple(e.shape)}"
        if not e.dtype.is_floating_point:
            if not torch.equal(e, a):
                return True, f"output {k} integers differ"
            continue
        nan_bad = bool((torch.isnan(e) != torch.isnan(a)).any())
        s = tolerance.sqnr_db(e, a)
        if nan_bad or (s is not None and s < thr):
            return True, f"output {k} SQNR {s if s is None else round(s, 1)} dB < {thr} dB" + (
                " (NaN mismatch)" if nan_bad else "")
    return False, ""


def bisect_model(program: Any, inputs: tuple[torch.Tensor, ...], plugin: str, options: dict[str, Any],
                 precision: tolerance.PrecisionLike) -> str:
    """A sentence naming the first diverging partition and node (or why none could be named)."""
    summary = program.summary()
    with torch.no_grad():
        _, boundaries = program.trace(*inputs)
    parts = sorted((p for p in summary.partitions if p.id in boundaries), key=lambda p: _pid_key(p.id))
    if not parts:
        return "bisection: no delegated partition ran (the mismatch is in the eager part or the core)"
    for part in parts:
        b_in, b_out = boundaries[part.id]
        sub = program.subprogram(part.id)
        if sub is None:
            return f"bisection: partition {part.id}'s program is not available in this process"
        with torch.no_grad():
            ref = _tensors(sub.module()(*[t.clone() for t in b_in]))
        bad, why = _diverges(ref, list(b_out), precision)
        if bad:
            head = (f"first diverging partition {part.id} ({part.backend}, {len(part.nodes)} nodes) on its captured "
                    f"inputs: {why}")
            try:
                node = _first_node(sub, list(b_in), plugin, options, precision)
            except Exception as e:  # the partition-level answer stands
                node = f"node search failed: {type(e).__name__}: {str(e)[:150]}"
            return f"{head}; {node}"
    return ("bisection: every partition matches eager on its captured inputs: the error accumulates across "
            "partitions or comes from the eager fallback")


def _compute_nodes(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    out = []
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        v = n.meta.get("val")
        if isinstance(v, torch.Tensor):
            out.append(n)
    return out


def _prefix(gm: torch.fx.GraphModule, index: int) -> torch.fx.GraphModule:
    """A copy of ``gm`` whose only output is its ``index``-th compute node."""
    new = copy.deepcopy(gm)
    target = _compute_nodes(new)[index]
    out_node = next(n for n in new.graph.nodes if n.op == "output")
    new.graph.erase_node(out_node)
    new.graph.output((target,))
    new.graph._codegen = torch.fx.graph.CodeGen()
    new.graph.eliminate_dead_code()
    new.recompile()
    return new


class _Wrap(torch.nn.Module):
    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__()
        self.gm = gm

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.gm(*xs)[0]


def _first_node(sub: Any, b_in: list[torch.Tensor], plugin: str, options: dict[str, Any],
                precision: tolerance.PrecisionLike) -> str:
    from delegate_sdk.lowering import lower

    gm = sub.module()
    nodes = _compute_nodes(gm)
    if not nodes:
        return "no compute node to search"
    names = [f"{n.name} ({n.target})" for n in nodes]
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(b_in):
        return f"node search skipped: {len(placeholders)} placeholders vs {len(b_in)} captured inputs"
    calib = [tuple(t.clone() for t in b_in)] if tolerance.is_quantized(precision) else None
    cache: dict[int, bool | None] = {}

    def diverges(m: int) -> bool | None:
        if m in cache:
            return cache[m]
        mod = _Wrap(_prefix(gm, m))
        try:
            with torch.no_grad():
                expected = _tensors(mod(*[t.clone() for t in b_in]))
            prog = lower(mod, tuple(t.clone().contiguous() for t in b_in), [plugin],
                         options=options, calibration=calib, min_benefit=False)
            if prog.summary().nodes_delegated == 0:
                cache[m] = None
                return None
            with torch.no_grad():
                actual = _tensors(prog(*[t.clone() for t in b_in]))
        except Exception:
            cache[m] = None
            return None
        bad, _ = _diverges(expected, actual, precision)
        cache[m] = bad
        return bad

    lo, hi = -1, len(nodes) - 1  # invariant: prefix hi diverges (assumed), prefix lo does not
    probes = 0
    if diverges(hi) is False:
        return "no single node's prefix reproduces the divergence when lowered alone"
    while hi - lo > 1 and probes < MAX_PROBES:
        mid = (lo + hi) // 2
        probes += 1
        r = diverges(mid)
        if r is None:
            break
        if r:
            hi = mid
        else:
            lo = mid
    if hi - lo == 1:
        return f"first diverging node: {names[hi]}"
    span = f"{names[lo + 1]} .. {names[hi]}"
    return f"first diverging node between {span} ({hi - lo} nodes; search stopped after {probes} probes)"

