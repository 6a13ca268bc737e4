"""One small module per lowered op family, shared by the numerics and Vela tests."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from delegate_sdk.conformance.cases import FunctionModule as Fn


def _bn() -> nn.Module:
    bn = nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return bn


def cases() -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    torch.manual_seed(0)
    x4 = torch.randn(1, 8, 12, 12)
    x3 = torch.randn(2, 5, 16)
    x2 = torch.randn(4, 16)
    return {
        "conv2d": (nn.Conv2d(8, 16, 3, padding=1), (x4,)),
        "conv2d_stride2": (nn.Conv2d(8, 16, 3, stride=2, padding=1), (x4,)),
        "conv2d_stride2_odd_nopad": (nn.Conv2d(8, 16, 3, stride=2), (torch.randn(1, 8, 13, 13),)),
        "conv2d_dilation2": (nn.Conv2d(8, 8, 3, dilation=2, padding=2), (x4,)),
        "conv2d_depthwise": (nn.Conv2d(8, 8, 3, padding=1, groups=8), (x4,)),
        "conv2d_depthwise_mult2": (nn.Conv2d(8, 16, 3, padding=1, groups=8), (x4,)),
        "conv2d_grouped": (nn.Conv2d(8, 16, 3, padding=1, groups=2), (x4,)),
        "conv2d_batch2": (nn.Conv2d(4, 4, 3), (torch.randn(2, 4, 8, 8),)),
        "conv1d": (nn.Conv1d(5, 7, 3, padding=1), (x3,)),
        "conv_transpose2d": (nn.ConvTranspose2d(8, 4, 2, stride=2), (x4,)),
        "conv_transpose2d_pad": (nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1), (x4,)),
        "linear": (nn.Linear(16, 10), (x2,)),
        "linear_3d": (nn.Linear(16, 10), (x3,)),
        "linear_nobias": (nn.Linear(16, 10, bias=False), (x2,)),
        "batch_norm": (_bn(), (x4,)),
        "add": (Fn(lambda a, b: a + b), (x4, torch.randn(1, 8, 12, 12) * 3)),
        "add_broadcast": (Fn(lambda a, b: a + b), (x4, torch.randn(1, 8, 1, 1))),
        "add_scalar": (Fn(lambda a: a + 1.5), (x4,)),
        "add_alpha": (Fn(lambda a, b: torch.add(a, b, alpha=-2)), (x2, torch.randn(4, 16))),
        "sub": (Fn(lambda a, b: a - b), (x2, torch.randn(4, 16))),
        "rsub_scalar": (Fn(lambda a: 1 - a), (x2,)),
        "mul": (Fn(lambda a, b: a * b), (x2, torch.randn(4, 16))),
        "mul_scalar_negative": (Fn(lambda a: a * -0.7), (x2,)),
        "div_scalar": (Fn(lambda a: a / 3), (x2,)),
        "maximum": (Fn(torch.maximum), (x2, torch.randn(4, 16))),
        "minimum": (Fn(torch.minimum), (x2, torch.randn(4, 16))),
        "relu": (Fn(F.relu), (x4,)),
        "relu6": (Fn(F.relu6), (x4 * 4,)),
        "hardtanh": (Fn(lambda a: F.hardtanh(a, -0.5, 0.5)), (x2,)),
        "clamp_min": (Fn(lambda a: a.clamp(min=-0.3)), (x2,)),
        "sigmoid": (Fn(torch.sigmoid), (x4,)),
        "tanh": (Fn(torch.tanh), (x4,)),
        "gelu": (Fn(F.gelu), (x4,)),
        "gelu_tanh": (Fn(lambda a: F.gelu(a, approximate="tanh")), (x2,)),
        "silu": (Fn(F.silu), (x4,)),
        "hardswish": (Fn(F.hardswish), (x4,)),
        "hardsigmoid": (Fn(F.hardsigmoid), (x4,)),
        "leaky_relu": (Fn(lambda a: F.leaky_relu(a, 0.1)), (x4,)),
        "elu": (Fn(F.elu), (x2,)),
        "exp": (Fn(torch.exp), (x2,)),
        "abs": (Fn(torch.abs), (x2,)),
        "softplus": (Fn(F.softplus), (x2,)),
        "max_pool2d": (Fn(lambda a: F.max_pool2d(a, 2)), (x4,)),
        "max_pool2d_pad": (Fn(lambda a: F.max_pool2d(a, 3, 2, 1)), (x4,)),
        "max_pool2d_ceil": (Fn(lambda a: F.max_pool2d(a, 3, 2, ceil_mode=True)), (x4,)),
        "avg_pool2d": (Fn(lambda a: F.avg_pool2d(a, 2)), (x4,)),
        "avg_pool2d_pad": (Fn(lambda a: F.avg_pool2d(a, 3, 1, 1)), (x4,)),
        "avg_pool2d_pad_exclude": (Fn(lambda a: F.avg_pool2d(a, 3, 1, 1, count_include_pad=False)), (x4,)),
        "mean_hw": (Fn(lambda a: a.mean((2, 3))), (x4,)),
        "mean_hw_keepdim": (Fn(lambda a: a.mean((-1, -2), keepdim=True)), (x4,)),
        "mean_last": (Fn(lambda a: a.mean(-1)), (x3,)),
        "sum_dim": (Fn(lambda a: a.sum(1)), (x3,)),
        "amax": (Fn(lambda a: a.amax(-1)), (x3,)),
        "reshape": (Fn(lambda a: a.reshape(1, -1)), (x4,)),
        "permute": (Fn(lambda a: a.permute(0, 2, 3, 1)), (x4,)),
        "transpose": (Fn(lambda a: a.transpose(1, 2)), (x3,)),
        "cat": (Fn(lambda a, b: torch.cat([a, b * 2], 1)), (x4, x4)),
        "slice": (Fn(lambda a: a[:, 2:6]), (x4,)),
        "slice_step": (Fn(lambda a: a[:, ::2]), (x4,)),
        "select": (Fn(lambda a: a[:, 1]), (x3,)),
        "split": (Fn(lambda a: a.chunk(2, 1)[1] * 2), (x4,)),
        "pad": (Fn(lambda a: F.pad(a, (1, 2, 0, 1))), (x4,)),
        "expand": (Fn(lambda a: a.expand(2, 8, 12, 12)), (x4,)),
        "repeat": (Fn(lambda a: a.repeat(1, 2, 1)), (x3,)),
        "flip_w": (Fn(lambda a: a.flip(3)), (x4,)),
        "flip_c": (Fn(lambda a: a.flip(1)), (x4,)),
        "upsample_nearest2x": (Fn(lambda a: F.interpolate(a, scale_factor=2)), (x4,)),
        "upsample_nearest4x": (Fn(lambda a: F.interpolate(a, scale_factor=4)), (x4,)),
        "softmax": (Fn(lambda a: torch.softmax(a, -1)), (torch.randn(4, 10) * 3,)),
        "softmax_channels_4d": (Fn(lambda a: torch.softmax(a, 1)), (x4,)),
        "attention_scores": (Fn(lambda q, k: torch.softmax(q @ k.transpose(-1, -2) / 4, -1)),
                             (torch.randn(2, 6, 16), torch.randn(2, 6, 16))),
        "mm": (Fn(lambda a, b: a @ b), (x2, torch.randn(16, 5))),
        "addmm_activations": (Fn(lambda a, b: torch.addmm(torch.arange(5.0), a, b)), (x2, torch.randn(16, 5))),
        "adaptive_avg_pool_1x1": (Fn(lambda a: F.adaptive_avg_pool2d(a, 1)), (x4,)),
        "adaptive_avg_pool_2x3": (Fn(lambda a: F.adaptive_avg_pool2d(a, (2, 3))), (torch.randn(1, 4, 6, 6),)),
        "adaptive_max_pool_2x2": (Fn(lambda a: F.adaptive_max_pool2d(a, 2)), (torch.randn(1, 4, 6, 6),)),
        "mean_all": (Fn(lambda a: a.mean()), (x3,)),
        "max_dim": (Fn(lambda a: a.max(1)[0]), (x3,)),
        "min_dim_keepdim": (Fn(lambda a: a.min(-1, keepdim=True).values), (x4,)),
        "flip_last_rank3": (Fn(lambda a: a.flip(2)), (x3,)),
        "flip_rank5": (Fn(lambda a: a.flip(4, 0)), (torch.randn(2, 3, 4, 5, 6),)),
        "erfinv": (Fn(torch.erfinv), (torch.rand(4, 8) * 1.8 - 0.9,)),
        "bmm": (Fn(torch.bmm), (x3, torch.randn(2, 16, 4))),
    }


def u85_cases() -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    """Ops only the Ethos-U85 runs (bool tensors, comparisons, select, bilinear resize)."""
    torch.manual_seed(0)
    x2 = torch.randn(4, 16)
    x4 = torch.randn(1, 8, 12, 12)
    return {
        "where_gt": (Fn(lambda a, b: torch.where(a > b, a, b)), (x2, torch.randn(4, 16))),
        "where_scalar_branch": (Fn(lambda a: torch.where(a > 0, a, 0.1 * a)), (x4,)),
        "gt_to_float": (Fn(lambda a, b: (a > b).float() * a), (x2, torch.randn(4, 16))),
        "le_scalar": (Fn(lambda a: (a <= 0.2).float() * a), (x2,)),
        "eq_zero": (Fn(lambda a: (torch.round(a) == 0).float()), (x2,)),
        "logical_ops": (Fn(lambda a, b: ((a > 0) & (b > 0) | ~(a < b)).float()), (x2, torch.randn(4, 16))),
        "bool_output": (Fn(lambda a: a > 0.3), (x4,)),
        "upsample_bilinear2x": (Fn(lambda a: F.interpolate(a, scale_factor=2, mode="bilinear")), (x4,)),
        "upsample_bilinear_align": (Fn(lambda a: F.interpolate(a, size=(9, 13), mode="bilinear",
                                                               align_corners=True)), (torch.randn(1, 4, 6, 5),)),
    }
