"""Claim rules: every candidate answered once, refusals carry the right reason code per target."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from arm_ethos_cases import Fn

from delegate_sdk import ReasonCode, testing
from delegate_sdk_arm_ethos import plugin

U55, U65, U85 = "ethos-u55-128", "ethos-u65-256", "ethos-u85-256"


def _refusal(claim_all, module, args, **kw):
    c = claim_all(module, args, **kw)
    return c.refused, set(c.claimed)


def test_every_candidate_answered_once(exported, opts):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.emb = nn.Embedding(10, 4)

        def forward(self, x, idx):
            y = self.conv(x).flatten(1)
            return torch.softmax(y, -1), self.emb(idx), (y > 0).float()

    args = (torch.randn(1, 3, 8, 8), torch.tensor([1, 2]))
    ep = exported(Net(), args)
    nodes = testing.candidates(ep)
    c = plugin.claim(ep, nodes, opts(U55))
    answered = list(c.claimed) + [r.node for r in c.refused]
    assert sorted(answered) == sorted(n.name for n in nodes)
    assert all(r.message and isinstance(r.code, ReasonCode) for r in c.refused)


def test_common_network_fully_claimed(claim_all):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, groups=8), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 4), nn.Sigmoid())
    for target in (U55, U65, U85):
        refused, claimed = _refusal(claim_all, net, (torch.randn(1, 3, 16, 16),), target=target)
        assert not refused, refused
        assert len(claimed) >= 9


@pytest.mark.parametrize("module,args,code,fragment", [
    (nn.Conv2d(2, 2, (65, 1)), (torch.randn(1, 2, 70, 4),), ReasonCode.SHAPE, "kernel height 65"),
    (nn.Conv2d(1, 1, (64, 65)), (torch.randn(1, 1, 66, 66),), ReasonCode.SHAPE, "kernel area"),
    (nn.Conv2d(4, 4, 3, stride=4), (torch.randn(1, 4, 16, 16),), ReasonCode.ATTR, "stride"),
    (Fn(lambda a: F.max_pool2d(a, 2)), (torch.randn(2, 4, 8, 8),), ReasonCode.SHAPE, "batch 1"),
    (Fn(lambda a: F.max_pool2d(a, 9, 1, 4)), (torch.randn(1, 4, 16, 16),), ReasonCode.SHAPE, "padded pooling"),
    (Fn(lambda a: F.avg_pool2d(a, 2, divisor_override=3)), (torch.randn(1, 4, 8, 8),), ReasonCode.ATTR,
     "divisor_override"),
    (Fn(lambda a: a / a.sum()), (torch.randn(4, 4),), ReasonCode.CONSTANT, "constant"),
    (nn.Conv3d(2, 2, 3), (torch.randn(1, 2, 4, 4, 4),), ReasonCode.OP, "3-D"),
    (Fn(lambda a: a.reshape(1, 1, 1, 1, 1, 1, 16)), (torch.randn(16),), ReasonCode.RANK, "rank"),
    (Fn(lambda a: a.double() * 2), (torch.randn(4),), ReasonCode.DTYPE, "float64"),
    (Fn(lambda a: F.layer_norm(a, [8])), (torch.randn(4, 8),), ReasonCode.OP, "native_layer_norm"),
])
def test_refusals(claim_all, module, args, code, fragment):
    refused, _ = _refusal(claim_all, module, args, target=U55)
    assert refused, "expected a refusal"
    hits = [r for r in refused.values() if r.code == code and fragment in r.message]
    assert hits, [(r.code, r.message) for r in refused.values()]


def test_max_pool_indices_used_is_refused(claim_all):
    refused, _ = _refusal(claim_all, Fn(lambda a: F.max_pool2d(a, 2, return_indices=True)),
                          (torch.randn(1, 2, 4, 4),))
    assert any(r.code in (ReasonCode.ATTR, ReasonCode.DTYPE) for r in refused.values())


@pytest.mark.parametrize("target,refused_expected", [(U55, True), (U65, True), (U85, False)])
def test_resize_factor_rules_per_target(claim_all, target, refused_expected):
    m = Fn(lambda a: F.interpolate(a, scale_factor=3))
    refused, _ = _refusal(claim_all, m, (torch.randn(1, 2, 4, 4),), target=target)
    assert bool(refused) == refused_expected
    if refused:
        assert next(iter(refused.values())).code == ReasonCode.ATTR


def test_u55_cannot_run_comparisons_or_bool(claim_all):
    m = Fn(lambda a, b: torch.where(a > b, a, b))
    refused, _ = _refusal(claim_all, m, (torch.randn(4), torch.randn(4)), target=U55)
    assert {r.code for r in refused.values()} <= {ReasonCode.OP, ReasonCode.DTYPE}
    assert all("U55" in r.message for r in refused.values())


def test_resize_batch_rule_on_u55(claim_all):
    m = Fn(lambda a: F.interpolate(a, scale_factor=2))
    refused, _ = _refusal(claim_all, m, (torch.randn(2, 2, 4, 4),), target=U55)
    assert [r.code for r in refused.values()] == [ReasonCode.SHAPE]
    assert not _refusal(claim_all, m, (torch.randn(2, 2, 4, 4),), target=U85)[0]


@pytest.mark.parametrize("target", [U55, U85])
def test_a16w8_precision_rules(claim_all, target):
    m = Fn(lambda a, b: torch.sigmoid(a @ b))
    refused, _ = _refusal(claim_all, m, (torch.randn(4, 8), torch.randn(8, 3)), target=target, precision="a16w8")
    if target == U55:
        assert {r.code for r in refused.values()} == {ReasonCode.PRECISION}
        assert len(refused) == 2  # the TABLE (sigmoid) and the activation x activation matmul
    else:
        assert not refused


def test_inconsistent_options_refuse_everything(exported, opts):
    """The core rejects such options before claim (validate_options); claim called anyway refuses every node."""
    ep = exported(nn.Linear(4, 4), (torch.randn(2, 4),))
    c = plugin.claim(ep, testing.candidates(ep), opts(U55, memory_mode="Dedicated_Sram"))
    assert not c.claimed and c.refused
    assert all(r.code == ReasonCode.ATTR and "memory_mode" in r.message for r in c.refused)


def test_weights_computed_from_constants_count_as_constant(claim_all):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 6))

        def forward(self, x):
            return x @ self.w.t()

    refused, claimed = _refusal(claim_all, M(), (torch.randn(3, 6),))
    assert not refused and claimed


def test_a16w8_table_functions(claim_all):
    """Smooth functions take the interpolated int16 TABLE on U85; jumps and singular slopes stay int8."""
    smooth = Fn(lambda a: torch.tanh(a) + torch.sigmoid(a))
    assert not _refusal(claim_all, smooth, (torch.randn(4, 8),), target=U85, precision="a16w8")[0]
    rough = Fn(lambda a: torch.floor(a) + torch.sqrt(a.abs()))
    refused, _ = _refusal(claim_all, rough, (torch.randn(4, 8),), target=U85, precision="a16w8")
    # the table row's per-precision reason: at a quantized precision, the op does not survive quantization
    assert {r.code for r in refused.values()} == {ReasonCode.QUANT} and len(refused) == 2
    assert all("interpolated int16 TABLE" in r.message for r in refused.values())
    softmax = Fn(lambda a: torch.softmax(a, -1))
    assert _refusal(claim_all, softmax, (torch.randn(4, 8),), target=U85, precision="a16w8")[0]
    assert not _refusal(claim_all, softmax, (torch.randn(4, 8),), target=U85, precision="int8")[0]


def test_claim_table_and_lowering_agree():
    """The table takes no op without a registered lowering, and declares every op the lowering registers."""
    from delegate_sdk_arm_ethos.lowering import LOWERABLE_OPS
    from delegate_sdk_arm_ethos.rules import rules, unlowerable_claims

    assert unlowerable_claims() == []
    assert set(LOWERABLE_OPS) <= set(rules.op_names)
    assert set(rules.keep_ops) == set(plugin.describe().keep_ops) and "aten.linear.default" in rules.keep_ops
