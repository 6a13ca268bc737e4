"""Claim rules: what is taken, what is refused and with which reason code (no compilation: fast)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from delegate_sdk_xnnpack import plugin
from delegate_sdk_xnnpack.testing import capture, claim_all
from torch import nn

from delegate_sdk.conformance.cases import FunctionModule as Fn
from delegate_sdk.types import ReasonCode


def r(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype)


def refusals(module: nn.Module, args: tuple, precision: str = "fp32", **kw) -> dict[str, ReasonCode]:
    """op name -> reason code of every refused node."""
    ep = capture(module, args, **kw)
    claims = claim_all(ep, precision)
    by_name = {n.name: n for n in ep.graph.nodes}
    names = set(claims.claimed) | {x.node for x in claims.refused}
    assert len(names) == len(claims.claimed) + len(claims.refused), "a node was named twice"
    for x in claims.refused:
        assert x.message, f"{x.node}: refusal without a sentence"
    return {str(by_name[x.node].target).removeprefix("aten."): x.code for x in claims.refused}


# (case id, module, args, op that must be refused (core ATen name fragment), reason)
REFUSED = [
    ("bf16", Fn(lambda a, b: a + b), (r(2, 3, dtype=torch.bfloat16), r(2, 3, dtype=torch.bfloat16)), "add", ReasonCode.DTYPE),
    ("int64", Fn(lambda a, b: a + b), (torch.arange(6), torch.arange(6)), "add", ReasonCode.DTYPE),
    ("mixed_dtypes", Fn(lambda a, b: a + b), (r(2, 3), r(2, 3, dtype=torch.float16)), "add", ReasonCode.DTYPE),
    ("zero_size", Fn(lambda a: torch.sigmoid(a)), (r(0, 3),), "sigmoid", ReasonCode.SHAPE),
    ("rank7", Fn(lambda a, b: a * b), (r(2, 1, 2, 1, 2, 1, 2), r(2, 1, 2, 1, 2, 1, 2)), "mul", ReasonCode.RANK),
    ("conv_weight_input", Fn(lambda x, w: F.conv2d(x, w)), (r(1, 3, 8, 8), r(4, 3, 3, 3)), "convolution", ReasonCode.CONSTANT),
    ("conv3d", nn.Conv3d(2, 2, 1), (r(1, 2, 2, 2, 2),), "convolution", ReasonCode.RANK),
    ("linear_weight_input", Fn(lambda x, w: F.linear(x, w)), (r(2, 4), r(5, 4)), "linear", ReasonCode.CONSTANT),
    ("mm_activations", Fn(torch.mm), (r(3, 4), r(4, 5)), "mm", ReasonCode.CONSTANT),
    ("add_alpha", Fn(lambda a, b: torch.add(a, b, alpha=2)), (r(2, 3), r(2, 3)), "add", ReasonCode.ATTR),
    ("sub_alpha", Fn(lambda a, b: torch.sub(a, b, alpha=0.5)), (r(2, 3), r(2, 3)), "sub", ReasonCode.ATTR),
    ("softmax_dim0", Fn(lambda x: x.softmax(0)), (r(2, 8),), "_softmax", ReasonCode.ATTR),
    ("mean_no_keepdim", Fn(lambda x: x.mean((2, 3))), (r(1, 3, 4, 4),), "mean", ReasonCode.ATTR),
    ("mean_last_dim", Fn(lambda x: x.mean(-1, keepdim=True)), (r(1, 3, 4, 4),), "mean", ReasonCode.ATTR),
    ("mean_rank3", Fn(lambda x: x.mean((1, 2), keepdim=True)), (r(3, 4, 4),), "mean", ReasonCode.RANK),
    ("pow3", Fn(lambda x: x ** 3), (r(2, 3),), "pow", ReasonCode.ATTR),
    ("maxpool_stride_gt_kernel", Fn(lambda x: F.max_pool2d(x, 2, 3)), (r(1, 3, 8, 8),), "max_pool2d", ReasonCode.ATTR),
    ("maxpool_indices", Fn(lambda x: F.max_pool2d(x, 2, return_indices=True)[1].float()), (r(1, 3, 8, 8),),
     "max_pool2d_with_indices", ReasonCode.ATTR),
    ("avgpool_ceil", Fn(lambda x: F.avg_pool2d(x, 3, 2, ceil_mode=True)), (r(1, 3, 8, 8),), "avg_pool2d", ReasonCode.ATTR),
    ("avgpool_count_pad", Fn(lambda x: F.avg_pool2d(x, 3, 1, 1)), (r(1, 3, 8, 8),), "avg_pool2d", ReasonCode.ATTR),
    ("avgpool_divisor", Fn(lambda x: F.avg_pool2d(x, 2, divisor_override=3)), (r(1, 3, 8, 8),), "avg_pool2d", ReasonCode.ATTR),
    ("slice_step2", Fn(lambda x: x[:, ::2]), (r(2, 8),), "slice", ReasonCode.ATTR),
    ("cat_one", Fn(lambda x: torch.cat([x], 1)), (r(2, 3),), "cat", ReasonCode.SHAPE),
    ("pad_negative", Fn(lambda x: F.pad(x, (-1, 0))), (r(2, 5),), "constant_pad_nd", ReasonCode.ATTR),
    ("gelu_tanh", Fn(lambda x: F.gelu(x, approximate="tanh")), (r(2, 8),), "gelu", ReasonCode.ATTR),
    ("gelu_fp16", Fn(F.gelu), (r(2, 8, dtype=torch.float16),), "gelu", ReasonCode.DTYPE),
    ("max_dim_last_no_keepdim", Fn(lambda x: x.max(3)[0]), (r(1, 2, 3, 4),), "max", ReasonCode.ATTR),
    ("max_dim1", Fn(lambda x: x.max(1, keepdim=True)[0]), (r(1, 2, 3, 4),), "max", ReasonCode.ATTR),
    ("max_dim_indices", Fn(lambda x: x.max(3, keepdim=True)[1].float()), (r(1, 2, 3, 4),), "max", ReasonCode.ATTR),
    ("bn_rank5", nn.BatchNorm3d(3), (r(1, 3, 2, 2, 2),), "_native_batch_norm_legit_no_training", ReasonCode.RANK),
    ("prelu_rank2", nn.PReLU(3), (r(2, 3),), "prelu", ReasonCode.RANK),
    ("log_softmax", Fn(lambda x: x.log_softmax(-1)), (r(2, 8),), "_log_softmax", ReasonCode.OP),
    ("layer_norm", nn.LayerNorm(8), (r(2, 8),), "native_layer_norm", ReasonCode.OP),
    ("div_floor", Fn(lambda a, b: torch.div(a, b, rounding_mode="floor")), (r(2, 3), r(2, 3)), "div", ReasonCode.OP),
    ("to_fp16", Fn(lambda x: x.to(torch.float16)), (r(2, 3),), "_to_copy", ReasonCode.DTYPE),
    ("expand", Fn(lambda x: x.expand(3, 4)), (r(1, 4),), "expand", ReasonCode.OP),
    ("bilinear_fractional_scale", Fn(lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear")), (r(1, 2, 5, 5),),
     "upsample_bilinear2d", ReasonCode.ATTR),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_reason(case):
    _id, module, args, op, code = case
    got = refusals(module, args)
    matching = {k: v for k, v in got.items() if k.startswith(op + ".") or k == op}
    assert matching, f"{op} was not refused; refusals: {got}"
    assert set(matching.values()) == {code}, f"{op}: expected {code}, got {matching}"


def test_dynamic_shapes_refused():
    batch = torch.export.Dim("batch", min=2, max=16)
    got = refusals(nn.Sigmoid(), (r(4, 3),), dynamic_shapes=({0: batch},))
    assert got == {"sigmoid.default": ReasonCode.DYNAMIC}


CLAIMED = [
    ("conv_bn_relu", nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()), (r(1, 3, 8, 8),)),
    ("conv1d_transposed", nn.ConvTranspose1d(3, 4, 3, stride=2), (r(1, 3, 5),)),
    ("linear_kept", nn.Linear(4, 5), (r(2, 3, 4),)),
    ("mean_hw_keepdim", Fn(lambda x: x.mean((-1, -2), keepdim=True)), (r(1, 3, 4, 4),)),
    ("adaptive_avg_pool", nn.AdaptiveAvgPool2d(1), (r(1, 3, 4, 4),)),
    ("square_float_exponent", Fn(lambda x: x ** 2.0), (r(2, 3),)),
    ("scalars", Fn(lambda x: (x * 3 + 1) / 2 - 0.5), (r(2, 3),)),
    ("fp16_ops", Fn(lambda x: torch.sigmoid(x * 2) + x), (r(2, 3, dtype=torch.float16),)),
    ("squeeze_unsqueeze", Fn(lambda x: x.squeeze(1).unsqueeze(0)), (r(2, 1, 3),)),
    ("maxpool_ceil", Fn(lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True)), (r(1, 3, 8, 8),)),
    ("max_dim_keepdim", Fn(lambda x: x.max(-2, keepdim=True)[0]), (r(1, 2, 3, 4),)),
    ("rank6", Fn(lambda a, b: a * b), (r(2, 1, 2, 1, 2, 1), r(2, 1, 2, 1, 2, 1))),
    ("prelu_nchw", nn.PReLU(3), (r(1, 3, 4, 4),)),
    ("hardswish_kept", nn.Hardswish(), (r(2, 8),)),
    ("bilinear_integral_scale", Fn(lambda x: F.interpolate(x, scale_factor=0.6, mode="bilinear")), (r(1, 2, 5, 5),)),
    ("bilinear_align_corners", Fn(lambda x: F.interpolate(x, scale_factor=1.7, mode="bilinear", align_corners=True)),
     (r(1, 2, 5, 5),)),
]


@pytest.mark.parametrize("case", CLAIMED, ids=[c[0] for c in CLAIMED])
def test_claimed(case):
    _id, module, args = case
    assert refusals(module, args) == {}


def test_int8_refuses_float_only_ops_and_fp16():
    net = Fn(lambda x: torch.sigmoid(torch.relu(x)))
    assert refusals(net, (r(2, 3),), precision="int8") == {"sigmoid.default": ReasonCode.PRECISION}
    assert refusals(Fn(torch.relu), (r(2, 3, dtype=torch.float16),), precision="int8") == {
        "relu.default": ReasonCode.DTYPE}


def test_int8_batch_norm_only_after_conv():
    assert refusals(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (r(1, 3, 6, 6),), precision="int8") == {}
    got = refusals(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)), (r(1, 3, 6, 6),), precision="int8")
    assert got == {"_native_batch_norm_legit_no_training.default": ReasonCode.QUANT}


def test_int8_grouped_transposed_conv_refused():
    got = refusals(nn.ConvTranspose2d(4, 4, 3, groups=2), (r(1, 4, 5, 5),), precision="int8")
    assert got == {"convolution.default": ReasonCode.QUANT}


def test_every_candidate_named_once():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 4, 4]), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3),
                        nn.LogSoftmax(-1))
    ep = capture(net, (r(1, 3, 6, 6),))
    from delegate_sdk_xnnpack.testing import candidates

    nodes = candidates(ep)
    c = claim_all(ep)
    assert sorted([*c.claimed, *(x.node for x in c.refused)]) == sorted(n.name for n in nodes)


def test_describe():
    info = plugin.describe()
    assert info.available, info.unavailable_reason
    assert info.name == "xnnpack" and info.precisions == ("fp32", "int8") and info.default_precision == "fp32"
    assert info.blob_format_version == 2 and info.loadable_format_versions == (1, 2)  # v2: weights in a section
    assert "aten.linear.default" in info.keep_ops
    assert [o.name for o in info.options] == ["num_threads"]
    assert not any(o.name == "precision" for o in info.options)


def test_claim_does_not_modify_program():
    ep = capture(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), (r(1, 3, 6, 6),))
    before = [(n.name, str(n.target), n.args) for n in ep.graph.nodes]
    claim_all(ep)
    assert [(n.name, str(n.target), n.args) for n in ep.graph.nodes] == before


def test_options_are_validated_with_the_valid_ones_listed():
    from delegate_sdk.errors import OptionError
    from delegate_sdk.options import validate_options

    info = plugin.describe()
    assert validate_options(info, {}) == {"precision": "fp32", "num_threads": 0}
    assert validate_options(info, {"precision": "int8", "num_threads": "2"})["num_threads"] == 2
    with pytest.raises(OptionError, match=r"precision='int4'.*fp32\|int8"):
        validate_options(info, {"precision": "int4"})
    with pytest.raises(OptionError, match=r"no option 'threads'.*num_threads"):
        validate_options(info, {"threads": 2})
    with pytest.raises(OptionError, match="num_threads"):
        validate_options(info, {"num_threads": 1000})


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_claimable_op_has_a_conformance_case(precision):
    """Conformance certifies only ops some case is about: each op the table can claim has one (the corpus's,
    or one this plugin contributes for a form only it reaches, like max_pool2d kept whole)."""
    from delegate_sdk_xnnpack.rules import supported_ops

    from delegate_sdk import testing

    assert testing.ops_without_conformance_case("xnnpack", supported_ops(precision)) == []
