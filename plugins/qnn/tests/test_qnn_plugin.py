"""describe, options, the blob container, error paths, silence, runtime-only loading."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from delegate_sdk.types import BackendInfo
from delegate_sdk_qnn import container, plugin
from delegate_sdk_qnn.options import QnnConfig


def test_describe(qnn_available):
    info = plugin.describe()
    assert isinstance(info, BackendInfo)
    assert info.available, info.unavailable_reason
    assert info.name == "qnn"
    assert info.precisions == ("int8", "a16w8", "fp16") and info.default_precision == "int8"
    assert {o.name for o in info.options} == {"soc_model", "htp_arch", "htp_performance_mode", "calibration_method"}
    assert "precision" not in {o.name for o in info.options}
    calib = next(o for o in info.options if o.name == "calibration_method")
    assert calib.choices == ("minmax", "entropy", "percentile")
    assert info.loadable_format_versions[0] <= info.blob_format_version <= info.loadable_format_versions[1]
    json.dumps(info.to_json())


def test_registered_through_entry_point():
    from delegate_sdk.registry import Registry

    reg = Registry(load_env=False)
    assert "qnn" in reg.names()
    assert reg.get("qnn").info().available


@pytest.mark.parametrize("bad", [{"precision": "int4"}, {"htp_arch": 70}, {"calibration_method": "kl"},
                                 {"htp_performance_mode": "turbo"}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="valid"):
        QnnConfig.from_options(bad)


def test_fp16_provider_options_carry_soc():
    po = QnnConfig.from_options({"precision": "fp16"}).provider_options()
    assert po["enable_htp_fp16_precision"] == "1" and po["soc_model"] == "57"
    assert "htp_arch" not in po
    assert QnnConfig.from_options({"htp_arch": 75}).provider_options()["htp_arch"] == "75"


def test_container_round_trip_and_corruption():
    blob = container.pack({"ctx": b"abc" * 10, "qdq": b""})
    assert container.unpack(blob) == {"ctx": b"abc" * 10, "qdq": b""}
    with pytest.raises(container.BlobFormatError, match="magic"):
        container.unpack(b"PK\x03\x04" + blob[4:])
    with pytest.raises(container.BlobFormatError, match="truncated"):
        container.unpack(blob[:-5])
    with pytest.raises(container.BlobFormatError, match="trailing"):
        container.unpack(blob + b"x")
    bumped = blob[:8] + (99).to_bytes(4, "little") + blob[12:]
    with pytest.raises(container.BlobFormatError, match="version 99"):
        container.unpack(bumped)


def test_init_rejects_garbage_blob():
    with pytest.raises(ValueError, match="qnn"):
        plugin.init(b"not a blob at all", {"inputs": [], "outputs": []}, {"precision": "int8"})


def test_quantized_preprocess_needs_calibration(qnn):
    ep = qnn.partition_program(nn.Linear(4, 4), (torch.randn(2, 4),))
    with pytest.raises(ValueError, match="calibration"):
        plugin.preprocess(ep, {"precision": "int8"}, None)


@pytest.mark.slow
def test_unknown_soc_model_is_a_clear_error(qnn):
    ep = qnn.partition_program(nn.Linear(4, 4), (torch.randn(2, 4),))
    with pytest.raises(RuntimeError, match=r"qnn: QNN HTP rejected the partition \(fp16, soc_model 35\)"):
        plugin.preprocess(ep, {"precision": "fp16", "soc_model": 35}, None)


@pytest.mark.slow
def test_nothing_reaches_the_terminal(qnn, capfd):
    """Compile, load, run and reference-run: QNN, ORT, torch.onnx and the quantizer stay quiet."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(1, 3, 8, 8)
    ep = qnn.partition_program(m, (x,))
    capfd.readouterr()
    for precision in ("int8", "fp16"):
        opts = {"precision": precision, "calibration_method": "entropy"}
        cd = plugin.preprocess(ep, opts, qnn.calibration_for((x,), n=4) if precision == "int8" else None)
        h = plugin.init(cd.blob, cd.meta, opts)
        plugin.execute(h, [x])
        plugin.reference_execute(cd.blob, cd.meta, opts, [x])
        plugin.destroy(h)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out[:500], err[:500])


@pytest.mark.slow
def test_meta_and_blob(qnn):
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    run = qnn.compile_and_run(m, (x,), "int8", options={"calibration_method": "percentile"})
    meta = run.compiled.meta
    json.dumps(meta)
    assert meta["context_binary_bytes"] > 0
    assert meta["versions"]["onnxruntime_qnn"].startswith("2.") and meta["versions"]["qnn_sdk"]
    assert meta["options"]["calibration_method"] == "percentile" and meta["options"]["soc_model"] == 57
    q = meta["output_quant"][0]
    assert q["dtype"] == "uint8" and q["scale"] == pytest.approx(run.quant(0).scale)
    sections = container.unpack(run.compiled.blob)
    assert set(sections) == {"ctx", "qdq"}
    assert sections["ctx"][:4] != b"" and len(sections["ctx"]) > meta["context_binary_bytes"]
    assert run.compiled.op_counts.get("Conv") == 1


@pytest.mark.slow
def test_non_contiguous_inputs(qnn):
    m = nn.Linear(8, 4).eval()
    x = torch.randn(8, 6).t()  # (6, 8), not contiguous
    assert not x.is_contiguous()
    run = qnn.compile_and_run(m, (x.contiguous(),), "fp16")
    out = plugin.execute(run.handle, [x])[0]
    assert torch.equal(out, run.outputs[0])


@pytest.mark.slow
def test_blob_loads_with_the_runtime_alone(qnn, tmp_path):
    """init/execute in a fresh process import neither torch.onnx's exporter nor the quantizer."""
    m = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 8)
    run = qnn.compile_and_run(m, (x,), "int8")
    (tmp_path / "blob.bin").write_bytes(run.compiled.blob)
    (tmp_path / "meta.json").write_text(json.dumps(run.compiled.meta))
    torch.save({"x": x, "y": run.outputs[0]}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import json, sys, torch
        from delegate_sdk_qnn import plugin
        d = {str(tmp_path)!r}
        blob = open(d + "/blob.bin", "rb").read()
        meta = json.load(open(d + "/meta.json"))
        io = torch.load(d + "/io.pt")
        h = plugin.init(blob, meta, {{"precision": "int8"}})
        y = plugin.execute(h, [io["x"]])[0]
        assert torch.equal(y, io["y"]), (y - io["y"]).abs().max()
        bad = [m for m in ("onnxruntime.quantization", "delegate_sdk_qnn.compiler",
                           "torch.onnx._internal.exporter._core") if m in sys.modules]
        assert not bad, bad
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok" and res.stderr == ""


def test_weight_only_partition_is_folded(qnn_available):
    """A partition with no runtime inputs (a weight transpose whose matmul went elsewhere)."""

    class WeightOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 6))

        def forward(self):
            return self.w.t() * 2, self.w.sum(0, keepdim=True)

    m = WeightOnly().eval()
    ep = torch.export.export(m, ()).run_decompositions()
    for precision in ("int8", "fp16"):
        opts = {"precision": precision}
        cd = plugin.preprocess(ep, opts, [()] if precision == "int8" else None)
        assert cd.output_quant == [None, None]
        h = plugin.init(cd.blob, cd.meta, opts)
        first = plugin.execute(h, [])
        with torch.no_grad():
            expected = m()
        for o, e in zip(first, expected):
            assert o.shape == e.shape and torch.equal(o, e)
        first[0].add_(1)  # the caller owns what execute returns
        assert torch.equal(plugin.execute(h, [])[0], expected[0])
        assert torch.equal(plugin.reference_execute(cd.blob, cd.meta, opts, [])[1], expected[1])
