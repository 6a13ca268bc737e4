"""The delegate-sdk command, run as a user runs it (a subprocess), with the test plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parent
PLUGINS = "lin=dsdk_test_plugins.ir_backend:LINEAR_ONLY,elem=dsdk_test_plugins.ir_backend:ELEMENTWISE_ONLY"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DELEGATE_SDK_PLUGINS=PLUGINS, PYTHONPATH=str(TESTS), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "delegate_sdk.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_help_on_every_command():
    for cmd in ([], ["plugins"], ["inspect"], ["lower"], ["run"]):
        r = cli(*cmd, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout, r.stderr


def test_plugins_json():
    r = cli("plugins", "--json")
    assert r.returncode == 0, r.stderr
    infos = {i["name"]: i for i in json.loads(r.stdout)}
    assert {"lin", "elem"} <= set(infos) and infos["lin"]["available"] is True


def test_inspect_table_and_json():
    r = cli("inspect", "dsdk_test_plugins.models:small_cnn", "--backends", "lin,elem")
    assert r.returncode == 0, r.stderr
    assert "nodes delegated" in r.stdout and "aten.sin.default" in r.stdout and "not in ir_linear" in r.stdout
    r = cli("inspect", "dsdk_test_plugins.models:small_cnn", "--backends", "lin,elem", "--estimate")
    assert r.returncode == 0 and "cycles" in r.stdout, r.stderr
    j = json.loads(cli("inspect", "dsdk_test_plugins.models:small_cnn", "--backends", "lin,elem", "--json").stdout)
    sin = next(n for n in j["nodes"] if n["op"] == "aten.sin.default")
    assert sin["partition"] is None and {r["backend"] for r in sin["reasons"]} == {"lin", "elem"}


def test_lower_then_run_check(tmp_path):
    out = tmp_path / "cnn.dsdk"
    r = cli("lower", "dsdk_test_plugins.models:small_cnn", "--backends", "lin,elem", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "nodes delegated" in r.stdout
    r = cli("run", str(out), "--check", "dsdk_test_plugins.models:small_cnn", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["outputs"] == [{"dtype": "float32", "shape": [2, 5]}]
    assert res["check"][0]["max_abs_err"] == 0.0 and res["same_model"] is True
    # checked against another model (same architecture, other weights): said, not silently compared
    r = cli("run", str(out), "--check", "dsdk_test_plugins.models:small_cnn_retrained")
    assert r.returncode == 0 and "is not the model" in r.stderr, r.stdout + r.stderr
    r = cli("run", str(out), "--check", "dsdk_test_plugins.models:small_cnn_retrained", "--json")
    assert json.loads(r.stdout)["same_model"] is False
    # explicit inputs from a .npz file
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x)
    r = cli("run", str(out), "--inputs", str(tmp_path / "in.npz"), "--check", "dsdk_test_plugins.models:small_cnn")
    assert r.returncode == 0, r.stderr
    assert "vs eager" in r.stdout


def test_lower_pt2_file(tmp_path):
    from dsdk_test_plugins.models import small_cnn

    model, inputs = small_cnn()
    pt2 = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, inputs), str(pt2))
    r = cli("lower", str(pt2), "--backends", "lin", "-o", str(tmp_path / "m.dsdk"), "--option", "lin.level=2")
    assert r.returncode == 0, r.stderr
    r = cli("run", str(tmp_path / "m.dsdk"), "--check", str(pt2), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["check"][0]["max_abs_err"] == 0.0


def test_a_pt2_whose_outputs_are_a_libraries_types_loads_in_a_new_process(tmp_path):
    """A transformers model exported with its keyword call returns a ModelOutput: torch.export.load reads the
    file only once transformers registered that type, which a fresh `delegate-sdk` process has not done."""
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)
    model = ResNetForImageClassification(cfg).eval()
    pt2 = tmp_path / "hf.pt2"
    torch.export.save(torch.export.export(model, (), {"pixel_values": torch.randn(1, 3, 16, 16)}), str(pt2))
    r = cli("lower", str(pt2), "--backends", "lin,elem", "-o", str(tmp_path / "hf.dsdk"))
    assert r.returncode == 0, r.stderr
    assert "nodes delegated" in r.stdout and "Traceback" not in r.stderr
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    r = cli("inspect", str(tmp_path / "junk.pt2"), "--backends", "lin")
    assert r.returncode == 1 and "is not a .pt2 file written by torch.export.save" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args, code, message", [
    (["inspect", "dsdk_test_plugins.models:small_cnn", "--backends", "nope"], 2, "unknown backend 'nope'"),
    (["lower", "dsdk_test_plugins.models:small_cnn", "--backends", "lin", "-o", "x.dsdk", "--option", "lin.zz=1"],
     2, "has no option 'zz'"),
    (["lower", "dsdk_test_plugins.models:small_cnn", "--backends", "lin", "-o", "x.dsdk", "--option", "bad"],
     2, "must look like backend.key=value"),
    (["inspect", "no_such_pkg_xyz:make", "--backends", "lin"], 2, "cannot import no_such_pkg_xyz:make"),
    (["lower", "dsdk_test_plugins.models:small_cnn", "--backends", "lin,elem", "-o", "x.dsdk", "--strict"],
     1, "strict mode: 1 node"),
    (["inspect"], 2, "Missing argument"),
])
def test_errors_are_one_line_with_exit_codes(tmp_path, args, code, message):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_run_corrupt_artifact(tmp_path):
    p = tmp_path / "bad.dsdk"
    p.write_bytes(b"PK\x03\x04garbage")
    r = cli("run", str(p))
    assert r.returncode == 1 and "corrupt or truncated" in r.stderr and "Traceback" not in r.stderr


def test_a_model_called_with_keywords_lowers_and_runs_from_the_cli(tmp_path):
    out = tmp_path / "kw.dsdk"
    r = cli("lower", "dsdk_test_plugins.models:keyword_net", "--backends", "lin,elem", "-o", str(out),
            "--calibration-samples", "2")
    assert r.returncode == 0, r.stderr
    r = cli("run", str(out), "--check", "dsdk_test_plugins.models:keyword_net", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [o["shape"] for o in res["outputs"]] == [[2, 4, 8], [2, 8]]
    assert all(m["sqnr_db"] is None or m["sqnr_db"] > 100 for m in res["check"])
    r = cli("inspect", "dsdk_test_plugins.models:keyword_net", "--backends", "lin,elem", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["nodes_delegated"] > 0, r.stderr


def test_run_check_per_layer(tmp_path):
    out = tmp_path / "cnn.dsdk"
    assert cli("lower", "dsdk_test_plugins.models:small_cnn", "--backends", "lin,elem", "-o", str(out)).returncode == 0
    r = cli("run", str(out), "--check", "dsdk_test_plugins.models:small_cnn", "--per-layer", "--json")
    assert r.returncode == 0, r.stderr
    layers = json.loads(r.stdout)["per_layer"]
    assert len(layers["partitions"]) >= 2 and layers["sqnr_db"] is None  # the test engines are exact
    assert all(p["sqnr_db"] is None and p["local_sqnr_db"] is None and p["modules"] for p in layers["partitions"])
    # against other weights every partition is off, in the run and alone (the artifact keeps its weights)
    r = cli("run", str(out), "--check", "dsdk_test_plugins.models:small_cnn_retrained", "--per-layer")
    assert r.returncode == 0 and "SQNR alone" in r.stdout and "conv, bn" in r.stdout, r.stdout + r.stderr
    r = cli("run", str(out), "--check", "dsdk_test_plugins.models:small_cnn_retrained", "--per-layer", "--json")
    parts = json.loads(r.stdout)["per_layer"]["partitions"]
    assert any(p["local_sqnr_db"] is not None for p in parts)
    r = cli("run", str(out), "--per-layer")
    assert r.returncode == 2 and "give the model with --check MODEL" in r.stderr
