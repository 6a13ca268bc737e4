"""Compile time of a small conv net and per-call overhead of ``execute`` over the ExecuTorch runtime.

Run by hand (not collected by pytest): ``python benchmarks/bench_xnnpack_compile.py``.
Compile times are for distinct weights each time (no cache hit); the first one includes importing
ExecuTorch. Latency: best of 5 rounds of N calls, interleaving delegate and direct calls.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from delegate_sdk_xnnpack import plugin
from delegate_sdk_xnnpack._toolchain import runtime_module
from delegate_sdk_xnnpack.testing import capture


class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.c1(x)))
        y = nn.functional.max_pool2d(torch.relu(self.c2(y)), 2)
        return self.fc(y.mean((2, 3), keepdim=True).flatten(1))


def compile_times(precision: str, n: int = 4) -> list[tuple[float, float]]:
    x = torch.randn(1, 3, 32, 32)
    calib = [(torch.randn(1, 3, 32, 32),) for _ in range(8)] if precision == "int8" else None
    out = []
    for _ in range(n):
        ep = capture(SmallConvNet().eval(), (x,))
        t0, c0 = time.perf_counter(), time.process_time()
        plugin.preprocess(ep, {"precision": precision, "num_threads": 0}, calib)
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


def latency(shape: tuple[int, ...], net: nn.Module, rounds: int = 5, n: int = 2000) -> tuple[float, float]:
    x = torch.randn(shape)
    cd = plugin.preprocess(capture(net.eval(), (x,)), {"precision": "fp32", "num_threads": 0}, None)
    handle = plugin.init(cd.blob, cd.meta, {"precision": "fp32", "num_threads": 0})
    rt = runtime_module()
    method = rt._load_program_from_buffer(cd.blob).load_method("forward")
    ours, direct = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            plugin.execute(handle, [x])
        ours.append((time.perf_counter() - t0) / n)
        t0 = time.perf_counter()
        for _ in range(n):
            method([x])
        direct.append((time.perf_counter() - t0) / n)
    return min(ours), min(direct)


def main() -> None:
    for precision in ("fp32", "int8"):
        ts = compile_times(precision)
        wall, cpu = [t[0] for t in ts[1:]], [t[1] for t in ts[1:]]
        print(f"compile {precision}: first {ts[0][0]:.2f}s wall (imports), then median {statistics.median(wall):.2f}s "
              f"wall / {statistics.median(cpu):.2f}s CPU")
    for name, shape, net in [("tiny linear", (1, 8), nn.Linear(8, 8)), ("small conv net", (1, 3, 32, 32), SmallConvNet())]:
        ours, direct = latency(shape, net)
        print(f"{name}: execute {ours * 1e6:.1f} us, ExecuTorch method call {direct * 1e6:.1f} us, "
              f"overhead {(ours - direct) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
