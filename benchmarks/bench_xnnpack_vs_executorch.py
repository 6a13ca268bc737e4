"""delegate-sdk's XNNPACK plugin against ExecuTorch's own XNNPACK flow, on the same models, in the same run.

Run: python benchmarks/bench_xnnpack_vs_executorch.py [--repeats 3] [--calls 500]

Our path twice: with hosted ops off (the default: ops XNNPACK cannot run go to eager PyTorch between
partitions) and on (``hosted_ops=True``: ExecuTorch's portable kernels run them inside the same ``.pte``).

Baseline (named, same run): "executorch" = ``torch.export.export`` -> ``to_edge_transform_and_lower`` with
``XnnpackPartitioner`` -> ``to_executorch`` -> the ExecuTorch runtime's forward method, as ExecuTorch documents.
"delegate-sdk" = ``delegate_sdk.lower(model, (x,), ["xnnpack"])`` (capture, claim, partition, the plugin's
compile, artifact bookkeeping) -> ``program(x)`` (input checks, outer graph, delegate call, output checks).

Lowering time: median wall time over ``--repeats`` lowerings, each of a freshly initialised model (new
weights) so the plugin's compile cache cannot hit; the first lowering of each path pays imports and is
printed apart. Per-call latency: best of 5 rounds of ``--calls`` calls, rounds of the two paths interleaved
so load on the machine hits both alike. Both paths run fp32 XNNPACK kernels; the max |difference| from eager
shows they compute the same thing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.b1(self.c1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.b2(self.c2(x))), 2)
        x = torch.relu(self.c3(x))
        return self.fc(x.mean((2, 3), keepdim=True).flatten(1))


def small_cnn() -> tuple[nn.Module, torch.Tensor]:
    return SmallCNN().eval(), torch.randn(1, 3, 32, 32)


def encoder_layer() -> tuple[nn.Module, torch.Tensor]:
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.0, batch_first=True)
    return layer.eval(), torch.randn(1, 16, 64)


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(32, 64, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


def lstm() -> tuple[nn.Module, torch.Tensor]:
    return LSTMNet().eval(), torch.randn(1, 16, 32)


MODELS: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "small CNN 1x3x32x32": small_cnn, "transformer encoder layer 1x16x64": encoder_layer,
    "2-layer LSTM 1x16x32 (hidden 64)": lstm}


Lowered = tuple[Callable[[], Any], str, int]  # call, note, artifact bytes


def _lower_ours(model: nn.Module, x: torch.Tensor, hosted: bool) -> Lowered:
    import tempfile
    from pathlib import Path

    import delegate_sdk

    prog = delegate_sdk.lower(model, (x,), ["xnnpack"], hosted_ops=hosted)
    s = prog.summary()
    eager = sorted({f.op.split(".")[1] for f in s.fallback if f.op.count(".") >= 2})
    with tempfile.TemporaryDirectory() as tmp:
        prog.save(Path(tmp) / "m.dsdk")
        size = (Path(tmp) / "m.dsdk").stat().st_size
    return (lambda: prog(x)), (f"{s.nodes_accelerated} accelerated + {s.nodes_hosted} hosted of {s.nodes_total} "
                               f"nodes in {len(s.partitions)} partition(s)"
                               + (f"; on eager PyTorch: {', '.join(eager)}" if eager else "")), size


def lower_ours(model: nn.Module, x: torch.Tensor) -> Lowered:
    return _lower_ours(model, x, hosted=False)


def lower_ours_hosted(model: nn.Module, x: torch.Tensor) -> Lowered:
    return _lower_ours(model, x, hosted=True)


def lower_executorch(model: nn.Module, x: torch.Tensor) -> Lowered:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    ep = torch.export.export(model, (x,))
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    delegated = sum(1 for n in calls if "executorch_call_delegate" in str(n.target))
    outside = sorted({getattr(n.target, "__name__", str(n.target)) for n in calls
                      if "executorch_call_delegate" not in str(n.target) and "getitem" not in str(n.target)})
    pte = edge.to_executorch().buffer
    program = Runtime.get().load_program(pte)
    method = program.load_method("forward")
    note = f"{delegated} delegate call(s)" + (f"; outside XNNPACK: {', '.join(outside)}" if outside else "")

    def call() -> Any:
        # the runtime does not own the .pte bytes or the program: they must outlive the method
        _ = (pte, program)
        return method.execute([x])

    return call, note, len(pte)


LOWER: dict[str, Callable[[nn.Module, torch.Tensor], Lowered]] = {
    "delegate-sdk": lower_ours, "delegate-sdk hosted": lower_ours_hosted, "executorch": lower_executorch}


def first_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (list, tuple)) else out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed lowerings per path and model")
    ap.add_argument("--calls", type=int, default=500, help="calls per latency round")
    args = ap.parse_args()
    console = Console(width=170)
    torch.manual_seed(0)
    table = Table(title="XNNPACK fp32: delegate-sdk (hosted ops off / on) vs ExecuTorch's "
                        "to_edge_transform_and_lower (baseline)")
    for col in ("model", "metric", "delegate-sdk", "ratio/ET", "delegate-sdk hosted", "ratio/ET", "executorch"):
        table.add_column(col, justify="right" if col != "model" and col != "metric" else "left")
    notes: list[str] = []
    for name, make in MODELS.items():
        model, x = make()
        with torch.no_grad():
            eager = model(x)
        runs: dict[str, Callable[[], Any]] = {}
        first: dict[str, float] = {}
        lowering: dict[str, list[float]] = {}
        err: dict[str, float] = {}
        size: dict[str, int] = {}
        for path, lower in LOWER.items():
            t0 = time.perf_counter()
            runs[path], note, size[path] = lower(model, x)
            first[path] = time.perf_counter() - t0
            notes.append(f"{name} / {path}: {note}")
            err[path] = float((first_output(runs[path]()) - eager).abs().max())
            lowering[path] = []
            for _ in range(args.repeats):
                fresh, fx = make()  # new weights: no compile-cache hit
                t0 = time.perf_counter()
                lower(fresh, fx)
                lowering[path].append(time.perf_counter() - t0)
        best: dict[str, float] = {p: float("inf") for p in runs}
        for fn in runs.values():  # warm up
            for _ in range(20):
                fn()
        for _ in range(5):
            for path, fn in runs.items():
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    fn()
                best[path] = min(best[path], (time.perf_counter() - t0) / args.calls)
        ours, hosted, et = "delegate-sdk", "delegate-sdk hosted", "executorch"
        med = {p: statistics.median(v) for p, v in lowering.items()}
        table.add_row(name, "lowering (median, s)", f"{med[ours]:.2f}", f"{med[ours] / med[et]:.2f}x",
                      f"{med[hosted]:.2f}", f"{med[hosted] / med[et]:.2f}x", f"{med[et]:.2f}")
        table.add_row("", "first lowering incl. imports (s)", f"{first[ours]:.2f}", "", f"{first[hosted]:.2f}", "",
                      f"{first[et]:.2f}")
        table.add_row("", "per call (us)", f"{best[ours] * 1e6:.1f}", f"{best[ours] / best[et]:.2f}x",
                      f"{best[hosted] * 1e6:.1f}", f"{best[hosted] / best[et]:.2f}x", f"{best[et] * 1e6:.1f}")
        table.add_row("", "artifact (KB; .pte for executorch)", f"{size[ours] / 1e3:.0f}",
                      f"{size[ours] / size[et]:.2f}x", f"{size[hosted] / 1e3:.0f}", f"{size[hosted] / size[et]:.2f}x",
                      f"{size[et] / 1e3:.0f}")
        table.add_row("", "max |out - eager|", f"{err[ours]:.2e}", "", f"{err[hosted]:.2e}", "", f"{err[et]:.2e}")
    console.print(table)
    for n in notes:
        console.print(f"  {n}")


if __name__ == "__main__":
    main()
