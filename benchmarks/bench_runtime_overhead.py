"""Per-call overhead of running a delegate through a Program, against calling the same engine directly.

Run: python benchmarks/bench_runtime_overhead.py
Baseline (named, same run): "engine direct" = the plugin's own execute() on its
handle, no Program around it. "program" = Program(x): input validation, outer
graph, delegate lock, output contract check. Overhead = program - engine.
Target: tens of microseconds per delegate.

Engines: the core's test engine (tiny: exposes the SDK's own cost), and every
installed vendor plugin that can lower the model (its real runtime).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from delegate_sdk.lowering import lower  # noqa: E402
from delegate_sdk.registry import Registry  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def timeit(fn, n: int = 2000) -> float:
    for _ in range(50):
        fn()
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


def measure(registry: Registry, backend: str, options: dict | None = None) -> None:
    torch.manual_seed(0)
    model, x = Tiny().eval(), torch.randn(4, 16)
    prog = lower(model, (x,), [backend], registry=registry, options={backend: options or {}},
                 calibration=[(torch.randn(4, 16),) for _ in range(4)])
    parts = prog.summary().partitions
    if len(parts) != 1 or prog.summary().fallback:
        print(f"{backend:<12} skipped: the model did not lower to exactly one delegate")
        return
    rt = prog._runtime.delegates[0]
    execute = registry.get(backend).direct("execute")  # the plugin's own function, no dispatch
    direct = timeit(lambda: execute(handle=rt.handle, inputs=[x]))
    through = timeit(lambda: prog(x))
    print(f"{backend:<12}{direct * 1e6:>14.1f}{through * 1e6:>14.1f}{(through - direct) * 1e6:>14.1f}"
          f"{through / direct:>9.2f}x")
    if backend == "test_engine":
        # the SDK's own cost, isolated: the same Program with an engine that returns a precomputed result
        out = rt([x])
        real = rt._execute
        rt._execute = lambda handle, inputs: out
        free = timeit(lambda: prog(x), 20000)
        rt._execute = real
        print(f"{'(sdk only)':<12}{0.0:>14.1f}{free * 1e6:>14.1f}{free * 1e6:>14.1f}{'':>10}")


def main() -> None:
    from dsdk_test_plugins.ir_backend import IRBackend

    reg = Registry(load_env=False)
    reg.register(IRBackend("test_engine"), "test_engine")
    print(f"{'backend':<12}{'engine us':>14}{'program us':>14}{'overhead us':>14}{'ratio':>10}")
    measure(reg, "test_engine")
    for name in reg.names():
        if name == "test_engine" or not reg.get(name).info().available:
            continue
        try:
            measure(reg, name)
        except Exception as e:  # a benchmark reports, it does not stop at one plugin
            print(f"{name:<12} failed: {e}")


if __name__ == "__main__":
    main()
