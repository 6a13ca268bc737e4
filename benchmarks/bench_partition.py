"""Partitioning time on synthetic graphs of 1,000 and 10,000 nodes.

Run: python benchmarks/bench_partition.py
Baseline (named, same run): the 1,000-node graph; the ratio 10k/1k should stay
at most 15x for 10x the nodes (near-linear), and 10k nodes near 1 s.

Two graph shapes: "model-like" (a transformer-ish stack: a chain with residual
skips, two backends, ~3% unsupported ops) and "random" (random DAG, random
claims: many small partitions, the partitioner's hardest case).
"""

from __future__ import annotations

import random
import statistics
import time

from delegate_sdk.partition import DepGraph, plan_partitions
from delegate_sdk.types import Claims, ReasonCode, Refusal


def model_like(n: int, seed: int = 0) -> tuple[DepGraph, dict[str, set[str]]]:
    r = random.Random(seed)
    names, inputs = [f"n{i}" for i in range(n)], []
    for i in range(n):
        ins = [i - 1] if i else []
        if i >= 8 and i % 8 == 0:
            ins.append(i - 8)  # residual skip every block
        inputs.append(ins)
    unsupported = {f"n{i}" for i in range(n) if r.random() < 0.03}
    a_only = {f"n{i}" for i in range(n) if r.random() < 0.05}
    claims = {"A": set(names) - unsupported - a_only, "B": set(names) - unsupported}
    return DepGraph(names, inputs), claims


def random_graph(n: int, seed: int = 0) -> tuple[DepGraph, dict[str, set[str]]]:
    r = random.Random(seed)
    names, inputs = [f"n{i}" for i in range(n)], []
    for i in range(n):
        k = r.randint(0, min(i, 3))
        inputs.append(sorted({r.randrange(max(0, i - 20), i) for _ in range(k)}) if i else [])
    claims = {"A": {x for x in names if r.random() < 0.7}, "B": {x for x in names if r.random() < 0.5}}
    return DepGraph(names, inputs), claims


def claimer(table: dict[str, set[str]]):
    def claim(backend: str, cands: list[str]) -> Claims:
        mine = table[backend]
        return Claims(tuple(c for c in cands if c in mine),
                      tuple(Refusal(c, ReasonCode.OP, "unsupported") for c in cands if c not in mine))
    return claim


def bench(make, n: int, repeat: int = 5) -> tuple[float, int]:
    graph, table = make(n)
    times, parts = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = plan_partitions(graph, ["A", "B"], claimer(table))
        times.append(time.perf_counter() - t0)
        parts = len(plan.partitions)
    return statistics.median(times), parts


def main() -> None:
    print(f"{'graph':<12}{'nodes':>8}{'partitions':>12}{'median s':>12}{'vs 1k':>8}")
    for label, make in (("model-like", model_like), ("random", random_graph)):
        base = None
        for n in (1_000, 10_000):
            t, parts = bench(make, n)
            base = base or t
            print(f"{label:<12}{n:>8}{parts:>12}{t:>12.4f}{t / base:>7.1f}x")


if __name__ == "__main__":
    main()
