"""Conformance throughput: samples (and lowerings) per second of the op suite with a fast plugin.

Uses the faithful canary plugin (eager PyTorch behind the plugin contract, so the numbers measure the
engine and the core's capture/lower/save/load, not a vendor compiler), serial and with ``--jobs 2``::

    python benchmarks/bench_conformance.py              # a deterministic 1/8 slice of the op suite
    python benchmarks/bench_conformance.py --full       # the whole op suite (several minutes per mode)
    python benchmarks/bench_conformance.py --plugin xnnpack --shard 1/16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plugin", default="canary_good")
    ap.add_argument("--shard", default="1/8", help="slice of the op suite (I/N); ignored with --full")
    ap.add_argument("--full", action="store_true", help="the whole op suite")
    ap.add_argument("--jobs", default="1,2", help="comma-separated job counts to measure")
    ap.add_argument("-k", dest="pattern", default=None)
    args = ap.parse_args()
    if args.plugin.startswith("canary_"):
        canaries = ROOT / "tests" / "conformance" / "canaries"
        sys.path.insert(0, str(canaries))
        from dsdk_canaries.plugins import ENV

        os.environ["DELEGATE_SDK_PLUGINS"] = ENV
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(canaries), os.environ.get("PYTHONPATH")]))
    from delegate_sdk.conformance import run_conformance

    results = []
    for jobs in (int(j) for j in args.jobs.split(",")):
        units: list = []
        t0 = time.perf_counter()
        rep = run_conformance(args.plugin, suite="ops", jobs=jobs, pattern=args.pattern,
                              shard=None if args.full else args.shard, on_plan=units.extend)
        wall = time.perf_counter() - t0
        n = len(rep.cases)
        row = {"plugin": args.plugin, "jobs": jobs, "samples": n, "lowerings": len(units),
               "cases": len({r.case_id for r in rep.cases}), "wall_s": round(wall, 2),
               "samples_per_s": round(n / wall, 3), "cases_per_s": round(len({r.case_id for r in rep.cases}) / wall, 3),
               "by_outcome": rep.by_outcome()}
        results.append(row)
        print(json.dumps(row), flush=True)
    if len(results) > 1:
        print(f"speed-up jobs={results[-1]['jobs']} vs {results[0]['jobs']}: "
              f"{results[0]['wall_s'] / results[-1]['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
