"""The runtime contract besides numerics, checked by conformance on every claimed case.

A plugin can compute the right numbers and still hurt its users. These checks look at what the hookspecs
promise about ``execute`` and the artifact:

- inputs are never modified (bit-identical after every call, strides and shape too);
- outputs are never reused across calls (what call 1 returned is unchanged by call 2 and shares no memory
  with what call 2 returned, unless both are views of the same input, as eager PyTorch's views would be);
- ``thread_safe=True`` is true: several threads calling one loaded program get the single-threaded results;
- a fresh process, with new empty working and temp directories and the compile-time temp area gone, gets
  the same results from the artifact as the process that compiled it.

Each function returns problem sentences (empty when the contract holds) that name the partition and backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from delegate_sdk.runtime import DelegateCall


def _spec(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"


def bit_equal(a: Any, b: Any) -> bool:
    """Same type, dtype, shape and bytes (NaN payloads included); non-tensors by ``==``."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return type(a) is type(b) and a == b
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    x = a.detach().contiguous().reshape(-1)
    y = b.detach().contiguous().reshape(-1)
    return bool(torch.equal(x.view(torch.uint8), y.view(torch.uint8)))


def close_enough(a: Any, b: Any, rtol: float = 1e-5) -> bool:
    """Bit-equal, or floats within ``rtol`` of the data's magnitude with NaN and infinities in the same places
    (two processes may link a library that picks another kernel variant; that is not a contract problem)."""
    if bit_equal(a, b):
        return True
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    if a.dtype != b.dtype or a.shape != b.shape or not a.dtype.is_floating_point:
        return False
    x, y = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    if not torch.equal(torch.isnan(x), torch.isnan(y)):
        return False
    fin = torch.isfinite(x)
    if not torch.equal(fin, torch.isfinite(y)) or not torch.equal(x[~fin & ~torch.isnan(x)],
                                                                  y[~fin & ~torch.isnan(y)]):
        return False
    if not bool(fin.any()):
        return True
    rms = float(x[fin].pow(2).mean().sqrt())
    return bool(((x[fin] - y[fin]).abs() <= rtol * torch.clamp(x[fin].abs(), min=rms) + 1e-30).all())


def snapshot(xs: Sequence[Any]) -> list[Any]:
    """Copies to compare against later, with each tensor's layout recorded."""
    return [(x.clone(), tuple(x.shape), tuple(x.stride()), x.storage_offset()) if isinstance(x, torch.Tensor)
            else x for x in xs]


def _unchanged(x: torch.Tensor, snap: Any) -> bool:
    copy, shape, stride, offset = snap
    return (tuple(x.shape), tuple(x.stride()), x.storage_offset()) == (shape, stride, offset) and bit_equal(x, copy)


def modified_program_inputs(inputs: Sequence[Any], before: Sequence[Any]) -> list[str]:
    """The caller's inputs must come back exactly as they were."""
    out = []
    for k, (x, snap) in enumerate(zip(inputs, before)):
        if isinstance(x, torch.Tensor) and not _unchanged(x, snap):
            out.append(f"program input {k} ({_spec(snap[0])}) was modified by the call")
    return out


def modified_delegate_inputs(calls: Sequence[DelegateCall]) -> list[str]:
    """A delegate's inputs must be bit-identical after its ``execute``."""
    out = []
    for c in calls:
        for k, (x, copy) in enumerate(zip(c.inputs, c.inputs_before)):
            if not isinstance(x, torch.Tensor):
                continue
            if x.shape != copy.shape or not bit_equal(x, copy):
                n = int((x.reshape(-1) != copy.reshape(-1)).sum()) if x.shape == copy.shape else -1
                what = f"{n}/{copy.numel()} elements changed" if n >= 0 else f"reshaped to {list(x.shape)}"
                out.append(f"partition {c.partition} ({c.backend}): execute modified its input {k} "
                           f"({_spec(copy)}) in place: {what}")
    return out


def _span(t: torch.Tensor) -> tuple[int, int] | None:
    if t.numel() == 0:
        return None
    s = t.untyped_storage()
    ptr = s.data_ptr()
    return (ptr, ptr + s.nbytes()) if s.nbytes() else None


def _overlap(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    return a is not None and b is not None and a[0] < b[1] and b[0] < a[1]


def reused_outputs(first: Sequence[DelegateCall], kept: dict[str, list[Any]],
                   second: Sequence[DelegateCall]) -> list[str]:
    """What call 1 returned must survive call 2 unchanged and share no memory with call 2's outputs.

    ``kept`` holds copies of call 1's outputs per partition, taken before call 2.
    """
    out = []
    by_pid = {c.partition: c for c in second}
    for c in first:
        again = by_pid.get(c.partition)
        copies = kept.get(c.partition, [])
        changed = [k for k, (o, cp) in enumerate(zip(c.outputs, copies))
                   if isinstance(o, torch.Tensor) and not bit_equal(o, cp)]
        if changed:
            out.append(f"partition {c.partition} ({c.backend}): output(s) {changed} of one call changed when the "
                       "program was called again: execute returns buffers it reuses (return new tensors)")
            continue
        if again is None:
            continue
        shared_inputs = [_span(x) for x in (*c.inputs, *again.inputs) if isinstance(x, torch.Tensor)]
        for k, o1 in enumerate(c.outputs):
            if not isinstance(o1, torch.Tensor):
                continue
            s1 = _span(o1)
            for j, o2 in enumerate(again.outputs):
                if not isinstance(o2, torch.Tensor):
                    continue
                s2 = _span(o2)
                if _overlap(s1, s2) and not any(_overlap(s1, si) and _overlap(s2, si) for si in shared_inputs):
                    out.append(f"partition {c.partition} ({c.backend}): output {k} of one call and output {j} of "
                               "the next share memory: execute returns buffers it reuses (return new tensors)")
                    break
    return out


def outputs_by_partition(calls: Sequence[DelegateCall]) -> dict[str, list[Any]]:
    return {c.partition: [o.clone() if isinstance(o, torch.Tensor) else o for o in c.outputs] for c in calls}


def differences(expected: Sequence[Any], actual: Sequence[Any]) -> str:
    """'' when two runs' flat outputs agree (:func:`close_enough`), else which output differs and how."""
    if len(expected) != len(actual):
        return f"{len(actual)} outputs instead of {len(expected)}"
    for k, (e, a) in enumerate(zip(expected, actual)):
        if close_enough(e, a):
            continue
        if isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor):
            if e.dtype != a.dtype or e.shape != a.shape:
                return f"output {k} is {_spec(a)} instead of {_spec(e)}"
            diff = (e.double() - a.double()).abs()
            diff = diff[torch.isfinite(diff)]
            worst = f"max abs difference {float(diff.max()):.3g}" if diff.numel() else "non-finite values differ"
            n = int((e.reshape(-1) != a.reshape(-1)).sum())
            return f"output {k} differs in {n}/{e.numel()} elements ({worst})"
        return f"output {k} differs"
    return ""


def threaded_results(run: Callable[[tuple[Any, ...]], list[Any]], inputs: Sequence[tuple[Any, ...]],
                     threads: int, timeout: float = 120.0) -> tuple[list[list[Any] | None], list[str]]:
    """Call ``run`` on ``inputs`` from ``threads`` threads at once (input k on thread k % threads), all
    released together. Returns each call's flat outputs (None where it raised) and the errors raised."""
    results: list[list[Any] | None] = [None] * len(inputs)
    errors: list[str] = []
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            return
        for k in range(t, len(inputs), threads):
            try:
                results[k] = run(inputs[k])
            except Exception as e:  # reported: the plugin said it is thread safe
                errors.append(f"call {k}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")

    pool = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout)
    if any(th.is_alive() for th in pool):
        errors.append(f"calls from {threads} threads did not finish within {timeout:g} s (deadlock?)")
    return results, errors
