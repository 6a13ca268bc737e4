"""Hosted ops: what ONNX Runtime's CPU provider runs inside a qnn partition, in the same session.

With ``hosted_ops`` on (the lowering asks for it; off by default), a node QNN HTP refuses can still join a
partition when torch.onnx can export it: the partition's ONNX model then holds both, ONNX Runtime gives the
QNN EP the nodes it takes (one or more HTP graphs, one EPContext node each) and its CPU provider the rest, and
one ``session.run`` runs the lot. Such nodes are answered as ``Claims.hosted`` and counted apart from the
accelerated ones.

Only nodes refused because QNN has no implementation of the op (``ReasonCode.OP``: no QNN op builder, or an
op HTP rejects outright) are hosted. A node refused for its dtype, rank, arguments or precision is an ONNX
op the QNN EP *would* take, and then run on HTP in the very way the refusal was about (int64 narrowed to
int32, a mask quantized), since ONNX Runtime assigns nodes by op type, not by our claim.

Honesty is checked at compile time (:func:`check_cpu_nodes`): besides its EPContext nodes, the compiled
model may hold only ONNX nodes exported from hosted fx nodes (and quantize / dequantize nodes), and every
hosted fx node that exported to ONNX nodes must have them there. A node claimed as accelerated that QNN
left to the CPU, or a hosted one that QNN took onto HTP, is a compile error.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch

from delegate_sdk.support import op_name, static_tensors, with_hosted
from delegate_sdk.types import Claims, ReasonCode
from delegate_sdk_qnn.rules import DECOMPOSED_BY_DEFAULT

HOSTABLE_DTYPES = (torch.float32, torch.float16, torch.int64, torch.int32, torch.bool)
#: what the CPU provider may run next to a hosted node without it being an accelerated node's work
_GLUE = ("QuantizeLinear", "DequantizeLinear", "Constant")


@functools.lru_cache(maxsize=512)
def exportable(op: torch._ops.OpOverload) -> bool:
    """torch.onnx has a translation for ``op`` (the CPU provider runs every standard ONNX op)."""
    from delegate_sdk_qnn.compiler import _torchlib_registry

    registry = _torchlib_registry()
    return bool(registry is not None and registry.is_registered(op))


def hostable(node: torch.fx.Node) -> bool:
    # an op refused only because QNN takes it decomposed exports to an ONNX op QNN does run (HardSwish):
    # ONNX Runtime would place it on HTP, which the compile-time check rightly calls a lie
    return (op_name(node) not in DECOMPOSED_BY_DEFAULT and static_tensors(node, HOSTABLE_DTYPES)
            and exportable(node.target))


def with_hosting(claims: Claims, nodes: Iterable[torch.fx.Node]) -> Claims:
    """The same answer, with the refused nodes the CPU provider can run moved to ``hosted``."""
    return with_hosted(claims, nodes, hostable, only=(ReasonCode.OP,))


def hosted_fx_nodes(ep: Any) -> set[str]:
    from delegate_sdk.types import HOSTED_META

    return {n.name for n in ep.graph.nodes if n.meta.get(HOSTED_META)}


def fx_origin(model: Any) -> dict[str, str]:
    """ONNX tensor name -> the fx node it was exported from."""
    from delegate_sdk_qnn.compiler import fx_node_name

    return {o: fx for n in model.graph.node if (fx := fx_node_name(n)) is not None for o in n.output}


def check_cpu_nodes(ctx_model: Any, exported: Any, hosted: set[str]) -> dict[str, int]:
    """The ONNX op types the CPU provider runs in the compiled model (op type -> count); RuntimeError naming
    any that does not come from a hosted fx node, or a hosted fx node whose ONNX nodes QNN took."""
    origin = fx_origin(exported)
    counts: dict[str, int] = {}
    stray: list[str] = []
    on_cpu: set[str] = set()
    for n in ctx_model.graph.node:
        if n.op_type == "EPContext":
            continue
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
        if n.op_type in _GLUE:
            continue
        fx = {origin.get(o) for o in n.output} - {None}
        on_cpu |= fx
        if not fx or not fx <= hosted:
            stray.append(f"{n.op_type} ({', '.join(sorted(x for x in fx if x)) or 'no fx origin'})")
    if stray:
        raise RuntimeError(f"qnn: QNN HTP left nodes claimed as accelerated to the CPU provider: "
                           f"{', '.join(stray[:8])}")
    taken = sorted((hosted & set(origin.values())) - on_cpu)  # exported to ONNX, yet not on the CPU
    if taken:
        raise RuntimeError(f"qnn: the QNN EP took hosted nodes onto HTP, which refused them: {', '.join(taken[:8])}")
    return counts
