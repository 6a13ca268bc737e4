"""Conformance cases XNNPACK contributes beyond the built-in corpus.

The corpus exercises each op in the spelling the default core-ATen decomposition produces. XNNPACK runs
some ops whole that the corpus only reaches decomposed (hardswish, prelu, linear are kept by this plugin's
``keep_ops``), and some only in the restricted form its kernels implement (max over an inner dim of a 4-D
tensor with keepdim, slices with step 1), which the corpus samples do not hit. These cases check those
forms against eager PyTorch like any other.
"""

from __future__ import annotations

import torch
from torch import nn

from delegate_sdk.conformance.cases import FunctionModule, In, OpCase, Sample, seeded


def _std(*shapes: tuple[int, ...], edges: bool = True) -> list[Sample]:
    first, *rest = shapes
    s = [Sample("normal", (In(first),)), Sample("noncontig", (In(first, noncontig=True),))]
    s += [Sample("rank", (In(shape),), name=f"rank{len(shape)}_{i}") for i, shape in enumerate(rest)]
    if edges:
        s.append(Sample("edge", (In(first),), edges="all"))
    return s


def cases() -> list[OpCase]:
    return [
        OpCase("op/xnnpack_hardswish", "aten.hardswish.default", seeded(nn.Hardswish),
               _std((4, 16), (2, 3, 8, 8))),
        OpCase("op/xnnpack_prelu", "aten.prelu.default", seeded(lambda: nn.PReLU(8)),
               _std((2, 8, 6, 6), (1, 8, 3, 17))),
        OpCase("op/xnnpack_linear", "aten.linear.default", seeded(lambda: nn.Linear(16, 24)),
               _std((4, 16), (2, 3, 16), edges=False)),
        OpCase("op/xnnpack_max_dim_4d", "aten.max.dim",
               seeded(lambda: FunctionModule(lambda x: x.max(3, keepdim=True)[0] + x.max(2, keepdim=True)[0])),
               _std((2, 3, 8, 5), (1, 4, 5, 9))),
        OpCase("op/xnnpack_max_pool2d", "aten.max_pool2d.default",  # kept whole (keep_ops), values only
               seeded(lambda: FunctionModule(lambda x: torch.nn.functional.max_pool2d(x, 2) + 0.5)),
               _std((2, 3, 8, 8), (1, 4, 6, 10))),
        OpCase("op/xnnpack_slice_step1", "aten.slice.Tensor", seeded(lambda: FunctionModule(lambda x: x[:, 1:5, 2:] * 1.5)),
               _std((4, 8, 6), (2, 6, 7, 3))),
    ]
