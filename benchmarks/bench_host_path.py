"""The SDK's own per-call cost on a multi-partition program: the outer graph interpreted step by step
(``graph_ir.Executor``, the host path before 2026-12-01) against the same graph as generated straight-line code
(``graph_ir.CompiledGraph``, what ``Program`` runs now), in the same run.

Run: python benchmarks/bench_host_path.py [--calls 5000]

The program: a small MLP block lowered on the core's test engine so that it becomes 3 partitions with eager
glue between them (layer norm and a softmax the engine refuses). Each delegate is replaced by a function that
returns its precomputed outputs, so what is timed is only what the SDK does per call: input checks, the outer
graph (its eager glue ops included, the same in both), delegate dispatch and output checks. A second table
times the same outer graph alone (no input checks), which is where the two executors differ.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from delegate_sdk.graph_ir import CompiledGraph, Executor  # noqa: E402
from delegate_sdk.lowering import lower  # noqa: E402
from delegate_sdk.registry import Registry  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(32, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 32)
        self.norm = torch.nn.LayerNorm(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(torch.relu(self.a(x)))
        x = torch.softmax(torch.relu(self.b(x)), -1)
        return torch.relu(self.c(x)) + x


def best(fn, calls: int, rounds: int = 7) -> float:
    for _ in range(200):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return min(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    args = ap.parse_args()
    from dsdk_test_plugins.ir_backend import ELEMENTWISE, LINEAR, IRBackend

    torch.manual_seed(0)
    reg = Registry(load_entry_points=False, load_env=False)
    reg.register(IRBackend("engine", ELEMENTWISE | LINEAR), "engine")
    model, x = Block().eval(), torch.randn(4, 32)
    prog = lower(model, (x,), ["engine"], registry=reg)
    rt = prog._runtime
    n_parts = len(rt.delegates)
    glue = len([n for n in rt.graph.nodes if n.op not in ("delegate", "operator.getitem")])
    with torch.no_grad():
        ref = prog(x)
    # every delegate returns what it returned the first time: the engine's own cost drops out
    cache: dict[int, list[torch.Tensor]] = {}
    for i, d in enumerate(rt.delegates):
        real = d._execute

        def frozen(handle, inputs, _i=i, _real=real):
            if _i not in cache:
                cache[_i] = _real(handle=handle, inputs=inputs)
            return cache[_i]

        d._execute = frozen
    prog(x)
    env = dict(rt._weights)
    env[rt.graph.user_inputs[0]] = x
    interp = Executor(rt.graph, rt._call_delegate)
    compiled = CompiledGraph(rt.graph, rt._call_delegate)
    assert torch.equal(interp.run(dict(env))[0], compiled.run(dict(env))[0])
    assert torch.allclose(prog(x), ref)

    t_interp = best(lambda: interp.run(dict(env)), args.calls)
    t_comp = best(lambda: compiled.run(env), args.calls)
    t_prog = best(lambda: prog(x), args.calls)
    rt._run_graph = lambda *a: interp.run(dict(zip(rt._order, a)))  # the program as it ran before
    t_prog_interp = best(lambda: prog(x), args.calls)
    # the glue ops' own kernels, called directly: what neither executor can save
    w, b = model.norm.weight.detach(), model.norm.bias.detach()
    h = torch.randn(4, 32)
    aten = torch.ops.aten
    t_glue = best(lambda: (aten.native_layer_norm.default(h, [32], w, b, 1e-5), aten._softmax.default(h, -1, False)),
                  args.calls)
    print(f"program: {n_parts} partitions, {glue} eager glue ops, {len(rt.graph.nodes)} outer-graph nodes; "
          f"the glue kernels alone take {t_glue:.1f} us per call")
    print(f"{'':<34}{'interpreted us':>16}{'compiled us':>14}{'ratio':>8}")
    print(f"{'outer graph alone':<34}{t_interp:>16.1f}{t_comp:>14.1f}{t_interp / t_comp:>7.2f}x")
    print(f"{'Program call (SDK cost + glue)':<34}{t_prog_interp:>16.1f}{t_prog:>14.1f}{t_prog_interp / t_prog:>7.2f}x")
    sdk_before, sdk_after = t_prog_interp - t_glue, t_prog - t_glue
    print(f"{'SDK alone (minus the glue kernels)':<34}{sdk_before:>16.1f}{sdk_after:>14.1f}"
          f"{sdk_before / sdk_after:>7.2f}x")


if __name__ == "__main__":
    main()
