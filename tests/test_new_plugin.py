"""`delegate-sdk new-plugin` end to end, as a new vendor would go: scaffold, install into a fresh virtual
environment, certify with `delegate-sdk conform`, run the package's own tests.

The fresh venv has no packages of its own; a ``.pth`` file makes the SDK and its dependencies installed here
visible in it (``site.addsitedir``), so that nothing is downloaded, and the plugin is installed into the venv
itself with ``pip install -e``.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from delegate_sdk.errors import UsageError
from delegate_sdk.scaffold import new_plugin

pytestmark = pytest.mark.slow

QUICK = r"^(op/(add|mul|relu|sigmoid|linear|conv2d|softmax)/|model/small_cnn(/|$))"


def _run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DELEGATE_SDK_PLUGINS", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh venv with the scaffolded plugin `acme` installed editable; returns (python, plugin root)."""
    root = tmp_path_factory.mktemp("vendor")
    proc = _run([sys.executable, "-m", "delegate_sdk.cli", "new-plugin", "acme", "--dir", str(root)], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env_dir = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    proc = _run([base, "-m", "venv", "--without-pip", str(env_dir)], root)
    assert proc.returncode == 0, proc.stderr
    python = env_dir / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root).stdout.strip()
    (Path(purelib) / "delegate_sdk_base.pth").write_text(f"import site; site.addsitedir({site.getsitepackages()[0]!r})\n")
    proc = _run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "-e",
                 str(root / "acme")], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return python, root / "acme"


def test_scaffold_conforms_out_of_the_box(venv: tuple[Path, Path], tmp_path: Path) -> None:
    python, plugin = venv
    proc = _run([str(python), "-m", "delegate_sdk.cli", "plugins", "--json"], tmp_path)
    listed = {p["name"]: p for p in json.loads(proc.stdout)}
    assert listed["acme"]["available"], listed["acme"]
    report = tmp_path / "report"
    proc = _run([str(python), "-m", "delegate_sdk.cli", "conform", "--plugin", "acme", "-k", QUICK,
                 "--min-ops", "5", "--report-dir", str(report)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((report / "report.json").read_text())
    assert data["verdict"]["passed"] and not data["verdict"]["problems"], data["verdict"]
    passed = set(data["summary"]["ops_passed_fully_delegated"])
    assert {"aten.convolution.default", "aten.addmm.default", "aten.relu.default"} <= passed, passed
    assert data["expectations"]["source"].startswith("delegate_sdk_acme/expectations.toml")


def test_scaffold_own_tests_pass(venv: tuple[Path, Path]) -> None:
    python, plugin = venv
    proc = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], plugin)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout, proc.stdout[-2000:]  # 4 kit tests + the conform line from pyproject


def test_a_broken_scaffold_fails_its_conformance(venv: tuple[Path, Path], tmp_path: Path) -> None:
    """The scaffold's certificate means something: a sign error planted in its relu emitter is caught."""
    python, plugin = venv
    compiler = plugin / "delegate_sdk_acme" / "compiler.py"
    original = compiler.read_text()
    broken = original.replace('"aten.relu.default": "Relu"', '"aten.relu.default": "Abs"')
    assert broken != original
    compiler.write_text(broken)
    try:
        proc = _run([str(python), "-m", "delegate_sdk.cli", "conform", "--plugin", "acme", "-k", r"^op/relu/",
                     "--report-dir", str(tmp_path / "r")], tmp_path)
    finally:
        compiler.write_text(original)
    assert proc.returncode == 1, proc.stdout[-2000:]
    outcomes = {c["outcome"] for c in json.loads((tmp_path / "r" / "report.json").read_text())["cases"]}
    assert "FAIL_MISMATCH" in outcomes, outcomes


def test_new_plugin_refuses_bad_names_and_overwrites(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="lower-case"):
        new_plugin("Acme-NPU", tmp_path)
    with pytest.raises(UsageError, match="lower-case"):
        new_plugin("class", tmp_path)
    made = new_plugin("npu2", tmp_path)
    assert (made.root / "delegate_sdk_npu2" / "support.py").is_file()
    assert (made.root / "tests" / "test_npu2.py").is_file()
    assert not any("{{" in f.read_text() for f in made.files)
    with pytest.raises(UsageError, match="already exists"):
        new_plugin("npu2", tmp_path)
