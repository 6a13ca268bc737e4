"""Conformance cases Core ML contributes beyond the built-in corpus.

The claim table takes some ops no corpus case is about: ops kept whole
(pixel (un)shuffle), 3-d pooling, instance norm's statistics-free batch norm,
the constant makers (full, full_like, arange, scalar_tensor), dtype casts, and
forms of indexing and reduction the corpus reaches only through other ops.
Each case here checks one of them against eager PyTorch like any other, so
that every op the table can claim is certified by some case.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from delegate_sdk.conformance.cases import In, OpCase, Sample, function_module, seeded


def _one(*shapes: tuple[int, ...], dtype: str = "float32", dist: str = "normal", edges: str | None = "all",
         low: float | None = None, high: float | None = None) -> list[Sample]:
    """normal, non-contiguous, rank variants (the further shapes) and edge values of one input."""
    first, *rest = shapes
    s = [Sample("normal", (In(first, dtype, dist, low, high),)),
         Sample("noncontig", (In(first, dtype, dist, low, high, noncontig=True),))]
    s += [Sample("rank", (In(shape, dtype, dist, low, high),), name=f"rank{len(shape)}_{i}")
          for i, shape in enumerate(rest)]
    if edges and dtype.startswith("float"):
        s.append(Sample("edge", (In(first, dtype, dist, low, high),), edges=edges))
    return s


def _indexed(x: tuple[int, ...], index: tuple[int, ...], size: int, *more: In) -> list[Sample]:
    """A float input, int64 indices into a dim of ``size``, and further inputs."""
    def ins(noncontig: bool = False) -> tuple[In, ...]:
        return (In(x, noncontig=noncontig), In(index, "int64", "index", high=size), *more)

    return [Sample("normal", ins()), Sample("noncontig", ins(noncontig=True)),
            Sample("edge", ins(), edges="all")]


def cases() -> list[OpCase]:
    pool3d = [Sample("normal", (In((1, 2, 4, 6, 6)),)), Sample("noncontig", (In((1, 2, 4, 6, 6), noncontig=True),)),
              Sample("rank", (In((2, 3, 4, 4, 4)),), name="batch2"),
              Sample("edge", (In((1, 2, 4, 6, 6)),), edges="finite")]
    bools = [Sample("normal", (In((4, 16), "bool", "bool"),)),
             Sample("noncontig", (In((4, 16), "bool", "bool", noncontig=True),)),
             Sample("rank", (In((2, 3, 5), "bool", "bool"),), name="rank3")]
    return [
        OpCase("op/coreml_pixel_shuffle", "aten.pixel_shuffle.default", seeded(lambda: nn.PixelShuffle(2)),
               _one((1, 8, 3, 3), (2, 4, 4, 5))),
        OpCase("op/coreml_pixel_unshuffle", "aten.pixel_unshuffle.default", seeded(lambda: nn.PixelUnshuffle(2)),
               _one((1, 2, 4, 6), (2, 3, 6, 4))),
        OpCase("op/coreml_max_pool3d", "aten.max_pool3d_with_indices.default", function_module(lambda x: F.max_pool3d(x, 2)),
               pool3d),
        OpCase("op/coreml_avg_pool3d", "aten.avg_pool3d.default", function_module(lambda x: F.avg_pool3d(x, 2)), pool3d,
               reduction=8),
        OpCase("op/coreml_instance_norm", "aten._native_batch_norm_legit.no_stats",
               seeded(lambda: nn.InstanceNorm2d(4, affine=True)), _one((2, 4, 5, 5), (1, 4, 3, 7), edges=None),
               reduction=25, cond=2.0),
        OpCase("op/coreml_full", "aten.full.default", function_module(lambda x: x + torch.full(x.shape, 1.5)),
               _one((4, 16), (2, 3, 5))),
        OpCase("op/coreml_full_like", "aten.full_like.default", function_module(lambda x: x * torch.full_like(x, 0.5)),
               _one((4, 16), (2, 3, 5))),
        OpCase("op/coreml_arange", "aten.arange.start_step", function_module(lambda x: x + torch.arange(x.shape[-1])),
               _one((4, 16), (2, 3, 5))),
        OpCase("op/coreml_where_scalar", "aten.scalar_tensor.default", function_module(lambda x: torch.where(x > 0, x, 0.5)),
               _one((4, 16), (2, 3, 5))),
        OpCase("op/coreml_to_float", "aten._to_copy.default", function_module(lambda x: x.to(torch.float32)),
               _one((4, 16), (2, 3, 5), dtype="int64", dist="int", low=-100, high=100)),
        # multiples of 0.25 are exact in fp16, so truncation toward zero sees the same value as eager
        OpCase("op/coreml_to_int", "aten._to_copy.default", function_module(lambda x: x.to(torch.int32)),
               _one((4, 16), (2, 3, 5), dist="grid", edges=None)),
        OpCase("op/coreml_any_all", "aten.any.default", function_module(lambda x: x.any()), bools),
        OpCase("op/coreml_any_dims", "aten.any.dims", function_module(lambda x: x.any(dim=(0, 1))), bools),
        OpCase("op/coreml_min_dim", "aten.min.dim", function_module(lambda x: tuple(x.min(-1))),
               _one((4, 16), (2, 3, 5, 7), edges="finite"), reduction=lambda xs: int(xs[0].shape[-1])),
        OpCase("op/coreml_mul_scalar", "aten.mul.Scalar", function_module(lambda x: torch.ops.aten.mul.Scalar(x, -1.5)),
               _one((4, 16), (37,))),
        OpCase("op/coreml_pow_scalar_base", "aten.pow.Scalar", function_module(lambda x: 2 ** x), _one((4, 16), (37,)),
               cond=4.0),
        OpCase("op/coreml_atanh", "aten.atanh.default", function_module(torch.atanh),
               _one((4, 16), (37,), dist="uniform", low=-0.9, high=0.9), cond=4.0),
        OpCase("op/coreml_scatter_value", "aten.scatter.value", function_module(lambda x, i: x.scatter(1, i, 2.5)),
               _indexed((4, 8), (4, 1), 8)),
        OpCase("op/coreml_slice_scatter", "aten.slice_scatter.default",
               function_module(lambda x, y: torch.slice_scatter(x, y, 1, 1, 3)), [
                   Sample("normal", (In((4, 8)), In((4, 2)))),
                   Sample("noncontig", (In((4, 8), noncontig=True), In((4, 2)))),
                   Sample("rank", (In((2, 6, 3)), In((2, 2, 3))), name="rank3"),
                   Sample("edge", (In((4, 8)), In((4, 2))), edges="all")]),
    ]
