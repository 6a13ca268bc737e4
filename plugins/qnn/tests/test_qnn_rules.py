"""Claim rules: no compilation, just which nodes the QNN plugin takes and the reason for the rest."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from delegate_sdk import testing as kit
from delegate_sdk.types import ReasonCode
from delegate_sdk_qnn.testing import Fn


def claims_for(model, args, precision="int8"):
    """The claim answer (the kit checks it names every candidate once, each refusal with a reason) and the
    candidates by name."""
    result = kit.claim("qnn", model, args, precision=precision)
    nodes = {n.name: n for n in result.program.graph.nodes if n.name in set(result.candidates)}
    return result.claims, nodes


def refusal_of(claims, op_prefix, nodes):
    rs = [r for r in claims.refused if str(nodes[r.node].target).startswith(op_prefix)]
    assert rs, f"no refusal for {op_prefix}; refused: {[(r.node, r.message) for r in claims.refused]}"
    return rs[0]


def test_conv_net_fully_claimed():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 4))
    c, _ = claims_for(m, (torch.randn(1, 3, 16, 16),))
    assert not c.refused


@pytest.mark.parametrize("dim,ok", [(-1, True), (2, True), (1, False)])
def test_softmax_last_dim_only(dim, ok):
    c, nodes = claims_for(Fn(lambda s, x: x.softmax(dim)), (torch.randn(2, 4, 8),))
    if ok:
        assert not c.refused
    else:
        r = refusal_of(c, "aten._softmax", nodes)
        assert r.code == ReasonCode.ATTR and "last dim" in r.message


def test_log_softmax_last_dim_only():
    c, nodes = claims_for(Fn(lambda s, x: x.log_softmax(0)), (torch.randn(2, 4, 8),))
    assert refusal_of(c, "aten._log_softmax", nodes).code == ReasonCode.ATTR


def test_layer_norm_last_dim_only():
    c, _ = claims_for(nn.LayerNorm(8), (torch.randn(2, 4, 8),))
    assert not c.refused
    c, nodes = claims_for(nn.LayerNorm((4, 8)), (torch.randn(2, 4, 8),))
    r = refusal_of(c, "aten.native_layer_norm", nodes)
    assert r.code == ReasonCode.ATTR and "last dim" in r.message


def test_pooling_without_dilation():
    c, nodes = claims_for(Fn(lambda s, x: F.max_pool2d(x, 2, dilation=2)), (torch.randn(1, 4, 9, 9),))
    r = refusal_of(c, "aten.max_pool2d_with_indices", nodes)
    assert r.code == ReasonCode.ATTR and "dilation" in r.message
    c, _ = claims_for(Fn(lambda s, x: F.max_pool2d(x, 3, 2, 1)), (torch.randn(1, 4, 9, 9),))
    assert not c.refused


def test_max_pool_indices_refused():
    c, nodes = claims_for(Fn(lambda s, x: F.max_pool2d(x, 2, return_indices=True)[1]), (torch.randn(1, 4, 8, 8),))
    assert c.refused


def test_depthwise_conv_2d_only():
    dw3 = nn.Conv3d(4, 4, 3, padding=1, groups=4)
    c, nodes = claims_for(dw3, (torch.randn(1, 4, 4, 6, 6),))
    r = refusal_of(c, "aten.convolution", nodes)
    assert r.code == ReasonCode.ATTR and "depthwise" in r.message
    c, _ = claims_for(nn.Conv2d(4, 4, 3, padding=1, groups=4), (torch.randn(1, 4, 6, 6),))
    assert not c.refused


def test_float64_refused():
    c, nodes = claims_for(Fn(lambda s, x: x * 2), (torch.randn(2, 4, dtype=torch.float64),))
    r = refusal_of(c, "aten.mul", nodes)
    assert r.code == ReasonCode.DTYPE and "float64" in r.message


def test_int64_only_as_indices():
    emb = Fn(lambda s, i: s.e(i), e=nn.Embedding(10, 8))
    c, _ = claims_for(emb, (torch.randint(0, 10, (2, 5)),))
    assert not c.refused  # int64 indices are narrowed to int32 safely
    c, nodes = claims_for(Fn(lambda s, i: i * 3 + 1), (torch.randint(0, 10, (2, 5)),))
    r = refusal_of(c, "aten.mul", nodes)
    assert r.code == ReasonCode.DTYPE and "int64" in r.message


def test_rank_limits():
    c, nodes = claims_for(Fn(lambda s, x: x + 1), (torch.randn(2, 2, 2, 2, 2, 2),))
    r = refusal_of(c, "aten.add", nodes)
    assert r.code == ReasonCode.RANK
    c, _ = claims_for(Fn(lambda s, x: x + 1), (torch.randn(2, 2, 2, 2, 3),))
    assert not c.refused  # elementwise add is fine at rank 5
    c, nodes = claims_for(Fn(lambda s, x: torch.tanh(x)), (torch.randn(2, 2, 2, 2, 3),))
    assert refusal_of(c, "aten.tanh", nodes).code == ReasonCode.RANK


def test_unsupported_op_has_reason():
    c, nodes = claims_for(Fn(lambda s, x: torch.erf(x)), (torch.randn(2, 8),))
    r = refusal_of(c, "aten.erf", nodes)
    assert r.code == ReasonCode.OP


def test_attention_masks_by_precision():
    q = torch.randn(1, 2, 8, 16)
    causal = Fn(lambda s, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    c, nodes = claims_for(causal, (q, q, q), precision="int8")
    assert refusal_of(c, "aten.scaled_dot_product_attention", nodes).code == ReasonCode.QUANT
    c, _ = claims_for(causal, (q, q, q), precision="fp16")
    assert not c.refused
    plain = Fn(lambda s, q, k, v: F.scaled_dot_product_attention(q, k, v))
    c, _ = claims_for(plain, (q, q, q), precision="int8")
    assert not c.refused


def test_inf_mask_not_quantized():
    m = Fn(lambda s, x: x.masked_fill(x < 0, float("-inf")).softmax(-1))
    c, nodes = claims_for(m, (torch.randn(2, 8),), precision="int8")
    assert any(r.code == ReasonCode.QUANT for r in c.refused)
    c, nodes = claims_for(m, (torch.randn(2, 8),), precision="fp16")
    # fp16 takes the -inf fill; the constant itself is made on the host
    assert [nodes[r.node].target for r in c.refused] == [torch.ops.aten.scalar_tensor.default]


def test_asin_not_in_fp16():
    m = Fn(lambda s, x: torch.asin(x))
    c, nodes = claims_for(m, (torch.rand(2, 8) - 0.5,), precision="fp16")
    assert refusal_of(c, "aten.asin", nodes).code == ReasonCode.PRECISION
    c, _ = claims_for(m, (torch.rand(2, 8) - 0.5,), precision="int8")
    assert not c.refused


def test_float_to_int_cast_refused():
    c, nodes = claims_for(Fn(lambda s, x: (x * 2).to(torch.int32)), (torch.randn(2, 8),))
    assert refusal_of(c, "aten._to_copy", nodes).code == ReasonCode.DTYPE


@pytest.mark.parametrize("fn,op,refused_at", [
    (lambda s, x: torch.ceil(x), "aten.ceil", ("int8", "a16w8")),
    (lambda s, x: x.cumsum(-1), "aten.cumsum", ("int8", "a16w8")),
    (lambda s, x: torch.where(x == 0.5, x, -x), "aten.eq", ("int8", "a16w8")),
    (lambda s, x: torch.log(x.abs() + 1), "aten.log", ("a16w8",)),
])
def test_quantized_kernel_refusals(fn, op, refused_at):
    for precision in ("int8", "a16w8", "fp16"):
        c, nodes = claims_for(Fn(fn), (torch.randn(2, 8),), precision=precision)
        mine = [r for r in c.refused if str(nodes[r.node].target).startswith(op)]
        if precision in refused_at:
            assert mine and mine[0].code == ReasonCode.QUANT and precision in mine[0].message
        else:
            assert not mine


def test_cumsum_last_dim_only():
    c, nodes = claims_for(Fn(lambda s, x: x.cumsum(1)), (torch.randn(2, 8, 4),), precision="fp16")
    assert refusal_of(c, "aten.cumsum", nodes).code == ReasonCode.ATTR
