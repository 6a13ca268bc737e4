"""A quick conformance subset through the real ``delegate-sdk conform`` command (the full run is on demand:
see this plugin's README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from delegate_sdk.testing import run_conform

QUICK = r"^(op/(add|relu|conv2d|linear|avg_pool2d|mean)|model/small_cnn)(/|$)"


@pytest.mark.slow
@pytest.mark.parametrize("value", ["ethos-u55-128", "ethos-u85-256"])
def test_quick_conformance_subset(tmp_path: Path, value: str) -> None:
    run = run_conform("arm_ethos", ["--option", f"arm_ethos.target={value}", "-k", QUICK, "--no-bisect"], tmp_path)
    run.assert_quick_subset(min_pass=5, min_ops=4)  # really ran on the TOSA reference model after Vela
