"""Claims -> cycle-free partitions, with a reason for every node left to eager PyTorch.

Works on a plain dependency graph (names and producer lists) so that it can be
tested and benchmarked on synthetic graphs without torch.

Algorithm, per backend in priority order (one topological pass each):
a claimed node joins a partition of the same backend that produces one of its
inputs when that keeps the partition convex, i.e. no path leaves the partition
and re-enters it. Each node carries a bitmask of the partitions it depends on
(``up``); a candidate set S stays convex iff no input of S that lies outside S
depends on S. When a node's inputs come from several partitions of its backend
they are merged through it under the same test, which makes partitions maximal
at join points. Cost is one pass over the edges per backend, plus big-int ORs
whose width is the number of partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from delegate_sdk.errors import ContractError
from delegate_sdk.types import Claims, ReasonCode, Refusal


@dataclass
class DepGraph:
    """The graph the partitioner sees: nodes in topological order and their producers.

    ``inputs[i]`` are indices of nodes (earlier in ``names``) that node ``i``
    reads; edges from graph inputs and weights are left out. ``follows[i]`` is
    the producer a node must be placed with (``getitem`` of a multi-output op),
    or -1. ``fixed[i]`` is a refusal the core gives without asking plugins
    (host shape arithmetic, user skips), or None.
    """

    names: list[str]
    inputs: list[list[int]]
    follows: list[int] = field(default_factory=list)
    fixed: list[Refusal | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.names)
        if not self.follows:
            self.follows = [-1] * n
        if not self.fixed:
            self.fixed = [None] * n


@dataclass
class Partition:
    id: str
    backend: str
    nodes: list[str]  # topological order, followers included


@dataclass
class PartitionPlan:
    partitions: list[Partition]
    #: node -> each backend's reason, for every node that runs on eager PyTorch
    fallback: dict[str, list[Refusal]]
    #: node -> partition id, for every delegated node
    placement: dict[str, str]

    @property
    def nodes_total(self) -> int:
        return len(self.placement) + len(self.fallback)


ClaimFn = Callable[[str, list[str]], Claims]


def plan_partitions(graph: DepGraph, backends: Sequence[str], claim: ClaimFn, *,
                    min_partition_size: int = 1) -> PartitionPlan:
    """Place every node of ``graph`` exactly once, backends tried in order."""
    n = len(graph.names)
    index = {name: i for i, name in enumerate(graph.names)}
    owner: list[str | None] = [None] * n  # backend per node
    group_of: list[int] = [-1] * n  # global group id per node
    groups: list[list[int]] = []  # group id -> member nodes
    group_backend: list[str] = []
    reasons: list[list[Refusal]] = [[] for _ in range(n)]
    leaders = [i for i in range(n) if graph.follows[i] < 0]

    for i in range(n):
        if graph.fixed[i] is not None:
            reasons[i].append(graph.fixed[i])  # type: ignore[arg-type]

    for backend in backends:
        candidates = [i for i in leaders if owner[i] is None and graph.fixed[i] is None]
        if not candidates:
            continue
        cand_names = [graph.names[i] for i in candidates]
        claims = claim(backend, cand_names)
        claimed = _check_claims(backend, claims, cand_names)
        for r in claims.refused:
            reasons[index[r.node]].append(r if r.backend else Refusal(r.node, r.code, r.message, backend))
        for name in cand_names:
            if name not in claimed and not any(x.backend == backend for x in reasons[index[name]]):
                reasons[index[name]].append(Refusal(name, ReasonCode.UNSPECIFIED,
                                                    "the plugin neither claimed nor refused this node", backend))
        is_claimed = [False] * n
        for name in claimed:
            is_claimed[index[name]] = True
        round_groups = _grow_groups(graph, is_claimed)
        for members in round_groups:
            leaders_in = [m for m in members if graph.follows[m] < 0]
            if len(leaders_in) < min_partition_size:
                for m in leaders_in:
                    reasons[m].append(Refusal(graph.names[m], ReasonCode.MIN_SIZE,
                                              f"its partition had {len(leaders_in)} node(s), fewer than the "
                                              f"minimum partition size {min_partition_size}", backend))
                continue
            gid = len(groups)
            groups.append(members)
            group_backend.append(backend)
            for m in members:
                owner[m] = backend
                group_of[m] = gid

    # followers go where their producer went
    for i in range(n):
        f = graph.follows[i]
        if f >= 0:
            root = f
            while graph.follows[root] >= 0:
                root = graph.follows[root]
            if group_of[root] >= 0 and group_of[i] < 0:
                group_of[i] = group_of[root]
                owner[i] = owner[root]
                groups[group_of[root]].append(i)
            elif group_of[root] < 0:
                reasons[i] = list(reasons[root])

    order = sorted(range(len(groups)), key=lambda g: min(groups[g]))
    partitions: list[Partition] = []
    placement: dict[str, str] = {}
    for k, g in enumerate(order):
        pid = f"p{k}"
        members = sorted(set(groups[g]))
        partitions.append(Partition(pid, group_backend[g], [graph.names[m] for m in members]))
        for m in members:
            placement[graph.names[m]] = pid
    fallback = {graph.names[i]: reasons[i] for i in range(n) if group_of[i] < 0}
    return PartitionPlan(partitions, fallback, placement)


def _check_claims(backend: str, claims: Claims, candidates: list[str]) -> set[str]:
    if not isinstance(claims, Claims):
        raise ContractError(backend, "claim", f"returned {type(claims).__name__}, expected delegate_sdk.Claims")
    cand = set(candidates)
    claimed = set(claims.claimed)
    unknown = claimed - cand
    if unknown:
        raise ContractError(backend, "claim", f"claimed nodes that were not candidates: {sorted(unknown)[:5]}")
    both = claimed & {r.node for r in claims.refused}
    if both:
        raise ContractError(backend, "claim", f"both claimed and refused: {sorted(both)[:5]}")
    for r in claims.refused:
        if not isinstance(r, Refusal) or not isinstance(r.code, ReasonCode):
            raise ContractError(backend, "claim", f"refusal {r!r} is not a Refusal with a ReasonCode")
    return claimed


def _grow_groups(graph: DepGraph, is_claimed: list[bool]) -> list[list[int]]:
    """One topological pass: convex groups of the claimed nodes (followers join their producer)."""
    n = len(graph.names)
    gid_of = [-1] * n
    up = [0] * n  # bitmask of group ids (this round) that node i depends on, incl. its own group
    members: list[list[int]] = []
    mask: list[int] = []  # group -> bitmask of all ids merged into it
    ext: list[list[int]] = []  # group -> inputs from outside the group
    alias: list[int] = []  # union-find parent

    def find(g: int) -> int:
        while alias[g] != g:
            alias[g] = alias[alias[g]]
            g = alias[g]
        return g

    for i in range(n):
        ins = graph.inputs[i]
        dep = 0
        for j in ins:
            dep |= up[j]
        f = graph.follows[i]
        if f >= 0:
            g = gid_of[f]
            if g >= 0:
                g = find(g)
                gid_of[i] = g
                members[g].append(i)
                up[i] = dep | mask[g]
            else:
                up[i] = dep
            continue
        if not is_claimed[i]:
            up[i] = dep
            continue
        # start as a singleton and merge with producing groups where convexity allows
        s_mask = 0
        s_ids: list[int] = []
        cand = []
        for j in ins:
            g = gid_of[j]
            if g >= 0:
                g = find(g)
                if g not in cand:
                    cand.append(g)
        cand.sort(key=lambda g: -len(members[g]))
        for g in cand:
            if _can_merge(g, s_ids, s_mask, ins, members, mask, ext, gid_of, find, up):
                s_mask |= mask[g]
                s_ids.append(g)
        if not s_ids:
            g = len(members)
            members.append([i])
            mask.append(1 << g)
            alias.append(g)
            ext.append(list(ins))
            gid_of[i] = g
            up[i] = dep | mask[g]
            continue
        root = s_ids[0]
        for g in s_ids[1:]:
            alias[g] = root
            members[root].extend(members[g])
            mask[root] |= mask[g]
            ext[root].extend(ext[g])
            members[g] = []
        members[root].append(i)
        merged = set(s_ids)
        ext[root] = [j for j in (*ext[root], *ins) if gid_of[j] < 0 or find(gid_of[j]) not in merged]
        gid_of[i] = root
        up[i] = dep | mask[root]
    return [m for g, m in enumerate(members) if m and alias[g] == g]


def _can_merge(g: int, s_ids: list[int], s_mask: int, ins: list[int], members: list[list[int]],
               mask: list[int], ext: list[list[int]], gid_of: list[int], find: Callable[[int], int],
               up: list[int]) -> bool:
    """Can group ``g`` join the set made of the new node (inputs ``ins``) and groups ``s_ids``?

    Each group's own external inputs were already checked against its own
    mask, so only the cross terms need checking.
    """
    inside = {*s_ids, g}
    trial = s_mask | mask[g]

    def outside(j: int) -> bool:
        gj = gid_of[j]
        return gj < 0 or find(gj) not in inside

    if any(outside(j) and up[j] & trial for j in ins):
        return False
    if s_mask and any(outside(j) and up[j] & s_mask for j in ext[g]):
        return False
    return not any(outside(j) and up[j] & mask[g] for h in s_ids for j in ext[h])
