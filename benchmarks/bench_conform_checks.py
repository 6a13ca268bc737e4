"""What the runtime contract checks cost: a full conformance run with them, against the same run without.

Baseline (named, same run): ``--skip-runtime-checks``, i.e. lower -> save -> load -> run each sample once
and compare (what conform did before the checks). Checked: the same plus a second call per sample (outputs
not reused, inputs unchanged), three sizes for dynamic samples, the thread check (plugins that declare
``thread_safe``) and the fresh-process load of every artifact. Both runs use the real ``delegate-sdk conform``
command with the same seed and jobs; the ratio is checked / baseline (the target is at most 1.5x)::

    python benchmarks/bench_conform_checks.py --plugin xnnpack
    python benchmarks/bench_conform_checks.py --plugin coreml --precision fp16 --order checked,baseline
    python benchmarks/bench_conform_checks.py --plugin qnn -k '^op/(add|conv2d)/'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(plugin: str, precision: str | None, jobs: int, pattern: str | None, checked: bool) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "delegate_sdk.cli", "conform", "--plugin", plugin, "--jobs", str(jobs),
               "--report-dir", d, "--no-bisect"]
        if precision:
            cmd += ["--precision", precision]
        if pattern:
            cmd += ["-k", pattern]
        if not checked:
            cmd.append("--skip-runtime-checks")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rep = json.loads((Path(d) / "report.json").read_text()) if (Path(d) / "report.json").exists() else {}
    if not rep:
        raise SystemExit(f"conform failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    checks: dict[str, int] = {}
    for c in rep["cases"]:
        for k in c["checks"]:
            checks[k.split(":")[0]] = checks.get(k.split(":")[0], 0) + 1
    return {"mode": "checked" if checked else "baseline", "wall_s": round(wall, 1),
            "engine_s": rep["duration_s"], "samples": rep["summary"]["total"],
            "by_outcome": rep["summary"]["by_outcome"], "exit": proc.returncode, "checks": checks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plugin", default="xnnpack")
    ap.add_argument("--precision")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-k", dest="pattern")
    ap.add_argument("--order", default="baseline,checked", help="which run first (the other runs second)")
    args = ap.parse_args()
    rows = {}
    for mode in args.order.split(","):
        row = run(args.plugin, args.precision, args.jobs, args.pattern, mode == "checked")
        rows[mode] = row
        print(json.dumps(row), flush=True)
    ratio = rows["checked"]["engine_s"] / rows["baseline"]["engine_s"]
    print(f"{args.plugin} {args.precision or '(default precision)'}: checked {rows['checked']['engine_s']:.1f} s "
          f"vs baseline {rows['baseline']['engine_s']:.1f} s = {ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
