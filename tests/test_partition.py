"""The partitioner on synthetic graphs: placement, convexity, priority, reasons."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delegate_sdk.errors import ContractError
from delegate_sdk.partition import DepGraph, plan_partitions
from delegate_sdk.types import Claims, ReasonCode, Refusal


def claimer(table: dict[str, set[str]]):
    """Backend -> claimed names; everything else refused with an `op` reason."""

    def claim(backend: str, cands: list[str]) -> Claims:
        mine = table.get(backend, set())
        return Claims(tuple(c for c in cands if c in mine),
                      tuple(Refusal(c, ReasonCode.OP, f"{backend} does not do {c}") for c in cands if c not in mine))
    return claim


def reachable(graph: DepGraph) -> list[set[int]]:
    """descendants[i] = nodes reachable from i."""
    n = len(graph.names)
    users: list[list[int]] = [[] for _ in range(n)]
    for i, ins in enumerate(graph.inputs):
        for j in ins:
            users[j].append(i)
    desc: list[set[int]] = [set() for _ in range(n)]
    for i in reversed(range(n)):
        for u in users[i]:
            desc[i].add(u)
            desc[i] |= desc[u]
    return desc


def assert_valid(graph: DepGraph, plan, backends) -> None:
    names = graph.names
    idx = {n: i for i, n in enumerate(names)}
    placed = [n for p in plan.partitions for n in p.nodes]
    assert len(placed) == len(set(placed)), "a node is in two partitions"
    assert set(placed) | set(plan.fallback) == set(names), "a node is nowhere"
    assert not set(placed) & set(plan.fallback), "a node is both delegated and on eager"
    for name, reasons in plan.fallback.items():
        assert reasons, f"fallback node {name} has no reason"
        assert {r.backend for r in reasons} >= set(backends) or any(r.backend == "core" for r in reasons)
    desc = reachable(graph)
    for p in plan.partitions:
        members = {idx[n] for n in p.nodes}
        # convex: no path from the partition leaves it and comes back
        for m in members:
            for out in desc[m] - members:
                assert not (desc[out] & members), f"partition {p.id} is not convex"
    # the partitions form a DAG when contracted (follows from convexity; checked directly too)
    pid = {n: p.id for p in plan.partitions for n in p.nodes}
    edges = {(pid[names[j]], pid[names[i]]) for i, ins in enumerate(graph.inputs) for j in ins
             if names[i] in pid and names[j] in pid and pid[names[i]] != pid[names[j]]}
    order = {p.id: k for k, p in enumerate(plan.partitions)}
    indeg = {p.id: 0 for p in plan.partitions}
    for _, b in edges:
        indeg[b] += 1
    ready = [p for p, d in indeg.items() if d == 0]
    seen = 0
    while ready:
        a = ready.pop()
        seen += 1
        for x, b in list(edges):
            if x == a:
                edges.discard((x, b))
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    assert seen == len(order), "partitions form a cycle"


def test_diamond_with_refused_middle_is_split():
    # a -> b -> c and a -> c; b refused: {a, c} together would be a cycle through b
    g = DepGraph(["a", "b", "c"], [[], [0], [0, 1]])
    plan = plan_partitions(g, ["x"], claimer({"x": {"a", "c"}}))
    assert [p.nodes for p in plan.partitions] == [["a"], ["c"]]
    assert plan.fallback["b"][0].code == ReasonCode.OP
    assert_valid(g, plan, ["x"])


def test_parallel_branches_merge_at_join():
    # x -> a, x -> b, (a, b) -> c: all claimed, one partition
    g = DepGraph(["x", "a", "b", "c"], [[], [0], [0], [1, 2]])
    plan = plan_partitions(g, ["k"], claimer({"k": {"x", "a", "b", "c"}}))
    assert len(plan.partitions) == 1 and plan.partitions[0].nodes == ["x", "a", "b", "c"]


def test_priority_order_first_backend_wins():
    g = DepGraph(["a", "b", "c"], [[], [0], [1]])
    plan = plan_partitions(g, ["hi", "lo"], claimer({"hi": {"b"}, "lo": {"a", "b", "c"}}))
    owner = {n: p.backend for p in plan.partitions for n in p.nodes}
    assert owner == {"a": "lo", "b": "hi", "c": "lo"}
    assert_valid(g, plan, ["hi", "lo"])


def test_min_partition_size_releases_nodes_to_next_backend():
    g = DepGraph(["a", "b", "c", "d"], [[], [0], [1], [2]])
    plan = plan_partitions(g, ["hi", "lo"], claimer({"hi": {"b"}, "lo": {"a", "b", "c", "d"}}),
                           min_partition_size=2)
    # hi's single-node partition is dropped (reason recorded), lo then takes the whole chain
    assert [(p.backend, p.nodes) for p in plan.partitions] == [("lo", ["a", "b", "c", "d"])]
    plan2 = plan_partitions(g, ["hi"], claimer({"hi": {"b"}}), min_partition_size=2)
    assert [r.code for r in plan2.fallback["b"]] == [ReasonCode.MIN_SIZE]


def test_followers_go_with_producer():
    # a multi-output producer p with getitems g0, g1
    g = DepGraph(["p", "g0", "g1", "u"], [[], [0], [0], [1, 2]], follows=[-1, 0, 0, -1])
    plan = plan_partitions(g, ["k"], claimer({"k": {"p"}}))
    assert plan.partitions[0].nodes == ["p", "g0", "g1"]
    plan2 = plan_partitions(g, ["k"], claimer({"k": {"u"}}))
    assert set(plan2.fallback) == {"p", "g0", "g1"}
    assert plan2.fallback["g0"] == plan2.fallback["p"]


@pytest.mark.parametrize("claims, message", [
    (Claims(("a",), ()), "neither claimed nor refused 1 candidate node"),
    (Claims(("a", "a", "b"), ()), "claimed nodes twice: a"),
    (Claims(("a",), (Refusal("b", ReasonCode.OP, "  "),)), "refused b \\(op\\) without a reason"),
    (Claims(("a",), (Refusal("b", ReasonCode.OP, "no"), Refusal("b", ReasonCode.OP, "no"))), "refused nodes twice"),
    (Claims(("a", "b"), (Refusal("b", ReasonCode.OP, "no"),)), "both claimed and refused: b"),
])
def test_a_claim_that_does_not_answer_every_candidate_once_with_a_reason_is_a_contract_error(claims, message):
    g = DepGraph(["a", "b"], [[], [0]])
    with pytest.raises(ContractError, match=message) as info:
        plan_partitions(g, ["k"], lambda b, c: claims)
    assert info.value.stage == "claim" and info.value.backend == "k"


def test_claiming_a_non_candidate_is_a_contract_error():
    g = DepGraph(["a"], [[]])
    with pytest.raises(ContractError, match="not candidates"):
        plan_partitions(g, ["k"], lambda b, c: Claims(("zzz",), ()))
    with pytest.raises(ContractError, match="expected delegate_sdk.Claims"):
        plan_partitions(g, ["k"], lambda b, c: ["a"])


def random_dag(seed: int, n: int, fanin: int = 3, window: int = 12) -> DepGraph:
    r = random.Random(seed)
    ins = []
    for i in range(n):
        k = r.randint(0, min(i, fanin))
        ins.append(sorted({r.randrange(max(0, i - window), i) for _ in range(k)}) if i else [])
    return DepGraph([f"n{i}" for i in range(n)], ins)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), p1=st.floats(0, 1), p2=st.floats(0, 1),
       min_size=st.integers(1, 3))
def test_random_graphs_valid(seed, n, p1, p2, min_size):
    g = random_dag(seed, n)
    r = random.Random(seed + 1)
    table = {"A": {x for x in g.names if r.random() < p1}, "B": {x for x in g.names if r.random() < p2}}
    plan = plan_partitions(g, ["A", "B"], claimer(table), min_partition_size=min_size)
    assert_valid(g, plan, ["A", "B"])
    for p in plan.partitions:
        assert set(p.nodes) <= table[p.backend]
        assert len(p.nodes) >= min_size


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), p1=st.floats(0, 1), p2=st.floats(0, 1))
def test_random_graphs_maximal(seed, n, p1, p2):
    g = random_dag(seed, n)
    r = random.Random(seed + 1)
    table = {"A": {x for x in g.names if r.random() < p1}, "B": {x for x in g.names if r.random() < p2}}
    assert_maximal(g, plan_partitions(g, ["A", "B"], claimer(table)))


def assert_maximal(graph: DepGraph, plan) -> None:
    """No two partitions of one backend joined by an edge could have been one: with every partition contracted
    to one unit (a partition runs atomically), joining them would leave the graph acyclic, so the partitioner
    left a cut it did not need."""
    idx = {n: i for i, n in enumerate(graph.names)}
    part_of = {idx[n]: k for k, p in enumerate(plan.partitions) for n in p.nodes}
    for i, ins in enumerate(graph.inputs):
        for j in ins:
            a, b = part_of.get(j), part_of.get(i)
            if a is None or b is None or a == b or plan.partitions[a].backend != plan.partitions[b].backend:
                continue
            unit = {k: ("p", b if part_of.get(k) == a else part_of[k]) if k in part_of else ("n", k)
                    for k in range(len(graph.names))}
            assert not _acyclic(graph, unit), (
                f"partitions {plan.partitions[a].id} and {plan.partitions[b].id} ({plan.partitions[a].backend}) "
                "are adjacent and could have been one")


def _acyclic(graph: DepGraph, unit: dict) -> bool:
    """Is the graph with nodes contracted to ``unit[node]`` free of cycles? (Kahn's algorithm.)"""
    deps: dict = {u: set() for u in unit.values()}
    for i, ins in enumerate(graph.inputs):
        deps[unit[i]].update(unit[j] for j in ins if unit[j] != unit[i])
    remaining = {u: len(d) for u, d in deps.items()}
    users: dict = {u: [] for u in deps}
    for u, d in deps.items():
        for v in d:
            users[v].append(u)
    ready = [u for u, k in remaining.items() if not k]
    seen = 0
    while ready:
        u = ready.pop()
        seen += 1
        for v in users[u]:
            remaining[v] -= 1
            if not remaining[v]:
                ready.append(v)
    return seen == len(deps)


def test_partitions_are_maximal_on_a_chain():
    g = DepGraph([f"n{i}" for i in range(200)], [[i - 1] if i else [] for i in range(200)])
    plan = plan_partitions(g, ["A"], claimer({"A": set(g.names)}))
    assert len(plan.partitions) == 1


def _hosting_claimer(accel: set[str], hostable: set[str]):
    def claim(backend, cands):
        return Claims(tuple(c for c in cands if c in accel),
                      tuple(Refusal(c, ReasonCode.OP, "no") for c in cands if c not in accel | hostable),
                      tuple(c for c in cands if c in hostable))
    return claim


def test_hosted_nodes_merge_neighbouring_partitions_and_are_counted_apart():
    # a -> h -> b: a and b accelerated, h only hostable
    g = DepGraph(["a", "h", "b"], [[], [0], [1]])
    plain = plan_partitions(g, ["k"], claimer({"k": {"a", "b"}}))
    assert [p.nodes for p in plain.partitions] == [["a"], ["b"]]
    hosted = plan_partitions(g, ["k"], _hosting_claimer({"a", "b"}, {"h"}), hosting=["k"])
    assert [(p.nodes, p.hosted) for p in hosted.partitions] == [(["a", "h", "b"], ["h"])]


def test_a_partition_of_hosted_nodes_only_is_not_kept_and_says_why():
    g = DepGraph(["h1", "h2", "x"], [[], [0], [1]])
    only_hosted = _hosting_claimer(set(), {"h1", "h2"})
    plan = plan_partitions(g, ["k", "other"], lambda b, c: only_hosted(b, c) if b == "k" else Claims(tuple(c), ()),
                           hosting=["k"])
    assert [(p.backend, p.nodes) for p in plan.partitions] == [("other", ["h1", "h2", "x"])]
    plan = plan_partitions(g, ["k"], _hosting_claimer(set(), {"h1", "h2"}), hosting=["k"])
    assert plan.partitions == []
    assert plan.fallback["h1"][-1].code == ReasonCode.HOSTED_ALONE


def test_hosted_answers_only_when_the_lowering_asked_for_them():
    g = DepGraph(["a", "h"], [[], [0]])
    with pytest.raises(ContractError, match="did not ask for hosted ops"):
        plan_partitions(g, ["k"], _hosting_claimer({"a"}, {"h"}))
    with pytest.raises(ContractError, match="hosted and also claimed or refused"):
        plan_partitions(g, ["k"], lambda b, c: Claims(("a", "h"), (), ("h",)), hosting=["k"])
