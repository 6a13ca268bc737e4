"""Hosted ops: with ``hosted_ops`` on, what XNNPACK refuses runs on ExecuTorch's portable kernels inside the
same ``.pte``, so partitions merge; off, nothing changes."""

from __future__ import annotations

import pytest
import torch
from delegate_sdk_xnnpack.hosting import has_portable_kernel, hostable
from torch import nn

import delegate_sdk
from delegate_sdk.conformance import run_conformance

pytestmark = pytest.mark.slow


def encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
    return layer.eval(), torch.randn(1, 8, 32)


def test_hosted_ops_merge_the_encoder_into_one_partition_and_are_counted_apart(tmp_path):
    model, x = encoder()
    with torch.no_grad():
        ref = model(x)
    plain = delegate_sdk.lower(model, (x,), ["xnnpack"])
    ps = plain.summary()
    assert len(ps.partitions) > 1 and ps.nodes_hosted == 0 and ps.fallback  # layer norm & mask logic on eager
    prog = delegate_sdk.lower(model, (x,), ["xnnpack"], hosted_ops=True)
    s = prog.summary()
    assert len(s.partitions) == 1 and not s.fallback
    assert s.nodes_hosted > 0 and s.nodes_accelerated == ps.nodes_delegated  # the same accelerated nodes
    ops = s.partitions[0].op_counts
    assert any(k.startswith("portable:") for k in ops) and any(not k.startswith("portable:") for k in ops)
    assert torch.allclose(prog(x), ref, atol=1e-5) and torch.allclose(plain(x), ref, atol=1e-5)
    prog.save(tmp_path / "enc.dsdk")
    again = delegate_sdk.load(tmp_path / "enc.dsdk")
    assert again.summary().nodes_hosted == s.nodes_hosted and torch.allclose(again(x), ref, atol=1e-5)


def test_hosting_needs_a_portable_kernel_and_fp32():
    assert has_portable_kernel(torch.ops.aten.native_layer_norm.default)
    assert has_portable_kernel(torch.ops.aten.expand.default)  # a view: runs as expand_copy
    assert not has_portable_kernel(torch.ops.aten.erfinv.default)
    model, x = encoder()
    q = delegate_sdk.inspect(model, (x,), ["xnnpack"], options={"xnnpack": {"precision": "int8"}},
                             hosted_ops=True)
    assert q.nodes_hosted == 0  # int8: nothing hosted (the quantizer would leave hosted ops unquantized)
    ep = torch.export.export(nn.Flatten(0).eval(), (torch.randn(0, 3),)).run_decompositions()
    node = next(n for n in ep.graph.nodes if n.op == "call_function")
    assert not hostable(node)  # zero-size


def test_conformance_counts_hosted_nodes_as_not_accelerated():
    pattern = r"^model/transformer_encoder/normal$"
    off = run_conformance("xnnpack", pattern=pattern, jobs=1)
    on = run_conformance("xnnpack", pattern=pattern, jobs=1, hosted_ops=True)
    (a,), (b,) = off.cases, on.cases
    assert a.outcome == "PASS_PARTIAL" and "fell back to eager" in a.detail and not a.nodes_hosted
    assert b.outcome == "PASS_PARTIAL" and "ran hosted on the backend's CPU" in b.detail
    assert b.nodes_hosted > 0 and b.nodes_delegated == b.nodes_total
    assert on.hosted_ops is True and "--hosted-ops" in on.command
