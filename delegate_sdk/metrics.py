"""Error metrics between a delegated result and a reference (shared by `run --check` and conformance)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Comparison:
    max_abs_err: float
    max_rel_err: float
    sqnr_db: float | None  # None when the error is exactly zero (infinite SQNR)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err, "sqnr_db": self.sqnr_db,
                "note": self.note}


def sqnr_db(actual: torch.Tensor, ref: torch.Tensor) -> float | None:
    """Signal-to-quantization-noise ratio of ``actual`` against ``ref`` in dB (finite elements only)."""
    a, r = actual.double(), ref.double()
    finite = torch.isfinite(r) & torch.isfinite(a)
    noise = ((a - r)[finite] ** 2).sum().item()
    signal = (r[finite] ** 2).sum().item()
    if noise == 0:
        return None
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def compare_one(actual: Any, ref: Any) -> Comparison:
    if not isinstance(actual, torch.Tensor) or not isinstance(ref, torch.Tensor):
        same = actual == ref
        return Comparison(0.0 if same else math.inf, 0.0 if same else math.inf, None, "" if same else "non-tensor differs")
    if actual.shape != ref.shape:
        return Comparison(math.inf, math.inf, -math.inf, f"shape {list(actual.shape)} vs {list(ref.shape)}")
    if actual.numel() == 0:
        return Comparison(0.0, 0.0, None)
    a, r = actual.detach().double(), ref.detach().double()
    note = []
    nan_mismatch = int((torch.isnan(a) != torch.isnan(r)).sum())
    if nan_mismatch:
        note.append(f"{nan_mismatch} NaN mismatch(es)")
    inf_mismatch = int(((torch.isinf(a) | torch.isinf(r)) & (a != r) & ~torch.isnan(a) & ~torch.isnan(r)).sum())
    if inf_mismatch:
        note.append(f"{inf_mismatch} inf mismatch(es)")
    finite = torch.isfinite(a) & torch.isfinite(r)
    diff = (a - r).abs()[finite]
    max_abs = float(diff.max()) if diff.numel() else 0.0
    rel = diff / r.abs()[finite].clamp_min(1e-12)
    max_rel = float(rel.max()) if rel.numel() else 0.0
    if nan_mismatch or inf_mismatch:
        max_abs = math.inf
    return Comparison(max_abs, max_rel, sqnr_db(a, r), "; ".join(note))


def compare(actual: list[Any], ref: list[Any]) -> list[Comparison]:
    if len(actual) != len(ref):
        return [Comparison(math.inf, math.inf, -math.inf, f"{len(actual)} outputs vs {len(ref)}")]
    return [compare_one(a, r) for a, r in zip(actual, ref)]


_MAC_OPS = ("aten.convolution.default", "aten.addmm.default", "aten.mm.default", "aten.bmm.default",
            "aten.linear.default")


def node_macs(node: Any) -> int:
    """Multiply-accumulates of a conv / linear / matmul node (0 for every other op), from its fake tensors."""
    from delegate_sdk.support import op_name

    name = op_name(node)
    if name not in _MAC_OPS:
        return 0

    def shape(a: Any) -> tuple[int, ...] | None:
        v = a.meta.get("val") if hasattr(a, "meta") else None
        if not isinstance(v, torch.Tensor) or any(not isinstance(d, int) for d in v.shape):
            return None
        return tuple(v.shape)

    out = node.meta.get("val")
    if not isinstance(out, torch.Tensor) or any(not isinstance(d, int) for d in out.shape):
        return 0
    if name == "aten.convolution.default":
        x, w = shape(node.args[0]), shape(node.args[1])
        if x is None or w is None:
            return 0
        k = math.prod(w[2:])
        transposed = bool(node.args[6]) if len(node.args) > 6 else False
        return math.prod(x) * w[1] * k if transposed else out.numel() * w[1] * k
    if name == "aten.linear.default":
        w = shape(node.args[1])
        return out.numel() * w[1] if w is not None else 0
    a = shape(node.args[1] if name == "aten.addmm.default" else node.args[0])
    return out.numel() * a[-1] if a is not None else 0
