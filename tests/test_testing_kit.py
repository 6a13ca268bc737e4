"""The plugin kit's side-by-side helpers: many one-op cases compiled as one model, each judged on its own
outputs, and the case that breaks the group named when it fails to compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from delegate_sdk import testing
from delegate_sdk.conformance.cases import FunctionModule as Fn
from delegate_sdk.registry import reset_default_registry


@pytest.fixture
def elem(monkeypatch):
    """A test backend that takes elementwise ops only (sin is not one of them)."""
    monkeypatch.setenv("DELEGATE_SDK_PLUGINS", "elem=dsdk_test_plugins.ir_backend:ELEMENTWISE_ONLY")
    reset_default_registry()
    yield "elem"
    reset_default_registry()


def _cases():
    torch.manual_seed(0)
    return {"relu": (nn.ReLU(), (torch.randn(2, 8),)),
            "add_pair": (Fn(lambda a, b: (a + b, a - b)), (torch.randn(3), torch.randn(3))),
            "tanh": (nn.Tanh(), (torch.randn(4, 4),))}


def test_side_by_side_gives_each_case_its_own_inputs_and_outputs():
    group = testing.side_by_side(list(_cases().values()))
    assert [tuple(a.shape) for a in group.args] == [(2, 8), (3,), (3,), (4, 4)]
    assert group.spans == [(0, 1), (1, 2), (3, 1)]
    with torch.no_grad():
        relu, pair, tanh = group.split(group.model(*group.args))
    assert torch.equal(relu[0], group.args[0].relu()) and torch.equal(tanh[0], group.args[3].tanh())
    assert torch.equal(pair[1], group.args[1] - group.args[2])
    assert [len(x) for x in group.split(group.expected)] == [1, 2, 1]


def _lowered(backend):
    def run(model, args):
        r = testing.lower_and_run(backend, model, args)  # strict: a node the backend refuses raises
        return r.outputs, r.expected
    return run


def _judge(name, result, outputs):
    got, want = result
    return [f"{name}: output {i} differs" for i in outputs if not torch.allclose(got[i], want[i], atol=1e-6)]


def test_a_faithful_group_has_no_problems_and_a_wrong_output_is_named_by_case(elem):
    assert testing.check_side_by_side(_cases(), _lowered(elem), _judge) == []

    def off_for_tanh(name, result, outputs):  # a judge that finds the tanh case wrong
        return [f"{name}: output {i} is off" for i in outputs] if name == "tanh" else []

    assert testing.check_side_by_side(_cases(), _lowered(elem), off_for_tanh) == ["tanh: output 3 is off"]


def test_the_case_that_breaks_the_group_is_named(elem):
    cases = _cases()
    cases["sin"] = (Fn(torch.sin), (torch.randn(5),))
    problems = testing.check_side_by_side(cases, _lowered(elem), _judge)
    assert len(problems) == 1 and problems[0].startswith("sin: FallbackError:"), problems
    # every case compiles alone, but not together: said as such
    calls = []

    def fails_with_two(model, args):
        calls.append(len(args))
        if len(args) > 2:
            raise RuntimeError("too big")
        return _lowered(elem)(model, args)

    assert testing.check_side_by_side(_cases(), fails_with_two, _judge) == [
        "relu, add_pair, tanh fail together (RuntimeError: too big) and pass one by one"]
    assert calls == [4, 1, 2, 1]
