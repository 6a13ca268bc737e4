"""Per-layer error localisation: a backend that is wrong in one place is found there, by partition and by
module, and keeping that module off it meets the target; skip_nodes by module path; cut_at_modules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from delegate_sdk import hookimpl
from delegate_sdk.comparison import compare
from delegate_sdk.errors import UsageError
from delegate_sdk.layers import localise
from delegate_sdk.lowering import inspect, lower
from dsdk_test_plugins.ir_backend import ELEMENTWISE, LINEAR, IRBackend

OPS = LINEAR | ELEMENTWISE


class LossyTanh(IRBackend):
    """Exact everywhere except partitions holding a tanh, whose outputs come back 1% too large (a bad LUT)."""

    @hookimpl
    def preprocess(self, program, options, calibration):
        cd = super().preprocess(program, options, calibration)
        cd.meta["lossy"] = any(getattr(n.target, "__name__", "") == "tanh.default" for n in program.graph.nodes)
        return cd

    @hookimpl
    def init(self, blob, meta, options, sections):
        return super().init(blob, meta, options, sections), bool(meta.get("lossy"))

    @hookimpl
    def execute(self, handle, inputs):
        inner, lossy = handle
        out = super().execute(inner, inputs)
        return [t * 1.01 for t in out] if lossy else out


class Block(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(16, 16), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.middle, self.last = Block(nn.ReLU()), Block(nn.Tanh()), Block(nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.middle(self.first(x)))


@pytest.fixture
def lossy(registry):
    registry.register(LossyTanh("npu", OPS), "npu")
    return registry


def _calls(n: int) -> list:
    g = torch.Generator().manual_seed(7)
    return [((torch.randn(4, 16, generator=g),), {}) for _ in range(n)]


def test_the_module_with_the_error_is_found_and_keeping_it_off_meets_the_target(lossy):
    torch.manual_seed(0)
    net, x = Net().eval(), torch.randn(4, 16)
    rep = localise(net, (x,), ["npu"], eval_inputs=_calls(2), target_db=60, registry=lossy)
    # one partition as lowered: its error is the model's, and it names the three blocks
    (part,) = rep.partitions
    assert part.backend == "npu" and part.modules == ["first", "middle", "last"]
    assert rep.sqnr_db is not None and 20 < rep.sqnr_db < 60
    assert part.local_sqnr_db == pytest.approx(rep.sqnr_db, abs=3)
    # by module: only the block with the tanh adds error of its own
    by = {m.module: m for m in rep.modules}
    assert set(by) == {"first", "middle", "last"}
    assert rep.modules[0].module == "middle" and 20 < rep.modules[0].local_sqnr_db < 60
    assert by["first"].local_sqnr_db is None and by["last"].local_sqnr_db is None  # exact
    assert by["middle"].nodes >= 3
    # keeping it on eager meets the target (the rest is exact)
    assert rep.skip == ["middle"] and rep.skip_sqnr_db is None and rep.target_met
    assert rep.to_json()["skip"] == ["middle"]


def test_an_error_passed_on_is_told_apart_from_an_error_made(lossy):
    """With partitions cut at modules, the block after the lossy one inherits its error in the run but adds
    none alone."""
    net, x = Net().eval(), torch.randn(4, 16)
    prog = lower(net, (x,), ["npu"], registry=lossy, cut_at_modules=["first", "middle", "last"])
    from delegate_sdk.layers import partition_errors

    rep = partition_errors(prog, prog.source, _calls(2))
    assert [p.modules[0].split(".")[0] for p in rep.partitions] == ["first", "middle", "last"]
    first, middle, last = rep.partitions
    assert first.sqnr_db is None and first.local_sqnr_db is None
    assert middle.local_sqnr_db is not None and middle.local_sqnr_db < 60
    assert last.sqnr_db is not None and last.sqnr_db < 60 and last.local_sqnr_db is None


def test_skip_nodes_takes_module_paths_and_names_a_typo(lossy):
    net, x = Net().eval(), torch.randn(4, 16)
    plan = inspect(net, (x,), ["npu"], registry=lossy, skip_nodes=["middle"])
    eager = {n.node for n in plan.fallback}
    assert eager and all(r.code.value == "skipped" for n in plan.fallback for r in n.reasons)
    assert len(plan.partitions) == 2
    with pytest.raises(UsageError, match=r"'midle', which is neither a node nor a module path; did you mean middle"):
        inspect(net, (x,), ["npu"], registry=lossy, skip_nodes=["midle"])


def test_compare_per_layer_reports_where_the_error_comes_from(lossy, tmp_path):
    net, x = Net().eval(), torch.randn(4, 16)
    from delegate_sdk.comparison import Policy

    c = compare(net, (x,), ["npu"], calls=2, eval_inputs=2, registry=lossy, per_layer=True,
                policy=Policy(min_sqnr_db=60))
    assert c.per_layer_config == "npu:fp32" and c.per_layer is not None
    assert c.per_layer.modules[0].module == "middle" and c.per_layer.skip == ["middle"]
    paths = c.write_reports(tmp_path)
    assert "Where the error of `npu:fp32` comes from" in paths["md"].read_text()
    page = paths["html"].read_text()
    assert page.count("<svg") == 2 and "per-layer error" in page
    d = c.to_json()["per_layer"]
    assert d["config"] == "npu:fp32" and d["modules"][0]["module"] == "middle" and math.isfinite(d["sqnr_db"])
