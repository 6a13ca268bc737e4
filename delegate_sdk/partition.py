"""Claims -> cycle-free partitions, with a reason for every node left to eager PyTorch.

Works on a plain dependency graph (names and producer lists) so that it can be
tested and benchmarked on synthetic graphs without torch.

Backends are tried in priority order, one topological pass each. A pass runs
over *units*: single nodes, and the partitions of earlier backends contracted
to one unit each (a partition executes atomically, so the contracted graph is
what must stay acyclic). A claimed node joins a partition of the same backend
that produces one of its inputs, merging several such partitions when it
joins them, as long as the contracted graph stays acyclic: no input of the
merged set that lies outside it may depend on it.

Dependencies are bitmasks of partition ids. A partition's ancestors (``anc``)
may only grow while nothing outside it uses it yet; after that a node that
would add new ancestors starts a new partition instead. That keeps every
stored mask exact, so each check is a few big-int ANDs and one pass stays
near-linear in the number of edges. The price is that the pass can leave two
adjacent groups apart whose union would have been fine; a merge pass after it
(``_merge_adjacent``) joins every such pair, checking the contracted graph.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
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
    #: the nodes of ``nodes`` the backend runs on its host CPU (hosted ops), not on the accelerator
    hosted: list[str] = field(default_factory=list)


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
                    min_partition_size: int = 1, hosting: Iterable[str] = ()) -> PartitionPlan:
    """Place every node of ``graph`` exactly once, backends tried in order.

    Backends in ``hosting`` may answer some candidates as *hosted* (run on their host CPU): those nodes join
    partitions like claimed ones, so that neighbouring partitions merge across them, but a partition needs at
    least one accelerated node (and ``min_partition_size`` of them) to be kept.
    """
    hosting = set(hosting)
    n = len(graph.names)
    index = {name: i for i, name in enumerate(graph.names)}
    root = list(range(n))
    for i in range(n):  # followers of followers resolve to the real producer
        f = graph.follows[i]
        while f >= 0 and graph.follows[f] >= 0:
            f = graph.follows[f]
        root[i] = f if f >= 0 else i
    group_of = [-1] * n  # final partition (index into groups) per node
    groups: list[list[int]] = []
    group_backend: list[str] = []
    reasons: list[list[Refusal]] = [[] for _ in range(n)]
    hosted_nodes: set[str] = set()
    leaders = [i for i in range(n) if root[i] == i]
    for i in leaders:
        if graph.fixed[i] is not None:
            reasons[i].append(graph.fixed[i])  # type: ignore[arg-type]

    for backend in backends:
        candidates = [i for i in leaders if group_of[i] < 0 and graph.fixed[i] is None]
        if not candidates:
            continue
        cand_names = [graph.names[i] for i in candidates]
        claims = claim(backend, cand_names)
        claimed, hosted = _check_claims(backend, claims, cand_names, backend in hosting)
        for r in claims.refused:
            reasons[index[r.node]].append(r if r.backend == backend else Refusal(r.node, r.code, r.message, backend))
        is_claimed = [False] * n
        for name in claimed | hosted:
            is_claimed[index[name]] = True
        for members in _merge_adjacent(graph, root, group_of, _grow_groups(graph, root, group_of, is_claimed)):
            leaders_in = [m for m in members if root[m] == m]
            accelerated = [m for m in leaders_in if graph.names[m] not in hosted]
            if not accelerated:
                for m in leaders_in:
                    reasons[m].append(Refusal(graph.names[m], ReasonCode.HOSTED_ALONE,
                                              "the backend could run it on its host CPU, but only inside a "
                                              "partition with accelerated nodes, and none is next to it", backend))
                continue
            if len(accelerated) < min_partition_size:
                for m in leaders_in:
                    reasons[m].append(Refusal(graph.names[m], ReasonCode.MIN_SIZE,
                                              f"its partition had {len(accelerated)} node(s), fewer than the "
                                              f"minimum partition size {min_partition_size}", backend))
                continue
            gid = len(groups)
            groups.append(members)
            group_backend.append(backend)
            for m in members:
                group_of[m] = gid
                if graph.names[root[m]] in hosted:
                    hosted_nodes.add(graph.names[m])

    for i in range(n):
        if root[i] != i and group_of[i] < 0:
            reasons[i] = list(reasons[root[i]])
    order = sorted(range(len(groups)), key=lambda g: min(groups[g]))
    partitions: list[Partition] = []
    placement: dict[str, str] = {}
    for k, g in enumerate(order):
        pid = f"p{k}"
        members = sorted(groups[g])
        names = [graph.names[m] for m in members]
        partitions.append(Partition(pid, group_backend[g], names, [x for x in names if x in hosted_nodes]))
        for m in members:
            placement[graph.names[m]] = pid
    fallback = {graph.names[i]: reasons[i] for i in range(n) if group_of[i] < 0}
    return PartitionPlan(partitions, fallback, placement)


def _check_claims(backend: str, claims: Claims, candidates: list[str],
                  may_host: bool = False) -> tuple[set[str], set[str]]:
    """(claimed, hosted) names; ContractError unless every candidate is named exactly once, each refusal with a
    reason, and hosted nodes only where the lowering asked for them."""
    if not isinstance(claims, Claims):
        raise ContractError(backend, "claim", f"returned {type(claims).__name__}, expected delegate_sdk.Claims")
    cand = set(candidates)

    def some(names: Iterable[str]) -> str:
        names = sorted(set(names))
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    claimed = set(claims.claimed)
    if len(claimed) != len(claims.claimed):
        twice = [n for n in claimed if claims.claimed.count(n) > 1]
        raise ContractError(backend, "claim", f"claimed nodes twice: {some(twice)}")
    unknown = claimed - cand
    if unknown:
        raise ContractError(backend, "claim", f"claimed nodes that were not candidates: {some(unknown)}")
    refused: list[str] = []
    for r in claims.refused:
        if not isinstance(r, Refusal) or not isinstance(r.code, ReasonCode):
            raise ContractError(backend, "claim", f"refusal {r!r} is not a Refusal with a ReasonCode")
        if not isinstance(r.message, str) or not r.message.strip():
            raise ContractError(backend, "claim", f"refused {r.node} ({r.code.value}) without a reason: every "
                                                  "refusal needs a sentence the user can act on")
        refused.append(r.node)
    if len(set(refused)) != len(refused):
        twice = [n for n in refused if refused.count(n) > 1]
        raise ContractError(backend, "claim", f"refused nodes twice: {some(twice)}")
    if set(refused) - cand:
        raise ContractError(backend, "claim", f"refused nodes that were not candidates: {some(set(refused) - cand)}")
    both = claimed & set(refused)
    if both:
        raise ContractError(backend, "claim", f"both claimed and refused: {some(both)}")
    hosted = set(claims.hosted)
    if hosted and not may_host:
        raise ContractError(backend, "claim", f"answered {some(hosted)} as hosted, but this lowering did not ask "
                                              "for hosted ops (options['hosted_ops'] is false or absent)")
    if len(hosted) != len(claims.hosted):
        twice = [n for n in hosted if claims.hosted.count(n) > 1]
        raise ContractError(backend, "claim", f"hosted nodes twice: {some(twice)}")
    if hosted - cand:
        raise ContractError(backend, "claim", f"hosted nodes that were not candidates: {some(hosted - cand)}")
    if hosted & (claimed | set(refused)):
        raise ContractError(backend, "claim", f"hosted and also claimed or refused: "
                                              f"{some(hosted & (claimed | set(refused)))}")
    silent = cand - claimed - set(refused) - hosted
    if silent:
        raise ContractError(backend, "claim", f"neither claimed nor refused {len(silent)} candidate node(s): "
                                              f"{some(silent)}; name every candidate in Claims.claimed or in "
                                              "Claims.refused with a reason")
    return claimed, hosted


def _units(graph: DepGraph, root: list[int], group_of: list[int]) -> tuple[list[list[int]], list[list[int]]]:
    """Contract earlier partitions (and followers into producers); units in topological order."""
    n = len(graph.names)
    unit_of = [-1] * n
    members: list[list[int]] = []
    frozen: dict[int, int] = {}
    for i in range(n):
        g = group_of[i]
        if g >= 0:
            if g not in frozen:
                frozen[g] = len(members)
                members.append([])
            u = frozen[g]
        elif root[i] != i:
            u = unit_of[root[i]]
        else:
            u = len(members)
            members.append([])
        unit_of[i] = u
        members[u].append(i)
    m = len(members)
    deps: list[set[int]] = [set() for _ in range(m)]
    for i in range(n):
        for j in graph.inputs[i]:
            if unit_of[j] != unit_of[i]:
                deps[unit_of[i]].add(unit_of[j])
    users: list[list[int]] = [[] for _ in range(m)]
    for u in range(m):
        for v in deps[u]:
            users[v].append(u)
    first = [min(ms) for ms in members]
    remaining = [len(d) for d in deps]
    ready = [(first[u], u) for u in range(m) if not remaining[u]]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, u = heapq.heappop(ready)
        order.append(u)
        for v in users[u]:
            remaining[v] -= 1
            if not remaining[v]:
                heapq.heappush(ready, (first[v], v))
    if len(order) != m:
        raise AssertionError("earlier partitions form a cycle (partitioner bug)")
    pos = {u: k for k, u in enumerate(order)}
    return [members[u] for u in order], [sorted(pos[v] for v in deps[u]) for u in order]


def _grow_groups(graph: DepGraph, root: list[int], group_of: list[int], is_claimed: list[bool]) -> list[list[int]]:
    """One pass over the units: groups of claimed nodes whose contraction keeps the graph acyclic."""
    unit_members, unit_inputs = _units(graph, root, group_of)
    m = len(unit_members)
    claimable = [group_of[ms[0]] < 0 and is_claimed[ms[0]] for ms in unit_members]
    gid_of = [-1] * m  # group of a unit (this pass)
    up = [0] * m  # for ungrouped units: the groups it depends on (exact, see module doc)
    members: list[list[int]] = []  # group -> units
    mask: list[int] = []  # group -> bits of every id merged into it
    anc: list[int] = []  # group -> groups it depends on (excluding itself)
    ext: list[list[int]] = []  # group -> its inputs from outside it
    used: list[bool] = []  # group -> something outside already depends on it
    alias: list[int] = []  # union-find

    def find(g: int) -> int:
        while alias[g] != g:
            alias[g] = alias[alias[g]]
            g = alias[g]
        return g

    def eff(u: int) -> int:
        g = gid_of[u]
        if g < 0:
            return up[u]
        g = find(g)
        return mask[g] | anc[g]

    def outside(u: int, inside: set[int]) -> bool:
        g = gid_of[u]
        return g < 0 or find(g) not in inside

    for u in range(m):
        ins = unit_inputs[u]
        dep = 0
        for j in ins:
            dep |= eff(j)
        if not claimable[u]:
            up[u] = dep
            for j in ins:
                if gid_of[j] >= 0:
                    used[find(gid_of[j])] = True
            continue
        cand: list[int] = []
        for j in ins:
            if gid_of[j] >= 0:
                g = find(gid_of[j])
                if g not in cand:
                    cand.append(g)
        cand.sort(key=lambda g: -len(members[g]))
        s_ids: list[int] = []
        s_mask = 0
        for g in cand:
            inside = {*s_ids, g}
            trial = s_mask | mask[g]
            if any(outside(j, inside) and eff(j) & trial for j in ins):
                continue
            if any(outside(j, inside) and eff(j) & trial for h in inside for j in ext[h]):
                continue
            new_anc = (dep | anc[g] | _or(anc[h] for h in s_ids)) & ~trial
            if any(used[h] and new_anc & ~anc[h] for h in inside):
                continue  # would give new ancestors to a group others already depend on
            s_ids.append(g)
            s_mask = trial
        if not s_ids:
            g = len(members)
            members.append([u])
            mask.append(1 << g)
            anc.append(dep)
            ext.append(list(ins))
            used.append(False)
            alias.append(g)
            gid_of[u] = g
        else:
            r = s_ids[0]
            merged = set(s_ids)
            all_ext = list(ins)
            new_anc = dep
            for g in s_ids:
                new_anc |= anc[g]
                all_ext.extend(ext[g])
                if g != r:
                    alias[g] = r
                    members[r].extend(members[g])
                    members[g] = []
                    mask[r] |= mask[g]
                    used[r] = used[r] or used[g]
            members[r].append(u)
            anc[r] = new_anc & ~mask[r]
            ext[r] = [j for j in all_ext if outside(j, merged)]
            gid_of[u] = r
        me = find(gid_of[u])
        for j in ins:
            if gid_of[j] >= 0 and find(gid_of[j]) != me:
                used[find(gid_of[j])] = True
    out = []
    for g in range(len(members)):
        if members[g] and alias[g] == g:
            out.append(sorted(i for u in members[g] for i in unit_members[u]))
    return out


def _merge_adjacent(graph: DepGraph, root: list[int], group_of: list[int], groups: list[list[int]]
                    ) -> list[list[int]]:
    """Join groups of this pass joined by an edge while the contracted graph stays acyclic.

    Groups ``a -> b`` may become one partition unless a path also leaves ``a`` and reaches ``b`` through
    something else (another partition, an eager node): contracted, that path would be a cycle. Each sweep
    computes reachability once (bitmasks) and makes every merge it can prove safe from it: pairs taken in
    topological order, each unit merged at most once, and no pair whose upstream unit reaches a pair merged
    earlier in the sweep (the only units whose reach a merge changes). Sweeps repeat until none merges.
    """
    n = len(graph.names)
    groups = [list(g) for g in groups]
    while len(groups) > 1:
        unit = [n + group_of[i] if group_of[i] >= 0 else root[i] for i in range(n)]
        for k, g in enumerate(groups):
            for i in g:
                unit[i] = 2 * n + k
        ids = {u: b for b, u in enumerate(dict.fromkeys(unit))}
        group_unit = [ids[2 * n + k] for k in range(len(groups))]
        of_unit = {u: k for k, u in enumerate(group_unit)}
        deps: list[set[int]] = [set() for _ in ids]
        for i in range(n):
            ui = ids[unit[i]]
            deps[ui].update(ids[unit[j]] for j in graph.inputs[i] if ids[unit[j]] != ui)
        order, anc, desc = _reach(deps)
        pos = {u: k for k, u in enumerate(order)}
        taken: set[int] = set()
        dirty = 0
        joins: list[tuple[int, int]] = []
        for v in sorted(group_unit, key=lambda u: pos[u]):
            for u in sorted((d for d in deps[v] if d in of_unit), key=lambda d: pos[d]):
                if u in taken or v in taken or dirty >> u & 1 or desc[u] & anc[v]:
                    continue
                joins.append((of_unit[u], of_unit[v]))
                taken.update((u, v))
                dirty |= anc[v] | 1 << u | 1 << v
        if not joins:
            break
        gone = set()
        for a, b in joins:
            groups[a] = sorted(groups[a] + groups[b])
            gone.add(b)
        groups = [g for k, g in enumerate(groups) if k not in gone]
    return groups


def _reach(deps: list[set[int]]) -> tuple[list[int], list[int], list[int]]:
    """A topological order, and per unit the bitmasks of the units it depends on and of those depending on it."""
    m = len(deps)
    users: list[list[int]] = [[] for _ in range(m)]
    for u in range(m):
        for d in deps[u]:
            users[d].append(u)
    remaining = [len(d) for d in deps]
    ready = [u for u in range(m) if not remaining[u]]
    order: list[int] = []
    while ready:
        u = ready.pop()
        order.append(u)
        for v in users[u]:
            remaining[v] -= 1
            if not remaining[v]:
                ready.append(v)
    if len(order) != m:
        raise AssertionError("partitions form a cycle before merging (partitioner bug)")
    anc, desc = [0] * m, [0] * m
    for u in order:
        for d in deps[u]:
            anc[u] |= anc[d] | 1 << d
    for u in reversed(order):
        for v in users[u]:
            desc[u] |= desc[v] | 1 << v
    return order, anc, desc


def _or(masks: object) -> int:
    out = 0
    for x in masks:  # type: ignore[attr-defined]
        out |= x
    return out
