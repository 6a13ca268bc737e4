"""The Core ML plugin's hooks: describe, claim reasons, preprocess (real coremltools), the runtime, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coreml_cases import REFUSALS, Fn
from delegate_sdk_coreml import package, plugin, rules, runtime
from delegate_sdk_coreml.mil_errors import MILError
from delegate_sdk_coreml.mil_reader import MILProgram

from delegate_sdk import ReasonCode, testing
from delegate_sdk.support import op_name

OPTS = {"precision": "fp16", "compute_units": "all", "minimum_deployment_target": "iOS17"}


def opts(**kw: Any) -> dict[str, Any]:
    return {**OPTS, **kw}


def export(model: torch.nn.Module, *inputs: torch.Tensor, **kw: Any) -> torch.export.ExportedProgram:
    """The program the hooks see: the plugin kit's capture, with this plugin's keep_ops whole."""
    return testing.capture("coreml", model.eval(), inputs, **kw)


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(x)))
        return self.fc(y.mean((2, 3)))


def small_net() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return SmallNet().eval(), torch.randn(1, 3, 16, 16)


# --------------------------------------------------------------------------- describe and options


def test_describe() -> None:
    info = plugin.describe()
    assert info.name == "coreml"
    assert info.precisions == ("fp16", "fp32") and info.default_precision == "fp16"
    assert info.available, info.unavailable_reason
    assert info.blob_format_version == 1 and info.loadable_format_versions == (1, 1)
    opts_ = {o.name: o for o in info.options}
    assert opts_["compute_units"].choices == ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")
    assert opts_["minimum_deployment_target"].choices[0] == "iOS16"
    assert "precision" not in opts_
    assert "pixel_shuffle" in " ".join(info.keep_ops)
    if sys.platform != "darwin":
        assert "numpy MIL interpreter" in info.description


def test_core_validates_options_from_the_specs() -> None:
    from delegate_sdk.errors import OptionError
    from delegate_sdk.options import validate_options

    info = plugin.describe()
    assert validate_options(info, {}) == OPTS
    with pytest.raises(OptionError, match="cpu_and_ne"):
        validate_options(info, {"compute_units": "gpu"})
    with pytest.raises(OptionError, match="iOS16"):
        validate_options(info, {"minimum_deployment_target": "iOS15"})
    with pytest.raises(OptionError):
        validate_options(info, {"precision": "int8"})


# --------------------------------------------------------------------------- claim


@pytest.mark.parametrize("case", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_carry_a_reason(case: Any) -> None:
    _, make, inputs, op, code = case
    # the kit checks the contract: every candidate answered exactly once, every refusal with a sentence
    result = testing.claim("coreml", make().eval(), inputs(torch.Generator().manual_seed(0)))
    by_node = result.refused
    nodes = {n.name: n for n in result.program.graph.nodes}
    target = [name for name in result.candidates if op_name(nodes[name]) == op]
    assert target, f"{op} not in the captured graph"
    for name in target:
        assert name in by_node, f"{name} ({op}) was claimed"
        assert by_node[name].code == ReasonCode(code), by_node[name]
        assert len(by_node[name].message) > 20


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_every_claimable_op_has_a_conformance_case(precision: str) -> None:
    """Conformance certifies only ops some case is about: each op the table can claim has one (the corpus's, or
    one of conformance_cases.py for a form only this plugin reaches, like pixel_shuffle kept whole)."""
    assert testing.ops_without_conformance_case("coreml", rules.table.ops_at(precision)) == []


def test_claim_does_not_modify_the_program() -> None:
    m, x = small_net()
    ep = export(m, x)
    before = str(ep.graph)
    plugin.claim(ep, testing.candidates(ep), OPTS)
    assert str(ep.graph) == before


def test_dynamic_shapes_are_refused() -> None:
    class Double(torch.nn.Module):
        def forward(self, a: torch.Tensor) -> torch.Tensor:
            return a * 2

    dim = torch.export.Dim("batch", min=2, max=8)
    result = testing.claim("coreml", Double(), (torch.randn(4, 3),), dynamic_shapes={"a": {0: dim}})
    assert result.refused and all(r.code == ReasonCode.DYNAMIC for r in result.refused.values())


def test_ops_whose_mil_ops_the_interpreter_lacks_are_refused_with_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.ReLU())
    x = torch.randn(1, 3, 8, 8)
    lacking = runtime.implemented_ops() - {"max_pool"}
    monkeypatch.setattr(runtime, "host_runtime_ops", lambda: lacking)
    result = testing.claim("coreml", net, (x,))
    refused = result.refused
    pool = next(n for n in result.candidates if "max_pool" in n)
    assert list(refused) == [pool]
    assert refused[pool].code == ReasonCode.RUNTIME and "max_pool" in refused[pool].message
    assert set(result.claimed) == {"convolution", "relu"}
    # with Core ML itself (macOS) every MIL op runs: nothing is refused for the runtime
    monkeypatch.setattr(runtime, "host_runtime_ops", lambda: None)
    assert not testing.claim("coreml", net, (x,)).refused


def test_missing_pass_products_refuse_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    m, x = small_net()
    monkeypatch.setattr(runtime, "host_runtime_ops", lambda: runtime.implemented_ops() - {"silu"})
    result = testing.claim("coreml", m, (x,))
    assert not result.claimed
    assert all(r.code == ReasonCode.RUNTIME and "silu" in r.message for r in result.refused.values())


# --------------------------------------------------------------------------- preprocess and the blob


@pytest.mark.slow
def test_compile_meta_blob_and_quietness(capfd: pytest.CaptureFixture[str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    m, x = small_net()
    ep = export(m, x)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # every temp file of this process lands here
    compiled = plugin.preprocess(ep, OPTS, None)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    left = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor")]
    assert left == [], f"temporary files left behind: {left}"

    meta = compiled.meta
    json.dumps(meta)
    assert meta["precision"] == "fp16" and meta["opset"] == "CoreML7"
    assert meta["mil_op_counts"]["conv"] == 1  # batch norm folded into the conv by coremltools
    assert "linear" in meta["mil_op_counts"] and "cast" in meta["mil_op_counts"]
    assert compiled.op_counts == {k: v for k, v in meta["mil_op_counts"].items() if k != "const"}
    assert compiled.output_quant == [None]
    # MIL ops are traced back to nodes by name; the conv carries the batch norm's name it was fused with
    dm = compiled.debug_map
    assert dm.get("relu:relu_cast_fp16") == ["relu"]
    assert [v for k, v in dm.items() if k.startswith("conv:")] == [["_native_batch_norm_legit_no_training"]]
    # the blob is a deterministic zip of the .mlpackage, weights in weights/weight.bin
    names = zipfile.ZipFile(__import__("io").BytesIO(compiled.blob)).namelist()
    assert "model.mlpackage/Manifest.json" in names
    assert any(n.endswith("weights/weight.bin") for n in names)
    again = plugin.preprocess(ep, OPTS, None)
    assert again.blob == compiled.blob


@pytest.mark.slow
def test_fp16_program_computes_in_fp16_and_fp32_does_not() -> None:
    torch.manual_seed(1)
    a, b = torch.randn(64), torch.randn(64)
    ep = export(Fn(lambda a, b: (a * b) + a), a, b)
    results = {}
    for precision in ("fp16", "fp32"):
        compiled = plugin.preprocess(ep, opts(precision=precision), None)
        with tempfile.TemporaryDirectory() as t:
            fn = MILProgram.from_package(package.unpack(compiled.blob, Path(t))).function()
        compute = [op for op in fn.operations if op.type in ("mul", "add")]
        assert {t.dtype for op in compute for _, t in op.outputs} == {np.float16 if precision == "fp16"
                                                                      else np.float32}
        h = plugin.init(compiled.blob, compiled.meta, opts(precision=precision))
        results[precision] = plugin.execute(h, [a, b])[0]
        assert results[precision].dtype == torch.float32
    # fp16: each op rounds to fp16, exactly like chaining fp16 tensors in torch
    expect16 = ((a.half() * b.half()) + a.half()).float()
    assert torch.equal(results["fp16"], expect16)
    assert torch.allclose(results["fp32"], a * b + a, rtol=1e-6, atol=1e-6)
    assert not torch.equal(results["fp32"], expect16)


@pytest.mark.slow
@pytest.mark.parametrize("target,opset", [("iOS16", "CoreML6"), ("iOS18", "CoreML8"), ("macOS15", "CoreML8")])
def test_deployment_targets(target: str, opset: str) -> None:
    m, x = small_net()
    ep = export(m, x)
    compiled = plugin.preprocess(ep, opts(minimum_deployment_target=target, precision="fp32"), None)
    assert compiled.meta["opset"] == opset
    h = plugin.init(compiled.blob, compiled.meta, OPTS)
    got = plugin.execute(h, [x])[0]
    torch.testing.assert_close(got, m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_runtime_needs_only_blob_and_meta_not_coremltools(tmp_path: Path) -> None:
    """A fresh process loads the saved blob and runs it: no torch model, no coremltools import."""
    m, x = small_net()
    compiled = plugin.preprocess(export(m, x), opts(precision="fp32"), None)
    (tmp_path / "blob.bin").write_bytes(compiled.blob)
    (tmp_path / "meta.json").write_text(json.dumps(compiled.meta))
    torch.save(x, tmp_path / "x.pt")
    script = """
import json, sys, torch
from pathlib import Path
from delegate_sdk_coreml import plugin
d = Path(sys.argv[1])
h = plugin.init((d / "blob.bin").read_bytes(), json.loads((d / "meta.json").read_text()), {})
y = plugin.execute(h, [torch.load(d / "x.pt")])[0]
torch.save(y, d / "y.pt")
print("coremltools" in sys.modules)
"""
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_bad_blobs_give_clear_errors() -> None:
    m, x = small_net()
    compiled = plugin.preprocess(export(m, x), OPTS, None)
    with pytest.raises(MILError, match="not a packed .mlpackage"):
        plugin.init(b"not a zip", compiled.meta, OPTS)
    with pytest.raises(MILError):
        plugin.init(compiled.blob[: len(compiled.blob) // 2], compiled.meta, OPTS)
    with pytest.raises(ValueError, match="meta"):
        plugin.init(compiled.blob, {}, OPTS)
    meta = json.loads(json.dumps(compiled.meta))
    meta["inputs"][0]["name"] = "renamed"
    with pytest.raises(MILError, match="inputs"):
        plugin.init(compiled.blob, meta, OPTS)


@pytest.mark.slow
def test_conversion_failures_are_short_errors() -> None:
    ep = export(Fn(torch.asinh), torch.randn(2, 3))  # refused by claim; forced through preprocess here
    with pytest.raises(RuntimeError) as info:
        plugin.preprocess(ep, OPTS, None)
    msg = str(info.value)
    assert msg.startswith("coremltools could not convert the partition") and "\n" not in msg


@pytest.mark.slow
def test_execute_edge_inputs() -> None:
    """Non-contiguous inputs, a rank-0 input, an output that is also returned twice, int64 and bool outputs."""
    ep = export(Fn(lambda a, s, i: (a * s, a * s, (a > 0), i.argmax(1) + 1)),
                torch.randn(3, 4).t(), torch.tensor(2.5), torch.randint(0, 9, (2, 5)))
    a = torch.randn(3, 4).t()
    assert not a.is_contiguous()
    s, i = torch.tensor(-1.5), torch.randint(0, 9, (2, 5))
    for precision in ("fp32", "fp16"):
        compiled = plugin.preprocess(ep, opts(precision=precision), None)
        h = plugin.init(compiled.blob, compiled.meta, OPTS)
        y, y2, pos_, arg = plugin.execute(h, [a, s, i])
        assert y.dtype == torch.float32 and pos_.dtype == torch.bool and arg.dtype == torch.int64
        tol = 1e-6 if precision == "fp32" else 8 * 2 ** -10 * float((a * s).abs().max())
        torch.testing.assert_close(y, a * s, rtol=0, atol=tol)
        assert torch.equal(y, y2)
        assert torch.equal(pos_, a > 0) and torch.equal(arg, i.argmax(1) + 1)
        plugin.destroy(h)


@pytest.mark.slow
def test_weights_come_from_the_blob_file() -> None:
    conv = torch.nn.Conv2d(16, 32, 3).eval()
    x = torch.randn(1, 16, 8, 8)
    compiled = plugin.preprocess(export(conv, x), opts(precision="fp32"), None)
    with tempfile.TemporaryDirectory() as t:
        pkg = package.unpack(compiled.blob, Path(t))
        weight_file = next(pkg.rglob("weight.bin"))
        assert weight_file.stat().st_size >= conv.weight.numel() * 4
    h = plugin.init(compiled.blob, compiled.meta, OPTS)
    torch.testing.assert_close(plugin.execute(h, [x])[0], conv(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- end to end through the core


@pytest.mark.slow
def test_lower_save_load_with_fallback(tmp_path: Path) -> None:
    import delegate_sdk

    class Net(SmallNet):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = F.relu(self.bn(self.conv(x))).mean((2, 3))
            return self.fc(y), torch.add(y, y, alpha=2)  # alpha != 1 stays on eager PyTorch

    torch.manual_seed(0)
    m, x = Net().eval(), torch.randn(1, 3, 16, 16)
    ref = m(x)
    prog = delegate_sdk.lower(m, (x,), ["coreml"], options={"coreml": {"precision": "fp32"}})
    s = prog.summary()
    delegated = {op for p in s.partitions for op in p.ops}
    assert {"aten.convolution.default", "aten.relu.default", "aten.mean.dim"} <= delegated, delegated
    assert [f.op for f in s.fallback] == ["aten.add.Tensor"], s.fallback  # only the alpha=2 add falls back
    out = prog(x)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)
    path = tmp_path / "net.dsdk"
    prog.save(path)
    loaded = delegate_sdk.load(path)
    for o, r in zip(loaded(x), ref):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)
