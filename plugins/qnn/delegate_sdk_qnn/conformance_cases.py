"""Conformance cases QNN contributes beyond the built-in corpus.

The corpus exercises each op in the spelling the default core-ATen decomposition produces. The claim table
also takes spellings the corpus never reaches: scaled_dot_product_attention, which this plugin keeps whole;
the ``.Scalar`` overloads of add/sub/mul/div, which a graph holds when code calls them directly (the
exporter turns ``x + 1.5`` into ``add.Tensor``); ``alias`` (``detach``); casts (``_to_copy``); and
``min.dim``, the twin of the corpus's ``max.dim``. These cases check those forms against eager PyTorch like
any other, with the corpus's sample kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from delegate_sdk.conformance.cases import In, OpCase, Sample, function_module


def _unary(dtype: str = "float32", dist: str = "normal", high: float | None = None) -> list[Sample]:
    def i(shape: tuple[int, ...], **kw: Any) -> In:
        return In(shape, dtype, dist, high=high, **kw)

    s = [Sample("normal", (i((4, 16)),)), Sample("noncontig", (i((4, 16), noncontig=True),)),
         Sample("rank", (i((2, 3, 5, 7)),), name="rank4")]
    if dtype == "float32":
        s.append(Sample("edge", (i((4, 16)),), edges="all"))
    s += [Sample("zero_size", (i((0, 16)),)), Sample("dynamic", (i((5, 16)),), dynamic={0: {0: "batch"}})]
    return s


def _reduce() -> list[Sample]:
    return [Sample("normal", (In((4, 16)),)), Sample("noncontig", (In((4, 16), noncontig=True),)),
            Sample("rank", (In((2, 3, 5, 7)),), name="rank4"), Sample("large", (In((4, 1024)),), name="long"),
            Sample("edge", (In((4, 16)),), edges="finite")]


def _attention_len(xs: Sequence[Any]) -> int:
    # each output element sums over the keys, each score over the head dim
    return int(xs[0].shape[-1]) * int(xs[1].shape[-2])


def _sdpa_samples() -> list[Sample]:
    q, kv = (2, 4, 8, 16), (2, 4, 12, 16)
    return [
        Sample("normal", (In(q), In(kv), In(kv))),
        Sample("noncontig", (In(q, noncontig=True), In(kv), In(kv, noncontig=True))),
        Sample("broadcast", (In(q), In((1, 4, 12, 16)), In((1, 4, 12, 16)))),
        Sample("rank", (In((4, 8, 16)), In((4, 12, 16)), In((4, 12, 16))), name="rank3"),
        Sample("edge", (In(q), In(kv), In(kv)), edges="finite"),
        Sample("large", (In((1, 2, 64, 32)), In((1, 2, 256, 32)), In((1, 2, 256, 32))), name="long"),
    ]


def cases() -> list[OpCase]:
    """The cases the ``conformance_cases`` hook returns."""
    scalar = [
        ("add", "aten.add.Scalar", lambda x: torch.ops.aten.add.Scalar(x, 1.5)),
        ("sub", "aten.sub.Scalar", lambda x: torch.ops.aten.sub.Scalar(x, 0.75)),
        ("mul", "aten.mul.Scalar", lambda x: torch.ops.aten.mul.Scalar(x, -1.5)),
        ("div", "aten.div.Scalar", lambda x: torch.ops.aten.div.Scalar(x, 3.0)),
    ]
    out = [OpCase(f"op/qnn_{name}_scalar_overload", op, function_module(f), _unary()) for name, op, f in scalar]
    out += [
        OpCase("op/qnn_alias", "aten.alias.default", function_module(lambda x: x.detach() * 2.0), _unary()),
        OpCase("op/qnn_cast_bool_float", "aten._to_copy.default", function_module(lambda m: m.to(torch.float32)),
               _unary("bool", "bool")),
        OpCase("op/qnn_cast_index_float", "aten._to_copy.default", function_module(lambda i: i.to(torch.float32)),
               _unary("int64", "index", high=50)),
        OpCase("op/qnn_min_dim", "aten.min.dim", function_module(lambda x: tuple(x.min(-1))), _reduce()),
        OpCase("op/qnn_sdpa", "aten.scaled_dot_product_attention.default",
               function_module(lambda q, k, v: F.scaled_dot_product_attention(q, k, v)), _sdpa_samples(),
               reduction=_attention_len, cond=2.0),
        OpCase("op/qnn_sdpa_float_mask", "aten.scaled_dot_product_attention.default",
               function_module(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m)), [
                   Sample("normal", (In((2, 4, 8, 16)), In((2, 4, 12, 16)), In((2, 4, 12, 16)), In((2, 4, 8, 12)))),
                   Sample("broadcast", (In((2, 4, 8, 16)), In((2, 4, 12, 16)), In((2, 4, 12, 16)), In((8, 12)))),
                   Sample("noncontig", (In((2, 4, 8, 16)), In((2, 4, 12, 16)), In((2, 4, 12, 16)),
                                        In((2, 4, 8, 12), noncontig=True))),
               ], reduction=_attention_len, cond=2.0),
    ]
    return out
