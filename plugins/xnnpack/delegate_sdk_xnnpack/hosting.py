"""Hosted ops: what ExecuTorch's portable kernels run on the CPU inside an xnnpack partition.

With ``hosted_ops`` on (the lowering asks for it; off by default), a node XNNPACK refuses can still join a
partition when ExecuTorch's runtime has a portable kernel for it: the partition's ``.pte`` then holds the
XNNPACK delegate calls *and* those portable ops, and one ExecuTorch method call runs the lot, as ExecuTorch's
own ``to_edge_transform_and_lower`` flow does. Such nodes are answered as ``Claims.hosted`` and counted apart
from the accelerated ones; the core keeps them only inside partitions that have accelerated nodes.

A node is hostable when it is a core-ATen op whose out-variant (or, for a view op, whose ``*_copy`` out
variant, which is what ExecuTorch runs for views) has a kernel registered in this ExecuTorch runtime, with
static, non-empty shapes and dtypes the portable kernels take. fp32 only: at int8 the XNNPACK quantizer would
leave hosted ops unquantized between quantized neighbours.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch

from delegate_sdk.support import static_tensors, with_hosted
from delegate_sdk.types import Claims

from delegate_sdk_xnnpack._toolchain import quiet, runtime_module

HOSTABLE_DTYPES = (torch.float32, torch.int64, torch.int32, torch.bool)


@functools.lru_cache(maxsize=1)
def portable_kernels() -> frozenset[str]:
    """``aten::add.out``, ... : the kernels this ExecuTorch runtime has registered."""
    return frozenset(runtime_module()._get_operator_names())


@functools.lru_cache(maxsize=512)
def has_portable_kernel(op: torch._ops.OpOverload) -> bool:
    with quiet("executorch import"):
        from executorch.exir.operator.convert import to_out_variant

    kernels = portable_kernels()
    candidates = [op]
    copy_packet = getattr(torch.ops.aten, f"{op._opname}_copy", None)
    if copy_packet is not None and hasattr(copy_packet, op._overloadname):
        candidates.append(getattr(copy_packet, op._overloadname))
    for cand in candidates:
        try:
            out, _ = to_out_variant(cand)
        except Exception:  # no out variant: ExecuTorch cannot run this spelling
            continue
        name = out._schema.name + (f".{out._schema.overload_name}" if out._schema.overload_name else "")
        if name in kernels:
            return True
    return False


def hostable(node: torch.fx.Node) -> bool:
    return static_tensors(node, HOSTABLE_DTYPES) and has_portable_kernel(node.target)


def with_hosting(claims: Claims, nodes: Iterable[torch.fx.Node]) -> Claims:
    """The same answer, with the refused nodes ExecuTorch's portable kernels can run moved to ``hosted``."""
    return with_hosted(claims, nodes, hostable)
