"""The declarative claim engine (delegate_sdk.support.ClaimTable): every rule kind refuses what it should,
with its reason code, and takes what it should."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from delegate_sdk import ReasonCode, testing
from delegate_sdk.conformance.cases import FunctionModule as Fn
from delegate_sdk.support import ClaimTable, NodeLimits, Reject, arguments, op_name


def answers(table: ClaimTable, model: nn.Module, *args, precision: str = "fp32", **kw) -> dict[str, object]:
    """op name -> "claimed" or (code, message), for each candidate (ops are unique in these models)."""
    ep = testing.capture(None, model.eval(), args, **kw)
    nodes = testing.candidates(ep)
    claims = table.claim(ep, nodes, {"precision": precision})
    assert sorted(claims.claimed + tuple(r.node for r in claims.refused)) == sorted(n.name for n in nodes)
    out: dict[str, object] = {op_name(n): "claimed" for n in nodes if n.name in claims.claimed}
    by = {n.name: op_name(n) for n in nodes}
    out.update({by[r.node]: (r.code, r.message) for r in claims.refused})
    return out


def test_unknown_op_is_refused_with_op_code() -> None:
    t = ClaimTable("T")
    t.ops("aten.relu.default")
    a = answers(t, Fn(lambda x: torch.relu(x).sin()), torch.randn(3))
    assert a["aten.relu.default"] == "claimed"
    assert a["aten.sin.default"] == (ReasonCode.OP, "aten.sin.default is not supported by T")


def test_limits_dtype_rank_zero_size_dynamic_and_scalar() -> None:
    t = ClaimTable("T", NodeLimits(dtypes=("float32",), max_rank=3, static_shapes=True, zero_size=False,
                                   scalar_results=False, dtype_reasons={"float64": "no doubles here"}))
    t.ops("aten.relu.default", "aten.sum.dim_IntList")
    code = lambda a: a["aten.relu.default"][0]  # noqa: E731
    assert answers(t, Fn(torch.relu), torch.randn(2, 2))["aten.relu.default"] == "claimed"
    assert answers(t, Fn(torch.relu), torch.randn(2, 2).double())["aten.relu.default"] == (
        ReasonCode.DTYPE, "no doubles here")
    assert code(answers(t, Fn(torch.relu), torch.randn(1, 2, 2, 2))) == ReasonCode.RANK
    assert code(answers(t, Fn(torch.relu), torch.randn(0, 2))) == ReasonCode.SHAPE
    dyn = answers(t, nn.ReLU(), torch.randn(4, 2), dynamic_shapes=({0: torch.export.Dim("n", min=2)},))
    assert code(dyn) == ReasonCode.DYNAMIC
    assert answers(t, Fn(lambda x: x.sum()), torch.randn(3))["aten.sum.dim_IntList"][0] == ReasonCode.RANK


def test_row_precision_constant_values_and_ranks() -> None:
    t = ClaimTable("T", precisions=("fp32", "int8"))
    t.ops("aten.add.Tensor", values={"alpha": (1,)})
    t.ops("aten.tanh.default", precisions=("fp32",), precision_reasons={"int8": "no int8 tanh"})
    t.ops("aten.convolution.default", constant=("weight",), ranks={"input": (4, 4)})
    assert answers(t, Fn(lambda x: torch.add(x, x, alpha=2)), torch.randn(3))["aten.add.Tensor"][0] == ReasonCode.ATTR
    assert answers(t, Fn(lambda x: x + x), torch.randn(3))["aten.add.Tensor"] == "claimed"
    assert answers(t, Fn(torch.tanh), torch.randn(3), precision="int8")["aten.tanh.default"] == (
        ReasonCode.QUANT, "not taken at int8: no int8 tanh")
    assert answers(t, nn.Conv2d(2, 2, 1), torch.randn(1, 2, 3, 3))["aten.convolution.default"] == "claimed"
    assert answers(t, nn.Conv1d(2, 2, 1), torch.randn(1, 2, 3))["aten.convolution.default"][0] == ReasonCode.RANK
    act_weight = Fn(lambda x, w: torch.nn.functional.conv2d(x, w))
    got = answers(t, act_weight, torch.randn(1, 2, 3, 3), torch.randn(2, 2, 1, 1))["aten.convolution.default"]
    assert got[0] == ReasonCode.CONSTANT and "weight" in got[1]
    assert t.ops_at("int8") == ["aten.add.Tensor", "aten.convolution.default"]


def test_checks_run_after_the_row_and_keep_whole_feeds_keep_ops() -> None:
    t = ClaimTable("T")
    t.ops("aten.linear.default", keep_whole=True)
    t.ops("aten.relu.default")

    @t.check("aten.linear.default")
    def small(node, ctx):
        if ctx.shape(arguments(node)["weight"])[0] > 4:
            return Reject(ReasonCode.SHAPE, "too many outputs")
        return None

    assert t.keep_ops == ("aten.linear.default",)
    keep = t.keep_ops
    assert answers(t, nn.Linear(3, 4), torch.randn(2, 3), keep_ops=keep)["aten.linear.default"] == "claimed"
    assert answers(t, nn.Linear(3, 8), torch.randn(2, 3), keep_ops=keep)["aten.linear.default"] == (
        ReasonCode.SHAPE, "too many outputs")
    with pytest.raises(ValueError, match="not declared"):
        t.check("aten.sin.default")(small)
    with pytest.raises(ValueError, match="declared twice"):
        t.ops("aten.relu.default")


class ConvBn(nn.Module):
    def __init__(self, k: int = 1) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 2, k), nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(self.conv(x)).relu()


BN = "aten._native_batch_norm_legit_no_training.default"
CONV = "aten.convolution.default"


def _fusing_table() -> ClaimTable:
    t = ClaimTable("T")
    t.ops(CONV, BN, "aten.relu.default")

    @t.check(CONV)
    def one_by_one(node, ctx):
        return None if ctx.shape(arguments(node)["weight"])[2] == 1 else Reject(ReasonCode.SHAPE, "1x1 only")

    return t


def test_requires_refuses_a_node_whose_producer_is_refused() -> None:
    t = _fusing_table()
    t.requires(BN, producers=(CONV,), arg="input", message="batch norm only folded into a conv")
    assert answers(t, ConvBn(1), torch.randn(1, 2, 4, 4))[BN] == "claimed"
    code, msg = answers(t, ConvBn(3), torch.randn(1, 2, 4, 4))[BN]
    assert code == ReasonCode.ATTR and msg.startswith("batch norm only folded into a conv") and "1x1 only" in msg
    alone = answers(t, nn.BatchNorm2d(2), torch.randn(1, 2, 4, 4))[BN]
    assert alone[0] == ReasonCode.ATTR and "comes from" in alone[1]


def test_group_is_taken_together_or_not_at_all() -> None:
    t = _fusing_table()
    t.group("conv+bn+relu", CONV, BN, "aten.relu.default")
    assert set(answers(t, ConvBn(1), torch.randn(1, 2, 4, 4)).values()) == {"claimed"}
    a = answers(t, ConvBn(3), torch.randn(1, 2, 4, 4))
    assert a[CONV] == (ReasonCode.SHAPE, "1x1 only")
    for op in (BN, "aten.relu.default"):
        assert a[op][0] == ReasonCode.SHAPE and "conv+bn+relu is taken together" in a[op][1]


def test_state_and_folded_constants() -> None:
    t = ClaimTable("T", claim_folded_constants=True)
    t.ops("aten.mul.Tensor")
    seen = []

    @t.state
    def once(program, options):
        seen.append(options["precision"])
        return {"limit": 2}

    @t.every
    def uses_state(node, ctx):
        return None if ctx.state["limit"] == 2 else Reject(ReasonCode.ATTR, "state missing")

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3))

        def forward(self, x):
            return x * self.w.exp()  # exp of a weight: folded at compile time, whatever the op

    a = answers(t, M(), torch.randn(3))
    assert a == {"aten.exp.default": "claimed", "aten.mul.Tensor": "claimed"} and seen == ["fp32"]


def test_with_hosted_moves_only_the_refusals_asked_for():
    from delegate_sdk.support import with_hosted
    from delegate_sdk.types import Claims, Refusal

    class Node:
        def __init__(self, name):
            self.name = name

    nodes = [Node(n) for n in ("a", "b", "c", "d")]
    claims = Claims(("a",), (Refusal("b", ReasonCode.OP, "no kernel"), Refusal("c", ReasonCode.DTYPE, "int64"),
                             Refusal("d", ReasonCode.DYNAMIC, "dynamic")))
    every = with_hosted(claims, nodes, lambda n: True)
    assert every.hosted == ("b", "c") and [r.node for r in every.refused] == ["d"]  # never a dynamic one
    only_op = with_hosted(claims, nodes, lambda n: True, only=(ReasonCode.OP,))
    assert only_op.hosted == ("b",) and [r.code for r in only_op.refused] == [ReasonCode.DTYPE, ReasonCode.DYNAMIC]
    none = with_hosted(claims, nodes, lambda n: n.name != "b")
    assert none.hosted == ("c",) and only_op.claimed == ("a",)
