"""Measure the Core ML plugin: conversion time of a small conv net and the runtime's per-call latency.

    python benchmarks/bench_coreml.py [--repeat 200]

Prints one line per measurement. Conversion is timed warm (coremltools already
imported, one conversion done), as a partition compiles inside a lowering run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from delegate_sdk.capture import capture
from delegate_sdk_coreml import plugin, runtime


class SmallConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = torch.nn.BatchNorm2d(16)
        self.c2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        y = F.max_pool2d(F.relu(self.c2(y)), 2)
        return self.fc(y.mean((2, 3)))


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, x = SmallConvNet().eval(), torch.randn(1, 3, 32, 32)
    ep = capture(model, (x,), keep_ops=plugin.describe().keep_ops)
    print(f"host runtime: {runtime.host_runtime()}")
    for precision in ("fp16", "fp32"):
        options = {"precision": precision, "compute_units": "all", "minimum_deployment_target": "iOS17"}
        plugin.preprocess(ep, options, None)  # warm-up: imports, first conversion
        t = time.perf_counter()
        compiled = plugin.preprocess(ep, options, None)
        convert_s = time.perf_counter() - t
        t = time.perf_counter()
        handle = plugin.init(compiled.blob, compiled.meta, options)
        init_s = time.perf_counter() - t
        med, best = timed(lambda: plugin.execute(handle, [x]), args.repeat)
        n_ops = sum(v for k, v in compiled.meta["mil_op_counts"].items() if k != "const")
        print(f"{precision}: preprocess {convert_s * 1e3:.0f} ms (blob {len(compiled.blob) / 1024:.0f} KiB, "
              f"{n_ops} MIL ops), init {init_s * 1e3:.1f} ms, execute median {med * 1e3:.2f} ms "
              f"(best {best * 1e3:.2f} ms)")
        plugin.destroy(handle)
    with torch.no_grad():
        med, best = timed(lambda: model(x), args.repeat)
    print(f"eager torch: median {med * 1e3:.2f} ms (best {best * 1e3:.2f} ms)")
    # fixed cost per call: a one-op program
    add_ep = capture(_Add(), (torch.randn(4), torch.randn(4)))
    options = {"precision": "fp32", "compute_units": "all", "minimum_deployment_target": "iOS17"}
    compiled = plugin.preprocess(add_ep, options, None)
    handle = plugin.init(compiled.blob, compiled.meta, options)
    a, b = torch.randn(4), torch.randn(4)
    med, best = timed(lambda: plugin.execute(handle, [a, b]), args.repeat * 5)
    print(f"one-op program (add): execute median {med * 1e6:.0f} us (best {best * 1e6:.0f} us)")


class _Add(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


if __name__ == "__main__":
    main()
