"""Run Vela (ethos-u-vela) on a TOSA flatbuffer and read back its command stream and estimate.

Vela prints its report to stdout from Python *and* from its C++ core (regor),
so it runs in a child Python process whose output is captured; that also keeps
a native crash in the compiler from taking the caller down. Everything it
writes goes to a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)



class VelaError(RuntimeError):
    """Vela refused or failed to compile the graph."""


class ReferenceModelError(RuntimeError):
    """The TOSA reference model rejected the graph (or crashed on it)."""


@dataclass(frozen=True)
class VelaResult:
    npz: bytes  # Vela's raw output: command stream, weights, scratch size, I/O layout
    cmd_bytes: int
    weight_bytes: int
    scratch_bytes: int
    cycles: int | None
    inference_time_s: float | None
    sram_bytes: int | None
    dram_bytes: int | None
    flash_bytes: int | None
    macs: int | None
    npu_ops: int | None
    cpu_ops: int | None
    system_config: str
    memory_mode: str
    compile_s: float
    version: str
    check_outputs: list[np.ndarray] | None = None  # the reference model's outputs for the check inputs


def vela_version() -> str:
    try:
        from importlib.metadata import version

        return version("ethos-u-vela")
    except Exception:  # pragma: no cover - only without the package
        return "unknown"


def config_file() -> str:
    # Vela resolves this relative name inside its own bundled config_files directory.
    return "Arm/vela.ini"


def compile_tosa(tosa: bytes, target: str, system_config: str, memory_mode: str, timeout_s: float = 600.0,
                 check: tuple[bytes, list[np.ndarray]] | None = None) -> VelaResult:
    """Compile with Vela; with ``check`` = (graph for the reference model, inputs), first run it there."""
    with tempfile.TemporaryDirectory(prefix="delegate_sdk_arm_ethos_") as tmp:
        src = os.path.join(tmp, "partition.tosa")
        out_dir = os.path.join(tmp, "out")
        with open(src, "wb") as f:
            f.write(tosa)
        check_args = ["-", "-", "-"]
        if check is not None:
            check_args = [os.path.join(tmp, n) for n in ("check.tosa", "inputs.npz", "outputs.npz")]
            with open(check_args[0], "wb") as f:
                f.write(check[0])
            np.savez(check_args[1], **{f"i{i}": a for i, a in enumerate(check[1])})
        # by path: the child needs only numpy, tosa-tools and Vela, not this package on its sys.path
        argv = [sys.executable, str(Path(__file__).with_name("_child.py")), *check_args, "--",
                "--output-format", "raw", "--accelerator-config", target,
                "--config", config_file(), "--system-config", system_config, "--memory-mode", memory_mode,
                "--output-dir", out_dir, src]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise VelaError(f"Vela did not finish within {timeout_s:.0f} s") from e
        dt = time.perf_counter() - t0
        log.debug("vela %s took %.2f s\nstdout:\n%s\nstderr:\n%s", target, dt, proc.stdout, proc.stderr)
        npz_path = os.path.join(out_dir, "partition_vela.npz")
        check_outputs = None
        if check is not None:
            if proc.returncode != 0 and not os.path.exists(check_args[2]):
                raise ReferenceModelError(_reference_error(proc.stdout, proc.stderr, proc.returncode))
            with np.load(check_args[2], allow_pickle=False) as data:
                check_outputs = [np.array(data[f"o{i}"]) for i in range(len(data.files))]
        if proc.returncode != 0 or not os.path.exists(npz_path):
            raise VelaError(_error_summary(proc.stdout, proc.stderr, proc.returncode))
        with open(npz_path, "rb") as f:
            npz = f.read()
        summary = _read_summary(out_dir)
    with np.load(io.BytesIO(npz), allow_pickle=False) as data:
        cmd = int(data["cmd_data"].nbytes) if "cmd_data" in data else 0
        weights = int(data["weight_data"].nbytes) if "weight_data" in data else 0
        scratch = int(data["scratch_shape"][0]) if "scratch_shape" in data else 0

    def num(key: str, cast: type = float) -> float | int | None:
        v = summary.get(key)
        if v in (None, ""):
            return None
        try:
            return cast(float(v))
        except ValueError:
            return None

    def kib(key: str) -> int | None:
        v = num(key)
        return None if v is None else int(round(float(v) * 1024))

    flash = kib("off_chip_flash_memory_used") or 0
    flash += kib("on_chip_flash_memory_used") or 0
    return VelaResult(
        npz=npz, cmd_bytes=cmd, weight_bytes=weights, scratch_bytes=scratch,
        cycles=num("cycles_total", int), inference_time_s=num("inference_time"),
        sram_bytes=kib("sram_memory_used"), dram_bytes=kib("dram_memory_used"),
        flash_bytes=flash if summary else None, macs=num("nn_macs", int),
        npu_ops=_count(proc.stdout, "NPU operators"), cpu_ops=_count(proc.stdout, "CPU operators"),
        system_config=summary.get("system_config", system_config),
        memory_mode=summary.get("memory_mode", memory_mode), compile_s=dt, version=vela_version(),
        check_outputs=check_outputs)


def _read_summary(out_dir: str) -> dict[str, str]:
    for p in Path(out_dir).glob("*_summary_*.csv"):
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            return rows[0]
    return {}


def _count(stdout: str, label: str) -> int | None:
    m = re.search(rf"{label}\s*=\s*(\d+)", stdout)
    return int(m.group(1)) if m else None


def _reference_error(stdout: str, stderr: str, rc: int) -> str:
    lines = [ln.strip() for ln in (stdout + "\n" + stderr).splitlines() if ln.strip()]
    keep = [ln for ln in lines if "ERROR" in ln or "REFERENCE-MODEL-ERROR" in ln or ln.startswith("Op")]
    how = "crashed" if rc < 0 else f"exited with code {rc}"
    return f"the TOSA reference model {how}: " + " | ".join(dict.fromkeys(keep[:4] or lines[-2:]))


def _error_summary(stdout: str, stderr: str, rc: int) -> str:
    lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
    keep = [ln for ln in lines if re.search(r"error|Error|ERROR|not supported|unsupported|Unsupported|Exception"
                                             r"|failed|constraint", ln)]
    keep = [ln for ln in keep if not ln.startswith("Warning")]
    detail = " | ".join(dict.fromkeys(keep[-4:] or lines[-3:]))
    return f"Vela exited with code {rc}: {detail}" if detail else f"Vela exited with code {rc}"
