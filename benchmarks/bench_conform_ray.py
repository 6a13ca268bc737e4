"""Conformance on Ray against the local process pool: same outcomes per sample, and what Ray costs in wall time.

Baseline (named, same run): ``--executor local --jobs 2``. Then a local 2-worker Ray cluster is started (a head
node and one worker node, one CPU each: two raylets on this machine, as two machines would be) and the same
command runs with ``--executor ray --address``. Prints both wall times, the ratio (target: within 1.2x on this
2-core machine) and how the units and busy time divided over the two nodes, then stops the cluster::

    python benchmarks/bench_conform_ray.py --plugin xnnpack
    python benchmarks/bench_conform_ray.py --plugin coreml -k '^op/'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from delegate_sdk.ray_cluster import local_cluster



def conform(args: argparse.Namespace, extra: list[str]) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "delegate_sdk.cli", "conform", "--plugin", args.plugin, "--report-dir", d,
               "--no-bisect", *extra]
        if args.precision:
            cmd += ["--precision", args.precision]
        if args.pattern:
            cmd += ["-k", args.pattern]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        path = Path(d) / "report.json"
        if not path.exists():
            raise SystemExit(f"conform failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return wall, json.loads(path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plugin", default="xnnpack")
    ap.add_argument("--precision")
    ap.add_argument("-k", dest="pattern")
    args = ap.parse_args()
    local_wall, local = conform(args, ["--executor", "local", "--jobs", "2"])
    print(json.dumps({"executor": "local", "jobs": 2, "wall_s": round(local_wall, 1),
                      "by_outcome": local["summary"]["by_outcome"]}), flush=True)

    t_cluster = time.perf_counter()
    with local_cluster(nodes=2, cpus_per_node=1) as address:  # two raylets, as two machines would be
        cluster_s = time.perf_counter() - t_cluster
        ray_wall, remote = conform(args, ["--executor", "ray", "--address", address])
    same = {c["id"]: c["outcome"] for c in local["cases"]} == {c["id"]: c["outcome"] for c in remote["cases"]}
    print(json.dumps({"executor": "ray", "cluster": remote["executor"], "cluster_start_s": round(cluster_s, 1),
                      "wall_s": round(ray_wall, 1), "by_outcome": remote["summary"]["by_outcome"]}), flush=True)
    print(f"{args.plugin}: ray {ray_wall:.1f} s vs local --jobs 2 {local_wall:.1f} s = {ray_wall / local_wall:.2f}x "
          f"(target <= 1.2x; the cluster itself took {cluster_s:.1f} s to start, not counted); "
          f"outcomes per sample {'identical' if same else 'DIFFER'}")
    for place, st in sorted(remote["executor"].get("where", {}).items()):
        print(f"  {place}: {st['workers']} worker(s), {st['units']} units, {st['busy_s']} s busy")


if __name__ == "__main__":
    main()
