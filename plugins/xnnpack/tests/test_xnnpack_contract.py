"""The contract around the hooks: clear errors, no blob that leaves work to portable kernels, silence,
no files left behind, no change to the core's program, options, and the full core flow (lower/save/load)."""

from __future__ import annotations

import copy
import os
import tempfile
import threading

import pytest
import torch
import torch.nn.functional as F
from delegate_sdk_xnnpack import compiler, plugin
from delegate_sdk_xnnpack.testing import capture, lower_and_run
from torch import nn

import delegate_sdk
from delegate_sdk.conformance.cases import FunctionModule as Fn
from delegate_sdk.errors import ContractError
from delegate_sdk.registry import Registry

pytestmark = pytest.mark.slow

OPTS = {"precision": "fp32", "num_threads": 0}


def r(*shape: int) -> torch.Tensor:
    return torch.randn(shape)


def _fingerprint(ep: torch.export.ExportedProgram) -> list:
    return [(n.op, n.name, str(n.target), str(n.args), str(n.kwargs)) for n in ep.graph.nodes] + [
        str(ep.graph_signature)] + sorted(ep.constants) + sorted(ep.state_dict)


def test_unclaimable_node_is_a_contract_error_naming_it():
    """A program holding a node the rules would refuse: no blob that runs it on portable kernels."""
    ep = capture(Fn(lambda x: torch.relu(x).log_softmax(-1)), (r(2, 8),))
    with pytest.raises(ContractError, match="_log_softmax") as info:
        plugin.preprocess(ep, OPTS, None)
    assert info.value.backend == "xnnpack" and info.value.stage == "preprocess"
    assert "outside XNNPACK" in str(info.value)


def test_mean_without_keepdim_is_refused_by_claim_and_by_preprocess():
    ep = capture(Fn(lambda x: x.mean((2, 3))), (r(1, 3, 4, 4),))
    with pytest.raises(ContractError, match="mean"):
        plugin.preprocess(ep, OPTS, None)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_preprocess_leaves_the_program_unchanged(precision):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3))
    args = (r(1, 3, 8, 8),)
    ep = capture(net, args)
    before = _fingerprint(ep)
    compiler.clear_cache()
    plugin.preprocess(ep, {**OPTS, "precision": precision}, [args] if precision == "int8" else None)
    assert _fingerprint(ep) == before


def test_silent_and_no_files_left(capfd, tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # other processes share /tmp: watch a private one
    monkeypatch.setenv("TMPDIR", str(tmp))
    before_cwd = set(os.listdir("."))
    compiler.clear_cache()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardswish())
    lower_and_run(net, (r(1, 3, 8, 8),))
    lower_and_run(nn.Linear(4, 4), (r(2, 4),), precision="int8", calibration=[(r(2, 4),)])
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"printed: {out!r} {err!r}"
    assert set(os.listdir(".")) == before_cwd
    # torch creates its (empty) inductor cache dir when torch._dynamo is first imported; nothing else may appear
    left = [p for p in tmp.iterdir() if not (p.name.startswith("torchinductor_") and not any(p.iterdir()))]
    assert left == []


def test_identical_partition_compiles_once():
    compiler.clear_cache()
    net = nn.Conv2d(3, 4, 3)
    first = plugin.preprocess(capture(net, (r(1, 3, 8, 8),)), OPTS, None)
    second = plugin.preprocess(capture(copy.deepcopy(net), (r(1, 3, 8, 8),)), OPTS, None)
    assert second.blob == first.blob and second.meta["compile_seconds"] == first.meta["compile_seconds"]
    other = nn.Conv2d(3, 4, 3)
    third = plugin.preprocess(capture(other, (r(1, 3, 8, 8),)), OPTS, None)
    assert third.blob != first.blob


def test_num_threads_option_resizes_the_runtime_threadpool():
    from delegate_sdk_xnnpack._toolchain import runtime_module

    rt = runtime_module()
    default = rt._threadpool_get_thread_count()
    ep = capture(nn.Linear(8, 8), (r(2, 8),))
    cd = plugin.preprocess(ep, OPTS, None)
    try:
        h = plugin.init(cd.blob, cd.meta, {**OPTS, "num_threads": 1}, cd.sections)
        assert rt._threadpool_get_thread_count() == 1
        x = r(2, 8)
        torch.testing.assert_close(plugin.execute(h, [x])[0], ep.module()(x), rtol=1e-5, atol=1e-5)
    finally:
        h2 = plugin.init(cd.blob, cd.meta, {**OPTS, "num_threads": default}, cd.sections)
        plugin.destroy(h2)
    assert rt._threadpool_get_thread_count() == default


def test_handles_are_independent_and_reusable():
    ep = capture(nn.Linear(8, 3), (r(2, 8),))
    cd = plugin.preprocess(ep, OPTS, None)
    h1 = plugin.init(cd.blob, cd.meta, OPTS, cd.sections)
    h2 = plugin.init(bytearray(cd.blob), cd.meta, OPTS, cd.sections)
    x = r(2, 8)
    a = plugin.execute(h1, [x])[0]
    b = plugin.execute(h2, [x])[0]
    a2 = plugin.execute(h1, [x * 2])[0]
    assert torch.equal(a, b) and not torch.equal(a, a2)  # outputs are copies, not views of the runtime's arena
    plugin.destroy(h1)
    plugin.destroy(h2)


def test_concurrent_handles_from_threads():
    ep = capture(nn.Sequential(nn.Linear(16, 16), nn.ReLU()), (r(4, 16),))
    cd = plugin.preprocess(ep, OPTS, None)
    ref = ep.module()
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            h = plugin.init(cd.blob, cd.meta, OPTS, cd.sections)
            g = torch.Generator().manual_seed(seed)
            for _ in range(50):
                x = torch.randn((4, 16), generator=g)
                torch.testing.assert_close(plugin.execute(h, [x])[0], ref(x), rtol=1e-5, atol=1e-5)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def _core_lower():
    import delegate_sdk

    fn = delegate_sdk.lowering
    return fn if callable(fn) else fn.lower  # the submodule shadows the function once imported


def test_core_lower_save_load_with_fallback(tmp_path):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.max_pool2d(torch.relu(self.c(x)), 2).mean((2, 3))  # mean without keepdim falls back
            return torch.log_softmax(self.fc(y), -1)  # log_softmax falls back

    reg = Registry(load_entry_points=False, load_env=False)
    reg.register(plugin, "xnnpack")
    net, x = Net().eval(), r(2, 3, 8, 8)
    program = delegate_sdk.lower(net, (x,), ["xnnpack"], registry=reg)
    s = program.summary()
    delegated = {op for p in s.partitions for op in p.ops}
    assert {"aten.convolution.default", "aten.relu.default", "aten.linear.default"} <= delegated, delegated
    fallback_ops = {f.op for f in s.fallback}
    assert {"aten.mean.dim", "aten._log_softmax.default"} <= fallback_ops, fallback_ops  # the fallback is real
    torch.testing.assert_close(program(x), net(x), rtol=1e-5, atol=1e-5)
    from delegate_sdk.program import load

    path = tmp_path / "net.dsdk"
    program.save(path)
    loaded = load(path, registry=reg)
    x2 = r(2, 3, 8, 8)
    torch.testing.assert_close(loaded(x2), net(x2), rtol=1e-5, atol=1e-5)


def test_core_lower_int8():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    reg = Registry(load_entry_points=False, load_env=False)
    reg.register(plugin, "xnnpack")
    calib = [(r(1, 3, 10, 10),) for _ in range(16)]
    program = delegate_sdk.lower(net, calib[0], ["xnnpack"], options={"xnnpack": {"precision": "int8"}},
                            calibration=calib, registry=reg)
    s = program.summary()
    assert len(s.partitions) == 1 and not s.fallback, s.to_json()  # everything on XNNPACK
    assert all(q is not None for q in s.partitions[0].output_quant), "int8 outputs report their quantization"
    x = r(1, 3, 10, 10)
    err = float((program(x) - net(x)).abs().max())
    assert 0 < err < 0.1 * float(net(x).abs().max())  # quantized (not bit-exact), and close


def test_weights_shared_by_partitions_are_stored_once(tmp_path):
    """An unrolled RNN's steps use the same weights: they travel as one weights.ptd section, stored once."""
    from delegate_sdk.program import load

    class Steps(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.Linear(32, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for _ in range(3):  # log_softmax falls back: three partitions, each with the cell's weights
                x = torch.log_softmax(self.cell(x), -1)
            return x

    reg = Registry(load_entry_points=False, load_env=False)
    reg.register(plugin, "xnnpack")
    net, x = Steps().eval(), r(2, 32)
    program = delegate_sdk.lower(net, (x,), ["xnnpack"], registry=reg)
    assert len(program.summary().partitions) == 3
    path = tmp_path / "steps.dsdk"
    program.save(path)
    import json
    import zipfile

    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json"))
        stored = {n: z.getinfo(n).file_size for n in z.namelist() if n.startswith("sections/")}
        blobs = [z.getinfo(n).file_size for n in z.namelist() if n.startswith("blobs/")]
    shas = {p["sections"]["weights.ptd"] for p in manifest["partitions"]}
    assert len(shas) == 1 and len(stored) == 1
    assert next(iter(stored.values())) >= 32 * 32 * 4  # the weights are in the section ...
    assert max(blobs) < 32 * 32 * 4  # ... and not in the programs
    torch.testing.assert_close(load(path, registry=reg)(x), net(x), rtol=1e-5, atol=1e-5)


def test_missing_weights_section_is_a_clear_error_not_a_crash():
    ep = capture(nn.Linear(8, 8).eval(), (r(2, 8),))
    cd = plugin.preprocess(program=ep, options=OPTS, calibration=None)
    assert set(cd.sections) == {"weights.ptd"} and cd.meta["sections"] == ["weights.ptd"]
    with pytest.raises(RuntimeError, match=r"section\(s\) \['weights.ptd'\] were not given"):
        plugin.init(blob=cd.blob, meta=cd.meta, options=OPTS, sections={})
    h = plugin.init(blob=cd.blob, meta=cd.meta, options=OPTS, sections=cd.sections)
    assert plugin.execute(handle=h, inputs=[r(2, 8)])[0].shape == (2, 8)


def test_inspect_marks_claims_the_shipped_expectations_know_to_be_risky(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from delegate_sdk.cli import main
    from delegate_sdk.conformance import expectations

    shipped = expectations.parse(expectations.locate(plugin).text)
    exp_reason = next(e.reason for e in shipped if e.case == "op/exp/edge")

    class ExpThenAdd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x) + 1

    report = delegate_sdk.inspect(ExpThenAdd(), (r(2, 8),), ["xnnpack"])
    by_op = {n.op: n for n in report.nodes}
    assert by_op["aten.exp.default"].risks == [f"differs from eager PyTorch: {exp_reason} (conformance: op/exp/edge)"]
    assert by_op["aten.add.Tensor"].risks == []
    assert [n.op for n in report.risky] == ["aten.exp.default"]
    assert report.to_json()["nodes"][0]["risks"]
    (tmp_path / "risky_model.py").write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.exp(x) + 1\n"
        "def make():\n"
        "    return M(), (torch.randn(2, 8),)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = CliRunner().invoke(main, ["inspect", "risky_model:make", "--backends", "xnnpack"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "1 delegated node(s) with a known risk" in out.output and "returns 0 for nan" in out.output


def test_a_v1_blob_with_its_weights_inside_still_loads():
    """loadable_format_versions says (1, 2): a .pte written before weights moved to a section must run."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackPartitioner,
    )
    from executorch.exir import to_edge_transform_and_lower

    net, x = nn.Linear(8, 4).eval(), r(2, 8)
    pte = to_edge_transform_and_lower(torch.export.export(net, (x,)),
                                      partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    h = plugin.init(blob=bytes(pte), meta={"n_outputs": 1}, options=OPTS, sections={})
    torch.testing.assert_close(plugin.execute(handle=h, inputs=[x])[0], net(x), rtol=1e-5, atol=1e-5)
