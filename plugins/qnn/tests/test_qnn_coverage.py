"""Conformance certifies only ops some case is about: every op the claim table can take has a case (the corpus's
or one of this plugin's), and each of this plugin's cases really holds its op in the program QNN is given."""

from __future__ import annotations

import pytest
import torch

from delegate_sdk import testing as kit
from delegate_sdk.conformance.sampling import build_module, example_inputs, sample_id
from delegate_sdk.support import op_name
from delegate_sdk.types import ReasonCode
from delegate_sdk_qnn import plugin, rules
from delegate_sdk_qnn.conformance_cases import cases
from delegate_sdk_qnn.options import PRECISIONS


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_claimable_op_has_a_conformance_case(precision):
    assert kit.ops_without_conformance_case("qnn", rules.rules.ops_at(precision)) == []


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.id)
def test_each_case_holds_its_op_as_qnn_captures_it(case):
    sample = case.samples[0]
    ep = kit.capture("qnn", build_module(case, 0), example_inputs(sample, sample_id(case, sample), 0, "int8"))
    assert case.op in {op_name(n) for n in ep.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("hosted_ops", [False, True])
def test_an_op_kept_whole_for_another_backend_is_refused_not_hosted(hosted_ops):
    """xnnpack keeps hardswish whole; in front of it QNN refuses the whole op (its conformance cannot reach
    it), so that the core decomposes it for QNN, and never hosts it (ONNX Runtime would put HardSwish on HTP)."""
    ep = kit.capture(None, torch.nn.Hardswish(), (torch.randn(2, 8),), keep_ops=("aten.hardswish.default",))
    (node,) = [n for n in kit.candidates(ep) if op_name(n) == "aten.hardswish.default"]
    claims = plugin.claim(ep, [node], {"precision": "int8", "hosted_ops": hosted_ops})
    assert not claims.claimed and not claims.hosted
    (refusal,) = claims.refused
    assert refusal.code == ReasonCode.OP and "decomposed" in refusal.message
