"""Hosted ops on qnn: ops QNN HTP refuses run on ONNX Runtime's CPU provider in the same session, so their
neighbours stay one partition; counted apart, and only ever the nodes claimed as hosted."""

from __future__ import annotations

import pytest
import torch

import delegate_sdk as ds
from delegate_sdk.types import HOSTED_META
from delegate_sdk_qnn import plugin
from delegate_sdk_qnn.testing import capture

pytestmark = pytest.mark.slow


class ErfProd(torch.nn.Module):
    """Two linears around erf and prod, both of which QNN HTP refuses (no Erf builder; ReduceProd rejected)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.b(torch.erf(self.a(x)) * torch.prod(x, 1, keepdim=True))


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_hosted_ops_join_the_partition_and_run_on_the_cpu_provider(precision, tmp_path):
    torch.manual_seed(0)
    m, x = ErfProd().eval(), torch.randn(2, 8)
    calib = [(torch.randn(2, 8),) for _ in range(8)]
    kw = {"options": {"qnn": {"precision": precision}}, "calibration": calib}
    off = ds.lower(m, (x,), ["qnn"], **kw).summary()
    assert len(off.partitions) == 2 and off.nodes_hosted == 0
    assert sorted(f.op for f in off.fallback) == ["aten.erf.default", "aten.prod.dim_int"]
    prog = ds.lower(m, (x,), ["qnn"], hosted_ops=True, **kw)
    s = prog.summary()
    assert len(s.partitions) == 1 and not s.fallback
    assert s.nodes_hosted == 2 and s.nodes_accelerated == s.nodes_total - 2
    with torch.no_grad():
        ref, got = m(x), prog(x)
    tol = 1e-3 if precision == "fp16" else 0.05
    assert (got - ref).abs().max() <= tol * ref.abs().max()
    prog.save(tmp_path / "m.dsdk")
    with torch.no_grad():
        assert torch.equal(ds.load(tmp_path / "m.dsdk")(x), got)


def test_an_accelerated_claim_qnn_leaves_to_the_cpu_is_a_compile_error():
    """Only prod is marked hosted: erf, claimed as accelerated by a (deliberately wrong) claim, would run on
    the CPU provider; the compiler refuses to pass that off as HTP work."""
    ep = capture(ErfProd(), (torch.randn(2, 8),))
    for n in ep.graph.nodes:
        if n.target is torch.ops.aten.prod.dim_int:
            n.meta[HOSTED_META] = True
    with pytest.raises(RuntimeError, match=r"left nodes claimed as accelerated to the CPU provider: Erf \(erf\)"):
        plugin.preprocess(ep, {"precision": "fp16"}, None)
