"""Hosted ops in ``claim``: moving refused nodes the runtime can run on its host CPU to ``Claims.hosted``."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from delegate_sdk.support.nodes import has_dynamic_shape, input_tensors, output_tensors
from delegate_sdk.types import Claims, ReasonCode

#: refusals a host kernel cannot help with: the shape is not known when compiling
NOT_HOSTABLE = (ReasonCode.DYNAMIC,)


def static_tensors(node: torch.fx.Node, dtypes: Iterable[torch.dtype]) -> bool:
    """``node`` is an ATen op with static, non-empty tensors, all of ``dtypes``: what a host kernel compiled
    into a partition can take."""
    t = node.target
    if not isinstance(t, torch._ops.OpOverload) or t.namespace != "aten" or has_dynamic_shape(node):
        return False
    allowed = tuple(dtypes)
    tensors = [*input_tensors(node), *output_tensors(node)]
    return bool(output_tensors(node)) and all(x.dtype in allowed and x.numel() > 0 for x in tensors)


def with_hosted(claims: Claims, nodes: Iterable[torch.fx.Node], hostable: Callable[[torch.fx.Node], bool],
                not_hostable: Iterable[ReasonCode] = NOT_HOSTABLE,
                only: Iterable[ReasonCode] | None = None) -> Claims:
    """The same answer, with each refused node that ``hostable`` accepts (and whose refusal is not one of
    ``not_hostable``, and is one of ``only`` when given) moved to ``hosted``; the other refusals keep their
    reasons."""
    by_name = {n.name: n for n in nodes}
    skip = tuple(not_hostable)
    allowed = None if only is None else tuple(only)
    hosted, refused = [], []
    for r in claims.refused:
        node = by_name.get(r.node)
        if (node is not None and r.code not in skip and (allowed is None or r.code in allowed)
                and hostable(node)):
            hosted.append(r.node)
        else:
            refused.append(r)
    return Claims(claims.claimed, tuple(refused), (*claims.hosted, *hosted))
