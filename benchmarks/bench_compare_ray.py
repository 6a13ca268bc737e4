"""``compare`` on Ray against one process: the same rows, and what Ray costs in wall time.

Baseline (named, same run): ``compare(..., executor="local")``, configurations one after another in this
process. Then a local 2-node Ray cluster (a head node and a worker node, one CPU each) and the same call with
``executor="ray"``. Models are builders of the conformance corpus's zoo (transformers ResNet, MobileNetV2 and
BERT, random weights, tiny configs). Prints wall times, the ratio, whether every row matches (everything but timings and the
artifact's zip timestamps) and where each row ran::

    python benchmarks/bench_compare_ray.py
    python benchmarks/bench_compare_ray.py --models resnet --configs xnnpack:fp32,qnn:int8
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

from delegate_sdk.comparison import compare
from delegate_sdk.conformance.corpus import load_corpus
from delegate_sdk.ray_cluster import local_cluster

ZOO = importlib.import_module(f"{load_corpus().__name__}.zoo").ZOO


def row(r):
    return (r.label, r.ok, r.error, r.nodes_delegated, r.partitions, r.macs_delegated, r.refusals,
            [o.to_json() for o in r.outputs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet,mobilenet_v2,bert")
    ap.add_argument("--configs", default="xnnpack:fp32,xnnpack:int8,coreml:fp16,qnn:int8,arm_ethos:int8")
    ap.add_argument("--calls", type=int, default=10)
    args = ap.parse_args()
    configs = args.configs.split(",")
    runs = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, margs, kwargs = ZOO[name]()
        t0 = time.perf_counter()
        local = compare(model, margs, configs, example_kwargs=kwargs or None, calls=args.calls)
        runs.append((name, model, margs, kwargs, local, time.perf_counter() - t0))
    t_cluster = time.perf_counter()
    with local_cluster(nodes=2, cpus_per_node=1) as address:  # two raylets, as two machines would be
        cluster_s = time.perf_counter() - t_cluster
        print(f"2-node Ray cluster started in {cluster_s:.1f} s (not counted)")
        total_local = total_ray = 0.0
        for name, model, margs, kwargs, local, local_s in runs:
            t0 = time.perf_counter()
            remote = compare(model, margs, configs, example_kwargs=kwargs or None, calls=args.calls,
                             executor="ray", address=address)
            ray_s = time.perf_counter() - t0
            total_local, total_ray = total_local + local_s, total_ray + ray_s
            same = [row(r) for r in remote.results] == [row(r) for r in local.results]
            print(f"{name}: {len(configs)} configurations, local {local_s:.1f} s, ray {ray_s:.1f} s "
                  f"({ray_s / local_s:.2f}x of local); rows {'identical' if same else 'DIFFER'}")
            for a, b in zip(local.results, remote.results):
                lat = (f"{a.latency_ms['median']:.2f} ms here / {b.latency_ms['median']:.2f} ms on "
                       f"{b.where} (eager there {b.eager_latency_ms['median']:.2f} ms)" if a.ok and b.ok else
                       (a.error or b.error)[:80])
                print(f"  {a.label:16s} lowering {a.lowering_s:5.1f} s here / {b.lowering_s:5.1f} s there; {lat}")
        print(f"total: local {total_local:.1f} s, ray {total_ray:.1f} s = {total_ray / total_local:.2f}x of local")


if __name__ == "__main__":
    main()
