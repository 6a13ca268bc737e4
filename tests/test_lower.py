"""lower / inspect end to end with the test plugins: placement, equality with eager, calibration, options."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from delegate_sdk.errors import (
    BackendUnavailableError,
    ContractError,
    FallbackError,
    InputError,
    OptionError,
    PluginError,
    UnknownBackendError,
    UsageError,
)
from delegate_sdk import hookimpl
from delegate_sdk.lowering import inspect, lower
from delegate_sdk.types import ReasonCode
from dsdk_test_plugins.ir_backend import ELEMENTWISE, LINEAR, IRBackend
from dsdk_test_plugins.models import SmallCNN, TwoOutputs, dynamic_mlp, small_cnn


@pytest.fixture
def two(registry):
    a, b = IRBackend("elem", ELEMENTWISE), IRBackend("lin", LINEAR)
    registry.register(a, "elem")
    registry.register(b, "lin")
    return registry, a, b


def test_two_backends_cover_cnn_and_match_eager(two):
    registry, a, b = two
    model, (x,) = small_cnn()
    prog = lower(model, (x,), ["lin", "elem"], registry=registry)
    s = prog.summary()
    assert {p.backend for p in s.partitions} == {"lin", "elem"}
    assert [f.op for f in s.fallback] == ["aten.sin.default"]
    assert {r.backend for r in s.fallback[0].reasons} == {"lin", "elem"}
    assert all(r.code == ReasonCode.OP for r in s.fallback[0].reasons)
    assert s.nodes_delegated + len(s.fallback) == s.nodes_total
    torch.testing.assert_close(prog(x), model(x), rtol=0, atol=0)
    x2 = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(prog(x2), model(x2), rtol=0, atol=0)


def test_priority_order_changes_ownership(two):
    registry, _, _ = two
    model, (x,) = small_cnn()
    rep1 = inspect(model, (x,), ["lin", "elem"], registry=registry)
    rep2 = inspect(model, (x,), ["elem", "lin"], registry=registry)
    relu1 = next(n for n in rep1.nodes if n.op == "aten.relu.default")
    assert relu1.backend == "elem"  # lin does not take relu
    mul1 = next(n for n in rep1.nodes if n.op == "aten.mul.Tensor")
    assert mul1.backend == "elem"
    # every node is placed exactly once in both orders, and nodes both can take go to the first
    assert rep1.nodes_total == rep2.nodes_total == len({n.node for n in rep1.nodes})


def test_inspect_reports_reasons_without_compiling(two):
    registry, a, b = two
    model, (x,) = small_cnn()
    rep = inspect(model, (x,), ["elem"], registry=registry)
    assert a.calibration_seen == []  # preprocess never ran
    conv = next(n for n in rep.nodes if n.op == "aten.convolution.default")
    assert conv.partition is None and conv.reasons[0].code == ReasonCode.OP
    assert "not in elem's op list" in conv.reasons[0].message
    assert rep.coverage()["eager"] == len(rep.fallback)
    assert rep.to_json()["nodes_total"] == rep.nodes_total


def test_strict_mode_lists_fallback_nodes(two):
    registry, _, _ = two
    model, (x,) = small_cnn()
    with pytest.raises(FallbackError, match=r"sin \(aten.sin.default\): lin: op: .*elem: op"):
        lower(model, (x,), ["lin", "elem"], registry=registry, strict=True)


def test_skip_ops_and_nodes_and_min_size(two):
    registry, _, _ = two
    model, (x,) = small_cnn()
    rep = inspect(model, (x,), ["lin", "elem"], registry=registry, skip_ops=["relu"])
    relu = next(n for n in rep.nodes if n.op == "aten.relu.default")
    assert relu.partition is None and relu.reasons[0].code == ReasonCode.SKIPPED
    rep = inspect(model, (x,), ["lin", "elem"], registry=registry, skip_nodes=["convolution"])
    assert next(n for n in rep.nodes if n.node == "convolution").reasons[0].code == ReasonCode.SKIPPED
    rep = inspect(model, (x,), ["elem"], registry=registry, min_partition_size=3)
    assert rep.partitions == []
    assert any(r.code == ReasonCode.MIN_SIZE for n in rep.fallback for r in n.reasons)


def test_weights_owned_by_partition_are_not_stored_in_outer_graph(two):
    registry, _, _ = two
    model, (x,) = small_cnn()
    prog = lower(model, (x,), ["lin", "elem"], registry=registry)
    # conv/bn/fc weights live inside 'lin' blobs; the outer graph keeps only what eager nodes read
    assert prog._parts.weights == {}
    prog_eager_fc = lower(model, (x,), ["elem"], registry=registry)
    stored = prog_eager_fc._parts.weights
    assert "p_fc_weight" in stored and "p_conv_weight" in stored
    assert len(stored) == len(set(stored))


def test_calibration_reaches_each_partition_with_its_own_inputs(registry):
    q = IRBackend("q", LINEAR, precisions=("int8",), output_quant=True)
    registry.register(q, "q")
    model, (x,) = small_cnn()
    calib = [(torch.randn(2, 3, 8, 8),) for _ in range(3)]
    prog = lower(model, (x,), ["q"], registry=registry, calibration=calib)
    assert len(q.calibration_seen) == len(prog.summary().partitions) >= 2
    first = q.calibration_seen[0]
    assert len(first) == 3 and torch.equal(first[0][0], calib[0][0])  # p0 reads the model input
    # the second partition (after relu/sin on eager) gets the eager intermediate values
    later = q.calibration_seen[1]
    rec = prog.summary().partitions[1]
    assert [list(t.shape) for t in later[0]] == [list(s.shape) for s in rec.inputs]


def test_float_precision_gets_no_calibration(two):
    registry, a, _ = two
    model, (x,) = small_cnn()
    lower(model, (x,), ["elem"], registry=registry, calibration=[(x,)])
    assert a.calibration_seen and all(c is None for c in a.calibration_seen)


def test_quantized_backend_must_report_output_quant(registry):
    q = IRBackend("q", LINEAR, precisions=("int8",), output_quant=False)
    registry.register(q, "q")
    model, (x,) = small_cnn()
    with pytest.raises(ContractError, match="output_quant is empty"):
        lower(model, (x,), ["q"], registry=registry, calibration=[(x,)])


def test_errors_name_the_problem(two, registry):
    registry_, _, _ = two
    model, (x,) = small_cnn()
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'nope'; installed backends: elem, lin"):
        lower(model, (x,), ["nope"], registry=registry_)
    registry_.register(IRBackend("off", available=False), "off")
    with pytest.raises(BackendUnavailableError, match="'off' is installed but unavailable here: needs the TestChip"):
        lower(model, (x,), ["off"], registry=registry_)
    registry_.register(IRBackend("bad", fail_preprocess=True), "bad")
    with pytest.raises(PluginError, match=r"plugin 'bad' failed in preprocess on partition p0: RuntimeError: "
                                          "deliberate compile failure"):
        lower(model, (x,), ["bad"], registry=registry_)
    registry_.register(IRBackend("badclaim", fail_claim=True), "badclaim")
    with pytest.raises(PluginError, match=r"plugin 'badclaim' failed in claim: ValueError"):
        inspect(model, (x,), ["badclaim"], registry=registry_)
    with pytest.raises(OptionError, match=r"no option 'levle'; valid options: precision .*level \(int in \[0, 3\]\)"):
        lower(model, (x,), ["elem"], registry=registry_, options={"elem": {"levle": 2}})
    with pytest.raises(OptionError, match=r"option level='9' is invalid"):
        lower(model, (x,), ["elem"], registry=registry_, options={"elem": {"level": "9"}})
    with pytest.raises(UsageError, match="not among the backends"):
        lower(model, (x,), ["elem"], registry=registry_, options={"lin": {}})


def test_multiple_outputs_and_structure(two):
    registry, _, _ = two
    m, (a, b) = TwoOutputs(), (torch.randn(4, 5), torch.randn(4, 5))
    prog = lower(m, (a, b), ["elem"], registry=registry)
    out = prog(a, b)
    assert isinstance(out, tuple) and len(out) == 2
    for o, r in zip(out, m(a, b)):
        torch.testing.assert_close(o, r, rtol=0, atol=0)


def test_dynamic_batch(two):
    registry, _, _ = two
    model, (x,), dyn = dynamic_mlp()
    prog = lower(model, (x,), ["lin", "elem"], registry=registry, dynamic_shapes=dyn)
    for batch in (1, 7, 64):
        xb = torch.randn(batch, 6)
        torch.testing.assert_close(prog(xb), model(xb), rtol=1e-6, atol=1e-6)
    assert prog.summary().nodes_delegated > 0


# ---------------------------------------------------------------- property: lowered == eager on random graphs

_UNARY = [torch.relu, torch.sigmoid, torch.tanh, torch.neg, torch.sin, torch.cos, torch.exp]
_BINARY = [torch.add, torch.mul, torch.sub, torch.maximum]


class RandomNet(torch.nn.Module):
    def __init__(self, program: list[tuple[int, int, int, int]]):
        super().__init__()
        self.program = program
        self.w = torch.nn.Parameter(torch.linspace(-1, 1, 6))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        vals = [x, y, x * self.w]
        for kind, f, i, j in self.program:
            a, b = vals[i % len(vals)], vals[j % len(vals)]
            vals.append(_UNARY[f % len(_UNARY)](a) if kind == 0 else _BINARY[f % len(_BINARY)](a, b))
        return vals[-1] + vals[len(vals) // 2]


@settings(max_examples=25, deadline=None)
@given(program=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6), st.integers(0, 40), st.integers(0, 40)),
                        min_size=1, max_size=14),
       order=st.permutations(["elem", "lin", "all_but_sin"]))
def test_random_graphs_lowered_equal_eager(program, order):
    from delegate_sdk.registry import Registry

    reg = Registry(load_entry_points=False, load_env=False)
    reg.register(IRBackend("elem", ELEMENTWISE), "elem")
    reg.register(IRBackend("lin", LINEAR | {"aten.maximum.default"}), "lin")
    reg.register(IRBackend("all_but_sin", ELEMENTWISE | {"aten.cos.default"}), "all_but_sin")
    m = RandomNet(program)
    x, y = torch.randn(3, 6), torch.randn(3, 6)
    prog = lower(m, (x, y), list(order)[:2], registry=reg)
    torch.testing.assert_close(prog(x, y), m(x, y), rtol=0, atol=0, equal_nan=True)
    s = prog.summary()
    placed = [n for p in s.partitions for n in p.nodes] + [f.node for f in s.fallback]
    assert len(placed) == len(set(placed)) == s.nodes_total


class FlattenNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = torch.nn.Conv2d(3, 4, 3)
        self.l = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l(torch.relu(self.c(x)).flatten(1)).softmax(-1)


@pytest.mark.parametrize("ops", [None, ELEMENTWISE | {"aten.view.default", "aten.permute.default",
                                                      "aten.addmm.default"}])
def test_dynamic_sizes_are_recomputed_inside_partitions(registry, ops):
    registry.register(IRBackend("b", ops), "b")
    torch.manual_seed(0)
    m, x = FlattenNet().eval(), torch.randn(4, 3, 8, 8)
    batch = torch.export.Dim("batch", min=1, max=32)
    prog = lower(m, (x,), ["b"], registry=registry, dynamic_shapes={"x": {0: batch}})
    s = prog.summary()
    view_part = next(p for p in s.partitions if "view" in p.nodes)
    assert "aten.sym_size.int" not in [f.op for f in s.fallback]  # host arithmetic is not a fallback
    sub = prog.subprogram(view_part.id)
    assert any(n.target == torch.ops.aten.sym_size.int for n in sub.graph.nodes)
    if ops is None:
        assert s.fallback == [] and s.nodes_delegated == s.nodes_total
    for b in (1, 5, 32):
        xb = torch.randn(b, 3, 8, 8)
        torch.testing.assert_close(prog(xb), m(xb), rtol=0, atol=0)


def test_inspect_estimate_compiles_and_reports_perf(two):
    registry, a, b = two
    model, (x,) = small_cnn()
    rep = inspect(model, (x,), ["lin", "elem"], registry=registry)
    assert all(p.perf is None for p in rep.partitions)
    rep = inspect(model, (x,), ["lin", "elem"], registry=registry, estimate=True)
    assert rep.partitions and all(p.perf is not None and p.perf.cycles > 0 for p in rep.partitions)
    assert rep.to_json()["partitions"][0]["perf"]["source"] == "ir test model"


class MaxDim(torch.nn.Module):
    def forward(self, x: torch.Tensor):
        return torch.max(x, dim=1)  # a torch.return_types named tuple


def test_named_tuple_outputs_are_stored_as_tuples(two, tmp_path):
    from delegate_sdk.program import load

    registry, _, _ = two
    x = torch.randn(3, 4)
    prog = lower(MaxDim(), (x,), ["elem"], registry=registry)
    prog.save(tmp_path / "m.dsdk")
    values, indices = load(tmp_path / "m.dsdk", registry)(x)
    torch.testing.assert_close(values, x.max(1).values)
    torch.testing.assert_close(indices, x.max(1).indices)


class _Glued(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.softmax(self.a(x), -1))  # softmax: the glue the engine cannot accelerate


def test_hosted_ops_merge_partitions_are_counted_apart_and_survive_the_artifact(registry, tmp_path):
    import delegate_sdk.program as program_mod

    registry.register(IRBackend("eng", LINEAR | ELEMENTWISE, hosts={"aten._softmax.default"}), "eng")
    model, x = _Glued().eval(), torch.randn(2, 8)
    plain = lower(model, (x,), ["eng"], registry=registry)
    assert len(plain.summary().partitions) == 2 and plain.summary().nodes_hosted == 0
    report = inspect(model, (x,), ["eng"], registry=registry, hosted_ops=True)
    assert len(report.partitions) == 1 and report.nodes_hosted == 1
    assert report.coverage()["eng (hosted)"] == 1 and report.fallback == []
    prog = lower(model, (x,), ["eng"], registry=registry, hosted_ops=["eng"])
    s = prog.summary()
    assert len(s.partitions) == 1 and s.nodes_hosted == 1 and s.nodes_accelerated == s.nodes_total - 1
    assert s.partitions[0].hosted == ["_softmax"] and s.to_json()["nodes_hosted"] == 1
    with torch.no_grad():
        assert torch.allclose(prog(x), model(x), atol=1e-6)
    prog.save(tmp_path / "m.dsdk")
    again = program_mod.load(tmp_path / "m.dsdk", registry=registry)
    assert again.summary().nodes_hosted == 1 and torch.allclose(again(x), prog(x))


def test_hosted_ops_for_a_backend_that_cannot_host_is_a_usage_error(two):
    reg, _, _ = two
    with pytest.raises(UsageError, match="cannot host ops"):
        lower(SmallCNN().eval(), (torch.randn(1, 3, 16, 16),), ["lin"], registry=reg, hosted_ops=["lin"])
    # True means "every backend that can": none here, so nothing is hosted and nothing fails
    assert lower(SmallCNN().eval(), (torch.randn(1, 3, 16, 16),), ["lin"], registry=reg,
                 hosted_ops=True).summary().nodes_hosted == 0


class _HFStyle(torch.nn.Module):
    """Takes what a transformers model takes: keyword tensors, a dict, an optional None, a Python number."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Linear(4, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                extra: dict[str, torch.Tensor] | None = None, scale: float = 1.0, past=None):
        h = torch.relu(self.emb(input_ids)) * scale
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1)
        if extra is not None:
            h = h + extra["bias"]
        return {"last_hidden_state": h, "pooled": (h.mean(1),)}


def test_pytree_and_keyword_inputs_lower_save_load_and_run(two, tmp_path):
    import delegate_sdk.program as program_mod

    reg, _, _ = two
    model = _HFStyle().eval()
    ids, mask = torch.randn(2, 5, 4), torch.ones(2, 5)
    kwargs = {"attention_mask": mask, "extra": {"bias": torch.randn(8)}, "scale": 2.0, "past": None}
    calib = [((torch.randn(2, 5, 4),), {**kwargs, "attention_mask": torch.ones(2, 5)}) for _ in range(2)]
    prog = lower(model, (ids,), ["lin", "elem"], registry=reg, example_kwargs=kwargs, calibration=calib)
    assert prog.summary().nodes_delegated > 0
    with torch.no_grad():
        ref = model(ids, **kwargs)
    out = prog(ids, **kwargs)
    assert set(out) == {"last_hidden_state", "pooled"} and torch.allclose(out["last_hidden_state"],
                                                                          ref["last_hidden_state"], atol=1e-6)
    assert torch.allclose(out["pooled"][0], ref["pooled"][0], atol=1e-6)
    reordered = {"past": None, "scale": 2.0, "extra": kwargs["extra"], "attention_mask": mask}
    assert torch.allclose(prog(ids, **reordered)["last_hidden_state"], ref["last_hidden_state"], atol=1e-6)
    prog.save(tmp_path / "hf.dsdk")
    again = program_mod.load(tmp_path / "hf.dsdk", registry=reg)
    assert torch.allclose(again(ids, **kwargs)["last_hidden_state"], ref["last_hidden_state"], atol=1e-6)
    assert [s.path for s in again.input_specs] == ["args[0]", "kwargs['attention_mask']",
                                                    "kwargs['extra']['bias']", "kwargs['scale']", "kwargs['past']"]
    args, kw = again.example_call(seed=1)
    assert again(*args, **kw)["last_hidden_state"].shape == (2, 5, 8)


def test_a_call_of_the_wrong_structure_names_the_input(two):
    reg, _, _ = two
    model = _HFStyle().eval()
    ids, mask = torch.randn(2, 5, 4), torch.ones(2, 5)
    prog = lower(model, (ids,), ["lin", "elem"], registry=reg, example_kwargs={"attention_mask": mask})
    with pytest.raises(InputError, match=r"input kwargs\['attention_mask'\] is missing"):
        prog(ids)
    with pytest.raises(InputError, match=r"unexpected input kwargs\['scale'\]"):
        prog(ids, attention_mask=mask, scale=3.0)
    with pytest.raises(InputError, match=r"input kwargs\['attention_mask'\] \('attention_mask'\): expected dtype "
                                         r"float32, got int64"):
        prog(ids, attention_mask=mask.long())
    spec = lower(model, (ids,), ["lin", "elem"], registry=reg, example_kwargs={"attention_mask": mask, "scale": 2.0})
    with pytest.raises(InputError, match=r"kwargs\['scale'\] \('scale'\): the program was exported with 2.0 here"):
        spec(ids, attention_mask=mask, scale=3.0)


class KeepsLinear(IRBackend):
    """A fallback backend that wants nn.Linear whole."""

    @hookimpl
    def describe(self):
        import dataclasses

        return dataclasses.replace(super().describe(), keep_ops=("aten.linear.default",))


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_a_fallback_backends_keep_ops_never_cost_the_first_backend_partitions(registry):
    """nn.Linear kept whole for the lower-priority backend would be one node the first backend refuses, and
    every linear would go alone to the fallback; the core decomposes it instead when that partitions better."""
    registry.register(IRBackend("first", {"aten.relu.default", "aten.addmm.default", "aten.permute.default"}),
                      "first")
    registry.register(KeepsLinear("keeper", {"aten.linear.default", "aten.relu.default"}), "keeper")
    x = torch.randn(2, 8)
    alone = inspect(Mlp(), (x,), ["first"], registry=registry)
    both = inspect(Mlp(), (x,), ["first", "keeper"], registry=registry)
    assert len(alone.partitions) == len(both.partitions) == 1
    assert {p.backend for p in both.partitions} == {"first"}
    # where the first backend has no use for the pieces, the fallback still gets linear whole
    registry.register(IRBackend("other", {"aten.sigmoid.default"}), "other")
    got = lower(Mlp(), (x,), ["other", "keeper"], registry=registry)
    (part,) = got.summary().partitions
    assert part.backend == "keeper" and set(part.ops) == {"aten.linear.default", "aten.relu.default"}
    assert len(part.nodes) == 5  # three linears whole, two relus


class FailsOnSigmoid(IRBackend):
    """Claims sigmoid, then cannot compile a partition holding one (a claim it cannot honour)."""

    @hookimpl
    def preprocess(self, program, options, calibration):
        if any(getattr(n.target, "__name__", "") == "sigmoid.default" for n in program.graph.nodes):
            raise RuntimeError("NPU compiler: sigmoid LUT overflow\n  (internal stack ...)")
        return super().preprocess(program, options, calibration)


class Chain(torch.nn.Module):
    def forward(self, x):
        y = torch.relu(x) * 2
        z = torch.sigmoid(y.sin()) + 1
        return torch.tanh(z)


def test_a_partition_that_fails_to_compile_falls_to_the_next_backend(registry):
    registry.register(FailsOnSigmoid("npu", ELEMENTWISE), "npu")
    registry.register(IRBackend("cpu", ELEMENTWISE | {"aten.sin.default", "aten.tanh.default"}), "cpu")
    x = torch.randn(3, 4)
    prog = lower(Chain(), (x,), ["npu", "cpu"], registry=registry)  # several backends: fallback by default
    torch.testing.assert_close(prog(x), Chain()(x))
    s = prog.summary()
    (failure,) = s.compile_failures
    assert failure.backend == "npu" and "sigmoid LUT overflow" in failure.error and "\n" not in failure.error
    assert any(p.backend == "cpu" and "aten.sigmoid.default" in p.ops for p in s.partitions)
    assert s.to_json()["compile_failures"][0]["backend"] == "npu"
    # alone (a vendor certifying it) or when asked, the failure is the error it always was
    with pytest.raises(PluginError, match="sigmoid LUT overflow"):
        lower(Chain(), (x,), ["npu", "cpu"], registry=registry, on_compile_error="raise")
    registry.register(FailsOnSigmoid("npu2", ELEMENTWISE), "npu2")
    with pytest.raises(PluginError, match="npu2"):
        lower(Chain(), (x,), ["npu2"], registry=registry)
    # with nothing after it, the nodes run on eager PyTorch with the error as their reason
    prog = lower(Chain(), (x,), ["npu2"], registry=registry, on_compile_error="fallback")
    torch.testing.assert_close(prog(x), Chain()(x))
    sig = next(f for f in prog.summary().fallback if f.op == "aten.sigmoid.default")
    assert sig.reasons[-1].code == ReasonCode.COMPILE_FAILED and "sigmoid LUT overflow" in sig.reasons[-1].message


class ViewThenWork(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(3.0))

    def forward(self, x):
        y = x.view(-1, 2)  # a partition of one view: a delegate call for nothing
        c = torch.cos(self.scale + 1)  # scale + 1 involves only constants, and cos stays on eager
        return torch.sin(y) * c


def test_minimum_benefit_leaves_trivial_partitions_to_eager(registry):
    registry.register(IRBackend("any", {"aten.view.default", "aten.add.Tensor", "aten.mul.Tensor"}), "any")
    x = torch.randn(4, 3)
    r = inspect(ViewThenWork(), (x,), ["any"], registry=registry)
    assert [sorted(p.ops) for p in r.partitions] == [["aten.mul.Tensor"]]
    trivial = {n.op: n.reasons[-1] for n in r.nodes if n.partition is None and n.reasons
               and n.reasons[-1].code == ReasonCode.TRIVIAL}
    assert set(trivial) == {"aten.view.default", "aten.add.Tensor"}
    assert "constant" in trivial["aten.add.Tensor"].message and "move data" in trivial["aten.view.default"].message
    # off (as conformance runs): the view is a partition of its own again
    r = inspect(ViewThenWork(), (x,), ["any"], registry=registry, min_benefit=False)
    assert len(r.partitions) == 3
    prog = lower(ViewThenWork(), (x,), ["any"], registry=registry)
    torch.testing.assert_close(prog(x), ViewThenWork()(x))


class Int8WithoutSigmoid(IRBackend):
    """Takes every listed op in fp32; at int8 it has no sigmoid (a LUT it lacks), like real NPUs."""

    @hookimpl
    def claim(self, program, nodes, options):
        claims = super().claim(program, nodes, options)
        if options["precision"] != "int8":
            return claims
        from delegate_sdk.types import Claims, Refusal

        sig = {n.name for n in nodes if getattr(n.target, "__name__", "") == "sigmoid.default"}
        return Claims(tuple(c for c in claims.claimed if c not in sig),
                      (*claims.refused, *(Refusal(n, ReasonCode.QUANT, "no int8 sigmoid") for n in sorted(sig))))


def test_one_backend_at_two_precisions_falls_back_from_int8_to_fp32(registry, tmp_path):
    from delegate_sdk.program import load

    npu = Int8WithoutSigmoid("npu", ELEMENTWISE | {"aten.sin.default"}, precisions=("int8", "fp32"),
                             output_quant=True)
    registry.register(npu, "npu")
    x = torch.randn(3, 4)
    plan = inspect(Chain(), (x,), "npu:int8,npu:fp32", registry=registry)
    assert plan.backends == ["npu:int8", "npu:fp32"]
    assert [p.backend for p in plan.partitions] == ["npu:int8", "npu:fp32", "npu:int8"]
    calib = [(torch.randn(3, 4),) for _ in range(2)]
    prog = lower(Chain(), (x,), ["npu:int8", "npu:fp32"], registry=registry, calibration=calib,
                 options={"npu": {"level": 2}, "npu:fp32": {"level": 3}})
    s = prog.summary()
    assert [(p.backend, p.options["precision"], p.options["level"]) for p in s.partitions] == [
        ("npu", "int8", 2), ("npu", "fp32", 3), ("npu", "int8", 2)]
    assert "aten.sigmoid.default" in s.partitions[1].ops and not s.fallback
    # calibration only for the int8 partitions
    assert [c is not None for c in npu.calibration_seen] == [True, False, True]
    torch.testing.assert_close(prog(x), Chain()(x))
    prog.save(tmp_path / "m.dsdk")
    torch.testing.assert_close(load(tmp_path / "m.dsdk", registry)(x), Chain()(x))


def test_priority_list_entries_are_checked(registry):
    registry.register(IRBackend("npu", ELEMENTWISE, precisions=("int8", "fp32"), output_quant=True), "npu")
    x = torch.randn(3, 4)
    with pytest.raises(UsageError, match=r"backend listed twice: \['npu:int8', 'npu:int8'\]"):
        inspect(Chain(), (x,), "npu:int8,npu:int8", registry=registry)
    with pytest.raises(UsageError, match=r"give every entry its precision \(e.g. npu:int8,npu:fp32\)"):
        inspect(Chain(), (x,), "npu,npu:fp32", registry=registry)
    with pytest.raises(UsageError, match="NAME or NAME:PRECISION"):
        inspect(Chain(), (x,), "npu:", registry=registry)
    with pytest.raises(OptionError, match="precision"):
        inspect(Chain(), (x,), "npu:fp64", registry=registry)
    with pytest.raises(UsageError, match="npu:fp32 says precision fp32, its options say int8"):
        inspect(Chain(), (x,), "npu:fp32", registry=registry, options={"npu:fp32": {"precision": "int8"}})
    with pytest.raises(UsageError, match="not among the backends"):
        inspect(Chain(), (x,), "npu:fp32", registry=registry, options={"npu:int8": {}})


def test_an_exported_program_called_with_keywords_lowers_without_example_inputs(two, tmp_path):
    """A .pt2 of a model taking keyword arguments (what `compare --executor ray` ships to its workers)."""
    import io

    from dsdk_test_plugins.models import keyword_net

    registry, _, _ = two
    made = keyword_net()
    ep = torch.export.export(made["model"], (), kwargs=made["kwargs"])
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    loaded = torch.export.load(io.BytesIO(buf.getvalue()))
    prog = lower(loaded, None, ["lin", "elem"], registry=registry)
    assert prog.summary().nodes_delegated > 0
    kw = {"input_ids": torch.randn(2, 4, 6), "attention_mask": torch.ones(2, 4)}
    torch.testing.assert_close(prog(**kw), made["model"](**kw))
