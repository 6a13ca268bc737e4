"""Helpers for plugin authors' own test suites: run ``delegate-sdk conform`` exactly as a user would.

A plugin's CI should run a quick conformance subset through the real command line (worker processes,
expectations, reports), not through engine internals, so that what CI certifies is what users run::

    from delegate_sdk.testing import run_conform

    def test_quick_conformance(tmp_path):
        run = run_conform("myplugin", ["-k", "^op/(add|conv2d)/"], tmp_path)
        run.assert_quick_subset(min_ops=2)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delegate_sdk.conformance.expectations import is_unexpected


@dataclass
class ConformRun:
    """The outcome of one ``delegate-sdk conform`` process."""

    exit_code: int
    output: str
    cases: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(c["outcome"] for c in self.cases)

    verdict: dict[str, Any] = field(default_factory=dict)

    def passed_ops(self) -> set[str]:
        """Distinct ops every claimed sample of which passed fully delegated (as the report counts them)."""
        return set(self.summary.get("ops_passed_fully_delegated", ()))

    def assert_clean(self, min_pass: int = 1) -> None:
        """Exit code 0 (no unexpected outcome, and the run certified something), and at least ``min_pass``
        samples PASS (so an empty selection or a plugin that claims nothing cannot look clean)."""
        bad = [f"{c['id']}: {c['outcome']} {c['detail']}" for c in self.cases if is_unexpected(c["outcome"], False)]
        assert self.exit_code == 0 and not bad, (
            f"conform exited {self.exit_code}; unexpected: {bad}; not certified: "
            f"{self.verdict.get('problems')}\n{self.output[-4000:]}")
        passed = self.outcomes["PASS"] + self.outcomes["PASS_PARTIAL"]
        assert passed >= min_pass, f"only {passed} samples passed (want >= {min_pass}): {dict(self.outcomes)}"

    def assert_quick_subset(self, min_pass: int = 5, min_ops: int = 4) -> None:
        """What a plugin's CI subset must show: clean, at least ``min_ops`` distinct ops pass fully delegated,
        and at least one model case passes (so the subset really ran on the vendor's toolchain)."""
        self.assert_clean(min_pass=min_pass)
        assert len(self.passed_ops()) >= min_ops, (sorted(self.passed_ops()), dict(self.outcomes))
        assert any(c["kind"] == "model" and c["outcome"] in ("PASS", "PASS_PARTIAL") for c in self.cases), \
            dict(self.outcomes)


def run_conform(plugin: str, args: list[str], report_dir: Path, timeout_s: float = 1800) -> ConformRun:
    """Run ``delegate-sdk conform --plugin PLUGIN ARGS --report-dir REPORT_DIR`` in a child process and
    read back its ``report.json``."""
    cmd = [sys.executable, "-m", "delegate_sdk.cli", "conform", "--plugin", plugin, *args,
           "--report-dir", str(report_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    output = proc.stdout + proc.stderr
    report = Path(report_dir) / "report.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    return ConformRun(proc.returncode, output, data.get("cases", []), data.get("summary", {}),
                      data.get("verdict", {}))
