"""Option tables match the installed Vela, per-target defaults, inconsistent combinations."""

from __future__ import annotations

import configparser
import subprocess
import sys

import pytest

from delegate_sdk.errors import OptionError

from delegate_sdk_arm_ethos.options import MEMORY_MODES, SYSTEM_CONFIGS, TARGETS, resolve


def _vela_ini() -> configparser.ConfigParser:
    from ethosu.vela.architecture_features import ArchitectureFeatures  # noqa: F401 - vela is installed
    import importlib.resources

    text = (importlib.resources.files("ethosu") / "config_files" / "Arm" / "vela.ini").read_text()
    cp = configparser.ConfigParser()
    cp.read_string(text)
    return cp


def test_tables_match_installed_vela():
    from ethosu.vela.architecture_features import Accelerator

    assert set(TARGETS) == set(Accelerator.member_list())
    cp = _vela_ini()
    sys_cfgs = {s.split(".", 1)[1]: cp[s] for s in cp.sections() if s.startswith("System_Config.")}
    assert set(sys_cfgs) == set(SYSTEM_CONFIGS)
    for name, has_dram in SYSTEM_CONFIGS.items():
        assert (sys_cfgs[name]["axi1_port"] == "Dram") == has_dram
    modes = {s.split(".", 1)[1] for s in cp.sections() if s.startswith("Memory_Mode.")}
    assert modes == set(MEMORY_MODES)


@pytest.mark.parametrize("target,sys_cfg,mem", [
    ("ethos-u55-128", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
    ("ethos-u55-32", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
    ("ethos-u65-512", "Ethos_U65_High_End", "Dedicated_Sram_384KB"),
    ("ethos-u85-2048", "Ethos_U85_SYS_DRAM_Mid", "Sram_Only"),
])
def test_auto_defaults_per_target(target, sys_cfg, mem):
    t = resolve({"target": target, "system_config": "auto", "memory_mode": "auto"})
    assert (t.system_config, t.memory_mode) == (sys_cfg, mem)


@pytest.mark.parametrize("opts,fragment", [
    ({"target": "ethos-u55-128", "system_config": "Ethos_U85_SYS_DRAM_Mid"}, "another NPU"),
    ({"target": "ethos-u55-128", "memory_mode": "Dedicated_Sram"}, "needs a system_config with DRAM"),
    ({"target": "ethos-u85-256", "system_config": "Ethos_U85_SYS_Flash_High", "memory_mode": "Dedicated_Sram"},
     "Ethos_U85_SYS_DRAM"),
    ({"target": "ethos-u99"}, "valid targets"),
])
def test_inconsistent_options_have_clear_errors(opts, fragment):
    with pytest.raises(ValueError, match=fragment):
        resolve(opts)


def test_core_validates_option_values():
    from delegate_sdk.options import validate_options
    from delegate_sdk_arm_ethos.plugin import describe

    info = describe()
    full = validate_options(info, {"target": "ethos-u85-512"})
    assert full["system_config"] == "auto" and full["precision"] == "int8"
    with pytest.raises(OptionError, match="ethos-u55-128"):
        validate_options(info, {"target": "u55"})


def test_a_bad_combination_is_one_option_error_before_claiming():
    """validate_options hook: the user gets one OptionError (exit 2), not one refusal per node."""
    import torch

    import delegate_sdk

    bad = {"arm_ethos": {"target": "ethos-u55-128", "system_config": "Ethos_U85_SYS_DRAM_Mid"}}
    with pytest.raises(OptionError, match="arm_ethos: .*another NPU"):
        delegate_sdk.inspect(torch.nn.ReLU(), (torch.randn(2),), ["arm_ethos"], options=bad)
    proc = subprocess.run([sys.executable, "-m", "delegate_sdk.cli", "conform", "--plugin", "arm_ethos", "-k",
                           "^op/relu/", "--option", "arm_ethos.target=ethos-u55-128",
                           "--option", "arm_ethos.system_config=Ethos_U85_SYS_DRAM_Mid"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "another NPU" in proc.stderr, proc.stdout + proc.stderr
