"""Proof the suite can fail: deliberately wrong plugins, each caught by conform with the right outcome.

Every test here runs real ``delegate-sdk conform`` machinery: worker processes, the core's lower -> save
-> load -> run, the tolerance policy. Selections (``pattern``) are kept small so the module stays fast, and
runs use one worker process (pytest-xdist fills the cores already; a second worker is only more start-up),
apart from the CLI test, whose two workers share the samples.
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
    assert "no unexpected results" in res.output and "not certified" not in res.output
    d = json.loads((tmp_path / "report.json").read_text())
    assert d["schema"] == "delegate-sdk/conformance-report/v2"
    assert d["plugin"] == {"name": "canary_good", "version": "0.1-canary", "available": True}
    assert d["seed"] == 3 and d["precision"] == "fp32" and d["runtime_checks"] is True
    assert d["precision_spec"]["kind"] == "float" and d["precision_spec"]["dtype"] == "float32"
    assert d["verdict"] == {"passed": True, "unexpected": 0, "problems": []}
    assert d["summary"] == {"total": 10, "by_outcome": {"PASS": 10}, "passed_samples": 10,
                            "ops_passed_fully_delegated": ["aten.add.Tensor", "aten.clamp.default",
                                                           "aten.relu.default"],
                            "ops_some_samples_fail": [], "ops_pass_partially_delegated": []}
    assert "3 distinct ops pass every claimed sample fully delegated" in res.output
    assert "op/canary_good_hardswish/normal" in {c["id"] for c in d["cases"]}  # contributed by the plugin
    for c in d["cases"]:
        assert c["nodes_delegated"] == c["nodes_total"] > 0
        assert c["tolerance"]["kind"] in ("float", "sqnr") and c["metrics"]["max_ulp"] is not None
        # every claimed case went through the runtime contract checks
        assert {"fresh_process", "inputs_unchanged", "outputs_not_reused"} <= set(c["checks"]), c
        assert ("sizes:3" in c["checks"]) == c["id"].endswith("/dynamic")
    assert ET.parse(tmp_path / "junit.xml").getroot().find("testsuite").get("failures") == "0"
    md = (tmp_path / "report.md").read_text()
    assert "| PASS | 10 |" in md and "3 distinct ops pass every claimed sample fully delegated: `aten.add.Tensor`" in md


def test_off_by_one_lsb_is_caught_and_faithful_int8_passes():
    rep = run_conformance("canary_lsb", pattern=r"^op/(add|conv2d)/(normal|edge)$", jobs=1)
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
    rep = run_conformance("canary_layout", pattern=r"^op/conv2d/normal$|^model/fallback_mix/normal$", jobs=1)
    got = outcomes(rep)
    assert got == {"op/conv2d/normal": "FAIL_MISMATCH", "model/fallback_mix/normal": "FAIL_MISMATCH"}
    model = details(rep)["model/fallback_mix/normal"]
    assert "first diverging partition p0" in model
    assert "first diverging node: convolution" in model


def test_nan_replaced_by_zero_is_caught_and_the_op_does_not_count_as_passing():
    rep = run_conformance("canary_nan_to_zero", pattern=r"^op/(log|clamp_tensor)/(normal|edge)$", jobs=1)
    assert outcomes(rep) == {"op/log/normal": "PASS", "op/log/edge": "FAIL_MISMATCH",
                             "op/clamp_tensor/normal": "PASS", "op/clamp_tensor/edge": "PASS"}  # finite edges
    assert "expected nan, got 0" in details(rep)["op/log/edge"]
    # one passing sample does not make the op pass: every claimed sample must
    assert rep.ops_passed() == ["aten.clamp.Tensor"] and rep.ops_some_fail() == ["aten.log.default"]
    # what a vendor needs to act on the failure: the inputs, and a command that reruns just that sample
    bad = next(r for r in rep.cases if r.id == "op/log/edge")
    assert bad.stage == "execute" and bad.inputs["edges"]["kind"] == "all" and "nan" in bad.inputs["edges"]["values"]
    assert bad.inputs["tensors"][0]["dtype"] == "float32" and bad.inputs["tensors"][0]["shape"]
    assert bad.repro.startswith("delegate-sdk conform --plugin canary_nan_to_zero --precision fp32 --seed 0")
    assert bad.repro.endswith("-k '^op/log/edge$'")


def test_claim_then_fail_to_compile_is_a_contract_failure():
    rep = run_conformance("canary_claim_fail", pattern=r"^op/(sin|cos)/normal$", jobs=1)
    assert outcomes(rep) == {"op/cos/normal": "PASS", "op/sin/normal": "FAIL_CONTRACT"}
    assert "failed to compile" in details(rep)["op/sin/normal"]


def test_abort_is_a_crash_with_its_stage_and_python_stack_and_the_run_goes_on():
    rep = run_conformance("canary_abort", pattern=r"^op/(add|cos)/(normal|edge)$", jobs=1)
    assert outcomes(rep) == {"op/add/normal": "PASS", "op/add/edge": "PASS", "op/cos/normal": "CRASH",
                             "op/cos/edge": "CRASH"}
    assert "SIGABRT" in details(rep)["op/cos/normal"]
    crash = next(r for r in rep.cases if r.id == "op/cos/normal")
    assert crash.stage == "execute" and "running the sample" in crash.detail
    assert crash.stack and crash.stack[0].startswith("plugins.py:") and crash.stack[0].endswith("in execute")


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


def test_hang_is_a_timeout_with_the_stuck_python_stack_and_the_run_goes_on():
    rep = run_conformance("canary_hang", pattern=r"^op/(exp|add)/normal$", jobs=1, timeout=15)
    assert outcomes(rep) == {"op/add/normal": "PASS", "op/exp/normal": "TIMEOUT"}
    hung = next(r for r in rep.cases if r.id == "op/exp/normal")
    # it hangs first where the artifact is first run: in the fresh process, whose stack says where
    assert hung.stage == "fresh" and "did not finish within" in hung.detail, hung.detail
    assert any(f.startswith("plugins.py:") and f.endswith("in execute") for f in hung.stack), hung.stack


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


# ----------------------------------------------------------------------------- the runtime contract


def test_outputs_reused_across_calls_are_a_contract_failure():
    rep = run_conformance("canary_alias", pattern=r"^op/(add|conv2d)/normal$|^model/mlp/normal$", jobs=1)
    assert set(outcomes(rep).values()) == {"FAIL_CONTRACT"}
    for r in rep.cases:
        assert "canary_alias" in r.detail and "partition p0" in r.detail
        assert "changed when the program was called again" in r.detail
        assert "fresh process" not in r.detail  # the fresh run agrees with the first call: not blamed


def test_input_mutation_is_a_contract_failure():
    rep = run_conformance("canary_mutate", pattern=r"^op/(add|relu)/(normal|noncontig)$", jobs=1)
    assert set(outcomes(rep).values()) == {"FAIL_CONTRACT"}
    for r in rep.cases:
        assert "execute modified its input 0" in r.detail and "program input 0" in r.detail


def test_a_false_thread_safe_claim_is_caught_and_a_true_one_passes():
    bad = run_conformance("canary_threads", pattern=r"^op/(add|mm)/normal$", jobs=1)
    assert set(outcomes(bad).values()) == {"FAIL_CONTRACT"}
    assert all("thread_safe=True" in r.detail and "from 4 threads" in r.detail for r in bad.cases)
    good = run_conformance("canary_good_threads", pattern=r"^op/(add|mm)/normal$", jobs=1)
    assert set(outcomes(good).values()) == {"PASS"}
    assert all("threads" in r.checks for r in good.cases)
    unsafe = run_conformance("canary_good", pattern=r"^op/add/normal$", jobs=1)
    assert "threads" not in unsafe.cases[0].checks  # serialised by the core: nothing to check


def test_a_blob_that_needs_a_side_file_is_not_self_contained():
    rep = run_conformance("canary_side_file", pattern=r"^op/(add|relu)/normal$", jobs=1)
    assert set(outcomes(rep).values()) == {"FAIL_CONTRACT"}
    for r in rep.cases:
        assert "not self-contained" in r.detail and "does not load in a fresh process" in r.detail
        assert "FileNotFoundError" in r.detail


def test_a_claim_that_neither_claims_nor_refuses_a_candidate_is_fail_claim():
    rep = run_conformance("canary_silent_claim", pattern=r"^op/(add|relu)/normal$", jobs=1)
    assert outcomes(rep) == {"op/add/normal": "PASS", "op/relu/normal": "FAIL_CLAIM"}
    assert "neither claimed nor refused 1 candidate node(s): relu" in details(rep)["op/relu/normal"]


def test_a_shape_specialised_runtime_is_caught_at_the_other_sizes():
    rep = run_conformance("canary_first_shape", pattern=r"^op/(add|relu)/(normal|dynamic)$", jobs=1)
    assert outcomes(rep) == {"op/add/normal": "PASS", "op/add/dynamic": "FAIL_CONTRACT",
                             "op/relu/normal": "PASS", "op/relu/dynamic": "FAIL_CONTRACT"}
    assert "shape-specialised" in details(rep)["op/add/dynamic"]
    assert "sizes:3" in next(r for r in rep.cases if r.id == "op/add/dynamic").checks


# ----------------------------------------------------------------------------- no vacuous certificate


def test_a_plugin_that_claims_nothing_gets_no_certificate(tmp_path):
    from delegate_sdk.cli import main

    res = CliRunner().invoke(main, ["conform", "--plugin", "canary_claims_nothing", "-k", r"^op/(add|relu)/normal$",
                                    "--jobs", "1", "--report-dir", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "took no node in any of the 2 samples" in res.output
    d = json.loads((tmp_path / "report.json").read_text())
    assert d["verdict"]["passed"] is False and d["summary"]["by_outcome"] == {"NOT_CLAIMED": 2}


def test_a_selection_of_no_sample_is_a_usage_error():
    from delegate_sdk.cli import main

    res = CliRunner().invoke(main, ["conform", "--plugin", "canary_good", "-k", "no-such-case"])
    assert res.exit_code == 2 and "selects no sample" in res.output


def test_min_pass_and_min_ops_let_ci_demand_coverage(tmp_path):
    from delegate_sdk.cli import main

    args = ["conform", "--plugin", "canary_nan_to_zero", "-k", r"^op/(log|clamp_tensor)/(normal|edge)$", "--jobs",
            "1"]
    res = CliRunner().invoke(main, [*args, "--min-ops", "2"])
    assert res.exit_code == 1 and "fewer than the 2 required (--min-ops)" in res.output  # log fails at edge
    res = CliRunner().invoke(main, [*args, "--expectations", str(_xfail_log_edge(tmp_path)), "--min-ops", "1",
                                    "--min-pass", "3"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, [*args, "--expectations", str(_xfail_log_edge(tmp_path)), "--min-pass", "4"])
    assert res.exit_code == 1 and "3 sample(s) passed, fewer than the 4 required (--min-pass)" in res.output


def _xfail_log_edge(tmp_path):
    p = tmp_path / "exp.toml"
    p.write_text('[[expect]]\ncase = "op/log/edge"\noutcome = "FAIL_MISMATCH"\nreason = "NaN becomes 0"\n')
    return p


# ----------------------------------------------------------------------------- precisions


def test_an_unknown_precision_name_is_refused_at_load_naming_it():
    from delegate_sdk.cli import main

    res = CliRunner().invoke(main, ["plugins", "--json"])
    assert res.exit_code == 0
    infos = {i["name"]: i for i in json.loads(res.output)}
    assert infos["canary_half"]["available"] is False
    assert "'half' is not in the core's vocabulary (did you mean 'fp16'?)" in infos["canary_half"]["unavailable_reason"]
    assert infos["canary_good"]["available"] is True  # one invalid plugin takes no other down
    res = CliRunner().invoke(main, ["conform", "--plugin", "canary_half"])
    assert res.exit_code == 2 and "'half'" in res.output


def test_a_declared_precision_is_judged_and_calibrated_as_declared():
    rep = run_conformance("canary_custom_precision", pattern=r"^op/(add|conv2d)/normal$", jobs=1)
    # its preprocess raises unless calibration data came: a quantized declaration gets it
    assert outcomes(rep) == {"op/add/normal": "PASS", "op/conv2d/normal": "PASS"}
    assert rep.precision_spec == {"name": "q8", "kind": "quantized", "dtype": "", "activation_bits": 8,
                                  "weight_bits": 8, "description": ""}
    for r in rep.cases:
        assert r.tolerance["kind"] == "quant" and r.tolerance["precision"] == "q8" and "max_lsb" in r.metrics


def test_quantized_comparisons_are_judged_against_the_reference_and_real_flips_still_fail():
    pattern = r"^op/(gt|lt|ge|argmax)/(normal|noncontig|broadcast|broadcast_rank4|rank4)$"
    good = run_conformance("canary_good_int8_qin", pattern=pattern, jobs=1)
    assert set(outcomes(good).values()) == {"PASS"}, outcomes(good)
    # quantizing the inputs flips some results against eager; the reference has the same flips
    flips = [r for r in good.cases if (r.tolerance.get("reference_differs_from_eager") or 0) > 0]
    assert flips and all(r.tolerance["against"] == "reference" for r in flips)
    bad = run_conformance("canary_bool_flip", pattern=r"^op/(gt|lt)/(normal|broadcast)$", jobs=1)
    assert set(outcomes(bad).values()) == {"FAIL_MISMATCH"}
    assert all("the reference gives" in r.detail for r in bad.cases)
