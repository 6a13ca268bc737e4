"""`delegate-sdk inspect --estimate` shows Vela's cycle and memory estimate for every Ethos-U partition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from delegate_sdk.cli import main

ROOT = Path(__file__).resolve().parents[3]  # examples.models resolves from the working directory


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ethos-u55-128", "ethos-u85-256"])
def test_inspect_estimate_shows_vela_numbers(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    monkeypatch.chdir(ROOT)
    args = ["inspect", "examples.models:conv_net", "--backends", "arm_ethos", "--estimate",
            "--option", f"arm_ethos.target={target}"]
    res = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    parts = [p for p in report["partitions"] if p["backend"] == "arm_ethos"]
    assert parts
    for p in parts:
        perf = p["perf"]
        assert perf["cycles"] > 0 and perf["inference_time_s"] > 0 and perf["sram_bytes"] > 0, perf
        assert perf["macs"] > 100_000 and target in perf["source"] and "vela" in perf["source"]

    table = CliRunner().invoke(main, args, catch_exceptions=False)
    assert table.exit_code == 0, table.output
    assert f"{parts[0]['perf']['cycles']:,} cycles" in table.stdout and "SRAM" in table.stdout
