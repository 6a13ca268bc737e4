"""Every ATen op the Core ML plugin claims, verified numerically against eager PyTorch at fp32 and fp16.

Each case in ``coreml_cases.CASES`` is a tiny model. To keep the number of
coremltools conversions (about a second each) down, cases are lowered in
groups: a dozen cases side by side, lowered strictly onto Core ML alone
(``delegate_sdk.testing.lower_and_run``), which also checks that claimed nodes
compile next to arbitrary neighbours. Failures name the case.

Tolerances (|delegate - eager| <= tol * max(1, max|eager|)):
  fp32: tol = 1e-5 (float32 arithmetic; only summation order differs).
  fp16: tol = 8 * 2**-10, i.e. 8 fp16 machine epsilons: the inputs are rounded to fp16 and every MIL op
        rounds its result to fp16, so short op chains accumulate a few ulps.
Integer and bool outputs must match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from coreml_cases import CASES, OpCase
from delegate_sdk_coreml import rules

from delegate_sdk import testing
from delegate_sdk.support import op_name

FP16_EPS = 2.0 ** -10
TOL = {"fp32": 1e-5, "fp16": 8 * FP16_EPS}
GROUP_SIZE = 12


@dataclass
class Prepared:
    cases: list[OpCase]
    group: testing.SideBySide
    ep: torch.export.ExportedProgram


GROUPS = [CASES[i:i + GROUP_SIZE] for i in range(0, len(CASES), GROUP_SIZE)]
_prepared: dict[int, Prepared] = {}


def prepare(gi: int) -> Prepared:
    if gi not in _prepared:
        cases = GROUPS[gi]
        inputs = [tuple(c.inputs(torch.Generator().manual_seed(1000 + gi * 100 + k))) for k, c in enumerate(cases)]
        torch.manual_seed(gi)
        group = testing.side_by_side([(c.make(), xs) for c, xs in zip(cases, inputs)])
        ep = testing.capture("coreml", group.model, group.args)
        _prepared[gi] = Prepared(cases, group, ep)
    return _prepared[gi]


def compare(got: torch.Tensor, exp: torch.Tensor, precision: str) -> str | None:
    if got.shape != exp.shape or got.dtype != exp.dtype:
        return f"shape/dtype {tuple(got.shape)} {got.dtype}, eager {tuple(exp.shape)} {exp.dtype}"
    if not exp.dtype.is_floating_point:
        bad = int((got != exp).sum())
        return f"{bad}/{exp.numel()} elements differ" if bad else None
    scale = max(1.0, float(exp.abs().max())) if exp.numel() else 1.0
    err = float((got.double() - exp.double()).abs().max()) if exp.numel() else 0.0
    if not err <= TOL[precision] * scale:
        return f"max abs error {err:.3g} > {TOL[precision] * scale:.3g}"
    return None


def test_cases_cover_the_claim_table() -> None:
    covered = {op for c in CASES for op in c.ops}
    assert len(covered) >= 50
    claimable = set(rules.table.ops_at("fp16")) | set(rules.table.ops_at("fp32"))
    missing = sorted(claimable - covered)
    assert not missing, f"claimable ops without a numeric case: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("gi", range(len(GROUPS)), ids=[f"{g[0].id}..{g[-1].id}" for g in GROUPS])
def test_ops_match_eager(gi: int, precision: str) -> None:
    p = prepare(gi)
    graph_ops = {op_name(n) for n in p.ep.graph.nodes if n.op == "call_function"}
    for c in p.cases:
        absent = [op for op in c.ops if op not in graph_ops]
        assert not absent, f"case {c.id}: {absent} not in the captured graph"

    # strict: a node left on eager PyTorch fails here, with the plugin's reason
    run = testing.lower_and_run("coreml", p.group.model, p.group.args, precision=precision)
    # every MIL op of a partition is accounted for by the table entries of the nodes it came from
    for part in run.program.summary().partitions:
        allowed = set(rules.PASS_PRODUCED_MIL)
        for op in part.ops:
            allowed |= rules.mil_ops_for(op)
        unexpected = sorted(set(part.meta["mil_op_counts"]) - allowed)
        assert not unexpected, f"MIL ops not listed in rules.ATEN_TO_MIL for these nodes: {unexpected}"

    assert len(run.outputs) == len(p.group.expected)
    failures = []
    for c, got, want in zip(p.cases, p.group.split(run.outputs), p.group.split(p.group.expected)):
        for k, (g, e) in enumerate(zip(got, want)):
            msg = compare(g, e, precision)
            if msg:
                failures.append(f"{c.id}[{k}] ({', '.join(c.ops)}): {msg}")
    assert not failures, "\n".join(failures)
