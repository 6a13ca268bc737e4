"""Plugin discovery and validation of the contract at load time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

import delegate_sdk
from delegate_sdk import BackendInfo, Claims, hookimpl
from delegate_sdk.errors import PluginLoadError
from delegate_sdk.registry import ENV_VAR, Registry, hook_names, reset_default_registry

GOOD = '''
from delegate_sdk import BackendInfo, Claims, CompiledDelegate, hookimpl

@hookimpl
def describe():
    return BackendInfo(name="ignored", version="1.2.3", precisions=("fp32",), default_precision="fp32",
                       blob_format="fake", blob_format_version=1, loadable_format_versions=(1, 1))

@hookimpl
def claim(program, nodes, options):
    return Claims((), ())

@hookimpl
def preprocess(program, options, calibration):
    return CompiledDelegate(b"", "fake", 1)

@hookimpl
def init(blob, meta, options):
    return object()

@hookimpl
def execute(handle, inputs):
    return []
'''


def make_dist(tmp_path, monkeypatch, name: str, module: str, source: str) -> None:
    """A real installed distribution (dist-info with entry_points.txt) on sys.path."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[delegate_sdk]\n{name} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_entry_point_discovery(tmp_path, monkeypatch):
    make_dist(tmp_path, monkeypatch, "fakechip", "dsdk_fakechip_plugin", GOOD)
    reg = Registry(load_env=False)
    assert "fakechip" in reg.names()
    info = reg.get("fakechip").info()
    assert (info.name, info.version) == ("fakechip", "1.2.3")  # registered under its entry-point name


def test_broken_plugin_import_shows_as_unavailable(tmp_path, monkeypatch):
    make_dist(tmp_path, monkeypatch, "broken", "dsdk_broken_plugin", "raise ImportError('libfoo.so missing')\n")
    reg = Registry(load_env=False)
    info = reg.get("broken").info()
    assert not info.available and "libfoo.so missing" in info.unavailable_reason


def test_misspelled_hook_is_rejected_naming_it(registry):
    class Plugin:
        @hookimpl
        def describe(self):
            raise AssertionError

        @hookimpl
        def claimm(self, program, nodes, options):
            return Claims()

    with pytest.raises(PluginLoadError, match=r"plugin 'typo'.*does not define.*claimm"):
        registry.register(Plugin(), "typo")
    assert "typo" not in registry.names()


def test_wrong_argument_name_is_rejected(registry):
    class Plugin:
        @hookimpl
        def claim(self, program, nodez, options):
            return Claims()

    with pytest.raises(PluginLoadError, match=r"plugin 'badarg' is invalid: .*nodez"):
        registry.register(Plugin(), "badarg")


def test_missing_required_hooks(registry):
    class Plugin:
        @hookimpl
        def describe(self):
            return None

    with pytest.raises(PluginLoadError, match=r"'partial' does not implement the required hook\(s\) claim, "
                                              r"preprocess, init, execute"):
        registry.register(Plugin(), "partial")


def test_env_var_plugins_and_bad_entries(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "ir=dsdk_test_plugins.ir_backend:ALL")
    reg = Registry(load_entry_points=False)
    assert reg.names() == ["ir"]
    monkeypatch.setenv(ENV_VAR, "oops")
    with pytest.raises(PluginLoadError, match="must look like name=package.module"):
        Registry(load_entry_points=False)
    monkeypatch.setenv(ENV_VAR, "x=no_such_module_xyz,ir=dsdk_test_plugins.ir_backend:ALL")
    reg = Registry(load_entry_points=False)  # the bad entry is listed as unavailable; the good one still loads
    info = reg.get("x").info()
    assert not info.available and "cannot load plugin 'no_such_module_xyz'" in info.unavailable_reason
    assert f"drop it from {ENV_VAR}" in info.unavailable_reason and reg.get("ir").info().available


BROKEN = {
    "syntax": ("dsdk_syntax_plugin", "def describe(:\n    pass\n", r"SyntaxError at .*dsdk_syntax_plugin\.py:1"),
    "raises": ("dsdk_raises_plugin", "import os\nos.environ['DSDK_NEVER_SET']\n", r"KeyError: 'DSDK_NEVER_SET'"),
    "unmarked": ("dsdk_unmarked_plugin", GOOD.replace("@hookimpl\n", ""),
                 r"describe, claim, preprocess, init, execute are defined but not marked with "
                 r"@delegate_sdk.hookimpl"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_and_takes_nothing_down(tmp_path, monkeypatch, kind):
    module, source, pattern = BROKEN[kind]
    make_dist(tmp_path, monkeypatch, kind, module, source)
    make_dist(tmp_path, monkeypatch, "fakechip", "dsdk_fakechip_plugin", GOOD)
    reg = Registry(load_env=False)
    info = reg.get(kind).info()
    assert not info.available and re.search(pattern, info.unavailable_reason), info.unavailable_reason
    assert f"plugin {kind!r}" in info.unavailable_reason and "pip uninstall" in info.unavailable_reason
    assert "\n" not in info.unavailable_reason
    assert reg.get("fakechip").info().available
    # and `delegate-sdk plugins` still lists everything, exit 0
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop(ENV_VAR, None)
    proc = subprocess.run([sys.executable, "-m", "delegate_sdk.cli", "plugins", "--json"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["fakechip"]["available"] and not rows[kind]["available"]


def test_backends_api_lists_describe(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "ir=dsdk_test_plugins.ir_backend:ALL")
    reset_default_registry()
    try:
        infos = {i.name: i for i in delegate_sdk.backends()}
        assert isinstance(infos["ir"], BackendInfo) and infos["ir"].available
    finally:
        reset_default_registry()


def test_every_hook_is_documented():
    import delegate_sdk.hookspecs as hs

    for name in hook_names():
        doc = getattr(hs, name).__doc__ or ""
        assert len(doc.split()) > 15, f"hook {name} needs a docstring a vendor can follow"
