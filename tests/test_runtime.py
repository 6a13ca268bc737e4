"""Runtime: input validation, handles, contract checks on execute, threads."""

from __future__ import annotations

import threading

import pytest
import torch

from delegate_sdk import hookimpl
from delegate_sdk.errors import ContractError, InputError
from delegate_sdk.lowering import lower
from dsdk_test_plugins.ir_backend import ELEMENTWISE, LINEAR, IRBackend
from dsdk_test_plugins.models import TwoOutputs, dynamic_mlp, small_cnn


@pytest.fixture
def cnn_prog(registry):
    registry.register(IRBackend("lin", LINEAR), "lin")
    registry.register(IRBackend("elem", ELEMENTWISE), "elem")
    model, (x,) = small_cnn()
    return lower(model, (x,), ["lin", "elem"], registry=registry), model, x


@pytest.mark.parametrize("bad, message", [
    ((), r"expected 1 input\(s\) \(x: float32\[2, 3, 8, 8\]\), got 0"),
    ((torch.randn(2, 3, 8, 8), torch.randn(1)), "expected 1 input"),
    ((torch.randn(2, 3, 8, 8).double(),), r"input args\[0\] \('x'\): expected dtype float32, got float64"),
    ((torch.randn(3, 8, 8),), r"input args\[0\] \('x'\): expected rank 4 float32\[2, 3, 8, 8\], got rank 3"),
    ((torch.randn(2, 3, 8, 9),), r"input args\[0\] \('x'\): dim 3 must be 8, got 9"),
    (([1.0],), r"input args\[0\] \('x'\): expected a tensor float32\[2, 3, 8, 8\], got list"),
])
def test_bad_inputs_name_the_input(cnn_prog, bad, message):
    prog, _, _ = cnn_prog
    with pytest.raises(InputError, match=message):
        prog(*bad)


def test_dynamic_dim_range(registry):
    registry.register(IRBackend("lin", LINEAR), "lin")
    model, (x,), dyn = dynamic_mlp()
    prog = lower(model, (x,), ["lin"], registry=registry, dynamic_shapes=dyn)
    with pytest.raises(InputError, match=r"dim 0 \(s\w+\) must be in \[1, 64\], got 65"):
        prog(torch.randn(65, 6))
    prog(torch.randn(64, 6))


def test_non_contiguous_inputs(cnn_prog):
    prog, model, _ = cnn_prog
    x = torch.randn(2, 8, 8, 3).permute(0, 3, 1, 2)
    assert not x.is_contiguous()
    torch.testing.assert_close(prog(x), model(x), rtol=0, atol=0)


class WrongOutputs(IRBackend):
    def __init__(self, mode: str):
        super().__init__("wrong", ELEMENTWISE)
        self.mode = mode

    @hookimpl
    def execute(self, handle, inputs):  # type: ignore[override]
        out = IRBackend.execute(self, handle, inputs)
        if self.mode == "count":
            return out + out
        if self.mode == "dtype":
            return [t.double() for t in out]
        if self.mode == "shape":
            return [t.reshape(-1) for t in out]
        return out


@pytest.mark.parametrize("mode, message", [("count", r"returned 4 output\(s\), expected 2"),
                                           ("dtype", "output 0 has dtype float64, expected float32"),
                                           ("shape", r"output 0 has shape \[20\], expected \[4, 5\]")])
def test_execute_contract_is_checked(registry, mode, message):
    registry.register(WrongOutputs(mode), "wrong")
    m = TwoOutputs()
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    prog = lower(m, (a, b), ["wrong"], registry=registry)
    with pytest.raises(ContractError, match=message):
        prog(a, b)


@pytest.mark.parametrize("thread_safe", [False, True])
def test_eight_threads_get_correct_results(registry, thread_safe):
    be = IRBackend("lin", LINEAR, thread_safe=thread_safe, slow_execute=0.002)
    registry.register(be, "lin")
    registry.register(IRBackend("elem", ELEMENTWISE, thread_safe=thread_safe, slow_execute=0.002), "elem")
    model, (x,) = small_cnn()
    prog = lower(model, (x,), ["lin", "elem"], registry=registry)
    inits = be.inits
    inputs = [torch.randn(2, 3, 8, 8) for _ in range(8)]
    expected = [model(t) for t in inputs]
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        try:
            barrier.wait()
            for _ in range(10):
                torch.testing.assert_close(prog(inputs[k]), expected[k], rtol=0, atol=0)
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert be.inits == inits
    if thread_safe:
        assert be.max_concurrent > 1  # the core does not serialise a thread-safe plugin
    else:
        assert be.max_concurrent == 1  # ... and does serialise one that is not


def test_the_outer_graph_runs_as_generated_code_that_no_artifact_string_can_enter():
    """Value names, op names and keyword names in graph.json are data: a name that is Python code stays a name."""
    from delegate_sdk.errors import ArtifactCorruptError
    from delegate_sdk.graph_ir import CompiledGraph, Executor, GNode, OuterGraph

    evil = "x); import os; os._exit(3); (y"
    graph = OuterGraph([evil], ["w"], [
        GNode("__import__('os').getcwd()", "aten.add.Tensor", [{"ref": evil}, {"ref": "w"}], {"alpha": 2}),
        GNode("d", "delegate", [[{"ref": "__import__('os').getcwd()"}]], {}, 0),
        GNode("d0", "operator.getitem", [{"ref": "d"}, 0], {}),
        GNode("s", "aten.sum.dim_IntList", [{"ref": "d0"}, [0]], {"keepdim": True}),
    ], [{"ref": "s"}, {"ref": "d0"}])
    calls = []

    def call(idx, inputs):
        calls.append(idx)
        return [inputs[0] * 10]

    compiled = CompiledGraph(graph, call)
    assert "os" not in compiled.source and evil not in compiled.source
    x, w = torch.ones(2, 3), torch.full((2, 3), 0.5)
    out = compiled.run({evil: x, "w": w})
    ref = Executor(graph, call).run({evil: x, "w": w})
    assert all(torch.equal(a, b) for a, b in zip(out, ref)) and calls == [0, 0]
    assert torch.equal(out[1], (x + 2 * w) * 10)
    bad_kw = OuterGraph(["a"], [], [GNode("b", "aten.relu.default", [{"ref": "a"}], {"x=1) or (y": 1})],
                        [{"ref": "b"}])
    with pytest.raises(ArtifactCorruptError, match="keyword argument named"):
        CompiledGraph(bad_kw, call)
    undefined = OuterGraph(["a"], [], [GNode("b", "aten.relu.default", [{"ref": "zzz"}], {})], [{"ref": "b"}])
    with pytest.raises(ArtifactCorruptError, match="before it is defined"):
        CompiledGraph(undefined, call)


@pytest.mark.parametrize("thread_safe", [False, True])
def test_close_waits_for_running_executes_and_later_calls_are_refused(registry, thread_safe):
    """destroy never overlaps an execute on the same handle (the hookspecs promise it), thread safe or not."""
    be = IRBackend("slow", ELEMENTWISE | LINEAR, thread_safe=thread_safe, slow_execute=0.2)
    registry.register(be, "slow")
    model, (x,) = small_cnn()
    prog = lower(model, (x,), ["slow"], registry=registry)
    started = threading.Event()
    results: list[object] = []

    def call() -> None:
        started.set()
        results.append(prog(x))

    workers = [threading.Thread(target=call) for _ in range(3)]
    for w in workers:
        w.start()
    started.wait()
    while be.executes == 0:  # an execute is running now
        threading.Event().wait(0.005)
    prog.close()
    for w in workers:
        w.join()
    assert be.destroyed >= 1 and be.destroyed_while_running == 0
    from delegate_sdk.errors import UsageError

    with pytest.raises(UsageError, match="program was closed"):
        prog(x)
