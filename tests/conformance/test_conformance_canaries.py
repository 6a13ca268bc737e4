"""Proof the suite can fail: deliberately wrong plugins, each caught by conform with the right outcome.

Every test here runs real ``delegate-sdk conform`` machinery: worker processes, the core's lower -> save
-> load -> run, the tolerance policy. Selections (``pattern``) are kept small so the module stays fast.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from delegate_sdk.conformance import run_conformance

pytestmark = pytest.mark.usefixtures("canaries_env")


def outcomes(report) -> dict[str, str]:
    return {r.id: r.outcome for r in report.cases}


def details(report) -> dict[str, str]:
    return {r.id: r.detail for r in report.cases}


def test_faithful_canary_passes_through_the_cli_with_reports(tmp_path):
    from delegate_sdk.cli import main

    pattern = r"^op/(add|relu)/(normal|edge|dynamic|noncontig)$|^model/mlp/normal$|^op/canary_good_hardswish/normal"
    res = CliRunner().invoke(main, ["conform", "--plugin", "canary_good", "-k", pattern,
                                    "--jobs", "2", "--report-dir", str(tmp_path), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "no unexpected results" in res.output
    d = json.loads((tmp_path / "report.json").read_text())
    assert d["schema"] == "delegate-sdk/conformance-report/v1"
    assert d["plugin"] == {"name": "canary_good", "version": "0.1-canary", "available": True}
    assert d["seed"] == 3 and d["precision"] == "fp32"
    assert d["summary"] == {"total": 10, "by_outcome": {"PASS": 10}, "ops_passed_fully_delegated": [
        "aten.add.Tensor", "aten.clamp.default", "aten.relu.default"]}
    assert "3 distinct ops pass fully delegated" in res.output
    assert "op/canary_good_hardswish/normal" in {c["id"] for c in d["cases"]}  # contributed by the plugin
    for c in d["cases"]:
        assert c["nodes_delegated"] == c["nodes_total"] > 0
        assert c["tolerance"]["kind"] in ("float", "sqnr") and c["metrics"]["max_ulp"] is not None
    assert ET.parse(tmp_path / "junit.xml").getroot().find("testsuite").get("failures") == "0"
    md = (tmp_path / "report.md").read_text()
    assert "| PASS | 10 |" in md and "3 distinct ops pass fully delegated: `aten.add.Tensor`" in md


def test_off_by_one_lsb_is_caught_and_faithful_int8_passes():
    rep = run_conformance("canary_lsb", pattern=r"^op/(add|conv2d)/(normal|edge)$", jobs=2)
    got = outcomes(rep)
    assert got["op/add/normal"] == got["op/conv2d/normal"] == "FAIL_MISMATCH"
    assert "systematic offset" in details(rep)["op/conv2d/normal"]
    assert got["op/add/edge"] == "SKIP"  # edge values are not run at int8
    r = next(r for r in rep.cases if r.id == "op/add/normal")
    assert r.tolerance["kind"] == "quant" and r.tolerance["reference"] is True
    assert 1.0 < r.metrics["max_lsb"] <= 1.5 and "max_ulp" not in r.metrics
    good = run_conformance("canary_good_int8", pattern=r"^op/conv2d/normal$", jobs=1)
    assert outcomes(good) == {"op/conv2d/normal": "PASS"}
    assert good.cases[0].metrics["max_lsb"] <= 0.5 + 1e-3


def test_wrong_layout_is_caught_and_the_model_bisected():
    rep = run_conformance("canary_layout", pattern=r"^op/conv2d/normal$|^model/fallback_mix/normal$", jobs=2)
    got = outcomes(rep)
    assert got == {"op/conv2d/normal": "FAIL_MISMATCH", "model/fallback_mix/normal": "FAIL_MISMATCH"}
    model = details(rep)["model/fallback_mix/normal"]
    assert "first diverging partition p0" in model
    assert "first diverging node: convolution" in model


def test_nan_replaced_by_zero_is_caught():
    rep = run_conformance("canary_nan_to_zero", pattern=r"^op/log/(normal|edge)$", jobs=1)
    assert outcomes(rep) == {"op/log/normal": "PASS", "op/log/edge": "FAIL_MISMATCH"}
    assert "expected nan, got 0" in details(rep)["op/log/edge"]


def test_claim_then_fail_to_compile_is_a_contract_failure():
    rep = run_conformance("canary_claim_fail", pattern=r"^op/(sin|cos)/normal$", jobs=1)
    assert outcomes(rep) == {"op/cos/normal": "PASS", "op/sin/normal": "FAIL_CONTRACT"}
    assert "failed to compile" in details(rep)["op/sin/normal"]


def test_abort_is_a_crash_and_the_run_goes_on():
    rep = run_conformance("canary_abort", pattern=r"^op/(add|cos)/(normal|edge)$", jobs=1)
    assert outcomes(rep) == {"op/add/normal": "PASS", "op/add/edge": "PASS", "op/cos/normal": "CRASH",
                             "op/cos/edge": "CRASH"}
    assert "SIGABRT" in details(rep)["op/cos/normal"]


def test_wrong_output_count_is_a_contract_failure_and_expectations_apply(tmp_path):
    from delegate_sdk.cli import main

    exp = tmp_path / "expectations.toml"
    exp.write_text('[[expect]]\ncase = "op/sigmoid/*"\noutcome = "FAIL_CONTRACT"\nreason = "known: extra output"\n\n'
                   '[[expect]]\ncase = "op/add/normal"\noutcome = "FAIL_MISMATCH"\nreason = "stale entry"\n')
    out = tmp_path / "rep"
    args = ["conform", "--plugin", "canary_wrong_count", "-k", r"^op/(sigmoid|add)/normal$", "--jobs", "1",
            "--report-dir", str(out)]
    res = CliRunner().invoke(main, args + ["--expectations", str(exp)])
    assert res.exit_code == 0, res.output  # XFAIL and XPASS are expected results without --strict
    d = {c["id"]: c for c in json.loads((out / "report.json").read_text())["cases"]}
    assert d["op/sigmoid/normal"]["outcome"] == "XFAIL"  # XFAIL only when the outcome was FAIL_CONTRACT
    assert "returned 2 output(s), expected 1" in d["op/sigmoid/normal"]["detail"]
    assert d["op/add/normal"]["outcome"] == "XPASS"


def test_hang_is_a_timeout_and_the_run_goes_on():
    rep = run_conformance("canary_hang", pattern=r"^op/(exp|add)/normal$", jobs=1, timeout=15)
    assert outcomes(rep) == {"op/add/normal": "PASS", "op/exp/normal": "TIMEOUT"}


def test_wrong_dtype_is_a_contract_failure_and_conform_exits_1(tmp_path):
    from delegate_sdk.cli import main

    res = CliRunner().invoke(main, ["conform", "--plugin", "canary_wrong_dtype", "-k", r"^op/tanh/normal$",
                                    "--jobs", "1", "--option", "canary_wrong_dtype.lsb_offset=0",
                                    "--report-dir", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "FAIL_CONTRACT" in res.output and "unexpected results (1)" in res.output
    case = json.loads((tmp_path / "report.json").read_text())["cases"][0]
    assert case["outcome"] == "FAIL_CONTRACT" and "float64" in case["detail"]


def test_bad_arguments_are_clear_errors():
    from delegate_sdk.cli import main

    r = CliRunner().invoke(main, ["conform", "--plugin", "canary_good", "--option", "other.x=1"])
    assert r.exit_code != 0 and "for backend 'other'" in r.output
    r = CliRunner().invoke(main, ["conform", "--plugin", "canary_good", "--precision", "int8"])
    assert r.exit_code != 0 and "does not support precision 'int8'" in r.output
    r = CliRunner().invoke(main, ["conform", "--plugin", "canary_good", "--shard", "5/4"])
    assert r.exit_code != 0 and "1 <= I <= N" in r.output


def test_run_conform_helper_accepts_faithful_and_rejects_wrong_plugins(tmp_path):
    """delegate_sdk.testing is what plugins' CI uses for its quick subset: it must not wave a fault through."""
    from delegate_sdk.testing import run_conform

    good = run_conform("canary_good", ["-k", r"^op/(add|relu)/normal$", "--jobs", "1"], tmp_path / "good")
    good.assert_clean(min_pass=2)
    assert good.passed_ops() == {"aten.add.Tensor", "aten.relu.default"}
    with pytest.raises(AssertionError, match="only 2 samples passed"):
        good.assert_clean(min_pass=3)  # a selection smaller than promised is not clean
    with pytest.raises(AssertionError):
        good.assert_quick_subset(min_pass=2, min_ops=2)  # no model case in the selection
    bad = run_conform("canary_lsb", ["-k", r"^op/add/normal$", "--jobs", "1"], tmp_path / "bad")
    assert bad.exit_code == 1 and bad.outcomes["FAIL_MISMATCH"] == 1
    with pytest.raises(AssertionError, match="FAIL_MISMATCH"):
        bad.assert_clean()
