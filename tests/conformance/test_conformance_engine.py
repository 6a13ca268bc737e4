"""Unit tests of the conformance engine: corpus, sampler, tolerance policy, expectations, reports, planning.

All in-process and fast; the end-to-end runs with worker processes are in test_conformance_canaries.py.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter

import pytest
import torch

from delegate_sdk.conformance import expectations as exp
from delegate_sdk.conformance import sampling, tolerance
from delegate_sdk.conformance.cases import In, OpCase, Sample, sample_id
from delegate_sdk.conformance.corpus import builtin_cases, load_corpus
from delegate_sdk.conformance.report import SCHEMA, CaseResult, ExpectationsSource, Report, write_all
from delegate_sdk.conformance.runner import parse_shard, plan
from delegate_sdk.errors import UsageError


@pytest.fixture(scope="module")
def op_cases():
    return load_corpus().op_cases()


@pytest.fixture(scope="module")
def model_cases():
    return load_corpus().model_cases()


# ----------------------------------------------------------------------------- corpus


def test_corpus_is_loaded_under_its_own_name_not_conformance():
    mod = load_corpus()
    assert mod.__name__ == "delegate_sdk_corpus"


def test_corpus_covers_at_least_80_distinct_ops_with_three_kinds_of_samples(op_cases):
    ops = {c.op for c in op_cases}
    assert len(ops) >= 80, len(ops)
    for c in op_cases:
        kinds = {s.kind for s in c.samples}
        assert len(c.samples) >= 3 and len(kinds) >= 3, (c.id, kinds)
    kinds = Counter(s.kind for c in op_cases for s in c.samples)
    for k in ("normal", "broadcast", "edge", "noncontig", "rank", "zero_size", "dynamic", "large"):
        assert kinds[k] > 0, k


@pytest.mark.parametrize("op", [
    "aten.abs.default", "aten.add.Tensor", "aten.gelu.default", "aten.eq.Tensor", "aten.where.self",
    "aten.sum.dim_IntList", "aten.mean.dim", "aten.amax.default", "aten.amin.default", "aten.argmax.default",
    "aten.var.correction", "aten.mm.default", "aten.addmm.default", "aten.bmm.default",
    "aten.convolution.default", "aten.max_pool2d_with_indices.default", "aten.avg_pool2d.default",
    "aten._adaptive_avg_pool2d.default", "aten._native_batch_norm_legit_no_training.default",
    "aten.native_layer_norm.default", "aten.native_group_norm.default", "aten._softmax.default",
    "aten._log_softmax.default", "aten.view.default", "aten.permute.default", "aten.slice.Tensor",
    "aten.cat.default", "aten.split_with_sizes.default", "aten.squeeze.dims", "aten.unsqueeze.default",
    "aten.expand.default", "aten.constant_pad_nd.default", "aten.index_select.default", "aten.gather.default",
    "aten.embedding.default", "aten.upsample_nearest2d.vec", "aten.upsample_bilinear2d.vec",
    "aten.cumsum.default", "aten.clamp.default"])
def test_corpus_has_the_issue_s_op_families(op_cases, op):
    assert op in {c.op for c in op_cases}


def test_conv_variants_present(op_cases):
    ids = {c.id for c in op_cases}
    assert {"op/conv1d", "op/conv2d", "op/conv2d_depthwise", "op/conv_transpose2d", "op/linear",
            "op/masked_fill", "op/stack"} <= ids


def test_model_corpus(model_cases):
    ids = {c.id for c in model_cases}
    assert len(model_cases) >= 12
    assert {"model/mlp", "model/small_cnn", "model/mobilenet_block", "model/resnet_block",
            "model/transformer_encoder", "model/gru", "model/lstm", "model/text_classifier", "model/unet",
            "model/multi_output", "model/constants_buffers", "model/dynamic_batch", "model/fallback_mix"} <= ids
    assert any(s.dynamic for c in model_cases for s in c.samples)


def test_case_ids_validated():
    with pytest.raises(ValueError):
        OpCase("add", "aten.add.Tensor", lambda: None, [Sample("normal", (In((2,)),))])
    with pytest.raises(ValueError):
        OpCase("op/x", "aten.add.Tensor", lambda: None, [Sample("normal", (In((2,)),)), Sample("normal", (In((3,)),))])


def _ops_by_module(model, args) -> dict[str, set[str]]:
    """The core-ATen ops of ``model`` after run_decompositions(), by the top-level submodule they come from."""
    from delegate_sdk.support import op_name

    ep = torch.export.export(model, args).run_decompositions(torch.export.default_decompositions())
    out: dict[str, set[str]] = {}
    for n in ep.graph.nodes:
        if n.op == "call_function":
            paths = [path for path, _ in (n.meta.get("nn_module_stack") or {}).values() if path]
            out.setdefault(paths[0].split(".")[1] if paths and paths[0].startswith("cases.") else "", set()).add(
                op_name(n))
    return out


@pytest.mark.slow
def test_every_op_case_exports_to_its_op_and_eager_runs_every_sample(op_cases):
    """The honest check behind the op count: each case's op appears after run_decompositions().

    The cases are exported 25 side by side (one export and decomposition each instead of one per case), each
    case's ops told apart by the submodule they come from; a group that cannot export is retried case by case.
    """
    from delegate_sdk import testing

    for i in range(0, len(op_cases), 25):
        chunk = {c.id: c for c in op_cases[i:i + 25]}
        index = {cid: str(k) for k, cid in enumerate(chunk)}
        cases = {}
        for cid, case in chunk.items():
            s = case.samples[0]
            cases[cid] = (sampling.build_module(case, 0), sampling.example_inputs(s, sample_id(case, s), 0, "fp32"))

        def judge(cid, by_module, _outputs):
            # grouped: this case's submodule; alone (a group that failed to export): the whole graph
            names = by_module.get(index[cid]) if len(by_module) > 1 or "" not in by_module else by_module[""]
            return [] if names and chunk[cid].op in names else [f"{cid}: {chunk[cid].op} not in {sorted(names or [])}"]

        problems = testing.check_side_by_side(cases, _ops_by_module, judge)
        assert not problems, "\n".join(problems)
        for cid, case in chunk.items():
            for s in case.samples:
                with torch.no_grad():
                    cases[cid][0](*sampling.make_inputs(s, sample_id(case, s), 0, "fp32"))


# ----------------------------------------------------------------------------- sampling


def test_seed_derivation_is_stable_across_runs_and_machines():
    # a golden value: SHA-256 based, independent of PYTHONHASHSEED and platform
    assert sampling.derive_seed(0, "op/add/normal", "run", 0) == 236690886412428050
    assert sampling.derive_seed(1, "op/add/normal", "run", 0) != sampling.derive_seed(0, "op/add/normal", "run", 0)


def test_inputs_are_deterministic_and_seeded(op_cases):
    case = next(c for c in op_cases if c.id == "op/add")
    s = case.samples[0]
    a = sampling.make_inputs(s, sample_id(case, s), 7, "fp32")
    b = sampling.make_inputs(s, sample_id(case, s), 7, "fp32")
    c = sampling.make_inputs(s, sample_id(case, s), 8, "fp32")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # each input has its own stream


def test_noncontiguous_edge_and_dynamic_samples(op_cases):
    case = next(c for c in op_cases if c.id == "op/add")
    by = {s.label: s for s in case.samples}
    nc = sampling.make_inputs(by["noncontig"], "x", 0, "fp32")
    assert not nc[0].is_contiguous() and nc[0].shape == (4, 16)
    edge = sampling.make_inputs(by["edge"], "y", 0, "fp32")[0]
    assert torch.isnan(edge).any() and torch.isinf(edge).any() and (edge.abs() == 1e30).any()
    assert (sampling.make_inputs(by["edge"], "y", 0, "fp16")[0].abs() == 3e4).any()  # fp16-representable
    dyn = by["dynamic"]
    ex = sampling.example_inputs(dyn, "z", 0, "fp32")
    run = sampling.make_inputs(dyn, "z", 0, "fp32")
    assert ex[0].shape[0] != run[0].shape[0] and ex[0].shape[1:] == run[0].shape[1:]
    spec = sampling.dynamic_shapes_spec(dyn)
    assert spec[0][0] is spec[1][0]  # one symbol shared by both inputs


def test_calibration_comes_from_the_sampler(op_cases):
    case = next(c for c in op_cases if c.id == "op/conv2d")
    group = [s for s in case.samples if s.group_key() == case.samples[0].group_key()]
    a = sampling.calibration_inputs(case, group, 3, "int8")
    b = sampling.calibration_inputs(case, group, 3, "int8")
    assert len(a) >= 4 and all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert all(torch.isfinite(x[0]).all() and x[0].is_contiguous() for x in a)


# ----------------------------------------------------------------------------- tolerance

NAN, INF = float("nan"), float("inf")


def test_float_policy_exact_nonfinite_and_subnormal_flush():
    e = torch.tensor([1.0, NAN, INF, -INF, 0.0, 1e-40, 2.0])
    assert tolerance.judge_op("fp32", [e], [e.clone()]).ok
    d = e.clone()
    d[1] = 0.0
    v = tolerance.judge_op("fp32", [e], [d])
    assert not v.ok and "expected nan, got 0" in v.detail
    d = e.clone()
    d[2] = 3e38
    assert not tolerance.judge_op("fp32", [e], [d]).ok
    d = e.clone()
    d[5] = 0.0  # subnormal flushed to zero: accepted
    assert tolerance.judge_op("fp32", [e], [d]).ok
    d = e.clone()
    d[0] = NAN
    assert not tolerance.judge_op("fp32", [e], [d]).ok


def test_float_policy_scales_with_reduction_length_and_reports_ulp():
    e = torch.full((8,), 10.0)
    d = e + 10.0 * 3e-5
    assert not tolerance.judge_op("fp32", [e], [d]).ok
    v = tolerance.judge_op("fp32", [e], [d], reduction=1024)
    assert v.ok and v.tolerance["reduction_len"] == 1024
    assert 20 < v.metrics["max_ulp"] < 500
    assert v.tolerance["rtol_ulp"] > 1


def test_fp16_policy_accepts_fp16_rounding_and_overflow_to_inf():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert tolerance.judge_op("fp16", [x], [x.half().float()]).ok
    assert not tolerance.judge_op("fp32", [x], [x.half().float()]).ok
    e = torch.tensor([1e8, -1e8, 1.0])
    assert tolerance.judge_op("fp16", [e], [torch.tensor([INF, -INF, 1.0])]).ok
    assert not tolerance.judge_op("fp16", [e], [torch.tensor([-INF, -INF, 1.0])]).ok


def test_integer_outputs_must_be_equal():
    e = torch.tensor([1, 2, 3])
    assert tolerance.judge_op("fp16", [e], [e.clone()]).ok
    assert not tolerance.judge_op("fp16", [e], [torch.tensor([1, 2, 4])]).ok


def test_quantized_policy_in_lsb():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, generator=g)
    s = 0.02
    q = torch.round(x / s) * s
    ok = tolerance.judge_op("int8", [x], [q], quant=[tolerance.OutputQuant(s, 8, q)])
    assert ok.ok and ok.metrics["max_lsb"] <= 0.5 + 1e-6 and "max_ulp" not in ok.metrics
    # one step too high everywhere: caught by the bias rule even though no element is > 1 LSB worse
    off = tolerance.judge_op("int8", [x], [q + s], quant=[tolerance.OutputQuant(s, 8, q)])
    assert not off.ok and "systematic offset" in off.detail
    # scattered +-1 LSB rounding differences are fine
    flip = q.clone()
    flip[::7] += s
    flip[3::7] -= s
    assert tolerance.judge_op("int8", [x], [flip], quant=[tolerance.OutputQuant(s, 8, q)]).ok
    # two steps worse than the reference somewhere: caught
    bad = q.clone()
    bad[10] += 2 * s
    assert not tolerance.judge_op("int8", [x], [bad], quant=[tolerance.OutputQuant(s, 8, q)]).ok
    # without a reference: an LSB budget
    assert tolerance.judge_op("int8", [x], [q], quant=[tolerance.OutputQuant(s, 8, None)]).ok
    assert not tolerance.judge_op("int8", [x], [q + 3 * s], quant=[tolerance.OutputQuant(s, 8, None)]).ok


def test_a_one_step_difference_at_int16_is_one_step():
    """Outputs arrive as float32, which holds int16 codes with a rounding of up to ~0.002 steps: a delegate one
    step from the reference read as 1.0014 steps and failed (arm_ethos a16w8 silu near full scale)."""
    s = 1.1e-4
    codes = torch.arange(18000, 18400, dtype=torch.float64)
    r = (codes * s).float()
    e = r.clone()
    one = r.clone()
    one[::4] = ((codes[::4] - 1) * s).float()
    one[2::4] = ((codes[2::4] + 1) * s).float()  # both ways, so that the bias rule stays out of it
    v = tolerance.judge_op("a16w8", [e], [one], quant=[tolerance.OutputQuant(s, 16, r)])
    assert v.ok, v.detail
    two = one.clone()
    two[0] = ((codes[0] - 2) * s).float()
    v = tolerance.judge_op("a16w8", [e], [two], quant=[tolerance.OutputQuant(s, 16, r)])
    assert not v.ok and "exceeds the reference's by 2" in v.detail and "flat index 0" in v.detail


def test_model_policy_sqnr():
    x = torch.randn(100, generator=torch.Generator().manual_seed(2))
    v = tolerance.judge_model("fp32", [x], [x * (1 + 1e-6)])
    assert v.ok and v.metrics["sqnr_db"] > 100
    v = tolerance.judge_model("fp32", [x], [x + 0.01 * torch.randn(100)])
    assert not v.ok and "SQNR" in v.detail
    assert tolerance.judge_model("int8", [x], [x + 0.01 * torch.randn(100)]).ok


def test_ulp_and_sqnr_helpers():
    assert float(tolerance.ulp(torch.tensor([1.0]), torch.float32)) == 2.0 ** -23
    assert float(tolerance.ulp(torch.tensor([1.0]), torch.float16)) == 2.0 ** -10
    assert tolerance.sqnr_db(torch.ones(4), torch.ones(4)) == tolerance.SQNR_CAP_DB
    assert math.isclose(tolerance.sqnr_db(torch.ones(4), torch.ones(4) * 1.1), 20.0, abs_tol=1e-4)


# ----------------------------------------------------------------------------- expectations

EXP = """
[[expect]]
case = "op/log/edge"
outcome = "FAIL_MISMATCH"
reason = "NaN is not representable on this NPU"

[[expect]]
case = "op/conv2d*"
reason = "any failure"
precision = "int8"
"""


def test_expectations_apply():
    ex = exp.parse(EXP)
    assert exp.apply("FAIL_MISMATCH", "d", "op/log/edge", "op/log", "fp32", ex)[0] == "XFAIL"
    assert exp.apply("PASS", "", "op/log/edge", "op/log", "fp32", ex)[0] == "XPASS"
    out, detail, reason = exp.apply("CRASH", "boom", "op/log/edge", "op/log", "fp32", ex)
    assert out == "CRASH" and "expectation" in detail and reason == "NaN is not representable on this NPU"
    assert exp.apply("PASS", "", "op/add/normal", "op/add", "fp32", ex)[2] is None
    assert exp.apply("SKIP", "", "op/log/edge", "op/log", "fp32", ex)[0] == "SKIP"
    assert exp.apply("FAIL_RUN", "", "op/conv2d/normal", "op/conv2d", "int8", ex)[0] == "XFAIL"
    assert exp.apply("FAIL_RUN", "", "op/conv2d/normal", "op/conv2d", "fp32", ex)[0] == "FAIL_RUN"
    assert exp.is_unexpected("XPASS", strict=True) and not exp.is_unexpected("XPASS")
    assert not exp.is_unexpected("NOT_CLAIMED")


@pytest.mark.parametrize("text", [
    '[[expect]]\ncase = "x"\n',  # no reason
    '[[expect]]\nreason = "r"\n',  # no case
    '[[expect]]\ncase = "x"\nreason = "r"\noutcome = "PASS"\n',  # not a failure
    '[[expect]]\ncase = "x"\nreason = "r"\nbogus = 1\n',
    'expect = [',
])
def test_expectations_errors(text):
    with pytest.raises(UsageError):
        exp.parse(text)


def _import_from(monkeypatch, root, name):
    import importlib

    monkeypatch.syspath_prepend(str(root))
    return importlib.import_module(name)


def test_expectations_are_package_data_of_the_plugin_s_own_package(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "dsdk_tmp_exp_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text("x = 1\n")
    (pkg / "expectations.toml").write_text(EXP)
    found = exp.locate(_import_from(monkeypatch, tmp_path / "site", "dsdk_tmp_exp_pkg.plugin"))
    assert found is not None and found.text == EXP and "dsdk_tmp_exp_pkg/expectations.toml" in found.source
    assert len(found.sha256) == 64 and len(exp.parse(found.text)) == 2


def test_a_stray_expectations_file_beside_a_plugin_is_never_applied(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "expectations.toml").write_text(EXP)  # at the "site-packages" root
    (site / "dsdk_tmp_toplevel_plugin.py").write_text("x = 1\n")
    assert exp.locate(_import_from(monkeypatch, site, "dsdk_tmp_toplevel_plugin")) is None
    out = site / "dsdk_tmp_pkg_without" / "plugin.py"
    out.parent.mkdir()
    (out.parent / "__init__.py").write_text("")
    out.write_text("x = 1\n")
    assert exp.locate(_import_from(monkeypatch, site, "dsdk_tmp_pkg_without.plugin")) is None


# ----------------------------------------------------------------------------- plan / shard


def test_plan_groups_samples_that_share_a_lowering_and_filters(op_cases):
    units = plan(op_cases)
    n_samples = sum(len(c.samples) for c in op_cases)
    assert sum(len(u.sample_ids) for u in units) == n_samples
    assert len(units) < n_samples  # normal/edge/noncontig of a case share one lowering
    add = [u for u in units if u.case_id == "op/add"]
    assert any({"normal", "edge", "noncontig"} <= set(u.labels) for u in add)
    sel = plan(op_cases, pattern=r"^op/(add|sub)/normal$")
    assert [u.sample_ids for u in sel] == [["op/add/normal"], ["op/sub/normal"]]


def test_shards_are_disjoint_and_complete():
    cases = builtin_cases("all")
    full = {sid for u in plan(cases) for sid in u.sample_ids}
    parts = [{sid for u in plan(cases, shard=(i, 3)) for sid in u.sample_ids} for i in (1, 2, 3)]
    assert set().union(*parts) == full
    assert sum(len(p) for p in parts) == len(full)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "x"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_option_parsing():
    from delegate_sdk.conformance.engine import parse_option_args
    from delegate_sdk.types import BackendInfo, OptionSpec

    info = BackendInfo("b", "1", ("fp32", "int8"), "fp32", "f", 1, (1, 1), options=(
        OptionSpec("level", "int", 1), OptionSpec("fast", "bool", False), OptionSpec("target", "str", "a")))
    # as `lower` parses --option: raw strings, converted by the core against the OptionSpecs
    assert parse_option_args(["b.level=3", "b.fast=yes", "b.target=ethos-u85-256"], "b", info) == {
        "level": "3", "fast": "yes", "target": "ethos-u85-256"}
    for bad in (["c.level=3"], ["b.nope=1"], ["b.level=x"], ["level=3"], ["b.precision=fp64"]):
        with pytest.raises(UsageError):
            parse_option_args(bad, "b", info)


# ----------------------------------------------------------------------------- reports


def _report(strict: bool = False, **kw) -> Report:
    cases = [
        CaseResult("op/add/normal", "op/add", "op", "aten.add.Tensor", "PASS", "", 1, 1,
                   {"max_abs_err": 0.0, "max_ulp": 0.0, "sqnr_db": 999.0}, {"kind": "float", "rtol": 1e-5}, 0.5),
        CaseResult("op/log/normal", "op/log", "op", "aten.log.default", "PASS", "", 1, 1,
                   {"max_abs_err": 0.0, "max_ulp": 0.0, "sqnr_db": 999.0}, {"kind": "float"}, 0.25),
        CaseResult("op/log/edge", "op/log", "op", "aten.log.default", "FAIL_MISMATCH", "expected nan, got 0 | x",
                   1, 1, {"max_abs_err": float("nan"), "max_ulp": 1.0, "sqnr_db": None}, {"kind": "float"}, 0.25,
                   stage="execute", inputs={"tensors": [{"shape": [4, 16], "dtype": "float32", "strides": [32, 2],
                                                         "contiguous": False}],
                                            "edges": {"kind": "all", "values": ["nan", "inf"]}},
                   repro="delegate-sdk conform --plugin p -k '^op/log/edge$'"),
        CaseResult("op/relu/normal", "op/relu", "op", "aten.relu.default", "NOT_CLAIMED", "no node", 1, 0),
        CaseResult("model/mlp/normal", "model/mlp", "model", None, "XPASS", "expected ...", 9, 9,
                   {"max_abs_err": 0.0, "max_ulp": 0.0, "sqnr_db": 140.0}, {"kind": "sqnr"}, 1.0,
                   raw_outcome="PASS", expectation="flaky"),
    ]
    return Report({"name": "p", "version": "1", "available": True}, "0.1.0", torch.__version__, "fp32", 0,
                  "2026-01-01T00:00:00+00:00", 2.0, cases, strict=strict,
                  expectations=ExpectationsSource("p_pkg/expectations.toml", "ab" * 32, 3), **kw)


def test_report_json_schema_exactly(tmp_path):
    paths = write_all(_report(), tmp_path)
    d = json.loads(paths["json"].read_text())
    assert d["schema"] == SCHEMA == "delegate-sdk/conformance-report/v2"
    assert set(d) == {"schema", "plugin", "sdk_version", "torch_version", "precision", "precision_spec", "options",
                      "seed", "started", "duration_s", "command", "executor", "runtime_checks", "hosted_ops",
                      "expectations", "requirements",
                      "verdict", "summary", "cases"}
    assert set(d["plugin"]) == {"name", "version", "available"}
    assert d["expectations"] == {"source": "p_pkg/expectations.toml", "sha256": "ab" * 32, "entries": 3}
    # an op counts as passing only when every claimed sample of it passes: log fails at its edge sample;
    # a sample the plugin did not take (relu) and a model case never count
    assert d["summary"] == {"total": 5, "by_outcome": {"PASS": 2, "NOT_CLAIMED": 1, "XPASS": 1, "FAIL_MISMATCH": 1},
                            "passed_samples": 3, "ops_passed_fully_delegated": ["aten.add.Tensor"],
                            "ops_some_samples_fail": ["aten.log.default"], "ops_pass_partially_delegated": []}
    assert d["verdict"] == {"passed": False, "unexpected": 1, "problems": []}
    for c in d["cases"]:
        assert set(c) == {"id", "kind", "op", "outcome", "raw_outcome", "expectation", "detail", "stage",
                          "nodes_total", "nodes_delegated", "nodes_hosted", "metrics", "tolerance", "checks",
                          "inputs", "repro", "stack", "duration_s"}
        assert c["kind"] in ("op", "model")
        assert "max_abs_err" in c["metrics"] and "sqnr_db" in c["metrics"]
    assert d["cases"][2]["metrics"]["max_abs_err"] is None  # NaN never reaches the JSON
    assert d["cases"][4]["raw_outcome"] == "PASS" and d["cases"][4]["expectation"] == "flaky"


def test_a_report_that_certifies_nothing_does_not_pass():
    rep = _report()
    rep.cases = [c for c in rep.cases if c.outcome in ("PASS", "NOT_CLAIMED")]
    assert rep.passed()
    rep.min_pass, rep.min_ops = 3, 3
    assert not rep.passed()
    assert rep.problems() == ["2 sample(s) passed, fewer than the 3 required (--min-pass)",
                              "2 distinct op(s) pass every claimed sample fully delegated, fewer than the 3 "
                              "required (--min-ops)"]
    nothing = _report(min_pass=0)
    nothing.cases = [c for c in nothing.cases if c.outcome == "NOT_CLAIMED"]
    assert not nothing.passed() and "took no node" in nothing.problems()[0]
    nothing.cases = []
    assert not nothing.passed() and "no sample was selected" in nothing.problems()[0]
    unchecked = _report(runtime_checks=False)
    unchecked.cases = unchecked.cases[:2]
    assert not unchecked.passed() and "not a certificate" in unchecked.problems()[0]


def test_report_markdown_and_junit(tmp_path):
    paths = write_all(_report(strict=True), tmp_path)
    md = paths["md"].read_text()
    assert "## Unexpected results (2)" in md and "`op/log/edge`" in md
    assert "- inputs: float32[4, 16] strides (32, 2); edge values (all): nan, inf" in md
    assert "- reproduce: `delegate-sdk conform --plugin p -k '^op/log/edge$'`" in md
    assert "Expectations: p_pkg/expectations.toml (3 entries" in md and "**NOT PASSED**" in md
    root = ET.parse(paths["junit"]).getroot()
    suite = root.find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "2"
    names = {tc.get("name"): tc for tc in suite.iter("testcase")}
    failure = names["op/log/edge"].find("failure")
    assert failure.get("type") == "FAIL_MISMATCH" and "^op/log/edge$" in failure.text
    assert names["op/add/normal"].find("failure") is None


def test_the_zoo_suite_is_real_architectures_apart_from_all():
    from delegate_sdk.conformance.corpus import builtin_cases

    zoo = builtin_cases("zoo")
    assert [c.id for c in zoo] == ["model/zoo_resnet", "model/zoo_efficientnet", "model/zoo_lcnet", "model/zoo_hgnet",
                                   "model/zoo_vit", "model/zoo_bert", "model/zoo_lstm"]
    assert not {c.id for c in builtin_cases("all")} & {c.id for c in zoo}
    bert = next(c for c in zoo if c.id == "model/zoo_bert").module()
    assert type(bert.model).__module__.startswith("transformers.")  # the library's class, not a copy


@pytest.mark.slow
def test_conform_runs_the_zoo_suite():
    from delegate_sdk.conformance import run_conformance

    rep = run_conformance("xnnpack", suite="zoo", pattern=r"^model/zoo_(lstm|bert)/")
    assert sorted(r.id for r in rep.cases) == ["model/zoo_bert/normal", "model/zoo_lstm/normal"]
    for r in rep.cases:  # BERT's int64 mask arithmetic and the LSTM's state setup stay on eager PyTorch
        assert r.outcome in ("PASS", "PASS_PARTIAL") and r.nodes_delegated > r.nodes_total / 2, (r.id, r.detail)
