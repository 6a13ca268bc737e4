"""describe, options, the blob format (and loading older versions), error paths, silence, runtime-only loading."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
import torch.nn as nn

import delegate_sdk
from delegate_sdk.types import BackendInfo, CompiledDelegate
from delegate_sdk_qnn import blob_format, plugin
from delegate_sdk_qnn.options import QnnConfig
from delegate_sdk_qnn.testing import calibration_for, capture, compile_and_run


def test_describe():
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


def legacy_container(sections: dict[str, bytes]) -> bytes:
    """A blob as versions 1 and 2 of this plugin wrote it (the reader still loads them; nothing writes them)."""
    parts = [b"DSDKQNN\0", struct.pack("<II", 1, len(sections))]
    for name, payload in sections.items():
        raw = name.encode()
        parts += [struct.pack("<H", len(raw)), raw, struct.pack("<Q", len(payload)), payload]
    return b"".join(parts)


def as_version_2(cd: CompiledDelegate) -> tuple[bytes, dict]:
    """The blob and meta the version-2 compiler wrote for what ``cd`` holds: one container, no sections."""
    meta = {k: v for k, v in cd.meta.items() if k not in ("format_version", "sections")}
    if meta.get("constant"):
        return legacy_container({"const": cd.blob}), meta
    qdq = {"qdq": cd.sections[blob_format.QDQ_SECTION]} if blob_format.QDQ_SECTION in cd.sections else {}
    return legacy_container({"ctx": cd.blob, **qdq}), meta


def test_legacy_blob_reads_and_corruption_is_named():
    blob = legacy_container({"ctx": b"abc" * 10, "qdq": b"q"})
    assert blob_format.read(blob, {}, {}) == blob_format.BlobParts(b"abc" * 10, b"q", None)
    assert blob_format.read(legacy_container({"const": b"12"}), {}, {}).constants == b"12"
    with pytest.raises(blob_format.BlobFormatError, match="magic"):
        blob_format.read(b"PK\x03\x04" + blob[4:], {}, {})
    with pytest.raises(blob_format.BlobFormatError, match="truncated"):
        blob_format.read(blob[:-5], {}, {})
    with pytest.raises(blob_format.BlobFormatError, match="trailing"):
        blob_format.read(blob + b"x", {}, {})
    with pytest.raises(blob_format.BlobFormatError, match="version 99"):
        blob_format.read(blob[:8] + (99).to_bytes(4, "little") + blob[12:], {}, {})
    with pytest.raises(blob_format.BlobFormatError, match="no EPContext"):
        blob_format.read(legacy_container({"qdq": b"q"}), {}, {})


def test_v3_blob_needs_its_sections():
    meta = blob_format.format_meta({blob_format.QDQ_SECTION: b"q"})
    assert meta == {"format_version": 3, "sections": ["qdq.onnx"]}
    assert blob_format.read(b"ctx", meta, {"qdq.onnx": b"q"}) == blob_format.BlobParts(b"ctx", b"q", None)
    with pytest.raises(blob_format.BlobFormatError, match=r"section\(s\) \['qdq.onnx'\] were not given"):
        blob_format.read(b"ctx", meta, {})
    with pytest.raises(blob_format.BlobFormatError, match="format version 4"):
        blob_format.read(b"ctx", {"format_version": 4}, {})
    with pytest.raises(blob_format.BlobFormatError, match="no EPContext"):
        blob_format.read(b"", blob_format.format_meta({}), {})


def test_init_rejects_garbage_blob():
    with pytest.raises(ValueError, match="qnn"):
        plugin.init(b"not a blob at all", {"inputs": [], "outputs": []}, {"precision": "int8"}, {})
    with pytest.raises(ValueError, match=r"qnn: the blob's section\(s\)"):
        plugin.init(b"\x08\x07", {**blob_format.format_meta({"qdq.onnx": b""}), "inputs": [], "outputs": []},
                    {"precision": "int8"}, {})


def test_quantized_preprocess_needs_calibration():
    ep = capture(nn.Linear(4, 4), (torch.randn(2, 4),))
    with pytest.raises(ValueError, match="calibration"):
        plugin.preprocess(ep, {"precision": "int8"}, None)


@pytest.mark.slow
def test_unknown_soc_model_is_a_clear_error():
    ep = capture(nn.Linear(4, 4), (torch.randn(2, 4),))
    with pytest.raises(RuntimeError, match=r"qnn: QNN HTP rejected the partition \(fp16, soc_model 35\)"):
        plugin.preprocess(ep, {"precision": "fp16", "soc_model": 35}, None)


@pytest.mark.slow
def test_nothing_reaches_the_terminal(capfd):
    """Compile, load, run and reference-run: QNN, ORT, torch.onnx and the quantizer stay quiet."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(1, 3, 8, 8)
    ep = capture(m, (x,))
    capfd.readouterr()
    for precision in ("int8", "fp16"):
        opts = {"precision": precision, "calibration_method": "entropy"}
        cd = plugin.preprocess(ep, opts, calibration_for((x,), n=4) if precision == "int8" else None)
        h = plugin.init(cd.blob, cd.meta, opts, cd.sections)
        plugin.execute(h, [x])
        plugin.reference_execute(cd.blob, cd.meta, opts, [x], cd.sections)
        plugin.destroy(h)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out[:500], err[:500])


@pytest.mark.slow
def test_meta_and_blob():
    import onnx

    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    run = compile_and_run(m, (x,), "int8", options={"calibration_method": "percentile"})
    cd, meta = run.compiled, run.compiled.meta
    json.dumps(meta)
    assert cd.format_version == meta["format_version"] == 3
    assert meta["context_binary_bytes"] > 0
    assert meta["versions"]["onnxruntime_qnn"].startswith("2.") and meta["versions"]["qnn_sdk"]
    assert meta["options"]["calibration_method"] == "percentile" and meta["options"]["soc_model"] == 57
    q = meta["output_quant"][0]
    assert q["dtype"] == "uint8" and q["scale"] == pytest.approx(run.quant(0).scale)
    # the blob is the EPContext model itself; the fake-quant reference travels as a section
    ctx = onnx.load_from_string(cd.blob)
    assert {n.op_type for n in ctx.graph.node} == {"EPContext"}
    assert len(cd.blob) > meta["context_binary_bytes"]
    assert set(cd.sections) == {"qdq.onnx"} and meta["sections"] == ["qdq.onnx"]
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load_from_string(cd.sections["qdq.onnx"]).graph.node)
    assert cd.op_counts.get("Conv") == 1
    with pytest.raises(ValueError, match=r"section\(s\) \['qdq.onnx'\]"):
        plugin.reference_execute(cd.blob, meta, run.options, [x], {})
    fp16 = compile_and_run(m, (x,), "fp16").compiled
    assert fp16.sections == {} and fp16.meta["sections"] == []


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_version_2_blob_still_loads(precision):
    """A blob and meta as the version-2 plugin wrote them give the very outputs the version-3 blob gives."""
    m = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 8)
    run = compile_and_run(m, (x,), precision)
    blob, meta = as_version_2(run.compiled)
    h = plugin.init(blob, meta, run.options, {})
    assert torch.equal(plugin.execute(h, [x])[0], run.outputs[0])
    ref = plugin.reference_execute(blob, meta, run.options, [x], {})
    assert (ref is None) == (run.reference is None)
    if ref is not None:
        assert torch.equal(ref[0], run.reference[0])


def _rewrite_as_version_2(src, dst) -> None:
    """``src`` (an artifact of this plugin) as the version-2 plugin saved it: each partition's parts packed
    in its blob, no sections, format_version 2 in the partition table."""
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(entries.pop("manifest.json"))
    for rec in manifest["partitions"]:
        sections = {name: entries[f"sections/{sha}.bin"] for name, sha in rec["sections"].items()}
        cd = CompiledDelegate(blob=entries[f"blobs/{rec['id']}.bin"], format=rec["format"], format_version=3,
                              meta=rec["meta"], sections=sections)
        blob, rec["meta"] = as_version_2(cd)
        entries[f"blobs/{rec['id']}.bin"] = blob
        rec.update(format_version=2, sections={}, blob_sha256=hashlib.sha256(blob).hexdigest(), blob_size=len(blob))
    entries = {n: d for n, d in entries.items() if not n.startswith("sections/")}
    manifest["sha256"] = {n: hashlib.sha256(d).hexdigest() for n, d in entries.items()}
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        for n, d in entries.items():
            z.writestr(n, d)


@pytest.mark.slow
def test_version_2_artifact_still_loads(tmp_path):
    """An artifact saved before blob sections (hosted ops on, so one partition holds CPU-provider nodes)."""
    class ErfNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            return self.b(torch.erf(self.a(x)))

    torch.manual_seed(0)
    m, x = ErfNet().eval(), torch.randn(2, 8)
    program = delegate_sdk.lower(m, (x,), ["qnn"], options={"qnn": {"precision": "int8"}}, hosted_ops=True,
                                 calibration=calibration_for((x,), n=8))
    program.save(tmp_path / "v3.dsdk")
    _rewrite_as_version_2(tmp_path / "v3.dsdk", tmp_path / "v2.dsdk")
    old = delegate_sdk.load(tmp_path / "v2.dsdk")
    assert [r.format_version for r in old._parts.records] == [2]
    with torch.no_grad():
        assert torch.equal(old(x), program(x))


@pytest.mark.slow
def test_non_contiguous_inputs():
    m = nn.Linear(8, 4).eval()
    x = torch.randn(8, 6).t()  # (6, 8), not contiguous
    assert not x.is_contiguous()
    run = compile_and_run(m, (x.contiguous(),), "fp16")
    out = plugin.execute(run.handle, [x])[0]
    assert torch.equal(out, run.outputs[0])


@pytest.mark.slow
def test_blob_loads_with_the_runtime_alone(tmp_path):
    """init/execute in a fresh process import neither torch.onnx's exporter nor the quantizer."""
    m = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 8)
    run = compile_and_run(m, (x,), "int8")
    (tmp_path / "blob.bin").write_bytes(run.compiled.blob)
    (tmp_path / "qdq.onnx").write_bytes(run.compiled.sections["qdq.onnx"])
    (tmp_path / "meta.json").write_text(json.dumps(run.compiled.meta))
    torch.save({"x": x, "y": run.outputs[0]}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import json, sys, torch
        from delegate_sdk_qnn import plugin
        d = {str(tmp_path)!r}
        blob = open(d + "/blob.bin", "rb").read()
        meta = json.load(open(d + "/meta.json"))
        io = torch.load(d + "/io.pt")
        sections = {{"qdq.onnx": open(d + "/qdq.onnx", "rb").read()}}
        h = plugin.init(blob, meta, {{"precision": "int8"}}, sections)
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


def test_weight_only_partition_is_folded():
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
        assert cd.sections == {}
        h = plugin.init(cd.blob, cd.meta, opts, cd.sections)
        first = plugin.execute(h, [])
        with torch.no_grad():
            expected = m()
        for o, e in zip(first, expected):
            assert o.shape == e.shape and torch.equal(o, e)
        first[0].add_(1)  # the caller owns what execute returns
        assert torch.equal(plugin.execute(h, [])[0], expected[0])
        assert torch.equal(plugin.reference_execute(cd.blob, cd.meta, opts, [], cd.sections)[1], expected[1])
        # and as the version-2 plugin stored it
        blob, meta = as_version_2(cd)
        assert torch.equal(plugin.execute(plugin.init(blob, meta, opts, {}), [])[1], expected[1])
