"""Compile options: target NPU configuration, Vela system configuration and memory mode.

The names are those of ethos-u-vela 5.2.0 (``Accelerator`` enum) and of the
``Arm/vela.ini`` it bundles; ``tests/test_arm_ethos_options.py`` checks them
against the installed Vela so a Vela upgrade that changes them is noticed.
"""

from __future__ import annotations

from dataclasses import dataclass

from delegate_sdk import OptionSpec

TARGETS: tuple[str, ...] = (
    "ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256",
    "ethos-u65-256", "ethos-u65-512",
    "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048",
)
DEFAULT_TARGET = "ethos-u55-128"

# System configuration -> whether its AXI1 port is DRAM (needed by the Dedicated_Sram memory modes).
SYSTEM_CONFIGS: dict[str, bool] = {
    "Ethos_U55_Deep_Embedded": False,
    "Ethos_U55_High_End_Embedded": False,
    "Ethos_U65_Embedded": False,
    "Ethos_U65_Mid_End": True,
    "Ethos_U65_High_End": True,
    "Ethos_U65_Client_Server": True,
    "Ethos_U85_SYS_Flash_Low": False,
    "Ethos_U85_SYS_Flash_High": False,
    "Ethos_U85_SYS_DRAM_Low": True,
    "Ethos_U85_SYS_DRAM_Mid": True,
    "Ethos_U85_SYS_DRAM_High": True,
}
MEMORY_MODES: tuple[str, ...] = (
    "Sram_Only", "Shared_Sram", "Dedicated_Sram", "Dedicated_Sram_256KB", "Dedicated_Sram_384KB",
    "Dedicated_Sram_512KB",
)
AUTO = "auto"
# Arm's per-target defaults (the configurations Arm's own Ethos-U flows use with Arm/vela.ini).
DEFAULTS: dict[str, tuple[str, str]] = {
    "u55": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "u65": ("Ethos_U65_High_End", "Dedicated_Sram_384KB"),
    "u85": ("Ethos_U85_SYS_DRAM_Mid", "Sram_Only"),
}

OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("target", "str", DEFAULT_TARGET, "Ethos-U NPU configuration (Vela --accelerator-config)",
               choices=TARGETS),
    OptionSpec("system_config", "str", AUTO,
               "Vela system configuration from Arm/vela.ini; 'auto' picks the target's default "
               "(U55 Ethos_U55_High_End_Embedded, U65 Ethos_U65_High_End, U85 Ethos_U85_SYS_DRAM_Mid)",
               choices=(AUTO, *SYSTEM_CONFIGS)),
    OptionSpec("memory_mode", "str", AUTO,
               "Vela memory mode from Arm/vela.ini; 'auto' picks the target's default "
               "(U55 Shared_Sram, U65 Dedicated_Sram_384KB, U85 Sram_Only)",
               choices=(AUTO, *MEMORY_MODES)),
)


@dataclass(frozen=True)
class Target:
    """A resolved, consistent option set."""

    accelerator: str
    family: str  # "u55" | "u65" | "u85"
    system_config: str
    memory_mode: str

    @property
    def is_u85(self) -> bool:
        return self.family == "u85"


def family(accelerator: str) -> str:
    return accelerator.split("-")[1]


def resolve(options: dict) -> Target:
    """The target described by validated options; raises ValueError for an inconsistent combination."""
    acc = str(options.get("target", DEFAULT_TARGET))
    if acc not in TARGETS:
        raise ValueError(f"unknown target {acc!r}; valid targets: {', '.join(TARGETS)}")
    fam = family(acc)
    sys_cfg = str(options.get("system_config", AUTO))
    mem = str(options.get("memory_mode", AUTO))
    if sys_cfg == AUTO:
        sys_cfg = DEFAULTS[fam][0]
    if mem == AUTO:
        mem = DEFAULTS[fam][1]
    if sys_cfg not in SYSTEM_CONFIGS:
        raise ValueError(f"unknown system_config {sys_cfg!r}; valid: {', '.join(SYSTEM_CONFIGS)}")
    if mem not in MEMORY_MODES:
        raise ValueError(f"unknown memory_mode {mem!r}; valid: {', '.join(MEMORY_MODES)}")
    prefix = f"Ethos_{fam.upper()}_"
    if not sys_cfg.startswith(prefix):
        valid = [s for s in SYSTEM_CONFIGS if s.startswith(prefix)]
        raise ValueError(f"system_config {sys_cfg!r} describes another NPU than {acc}; "
                         f"valid for {acc}: {', '.join(valid)}")
    if mem.startswith("Dedicated_Sram") and not SYSTEM_CONFIGS[sys_cfg]:
        valid = [s for s in SYSTEM_CONFIGS if s.startswith(prefix) and SYSTEM_CONFIGS[s]]
        hint = f"use one of {', '.join(valid)}" if valid else "use Shared_Sram or Sram_Only"
        raise ValueError(f"memory_mode {mem!r} needs a system_config with DRAM, and {sys_cfg} has only "
                         f"flash beside the SRAM; {hint}")
    return Target(acc, fam, sys_cfg, mem)
