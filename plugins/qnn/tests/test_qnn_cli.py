"""The command line as a user runs it: inspect, lower, then run --check, on a conv net and on PyTorch's own
transformer encoder layer (examples/models.py), on the HTP emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from delegate_sdk.cli import main

ROOT = Path(__file__).resolve().parents[3]  # examples.models resolves from the working directory


@pytest.fixture
def in_repo_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(ROOT)
    return ROOT


def invoke(*args: str) -> str:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
@pytest.mark.parametrize("model,precision,min_sqnr", [
    ("conv_net", "int8", 25.0), ("encoder_layer", "int8", 25.0), ("conv_net", "fp16", 50.0)])
def test_inspect_lower_run_check(in_repo_root: Path, tmp_path: Path, model: str, precision: str,
                                 min_sqnr: float) -> None:
    ref = f"examples.models:{model}"
    before = set(in_repo_root.iterdir())
    report = json.loads(invoke("inspect", ref, "--backends", "qnn", "--json",
                               "--option", f"qnn.precision={precision}"))
    assert report["partitions"] and all(p["backend"] == "qnn" for p in report["partitions"])
    for node in report["nodes"]:  # what QNN does not take says why
        if node["backend"] != "qnn":
            assert node["reasons"] and all(r["backend"] == "qnn" and r["message"] for r in node["reasons"]), node

    artifact = tmp_path / f"{model}.dsdk"
    out = invoke("lower", ref, "--backends", "qnn", "-o", str(artifact), "--option", f"qnn.precision={precision}",
                 "--calibration-samples", "8")
    assert artifact.exists() and "qnn-epcontext" in out

    run = json.loads(invoke("run", str(artifact), "--check", ref, "--json", "--repeat", "2"))
    (check,) = run["check"]
    assert check["sqnr_db"] is not None and check["sqnr_db"] >= min_sqnr, check
    assert set(in_repo_root.iterdir()) == before  # the toolchain left nothing in the working directory


@pytest.mark.slow
def test_inspect_table_shows_why_not(in_repo_root: Path) -> None:
    # the encoder's attention reshapes through a rank-5 tensor, beyond HTP's rank limit of 4
    out = invoke("inspect", "examples.models:encoder_layer", "--backends", "qnn")
    assert "on eager PyTorch" in out and "rank 5 exceeds" in out
