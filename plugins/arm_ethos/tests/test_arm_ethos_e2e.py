"""End to end through the core: lower -> run -> save -> load, Vela's estimate, the blob, hygiene."""

from __future__ import annotations

import glob
import os
import tempfile
import time

import pytest
import torch
import torch.nn as nn

import delegate_sdk
from delegate_sdk_arm_ethos import blob as blobfmt
from delegate_sdk_arm_ethos import plugin


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.c1(x)))
        x = nn.functional.max_pool2d(x, 2)
        x = nn.functional.hardswish(self.c2(x))
        return self.fc(x.mean((2, 3)))


def _leftover_tempdirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "delegate_sdk_arm_ethos_*")))


@pytest.fixture(scope="module")
def lowered():
    torch.manual_seed(0)
    m = SmallConvNet().eval()
    x = torch.randn(1, 3, 32, 32)
    calib = [(torch.randn(1, 3, 32, 32),) for _ in range(8)]
    before = _leftover_tempdirs()
    t0 = time.perf_counter()
    prog = delegate_sdk.lower(m, (x,), backends=["arm_ethos"], calibration=calib,
                              options={"arm_ethos": {"target": "ethos-u55-128"}})
    return m, x, prog, time.perf_counter() - t0, before


@pytest.mark.slow
def test_whole_net_is_one_npu_partition(lowered):
    m, x, prog, _, _ = lowered
    s = prog.summary()
    assert len(s.partitions) == 1 and not s.fallback
    rec = s.partitions[0]
    assert rec.backend == "arm_ethos" and rec.format == blobfmt.FORMAT
    assert rec.output_quant and rec.output_quant[0].dtype == "int8"
    assert rec.op_counts["CONV2D"] == 3  # two convs and the linear
    assert rec.meta["target"] == "ethos-u55-128" and rec.meta["system_config"] == "Ethos_U55_High_End_Embedded"


@pytest.mark.slow
def test_numerics_against_eager_and_reference(lowered):
    m, x, prog, _, _ = lowered
    y = prog(x)
    ref = m(x).detach()
    scale = prog.summary().partitions[0].output_quant[0].scale
    assert float((y - ref).abs().max()) / scale <= 4.0
    fq = prog.reference("p0", [x]) if hasattr(prog, "reference") else None
    if fq is not None:
        assert float((y - fq[0]).abs().max()) / scale <= 1.5


@pytest.mark.slow
def test_vela_estimate_is_reported(lowered):
    _, _, prog, _, _ = lowered
    rec = prog.summary().partitions[0]
    perf = rec.perf
    assert perf is not None and perf.source.startswith("vela 5.2.0 ethos-u55-128")
    assert perf.cycles > 1000 and perf.inference_time_s > 0 and perf.macs > 100_000
    assert perf.sram_bytes > 0 and perf.flash_bytes > 0
    v = rec.meta["vela"]
    assert v["cpu_ops"] == 0 and v["npu_ops"] > 0 and v["command_stream_bytes"] > 0
    assert v["cycles"] == perf.cycles


@pytest.mark.slow
def test_save_load_roundtrip(lowered, tmp_path):
    _, x, prog, _, _ = lowered
    path = tmp_path / "net.pt2"
    prog.save(path)
    again = delegate_sdk.load(path)
    assert torch.equal(again(x), prog(x))


@pytest.mark.slow
def test_toolchain_leaves_no_files_and_prints_nothing(lowered, capfd):
    _, x, prog, _, before = lowered
    assert _leftover_tempdirs() <= before
    prog(x)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_preprocess_requires_calibration(exported, opts):
    ep = exported(nn.Linear(4, 4), (torch.randn(2, 4),))
    with pytest.raises(ValueError, match="calibration"):
        plugin.preprocess(ep, opts(), None)


@pytest.mark.slow
def test_preprocess_prints_nothing(exported, opts, capfd):
    ep = exported(nn.Conv2d(2, 4, 3), (torch.randn(1, 2, 6, 6),))
    cd = plugin.preprocess(ep, opts("ethos-u85-256"), [(torch.randn(1, 2, 6, 6),)])
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    h = plugin.init(cd.blob, cd.meta, opts("ethos-u85-256"), cd.sections)
    y = plugin.execute(h, [torch.randn(1, 2, 6, 6).transpose(2, 3)])  # non-contiguous input
    assert y[0].shape == (1, 4, 4, 4) and y[0].dtype == torch.float32
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    ref = plugin.reference_execute(cd.blob, cd.meta, opts("ethos-u85-256"), [torch.ones(1, 2, 6, 6)], cd.sections)
    got = plugin.execute(h, [torch.ones(1, 2, 6, 6)])
    assert float((ref[0] - got[0]).abs().max()) <= cd.output_quant[0].scale * 1.001
    plugin.destroy(h)


def test_describe():
    info = plugin.describe()
    assert info.available, info.unavailable_reason
    assert info.precisions == ("int8", "a16w8") and info.default_precision == "int8"
    assert "aten.linear.default" in info.keep_ops
    assert {o.name for o in info.options} == {"target", "system_config", "memory_mode"}
