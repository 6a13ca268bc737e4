"""Which ``nn.Module`` of the user's model a node came from (``torch.export``'s ``nn_module_stack``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch


def module_stack(node: torch.fx.Node) -> list[str]:
    """The module paths enclosing ``node``, outermost first (``["encoder", "encoder.layer.0", ...]``)."""
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for entry in stack.values():
        path = entry[0] if isinstance(entry, tuple) else str(entry)
        if path and path not in out:
            out.append(path)
    return out


def nodes_in(nodes: Iterable[torch.fx.Node], path: str) -> list[str]:
    """Names of the nodes computed inside the module at ``path`` (or any module below it)."""
    return [n.name for n in nodes if path in module_stack(n)]


def resolve(nodes: list[torch.fx.Node], entries: Iterable[str]) -> tuple[set[str], list[str]]:
    """Node names for ``entries``, each a node name or a module path; and the entries that are neither."""
    names = {n.name for n in nodes}
    out: set[str] = set()
    unknown = []
    for e in entries:
        if e in names:
            out.add(e)
            continue
        inside = nodes_in(nodes, e)
        if inside:
            out.update(inside)
        else:
            unknown.append(e)
    return out, unknown


def unknown_message(nodes: list[torch.fx.Node], unknown: list[str]) -> str:
    paths = sorted({p for n in nodes for p in module_stack(n)})
    near = difflib.get_close_matches(unknown[0], paths + [n.name for n in nodes], n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else (
        f"; module paths: {', '.join(paths[:12])}{' ...' if len(paths) > 12 else ''}" if paths else "")
    return f"skip_nodes names {', '.join(map(repr, unknown))}, which is neither a node nor a module path{hint}"
