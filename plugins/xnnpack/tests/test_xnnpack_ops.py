"""fp32 (and some fp16) ops: compiled with ExecuTorch's XNNPACK flow, run on real XNNPACK kernels, vs eager.

Tolerance: |delegate - eager| <= atol + rtol * |eager| with rtol = atol = 1e-5 for
float32 (XNNPACK's transcendental approximations and GEMM accumulation order stay
within a few ULP on these magnitudes), 1e-2 for float16.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from delegate_sdk_xnnpack.testing import eager, lower_and_run
from torch import nn

from delegate_sdk.conformance.cases import FunctionModule as Fn
from delegate_sdk.testing import check_side_by_side

pytestmark = pytest.mark.slow

torch.manual_seed(0)


def r(*shape: int, dtype: torch.dtype = torch.float32, lo: float | None = None) -> torch.Tensor:
    t = torch.randn(shape, dtype=torch.float32)
    if lo is not None:
        t = t.abs() + lo
    return t.to(dtype)


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


# id -> (module, args); the id names the core-ATen op under test
CASES: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]] = {
    # unary
    "abs": (Fn(torch.abs), (r(2, 3, 4),)),
    "neg": (Fn(torch.neg), (r(2, 3, 4),)),
    "exp": (Fn(torch.exp), (r(2, 3, 4),)),
    "log": (Fn(torch.log), (r(2, 3, 4, lo=0.01),)),
    "sqrt": (Fn(torch.sqrt), (r(2, 3, 4, lo=0.0),)),
    "rsqrt": (Fn(torch.rsqrt), (r(2, 3, 4, lo=0.1),)),
    "ceil": (Fn(torch.ceil), (r(2, 3, 4) * 3,)),
    "floor": (Fn(torch.floor), (r(2, 3, 4) * 3,)),
    "sin": (Fn(torch.sin), (r(2, 3, 4),)),
    "cos": (Fn(torch.cos), (r(2, 3, 4),)),
    "tanh": (Fn(torch.tanh), (r(2, 3, 4),)),
    "sigmoid": (Fn(torch.sigmoid), (r(2, 3, 4) * 4,)),
    "relu": (Fn(torch.relu), (r(2, 3, 4),)),
    "hardswish": (nn.Hardswish(), (r(2, 3, 4) * 4,)),
    "leaky_relu": (Fn(lambda x: F.leaky_relu(x, 0.2)), (r(2, 3, 4),)),
    "hardtanh": (Fn(lambda x: F.hardtanh(x, -2.0, 3.0)), (r(2, 3, 4) * 3,)),
    "relu6": (nn.ReLU6(), (r(2, 3, 4) * 4,)),
    "clamp": (Fn(lambda x: x.clamp(-0.5, 0.75)), (r(2, 3, 4),)),
    "clamp_min": (Fn(lambda x: x.clamp(min=-0.25)), (r(2, 3, 4),)),
    "gelu": (nn.GELU(), (r(2, 3, 4) * 2,)),
    # binary, with broadcasting and python scalars
    "add": (Fn(torch.add), (r(2, 3, 4), r(2, 3, 4))),
    "add_broadcast": (Fn(torch.add), (r(2, 3, 4), r(4))),
    "add_scalar": (Fn(lambda x: x + 2), (r(2, 3, 4),)),
    "sub": (Fn(torch.sub), (r(2, 3, 4), r(3, 1))),
    "rsub_scalar": (Fn(lambda x: 1 - x), (r(2, 3, 4),)),
    "mul": (Fn(torch.mul), (r(2, 3, 4), r(2, 1, 4))),
    "mul_scalar": (Fn(lambda x: x * 3), (r(2, 3, 4),)),
    "div": (Fn(torch.div), (r(2, 3, 4), r(2, 3, 4, lo=0.5))),
    "div_scalar": (Fn(lambda x: x / 7), (r(2, 3, 4),)),
    "maximum": (Fn(torch.maximum), (r(2, 3, 4), r(2, 3, 4))),
    "minimum": (Fn(torch.minimum), (r(2, 3, 4), r(1, 3, 4))),
    "pow2": (Fn(lambda x: x ** 2), (r(2, 3, 4),)),
    "rank6_mul": (Fn(torch.mul), (r(2, 1, 2, 3, 1, 2), r(2, 3, 2, 3, 2, 2))),
    # conv / gemm
    "conv2d": (nn.Conv2d(3, 8, 3, padding=1), (r(1, 3, 12, 12),)),
    "conv2d_stride_dilation": (nn.Conv2d(3, 4, 3, stride=2, dilation=2), (r(2, 3, 11, 11),)),
    "conv2d_depthwise": (nn.Conv2d(4, 4, 3, groups=4, padding=1, bias=False), (r(1, 4, 8, 8),)),
    "conv2d_same_pad": (nn.Conv2d(3, 4, 4, padding="same"), (r(1, 3, 8, 8),)),
    "conv1d": (nn.Conv1d(3, 5, 3, padding=2), (r(2, 3, 10),)),
    "conv_transpose2d": (nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=1), (r(1, 3, 5, 5),)),
    "conv_transpose1d": (nn.ConvTranspose1d(3, 4, 3, stride=2), (r(1, 3, 6),)),
    "linear": (nn.Linear(16, 8), (r(4, 16),)),
    "linear_3d_nobias": (nn.Linear(16, 8, bias=False), (r(2, 3, 16),)),
    "bmm": (Fn(torch.bmm), (r(2, 3, 4), r(2, 4, 5))),
    "batch_norm": (_bn(4), (r(2, 4, 5, 5),)),
    "conv_batch_norm": (nn.Sequential(nn.Conv2d(3, 4, 3), _bn(4)), (r(1, 3, 8, 8),)),
    "prelu": (nn.PReLU(4, init=0.1), (r(1, 4, 5, 5),)),
    # softmax / pooling / reductions
    "softmax": (Fn(lambda x: x.softmax(-1)), (r(2, 3, 16) * 3,)),
    "mean_hw": (Fn(lambda x: x.mean((2, 3), keepdim=True)), (r(2, 3, 5, 7),)),
    "adaptive_avg_pool": (nn.AdaptiveAvgPool2d(1), (r(1, 8, 6, 6),)),
    "avg_pool2d": (Fn(lambda x: F.avg_pool2d(x, 2)), (r(1, 3, 8, 8),)),
    "avg_pool2d_pad_exclude": (Fn(lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)), (r(1, 3, 8, 8),)),
    "max_pool2d": (nn.MaxPool2d(3, 2, 1), (r(1, 3, 9, 9),)),
    "max_pool2d_ceil": (Fn(lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True)), (r(1, 3, 8, 8),)),
    "max_dim": (Fn(lambda x: x.max(-1, keepdim=True)[0]), (r(1, 2, 3, 6),)),
    "upsample_bilinear": (nn.Upsample(scale_factor=2, mode="bilinear"), (r(1, 2, 4, 5),)),
    "upsample_bilinear_scale_0_6": (Fn(lambda x: F.interpolate(x, scale_factor=0.6, mode="bilinear")), (r(1, 2, 5, 5),)),
    "upsample_bilinear_align": (Fn(lambda x: F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=True)),
                                (r(1, 2, 4, 4),)),
    # data movement
    "cat": (Fn(lambda a, b, c: torch.cat([a, b, c], 1)), (r(2, 3), r(2, 5), r(2, 1))),
    "cat_many": (Fn(lambda *xs: torch.cat(xs, -1)), tuple(r(2, 3, i + 1) for i in range(7))),
    "constant_pad": (Fn(lambda x: F.pad(x, (1, 2, 0, 1), value=0.5)), (r(1, 2, 3, 3),)),
    "permute": (Fn(lambda x: x.permute(2, 0, 1)), (r(2, 3, 4),)),
    "view": (Fn(lambda x: x.reshape(4, -1)), (r(2, 3, 4),)),
    "flatten": (nn.Flatten(), (r(2, 3, 4),)),
    "slice": (Fn(lambda x: x[:, 1:3, -2:]), (r(2, 4, 5),)),
    "squeeze": (Fn(lambda x: x.squeeze(1)), (r(2, 1, 3),)),
    "unsqueeze": (Fn(lambda x: x.unsqueeze(0) + 0.5), (r(2, 3),)),
    "clone": (Fn(lambda x: x.clone() * 2), (r(2, 3),)),
}

FP16_CASES: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]] = {
    "fp16_add_scalar": (Fn(lambda x: x * 3 + 1), (r(2, 3, dtype=torch.float16),)),
    "fp16_sigmoid": (Fn(torch.sigmoid), (r(2, 8, dtype=torch.float16),)),
    "fp16_conv": (nn.Conv2d(3, 4, 3).half(), (r(1, 3, 8, 8, dtype=torch.float16),)),
    "fp16_linear": (nn.Linear(8, 4).half(), (r(2, 8, dtype=torch.float16),)),
    "fp16_softmax": (Fn(lambda x: x.softmax(-1)), (r(2, 8, dtype=torch.float16),)),
}


#: cases lowered together: one capture and one ExecuTorch lowering per group instead of per op (torch's
#: decomposition and ExecuTorch's passes are most of a one-op lowering); each case is judged on its own outputs
GROUP_SIZE = 12


def _groups(cases: dict[str, Any]) -> list[list[str]]:
    names = list(cases)
    return [names[i:i + GROUP_SIZE] for i in range(0, len(names), GROUP_SIZE)]


def _lowered(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[Any, list[torch.Tensor]]:
    run = lower_and_run(module, args)
    ref = eager(module, args)
    assert len(run.outputs) == len(ref), (len(run.outputs), len(ref))
    assert sum(run.compiled.op_counts.values()) >= 1
    return run, ref


def _within(tol: float):
    def judge(name: str, result: tuple[Any, list[torch.Tensor]], outputs: range) -> list[str]:
        run, ref = result
        problems = []
        for i in outputs:
            got, want = run.outputs[i], ref[i]
            if got.dtype != want.dtype or got.shape != want.shape:
                problems.append(f"{name}: {got.dtype} {tuple(got.shape)}, eager {want.dtype} {tuple(want.shape)}")
                continue
            err = (got.float() - want.float()).abs()
            if not bool((err <= (tol + tol * want.abs()).float()).all()):
                problems.append(f"{name}: max error {err.max().item():.3g} above tolerance {tol:g}")
        return problems
    return judge


@pytest.mark.parametrize("names", _groups(CASES), ids=[f"{g[0]}..{g[-1]}" for g in _groups(CASES)])
def test_fp32_ops_match_eager(names):
    problems = check_side_by_side({n: CASES[n] for n in names}, _lowered, _within(1e-5))
    assert not problems, "\n".join(problems)


def test_fp16_ops_match_eager():
    problems = check_side_by_side(FP16_CASES, _lowered, _within(1e-2))
    assert not problems, "\n".join(problems)


# core-ATen spellings seen when the core does not keep linear / max_pool2d / hardswish whole
# (e.g. another backend in the same lowering asked for different keep_ops)
DECOMPOSED: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]] = {
    "addmm": (nn.Linear(16, 8), (r(4, 16),)),
    "mm": (nn.Linear(16, 8, bias=False), (r(2, 3, 16),)),
    "max_pool2d_with_indices": (nn.MaxPool2d(2), (r(1, 3, 8, 8),)),
    "hardswish_decomposed": (nn.Hardswish(), (r(2, 3, 4) * 4,)),
    "squeeze_all": (Fn(lambda x: x.squeeze() * 2), (r(1, 3, 1, 4),)),
}


@pytest.mark.parametrize("name", list(DECOMPOSED))
def test_decomposed_spellings_match_eager(name):
    module, args = DECOMPOSED[name]
    run = lower_and_run(module, args, keep_ops=())
    torch.testing.assert_close(run.outputs[0], eager(module, args)[0], rtol=1e-5, atol=1e-5)


def test_non_contiguous_inputs():
    net = Fn(lambda a, b: torch.relu(a) * b)
    ax, bx = r(6, 4).t(), r(4, 12)[:, ::2]
    assert not ax.is_contiguous() and not bx.is_contiguous()
    run = lower_and_run(net, (r(4, 6), r(4, 6)), inputs=(ax, bx))
    torch.testing.assert_close(run.outputs[0], torch.relu(ax) * bx, rtol=1e-6, atol=1e-6)


def test_several_outputs_keep_order_dtype_shape():
    net = Fn(lambda x: (torch.sigmoid(x), x.reshape(3, 2), x * 2))
    args = (r(2, 3),)
    run = lower_and_run(net, args)
    assert len(run.outputs) == 3
    for got, want in zip(run.outputs, eager(net, args)):
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
