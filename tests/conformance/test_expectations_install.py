"""Expectations ship with the plugin: found through its package, the same editable and installed from a wheel.

A small out-of-tree plugin (a package with an entry point, its known failure in package data) is installed
into a fresh site directory both ways; ``delegate-sdk conform`` then runs in a process that sees that site
directory as site-packages (a ``sitecustomize`` that calls ``site.addsitedir``, inherited by the workers).
A stray ``expectations.toml`` at the site root must never apply.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PLUGIN = '''
"""A probe plugin: runs each partition's ExportedProgram, but turns NaN into 0 (its known failure)."""
import io

import torch

from delegate_sdk import BackendInfo, Claims, CompiledDelegate, ReasonCode, Refusal, hookimpl
from delegate_sdk.support import op_name


@hookimpl
def describe():
    return BackendInfo("dsdk_exp_probe", "0.1", ("fp32",), "fp32", "probe-pt2", 1, (1, 1))


@hookimpl
def claim(program, nodes, options):
    ok = [n.name for n in nodes if op_name(n) == "aten.log.default"]
    return Claims(tuple(ok), tuple(Refusal(n.name, ReasonCode.OP, "only log") for n in nodes if n.name not in ok))


@hookimpl
def preprocess(program, options, calibration):
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return CompiledDelegate(buf.getvalue(), "probe-pt2", 1)


@hookimpl
def init(blob, meta, options):
    return torch.export.load(io.BytesIO(blob)).module()


@hookimpl
def execute(handle, inputs):
    with torch.no_grad():
        out = handle(*[x.contiguous() for x in inputs])
    return [torch.nan_to_num(o, nan=0.0, posinf=float("inf"), neginf=float("-inf")) for o in out]
'''

EXPECTATIONS = '''
[[expect]]
case = "op/log/edge"
outcome = "FAIL_MISMATCH"
reason = "the probe turns NaN into 0"
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "dsdk-exp-probe"
version = "0.1"

[project.entry-points.delegate_sdk]
dsdk_exp_probe = "dsdk_exp_probe.plugin"

[tool.setuptools]
packages = ["dsdk_exp_probe"]

[tool.setuptools.package-data]
dsdk_exp_probe = ["expectations.toml"]
'''


@pytest.fixture(scope="module")
def probe_src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probe-src")
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    pkg = root / "dsdk_exp_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(PLUGIN)
    (pkg / "expectations.toml").write_text(EXPECTATIONS)
    return root


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "-q", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", ["editable", "wheel"])
def test_expectations_ship_with_the_plugin(tmp_path, probe_src, mode):
    site_dir = tmp_path / "site"
    if mode == "editable":
        _pip("install", "--no-deps", "--no-build-isolation", "--target", str(site_dir), "-e", str(probe_src))
    else:
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheels"), str(probe_src))
        (wheel,) = (tmp_path / "wheels").glob("*.whl")
        assert "dsdk_exp_probe/expectations.toml" in zipfile.ZipFile(wheel).namelist()
        _pip("install", "--no-deps", "--target", str(site_dir), str(wheel))
        assert not (site_dir / "dsdk_exp_probe" / "plugin.py").is_relative_to(probe_src)
    # a stray file at the site root that would turn every failure into XFAIL (and every pass into XPASS)
    (site_dir / "expectations.toml").write_text('[[expect]]\ncase = "op/*"\nreason = "stray"\n')
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(f"import site\nsite.addsitedir({str(site_dir)!r})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DELEGATE_SDK_PLUGINS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(shim)
    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "delegate_sdk.cli", "conform", "--plugin", "dsdk_exp_probe", "-k",
                           r"^op/log/(normal|edge)$", "--jobs", "1", "--report-dir", str(report)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = json.loads((report / "report.json").read_text())
    cases = {c["id"]: c for c in d["cases"]}
    assert cases["op/log/normal"]["outcome"] == "PASS"  # the stray file did not apply
    assert cases["op/log/edge"]["outcome"] == "XFAIL"
    assert cases["op/log/edge"]["expectation"] == "the probe turns NaN into 0"
    src = d["expectations"]
    assert src["source"].startswith("dsdk_exp_probe/expectations.toml") and src["entries"] == 1
    assert src["sha256"] == hashlib.sha256(EXPECTATIONS.encode()).hexdigest()
