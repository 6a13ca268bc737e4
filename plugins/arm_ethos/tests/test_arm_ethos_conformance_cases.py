"""Every op the claim table can take has a conformance case, or the capture never hands it to claim."""

from __future__ import annotations

import pytest
import torch
from arm_ethos_cases import Fn

from delegate_sdk import testing
from delegate_sdk.support import op_name
from delegate_sdk_arm_ethos.rules import rules

_A = torch.ops.aten
_X = torch.randn(2, 3, 4, 4)

# Spellings the table declares (the lowering handles them) that the core-ATen decomposition rewrites even when
# a model calls them by name: no captured program holds them, so no case can be about them.
DECOMPOSED_AWAY = {
    "aten._unsafe_view.default": lambda a: _A._unsafe_view.default(a * 2, [2, 48]),
    "aten.contiguous.default": lambda a: _A.contiguous.default(a.transpose(1, 2)),
    "aten.detach.default": lambda a: _A.detach.default(a) * 2,
    "aten.flatten.using_ints": lambda a: _A.flatten.using_ints(a, 1) * 2,
    # declared keep-whole, yet export decomposes them before the core's keep_ops apply
    "aten.hardshrink.default": lambda a: torch.nn.functional.hardshrink(a),
    "aten.softshrink.default": lambda a: torch.nn.functional.softshrink(a),
    "aten.lift_fresh_copy.default": lambda a: _A.lift_fresh_copy.default(a) * 2,
    "aten.max_pool2d.default": lambda a: _A.max_pool2d.default(a, [2, 2]),
    "aten.relu6.default": lambda a: _A.relu6.default(a),
    "aten.reshape.default": lambda a: _A.reshape.default(a, [2, 48]) * 2,
    "aten.rsub.Scalar": lambda a: _A.rsub.Scalar(a, 1.5),
    "aten.split.Tensor": lambda a: _A.split.Tensor(a, 2, 2)[0] * 2,
    "aten.square.default": lambda a: _A.square.default(a),
    "aten.squeeze.default": lambda a: _A.squeeze.default(a[:1]) * 2,
    "aten.squeeze.dim": lambda a: _A.squeeze.dim(a[:, :1], 1) * 2,
    "aten.sum.default": lambda a: _A.sum.default(a),
    "aten.t.default": lambda a: _A.t.default(a[0, 0]) * 2,
    "aten.transpose.int": lambda a: _A.transpose.int(a, 1, 2) * 2,
}


@pytest.mark.parametrize("precision", ["int8", "a16w8"])
def test_every_claimable_op_has_a_conformance_case(precision):
    """The table is the same for every target (U55 / U85 differences are checks), so int8 and a16w8 cover
    U55 and U85; the cases come from the corpus or conformance_cases.py."""
    ops = [op for op in rules.ops_at(precision) if op not in DECOMPOSED_AWAY]
    assert testing.ops_without_conformance_case("arm_ethos", ops) == []


@pytest.mark.parametrize("op", sorted(DECOMPOSED_AWAY))
def test_ops_without_a_case_never_reach_claim(op):
    ep = testing.capture("arm_ethos", Fn(DECOMPOSED_AWAY[op]), (_X,))
    assert op not in {op_name(n) for n in ep.graph.nodes if n.op == "call_function"}


def test_contributed_cases_reach_their_op():
    """A case is about its op only if the captured program holds it."""
    from delegate_sdk_arm_ethos.conformance_cases import cases

    for case in cases():
        torch.manual_seed(0)
        args = tuple(torch.rand(i.shape) + 1.05 for i in case.samples[0].inputs)
        ep = testing.capture("arm_ethos", case.module(), args)
        assert case.op in {op_name(n) for n in ep.graph.nodes if n.op == "call_function"}, case.id
