"""Conformance cases arm_ethos contributes beyond the built-in corpus.

The corpus exercises each op in the spelling the default core-ATen decomposition produces. This plugin also
claims ops the corpus never reaches: the ones it keeps whole (hardswish, silu, linear, ... one TABLE or one
CONV2D instead of their decomposition), unary functions the corpus has no case for, the int64-free form of
min.dim, a bool -> float32 copy (U85), and the Scalar overloads of add/sub/mul/div, which survive the
decomposition only when a model (or another exporter) calls them by name, as the modules here do.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from delegate_sdk.conformance.cases import In, OpCase, Sample, function_module

_ATEN = torch.ops.aten


def _samples(dist: str = "normal", low: float | None = None, high: float | None = None,
             last: int = 16) -> list[Sample]:
    def i(shape: tuple[int, ...], **kw: Any) -> In:
        return In(shape, "float32", dist, low, high, **kw)

    return [Sample("normal", (i((4, last)),)), Sample("noncontig", (i((4, last), noncontig=True),)),
            Sample("rank", (i((1, 3, 5, last)),), name="rank4")]


def _unary(name: str, op: str, module: Callable[[], nn.Module], **kw: Any) -> OpCase:
    cond = kw.pop("cond", 1.0)
    return OpCase(f"op/arm_ethos_{name}", op, module, _samples(**kw), cond=cond)


def cases() -> list[OpCase]:
    """The cases, one per op the corpus has none for."""
    return [
        # kept whole (the claim table's keep_whole rows): one TABLE each
        _unary("hardswish", "aten.hardswish.default", nn.Hardswish),
        _unary("hardsigmoid", "aten.hardsigmoid.default", nn.Hardsigmoid),
        _unary("silu", "aten.silu.default", nn.SiLU),
        _unary("mish", "aten.mish.default", nn.Mish),
        _unary("softplus", "aten.softplus.default", nn.Softplus),
        _unary("celu", "aten.celu.default", nn.CELU),
        _unary("selu", "aten.selu.default", nn.SELU),
        OpCase("op/arm_ethos_linear", "aten.linear.default", lambda: nn.Linear(16, 24),
               [Sample("normal", (In((4, 16)),)), Sample("noncontig", (In((4, 16), noncontig=True),)),
                Sample("rank", (In((2, 3, 16)),), name="rank3")], reduction=16),
        # unary functions as TABLEs, inputs inside their domain
        _unary("acosh", "aten.acosh.default", function_module(torch.acosh), dist="uniform", low=1.05, high=4.0, cond=2.0),
        _unary("atanh", "aten.atanh.default", function_module(torch.atanh), dist="unit", cond=4.0),
        _unary("erfc", "aten.erfc.default", function_module(torch.erfc)),
        _unary("lgamma", "aten.lgamma.default", function_module(torch.lgamma), dist="positive", cond=2.0),
        _unary("digamma", "aten.digamma.default", function_module(torch.digamma), dist="positive", cond=4.0),
        # min.dim with its int64 indices unused (the rules refuse it otherwise)
        _unary("min_dim_values", "aten.min.dim", function_module(lambda x: x.min(-1)[0])),
        # detach exports as alias, a no-op the lowering passes through
        _unary("alias", "aten.alias.default", function_module(lambda x: torch.relu(x.detach()))),
        # bool -> float32 (U85; the U55/U65 refuse bool tensors)
        _unary("bool_to_float", "aten._to_copy.default", function_module(lambda x: (x > 0).to(torch.float32))),
        # the Scalar overloads, which a model reaches by calling them by name
        _unary("add_scalar", "aten.add.Scalar", function_module(lambda x: _ATEN.add.Scalar(x, 1.5))),
        _unary("sub_scalar", "aten.sub.Scalar", function_module(lambda x: _ATEN.sub.Scalar(x, 0.75))),
        _unary("mul_scalar", "aten.mul.Scalar", function_module(lambda x: _ATEN.mul.Scalar(x, -2.5))),
        _unary("div_scalar", "aten.div.Scalar", function_module(lambda x: _ATEN.div.Scalar(x, 4.0))),
        _unary("view_copy", "aten.view_copy.default",
               function_module(lambda x: _ATEN.view_copy.default(x, [x.shape[0], -1]) * 2.0)),
    ]
