"""compare: one row per configuration, a failing one included, a recommendation under a stated policy, and
reports (JSON, Markdown, a self-contained HTML page)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from delegate_sdk.comparison import Config, ConfigResult, OutputAccuracy, Policy, compare
from dsdk_test_plugins.ir_backend import ELEMENTWISE, LINEAR, IRBackend
from dsdk_test_plugins.models import KeywordNet, SmallCNN


@pytest.fixture
def backends(registry):
    registry.register(IRBackend("lin", LINEAR), "lin")
    registry.register(IRBackend("elem", ELEMENTWISE), "elem")
    registry.register(IRBackend("broken", LINEAR, fail_preprocess=True), "broken")
    return registry


def test_compare_rows_recommendation_and_reports(backends, tmp_path):
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), torch.randn(1, 3, 16, 16)
    c = compare(model, (x,), ["lin", "elem", "lin,elem", "broken"], calls=3, eval_inputs=2, registry=backends)
    rows = {r.label: r for r in c.results}
    assert list(rows) == ["lin:fp32", "elem:fp32", "lin:fp32>elem:fp32", "broken:fp32"]
    assert not rows["broken:fp32"].ok and "deliberate compile failure" in rows["broken:fp32"].error
    both, lin, elem = rows["lin:fp32>elem:fp32"], rows["lin:fp32"], rows["elem:fp32"]
    assert lin.macs_total > 0 and lin.macs_fraction == 1.0 and elem.macs_fraction == 0.0
    assert both.nodes_delegated > lin.nodes_delegated and both.coverage["lin"] == lin.nodes_delegated
    assert all(o.sqnr_db is None for o in lin.outputs)  # the test engine is exact
    assert elem.refusals and elem.refusals[0][1] == "op"
    assert lin.latency_ms["median"] > 0 and lin.latency_ms["p90"] >= lin.latency_ms["median"]
    assert lin.artifact_bytes > 0 and c.eager_latency_ms["median"] > 0
    # most MACs, then lower latency: lin or lin>elem (both delegate all MACs), never elem or the broken one
    assert c.recommendation.config in ("lin:fp32", "lin:fp32>elem:fp32")
    assert "100% of the MACs" in c.recommendation.reason
    paths = c.write_reports(tmp_path)
    d = json.loads(paths["json"].read_text())
    assert d["schema"] == "delegate-sdk/comparison/v1" and len(d["results"]) == 4
    assert d["results"][3]["ok"] is False and d["recommendation"]["config"] == c.recommendation.config
    page = paths["html"].read_text()
    # self-contained: the charts are inline SVG, nothing is loaded from anywhere
    assert "<svg" in page and "broken:fp32" in page
    assert not any(ref in page for ref in ('src="http', 'href="http', "<link", "<script src", "xlink:href=\"http"))
    assert "| `broken:fp32` | failed:" in paths["md"].read_text()


def test_compare_a_model_called_with_keywords(backends):
    torch.manual_seed(0)
    kwargs = {"input_ids": torch.randn(2, 4, 6), "attention_mask": torch.ones(2, 4)}
    c = compare(KeywordNet().eval(), (), ["lin,elem"], example_kwargs=kwargs, calls=2, eval_inputs=2,
                registry=backends)
    (r,) = c.results
    assert r.ok and [o.path for o in r.outputs] == ["output['hidden']", "output['pooled']"]
    assert r.outputs[1].top1_agreement == 1.0  # [batch, classes]-shaped: arg-max compared


def _row(label, sqnr, macs, latency, ok=True):
    r = ConfigResult(Config.parse(label), "" if ok else "boom", macs_total=100, macs_delegated=macs)
    r.outputs = [OutputAccuracy("output", sqnr, 0.0)]
    r.latency_ms = {"median": latency, "p90": latency}
    return r


def test_compare_a_model_saved_as_a_pt2_file(backends, tmp_path):
    """As `delegate-sdk compare net.pt2` does: an ExportedProgram's module refuses eval(), which compare once
    called on it."""
    from delegate_sdk.capture import load_model_ref

    torch.manual_seed(0)
    model, x = SmallCNN().eval(), torch.randn(1, 3, 16, 16)
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "net.pt2"))
    ref = load_model_ref(str(tmp_path / "net.pt2"))
    c = compare(ref.model, ref.args, ["lin", "elem"], example_kwargs=ref.kwargs, calls=2, eval_inputs=2,
                registry=backends)
    assert [r.ok for r in c.results] == [True, True]
    assert c.results[0].macs_fraction == 1.0 and c.recommendation.config == "lin:fp32"


def test_policy_accuracy_first_then_macs_then_latency():
    p = Policy(min_sqnr_db=30)
    rows = [_row("a:int8", 25.0, 100, 1.0), _row("b:int8", 35.0, 90, 2.0), _row("c:fp16", 40.0, 90, 1.5),
            _row("d:fp32", None, 50, 0.5), _row("e:int8", 50.0, 100, 0.1, ok=False)]
    rec = p.choose(rows)
    assert rec.config == "c:fp16" and "SQNR 40.0 dB" in rec.reason and "lowest" in rec.reason
    none = Policy(min_sqnr_db=60).choose(rows[:3])
    assert none.config is None and "the most accurate is c:fp16 at 40.0 dB" in none.reason
    assert Policy().choose([rows[-1]]).config is None
    assert math.isclose(rows[0].macs_fraction, 1.0)


def test_the_cli_compares_and_writes_a_page(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=str(tests), COLUMNS="200",
               DELEGATE_SDK_PLUGINS="lin=dsdk_test_plugins.ir_backend:LINEAR_ONLY,"
                                    "elem=dsdk_test_plugins.ir_backend:ELEMENTWISE_ONLY")
    r = subprocess.run([sys.executable, "-m", "delegate_sdk.cli", "compare", "dsdk_test_plugins.models:small_cnn",
                        "--backends", "lin,elem", "--orders", "lin,elem", "--calls", "2", "--eval-samples", "1",
                        "--report-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "recommendation:" in r.stdout and "lin:fp32>elem:fp32" in r.stdout
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.json").exists()
    bad = subprocess.run([sys.executable, "-m", "delegate_sdk.cli", "compare", "dsdk_test_plugins.models:small_cnn",
                          "--backends", "lin", "--precision", "lin=int8"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert bad.returncode == 2 and "no precision 'int8'" in bad.stderr


def test_lower_auto_keeps_what_compare_recommends(backends, monkeypatch):
    import delegate_sdk
    import delegate_sdk.registry as reg_mod

    monkeypatch.setattr(reg_mod, "_default", backends)
    torch.manual_seed(0)
    model, x = SmallCNN().eval(), torch.randn(1, 3, 16, 16)
    prog = delegate_sdk.lower(model, (x,), "auto")
    assert {p.backend for p in prog.summary().partitions} == {"lin"}  # the only one delegating the MACs
    with torch.no_grad():
        assert torch.allclose(prog(x), model(x), atol=1e-6)
    from delegate_sdk.comparison import Policy
    from delegate_sdk.errors import UsageError

    with pytest.raises(UsageError, match="backends='auto'"):
        delegate_sdk.lower(model, (x,), "auto", policy=Policy(min_top1=1.1))


def test_an_order_may_list_one_backend_at_two_precisions(registry):
    registry.register(IRBackend("q", LINEAR, precisions=("int8", "fp32"), output_quant=True), "q")
    registry.register(IRBackend("elem", ELEMENTWISE), "elem")
    model, x = SmallCNN().eval(), torch.randn(1, 3, 16, 16)
    c = compare(model, (x,), ["q:int8,q:fp32,elem"], calls=2, eval_inputs=1, registry=registry,
                options={"q": {"precision": "fp32"}})  # the entries' precisions win over an option's
    (row,) = c.results
    assert row.ok, row.error
    assert row.label == "q:int8>q:fp32>elem:fp32" and row.coverage["q"] > 0


def test_ray_workers_are_told_which_modules_define_the_models_output_types():
    """torch.export.load on a Ray worker needs transformers' ModelOutput registered as a pytree node."""
    from transformers.modeling_outputs import BaseModelOutput

    from delegate_sdk.comparison_ray import _pytree_modules

    class Wrapped(torch.nn.Module):
        def forward(self, x):
            return BaseModelOutput(last_hidden_state=x * 2)

    ep = torch.export.export(Wrapped(), (torch.randn(2, 3),))
    assert _pytree_modules(ep) == ["transformers.modeling_outputs"]
    plain = torch.export.export(torch.nn.Linear(3, 3), (torch.randn(2, 3),))
    assert _pytree_modules(plain) == []
