"""The runtime-contract checks themselves, on hand-made calls (the canaries exercise them end to end)."""

from __future__ import annotations

import torch

from delegate_sdk.conformance import contract
from delegate_sdk.runtime import DelegateCall


def _call(inputs, outputs, pid="p0"):
    return DelegateCall(pid, "b", list(inputs), [x.clone() for x in inputs], list(outputs))


def test_bit_equal_sees_nan_payloads_and_layout_but_not_identity():
    a = torch.tensor([1.0, float("nan"), -0.0])
    assert contract.bit_equal(a, a.clone())
    assert not contract.bit_equal(a, torch.tensor([1.0, float("nan"), 0.0]))  # -0.0 vs 0.0
    assert not contract.bit_equal(a, a.double())
    assert contract.bit_equal(torch.zeros(0, 3), torch.zeros(0, 3))
    assert contract.bit_equal(torch.tensor([True, False]), torch.tensor([True, False]))


def test_close_enough_tolerates_kernel_variants_only():
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    assert contract.close_enough(x, x * (1 + 1e-7))
    assert not contract.close_enough(x, x * (1 + 1e-3))
    nan = torch.tensor([float("nan"), 1.0])
    assert not contract.close_enough(nan, torch.tensor([0.0, 1.0]))


def test_modified_inputs_are_named_by_partition():
    x = torch.ones(4)
    c = _call([x], [x * 2])
    assert contract.modified_delegate_inputs([c]) == []
    x.add_(1)
    problems = contract.modified_delegate_inputs([c])
    assert problems == ["partition p0 (b): execute modified its input 0 (float32[4]) in place: 4/4 elements changed"]
    y = torch.ones(2, 3)
    snap = contract.snapshot([y])
    y.t_()  # same values, other layout
    assert contract.modified_program_inputs([y], snap) == ["program input 0 (float32[2, 3]) was modified by the call"]


def test_outputs_reused_across_calls():
    buf = torch.zeros(3)
    first = _call([torch.ones(3)], [buf])
    kept = contract.outputs_by_partition([first])
    buf.copy_(torch.arange(3.0))  # the next call overwrote the buffer it handed out before
    second = _call([torch.ones(3)], [buf])
    assert "changed when the program was called again" in contract.reused_outputs([first], kept, [second])[0]
    # unchanged values but the same memory handed out twice: still reuse
    same = torch.ones(3)
    first, second = _call([torch.ones(3)], [same]), _call([torch.ones(3)], [same])
    assert "share memory" in contract.reused_outputs([first], contract.outputs_by_partition([first]), [second])[0]


def test_views_of_a_shared_input_are_not_reuse():
    w = torch.randn(4, 4)  # e.g. a weight both calls receive: a view of it in both outputs is eager semantics
    first, second = _call([w], [w.t()]), _call([w], [w.t()])
    assert contract.reused_outputs([first], contract.outputs_by_partition([first]), [second]) == []
    fresh1, fresh2 = _call([w], [w * 2]), _call([w], [w * 2])
    assert contract.reused_outputs([fresh1], contract.outputs_by_partition([fresh1]), [fresh2]) == []


def test_threaded_results_collects_errors_and_results_in_order():
    res, errors = contract.threaded_results(lambda xs: [xs[0] * 2], [(torch.tensor(float(i)),) for i in range(8)], 4)
    assert errors == [] and [float(r[0]) for r in res] == [0, 2, 4, 6, 8, 10, 12, 14]

    def boom(xs):
        raise RuntimeError("not thread safe")

    res, errors = contract.threaded_results(boom, [(torch.ones(1),)] * 4, 2)
    assert res == [None] * 4 and len(errors) == 4 and "RuntimeError: not thread safe" in errors[0]


def test_differences():
    a = [torch.ones(3), torch.tensor([1, 2])]
    assert contract.differences(a, [t.clone() for t in a]) == ""
    assert contract.differences(a, [torch.ones(3)]) == "1 outputs instead of 2"
    assert contract.differences(a, [torch.ones(4), a[1]]) == "output 0 is float32[4] instead of float32[3]"
    assert "output 1 differs in 1/2 elements" in contract.differences(a, [a[0], torch.tensor([1, 3])])
